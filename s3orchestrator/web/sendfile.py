"""A response body sent from an open file (``sendfile(2)``) or a pipe (``splice(2)``) by the
kernel, not copied through Python.

A directory store's reader offers the consumer it streams to its file descriptor
(``IFileConsumer.send_file``); an upstream store's reader offers a pipe it splices
the upstream socket into (``stores.s3_splice``). The request (S3Request) passes
either here. The bytes go from the page cache (or the pipe) to the client's socket
when that socket is a plain TCP (or Unix) connection, the response is not chunked
and nothing else waits in the transport's send buffer. Otherwise (TLS, a chunked or
HEAD response, a platform or file that cannot) the answer is None, and the reader
writes the bytes instead.

Before a response's first bytes go this way, the connection's send buffer is raised
to ``SENDFILE_SNDBUF`` where the kernel grants at least what TCP's autotuning would
reach (``send_buffer``): fewer and larger ``sendfile`` calls, and less of the
loopback's receive work charged to the daemon (0.27 -> 0.19 CPU-s per GiB over
loopback, bench/large_transfers.py). Setting it ends autotuning for the connection,
so where ``net.core.wmem_max`` is small (212992, the kernel's default) it is left alone.

When the socket is full, the transport is told to watch for writability and its
producer (the channel, which pauses the response's producer) counts as paused, as
Twisted's own ``write`` does when its send buffer fills: the transport resumes it
once the socket drains (``sockets.TwistedTransport``).
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
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

#: The send buffer asked for a connection a file is sent on (the kernel doubles it, after
#: capping it at ``net.core.wmem_max``).
SENDFILE_SNDBUF = 4 * 1024 * 1024

AVAILABLE = hasattr(os, "sendfile")
SPLICE_AVAILABLE = hasattr(os, "splice")


def send_buffer(wmem_max: Path = Path("/proc/sys/net/core/wmem_max"),
                tcp_wmem: Path = Path("/proc/sys/net/ipv4/tcp_wmem")) -> int | None:
    """``SENDFILE_SNDBUF`` if the buffer the kernel would grant for it is at least the
    largest TCP's autotuning reaches (``tcp_wmem``'s third value), else None (unknown too)."""
    try:
        granted = 2 * min(SENDFILE_SNDBUF, int(wmem_max.read_text()))
        autotuned = int(tcp_wmem.read_text().split()[2])
    except (OSError, ValueError, IndexError):
        return None
    return SENDFILE_SNDBUF if granted >= autotuned else None


#: What file-sending connections get as SO_SNDBUF (None: left to autotuning).
SNDBUF = send_buffer()


def send_file(request: S3Request, fd: int, offset: int | None, count: int) -> int | None:
    """Send up to ``count`` bytes of ``fd`` from ``offset`` as ``request``'s response body.

    ``offset`` None: ``fd`` is a pipe with at least ``count`` bytes in it. Returns the
    bytes sent (0: none now, the response's producer is paused until the socket drains
    or the connection is dropped; or ``count`` was 0 and the bytes could be sent), or
    None when the bytes must be written instead. Raises OSError when reading the file fails.
    """
    channel = request.channel
    if (not (AVAILABLE if offset is not None else SPLICE_AVAILABLE) or request.sendfile_refused
            or request.finished or request.chunked or request.method == b"HEAD" or channel is None):
        return None
    transport = TwistedTransport.plain_socket(channel.transport)
    if transport is None:
        return None
    if not request.startedWriting:
        request.write(b"")  # the status line and headers, through the send buffer
        if request.chunked:
            return None
        if SNDBUF is not None:
            TwistedTransport.set_send_buffer(transport, SNDBUF)
    if count == 0:
        return 0
    if TwistedTransport.buffered(transport):
        TwistedTransport.wait_writable(transport)
        return 0
    wanted = min(count, SENDFILE_BYTES)
    try:
        if offset is None:
            sent = os.splice(fd, transport.fileno(), wanted, flags=os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK)
        else:
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
        return None  # the end of the file: the reader's read finds it short (a pipe is never empty here)
    channel.resetTimeout()
    if sent < wanted:
        TwistedTransport.wait_writable(transport)
    return sent
