"""A copy a read found missing or damaged, let go in the metadata store (both engines)."""

from __future__ import annotations

from typing import Any, Callable

import attrs
import pytest_twisted

from s3orchestrator.metadata.records import IntentPlan, LostObject, NewCopy, ObjectRecord, QueueTotals
from s3orchestrator.metadata.schema import load_migrations, migrate
from s3orchestrator.metadata.store import MetadataStore

Rows = Callable[..., list[tuple[Any, ...]]]

RECORD = ObjectRecord(
    bucket="bkt", key="k", store="a", location="a:bkt/k", size=40,
    etag="0123456789abcdef0123456789abcdef", content_type="binary/octet-stream",
    last_modified_ms=1_700_000_000_123,
)


async def two_copies(make_store: Callable[..., MetadataStore]) -> MetadataStore:
    """A store with the object ``bkt/k`` live on stores "a" (its record's) and "b"."""
    metadata = make_store()
    await metadata.start()
    await metadata.sync_stores([("a", 0), ("b", 0)])
    first, second = await metadata.reserve_copies(40, lambda usage: ("a", "b"))
    await metadata.commit_copies(
        RECORD, [NewCopy("a", "a:bkt/k", first.id), NewCopy("b", "b:bkt/k", second.id)], missing=False
    )
    return metadata


def used(db_rows: Rows) -> dict[str, tuple[int, int]]:
    return {name: (int(size), int(count)) for name, size, count in db_rows(
        "SELECT s.name, COALESCE(SUM(u.used_bytes), 0), COALESCE(SUM(u.object_count), 0) FROM stores s"
        " LEFT JOIN store_usage u ON u.store = s.name GROUP BY s.name ORDER BY s.name"
    )}


@pytest_twisted.ensureDeferred
async def test_a_missing_copy_is_let_go_its_bytes_queued_and_the_object_queued_for_replication(
    make_store: Callable[..., MetadataStore], db_rows: Rows,
) -> None:
    metadata = await two_copies(make_store)
    _, copies = await metadata.get_object_copies("bkt", "k")  # type: ignore[misc]
    assert [copy.store for copy in copies] == ["a", "b"]

    assert await metadata.mark_copy_missing("bkt", "k", copies[0]) == 1

    found = await metadata.get_object_copies("bkt", "k")
    assert found is not None
    record, live = found
    assert [(copy.store, copy.location) for copy in live] == [("b", "b:bkt/k")]
    # The record names a live copy again (paths that read the record's store use it).
    assert (record.store, record.location) == ("b", "b:bkt/k")
    # Its bytes stay counted as used, in the cleanup queue, no longer as an object.
    assert [(e.store, e.location, e.size) for e in await metadata.list_cleanups(10)] == [("a", "a:bkt/k", 40)]
    assert used(db_rows) == {"a": (40, 0), "b": (40, 1)}
    assert [(q.bucket, q.key) for q in await metadata.replication_queue(10)] == [("bkt", "k")]
    # The cleanup done, usage is that of the live copy only.
    assert await metadata.finish_cleanup("a", "a:bkt/k") == 1
    assert used(db_rows) == {"a": (0, 0), "b": (40, 1)}


@pytest_twisted.ensureDeferred
async def test_a_copy_written_since_the_read_is_spared(
    make_store: Callable[..., MetadataStore], db_rows: Rows,
) -> None:
    metadata = await two_copies(make_store)
    _, copies = await metadata.get_object_copies("bkt", "k")  # type: ignore[misc]
    stale = attrs.evolve(copies[1], created_ms=copies[1].created_ms - 1)

    assert await metadata.mark_copy_missing("bkt", "k", stale) is None

    assert await metadata.list_cleanups(10) == []
    assert await metadata.replication_queue(10) == []
    assert used(db_rows) == {"a": (40, 1), "b": (40, 1)}
    _, live = await metadata.get_object_copies("bkt", "k")  # type: ignore[misc]
    assert [copy.store for copy in live] == ["a", "b"]


async def lose_both_copies(metadata: MetadataStore) -> None:
    _, copies = await metadata.get_object_copies("bkt", "k")  # type: ignore[misc]
    assert await metadata.mark_copy_missing("bkt", "k", copies[0]) == 1
    assert await metadata.mark_copy_missing("bkt", "k", copies[1]) == 0


@pytest_twisted.ensureDeferred
async def test_the_last_live_copy_missing_makes_the_object_lost_and_takes_it_out_of_the_replication_queue(
    make_store: Callable[..., MetadataStore], db_rows: Rows,
) -> None:
    metadata = await two_copies(make_store)
    await lose_both_copies(metadata)

    found = await metadata.get_object_copies("bkt", "k")
    assert found is not None and found[1] == ()  # still listed, with no copy to read
    assert [(lost.bucket, lost.key) for lost in await metadata.lost_objects(10)] == [("bkt", "k")]
    assert await metadata.replication_queue(10) == []
    # Nothing to copy from: the replicator's scan leaves it out too.
    assert await metadata.queue_under_replicated("bkt", 2, 5) == 0
    totals = await metadata.queue_totals()
    assert (totals.lost, totals.replication_queued, totals.replication_oldest_ms) == (1, 0, None)
    # Both locations' bytes wait for the cleanup job, counted as used until gone.
    assert used(db_rows) == {"a": (40, 0), "b": (40, 0)}


@pytest_twisted.ensureDeferred
async def test_a_lost_object_overwritten_or_deleted_is_no_longer_lost(
    make_store: Callable[..., MetadataStore],
) -> None:
    metadata = await two_copies(make_store)
    await lose_both_copies(metadata)
    (reservation,) = await metadata.reserve_copies(40, lambda usage: ("a",))
    await metadata.commit_copies(
        attrs.evolve(RECORD, last_modified_ms=RECORD.last_modified_ms + 1),
        [NewCopy("a", "a:bkt/k", reservation.id)], missing=True,
    )
    assert await metadata.lost_objects(10) == []
    assert [(q.bucket, q.key) for q in await metadata.replication_queue(10)] == [("bkt", "k")]

    _, copies = await metadata.get_object_copies("bkt", "k")  # type: ignore[misc]
    assert await metadata.mark_copy_missing("bkt", "k", copies[0]) == 0
    assert len(await metadata.lost_objects(10)) == 1
    await metadata.delete_object("bkt", "k")
    assert await metadata.lost_objects(10) == []
    assert (await metadata.queue_totals()).lost == 0


@pytest_twisted.ensureDeferred
async def test_kept_only_copies_the_other_copies_are_let_go_the_last_kept_and_the_object_lost(
    make_store: Callable[..., MetadataStore], db_rows: Rows,
) -> None:
    metadata = await two_copies(make_store)
    _, copies = await metadata.get_object_copies("bkt", "k")  # type: ignore[misc]

    # Another copy live: let go as without keep_only_copy.
    assert await metadata.mark_copy_missing("bkt", "k", copies[0], keep_only_copy=True) == 1
    assert [(e.store, e.location) for e in await metadata.list_cleanups(10)] == [("a", "a:bkt/k")]
    assert used(db_rows) == {"a": (40, 0), "b": (40, 1)}
    # The only one: kept live, nothing queued for cleanup, usage unchanged, the object lost.
    assert await metadata.mark_copy_missing("bkt", "k", copies[1], keep_only_copy=True) == 0
    assert await metadata.mark_copy_missing("bkt", "k", copies[1], keep_only_copy=True) == 0  # found again
    found = await metadata.get_object_copies("bkt", "k")
    assert found is not None
    record, live = found
    assert [(copy.store, copy.location) for copy in live] == [("b", "b:bkt/k")]
    assert (record.store, record.location) == ("b", "b:bkt/k")
    assert [(e.store, e.location) for e in await metadata.list_cleanups(10)] == [("a", "a:bkt/k")]
    assert used(db_rows) == {"a": (40, 0), "b": (40, 1)}
    assert [(lost.bucket, lost.key) for lost in await metadata.lost_objects(10)] == [("bkt", "k")]
    assert await metadata.replication_queue(10) == []
    # Its kept copy is missing or damaged: the replicator's scan leaves it out too.
    assert await metadata.queue_under_replicated("bkt", 2, 5) == 0
    # A copy written since the read is spared, kept or not.
    stale = attrs.evolve(copies[1], created_ms=copies[1].created_ms - 1)
    assert await metadata.mark_copy_missing("bkt", "k", stale, keep_only_copy=True) is None


@pytest_twisted.ensureDeferred
async def test_queue_totals_count_the_replication_queue_its_oldest_entry_and_the_intents(
    make_store: Callable[..., MetadataStore],
) -> None:
    metadata = await two_copies(make_store)
    await metadata.queue_replication("bkt", "k", 700)
    await metadata.reserve_copies(
        5, lambda usage: ("a", "b"),
        IntentPlan(bucket="bkt", key="other", locate=lambda store: "x"),
    )
    totals = await metadata.queue_totals()
    assert totals == QueueTotals(replication_queued=1, replication_oldest_ms=700, intents=2, lost=0)


@pytest_twisted.ensureDeferred
async def test_migration_010_records_objects_already_without_a_live_copy_as_lost(
    make_store: Callable[..., MetadataStore], db_rows: Rows,
) -> None:
    previous = make_store()
    previous.database.start()
    await migrate(previous.database, load_migrations()[:9])
    await previous.stop()
    # What the code of schema version 9 left: "k" lost its last copy and sat in the queue.
    db_rows("INSERT INTO stores (name, quota_bytes, config_order) VALUES ('a', 0, 0)")
    db_rows("INSERT INTO store_usage (store, shard, used_bytes, object_count) VALUES ('a', 0, 5, 1)")
    for key in ("k", "kept"):
        db_rows(
            "INSERT INTO objects (bucket, key, store, location, size, etag, content_type, headers,"
            " user_metadata, last_modified_ms) VALUES ('bkt', ?, 'a', ?, 5, 'e', 'binary/octet-stream', '{}',"
            " '{}', 1700000000123)", (key, "bkt/" + key),
        )
    db_rows("INSERT INTO copies (bucket, key, store, location, state, size, created_ms)"
            " VALUES ('bkt', 'kept', 'a', 'bkt/kept', 'live', 5, 1)")
    db_rows("INSERT INTO replication (bucket, key, since_ms) VALUES ('bkt', 'k', 9), ('bkt', 'kept', 10)")

    metadata = make_store()
    await metadata.start()
    assert await metadata.lost_objects(10) == [LostObject("bkt", "k", 1_700_000_000_123)]
    assert [(q.key, q.since_ms) for q in await metadata.replication_queue(10)] == [("kept", 10)]
