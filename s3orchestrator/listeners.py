"""Where the daemon's listening sockets come from: bound from an endpoint string
(one process), or inherited from the supervisor as open file descriptors (workers).

The supervisor binds every socket itself (``hold``) so the port stays bound across
worker restarts, then hands the descriptors to its workers, which adopt them. On
Linux the S3 listener of a TCP endpoint is (unless ``server.worker_sockets =
"shared"``) one socket per worker, all bound to the same address with
``SO_REUSEPORT`` (``bind_reuseport``): the kernel gives each new connection to one of
them, so each wakes one worker and every worker gets its share.
"""

from __future__ import annotations

import socket
import sys
from typing import Any, Mapping, Protocol

import attrs
from twisted.internet import tcp, unix
from twisted.internet.abstract import isIPv6Address
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.endpoints import (
    SSL4ServerEndpoint,
    TCP4ServerEndpoint,
    TCP6ServerEndpoint,
    serverFromString,
)
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort, IProtocolFactory
from twisted.protocols.tls import TLSMemoryBIOFactory

from s3orchestrator.ops.banner import is_tls

#: The S3 listener's name (the operators' listeners are named in ops.banner).
S3 = "s3"

#: Whether workers get a TCP listening socket each on one address, the kernel spreading
#: connections over them (elsewhere SO_REUSEPORT does not balance, or is missing).
REUSEPORT_AVAILABLE = sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")

#: Address families by the name a worker's command line gives them.
FAMILIES = {"inet": socket.AF_INET, "inet6": socket.AF_INET6, "unix": socket.AF_UNIX}


class Listeners(Protocol):
    """Opens the daemon's listeners by name."""

    async def listen(self, name: str, endpoint: str | None, factory: IProtocolFactory) -> IListeningPort | None:
        """Serve ``factory`` on the listener ``name`` (configured as ``endpoint``, None when
        not configured); None when this process has no such listener."""


@attrs.frozen
class EndpointListeners:
    """Binds each configured endpoint string (the one-process daemon)."""

    reactor: Any

    async def listen(self, name: str, endpoint: str | None, factory: IProtocolFactory) -> IListeningPort | None:
        """Listen on ``endpoint``; None when it is not configured."""
        if endpoint is None:
            return None
        port: IListeningPort = await serverFromString(self.reactor, endpoint).listen(factory)
        return port


@attrs.frozen
class InheritedSocket:
    """A listening socket a worker got from the supervisor: descriptor and address family."""

    fd: int
    family: str  # a key of FAMILIES

    def argument(self, name: str) -> str:
        """This socket as a worker's ``--socket`` argument: ``NAME=FD:FAMILY``."""
        return f"{name}={self.fd}:{self.family}"


def parse_socket_argument(argument: str) -> tuple[str, InheritedSocket]:
    """The (name, socket) of a ``--socket NAME=FD:FAMILY`` argument; ValueError if malformed."""
    name, _, rest = argument.partition("=")
    fd, _, family = rest.partition(":")
    if not name or family not in FAMILIES:
        raise ValueError(f"--socket wants NAME=FD:{'|'.join(FAMILIES)}, not {argument!r}")
    return name, InheritedSocket(int(fd), family)


def tls_context_factory(reactor: Any, endpoint: str) -> Any:
    """The TLS context factory an ``ssl:`` endpoint string describes (key, certificate, options).

    Twisted parses those options only into its SSL endpoint, which keeps the result in a
    private attribute: this adapter is the one place that reads it (a unit test breaks if
    Twisted renames it)."""
    return serverFromString(reactor, endpoint)._sslContextFactory


class _AdoptedUnixPort(unix.Port):
    """A listening unix socket shared with the supervisor that bound it.

    Twisted's ``adoptStreamPort`` treats an adopted unix socket as its own: it sets the
    path's mode to 0666, listens again with its own backlog, shuts the socket down when
    it stops (which stops it in every process) and unlinks the path. This port only
    accepts on it and closes its own descriptor; it leans on ``unix.Port``'s internals
    (``socket``, ``fileno``, ``numberAccepts``, ``_shouldShutdown``), which a unit test
    exercises."""

    _shouldShutdown = False

    def adopt(self, sock: socket.socket) -> None:
        """Start accepting on ``sock``, already bound and listening."""
        self.factory.doStart()  # type: ignore[union-attr]
        self.connected = True
        self.socket = sock
        self.fileno = sock.fileno  # type: ignore[method-assign]
        self.numberAccepts = 100
        self.startReading()

    def connectionLost(self, reason: Any) -> None:
        tcp.Port.connectionLost(self, reason)  # unix.Port's would unlink the path


def adopt_unix_port(reactor: Any, fd: int, factory: IProtocolFactory) -> IListeningPort:
    """Accept on the inherited listening unix socket ``fd``, leaving the socket and its
    path as the supervisor made them."""
    sock = socket.fromfd(fd, socket.AF_UNIX, socket.SOCK_STREAM)
    sock.setblocking(False)
    port = _AdoptedUnixPort(sock.getsockname(), factory, reactor=reactor)
    port.adopt(sock)
    return port


@attrs.frozen
class InheritedListeners:
    """Adopts the sockets the supervisor passed (a worker); TLS where the endpoint says ``ssl:``."""

    reactor: Any
    sockets: Mapping[str, InheritedSocket]

    async def listen(self, name: str, endpoint: str | None, factory: IProtocolFactory) -> IListeningPort | None:
        """Adopt the socket ``name``, if this worker was given one."""
        inherited = self.sockets.get(name)
        if inherited is None:
            return None
        if endpoint is not None and is_tls(endpoint):
            factory = TLSMemoryBIOFactory(tls_context_factory(self.reactor, endpoint), False, factory)
        if inherited.family == "unix":
            return adopt_unix_port(self.reactor, inherited.fd, factory)
        port: IListeningPort = self.reactor.adoptStreamPort(inherited.fd, FAMILIES[inherited.family], factory)
        return port


@attrs.frozen
class HeldSocket:
    """A socket the supervisor bound and keeps (without accepting on it) for its workers."""

    port: IListeningPort

    @property
    def inherited(self) -> InheritedSocket:
        """The socket as its workers see it (the descriptor is the same number in the
        supervisor; spawning maps it)."""
        sock = self.port.socket  # type: ignore[attr-defined]
        family = {value: name for name, value in FAMILIES.items()}[sock.family]
        return InheritedSocket(sock.fileno(), family)


async def hold(reactor: Any, endpoint: str, factory: IProtocolFactory) -> HeldSocket:
    """Bind ``endpoint`` and stop accepting on it: the supervisor only keeps the socket
    open for its workers (``factory`` answers nothing; it is never called)."""
    port: IListeningPort = await serverFromString(reactor, endpoint).listen(factory)
    port.stopReading()  # type: ignore[attr-defined]
    return HeldSocket(port)


@attrs.frozen
class TCPAddress:
    """Where a TCP endpoint string listens: family, interface, port (0: any) and backlog."""

    family: int
    interface: str
    port: int
    backlog: int

    def address(self, port: int) -> IPv4Address | IPv6Address:
        """The address (as Twisted gives it) of a socket bound here on ``port``."""
        host = self.interface or ("::" if self.family == socket.AF_INET6 else "0.0.0.0")
        if self.family == socket.AF_INET6:
            return IPv6Address("TCP", host, port)
        return IPv4Address("TCP", host, port)


def tcp_address(reactor: Any, endpoint: str) -> TCPAddress | None:
    """Where a ``tcp:``, ``tcp6:`` or ``ssl:`` endpoint string listens; None for any other
    kind (unix, systemd socket activation...).

    Twisted keeps what it parsed in its endpoints' private attributes: this adapter is
    the one place that reads them (a unit test breaks if Twisted renames them)."""
    parsed = serverFromString(reactor, endpoint)
    if not isinstance(parsed, (TCP4ServerEndpoint, TCP6ServerEndpoint, SSL4ServerEndpoint)):
        return None
    interface: str = parsed._interface
    ipv6 = isinstance(parsed, TCP6ServerEndpoint) or isIPv6Address(interface)
    return TCPAddress(socket.AF_INET6 if ipv6 else socket.AF_INET, interface, parsed._port, parsed._backlog)


def bind_reuseport(where: TCPAddress, port: int) -> socket.socket:
    """A non-blocking listening socket on ``where``'s interface and ``port`` (0: one the
    kernel picks), with ``SO_REUSEPORT``: other such sockets may bind the same address."""
    sock = socket.socket(where.family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((where.interface, port))
        sock.listen(where.backlog)
        sock.setblocking(False)
    except OSError as error:
        sock.close()
        raise CannotListenError(where.interface, port, error) from error
    return sock


class ReusePortSockets:
    """A TCP listener as one ``SO_REUSEPORT`` socket per worker, all on one address (the
    supervisor's): bound on demand, let go of one by one."""

    def __init__(self, where: TCPAddress) -> None:
        self._where = where
        self.port = where.port  # the one the first socket got, when 0 was asked for
        self._sockets: dict[int, socket.socket] = {}

    def socket_for(self, index: int) -> InheritedSocket:
        """Worker ``index``'s socket (bound now if it has none); CannotListenError if it cannot be."""
        sock = self._sockets.get(index)
        if sock is None:
            sock = self._sockets[index] = bind_reuseport(self._where, self.port)
            self.port = sock.getsockname()[1]
        family = {value: name for name, value in FAMILIES.items()}[sock.family]
        return InheritedSocket(sock.fileno(), family)

    def release(self, index: int) -> None:
        """Close worker ``index``'s socket: new connections go to the others' (those it queued are reset)."""
        sock = self._sockets.pop(index, None)
        if sock is not None:
            sock.close()

    def close(self) -> None:
        """Close every socket."""
        for index in list(self._sockets):
            self.release(index)

    def address(self) -> IPv4Address | IPv6Address:
        """Where the sockets listen."""
        return self._where.address(self.port)
