"""A TimerService whose runs never overlap, never fail and can be asked for at once, and
(for a cluster-wide job) run only on the instance that holds the job's lease.

``JobTimer`` is what every such job shares (timed runs gated on the metadata and the
lease, failures counted); ``TimedJob`` adds the runs themselves, which most jobs need
no more of."""

from __future__ import annotations

from typing import Callable

from twisted.application.internet import TimerService
from twisted.internet.defer import Deferred, ensureDeferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from s3orchestrator.jobs.election import JobLease, release_when_stopped, run_if_leading
from s3orchestrator.jobs.gate import MetadataGate


class JobTimer(TimerService):
    """Calls ``run_once()`` (a subclass's run, whose Deferred never fails) at start and
    every ``interval`` seconds on ``clock``. An error starting it is logged and counted
    in ``errors``, never raised: a LoopingCall stops for good on its body's first failure.
    Timed runs are skipped while ``metadata_available()`` is false (degraded mode), and,
    given a ``lease`` (a cluster-wide job), while another instance holds it: each timed
    run first takes or renews it; stopping the job gives it up. ``run_once`` (an
    operator's run) runs whoever holds it. Counters: ``runs``, ``errors``."""

    _log = Logger()
    clock: IReactorTime  # TimerService's, optional there; always given here
    #: Names the job in its logs.
    description = "job"

    def __init__(
        self, interval: float, clock: IReactorTime, metadata_available: Callable[[], bool] = lambda: True,
        lease: JobLease | None = None,
    ) -> None:
        if not interval > 0:
            raise ValueError("interval must be positive")
        TimerService.__init__(self, interval, self._tick)
        self.clock = clock
        self.interval = interval
        self._running = False
        self._waiters: list[Deferred[int]] = []
        self.gate = MetadataGate(self.description, metadata_available)
        self.lease = lease
        self.runs = 0
        self.errors = 0

    def run_once(self) -> Deferred[int]:
        raise NotImplementedError

    def stopService(self) -> Deferred[None]:
        stopped: Deferred[None] = TimerService.stopService(self)
        return release_when_stopped(stopped, self.lease)

    def _tick(self) -> Deferred[int]:
        if not self.gate.open():
            return succeed(0)
        return run_if_leading(self.lease, self._start_run)

    def _start_run(self) -> Deferred[int]:
        try:
            return self.run_once()
        except Exception:
            self.errors += 1
            self._log.failure("{job} run failed to start", job=self.description)
            return succeed(0)

    def _run_failed(self, failure: Failure) -> int:
        self.errors += 1
        self._log.failure("{job} run failed", failure, job=self.description)
        return 0


class TimedJob(JobTimer):
    """A ``JobTimer`` whose runs are ``run()`` (a subclass's coroutine returning how much
    it did); asked for during a run, a run waits for that one."""

    async def run(self) -> int:
        raise NotImplementedError

    def run_once(self) -> Deferred[int]:
        """Run now; fires (never fails) with what the run returned (0 if it failed).
        A run already going is not doubled: this waits for it."""
        waiter: Deferred[int] = Deferred()
        self._waiters.append(waiter)
        if not self._running:
            self._running = True
            run = ensureDeferred(self.run())
            run.addErrback(self._run_failed)
            run.addCallback(self._finished)
        return waiter

    def _finished(self, result: int) -> None:
        self.runs += 1
        self._running = False
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.called:  # a caller may have cancelled its wait
                waiter.callback(result)
