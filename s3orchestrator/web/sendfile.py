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
once the socket drains (``sockets.TwistedTransport``).
"""

from __future__ import annotations

import errno
import os
from typing import TYPE_CHECKING

from s3orchestrator.sockets import TwistedTransport

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
