"""The election of the cluster-wide jobs through lease rows (both engines): instances
sharing one metadata database run each job's rounds one at a time, and another takes
over when the runner dies or stops."""

from __future__ import annotations

from typing import Any, Callable

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred, DeferredList, ensureDeferred, gatherResults, succeed
from twisted.internet.task import Clock
from twisted.logger import LogEvent

from s3orchestrator.config import PlacementPolicy
from s3orchestrator.jobs.election import JobElection, JobLease
from s3orchestrator.jobs.replicator import ReplicatorJob
from s3orchestrator.jobs.timed import TimedJob
from s3orchestrator.metadata.job_leases import JobLeases
from s3orchestrator.metadata.store import MetadataStore

INTERVAL = 10.0
LEASE = 30.0


class TrackedLeases(JobLeases):
    """The job leases, with the statements still in flight, for a test to wait for."""

    def __init__(self, store: MetadataStore) -> None:
        super().__init__(store.database)
        self.pending: set[Deferred[Any]] = set()

    def _track(self, result: Deferred[Any]) -> Deferred[Any]:
        self.pending.add(result)

        def done(value: Any) -> Any:
            self.pending.discard(result)
            return value

        return result.addBoth(done)

    def take(self, job: str, owner: str, now_ms: int, duration_ms: int) -> Deferred[bool]:
        return self._track(super().take(job, owner, now_ms, duration_ms))

    def give_up(self, job: str, owner: str) -> Deferred[bool]:
        return self._track(super().give_up(job, owner))


class CountingJob(TimedJob):
    """A cluster-wide job whose rounds record when they ran (and raise if told to)."""

    description = "Counting"

    def __init__(self, clock: Clock, lease: JobLease, available: Callable[[], bool] = lambda: True) -> None:
        super().__init__(INTERVAL, clock, available, lease)
        self.rounds: list[float] = []
        self.fail = False

    async def run(self) -> int:
        self.rounds.append(self.clock.seconds())
        if self.fail:
            raise RuntimeError("round failed")
        return 1


class Instance:
    """One daemon of the cluster: its own metadata connection, clock and election."""

    def __init__(self, name: str, store: MetadataStore, available: Callable[[], bool] = lambda: True) -> None:
        self.clock = Clock()
        self.leases = TrackedLeases(store)
        self.election = JobElection(self.leases, name, LEASE, self.clock)
        self.job = CountingJob(self.clock, self.election.lease("counting"), available)

    async def settle(self) -> None:
        """Wait until this instance's lease statements in flight have been answered."""
        while self.leases.pending:
            await DeferredList(list(self.leases.pending), consumeErrors=True)


async def advance(seconds: int, *instances: Instance) -> None:
    """Let ``seconds`` pass, one at a time, on every instance given (the others are frozen:
    dead), each second's lease statements answered before the next."""
    for _ in range(seconds):
        for instance in instances:
            instance.clock.advance(1)
        for instance in instances:
            await instance.settle()


async def started_store(make_store: Callable[..., MetadataStore]) -> MetadataStore:
    store = make_store()
    await store.start()
    return store


async def two_instances(make_store: Callable[..., MetadataStore]) -> tuple[Instance, Instance]:
    first = Instance("host-a:1", await started_store(make_store))
    second = Instance("host-b:2", await started_store(make_store))
    first.job.startService()
    await first.settle()
    second.job.startService()
    await second.settle()
    return first, second


def stop(instance: Instance) -> Deferred[None]:
    return instance.job.stopService()


# -- the lease rows -----------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_a_lease_is_taken_once_renewed_by_its_owner_and_taken_over_once_expired(make_store) -> None:
    leases = JobLeases((await started_store(make_store)).database)
    assert await leases.take("reaper", "a:1", 1_000, 30_000)
    assert not await leases.take("reaper", "b:2", 2_000, 30_000)
    assert await leases.take("reaper", "a:1", 11_000, 30_000)
    assert not await leases.take("reaper", "b:2", 40_999, 30_000)
    assert [(r.owner, r.acquired_ms, r.expires_ms) for r in await leases.holders()] == [("a:1", 1_000, 41_000)]
    assert await leases.take("reaper", "b:2", 41_000, 30_000)
    assert [(r.owner, r.acquired_ms, r.expires_ms) for r in await leases.holders()] == [("b:2", 41_000, 71_000)]


@pytest_twisted.ensureDeferred
async def test_only_the_holder_gives_a_lease_up_and_then_anyone_takes_it(make_store) -> None:
    leases = JobLeases((await started_store(make_store)).database)
    assert await leases.take("cleanup", "a:1", 1_000, 30_000)
    assert await leases.take("reaper", "a:1", 1_000, 30_000)
    assert not await leases.give_up("cleanup", "b:2")
    assert await leases.give_up("cleanup", "a:1")
    assert await leases.take("cleanup", "b:2", 2_000, 30_000)
    assert [(r.job, r.owner) for r in await leases.holders()] == [("cleanup", "b:2"), ("reaper", "a:1")]


@pytest_twisted.ensureDeferred
async def test_of_instances_taking_a_free_lease_at_once_exactly_one_gets_it(make_store) -> None:
    stores = [JobLeases((await started_store(make_store)).database) for _ in range(4)]
    for round_ms in (1_000, 100_000, 200_000):  # free, then expired each time
        taken = await gatherResults([
            leases.take("replicator", f"host-{i}:1", round_ms, 30_000) for i, leases in enumerate(stores)
        ])
        assert sorted(taken) == [False, False, False, True]


# -- the jobs -----------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_two_instances_on_one_database_run_each_round_once(make_store) -> None:
    first, second = await two_instances(make_store)
    try:
        for _ in range(6):
            await advance(int(INTERVAL), first, second)
        assert len(first.job.rounds) == 7  # at start, then every interval
        assert second.job.rounds == []
        assert first.election.lease("counting").leads
        assert not second.election.lease("counting").leads
    finally:
        await stop(first)
        await stop(second)


@pytest_twisted.ensureDeferred
async def test_when_the_runner_dies_another_takes_over_after_its_lease(make_store, db_rows) -> None:
    first, second = await two_instances(make_store)
    await advance(25, first, second)  # renewed at 10 and 20 (every third of the lease)
    [(expires_ms,)] = db_rows("SELECT expires_ms FROM job_leases WHERE owner = 'host-a:1'")
    assert expires_ms == (20 + LEASE) * 1000
    try:
        # The first instance dies: its clock stands still, it neither runs nor renews.
        await advance(int(LEASE + INTERVAL), second)
        assert second.job.rounds
        assert expires_ms / 1000 <= second.job.rounds[0] <= expires_ms / 1000 + INTERVAL
        assert db_rows("SELECT owner FROM job_leases") == [("host-b:2",)]
        assert second.job.lease is not None and second.job.lease.leads
    finally:
        await stop(second)


@pytest_twisted.ensureDeferred
async def test_a_clean_stop_hands_the_job_over_at_the_next_round(make_store, db_rows) -> None:
    first, second = await two_instances(make_store)
    try:
        await advance(5, first, second)
        await stop(first)
        assert db_rows("SELECT owner FROM job_leases") == []
        await advance(int(INTERVAL), second)
        assert second.job.rounds == [10.0]  # its next round, long before the lease would have run out
        assert first.job.lease is not None and not first.job.lease.leads
    finally:
        await stop(second)


@pytest_twisted.ensureDeferred
async def test_a_round_that_fails_keeps_the_lease_and_the_next_round_runs_there(make_store) -> None:
    first, second = await two_instances(make_store)
    first.job.fail = True  # from its second round on
    try:
        await advance(int(3 * INTERVAL), first, second)
        assert first.job.rounds == [0.0, 10.0, 20.0, 30.0] and first.job.errors == 3
        assert second.job.rounds == []
        first.job.fail = False
        await advance(int(INTERVAL), first, second)
        assert first.job.runs == 5 and first.job.errors == 3
        assert second.job.rounds == []
    finally:
        await stop(first)
        await stop(second)


@pytest_twisted.ensureDeferred
async def test_without_metadata_an_instance_neither_runs_nor_takes_the_lease(make_store, db_rows) -> None:
    state = {"up": False}
    first = Instance("host-a:1", await started_store(make_store), lambda: state["up"])
    second = Instance("host-b:2", await started_store(make_store))
    first.job.startService()
    await first.settle()
    try:
        await advance(int(INTERVAL), first)
        assert first.job.rounds == [] and first.job.gate.skipped == 2
        assert db_rows("SELECT owner FROM job_leases") == []
        second.job.startService()
        await second.settle()
        assert second.job.rounds == [0.0]
        state["up"] = True
        await advance(int(INTERVAL), first, second)
        assert first.job.rounds == [] and len(second.job.rounds) == 2
    finally:
        await stop(first)
        await stop(second)


@pytest_twisted.ensureDeferred
async def test_becoming_and_ceasing_to_be_the_runner_is_logged(make_store, events: list[LogEvent]) -> None:
    first = Instance("host-a:1", await started_store(make_store))
    first.job.startService()
    await first.settle()
    await advance(int(INTERVAL), first)
    await stop(first)
    transitions = [(event["log_format"].split(" job ")[0], event.get("owner")) for event in events
                   if event.get("job") == "counting" and event["log_level"].name == "info"]
    assert transitions == [("This instance ({owner}) now runs", "host-a:1"),
                           ("This instance ({owner}) stops running", "host-a:1")]


# -- the lease alone, its database failing ------------------------------------------------------


class ManualLeases:
    """Job leases whose takes are answered by the test; gives up recorded."""

    def __init__(self) -> None:
        self.takes: list[Deferred[bool]] = []
        self.given_up: list[str] = []

    def take(self, job: str, owner: str, now_ms: int, duration_ms: int) -> Deferred[bool]:
        self.takes.append(Deferred())
        return self.takes[-1]

    def give_up(self, job: str, owner: str) -> Deferred[bool]:
        self.given_up.append(owner)
        result: Deferred[bool] = Deferred()
        result.callback(True)
        return result


def test_a_take_answered_after_the_release_does_not_revive_the_lease() -> None:
    clock, leases = Clock(), ManualLeases()
    lease = JobLease("cleanup", leases, "a:1", LEASE, clock)  # type: ignore[arg-type]
    held = ensureDeferred(lease.hold())
    lease.release()
    leases.takes[0].callback(True)
    assert held.result is False and not lease.leads
    assert leases.given_up == ["a:1"]  # the row the late take may have written is deleted after it
    clock.advance(LEASE)
    assert len(leases.takes) == 1  # nothing renews it


class FailingLeases:
    """Job leases whose database answers until told to fail."""

    def __init__(self) -> None:
        self.failing = False
        self.taken = 0

    def take(self, job: str, owner: str, now_ms: int, duration_ms: int) -> Deferred[bool]:
        if self.failing:
            raise ConnectionError("database gone")
        self.taken += 1
        result: Deferred[bool] = Deferred()
        result.callback(True)
        return result


@pytest.mark.parametrize("renewals_before_the_end", [0, 2])
def test_a_holder_that_cannot_renew_leads_until_its_lease_ends(renewals_before_the_end: int) -> None:
    clock, leases = Clock(), FailingLeases()
    lease = JobLease("reaper", leases, "a:1", LEASE, clock)  # type: ignore[arg-type]
    held = ensureDeferred(lease.hold())
    assert held.result is True
    for _ in range(renewals_before_the_end):
        clock.advance(LEASE / 3)  # renewed in the background meanwhile
    assert leases.taken == 1 + renewals_before_the_end
    leases.failing = True
    clock.advance(LEASE - 1)  # the renewals fail
    assert lease.leads
    clock.advance(1)
    assert not lease.leads
    leases.failing = False
    clock.advance(LEASE)  # it no longer renews (the next timed round takes the lease again)
    assert leases.taken == 1 + renewals_before_the_end


# -- the replicator woken by a store back up -----------------------------------------------------


class AnsweringLeases:
    """Job leases that always answer the same: held by this instance or by another."""

    def __init__(self, held: bool) -> None:
        self.held = held

    def take(self, job: str, owner: str, now_ms: int, duration_ms: int) -> Deferred[bool]:
        return succeed(self.held)


class EmptyQueue:
    """Metadata with an empty replication queue, counting its reads."""

    def __init__(self) -> None:
        self.reads = 0

    def replication_queue(self, limit: int, after: Any = None) -> Deferred[list[Any]]:
        self.reads += 1
        return succeed([])


@pytest.mark.parametrize("runs_it", [True, False])
def test_a_store_back_up_wakes_the_replicator_only_on_its_runner(runs_it: bool) -> None:
    clock, queue = Clock(), EmptyQueue()
    policy = PlacementPolicy(replication_interval=60)
    lease = JobLease("replicator", AnsweringLeases(runs_it), "a:1", LEASE, clock)  # type: ignore[arg-type]
    replicator = ReplicatorJob(None, queue, list, lambda bucket: policy, lambda: policy, clock,  # type: ignore[arg-type]
                               lease=lease)
    replicator.soon()  # what the health checks do when a store comes back up
    clock.advance(0)
    assert queue.reads == (1 if runs_it else 0)
    assert replicator.runs == (1 if runs_it else 0)
