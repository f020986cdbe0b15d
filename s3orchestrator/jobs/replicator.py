"""The job that gives every object the copies its bucket's placement asks for."""

from __future__ import annotations

from typing import Callable, Protocol, Sequence

from twisted.internet.defer import Deferred, DeferredSemaphore, ensureDeferred, gatherResults
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger, LogLevel

from s3orchestrator.config import PlacementPolicy
from s3orchestrator.jobs.election import JobLease
from s3orchestrator.jobs.timed import JobTimer
from s3orchestrator.metadata.interface import IMetadataStore
from s3orchestrator.metadata.records import QueuedReplication
from s3orchestrator.placement.engine import Replicated

# Queue entries read per query; a run pages on while a batch comes back full.
BATCH_SIZE = 100


class Replicas(Protocol):
    """What the job needs of placement."""

    async def replicate(self, bucket: str, key: str) -> Replicated:
        ...


class ReplicatorJob(JobTimer):
    """Every ``interval`` seconds (``placement().replication_interval``), queue the
    objects of every bucket with fewer live copies than its ``replicas`` (replicas raised
    by a reload, copies lost), then make the missing copies of every queued object,
    oldest first, ``replication_concurrency`` objects at a time, pausing so that no more
    than ``replication_bytes_per_second`` bytes are copied per second on average (0:
    no limit). ``soon()`` asks for a run at once (a store came back up).

    It never stops on an error: an object whose copy fails stays queued for the next run.
    Timed runs (and ``soon()``'s) are skipped while ``metadata_available()`` is false
    (degraded mode) and, given a ``lease`` (one instance replicates for all that share the
    database), while another instance holds it; stopping the job gives it up.
    Counters: ``runs``, ``errors`` (runs that raised), ``failures`` (objects it could not
    complete), ``copies`` and ``bytes`` replicated; gauges from the last run:
    ``missing`` (copies still missing), ``queued`` (objects in the queue), ``oldest_ms``
    (when the oldest missing copy went missing; None: none).
    """

    _log = Logger()
    description = "Replicator"

    def __init__(
        self,
        replicas: Replicas,
        metadata: IMetadataStore,
        buckets: Callable[[], Sequence[str]],
        policy: Callable[[str], PlacementPolicy],
        placement: Callable[[], PlacementPolicy],
        clock: IReactorTime,
        metadata_available: Callable[[], bool] = lambda: True,
        lease: JobLease | None = None,
    ) -> None:
        super().__init__(placement().replication_interval, clock, metadata_available, lease)
        self._replicas = replicas
        self._metadata = metadata
        self._buckets = buckets
        self._policy = policy
        self._placement = placement
        self._next_waiters: list[Deferred[int]] = []
        self._soon: IDelayedCall | None = None
        self.failures = 0
        self.copies = self.bytes = 0
        self.missing = self.queued = 0
        self.oldest_ms: int | None = None

    def soon(self) -> None:
        """Run as soon as possible (once, however often asked before it starts)."""
        if self._soon is None or not self._soon.active():
            self._soon = self.clock.callLater(0, self._tick)

    def stopService(self) -> Deferred[None]:
        if self._soon is not None and self._soon.active():
            self._soon.cancel()
        return super().stopService()

    def run_once(self) -> Deferred[int]:
        """Replicate what is queued now; fires (never fails) with how many copies were made.
        Asked during a run, it waits for one more run after that one."""
        waiter: Deferred[int] = Deferred()
        if self._running:
            self._next_waiters.append(waiter)
        else:
            self._waiters.append(waiter)
            self._start()
        return waiter

    def _start(self) -> None:
        self._running = True
        run = ensureDeferred(self._run())
        run.addErrback(self._run_failed)
        run.addCallback(self._finished)

    async def _run(self) -> int:
        now_ms = int(self.clock.seconds() * 1000)
        for bucket in self._buckets():
            await self._metadata.queue_under_replicated(bucket, self._policy(bucket).replicas, now_ms)
        settings = self._placement()
        limit = DeferredSemaphore(settings.replication_concurrency)
        made = failed = missing = queued = 0
        oldest: int | None = None
        after: tuple[int, str, str] | None = None
        while True:
            batch = await self._metadata.replication_queue(BATCH_SIZE, after)
            outcomes = await gatherResults(
                # ensureDeferred: Twisted 22.4's DeferredSemaphore.run does not turn a coroutine into a Deferred.
                [limit.run(lambda entry: ensureDeferred(self._replicate(entry, settings)), entry) for entry in batch]
            )
            for entry, outcome in zip(batch, outcomes, strict=True):
                if outcome is None or outcome.missing:
                    failed += 1
                    missing += outcome.missing if outcome is not None else 1
                    queued += 1
                    oldest = entry.since_ms if oldest is None else min(oldest, entry.since_ms)
                if outcome is not None:
                    made += outcome.copies
            if len(batch) < BATCH_SIZE:
                break
            after = (batch[-1].since_ms, batch[-1].bucket, batch[-1].key)
        self.failures += failed
        self.missing, self.queued, self.oldest_ms = missing, queued, oldest
        self._log.emit(
            LogLevel.info if made or failed else LogLevel.debug,
            "Replication: {made} copies made, {missing} still missing",
            made=made, missing=missing,
        )
        return made

    async def _replicate(self, entry: QueuedReplication, settings: PlacementPolicy) -> Replicated | None:
        """One queued object's missing copies, then the pause its bytes earn; None if it failed."""
        try:
            outcome = await self._replicas.replicate(entry.bucket, entry.key)
        except Exception as error:
            self._log.warn("Could not replicate {bucket}/{key}: {error}",
                           bucket=entry.bucket, key=entry.key, error=str(error))
            return None
        self.copies += outcome.copies
        self.bytes += outcome.size
        if settings.replication_bytes_per_second and outcome.size:
            # Holding the concurrency slot for the time these bytes take at the rate limit.
            await deferLater(self.clock, outcome.size / settings.replication_bytes_per_second, lambda: None)
        return outcome

    def _finished(self, result: int) -> None:
        self.runs += 1
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.called:
                waiter.callback(result)
        if self._next_waiters:
            self._waiters, self._next_waiters = self._next_waiters, []
            self._start()
        else:
            self._running = False
