"""Write intents and the cleanup queue in the metadata store (both engines)."""

from __future__ import annotations

from typing import Any, Callable

import pytest_twisted

from s3orchestrator.metadata.claims import write_holder
from s3orchestrator.metadata.records import IntentPlan, NewCopy, ObjectRecord
from s3orchestrator.metadata.store import MetadataStore

Rows = Callable[..., list[tuple[Any, ...]]]


def record(key: str, store: str, size: int, location: str | None = None) -> ObjectRecord:
    return ObjectRecord(
        bucket="bkt", key=key, store=store, location=location or f"bkt/{key}", size=size,
        etag="0123456789abcdef0123456789abcdef", content_type="binary/octet-stream",
        last_modified_ms=1_700_000_000_123,
    )


def plan(key: str = "k") -> IntentPlan:
    return IntentPlan(bucket="bkt", key=key, locate=lambda store: f"{store}:bkt/{key}")


async def started(make_store) -> MetadataStore:
    metadata = make_store()
    await metadata.start()
    await metadata.sync_stores([("a", 0), ("b", 0)])
    return metadata


def used(db_rows: Rows) -> dict[str, tuple[int, int]]:
    return {name: (int(size), int(count)) for name, size, count in db_rows(
        "SELECT s.name, COALESCE(SUM(u.used_bytes), 0), COALESCE(SUM(u.object_count), 0) FROM stores s"
        " LEFT JOIN store_usage u ON u.store = s.name GROUP BY s.name ORDER BY s.name"
    )}


@pytest_twisted.ensureDeferred
async def test_reserving_with_a_plan_records_one_intent_per_copy(make_store) -> None:
    metadata = await started(make_store)
    reservations = await metadata.reserve_copies(40, lambda usage: ("b", "a"), plan())
    intents = await metadata.list_intents()
    assert [(i.reservation_id, i.store, i.location, i.size, i.owner) for i in intents] == [
        (reservations[0].id, "b", "b:bkt/k", 40, "test:1"),
        (reservations[1].id, "a", "a:bkt/k", 40, "test:1"),
    ]


@pytest_twisted.ensureDeferred
async def test_the_commit_of_a_copy_drops_its_intent_only(make_store) -> None:
    metadata = await started(make_store)
    first, second = await metadata.reserve_copies(10, lambda usage: ("a", "b"), plan())
    await metadata.commit_object(first.id, record("k", "a", 10, location="a:bkt/k"))
    assert [intent.reservation_id for intent in await metadata.list_intents()] == [second.id]


@pytest_twisted.ensureDeferred
async def test_release_drops_the_intent_and_queues_leftover_bytes_as_used(make_store, db_rows: Rows) -> None:
    metadata = await started(make_store)
    (reservation,) = await metadata.reserve_copies(30, lambda usage: ("a",), plan())
    await metadata.release(reservation.id, leftover="a:bkt/k")
    assert await metadata.list_intents() == []
    assert db_rows("SELECT COUNT(*) FROM reservations") == [(0,)]
    assert [(e.store, e.location, e.size) for e in await metadata.list_cleanups(10)] == [("a", "a:bkt/k", 30)]
    assert used(db_rows) == {"a": (30, 0), "b": (0, 0)}
    assert await metadata.cleanup_totals() == {"a": (1, 30)}
    assert await metadata.finish_cleanup("a", "a:bkt/k") == 1
    assert used(db_rows) == {"a": (0, 0), "b": (0, 0)}


@pytest_twisted.ensureDeferred
async def test_adopt_drops_an_intent_whose_copy_is_live_and_keeps_one_whose_copy_is_not(make_store) -> None:
    metadata = await started(make_store)
    (live,) = await metadata.reserve_copies(10, lambda usage: ("a",), plan("one"))
    (lost,) = await metadata.reserve_copies(10, lambda usage: ("a",), plan("two"))
    # A copy at the intent's location went live (its commit dropped no intent: another path).
    reservation = await metadata.reserve(10, lambda usage: "a")
    await metadata.commit_object(reservation.id, record("one", "a", 10, location="a:bkt/one"))
    assert await metadata.adopt_intent(live.id) is True
    assert await metadata.adopt_intent(lost.id) is False
    assert await metadata.adopt_intent(live.id) is None
    assert [intent.key for intent in await metadata.list_intents()] == ["two"]
    assert {usage.name: usage.reserved_bytes for usage in await metadata.store_usage()} == {"a": 10, "b": 0}


@pytest_twisted.ensureDeferred
async def test_releasing_a_dead_instances_reservations_keeps_those_with_an_intent(make_store) -> None:
    metadata = await started(make_store)
    await metadata.reserve_copies(10, lambda usage: ("a",), plan())
    await metadata.reserve(7, lambda usage: "b")
    assert await metadata.release_dead_reservations(0) == 1  # the instance never registered: dead
    assert {usage.name: usage.reserved_bytes for usage in await metadata.store_usage()} == {"a": 10, "b": 0}


@pytest_twisted.ensureDeferred
async def test_a_commit_at_a_queued_location_drops_the_queued_cleanup(make_store, db_rows: Rows) -> None:
    metadata = await started(make_store)
    reservation = await metadata.reserve(10, lambda usage: "a")
    await metadata.commit_object(reservation.id, record("k", "a", 10))
    await metadata.delete_object("bkt", "k")
    assert used(db_rows) == {"a": (10, 0), "b": (0, 0)}
    # A new object at the same location replaced the queued bytes: cleaning up that
    # location now would delete the new object.
    reservation = await metadata.reserve(25, lambda usage: "a")
    await metadata.commit_object(reservation.id, record("k", "a", 25))
    assert await metadata.list_cleanups(10) == []
    assert used(db_rows) == {"a": (25, 1), "b": (0, 0)}


@pytest_twisted.ensureDeferred
async def test_due_cleanups_and_postpone(make_store) -> None:
    metadata = await started(make_store)
    await metadata.queue_cleanup("a", "x", 5)
    await metadata.queue_cleanup("b", "y", 6)
    first, second = await metadata.list_cleanups(10)
    await metadata.postpone_cleanup(first.id, 10**15, "store down")
    assert [entry.location for entry in await metadata.due_cleanups(10**14, 10)] == ["y"]
    (postponed,) = [entry for entry in await metadata.list_cleanups(10) if entry.id == first.id]
    assert (postponed.attempts, postponed.next_try_ms, postponed.last_error) == (1, 10**15, "store down")


@pytest_twisted.ensureDeferred
async def test_location_in_use_sees_live_copies_and_intents(make_store) -> None:
    metadata = await started(make_store)
    await metadata.reserve_copies(10, lambda usage: ("a",), plan("pending"))
    reservation = await metadata.reserve(10, lambda usage: "b")
    await metadata.commit_object(reservation.id, record("live", "b", 10))
    assert await metadata.location_in_use("a", "a:bkt/pending") is True
    assert await metadata.location_in_use("b", "bkt/live") is True
    assert await metadata.location_in_use("a", "bkt/live") is False
    (intent,) = await metadata.list_intents()
    assert await metadata.location_in_use("a", "a:bkt/pending", ignore_intent=intent.reservation_id) is False


@pytest_twisted.ensureDeferred
async def test_an_n_copy_overwrite_queues_every_old_copy_but_one_replaced_in_place(
    make_store, db_rows: Rows
) -> None:
    metadata = await started(make_store)
    await metadata.sync_stores([("a", 0), ("b", 0), ("c", 0)])
    old = await metadata.reserve_copies(10, lambda usage: ("a", "b"), plan())
    await metadata.commit_copies(record("k", "a", 10, location="a:bkt/k"),
                                 [NewCopy(r.store, f"{r.store}:bkt/k", r.id) for r in old], missing=False)
    assert await metadata.list_intents() == []
    await metadata.end_claims([write_holder(r.id) for r in old])  # published: settled
    # The overwrite writes over a's copy in place, puts one on c; b's copy is still going.
    a, c, b = await metadata.reserve_copies(4, lambda usage: ("a", "c", "b"), plan())
    new = record("k", "a", 4, location="a:bkt/k")
    await metadata.commit_copies(new, [NewCopy("a", "a:bkt/k", a.id), NewCopy("c", "c:bkt/k", c.id)], missing=True)
    assert [intent.reservation_id for intent in await metadata.list_intents()] == [b.id]
    assert [(e.store, e.location, e.size) for e in await metadata.list_cleanups(10)] == [("b", "b:bkt/k", 10)]
    assert used(db_rows) == {"a": (4, 1), "b": (10, 0), "c": (4, 1)}

    # The late copy on b joins: its intent goes, and so do the old bytes queued where it wrote.
    assert await metadata.add_copy(new, NewCopy("b", "b:bkt/k", b.id))
    assert await metadata.list_intents() == []
    assert await metadata.list_cleanups(10) == []
    assert used(db_rows) == {"a": (4, 1), "b": (4, 1), "c": (4, 1)}

    await metadata.delete_object("bkt", "k")
    assert sorted((e.store, e.location, e.size) for e in await metadata.list_cleanups(10)) == [
        ("a", "a:bkt/k", 4), ("b", "b:bkt/k", 4), ("c", "c:bkt/k", 4),
    ]
    assert used(db_rows) == {"a": (4, 0), "b": (4, 0), "c": (4, 0)}
    for name in ("a", "b", "c"):
        assert await metadata.finish_cleanup(name, f"{name}:bkt/k") == 1
    assert used(db_rows) == {"a": (0, 0), "b": (0, 0), "c": (0, 0)}


@pytest_twisted.ensureDeferred
async def test_a_refused_late_copy_keeps_its_reservation_and_intent_for_release(make_store, db_rows: Rows) -> None:
    metadata = await started(make_store)
    first, second = await metadata.reserve_copies(10, lambda usage: ("a", "b"), plan())
    await metadata.commit_copies(record("k", "a", 10, location="a:bkt/k"), [NewCopy("a", "a:bkt/k", first.id)],
                                 missing=True)
    await metadata.delete_object("bkt", "k")
    assert not await metadata.add_copy(record("k", "a", 10, location="a:bkt/k"), NewCopy("b", "b:bkt/k", second.id))
    assert [intent.reservation_id for intent in await metadata.list_intents()] == [second.id]
    await metadata.release(second.id, leftover="b:bkt/k")
    assert await metadata.list_intents() == []
    assert used(db_rows) == {"a": (10, 0), "b": (10, 0)}  # both locations queued, counted until gone
