"""A request body's running digests (MD5, SHA-256, checksums), fed in order, off the reactor for a large body.

hashlib and zlib release the GIL while they hash a large buffer, so a large upload's
digests can run on another core while the reactor thread receives and stores its
bytes. ``ThreadedDigests`` queues the chunks and has one reactor thread-pool job at a
time hash them in arrival order; while more than ``BACKLOG_BYTES`` wait, it asks its
owner (``on_backlog(True)``) to pause the client, and lets it resume (``False``) once
half of that is left. A small body is hashed inline (``InlineDigests``): handing it to a
thread would cost more than hashing it.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any, Callable, Protocol, Sequence

from twisted.internet.defer import Deferred, succeed
from twisted.python.failure import Failure

# Bodies at least this long are hashed in a worker thread.
THREAD_MIN_BYTES = 1024 * 1024
# Bytes queued for hashing beyond which the client is paused.
BACKLOG_BYTES = 8 * 1024 * 1024


class Updatable(Protocol):
    """A running digest."""

    def update(self, data: bytes, /) -> None: ...


class ThreadRunner(Protocol):
    """Where hashing runs and reports back from (the reactor: its thread pool and callFromThread)."""

    def callInThread(self, callable: Callable[..., Any], *args: Any) -> None: ...

    def callFromThread(self, callable: Callable[..., Any], *args: Any) -> None: ...


class InlineDigests:
    """Digests updated at once, in the caller's thread."""

    def __init__(self, digests: Sequence[Updatable]) -> None:
        self._digests = digests

    def update(self, data: bytes) -> None:
        for digest in self._digests:
            digest.update(data)

    def done(self) -> Deferred[None]:
        """Fires once every byte given is hashed (now)."""
        return succeed(None)


class ThreadedDigests:
    """Digests updated in order by one worker-thread job at a time."""

    def __init__(self, digests: Sequence[Updatable], runner: ThreadRunner, on_backlog: Callable[[bool], None]) -> None:
        self._digests = digests
        self._runner = runner
        self._on_backlog = on_backlog
        # Shared with the worker thread, under the lock: chunks not taken yet, whether a job runs.
        self._lock = threading.Lock()
        self._chunks: deque[bytes] = deque()
        self._running = False
        # Reactor thread only.
        self._queued = 0
        self._backlogged = False
        self._failure: Failure | None = None
        self._waiters: list[Deferred[None]] = []

    def update(self, data: bytes) -> None:
        self._queued += len(data)
        with self._lock:
            self._chunks.append(data)
            start, self._running = not self._running, True
        if start:
            self._runner.callInThread(self._hash)
        if self._queued > BACKLOG_BYTES and not self._backlogged:
            self._backlogged = True
            self._on_backlog(True)

    def done(self) -> Deferred[None]:
        """Fires once every byte given so far is hashed (errbacks if hashing failed)."""
        waiter: Deferred[None] = Deferred()
        self._waiters.append(waiter)
        self._settle()
        return waiter

    def _hash(self) -> None:
        # In a worker thread: hash what is queued, in order, until nothing is.
        while True:
            with self._lock:
                if not self._chunks:
                    self._running = False
                    return
                chunks = list(self._chunks)
                self._chunks.clear()
            try:
                for chunk in chunks:
                    for digest in self._digests:
                        digest.update(chunk)
            except Exception:
                self._runner.callFromThread(self._failed, Failure())
                with self._lock:
                    self._chunks.clear()
                    self._running = False
                return
            self._runner.callFromThread(self._hashed, sum(len(chunk) for chunk in chunks))

    def _hashed(self, count: int) -> None:
        self._queued -= count
        if self._backlogged and self._queued <= BACKLOG_BYTES // 2:
            self._backlogged = False
            self._on_backlog(False)
        self._settle()

    def _failed(self, failure: Failure) -> None:
        self._failure = failure
        self._queued = 0
        self._settle()

    def _settle(self) -> None:
        if self._queued and self._failure is None:
            return
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if self._failure is None:
                waiter.callback(None)
            else:
                waiter.errback(self._failure)
