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
from s3orchestrator.metadata.records import ObjectCopies, QueuedMove
from s3orchestrator.placement.moves import GONE, MOVED, Moved

#: Due moves read per query; moving pauses, stops and gives up its lease between two batches.
BATCH_SIZE = 50
#: Live copies of a drain store read (and queued) per transaction.
QUEUE_PAGE = 1000
#: Seconds before a failed move is tried again: the first, doubled at each failure up to the last.
RETRY_DELAYS = (1.0, 300.0)
#: What became of one queued move, besides MOVED and GONE (see placement.moves).
FAILED, BUSY, STOPPED = "failed", "busy", "stopped"


class Mover(Protocol):
    """What the job needs of placement."""

    async def move_copy(self, bucket: str, key: str, from_store: str, to_store: str | None = None,
                        found: ObjectCopies | None = None, queued: QueuedMove | None = None) -> Moved:
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
        if self.running:
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
        queued: dict[str, int] = {}
        for progress in await self._metadata.move_progress():
            if progress.reason != "drain":
                continue
            if modes.get(progress.store) == DRAIN:
                queued[progress.store] = progress.left_objects
                continue
            dropped = await self._metadata.unqueue_moves("drain", progress.store)
            self._reported_empty.discard(progress.store)
            self._log.info("Drain of store {store} stopped (its mode is {mode} now): {dropped} moves dropped",
                           store=progress.store, mode=modes.get(progress.store, "gone"), dropped=dropped)
        live = {usage.name: usage.object_count for usage in await self._metadata.store_usage()}
        for store, mode in modes.items():
            # Copies not queued yet (the drain starting, an upload finishing there meanwhile).
            if mode == DRAIN and live.get(store, 0) > queued.get(store, 0):
                added = await self._queue_store(store, now_ms)
                if added:
                    self._log.info("Drain of store {store}: {queued} copies queued to move", store=store,
                                   queued=added)

    async def _queue_store(self, store: str, now_ms: int) -> int:
        """Queue a move of every live copy on ``store``, a page per transaction; how many were new."""
        queued = 0
        after: tuple[str, str] | None = None
        while self._go_on():
            page = await self._metadata.copies_on_store(store, after, QUEUE_PAGE)
            if page:
                queued += await self._metadata.queue_moves(page, "drain", now_ms)
            if len(page) < QUEUE_PAGE:
                break
            after = (page[-1].bucket, page[-1].key)
        return queued

    async def _make_moves(self) -> int:
        limit = DeferredSemaphore(self._settings().max_concurrent)
        # Moves whose object another move holds: left for the next run (every other move
        # made in a batch leaves the due ones, finished or postponed).
        busy: set[tuple[str, str, str]] = set()
        moved = failed = 0
        while self._go_on():
            if await self._metadata.movement_paused():
                self.paused = True
                break
            now_ms = int(self.clock.seconds() * 1000)
            due = await self._metadata.moves_due(BATCH_SIZE, now_ms, self._owner)
            batch = [move for move in due if (move.bucket, move.key, move.from_store) not in busy]
            if not batch:
                break
            outcomes = await gatherResults(
                # ensureDeferred: Twisted 22.4's DeferredSemaphore.run does not turn a coroutine into a Deferred.
                [limit.run(lambda move: ensureDeferred(self._move(move)), move) for move in batch]
            )
            for move, outcome in zip(batch, outcomes, strict=True):
                if outcome == BUSY:
                    busy.add((move.bucket, move.key, move.from_store))
            moved += outcomes.count(MOVED)
            failed += outcomes.count(FAILED)
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

    async def _move(self, move: QueuedMove) -> str:
        """One queued move: MOVED, GONE (nothing left to move: taken out of the queue),
        FAILED (postponed), BUSY (another move of its object is going on) or STOPPED."""
        if not self._go_on():
            return STOPPED
        await self._pace(move.size)
        now_ms = int(self.clock.seconds() * 1000)
        found = await self._metadata.claim_move(move, self._owner, now_ms)
        if found is None:
            return BUSY
        try:
            outcome = await self._placement.move_copy(move.bucket, move.key, move.from_store, move.to_store,
                                                      found=found, queued=move)
        except Exception as error:
            self.failures += 1
            delay = retry_delay(move.attempts)
            self._log.warn(
                "Could not move {bucket}/{key} off store {store} (attempt {attempt}, again in {delay:g} s): {error}",
                bucket=move.bucket, key=move.key, store=move.from_store, attempt=move.attempts + 1, delay=delay,
                error=str(error),
            )
            await self._metadata.postpone_move(move, now_ms + int(delay * 1000), str(error))
            return FAILED
        if not outcome.unqueued:
            await self._metadata.finish_move(move, moved=outcome.outcome == MOVED)
        if outcome.outcome != MOVED:
            return GONE
        self.moved += 1
        self.moved_bytes += outcome.size
        return MOVED

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
