"""The mover: takes every copy off the stores in mode drain, and makes the moves queued in
the movements table (drain and rebalance), paced and pausable."""

from __future__ import annotations

from typing import Callable, Mapping, Protocol

from twisted.internet.defer import Deferred, DeferredSemaphore, ensureDeferred, gatherResults
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger, LogLevel

from s3orchestrator.config import DRAIN, MovementConfig
from s3orchestrator.jobs.election import JobLease
from s3orchestrator.jobs.timed import TimedJob
from s3orchestrator.metadata.interface import IMetadataStore
from s3orchestrator.metadata.records import QueuedMove
from s3orchestrator.placement.moves import MOVED, Moved

#: Due moves read per query; moving pauses, stops and gives up its lease between two batches.
BATCH_SIZE = 50
#: Seconds before a failed move is tried again: the first, doubled at each failure up to the last.
RETRY_DELAYS = (1.0, 300.0)


class Mover(Protocol):
    """What the job needs of placement."""

    async def move_copy(self, bucket: str, key: str, from_store: str, to_store: str | None = None) -> Moved:
        ...


def retry_delay(attempts: int) -> float:
    """Seconds before trying again a move that failed ``attempts + 1`` times."""
    first, longest = RETRY_DELAYS
    return min(first * 2 ** min(attempts, 30), longest)


class MoverJob(TimedJob):
    """Every ``settings().interval`` seconds (and at once when asked, ``soon()``): unless
    moving is paused (``movement_paused``), queue a move of every live copy on a store in
    mode drain (a drain whose store left that mode is dropped from the queue), then make
    every due move, ``max_concurrent`` at a time, paced so that no more than
    ``max_bytes_per_second`` bytes are moved per second on average (0: no limit). A move
    is claimed first (never two movers on one object, see ``claim_move``); one that fails
    stays queued and is tried again later (``RETRY_DELAYS``). A drained store is logged
    as empty once.

    Counters: ``runs``, ``errors`` (runs that raised), ``failures`` (moves that failed),
    ``moved`` and ``moved_bytes`` (copies and bytes this instance moved); ``paused``: as
    of the last run."""

    _log = Logger()
    description = "Mover"

    def __init__(
        self,
        placement: Mover,
        metadata: IMetadataStore,
        modes: Callable[[], Mapping[str, str]],
        settings: Callable[[], MovementConfig],
        clock: IReactorTime,
        metadata_available: Callable[[], bool] = lambda: True,
        lease: JobLease | None = None,
        owner: str = "",
    ) -> None:
        super().__init__(settings().interval, clock, metadata_available, lease)
        self._placement = placement
        self._metadata = metadata
        self._modes = modes
        self._settings = settings
        self._owner = owner or metadata.instance_id
        self._stopping = False
        self._paced_until = 0.0
        self._reported_empty: set[str] = set()
        self.failures = self.moved = self.moved_bytes = 0
        self.paused = False

    def soon(self) -> None:
        """Run as soon as possible (on the instance holding the job's lease)."""
        self.clock.callLater(0, self._tick)

    def startService(self) -> None:
        self._stopping = False
        super().startService()

    def stopService(self) -> Deferred[None]:
        # A run may have hours of moves ahead: it ends after the moves in flight.
        self._stopping = True
        return super().stopService()

    def _go_on(self) -> bool:
        return not self._stopping and (self.lease is None or self.lease.leads)

    async def run(self) -> int:
        self.paused = await self._metadata.movement_paused()
        if self.paused:
            return 0
        await self._queue_drains()
        moved = await self._make_moves()
        await self._report_empty()
        return moved

    async def _queue_drains(self) -> None:
        """Queue the copies on drain stores; drop the drains of stores no longer in that mode."""
        modes = self._modes()
        now_ms = int(self.clock.seconds() * 1000)
        for progress in await self._metadata.move_progress():
            if progress.reason == "drain" and modes.get(progress.store) != DRAIN:
                dropped = await self._metadata.unqueue_moves("drain", progress.store)
                self._reported_empty.discard(progress.store)
                self._log.info("Drain of store {store} stopped (its mode is {mode} now): {dropped} moves dropped",
                               store=progress.store, mode=modes.get(progress.store, "gone"), dropped=dropped)
        for store, mode in modes.items():
            if mode == DRAIN:
                queued = await self._metadata.queue_store_moves(store, "drain", now_ms)
                if queued:
                    self._log.info("Drain of store {store}: {queued} copies queued to move",
                                   store=store, queued=queued)

    async def _make_moves(self) -> int:
        limit = DeferredSemaphore(self._settings().max_concurrent)
        seen: set[tuple[str, str, str]] = set()
        moved = failed = 0
        while self._go_on():
            if await self._metadata.movement_paused():
                self.paused = True
                break
            now_ms = int(self.clock.seconds() * 1000)
            due = await self._metadata.moves_due(BATCH_SIZE, now_ms, self._owner)
            batch = [move for move in due if (move.bucket, move.key, move.from_store) not in seen]
            if not batch:
                break
            seen.update((move.bucket, move.key, move.from_store) for move in batch)
            outcomes = await gatherResults(
                # ensureDeferred: Twisted 22.4's DeferredSemaphore.run does not turn a coroutine into a Deferred.
                [limit.run(lambda move: ensureDeferred(self._move(move)), move) for move in batch]
            )
            moved += sum(1 for outcome in outcomes if outcome is True)
            failed += sum(1 for outcome in outcomes if outcome is False)
        self._log.emit(LogLevel.info if moved or failed else LogLevel.debug,
                       "Movement: {moved} copies moved, {failed} moves failed (tried again later)",
                       moved=moved, failed=failed)
        return moved

    async def _pace(self, size: int) -> None:
        """Wait for ``size`` bytes' turn at ``max_bytes_per_second`` (shared by every move)."""
        rate = self._settings().max_bytes_per_second
        if not rate or not size:
            return
        now = self.clock.seconds()
        start = max(now, self._paced_until)
        self._paced_until = start + size / rate
        if start > now:
            await deferLater(self.clock, start - now, lambda: None)

    async def _move(self, move: QueuedMove) -> bool | None:
        """One queued move: True once moved, None when nothing was left to move (or
        another instance has the object), False when it failed (postponed)."""
        if not self._go_on():
            return None
        await self._pace(move.size)
        now_ms = int(self.clock.seconds() * 1000)
        if not await self._metadata.claim_move(move, self._owner, now_ms):
            return None
        try:
            outcome = await self._placement.move_copy(move.bucket, move.key, move.from_store, move.to_store)
        except Exception as error:
            self.failures += 1
            delay = retry_delay(move.attempts)
            self._log.warn(
                "Could not move {bucket}/{key} off store {store} (attempt {attempt}, again in {delay:g} s): {error}",
                bucket=move.bucket, key=move.key, store=move.from_store, attempt=move.attempts + 1, delay=delay,
                error=str(error),
            )
            await self._metadata.postpone_move(move, now_ms + int(delay * 1000), str(error))
            return False
        await self._metadata.finish_move(move, moved=outcome.outcome == MOVED)
        if outcome.outcome != MOVED:
            return None
        self.moved += 1
        self.moved_bytes += outcome.size
        return True

    async def _report_empty(self) -> None:
        """Log once that a drained store has no copy left."""
        for store, mode in self._modes().items():
            if mode != DRAIN:
                continue
            objects, _ = await self._metadata.live_copies_on(store)
            if objects == 0 and store not in self._reported_empty:
                self._reported_empty.add(store)
                self._log.info("Drain of store {store} done: no copy is left on it", store=store)
            elif objects:
                self._reported_empty.discard(store)
