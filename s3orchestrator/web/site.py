"""An HTTP/1.1 channel and request that start S3 operations as soon as the headers are in.

Stock ``twisted.web`` reads a whole request body into memory or a temporary file
before anything runs. Object bodies must instead stream to the store, and a
request that will be refused (bad signature, no room) must be answered before
its body is read. So:

- ``S3Channel.allHeadersReceived`` does not answer ``100 Continue`` on its own;
  it pauses the client and hands the request to the handler at once.
- ``S3Request`` keeps no ``content``: body chunks go to the request's
  ``UploadBody``, and ``requestReceived`` only means "body complete".
- A response sent before the body was fully read ends the connection with a
  lingering close (half-close, drain, abort later), so the client reads the
  error instead of a connection reset.
- Every request the channel refuses itself (a malformed or oversized head, a
  head or body sent too slowly) gets an S3 error document through
  ``S3Channel.protocol_error``, never a bare status line or a silent close.
"""

from __future__ import annotations

import io
import random
import time
from typing import TYPE_CHECKING, Any, Protocol, Sequence

from twisted.internet import tcp
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IProtocolNegotiationFactory,
    IPushProducer,
    ITCPTransport,
)
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import http
from twisted.web.http_headers import Headers
from zope.interface import implementer

from s3orchestrator.config import DEFAULT_HEADER_TIMEOUT, DEFAULT_MIN_UPLOAD_RATE, DEFAULT_UPLOAD_RATE_WINDOW
from s3orchestrator.errors import S3Error
from s3orchestrator.sockets import DIRECT_SEND_BYTES, TwistedTransport, read_adaptively
from s3orchestrator.stores.interface import IFileConsumer
from s3orchestrator.web import sendfile
from s3orchestrator.web.errors import error_document
from s3orchestrator.web.request_head import RequestHead, too_large
from s3orchestrator.web.upload_pace import BodyReader

if TYPE_CHECKING:
    from s3orchestrator.web.body import UploadBody

# How long a connection whose response went out early may keep sending before we drop it.
LINGER_SECONDS = 10.0
# Response bytes queued per client connection before its producer is paused (an
# upstream download pauses only once several of its reads wait here).
SEND_BUFFER_BYTES = 2 * 1024 * 1024
# The most handed to a client socket in one send().
SOCKET_WRITE_BYTES = 1024 * 1024
# Pipelined bytes held while a request is answered before the client is paused (Twisted's figure).
HELD_BYTES = 16 * 1024


class IClientTransport(ITCPTransport, IPushProducer):
    """A client connection's transport as the channel sees it once connected: TCP (or TLS
    over TCP, which passes these through) and a push producer. Twisted types
    ``Protocol.transport`` as ``ITransport | None``; this names what the code relies on."""


def new_request_id() -> str:
    """A request id in the shape S3 uses (16 upper-case hex characters): random, not
    secret (``random`` is seeded from the system's entropy, without a system call per id)."""
    return f"{random.getrandbits(64):016X}"


@implementer(IFileConsumer)
class S3Request(http.Request):
    """One S3 request: parsed at header time, body streamed to ``body`` if it has one."""

    defaultContentType = None
    channel: S3Channel
    transport: IClientTransport
    # Set once sendfile failed as unsupported for this response (its bytes are written then).
    sendfile_refused = False

    def __init__(self, channel: S3Channel, queued: object = http._QUEUED_SENTINEL) -> None:
        super().__init__(channel, queued)
        self.request_id = new_request_id()
        self.started = time.monotonic()
        self.raw_path = b""
        self.raw_query = b""
        self.body: UploadBody | None = None
        self.reader: BodyReader | None = None  # what the body pauses and resumes (the client)
        self.body_complete = False
        self.dispatched = False

    def write(self, data: bytes) -> None:
        channel: S3Channel | None = self.channel
        if self.startedWriting or channel is None:
            super().write(data)
            return
        # The first write sends the head: with the body's first bytes, in one send.
        channel.hold_head()
        try:
            super().write(data)
        finally:
            channel.release_head()

    def send_file(self, fd: int, offset: int | None, count: int) -> int | None:
        """Response bytes straight from a file or a pipe (IFileConsumer; see web.sendfile)."""
        return sendfile.send_file(self, fd, offset, count)

    # -- called by S3Channel -------------------------------------------------

    def gotLength(self, length: int | None) -> None:
        # No temp file and no buffer: the body streams to self.body. (``content``
        # must still exist: Twisted closes it when the request is done.)
        self.content = io.BytesIO()

    def headersComplete(self, command: bytes, uri: bytes, version: bytes) -> None:
        """Record the request line (as requestReceived would) before the body arrives."""
        self.method, self.uri, self.clientproto = command, uri, version
        self.path, _, self.raw_query = uri.partition(b"?")
        self.raw_path = self.path
        self.args = {}
        self.responseHeaders.setRawHeaders(b"x-amz-request-id", [self.request_id.encode()])
        self.responseHeaders.setRawHeaders(b"x-amz-id-2", [self.request_id.encode()])

    def handleContentChunk(self, data: bytes) -> None:
        if self.reader is not None:
            self.reader.received(len(data))
        if self.body is not None:
            self.body.dataReceived(data)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        self.body_complete = True
        if self.reader is not None:
            self.reader.done()
        if self.body is not None:
            self.body.bodyComplete()
        if not self.dispatched:
            # A request without a body is dispatched once it is complete.
            self.dispatch(command, path, version)

    def dispatch(self, command: bytes, uri: bytes, version: bytes) -> None:
        """Record the request line and hand the request to the site's handler (once)."""
        self.headersComplete(command, uri, version)
        self.dispatched = True
        self.channel.site.handler.handle(self)

    def abort_body(self, error: S3Error) -> None:
        """Give up on the rest of the body: the handler answers ``error`` (if it reads one)."""
        if self.reader is not None:
            self.reader.done()
        if self.body is not None and not self.body_complete:
            self.body.abort(error)

    def connectionLost(self, reason: Failure) -> None:
        if self.reader is not None:
            self.reader.done()
        if self.body is not None and not self.body_complete:
            self.body.connectionLost(reason)
        super().connectionLost(reason)


class S3Channel(http.HTTPChannel):
    """HTTPChannel that dispatches body-carrying requests at header time."""

    _log = Logger()
    _lingering: IDelayedCall | None = None
    transport: IClientTransport
    site: S3Site  # set by S3Site.buildProtocol
    # The head being read (None while a request is in progress), and its deadline.
    _head: RequestHead | None = None
    _head_deadline: IDelayedCall | None = None
    # Set once the channel refused a request: nothing more is parsed on this connection.
    _refused = False
    # Whether a complete request is being answered, and the bytes (pipelined
    # requests) received meanwhile.
    _answering = False
    _held = b""
    _secure: bool | None = None
    _host: IAddress | None = None
    # The transport when it is a plain socket (small writes are sent at once), else None.
    _plain: tcp.Connection | None = None
    # Response head lines kept for the body's first write (see hold_head).
    _held_head: list[bytes] | None = None

    def getHost(self) -> IAddress:
        """The local address (asked of the socket once per connection, not per request)."""
        if self._host is None:
            self._host = super().getHost()
        return self._host

    def isSecure(self) -> bool:
        """Whether the transport is TLS (adapted once per connection, not per request)."""
        if self._secure is None:
            self._secure = super().isSecure()
        return self._secure

    # -- reading a request head ------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        if self._answering:
            self._hold(data)
            return
        head = self._head
        if head is not None and not head.started and data and not self._refused:
            # The client must send its whole head within server.header_timeout.
            self._head_deadline = self.callLater(self.site.header_timeout, self._head_timed_out)
            try:
                head.first_bytes(data)
            except S3Error as error:
                self.protocol_error(error)
                return
        super().dataReceived(data)

    def lineReceived(self, line: bytes) -> None:
        head = self._head
        if self._refused or head is None:
            return
        reading_request_line = head.target is None
        try:
            line = head.line(line)
        except S3Error as error:
            self.protocol_error(error)
            return
        super().lineReceived(line)
        if reading_request_line and head.target is not None and not self._refused:
            _TwistedChannel.set_request_target(self, head.target)

    def lineLengthExceeded(self, line: bytes) -> None:
        self.protocol_error(too_large())

    def rawDataReceived(self, data: bytes) -> None:
        if self._refused:
            return
        if self._answering:
            self._hold(data)
            return
        super().rawDataReceived(data)

    def _hold(self, data: bytes) -> None:
        # The next request waits until this one is answered, on every Twisted version
        # (22.4 would parse it at once and answer out of order: CVE-2024-41671), and
        # its head is checked (and timed) only then.
        self._held += data
        if len(self._held) > HELD_BYTES:
            self.transport.pauseProducing()

    def _head_timed_out(self) -> None:
        self._head_deadline = None
        self.protocol_error(S3Error("RequestTimeout"))

    def _end_head(self) -> None:
        self._head = None
        if self._head_deadline is not None and self._head_deadline.active():
            self._head_deadline.cancel()
        self._head_deadline = None

    def _respondToBadRequestAndDisconnect(self) -> None:
        # Twisted's (private) hook for each request its own parser refuses; it would
        # answer a bare "400 Bad Request". RequestHead refuses bad heads before Twisted
        # sees them: this catches the rest (a malformed chunked body).
        self.protocol_error(S3Error("InvalidRequest", "The request is not valid HTTP/1.1."))

    def protocol_error(self, error: S3Error) -> None:
        """Refuse the request on this connection with ``error``, then close the connection.

        Before the request went to the handler, the channel answers with an S3
        error document itself; after, it abandons the body and the handler's error
        answer (``error`` if it was reading the body) ends the connection.
        """
        if self._refused:
            return
        self._refused = True
        self.persistent = False
        target = self._head.target if self._head is not None else None
        method = self._head.method if self._head is not None else None
        self._end_head()
        request: S3Request | None = self.requests[-1] if self.requests else None
        self._log.info(
            "Refusing request {request_id} from {peer}: {code} {message}",
            request_id=request.request_id if request is not None else "-",
            peer=str(self.transport.getPeer()), code=error.code, message=error.message,
        )
        if request is not None and request.dispatched:
            request.abort_body(error)
            return
        if request is not None:
            # Never handed over: nobody else will answer it.
            self.requests.remove(request)
        request_id = request.request_id if request is not None else new_request_id()
        resource = target.partition(b"?")[0].decode("latin-1") if target is not None else ""
        # HEAD responses carry no body (the status says it all).
        document = error_document(error, resource, request_id) if method != b"HEAD" else b""
        headers = [
            (b"Date", http.datetimeToString(self.site.clock.seconds())),
            *([(b"Content-Type", b"application/xml")] if document else []),
            (b"Content-Length", b"%d" % len(document)),
            (b"x-amz-request-id", request_id.encode()),
            (b"x-amz-id-2", request_id.encode()),
            (b"Connection", b"close"),
        ]
        headers.extend((name.encode("latin-1"), value.encode("latin-1")) for name, value in error.headers.items())
        self.writeHeaders(b"HTTP/1.1", b"%d" % error.status, http.RESPONSES.get(error.status, b"Error"), headers)
        self.transport.write(document)
        self._linger()

    # -- a request and its body ----------------------------------------------------

    def allHeadersReceived(self) -> None:
        self._end_head()
        request = self.requests[-1]
        self.persistent = self.checkPersistence(request, self._version)
        request.gotLength(self.length)
        if self.length == 0:
            # No body: lineReceived calls allContentReceived next, which dispatches.
            return
        # Keep the client quiet until the store is ready for bytes (UploadBody resumes it).
        request.reader = BodyReader(
            self.transport, self.site.clock, self.site.min_upload_rate,
            lambda: self.protocol_error(S3Error("RequestTimeout")), window=self.site.upload_rate_window,
        )
        request.dispatch(self._command, self._path, self._version)

    def writeHeaders(
        self, version: bytes, code: bytes, reason: bytes, headers: Headers | list[tuple[bytes, bytes]]
    ) -> None:
        # Twisted writes header names in Title-Case; S3 clients take x-amz-meta-*
        # names verbatim as metadata keys, which S3 always sends lower-case.
        if isinstance(headers, Headers):
            pairs = [(name, value) for name, values in headers.getAllRawHeaders() for value in values]
        else:
            pairs = list(headers)
        lines = [version + b" " + code + b" " + reason + b"\r\n"]
        for name, value in pairs:
            if name.lower().startswith(b"x-amz-meta-"):
                name = name.lower()
            lines.append(name + b": " + value + b"\r\n")
        lines.append(b"\r\n")
        if self._held_head is not None:
            self._held_head.extend(lines)  # sent with the body's first bytes (hold_head)
        else:
            self.writeSequence(lines)

    def connectionMade(self) -> None:
        super().connectionMade()
        self._head = RequestHead()
        self.site.channel_opened(self)
        # Twisted pauses a producer as soon as 64 KiB wait in the send buffer, and
        # hands a socket at most 128 KiB per write: relaying a download then pauses
        # and resumes the upstream socket for every chunk. A deeper buffer (also the
        # most read from the client at once) and larger writes let a relay run at the
        # speed of the slower socket with a fraction of the per-chunk work.
        # Under TLS (an ssl: listener) the transport is the TLS layer: tune the socket below it.
        socket: Any = getattr(self.transport, "transport", self.transport)
        if hasattr(socket, "bufferSize"):
            socket.bufferSize = SEND_BUFFER_BYTES
            socket.SEND_LIMIT = SOCKET_WRITE_BYTES
        if isinstance(socket, tcp.Connection):
            read_adaptively(socket)  # a request head needs no 2 MiB buffer
        self._plain = TwistedTransport.plain_socket(self.transport)

    def allContentReceived(self) -> None:
        self._answering = True
        super().allContentReceived()
        if self._answering:
            # Bytes after this request, even from the same read, go to _hold.
            self.setRawMode()
        # Twisted switches the idle timeout off while a response is produced. Keep it
        # on, reset by every write and drained send buffer: a client that stops
        # reading its download is then dropped instead of pinning an upstream
        # connection forever.
        if self._savedTimeOut and self._handlingRequest:
            self.setTimeout(self._savedTimeOut)

    def write(self, data: bytes) -> None:
        self.resetTimeout()
        if self._held_head:
            self.writeSequence([data])
        else:
            self._send(data)

    def writeSequence(self, data: Sequence[bytes]) -> None:
        self.resetTimeout()
        if self._held_head:
            data = [*self._held_head, *data]
            self._held_head.clear()
        if self._plain is not None and sum(map(len, data)) <= DIRECT_SEND_BYTES:
            self._send(b"".join(data))
        else:
            self.transport.writeSequence(data)

    def _send(self, data: bytes) -> None:
        # Small writes go straight to a plain socket when nothing waits before them:
        # Twisted would buffer them and send once the reactor reports the socket
        # writable (registering and unregistering it for that: two epoll_ctl calls
        # and a reactor turn per response). Large ones and TLS take Twisted's path.
        if self._plain is not None and len(data) <= DIRECT_SEND_BYTES:
            data = TwistedTransport.send_now(self._plain, data)
        if data:
            self.transport.write(data)

    def hold_head(self) -> None:
        """Keep the response head written next until the body's first write (or ``release_head``),
        so a small response leaves in one send."""
        self._held_head = []

    def release_head(self) -> None:
        """Send a held head that no body write took (a HEAD or empty response)."""
        held, self._held_head = self._held_head, None
        if held:
            self._send(b"".join(held))

    def resumeProducing(self) -> None:
        self.resetTimeout()
        super().resumeProducing()

    def timeoutConnection(self) -> None:
        # A stuck reader never drains the send buffer, so a graceful close would wait forever.
        self._log.info("Timing out client {peer}", peer=str(self.transport.getPeer()))
        self.transport.abortConnection()

    def send100Continue(self) -> None:
        """Tell a client waiting on ``Expect: 100-continue`` to send its body."""
        self._send100Continue()

    def requestDone(self, request: S3Request) -> None:
        if request.body_complete:
            self._answering = False
            persistent = self.persistent
            if persistent:
                self._head = RequestHead()
            super().requestDone(request)  # resumes the client, back to line mode
            held, self._held = self._held, b""
            if persistent and held:
                self.dataReceived(held)
            return
        # Answered before the whole body arrived: this connection cannot carry
        # another request.
        self.requests.remove(request)
        if request.reader is not None:
            request.reader.done()
        self._linger()

    def _linger(self) -> None:
        # Half-close so the client reads our response, then discard whatever it
        # still sends until it closes or we give up.
        self.persistent = False
        self.dataReceived = self.rawDataReceived = self._discard  # type: ignore[method-assign]
        self.transport.resumeProducing()
        self.transport.loseWriteConnection()
        self._lingering = self.callLater(LINGER_SECONDS, self.transport.abortConnection)

    def _discard(self, data: bytes) -> None:
        pass

    def connectionLost(self, reason: Failure | None = None) -> None:
        self._end_head()
        if self._lingering is not None and self._lingering.active():
            self._lingering.cancel()
        super().connectionLost(reason)
        self.site.channel_closed(self)

    @property
    def busy(self) -> bool:
        """Whether a request is in progress (not merely a kept-alive idle connection)."""
        return bool(self.requests)

    def close_when_idle(self) -> None:
        """Close now if idle, else once the current request is answered (shutdown)."""
        self.persistent = False
        if not self.busy:
            self.transport.loseConnection()


@implementer(IProtocolNegotiationFactory)
class S3Site(http.HTTPFactory):
    """The listening factory: builds S3Channels whose requests go to ``handler``."""

    # Twisted types this as its HTTP/2-capable wrapper's factory; S3Site serves HTTP/1.1 channels directly.
    protocol = S3Channel  # type: ignore[assignment]

    def __init__(
        self,
        handler: RequestHandler,
        timeout: float,
        reactor=None,
        *,
        header_timeout: float = DEFAULT_HEADER_TIMEOUT,
        min_upload_rate: int = DEFAULT_MIN_UPLOAD_RATE,
        upload_rate_window: float = DEFAULT_UPLOAD_RATE_WINDOW,
    ) -> None:
        super().__init__(timeout=timeout, reactor=reactor)
        if reactor is None:
            from twisted.internet import reactor
        self.clock = reactor
        self.handler = handler
        # Seconds a client has to send a request line and headers; bytes/s it must upload at,
        # judged over windows of upload_rate_window seconds.
        self.header_timeout = header_timeout
        self.min_upload_rate = min_upload_rate
        self.upload_rate_window = upload_rate_window
        self._channels: set[S3Channel] = set()
        self._draining = False
        self._drained: list[Deferred[None]] = []

    def channel_opened(self, channel: S3Channel) -> None:
        self._channels.add(channel)
        if self._draining:
            channel.close_when_idle()

    def channel_closed(self, channel: S3Channel) -> None:
        self._channels.discard(channel)
        if self._draining and not self._channels:
            waiters, self._drained = self._drained, []
            for waiter in waiters:
                waiter.callback(None)

    def drain(self, timeout: float) -> Deferred[int]:
        """For shutdown, once the listener stopped: close idle connections now and the
        others as their requests are answered; after ``timeout`` seconds abort those
        still busy. Fires with how many connections had to be aborted."""
        self._draining = True
        for channel in list(self._channels):
            channel.close_when_idle()
        if not self._channels:
            return succeed(0)
        closed: Deferred[None] = Deferred()
        self._drained.append(closed)

        def abort_the_rest() -> int:
            busy = [channel for channel in self._channels if channel.transport is not None]
            for channel in busy:
                channel.transport.abortConnection()
            return len(busy)

        def timed_out(failure: Failure) -> int:
            failure.trap(CancelledError)
            return abort_the_rest()

        # On timeout the wait is cancelled: keep the CancelledError (not a TimeoutError).
        closed.addTimeout(timeout, self.clock, onTimeoutCancel=lambda result, timeout: result)
        return closed.addCallbacks(lambda _: 0, timed_out)

    def buildProtocol(self, addr: IAddress | None) -> S3Channel:  # type: ignore[override]  # (see ``protocol``)
        channel = super().buildProtocol(addr)
        assert isinstance(channel, S3Channel)
        channel.requestFactory = S3Request
        channel.site = self
        return channel

    def acceptableProtocols(self) -> list[bytes]:
        """ALPN: HTTP/1.1 only (streaming relies on the HTTP/1.1 channel)."""
        return [b"http/1.1"]

    def log(self, request: http.Request) -> None:
        # Requests are logged by the handler, with S3 fields, not in combined log format.
        pass


class _TwistedChannel:
    """The one place S3Channel sets a private attribute of Twisted's HTTPChannel (Twisted
    22.4 to 26.x keep the request line in ``_command``/``_path``/``_version`` until the
    request is complete; test_site checks it still does)."""

    @staticmethod
    def set_request_target(channel: http.HTTPChannel, target: bytes) -> None:
        """Make ``target`` the request target Twisted hands the request (after Twisted
        parsed a copy of the request line whose non-ASCII bytes were percent-encoded)."""
        channel._path = target


class RequestHandler(Protocol):
    """What S3Site hands requests to (web.handler.S3Handler)."""

    def handle(self, request: S3Request) -> None:
        """Start answering ``request``; called once its headers (and body, if none streams) are in."""
