"""Listening sockets bound from endpoint strings or adopted from the supervisor."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import twisted.test
from twisted.internet.defer import ensureDeferred
from twisted.internet.protocol import Factory, Protocol
from twisted.protocols.tls import TLSMemoryBIOFactory

from s3orchestrator.listeners import (
    S3,
    EndpointListeners,
    InheritedListeners,
    InheritedSocket,
    ReusePortSockets,
    TCPAddress,
    parse_socket_argument,
    tcp_address,
    tls_context_factory,
)

try:
    from twisted.internet.testing import MemoryReactor, MemoryReactorClock
except ImportError:  # Twisted 22.4
    from twisted.test.proto_helpers import MemoryReactor, MemoryReactorClock  # type: ignore[no-redef]

# A key and certificate in one PEM file that Twisted ships with its tests.
SERVER_PEM = Path(twisted.test.__file__).with_name("server.pem")


def listen(listeners, name: str, endpoint: str | None, factory):
    result = []
    ensureDeferred(listeners.listen(name, endpoint, factory)).addCallback(result.append)
    return result[0]


def test_a_socket_argument_round_trips() -> None:
    inherited = InheritedSocket(5, "inet6")
    assert parse_socket_argument(inherited.argument("admin")) == ("admin", inherited)


@pytest.mark.parametrize("argument", ["s3=4", "s3=4:ipx", "=4:inet", "s3=x:inet"])
def test_a_malformed_socket_argument_is_refused(argument: str) -> None:
    with pytest.raises(ValueError):
        parse_socket_argument(argument)


def test_a_worker_adopts_the_socket_of_the_listener_name() -> None:
    reactor = MemoryReactor()
    factory = Factory()
    listeners = InheritedListeners(reactor, {S3: InheritedSocket(4, "inet"), "metrics": InheritedSocket(5, "inet6")})
    assert listen(listeners, S3, "tcp:9000", factory) is not None
    listen(listeners, "metrics", None, factory)
    assert reactor.adoptedPorts == [(4, socket.AF_INET, factory), (5, socket.AF_INET6, factory)]


def test_a_worker_has_no_listener_it_was_not_given() -> None:
    reactor = MemoryReactor()
    assert listen(InheritedListeners(reactor, {}), "manhole", "tcp:2222", Factory()) is None
    assert reactor.adoptedPorts == []


@pytest.mark.skipif(not SERVER_PEM.exists(), reason="Twisted's test certificate is not installed")
def test_an_inherited_ssl_listener_speaks_tls_with_the_endpoints_certificate() -> None:
    reactor = MemoryReactor()
    factory = Factory()
    endpoint = f"ssl:9443:privateKey={SERVER_PEM}"
    listen(InheritedListeners(reactor, {S3: InheritedSocket(4, "inet")}), S3, endpoint, factory)
    [(fd, _, adopted)] = reactor.adoptedPorts
    assert isinstance(adopted, TLSMemoryBIOFactory)
    assert adopted.wrappedFactory is factory


@pytest.mark.skipif(not SERVER_PEM.exists(), reason="Twisted's test certificate is not installed")
def test_the_tls_adapter_finds_twisteds_context_factory() -> None:
    # Breaks if Twisted's SSL endpoint stops keeping its context factory where the adapter reads it.
    context_factory = tls_context_factory(MemoryReactor(), f"ssl:9443:privateKey={SERVER_PEM}")
    assert context_factory.getContext() is not None


@pytest.mark.parametrize(("endpoint", "expected"), [
    ("tcp:9000:interface=127.0.0.1:backlog=77", TCPAddress(socket.AF_INET, "127.0.0.1", 9000, 77)),
    ("tcp:0", TCPAddress(socket.AF_INET, "", 0, 50)),
    ("tcp:9000:interface=\\:\\:1", TCPAddress(socket.AF_INET6, "::1", 9000, 50)),
    ("tcp6:9000", TCPAddress(socket.AF_INET6, "::", 9000, 50)),
    (f"ssl:9443:interface=127.0.0.1:privateKey={SERVER_PEM}", TCPAddress(socket.AF_INET, "127.0.0.1", 9443, 50)),
    ("unix:/tmp/s3.sock", None),
])
def test_the_tcp_adapter_reads_where_an_endpoint_listens(endpoint: str, expected: TCPAddress | None) -> None:
    # Breaks if Twisted's TCP and SSL endpoints stop keeping what they parsed where the adapter reads it.
    assert tcp_address(MemoryReactor(), endpoint) == expected


@pytest.mark.skipif(not hasattr(socket, "SO_REUSEPORT"), reason="no SO_REUSEPORT here")
def test_reuseport_sockets_share_one_port_and_each_worker_gets_its_own() -> None:
    sockets = ReusePortSockets(TCPAddress(socket.AF_INET, "127.0.0.1", 0, 50))
    try:
        first, second = sockets.socket_for(1), sockets.socket_for(2)
        assert first != second and sockets.socket_for(1) == first
        assert sockets.port != 0 and sockets.address().port == sockets.port
        for inherited in (first, second):
            sock = socket.socket(fileno=socket.dup(inherited.fd))
            with sock:
                assert sock.getsockname() == ("127.0.0.1", sockets.port)
                assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) == 1
        # A worker's socket let go and bound again: the same port.
        sockets.release(2)
        with pytest.raises(OSError):
            socket.socket(fileno=socket.dup(second.fd)).close()
        again = sockets.socket_for(2)
        with socket.socket(fileno=socket.dup(again.fd)) as sock:
            assert sock.getsockname() == ("127.0.0.1", sockets.port)
        # Every connection is accepted by one of the two.
        with socket.create_connection(("127.0.0.1", sockets.port)):
            ready = []
            for inherited in (first, again):
                sock = socket.socket(fileno=socket.dup(inherited.fd))
                with sock:
                    try:
                        sock.accept()[0].close()
                        ready.append(inherited)
                    except BlockingIOError:
                        pass
            assert len(ready) == 1
    finally:
        sockets.close()


def test_an_unconfigured_endpoint_is_not_listened_on() -> None:
    reactor = MemoryReactor()
    assert listen(EndpointListeners(reactor), "metrics", None, Factory()) is None
    assert reactor.tcpServers == []


def test_a_configured_endpoint_is_bound() -> None:
    reactor = MemoryReactor()
    listen(EndpointListeners(reactor), S3, "tcp:9000:interface=127.0.0.1", Factory())
    assert [(port, interface) for port, _, _, interface in reactor.tcpServers] == [(9000, "127.0.0.1")]


def test_an_adopted_unix_socket_accepts_and_keeps_its_mode_and_path_when_the_worker_stops(tmp_path: Path) -> None:
    path = tmp_path / "s3.sock"
    held = socket.socket(socket.AF_UNIX)
    held.bind(str(path))
    held.listen(5)
    path.chmod(0o600)
    reactor = MemoryReactorClock()
    connected: list[Protocol] = []

    class Recording(Protocol):
        def connectionMade(self) -> None:
            connected.append(self)

    try:
        port = listen(InheritedListeners(reactor, {S3: InheritedSocket(held.fileno(), "unix")}), S3, None,
                      Factory.forProtocol(Recording))
        assert port.getHost().name.endswith(b"s3.sock")
        assert path.stat().st_mode & 0o777 == 0o600
        with socket.socket(socket.AF_UNIX) as client:
            client.connect(str(path))
            port.doRead()  # what the reactor calls when the socket is readable: accept
            assert len(connected) == 1
            connected[0].transport.abortConnection()
        port.stopListening()
        reactor.advance(0)
        assert path.exists()
        # The supervisor's socket still answers.
        with socket.socket(socket.AF_UNIX) as client:
            client.connect(str(path))
    finally:
        held.close()
