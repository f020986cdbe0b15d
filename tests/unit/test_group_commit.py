"""Group commit of write interactions, and a busy database, on every engine (see conftest)."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred, fail, gatherResults
from twisted.internet.threads import deferToThread
from twisted.python.failure import Failure

from s3orchestrator.metadata.database import Database, Transaction
from s3orchestrator.metadata.engines import BaseEngine, PostgresEngine, SqliteEngine
from s3orchestrator.metadata.group_commit import GroupCommitter, WriteRequest, run_batch
from s3orchestrator.metadata.interface import MetadataBusy, MetadataUnavailable
from s3orchestrator.metadata.records import ObjectRecord
from s3orchestrator.metadata.store import MetadataStore
from tests.unit.fakes import Outcome


class Tracing:
    """An engine mixin recording the transaction-control statements its connections run."""

    statements: list[str]

    def write_begin(self, statement: str) -> bool:
        """Whether ``statement`` begins a write transaction."""
        raise NotImplementedError

    def trace(self, statement: str) -> None:
        if statement.split(" ", 1)[0] in ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE"):
            self.statements.append(statement)
        elif statement.startswith("PRAGMA synchronous="):
            self.statements.append(statement)

    def control(self) -> list[str]:
        """The statements traced since the first write transaction began (earlier ones
        are a read's), the savepoint's name left out, the write BEGIN as "BEGIN"."""
        traced = [
            "BEGIN" if self.write_begin(s) else s.replace(" group_commit_interaction", "")
            for s in self.statements
            if not s.startswith("PRAGMA")
        ]
        return traced[traced.index("BEGIN"):] if "BEGIN" in traced else []


class TracingEngine(Tracing, SqliteEngine):
    """SQLite, recording the transaction-control statements every connection runs."""

    def write_begin(self, statement: str) -> bool:
        return statement == "BEGIN IMMEDIATE"

    def __init__(self, path: str, **options: Any) -> None:
        super().__init__(path, **options)
        self.statements = []

    def on_new_connection(self, connection: sqlite3.Connection) -> None:
        super().on_new_connection(connection)
        connection.set_trace_callback(self.trace)


class TracingPostgresEngine(Tracing, PostgresEngine):
    """PostgreSQL, recording the transaction-control statements run through its cursors
    (those adbapi ends with connection.commit() are not: only reads end so)."""

    def write_begin(self, statement: str) -> bool:
        # Only a write transaction says whether its commit is synced.
        return statement.startswith("BEGIN ISOLATION LEVEL READ COMMITTED;") and "synchronous_commit" in statement

    def __init__(self, url: str, **options: Any) -> None:
        super().__init__(url, **options)
        self.statements = []

    def on_new_connection(self, connection: Any) -> None:
        import psycopg

        trace = self.trace

        class Cursor(psycopg.Cursor):  # type: ignore[type-arg]
            def execute(self, query: Any, params: Any = None, **options: Any) -> Any:
                trace(str(query))
                return super().execute(query, params, **options)

        connection.cursor_factory = Cursor


@pytest.fixture
def database(engine_name: str, engine_url: Callable[[str], str], db_path: str) -> Iterator[Database]:
    """A Database of one connection on the test's engine, tracing its control statements."""
    engine: BaseEngine
    if engine_name == "sqlite":
        engine = TracingEngine(engine_url(db_path), busy_timeout=0.3)
    else:
        engine = TracingPostgresEngine(engine_url(db_path), busy_timeout=0.3, pool_size=1)
    db = Database(engine, reactor)
    db.start()
    yield db
    db.close()


def values(db_rows: Callable[..., list[tuple[Any, ...]]]) -> list[str]:
    return [row[0] for row in db_rows("SELECT v FROM t ORDER BY v")]


async def make_table(db: Database) -> None:
    await db.runInteraction("create", lambda txn: txn.execute("CREATE TABLE t (v TEXT PRIMARY KEY)"), write=True)
    db.engine.statements.clear()  # type: ignore[attr-defined]


def insert(value: str, fail: bool = False) -> Any:
    def interaction(txn: Transaction) -> str:
        txn.execute("INSERT INTO t (v) VALUES (?)", (value,))
        if fail:
            raise ValueError(f"refusing {value}")
        return value

    return interaction


async def hold_the_thread(db: Database) -> threading.Event:
    """Occupy the database thread until the returned event is set, so that the writes
    submitted meanwhile all wait for the same batch; what was traced until it runs is
    forgotten."""
    holding, release = threading.Event(), threading.Event()

    def hold(txn: Transaction) -> None:
        holding.set()
        release.wait(10)

    db.runInteraction("hold", hold)
    await deferToThread(holding.wait, 10)
    db.engine.statements.clear()  # type: ignore[attr-defined]
    return release


@pytest_twisted.ensureDeferred
async def test_writes_waiting_together_share_one_transaction_and_one_commit(database: Database, db_rows) -> None:
    await make_table(database)
    release = await hold_the_thread(database)
    pending = [database.runInteraction("insert", insert(v), write=True) for v in "abcde"]
    release.set()

    assert await gatherResults(pending) == list("abcde")
    assert values(db_rows) == list("abcde")
    control = database.engine.control()  # type: ignore[attr-defined]
    assert control.count("BEGIN") == 1 and control.count("COMMIT") == 1
    assert control.count("SAVEPOINT") == 5


@pytest_twisted.ensureDeferred
async def test_a_lone_write_commits_at_once_in_its_own_transaction(database: Database, db_rows) -> None:
    await make_table(database)
    assert await database.runInteraction("insert", insert("a"), write=True) == "a"
    assert database.engine.control() == [  # type: ignore[attr-defined]
        "BEGIN", "SAVEPOINT", "RELEASE SAVEPOINT", "COMMIT"
    ]


@pytest_twisted.ensureDeferred
async def test_a_failing_interaction_rolls_back_only_itself(database: Database, db_rows) -> None:
    await make_table(database)
    release = await hold_the_thread(database)
    first = database.runInteraction("insert", insert("a"), write=True)
    failing = Outcome(database.runInteraction("insert", insert("b", fail=True), write=True))
    last = database.runInteraction("insert", insert("c"), write=True)
    release.set()

    assert await first == "a" and await last == "c"
    assert failing.failure.check(ValueError) and str(failing.failure.value) == "refusing b"
    assert values(db_rows) == ["a", "c"]
    assert database.engine.control().count("COMMIT") == 1  # type: ignore[attr-defined]


@pytest_twisted.ensureDeferred
async def test_interactions_run_and_answer_in_submission_order(database: Database) -> None:
    await make_table(database)
    ran: list[str] = []
    answered: list[str] = []

    def step(name: str) -> Any:
        def interaction(txn: Transaction) -> str:
            ran.append(name)
            # Each sees what the ones before it in the batch wrote.
            txn.execute("INSERT INTO t (v) VALUES (?)", (name,))
            return ",".join(row[0] for row in txn.query("SELECT v FROM t ORDER BY v"))

        return interaction

    release = await hold_the_thread(database)
    pending = []
    for name in ("1", "2", "3", "4"):
        d = database.runInteraction(name, step(name), write=True)
        d.addCallback(lambda result, name=name: answered.append(name) or result)
        pending.append(d)
    release.set()

    assert await gatherResults(pending) == ["1", "1,2", "1,2,3", "1,2,3,4"]
    assert ran == answered == ["1", "2", "3", "4"]


@pytest_twisted.ensureDeferred
async def test_a_write_submitted_while_a_batch_runs_commits_in_the_next(database: Database, db_rows) -> None:
    await make_table(database)
    running, release = threading.Event(), threading.Event()

    def first(txn: Transaction) -> str:
        running.set()
        release.wait(10)
        txn.execute("INSERT INTO t (v) VALUES ('a')")
        return "a"

    d = database.runInteraction("first", first, write=True)
    await deferToThread(running.wait, 10)
    second = database.runInteraction("second", insert("b"), write=True)
    release.set()

    assert await d == "a" and await second == "b"
    assert values(db_rows) == ["a", "b"]
    assert database.engine.control().count("COMMIT") == 2  # type: ignore[attr-defined]


class FakeCursor:
    """A DB-API cursor that records statements and fails the ones it is told to."""

    def __init__(self, failing: set[str]) -> None:
        self.failing = failing
        self.statements: list[str] = []

    def execute(self, sql: str, args: Any = ()) -> None:
        self.statements.append(sql)
        if sql.split(" group_commit")[0] in self.failing or sql in self.failing:
            raise sqlite3.OperationalError(f"{sql} failed")


def requests(*funcs: Any) -> list[WriteRequest]:
    return [WriteRequest(f"r{i}", func, 0.0) for i, func in enumerate(funcs)]


def ok(value: str) -> Any:
    return lambda cursor: value


def broken(cursor: Any) -> None:
    raise KeyError("broken")


def outcome_error(request: WriteRequest) -> type:
    assert isinstance(request.outcome, Failure)
    return type(request.outcome.value)


def test_a_failed_commit_fails_every_interaction_of_the_batch() -> None:
    batch = requests(ok("a"), broken, ok("c"))
    cursor = FakeCursor({"COMMIT"})

    assert run_batch(SqliteEngine(":memory:"), cursor, batch, 1.0, lambda error: error) == 3
    assert [outcome_error(r) for r in batch] == [sqlite3.OperationalError, KeyError, sqlite3.OperationalError]
    assert cursor.statements[-1] == "ROLLBACK"


def test_a_transaction_lost_midway_fails_what_ran_and_leaves_the_rest_untried() -> None:
    batch = requests(ok("a"), broken, ok("c"))
    cursor = FakeCursor({"ROLLBACK TO SAVEPOINT"})

    assert run_batch(SqliteEngine(":memory:"), cursor, batch, 1.0, lambda error: error) == 2
    assert [outcome_error(r) for r in batch[:2]] == [KeyError, KeyError]
    assert batch[2].outcome is None


def test_a_busy_begin_fails_the_batch_with_the_mapped_error() -> None:
    batch = requests(ok("a"), ok("b"))
    cursor = FakeCursor({"BEGIN IMMEDIATE"})

    run_batch(SqliteEngine(":memory:"), cursor, batch, 0.25, lambda error: MetadataBusy(str(error)))
    assert [outcome_error(r) for r in batch] == [MetadataBusy, MetadataBusy]
    assert cursor.statements[0] == "PRAGMA busy_timeout=250" and cursor.statements[-1] == "BEGIN IMMEDIATE"


def test_a_connection_lost_around_the_batch_fails_it_with_the_mapped_error() -> None:
    """The pool's own commit or rollback of the batch's connection fails (the server ended
    the connection): the writes see what the engine makes of that error, not the raw one."""
    lost = ConnectionError("the connection is lost")
    committer = GroupCommitter(
        SqliteEngine(":memory:"), lambda batch: fail(lost), lambda: 0.0, 1.0,
        lambda error: MetadataUnavailable(str(error)),
    )
    failures: list[Failure] = []
    committer.submit("w", ok("a"), True).addErrback(failures.append)
    assert [failure.type for failure in failures] == [MetadataUnavailable]


def synchronous_of_batch(engine: SqliteEngine, *durable: bool) -> list[str]:
    batch = [WriteRequest(f"r{i}", ok("x"), 0.0, flag) for i, flag in enumerate(durable)]
    cursor = FakeCursor(set())
    run_batch(engine, cursor, batch, 1.0, lambda error: error)
    return [s for s in cursor.statements if s.startswith("PRAGMA synchronous")]


def test_a_batch_is_synced_if_any_of_its_writes_must_be_durable() -> None:
    assert synchronous_of_batch(SqliteEngine(":memory:"), False, True, False) == ["PRAGMA synchronous=FULL"]


def test_a_batch_of_writes_a_restart_discards_anyway_commits_without_a_sync() -> None:
    assert synchronous_of_batch(SqliteEngine(":memory:"), False, False) == ["PRAGMA synchronous=NORMAL"]
    # Never more than configured, though.
    assert synchronous_of_batch(SqliteEngine(":memory:", synchronous="OFF"), False) == ["PRAGMA synchronous=OFF"]
    assert synchronous_of_batch(SqliteEngine(":memory:", synchronous="OFF"), True) == ["PRAGMA synchronous=OFF"]


@pytest_twisted.ensureDeferred
async def test_the_lost_part_of_a_batch_runs_in_the_next(database: Database, db_rows) -> None:
    await make_table(database)

    def lose_the_transaction(txn: Transaction) -> None:
        txn.execute("ROLLBACK")  # as an I/O error would
        raise OSError("disk trouble")

    release = await hold_the_thread(database)
    before = Outcome(database.runInteraction("insert", insert("a"), write=True))
    losing = Outcome(database.runInteraction("lose", lose_the_transaction, write=True))
    after = database.runInteraction("insert", insert("c"), write=True)
    release.set()

    assert await after == "c"
    assert before.failure.check(OSError) and losing.failure.check(OSError)
    assert values(db_rows) == ["c"]


class UnopenableEngine(SqliteEngine):
    """SQLite whose connections cannot be set up (a disk that went read-only, say)."""

    def on_new_connection(self, connection: sqlite3.Connection) -> None:
        raise sqlite3.OperationalError("attempt to write a readonly database")


@pytest_twisted.ensureDeferred
async def test_writes_fail_with_the_error_when_no_connection_can_be_opened(db_path: str) -> None:
    db = Database(UnopenableEngine(db_path), reactor)
    db.start()
    try:
        for _ in range(2):  # and again: nothing stays queued, nothing spins
            with pytest.raises(sqlite3.OperationalError, match="readonly"):
                await db.runInteraction("insert", insert("a"), write=True)
    finally:
        db.close()


@pytest.fixture
def locked(db_path: str) -> Iterator[sqlite3.Connection]:
    """Another process's connection, holding the write lock until the test ends."""
    Path(db_path).parent.mkdir(parents=True, exist_ok=True)
    connection = sqlite3.connect(db_path, isolation_level=None)
    yield connection
    connection.close()


class WriteLock:
    """Another process's connection that can hold what the writes of table t need:
    SQLite's write lock, or on PostgreSQL an exclusive lock of the table."""

    def __init__(self, engine_name: str, where: str) -> None:
        self.engine_name = engine_name
        if engine_name == "sqlite":
            self.connection: Any = sqlite3.connect(where, isolation_level=None)
        else:
            import psycopg

            self.connection = psycopg.connect(where, autocommit=True)

    def take(self) -> None:
        self.connection.execute("BEGIN IMMEDIATE" if self.engine_name == "sqlite" else "BEGIN")
        if self.engine_name != "sqlite":
            self.connection.execute("LOCK TABLE t IN EXCLUSIVE MODE")

    def release(self) -> None:
        self.connection.execute("ROLLBACK")


@pytest.fixture
def write_lock(engine_name: str, engine_url: Callable[[str], str], db_path: str) -> Iterator[WriteLock]:
    lock = WriteLock(engine_name, engine_url(db_path))
    yield lock
    lock.connection.close()


@pytest_twisted.ensureDeferred
async def test_a_write_refused_by_a_locked_database_fails_busy_within_busy_timeout(
    database: Database, write_lock: WriteLock
) -> None:
    await make_table(database)
    write_lock.take()
    started = time.monotonic()
    with pytest.raises(MetadataBusy):
        await database.runInteraction("insert", insert("a"), write=True)
    # busy_timeout is 0.3 s; the default wait of the sqlite3 module would be 5 s.
    assert time.monotonic() - started < 3.0
    write_lock.release()
    assert await database.runInteraction("insert", insert("a"), write=True) == "a"


@pytest_twisted.ensureDeferred
async def test_writes_queued_behind_a_busy_batch_fail_busy_without_waiting_again(
    database: Database, write_lock: WriteLock
) -> None:
    await make_table(database)
    write_lock.take()
    started = time.monotonic()
    first = database.runInteraction("insert", insert("a"), write=True)
    # Submitted while the first batch waits for the lock: counted from its own submission,
    # it has no wait left once that batch gives up.
    reactor.callLater(0.25, lambda: queued.append(database.runInteraction("insert", insert("b"), write=True)))
    queued: list[Deferred[str]] = []
    with pytest.raises(MetadataBusy):
        await first
    with pytest.raises(MetadataBusy):
        await queued[0]
    assert time.monotonic() - started < 0.25 + 0.3 + 2.0


@pytest_twisted.ensureDeferred
async def test_lookups_by_key_are_answered_while_another_process_holds_the_write_lock(
    db_path: str, locked: sqlite3.Connection
) -> None:
    store = MetadataStore(Database(SqliteEngine(db_path, busy_timeout=0.2), reactor))
    await store.start()
    try:
        await store.sync_stores([("one", 0)])
        reservation = await store.reserve(3, lambda usage: "one")
        assert reservation is not None
        record = ObjectRecord(bucket="b", key="k", store="one", location="b/k", size=3, etag="e" * 32,
                              content_type="binary/octet-stream", last_modified_ms=1, headers={}, user_metadata={})
        await store.commit_object(reservation.id, record)
        locked.execute("BEGIN IMMEDIATE")

        assert await store.get_object("b", "k") == record
        with pytest.raises(MetadataBusy):
            await store.reserve(3, lambda usage: "one")
        with pytest.raises(MetadataBusy):
            await store.delete_object("b", "k")
    finally:
        store.database.close()


@pytest_twisted.ensureDeferred
async def test_reservations_commit_unsynced_and_objects_synced(db_path: str) -> None:
    engine = TracingEngine(db_path)
    store = MetadataStore(Database(engine, reactor))
    await store.start()
    try:
        await store.sync_stores([("one", 0)])
        synced: dict[str, str] = {}

        async def traced(name: str, operation: Deferred[Any]) -> Any:
            engine.statements.clear()
            result = await operation
            synced[name] = next(s for s in engine.statements if s.startswith("PRAGMA synchronous="))
            return result

        reservation = await traced("reserve", store.reserve(3, lambda usage: "one"))
        assert reservation is not None
        record = ObjectRecord(bucket="b", key="k", store="one", location="b/k", size=3, etag="e" * 32,
                              content_type="binary/octet-stream", last_modified_ms=1, headers={}, user_metadata={})
        await traced("commit_object", store.commit_object(reservation.id, record))
        await traced("release", store.release(reservation.id))
        await traced("delete_object", store.delete_object("b", "k"))
    finally:
        store.database.close()
    assert synced == {
        "reserve": "PRAGMA synchronous=NORMAL",
        "commit_object": "PRAGMA synchronous=FULL",
        "release": "PRAGMA synchronous=NORMAL",
        "delete_object": "PRAGMA synchronous=FULL",
    }
