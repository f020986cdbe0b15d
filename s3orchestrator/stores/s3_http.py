"""HTTP plumbing of the upstream S3 store: agent, URLs, silence watchdog, request bodies.

Kept apart from ``s3.py`` so that the pure parts (URL building) can be tested
without a reactor; the aws-chunked frames themselves come from ``s3_framing``.
"""

from __future__ import annotations

import re
from typing import Any, Callable
from urllib.parse import urlsplit

import attrs
from twisted.internet import ssl
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IConsumer, IDelayedCall, IPushProducer
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, HTTPConnectionPool
from twisted.web.iweb import IAgent, IBodyProducer
from zope.interface import implementer

from s3orchestrator.auth.sigv4 import uri_encode
from s3orchestrator.config import S3StoreConfig
from s3orchestrator.errors import S3Error
from s3orchestrator.stores.s3_framing import UploadFraming

DEFAULT_CONNECTIONS_PER_HOST = 16
# Below the keep-alive timeouts of common servers (nginx 75 s, Go 120 s, AWS ~20 s),
# so a pooled connection is rarely closed by the server just as a PUT reuses it.
CACHED_CONNECTION_TIMEOUT = 15.0
DEFAULT_CHUNK_SIZE = 64 * 1024
_PEM_CERTIFICATE = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)


# -- agent -------------------------------------------------------------------------------------


def load_trust_root(ca_file: str) -> Any:
    """A trust root of every PEM certificate in ``ca_file`` (replacing the platform's)."""
    with open(ca_file, "rb") as file:
        pems = _PEM_CERTIFICATE.findall(file.read())
    if not pems:
        raise ValueError(f"{ca_file}: no PEM certificate found")
    return ssl.trustRootFromCertificates([ssl.Certificate.loadPEM(pem) for pem in pems])


def make_pool(reactor: Any, connections_per_host: int = DEFAULT_CONNECTIONS_PER_HOST) -> HTTPConnectionPool:
    """A persistent connection pool keeping up to ``connections_per_host`` idle connections."""
    pool = HTTPConnectionPool(reactor, persistent=True)
    pool.maxPersistentPerHost = connections_per_host
    pool.cachedConnectionTimeout = CACHED_CONNECTION_TIMEOUT
    pool.retryAutomatically = True  # only idempotent requests without a body are retried
    return pool


def make_agent(config: S3StoreConfig, reactor: Any, pool: HTTPConnectionPool) -> IAgent:
    """A bare Agent: no redirects, no content decoding, certificate checks for https."""
    trust_root = load_trust_root(config.ca_file) if config.ca_file else ssl.platformTrust()
    return Agent(
        reactor,
        contextFactory=BrowserLikePolicyForHTTPS(trust_root),
        connectTimeout=config.timeout,
        pool=pool,
    )


# -- URLs --------------------------------------------------------------------------------------


@attrs.frozen
class Target:
    """Where one upstream request goes: the URL, and the path and host header to sign."""

    url: bytes
    raw_path: str
    host: str


def _host_header(hostname: str, port: int | None, scheme: str) -> str:
    if ":" in hostname:  # an IPv6 literal
        hostname = f"[{hostname}]"
    if port is None or port == {"http": 80, "https": 443}[scheme]:
        return hostname
    return f"{hostname}:{port}"


def request_target(config: S3StoreConfig, location: str | None) -> Target:
    """The URL of an object (or of the bucket when ``location`` is None), path-style or virtual-host.

    The location is percent-encoded the AWS way (UTF-8, '/' kept), so the path
    on the wire is already canonical and is signed exactly as sent.
    """
    parts = urlsplit(config.endpoint)
    scheme = parts.scheme.lower()
    hostname = parts.hostname or ""
    base = parts.path.rstrip("/")
    key_path = "" if location is None else "/" + uri_encode(location.encode("utf-8"), encode_slash=False)
    if config.path_style:
        raw_path = f"{base}/{uri_encode(config.bucket, encode_slash=True)}{key_path}"
    else:
        hostname = f"{config.bucket}.{hostname}"
        raw_path = f"{base}{key_path}" or "/"
    host = _host_header(hostname, parts.port, scheme)
    return Target(f"{scheme}://{host}{raw_path}".encode("ascii"), raw_path, host)


# -- silence watchdog --------------------------------------------------------------------------


class SilenceWatchdog:
    """Calls ``on_silence`` once when armed for ``timeout`` seconds without progress.

    Armed only while the upstream owes us something (a connection, reading our
    bytes, a response): a slow client or a paused consumer disarms it, so a long
    transfer that keeps moving never times out.
    """

    def __init__(self, clock: Any, timeout: float, on_silence: Callable[[], None]) -> None:
        self._clock = clock
        self._timeout = timeout
        self._on_silence = on_silence
        self._call: IDelayedCall | None = None
        self.fired = False

    def arm(self) -> None:
        """Start counting (keeps counting if already armed)."""
        if self._call is None and not self.fired:
            self._call = self._clock.callLater(self._timeout, self._fire)

    def progress(self) -> None:
        """Something moved: restart the count if armed."""
        if self._call is not None:
            self._call.reset(self._timeout)

    def disarm(self) -> None:
        """Stop counting (nothing is owed by the upstream right now)."""
        call, self._call = self._call, None
        if call is not None and call.active():
            call.cancel()

    def _fire(self) -> None:
        self._call = None
        self.fired = True
        self._on_silence()


# -- request bodies ----------------------------------------------------------------------------


@implementer(IBodyProducer)
class UpstreamBody:
    """The body of an upstream PUT: relays ``body``, as is or re-framed by ``framing``
    into ``framing.chunk_size`` aws-chunked chunks (signed, with a checksum trailer, or both).

    Pause/resume/stop pass through to ``body``, so the upstream's backpressure
    reaches the client. The watchdog is armed while the upstream owes progress
    (connecting, paused us, or the body is complete and the answer is due).
    ``failure`` keeps the body's own failure (a client that went away, a bad
    digest) so it is reported as such rather than as an upstream failure.
    """

    def __init__(
        self,
        body: IBodyProducer,
        length: int,
        watchdog: SilenceWatchdog,
        framing: UploadFraming | None = None,
    ) -> None:
        self._body = body
        self._decoded_length = length
        self._watchdog = watchdog
        self._framing = framing
        self.length = length if framing is None else framing.length(length)
        self.received = 0
        self.complete = False
        self.failure: Failure | None = None
        self._buffer = bytearray()
        self._consumer: IConsumer | None = None
        self._finished: Deferred[None] | None = None
        self._paused = False
        self._stopped = False

    # -- IBodyProducer (driven by the HTTP client) --

    def startProducing(self, consumer: IConsumer) -> Deferred[None]:
        self._consumer = consumer
        # The HTTP client cancels this when the request is cancelled: stop the body too.
        self._finished = Deferred(lambda _: self.stopProducing())
        self._watchdog.progress()
        self._watchdog.disarm()  # from now on the pace is the client's
        try:
            produced = self._body.startProducing(self)
        except Exception:
            self._body_failed(Failure())
        else:
            produced.addCallbacks(self._body_done, self._body_failed)
        return self._finished

    def pauseProducing(self) -> None:
        self._paused = True
        self._watchdog.arm()
        if not self.complete and not self._stopped:
            self._body.pauseProducing()

    def resumeProducing(self) -> None:
        self._paused = False
        self._watchdog.progress()
        if not self.complete:
            self._watchdog.disarm()
            if not self._stopped:
                self._body.resumeProducing()

    def stopProducing(self) -> None:
        """Stop the body; the startProducing Deferred never fires after this."""
        if self._stopped:
            return
        self._stopped = True
        self._buffer.clear()
        if not self.complete:
            self._body.stopProducing()

    # -- IConsumer (fed by the client's body) --

    def write(self, data: bytes) -> None:
        if self._stopped or self.complete or self._finished is None or self._finished.called:
            return
        self.received += len(data)
        if self.received > self._decoded_length:
            self._fail(S3Error("IncompleteBody", f"the body is longer than the {self._decoded_length} bytes announced"))
            return
        assert self._consumer is not None
        framing = self._framing
        if framing is None:
            self._consumer.write(data)
            return
        # Whole chunks only (the last one excepted): the framed length was announced.
        self._buffer += data
        size = framing.chunk_size
        if len(self._buffer) >= size:
            view = memoryview(self._buffer)
            end = len(self._buffer) - len(self._buffer) % size
            frames = [framing.chunk(view[start:start + size]) for start in range(0, end, size)]
            view.release()
            del self._buffer[:end]
            for frame in frames:
                self._consumer.write(frame)

    def registerProducer(self, producer: IPushProducer, streaming: bool) -> None:
        """Nothing to do: backpressure reaches the body through pause/resumeProducing."""

    def unregisterProducer(self) -> None:
        """Nothing to do."""

    # -- the body's outcome --

    def _body_done(self, _: object) -> None:
        if self._stopped or self._finished is None or self._finished.called:
            return
        if self.received != self._decoded_length:
            self._fail(S3Error("IncompleteBody", f"got {self.received} of {self._decoded_length} bytes"), stop=False)
            return
        assert self._consumer is not None
        if self._framing is not None:
            if self._buffer:
                self._consumer.write(self._framing.chunk(bytes(self._buffer)))
                self._buffer.clear()
            self._consumer.write(self._framing.final())
        self.complete = True
        self._watchdog.arm()  # the upstream owes us its answer now
        self._finished.callback(None)

    def _body_failed(self, failure: Failure) -> None:
        if self._stopped or self._finished is None or self._finished.called:
            return
        self.failure = failure
        self._finished.errback(failure)

    def _fail(self, error: Exception, stop: bool = True) -> None:
        if stop:
            self._stopped = True
            self._body.stopProducing()
        self.failure = Failure(error)
        if self._finished is not None and not self._finished.called:
            self._finished.errback(self.failure)


# -- response bodies ---------------------------------------------------------------------------


class CappedBody(Protocol):
    """Collects at most ``cap`` bytes of a (small) response body, then stops reading it.

    ``done`` fires with the bytes whether the body ended or was cut off.
    """

    def __init__(self, cap: int, watchdog: SilenceWatchdog | None = None) -> None:
        self._cap = cap
        self._watchdog = watchdog
        self._parts: list[bytes] = []
        self._size = 0
        self.done: Deferred[bytes] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        if self._watchdog is not None:
            self._watchdog.progress()
        if self._size >= self._cap:
            return
        self._parts.append(data[: self._cap - self._size])
        self._size += len(data)
        if self._size >= self._cap and self.transport is not None:
            # Not worth reading further: drop the connection instead.
            self.transport.stopProducing()

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        if not self.done.called:
            self.done.callback(b"".join(self._parts))
