"""The engine layer: the factory, placeholders, retries of deadlocked interactions, migrations
started by two processes at once (on every engine where a database is involved, see conftest)."""

from __future__ import annotations

import random
import sqlite3
import threading
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import gatherResults

from s3orchestrator.config import ConfigError, MetadataConfig
from s3orchestrator.metadata import database as database_module
from s3orchestrator.metadata.database import Database, Transaction
from s3orchestrator.metadata.engines import EngineUnavailable, PostgresEngine, SqliteEngine, create_engine
from s3orchestrator.metadata.engines import postgres as postgres_module
from s3orchestrator.metadata.engines.postgres import redacted_url, to_pyformat
from s3orchestrator.metadata.group_commit import WriteRequest, run_batch
from s3orchestrator.metadata.interface import MetadataBusy
from s3orchestrator.metadata.schema import load_migrations


def test_the_factory_builds_the_engine_the_config_names(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr("s3orchestrator.metadata.engines.psycopg_available", lambda: True)  # Debian's build has none
    sqlite = create_engine(MetadataConfig(sqlite=str(tmp_path / "m.sqlite"), busy_timeout=0.5))
    assert isinstance(sqlite, SqliteEngine) and sqlite.busy_timeout == 0.5
    postgres = create_engine(MetadataConfig(url="postgresql://s3o@db/s3o", pool_size=3))
    assert isinstance(postgres, PostgresEngine) and postgres.pool_size == 3
    assert postgres.pool_arguments()[1]["cp_max"] == 3


def test_the_factory_says_what_to_install_when_psycopg_is_missing(monkeypatch) -> None:
    monkeypatch.setattr("s3orchestrator.metadata.engines.psycopg_available", lambda: False)
    with pytest.raises(EngineUnavailable, match="python3-psycopg") as error:
        create_engine(MetadataConfig(url="postgresql://s3o@db/s3o"))
    assert isinstance(error.value, ConfigError) and str(error.value).startswith("metadata.url: ")


@pytest.mark.parametrize(("sql", "converted"), [
    ("SELECT a FROM t WHERE b = ? AND c > ?", "SELECT a FROM t WHERE b = %s AND c > %s"),
    ("SELECT a FROM t WHERE b LIKE 'x%' AND c = ?", "SELECT a FROM t WHERE b LIKE 'x%%' AND c = %s"),
    ("SELECT '?', \"a?\" FROM t WHERE c = ?", "SELECT '?', \"a?\" FROM t WHERE c = %s"),
    ("SELECT 'it''s ?' WHERE ? = 1", "SELECT 'it''s ?' WHERE %s = 1"),
])
def test_placeholders_become_pyformat_and_percent_signs_literal(sql: str, converted: str) -> None:
    assert to_pyformat(sql) == converted


def test_each_statement_text_is_converted_once(monkeypatch) -> None:
    engine = PostgresEngine("postgresql://s3o@db/s3o")
    calls: list[str] = []
    monkeypatch.setattr(postgres_module, "to_pyformat", lambda sql: calls.append(sql) or sql.replace("?", "%s"))
    for _ in range(3):
        assert engine.convert_param_style("SELECT ?") == "SELECT %s"
    assert calls == ["SELECT ?"]


@pytest.mark.parametrize(("url", "shown"), [
    ("postgresql://s3o:secret@db:5432/meta", "postgresql://s3o@db:5432/meta"),
    ("postgresql://:secret@db/meta", "postgresql://db/meta"),
    ("postgresql://s3o@db/meta?sslmode=require", "postgresql://s3o@db/meta?sslmode=require"),
])
def test_urls_are_shown_without_their_password(url: str, shown: str) -> None:
    assert redacted_url(url) == shown


class FakeCursor:
    def __init__(self) -> None:
        self.statements: list[str] = []

    def execute(self, sql: str, args: Any = ()) -> None:
        self.statements.append(sql)


def test_postgresql_batches_commit_synchronously_only_when_one_write_must_be_durable() -> None:
    engine = PostgresEngine("postgresql://s3o@db/s3o", busy_timeout=0.25)
    for durable, expected in (True, "on"), (False, "off"):
        cursor = FakeCursor()
        run_batch(engine, cursor, [WriteRequest("w", lambda cursor: None, 0.0, durable)], 0.25, lambda e: e)
        assert cursor.statements[0] == ("BEGIN ISOLATION LEVEL READ COMMITTED; SET LOCAL lock_timeout = 250;"
                                        f" SET LOCAL synchronous_commit = {expected}")
        assert cursor.statements[-1] == "COMMIT"


def test_sqlite_keeps_savepoint_journals_in_memory(tmp_path) -> None:
    """No temporary file per group-commit batch: the sub-journals stay in memory."""
    engine = SqliteEngine(str(tmp_path / "m.sqlite"))
    connection = sqlite3.connect(str(tmp_path / "m.sqlite"), isolation_level=None)
    try:
        engine.on_new_connection(connection)
        assert connection.execute("PRAGMA temp_store").fetchone() == (2,)  # MEMORY
    finally:
        connection.close()


def test_a_zero_lock_wait_never_means_wait_forever_on_postgresql() -> None:
    cursor = FakeCursor()
    PostgresEngine("postgresql://s3o@db/s3o").set_lock_wait(cursor, 0)
    assert cursor.statements == ["SET lock_timeout = 1"]


def test_a_postgresql_transaction_begins_with_its_settings_in_one_statement() -> None:
    cursor = FakeCursor()
    engine = PostgresEngine("postgresql://s3o@db/s3o")
    engine.begin_with(cursor, True, 2.5, durable=False)
    engine.begin_with(cursor, False, 0)
    assert cursor.statements == [
        "BEGIN ISOLATION LEVEL READ COMMITTED; SET LOCAL lock_timeout = 2500; SET LOCAL synchronous_commit = off",
        "BEGIN ISOLATION LEVEL READ COMMITTED; SET LOCAL lock_timeout = 1",
    ]


class Conflict(Exception):
    """Stands for a deadlock or a serialization failure."""


class ConflictingEngine(SqliteEngine):
    def is_retryable(self, error: Exception) -> bool:
        return isinstance(error, Conflict)


def conflicting(failures: int, calls: list[int]) -> Any:
    def interaction(txn: Transaction) -> str:
        calls.append(1)
        txn.execute("INSERT INTO t (v) VALUES (?)", (len(calls),))
        if len(calls) <= failures:
            raise Conflict("deadlock detected")
        return "done"

    return interaction


@pytest.fixture
def conflicting_db(db_path: str):
    db = Database(ConflictingEngine(db_path), reactor, rng=random.Random(1))
    db.start()
    yield db
    db.close()


@pytest.mark.parametrize("write", [True, False])
@pytest_twisted.ensureDeferred
async def test_an_interaction_aborted_by_a_conflict_runs_again_whole(conflicting_db: Database, write: bool) -> None:
    await conflicting_db.runInteraction("create", lambda txn: txn.execute("CREATE TABLE t (v INTEGER)"), write=True)
    calls: list[int] = []
    assert await conflicting_db.runInteraction("w", conflicting(2, calls), write=write) == "done"
    assert len(calls) == 3
    # The aborted attempts left nothing behind.
    assert await conflicting_db.runQuery("rows", "SELECT v FROM t") == [(3,)]


@pytest_twisted.ensureDeferred
async def test_conflicts_beyond_the_retries_reach_the_caller_as_busy(conflicting_db: Database) -> None:
    await conflicting_db.runInteraction("create", lambda txn: txn.execute("CREATE TABLE t (v INTEGER)"), write=True)
    calls: list[int] = []
    with pytest.raises(MetadataBusy, match="gave up after 4 attempts"):
        await conflicting_db.runInteraction("w", conflicting(100, calls), write=True)
    assert len(calls) == database_module.RETRY_ATTEMPTS == 4


@pytest_twisted.ensureDeferred
async def test_other_errors_are_not_retried(conflicting_db: Database) -> None:
    calls: list[int] = []

    def broken(txn: Transaction) -> None:
        calls.append(1)
        raise ValueError("no")

    with pytest.raises(ValueError):
        await conflicting_db.runInteraction("w", broken, write=True)
    assert calls == [1]


@pytest_twisted.ensureDeferred
async def test_a_real_deadlock_is_retried_and_both_writes_succeed(make_engine, engine_name: str) -> None:
    """Two connections update two rows in opposite orders: PostgreSQL aborts one (40P01),
    which runs again. (On SQLite, BEGIN IMMEDIATE serialises them: no deadlock at all.)"""
    first, second = Database(make_engine(busy_timeout=5.0), reactor), Database(make_engine(busy_timeout=5.0), reactor)
    first.start()
    second.start()
    try:
        await first.runInteraction("create", lambda txn: (
            txn.execute("CREATE TABLE pair (id INTEGER PRIMARY KEY, v INTEGER NOT NULL)"),
            txn.execute("INSERT INTO pair (id, v) VALUES (1, 0), (2, 0)"),
        ), write=True)
        both_hold_one = threading.Barrier(2, timeout=5)
        attempts: list[str] = []

        def update(name: str, order: tuple[int, int]) -> Any:
            def interaction(txn: Transaction) -> str:
                attempts.append(name)
                txn.execute("UPDATE pair SET v = v + 1 WHERE id = ?", (order[0],))
                if engine_name == "postgres" and attempts.count(name) == 1:
                    both_hold_one.wait()
                txn.execute("UPDATE pair SET v = v + 1 WHERE id = ?", (order[1],))
                return name

            return interaction

        results = await gatherResults([
            first.runInteraction("a", update("a", (1, 2)), write=True),
            second.runInteraction("b", update("b", (2, 1)), write=True),
        ])
        assert results == ["a", "b"]
        assert await first.runQuery("rows", "SELECT id, v FROM pair ORDER BY id") == [(1, 2), (2, 2)]
        if engine_name == "postgres":
            assert len(attempts) == 3  # the deadlock's victim ran twice
    finally:
        first.close()
        second.close()


@pytest_twisted.ensureDeferred
async def test_two_processes_starting_at_once_migrate_once(make_store, db_rows) -> None:
    first, second = make_store(), make_store()
    await gatherResults([first.start(), second.start()])
    versions = db_rows("SELECT version FROM schema_version ORDER BY version")
    assert versions == [(migration.version,) for migration in load_migrations()]
