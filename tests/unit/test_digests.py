"""Tests for a request body's digests hashed in a worker thread: order, completion, backpressure."""

from __future__ import annotations

import hashlib
from typing import Any, Callable

from s3orchestrator.auth import digests
from s3orchestrator.auth.digests import BACKLOG_BYTES, ThreadedDigests
from s3orchestrator.auth.payload import PayloadVerifier
from s3orchestrator.auth.sigv4 import PayloadMode
from s3orchestrator.web.body import UploadBody
from tests.unit.fakes import CollectingConsumer, Outcome, RecordingTransport, auth_result


class ManualThreads:
    """A thread pool run by hand: jobs wait until ``run`` (callFromThread runs at once)."""

    def __init__(self) -> None:
        self.jobs: list[Callable[[], Any]] = []

    def callInThread(self, callable: Callable[..., Any], *args: Any) -> None:  # noqa: N802
        self.jobs.append(lambda: callable(*args))

    def callFromThread(self, callable: Callable[..., Any], *args: Any) -> None:  # noqa: N802
        callable(*args)

    def run(self) -> None:
        while self.jobs:
            self.jobs.pop(0)()


def test_chunks_are_hashed_in_order_by_one_job_and_done_fires_after_the_last() -> None:
    threads, md5, backlog = ManualThreads(), hashlib.md5(), []
    running = ThreadedDigests([md5], threads, backlog.append)
    for piece in (b"ab", b"cd", b"ef"):
        running.update(piece)
    assert len(threads.jobs) == 1  # one job at a time takes every queued chunk
    done = Outcome(running.done())
    assert done.pending
    threads.run()
    assert done.succeeded and md5.hexdigest() == hashlib.md5(b"abcdef").hexdigest()
    assert backlog == []


def test_a_backlog_pauses_the_client_until_half_of_it_is_hashed() -> None:
    threads, backlog = ManualThreads(), []
    running = ThreadedDigests([hashlib.md5()], threads, backlog.append)
    piece = bytes(BACKLOG_BYTES // 4)
    for _ in range(5):
        running.update(piece)
    assert backlog == [True]
    threads.run()
    assert backlog == [True, False]


def test_a_large_body_is_verified_once_its_thread_hashed_it_and_pauses_the_client_meanwhile() -> None:
    body = bytes(range(256)) * (digests.THREAD_MIN_BYTES // 256) * 12  # 12 MiB, past the backlog
    threads = ManualThreads()
    transport = RecordingTransport(paused=True)
    headers = {"content-length": [str(len(body))]}
    auth = auth_result(PayloadMode.SIGNED, hashlib.sha256(body).hexdigest())
    upload = UploadBody(transport, lambda on_data: PayloadVerifier(auth, headers, on_data, threads=threads),
                        lambda: None)
    consumer = CollectingConsumer()
    upload.startProducing(consumer)
    transport.calls.clear()
    step = 1024 * 1024
    for offset in range(0, len(body), step):
        upload.dataReceived(body[offset:offset + step])
    assert transport.calls[-1] == "pause"  # the hashing thread is behind
    upload.bodyComplete()
    verified = Outcome(upload.verified)
    assert verified.pending
    threads.run()
    assert verified.succeeded and verified.result.md5_hex == hashlib.md5(body).hexdigest()
    assert transport.calls[-1] == "resume"


def test_a_wrong_digest_is_still_refused_after_threaded_hashing() -> None:
    body = bytes(digests.THREAD_MIN_BYTES)
    threads = ManualThreads()
    auth = auth_result(PayloadMode.SIGNED, hashlib.sha256(b"other").hexdigest())
    upload = UploadBody(RecordingTransport(paused=True),
                        lambda on_data: PayloadVerifier(auth, {"content-length": [str(len(body))]}, on_data,
                                                        threads=threads), lambda: None)
    produced = Outcome(upload.startProducing(CollectingConsumer()))
    upload.dataReceived(body)
    upload.bodyComplete()
    verified = Outcome(upload.verified)
    threads.run()
    assert not verified.pending and not verified.succeeded
    assert verified.failure.value.code == "XAmzContentSHA256Mismatch"
    assert not produced.pending and not produced.succeeded
