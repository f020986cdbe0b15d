"""Tests for CleanupRetrier: metadata cleanups the database could not run now (busy, or
unavailable: a server restarting, a connection lost) are retried until they are done."""

from __future__ import annotations

import pytest
from twisted.internet.defer import ensureDeferred
from twisted.internet.task import Clock

from s3orchestrator.metadata.interface import MetadataBusy, MetadataUnavailable
from s3orchestrator.placement.retry import CleanupRetrier


class FlakyCleanup:
    """A cleanup that fails with each of ``failures`` in turn, then succeeds."""

    def __init__(self, *failures: Exception) -> None:
        self.failures = list(failures)
        self.calls = 0
        self.done = False

    async def __call__(self) -> None:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        self.done = True


@pytest.mark.parametrize("failure", [MetadataBusy("locked"), MetadataUnavailable("the connection is lost")])
def test_a_cleanup_the_database_could_not_run_is_retried_until_done(failure: Exception) -> None:
    clock = Clock()
    retrier = CleanupRetrier(clock)
    cleanup = FlakyCleanup(failure, MetadataUnavailable("server starting"))
    ran = ensureDeferred(retrier.run("release of reservation 5", cleanup))
    assert ran.called and ran.result is None  # the caller goes on; the error is not its
    settled = retrier.settled()
    assert (cleanup.calls, cleanup.done) == (1, False)
    clock.advance(1)
    assert (cleanup.calls, cleanup.done) == (2, False)
    clock.advance(1.9)
    assert not settled.called
    clock.advance(0.1)  # the delay doubled
    assert (cleanup.calls, cleanup.done) == (3, True)
    assert settled.called


def test_other_errors_of_a_cleanup_reach_its_caller() -> None:
    retrier = CleanupRetrier(Clock())
    ran = ensureDeferred(retrier.run("release of reservation 5", FlakyCleanup(ValueError("bad"))))
    failure = ran.result
    ran.addErrback(lambda _: None)
    assert failure.check(ValueError)
    assert retrier.settled().called
