"""The instance lease: registered at start, renewed by a heartbeat on a Clock (failures
logged, never fatal), deregistered at a clean stop."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock

from s3orchestrator.jobs.heartbeat import InstanceLease, default_instance_id
from s3orchestrator.metadata.interface import MetadataBusy
from s3orchestrator.metadata.records import Instance

NOW = 1_767_225_600


class RecordingMetadata:
    """Records what the lease asks of the metadata; ``outcomes`` answer the renewals."""

    def __init__(self) -> None:
        self.registered: list[Instance] = []
        self.renewals: list[int] = []
        self.deregistered: list[Instance] = []
        self.outcomes: list[Deferred[str]] = []

    def register_instance(self, instance: Instance) -> Deferred[None]:
        self.registered.append(instance)
        return succeed(None)

    def renew_instance(self, instance: Instance, expires_ms: int) -> Deferred[str]:
        self.renewals.append(expires_ms)
        return self.outcomes.pop(0) if self.outcomes else succeed("renewed")

    def deregister_instance(self, instance: Instance) -> Deferred[None]:
        self.deregistered.append(instance)
        return succeed(None)


def lease_on(metadata: Any, clock: Clock) -> InstanceLease:
    return InstanceLease(metadata, "node-a", 30.0, clock, host="h", pid=7)


@asynccontextmanager
async def beating(metadata: Any, clock: Clock) -> AsyncIterator[InstanceLease]:
    """``lease_on(metadata, clock)`` registered, its heartbeat running for the ``async with``."""
    lease = lease_on(metadata, clock)
    await lease.register()
    lease.startService()
    try:
        yield lease
    finally:
        await lease.stopService()


@pytest.fixture
def clock() -> Clock:
    clock = Clock()
    clock.advance(NOW)
    return clock


def test_the_default_instance_id_is_host_and_pid() -> None:
    host, _, pid = default_instance_id().rpartition(":")
    assert host and int(pid) > 0


@pytest_twisted.ensureDeferred
async def test_register_records_the_instance_with_its_lease(clock: Clock) -> None:
    metadata = RecordingMetadata()
    lease = lease_on(metadata, clock)
    await lease.register()
    assert metadata.registered == [Instance("node-a", "h", 7, NOW * 1000, (NOW + 30) * 1000)]


@pytest_twisted.ensureDeferred
async def test_the_heartbeat_renews_every_third_of_the_lease(clock: Clock) -> None:
    metadata = RecordingMetadata()
    async with beating(metadata, clock) as lease:
        clock.advance(10)
        clock.advance(10)
        assert metadata.renewals == [(NOW + 30) * 1000, (NOW + 40) * 1000, (NOW + 50) * 1000]
        assert lease.renewals == 3


@pytest_twisted.ensureDeferred
async def test_failed_heartbeats_are_logged_once_and_the_next_ones_still_run(clock: Clock, events: Any) -> None:
    metadata = RecordingMetadata()
    metadata.outcomes = [succeed("renewed"), fail(MetadataBusy("locked")), fail(MetadataBusy("locked"))]
    async with beating(metadata, clock) as lease:
        clock.advance(10)
        clock.advance(10)
        assert (lease.renewals, lease.failures) == (1, 2)
        clock.advance(10)
        assert (lease.renewals, lease.failures) == (2, 2)
    levels = [(event["log_level"].name, event["log_format"].split(":")[1].strip()) for event in events
              if event.get("instance_id") == "node-a"]
    assert levels == [("warn", "heartbeat failed, trying again every {interval"),
                      ("debug", "heartbeat failed, trying again every {interval"),
                      ("info", "heartbeat renewed the lease again")]


@pytest_twisted.ensureDeferred
async def test_a_lapsed_or_taken_lease_is_logged_and_counted(clock: Clock, events: Any) -> None:
    metadata = RecordingMetadata()
    metadata.outcomes = [succeed("lapsed"), succeed("taken")]
    lease = lease_on(metadata, clock)
    await lease.register()
    await lease.beat()
    await lease.beat()
    assert (lease.renewals, lease.lapses, lease.failures) == (1, 1, 1)
    levels = [event["log_level"].name for event in events if "Instance node-a" in str(event.get("log_format"))
              or event.get("instance_id") == "node-a"]
    assert levels == ["warn", "error"]


@pytest_twisted.ensureDeferred
async def test_deregister_forgets_the_instance_once(clock: Clock) -> None:
    metadata = RecordingMetadata()
    lease = lease_on(metadata, clock)
    await lease.register()
    await lease.deregister()
    await lease.deregister()
    assert [instance.id for instance in metadata.deregistered] == ["node-a"]
    await lease.beat()  # no longer registered: nothing to renew
    assert metadata.renewals == []


@pytest_twisted.ensureDeferred
async def test_renewals_through_a_real_store_extend_the_lease(make_store, clock: Clock) -> None:
    metadata = make_store(instance_id="node-a", clock=clock)
    await metadata.start()
    lease = InstanceLease(metadata, "node-a", 30.0, clock, host="h", pid=7)
    await lease.register()
    clock.advance(20)
    await lease.beat()
    assert [i.expires_ms for i in await metadata.list_instances()] == [(NOW + 50) * 1000]
    clock.advance(29)
    assert await metadata.release_dead_reservations(int(clock.seconds() * 1000)) == 0
    assert await metadata.forget_dead_instances(int(clock.seconds() * 1000)) == 0
    clock.advance(1)
    assert await metadata.forget_dead_instances(int(clock.seconds() * 1000)) == 1
