"""The copies table: every object's copies, kept in step with the objects they belong to."""

from __future__ import annotations

from typing import Any, Callable

import pytest
import pytest_twisted

from s3orchestrator.metadata.records import ObjectRecord
from s3orchestrator.metadata.schema import load_migrations, migrate
from s3orchestrator.metadata.store import MetadataStore

LIVE_BY_STORE = "SELECT store, SUM(size), COUNT(*) FROM copies WHERE state = 'live' GROUP BY store ORDER BY store"


Rows = Callable[..., list[tuple[Any, ...]]]


def record(key: str, store: str, size: int, location: str | None = None) -> ObjectRecord:
    return ObjectRecord(
        bucket="bkt", key=key, store=store, location=location or f"bkt/{key}", size=size,
        etag="0123456789abcdef0123456789abcdef", content_type="binary/octet-stream",
        last_modified_ms=1_700_000_000_123,
    )


async def put(metadata: MetadataStore, object_record: ObjectRecord) -> None:
    reservation = await metadata.reserve(object_record.size, lambda usage: object_record.store)
    await metadata.commit_object(reservation.id, object_record)


def used_by_store(db_rows: Rows) -> list[tuple]:
    rows = db_rows("SELECT store, SUM(used_bytes), SUM(object_count) FROM store_usage GROUP BY store ORDER BY store")
    return [(name, int(size), int(count)) for name, size, count in rows if size > 0]


@pytest_twisted.ensureDeferred
async def test_a_database_of_the_previous_schema_gets_one_live_copy_per_object(make_store, db_rows: Rows) -> None:
    previous = make_store()
    previous.database.start()
    await migrate(previous.database, load_migrations()[:3])
    await previous.stop()
    # Rows as the code of schema version 3 wrote them (it knew no copies table).
    db_rows("INSERT INTO stores (name, quota_bytes, used_bytes, object_count, config_order)"
            " VALUES ('a', 0, 10, 1, 0), ('b', 0, 25, 1, 1)")
    for key, store, location, size in (("one", "a", "bkt/one", 10), ("two", "b", "bkt/escaped/two", 25)):
        db_rows(
            "INSERT INTO objects (bucket, key, store, location, size, etag, content_type, headers,"
            " user_metadata, last_modified_ms) VALUES ('bkt', ?, ?, ?, ?, ?, 'binary/octet-stream', '{}',"
            " '{}', 1700000000123)",
            (key, store, location, size, "0123456789abcdef0123456789abcdef"),
        )

    metadata = make_store()
    await metadata.start()
    assert db_rows("SELECT bucket, key, store, location, state, size, created_ms FROM copies ORDER BY key") == [
        ("bkt", "one", "a", "bkt/one", "live", 10, 1_700_000_000_123),
        ("bkt", "two", "b", "bkt/escaped/two", "live", 25, 1_700_000_000_123),
    ]
    assert db_rows(LIVE_BY_STORE) == used_by_store(db_rows) == [("a", 10, 1), ("b", 25, 1)]
    assert await metadata.get_object("bkt", "two") == record("two", "b", 25, location="bkt/escaped/two")


@pytest_twisted.ensureDeferred
async def test_commit_overwrite_and_delete_keep_one_live_copy_per_object(make_store, db_rows: Rows) -> None:
    metadata = make_store()
    await metadata.start()
    await metadata.sync_stores([("a", 0), ("b", 0)])
    await put(metadata, record("k", "a", 10))
    await put(metadata, record("other", "a", 5))
    await put(metadata, record("k", "b", 30, location="elsewhere"))
    assert db_rows("SELECT key, store, location, state, size FROM copies ORDER BY key") == [
        ("k", "b", "elsewhere", "live", 30),
        ("other", "a", "bkt/other", "live", 5),
    ]
    assert db_rows(LIVE_BY_STORE) == [("a", 5, 1), ("b", 30, 1)]
    # The replaced bytes count as used until they are gone.
    assert db_rows("SELECT store, location, size FROM cleanup") == [("a", "bkt/k", 10)]
    assert used_by_store(db_rows) == [("a", 15, 1), ("b", 30, 1)]
    assert await metadata.finish_cleanup("a", "bkt/k") == 1
    assert db_rows(LIVE_BY_STORE) == used_by_store(db_rows) == [("a", 5, 1), ("b", 30, 1)]

    await metadata.delete_object("bkt", "k")
    assert db_rows("SELECT key, store FROM copies") == [("other", "a")]
    assert used_by_store(db_rows) == [("a", 5, 1), ("b", 30, 0)]
    await metadata.finish_cleanup("b", "elsewhere")
    assert db_rows(LIVE_BY_STORE) == used_by_store(db_rows) == [("a", 5, 1)]


@pytest_twisted.ensureDeferred
async def test_reserve_copies_reserves_the_size_on_every_chosen_store_at_once(make_store) -> None:
    metadata = make_store()
    await metadata.start()
    await metadata.sync_stores([("a", 100), ("b", 100), ("c", 100)])
    seen: list[list[str]] = []

    def choose(usage):
        seen.append([store.name for store in usage])
        return ("c", "a")

    reservations = await metadata.reserve_copies(40, choose)
    assert [(reservation.store, reservation.size) for reservation in reservations] == [("c", 40), ("a", 40)]
    assert len({reservation.id for reservation in reservations}) == 2
    assert seen == [["a", "b", "c"]]
    assert {usage.name: usage.reserved_bytes for usage in await metadata.store_usage()} == {"a": 40, "b": 0, "c": 40}


@pytest_twisted.ensureDeferred
async def test_reserve_copies_reserves_nothing_when_no_store_is_chosen_or_one_twice(make_store) -> None:
    metadata = make_store()
    await metadata.start()
    await metadata.sync_stores([("a", 100), ("b", 100)])
    assert await metadata.reserve_copies(10, lambda usage: ()) == ()
    with pytest.raises(ValueError):
        await metadata.reserve_copies(10, lambda usage: ("a", "a"))
    with pytest.raises(ValueError):
        await metadata.reserve_copies(10, lambda usage: ("a", "nope"))
    assert {usage.name: usage.reserved_bytes for usage in await metadata.store_usage()} == {"a": 0, "b": 0}
