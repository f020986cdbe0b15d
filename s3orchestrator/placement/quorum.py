"""Several writes of one object's copies, watched until enough of them are durable."""

from __future__ import annotations

from typing import Callable, Sequence

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from s3orchestrator.stores.interface import IObjectWrite, StoreUnavailable


class QuorumLost(StoreUnavailable):
    """Too many copies of a write failed for the rest to make its write quorum."""


class CopyWrites:
    """The writes of ``len(writes)`` copies (None: one that failed to start), of which
    ``quorum`` must be durable.

    ``reached`` fires once ``quorum`` writes are done, and errbacks with QuorumLost
    (carrying the last failure's text) as soon as so many failed that the others
    cannot make it. ``on_failure(index, failure)`` hears of each write that fails
    (the tee drops its branch, health counts the store's outage); ``finished``
    fires once every write has settled. The writes' ``done`` Deferreds are consumed:
    ``outcome(index)`` tells how one of them went.
    """

    def __init__(
        self,
        writes: Sequence[IObjectWrite | None],
        quorum: int,
        on_failure: Callable[[int, Failure], object],
    ) -> None:
        if not 1 <= quorum <= len(writes):
            raise ValueError(f"a quorum of {quorum} out of {len(writes)} writes")
        self.writes = list(writes)
        self.quorum = quorum
        self.done: list[int] = []
        self.failed: list[int] = [index for index, write in enumerate(writes) if write is None]
        self.reached: Deferred[None] = Deferred()
        self.finished: Deferred[None] = Deferred()
        self._on_failure = on_failure
        self._last_error = "a copy's store could not start the write"
        self._failures: dict[int, Failure] = {}
        self._waiting: dict[int, list[Deferred[None]]] = {}
        for index, write in enumerate(writes):
            if write is not None:
                write.done.addCallbacks(self._succeeded, self._failed, callbackArgs=(index,), errbackArgs=(index,))
        self._settle()

    def pending(self) -> list[int]:
        """The writes neither done nor failed."""
        return [index for index in range(len(self.writes)) if index not in self.done and index not in self.failed]

    def outcome(self, index: int) -> Deferred[None]:
        """Fires once write ``index`` is done, or fails with its failure."""
        result: Deferred[None] = Deferred()
        if index in self._failures:
            result.errback(self._failures[index])
        elif index in self.done:
            result.callback(None)
        else:
            self._waiting.setdefault(index, []).append(result)
        return result

    def _succeeded(self, _: object, index: int) -> None:
        self.done.append(index)
        self._settle()
        for waiting in self._waiting.pop(index, []):
            waiting.callback(None)

    def _failed(self, failure: Failure, index: int) -> None:
        self.failed.append(index)
        self._failures[index] = failure
        self._last_error = failure.getErrorMessage()
        self._on_failure(index, failure)
        self._settle()
        for waiting in self._waiting.pop(index, []):
            waiting.errback(failure)

    def _settle(self) -> None:
        if not self.reached.called:
            if len(self.done) >= self.quorum:
                self.reached.callback(None)
            elif len(self.writes) - len(self.failed) < self.quorum:
                self.reached.errback(QuorumLost(
                    f"{len(self.failed)} of {len(self.writes)} copies failed, {self.quorum} needed:"
                    f" {self._last_error}"
                ))
        if not self.finished.called and not self.pending():
            self.finished.callback(None)
