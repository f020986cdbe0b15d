"""The upstream Agent's endpoints: real loopback connections whose sockets move large chunks."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import pytest_twisted
from twisted.internet import protocol, reactor, ssl
from twisted.internet.defer import Deferred
from twisted.logger import LogEvent, formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.web.client import URI, BrowserLikePolicyForHTTPS
from twisted.web.error import SchemeNotSupported

from s3orchestrator.stores.s3_http import (
    UPSTREAM_READ_BYTES,
    UPSTREAM_WRITE_BYTES,
    UpstreamEndpoints,
    _tune_socket,
)


def endpoints() -> UpstreamEndpoints:
    return UpstreamEndpoints(reactor, BrowserLikePolicyForHTTPS(ssl.platformTrust()), connect_timeout=5.0)


@pytest_twisted.ensureDeferred
async def test_a_connection_reads_and_writes_large_chunks() -> None:
    server = protocol.Factory.forProtocol(protocol.Protocol)
    port = reactor.listenTCP(0, server, interface="127.0.0.1")
    try:
        endpoint = endpoints().endpointForURI(URI.fromBytes(b"http://127.0.0.1:%d/bucket" % port.getHost().port))
        client = await endpoint.connect(protocol.Factory.forProtocol(protocol.Protocol))
        try:
            assert client.transport.bufferSize == UPSTREAM_READ_BYTES
            assert client.transport.SEND_LIMIT == UPSTREAM_WRITE_BYTES
            assert client.transport.getPeer().port == port.getHost().port
        finally:
            client.transport.abortConnection()
    finally:
        await port.stopListening()


class _Closing(protocol.Protocol):
    def __init__(self) -> None:
        self.closed: Deferred[None] = Deferred()

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        self.closed.callback(None)


@pytest_twisted.ensureDeferred
async def test_a_connection_is_not_logged() -> None:
    events: list[LogEvent] = []
    server = protocol.Factory.forProtocol(protocol.Protocol)
    port = reactor.listenTCP(0, server, interface="127.0.0.1")
    globalLogPublisher.addObserver(events.append)
    try:
        endpoint = endpoints().endpointForURI(URI.fromBytes(b"http://127.0.0.1:%d/bucket" % port.getHost().port))
        client_factory = protocol.Factory.forProtocol(_Closing)
        client = await endpoint.connect(client_factory)
        client.transport.abortConnection()
        await client.closed
    finally:
        globalLogPublisher.removeObserver(events.append)
        await port.stopListening()
    assert client_factory.noisy is False
    assert [formatEvent(event) for event in events if repr(client_factory) in formatEvent(event)] == []


def test_under_tls_the_socket_below_the_tls_layer_is_tuned() -> None:
    socket = SimpleNamespace(bufferSize=65536, SEND_LIMIT=131072)
    client = SimpleNamespace(transport=SimpleNamespace(transport=socket))
    assert _tune_socket(client) is client
    assert (socket.bufferSize, socket.SEND_LIMIT) == (UPSTREAM_READ_BYTES, UPSTREAM_WRITE_BYTES)


def test_a_transport_without_a_socket_is_left_alone() -> None:
    client = SimpleNamespace(transport=SimpleNamespace())
    assert _tune_socket(client) is client
    assert not hasattr(client.transport, "bufferSize")


def test_only_http_and_https_are_supported() -> None:
    with pytest.raises(SchemeNotSupported):
        endpoints().endpointForURI(URI.fromBytes(b"ftp://127.0.0.1:21/bucket"))


def test_one_read_never_fills_a_client_connection_send_buffer() -> None:
    from s3orchestrator.web.site import SEND_BUFFER_BYTES

    # A relayed download pauses its upstream only once several reads wait unsent.
    assert UPSTREAM_READ_BYTES * 2 <= SEND_BUFFER_BYTES


def test_one_endpoint_per_scheme_host_and_port_is_built_and_reused() -> None:
    factory = endpoints()
    first = factory.endpointForURI(URI.fromBytes(b"http://127.0.0.1:9000/bucket/a"))
    assert factory.endpointForURI(URI.fromBytes(b"http://127.0.0.1:9000/bucket/b?x=1")) is first
    assert factory.endpointForURI(URI.fromBytes(b"http://127.0.0.1:9001/bucket/a")) is not first
    assert factory.endpointForURI(URI.fromBytes(b"https://127.0.0.1:9000/bucket/a")) is not first
