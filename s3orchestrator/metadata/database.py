"""One transaction API over the SQL engines, on a thread-pooled DB-API connection (adbapi).

Everything that differs between SQLite and PostgreSQL lives in an engine
(``engines.BaseEngine`` subclasses: ``SqliteEngine``, ``PostgresEngine``):
how to connect, how a transaction begins, the parameter style, the bytewise key
collation and the row locks a write transaction takes. SQL elsewhere is written
once, portably, with ``?`` placeholders.
"""

from __future__ import annotations

import random
from typing import Any, Callable, Sequence, TypeVar

from twisted.enterprise import adbapi
from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from s3orchestrator.metadata.availability import MetadataAvailability
from s3orchestrator.metadata.engines.base import BaseEngine
from s3orchestrator.metadata.group_commit import GroupCommitter
from s3orchestrator.metadata.interface import MetadataBusy, MetadataUnavailable

_T = TypeVar("_T")

# Interactions slower than this are logged: they hold the database's write lock.
SLOW_INTERACTION_SECONDS = 1.0
# An interaction aborted by a deadlock or a serialization failure runs again, whole, up to
# this many times in all, after a random pause of up to RETRY_DELAY * 2**(attempt - 1)
# seconds (random: two transactions that deadlocked must not meet again in step).
RETRY_ATTEMPTS = 4
RETRY_DELAY = 0.01


class Transaction:
    """The cursor an interaction works with: ``?`` placeholders on every engine.

    ``token`` is a random number drawn per interaction, to spread what concurrent
    interactions write over several rows (the usage counter shards)."""

    def __init__(self, engine: BaseEngine, cursor: Any, desc: str, token: int | None = None) -> None:
        self.engine = engine
        self.desc = desc
        self._cursor = cursor
        self.token = token if token is not None else random.getrandbits(30)

    def execute(self, sql: str, args: Sequence[Any] = ()) -> None:
        """Run one statement."""
        self._cursor.execute(self.engine.convert_param_style(sql), tuple(args))

    def query(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run one statement and return all its rows."""
        self.execute(sql, args)
        return list(self._cursor.fetchall())

    def query_one(self, sql: str, args: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        """Run one statement and return its first row, or None."""
        rows = self.query(sql, args)
        return rows[0] if rows else None

    @property
    def rowcount(self) -> int:
        """Rows changed by the last INSERT, UPDATE or DELETE."""
        return int(self._cursor.rowcount)


class Database:
    """A connection pool of one engine; every interaction runs in one transaction.

    ``runInteraction`` runs ``func(txn, *args)`` in the pool's thread inside a
    transaction that commits when ``func`` returns and rolls back when it raises;
    write interactions waiting at the same time share one commit (group_commit).
    An engine error saying the database is busy (locked by another connection
    for longer than the engine's ``busy_timeout``) reaches callers as MetadataBusy,
    as does a deadlock or serialization failure that outlasted its retries
    (``RETRY_ATTEMPTS``), and one saying the database cannot be used at all as
    MetadataUnavailable. ``rng`` draws the retry pauses; ``availability`` hears
    how every interaction ended (degraded mode).
    """

    _log = Logger()

    def __init__(
        self, engine: BaseEngine, reactor: Any, rng: random.Random | None = None,
        availability: MetadataAvailability | None = None,
    ) -> None:
        self.engine = engine
        self.availability = availability
        self.reactor = reactor
        self._rng = rng if rng is not None else random.Random()
        self._pool: adbapi.ConnectionPool | None = None
        self._writer: GroupCommitter | None = None
        # Opened by open_point_reader, if the engine has one (see point_read).
        self._point_reader: Any | None = None

    def map_error(self, error: Exception) -> Exception:
        """What callers see of an engine error: MetadataBusy for a busy database,
        MetadataUnavailable for one that cannot be used at all.

        Retryable errors pass unchanged: ``runInteraction`` retries them first."""
        mapped: Exception
        if self.engine.is_busy(error):
            mapped = MetadataBusy(str(error))
        elif self.engine.is_unavailable(error):
            mapped = MetadataUnavailable(str(error))
        else:
            return error
        mapped.__cause__ = error
        return mapped

    def _observed(self, result: Deferred[_T]) -> Deferred[_T]:
        """``result``, its outcome told to ``availability``."""
        availability = self.availability
        if availability is None:
            return result

        def succeeded(value: _T) -> _T:
            availability.record_success()
            return value

        def failed(failure: Failure) -> Failure:
            if failure.value is not None:
                availability.record_failure(failure.value)
            return failure

        return result.addCallbacks(succeeded, failed)

    def start(self) -> None:
        """Create the connection pool (connections open on first use)."""
        if self._pool is not None:
            return
        self.engine.prepare()
        args, kwargs = self.engine.pool_arguments()
        self._pool = adbapi.ConnectionPool(
            self.engine.module,
            *args,
            cp_reactor=self.reactor,
            cp_openfun=self.engine.on_new_connection,
            **kwargs,
        )
        pool = self._pool
        self._writer = GroupCommitter(
            self.engine,
            lambda batch: pool.runWithConnection(lambda connection: batch(connection.cursor())),
            self.reactor.seconds,
            self.engine.busy_timeout,
            self.map_error,
            slow_seconds=SLOW_INTERACTION_SECONDS,
        )

    def close(self) -> None:
        """Wait for running interactions, then close every connection. Idempotent."""
        pool, self._pool = self._pool, None
        self._writer = None
        if pool is not None:
            pool.close()
        reader, self._point_reader = self._point_reader, None
        if reader is not None:
            reader.close()

    def runInteraction(
        self, desc: str, func: Callable[..., _T], *args: Any, write: bool = False, durable: bool = True
    ) -> Deferred[_T]:
        """Run ``func(txn, *args)`` in one transaction in the database thread.

        ``desc`` names the interaction in logs. ``write=True`` takes the write
        lock when the transaction begins, so what it reads cannot change before
        it writes (and SQLite cannot fail to upgrade a read lock mid-transaction);
        write interactions queued together share one transaction, each in its
        own savepoint, and one commit (see group_commit), durable unless every
        one of them says ``durable=False`` (state a restart discards anyway).
        An interaction the engine aborted for a deadlock or a serialization
        failure runs again, whole, after a short random pause (``func`` must be
        a function of its arguments and what it reads, as any transaction is).
        """
        if self._pool is None or self._writer is None:
            raise RuntimeError("database not started")
        result: Deferred[_T] = Deferred()
        self._attempt(result, 1, desc, func, args, write, durable)
        return self._observed(result)

    def _attempt(
        self, result: Deferred[_T], attempt: int, desc: str, func: Callable[..., _T], args: tuple[Any, ...],
        write: bool, durable: bool,
    ) -> None:
        def retry_or_fail(failure: Failure) -> None:
            error = failure.value
            if not (isinstance(error, Exception) and self.engine.is_retryable(error)):
                result.errback(failure)
            elif attempt >= RETRY_ATTEMPTS or self._pool is None:
                busy = MetadataBusy(f"{desc}: gave up after {attempt} attempts: {error}")
                busy.__cause__ = error
                result.errback(Failure(busy))
            else:
                self._log.info("Retrying database interaction {desc} ({error})", desc=desc, error=str(error))
                delay = self._rng.uniform(0, RETRY_DELAY * 2 ** (attempt - 1))
                self.reactor.callLater(delay, self._attempt, result, attempt + 1, desc, func, args, write, durable)

        try:
            once = self._run_once(desc, func, args, write, durable)
        except Exception:
            result.errback(Failure())
            return
        once.addCallbacks(result.callback, retry_or_fail)

    def _run_once(
        self, desc: str, func: Callable[..., _T], args: tuple[Any, ...], write: bool, durable: bool
    ) -> Deferred[_T]:
        if self._pool is None or self._writer is None:
            raise RuntimeError("database not started")
        if write:
            return self._writer.submit(
                desc, lambda cursor: func(Transaction(self.engine, cursor, desc), *args), durable
            )
        started = self.reactor.seconds()

        def interaction(cursor: Any) -> _T:
            self.engine.begin_with(cursor, False, self.engine.busy_timeout)
            return func(Transaction(self.engine, cursor, desc), *args)

        def log_slow(result: _T) -> _T:
            duration = self.reactor.seconds() - started
            if duration > SLOW_INTERACTION_SECONDS:
                self._log.warn(
                    "Slow database interaction {desc}: {duration:.3f}s", desc=desc, duration=duration
                )
            return result

        d: Deferred[_T] = self._pool.runInteraction(interaction)
        d.addErrback(self._map_failure)
        d.addBoth(log_slow)
        return d

    def _map_failure(self, failure: Failure) -> Failure:
        mapped = self.map_error(failure.value) if isinstance(failure.value, Exception) else failure.value
        return failure if mapped is failure.value else Failure(mapped)

    def open_point_reader(self) -> None:
        """Open the engine's point reader, if it has one (once the schema exists)."""
        if self._pool is None:
            raise RuntimeError("database not started")
        if self._point_reader is None:
            self._point_reader = self.engine.connect_point_reader()

    def point_read(self, desc: str, func: Callable[..., _T], *args: Any) -> Deferred[_T]:
        """Run the read-only ``func(txn, *args)``, a lookup of a few rows by key, in one
        transaction: on the calling (reactor) thread with the engine's point reader
        if it has one open (SQLite: a lookup takes microseconds, less than the trip
        to the pool's thread and back), else as ``runInteraction``. The Deferred has
        fired when this returns if the read ran here.
        """
        if self._pool is None:
            raise RuntimeError("database not started")
        reader = self._point_reader
        if reader is None:
            return self.runInteraction(desc, func, *args)
        started = self.reactor.seconds()
        try:
            cursor = reader.cursor()
            try:
                self.engine.begin(cursor, write=False)
                try:
                    result = func(Transaction(self.engine, cursor, desc), *args)
                finally:
                    if reader.in_transaction:
                        cursor.execute("ROLLBACK")  # nothing was written: just end the read
            finally:
                cursor.close()
        except Exception as error:
            mapped = self.map_error(error)
            return self._observed(fail() if mapped is error else fail(mapped))
        duration = self.reactor.seconds() - started
        if duration > SLOW_INTERACTION_SECONDS:
            self._log.warn("Slow database read {desc}: {duration:.3f}s", desc=desc, duration=duration)
        return self._observed(succeed(result))

    def runQuery(self, desc: str, sql: str, args: Sequence[Any] = ()) -> Deferred[list[tuple[Any, ...]]]:
        """Run one read-only statement in its own transaction; return its rows."""
        return self.runInteraction(desc, lambda txn: txn.query(sql, args))
