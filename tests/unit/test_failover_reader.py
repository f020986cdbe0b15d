"""Tests for s3orchestrator.placement.reader: reading an object from whichever copy works."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import CancelledError, succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site
from zope.interface.verify import verifyObject

from s3orchestrator.placement.reader import CopyMismatch, FailoverReader, etags_conflict, order_copies
from s3orchestrator.stores.directory import DirectoryStore, FileReader
from s3orchestrator.stores.interface import IObjectReader, ObjectMissing, StoreMisconfigured, StoreUnavailable
from tests.unit.fake_readers import FakeCopies, FakeCopy, drain, step
from tests.unit.fakes import CollectingConsumer, Outcome, StringTransport

DATA = bytes(range(256)) * 4  # 1024 bytes, every offset distinguishable within 256
ETAG = "0123456789abcdef0123456789abcdef"


def make(
    copies: FakeCopies, stores: str = "abc", byte_range: tuple[int, int] | None = None,
    size: int = len(DATA), etag: str | None = ETAG,
) -> FailoverReader:
    return FailoverReader(
        [(store, f"bkt/{store}-key") for store in stores], size, etag,
        copies.open, copies.failed, copies.clock, byte_range,
    )


def fake(**copies: FakeCopy) -> FakeCopies:
    return FakeCopies(Clock(), **copies)


def opened(reader: FailoverReader) -> FailoverReader:
    outcome = Outcome(reader.open())
    assert outcome.succeeded
    return outcome.result


def read_all(reader: FailoverReader, copies: FakeCopies) -> tuple[Outcome[None], CollectingConsumer]:
    consumer = CollectingConsumer()
    streamed = Outcome(opened(reader).stream_to(consumer))
    drain(copies.clock)
    return streamed, consumer


# -- opening -------------------------------------------------------------------------------------


def test_reads_the_first_copy_whole_when_it_works() -> None:
    copies = fake(a=FakeCopy(DATA), b=FakeCopy(DATA))
    reader = make(copies, "ab")
    streamed, consumer = read_all(reader, copies)
    assert streamed.succeeded and consumer.body == DATA
    assert copies.opens == [("a", "bkt/a-key", None)]
    assert reader.store == "a" and reader.failovers == 0 and copies.reports == []
    assert consumer.unregistered and consumer.producer is None
    assert verifyObject(IObjectReader, reader)


@pytest.mark.parametrize("error", [StoreUnavailable("down"), ObjectMissing("gone"), StoreMisconfigured("403")])
def test_a_copy_that_fails_to_open_moves_to_the_next(error: Exception) -> None:
    copies = fake(a=FakeCopy(DATA, open_error=error), b=FakeCopy(DATA))
    reader = make(copies, "ab")
    streamed, consumer = read_all(reader, copies)
    assert streamed.succeeded and consumer.body == DATA
    assert [store for store, _, _ in copies.opens] == ["a", "b"]
    assert copies.reports == [("a", type(error).__name__)]
    assert reader.store == "b"


def test_a_copy_of_the_wrong_length_is_skipped_as_a_mismatch() -> None:
    copies = fake(a=FakeCopy(DATA[:-1]), b=FakeCopy(DATA))
    streamed, consumer = read_all(make(copies, "ab"), copies)
    assert streamed.succeeded and consumer.body == DATA
    assert copies.reports == [("a", "CopyMismatch")]
    assert copies.readers[0].calls == ["cancel"]  # the wrong copy's reader is released


def test_a_copy_with_another_etag_is_skipped_as_a_mismatch() -> None:
    copies = fake(a=FakeCopy(b"x" * len(DATA), etag='"ffffffffffffffffffffffffffffffff"'),
                  b=FakeCopy(DATA, etag=f'"{ETAG}"'))
    streamed, consumer = read_all(make(copies, "ab"), copies)
    assert streamed.succeeded and consumer.body == DATA
    assert copies.reports == [("a", "CopyMismatch")]
    assert copies.readers[0].calls == ["cancel"]


@pytest.mark.parametrize(("expected", "reported", "conflict"), [
    (ETAG, f'"{ETAG}"', False),
    (ETAG, f'W/"{ETAG.upper()}"', False),
    (ETAG, '"ffffffffffffffffffffffffffffffff"', True),
    (f"{ETAG}-3", f'"{"f" * 32}-3"', True),
    (f"{ETAG}-3", f'"{"f" * 32}"', False),  # a multipart object copied upstream by CopyObject
    (f"{ETAG}-3", f'"{"f" * 32}-5"', False),  # replicated with other part sizes
    (ETAG, f'"{"f" * 32}-2"', False),
])
def test_only_etags_of_one_layout_are_compared(expected: str, reported: str, conflict: bool) -> None:
    assert etags_conflict(expected, reported) is conflict


def test_a_copy_with_the_same_bytes_laid_out_otherwise_is_read() -> None:
    copies = fake(a=FakeCopy(DATA, etag=f'"{"f" * 32}"'))
    streamed, consumer = read_all(make(copies, "a", etag=f"{ETAG}-2"), copies)
    assert streamed.succeeded and consumer.body == DATA and copies.reports == []


def test_a_mismatch_counts_as_missing_for_the_caller() -> None:
    assert issubclass(CopyMismatch, ObjectMissing)


def test_a_store_that_reports_no_etag_is_trusted_by_length() -> None:
    copies = fake(a=FakeCopy(DATA, etag=None))
    streamed, consumer = read_all(make(copies, "a"), copies)
    assert streamed.succeeded and consumer.body == DATA and copies.reports == []


def test_no_expected_etag_compares_none() -> None:
    copies = fake(a=FakeCopy(DATA, etag='"something-else"'))
    streamed, consumer = read_all(make(copies, "a", etag=None), copies)
    assert streamed.succeeded and consumer.body == DATA


def test_every_copy_unavailable_fails_with_the_last_store_error() -> None:
    copies = fake(a=FakeCopy(DATA, open_error=StoreUnavailable("a down")),
                  b=FakeCopy(DATA, open_error=StoreUnavailable("b down")))
    outcome = Outcome(make(copies, "ab").open())
    assert outcome.failure.check(StoreUnavailable) and str(outcome.failure.value) == "b down"
    assert copies.reports == [("a", "StoreUnavailable"), ("b", "StoreUnavailable")]


def test_a_store_error_wins_over_missing_copies() -> None:
    copies = fake(a=FakeCopy(DATA, open_error=StoreUnavailable("a down")),
                  b=FakeCopy(DATA, open_error=ObjectMissing("b gone")))
    outcome = Outcome(make(copies, "ab").open())
    assert outcome.failure.check(StoreUnavailable)


def test_a_store_down_wins_over_a_misconfigured_one_as_worth_retrying() -> None:
    copies = fake(a=FakeCopy(DATA, open_error=StoreUnavailable("a down")),
                  b=FakeCopy(DATA, open_error=StoreMisconfigured("b refuses our key")),
                  c=FakeCopy(DATA, open_error=ObjectMissing("c gone")))
    outcome = Outcome(make(copies, "abc").open())
    assert outcome.failure.check(StoreUnavailable) and str(outcome.failure.value) == "a down"


def test_every_copy_missing_fails_with_object_missing() -> None:
    copies = fake(a=FakeCopy(DATA, open_error=ObjectMissing("a gone")), b=FakeCopy(DATA[:10]))
    outcome = Outcome(make(copies, "ab").open())
    assert outcome.failure.check(ObjectMissing)
    assert copies.reports == [("a", "ObjectMissing"), ("b", "CopyMismatch")]


def test_other_errors_are_not_failed_over() -> None:
    copies = fake(a=FakeCopy(DATA, open_error=ValueError("bad location")), b=FakeCopy(DATA))
    outcome = Outcome(make(copies, "ab").open())
    assert outcome.failure.check(ValueError)
    assert len(copies.opens) == 1


def test_an_empty_object_is_read_without_a_range() -> None:
    copies = fake(a=FakeCopy(b""))
    streamed, consumer = read_all(make(copies, "a", size=0), copies)
    assert streamed.succeeded and consumer.body == b""
    assert copies.opens == [("a", "bkt/a-key", None)]


def test_a_range_outside_the_object_is_refused() -> None:
    with pytest.raises(ValueError):
        make(fake(a=FakeCopy(DATA)), "a", byte_range=(0, len(DATA)))


# -- failing over mid-stream ---------------------------------------------------------------------


@pytest.mark.parametrize("fail_at", [0, 1, 37, 500, len(DATA) - 1])
def test_a_store_dying_mid_stream_is_resumed_from_the_next_copy(fail_at: int) -> None:
    copies = fake(a=FakeCopy(DATA, fail_at=fail_at), b=FakeCopy(DATA))
    reader = make(copies, "ab")
    consumer = CollectingConsumer()
    streamed = Outcome(opened(reader).stream_to(consumer))
    assert consumer.producer is reader and consumer.streaming is True
    drain(copies.clock)
    assert streamed.succeeded and consumer.body == DATA
    # Nothing delivered yet: the next copy is read whole, as the first was.
    rest = (fail_at, len(DATA) - 1) if fail_at else None
    assert copies.opens == [("a", "bkt/a-key", None), ("b", "bkt/b-key", rest)]
    assert copies.reports == [("a", "StoreUnavailable")]
    assert reader.failovers == 1 and reader.store == "b"
    assert consumer.unregistered and consumer.producer is None


def test_a_store_failing_after_the_last_byte_needs_no_other_copy() -> None:
    copies = fake(a=FakeCopy(DATA, fail_at=len(DATA)), b=FakeCopy(DATA))
    streamed, consumer = read_all(make(copies, "ab"), copies)
    assert streamed.succeeded and consumer.body == DATA
    assert [store for store, _, _ in copies.opens] == ["a"]
    assert copies.reports == [("a", "StoreUnavailable")]


@pytest.mark.parametrize("fail_at", [100, 101, 250, 299])
def test_a_range_read_resumes_with_the_rest_of_the_range(fail_at: int) -> None:
    copies = fake(a=FakeCopy(DATA, fail_at=fail_at), b=FakeCopy(DATA))
    streamed, consumer = read_all(make(copies, "ab", byte_range=(100, 299)), copies)
    assert streamed.succeeded and consumer.body == DATA[100:300]
    assert copies.opens == [("a", "bkt/a-key", (100, 299)), ("b", "bkt/b-key", (fail_at, 299))]


def test_failing_over_twice_still_gives_one_body() -> None:
    copies = fake(a=FakeCopy(DATA, fail_at=300), b=FakeCopy(DATA, fail_at=700), c=FakeCopy(DATA))
    reader = make(copies, "abc")
    streamed, consumer = read_all(reader, copies)
    assert streamed.succeeded and consumer.body == DATA
    assert [r for _, _, r in copies.opens] == [None, (300, 1023), (700, 1023)]
    assert reader.failovers == 2


def test_a_resume_skips_copies_that_fail_to_open() -> None:
    copies = fake(a=FakeCopy(DATA, fail_at=10), b=FakeCopy(DATA, open_error=StoreUnavailable("b down")),
                  c=FakeCopy(DATA))
    streamed, consumer = read_all(make(copies, "abc"), copies)
    assert streamed.succeeded and consumer.body == DATA
    assert copies.reports == [("a", "StoreUnavailable"), ("b", "StoreUnavailable")]


def test_a_resume_checks_the_etag_of_the_next_copy() -> None:
    copies = fake(a=FakeCopy(DATA, fail_at=10, etag=ETAG), b=FakeCopy(b"\0" * len(DATA), etag="stale"),
                  c=FakeCopy(DATA, etag=ETAG.upper()))
    streamed, consumer = read_all(make(copies, "abc"), copies)
    assert streamed.succeeded and consumer.body == DATA
    assert copies.reports == [("a", "StoreUnavailable"), ("b", "CopyMismatch")]


def test_a_mid_stream_failure_with_no_copy_left_fails_the_stream() -> None:
    copies = fake(a=FakeCopy(DATA, fail_at=10), b=FakeCopy(DATA, fail_at=20))
    streamed, consumer = read_all(make(copies, "ab"), copies)
    assert streamed.failure.check(StoreUnavailable)
    assert consumer.body == DATA[:20]  # what was sent is the object's, nothing else
    assert consumer.unregistered


def test_a_stream_that_ends_short_is_failed_over() -> None:
    copies = fake(a=FakeCopy(DATA), b=FakeCopy(DATA))
    reader = make(copies, "ab")
    consumer = CollectingConsumer()
    streamed = Outcome(opened(reader).stream_to(consumer))
    step(copies.clock)  # ten bytes in, the store claims it is done
    first = copies.readers[0]
    first._end(None, unregister=True)
    drain(copies.clock)
    assert streamed.succeeded and consumer.body == DATA
    assert copies.opens[1] == ("b", "bkt/b-key", (10, 1023))


def test_late_writes_of_a_copy_given_up_on_are_dropped() -> None:
    copies = fake(a=FakeCopy(DATA, fail_at=20), b=FakeCopy(DATA))
    reader = make(copies, "ab")
    consumer = CollectingConsumer()
    streamed = Outcome(opened(reader).stream_to(consumer))
    step(copies.clock)
    first_leg = copies.readers[0]._consumer
    assert first_leg is not None
    while len(copies.readers) < 2:
        step(copies.clock)
    first_leg.write(b"stale bytes")  # a store reader that failed yet writes on
    drain(copies.clock)
    assert streamed.succeeded and consumer.body == DATA


def test_a_consumer_error_is_not_failed_over() -> None:
    class Broken(CollectingConsumer):
        def write(self, data: bytes) -> None:
            raise RuntimeError("consumer broke")

    copies = fake(a=FakeCopy(DATA), b=FakeCopy(DATA))
    consumer = Broken()
    streamed = Outcome(opened(make(copies, "ab")).stream_to(consumer))
    drain(copies.clock)
    assert streamed.failure.check(RuntimeError)
    assert len(copies.opens) == 1 and copies.reports == []


# -- cancelling ----------------------------------------------------------------------------------


def test_cancel_during_open_cancels_the_open_and_opens_nothing_else() -> None:
    copies = fake(a=FakeCopy(DATA, hold=True), b=FakeCopy(DATA))
    reader = make(copies, "ab")
    outcome = Outcome(reader.open())
    assert outcome.pending
    reader.cancel()
    assert outcome.failure.check(CancelledError)
    assert copies.cancelled_opens == 1 and len(copies.opens) == 1 and copies.reports == []


def test_cancel_from_the_failure_report_opens_no_further_copy() -> None:
    copies = fake(a=FakeCopy(DATA, open_error=StoreUnavailable("down")), b=FakeCopy(DATA))
    reader = FailoverReader([("a", "la"), ("b", "lb")], len(DATA), ETAG,
                            copies.open, lambda store, error: reader.cancel(), copies.clock)
    outcome = Outcome(reader.open())
    assert outcome.failure.check(CancelledError)
    assert [store for store, _, _ in copies.opens] == ["a"]


def test_cancel_during_stream_cancels_the_store_reader() -> None:
    copies = fake(a=FakeCopy(DATA), b=FakeCopy(DATA))
    reader = make(copies, "ab")
    consumer = CollectingConsumer()
    streamed = Outcome(opened(reader).stream_to(consumer))
    step(copies.clock)
    reader.cancel()
    drain(copies.clock)
    assert streamed.failure.check(CancelledError)
    assert copies.readers[0].calls == ["cancel"]
    assert consumer.body == DATA[:10] and consumer.unregistered
    assert len(copies.opens) == 1 and copies.reports == []


def test_cancel_while_resuming_cancels_the_reopen() -> None:
    copies = fake(a=FakeCopy(DATA, fail_at=50), b=FakeCopy(DATA, hold=True), c=FakeCopy(DATA))
    reader = make(copies, "abc")
    consumer = CollectingConsumer()
    streamed = Outcome(opened(reader).stream_to(consumer))
    drain(copies.clock)
    assert streamed.pending and copies.opens[-1][0] == "b"
    reader.cancel()
    drain(copies.clock)
    assert streamed.failure.check(CancelledError)
    assert copies.cancelled_opens == 1 and [s for s, _, _ in copies.opens] == ["a", "b"]
    assert consumer.unregistered


def test_the_consumer_stopping_stops_the_store_reader() -> None:
    copies = fake(a=FakeCopy(DATA))
    reader = make(copies, "a")
    consumer = CollectingConsumer()
    streamed = Outcome(opened(reader).stream_to(consumer))
    step(copies.clock)
    reader.stopProducing()
    assert streamed.failure.check(CancelledError)
    assert copies.readers[0].calls == ["cancel"]


def test_cancel_after_open_releases_the_copy_and_stream_to_fails() -> None:
    copies = fake(a=FakeCopy(DATA))
    reader = opened(make(copies, "a"))
    reader.cancel()
    assert copies.readers[0].calls == ["cancel"]
    assert Outcome(reader.stream_to(CollectingConsumer())).failure.check(CancelledError)


# -- backpressure --------------------------------------------------------------------------------


def test_pause_and_resume_reach_the_store_reader() -> None:
    copies = fake(a=FakeCopy(DATA))
    reader = make(copies, "a")
    consumer = CollectingConsumer()
    streamed = Outcome(opened(reader).stream_to(consumer))
    step(copies.clock)
    reader.pauseProducing()
    drain(copies.clock)
    assert consumer.body == DATA[:10] and streamed.pending
    assert copies.readers[0].calls == ["pause"]
    reader.resumeProducing()
    drain(copies.clock)
    assert streamed.succeeded and consumer.body == DATA
    assert copies.readers[0].calls == ["pause", "resume"]


def test_a_consumer_paused_before_streaming_pauses_the_store_reader_at_once() -> None:
    copies = fake(a=FakeCopy(DATA))
    reader = opened(make(copies, "a"))
    reader.pauseProducing()
    consumer = CollectingConsumer()
    streamed = Outcome(reader.stream_to(consumer))
    drain(copies.clock)
    assert consumer.body == b"" and copies.readers[0].calls == ["pause"]
    reader.resumeProducing()
    drain(copies.clock)
    assert streamed.succeeded and consumer.body == DATA


def test_a_pause_during_the_switch_holds_the_next_copy() -> None:
    copies = fake(a=FakeCopy(DATA, fail_at=40), b=FakeCopy(DATA, hold=True))
    reader = make(copies, "ab")
    consumer = CollectingConsumer()
    streamed = Outcome(opened(reader).stream_to(consumer))
    drain(copies.clock)
    reader.pauseProducing()  # the consumer's buffer filled while b was being opened
    copies.held[0].callback(copies.readers[1])
    drain(copies.clock)
    assert consumer.body == DATA[:40] and copies.readers[1].calls == ["pause"]
    reader.resumeProducing()
    drain(copies.clock)
    assert streamed.succeeded and consumer.body == DATA
    assert copies.readers[1].calls == ["pause", "resume"]
    assert copies.readers[0].calls == []  # the dead one is left alone


def test_pause_after_a_switch_reaches_the_new_reader_only() -> None:
    copies = fake(a=FakeCopy(DATA, fail_at=40), b=FakeCopy(DATA))
    reader = make(copies, "ab")
    consumer = CollectingConsumer()
    Outcome(opened(reader).stream_to(consumer))
    for _ in range(8):
        step(copies.clock)
    assert len(copies.readers) == 2
    reader.pauseProducing()
    reader.resumeProducing()
    assert copies.readers[0].calls == []
    assert copies.readers[1].calls == ["pause", "resume"]


class _FailingFile(io.BytesIO):
    """A file whose reads fail with EIO from ``fail_at`` on (a disk dying)."""

    def __init__(self, data: bytes, fail_at: int) -> None:
        super().__init__(data)
        self.fail_at = fail_at

    def read(self, size: int | None = -1) -> bytes:
        if self.tell() >= self.fail_at:
            raise OSError(5, "Input/output error")
        return super().read(min(size if size is not None and size >= 0 else len(DATA), self.fail_at - self.tell()))


class _PausingConsumer(CollectingConsumer):
    """A consumer whose buffer is full after every write (it pauses its producer)."""

    def write(self, data: bytes) -> None:
        super().write(data)
        self.producer.pauseProducing()


def test_a_pull_reader_is_pulled_only_while_the_consumer_is_not_paused() -> None:
    clock = Clock()
    reader = FailoverReader([("a", "l")], len(DATA), None,
                            lambda *_: succeed(FileReader(io.BytesIO(DATA), len(DATA), chunk_size=100)),
                            lambda *_: None, clock)
    consumer = _PausingConsumer()
    streamed = Outcome(opened(reader).stream_to(consumer))
    assert consumer.producer is reader and consumer.streaming is True
    drain(clock)
    assert consumer.body == DATA[:100]  # paused after the first chunk: no more pulls
    reader.resumeProducing()
    drain(clock)
    assert consumer.body == DATA[:200]
    while streamed.pending:
        reader.resumeProducing()
        drain(clock)
    assert streamed.succeeded and consumer.body == DATA and consumer.unregistered


def test_failing_over_between_pull_and_push_readers() -> None:
    clock = Clock()
    copies = FakeCopies(clock, b=FakeCopy(DATA))

    def open_copy(store: str, location: str, byte_range: tuple[int, int] | None) -> Any:
        if store == "a":
            return succeed(FileReader(_FailingFile(DATA, 333), len(DATA), chunk_size=100))
        return copies.open(store, location, byte_range)

    reader = FailoverReader([("a", "l"), ("b", "l")], len(DATA), None, open_copy, copies.failed, clock)
    consumer = CollectingConsumer()
    streamed = Outcome(opened(reader).stream_to(consumer))
    drain(clock)
    assert streamed.succeeded and consumer.body == DATA
    assert copies.opens == [("b", "l", (333, 1023))]
    assert copies.reports == [("a", "StoreUnavailable")]


def test_an_http_response_gets_one_producer_and_one_body_across_a_switch() -> None:
    copies = fake(a=FakeCopy(DATA, fail_at=200), b=FakeCopy(DATA))
    reader = opened(make(copies, "ab"))
    streamed: list[Outcome[None]] = []

    class Download(Resource):
        isLeaf = True

        def render_GET(self, request: Request) -> int:
            request.setHeader(b"content-length", b"%d" % reader.length)
            outcome = Outcome(reader.stream_to(request).addCallback(lambda _: request.finish()))
            streamed.append(outcome)
            return NOT_DONE_YET

    channel = Site(Download(), reactor=copies.clock).buildProtocol(None)
    transport = StringTransport()
    channel.makeConnection(transport)
    channel.dataReceived(b"GET /bkt/key HTTP/1.1\r\nHost: example\r\n\r\n")
    while len(copies.readers) < 2:
        step(copies.clock)
    transport.producer.pauseProducing()  # what the socket does when its buffer fills
    step(copies.clock)
    sent = len(transport.value())
    assert copies.readers[1].calls == ["pause"]
    transport.producer.resumeProducing()
    drain(copies.clock)
    assert streamed[0].succeeded and len(transport.value()) > sent
    assert transport.value().endswith(b"\r\n\r\n" + DATA)
    channel.connectionLost(Failure(ConnectionDone()))


# -- real directory stores -----------------------------------------------------------------------


def two_directory_stores(tmp_path: Path) -> tuple[DirectoryStore, DirectoryStore, FailoverReader, list[str]]:
    first = DirectoryStore("one", str(tmp_path / "one"), reactor=None)
    second = DirectoryStore("two", str(tmp_path / "two"), reactor=None)
    stores = {"one": first, "two": second}
    for store in stores.values():
        path = store.path_for("bkt/key")
        os.makedirs(os.path.dirname(path))
        with open(path, "wb") as file:
            file.write(DATA)
    reports: list[str] = []
    reader = FailoverReader(
        [("one", "bkt/key"), ("two", "bkt/key")], len(DATA), ETAG,
        lambda store, location, byte_range: stores[store].open_read(location, byte_range),
        lambda store, error: reports.append(f"{store}: {type(error).__name__}"), Clock(),
    )
    return first, second, reader, reports


def read_from(reader: FailoverReader, clock: Clock) -> tuple[Outcome[None], CollectingConsumer]:
    consumer = CollectingConsumer()
    streamed = Outcome(opened(reader).stream_to(consumer))
    drain(clock)
    return streamed, consumer


def test_directory_copy_deleted_is_served_from_the_other_store(tmp_path: Path) -> None:
    first, _, reader, reports = two_directory_stores(tmp_path)
    os.unlink(first.path_for("bkt/key"))
    streamed, consumer = read_from(reader, reader._clock)  # type: ignore[arg-type]
    assert streamed.succeeded and consumer.body == DATA
    assert reports == ["one: ObjectMissing"] and reader.store == "two"


def test_directory_copy_truncated_is_served_from_the_other_store(tmp_path: Path) -> None:
    first, _, reader, reports = two_directory_stores(tmp_path)
    os.truncate(first.path_for("bkt/key"), 100)
    streamed, consumer = read_from(reader, reader._clock)  # type: ignore[arg-type]
    assert streamed.succeeded and consumer.body == DATA
    assert reports == ["one: CopyMismatch"]


def test_directory_copy_truncated_mid_read_resumes_from_the_other_store(tmp_path: Path) -> None:
    first, _, reader, reports = two_directory_stores(tmp_path)
    clock: Clock = reader._clock  # type: ignore[assignment]
    opened(reader)
    os.truncate(first.path_for("bkt/key"), 300)  # after the open: the read runs short mid-stream
    consumer = CollectingConsumer()
    streamed = Outcome(reader.stream_to(consumer))
    drain(clock)
    assert streamed.succeeded and consumer.body == DATA
    assert reports == ["one: StoreUnavailable"] and reader.failovers == 1


# -- ordering ------------------------------------------------------------------------------------


COPIES = [("a", "la"), ("b", "lb"), ("c", "lc"), ("d", "ld")]


def test_config_order_keeps_the_given_order() -> None:
    assert order_copies(COPIES, "config", {"d"}, {"a": 9}, {"d": 0.001}) == COPIES


def test_health_order_puts_healthy_stores_first_then_fewer_failures() -> None:
    ordered = order_copies(COPIES, "health", {"b", "c", "d"}, {"b": 2, "c": 0, "d": 1}, {})
    assert [store for store, _ in ordered] == ["c", "d", "b", "a"]


def test_health_order_ties_keep_config_order() -> None:
    assert order_copies(COPIES, "health", {"a", "b", "c", "d"}, {}, {}) == COPIES


def test_latency_order_puts_the_fastest_healthy_store_first() -> None:
    ordered = order_copies(COPIES, "latency", {"a", "b", "c"}, {}, {"a": 0.3, "b": 0.1, "d": 0.01})
    assert [store for store, _ in ordered] == ["b", "a", "c", "d"]  # c unmeasured, d down


def test_unknown_read_order_is_refused() -> None:
    with pytest.raises(ValueError):
        order_copies(COPIES, "random", set(), {}, {})
