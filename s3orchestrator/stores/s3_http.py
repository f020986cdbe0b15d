"""HTTP plumbing shared by the upstream S3 store's requests: agent, URLs, silence
watchdog, small response bodies.

Kept apart from ``s3.py`` so that the pure parts (URL building) can be tested
without a reactor.
"""

from __future__ import annotations

import functools
import re
from typing import Any, Callable, cast
from urllib.parse import urlsplit

import attrs
from twisted.internet import ssl, tcp
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import (
    IDelayedCall,
    IProtocol,
    IProtocolFactory,
    IPushProducer,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure
from twisted.web.client import URI, Agent, BrowserLikePolicyForHTTPS, HTTPConnectionPool
from twisted.web.error import SchemeNotSupported
from twisted.web.iweb import IAgent, IAgentEndpointFactory, IPolicyForHTTPS
from zope.interface import implementer

from s3orchestrator.auth.sigv4 import uri_encode
from s3orchestrator.config import S3StoreConfig
from s3orchestrator.sockets import TwistedTransport, read_adaptively, send_bodiless_requests_at_once

# Idle connections kept per upstream host: as many as requests run there at once under
# load, else each request past the number closes its connection when it ends and the
# next one opens a new one (with 32 clients, one PUT in four paid a connect and close).
# Idle ones close after CACHED_CONNECTION_TIMEOUT.
DEFAULT_CONNECTIONS_PER_HOST = 64
# Below the keep-alive timeouts of common servers (nginx 75 s, Go 120 s, AWS ~20 s),
# so a pooled connection is rarely closed by the server just as a PUT reuses it.
CACHED_CONNECTION_TIMEOUT = 15
# Bytes read from an upstream socket at once (Twisted reads 64 KiB). A download
# relayed in 64 KiB chunks spends most of its CPU time on per-chunk overhead; below
# the client connection's send buffer (web/site.py), so one read never pauses it.
UPSTREAM_READ_BYTES = 512 * 1024
# The most handed to an upstream socket in one send() (Twisted: 128 KiB).
UPSTREAM_WRITE_BYTES = 1024 * 1024
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


@implementer(IStreamClientEndpoint)
class _BulkEndpoint:
    """Connects through ``endpoint`` without logging it, then lets the socket read and
    write in large chunks."""

    def __init__(self, endpoint: IStreamClientEndpoint) -> None:
        self._endpoint = endpoint

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[IProtocol]:
        if isinstance(protocolFactory, Factory):
            # The pool's factory would log "Starting factory"/"Stopping factory" at info for
            # every connection: with an upstream that closes idle connections, a line pair
            # per health probe on an otherwise idle daemon.
            protocolFactory.noisy = False
        return self._endpoint.connect(protocolFactory).addCallback(_tune_socket)

    def __repr__(self) -> str:
        return repr(self._endpoint)


def _tune_socket(protocol: IProtocol) -> IProtocol:
    transport: Any = getattr(protocol, "transport", None)
    plain = TwistedTransport.plain_socket(transport)
    if plain is not None:
        # A GET, HEAD or DELETE leaves in the call that writes it (see sockets).
        send_bodiless_requests_at_once(plain)
    # Under TLS the protocol's transport is the TLS layer: tune the socket below it.
    transport = getattr(transport, "transport", transport)
    if hasattr(transport, "bufferSize"):
        transport.bufferSize = UPSTREAM_READ_BYTES
        transport.SEND_LIMIT = UPSTREAM_WRITE_BYTES
    if isinstance(transport, tcp.Connection):
        read_adaptively(transport)  # a response head and a small body need no 512 KiB buffer
    return protocol


@implementer(IAgentEndpointFactory)
class UpstreamEndpoints:
    """What the Agent connects with: TCP (TLS for https) with a time limit, moving large chunks.

    The Agent asks for an endpoint on every request, pooled connection or not;
    one is built per scheme, host and port (resolving the name's IDNA form and,
    for https, the TLS settings) and then reused.
    """

    def __init__(self, reactor: Any, tls_policy: IPolicyForHTTPS, connect_timeout: float) -> None:
        self._reactor = reactor
        self._tls_policy = tls_policy
        self._connect_timeout = connect_timeout
        self._endpoints: dict[tuple[bytes, bytes, int], IStreamClientEndpoint] = {}

    def endpointForURI(self, uri: URI) -> IStreamClientEndpoint:
        netloc = (uri.scheme, uri.host, uri.port)
        endpoint = self._endpoints.get(netloc)
        if endpoint is None:
            endpoint = self._endpoints[netloc] = self._new_endpoint(uri)
        return endpoint

    def _new_endpoint(self, uri: URI) -> IStreamClientEndpoint:
        if uri.scheme not in (b"http", b"https"):
            raise SchemeNotSupported(f"Unsupported scheme: {uri.scheme!r}")
        endpoint: IStreamClientEndpoint = HostnameEndpoint(
            self._reactor, uri.host.decode("ascii"), uri.port, timeout=self._connect_timeout
        )
        if uri.scheme == b"https":
            endpoint = wrapClientTLS(self._tls_policy.creatorForNetloc(uri.host, uri.port), endpoint)
        return _BulkEndpoint(endpoint)


def make_agent(config: S3StoreConfig, reactor: Any, pool: HTTPConnectionPool) -> IAgent:
    """A bare Agent: no redirects, no content decoding, certificate checks for https."""
    trust_root = load_trust_root(config.ca_file) if config.ca_file else ssl.platformTrust()
    endpoints = UpstreamEndpoints(reactor, BrowserLikePolicyForHTTPS(trust_root), config.timeout)
    return Agent.usingEndpointFactory(reactor, endpoints, pool=pool)


# -- URLs --------------------------------------------------------------------------------------


@attrs.frozen
class Target:
    """Where one upstream request goes: the URL, and the path, query and host header to sign."""

    url: bytes
    raw_path: str
    host: str
    raw_query: str = ""


def _host_header(hostname: str, port: int | None, scheme: str) -> str:
    if ":" in hostname:  # an IPv6 literal
        hostname = f"[{hostname}]"
    if port is None or port == {"http": 80, "https": 443}[scheme]:
        return hostname
    return f"{hostname}:{port}"


def request_target(config: S3StoreConfig, location: str | None, raw_query: str = "") -> Target:
    """The URL of an object (or of the bucket when ``location`` is None), path-style or virtual-host.

    The location is percent-encoded the AWS way (UTF-8, '/' kept), so the path
    on the wire is already canonical and is signed exactly as sent; ``raw_query``
    (already encoded, e.g. ``partNumber=1&uploadId=...``) goes on the URL as is.
    """
    origin, host, base = _bucket_base(config.endpoint, config.bucket, config.path_style)
    key_path = "" if location is None else "/" + uri_encode(location.encode("utf-8"), encode_slash=False)
    raw_path = f"{base}{key_path}" or "/"
    query = f"?{raw_query}" if raw_query else ""
    return Target(f"{origin}{raw_path}{query}".encode("ascii"), raw_path, host, raw_query)


@functools.lru_cache(maxsize=256)
def _bucket_base(endpoint: str, bucket: str, path_style: bool) -> tuple[str, str, str]:
    """(scheme://host, the Host header, the bucket's path) of a store: the same for every request."""
    parts = urlsplit(endpoint)
    scheme = parts.scheme.lower()
    hostname = parts.hostname or ""
    base = parts.path.rstrip("/")
    if path_style:
        base = f"{base}/{uri_encode(bucket, encode_slash=True)}"
    else:
        hostname = f"{bucket}.{hostname}"
    host = _host_header(hostname, parts.port, scheme)
    return f"{scheme}://{host}", host, base


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


# -- response bodies ---------------------------------------------------------------------------


def body_transport(protocol: Protocol) -> IPushProducer | None:
    """What ``IResponse.deliverBody`` connected ``protocol`` to (None before that).

    Twisted types ``Protocol.transport`` as an ITransport; deliverBody's contract is an IPushProducer.
    """
    return cast("IPushProducer | None", protocol.transport)


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
        if self._size >= self._cap:
            self.stop()  # not worth reading further: drop the connection instead

    def stop(self) -> None:
        """Stop reading (and drop the connection); ``done`` fires with what came so far."""
        transport = body_transport(self)
        if transport is not None:
            transport.stopProducing()

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        if not self.done.called:
            self.done.callback(b"".join(self._parts))
