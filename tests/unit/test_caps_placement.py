"""Monthly caps in placement: routing leaves stores over write caps out (or last), reads move
off stores over read caps while another copy exists, 503 SlowDown when none does (hard mode),
served with a warning in soft mode; caps come back at the month boundary (Clock)."""

from __future__ import annotations

import datetime
import sqlite3
from pathlib import Path
from typing import Any, Iterator

import attrs
import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import Clock
from twisted.logger import LogEvent, formatEvent

from s3orchestrator.config import PlacementPolicy, StoreCaps
from s3orchestrator.errors import S3Error
from s3orchestrator.jobs.health import StoreHealth
from s3orchestrator.metadata.availability import MetadataAvailability
from s3orchestrator.metadata.records import StoreUsage
from s3orchestrator.metadata.store import sqlite_metadata_store
from s3orchestrator.metadata.traffic import Traffic, TrafficTable
from s3orchestrator.placement.engine import Placement
from s3orchestrator.placement.errors import CapReached
from s3orchestrator.placement.locks import KeyLocks
from s3orchestrator.placement.reader import order_copies
from s3orchestrator.routing import choose_stores
from s3orchestrator.s3.call import S3Call, S3Response
from s3orchestrator.s3.objects import ObjectOperations
from s3orchestrator.stores.directory import DirectoryStore
from s3orchestrator.traffic.ledger import TrafficLedger
from s3orchestrator.traffic.meter import MeteredStore
from tests.unit.fakes import CollectingConsumer, FakeRequestBody, auth_result

MiB = 1024**2
NOV_30_NOON = datetime.datetime(2026, 11, 30, 12, tzinfo=datetime.UTC).timestamp()
DATA = bytes(range(256)) * (4 * MiB // 256)  # 4 MiB


# -- routing and read order (pure) ----------------------------------------------------------------


def usage(*names: str, quota: int = 0, used: int = 0) -> list[StoreUsage]:
    return [StoreUsage(name=name, quota_bytes=quota, used_bytes=used, reserved_bytes=0) for name in names]


def test_stores_over_a_hard_write_cap_get_no_copies() -> None:
    assert choose_stores("pack", usage("a", "b", "c"), 10, count=2, excluded={"a"}) == ("b", "c")
    assert choose_stores("pack", usage("a"), 10, count=1, excluded={"a"}) == ()


def test_stores_over_a_soft_write_cap_get_copies_only_the_others_cannot_take() -> None:
    assert choose_stores("pack", usage("a", "b", "c"), 10, count=2, last_resort={"a"}) == ("b", "c")
    assert choose_stores("pack", usage("a", "b"), 10, count=2, last_resort={"a"}) == ("b", "a")
    assert choose_stores("spread", usage("a", "b"), 10, count=1, zones={"a": "z1", "b": "z1"},
                         last_resort={"b"}) == ("a",)


def test_copies_on_stores_over_a_read_cap_are_tried_last() -> None:
    copies = [("a", "la"), ("b", "lb"), ("c", "lc")]
    assert order_copies(copies, "config", {"a", "b", "c"}, {}, {}, capped={"a"}) == [
        ("b", "lb"), ("c", "lc"), ("a", "la"),
    ]
    assert order_copies(copies, "health", {"a", "c"}, {}, {}, capped={"c"}) == [
        ("a", "la"), ("b", "lb"), ("c", "lc"),
    ]


# -- placement over two directory stores ---------------------------------------------------------------


class World:
    """Two metered directory stores ("one", "two"), SQLite metadata, a traffic ledger with
    the test's caps, ObjectOperations over them, a Clock at 2026-11-30 12:00 UTC."""

    def __init__(self, tmp_path: Path, caps: dict[str, StoreCaps], replicas: int = 1) -> None:
        self.tmp_path = tmp_path
        self.caps = caps
        self.metadata = sqlite_metadata_store(str(tmp_path / "metadata.sqlite3"), reactor)
        self.clock = Clock()
        self.clock.advance(NOV_30_NOON)
        self.ledger = TrafficLedger(TrafficTable(self.metadata.database), lambda: self.caps, self.clock)
        self.roots = {name: tmp_path / name for name in ("one", "two")}
        self.stores = {
            name: MeteredStore(DirectoryStore(name, str(root), reactor), self.ledger)
            for name, root in self.roots.items()
        }
        self.health = StoreHealth(list(self.stores), unhealthy_after=3, now=self.clock.seconds)
        self.placement = Placement(
            self.metadata, self.stores, "pack", self.clock, KeyLocks(), self.health,
            policy=lambda b: PlacementPolicy(read_order="config", replicas=replicas, write_quorum=replicas),
            traffic=self.ledger,
        )
        self.ops = ObjectOperations(self.placement, 5 * 1024**3,
                                    availability=MetadataAvailability(self.clock, unavailable_after=10.0))

    async def start(self, quotas: tuple[int, int] = (0, 0)) -> World:
        await self.metadata.start()
        await self.metadata.sync_stores(list(zip(("one", "two"), quotas, strict=True)))
        for store in self.stores.values():
            await store.start()
        return self

    async def put(self, key: str = "key", data: bytes = DATA) -> None:
        await self.ops.put_object(call("PUT", key, body=FakeRequestBody(data)))

    async def second_copy(self, key: str = "key") -> None:
        """A live copy on store "two" made by hand, as replication would."""
        source, target = self.roots["one"] / "bkt.d" / key, self.roots["two"] / "bkt.d" / key
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(source.read_bytes())
        with sqlite3.connect(self.tmp_path / "metadata.sqlite3") as db:
            db.execute(
                "INSERT INTO copies (bucket, key, store, location, state, size, created_ms)"
                " SELECT bucket, key, 'two', location, 'live', size, created_ms FROM copies WHERE key = ?",
                (key,),
            )

    async def get(self, key: str = "key") -> tuple[str | None, bytes]:
        """Which store served a GET of ``key``, and the bytes."""
        response: S3Response = await self.ops.get_object(call("GET", key))
        consumer = CollectingConsumer()
        streamed = response.body.stream_to(consumer)  # type: ignore[union-attr]
        while not streamed.called:
            self.clock.advance(0)
        await streamed
        return response.store, consumer.body

    def stored_on(self, key: str = "key") -> list[str]:
        with sqlite3.connect(self.tmp_path / "metadata.sqlite3") as db:
            rows = db.execute("SELECT store FROM copies WHERE key = ? ORDER BY store", (key,)).fetchall()
        return [store for (store,) in rows]


def call(method: str, key: str = "key", body: Any = None) -> S3Call:
    return S3Call(request_id="0123456789ABCDEF", method=method, bucket="bkt", key=key, query={},
                  headers={}, auth=auth_result(), body=body)


@pytest.fixture
def worlds(tmp_path: Path) -> Iterator[list[World]]:
    made: list[World] = []
    yield made
    for world in made:
        world.metadata.database.close()


def world_of(worlds: list[World], tmp_path: Path, caps: dict[str, StoreCaps], replicas: int = 1) -> World:
    world = World(tmp_path, caps, replicas)
    worlds.append(world)
    return world


@pytest_twisted.ensureDeferred
async def test_reads_move_to_the_other_copy_once_the_egress_cap_is_spent_and_come_back_next_month(
    tmp_path: Path, worlds: list[World]
) -> None:
    world = await world_of(worlds, tmp_path, {"one": StoreCaps(egress_bytes=10 * MiB), "two": StoreCaps()}).start()
    await world.put()
    await world.second_copy()

    served = [(await world.get())[0] for _ in range(5)]

    assert served == ["one", "one", "one", "two", "two"]  # 12 MiB read from "one": past its 10 MiB
    assert world.ledger.month("one").egress_bytes == 12 * MiB
    world.clock.advance(12 * 3600)  # 2026-12-01 00:00 UTC
    store, data = await world.get()
    assert (store, data == DATA) == ("one", True)


@pytest_twisted.ensureDeferred
async def test_the_only_copy_on_a_store_over_its_egress_cap_answers_slow_down(
    tmp_path: Path, worlds: list[World]
) -> None:
    caps = {"one": StoreCaps(egress_bytes=4 * MiB, class_b_requests=1), "two": StoreCaps()}
    world = await world_of(worlds, tmp_path, caps).start()
    await world.put()
    assert (await world.get())[0] == "one"
    assert world.ledger.reached("one") == {"egress_bytes", "class_b_requests"}  # the message names the first

    with pytest.raises(S3Error) as error:
        await world.get()

    assert (error.value.status, error.value.code) == (503, "SlowDown")
    assert error.value.message == (
        "store one reached its monthly egress cap; try again in the next billing period"
    )
    assert world.ledger.month("one").egress_bytes == 4 * MiB  # nothing more was read


@pytest_twisted.ensureDeferred
async def test_a_head_is_answered_from_metadata_whatever_the_caps(tmp_path: Path, worlds: list[World]) -> None:
    world = await world_of(worlds, tmp_path, {"one": StoreCaps(class_b_requests=1), "two": StoreCaps()}).start()
    await world.put()
    await world.get()

    response = await world.ops.head_object(call("HEAD"))

    assert response.status == 200


@pytest_twisted.ensureDeferred
async def test_soft_mode_serves_the_only_copy_over_its_cap_and_says_so_once_a_period(
    tmp_path: Path, worlds: list[World], events: list[LogEvent]
) -> None:
    world = world_of(worlds, tmp_path, {"one": StoreCaps(egress_bytes=1, mode="soft"), "two": StoreCaps()})
    await world.start()
    await world.put()

    served = [await world.get() for _ in range(3)]

    assert served == [("one", DATA)] * 3
    said = [formatEvent(event) for event in events if "serves a read anyway" in formatEvent(event)]
    assert said == ["Store one is over its monthly egress cap and serves a read anyway (cap_mode soft;"
                    " said once a period)"]


@pytest_twisted.ensureDeferred
async def test_soft_mode_still_prefers_a_copy_on_a_store_under_its_caps(tmp_path: Path, worlds: list[World]) -> None:
    world = world_of(worlds, tmp_path, {"one": StoreCaps(egress_bytes=1, mode="soft"), "two": StoreCaps()})
    await world.start()
    await world.put()
    await world.second_copy()

    assert [(await world.get())[0] for _ in range(2)] == ["one", "two"]


@pytest_twisted.ensureDeferred
async def test_new_objects_avoid_a_store_over_its_ingress_cap(tmp_path: Path, worlds: list[World]) -> None:
    world = await world_of(worlds, tmp_path, {"one": StoreCaps(ingress_bytes=6 * MiB), "two": StoreCaps()}).start()

    await world.put("first")
    await world.put("second")
    await world.put("third")

    assert [world.stored_on(key) for key in ("first", "second", "third")] == [["one"], ["one"], ["two"]]
    assert world.ledger.month("one").ingress_bytes == 8 * MiB


@pytest_twisted.ensureDeferred
async def test_a_write_every_store_is_capped_for_answers_slow_down(tmp_path: Path, worlds: list[World]) -> None:
    world = world_of(worlds, tmp_path, {"one": StoreCaps(class_a_requests=1), "two": StoreCaps(requests=1)})
    await world.start()
    await world.put("first")
    await world.put("second")

    with pytest.raises(S3Error) as error:
        await world.put("third")

    assert (error.value.status, error.value.code) == (503, "SlowDown")
    assert error.value.message == (
        "store one reached its monthly class A request cap; store two reached its monthly request cap;"
        " try again in the next billing period"
    )
    assert world.stored_on("third") == []


@pytest_twisted.ensureDeferred
async def test_a_store_over_a_soft_write_cap_takes_a_copy_no_other_store_can(
    tmp_path: Path, worlds: list[World], events: list[LogEvent]
) -> None:
    world = world_of(worlds, tmp_path, {"one": StoreCaps(ingress_bytes=1, mode="soft"), "two": StoreCaps()})
    await world.start(quotas=(0, 6 * MiB))
    await world.put("first")  # "one" is first in pack order
    await world.put("second")  # "one" is over its cap: "two"
    await world.put("third")  # "two" is full: "one" all the same

    assert [world.stored_on(key) for key in ("first", "second", "third")] == [["one"], ["two"], ["one"]]
    said = [formatEvent(event) for event in events if "takes a new copy anyway" in formatEvent(event)]
    assert said == ["Store one is over a monthly write cap and takes a new copy anyway, no other store can"
                    " (cap_mode soft; said once a period)"]


@pytest_twisted.ensureDeferred
async def test_replicas_leave_out_a_store_over_a_hard_write_cap_and_the_quorum_decides(
    tmp_path: Path, worlds: list[World]
) -> None:
    world = world_of(worlds, tmp_path, {"one": StoreCaps(ingress_bytes=1), "two": StoreCaps()}, replicas=2)
    await world.start()
    world.ledger.count("one", Traffic(ingress_bytes=1))

    with pytest.raises(S3Error) as error:
        await world.put("k")

    assert error.value.code == "SlowDown"
    assert error.value.message.startswith("store one reached its monthly ingress cap")


@pytest_twisted.ensureDeferred
async def test_the_replicator_reads_no_source_over_its_egress_cap_until_the_next_month(
    tmp_path: Path, worlds: list[World]
) -> None:
    world = await world_of(worlds, tmp_path, {"one": StoreCaps(egress_bytes=1), "two": StoreCaps()}).start()
    await world.put()
    world.ledger.count("one", Traffic(egress_bytes=1))
    # The replicator's placement streams on the reactor; the ledger's months follow the test's Clock.
    replicator = Placement(world.metadata, world.stores, "pack", reactor, KeyLocks(), world.health,
                           policy=lambda b: PlacementPolicy(replicas=2), traffic=world.ledger)

    with pytest.raises(CapReached, match="store one reached its monthly egress cap"):
        await replicator.replicate("bkt", "key")
    assert world.stored_on() == ["one"]

    world.clock.advance(12 * 3600)  # 2026-12-01 00:00 UTC
    assert (await replicator.replicate("bkt", "key")).copies == 1
    assert world.stored_on() == ["one", "two"]


@pytest_twisted.ensureDeferred
async def test_a_copy_to_another_store_reads_no_source_over_its_read_cap(
    tmp_path: Path, worlds: list[World]
) -> None:
    world = world_of(worlds, tmp_path, {"one": StoreCaps(egress_bytes=1, ingress_bytes=1), "two": StoreCaps()})
    await world.start()
    await world.put()
    await world.second_copy()
    world.ledger.count("one", Traffic(egress_bytes=1, ingress_bytes=1))  # "one" takes and serves no more
    # The copy streams on the reactor; the ledger's months follow the test's Clock.
    placement = Placement(world.metadata, world.stores, "pack", reactor, KeyLocks(), world.health,
                          traffic=world.ledger)
    source = await placement.record("bkt", "key")
    assert source is not None and source.store == "one"

    copied = await placement.copy(source, attrs.evolve(source, key="copied"))

    assert (copied.store, world.stored_on("copied")) == ("two", ["two"])
    # Copied within "two", from its own copy: no byte read from "one" (nor from "two").
    assert (world.ledger.month("one").egress_bytes, world.ledger.month("two").egress_bytes) == (1, 0)
    assert world.ledger.month("two").requests_a == 1
