"""migrate-metadata's copy of a metadata database into another (SQLite to PostgreSQL and back).

The SQLite side needs nothing; the PostgreSQL side skips, saying so, without
S3O_TEST_POSTGRES_DSN (each test gets schemas of its own in the session's database).
"""

from __future__ import annotations

import datetime
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor

from s3orchestrator.metadata import schema as schema_module
from s3orchestrator.metadata.database import Database
from s3orchestrator.metadata.engines import PostgresEngine, SqliteEngine
from s3orchestrator.metadata.imports import FoundObject, ImportTable
from s3orchestrator.metadata.job_leases import JobLeases
from s3orchestrator.metadata.offline import DatabaseProblem, OfflineDatabase, PostgresDatabase, SqliteFile
from s3orchestrator.metadata.offline import transfer as transfer_module
from s3orchestrator.metadata.offline.transfer import RowDigest, transfer
from s3orchestrator.metadata.records import (
    Instance,
    IntentPlan,
    NewCopy,
    ObjectRecord,
    PartRecord,
    PlannedMove,
    UploadRecord,
)
from s3orchestrator.metadata.schema import Migration, load_migrations
from s3orchestrator.metadata.scrub import ScrubPasses, Suspension
from s3orchestrator.metadata.store import MetadataStore
from s3orchestrator.metadata.traffic import Traffic, TrafficTable

NOW_MS = 1_700_000_000_000
# Byte order differs from most locales' order: "B" < "a" < "z" < "é" < "日本" < an emoji.
KEYS = ("a", "B", "z/1", "\u00e9t\u00e9", "\u65e5\u672c/\u8a9e", "\U0001f600")


def record(key: str, store: str, size: int = 10, **changes: Any) -> ObjectRecord:
    values: dict[str, Any] = dict(
        bucket="bkt", key=key, store=store, location=f"bkt/{key}", size=size,
        etag="0123456789abcdef0123456789abcdef", content_type="text/plain",
        last_modified_ms=NOW_MS, headers={"cache-control": "no-cache"}, user_metadata={"n\u00e4me": "v\u00e4lue"},
    )
    values.update(changes)
    return ObjectRecord(**values)


def write_sqlite(spec: str, sql: str, rows: list[tuple[Any, ...]] | tuple[Any, ...] = ()) -> None:
    """Run one statement on a SQLite file (``rows``: a list runs it once per row), committed and closed."""
    connection = sqlite3.connect(spec.removeprefix("sqlite:"))
    try:
        with connection:
            if isinstance(rows, list):
                connection.executemany(sql, rows)
            else:
                connection.execute(sql, rows)
    finally:
        connection.close()


def metadata_store(spec: str) -> MetadataStore:
    engine = SqliteEngine(spec.removeprefix("sqlite:")) if spec.startswith("sqlite:") else PostgresEngine(spec)
    return MetadataStore(Database(engine, reactor), instance_id="host:1")


async def fill(spec: str) -> None:
    """Every table of the schema gets rows, through the daemon's own metadata store."""
    store = metadata_store(spec)
    await store.start()
    try:
        await store.sync_stores([("a", 0), ("b", 10_000)])
        # This instance's registration (a stale one, once copied: it expires there).
        await store.register_instance(Instance(id="host:1", host="host", pid=1, started_ms=0, expires_ms=NOW_MS))
        await JobLeases(store.database).take("reaper", "host:1", NOW_MS, 30_000)
        await TrafficTable(store.database).add({("a", datetime.date(2026, 12, 1)): Traffic(10, 20, 1, 2, 3)})
        await ScrubPasses(store.database).begin("stat", NOW_MS)
        await ScrubPasses(store.database).suspend(Suspension("b", NOW_MS, "stat", 101, 120))
        # An object whose every copy went missing: lost.
        (gone,) = await store.reserve_copies(2, lambda usage: ("a",))
        await store.commit_copies(record("gone", "a", 2), [NewCopy("a", "bkt/gone", gone.id)], missing=False)
        (copy,) = await store.object_copies("bkt", "gone")
        await store.mark_copy_missing("bkt", "gone", copy)
        for index, key in enumerate(KEYS):
            copies = await store.reserve_copies(10 + index, lambda usage: ("a", "b"))
            await store.commit_copies(record(key, "a", 10 + index),
                                      [NewCopy(c.store, f"bkt/{key}", c.id) for c in copies], missing=False)
        # One copy only: the object joins the replication queue.
        (single,) = await store.reserve_copies(5, lambda usage: ("b",))
        await store.commit_copies(record("only-one", "b", 5), [NewCopy("b", "bkt/only-one", single.id)], missing=True)
        # Overwritten and deleted objects: their old bytes wait in the cleanup queue.
        await store.delete_object("bkt", "z/1")
        await store.queue_cleanup("a", "bkt/lost", 3)
        # Multipart uploads in progress with two parts each (ids whose byte order, "U2" <
        # "u1", is not a locale's: the copy's checks order them bytewise), and a completed one.
        for upload_id, key in (("u1", "big/\u00fcpload"), ("U2", "big/2"), ("u3", "done")):
            await store.create_upload(UploadRecord(
                upload_id=upload_id, bucket="bkt", key=key, store="a", location=f"bkt/{key}",
                store_upload_id=f"store-{upload_id}", content_type="binary/octet-stream", initiated_ms=NOW_MS,
                checksum_algorithm="CRC32"))
            for number in (1, 2):
                reservation = await store.reserve(7, lambda usage: "a")
                await store.commit_part(reservation.id, PartRecord(
                    upload_id=upload_id, part_number=number, store="a", size=7, etag=f"{number:032x}",
                    store_etag=f"s{number}", last_modified_ms=NOW_MS, checksums={"CRC32": "AAAAAA=="}))
        await store.complete_upload("u3", record("done", "a", 14, part_sizes=(7, 7)), [(1, "1"), (2, "2")])
        # A write in flight (its intent), and a reservation released: the highest
        # reservation id is no longer in the table, yet must never be handed out again.
        plan = IntentPlan(bucket="bkt", key="inflight", locate=lambda name: f"bkt/inflight-{name}")
        await store.reserve_copies(4, lambda usage: ("a",), plan)
        released = await store.reserve(1, lambda usage: "b")
        await store.release(released.id)
        # A drain's move queued (and its totals), and the movement paused.
        await store.queue_moves([PlannedMove("bkt", KEYS[0], "a", None, 10)], "drain", NOW_MS)
        await store.pause_movement(True, NOW_MS)
        # An import of one object, with its checkpoint and area.
        imports = ImportTable(store.database)
        await imports.begin("a", "bkt", "", "host:1", 60_000)
        await imports.record("a", "bkt", "", "host:1", [FoundObject(
            key="found/1", location="found/1", area="found", size=3, etag="e", content_type="text/plain",
            last_modified_ms=NOW_MS)], "found/1", 0, False, 60_000)
    finally:
        await store.stop()


def dump(database: OfflineDatabase) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table but schema_version, in the copy's order."""
    database.begin_read()
    try:
        tables = {name: database.describe(name) for name in database.table_names() if name != "schema_version"}
        return {name: list(database.rows(table, sorted(table.columns), 100)) for name, table in tables.items()}
    finally:
        database.rollback()


@pytest.fixture
def sqlite_spec(tmp_path: Path) -> Callable[[str], str]:
    return lambda name: f"sqlite:{tmp_path / name}"


def open_spec(spec: str, create: bool = False) -> OfflineDatabase:
    if spec.startswith("sqlite:"):
        return SqliteFile.open_exclusive(spec.removeprefix("sqlite:"), create=create)
    return PostgresDatabase.connect(spec, {})


def copy(source_spec: str, target_spec: str, **options: Any) -> transfer_module.TransferReport:
    source, target = open_spec(source_spec), open_spec(target_spec, create=True)
    try:
        return transfer(source, target, NOW_MS, **options)
    finally:
        source.close()
        target.close()


def contents(spec: str) -> dict[str, list[tuple[Any, ...]]]:
    database = open_spec(spec)
    try:
        return dump(database)
    finally:
        database.close()


# -- the copy itself -----------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_sqlite_to_postgresql_copies_every_table_and_verifies_it(sqlite_spec, postgres_schema_url) -> None:
    source, target = sqlite_spec("m.sqlite"), postgres_schema_url()
    await fill(source)
    report = copy(source, target, batch_size=2)  # several batches per table
    assert report.verified
    original = contents(source)
    assert {table.name: table.target_rows for table in report.tables} == {
        name: len(rows) for name, rows in original.items()}
    assert all(original.values()), "every table had rows to copy"
    assert contents(target) == original


@pytest_twisted.ensureDeferred
async def test_the_daemons_store_reads_the_copy_on_postgresql(sqlite_spec, postgres_schema_url) -> None:
    source, target = sqlite_spec("m.sqlite"), postgres_schema_url()
    await fill(source)
    highest_reservation = max(row[1] for row in contents(source)["reservations"])  # (created_ms, id, ...)
    copy(source, target)
    store = metadata_store(target)
    await store.start()
    try:
        assert (await store.get_object("bkt", "\u00e9t\u00e9")) == record("\u00e9t\u00e9", "a", 13)
        assert [part.part_number for part in await store.list_parts("u1")] == [1, 2]
        assert sorted(entry.location for entry in await store.list_cleanups(10)) == [
            "bkt/gone", "bkt/lost", "bkt/z/1", "bkt/z/1"]
        assert [queued.key for queued in await store.replication_queue(10)] == ["only-one"]
        listed = await store.scan_objects("bkt", "", lambda fetch: [r.key for r in fetch("", True, 100)])
        assert listed == sorted(listed, key=lambda key: key.encode())
        # The identity sequence continues above every id the source handed out,
        # the released reservation's included.
        fresh = await store.reserve(1, lambda usage: "a")
        assert fresh.id > highest_reservation + 1
    finally:
        await store.stop()


@pytest_twisted.ensureDeferred
async def test_postgresql_back_to_sqlite_gives_the_same_rows(sqlite_spec, postgres_schema_url) -> None:
    source, middle, back = postgres_schema_url(), sqlite_spec("m.sqlite"), sqlite_spec("back/m.sqlite")
    await fill(source)
    assert copy(source, middle).verified
    assert copy(middle, back).verified
    assert contents(back) == contents(middle) == contents(source)
    store = metadata_store(back)
    await store.start()
    try:
        highest = max(row[1] for row in contents(source)["reservations"])
        assert (await store.reserve(1, lambda usage: "a")).id > highest + 1
    finally:
        await store.stop()


@pytest_twisted.ensureDeferred
async def test_sqlite_to_sqlite_needs_no_server(sqlite_spec) -> None:
    source, target = sqlite_spec("m.sqlite"), sqlite_spec("copy/m.sqlite")
    await fill(source)
    report = copy(source, target)
    assert report.verified and report.schema_version == load_migrations()[-1].version
    assert contents(target) == contents(source)


@pytest_twisted.ensureDeferred
async def test_a_table_a_later_migration_adds_is_copied_too(sqlite_spec, monkeypatch) -> None:
    later = Migration(len(load_migrations()) + 1, "later", """
        CREATE TABLE later_things (id @ID_PRIMARY_KEY@, store TEXT NOT NULL REFERENCES stores (name), note TEXT);
    """)
    monkeypatch.setattr(schema_module, "load_migrations", lambda: [*load_migrations(), later])
    monkeypatch.setattr(transfer_module, "load_migrations", schema_module.load_migrations)
    source, target = sqlite_spec("m.sqlite"), sqlite_spec("copy.sqlite")
    await fill(source)
    write_sqlite(source, "INSERT INTO later_things (store, note) VALUES (?, ?)", [("a", "x"), ("b", None)])
    report = copy(source, target)
    assert report.verified
    assert {table.name: table.target_rows for table in report.tables}["later_things"] == 2
    assert contents(target)["later_things"] == [(1, "x", "a"), (2, None, "b")]


# -- what it refuses -----------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_a_target_holding_rows_is_refused_unless_replace(sqlite_spec) -> None:
    source, target = sqlite_spec("m.sqlite"), sqlite_spec("t.sqlite")
    await fill(source)
    other = metadata_store(target)
    await other.start()
    await other.sync_stores([("elsewhere", 0)])
    await other.stop()
    with pytest.raises(DatabaseProblem, match=r"is not empty \(rows: stores 1\).*--replace"):
        copy(source, target)
    assert contents(target)["stores"] == [(0, "elsewhere", 0)]  # untouched
    assert copy(source, target, replace=True).verified
    assert contents(target) == contents(source)


@pytest_twisted.ensureDeferred
async def test_a_source_of_another_schema_version_is_refused(sqlite_spec) -> None:
    source, target = sqlite_spec("m.sqlite"), sqlite_spec("t.sqlite")
    await fill(source)
    latest = load_migrations()[-1].version
    write_sqlite(source, "DELETE FROM schema_version WHERE version = ?", (latest,))
    with pytest.raises(DatabaseProblem, match=f"schema version {latest - 1}, this release {latest}: start this"):
        copy(source, target)
    write_sqlite(source, "INSERT INTO schema_version VALUES (?, 'a', 0), (?, 'future', 0)", (latest, latest + 1))
    with pytest.raises(DatabaseProblem, match=f"schema version {latest + 1}, newer than this release's {latest}"):
        copy(source, target)
    assert contents(target) == {}


@pytest_twisted.ensureDeferred
async def test_a_sqlite_file_a_daemon_has_open_is_refused(sqlite_spec) -> None:
    source, target = sqlite_spec("m.sqlite"), sqlite_spec("t.sqlite")
    await fill(source)
    running = metadata_store(source)
    await running.start()
    try:
        with pytest.raises(DatabaseProblem, match="is in use by another process .* stop it first"):
            copy(source, target)
    finally:
        await running.stop()
    assert copy(source, target).verified


@pytest_twisted.ensureDeferred
async def test_a_postgresql_database_a_daemon_is_connected_to_is_refused(sqlite_spec, postgres_schema_url) -> None:
    source, target = sqlite_spec("m.sqlite"), postgres_schema_url()
    await fill(source)
    running = metadata_store(target)
    await running.start()
    try:
        with pytest.raises(DatabaseProblem, match=r"is in use \(\d+ connections? of a running s3orchestrator\)"):
            copy(source, target)
    finally:
        await running.stop()


@pytest_twisted.ensureDeferred
async def test_a_copy_that_does_not_match_leaves_the_target_unchanged(
    sqlite_spec, postgres_schema_url, monkeypatch
) -> None:
    source, target = sqlite_spec("m.sqlite"), postgres_schema_url()
    await fill(source)
    insert = PostgresDatabase.insert

    def lossy(self, table, columns, rows):  # drops the last object on the way
        rows = list(rows)
        insert(self, table, columns, rows[:-1] if table.name == "objects" else rows)

    monkeypatch.setattr(PostgresDatabase, "insert", lossy)
    report = copy(source, target)
    assert not report.verified
    assert [table.name for table in report.tables if not table.matches] == ["objects"]
    database = open_spec(target)
    try:
        assert database.table_names() == []
    finally:
        database.close()


# -- the checksum --------------------------------------------------------------------------


def digest(*rows: tuple[Any, ...]) -> str:
    rowdigest = RowDigest()
    for row in rows:
        rowdigest.add(row)
    return rowdigest.checksum


def test_the_row_checksum_tells_apart_what_only_looks_alike() -> None:
    assert digest(("ab", "c")) != digest(("a", "bc"))
    assert digest((None,)) != digest(("",))
    assert digest((1,)) != digest(("1",))
    assert digest(("a",), ("b",)) != digest(("b",), ("a",))
    assert digest((1, "\u00e9", None)) == digest((1, "\u00e9", None))
    assert digest((True,)) == digest((1,))  # a boolean on one engine, an integer on the other
