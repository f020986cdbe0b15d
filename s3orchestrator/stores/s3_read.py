"""Relaying an upstream GET response to a consumer, with backpressure both ways.

A large body over plain TCP to a consumer that takes pipes goes by ``splice(2)``
(``s3_splice``) once the bytes Twisted had already read are written; the upstream
connection is closed after it rather than returned to the pool.
"""

from __future__ import annotations

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IConsumer, IDelayedCall, IPushProducer
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.iweb import IResponse
from zope.interface import implementer

from s3orchestrator.stores.interface import IObjectReader, StoreUnavailable
from s3orchestrator.stores.s3_exchange import Exchange, discard_body
from s3orchestrator.stores.s3_http import body_transport
from s3orchestrator.stores.s3_splice import SPLICE_MIN_BYTES, BodySplice, start_splice

_log = Logger()


class _RelayProtocol(Protocol):
    """Hands a response body to its S3Reader."""

    def __init__(self, reader: S3Reader) -> None:
        self._reader = reader

    def connectionMade(self) -> None:
        self._reader._connected(body_transport(self))

    def dataReceived(self, data: bytes) -> None:
        self._reader._received(data)

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self._reader._ended(reason)


@implementer(IObjectReader, IPushProducer)
class S3Reader:
    """An upstream GET response, relayed to a consumer as a push producer.

    The consumer's pause/resume/stop reach the upstream socket (through the
    response's transport, or the splice moving the body), so a slow client slows
    the upstream and a client that goes away closes the upstream connection.
    """

    def __init__(self, response: IResponse, length: int, exchange: Exchange) -> None:
        self.length = length
        etag = response.headers.getRawHeaders(b"etag")
        # The upstream's ETag of what it opened, so a reader of several copies can tell them apart.
        self.etag: str | None = etag[0].decode("latin-1") if etag else None
        self._response = response
        self._exchange = exchange
        self._consumer: IConsumer | None = None
        self._transport: IPushProducer | None = None
        self._splice: BodySplice | None = None
        self._splice_call: IDelayedCall | None = None
        self._streamed: Deferred[None] | None = None
        self._paused = False
        self._finished = False
        self._failure: Failure | None = None
        self._received_bytes = 0
        exchange.on_silence = self._silent
        exchange.watchdog.arm()  # until stream_to or cancel: a reader nobody reads is dropped

    def stream_to(self, consumer: IConsumer) -> Deferred[None]:
        """Register on ``consumer`` and relay the body; fire once the last byte is written."""
        if self._streamed is not None:
            raise RuntimeError("stream_to called twice")
        self._streamed = Deferred()
        streamed = self._streamed
        if self._finished:
            streamed.errback(self._failure or Failure(CancelledError("reader was cancelled")))
            return streamed
        self._consumer = consumer
        consumer.registerProducer(self, True)
        self._response.deliverBody(_RelayProtocol(self))
        # deliverBody resumes the transport; the consumer may have paused us already.
        if self._paused and self._transport is not None and not self._finished:
            self._transport.pauseProducing()
        if not self._finished and self.length - self._received_bytes >= SPLICE_MIN_BYTES:
            # Not from here: this may run inside the HTTP parser's dataReceived, which
            # still holds body bytes of the read that ended the head. At the next turn,
            # every byte Twisted read has been written.
            self._splice_call = self._exchange.store.reactor.callLater(0, self._start_splice)
        return streamed

    # -- IPushProducer (driven by the consumer) --

    def pauseProducing(self) -> None:
        self._paused = True
        self._exchange.watchdog.disarm()  # the consumer's pace, not the upstream's fault
        if self._splice is not None:
            self._splice.pause()
        elif self._transport is not None:
            self._transport.pauseProducing()

    def resumeProducing(self) -> None:
        self._paused = False
        if not self._finished:
            self._exchange.watchdog.arm()
        if self._splice is not None:
            self._splice.resume()
        elif self._transport is not None:
            self._transport.resumeProducing()

    def stopProducing(self) -> None:
        """The consumer is gone: close the upstream connection; ``stream_to`` errbacks."""
        self._finish(Failure(CancelledError("consumer stopped")), unregister=False)

    def cancel(self) -> None:
        """Stop streaming and close the upstream connection; ``stream_to`` errbacks."""
        self._finish(Failure(CancelledError("reader was cancelled")), unregister=True)

    def _silent(self) -> None:
        failure = Failure(self._exchange.timeout_error())
        self._exchange.log(self._response.code, failure.value)
        self._finish(failure, unregister=True)

    # -- from the response body --

    def _connected(self, transport: IPushProducer | None) -> None:
        self._transport = transport

    def _received(self, data: bytes) -> None:
        if self._finished or self._consumer is None:
            return
        self._exchange.watchdog.progress()
        # Never more than ``length``: Twisted's client stops a body at its Content-Length.
        self._received_bytes += len(data)
        try:
            self._consumer.write(data)
        except Exception:
            self._finish(Failure(), unregister=False)

    def _start_splice(self) -> None:
        self._splice_call = None
        if not self._finished and self._consumer is not None:
            self._splice = start_splice(
                self._exchange.store.reactor, self._transport, self.length - self._received_bytes, self._consumer,
                self._spliced, self._splice_ended, self._paused,
            )

    def _spliced(self, count: int) -> None:
        self._exchange.watchdog.progress()
        self._received_bytes += count

    def _splice_ended(self, failure: Failure | None) -> None:
        """The splice delivered the body (None) or failed: close the upstream connection
        (its parser never saw the bytes), then end as a relayed body would."""
        self._splice = None
        transport, self._transport = self._transport, None
        if transport is not None:
            transport.stopProducing()
        if failure is None:
            self._ended(Failure(ResponseDone()))
        elif failure.check(ConnectionDone, ConnectionLost):
            self._ended(failure)
        else:
            self._finish(failure, unregister=False)  # the consumer failed

    def _ended(self, reason: Failure) -> None:
        self._transport = None
        if self._finished:
            return
        self._cancel_splice_call()
        exchange = self._exchange
        if reason.check(ResponseDone) and self._received_bytes == self.length:
            exchange.watchdog.disarm()
            exchange.log(self._response.code, size=self._received_bytes)
            self._finished = True
            self._unregister()
            if self._streamed is not None and not self._streamed.called:
                self._streamed.callback(None)
            return
        if exchange.watchdog.fired:
            failure = Failure(exchange.timeout_error())
        else:
            failure = Failure(StoreUnavailable(
                f"store {exchange.store.name}: GET ended after {self._received_bytes}"
                f" of {self.length} bytes ({type(reason.value).__name__})"
            ))
        exchange.log(self._response.code, failure.value)
        self._finish(failure, unregister=True)

    def _finish(self, failure: Failure, unregister: bool) -> None:
        if self._finished:
            return
        self._finished = True
        self._failure = failure
        self._exchange.record(self._response.code, failure.value)  # cancelled (a logged end came first)
        self._exchange.watchdog.disarm()
        self._cancel_splice_call()
        splice, self._splice = self._splice, None
        if splice is not None:
            splice.close()
        transport, self._transport = self._transport, None
        if transport is not None:
            transport.stopProducing()
        elif self._streamed is None:
            discard_body(self._response)  # never streamed: free the connection
        if unregister:
            self._unregister()
        streamed = self._streamed
        if streamed is not None and not streamed.called:
            streamed.errback(failure)

    def _cancel_splice_call(self) -> None:
        call, self._splice_call = self._splice_call, None
        if call is not None and call.active():
            call.cancel()

    def _unregister(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            try:
                consumer.unregisterProducer()
            except Exception:
                _log.failure("Consumer failed to unregister the upstream reader")

