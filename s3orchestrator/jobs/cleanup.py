"""The cleanup job: removes the queued bytes no object describes, retrying with backoff."""

from __future__ import annotations

from typing import Callable, Mapping

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger, LogLevel

from s3orchestrator.jobs.election import JobLease
from s3orchestrator.jobs.timed import TimedJob
from s3orchestrator.metadata.claims import DELETE_CLAIM_LEASE, cleanup_holder
from s3orchestrator.metadata.interface import IMetadataStore
from s3orchestrator.metadata.records import CleanupEntry
from s3orchestrator.stores.interface import IObjectStore

# Entries read per query; a run pages on while a batch comes back full.
BATCH_SIZE = 100
MAX_RETRY_DELAY = 3600.0


def retry_delay(attempts: int, first: float) -> float:
    """Seconds until the next try of a cleanup that failed ``attempts`` times (>= 1):
    ``first`` (the job's interval: the next run), doubling up to ``MAX_RETRY_DELAY``."""
    return min(first * 2 ** min(attempts - 1, 30), max(MAX_RETRY_DELAY, first))


class CleanupJob(TimedJob):
    """At start and every ``interval`` seconds, delete the bytes of every due entry of
    the cleanup queue from its store, then drop the entry (releasing its usage). The
    location is claimed first (see metadata.claims), until its entries are dropped: no
    write can put bytes there while the store deletes. A location claimed by a write
    in flight (or another deletion) is skipped and tried at the next run. An entry whose
    store fails, is not configured, or whose location holds a live copy again, stays and
    is tried later (``retry_delay``, from ``interval`` doubling up to an hour): never
    forgotten.

    ``owner``: the claims' owner (this process); they last ``DELETE_CLAIM_LEASE`` seconds
    should it die. Counters: ``runs``, ``errors``, ``removed`` (entries done),
    ``failures`` (tries that failed)."""

    _log = Logger()
    description = "Cleanup"

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
        self.owner = owner
        self.removed = 0
        self.failures = 0

    async def run(self) -> int:
        now_ms = int(self.clock.seconds() * 1000)
        outcomes = {True: 0, False: 0, None: 0}
        seen: set[int] = set()
        while True:
            batch = [entry for entry in await self._metadata.due_cleanups(now_ms, BATCH_SIZE) if entry.id not in seen]
            for entry in batch:
                seen.add(entry.id)
                outcomes[await self._clean(entry, now_ms)] += 1
            if len(batch) < BATCH_SIZE:
                break
        removed, failed, skipped = outcomes[True], outcomes[False], outcomes[None]
        self.removed += removed
        self.failures += failed
        self._log.emit(
            LogLevel.info if removed or failed else LogLevel.debug,
            "Cleanup: {removed} queued locations removed, {failed} postponed, {skipped} skipped (claimed or done)",
            removed=removed, failed=failed, skipped=skipped,
        )
        return removed

    async def _clean(self, entry: CleanupEntry, now_ms: int) -> bool | None:
        """Try one entry: True once its bytes are gone, False if postponed, None if
        skipped (its location claimed by another, or its entry gone meanwhile)."""
        store = self._stores().get(entry.store)
        holder: str | None = None
        try:
            if store is None:
                raise LookupError(f"store {entry.store!r} is no longer configured")
            expires_ms = now_ms + int(DELETE_CLAIM_LEASE * 1000)
            claimed = await self._metadata.claim_cleanup(
                entry.store, entry.location, cleanup_holder(entry.id), self.owner, expires_ms
            )
            if claimed == "in use":
                # A new copy is there now: these are not the bytes to delete.
                raise LookupError("the location is in use again")
            if claimed != "claimed":
                return None
            holder = cleanup_holder(entry.id)
            await store.delete(entry.location)
        except Exception as error:
            next_try_ms = now_ms + int(retry_delay(entry.attempts + 1, self.interval) * 1000)
            await self._metadata.postpone_cleanup(entry.id, next_try_ms, str(error), holder)
            self._log.warn(
                "Could not clean up {location} on store {store} (attempt {attempt}), retrying later: {error}",
                location=entry.location, store=entry.store, attempt=entry.attempts + 1, error=str(error),
            )
            return False
        await self._metadata.finish_cleanup(entry.store, entry.location, holder)
        return True
