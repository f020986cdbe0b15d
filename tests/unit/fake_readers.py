"""Fake store readers and copies for the tests of reading with failover."""

from __future__ import annotations

from typing import Any

import attrs
from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.interfaces import IConsumer, IPushProducer
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from zope.interface import implementer

from s3orchestrator.stores.interface import IObjectReader, StoreUnavailable

__all__ = ["TICK", "FakeCopies", "FakeCopy", "FakeReader", "drain", "step"]

TICK = 1.0  # clock time between two writes of a FakeReader


@implementer(IObjectReader, IPushProducer)
class FakeReader:
    """A push-producing store reader writing ``data`` in ``chunk``-byte writes, one per TICK.

    ``offset`` is where ``data`` starts in the object; once the object offset ``fail_at``
    is reached, ``stream_to`` fails with ``error`` (like a store dying mid-stream).
    ``calls`` records pause/resume/stop/cancel.
    """

    def __init__(
        self, clock: Clock, data: bytes, offset: int = 0, chunk: int = 10,
        fail_at: int | None = None, error: Exception | None = None, etag: str | None = None,
    ) -> None:
        self.length = len(data)
        self.etag = etag
        self.calls: list[str] = []
        self._clock = clock
        self._data = data
        self._offset = offset
        self._chunk = chunk
        self._fail_at = fail_at
        self._error = error or StoreUnavailable("connection lost")
        self._sent = 0
        self._paused = False
        self._consumer: IConsumer | None = None
        self._streamed: Deferred[None] | None = None
        self._done = False

    def stream_to(self, consumer: IConsumer) -> Deferred[None]:
        self._streamed = Deferred()
        self._consumer = consumer
        consumer.registerProducer(self, True)
        self._schedule()
        return self._streamed

    def _schedule(self) -> None:
        self._clock.callLater(TICK, self._step)

    def _step(self) -> None:
        if self._paused or self._done or self._consumer is None:
            return
        position = self._offset + self._sent
        if self._fail_at is not None and position >= self._fail_at:
            self._end(Failure(self._error), unregister=True)
            return
        if self._sent == len(self._data):
            self._end(None, unregister=True)
            return
        size = min(self._chunk, len(self._data) - self._sent)
        if self._fail_at is not None:
            size = min(size, self._fail_at - position)
        data = self._data[self._sent:self._sent + size]
        self._sent += size
        try:
            self._consumer.write(data)
        except Exception:  # as the real readers do: the consumer's error ends the stream
            self._end(Failure(), unregister=False)
            return
        self._schedule()

    def pauseProducing(self) -> None:
        self.calls.append("pause")
        self._paused = True

    def resumeProducing(self) -> None:
        self.calls.append("resume")
        self._paused = False
        self._schedule()

    def stopProducing(self) -> None:
        self.calls.append("stop")
        self._end(Failure(CancelledError("consumer stopped")), unregister=False)

    def cancel(self) -> None:
        self.calls.append("cancel")
        self._end(Failure(CancelledError("reader was cancelled")), unregister=True)

    def _end(self, failure: Failure | None, unregister: bool) -> None:
        if self._done:
            return
        self._done = True
        consumer, self._consumer = self._consumer, None
        if consumer is not None and unregister:
            consumer.unregisterProducer()
        if self._streamed is not None:
            if failure is None:
                self._streamed.callback(None)
            else:
                self._streamed.errback(failure)


@attrs.define
class FakeCopy:
    """One store's copy: its bytes, what opening it does, where its stream dies."""

    data: bytes
    etag: str | None = None
    open_error: Exception | None = None  # opening fails with this
    fail_at: int | None = None  # streaming fails at this object offset
    hold: bool = False  # opening stays pending (the test fires or cancels it)


class FakeCopies:
    """``open_copy`` over FakeCopy per store; records opens, readers, pending opens and reports."""

    def __init__(self, clock: Clock, chunk: int = 10, **copies: FakeCopy) -> None:
        self.clock = clock
        self.chunk = chunk
        self.copies = copies
        self.opens: list[tuple[str, str, tuple[int, int] | None]] = []
        self.readers: list[FakeReader] = []
        self.held: list[Deferred[Any]] = []
        self.cancelled_opens = 0
        self.reports: list[tuple[str, str]] = []

    def open(self, store: str, location: str, byte_range: tuple[int, int] | None) -> Deferred[Any]:
        self.opens.append((store, location, byte_range))
        copy = self.copies[store]
        if copy.open_error is not None:
            return fail(copy.open_error)
        first, last = (0, len(copy.data) - 1) if byte_range is None else byte_range
        reader = FakeReader(self.clock, copy.data[first:last + 1], first, self.chunk, copy.fail_at, etag=copy.etag)
        self.readers.append(reader)
        if not copy.hold:
            return succeed(reader)

        def cancelled(_: Deferred[Any]) -> None:
            self.cancelled_opens += 1

        held: Deferred[Any] = Deferred(cancelled)
        self.held.append(held)
        return held

    def failed(self, store: str, error: Exception) -> None:
        self.reports.append((store, type(error).__name__))


def step(clock: Clock) -> None:
    """Let every FakeReader write once (and whatever that sets off at once)."""
    clock.advance(TICK)


def drain(clock: Clock, turns: int = 10_000) -> None:
    """Advance the clock until nothing is scheduled."""
    for _ in range(turns):
        if not clock.getDelayedCalls():
            return
        clock.advance(TICK)
    raise AssertionError("the clock never went quiet")
