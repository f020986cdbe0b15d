"""The movements queue in the metadata store (both engines): queueing, claims, progress, pause."""

from __future__ import annotations

from typing import Callable

import attrs
import pytest_twisted

from s3orchestrator.metadata.records import Instance, MoveProgress, NewCopy, ObjectRecord, PlannedMove
from s3orchestrator.metadata.store import MetadataStore

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
