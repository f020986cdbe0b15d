"""The imports table: objects found in a store become objects with their checkpoint, once."""

from __future__ import annotations

from typing import Any, Callable

import pytest
import pytest_twisted
from twisted.internet.defer import gatherResults
from twisted.internet.task import Clock

from s3orchestrator.metadata.imports import (
    IMPORTED,
    KEPT,
    PRESENT,
    SKIPPED,
    FoundObject,
    ImportLost,
    ImportRunning,
    ImportTable,
)
from s3orchestrator.metadata.records import Instance, ObjectRecord
from s3orchestrator.metadata.store import MetadataStore

Rows = Callable[..., list[tuple[Any, ...]]]
LEASE_MS = 60_000


def found(key: str, size: int = 10, location: str | None = None) -> FoundObject:
    return FoundObject(
        key=key, location=location or key, area=key.partition("/")[0], size=size, etag=f"etag-{key}",
        content_type="text/plain", last_modified_ms=1_700_000_000_000, user_metadata={"origin": "upstream"},
    )


@pytest.fixture
def clock() -> Clock:
    clock = Clock()
    clock.advance(1_800_000_000)
    return clock


@pytest_twisted.async_yield_fixture
async def metadata(make_store, clock: Clock) -> Any:
    store: MetadataStore = make_store(clock=clock)
    await store.start()
    await store.sync_stores([("up", 100), ("other", 0)])
    yield store
    await store.stop()


@pytest.fixture
def table(metadata: MetadataStore, clock: Clock) -> ImportTable:
    return ImportTable(metadata.database, clock)


def usage(db_rows: Rows) -> dict[str, tuple[int, int]]:
    rows = db_rows("SELECT store, SUM(used_bytes), SUM(object_count) FROM store_usage GROUP BY store")
    return {store: (int(used), int(count)) for store, used, count in rows}


@pytest_twisted.ensureDeferred
async def test_found_objects_become_objects_with_one_live_copy_and_count_as_used(
    table: ImportTable, metadata: MetadataStore, db_rows: Rows
) -> None:
    await table.begin("up", "bkt", "", "me", LEASE_MS)
    row, outcomes = await table.record("up", "bkt", "", "me", [found("a/1", 10), found("b", 150)], "b", 2, False,
                                       LEASE_MS)
    assert outcomes == [IMPORTED, IMPORTED]
    assert (row.after_key, row.imported_objects, row.imported_bytes, row.skipped) == ("b", 2, 160, 2)
    copies = db_rows("SELECT key, store, location, state, size FROM copies ORDER BY key")
    assert copies == [("a/1", "up", "a/1", "live", 10), ("b", "up", "b", "live", 150)]
    got = await metadata.get_object("bkt", "a/1")
    assert got is not None and (got.etag, got.content_type, dict(got.user_metadata)) == (
        "etag-a/1", "text/plain", {"origin": "upstream"})
    # Over the store's quota of 100: recorded anyway, the usage is what the store holds.
    assert usage(db_rows)["up"] == (160, 2)
    assert db_rows("SELECT store, area, bucket FROM import_areas ORDER BY area") == [
        ("up", "a", "bkt"), ("up", "b", "bkt")]
    assert db_rows("SELECT COUNT(*) FROM replication") == [(0,)]


@pytest_twisted.ensureDeferred
async def test_a_second_run_finds_everything_present_and_changes_no_usage(table: ImportTable, db_rows: Rows) -> None:
    await table.begin("up", "bkt", "", "me", LEASE_MS)
    await table.record("up", "bkt", "", "me", [found("a"), found("b")], "b", 0, False, LEASE_MS)
    await table.finish("up", "bkt", "", "me", None)
    before = usage(db_rows)
    again = await table.begin("up", "bkt", "", "me", LEASE_MS)
    assert (again.state, again.after_key, again.imported_objects) == ("running", "", 0)  # a done import starts over
    row, outcomes = await table.record("up", "bkt", "", "me", [found("a"), found("b")], "b", 0, False, LEASE_MS)
    assert outcomes == [PRESENT, PRESENT]
    assert (row.imported_objects, row.present) == (0, 2)
    assert usage(db_rows) == before
    assert db_rows("SELECT COUNT(*) FROM objects") == [(2,)]


@pytest_twisted.ensureDeferred
async def test_a_key_the_bucket_has_keeps_its_object(table: ImportTable, metadata: MetadataStore) -> None:
    reservation = await metadata.reserve(3, lambda usage: "other")
    mine = ObjectRecord(bucket="bkt", key="a", store="other", location="bkt/a", size=3, etag="mine",
                        content_type="x/y", last_modified_ms=1)
    await metadata.commit_object(reservation.id, mine)
    await table.begin("up", "bkt", "", "me", LEASE_MS)
    row, outcomes = await table.record("up", "bkt", "", "me", [found("a")], "a", 0, False, LEASE_MS)
    assert outcomes == [KEPT] and row.kept == 1
    got = await metadata.get_object("bkt", "a")
    assert got is not None and got.etag == "mine"


@pytest_twisted.ensureDeferred
async def test_a_location_another_object_uses_or_awaiting_cleanup_is_skipped(
    table: ImportTable, metadata: MetadataStore
) -> None:
    await table.begin("up", "one", "", "me", LEASE_MS)
    await table.record("up", "one", "", "me", [found("shared")], "shared", 0, False, LEASE_MS)
    await metadata.queue_cleanup("up", "doomed", 4)
    await table.begin("up", "two", "", "me", LEASE_MS)
    _, outcomes = await table.record("up", "two", "", "me", [found("shared"), found("doomed")], "shared", 0, False,
                                     LEASE_MS)
    assert outcomes == [SKIPPED, SKIPPED]
    assert await metadata.get_object("two", "shared") is None


@pytest_twisted.ensureDeferred
async def test_objects_of_a_bucket_wanting_more_copies_join_the_replication_queue(
    table: ImportTable, db_rows: Rows
) -> None:
    await table.begin("up", "bkt", "", "me", LEASE_MS)
    await table.record("up", "bkt", "", "me", [found("a")], "a", 0, True, LEASE_MS)
    assert db_rows("SELECT bucket, key FROM replication") == [("bkt", "a")]


@pytest_twisted.ensureDeferred
async def test_a_failed_import_resumes_from_its_checkpoint_with_its_counts(table: ImportTable) -> None:
    await table.begin("up", "bkt", "p/", "me", LEASE_MS)
    await table.record("up", "bkt", "p/", "me", [found("p/1")], "p/1", 1, False, LEASE_MS)
    await table.finish("up", "bkt", "p/", "me", "store up: HEAD answered 500")
    (failed,) = await table.imports()
    assert (failed.state, failed.last_error) == ("failed", "store up: HEAD answered 500")
    resumed = await table.begin("up", "bkt", "p/", "other-instance", LEASE_MS)
    assert (resumed.state, resumed.owner, resumed.after_key, resumed.imported_objects, resumed.skipped) == (
        "running", "other-instance", "p/1", 1, 1)
    assert resumed.last_error is None


@pytest_twisted.ensureDeferred
async def test_one_live_instance_runs_an_import_at_a_time(
    table: ImportTable, metadata: MetadataStore, clock: Clock
) -> None:
    now_ms = int(clock.seconds() * 1000)
    await metadata.register_instance(Instance(id="live", host="h", pid=1, started_ms=now_ms - 1000,
                                              expires_ms=now_ms + 10 * LEASE_MS))
    await table.begin("up", "bkt", "", "live", LEASE_MS)
    with pytest.raises(ImportRunning):
        await table.begin("up", "bkt", "", "me", LEASE_MS)
    # The taker takes it over once its holder's lease ran out without a batch recorded.
    clock.advance(LEASE_MS / 1000 + 1)
    taken = await table.begin("up", "bkt", "", "me", LEASE_MS)
    assert taken.owner == "me"
    with pytest.raises(ImportLost):
        await table.record("up", "bkt", "", "live", [found("a")], "a", 0, False, LEASE_MS)
    assert await metadata.get_object("bkt", "a") is None


@pytest_twisted.ensureDeferred
async def test_an_import_of_a_dead_instance_is_taken_over_at_once(table: ImportTable) -> None:
    await table.begin("up", "bkt", "", "gone", LEASE_MS)  # no registered instance "gone": dead
    taken = await table.begin("up", "bkt", "", "me", LEASE_MS)
    assert (taken.owner, taken.state) == ("me", "running")


@pytest_twisted.ensureDeferred
async def test_two_daemons_importing_one_store_into_two_buckets_take_each_place_once(
    table: ImportTable, make_store, clock: Clock, db_rows: Rows
) -> None:
    other = make_store(clock=clock)  # another daemon's connections to the same database
    await other.start()
    try:
        objects = [found(f"k/{number:03d}") for number in range(100)]
        await table.begin("up", "one", "", "me", LEASE_MS)
        await table.begin("up", "two", "", "me", LEASE_MS)
        results = await gatherResults([
            imports.record("up", bucket, "", "me", objects, "k/99", 0, False, LEASE_MS)
            for imports, bucket in ((table, "one"), (ImportTable(other.database, clock), "two"))])
    finally:
        await other.stop()
    outcomes = [outcome for _, bucket_outcomes in results for outcome in bucket_outcomes]
    assert (outcomes.count(IMPORTED), outcomes.count(SKIPPED)) == (100, 100)
    assert db_rows("SELECT COUNT(*) FROM (SELECT location FROM copies GROUP BY location HAVING COUNT(*) > 1) x") == [
        (0,)]
