"""Which instance runs each cluster-wide job: an election through lease rows in the
metadata database, so that instances sharing one database run each job once."""

from __future__ import annotations

from typing import Callable

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from s3orchestrator.metadata.job_leases import JobLeases

#: Renewals per lease: a holder renews every ``duration / RENEWALS`` seconds, so that
#: two renewals may fail (a busy database) before the lease runs out.
RENEWALS = 3


class JobLease:
    """One job's lease, as seen by one instance (``owner``): ``hold()`` takes or renews
    it; while held, it is renewed every ``duration / RENEWALS`` seconds in the background
    (whatever the job's rounds do), until lost, expired or ``release()``d.

    ``leads`` is true from a successful take until ``duration`` seconds after the start
    of the last successful one, by this instance's clock (a renewal that fails does not
    end it at once; the lease's end does, as for every other instance). Becoming and
    ceasing to be the job's runner are logged at info."""

    _log = Logger()

    def __init__(self, job: str, leases: JobLeases, owner: str, duration: float, clock: IReactorTime) -> None:
        if not duration > 0:
            raise ValueError("duration must be positive")
        self.job = job
        self.owner = owner
        self.duration = duration
        self._leases = leases
        self._clock = clock
        self._held_until: float | None = None
        self._renewer = LoopingCall(lambda: ensureDeferred(self.hold()))
        self._renewer.clock = clock
        self._renewal_failing = False
        # Bumped by release(): a take that was in flight then must not revive the lease.
        self._generation = 0

    @property
    def leads(self) -> bool:
        """Whether this instance holds the lease now (and so runs the job)."""
        return self._held_until is not None and self._clock.seconds() < self._held_until

    async def hold(self) -> bool:
        """Take or renew the lease; whether this instance holds it now. Never raises: a
        database error leaves ``leads`` as the lease's end says (logged once per outage)."""
        started = self._clock.seconds()
        generation = self._generation
        try:
            taken = await self._leases.take(self.job, self.owner, int(started * 1000), int(self.duration * 1000))
        except Exception as error:
            if generation != self._generation:
                return False
            if not self._renewal_failing:
                self._renewal_failing = True
                self._log.warn("Could not take or renew the lease of job {job}: {error}",
                               job=self.job, error=str(error))
            if self._held_until is not None and not self.leads:
                self._lost("its lease ran out")
            return self.leads
        if generation != self._generation:
            return False  # released meanwhile: the release's delete came after this take
        self._renewal_failing = False
        if taken:
            if self._held_until is None:
                self._log.info("This instance ({owner}) now runs job {job}", owner=self.owner, job=self.job)
            if not self._renewer.running:
                self._renewer.start(self.duration / RENEWALS, now=False)
            self._held_until = started + self.duration
        elif self._held_until is not None:
            self._lost("another instance holds its lease")
        return taken

    def release(self) -> Deferred[None]:
        """Stop renewing and give the lease up (another instance may take it at once);
        never fails (an error leaves the lease to expire)."""
        self._generation += 1
        if self._renewer.running:
            self._renewer.stop()
        if self._held_until is not None:
            self._held_until = None
            self._log.info("This instance ({owner}) stops running job {job}: the job stops",
                           owner=self.owner, job=self.job)
        return ensureDeferred(self._give_up())

    async def _give_up(self) -> None:
        # Even when not held: a take still in flight may have just inserted the row.
        try:
            await self._leases.give_up(self.job, self.owner)
        except Exception as error:
            self._log.warn("Could not give up the lease of job {job} (it expires within {duration:g} s): {error}",
                           job=self.job, duration=self.duration, error=str(error))

    def _lost(self, why: str) -> None:
        self._held_until = None
        if self._renewer.running:
            self._renewer.stop()
        self._log.info("This instance ({owner}) no longer runs job {job}: {why}",
                       owner=self.owner, job=self.job, why=why)


def run_if_leading(lease: JobLease | None, start: Callable[[], Deferred[int]]) -> Deferred[int]:
    """The run ``start()`` begins, if there is no ``lease`` (a job every instance runs) or
    this instance takes or renews it first; else 0 (another instance runs the job)."""
    if lease is None:
        return start()

    async def run(lease: JobLease) -> int:
        if not await lease.hold():
            return 0
        return await start()

    return ensureDeferred(run(lease))


def release_when_stopped(stopped: Deferred[None], lease: JobLease | None) -> Deferred[None]:
    """``stopped`` (a job's stop, fired when its run in progress has finished), then the
    lease given up, if there is one, so that another instance may take over at once."""
    if lease is not None:
        stopped.addCallback(lambda _: lease.release())
    return stopped


class JobElection:
    """The leases of the cluster-wide jobs of one instance (``instance_id``), each taken
    for ``duration`` seconds at a time in the ``job_leases`` table."""

    def __init__(self, leases: JobLeases, instance_id: str, duration: float, clock: IReactorTime) -> None:
        if not duration > 0:
            raise ValueError("duration must be positive")
        self.instance_id = instance_id
        self.duration = duration
        self._leases = leases
        self._clock = clock
        self._jobs: dict[str, JobLease] = {}

    def lease(self, job: str) -> JobLease:
        """``job``'s lease (one per job name)."""
        if job not in self._jobs:
            self._jobs[job] = JobLease(job, self._leases, self.instance_id, self.duration, self._clock)
        return self._jobs[job]
