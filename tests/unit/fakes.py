"""Small fakes shared by the unit tests of the web, body and orchestration layers."""

from __future__ import annotations

import hashlib
from typing import Any, Generic, TypeVar

from twisted.internet import reactor
from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IConsumer, IPushProducer
from twisted.internet.task import Clock, deferLater
from twisted.python.failure import Failure
from twisted.web.iweb import IBodyProducer
from zope.interface import implementer

from s3orchestrator.auth.payload import VerifiedPayload
from s3orchestrator.auth.sigv4 import AuthResult, Credential, PayloadMode
from s3orchestrator.placement.body import RequestBody
from s3orchestrator.stores.interface import StoreUnavailable

try:
    from twisted.internet.testing import StringTransport
except ImportError:  # Twisted 22.4
    from twisted.test.proto_helpers import StringTransport  # type: ignore[no-redef]

__all__ = [
    "CollectingConsumer",
    "FakeRequestBody",
    "FlakyStore",
    "Outcome",
    "RecordingStringTransport",
    "RecordingTransport",
    "StringTransport",
    "auth_result",
]

T = TypeVar("T")


def auth_result(mode: PayloadMode = PayloadMode.UNSIGNED, payload_sha256: str | None = None) -> AuthResult:
    """An AuthResult as sigv4 would produce it for a request of ``bkt``."""
    return AuthResult(
        credential=Credential(access_key_id="AKIDEXAMPLE", secret_access_key="secret", bucket="bkt"),
        payload_mode=mode,
        payload_sha256=payload_sha256,
        amz_date="20260101T000000Z",
        scope="20260101/us-east-1/s3/aws4_request",
        signing_key=b"k" * 32,
        seed_signature="0" * 64,
    )


async def advance_until(clock: Clock, done: Deferred[Any]) -> None:
    """Advance ``clock`` until ``done`` fires, a little at a time, letting the database
    thread and the stores answer between steps (on the real reactor)."""
    while not done.called:
        clock.advance(0.1)
        await deferLater(reactor, 0.002, lambda: None)


class Outcome(Generic[T]):
    """Observes a Deferred without blocking: pending, a result, or a Failure (consumed)."""

    def __init__(self, deferred: Deferred[T]) -> None:
        self._results: list[Any] = []
        deferred.addBoth(self._results.append)

    @property
    def pending(self) -> bool:
        return not self._results

    @property
    def succeeded(self) -> bool:
        return bool(self._results) and not isinstance(self._results[0], Failure)

    @property
    def result(self) -> T:
        assert self.succeeded, f"expected a result, got {self._results!r}"
        return self._results[0]

    @property
    def failure(self) -> Failure:
        assert self._results and isinstance(self._results[0], Failure), f"expected a failure, got {self._results!r}"
        return self._results[0]


@implementer(IPushProducer)
class RecordingTransport:
    """The client's transport as UploadBody sees it: records pause/resume, starts paused.

    It starts paused because S3Channel pauses the client when it dispatches a
    request with a body.
    """

    def __init__(self, paused: bool = True) -> None:
        self.paused = paused
        self.calls: list[str] = []

    def pauseProducing(self) -> None:
        self.calls.append("pause")
        self.paused = True

    def resumeProducing(self) -> None:
        self.calls.append("resume")
        self.paused = False

    def stopProducing(self) -> None:
        self.calls.append("stop")


@implementer(IConsumer)
class CollectingConsumer:
    """Collects writes; pauses a registered producer or pulls from a pull producer on demand."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.producer: Any = None
        self.streaming: bool | None = None
        self.unregistered = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        self.producer, self.streaming = producer, streaming

    def unregisterProducer(self) -> None:
        self.producer = None
        self.unregistered = True

    def pull_all(self) -> None:
        """Drive a pull producer until it unregisters."""
        while self.producer is not None:
            self.producer.resumeProducing()

    @property
    def body(self) -> bytes:
        return b"".join(self.writes)


async def stored_bytes(store: Any, location: str) -> bytes:
    """Everything a store (an IObjectStore) holds at ``location``, read whole."""
    reader = await store.open_read(location, None)
    consumer = CollectingConsumer()
    streamed = reader.stream_to(consumer)
    consumer.pull_all()
    await streamed
    return consumer.body


@implementer(RequestBody)
class FakeRequestBody:
    """A request body honouring the RequestBody contract, driven by the test.

    ``startProducing`` writes all but the tail (the second half) at once;
    ``release_tail`` writes the tail and finishes the producer. ``verified``
    has already fired unless ``verified=False``, in which case the test fires or
    fails it (after ``started`` fires, the store holds the head bytes).
    """

    def __init__(self, data: bytes, verified: bool = True) -> None:
        self.data = data
        self.length = len(data)
        split = len(data) // 2
        self.head, self.tail = data[:split], data[split:]
        self.verified: Deferred[VerifiedPayload] = Deferred()
        self.started: Deferred[None] = Deferred()
        self.stopped = False
        self._consumer: IConsumer | None = None
        self._produced: Deferred[None] | None = None
        self._tail_released = False
        if verified:
            self.verify()

    def verify(self) -> None:
        self.verified.callback(
            VerifiedPayload(size=len(self.data), md5_hex=hashlib.md5(self.data).hexdigest(), checksums={})
        )

    def startProducing(self, consumer: IConsumer) -> Deferred[None]:
        self._consumer = consumer
        self._produced = Deferred()
        if self.head:
            consumer.write(self.head)
        self.started.callback(None)
        if self._tail_released:
            self._finish()
        return self._produced

    def release_tail(self) -> None:
        self._tail_released = True
        if self._consumer is not None:
            self._finish()

    def _finish(self) -> None:
        assert self._consumer is not None and self._produced is not None
        if self.stopped:
            return
        if self.tail:
            self._consumer.write(self.tail)
        self._produced.callback(None)

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        self.stopped = True


class RecordingStringTransport(StringTransport):
    """StringTransport that also knows half-closes (StringTransport has no loseWriteConnection)."""

    write_closed = False
    aborted = False

    def loseWriteConnection(self) -> None:
        self.write_closed = True

    def abortConnection(self) -> None:
        self.aborted = True
        super().abortConnection()


@implementer(IBodyProducer)
class FakeBody:
    """A request body for stores: writes ``chunks`` at once; finishes at once unless
    ``hold``, then by finish()/fail(). ``calls`` records pause/resume/stop;
    ``calls_after_failure`` the producer calls made after fail()."""

    def __init__(self, chunks: list[bytes], length: int | None = None, hold: bool = False) -> None:
        self.chunks = chunks
        self.length = sum(map(len, chunks)) if length is None else length
        self.hold = hold
        self.consumer: IConsumer | None = None
        self.produced: Deferred[None] | None = None
        self.stopped = False
        self.calls: list[str] = []
        self.calls_after_failure: list[str] = []
        self.failed = False

    def startProducing(self, consumer: IConsumer) -> Deferred[None]:
        self.consumer = consumer
        for chunk in self.chunks:
            consumer.write(chunk)
        self.produced = Deferred()
        if not self.hold:
            self.produced.callback(None)
        return self.produced

    def write(self, data: bytes) -> None:
        assert self.consumer is not None
        self.consumer.write(data)

    def finish(self) -> None:
        assert self.produced is not None
        self.produced.callback(None)

    def fail(self, error: Exception) -> None:
        assert self.produced is not None
        self.failed = True
        self.produced.errback(error)

    def pauseProducing(self) -> None:
        self._record("pause")

    def resumeProducing(self) -> None:
        self._record("resume")

    def stopProducing(self) -> None:
        self._record("stop")
        self.stopped = True

    def _record(self, name: str) -> None:
        self.calls.append(name)
        if self.failed:
            self.calls_after_failure.append(name + "Producing")


class FlakyStore:
    """An object store (any, wrapped) whose deletes fail as an unreachable store's do
    while ``down`` is set; ``deleted`` lists the locations it deleted."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.down = False
        self.deleted: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def delete(self, location: str) -> Deferred[None]:
        if self.down:
            return fail(StoreUnavailable("connection refused"))
        self.deleted.append(location)
        return self._inner.delete(location)
