"""Claims of store locations in the metadata store (both engines): one live holder per
location, re-entrant for its holder, taken over from dead owners, ended on release."""

from __future__ import annotations

import os
import socket
import subprocess
from typing import Any, Callable

import pytest
import pytest_twisted
from twisted.internet.defer import DeferredList

from s3orchestrator.metadata.claims import LocationClaimed, presumed_dead, write_holder
from s3orchestrator.metadata.records import IntentPlan, ObjectRecord
from s3orchestrator.metadata.store import MetadataStore

Rows = Callable[..., list[tuple[Any, ...]]]
FAR = 2**62  # an expiry no test reaches


def plan(owner: str = "host-a:1", expires_ms: int = FAR, key: str = "k") -> IntentPlan:
    return IntentPlan(bucket="bkt", key=key, owner=owner, expires_ms=expires_ms, locate=lambda store: f"bkt/{key}")


async def started(make_store, path: str | None = None) -> MetadataStore:
    metadata = make_store() if path is None else make_store(path)
    await metadata.start()
    await metadata.sync_stores([("a", 0), ("b", 0)])
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
    (first,) = await metadata.reserve_copies(5, lambda usage: ("a",), plan())
    with pytest.raises(LocationClaimed):
        await metadata.reserve_copies(7, lambda usage: ("b", "a"), plan(owner="host-b:2"))
    assert db_rows("SELECT id FROM reservations") == [(first.id,)]
    assert [intent.reservation_id for intent in await metadata.list_intents()] == [first.id]
    assert claims(db_rows) == [("a", "bkt/k", write_holder(first.id), "host-a:1")]


@pytest_twisted.ensureDeferred
async def test_a_released_claim_lets_the_next_write_claim_the_location(make_store, db_rows: Rows) -> None:
    metadata = await started(make_store)
    (first,) = await metadata.reserve_copies(5, lambda usage: ("a",), plan())
    await metadata.release(first.id)
    (second,) = await metadata.reserve_copies(5, lambda usage: ("a",), plan(owner="host-b:2"))
    assert claims(db_rows) == [("a", "bkt/k", write_holder(second.id), "host-b:2")]
    await metadata.end_claims([write_holder(second.id)])
    assert claims(db_rows) == []


@pytest_twisted.ensureDeferred
async def test_the_claim_of_a_dead_owner_is_taken_over(make_store, db_rows: Rows) -> None:
    metadata = await started(make_store)
    # Expired long ago (the store's clock is the reactor's: now).
    (dead,) = await metadata.reserve_copies(5, lambda usage: ("a",), plan(owner="host-b:2", expires_ms=5_000))
    (taker,) = await metadata.reserve_copies(5, lambda usage: ("a",), plan(owner="host-a:1"))
    assert claims(db_rows) == [("a", "bkt/k", write_holder(taker.id), "host-a:1")]
    # The dead writer's intent stays for the reaper; its claim is gone.
    assert sorted(intent.reservation_id for intent in await metadata.list_intents()) == [dead.id, taker.id]


@pytest_twisted.ensureDeferred
async def test_a_claim_of_an_earlier_process_of_this_host_is_taken_over_at_once(make_store, db_rows: Rows) -> None:
    metadata = await started(make_store)
    await metadata.reserve_copies(5, lambda usage: ("a",), plan(owner="host-a:1"))
    assert await metadata.claim_locations("a", ["bkt/k"], "d1", "host-a:2", FAR)
    assert not await metadata.claim_locations("a", ["bkt/k"], "d2", "host-b:3", FAR)
    assert claims(db_rows) == [("a", "bkt/k", "d1", "host-a:2")]


def test_presumed_dead_spares_its_own_owner_and_live_leases() -> None:
    assert not presumed_dead("host-a:1", 0, "host-a:1", 10)
    assert presumed_dead("host-a:1", FAR, "host-a:2", 10)
    assert not presumed_dead("host-b:1", 11, "host-a:2", 10)
    assert presumed_dead("host-b:1", 10, "host-a:2", 10)


def test_presumed_dead_on_this_host_asks_whether_the_process_runs() -> None:
    here = socket.gethostname()
    me = f"{here}:{os.getpid()}"
    sibling = subprocess.Popen(["sleep", "60"])
    try:
        assert not presumed_dead(f"{here}:{sibling.pid}", FAR, me, 10)  # another daemon of this host
    finally:
        sibling.kill()
        sibling.wait()
    assert presumed_dead(f"{here}:{sibling.pid}", FAR, me, 10)  # a previous run


@pytest_twisted.ensureDeferred
async def test_a_claim_is_reentrant_for_its_holder(make_store, db_rows: Rows) -> None:
    metadata = await started(make_store)
    (write,) = await metadata.reserve_copies(5, lambda usage: ("a",), plan())
    # The reaper, resolving this write's intent, takes its claim under the same holder.
    assert await metadata.claim_locations("a", ["bkt/k"], write_holder(write.id), "host-c:9", FAR)
    assert claims(db_rows) == [("a", "bkt/k", write_holder(write.id), "host-c:9")]


@pytest_twisted.ensureDeferred
async def test_a_cleanup_claims_only_queued_bytes_no_live_copy_or_claim_holds(make_store, db_rows: Rows) -> None:
    metadata = await started(make_store)
    assert await metadata.claim_cleanup("a", "bkt/k", "c1", "host-a:1", FAR) == "gone"
    await metadata.queue_cleanup("a", "bkt/k", 3)
    (write,) = await metadata.reserve_copies(5, lambda usage: ("a",), plan(owner="host-b:2"))
    assert await metadata.claim_cleanup("a", "bkt/k", "c1", "host-a:1", FAR) == "claimed elsewhere"
    record = ObjectRecord(bucket="bkt", key="k", store="a", location="bkt/k", size=5, etag="e" * 32,
                          content_type="binary/octet-stream", last_modified_ms=1)
    await metadata.commit_object(write.id, record)
    await metadata.end_claims([write_holder(write.id)])
    assert await metadata.list_cleanups(10) == []  # the commit dropped what was queued there
    await metadata.queue_cleanup("a", "bkt/k", 3)  # a stale entry under a live copy
    assert await metadata.claim_cleanup("a", "bkt/k", "c1", "host-a:1", FAR) == "in use"
    await metadata.delete_object("bkt", "k")
    assert await metadata.claim_cleanup("a", "bkt/k", "c1", "host-a:1", FAR) == "claimed"
    assert claims(db_rows) == [("a", "bkt/k", "c1", "host-a:1")]
    with pytest.raises(LocationClaimed):  # a write now waits for the deletion
        await metadata.reserve_copies(5, lambda usage: ("a",), plan())
    assert await metadata.finish_cleanup("a", "bkt/k", "c1") == 2
    assert claims(db_rows) == [] and await metadata.list_cleanups(10) == []


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
    (write,) = await metadata.reserve_copies(5, lambda usage: ("a",), plan(owner="host-b:2", expires_ms=5_000))
    assert await metadata.claim_locations("b", ["bkt/gone"], "d1", "host-b:2", 5_000)
    assert await metadata.claim_locations("b", ["bkt/live"], "d2", "host-c:3", FAR)
    assert await metadata.drop_dead_claims("host-a:1", 10_000) == 1
    assert [holder for _, _, holder, _ in claims(db_rows)] == [write_holder(write.id), "d2"]


@pytest_twisted.ensureDeferred
async def test_of_two_writers_racing_for_one_location_exactly_one_claims_it(make_store, db_path: str) -> None:
    one = await started(make_store)
    other = make_store(db_path)  # a second process's store on the same database
    await other.start()
    results = await DeferredList([
        one.reserve_copies(5, lambda usage: ("a",), plan(owner="host-a:1")),
        other.reserve_copies(5, lambda usage: ("a",), plan(owner="host-b:2")),
    ], consumeErrors=True)
    outcomes = sorted(ok for ok, _ in results)
    assert outcomes == [False, True]
    failure = next(value for ok, value in results if not ok)
    assert failure.check(LocationClaimed)


@pytest_twisted.ensureDeferred
async def test_several_locations_are_claimed_all_or_none(make_store, db_rows: Rows) -> None:
    metadata = await started(make_store)
    assert await metadata.claim_locations("a", ["x"], "d1", "host-a:1", FAR)
    assert not await metadata.claim_locations("a", ["w", "x", "y"], "d2", "host-b:2", FAR)
    assert claims(db_rows) == [("a", "x", "d1", "host-a:1")]
    await metadata.end_claims(["d1"])
    assert await metadata.claim_locations("a", ["w", "x", "y"], "d2", "host-b:2", FAR)
    assert sorted(location for _, location, _, _ in claims(db_rows)) == ["w", "x", "y"]
