"""Claims of store locations in the metadata store (both engines): one live holder per
location, re-entrant for its holder, taken over from dead instances, ended on release."""

from __future__ import annotations

from typing import Any, Callable

import pytest
import pytest_twisted
from twisted.internet.defer import DeferredList

from s3orchestrator.metadata.claims import LocationClaimed, write_holder
from s3orchestrator.metadata.records import Instance, IntentPlan, ObjectRecord
from s3orchestrator.metadata.store import MetadataStore

Rows = Callable[..., list[tuple[Any, ...]]]
FAR = 2**62  # an expiry no test reaches


def plan(key: str = "k") -> IntentPlan:
    return IntentPlan(bucket="bkt", key=key, locate=lambda store: f"bkt/{key}")


async def started(make_store, instance_id: str = "host-a:1", alive: bool = True) -> MetadataStore:
    """The metadata store of instance ``instance_id`` on the test's database, registered
    as a live instance unless not ``alive`` (a process that died, never to renew)."""
    metadata = make_store(instance_id=instance_id)
    await metadata.start()
    await metadata.sync_stores([("a", 0), ("b", 0)])
    if alive:
        host, _, pid = instance_id.rpartition(":")
        await metadata.register_instance(Instance(id=instance_id, host=host, pid=int(pid), started_ms=0,
                                                  expires_ms=FAR))
    return metadata


def claims(db_rows: Rows) -> list[tuple[str, str, str, str]]:
    return [tuple(row) for row in db_rows("SELECT store, location, holder, owner FROM claims ORDER BY store")]


@pytest_twisted.ensureDeferred
async def test_a_write_claims_its_locations_when_it_reserves(make_store, db_rows: Rows) -> None:
    metadata = await started(make_store)
    first, second = await metadata.reserve_copies(5, lambda usage: ("a", "b"), plan())
    assert claims(db_rows) == [("a", "bkt/k", write_holder(first.id), "host-a:1"),
                               ("b", "bkt/k", write_holder(second.id), "host-a:1")]


@pytest_twisted.ensureDeferred
async def test_a_claimed_location_refuses_another_write_and_reserves_nothing(make_store, db_rows: Rows) -> None:
    metadata = await started(make_store)
    other = await started(make_store, "host-b:2")
    (first,) = await metadata.reserve_copies(5, lambda usage: ("a",), plan())
    with pytest.raises(LocationClaimed):
        await other.reserve_copies(7, lambda usage: ("b", "a"), plan())
    assert db_rows("SELECT id FROM reservations") == [(first.id,)]
    assert [intent.reservation_id for intent in await metadata.list_intents()] == [first.id]
    assert claims(db_rows) == [("a", "bkt/k", write_holder(first.id), "host-a:1")]


@pytest_twisted.ensureDeferred
async def test_a_released_claim_lets_the_next_write_claim_the_location(make_store, db_rows: Rows) -> None:
    metadata = await started(make_store)
    other = await started(make_store, "host-b:2")
    (first,) = await metadata.reserve_copies(5, lambda usage: ("a",), plan())
    await metadata.release(first.id)
    (second,) = await other.reserve_copies(5, lambda usage: ("a",), plan())
    assert claims(db_rows) == [("a", "bkt/k", write_holder(second.id), "host-b:2")]
    await other.end_claims([write_holder(second.id)])
    assert claims(db_rows) == []


@pytest_twisted.ensureDeferred
async def test_the_claim_of_a_dead_instance_is_taken_over(make_store, db_rows: Rows) -> None:
    dead = await started(make_store, "host-b:2", alive=False)
    metadata = await started(make_store)
    (gone,) = await dead.reserve_copies(5, lambda usage: ("a",), plan())
    (taker,) = await metadata.reserve_copies(5, lambda usage: ("a",), plan())
    assert claims(db_rows) == [("a", "bkt/k", write_holder(taker.id), "host-a:1")]
    # The dead writer's intent stays for the reaper; its claim is gone.
    assert sorted(intent.reservation_id for intent in await metadata.list_intents()) == [gone.id, taker.id]


@pytest_twisted.ensureDeferred
async def test_a_claim_of_an_earlier_process_with_the_same_instance_id_is_taken_over(
    make_store, db_rows: Rows
) -> None:
    earlier = await started(make_store, "host-a:1", alive=False)
    assert await earlier.claim_locations("a", ["bkt/k"], "d1", "host-a:1", FAR)
    (created_ms,) = db_rows("SELECT created_ms FROM claims")[0]
    later = make_store(instance_id="host-a:1")
    await later.start()
    # The same id registered again, by a process started after the claim was taken.
    await later.register_instance(Instance(id="host-a:1", host="host-a", pid=1, started_ms=int(created_ms) + 1,
                                           expires_ms=FAR))
    assert await later.claim_locations("a", ["bkt/k"], "d2", "host-a:1", FAR)
    assert claims(db_rows) == [("a", "bkt/k", "d2", "host-a:1")]


@pytest_twisted.ensureDeferred
async def test_an_expired_claim_is_taken_over_even_from_a_live_instance(make_store, db_rows: Rows) -> None:
    metadata = await started(make_store)
    other = await started(make_store, "host-b:2")
    assert await other.claim_locations("a", ["bkt/k"], "d1", "host-b:2", 5_000)  # expired long ago
    assert await metadata.claim_locations("a", ["bkt/k"], "d2", "host-a:1", FAR)
    assert not await other.claim_locations("a", ["bkt/k"], "d3", "host-b:2", FAR)
    assert claims(db_rows) == [("a", "bkt/k", "d2", "host-a:1")]


@pytest_twisted.ensureDeferred
async def test_a_claim_is_reentrant_for_its_holder(make_store, db_rows: Rows) -> None:
    metadata = await started(make_store)
    reaper = await started(make_store, "host-c:9")
    (write,) = await metadata.reserve_copies(5, lambda usage: ("a",), plan())
    # The reaper, resolving this write's intent, takes its claim under the same holder.
    assert await reaper.claim_locations("a", ["bkt/k"], write_holder(write.id), "host-c:9", FAR)
    assert claims(db_rows) == [("a", "bkt/k", write_holder(write.id), "host-c:9")]


@pytest_twisted.ensureDeferred
async def test_a_cleanup_claims_only_queued_bytes_no_live_copy_or_claim_holds(make_store, db_rows: Rows) -> None:
    metadata = await started(make_store)
    other = await started(make_store, "host-b:2")
    assert await metadata.claim_cleanup("a", "bkt/k", "c1", "host-a:1", FAR) == "gone"
    await metadata.queue_cleanup("a", "bkt/k", 3)
    (write,) = await other.reserve_copies(5, lambda usage: ("a",), plan())
    assert await metadata.claim_cleanup("a", "bkt/k", "c1", "host-a:1", FAR) == "claimed elsewhere"
    record = ObjectRecord(bucket="bkt", key="k", store="a", location="bkt/k", size=5, etag="e" * 32,
                          content_type="binary/octet-stream", last_modified_ms=1)
    await other.commit_object(write.id, record)
    await other.end_claims([write_holder(write.id)])
    assert await metadata.list_cleanups(10) == []  # the commit dropped what was queued there
    await metadata.queue_cleanup("a", "bkt/k", 3)  # a stale entry under a live copy
    assert await metadata.claim_cleanup("a", "bkt/k", "c1", "host-a:1", FAR) == "in use"
    await metadata.delete_object("bkt", "k")
    assert await metadata.claim_cleanup("a", "bkt/k", "c1", "host-a:1", FAR) == "claimed"
    assert claims(db_rows) == [("a", "bkt/k", "c1", "host-a:1")]
    with pytest.raises(LocationClaimed):  # a write now waits for the deletion
        await other.reserve_copies(5, lambda usage: ("a",), plan())
    assert await metadata.finish_cleanup("a", "bkt/k", "c1") == 2
    assert claims(db_rows) == [] and await metadata.list_cleanups(10) == []


@pytest_twisted.ensureDeferred
async def test_a_put_commit_returns_the_replaced_copies_and_may_end_its_claim(make_store, db_rows: Rows) -> None:
    metadata = await started(make_store)
    other = await started(make_store, "host-b:2")
    record = ObjectRecord(bucket="bkt", key="k", store="a", location="bkt/k", size=5, etag="e" * 32,
                          content_type="binary/octet-stream", last_modified_ms=1)
    (first,) = await metadata.reserve_copies(5, lambda usage: ("a",), plan())
    assert await metadata.commit_write(first.id, record, settle=False) == []
    assert claims(db_rows) == [("a", "bkt/k", write_holder(first.id), "host-a:1")]  # kept: bytes not in place yet
    with pytest.raises(LocationClaimed):
        await other.reserve_copies(5, lambda usage: ("a",), plan())
    await metadata.end_claims([write_holder(first.id)])

    (second,) = await other.reserve_copies(7, lambda usage: ("b",), plan())
    moved = ObjectRecord(bucket="bkt", key="k", store="b", location="bkt/k", size=7, etag="f" * 32,
                         content_type="binary/octet-stream", last_modified_ms=2)
    (replaced,) = await other.commit_write(second.id, moved, settle=True)
    assert (replaced.store, replaced.location, replaced.size, replaced.state) == ("a", "bkt/k", 5, "live")
    assert claims(db_rows) == []  # ended with the commit
    assert [intent.reservation_id for intent in await other.list_intents()] == []
    assert [(entry.store, entry.location) for entry in await other.list_cleanups(10)] == [("a", "bkt/k")]
    (third,) = await metadata.reserve_copies(7, lambda usage: ("b",), plan())  # the location is free again
    assert claims(db_rows) == [("b", "bkt/k", write_holder(third.id), "host-a:1")]


@pytest_twisted.ensureDeferred
async def test_postponing_a_cleanup_ends_its_claim(make_store, db_rows: Rows) -> None:
    metadata = await started(make_store)
    await metadata.queue_cleanup("a", "bkt/k", 3)
    (entry,) = await metadata.list_cleanups(10)
    assert await metadata.claim_cleanup("a", "bkt/k", "c1", "host-a:1", FAR) == "claimed"
    await metadata.postpone_cleanup(entry.id, 0, "store down", "c1")
    assert claims(db_rows) == []


@pytest_twisted.ensureDeferred
async def test_dead_claims_are_dropped_but_those_of_unresolved_intents(make_store, db_rows: Rows) -> None:
    metadata = await started(make_store)
    dead = await started(make_store, "host-b:2", alive=False)
    live = await started(make_store, "host-c:3")
    (write,) = await dead.reserve_copies(5, lambda usage: ("a",), plan())
    assert await dead.claim_locations("b", ["bkt/gone"], "d1", "host-b:2", FAR)
    assert await live.claim_locations("b", ["bkt/live"], "d2", "host-c:3", FAR)
    assert await metadata.drop_dead_claims(10_000) == 1
    assert [holder for _, _, holder, _ in claims(db_rows)] == [write_holder(write.id), "d2"]


@pytest_twisted.ensureDeferred
async def test_of_two_writers_racing_for_one_location_exactly_one_claims_it(make_store) -> None:
    one = await started(make_store)
    other = await started(make_store, "host-b:2")  # a second process's store on the same database
    results = await DeferredList([
        one.reserve_copies(5, lambda usage: ("a",), plan()),
        other.reserve_copies(5, lambda usage: ("a",), plan()),
    ], consumeErrors=True)
    outcomes = sorted(ok for ok, _ in results)
    assert outcomes == [False, True]
    failure = next(value for ok, value in results if not ok)
    assert failure.check(LocationClaimed)


@pytest_twisted.ensureDeferred
async def test_several_locations_are_claimed_all_or_none(make_store, db_rows: Rows) -> None:
    metadata = await started(make_store)
    other = await started(make_store, "host-b:2")
    assert await metadata.claim_locations("a", ["x"], "d1", "host-a:1", FAR)
    assert not await other.claim_locations("a", ["w", "x", "y"], "d2", "host-b:2", FAR)
    assert claims(db_rows) == [("a", "x", "d1", "host-a:1")]
    await metadata.end_claims(["d1"])
    assert await other.claim_locations("a", ["w", "x", "y"], "d2", "host-b:2", FAR)
    assert sorted(location for _, location, _, _ in claims(db_rows)) == ["w", "x", "y"]
