"""The movements queue in the metadata store (both engines): queueing, claims, progress, pause."""

from __future__ import annotations

from typing import Any, Callable

import attrs
import pytest_twisted

from s3orchestrator.metadata.claims import write_holder
from s3orchestrator.metadata.interface import NOT_ADDED
from s3orchestrator.metadata.movements import _MOVE_COLUMNS
from s3orchestrator.metadata.placements import ObjectPlacements
from s3orchestrator.metadata.records import (
    Instance,
    IntentPlan,
    MoveProgress,
    NewCopy,
    ObjectCopies,
    ObjectRecord,
    PlannedMove,
)
from s3orchestrator.metadata.schema import load_migrations, migrate
from s3orchestrator.metadata.store import MetadataStore

Rows = Callable[..., list[tuple[Any, ...]]]

NOW = 1_700_000_000_000


def record(key: str, store: str = "a", size: int = 10) -> ObjectRecord:
    return ObjectRecord(bucket="bkt", key=key, store=store, location=f"{store}:bkt/{key}", size=size,
                        etag="0123456789abcdef0123456789abcdef", content_type="binary/octet-stream",
                        last_modified_ms=NOW)


async def with_objects(make_store: Callable[..., MetadataStore], keys: dict[str, int]) -> MetadataStore:
    """A metadata store with stores a, b, c and the objects ``keys`` (key: size) on store a."""
    metadata = make_store()
    await metadata.start()
    await metadata.sync_stores([("a", 0), ("b", 0), ("c", 0)])
    for key, size in keys.items():
        (reservation,) = await metadata.reserve_copies(size, lambda usage: ("a",))
        await metadata.commit_copies(record(key, size=size), [NewCopy("a", f"a:bkt/{key}", reservation.id)],
                                     missing=False)
    return metadata


@pytest_twisted.ensureDeferred
async def test_queue_moves_queues_each_copy_once(make_store: Callable[..., MetadataStore]) -> None:
    metadata = await with_objects(make_store, {"k1": 10, "k2": 20})
    moves = [PlannedMove("bkt", "k1", "a", "b", 10), PlannedMove("bkt", "k2", "a", None, 20)]
    assert await metadata.queue_moves(moves, "rebalance", NOW) == 2
    assert await metadata.queue_moves(moves, "rebalance", NOW + 5) == 0
    due = await metadata.moves_due(10, NOW)
    assert [move.planned for move in due] == moves
    assert {move.reason for move in due} == {"rebalance"}
    assert await metadata.move_progress() == [MoveProgress("rebalance", "a", 2, 30, 0, 0, NOW)]


@pytest_twisted.ensureDeferred
async def test_copies_on_store_pages_the_live_copies_of_a_store(make_store: Callable[..., MetadataStore]) -> None:
    metadata = await with_objects(make_store, {"k1": 10, "k2": 20, "k3": 5})
    assert await metadata.live_copies_on("a") == (3, 35)
    page = await metadata.copies_on_store("a", None, 2)
    assert page == [PlannedMove("bkt", "k1", "a", None, 10), PlannedMove("bkt", "k2", "a", None, 20)]
    assert [move.key for move in await metadata.copies_on_store("a", ("bkt", "k2"), 2)] == ["k3"]
    assert await metadata.copies_on_store("b", None, 2) == []


@pytest_twisted.ensureDeferred
async def test_finishing_a_move_counts_it_and_postponing_delays_it(make_store: Callable[..., MetadataStore]) -> None:
    metadata = await with_objects(make_store, {"k1": 10, "k2": 20})
    await metadata.queue_moves(await metadata.copies_on_store("a", None, 10), "drain", NOW)
    first, second = await metadata.moves_due(10, NOW)
    await metadata.finish_move(first, moved=True)
    await metadata.postpone_move(second, NOW + 60_000, "store b down")
    assert await metadata.moves_due(10, NOW + 1000) == []
    (again,) = await metadata.moves_due(10, NOW + 60_000)
    assert (again.key, again.attempts, again.last_error) == ("k2", 1, "store b down")
    assert await metadata.move_progress() == [MoveProgress("drain", "a", 1, 20, 1, 10, NOW, failing=1)]
    await metadata.finish_move(again, moved=False)
    assert await metadata.move_progress() == [MoveProgress("drain", "a", 0, 0, 1, 10, NOW)]
    assert await metadata.unqueue_moves("drain", "a") == 0
    assert await metadata.move_progress() == []


@pytest_twisted.ensureDeferred
async def test_one_live_instance_at_a_time_moves_an_object(make_store: Callable[..., MetadataStore]) -> None:
    metadata = await with_objects(make_store, {"k1": 10})
    await metadata.register_instance(Instance("one", "h", 1, NOW, NOW + 30_000))
    await metadata.register_instance(Instance("two", "h", 2, NOW, NOW + 30_000))
    await metadata.queue_moves([PlannedMove("bkt", "k1", "a", "b", 10)], "rebalance", NOW)
    # Two copies of one object: never moved by two instances at once.
    await metadata.queue_moves([PlannedMove("bkt", "k1", "c", "b", 10)], "rebalance", NOW)
    first, second = await metadata.moves_due(10, NOW)
    assert await metadata.claim_move(first, "one", NOW + 1)
    assert not await metadata.claim_move(second, "two", NOW + 2)
    assert not await metadata.claim_move(first, "two", NOW + 2)
    # A claimed move is due for its claimer only; nor may it claim the object's other moves.
    assert [m.from_store for m in await metadata.moves_due(10, NOW + 3)] == ["c"]
    assert [m.from_store for m in await metadata.moves_due(10, NOW + 3, owner="one")] == ["a", "c"]
    assert not await metadata.claim_move(second, "one", NOW + 3)
    assert await metadata.claim_move(first, "one", NOW + 3)
    # Once "one" is dead, its claims are void.
    assert len(await metadata.moves_due(10, NOW + 40_000)) == 2
    await metadata.renew_instance(Instance("two", "h", 2, NOW, NOW + 30_000), NOW + 90_000)
    assert await metadata.claim_move(first, "two", NOW + 40_000)
    await metadata.postpone_move(first, NOW + 40_000, "failed")
    assert await metadata.claim_move(second, "two", NOW + 40_000)


@pytest_twisted.ensureDeferred
async def test_pause_is_kept_until_resumed(make_store: Callable[..., MetadataStore]) -> None:
    metadata = await with_objects(make_store, {})
    assert not await metadata.movement_paused()
    await metadata.pause_movement(True, NOW)
    assert await metadata.movement_paused()
    await metadata.pause_movement(False, NOW + 1)
    assert not await metadata.movement_paused()


@pytest_twisted.ensureDeferred
async def test_let_go_copy_drops_a_moved_copy_only_while_the_object_is_unchanged(
    make_store: Callable[..., MetadataStore],
) -> None:
    metadata = await with_objects(make_store, {"k1": 10})
    (reservation,) = await metadata.reserve_copies(10, lambda usage: ("b",))
    assert await metadata.add_copy(record("k1", size=10), NewCopy("b", "b:bkt/k1", reservation.id))
    _, live = await metadata.get_object_copies("bkt", "k1")  # type: ignore[misc]
    old = next(copy for copy in live if copy.store == "a")
    newer = attrs.evolve(record("k1", size=10), last_modified_ms=NOW + 1)
    assert not await metadata.let_go_copy(newer, old)
    assert await metadata.let_go_copy(record("k1", size=10), old)
    found = await metadata.get_object_copies("bkt", "k1")
    assert found is not None
    assert (found[0].store, [copy.store for copy in found[1]]) == ("b", ["b"])
    assert [(e.store, e.location) for e in await metadata.list_cleanups(10)] == [("a", "a:bkt/k1")]
    # The last live copy is never let go.
    assert not await metadata.let_go_copy(record("k1", size=10), found[1][0])


def left_in_queue(db_rows: Rows) -> list[tuple[str, str, int, int, int]]:
    """(reason, store, objects, bytes, failing) of the queued moves, counted from the queue itself."""
    return sorted(
        (reason, store, int(objects), int(size), int(failing)) for reason, store, objects, size, failing in db_rows(
            "SELECT reason, from_store, COUNT(*), SUM(size), SUM(CASE WHEN attempts > 0 THEN 1 ELSE 0 END)"
            " FROM movements GROUP BY reason, from_store"
        )
    )


async def left_counted(metadata: MetadataStore) -> list[tuple[str, str, int, int, int]]:
    """The same, as ``move_progress`` counts it (reasons and stores with nothing left out)."""
    return [(p.reason, p.store, p.left_objects, p.left_bytes, p.failing) for p in await metadata.move_progress()
            if p.left_objects]


@pytest_twisted.ensureDeferred
async def test_the_counts_of_what_is_left_follow_every_change_of_the_queue(
    make_store: Callable[..., MetadataStore], db_rows: Rows,
) -> None:
    metadata = await with_objects(make_store, {"k1": 10, "k2": 20, "k3": 30, "k4": 40})
    await metadata.register_instance(Instance("test:1", "h", 1, NOW, NOW + 3_600_000))

    async def check(expected: list[tuple[str, str, int, int, int]]) -> None:
        assert left_in_queue(db_rows) == expected
        assert await left_counted(metadata) == expected

    await metadata.queue_moves(await metadata.copies_on_store("a", None, 10), "drain", NOW)
    await metadata.queue_moves([PlannedMove("bkt", "k1", "a", "b", 10)], "drain", NOW)  # queued already
    await metadata.queue_moves([PlannedMove("bkt", "k1", "a", "c", 10), PlannedMove("bkt", "k2", "a", "c", 20),
                                PlannedMove("bkt", "k9", "b", "c", 5)], "rebalance", NOW)  # k1, k2: queued already
    await check([("drain", "a", 4, 100, 0), ("rebalance", "b", 1, 5, 0)])
    k1, k2, k3, k4, k9 = sorted(await metadata.moves_due(10, NOW), key=lambda move: move.key)
    assert await metadata.claim_move(k1, "test:1", NOW)
    await metadata.postpone_move(k1, NOW, "down")
    await metadata.postpone_move(k1, NOW, "down again")  # failing once, however often
    await metadata.postpone_move(k9, NOW, "down")
    await check([("drain", "a", 4, 100, 1), ("rebalance", "b", 1, 5, 1)])
    await metadata.finish_move(k1, moved=True)
    await metadata.finish_move(k1, moved=True)  # gone already: counted once
    await metadata.finish_move(k2, moved=False)
    await check([("drain", "a", 2, 70, 0), ("rebalance", "b", 1, 5, 1)])
    assert await ObjectPlacements(metadata.database).drop_moves_to(["c"], "rebalance") == 1
    await check([("drain", "a", 2, 70, 0)])
    # A move's end (let_go_moved_copy) takes it out of the queue too, as moved.
    found = await metadata.claim_move(k3, "test:1", NOW)
    assert found is not None and found.record is not None
    (reservation,) = await metadata.reserve_copies(30, lambda usage: ("b",))
    assert await metadata.add_copy(found.record, NewCopy("b", "b:bkt/k3", reservation.id))
    assert await metadata.let_go_moved_copy(found.record, found.live[0], (), "d1", NOW + 60_000, k3) == "claimed"
    await check([("drain", "a", 1, 40, 0)])
    progress = {(p.reason, p.store): p for p in await metadata.move_progress()}
    assert (progress["drain", "a"].moved_objects, progress["drain", "a"].moved_bytes) == (2, 40)
    assert await metadata.unqueue_moves("drain", "a") == 1
    await check([])
    assert k4.key == "k4"


@pytest_twisted.ensureDeferred
async def test_a_claim_reads_the_object_the_move_starts_from(make_store: Callable[..., MetadataStore]) -> None:
    metadata = await with_objects(make_store, {"k1": 10})
    await metadata.register_instance(Instance("one", "h", 1, NOW, NOW + 30_000))
    (reservation,) = await metadata.reserve_copies(10, lambda usage: ("c",))
    assert await metadata.add_copy(record("k1", size=10), NewCopy("c", "c:bkt/k1", reservation.id))
    await metadata.queue_moves([PlannedMove("bkt", "k1", "a", "b", 10), PlannedMove("bkt", "gone", "a", "b", 1)],
                               "rebalance", NOW)
    k1, gone = sorted(await metadata.moves_due(10, NOW), key=lambda move: move.key, reverse=True)
    found = await metadata.claim_move(k1, "one", NOW + 1)
    assert found is not None and found.record is not None
    assert (found.record.key, [copy.store for copy in found.live], found.holding) == ("k1", ["a", "c"],
                                                                                      frozenset({"a", "c"}))
    await metadata.finish_move(k1, moved=False)
    assert await metadata.claim_move(gone, "one", NOW + 1) == ObjectCopies(None)
    assert await metadata.claim_move(k1, "one", NOW + 1) is None  # no longer queued


@pytest_twisted.ensureDeferred
async def test_the_end_of_a_move_settles_claims_and_claims_the_old_bytes_in_one_transaction(
    make_store: Callable[..., MetadataStore], db_rows: Rows,
) -> None:
    metadata = await with_objects(make_store, {"k1": 10})
    await metadata.register_instance(Instance("test:1", "h", 1, NOW, NOW + 3_600_000))
    intent = IntentPlan("bkt", "k1", lambda store: f"{store}:bkt/k1")
    (reservation,) = await metadata.reserve_copies(10, lambda usage: ("b",), intent)
    assert await metadata.add_copy(record("k1", size=10), NewCopy("b", "b:bkt/k1", reservation.id))
    _, live = await metadata.get_object_copies("bkt", "k1")  # type: ignore[misc]
    old = next(copy for copy in live if copy.store == "a")
    newer = attrs.evolve(record("k1", size=10), last_modified_ms=NOW + 1)
    # Not let go (the object changed): the write's claim ends all the same.
    assert await metadata.let_go_moved_copy(newer, old, [write_holder(reservation.id)], "d1", NOW + 60_000) is None
    assert db_rows("SELECT holder FROM claims") == []
    assert await metadata.let_go_moved_copy(record("k1", size=10), old, [], "d1", NOW + 60_000) == "claimed"
    assert [tuple(row) for row in db_rows("SELECT store, location, holder FROM claims")] == [("a", "a:bkt/k1", "d1")]
    assert [(e.store, e.location) for e in await metadata.list_cleanups(10)] == [("a", "a:bkt/k1")]
    assert await metadata.finish_cleanup("a", "a:bkt/k1", "d1") == 1
    assert db_rows("SELECT holder FROM claims") == []


@pytest_twisted.ensureDeferred
async def test_migration_015_counts_what_the_queue_holds(
    make_store: Callable[..., MetadataStore], db_rows: Rows,
) -> None:
    previous = make_store()
    previous.database.start()
    await migrate(previous.database, load_migrations()[:14])
    await previous.stop()
    # What the code of schema version 14 left: moves of two reasons, one store without totals.
    for key, store, reason, size, attempts in (("k1", "a", "drain", 10, 0), ("k2", "a", "drain", 20, 3),
                                               ("k3", "b", "rebalance", 5, 0)):
        db_rows(f"INSERT INTO movements ({_MOVE_COLUMNS}) VALUES ('bkt', ?, ?, NULL, ?, ?, ?, ?, 0, NULL)",
                (key, store, reason, size, NOW + 7, attempts))
    db_rows("INSERT INTO movement_totals (reason, store, moved_objects, moved_bytes, started_ms)"
            " VALUES ('drain', 'a', 4, 40, ?), ('drain', 'c', 2, 2, ?)", (NOW, NOW))

    metadata = make_store()
    await metadata.start()
    assert await metadata.move_progress() == [
        MoveProgress("drain", "a", 2, 30, 4, 40, NOW, failing=1),
        MoveProgress("drain", "c", 0, 0, 2, 2, NOW),
        MoveProgress("rebalance", "b", 1, 5, 0, 0, NOW + 7),
    ]


@pytest_twisted.ensureDeferred
async def test_the_end_of_a_move_can_add_the_new_copy_too(
    make_store: Callable[..., MetadataStore], db_rows: Rows,
) -> None:
    metadata = await with_objects(make_store, {"k1": 10})
    await metadata.register_instance(Instance("test:1", "h", 1, NOW, NOW + 3_600_000))
    await metadata.queue_moves([PlannedMove("bkt", "k1", "a", None, 10)], "drain", NOW)
    (move,) = await metadata.moves_due(10, NOW)
    found = await metadata.claim_move(move, "test:1", NOW)
    assert found is not None and found.record is not None
    intent = IntentPlan("bkt", "k1", lambda store: f"{store}:bkt/k1")
    (reservation,) = await metadata.reserve_copies(10, lambda usage: ("b",), intent)
    added = NewCopy("b", "b:bkt/k1", reservation.id)
    settled = [write_holder(reservation.id)]
    newer = attrs.evolve(found.record, last_modified_ms=NOW + 1)
    # The object changed: nothing happens (the caller drops the new bytes).
    assert await metadata.let_go_moved_copy(newer, found.live[0], settled, "d1", NOW + 60_000, move,
                                            added=added) == NOT_ADDED
    assert len(db_rows("SELECT holder FROM claims")) == 1 and len(await metadata.list_intents()) == 1
    assert [m.key for m in await metadata.moves_due(10, NOW, "test:1")] == ["k1"]

    assert await metadata.let_go_moved_copy(found.record, found.live[0], settled, "d1", NOW + 60_000, move,
                                            added=added) == "claimed"
    assert [(c.store, c.state) for c in await metadata.object_copies("bkt", "k1")] == [("b", "live")]
    assert await metadata.list_intents() == [] and await metadata.moves_due(10, NOW, "test:1") == []
    assert [tuple(row) for row in db_rows("SELECT store, location, holder FROM claims")] == [("a", "a:bkt/k1", "d1")]
    usage = {u.name: (u.used_bytes, u.reserved_bytes, u.object_count) for u in await metadata.store_usage()}
    assert usage["a"] == (10, 0, 0) and usage["b"] == (10, 0, 1)  # a's bytes count until they are gone
    assert [(p.left_objects, p.moved_objects) for p in await metadata.move_progress()] == [(0, 1)]
