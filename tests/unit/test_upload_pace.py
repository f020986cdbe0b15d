"""Tests for BodyReader: pause/resume reach the client, a too slow client is given up on."""

from __future__ import annotations

from twisted.internet.interfaces import IPushProducer
from twisted.internet.task import Clock
from zope.interface.verify import verifyObject

from s3orchestrator.config import DEFAULT_UPLOAD_RATE_WINDOW as WINDOW
from s3orchestrator.web.upload_pace import BodyReader
from tests.unit.fakes import RecordingTransport

RATE = 8192


class Reading:
    """A BodyReader over a RecordingTransport on a Clock, counting too_slow calls."""

    def __init__(self, min_rate: int = RATE, window: float = WINDOW) -> None:
        self.clock = Clock()
        self.transport = RecordingTransport(paused=False)
        self.too_slow = 0
        self.reader = BodyReader(self.transport, self.clock, min_rate, self._too_slow, window=window)

    def _too_slow(self) -> None:
        self.too_slow += 1

    def trickle(self, seconds: float, per_second: int) -> None:
        for _ in range(int(seconds)):
            self.clock.advance(1)
            self.reader.received(per_second)


def test_body_reader_is_a_push_producer_that_starts_with_the_client_paused() -> None:
    reading = Reading()
    assert verifyObject(IPushProducer, reading.reader)
    assert reading.transport.paused


def test_pause_resume_and_stop_reach_the_client() -> None:
    reading = Reading()
    reading.reader.resumeProducing()
    reading.reader.pauseProducing()
    reading.reader.stopProducing()
    assert reading.transport.calls == ["pause", "resume", "pause", "stop"]
    assert reading.clock.getDelayedCalls() == []


def test_a_trickling_client_is_too_slow_after_the_grace_period_and_one_window() -> None:
    reading = Reading()
    reading.reader.resumeProducing()

    reading.trickle(WINDOW, 1)
    assert reading.too_slow == 0

    reading.trickle(WINDOW, 1)
    assert reading.too_slow == 1
    assert reading.clock.getDelayedCalls() == []


def test_a_shorter_window_judges_sooner() -> None:
    reading = Reading(window=2)
    reading.reader.resumeProducing()

    reading.trickle(2, 1)
    assert reading.too_slow == 0

    reading.trickle(2, 1)
    assert reading.too_slow == 1


def test_a_client_at_the_minimum_rate_is_never_too_slow() -> None:
    reading = Reading()
    reading.reader.resumeProducing()
    reading.trickle(10 * WINDOW, RATE)
    assert reading.too_slow == 0


def test_time_the_daemon_keeps_the_client_paused_does_not_count() -> None:
    reading = Reading()
    # Paused from the start (store not ready), then by backpressure for minutes.
    reading.clock.advance(30)
    reading.reader.resumeProducing()
    reading.trickle(WINDOW, RATE)
    reading.reader.pauseProducing()
    reading.clock.advance(20 * WINDOW)
    assert reading.too_slow == 0

    reading.reader.resumeProducing()
    reading.trickle(2 * WINDOW, 0)
    assert reading.too_slow == 1


def test_a_window_mostly_paused_by_the_daemon_is_not_judged() -> None:
    reading = Reading()
    reading.reader.resumeProducing()
    reading.trickle(WINDOW + 1, RATE)
    reading.reader.pauseProducing()
    for _ in range(5):
        # A second of reading now and then, the rest paused by a slow store.
        reading.clock.advance(WINDOW - 1)
        reading.reader.resumeProducing()
        reading.clock.advance(1)
        reading.reader.pauseProducing()
    assert reading.too_slow == 0


def test_done_stops_watching() -> None:
    reading = Reading()
    reading.reader.resumeProducing()
    reading.reader.done()
    reading.trickle(5 * WINDOW, 0)
    assert reading.too_slow == 0


def test_a_zero_minimum_rate_watches_nothing() -> None:
    reading = Reading(min_rate=0)
    reading.reader.resumeProducing()
    assert reading.clock.getDelayedCalls() == []
