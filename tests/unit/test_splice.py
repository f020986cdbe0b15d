"""Tests for an upstream response body moved by splice(2) (stores.s3_splice): a real loopback
TCP connection as the upstream socket, a fake consumer reading the pipe it is handed."""

from __future__ import annotations

import errno
import os
import socket
from typing import Iterator

import pytest
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from twisted.web._newclient import TransportProxyProducer

from s3orchestrator.stores import s3_splice
from s3orchestrator.stores.s3_splice import BodySplice, TwistedResponse, start_splice
from s3orchestrator.web import sendfile
from tests.unit.fakes import CollectingConsumer

pytestmark = pytest.mark.skipif(not s3_splice.AVAILABLE, reason="no os.splice on this platform")

MiB = 1024 * 1024


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture
def connection() -> Iterator[tuple[socket.socket, socket.socket]]:
    """(the upstream's end, our end) of a loopback TCP connection; ours non-blocking."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        ours = socket.create_connection(server.getsockname())
        theirs, _ = server.accept()
    ours.setblocking(False)
    theirs.setblocking(False)
    yield theirs, ours
    theirs.close()
    ours.close()


class PipeConsumer(CollectingConsumer):
    """Takes pipe bytes by ``send_file`` (at most ``per_call`` a call, then "full": 0 and a pause
    of ``splice``, as a full client socket does); None from the start if ``refuse``."""

    def __init__(self, per_call: int = MiB, refuse: bool = False, error: Exception | None = None) -> None:
        super().__init__()
        self.per_call = per_call
        self.refuse = refuse
        self.error = error
        self.splice: BodySplice | None = None
        self.full = False
        self.sent: list[int] = []

    def send_file(self, fd: int, offset: int | None, count: int) -> int | None:
        assert offset is None
        if self.error is not None:
            raise self.error
        if self.refuse:
            return None
        if count == 0:
            return 0
        if self.full:
            return 0
        data = os.read(fd, min(count, self.per_call))
        self.writes.append(data)
        self.sent.append(len(data))
        if len(data) < count:
            self.full = True
            assert self.splice is not None
            self.splice.pause()
        return len(data)

    def drained(self) -> None:
        """The client's socket took what it had: resume the splice."""
        self.full = False
        assert self.splice is not None
        self.splice.resume()


class Outcome:
    def __init__(self) -> None:
        self.ended: list[Failure | None] = []
        self.moved = 0

    def on_moved(self, count: int) -> None:
        self.moved += count

    def on_ended(self, failure: Failure | None) -> None:
        self.ended.append(failure)


def splice_of(ours: socket.socket, consumer: PipeConsumer, outcome: Outcome, left: int,
              reactor: MemoryReactorClock) -> BodySplice:
    pipe = s3_splice._open_pipe()
    splice = BodySplice(reactor, os.dup(ours.fileno()), pipe, left, consumer.send_file, consumer.write,
                        outcome.on_moved, outcome.on_ended)
    consumer.splice = splice
    return splice


def feed(theirs: socket.socket, data: bytes, splice: BodySplice, reactor: MemoryReactorClock,
         consumer: PipeConsumer, position: int = 0) -> None:
    """Send ``data`` (from ``position``) from the upstream's end as the socket takes it, driving the
    splice as the reactor would: doRead while it watches the socket, a drained client when it is full."""
    for _ in range(100_000):
        if position < len(data):
            try:
                position += theirs.send(data[position:position + 256 * 1024])
            except BlockingIOError:
                pass
        if consumer.full:
            consumer.drained()
        elif splice in reactor.readers:
            splice.doRead()
        elif position == len(data):
            return
    raise AssertionError("the splice made no progress")


def test_a_splice_moves_the_upstream_bytes_to_the_consumer_in_order(connection) -> None:
    theirs, ours = connection
    data = os.urandom(5 * MiB + 123)
    reactor, consumer, outcome = MemoryReactorClock(), PipeConsumer(), Outcome()
    splice = splice_of(ours, consumer, outcome, len(data), reactor)
    splice.resume()
    feed(theirs, data, splice, reactor, consumer)
    assert consumer.body == data
    assert outcome.ended == [None] and outcome.moved == len(data)
    assert splice not in reactor.readers


def test_a_full_consumer_pauses_the_splice_and_gets_the_pipe_first_on_resume(connection) -> None:
    theirs, ours = connection
    data = os.urandom(3 * MiB)
    reactor, consumer, outcome = MemoryReactorClock(), PipeConsumer(per_call=100_000), Outcome()
    splice = splice_of(ours, consumer, outcome, len(data), reactor)
    splice.resume()
    position = theirs.send(data[:200_000])
    splice.doRead()
    assert consumer.full and splice not in reactor.readers  # paused: the upstream is not watched
    feed(theirs, data, splice, reactor, consumer, position)
    assert consumer.body == data and outcome.ended == [None]
    assert max(consumer.sent) <= 100_000


def test_an_upstream_closing_early_ends_the_splice_with_the_connection_done(connection) -> None:
    theirs, ours = connection
    reactor, consumer, outcome = MemoryReactorClock(), PipeConsumer(), Outcome()
    splice = splice_of(ours, consumer, outcome, 4 * MiB, reactor)
    before = open_fds()
    splice.resume()
    theirs.send(b"x" * 1000)
    theirs.shutdown(socket.SHUT_WR)
    for _ in range(100):
        if outcome.ended:
            break
        splice.doRead()
    assert consumer.body == b"x" * 1000
    [failure] = outcome.ended
    assert failure is not None and failure.check(ConnectionDone)
    assert open_fds() == before - 3  # the socket's duplicate and the pipe


def test_a_consumer_that_cannot_take_a_pipe_is_written_the_bytes(connection) -> None:
    theirs, ours = connection
    data = os.urandom(3 * MiB)
    reactor, consumer, outcome = MemoryReactorClock(), PipeConsumer(refuse=True), Outcome()
    splice = splice_of(ours, consumer, outcome, len(data), reactor)
    splice.resume()
    feed(theirs, data, splice, reactor, consumer)
    assert consumer.body == data and outcome.ended == [None]


def test_a_consumer_failing_ends_the_splice_with_its_error(connection) -> None:
    theirs, ours = connection
    reactor, outcome = MemoryReactorClock(), Outcome()
    consumer = PipeConsumer(error=OSError(errno.EIO, "boom"))
    splice = splice_of(ours, consumer, outcome, 3 * MiB, reactor)
    splice.resume()
    theirs.send(b"y" * 5000)
    splice.doRead()
    [failure] = outcome.ended
    assert failure is not None and failure.check(OSError)
    assert splice not in reactor.readers


def test_closing_a_splice_releases_its_descriptors_and_reports_nothing(connection) -> None:
    theirs, ours = connection
    before = open_fds()
    reactor, consumer, outcome = MemoryReactorClock(), PipeConsumer(per_call=1000), Outcome()
    splice = splice_of(ours, consumer, outcome, 3 * MiB, reactor)
    splice.resume()
    theirs.send(b"z" * 50_000)
    splice.doRead()  # some bytes left in the pipe
    assert open_fds() == before + 3
    splice.close()
    splice.close()
    assert open_fds() == before
    assert outcome.ended == [] and splice not in reactor.readers
    splice.resume()  # a late resume does nothing
    assert splice not in reactor.readers


class _Tcp:
    """Not a tcp.Connection: what a TLS layer or a test double is to the splice."""


def test_start_splice_declines_what_it_cannot_or_should_not_splice(connection) -> None:
    reactor, outcome = MemoryReactorClock(), Outcome()
    before = open_fds()
    args = (outcome.on_moved, outcome.on_ended, False)
    proxy = TransportProxyProducer(_Tcp())
    assert start_splice(reactor, proxy, 64 * MiB, PipeConsumer(), *args) is None  # not a plain socket
    assert start_splice(reactor, None, 64 * MiB, PipeConsumer(), *args) is None
    small = s3_splice.SPLICE_MIN_BYTES - 1
    assert start_splice(reactor, proxy, small, PipeConsumer(), *args) is None
    assert start_splice(reactor, proxy, 64 * MiB, CollectingConsumer(), *args) is None  # no send_file
    assert open_fds() == before


def test_twisted_response_reads_the_socket_under_the_body_transport() -> None:
    # TwistedResponse reads TransportProxyProducer._producer: a Twisted release renaming it breaks here.
    marker = _Tcp()
    proxy = TransportProxyProducer(marker)
    assert proxy._producer is marker
    assert TwistedResponse.plain_socket(proxy) is None  # not a tcp.Connection
    assert TwistedResponse.plain_socket(marker) is None  # not a body transport


def test_send_file_declines_a_pipe_for_what_is_not_a_plain_socket() -> None:
    class Request:
        sendfile_refused = finished = chunked = False
        method = b"GET"

        class channel:  # noqa: N801
            transport = object()  # a TLS layer or a test double: not a tcp.Connection

    assert sendfile.send_file(Request(), 0, None, 0) is None  # type: ignore[arg-type]
    assert sendfile.send_file(Request(), 0, None, 10) is None  # type: ignore[arg-type]
