"""Reading an object that has several copies: fail over between them, even mid-stream.

``FailoverReader`` opens the copies of one object in the order given until one
opens as the object (right length, no conflicting ETag, see ``etags_conflict``); if
that copy's store dies mid-stream, it opens the next copy with a Range for the
bytes not yet delivered and keeps writing into the same consumer, which sees
one body. It registers itself on the consumer as the (push) producer for the
whole body and forwards pause/resume to whichever store reader is current;
a store reader that is a pull producer (a directory store's file) is pulled
one chunk per reactor turn while the consumer is not paused. A file's bytes
may go to the consumer by ``send_file`` (see IFileConsumer) instead of writes.

``order_copies`` puts copies in the configured ``read_order``, those on stores over a
monthly read cap last.
"""

from __future__ import annotations

from typing import Any, Callable, Container, Mapping, Sequence

from twisted.internet.defer import CancelledError, Deferred, maybeDeferred
from twisted.internet.interfaces import IConsumer, IDelayedCall, IProducer, IPushProducer, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from s3orchestrator.stores.interface import (
    IFileConsumer,
    IObjectReader,
    ObjectMissing,
    StoreMisconfigured,
    StoreUnavailable,
    file_sender,
)

__all__ = ["CopyMismatch", "FailoverReader", "etags_conflict", "order_copies"]

Copy = tuple[str, str]  # (store name, location)
ByteRange = tuple[int, int]  # inclusive (first, last)
OpenCopy = Callable[[str, str, ByteRange | None], Deferred[IObjectReader]]
ReportFailure = Callable[[str, Exception], object]

# What makes a copy unusable (rather than the read itself wrong): try the next one.
_COPY_ERRORS = (StoreUnavailable, StoreMisconfigured, ObjectMissing)

_log = Logger()


class CopyMismatch(ObjectMissing):
    """A store holds something else at a copy's location (another length or ETag): as good as missing."""


def order_copies(
    copies: Sequence[Copy],
    read_order: str,
    healthy: Container[str],
    failures: Mapping[str, int],
    latency: Mapping[str, float],
    capped: Container[str] = frozenset(),
) -> list[Copy]:
    """``copies`` in the order to try them.

    "config": as given (the caller passes them in config order); "health": healthy
    stores first, then fewer consecutive failures; "latency": healthy stores first,
    then lowest measured latency (stores never measured after the measured ones).
    Ties keep the given order. Copies on ``capped`` stores (over a monthly read cap)
    come after all the others, in that order among themselves.
    """
    if read_order == "config":
        ordered = list(copies)
    elif read_order == "health":
        ordered = sorted(copies, key=lambda copy: (copy[0] not in healthy, failures.get(copy[0], 0)))
    elif read_order == "latency":
        ordered = sorted(copies, key=lambda copy: (
            copy[0] not in healthy, copy[0] not in latency, latency.get(copy[0], 0.0)
        ))
    else:
        raise ValueError(f"unknown read_order {read_order!r}")
    return sorted(ordered, key=lambda copy: copy[0] in capped)


def _unquoted(etag: str) -> str:
    if etag.startswith("W/"):
        etag = etag[2:]
    return etag.strip('"').lower()


def _layout(etag: str) -> str:
    """The part count of a multipart ETag ("md5-N"), "" for a plain one."""
    _, dash, parts = etag.rpartition("-")
    return parts if dash else ""


def etags_conflict(expected: str, reported: str) -> bool:
    """True if a store's ETag shows it holds another object than ``expected`` names.

    Only ETags of one layout (both plain, or both multipart of as many parts) are
    compared: a store that re-laid the same bytes out (an upstream CopyObject of a
    multipart object, a copy written by a single PUT) reports a different ETag for
    them, which proves nothing.
    """
    expected, reported = _unquoted(expected), _unquoted(reported)
    return _layout(expected) == _layout(reported) and expected != reported


@implementer(IFileConsumer)
class _Leg:
    """The consumer one store reader streams into: counts its bytes and holds its producer."""

    def __init__(self, owner: FailoverReader, store: str) -> None:
        self.owner = owner
        self.store = store
        self.producer: Any = None
        self.streaming = False

    def write(self, data: bytes) -> None:
        self.owner._write(self, data)

    def send_file(self, fd: int, offset: int | None, count: int) -> int | None:
        return self.owner._send_file(self, fd, offset, count)

    def registerProducer(self, producer: IProducer, streaming: bool) -> None:
        self.producer, self.streaming = producer, streaming
        self.owner._leg_registered(self)

    def unregisterProducer(self) -> None:
        self.producer = None
        if self.owner._leg is self:
            self.owner._stop_pulling()


@implementer(IObjectReader, IPushProducer)
class FailoverReader:
    """One object (or ``byte_range`` of it) read from whichever of its copies works.

    ``copies`` are (store, location) pairs in the order to try; ``size`` and ``etag``
    describe the object (``etag`` None: no ETag comparison; see ``etags_conflict``).
    ``open_copy(store, location, byte_range)`` opens a copy (``IObjectStore.open_read``);
    ``failed(store, error)`` hears of every copy given up on (StoreUnavailable,
    StoreMisconfigured, ObjectMissing, CopyMismatch), for health and missing-copy
    bookkeeping. Call ``open()`` before ``stream_to``. When every copy failed, the
    error is the last StoreUnavailable if any store was down (worth retrying), else
    the last other store error, or the last ObjectMissing if every copy was missing.
    ``store`` names the copy being read, ``failovers`` counts mid-stream switches.
    """

    def __init__(
        self,
        copies: Sequence[Copy],
        size: int,
        etag: str | None,
        open_copy: OpenCopy,
        failed: ReportFailure,
        clock: IReactorTime,
        byte_range: ByteRange | None = None,
    ) -> None:
        if byte_range is not None and not 0 <= byte_range[0] <= byte_range[1] < size:
            raise ValueError(f"bad byte range {byte_range!r} for {size} bytes")
        self.length = size if byte_range is None else byte_range[1] - byte_range[0] + 1
        self.store: str | None = None
        self.failovers = 0
        self._copies = list(copies)
        self._next = 0
        self._etag = etag
        self._open_copy = open_copy
        self._failed = failed
        self._clock = clock
        self._range = byte_range
        self._first = 0 if byte_range is None else byte_range[0]
        self._reader: IObjectReader | None = None
        self._leg: _Leg | None = None
        self._opening: Deferred[IObjectReader] | None = None
        self._consumer: IConsumer | None = None
        self._streamed: Deferred[None] | None = None
        self._delivered = 0
        self._paused = False
        self._pull: IDelayedCall | None = None
        self._finished = False
        self._last_error: Exception | None = None
        self._unavailable: StoreUnavailable | None = None
        self._missing: ObjectMissing | None = None

    # -- opening ---------------------------------------------------------------------------

    def open(self) -> Deferred[FailoverReader]:
        """Open the first copy that works; fire with this reader, or fail as the class says."""
        if self._reader is not None or self._finished:
            raise RuntimeError("open called twice or after cancel")

        def opened(reader: IObjectReader) -> FailoverReader:
            self._reader = reader
            return self

        return Deferred.fromCoroutine(self._open_next(0)).addCallback(opened)

    async def _open_next(self, offset: int) -> IObjectReader:
        """The next copy that opens as the bytes from ``offset`` (of the wanted span) on."""
        while self._next < len(self._copies) and not self._finished:
            store, location = self._copies[self._next]
            self._next += 1
            whole = offset == 0 and self._range is None
            byte_range = None if whole else (self._first + offset, self._first + self.length - 1)
            self._opening = maybeDeferred(self._open_copy, store, location, byte_range)
            try:
                reader = await self._opening
            except _COPY_ERRORS as error:
                self._give_up(store, error)
                continue
            finally:
                self._opening = None
            problem = self._mismatch(reader, self.length - offset)
            if problem is not None:
                reader.cancel()
                self._give_up(store, CopyMismatch(f"store {store}: {location!r} {problem}"))
                continue
            self.store = store
            return reader
        if self._finished:  # cancelled by a ``failed`` callback
            raise CancelledError("reader was cancelled")
        raise self._unavailable or self._last_error or self._missing or ObjectMissing("the object has no copies")

    def _mismatch(self, reader: IObjectReader, length: int) -> str | None:
        if reader.length != length:
            return f"opened with {reader.length} bytes where {length} were expected"
        # Optional on store readers: an upstream's ETag header; a directory has none.
        etag = getattr(reader, "etag", None)
        if self._etag is not None and etag is not None and etags_conflict(self._etag, etag):
            return f"has ETag {etag}, not the object's {self._etag}"
        return None

    def _give_up(self, store: str, error: Exception) -> None:
        if isinstance(error, ObjectMissing):
            self._missing = error
        elif isinstance(error, StoreUnavailable):
            self._unavailable = error
        else:
            self._last_error = error
        _log.warn(
            "Copy on store {store} unusable ({error_type}: {error}); trying the next copy if any",
            store=store, error_type=type(error).__name__, error=str(error),
        )
        try:
            self._failed(store, error)
        except Exception:
            _log.failure("Reporting a failed copy on store {store} failed", store=store)

    # -- streaming -------------------------------------------------------------------------

    def stream_to(self, consumer: IConsumer) -> Deferred[None]:
        """Register on ``consumer`` and write the bytes, from one copy after another if need be."""
        if self._streamed is not None:
            raise RuntimeError("stream_to called twice")
        self._streamed = Deferred()
        streamed = self._streamed
        if self._finished or self._reader is None:
            streamed.errback(CancelledError("reader was cancelled") if self._finished
                             else RuntimeError("stream_to before open"))
            return streamed
        self._consumer = consumer
        consumer.registerProducer(self, True)
        self._stream(self._reader)
        return streamed

    def _stream(self, reader: IObjectReader) -> None:
        assert self.store is not None
        leg = self._leg = _Leg(self, self.store)
        reader.stream_to(leg).addCallbacks(
            self._leg_done, self._leg_failed, callbackArgs=(leg,), errbackArgs=(leg,)
        )

    def _write(self, leg: _Leg, data: bytes) -> None:
        if leg is not self._leg or self._finished or self._consumer is None:
            return  # a reader given up on: its bytes are not part of the body
        self._delivered += len(data)
        self._consumer.write(data)

    def _send_file(self, leg: _Leg, fd: int, offset: int | None, count: int) -> int | None:
        if leg is not self._leg or self._finished or self._consumer is None:
            return None  # written (and dropped) instead
        send = file_sender(self._consumer)
        sent = send(fd, offset, count) if send is not None else None
        if sent:
            self._delivered += sent
        return sent

    def _leg_done(self, _: None, leg: _Leg) -> None:
        if leg is not self._leg or self._finished:
            return
        if self._delivered != self.length:
            self._leg_failed(Failure(StoreUnavailable(
                f"store {leg.store}: stream ended after {self._delivered} of {self.length} bytes"
            )), leg)
            return
        self._finish(None, unregister=True)

    def _leg_failed(self, failure: Failure, leg: _Leg) -> None:
        if leg is not self._leg or self._finished:
            return
        self._leg = self._reader = None
        self._stop_pulling()
        if not failure.check(*_COPY_ERRORS):
            # Not the store's fault (the consumer failed, the read was cancelled).
            self._finish(failure, unregister=True)
            return
        error = failure.value
        assert isinstance(error, Exception)
        self._give_up(leg.store, error)
        if self._delivered == self.length:
            self._finish(None, unregister=True)  # every byte was delivered before the store failed
            return
        self.failovers += 1
        offset = self._delivered
        Deferred.fromCoroutine(self._open_next(offset)).addCallbacks(self._resumed, self._resume_failed)

    def _resumed(self, reader: IObjectReader) -> None:
        _log.info(
            "Resumed the read from store {store} at byte {offset} of {length}",
            store=self.store, offset=self._delivered, length=self.length,
        )
        self._reader = reader
        self._stream(reader)

    def _resume_failed(self, failure: Failure) -> None:
        if not self._finished:
            self._finish(failure, unregister=True)

    # -- IPushProducer (driven by the consumer) ---------------------------------------------

    def pauseProducing(self) -> None:
        self._paused = True
        leg = self._leg
        if leg is not None and leg.producer is not None and leg.streaming:
            leg.producer.pauseProducing()

    def resumeProducing(self) -> None:
        self._paused = False
        leg = self._leg
        if leg is None or leg.producer is None:
            return
        if leg.streaming:
            leg.producer.resumeProducing()
        else:
            self._schedule_pull()

    def stopProducing(self) -> None:
        """The consumer is gone: stop the current read; ``stream_to`` errbacks."""
        self._finish(Failure(CancelledError("consumer stopped")), unregister=False)

    def cancel(self) -> None:
        """Stop opening or streaming and release the current copy; opens no further copy."""
        self._finish(Failure(CancelledError("reader was cancelled")), unregister=True)

    def _leg_registered(self, leg: _Leg) -> None:
        if leg is not self._leg or leg.producer is None:
            return
        if leg.streaming:
            if self._paused:
                leg.producer.pauseProducing()
        elif not self._paused:
            self._schedule_pull()

    def _schedule_pull(self) -> None:
        if self._pull is None and not self._finished:
            self._pull = self._clock.callLater(0, self._pull_once)

    def _pull_once(self) -> None:
        # A pull producer writes one chunk per resumeProducing; pulling once per
        # reactor turn lets the consumer's pauseProducing (and other work) in between.
        self._pull = None
        leg = self._leg
        if self._paused or leg is None or leg.producer is None or leg.streaming:
            return
        leg.producer.resumeProducing()
        if leg is self._leg and leg.producer is not None and not self._paused:
            self._schedule_pull()

    def _stop_pulling(self) -> None:
        pull, self._pull = self._pull, None
        if pull is not None and pull.active():
            pull.cancel()

    def _finish(self, failure: Failure | None, unregister: bool) -> None:
        if self._finished:
            return
        self._finished = True
        self._stop_pulling()
        opening, reader, self._leg = self._opening, self._reader, None
        if opening is not None:
            opening.cancel()
        if reader is not None and failure is not None:
            reader.cancel()  # no-op for a reader that already ended
        consumer, self._consumer = self._consumer, None
        if consumer is not None and unregister:
            try:
                consumer.unregisterProducer()
            except Exception:
                _log.failure("Consumer failed to unregister the failover reader")
        streamed = self._streamed
        if streamed is not None and not streamed.called:
            if failure is None:
                streamed.callback(None)
            else:
                streamed.errback(failure)
