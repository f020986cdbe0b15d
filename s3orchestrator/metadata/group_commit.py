"""Group commit: the write interactions waiting at one moment share one transaction and one sync.

A durable commit costs a sync of the log (SQLite's WAL under ``synchronous=FULL``),
which dwarfs the few statements of a metadata write. ``GroupCommitter`` queues write
interactions; one batch at a time runs in the database thread, taking every queued
interaction (up to ``max_batch``), each inside a SAVEPOINT of one write transaction
so that one failing interaction rolls back only itself, then commits once and fires
each caller's Deferred, in submission order, with its own result or error. While a
batch runs, new interactions queue for the next one, so a lone write waits for
nothing and concurrent writes cost one sync per batch instead of one each.

Only portable SQL is used here (SAVEPOINT, RELEASE SAVEPOINT, ROLLBACK TO SAVEPOINT,
COMMIT, ROLLBACK); what differs between engines stays in the engine (``begin_with``:
the lock wait, the durability and the start of the transaction; ``is_busy``). A batch
whose interactions all say ``durable=False`` (quota reservations, which a restart
drops anyway) commits without a sync.
"""

from __future__ import annotations

import collections
from typing import TYPE_CHECKING, Any, Callable, Sequence

import attrs
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

if TYPE_CHECKING:
    from s3orchestrator.metadata.database import BaseEngine

#: At most this many interactions share a transaction (bounds how long one batch holds the lock).
DEFAULT_MAX_BATCH = 128
_SAVEPOINT = "group_commit_interaction"


@attrs.define(eq=False)
class WriteRequest:
    """One queued write interaction: ``func(cursor)`` and the Deferred its caller waits on.

    ``submitted`` (seconds, the committer's clock) bounds how long it may wait for the lock.
    """

    desc: str
    func: Callable[[Any], Any]
    submitted: float
    # False: its commit need not be synced (it changes only what a restart discards).
    durable: bool = True
    deferred: Deferred[Any] = attrs.field(factory=Deferred)
    # Set in the database thread: the result, or a Failure.
    outcome: Any = None


def run_batch(
    engine: BaseEngine,
    cursor: Any,
    requests: Sequence[WriteRequest],
    lock_wait: float,
    map_error: Callable[[Exception], Exception],
) -> int:
    """In the database thread: run ``requests`` in one write transaction, each in its own
    savepoint, and commit once (synced unless no request is ``durable``). Sets each
    request's ``outcome``; returns how many ran (the rest, after a failure that lost
    the whole transaction, were not tried and keep no outcome).

    ``lock_wait`` is how long to wait for the write lock (seconds); ``map_error``
    turns an engine error into what callers see (a busy database into MetadataBusy).
    """
    try:
        engine.begin_with(cursor, True, lock_wait, any(request.durable for request in requests))
    except Exception as error:
        failure = Failure(map_error(error))
        for request in requests:
            request.outcome = failure
        return len(requests)
    ran = 0
    for request in requests:
        ran += 1
        cursor.execute(f"SAVEPOINT {_SAVEPOINT}")
        try:
            request.outcome = request.func(cursor)
        except Exception as error:
            request.outcome = Failure(map_error(error))
            try:
                cursor.execute(f"ROLLBACK TO SAVEPOINT {_SAVEPOINT}")
            except Exception:
                # The engine ended the whole transaction (an I/O error, say): what ran
                # before is lost with it; the rest waits for the next batch.
                _fail_lost(requests[: ran - 1], request.outcome)
                _rollback(cursor)
                return ran
        cursor.execute(f"RELEASE SAVEPOINT {_SAVEPOINT}")
    try:
        cursor.execute("COMMIT")
    except Exception as error:
        failure = Failure(map_error(error))
        _fail_lost(requests, failure)
        _rollback(cursor)
    return ran


def _fail_lost(requests: Sequence[WriteRequest], failure: Failure) -> None:
    for request in requests:
        if not isinstance(request.outcome, Failure):
            request.outcome = failure


def _rollback(cursor: Any) -> None:
    try:
        cursor.execute("ROLLBACK")
    except Exception:
        pass  # no transaction left to roll back


class GroupCommitter:
    """Queues write interactions and runs them in batches, one batch at a time.

    ``run_in_thread(requests_source)`` runs ``requests_source(cursor)`` in the
    database thread on its connection and returns a Deferred of its result;
    ``now`` is the clock ``submitted`` times come from; ``lock_wait`` (seconds)
    bounds the wait of every interaction for the write lock, counted from its
    submission, so a database locked by another process answers within it.
    Batches slower than ``slow_seconds`` are logged.
    """

    _log = Logger()

    def __init__(
        self,
        engine: BaseEngine,
        run_in_thread: Callable[[Callable[[Any], int]], Deferred[int]],
        now: Callable[[], float],
        lock_wait: float,
        map_error: Callable[[Exception], Exception],
        max_batch: int = DEFAULT_MAX_BATCH,
        slow_seconds: float = 1.0,
    ) -> None:
        self._engine = engine
        self._run_in_thread = run_in_thread
        self._now = now
        self._lock_wait = lock_wait
        self._map_error = map_error
        self._max_batch = max_batch
        self._slow_seconds = slow_seconds
        # Appended on the reactor thread, taken in the database thread when a batch
        # starts (deque appends and pops are atomic), so a batch includes what queued
        # while it waited for the thread.
        self._queue: collections.deque[WriteRequest] = collections.deque()
        self._running = False

    def submit(self, desc: str, func: Callable[[Any], Any], durable: bool = True) -> Deferred[Any]:
        """Queue ``func(cursor)`` for the next batch; fires with its result or error."""
        request = WriteRequest(desc, func, self._now(), durable)
        self._queue.append(request)
        if not self._running:
            self._start()
        return request.deferred

    def _start(self) -> None:
        self._running = True
        taken: list[WriteRequest] = []

        def batch(cursor: Any) -> int:
            while self._queue and len(taken) < self._max_batch:
                taken.append(self._queue.popleft())
            oldest = min(request.submitted for request in taken)
            lock_wait = max(0.0, self._lock_wait - (self._now() - oldest))
            return run_batch(self._engine, cursor, taken, lock_wait, self._map_error)

        started = self._now()
        d = self._run_in_thread(batch)
        d.addBoth(self._finished, taken, started)

    def _finished(self, ran: int | Failure, taken: list[WriteRequest], started: float) -> None:
        if isinstance(ran, Failure):
            # The batch could not run at all (no connection), or the pool's own commit or
            # rollback around it failed (the server ended the connection): its requests
            # fail with what the engine makes of that error, and so do those it never got
            # to take (no batch would take them either).
            mapped = self._map_error(ran.value) if isinstance(ran.value, Exception) else ran.value
            failure = ran if mapped is ran.value else Failure(mapped)
            if not taken:
                taken.extend(self._queue)
                self._queue.clear()
            for request in taken:
                request.outcome = failure
            ran = len(taken)
        duration = self._now() - started
        if duration > self._slow_seconds:
            self._log.warn(
                "Slow database write of {count} interaction(s) ({descs}): {duration:.3f}s",
                count=len(taken), descs=", ".join(sorted({r.desc for r in taken})), duration=duration,
            )
        # Not tried (their transaction was lost before their turn): first in the next batch.
        self._queue.extendleft(reversed(taken[ran:]))
        self._running = False
        if self._queue:
            self._start()
        for request in taken[:ran]:
            outcome, request.outcome = request.outcome, None
            if isinstance(outcome, Failure):
                request.deferred.errback(outcome)
            else:
                request.deferred.callback(outcome)

