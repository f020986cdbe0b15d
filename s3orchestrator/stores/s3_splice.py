"""The rest of an upstream GET response body moved by the kernel (``splice(2)``), not copied
through Python: upstream socket → pipe → the consumer's ``send_file`` (the client's socket).

``S3Reader`` starts one with ``start_splice`` at the reactor turn after it took the
response body, so every body byte Twisted's HTTP client had read (with the head, or
still in the parser's hands) has been written the ordinary way first. It is used only
when that is safe and worth it: the upstream connection is plain TCP (not TLS), the
body is an identity body of known length (Content-Length) with at least
``SPLICE_MIN_BYTES`` left, and the consumer takes bytes from a pipe (``send_file`` with
no offset: a plain-TCP client, a response that is not chunked; see web.sendfile).
Otherwise the reader relays the body through Python as before.

Once started, Twisted reads no more of the upstream socket: the splice watches a
duplicate of its descriptor for readability through the reactor, moves what is there
into its pipe (non-blocking), and hands the pipe's bytes to the consumer; when the
consumer cannot take them all (the client's socket is full), the consumer pauses its
producer and the splice stops watching the upstream until it is resumed. The pipe
is emptied before more is read, so the upstream is paced by the client. The HTTP
client's parser never sees those bytes, so the connection cannot go back to the
pool: the reader closes it when the splice ends (see ``S3Reader``).
"""

from __future__ import annotations

import fcntl
import os
from typing import Any, Callable

from twisted.internet import error as net_error
from twisted.internet import tcp
from twisted.internet.interfaces import IConsumer, IPushProducer, IReadDescriptor
from twisted.python.failure import Failure
from twisted.web._newclient import TransportProxyProducer
from zope.interface import implementer

from s3orchestrator.stores.interface import FileSender, file_sender

# A body with fewer bytes left than this is relayed through Python: setting a splice
# up (a pipe, a new upstream connection for the next request) costs more than it saves.
SPLICE_MIN_BYTES = 2 * 1024 * 1024
# The pipe's capacity asked for (Linux's default pipe-max-size): the most moved per call.
PIPE_BYTES = 1024 * 1024
# The most moved in one readiness event before the reactor runs other work (level-triggered:
# it calls again at once if the socket still has bytes).
TURN_BYTES = 8 * 1024 * 1024

AVAILABLE = hasattr(os, "splice") and hasattr(fcntl, "F_SETPIPE_SZ")


class TwistedResponse:
    """What the splice needs of Twisted's HTTP client: the socket under a response body.

    ``IResponse.deliverBody`` connects the body protocol to a ``TransportProxyProducer``
    over the connection's transport; its ``_producer`` is the one private attribute
    read here (a unit test breaks if Twisted renames it).
    """

    @staticmethod
    def plain_socket(body_transport: object) -> tcp.Connection | None:
        """The TCP transport of a response body, if it is a plain socket (not TLS) still connected."""
        if not isinstance(body_transport, TransportProxyProducer):
            return None
        # Under TLS this is the TLS protocol wrapper, not a tcp.Connection.
        transport = body_transport._producer
        if not isinstance(transport, tcp.Connection):
            return None
        return transport if transport.connected and not transport.disconnecting else None


def _open_pipe() -> tuple[int, int, int]:
    """A non-blocking pipe (read end, write end) and its capacity."""
    read_end, write_end = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
    except OSError:
        pass  # over the user's pipe allowance (pipe-user-pages-soft): the default size works too
    return read_end, write_end, fcntl.fcntl(write_end, fcntl.F_GETPIPE_SZ)


def start_splice(
    reactor: Any,
    body_transport: IPushProducer | None,
    left: int,
    consumer: IConsumer,
    moved: Callable[[int], None],
    ended: Callable[[Failure | None], None],
    paused: bool,
) -> BodySplice | None:
    """Splice the ``left`` bytes still to come on ``body_transport`` into ``consumer``, or None
    when that cannot or should not be done (the body is then read as before).

    ``moved(count)`` hears of bytes taken from the upstream; ``ended`` is told once, with
    None when every byte went to the consumer, else with the failure (see BodySplice).
    The splice starts paused if ``paused``.
    """
    if not AVAILABLE or left < SPLICE_MIN_BYTES:
        return None
    send = file_sender(consumer)
    transport = TwistedResponse.plain_socket(body_transport)
    if send is None or transport is None or body_transport is None:
        return None
    try:
        pipe = _open_pipe()
    except OSError:
        return None  # out of descriptors: the ordinary relay needs none
    upstream = -1
    try:
        if send(pipe[0], None, 0) is not None:
            upstream = os.dup(transport.fileno())
    except OSError:
        pass  # out of descriptors: read the body as before
    finally:
        if upstream < 0:
            os.close(pipe[0])
            os.close(pipe[1])
    if upstream < 0:
        return None
    body_transport.pauseProducing()  # Twisted reads no more of this socket
    splice = BodySplice(reactor, upstream, pipe, left, send, consumer.write, moved, ended)
    if not paused:
        splice.resume()
    return splice


@implementer(IReadDescriptor)
class BodySplice:
    """``left`` bytes moved from the socket ``upstream`` (a descriptor it owns) through
    ``pipe`` (read end, write end, capacity; owned too) to ``send`` (a consumer's send_file).

    Paused and resumed by the reader as its consumer pauses and resumes it. When the
    consumer cannot take a pipe any more (``send`` answers None), the pipe's bytes are
    read and given to ``write``. ``ended`` is told once: None when the last byte went to
    the consumer; a ConnectionDone or ConnectionLost failure when the upstream closed
    or failed early; the exception when the consumer raised one. ``close`` releases the
    descriptors (idempotent; ``ended`` is not told).
    """

    def __init__(
        self,
        reactor: Any,
        upstream: int,
        pipe: tuple[int, int, int],
        left: int,
        send: FileSender,
        write: Callable[[bytes], None],
        moved: Callable[[int], None],
        ended: Callable[[Failure | None], None],
    ) -> None:
        self._reactor = reactor
        self._upstream = upstream
        self._pipe_out, self._pipe_in, self._pipe_bytes = pipe
        self._left = left
        self._queued = 0  # bytes in the pipe, not yet given to the consumer
        self._send = send
        self._write = write
        self._moved = moved
        self._ended = ended
        self._paused = True
        self._watching = False
        self._pumping = False
        self._closed = False

    # -- driven by the reader ------------------------------------------------------------

    def pause(self) -> None:
        """Stop moving bytes (the consumer cannot take more now)."""
        self._paused = True
        self._unwatch()

    def resume(self) -> None:
        """Give the consumer what waits in the pipe, then move more as the upstream has it."""
        if self._closed:
            return
        self._paused = False
        self._watch()
        self._pump()

    def close(self) -> None:
        """Stop watching the upstream and close the descriptor and the pipe."""
        if self._closed:
            return
        self._closed = True
        self._unwatch()
        for fd in (self._upstream, self._pipe_out, self._pipe_in):
            os.close(fd)

    # -- IReadDescriptor (the reactor) ----------------------------------------------------

    def fileno(self) -> int:
        return -1 if self._closed else self._upstream

    def logPrefix(self) -> str:
        return "BodySplice"

    def doRead(self) -> None:
        self._pump()

    def connectionLost(self, reason: Failure) -> None:
        """The reactor dropped the descriptor (it is shutting down)."""
        self._end(reason)

    # -- moving bytes ---------------------------------------------------------------------

    def _pump(self) -> None:
        if self._pumping:
            return  # resumed from inside a send or write: the loop below goes on
        self._pumping = True
        try:
            taken = 0
            while not self._closed and not self._paused:
                if self._queued:
                    if not self._deliver():
                        break
                elif self._left == 0:
                    self._end(None)
                elif taken >= TURN_BYTES:
                    break  # the reactor calls again while the socket has bytes
                else:
                    count = self._take()
                    if not count:
                        break
                    taken += count
        finally:
            self._pumping = False

    def _take(self) -> int:
        """Move what the upstream has (up to the pipe's capacity) into the empty pipe."""
        try:
            count = os.splice(self._upstream, self._pipe_in, min(self._left, self._pipe_bytes),
                              flags=os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK)
        except BlockingIOError:
            return 0  # nothing there yet: the reactor tells us when there is
        except OSError as error:
            self._end(Failure(net_error.ConnectionLost(str(error))))
            return 0
        if count == 0:
            self._end(Failure(net_error.ConnectionDone("the upstream closed the connection")))
            return 0
        self._left -= count
        self._queued += count
        self._moved(count)
        return count

    def _deliver(self) -> bool:
        """Hand the pipe's bytes to the consumer; whether to go on."""
        try:
            sent = self._send(self._pipe_out, None, self._queued)
            if sent is None:
                data = os.read(self._pipe_out, self._queued)
                self._queued -= len(data)
                self._write(data)
                return True
        except Exception:
            self._end(Failure())
            return False
        if sent == 0:
            # The consumer paused us (its socket is full), or it is dropping the connection
            # and will stop us: either way, nothing more until it resumes us.
            self._unwatch()
            return False
        self._queued -= sent
        return True

    def _end(self, failure: Failure | None) -> None:
        if self._closed:
            return
        self.close()
        self._ended(failure)

    def _watch(self) -> None:
        if not self._watching and not self._closed:
            self._watching = True
            self._reactor.addReader(self)

    def _unwatch(self) -> None:
        if self._watching:
            self._watching = False
            self._reactor.removeReader(self)
