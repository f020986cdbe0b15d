"""Tests for the SQL metadata store on every engine (see conftest): schema, reservations, usage, records."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Sequence

import pytest
import pytest_twisted
from twisted.internet import defer, reactor
from zope.interface.verify import verifyObject

from s3orchestrator.metadata.database import Database
from s3orchestrator.metadata.engines.sqlite import SqliteEngine
from s3orchestrator.metadata.interface import IMetadataStore
from s3orchestrator.metadata.records import ObjectRecord, Reservation, StoreUsage
from s3orchestrator.metadata.schema import SchemaTooNew, load_migrations, schema_version, split_statements
from s3orchestrator.metadata.store import MetadataStore, ReservationNotFound, sqlite_metadata_store

GIB = 1024**3


@pytest_twisted.async_fixture
async def store(make_store) -> MetadataStore:
    metadata = make_store()
    await metadata.start()
    await metadata.sync_stores([("a", 100), ("b", 1000)])
    return metadata


def record(key: str = "k", store: str = "a", size: int = 10, bucket: str = "bkt", **changes) -> ObjectRecord:
    values = dict(
        bucket=bucket,
        key=key,
        store=store,
        location=f"{bucket}/{key}",
        size=size,
        etag="0123456789abcdef0123456789abcdef",
        content_type="binary/octet-stream",
        last_modified_ms=1_700_000_000_123,
    )
    values.update(changes)
    return ObjectRecord(**values)


def pick(name: str | None):
    def choose(usage: Sequence[StoreUsage]) -> str | None:
        return name

    return choose


def first_with_room(size: int):
    def choose(usage: Sequence[StoreUsage]) -> str | None:
        for store in usage:
            if store.quota_bytes == 0 or store.used_bytes + store.reserved_bytes + size <= store.quota_bytes:
                return store.name
        return None

    return choose


def usage_of(usage: list[StoreUsage], name: str) -> StoreUsage:
    return next(store for store in usage if store.name == name)


# -- schema and connection ----------------------------------------------------------------------


def test_metadata_store_provides_the_interface(make_store) -> None:
    assert verifyObject(IMetadataStore, make_store())


@pytest_twisted.ensureDeferred
async def test_start_creates_the_directory_and_applies_migrations_once(make_store, db_rows) -> None:
    metadata = make_store()
    await metadata.start()
    versions = db_rows("SELECT version, name FROM schema_version ORDER BY version")
    assert versions == [(m.version, m.name) for m in load_migrations()]
    assert versions[0] == (1, "initial")
    for table in ("objects", "stores", "reservations"):
        assert db_rows(f"SELECT COUNT(*) FROM {table}") == [(0,)]


@pytest_twisted.ensureDeferred
async def test_restart_on_an_existing_database_is_idempotent_and_keeps_data(make_store, db_rows) -> None:
    first = make_store()
    await first.start()
    await first.sync_stores([("a", 100)])
    reservation = await first.reserve(10, pick("a"))
    await first.commit_object(reservation.id, record())
    await first.stop()

    second = make_store()
    await second.start()
    versions = db_rows("SELECT version FROM schema_version ORDER BY version")
    assert versions == [(m.version,) for m in load_migrations()]
    assert await second.get_object("bkt", "k") == record()
    await second.sync_stores([("a", 100)])
    assert await second.store_usage() == [StoreUsage("a", 100, 10, 0, 1)]


@pytest.mark.sqlite_only
@pytest_twisted.ensureDeferred
async def test_connection_uses_wal_foreign_keys_and_full_sync(make_store, db_rows) -> None:
    metadata = make_store()
    await metadata.start()
    assert db_rows("PRAGMA journal_mode") == [("wal",)]
    pragmas = await metadata.database.runInteraction(
        "pragmas",
        lambda txn: (txn.query_one("PRAGMA foreign_keys")[0], txn.query_one("PRAGMA synchronous")[0]),
    )
    # foreign_keys on; synchronous FULL: the WAL is synced at every commit, before it returns.
    assert pragmas == (1, 2)


@pytest_twisted.ensureDeferred
async def test_database_newer_than_the_code_is_refused(make_store, db_rows) -> None:
    metadata = make_store()
    await metadata.start()
    await metadata.stop()
    db_rows("INSERT INTO schema_version (version, name, applied_ms) VALUES (999, 'future', 0)")

    with pytest.raises(SchemaTooNew, match="999"):
        await make_store().start()


@pytest_twisted.ensureDeferred
async def test_failed_migration_leaves_no_trace(make_engine, db_rows) -> None:
    from s3orchestrator.metadata.schema import Migration, migrate

    database = Database(make_engine(), reactor)
    database.start()
    try:
        broken = [Migration(1, "broken", "CREATE TABLE t (x INTEGER); INSERT INTO missing VALUES (1);")]
        with pytest.raises(Exception, match="missing"):
            await migrate(database, broken)
        assert await schema_version(database) == 0
    finally:
        database.close()
    with pytest.raises(Exception, match=r"\bt\b"):  # DDL is transactional: no table t
        db_rows("SELECT COUNT(*) FROM t")


def test_split_statements_ignores_semicolons_in_comments_and_quotes() -> None:
    sql = "-- a; comment\nCREATE TABLE t (x TEXT DEFAULT 'a;b''c'); /* ; */ INSERT INTO \"t;\" VALUES (1);\n"
    assert split_statements(sql) == ["CREATE TABLE t (x TEXT DEFAULT 'a;b''c')", 'INSERT INTO "t;" VALUES (1)']


@pytest.mark.sqlite_only
@pytest_twisted.ensureDeferred
async def test_listing_query_walks_the_primary_key_in_byte_order(store: MetadataStore) -> None:
    keys = ["b", "a", "é", "Z", "a/b", "a%2F", "\U0001f600", "\uffff", "a\nb", "~"]
    for key in keys:
        reservation = await store.reserve(1, pick("b"))
        await store.commit_object(reservation.id, record(key=key, store="b", size=1))
    sql = "SELECT key, size, etag FROM objects WHERE bucket = ? AND key > ? ORDER BY key LIMIT ?"
    listed = await store.database.runQuery("list", sql, ("bkt", "", 100))
    assert [key for (key, _, _) in listed] == sorted(keys, key=lambda key: key.encode("utf-8"))
    plan = await store.database.runQuery("plan", "EXPLAIN QUERY PLAN " + sql, ("bkt", "", 100))
    details = " ".join(str(row[-1]) for row in plan)
    assert "USING INDEX sqlite_autoindex_objects_1 (bucket=? AND key>?)" in details
    assert "TEMP B-TREE" not in details  # no sort step: the index order is the answer


# -- stores and usage ---------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_sync_stores_keeps_config_order_and_only_configured_stores(store: MetadataStore) -> None:
    assert await store.store_usage() == [StoreUsage("a", 100, 0, 0), StoreUsage("b", 1000, 0, 0)]
    await store.sync_stores([("c", 0), ("b", 5)])
    assert await store.store_usage() == [StoreUsage("c", 0, 0, 0), StoreUsage("b", 5, 0, 0)]


@pytest_twisted.ensureDeferred
async def test_sync_stores_keeps_usage_of_existing_stores(store: MetadataStore) -> None:
    reservation = await store.reserve(10, pick("a"))
    await store.commit_object(reservation.id, record(size=10))
    await store.sync_stores([("b", 1000), ("a", 50)])
    assert await store.store_usage() == [StoreUsage("b", 1000, 0, 0), StoreUsage("a", 50, 10, 0, 1)]


# -- reservations -------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_reserve_lets_choose_pick_and_counts_the_reservation(store: MetadataStore) -> None:
    seen: list[list[StoreUsage]] = []

    def choose(usage: Sequence[StoreUsage]) -> str:
        seen.append(list(usage))
        return "b"

    reservation = await store.reserve(7, choose)
    assert reservation == Reservation(id=reservation.id, store="b", size=7)
    assert seen == [[StoreUsage("a", 100, 0, 0), StoreUsage("b", 1000, 0, 0)]]
    await store.reserve(3, pick("b"))
    assert usage_of(await store.store_usage(), "b") == StoreUsage("b", 1000, 0, 10)


@pytest_twisted.ensureDeferred
async def test_reserve_returns_none_and_reserves_nothing_when_choose_returns_none(store: MetadataStore) -> None:
    assert await store.reserve(7, pick(None)) is None
    assert [usage.reserved_bytes for usage in await store.store_usage()] == [0, 0]
    assert await store.release_dead_reservations(0) == 0


@pytest_twisted.ensureDeferred
async def test_reserve_rejects_a_store_that_is_not_configured(store: MetadataStore) -> None:
    with pytest.raises(ValueError):
        await store.reserve(7, pick("nope"))


@pytest_twisted.ensureDeferred
async def test_concurrent_reserves_never_overcommit(store: MetadataStore) -> None:
    # Store "a" has room for 100 bytes: ten 30-byte uploads fit three times.
    results = await defer.gatherResults([store.reserve(30, first_with_room(30)) for _ in range(10)])
    on_a = [r for r in results if r is not None and r.store == "a"]
    assert len(on_a) == 3
    usage = usage_of(await store.store_usage(), "a")
    assert usage.reserved_bytes == 90


@pytest_twisted.ensureDeferred
async def test_concurrent_reserves_from_two_connections_never_overcommit(make_store, store: MetadataStore) -> None:
    # A second store object on the same file: another connection, as another process would have.
    other = make_store()
    await other.start()
    await store.sync_stores([("a", 100)])
    choose_with_room = first_with_room(25)

    def slow_choose(usage: Sequence[StoreUsage]) -> str | None:
        # Runs in each connection's thread; the pause lets the transactions interleave.
        time.sleep(0.01)
        return choose_with_room(usage)

    calls = [(store if i % 2 else other).reserve(25, slow_choose) for i in range(12)]
    results = await defer.gatherResults(calls)
    granted = [r for r in results if r is not None]
    assert len(granted) == 4
    assert len({r.id for r in granted}) == 4
    assert (await store.store_usage())[0].reserved_bytes == 100


@pytest_twisted.ensureDeferred
async def test_release_frees_the_reserved_bytes_and_tolerates_a_missing_reservation(store: MetadataStore) -> None:
    reservation = await store.reserve(40, pick("a"))
    await store.release(reservation.id)
    await store.release(reservation.id)
    assert usage_of(await store.store_usage(), "a").reserved_bytes == 0


@pytest_twisted.ensureDeferred
async def test_reservation_ids_are_never_reused(store: MetadataStore) -> None:
    first = await store.reserve(1, pick("a"))
    await store.release(first.id)
    second = await store.reserve(1, pick("a"))
    assert second.id > first.id


# -- objects ------------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_commit_turns_the_reservation_into_usage(store: MetadataStore) -> None:
    reservation = await store.reserve(10, pick("a"))
    assert await store.commit_object(reservation.id, record(size=10)) is None
    assert usage_of(await store.store_usage(), "a") == StoreUsage("a", 100, 10, 0, 1)
    assert await store.get_object("bkt", "k") == record(size=10)


@pytest_twisted.ensureDeferred
async def test_overwrite_moves_usage_to_the_new_store_and_returns_the_old_record(store: MetadataStore) -> None:
    old = record(size=10, store="a", etag="old")
    reservation = await store.reserve(10, pick("a"))
    await store.commit_object(reservation.id, old)
    new = record(size=25, store="b", etag="new", location="elsewhere")
    reservation = await store.reserve(25, pick("b"))
    assert await store.commit_object(reservation.id, new) == old
    # The old bytes count as used on "a" until their cleanup is done.
    assert await store.store_usage() == [StoreUsage("a", 100, 10, 0, 0), StoreUsage("b", 1000, 25, 0, 1)]
    assert await store.finish_cleanup("a", old.location) == 1
    assert await store.store_usage() == [StoreUsage("a", 100, 0, 0, 0), StoreUsage("b", 1000, 25, 0, 1)]
    assert await store.get_object("bkt", "k") == new


@pytest_twisted.ensureDeferred
async def test_overwrite_on_the_same_store_counts_the_object_once(store: MetadataStore) -> None:
    for size in (10, 30):
        reservation = await store.reserve(size, pick("a"))
        await store.commit_object(reservation.id, record(size=size))
    assert usage_of(await store.store_usage(), "a") == StoreUsage("a", 100, 30, 0, 1)


@pytest_twisted.ensureDeferred
async def test_commit_of_a_released_reservation_fails_and_changes_nothing(store: MetadataStore) -> None:
    reservation = await store.reserve(10, pick("a"))
    await store.commit_object(reservation.id, record(size=10, etag="kept"))
    reservation = await store.reserve(20, pick("b"))
    await store.release(reservation.id)
    with pytest.raises(ReservationNotFound):
        await store.commit_object(reservation.id, record(size=20, store="b", etag="lost"))
    assert (await store.get_object("bkt", "k")).etag == "kept"
    assert await store.store_usage() == [StoreUsage("a", 100, 10, 0, 1), StoreUsage("b", 1000, 0, 0, 0)]


@pytest_twisted.ensureDeferred
async def test_commit_for_another_store_than_reserved_fails(store: MetadataStore) -> None:
    reservation = await store.reserve(10, pick("a"))
    with pytest.raises(ValueError):
        await store.commit_object(reservation.id, record(store="b"))
    assert await store.get_object("bkt", "k") is None
    assert usage_of(await store.store_usage(), "a").reserved_bytes == 10


@pytest_twisted.ensureDeferred
async def test_delete_releases_usage_and_returns_the_record(store: MetadataStore) -> None:
    reservation = await store.reserve(10, pick("a"))
    await store.commit_object(reservation.id, record(size=10))
    assert await store.delete_object("bkt", "k") == record(size=10)
    assert await store.get_object("bkt", "k") is None
    assert usage_of(await store.store_usage(), "a") == StoreUsage("a", 100, 10, 0, 0)
    assert await store.finish_cleanup("a", record(size=10).location) == 1
    assert usage_of(await store.store_usage(), "a") == StoreUsage("a", 100, 0, 0, 0)
    assert await store.delete_object("bkt", "k") is None


@pytest_twisted.ensureDeferred
async def test_objects_of_other_buckets_are_separate(store: MetadataStore) -> None:
    reservation = await store.reserve(10, pick("a"))
    await store.commit_object(reservation.id, record(bucket="one"))
    assert await store.get_object("two", "k") is None
    assert await store.delete_object("two", "k") is None


@pytest.mark.parametrize(
    "key",
    ["plain", "ünïcödé/日本語", "line\nbreak", "100%", "a%2Fb", "trailing/", "/leading", "a//b", "x" * 1024,
     "'; DROP TABLE objects; --", "\U0001f600 emoji"],
)
@pytest_twisted.ensureDeferred
async def test_keys_round_trip(store: MetadataStore, key: str) -> None:
    reservation = await store.reserve(1, pick("a"))
    await store.commit_object(reservation.id, record(key=key, size=1))
    assert (await store.get_object("bkt", key)).key == key
    assert await store.get_object("bkt", key + "x") is None


@pytest_twisted.ensureDeferred
async def test_headers_and_user_metadata_round_trip(store: MetadataStore) -> None:
    headers = {"cache-control": "max-age=60", "content-disposition": 'attachment; filename="ä.txt"'}
    user_metadata = {"mtime": "1700000000.5", "note": "multi\nline ünï \"quoted\" \udcff"}
    original = record(headers=headers, user_metadata=user_metadata, content_type="text/plain; charset=utf-8")
    reservation = await store.reserve(10, pick("a"))
    await store.commit_object(reservation.id, original)
    loaded = await store.get_object("bkt", "k")
    assert loaded == original
    assert dict(loaded.headers) == headers
    assert dict(loaded.user_metadata) == user_metadata


@pytest_twisted.ensureDeferred
async def test_sizes_beyond_32_bits_round_trip(store: MetadataStore) -> None:
    await store.sync_stores([("a", 0)])
    reservation = await store.reserve(5 * GIB * 1024, pick("a"))
    await store.commit_object(reservation.id, record(size=5 * GIB * 1024))
    assert (await store.store_usage())[0].used_bytes == 5 * GIB * 1024


# -- point reads on the reactor thread ------------------------------------------------------


@pytest.mark.sqlite_only
@pytest_twisted.ensureDeferred
async def test_a_lookup_by_key_answers_at_once_and_sees_the_latest_commit(store: MetadataStore) -> None:
    reservation = await store.reserve(10, pick("a"))
    await store.commit_object(reservation.id, record("k"))
    looked_up = store.get_object("bkt", "k")
    assert looked_up.called  # read on this thread: no trip to the pool's thread
    assert await looked_up == record("k")
    reservation = await store.reserve(20, pick("b"))
    await store.commit_object(reservation.id, record("k", store="b", size=20))
    assert await store.get_object("bkt", "k") == record("k", store="b", size=20)
    await store.delete_object("bkt", "k")
    assert await store.get_object("bkt", "k") is None


@pytest.mark.sqlite_only
@pytest_twisted.ensureDeferred
async def test_a_failed_point_read_fails_its_deferred_and_the_next_one_works(store: MetadataStore) -> None:
    def broken(txn, bucket: str) -> None:
        txn.query("SELECT no_such_column FROM objects WHERE bucket = ?", (bucket,))

    with pytest.raises(sqlite3.OperationalError):
        await store.database.point_read("broken", broken, "bkt")
    assert await store.get_object("bkt", "missing") is None


@pytest.mark.sqlite_only
@pytest_twisted.ensureDeferred
async def test_the_point_reader_cannot_write(store: MetadataStore) -> None:
    def write(txn) -> None:
        txn.execute("DELETE FROM stores")

    with pytest.raises(sqlite3.OperationalError):
        await store.database.point_read("write", write)
    assert [usage.name for usage in await store.store_usage()] == ["a", "b"]


@pytest_twisted.ensureDeferred
async def test_an_in_memory_database_reads_in_the_pool() -> None:
    store = sqlite_metadata_store(":memory:", reactor)
    await store.start()
    try:
        await store.sync_stores([("a", 0)])
        reservation = await store.reserve(1, pick("a"))
        await store.commit_object(reservation.id, record("k", size=1))
        # A second connection to ":memory:" would be another, empty database.
        assert await store.get_object("bkt", "k") == record("k", size=1)
    finally:
        store.database.close()


@pytest_twisted.ensureDeferred
async def test_a_restarted_database_reopens_its_point_reader(make_store) -> None:
    first = make_store()
    await first.start()
    await first.sync_stores([("a", 0)])
    reservation = await first.reserve(1, pick("a"))
    await first.commit_object(reservation.id, record("k", size=1))
    assert await first.get_object("bkt", "k") == record("k", size=1)
    first.database.close()
    await first.start()
    assert await first.get_object("bkt", "k") == record("k", size=1)


def test_the_point_reader_never_creates_a_database_file(tmp_path: Path) -> None:
    missing = tmp_path / "gone.sqlite3"
    with pytest.raises(sqlite3.OperationalError):
        SqliteEngine(str(missing)).connect_point_reader()
    assert not missing.exists()
