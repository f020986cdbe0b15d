"""Where the daemon's listening sockets come from: bound from an endpoint string
(one process), or inherited from the supervisor as open file descriptors (workers).

The supervisor binds every socket itself (``hold``) so the port stays bound across
worker restarts, then hands the descriptors to its workers, which adopt them.
"""

from __future__ import annotations

import socket
from typing import Any, Mapping, Protocol

import attrs
from twisted.internet import tcp, unix
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort, IProtocolFactory
from twisted.protocols.tls import TLSMemoryBIOFactory

from s3orchestrator.ops.banner import is_tls

#: The S3 listener's name (the operators' listeners are named in ops.banner).
S3 = "s3"

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
