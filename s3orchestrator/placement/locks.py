"""Per-object locks: commit and read-open of one key happen one at a time in this process.

Object writes do not depend on them for correctness across processes: the claims of
locations and the per-key commit serialisation in the metadata database do (see
metadata.claims). Within one process they still keep a read from pairing a record
with the bytes of a commit in progress (across processes the readers' ETag check
does).
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import AsyncIterator, Hashable

from twisted.internet.defer import DeferredLock


class KeyLocks:
    """A DeferredLock per key, created on demand and dropped when nobody holds or waits."""

    def __init__(self) -> None:
        self._locks: dict[Hashable, tuple[DeferredLock, int]] = {}

    @asynccontextmanager
    async def hold(self, key: Hashable) -> AsyncIterator[None]:
        """Hold the lock of ``key`` for the body of an ``async with``."""
        lock, users = self._locks.get(key, (None, 0))
        if lock is None:
            lock = DeferredLock()
        self._locks[key] = (lock, users + 1)
        try:
            await lock.acquire()
            try:
                yield
            finally:
                lock.release()
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)

    def __len__(self) -> int:
        return len(self._locks)
