"""A client's request body as an IBodyProducer the store consumes, with backpressure both ways.

Raw body bytes arrive from the channel (``dataReceived``), are decoded and
verified by a ``PayloadVerifier`` and written to whichever consumer the store
gave ``startProducing`` (a file, an upstream HTTP request). When that consumer
pauses us we pause the client's TCP transport; the client stays paused until
the store has started consuming at all.

The last decoded piece of the body is held back until the whole body has been
verified (payload hash, Content-MD5, checksums, chunk signatures): a store
never sees the complete object unless it was sent intact. The orchestration
layer releases it with ``release_tail`` once it holds the object's key lock.
"""

from __future__ import annotations

from collections import deque
from typing import Callable

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IConsumer, IPushProducer
from twisted.python.failure import Failure
from zope.interface import implementer

from s3orchestrator.auth.payload import PayloadVerifier, VerifiedPayload
from s3orchestrator.errors import S3Error
from s3orchestrator.placement.body import RequestBody


class ClientGone(Exception):
    """The client disconnected before its request body was complete."""


@implementer(RequestBody)
class UploadBody:
    """The decoded, verified body of one request, produced into a store.

    ``verified`` fires with the VerifiedPayload once the client has sent the
    whole body and it checks out (all of it but the held-back tail has been
    written to the consumer by then), or errbacks with S3Error / ClientGone.
    """

    def __init__(
        self,
        transport: IPushProducer,
        make_verifier: Callable[[Callable[[bytes], None]], PayloadVerifier],
        on_consumer_ready: Callable[[], None],
    ) -> None:
        self._transport = transport
        self._verifier = make_verifier(self._decoded)
        self._verifier.watch_backlog(self._digests_backlogged)
        self._on_consumer_ready = on_consumer_ready
        self.length: int = self._verifier.decoded_length
        self.received = 0  # decoded payload bytes so far (the request's bytes in)
        self.verified: Deferred[VerifiedPayload] = Deferred()
        self._consumer: IConsumer | None = None
        self._produced: Deferred[None] | None = None
        self._pending: deque[bytes] = deque()
        self._tail: bytes | None = None
        self._tail_released = False
        self._paused_by_consumer = False
        self._paused_by_digests = False
        self._stopped = False
        self._failure: Failure | None = None

    # -- IBodyProducer (called by the store) ---------------------------------

    def startProducing(self, consumer: IConsumer) -> Deferred[None]:
        self._consumer = consumer
        self._produced = Deferred()
        if self._failure is not None:
            self._produced.errback(self._failure)
            return self._produced
        self._flush()
        if not self._paused_by_consumer and not self._paused_by_digests:
            self._transport.resumeProducing()
        self._on_consumer_ready()
        return self._produced

    def pauseProducing(self) -> None:
        self._paused_by_consumer = True
        self._transport.pauseProducing()

    def resumeProducing(self) -> None:
        self._paused_by_consumer = False
        self._flush()
        if not self._paused_by_consumer and not self._paused_by_digests and not self._stopped:
            self._transport.resumeProducing()

    def stopProducing(self) -> None:
        # Per IBodyProducer the startProducing Deferred must not fire after this.
        self._stopped = True
        self._pending.clear()
        self._tail = None

    # -- called by the web layer ---------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        if self._stopped or self._failure is not None:
            return
        try:
            self._verifier.feed(data)
        except S3Error as error:
            self._fail(Failure(error))

    def bodyComplete(self) -> None:
        if self._stopped or self._failure is not None:
            return
        self._verifier.digested().addCallbacks(self._check, self._fail)

    def _check(self, _: None) -> None:
        if self._stopped or self._failure is not None:
            return
        try:
            payload = self._verifier.finish()
        except S3Error as error:
            self._fail(Failure(error))
            return
        self.verified.callback(payload)

    def connectionLost(self, reason: Failure) -> None:
        if not self.verified.called:
            self._fail(Failure(ClientGone(str(reason.value))))

    def abort(self, error: S3Error) -> None:
        """The channel gave up on the rest of the body (client too slow, broken framing)."""
        if not self.verified.called:
            self._fail(Failure(error))

    # -- called by the orchestration layer -----------------------------------

    def release_tail(self) -> None:
        """Let the last verified bytes through; the producer finishes once they are written."""
        self._tail_released = True
        if self._tail is not None:
            self._pending.append(self._tail)
            self._tail = None
        self._flush()

    # -- internals -----------------------------------------------------------

    def _decoded(self, data: bytes) -> None:
        if not data:
            return
        self.received += len(data)
        if self._tail is not None:
            self._pending.append(self._tail)
        self._tail = data
        self._flush()

    def _digests_backlogged(self, backlogged: bool) -> None:
        # The client waits while the worker thread hashing the body is behind.
        self._paused_by_digests = backlogged
        if backlogged:
            self._transport.pauseProducing()
        elif (self._consumer is not None and not self._paused_by_consumer and not self._pending
              and not self._stopped):
            self._transport.resumeProducing()

    def _flush(self) -> None:
        consumer = self._consumer
        if consumer is None or self._stopped:
            return
        while self._pending and not self._paused_by_consumer:
            consumer.write(self._pending.popleft())
        if self._pending:
            self._transport.pauseProducing()
        elif self._tail_released and self._produced is not None and not self._produced.called:
            self._produced.callback(None)

    def _fail(self, failure: Failure) -> None:
        self._failure = failure
        self._pending.clear()
        self._tail = None
        if not self.verified.called:
            self.verified.errback(failure)
        if self._produced is not None and not self._produced.called and not self._stopped:
            self._produced.errback(failure)

