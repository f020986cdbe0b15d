"""The reaper: resolves the write intents a crashed (or vanished) writer left behind."""

from __future__ import annotations

from typing import Callable, Mapping

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger, LogLevel

from s3orchestrator.jobs.election import JobLease
from s3orchestrator.jobs.timed import TimedJob
from s3orchestrator.metadata.interface import IMetadataStore
from s3orchestrator.metadata.records import Intent
from s3orchestrator.stores.interface import IObjectStore

#: How a dead writer's intent was resolved (the keys of ``ReaperJob.resolutions``).
OUTCOMES = ("adopted", "deleted", "queued")


def owner_host(owner: str) -> str:
    """The host part of an intent owner (``host:pid``)."""
    return owner.rpartition(":")[0]


def is_dead(intent: Intent, owner: str, now_ms: int) -> bool:
    """Whether ``intent``'s writer is presumed dead, seen from the live process ``owner``:
    another (earlier) process of this host, or any other process past the intent's lease.
    This process's own intents are never: its writes end by themselves."""
    if intent.owner == owner:
        return False
    return owner_host(intent.owner) == owner_host(owner) or intent.expires_ms <= now_ms


class ReaperJob(TimedJob):
    """At start and every ``interval`` seconds, resolve the intents of dead writers:
    if a live copy is at the intent's store and location, the write committed (or the
    location holds the previous object's live copy, which must stay): the intent and
    its reservation are dropped ("adopted"). Otherwise the partial bytes are deleted
    from the store and the reservation released ("deleted"); if the store fails, or
    a live writer is writing the same location now (deleting it could remove that
    write's bytes), the bytes go to the cleanup queue, counted as used, and the
    reservation is released ("queued"): the cleanup job waits until the location is
    free, and a commit there cancels the entry. Multipart uploads have no intents: the multipart expiry job aborts them.

    Counters: ``runs``, ``errors``, ``resolutions`` by outcome."""

    _log = Logger()
    description = "Reaper"

    def __init__(
        self,
        metadata: IMetadataStore,
        stores: Callable[[], Mapping[str, IObjectStore]],
        owner: str,
        interval: float,
        clock: IReactorTime,
        metadata_available: Callable[[], bool] = lambda: True,
        lease: JobLease | None = None,
    ) -> None:
        super().__init__(interval, clock, metadata_available, lease)
        self._metadata = metadata
        self._stores = stores
        self.owner = owner
        self.resolutions = dict.fromkeys(OUTCOMES, 0)

    async def run(self) -> int:
        now_ms = int(self.clock.seconds() * 1000)
        resolved = 0
        for intent in await self._metadata.list_intents():
            if is_dead(intent, self.owner, now_ms):
                outcome = await self._resolve(intent)
                if outcome is not None:
                    self.resolutions[outcome] += 1
                    resolved += 1
        self._log.emit(
            LogLevel.info if resolved else LogLevel.debug,
            "Reaper: {resolved} write intents of dead writers resolved", resolved=resolved,
        )
        return resolved

    async def _resolve(self, intent: Intent) -> str | None:
        adopted = await self._metadata.adopt_intent(intent.reservation_id)
        if adopted is None:
            return None  # resolved meanwhile
        fields = dict(bucket=intent.bucket, key=intent.key, store=intent.store, location=intent.location,
                      owner=intent.owner)
        if adopted:
            self._log.info("Reaper adopted the committed copy of {bucket}/{key} on store {store}", **fields)
            return "adopted"
        store = self._stores().get(intent.store)
        try:
            if store is None:
                raise LookupError(f"store {intent.store!r} is no longer configured")
            if await self._metadata.location_in_use(intent.store, intent.location, intent.reservation_id):
                raise LookupError("another write is at the location now")
            await store.delete(intent.location)
        except Exception as error:
            await self._metadata.release(intent.reservation_id, leftover=intent.location)
            self._log.warn(
                "Reaper could not delete the partial bytes of {bucket}/{key} at {location} on store {store}"
                " (writer {owner}); queued for cleanup: {error}", error=str(error), **fields,
            )
            return "queued"
        await self._metadata.release(intent.reservation_id)
        self._log.info(
            "Reaper deleted the partial bytes of {bucket}/{key} at {location} on store {store} (writer {owner})",
            **fields,
        )
        return "deleted"
