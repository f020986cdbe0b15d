"""Rebalancing: plan moves of copies from the fullest stores to the emptiest from the
metadata (``Rebalancer``), queue them for the mover, and do so periodically
(``RebalanceJob``, ``[movement] rebalance_interval``) on one instance of the cluster."""

from __future__ import annotations

from fractions import Fraction
from typing import Callable, Container

from twisted.internet.defer import Deferred, DeferredLock, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from s3orchestrator.config import NORMAL, Config
from s3orchestrator.jobs.election import JobLease
from s3orchestrator.jobs.health import StoreHealth
from s3orchestrator.jobs.timed import TimedJob
from s3orchestrator.metadata.interface import IMetadataStore
from s3orchestrator.metadata.placements import ObjectPlacements
from s3orchestrator.placement.rebalance import RebalancePlan, RebalancePlanner, StoreState
from s3orchestrator.routing import SPREAD

#: Copy rows read per page of the copies table: a page's planning runs in the reactor
#: thread, so pages stay short (a few ms to plan).
PAGE_ROWS = 250
#: Moves one plan holds at most (a rebalance that needs more takes several runs).
MAX_MOVES = 10_000
#: Objects one plan looks at, at most: planning stays bounded on huge stores.
MAX_OBJECTS = 1_000_000
#: The move reason of rebalancing in the movements queue.
REBALANCE = "rebalance"
#: How often a timed run looks whether the periodic rebalance was turned on by a reload.
IDLE_INTERVAL = 300.0


class NotSpread(Exception):
    """Rebalancing needs the ``spread`` routing strategy (``pack`` fills stores in order on purpose)."""


class Rebalancer:
    """Plans a rebalance of the stores of the current ``config()`` from the metadata (store
    usage, the copies of every object, the moves already queued), with store health from
    ``health`` and the stores over a hard monthly cap from ``capped()``; ``rebalance()``
    also queues the plan's moves for the mover. Rebalances of one instance never overlap."""

    _log = Logger()

    def __init__(
        self,
        metadata: IMetadataStore,
        placements: ObjectPlacements,
        config: Callable[[], Config],
        health: StoreHealth,
        capped: Callable[[], Container[str]],
        clock: IReactorTime,
        page_rows: int = PAGE_ROWS,
        max_moves: int = MAX_MOVES,
        max_objects: int = MAX_OBJECTS,
    ) -> None:
        self._metadata = metadata
        self._placements = placements
        self._config = config
        self._health = health
        self._capped = capped
        self._clock = clock
        self._page_rows = page_rows
        self._max_moves = max_moves
        self._max_objects = max_objects
        self._lock = DeferredLock()

    async def store_states(self) -> list[StoreState]:
        """Every configured store as the planner sees it now."""
        config = self._config()
        usage = {store.name: store for store in await self._metadata.store_usage()}
        cleanups = await self._metadata.cleanup_totals()
        leaving, arriving = await self._placements.queued_move_bytes()
        modes = config.store_modes()
        capped = self._capped()
        states = []
        for store in config.stores:
            used = usage.get(store.name)
            used_bytes = used.used_bytes + used.reserved_bytes if used is not None else 0
            cleanup = cleanups.get(store.name, (0, 0))[1]
            states.append(StoreState(
                name=store.name, quota_bytes=store.quota_bytes, used_bytes=used_bytes - cleanup,
                cleanup_bytes=cleanup, leaving_bytes=leaving.get(store.name, 0),
                arriving_bytes=arriving.get(store.name, 0), zone=store.zone, mode=modes.get(store.name, "normal"),
                healthy=self._health.is_healthy(store.name), capped=store.name in capped,
            ))
        return states

    async def plan(self) -> RebalancePlan:
        """The moves that would rebalance the stores now (nothing queued). NotSpread
        unless the routing strategy is ``spread``."""
        config = self._config()
        if config.routing_strategy != SPREAD:
            raise NotSpread(
                f"routing_strategy is {config.routing_strategy!r}: rebalancing moves copies as 'spread' places them"
            )
        # Exact: the configured float's decimal, not its binary approximation.
        tolerance = Fraction(repr(config.movement.rebalance_tolerance))
        planner = RebalancePlanner(await self.store_states(), tolerance, self._max_moves)
        after: tuple[str, str] | None = None
        while not planner.done and planner.objects_seen < self._max_objects:
            page = await self._placements.page(after, self._page_rows)
            if not page:
                return planner.plan(exhausted=True)
            planner.offer(page[:self._max_objects - planner.objects_seen])
            after = (page[-1].bucket, page[-1].key)
        return planner.plan(exhausted=False)

    async def rebalance(self) -> tuple[RebalancePlan, int]:
        """Drop the rebalance moves queued to stores no longer in mode normal, plan, then
        queue the plan's moves (reason ``rebalance``; the totals of the last rebalance,
        if it is done, are forgotten first); (the plan, moves queued)."""
        await self._lock.acquire()
        try:
            config = self._config()
            if config.routing_strategy == SPREAD:
                modes = config.store_modes()
                dropped = await self._placements.drop_moves_to(
                    [name for name, mode in modes.items() if mode != NORMAL], REBALANCE,
                )
                if dropped:
                    self._log.info("Rebalance: dropped {count} queued moves to stores in mode readonly or drain",
                                   count=dropped)
            plan = await self.plan()
            queued = 0
            if plan.moves:
                progress = [entry for entry in await self._metadata.move_progress() if entry.reason == REBALANCE]
                if progress and not any(entry.left_objects for entry in progress):
                    # The last rebalance is done: its totals go, so that progress and rate are this one's.
                    await self._metadata.unqueue_moves(REBALANCE)
                now_ms = int(self._clock.seconds() * 1000)
                queued = await self._metadata.queue_moves(plan.moves, REBALANCE, now_ms)
            return plan, queued
        finally:
            self._lock.release()


class RebalanceJob(TimedJob):
    """Every ``[movement] rebalance_interval`` seconds (``interval()``; 0: off, looked at
    again every IDLE_INTERVAL seconds), queue a rebalance with ``rebalancer``, on the
    instance holding the job's lease. Counters: ``runs``, ``errors``, ``moves`` queued."""

    _log = Logger()
    description = "Rebalance"

    def __init__(
        self, rebalancer: Rebalancer, interval: Callable[[], float], clock: IReactorTime,
        metadata_available: Callable[[], bool] = lambda: True, lease: JobLease | None = None,
    ) -> None:
        super().__init__(self.timer_interval(interval()), clock, metadata_available, lease)
        self._rebalancer = rebalancer
        self._interval = interval
        self.moves = 0
        self._refused: str | None = None

    @staticmethod
    def timer_interval(interval: float) -> float:
        """The timer's step for a configured ``rebalance_interval``."""
        return interval if interval > 0 else IDLE_INTERVAL

    def _tick(self) -> Deferred[int]:
        if self._interval() <= 0:
            return succeed(0)  # off: not even the lease is taken
        return super()._tick()

    async def run(self) -> int:
        try:
            plan, queued = await self._rebalancer.rebalance()
        except NotSpread as refused:
            if self._refused != str(refused):
                self._log.warn("Periodic rebalance skipped: {why}", why=str(refused))
            self._refused = str(refused)
            return 0
        self._refused = None
        self.moves += queued
        if plan.moves:
            self._log.info(
                "Rebalance: queued {queued} of {planned} moves planned ({bytes} bytes); balanced after: {balanced}",
                queued=queued, bytes=plan.bytes, planned=len(plan.moves), balanced=plan.balanced,
            )
        return queued


