"""The mover job: drains stores in mode drain, makes queued moves, paced and pausable
(real placement on directory stores, SQLite metadata)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Iterator

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred, succeed
from twisted.internet.task import Clock

from s3orchestrator.config import MovementConfig, PlacementPolicy
from s3orchestrator.jobs.health import StoreHealth
from s3orchestrator.jobs.mover import MoverJob, retry_delay
from s3orchestrator.metadata.records import PlannedMove
from s3orchestrator.metadata.store import sqlite_metadata_store
from s3orchestrator.ops.movement import movement_status
from s3orchestrator.ops.report import movement_lines
from s3orchestrator.placement.engine import NewObject, Placement
from s3orchestrator.placement.locks import KeyLocks
from s3orchestrator.stores.directory import DirectoryStore
from s3orchestrator.stores.interface import StoreUnavailable
from tests.unit.fakes import FakeRequestBody

NEW = NewObject(content_type="text/plain", headers={}, user_metadata={})
NAMES = ("a", "b", "c")


@pytest.fixture
def world(tmp_path: Path) -> Iterator[Any]:
    metadata = sqlite_metadata_store(str(tmp_path / "metadata.sqlite3"), reactor)
    stores = {name: DirectoryStore(name, str(tmp_path / name), reactor) for name in NAMES}
    yield metadata, stores, tmp_path
    metadata.database.close()


async def started(world: Any, modes: dict[str, str]) -> Any:
    metadata, stores, _ = world
    await metadata.start()
    await metadata.sync_stores([(name, 10_000) for name in NAMES])
    for store in stores.values():
        await store.start()
    policy = PlacementPolicy()
    placement = Placement(metadata, stores, "spread", reactor, KeyLocks(), StoreHealth(list(stores), 1),
                          policy=lambda bucket: policy, modes=lambda: modes)
    mover = MoverJob(placement, metadata, lambda: modes, MovementConfig, reactor, owner="test:1")
    return placement, mover


def files(root: Path) -> list[str]:
    return sorted(str(path.relative_to(root)) for path in root.rglob("*") if path.is_file())


@pytest_twisted.ensureDeferred
async def test_a_drain_moves_every_copy_off_the_store_and_reports_it_empty(world) -> None:
    metadata, stores, tmp_path = world
    modes = {"a": "normal", "b": "readonly", "c": "readonly"}
    placement, mover = await started(world, modes)
    for index in range(20):
        await placement.write("bkt", f"k{index:02d}", FakeRequestBody(b"x" * (index + 1)), NEW)
    modes.update(a="drain", b="normal", c="normal")

    assert await mover.run_once() == 20

    assert await metadata.live_copies_on("a") == (0, 0)
    assert files(tmp_path / "a") == []
    usage = {u.name: (u.used_bytes, u.object_count) for u in await metadata.store_usage()}
    assert usage["a"] == (0, 0)
    assert usage["b"][0] + usage["c"][0] == sum(range(1, 21)) and usage["b"][1] + usage["c"][1] == 20
    assert usage["b"][1] and usage["c"][1]  # spread: both took copies
    document = await movement_status(metadata, modes, 0)
    (move,) = document["moves"]
    assert (move["reason"], move["store"], move["moved_objects"], move["moved_bytes"], move["left_objects"]) == (
        "drain", "a", 20, 210, 0)
    assert [store["drained"] for store in document["stores"]] == [True, False, False]
    assert movement_lines(document) == ["drain of a: done, the store is empty (20 copies (210 B) moved)"]
    assert (mover.moved, mover.moved_bytes) == (20, 210)


@pytest_twisted.ensureDeferred
async def test_a_drain_stops_when_its_store_leaves_mode_drain(world) -> None:
    metadata, _, _ = world
    modes = {"a": "normal", "b": "readonly", "c": "readonly"}
    placement, mover = await started(world, modes)
    await placement.write("bkt", "k", FakeRequestBody(b"abc"), NEW)
    await metadata.queue_moves(await metadata.copies_on_store("a", None, 10), "drain", 0)
    await mover.run_once()
    assert await metadata.move_progress() == []
    assert await metadata.live_copies_on("a") == (1, 3)


@pytest_twisted.ensureDeferred
async def test_paused_movement_moves_nothing_until_resumed(world) -> None:
    metadata, _, _ = world
    modes = {"a": "normal", "b": "readonly", "c": "readonly"}
    placement, mover = await started(world, modes)
    await placement.write("bkt", "k", FakeRequestBody(b"abc"), NEW)
    modes.update(a="drain", b="normal")
    await metadata.pause_movement(True, 0)
    assert await mover.run_once() == 0
    assert mover.paused
    assert await metadata.live_copies_on("a") == (1, 3)
    await metadata.pause_movement(False, 0)
    assert await mover.run_once() == 1
    assert await metadata.live_copies_on("b") == (1, 3)


@pytest_twisted.ensureDeferred
async def test_a_failed_move_stays_queued_with_its_error(world) -> None:
    metadata, _, _ = world
    modes = {"a": "normal", "b": "readonly", "c": "readonly"}
    placement, mover = await started(world, modes)
    await placement.write("bkt", "k", FakeRequestBody(b"abc"), NEW)
    modes["a"] = "drain"  # and no store takes new copies
    assert await mover.run_once() == 0
    (move,) = await metadata.moves_due(10, 10**15)
    assert move.attempts == 1 and "room" in (move.last_error or "")
    assert mover.failures == 1
    assert (await movement_status(metadata, modes, 0))["moves"][0]["failing"] == 1


@pytest_twisted.ensureDeferred
async def test_queued_rebalance_moves_go_to_their_named_store(world) -> None:
    metadata, _, _ = world
    modes: dict[str, str] = {}
    placement, mover = await started(world, modes)
    record = await placement.write("bkt", "k", FakeRequestBody(b"abc"), NEW)
    await metadata.queue_moves([PlannedMove("bkt", "k", record.store, "c", 3)], "rebalance", 0)
    assert await mover.run_once() == 1
    assert [copy.store for copy in await metadata.object_copies("bkt", "k")] == ["c"]


def test_retries_back_off_up_to_five_minutes() -> None:
    assert [retry_delay(n) for n in (0, 1, 2, 10, 100)] == [1.0, 2.0, 4.0, 300.0, 300.0]


def test_moves_are_paced_at_max_bytes_per_second_together() -> None:
    clock = Clock()
    mover = MoverJob(None, SimpleNamespace(instance_id="test:1"), dict,  # type: ignore[arg-type]
                     lambda: MovementConfig(max_bytes_per_second=100, max_concurrent=4), clock)
    waits = [ensureDeferred(mover._pace(100)) for _ in range(3)]
    assert [wait.called for wait in waits] == [True, False, False]
    clock.advance(1)
    assert [wait.called for wait in waits] == [True, True, False]
    clock.advance(1)
    assert all(wait.called for wait in waits)


def counted_transactions(metadata: Any) -> Counter[str]:
    """Counts the metadata transactions from now on: by ``desc``, and in all
    (``"all"``) and the write ones (``"writes"``)."""
    counts: Counter[str] = Counter()
    database = metadata.database
    run_interaction, point_read = database.runInteraction, database.point_read

    def counted_interaction(desc: str, func: Any, *args: Any, write: bool = False, durable: bool = True) -> Any:
        counts.update([desc, "all"] + (["writes"] if write else []))
        return run_interaction(desc, func, *args, write=write, durable=durable)

    def counted_read(desc: str, func: Any, *args: Any) -> Any:
        counts.update([desc, "all"])
        return point_read(desc, func, *args)

    database.runInteraction, database.point_read = counted_interaction, counted_read
    return counts


class Unstaged:
    """A directory store whose writes are in place once done (``staged`` False), as an
    S3 store's PUT is: nothing left to publish."""

    def __init__(self, store: DirectoryStore) -> None:
        self._store = store

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def start_write(self, location: str, body: Any, length: int) -> Any:
        return UnstagedWrite(self._store.start_write(location, body, length))

    def start_copy(self, source_location: str, target_location: str, length: int) -> Any:
        return UnstagedWrite(self._store.start_copy(source_location, target_location, length))


class UnstagedWrite:
    staged = False

    def __init__(self, write: Any) -> None:
        self._write = write
        self.done = write.done.addCallback(lambda _: write.publish())

    @property
    def location_intact(self) -> bool:
        return bool(self._write.location_intact)

    def publish(self) -> Any:
        return succeed(None)

    def abort(self) -> None:
        self._write.abort()


@pytest.mark.parametrize(("staged", "transactions", "writes"), [(True, 6, 5), (False, 5, 4)])
@pytest_twisted.ensureDeferred
async def test_a_move_costs_five_or_six_metadata_transactions(world, staged: bool, transactions: int,
                                                              writes: int) -> None:
    metadata, stores, tmp_path = world
    if not staged:
        world = (metadata, {name: Unstaged(store) for name, store in stores.items()}, tmp_path)
    modes = {"a": "normal", "b": "readonly", "c": "readonly"}
    placement, mover = await started(world, modes)
    for index in range(20):
        await placement.write("bkt", f"k{index:02d}", FakeRequestBody(b"x" * 10), NEW)
    modes.update(a="drain", b="normal", c="normal")
    await mover._queue_drains()
    counts = counted_transactions(metadata)

    assert await mover._make_moves() == 20

    # Per batch: whether paused, the due moves (and a last empty batch). Per move: the
    # claim (with the object's copies), the reservation (with the intent), the check that
    # the new copy is still wanted, the new copy (staged: published between the two), the
    # old one let go (with the new one's claim ended, the old bytes claimed and the move
    # taken out of the queue), and the old bytes gone.
    assert (counts["movement_paused"], counts["moves_due"]) == (2, 2)
    assert (counts["claim_move"], counts["reserve"], counts["get_object_copies"], counts["add_copy"],
            counts["let_go_moved_copy"], counts["finish_cleanup"]) == (20, 20, 20, 20 if staged else 0, 20, 20)
    assert (counts["all"], counts["writes"]) == (transactions * 20 + 4, writes * 20)
    assert await metadata.live_copies_on("a") == (0, 0) and files(tmp_path / "a") == []
    assert sorted(len(files(tmp_path / name)) for name in "bc") == [10, 10]
    usage = {u.name: (u.used_bytes, u.object_count) for u in await metadata.store_usage()}
    assert usage == {"a": (0, 0), "b": (100, 10), "c": (100, 10)}
    assert await metadata.list_cleanups(10) == [] and await metadata.list_intents() == []
    (progress,) = await metadata.move_progress()
    assert (progress.left_objects, progress.moved_objects, progress.moved_bytes) == (0, 20, 200)


@pytest_twisted.ensureDeferred
async def test_the_counts_of_moves_left_stay_those_of_the_queue_during_and_after_a_drain(world, monkeypatch) -> None:
    metadata, _, _ = world
    modes = {"a": "normal", "b": "readonly", "c": "readonly"}
    placement, _ = await started(world, modes)
    for index in range(12):
        await placement.write("bkt", f"k{index:02d}", FakeRequestBody(b"x" * (index + 1)), NEW)
    modes.update(a="drain", b="normal", c="normal")
    clock = Clock()
    clock.advance(1_700_000_000)
    mover = MoverJob(placement, metadata, lambda: modes, MovementConfig, clock, owner="test:1")
    seen: list[tuple[tuple[int, int, int], tuple[int, int, int]]] = []
    move_copy = placement.move_copy

    def counted_and_queued(txn: Any) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
        # One transaction: the other move in flight may end between two.
        counted = txn.query_one("SELECT left_objects, left_bytes, failing FROM movement_totals")
        queued = txn.query_one(
            "SELECT COUNT(*), SUM(size), SUM(CASE WHEN attempts > 0 THEN 1 ELSE 0 END) FROM movements")
        return tuple(counted), tuple(queued)

    async def counted_first(bucket: str, key: str, *args: Any, **kwargs: Any) -> Any:
        seen.append(await metadata.database.runInteraction("check", counted_and_queued))
        if key == "k03" and not any(failing for _, (_, _, failing) in seen):
            raise StoreUnavailable("store b is down")
        return await move_copy(bucket, key, *args, **kwargs)

    monkeypatch.setattr(placement, "move_copy", counted_first)
    assert await mover.run_once() == 11
    (progress,) = await metadata.move_progress()
    assert (progress.left_objects, progress.left_bytes, progress.failing) == (1, 4, 1)
    assert (progress.moved_objects, progress.moved_bytes) == (11, sum(range(1, 13)) - 4)
    clock.advance(1)
    assert await mover.run_once() == 1

    assert seen[0] == ((12, 78, 0), (12, 78, 0)) and seen[-1] == ((1, 4, 1), (1, 4, 1)) and len(seen) == 13
    assert all(counted == queued for counted, queued in seen)
    document = await movement_status(metadata, modes, int(clock.seconds() * 1000))
    (move,) = document["moves"]
    assert (move["left_objects"], move["left_bytes"], move["failing"], move["moved_objects"], move["moved_bytes"]) == (
        0, 0, 0, 12, 78)
    assert document["stores"][0]["drained"]
