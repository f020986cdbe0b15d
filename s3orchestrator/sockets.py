"""What the daemon needs of Twisted's socket transports beyond their interfaces.

``TwistedTransport`` is the one place that touches a transport's buffer
attributes (a unit test breaks if Twisted renames them): whether bytes wait in
its send buffer, pausing its producer until the socket drains (web.sendfile),
and sending a small write straight to the socket (``send_now``).

Twisted's ``write`` buffers every write and sends it once the reactor reports
the socket writable: an ``epoll_ctl`` to watch for that, a reactor turn, and
another ``epoll_ctl`` once the buffer is empty, for every response and every
upstream request. A small write with nothing waiting before it is sent at once
instead (S3Channel for responses, ``send_bodiless_requests_at_once`` for
upstream requests without a body); only what the socket does not take is left
to the transport.

A transport reads up to its ``bufferSize`` at once (tuned to 512 KiB to 2 MiB for
bulk transfers: web.site, stores.s3_http). Python allocates a buffer of that size
for every read, and one that large comes straight from the kernel: a map, a
shrink and an unmap per read, several page faults, all holding the GIL, even
when the read brings a 200-byte request. ``read_adaptively`` reads
``SMALL_READ_BYTES`` at a time (from the heap) until a read fills that, and the
full ``bufferSize`` only while reads keep filling it.
"""

from __future__ import annotations

import socket
import weakref
from errno import EWOULDBLOCK
from typing import Any, Sequence

from twisted.internet import abstract, main, tcp
from twisted.internet.interfaces import ISSLTransport

# Writes up to this size are sent at once when nothing waits before them; larger ones
# (bulk transfers) take Twisted's path, which sends from its buffer without copying the rest.
DIRECT_SEND_BYTES = 64 * 1024
# Reads start at this size (below the C library's threshold for mapping a buffer of its own).
SMALL_READ_BYTES = 64 * 1024


class TwistedTransport:
    """What the daemon needs of a Twisted socket transport (``tcp.Connection``)."""

    @staticmethod
    def plain_socket(transport: object) -> tcp.Connection | None:
        """``transport`` if it writes straight to a connected socket (not TLS, not a test double)."""
        if not isinstance(transport, tcp.Connection) or ISSLTransport.providedBy(transport):
            return None
        return transport if transport.connected and not transport.disconnecting else None

    @staticmethod
    def buffered(transport: abstract.FileDescriptor) -> bool:
        """Whether bytes still wait in the transport's send buffer."""
        return len(transport.dataBuffer) > transport.offset or transport._tempDataLen > 0

    @staticmethod
    def send_now(transport: tcp.Connection, data: bytes) -> bytes:
        """Send what the socket takes of ``data`` at once, if nothing waits before it and no
        pull producer or close is pending; return the rest, for the transport to buffer.

        Twisted's ``write`` buffers every write and sends it once the reactor reports
        the socket writable: two ``epoll_ctl`` calls and a reactor turn per response.
        An error (the client gone) is left to the transport: the rest is all of
        ``data``, and its own send meets the error and closes the connection.
        """
        if (not transport.connected or transport.disconnecting or transport._writeDisconnecting
                or transport._writeDisconnected
                or TwistedTransport.buffered(transport)
                or (transport.producer is not None and not transport.streamingProducer)):
            # A pull producer is asked for more only by the transport's own drained buffer.
            return data
        try:
            sent = transport.socket.send(data)
        except OSError:
            return data
        return data[sent:] if sent else data

    @staticmethod
    def set_send_buffer(transport: tcp.Connection, size: int) -> None:
        """Ask for a send buffer of ``size`` bytes on the transport's socket."""
        transport.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)

    @staticmethod
    def wait_writable(transport: abstract.FileDescriptor) -> None:
        """Pause the transport's producer until the socket can take more (as a full buffer does)."""
        producer: Any = transport.producer
        if producer is not None and not transport.producerPaused:
            transport.producerPaused = True
            producer.pauseProducing()
        transport.startWriting()


def send_bodiless_requests_at_once(transport: tcp.Connection) -> None:
    """Make ``transport`` (a plain socket of the HTTP client) send the head of a request
    without a body at once when nothing waits before it (``TwistedTransport.send_now``).

    The HTTP client writes a request head with the transport's ``writeSequence`` (so
    that is replaced on the transport itself, holding it weakly: Twisted breaks its own
    reference cycles when a connection ends, and this must not add one). A head that
    announces a body (Content-Length, Transfer-Encoding), and the body, take Twisted's
    path: head and first body bytes leave in one send, and a body producer that says
    it is done a turn after its last write is done before the upstream can answer.
    """
    connection = weakref.ref(transport)
    cls = type(transport)

    def write_sequence(data: Sequence[bytes]) -> None:
        transport = connection()
        if transport is None:
            return
        if sum(map(len, data)) > DIRECT_SEND_BYTES or any(map(_announces_body, data)):
            cls.writeSequence(transport, data)
            return
        rest = TwistedTransport.send_now(transport, b"".join(data))
        if rest:
            cls.write(transport, rest)

    patched: Any = transport
    patched.writeSequence = write_sequence


def _announces_body(line: bytes) -> bool:
    name = line[:18].lower()
    return name.startswith(b"content-length:") or name.startswith(b"transfer-encoding:")


def read_adaptively(transport: tcp.Connection) -> None:
    """Make ``transport`` read ``SMALL_READ_BYTES`` at a time, and its whole ``bufferSize``
    after a read that filled the small size (until one does not fill it again); left
    as it is if its class reads otherwise than Twisted's TCP connection does."""
    if type(transport).doRead is not tcp.Connection.doRead:
        return
    connection = weakref.ref(transport)  # no reference cycle (see send_bodiless_requests_at_once)
    sock = transport.socket
    large = False

    def do_read() -> Any:
        nonlocal large
        transport = connection()
        if transport is None:
            return main.CONNECTION_LOST
        try:
            data = sock.recv(transport.bufferSize if large else SMALL_READ_BYTES)
        except OSError as error:
            return None if error.args[0] == EWOULDBLOCK else main.CONNECTION_LOST
        large = len(data) >= SMALL_READ_BYTES
        return transport._dataReceived(data)

    patched: Any = transport
    patched.doRead = do_read
