"""The reaper: releases what dead instances (crashed, or stopped) left behind: their
quota reservations and write intents."""

from __future__ import annotations

from typing import Callable, Mapping

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger, LogLevel

from s3orchestrator.jobs.election import JobLease
from s3orchestrator.jobs.timed import TimedJob
from s3orchestrator.metadata.claims import DELETE_CLAIM_LEASE, write_holder
from s3orchestrator.metadata.interface import IMetadataStore
from s3orchestrator.metadata.records import Intent
from s3orchestrator.stores.interface import IObjectStore

#: How a dead writer's intent was resolved (the keys of ``ReaperJob.resolutions``).
OUTCOMES = ("adopted", "deleted", "queued")


class ReaperJob(TimedJob):
    """At start and every ``interval`` seconds (``run``, one pass over the whole
    database: the cluster needs it run by one instance at a time), release what dead
    instances left: an instance is dead once its lease expired or when it is not
    registered (see ``heartbeat.InstanceLease``). Their reservations without a write
    intent (multipart parts in flight) are dropped; their write intents are resolved:
    if a live copy is at the intent's store and location, the write committed (or the
    location holds the previous object's live copy, which must stay): the intent and
    its reservation are dropped ("adopted"). Otherwise the reaper takes over the dead
    writer's claim of the location (see metadata.claims), deletes the partial bytes
    from the store and releases the reservation and claim ("deleted"); if the store
    fails, or a live writer claims the same location now (deleting it could remove
    that write's bytes), the bytes go to the cleanup queue, counted as used, and the
    reservation is released ("queued"): the cleanup job waits until the location is
    free, and a commit there cancels the entry. Then the claims dead instances left
    (deletions, settled writes) are dropped and the expired instances forgotten.
    Multipart uploads have no intents: the multipart expiry job aborts them.

    Counters: ``runs``, ``errors``, ``resolutions`` by outcome, ``released``
    (reservations without an intent dropped)."""

    _log = Logger()
    description = "Reaper"

    def __init__(
        self,
        metadata: IMetadataStore,
        stores: Callable[[], Mapping[str, IObjectStore]],
        interval: float,
        clock: IReactorTime,
        metadata_available: Callable[[], bool] = lambda: True,
        lease: JobLease | None = None,
        owner: str = "",
    ) -> None:
        super().__init__(interval, clock, metadata_available, lease)
        self._metadata = metadata
        self._stores = stores
        #: The instance (this process) owning the claims the reaper takes.
        self.owner = owner
        self.resolutions = dict.fromkeys(OUTCOMES, 0)
        self.released = 0

    async def run(self) -> int:
        """One pass: release the reservations and resolve the write intents of the
        instances dead now, then forget the expired instances; fire with how many
        reservations and intents were released or resolved."""
        now_ms = int(self.clock.seconds() * 1000)
        released = await self._metadata.release_dead_reservations(now_ms)
        self.released += released
        resolved = 0
        for intent in await self._metadata.dead_intents(now_ms):
            outcome = await self._resolve(intent)
            if outcome is not None:
                self.resolutions[outcome] += 1
                resolved += 1
        await self._metadata.drop_dead_claims(now_ms)
        forgotten = await self._metadata.forget_dead_instances(now_ms)
        self._log.emit(
            LogLevel.info if released or resolved or forgotten else LogLevel.debug,
            "Reaper: {released} reservations and {resolved} write intents of dead instances released;"
            " {forgotten} expired instances forgotten",
            released=released, resolved=resolved, forgotten=forgotten,
        )
        return released + resolved

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
            expires_ms = int((self.clock.seconds() + DELETE_CLAIM_LEASE) * 1000)
            if not await self._metadata.claim_locations(intent.store, [intent.location],
                                                        write_holder(intent.reservation_id), self.owner, expires_ms):
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
