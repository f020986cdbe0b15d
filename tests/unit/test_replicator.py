"""Tests of the replicator: missing copies made from a live copy, rate limit, never dying."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import attrs
import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import succeed
from twisted.internet.task import Clock

from s3orchestrator.config import PlacementPolicy
from s3orchestrator.jobs.replicator import ReplicatorJob
from s3orchestrator.metadata.records import QueuedReplication
from s3orchestrator.metadata.store import sqlite_metadata_store
from s3orchestrator.ops.metrics import replication_metrics
from s3orchestrator.placement.engine import Placement, Replicated
from s3orchestrator.stores.interface import ObjectMissing
from tests.unit.fakes import FakeRequestBody
from tests.unit.test_placement_copies import (
    NAMES,
    NEW,
    GatedStore,
    live_copies,
    placement_of,
    queued,
    stored_bytes,
    used,
)

TWO = PlacementPolicy(replicas=2, write_quorum=1)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[Any]:
    metadata = sqlite_metadata_store(str(tmp_path / "metadata.sqlite3"), reactor)
    yield metadata, {name: GatedStore(name, str(tmp_path / name), reactor) for name in NAMES}
    metadata.database.close()


def job_for(placement: Placement, metadata: Any, settings: PlacementPolicy = TWO,
            clock: Any = reactor) -> ReplicatorJob:
    return ReplicatorJob(placement, metadata, lambda: ["bkt"], placement.policy, lambda: settings, clock)


@pytest_twisted.ensureDeferred
async def test_a_copy_missing_while_stores_were_down_is_made_once_one_is_back(world) -> None:
    metadata, stores = world
    placement = await placement_of(world, TWO.replicas, TWO.write_quorum)
    stores["b"].refuse = stores["c"].refuse = True
    record = await placement.write("bkt", "k", FakeRequestBody(b"0123456789"), NEW)  # b refused, went down
    job = job_for(placement, metadata)
    assert await job.run_once() == 0  # c refused too, and went down
    assert placement.health.healthy() == {"a"}
    assert await job.run_once() == 0  # no store to copy to
    stores["b"].refuse = stores["c"].refuse = False
    placement.health.record_success("b")
    assert await job.run_once() == 1
    assert await live_copies(metadata, "k") == ["a", "b"]
    assert await queued(metadata) == []
    assert await stored_bytes(stores["b"], record.location) == b"0123456789"
    assert await used(metadata) == {"a": (10, 0), "b": (10, 0), "c": (0, 0)}
    assert (job.copies, job.bytes, job.missing, job.queued, job.oldest_ms) == (1, 10, 0, 0, None)


@pytest_twisted.ensureDeferred
async def test_a_store_that_cannot_take_the_copy_leaves_it_queued_and_counted(world) -> None:
    metadata, stores = world
    placement = await placement_of(world, TWO.replicas, TWO.write_quorum)
    for name in ("b", "c"):
        stores[name].refuse = True
    await placement.write("bkt", "k", FakeRequestBody(b"0123456789"), NEW)
    job = job_for(placement, metadata)
    assert await job.run_once() == 0
    assert await queued(metadata) == ["k"]
    assert (job.failures, job.missing, job.queued) == (1, 1, 1)
    assert job.oldest_ms is not None
    assert await used(metadata) == {"a": (10, 0), "b": (0, 0), "c": (0, 0)}
    lag = {metric.name: metric.samples[0].value for metric in replication_metrics(job, job.oldest_ms / 1000 + 7)}
    assert lag["s3orchestrator_replication_lag_seconds"] == 7
    assert lag["s3orchestrator_copies_missing"] == 1


@pytest_twisted.ensureDeferred
async def test_replicas_raised_by_a_reload_are_made_for_existing_objects(world) -> None:
    metadata, stores = world
    placement = await placement_of(world, 1, 1)
    await placement.write("bkt", "k", FakeRequestBody(b"0123456789"), NEW)
    placement.policy = lambda bucket: PlacementPolicy(replicas=3, write_quorum=1)
    job = ReplicatorJob(placement, metadata, lambda: ["bkt"], lambda bucket: placement.policy(bucket),
                        lambda: TWO, reactor)
    assert await job.run_once() == 2
    assert await live_copies(metadata, "k") == ["a", "b", "c"]
    assert await used(metadata) == {"a": (10, 0), "b": (10, 0), "c": (10, 0)}
    assert await queued(metadata) == []


@pytest_twisted.ensureDeferred
async def test_an_object_overwritten_meanwhile_is_not_given_a_copy(world) -> None:
    metadata, stores = world
    placement = await placement_of(world, 1, 1)
    old = await placement.write("bkt", "k", FakeRequestBody(b"old!"), NEW)
    await placement.write("bkt", "k", FakeRequestBody(b"new!"), NEW)
    reservation = (await metadata.reserve_copies(4, lambda usage: ["c"]))[0]
    assert await placement._replicate_to(old, [old], reservation) is False
    assert await live_copies(metadata, "k") == ["a"]
    assert await used(metadata) == {"a": (4, 0), "b": (0, 0), "c": (0, 0)}
    with pytest.raises(ObjectMissing):
        await stored_bytes(stores["c"], old.location)


class QueueOnly:
    """Metadata with a fixed replication queue (the rate-limit test needs nothing else)."""

    def __init__(self, entries: list[QueuedReplication]) -> None:
        self.entries = entries

    def queue_under_replicated(self, bucket: str, replicas: int, since_ms: int) -> Any:
        return succeed(0)

    def replication_queue(self, limit: int, after: Any = None) -> Any:
        return succeed(self.entries if after is None else [])


class Copier:
    def __init__(self) -> None:
        self.asked: list[str] = []
        self.fail = {"broken"}

    async def replicate(self, bucket: str, key: str) -> Replicated:
        self.asked.append(key)
        if key in self.fail:
            raise RuntimeError("store exploded")
        return Replicated(copies=1, size=100, missing=0)


def test_the_byte_rate_limit_spaces_the_copies_and_a_failing_object_does_not_stop_the_run() -> None:
    clock = Clock()
    copier = Copier()
    entries = [QueuedReplication("bkt", key, 0) for key in ("one", "broken", "two")]
    settings = attrs.evolve(TWO, replication_bytes_per_second=50, replication_concurrency=1)
    job = ReplicatorJob(copier, QueueOnly(entries), lambda: ["bkt"], lambda bucket: TWO,  # type: ignore[arg-type]
                        lambda: settings, clock)
    outcome = job.run_once()
    assert copier.asked == ["one"]
    clock.advance(1.9)
    assert copier.asked == ["one"]  # 100 bytes at 50 B/s: two seconds
    clock.advance(0.1)
    assert copier.asked == ["one", "broken", "two"]
    assert not outcome.called
    clock.advance(2)
    assert outcome.result == 2
    assert (job.copies, job.bytes, job.failures, job.missing, job.errors) == (2, 200, 1, 1, 0)


def test_soon_runs_at_once_and_a_run_asked_during_a_run_follows_it() -> None:
    clock = Clock()
    copier = Copier()
    settings = attrs.evolve(TWO, replication_bytes_per_second=100)
    job = ReplicatorJob(copier, QueueOnly([QueuedReplication("bkt", "one", 0)]), lambda: ["bkt"],  # type: ignore[arg-type]
                        lambda bucket: TWO, lambda: settings, clock)
    job.soon()
    job.soon()
    clock.advance(0)
    assert copier.asked == ["one"]
    following = job.run_once()
    clock.advance(1)
    assert copier.asked == ["one", "one"] and not following.called
    clock.advance(1)
    assert following.called and job.runs == 2
