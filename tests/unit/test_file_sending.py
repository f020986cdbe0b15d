"""Tests for response bytes sent from a file (IFileConsumer): FileReader, FailoverReader, metering, send_file."""

from __future__ import annotations

import errno
import os
import socket
from pathlib import Path
from typing import Any, Iterator

import pytest
from twisted.internet import abstract, tcp
from twisted.internet.defer import succeed
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock

from s3orchestrator.metadata.traffic import Traffic
from s3orchestrator.placement.reader import FailoverReader
from s3orchestrator.sockets import TwistedTransport, send_bodiless_requests_at_once
from s3orchestrator.stores.directory import FileReader
from s3orchestrator.stores.interface import StoreUnavailable
from s3orchestrator.traffic.meter import MeteredStore
from s3orchestrator.web import sendfile
from tests.unit.fake_readers import drain
from tests.unit.fakes import CollectingConsumer, Outcome

DATA = bytes(range(256)) * 40  # 10240 bytes


class FileSendingConsumer(CollectingConsumer):
    """Takes file bytes by ``send_file`` (at most ``per_call`` a call; None once ``refuse_after`` calls)."""

    def __init__(self, per_call: int = 4096, refuse_after: int | None = None, error: OSError | None = None) -> None:
        super().__init__()
        self.per_call = per_call
        self.refuse_after = refuse_after
        self.error = error
        self.calls: list[tuple[int, int]] = []  # (offset, count)

    def send_file(self, fd: int, offset: int, count: int) -> int | None:
        if self.error is not None:
            raise self.error
        if self.refuse_after is not None and len(self.calls) >= self.refuse_after:
            return None
        self.calls.append((offset, count))
        data = os.pread(fd, min(count, self.per_call), offset)
        self.writes.append(data)
        return len(data)


def file_reader(tmp_path: Path, first: int = 0, length: int = len(DATA)) -> FileReader:
    path = tmp_path / "object"
    path.write_bytes(DATA)
    file = open(path, "rb", buffering=0)
    file.seek(first)
    return FileReader(file, length, chunk_size=1000)


def test_a_file_reader_hands_its_file_to_a_consumer_that_sends_files(tmp_path: Path) -> None:
    reader = file_reader(tmp_path, first=100, length=9000)
    consumer = FileSendingConsumer()
    streamed = Outcome(reader.stream_to(consumer))
    consumer.pull_all()
    assert streamed.succeeded and consumer.body == DATA[100:9100]
    assert consumer.calls == [(100, 9000), (4196, 4904), (8292, 808)]


def test_a_file_reader_writes_from_where_the_consumer_stopped_sending(tmp_path: Path) -> None:
    reader = file_reader(tmp_path, first=10, length=len(DATA) - 10)
    consumer = FileSendingConsumer(refuse_after=1)
    streamed = Outcome(reader.stream_to(consumer))
    consumer.pull_all()
    assert streamed.succeeded and consumer.body == DATA[10:]
    assert [len(write) for write in consumer.writes][:3] == [4096, 1000, 1000]


def test_a_failed_file_read_while_sending_is_a_store_failure(tmp_path: Path) -> None:
    reader = file_reader(tmp_path)
    consumer = FileSendingConsumer(error=OSError(errno.EIO, "I/O error"))
    streamed = Outcome(reader.stream_to(consumer))
    consumer.pull_all()
    assert not streamed.pending and not streamed.succeeded
    assert isinstance(streamed.failure.value, StoreUnavailable)


def test_a_file_shorter_than_its_object_fails_when_the_sender_finds_its_end(tmp_path: Path) -> None:
    reader = file_reader(tmp_path, length=len(DATA) + 5)
    consumer = FileSendingConsumer(per_call=100_000)

    def at_end(fd: int, offset: int, count: int) -> int | None:
        # As send_file does when sendfile(2) sends nothing: the file ended.
        return None if offset >= len(DATA) else FileSendingConsumer.send_file(consumer, fd, offset, count)

    consumer.send_file = at_end  # type: ignore[method-assign]
    streamed = Outcome(reader.stream_to(consumer))
    consumer.pull_all()
    assert not streamed.pending and "shorter" in str(streamed.failure.value)


def test_the_failover_reader_and_the_meter_pass_file_sending_on_and_count_it(tmp_path: Path) -> None:
    counted: list[tuple[str, int]] = []

    class Counter:
        def count(self, store: str, traffic: Traffic) -> None:
            pass

        def count_bytes(self, store: str, egress: int = 0, ingress: int = 0) -> None:
            counted.append((store, egress))

    class Store:
        name = "local"

        def open_read(self, location: str, byte_range: Any) -> Any:
            return succeed(file_reader(tmp_path))

    metered = MeteredStore(Store(), Counter())  # type: ignore[arg-type]
    clock = Clock()
    reader = FailoverReader([("local", "l")], len(DATA), None, lambda store, location, byte_range:
                            metered.open_read(location, byte_range), lambda *_: None, clock)
    consumer = FileSendingConsumer()
    opened = Outcome(reader.open())
    assert opened.succeeded
    streamed = Outcome(reader.stream_to(consumer))
    drain(clock)
    assert streamed.succeeded and consumer.body == DATA and consumer.unregistered
    assert len(consumer.calls) == 3
    assert sum(count for _, count in counted) == len(DATA)


def test_send_file_declines_what_is_not_a_plain_socket() -> None:
    class Request:
        sendfile_refused = finished = chunked = False
        method = b"GET"

        class channel:  # noqa: N801
            transport = object()  # a TLS layer or a test double: not a tcp.Connection

    assert sendfile.send_file(Request(), 0, 0, 10) is None  # type: ignore[arg-type]


def test_twisted_transports_keep_the_buffer_attributes_send_file_reads() -> None:
    # TwistedTransport reads these FileDescriptor attributes: a Twisted release renaming them breaks here.
    descriptor = abstract.FileDescriptor()
    for name in ("dataBuffer", "offset", "_tempDataLen", "producer", "producerPaused", "startWriting"):
        assert hasattr(descriptor, name), name
    assert not TwistedTransport.buffered(descriptor)
    descriptor.dataBuffer, descriptor.offset = b"abc", 1
    assert TwistedTransport.buffered(descriptor)


# -- small writes sent at once (S3Channel) ---------------------------------------------------------


class WatchingClock(Clock):
    """A reactor for a transport that is never polled: it only records what is watched for writing."""

    def __init__(self) -> None:
        super().__init__()
        self.writers: set = set()

    def addWriter(self, writer: Any) -> None:  # noqa: N802
        self.writers.add(writer)

    def removeWriter(self, writer: Any) -> None:  # noqa: N802
        self.writers.discard(writer)


@pytest.fixture
def connected() -> Iterator[tuple[tcp.Connection, socket.socket]]:
    """A Twisted socket transport (never registered with a reactor) and the peer's socket."""
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    theirs.setblocking(False)
    transport = tcp.Connection(ours, Protocol(), WatchingClock())
    transport.connected = True
    yield transport, theirs
    ours.close()
    theirs.close()


def test_a_write_with_nothing_waiting_is_sent_at_once(connected: tuple[tcp.Connection, socket.socket]) -> None:
    transport, peer = connected
    assert TwistedTransport.send_now(transport, b"HTTP/1.1 200 OK\r\n\r\n") == b""
    assert peer.recv(100) == b"HTTP/1.1 200 OK\r\n\r\n"
    assert not TwistedTransport.buffered(transport)


def test_a_write_behind_buffered_bytes_is_left_to_the_transport(
    connected: tuple[tcp.Connection, socket.socket]
) -> None:
    transport, peer = connected
    transport._tempDataBuffer.append(b"first")
    transport._tempDataLen = 5
    assert TwistedTransport.send_now(transport, b"second") == b"second"
    with pytest.raises(BlockingIOError):
        peer.recv(100)


def test_a_pull_producer_or_a_close_keeps_twisteds_path(connected: tuple[tcp.Connection, socket.socket]) -> None:
    transport, _ = connected
    transport.producer, transport.streamingProducer = object(), False  # resumed only by a drained buffer
    assert TwistedTransport.send_now(transport, b"data") == b"data"
    transport.producer = None
    transport.disconnecting = True
    assert TwistedTransport.send_now(transport, b"data") == b"data"


def test_what_a_full_socket_does_not_take_is_returned(connected: tuple[tcp.Connection, socket.socket]) -> None:
    transport, peer = connected
    data = os.urandom(8 * 1024 * 1024)
    rest = TwistedTransport.send_now(transport, data)
    assert 0 < len(rest) < len(data)
    assert data.endswith(rest)
    received = b""
    while True:
        try:
            received += peer.recv(1024 * 1024)
        except BlockingIOError:
            break
    assert received + rest == data


def test_an_upstream_request_head_without_a_body_is_sent_at_once(
    connected: tuple[tcp.Connection, socket.socket]
) -> None:
    transport, peer = connected
    send_bodiless_requests_at_once(transport)
    transport.writeSequence([b"GET /b/k HTTP/1.1\r\n", b"Host: h\r\n", b"\r\n"])
    assert peer.recv(100) == b"GET /b/k HTTP/1.1\r\nHost: h\r\n\r\n"
    assert not TwistedTransport.buffered(transport)


def test_an_upstream_request_head_announcing_a_body_waits_for_it(
    connected: tuple[tcp.Connection, socket.socket]
) -> None:
    transport, peer = connected
    send_bodiless_requests_at_once(transport)
    transport.writeSequence([b"PUT /b/k HTTP/1.1\r\n", b"Content-Length: 4\r\n", b"\r\n"])
    transport.write(b"body")
    assert TwistedTransport.buffered(transport)  # both leave together, when the reactor sends them
    assert transport in transport.reactor.writers
    with pytest.raises(BlockingIOError):
        peer.recv(100)


@pytest.mark.parametrize(("wmem_max", "tcp_wmem", "expected"), [
    ("4194304\n", "4096\t16384\t4194304\n", sendfile.SENDFILE_SNDBUF),  # granted 8 MiB, autotuning 4
    ("2097152\n", "4096\t16384\t4194304\n", sendfile.SENDFILE_SNDBUF),  # granted 4 MiB: as much
    ("212992\n", "4096\t16384\t4194304\n", None),  # the kernel's default cap: autotuning goes further
    ("4194304\n", "4096\t16384\t16777216\n", None),
    ("4194304\n", "garbled\n", None),
])
def test_file_sending_connections_get_a_larger_send_buffer_only_where_autotuning_would_not_reach_it(
    tmp_path: Path, wmem_max: str, tcp_wmem: str, expected: int | None,
) -> None:
    (tmp_path / "wmem_max").write_text(wmem_max)
    (tmp_path / "tcp_wmem").write_text(tcp_wmem)
    assert sendfile.send_buffer(tmp_path / "wmem_max", tmp_path / "tcp_wmem") == expected
    assert sendfile.send_buffer(tmp_path / "missing", tmp_path / "tcp_wmem") is None
