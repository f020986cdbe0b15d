"""Tests for response bytes sent from a file (IFileConsumer): FileReader, FailoverReader, metering, send_file."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import abstract
from twisted.internet.defer import succeed
from twisted.internet.task import Clock

from s3orchestrator.metadata.traffic import Traffic
from s3orchestrator.placement.reader import FailoverReader
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
    assert not sendfile.TwistedTransport.buffered(descriptor)
    descriptor.dataBuffer, descriptor.offset = b"abc", 1
    assert sendfile.TwistedTransport.buffered(descriptor)


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
