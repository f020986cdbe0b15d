"""Monthly traffic: billing periods, caps reached, the store_traffic table (every engine),
the ledger's counting, syncing and period rollover, the metered store and the sync job."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any, Callable, Mapping

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred, fail
from twisted.internet.task import Clock
from twisted.logger import LogEvent, formatEvent

from s3orchestrator.config import StoreCaps
from s3orchestrator.jobs.traffic_sync import TrafficSyncJob
from s3orchestrator.metadata.store import MetadataStore
from s3orchestrator.metadata.traffic import PeriodKey, Traffic, TrafficTable
from s3orchestrator.stores.directory import DirectoryStore
from s3orchestrator.stores.interface import ObjectMissing
from s3orchestrator.traffic import caps as cap_rules
from s3orchestrator.traffic.ledger import TrafficLedger
from s3orchestrator.traffic.meter import MeteredStore
from s3orchestrator.traffic.period import period_end, period_start
from tests.unit.fakes import CollectingConsumer, FakeRequestBody

MiB = 1024**2


def at(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> float:
    """The instant (seconds since the epoch) of a UTC date and time."""
    return datetime.datetime(year, month, day, hour, minute, second, tzinfo=datetime.UTC).timestamp()


def clock_at(seconds: float) -> Clock:
    clock = Clock()
    clock.advance(seconds)
    return clock


# -- billing periods -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "now, billing_day, start",
    [
        (at(2026, 12, 1), 1, datetime.date(2026, 12, 1)),
        (at(2026, 11, 30, 23, 59, 59), 1, datetime.date(2026, 11, 1)),
        (at(2027, 1, 1), 1, datetime.date(2027, 1, 1)),
        (at(2026, 12, 31, 23, 59, 59), 1, datetime.date(2026, 12, 1)),
        (at(2026, 12, 14, 23, 59, 59), 15, datetime.date(2026, 11, 15)),
        (at(2026, 12, 15), 15, datetime.date(2026, 12, 15)),
        (at(2027, 1, 10), 15, datetime.date(2026, 12, 15)),
        (at(2027, 3, 1), 28, datetime.date(2027, 2, 28)),
        (at(2028, 2, 29), 28, datetime.date(2028, 2, 28)),
    ],
)
def test_period_start_is_the_last_billing_day_that_has_come_in_utc(
    now: float, billing_day: int, start: datetime.date
) -> None:
    assert period_start(now, billing_day) == start


def test_period_end_is_the_same_day_of_the_next_month_across_the_year_end() -> None:
    assert period_end(datetime.date(2026, 11, 15)) == datetime.date(2026, 12, 15)
    assert period_end(datetime.date(2026, 12, 1)) == datetime.date(2027, 1, 1)


def test_a_billing_day_some_month_lacks_is_refused() -> None:
    with pytest.raises(ValueError, match="billing_day"):
        period_start(at(2026, 12, 1), 29)


# -- caps ---------------------------------------------------------------------------------------------


def test_a_cap_is_reached_at_its_limit_and_only_caps_set_count() -> None:
    caps = StoreCaps(egress_bytes=100, requests=3, class_a_requests=2)

    assert cap_rules.reached(caps, Traffic(egress_bytes=99, requests_a=1, requests_b=1)) == frozenset()
    assert cap_rules.reached(caps, Traffic(egress_bytes=100, requests_a=2, requests_other=1)) == {
        "egress_bytes", "class_a_requests", "requests",
    }
    assert cap_rules.reached(StoreCaps(), Traffic(egress_bytes=10**15)) == frozenset()


def test_caps_are_described_for_clients_and_operators() -> None:
    assert cap_rules.describe("s1", "egress_bytes") == "store s1 reached its monthly egress cap"
    assert cap_rules.describe("s1", "class_a_requests") == "store s1 reached its monthly class A request cap"


# -- the store_traffic table, on every engine ------------------------------------------------------


NOV = datetime.date(2026, 11, 1)
DEC = datetime.date(2026, 12, 1)


@pytest_twisted.ensureDeferred
async def test_traffic_added_by_two_instances_adds_up_per_store_and_period(
    make_store: Callable[..., MetadataStore],
) -> None:
    first, second = make_store(), make_store()
    await first.start()
    await second.start()
    one, two = TrafficTable(first.database), TrafficTable(second.database)

    await one.add({("s1", DEC): Traffic(egress_bytes=10, requests_b=1), ("s2", DEC): Traffic(requests_a=2)})
    await two.add({("s1", DEC): Traffic(egress_bytes=5, ingress_bytes=7, requests_b=2, requests_other=1)})
    await two.add({("s1", NOV): Traffic(egress_bytes=1000)})

    assert await one.read(DEC) == {
        ("s1", DEC): Traffic(egress_bytes=15, ingress_bytes=7, requests_b=3, requests_other=1),
        ("s2", DEC): Traffic(requests_a=2),
    }
    assert (await two.read(NOV))[("s1", NOV)] == Traffic(egress_bytes=1000)


# -- the ledger --------------------------------------------------------------------------------------


class World:
    """A ledger over the store_traffic table of a SQLite database, its own clock and caps."""

    def __init__(self, metadata: MetadataStore, caps: dict[str, StoreCaps], now: float) -> None:
        self.metadata = metadata
        self.caps = caps
        self.clock = clock_at(now)
        self.table = TrafficTable(metadata.database)
        self.ledger = TrafficLedger(self.table, lambda: self.caps, self.clock)


@pytest.fixture
def make_world(make_store: Callable[..., MetadataStore]) -> Callable[..., Any]:
    async def make(caps: dict[str, StoreCaps] | None = None, now: float = at(2026, 11, 30, 23, 59)) -> World:
        metadata = make_store()
        await metadata.start()
        return World(metadata, caps if caps is not None else {"s1": StoreCaps(egress_bytes=100)}, now)

    return make


@pytest_twisted.ensureDeferred
async def test_counts_decide_at_once_and_reach_the_table_at_the_sync(make_world: Callable[..., Any]) -> None:
    world = await make_world()

    world.ledger.count("s1", Traffic(egress_bytes=60, requests_b=1))
    world.ledger.count("s1", Traffic(egress_bytes=40, requests_b=1))

    assert world.ledger.month("s1") == Traffic(egress_bytes=100, requests_b=2)
    assert world.ledger.reached("s1") == {"egress_bytes"}
    assert await world.table.read(NOV) == {}
    assert await world.ledger.sync() == 1
    assert await world.table.read(NOV) == {("s1", NOV): Traffic(egress_bytes=100, requests_b=2)}
    assert world.ledger.month("s1") == Traffic(egress_bytes=100, requests_b=2)


@pytest_twisted.ensureDeferred
async def test_a_sync_brings_the_other_instances_counts(
    make_world: Callable[..., Any], make_store: Callable[..., MetadataStore]
) -> None:
    world = await make_world()
    other = make_store()
    await other.start()
    world.ledger.count("s1", Traffic(egress_bytes=30))
    await TrafficTable(other.database).add({("s1", NOV): Traffic(egress_bytes=80)})
    assert world.ledger.reached("s1") == frozenset()

    await world.ledger.sync()

    assert world.ledger.month("s1") == Traffic(egress_bytes=110)
    assert world.ledger.read_cap("s1") == "egress_bytes"


@pytest_twisted.ensureDeferred
async def test_the_caps_reset_at_the_month_boundary_and_old_counts_go_to_their_month(
    make_world: Callable[..., Any],
) -> None:
    world = await make_world()
    world.ledger.count("s1", Traffic(egress_bytes=150))
    assert world.ledger.read_cap("s1") == "egress_bytes"

    world.clock.advance(60)  # 2026-12-01 00:00 UTC
    world.ledger.count("s1", Traffic(egress_bytes=20))

    assert world.ledger.month("s1") == Traffic(egress_bytes=20)
    assert world.ledger.read_cap("s1") is None
    await world.ledger.sync()
    assert await world.table.read(NOV) == {
        ("s1", NOV): Traffic(egress_bytes=150), ("s1", DEC): Traffic(egress_bytes=20),
    }
    assert world.ledger.month("s1") == Traffic(egress_bytes=20)


@pytest_twisted.ensureDeferred
async def test_a_billing_day_moves_the_reset(make_world: Callable[..., Any]) -> None:
    world = await make_world({"s1": StoreCaps(egress_bytes=100, billing_day=15)}, now=at(2026, 12, 14, 23, 59))
    world.ledger.count("s1", Traffic(egress_bytes=100))
    assert world.ledger.period("s1") == datetime.date(2026, 11, 15)

    world.clock.advance(60)

    assert world.ledger.period("s1") == datetime.date(2026, 12, 15)
    assert world.ledger.reached("s1") == frozenset()


@pytest_twisted.ensureDeferred
async def test_a_reloaded_billing_day_applies_at_once(make_world: Callable[..., Any]) -> None:
    world = await make_world({"s1": StoreCaps(egress_bytes=100)}, now=at(2026, 12, 10))
    world.ledger.count("s1", Traffic(egress_bytes=100))
    assert world.ledger.period("s1") == DEC

    world.caps = {"s1": StoreCaps(egress_bytes=100, billing_day=15)}  # what a reload does

    assert world.ledger.period("s1") == datetime.date(2026, 11, 15)
    assert world.ledger.reached("s1") == frozenset()  # the counts were of another period


class FailingTable:
    """A store_traffic table whose database is unavailable."""

    def __init__(self) -> None:
        self.added: list[Mapping[PeriodKey, Traffic]] = []

    def add(self, deltas: Mapping[PeriodKey, Traffic]) -> Deferred[None]:
        self.added.append(dict(deltas))
        return fail(ConnectionError("database down"))

    def read(self, since: datetime.date) -> Deferred[dict[PeriodKey, Traffic]]:
        return fail(ConnectionError("database down"))


@pytest_twisted.ensureDeferred
async def test_counts_a_failed_sync_could_not_add_stay_counted_for_the_next(events: list[LogEvent]) -> None:
    table = FailingTable()
    ledger = TrafficLedger(table, lambda: {"s1": StoreCaps()}, clock_at(at(2026, 12, 2)))  # type: ignore[arg-type]
    ledger.count("s1", Traffic(ingress_bytes=5))

    for _ in range(2):
        with pytest.raises(ConnectionError):
            await ledger.sync()

    assert ledger.month("s1") == Traffic(ingress_bytes=5)
    assert table.added == [{("s1", DEC): Traffic(ingress_bytes=5)}] * 2
    warnings = [formatEvent(event) for event in events if "sync the store traffic" in formatEvent(event)]
    assert len(warnings) == 1  # once per outage


@pytest_twisted.ensureDeferred
async def test_write_caps_split_by_mode_and_read_caps_by_store(make_world: Callable[..., Any]) -> None:
    world = await make_world({
        "hard": StoreCaps(ingress_bytes=10, egress_bytes=10),
        "soft": StoreCaps(class_a_requests=1, mode="soft"),
        "reads": StoreCaps(class_b_requests=1),
        "free": StoreCaps(),
    })
    for store in ("hard", "soft", "reads", "free"):
        world.ledger.count(store, Traffic(ingress_bytes=10, requests_a=1, requests_b=1))

    assert world.ledger.write_capped() == ({"hard"}, {"soft"})
    assert {store: world.ledger.read_cap(store) for store in world.caps} == {
        "hard": None, "soft": None, "reads": "class_b_requests", "free": None,
    }


@pytest_twisted.ensureDeferred
async def test_reaching_a_cap_is_logged_once_per_period(
    make_world: Callable[..., Any], events: list[LogEvent]
) -> None:
    world = await make_world({"s1": StoreCaps(egress_bytes=100)}, now=at(2026, 12, 5))
    world.ledger.count("s1", Traffic(egress_bytes=120))

    await world.ledger.sync()
    await world.ledger.sync()

    said = [formatEvent(event) for event in events if "reached its monthly" in formatEvent(event)]
    assert said == ["Store s1 reached its monthly egress cap (120 of 100); it is avoided until 2027-01-01"]


@pytest_twisted.ensureDeferred
async def test_the_report_shows_every_store_against_its_caps(make_world: Callable[..., Any]) -> None:
    world = await make_world({"s1": StoreCaps(egress_bytes=100, requests=10, mode="soft"), "s2": StoreCaps()})
    world.ledger.count("s1", Traffic(egress_bytes=100, requests_b=3, requests_other=1))

    assert world.ledger.report() == [
        {"name": "s1", "period_start": "2026-11-01", "period_end": "2026-12-01", "cap_mode": "soft",
         "egress_bytes": 100, "ingress_bytes": 0, "requests_a": 0, "requests_b": 3, "requests_other": 1,
         "requests": 4, "caps": {"egress_bytes": 100, "requests": 10}, "reached": ["egress_bytes"]},
        {"name": "s2", "period_start": "2026-11-01", "period_end": "2026-12-01", "cap_mode": "hard",
         "egress_bytes": 0, "ingress_bytes": 0, "requests_a": 0, "requests_b": 0, "requests_other": 0,
         "requests": 0, "caps": {}, "reached": []},
    ]


# -- the sync job -----------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_the_job_syncs_every_interval_and_once_more_at_stop(make_world: Callable[..., Any]) -> None:
    world = await make_world(now=at(2026, 12, 2))
    job = TrafficSyncJob(world.ledger, world.clock, interval=5.0)
    job.startService()
    await job.run_once()  # the run at start
    world.ledger.count("s1", Traffic(egress_bytes=1))
    assert await world.table.read(DEC) == {}

    world.clock.advance(5.0)
    await job.run_once()  # waits for the timed run

    assert await world.table.read(DEC) == {("s1", DEC): Traffic(egress_bytes=1)}
    world.ledger.count("s1", Traffic(egress_bytes=2))
    await job.stopService()
    assert await world.table.read(DEC) == {("s1", DEC): Traffic(egress_bytes=3)}


# -- the metered store ---------------------------------------------------------------------------------


class Recorder:
    """Hears of a store's traffic, as the ledger does, and keeps it."""

    def __init__(self) -> None:
        self.stores: set[str] = set()
        self.total = Traffic()

    def count(self, store: str, traffic: Traffic) -> None:
        self.stores.add(store)
        self.total += traffic

    def count_bytes(self, store: str, egress: int = 0, ingress: int = 0) -> None:
        self.count(store, Traffic(egress_bytes=egress, ingress_bytes=ingress))


@pytest.fixture
def metered(tmp_path: Path) -> tuple[MeteredStore, Recorder]:
    recorder = Recorder()
    return MeteredStore(DirectoryStore("d1", str(tmp_path / "d1"), reactor), recorder), recorder


@pytest_twisted.ensureDeferred
async def test_a_write_counts_a_class_a_request_and_its_bytes_as_ingress(
    metered: tuple[MeteredStore, Recorder],
) -> None:
    store, counted = metered
    await store.start()
    body = FakeRequestBody(b"x" * 1000)
    write = store.start_write("bkt/k", body, body.length)
    body.release_tail()
    await write.done
    await write.publish()

    assert counted.stores == {"d1"}
    assert counted.total == Traffic(ingress_bytes=1000, requests_a=1)


@pytest_twisted.ensureDeferred
async def test_a_read_counts_a_class_b_request_and_the_bytes_delivered_as_egress(
    metered: tuple[MeteredStore, Recorder], tmp_path: Path,
) -> None:
    store, counted = metered
    await store.start()
    (tmp_path / "d1" / "bkt.d").mkdir(parents=True)
    (tmp_path / "d1" / "bkt.d" / "k").write_bytes(b"y" * 3000)

    reader = await store.open_read("bkt/k", (1000, 1999))
    consumer = CollectingConsumer()
    streamed = reader.stream_to(consumer)
    consumer.pull_all()
    await streamed

    assert consumer.body == b"y" * 1000
    assert counted.total == Traffic(egress_bytes=1000, requests_b=1)


@pytest_twisted.ensureDeferred
async def test_stats_probes_and_deletes_count_requests_by_class(
    metered: tuple[MeteredStore, Recorder],
) -> None:
    store, counted = metered
    await store.start()
    await store.probe()
    await store.delete("bkt/nothing")
    with pytest.raises(ObjectMissing):
        await store.stat("bkt/nothing")
    upload = await store.create_upload("bkt/big")
    await store.abort_upload("bkt/big", upload)

    assert counted.total == Traffic(requests_a=1, requests_b=2, requests_other=2)


def test_what_the_interface_does_not_name_passes_through_uncounted(
    metered: tuple[MeteredStore, Recorder], tmp_path: Path,
) -> None:
    store, counted = metered
    assert store.name == "d1"
    assert store.location_for("bkt", "k") == "bkt/k"
    assert store.root == str(tmp_path / "d1")  # a DirectoryStore's own attribute
    assert counted.total == Traffic()
