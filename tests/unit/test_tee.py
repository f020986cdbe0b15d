"""Tests for the tee: one request body streamed to several store writes with backpressure."""

from __future__ import annotations

import gc
import hashlib
from pathlib import Path
from typing import Any, Callable, Sequence

import pytest
import pytest_twisted
from treq.testing import RequestTraversalAgent
from twisted.internet import protocol, reactor
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IConsumer, IListeningPort
from twisted.internet.task import Clock, deferLater
from twisted.logger import globalLogPublisher
from twisted.web.resource import Resource
from twisted.web.server import Request
from zope.interface import implementer
from zope.interface.verify import verifyObject

from s3orchestrator.auth.payload import PayloadVerifier, VerifiedPayload
from s3orchestrator.config import S3StoreConfig
from s3orchestrator.errors import S3Error
from s3orchestrator.placement.tee import BranchDropped, Tee
from s3orchestrator.s3.call import RequestBody
from s3orchestrator.stores.directory import DirectoryStore
from s3orchestrator.stores.interface import (
    IObjectStore,
    IObjectWrite,
    ObjectMissing,
    StoreMisconfigured,
    StoreUnavailable,
)
from s3orchestrator.stores.s3 import S3Store
from s3orchestrator.web.body import UploadBody
from tests.unit.fakes import FakeBody, Outcome, RecordingTransport, auth_result, stored_bytes

START_TIMEOUT = 30.0


@implementer(RequestBody)
class Source(FakeBody):
    """A RequestBody the test drives: writes what it is told, records pause/resume/stop,
    counts ``release_tail`` calls and whether it was started."""

    def __init__(self, length: int) -> None:
        super().__init__([], length=length, hold=True)
        self.verified: Deferred[VerifiedPayload] = Deferred()
        self.tail_releases = 0

    def startProducing(self, consumer: IConsumer) -> Deferred[None]:
        self.calls.append("start")
        return super().startProducing(consumer)

    def release_tail(self) -> None:
        self.tail_releases += 1


@implementer(IConsumer)
class StoreConsumer:
    """A store's consumer: keeps every write (the very objects written) and can misbehave."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.raise_on_write: Exception | None = None

    def write(self, data: bytes) -> None:
        if self.raise_on_write is not None:
            raise self.raise_on_write
        self.writes.append(data)

    def registerProducer(self, producer: object, streaming: bool) -> None:
        raise AssertionError("a body producer is never registered on its consumer")

    def unregisterProducer(self) -> None:
        raise AssertionError("a body producer is never registered on its consumer")

    @property
    def body(self) -> bytes:
        return b"".join(self.writes)


class Started:
    """A tee whose branches were each started with a StoreConsumer."""

    def __init__(self, tee: Tee) -> None:
        self.tee = tee
        self.consumers = [StoreConsumer() for _ in tee.branches]
        pairs = zip(tee.branches, self.consumers, strict=True)
        self.produced = [Outcome(branch.startProducing(consumer)) for branch, consumer in pairs]


def upload(length: int) -> tuple[UploadBody, RecordingTransport]:
    """A real client body (UploadBody, unsigned payload) over a paused RecordingTransport."""
    transport = RecordingTransport(paused=True)
    headers = {"content-length": [str(length)]}
    body = UploadBody(transport, lambda on_data: PayloadVerifier(auth_result(), headers, on_data), lambda: None)
    return body, transport


def tee_of(source: RequestBody, count: int = 2, clock: Clock | None = None) -> Tee:
    return Tee(source, count, clock or Clock(), START_TIMEOUT)


# -- shape ----------------------------------------------------------------------------------


def test_branches_are_request_bodies_of_the_source_length() -> None:
    tee = tee_of(Source(5), count=3)
    assert len(tee.branches) == 3
    for branch in tee.branches:
        assert verifyObject(RequestBody, branch)
        assert branch.length == 5
    assert tee.live_branches == 3


def test_a_tee_needs_a_branch() -> None:
    with pytest.raises(ValueError):
        tee_of(Source(5), count=0)


# -- streaming ------------------------------------------------------------------------------


def test_chunks_reach_every_branch_in_order_and_every_branch_finishes_with_the_source() -> None:
    body, transport = upload(9)
    run = Started(tee_of(body, count=3))
    body.dataReceived(b"abc")
    body.dataReceived(b"def")
    body.dataReceived(b"ghi")
    body.bodyComplete()
    for branch in run.tee.branches:
        branch.release_tail()

    assert [consumer.body for consumer in run.consumers] == [b"abcdefghi"] * 3
    assert all(produced.succeeded for produced in run.produced)


def test_each_chunk_is_passed_on_at_once_and_never_copied_or_kept() -> None:
    source = Source(8)
    run = Started(tee_of(source))
    for chunk in (b"1234", b"5678"):
        source.write(chunk)
        assert all(consumer.writes[-1] is chunk for consumer in run.consumers)


def test_the_source_starts_only_once_every_branch_started() -> None:
    body, transport = upload(6)
    tee = tee_of(body)
    body.dataReceived(b"abc")
    body.dataReceived(b"def")  # held back as the tail
    first = StoreConsumer()
    tee.branches[0].startProducing(first)
    assert transport.paused and "resume" not in transport.calls
    assert first.writes == []

    second = StoreConsumer()
    tee.branches[1].startProducing(second)

    assert not transport.paused
    assert first.writes == second.writes == [b"abc"]


# -- backpressure ---------------------------------------------------------------------------


def test_one_paused_branch_pauses_the_source_until_every_branch_resumed() -> None:
    body, transport = upload(100)
    run = Started(tee_of(body))
    first, second = run.tee.branches
    assert not transport.paused

    first.pauseProducing()
    assert transport.paused
    second.pauseProducing()
    first.resumeProducing()
    assert transport.paused
    second.resumeProducing()

    assert not transport.paused


def test_nothing_flows_while_a_branch_is_paused_and_all_of_it_after() -> None:
    body, transport = upload(6)
    run = Started(tee_of(body))
    run.tee.branches[1].pauseProducing()
    body.dataReceived(b"abc")  # in flight when the client was paused: the source keeps it
    body.dataReceived(b"def")
    body.bodyComplete()
    assert [consumer.writes for consumer in run.consumers] == [[], []]

    run.tee.branches[1].resumeProducing()

    assert [consumer.body for consumer in run.consumers] == [b"abc", b"abc"]


def test_a_branch_paused_before_the_source_starts_keeps_it_paused() -> None:
    source = Source(4)
    tee = tee_of(source)
    tee.branches[0].pauseProducing()
    tee.branches[0].startProducing(StoreConsumer())
    tee.branches[1].startProducing(StoreConsumer())

    assert source.calls == ["pause", "start"]


def test_pauses_before_the_source_starts_are_not_passed_on_early() -> None:
    source = Source(4)
    tee = tee_of(source)
    tee.branches[0].pauseProducing()
    tee.branches[0].resumeProducing()
    assert source.calls == []


# -- dropped branches -----------------------------------------------------------------------


def test_a_stopped_branch_gets_nothing_more_never_fires_and_the_others_finish() -> None:
    body, transport = upload(6)
    run = Started(tee_of(body))
    body.dataReceived(b"ab")
    body.dataReceived(b"cd")
    run.tee.branches[1].stopProducing()
    body.dataReceived(b"ef")
    body.bodyComplete()
    run.tee.branches[0].release_tail()

    assert run.consumers[0].body == b"abcdef"
    assert run.consumers[1].body == b"ab"
    assert run.produced[0].succeeded
    assert run.produced[1].pending
    assert run.tee.live_branches == 1
    assert "stop" not in transport.calls


def test_a_branch_whose_consumer_raises_is_dropped_with_that_error() -> None:
    source = Source(6)
    run = Started(tee_of(source))
    run.consumers[0].raise_on_write = OSError("disk full")
    source.write(b"abc")
    source.write(b"def")

    assert run.produced[0].failure.check(OSError)
    assert run.consumers[1].body == b"abcdef"
    assert run.tee.live_branches == 1
    assert "stop" not in source.calls


def test_dropping_the_paused_branch_resumes_the_source() -> None:
    source = Source(6)
    run = Started(tee_of(source))
    run.tee.branches[0].pauseProducing()
    run.tee.branches[0].stopProducing()
    assert source.calls == ["start", "pause", "resume"]


def test_dropping_every_branch_stops_the_source() -> None:
    source = Source(6)
    run = Started(tee_of(source))
    run.tee.branches[0].stopProducing()
    assert "stop" not in source.calls
    run.tee.branches[1].stopProducing()

    assert source.calls[-1] == "stop"
    assert run.tee.live_branches == 0


def test_a_branch_that_drops_itself_while_being_written_does_not_disturb_the_others() -> None:
    source = Source(6)
    tee = tee_of(source)

    @implementer(IConsumer)
    class TooLong(StoreConsumer):
        def write(self, data: bytes) -> None:
            tee.branches[0].stopProducing()  # as a store that found the body too long does

    tee.branches[0].startProducing(TooLong())
    other = StoreConsumer()
    tee.branches[1].startProducing(other)
    source.write(b"abc")
    source.write(b"def")

    assert other.body == b"abcdef"
    assert "stop" not in source.calls


def test_every_branch_dropped_before_starting_stops_the_source_without_starting_it() -> None:
    source = Source(6)
    tee = tee_of(source)
    for branch in tee.branches:
        branch.stopProducing()
    assert source.calls == ["stop"]


# -- late starts ----------------------------------------------------------------------------


def test_a_branch_stopped_before_it_started_lets_the_others_start_the_source() -> None:
    source = Source(3)
    tee = tee_of(source)
    consumer = StoreConsumer()
    tee.branches[0].startProducing(consumer)
    tee.branches[1].stopProducing()
    source.write(b"abc")

    assert source.calls == ["start"]
    assert consumer.body == b"abc"


def test_a_branch_not_started_in_time_is_dropped_and_fails_when_started_late() -> None:
    clock = Clock()
    source = Source(3)
    tee = tee_of(source, count=3, clock=clock)
    early = [StoreConsumer(), StoreConsumer()]
    tee.branches[0].startProducing(early[0])
    tee.branches[1].startProducing(early[1])
    clock.advance(START_TIMEOUT - 1)
    assert source.calls == []

    clock.advance(1)
    source.write(b"abc")

    assert source.calls == ["start"]
    assert [consumer.body for consumer in early] == [b"abc", b"abc"]
    assert tee.live_branches == 2
    late = StoreConsumer()
    assert Outcome(tee.branches[2].startProducing(late)).failure.check(BranchDropped)
    assert late.writes == []


def test_no_timer_is_left_once_every_branch_started() -> None:
    clock = Clock()
    run = Started(tee_of(Source(3), clock=clock))
    assert clock.getDelayedCalls() == []
    assert run.tee.live_branches == 2


def test_no_timer_is_left_once_every_branch_dropped() -> None:
    clock = Clock()
    tee = tee_of(Source(3), clock=clock)
    for branch in tee.branches:
        branch.stopProducing()
    assert clock.getDelayedCalls() == []


# -- the tail and the outcome -----------------------------------------------------------------


def test_the_tail_is_released_once_every_live_branch_asked() -> None:
    body, _ = upload(6)
    run = Started(tee_of(body, count=3))
    body.dataReceived(b"abc")
    body.dataReceived(b"def")
    body.bodyComplete()
    run.tee.branches[0].release_tail()
    run.tee.branches[0].release_tail()
    run.tee.branches[1].release_tail()
    assert [consumer.body for consumer in run.consumers] == [b"abc"] * 3
    assert all(produced.pending for produced in run.produced)

    run.tee.branches[2].release_tail()

    assert [consumer.body for consumer in run.consumers] == [b"abcdef"] * 3
    assert all(produced.succeeded for produced in run.produced)


def test_the_tail_is_released_once_the_last_branch_that_did_not_ask_is_dropped() -> None:
    source = Source(6)
    run = Started(tee_of(source, count=3))
    run.tee.branches[0].release_tail()
    run.tee.branches[1].stopProducing()
    assert source.tail_releases == 0
    run.tee.branches[2].stopProducing()
    assert source.tail_releases == 1


def test_the_tail_is_released_once_only() -> None:
    source = Source(6)
    run = Started(tee_of(source))
    for branch in run.tee.branches:
        branch.release_tail()
    run.tee.branches[1].stopProducing()
    assert source.tail_releases == 1


def test_every_branch_is_verified_with_the_source_payload() -> None:
    body, _ = upload(6)
    run = Started(tee_of(body))
    verified = [Outcome(branch.verified) for branch in run.tee.branches]
    source_verified = Outcome(body.verified)
    body.dataReceived(b"abcdef")
    body.bodyComplete()

    payload = source_verified.result
    assert payload.md5_hex == hashlib.md5(b"abcdef").hexdigest()
    assert [outcome.result for outcome in verified] == [payload, payload]


def test_a_source_that_already_verified_verifies_every_branch() -> None:
    source = Source(0)
    payload = VerifiedPayload(size=0, md5_hex=hashlib.md5(b"").hexdigest(), checksums={})
    source.verified.callback(payload)
    tee = tee_of(source)
    assert [Outcome(branch.verified).result for branch in tee.branches] == [payload, payload]


def test_a_failed_body_fails_every_branch_and_their_writes_with_its_error() -> None:
    body, _ = upload(6)
    run = Started(tee_of(body))
    verified = [Outcome(branch.verified) for branch in run.tee.branches]
    source_verified = Outcome(body.verified)
    body.dataReceived(b"abc")
    body.abort(S3Error("RequestTimeout"))

    outcomes: list[Outcome[Any]] = [*verified, *run.produced, source_verified]
    for outcome in outcomes:
        error = outcome.failure.value
        assert isinstance(error, S3Error) and error.code == "RequestTimeout"
    assert [consumer.body for consumer in run.consumers] == [b"", b""]  # the tail is never written


def test_a_failed_body_leaves_no_unhandled_error_on_branches_nobody_awaited() -> None:
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    try:
        body, _ = upload(6)
        tee = tee_of(body)
        source_verified = Outcome(body.verified)
        body.abort(S3Error("RequestTimeout"))
        del tee
        gc.collect()
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert source_verified.failure.check(S3Error)
    assert [event for event in events if "log_failure" in event] == []


def test_a_source_raising_in_start_producing_fails_every_branch() -> None:
    class Broken(Source):
        def startProducing(self, consumer: IConsumer) -> Deferred[None]:
            raise RuntimeError("broken")

    run = Started(tee_of(Broken(3)))
    assert all(produced.failure.check(RuntimeError) for produced in run.produced)


def test_zero_length_body_finishes_every_branch_with_nothing_written() -> None:
    body, _ = upload(0)
    run = Started(tee_of(body))
    body.bodyComplete()
    for branch in run.tee.branches:
        branch.release_tail()
    assert all(produced.succeeded for produced in run.produced)
    assert [consumer.writes for consumer in run.consumers] == [[], []]


# -- real stores ----------------------------------------------------------------------------


def start_writes(stores: Sequence[IObjectStore], tee: Tee) -> list[IObjectWrite]:
    """One write of ``app/key`` per store, each taking one branch of ``tee``."""
    pairs = zip(stores, tee.branches, strict=True)
    return [store.start_write("app/key", branch, tee.length) for store, branch in pairs]


def directory_store(tmp_path: Path, name: str) -> DirectoryStore:
    return DirectoryStore(name, str(tmp_path / name), reactor)


@pytest_twisted.ensureDeferred
async def test_two_directory_stores_receive_identical_bytes(tmp_path: Path) -> None:
    data = bytes(range(256)) * 1024 + b"end"
    body, _ = upload(len(data))
    tee = tee_of(body)
    stores = [directory_store(tmp_path, "one"), directory_store(tmp_path, "two")]
    writes = start_writes(stores, tee)
    for start in range(0, len(data), 65536):
        body.dataReceived(data[start : start + 65536])
    body.bodyComplete()
    for branch in tee.branches:
        await branch.verified
        branch.release_tail()
    for write in writes:
        await write.done
        await write.publish()

    for store in stores:
        assert await stored_bytes(store, "app/key") == data


@pytest_twisted.ensureDeferred
async def test_a_directory_write_aborted_mid_body_leaves_the_other_to_finish(tmp_path: Path) -> None:
    data = b"x" * 1000
    body, transport = upload(len(data))
    tee = tee_of(body)
    stores = [directory_store(tmp_path, "one"), directory_store(tmp_path, "two")]
    writes = start_writes(stores, tee)
    body.dataReceived(data[:400])
    writes[1].abort()
    body.dataReceived(data[400:])
    body.bodyComplete()
    tee.branches[0].release_tail()
    await writes[0].done
    await writes[0].publish()

    assert Outcome(writes[1].done).failure.check(CancelledError)
    assert tee.live_branches == 1
    assert "stop" not in transport.calls
    assert await stored_bytes(stores[0], "app/key") == data
    with pytest.raises(ObjectMissing):
        await stores[1].open_read("app/key", None)



def s3_config(name: str, endpoint: str) -> S3StoreConfig:
    return S3StoreConfig(
        name=name, quota_bytes=0, endpoint=endpoint, region="eu-test-1",
        bucket="bucket", access_key_id="AKID", secret_access_key="secret", timeout=30.0,
    )


class UpstreamBucket(Resource):
    """A minimal upstream S3 bucket: keeps what is PUT and answers with its ETag, or
    answers ``fail_with`` (a status) instead."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.objects: dict[str, bytes] = {}
        self.fail_with: int | None = None

    def render_PUT(self, request: Request) -> bytes:
        if self.fail_with is not None:
            request.setResponseCode(self.fail_with)
            return b"<Error><Code>InternalError</Code></Error>"
        assert request.content is not None
        data = request.content.read()
        self.objects[request.path.decode()] = data
        request.setHeader(b"etag", f'"{hashlib.md5(data).hexdigest()}"'.encode())
        return b""


class Upstreams:
    """Two S3 stores, each over its own UpstreamBucket through an in-memory agent."""

    def __init__(self) -> None:
        self.clock = Clock()
        self.buckets = [UpstreamBucket(), UpstreamBucket()]
        self.agents = [RequestTraversalAgent(bucket) for bucket in self.buckets]
        self.stores = [
            S3Store(s3_config(f"up{index}", "http://s3.test:9000"), self.clock, agent=agent, chunk_size=1000)
            for index, agent in enumerate(self.agents)
        ]

    def flush(self) -> None:
        for _ in range(20):
            for agent in self.agents:
                agent.flush()


def put_through_tee(upstreams: Upstreams, data: bytes) -> list[Outcome[None]]:
    body, _ = upload(len(data))
    tee = Tee(body, 2, upstreams.clock, START_TIMEOUT)
    writes = start_writes(upstreams.stores, tee)
    upstreams.flush()
    for start in range(0, len(data), 1000):
        body.dataReceived(data[start : start + 1000])
        upstreams.flush()
    body.bodyComplete()
    for branch in tee.branches:
        branch.release_tail()
    upstreams.flush()
    return [Outcome(write.done) for write in writes]


def test_two_s3_stores_receive_identical_bytes() -> None:
    upstreams = Upstreams()
    data = bytes(range(256)) * 20
    done = put_through_tee(upstreams, data)
    assert all(outcome.succeeded for outcome in done)
    assert [bucket.objects for bucket in upstreams.buckets] == [{"/bucket/app/key": data}] * 2


def test_an_s3_store_that_fails_leaves_the_other_to_store_the_bytes() -> None:
    upstreams = Upstreams()
    upstreams.buckets[0].fail_with = 500
    data = b"y" * 3000
    done = put_through_tee(upstreams, data)
    assert done[0].failure.check(StoreUnavailable)
    assert done[1].succeeded
    assert upstreams.buckets[1].objects == {"/bucket/app/key": data}


class RefusingUpstream(protocol.Protocol):
    """An upstream that answers 403 as soon as a request's headers arrived, before its body."""

    answered = False

    def dataReceived(self, data: bytes) -> None:
        if not self.answered and b"\r\n\r\n" in data:
            self.answered = True
            body = b"<Error><Code>AccessDenied</Code></Error>"
            self.transport.write(  # type: ignore[union-attr]
                b"HTTP/1.1 403 Forbidden\r\nContent-Type: application/xml\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
            )


def loopback_s3_store(port: IListeningPort) -> S3Store:
    """An S3 store with a real Agent, for the upstream listening on ``port``."""
    return S3Store(s3_config("up", f"http://127.0.0.1:{port.getHost().port}"), reactor)


async def until(condition: Callable[[], bool]) -> None:
    """Let the reactor run until ``condition`` holds (the test's own timeout bounds it)."""
    while not condition():
        await deferLater(reactor, 0.01, lambda: None)


@pytest_twisted.ensureDeferred
async def test_an_upstream_refusing_mid_body_drops_its_branch_and_the_directory_store_finishes(
    tmp_path: Path,
) -> None:
    port = reactor.listenTCP(0, protocol.Factory.forProtocol(RefusingUpstream), interface="127.0.0.1")
    upstream = loopback_s3_store(port)
    try:
        data = b"z" * 300_000
        body, transport = upload(len(data))
        tee = Tee(body, 2, reactor, START_TIMEOUT)
        directory = directory_store(tmp_path, "dir")
        writes = start_writes([directory, upstream], tee)
        await until(lambda: not transport.paused)  # both stores started: the client may send
        body.dataReceived(data[:100_000])
        with pytest.raises(StoreMisconfigured):
            await writes[1].done
        assert tee.live_branches == 1
        body.dataReceived(data[100_000:])
        body.bodyComplete()
        tee.branches[0].release_tail()
        await writes[0].done
        await writes[0].publish()

        assert await stored_bytes(directory, "app/key") == data
        assert "stop" not in transport.calls
    finally:
        await upstream.stop()
        await port.stopListening()


class AcceptingUpstream(protocol.Protocol):
    """An upstream that reads one PUT (Content-Length framed) and answers 200 with its ETag."""

    def connectionMade(self) -> None:
        self.received = b""

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        head, found, body = self.received.partition(b"\r\n\r\n")
        if not found:
            return
        length = next(
            int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")
        )
        if len(body) == length:
            self.factory.bodies.append(body)  # type: ignore[attr-defined]
            etag = hashlib.md5(body).hexdigest().encode()
            self.transport.write(  # type: ignore[union-attr]
                b'HTTP/1.1 200 OK\r\nETag: "%s"\r\nContent-Length: 0\r\n\r\n' % etag
            )


@pytest_twisted.ensureDeferred
async def test_an_upstream_connection_that_fills_up_pauses_the_client_and_both_stores_get_every_byte(
    tmp_path: Path,
) -> None:
    factory = protocol.Factory.forProtocol(AcceptingUpstream)
    factory.bodies = []  # type: ignore[attr-defined]
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    upstream = loopback_s3_store(port)
    try:
        data = bytes(range(256)) * 4096  # 1 MiB
        chunk = 16384
        body, transport = upload(len(data))
        tee = Tee(body, 2, reactor, START_TIMEOUT)
        directory = directory_store(tmp_path, "dir")
        writes = start_writes([directory, upstream], tee)
        await until(lambda: not transport.paused)
        sent = 0
        # Without the reactor running nothing leaves the upstream connection's buffer:
        # it fills up and pauses its branch, which pauses the client.
        while not transport.paused and sent < len(data):
            body.dataReceived(data[sent : sent + chunk])
            sent += chunk
        assert transport.paused and sent < len(data)
        assert tee.branches[1].paused and not tee.branches[0].paused

        while sent < len(data):
            await until(lambda: not transport.paused)
            body.dataReceived(data[sent : sent + chunk])
            sent += chunk
        body.bodyComplete()
        for branch in tee.branches:
            branch.release_tail()
        await writes[0].done
        await writes[0].publish()
        await writes[1].done

        assert await stored_bytes(directory, "app/key") == data
        assert factory.bodies == [data]  # type: ignore[attr-defined]
    finally:
        await upstream.stop()
        await port.stopListening()
