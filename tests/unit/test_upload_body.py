"""Tests for UploadBody: held-back tail, backpressure both ways, verification and client loss."""

from __future__ import annotations

import hashlib

from twisted.internet.error import ConnectionLost
from twisted.python.failure import Failure
from twisted.web.iweb import IBodyProducer
from zope.interface.verify import verifyObject

from s3orchestrator.auth.payload import PayloadVerifier
from s3orchestrator.auth.sigv4 import PayloadMode
from s3orchestrator.errors import S3Error
from s3orchestrator.web.body import ClientGone, UploadBody
from tests.unit.fakes import CollectingConsumer, Outcome, RecordingTransport, auth_result


class Upload:
    """An UploadBody of ``length`` bytes over a RecordingTransport, and what it did."""

    def __init__(self, length: int, mode: PayloadMode = PayloadMode.UNSIGNED, sha256: str | None = None) -> None:
        self.transport = RecordingTransport(paused=True)
        self.consumer = CollectingConsumer()
        self.ready_calls = 0
        auth = auth_result(mode, sha256)
        headers = {"content-length": [str(length)]}
        self.body = UploadBody(
            self.transport,
            lambda on_data: PayloadVerifier(auth, headers, on_data),
            self._ready,
        )
        self.verified = Outcome(self.body.verified)
        self.produced: Outcome[None] | None = None

    def _ready(self) -> None:
        self.ready_calls += 1

    def start(self) -> None:
        self.produced = Outcome(self.body.startProducing(self.consumer))

    def feed(self, *pieces: bytes) -> None:
        for piece in pieces:
            self.body.dataReceived(piece)


def test_upload_body_provides_ibodyproducer_with_the_decoded_length() -> None:
    upload = Upload(7)
    assert verifyObject(IBodyProducer, upload.body)
    assert upload.body.length == 7


def test_transport_stays_paused_until_start_producing_then_is_resumed() -> None:
    upload = Upload(6)
    upload.feed(b"abc", b"def")
    upload.body.bodyComplete()
    assert upload.transport.paused
    assert "resume" not in upload.transport.calls

    upload.start()

    assert not upload.transport.paused
    assert upload.transport.calls[-1] == "resume"


def test_on_consumer_ready_is_called_once_at_start_producing() -> None:
    upload = Upload(6)
    upload.feed(b"abc")
    assert upload.ready_calls == 0

    upload.start()
    assert upload.ready_calls == 1

    upload.body.pauseProducing()
    upload.body.resumeProducing()
    upload.feed(b"def")
    upload.body.bodyComplete()
    upload.body.release_tail()
    assert upload.ready_calls == 1


def test_data_fed_before_start_producing_is_delivered_afterwards_in_order() -> None:
    upload = Upload(6)
    upload.feed(b"ab", b"cd", b"ef")
    assert upload.consumer.writes == []

    upload.start()
    upload.body.bodyComplete()
    upload.body.release_tail()

    assert upload.consumer.writes == [b"ab", b"cd", b"ef"]


def test_last_piece_is_held_back_until_release_tail() -> None:
    upload = Upload(6)
    upload.start()
    upload.feed(b"ab", b"cd", b"ef")
    upload.body.bodyComplete()

    assert upload.verified.succeeded
    assert upload.consumer.body == b"abcd"
    assert upload.produced is not None and upload.produced.pending

    upload.body.release_tail()

    assert upload.consumer.body == b"abcdef"
    assert upload.produced.succeeded


def test_producer_deferred_fires_only_once_the_released_tail_is_written() -> None:
    upload = Upload(6)
    upload.start()
    upload.feed(b"abc", b"def")
    upload.body.bodyComplete()
    upload.body.pauseProducing()

    upload.body.release_tail()
    assert upload.consumer.body == b"abc"
    assert upload.produced is not None and upload.produced.pending

    upload.body.resumeProducing()
    assert upload.consumer.body == b"abcdef"
    assert upload.produced.succeeded


def test_consumer_pause_pauses_the_transport() -> None:
    upload = Upload(6)
    upload.start()
    assert not upload.transport.paused

    upload.body.pauseProducing()

    assert upload.transport.paused


def test_data_queued_while_the_consumer_is_paused_is_flushed_on_resume() -> None:
    upload = Upload(9)
    upload.start()
    upload.body.pauseProducing()
    upload.feed(b"abc", b"def", b"ghi")
    assert upload.consumer.writes == []

    upload.body.resumeProducing()

    # Everything but the held-back tail, in order; and the client may send again.
    assert upload.consumer.writes == [b"abc", b"def"]
    assert not upload.transport.paused


def test_stop_producing_means_nothing_more_is_written_and_the_deferred_never_fires() -> None:
    upload = Upload(6)
    upload.start()
    upload.feed(b"ab", b"cd")
    assert upload.consumer.body == b"ab"

    upload.body.stopProducing()
    upload.feed(b"ef")
    upload.body.bodyComplete()
    upload.body.release_tail()
    upload.body.resumeProducing()

    assert upload.consumer.body == b"ab"
    assert upload.produced is not None and upload.produced.pending


def test_signed_body_that_differs_fails_verified_and_producer_and_never_writes_the_tail() -> None:
    real = b"hello world!"
    upload = Upload(len(real), PayloadMode.SIGNED, hashlib.sha256(real).hexdigest())
    upload.start()
    upload.feed(b"hello ", b"WORLD!")

    upload.body.bodyComplete()

    error = upload.verified.failure.value
    assert isinstance(error, S3Error) and error.code == "XAmzContentSHA256Mismatch"
    assert upload.produced is not None
    produced_error = upload.produced.failure.value
    assert isinstance(produced_error, S3Error) and produced_error.code == "XAmzContentSHA256Mismatch"
    upload.body.release_tail()
    assert upload.consumer.body == b"hello "


def test_signed_body_that_matches_is_verified_with_its_md5() -> None:
    real = b"hello world!"
    upload = Upload(len(real), PayloadMode.SIGNED, hashlib.sha256(real).hexdigest())
    upload.start()
    upload.feed(b"hello ", b"world!")

    upload.body.bodyComplete()

    assert upload.verified.result.size == len(real)
    assert upload.verified.result.md5_hex == hashlib.md5(real).hexdigest()


def test_connection_lost_before_body_complete_fails_verified_with_client_gone() -> None:
    upload = Upload(6)
    upload.start()
    upload.feed(b"abc")

    upload.body.connectionLost(Failure(ConnectionLost("peer reset")))

    assert upload.verified.failure.check(ClientGone)
    assert upload.produced is not None and upload.produced.failure.check(ClientGone)


def test_abort_fails_verified_and_the_store_write_with_the_s3_error() -> None:
    upload = Upload(6)
    upload.start()
    upload.feed(b"abc")

    upload.body.abort(S3Error("RequestTimeout"))
    upload.feed(b"def")

    assert upload.verified.failure.value.code == "RequestTimeout"
    assert upload.produced is not None and upload.produced.failure.check(S3Error)
    assert b"def" not in upload.consumer.body


def test_connection_lost_after_body_complete_changes_nothing() -> None:
    upload = Upload(3)
    upload.start()
    upload.feed(b"abc")
    upload.body.bodyComplete()

    upload.body.connectionLost(Failure(ConnectionLost("peer closed")))
    upload.body.release_tail()

    assert upload.verified.succeeded
    assert upload.consumer.body == b"abc"
    assert upload.produced is not None and upload.produced.succeeded


def test_store_starting_after_the_client_left_gets_a_failed_producer() -> None:
    upload = Upload(6)
    upload.feed(b"abc")
    upload.body.connectionLost(Failure(ConnectionLost("peer reset")))

    upload.start()

    assert upload.produced is not None and upload.produced.failure.check(ClientGone)
    assert upload.consumer.writes == []


def test_zero_length_body_verifies_and_finishes_after_release_tail_with_nothing_written() -> None:
    upload = Upload(0)
    upload.start()

    upload.body.bodyComplete()
    assert upload.verified.result.size == 0
    assert upload.produced is not None and upload.produced.pending

    upload.body.release_tail()

    assert upload.produced.succeeded
    assert upload.consumer.writes == []
