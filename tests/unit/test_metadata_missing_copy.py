"""A copy a read found missing or damaged, let go in the metadata store (both engines)."""

from __future__ import annotations

from typing import Any, Callable

import attrs
import pytest_twisted

from s3orchestrator.metadata.records import NewCopy, ObjectRecord
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

    assert await metadata.mark_copy_missing("bkt", "k", copies[0]) is True

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

    assert await metadata.mark_copy_missing("bkt", "k", stale) is False

    assert await metadata.list_cleanups(10) == []
    assert await metadata.replication_queue(10) == []
    assert used(db_rows) == {"a": (40, 1), "b": (40, 1)}
    _, live = await metadata.get_object_copies("bkt", "k")  # type: ignore[misc]
    assert [copy.store for copy in live] == ["a", "b"]
