"""Metadata cleanups that must not be lost, retried while the database is busy or unavailable."""

from __future__ import annotations

from typing import Awaitable, Callable

from twisted.internet.defer import Deferred, DeferredList, ensureDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger

from s3orchestrator.metadata.interface import MetadataBusy, MetadataUnavailable

# The database refused, or could not be reached: the cleanup may work later.
LATER = (MetadataBusy, MetadataUnavailable)

FIRST_RETRY_DELAY = 1.0
MAX_RETRY_DELAY = 30.0


class CleanupRetrier:
    """Runs metadata cleanups; one the database refused as busy, or could not run at all
    (unavailable: its server restarting, the connection lost), is retried in the background
    (delays doubling from ``FIRST_RETRY_DELAY`` to ``MAX_RETRY_DELAY``) until it is done."""

    _log = Logger()

    def __init__(self, clock: IReactorTime) -> None:
        self._clock = clock
        self._retrying: set[Deferred[None]] = set()

    async def run(
        self,
        desc: str,
        cleanup: Callable[[], Awaitable[object]],
        retry: Callable[[], Awaitable[object]] | None = None,
    ) -> None:
        """Run ``cleanup()`` now; if the database is busy or unavailable, schedule retries (of ``retry()``
        if given: the first try may rely on a lock its caller holds) and return.

        Other errors propagate.
        """
        try:
            await cleanup()
        except LATER as error:
            self._log.warn("Metadata database {state}; will retry {desc}: {error}", desc=desc, error=str(error),
                           state="busy" if isinstance(error, MetadataBusy) else "unavailable")
            self.retrying(desc, retry or cleanup)

    def retrying(self, desc: str, cleanup: Callable[[], Awaitable[object]]) -> Deferred[None]:
        """Retry ``cleanup()`` in the background until it succeeds (or fails otherwise,
        which is logged); the Deferred fires then."""
        d = ensureDeferred(self._retry(desc, cleanup))
        if not d.called:
            self._retrying.add(d)
            d.addBoth(lambda _: self._retrying.discard(d))
        return d

    def settled(self) -> Deferred[None]:
        """Fires once every cleanup being retried now is done."""
        return DeferredList(list(self._retrying)).addCallback(lambda _: None)

    async def _retry(self, desc: str, cleanup: Callable[[], Awaitable[object]]) -> None:
        delay = FIRST_RETRY_DELAY
        while True:
            await deferLater(self._clock, delay, lambda: None)
            try:
                await cleanup()
            except LATER:
                delay = min(delay * 2, MAX_RETRY_DELAY)
                continue
            except Exception:
                self._log.failure("Retried {desc} failed", desc=desc)
                return
            self._log.info("Retried {desc}: done", desc=desc)
            return
