"""A response body sent from an open file by the kernel (``sendfile(2)``), not copied through Python.

A directory store's reader offers the consumer it streams to its file descriptor
(``IFileConsumer.send_file``); the request (S3Request) passes it here. The bytes go
from the page cache to the client's socket when that socket is a plain TCP (or
Unix) connection, the response is not chunked and nothing else waits in the
transport's send buffer. Otherwise (TLS, a chunked or HEAD response, a platform
or file that cannot) the answer is None, and the reader writes the bytes instead.

When the socket is full, the transport is told to watch for writability and its
producer (the channel, which pauses the response's producer) counts as paused, as
Twisted's own ``write`` does when its send buffer fills: the transport resumes it
once the socket drains. ``TwistedTransport`` is the one place that touches the
transport's buffer attributes (a unit test breaks if Twisted renames them); it
also sends small responses straight to the socket (``send_now``, see S3Channel).
"""

from __future__ import annotations

import errno
import os
from typing import TYPE_CHECKING, Any

from twisted.internet import abstract, tcp
from twisted.internet.interfaces import ISSLTransport

if TYPE_CHECKING:
    from s3orchestrator.web.site import S3Request

# Errors of the socket side: the client is gone, the connection is dropped.
_SOCKET_ERRORS = frozenset({errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN, errno.ESHUTDOWN, errno.ECONNABORTED,
                            errno.ETIMEDOUT})
# This file or socket cannot be sent from (a file system without splice support, say).
_UNSUPPORTED = frozenset({errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSOCK, errno.ESPIPE})
# The most handed to the kernel in one call (the reactor waits for it meanwhile).
SENDFILE_BYTES = 8 * 1024 * 1024

AVAILABLE = hasattr(os, "sendfile")


class TwistedTransport:
    """What the sender needs of a Twisted socket transport (``tcp.Connection``)."""

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
    def wait_writable(transport: abstract.FileDescriptor) -> None:
        """Pause the transport's producer until the socket can take more (as a full buffer does)."""
        producer: Any = transport.producer
        if producer is not None and not transport.producerPaused:
            transport.producerPaused = True
            producer.pauseProducing()
        transport.startWriting()


def send_file(request: S3Request, fd: int, offset: int, count: int) -> int | None:
    """Send up to ``count`` bytes of ``fd`` from ``offset`` as ``request``'s response body.

    Returns the bytes sent (0: none now, the response's producer is paused until the
    socket drains or the connection is dropped), or None when the bytes must be written
    instead. Raises OSError when reading the file fails.
    """
    channel = request.channel
    if (not AVAILABLE or request.sendfile_refused or request.finished or request.chunked
            or request.method == b"HEAD" or channel is None):
        return None
    transport = TwistedTransport.plain_socket(channel.transport)
    if transport is None:
        return None
    if not request.startedWriting:
        request.write(b"")  # the status line and headers, through the send buffer
        if request.chunked:
            return None
    if TwistedTransport.buffered(transport):
        TwistedTransport.wait_writable(transport)
        return 0
    wanted = min(count, SENDFILE_BYTES)
    try:
        sent = os.sendfile(transport.fileno(), fd, offset, wanted)
    except BlockingIOError:
        TwistedTransport.wait_writable(transport)
        return 0
    except OSError as error:
        if error.errno in _UNSUPPORTED:
            request.sendfile_refused = True
            return None
        if error.errno in _SOCKET_ERRORS:
            transport.abortConnection()  # connectionLost stops the producer
            return 0
        raise
    if sent == 0:
        return None  # the end of the file: the reader's read finds it short
    channel.resetTimeout()
    if sent < wanted:
        TwistedTransport.wait_writable(transport)
    return sent
