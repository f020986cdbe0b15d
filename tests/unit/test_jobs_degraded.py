"""The jobs working on the metadata (reaper, cleanup, replicator, multipart expiry) skip their timed runs
while the metadata database is unavailable (degraded mode), logging that once."""

from __future__ import annotations

from typing import Any, Callable

import pytest
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.logger import LogEvent

from s3orchestrator.config import PlacementPolicy
from s3orchestrator.jobs.cleanup import CleanupJob
from s3orchestrator.jobs.multipart_expiry import MultipartExpiryJob
from s3orchestrator.jobs.reaper import ReaperJob
from s3orchestrator.jobs.replicator import ReplicatorJob


class CountingMetadata:
    """Metadata with nothing to do, counting the calls each job's run starts with."""

    def __init__(self) -> None:
        self.calls = 0

    def release_dead_reservations(self, now_ms: int) -> Deferred[int]:
        self.calls += 1
        return succeed(0)

    def dead_intents(self, now_ms: int) -> Deferred[list[Any]]:
        return succeed([])

    def forget_dead_instances(self, now_ms: int) -> Deferred[int]:
        return succeed(0)

    def due_cleanups(self, now_ms: int, limit: int) -> Deferred[list[Any]]:
        self.calls += 1
        return succeed([])

    def replication_queue(self, limit: int, after: Any = None) -> Deferred[list[Any]]:
        self.calls += 1
        return succeed([])

    def uploads_initiated_before(self, cutoff_ms: int, limit: int, after: Any = None) -> Deferred[list[Any]]:
        self.calls += 1
        return succeed([])

    def forget_completed_uploads(self, before_ms: int) -> Deferred[int]:
        return succeed(0)


def reaper(metadata: Any, clock: Clock, available: Callable[[], bool]) -> Any:
    return ReaperJob(metadata, dict, 60, clock, available)


def cleanup(metadata: Any, clock: Clock, available: Callable[[], bool]) -> Any:
    return CleanupJob(metadata, dict, 60, clock, available)


def replicator(metadata: Any, clock: Clock, available: Callable[[], bool]) -> Any:
    policy = PlacementPolicy(replication_interval=60)
    return ReplicatorJob(None, metadata, list, lambda bucket: policy, lambda: policy, clock,  # type: ignore[arg-type]
                         available)


def multipart_expiry(metadata: Any, clock: Clock, available: Callable[[], bool]) -> Any:
    return MultipartExpiryJob(None, metadata, 86400, 60, clock, metadata_available=available)  # type: ignore[arg-type]


@pytest.mark.parametrize("make", [reaper, cleanup, replicator, multipart_expiry])
def test_timed_runs_wait_for_the_metadata_and_the_outage_is_logged_once(
    make: Callable[..., Any], events: list[LogEvent]
) -> None:
    metadata, clock, state = CountingMetadata(), Clock(), {"up": False}
    job = make(metadata, clock, lambda: state["up"])
    job.startService()  # a timed run at start
    clock.advance(60)
    clock.advance(60)
    assert metadata.calls == 0
    assert job.gate.skipped == 3
    skipped = [event for event in events if "runs skipped" in event.get("log_format", "")]
    assert len(skipped) == 1
    state["up"] = True
    clock.advance(60)
    assert metadata.calls == 1
    assert job.runs == 1
    job.stopService()
