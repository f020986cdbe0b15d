"""The traffic job: syncs the stores' traffic counts with the metadata database."""

from __future__ import annotations

from typing import Callable

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.interfaces import IReactorTime

from s3orchestrator.jobs.timed import TimedJob
from s3orchestrator.traffic.ledger import SYNC_INTERVAL, TrafficLedger


class TrafficSyncJob(TimedJob):
    """Runs ``ledger.sync()`` at start, every ``interval`` seconds and once more at stop
    (so a clean shutdown loses no counts)."""

    description = "traffic sync"

    def __init__(
        self, ledger: TrafficLedger, clock: IReactorTime, interval: float = SYNC_INTERVAL,
        metadata_available: Callable[[], bool] = lambda: True,
    ) -> None:
        super().__init__(interval, clock, metadata_available)
        self.ledger = ledger

    async def run(self) -> int:
        return await self.ledger.sync()

    def stopService(self) -> Deferred[None]:
        stopped = super().stopService()
        return ensureDeferred(self._last_sync(stopped))

    async def _last_sync(self, stopped: Deferred[None] | None) -> None:
        if stopped is not None:
            await stopped
        if self.gate.open():
            await self.run_once()
