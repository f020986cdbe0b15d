"""One request body streamed to several store writes at once, the slowest store pacing the client.

A ``Tee`` splits a RequestBody (the source) into ``count`` branches, each a
RequestBody a store's ``start_write`` takes as it would take the client's body.
The source starts producing once every branch has been started by its store
(or dropped); each chunk is written at once to every live branch's consumer,
so nothing is buffered here beyond the chunk in hand; while any live branch is
paused the source is paused. A branch whose store stops it (``stopProducing``)
or whose consumer raises is dropped and the others go on; the source is
stopped when the last branch is gone. The source's held-back tail goes out
once every live branch asked for it with ``release_tail``.
"""

from __future__ import annotations

from typing import Literal

from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IConsumer, IDelayedCall, IReactorTime
from twisted.python.failure import Failure
from zope.interface import implementer

from s3orchestrator.auth.payload import VerifiedPayload
from s3orchestrator.s3.call import RequestBody

_SourceState = Literal["waiting", "producing", "finished", "stopped"]


class BranchDropped(Exception):
    """A store started a branch the tee had already dropped (stopped, or not started in time)."""


@implementer(RequestBody)
class TeeBranch:
    """One store's view of the tee's source: a RequestBody of the same length and outcome.

    Each read of ``verified`` is a new Deferred with the source's outcome, so a
    failed body leaves no unhandled error behind on branches nobody awaited. The Deferred of
    ``startProducing`` fires when the source has finished (its tail included), or
    errbacks with the source's failure, or with the exception this branch's
    consumer raised from ``write``; after ``stopProducing`` it never fires (the
    IBodyProducer contract). The placement engine also calls ``stopProducing``
    to drop a branch whose store failed before starting it.
    """

    def __init__(self, tee: Tee, length: int) -> None:
        self._tee = tee
        self.length = length
        self.consumer: IConsumer | None = None
        self.produced: Deferred[None] | None = None
        self.paused = False
        self.wants_tail = False
        self.dropped = False

    @property
    def verified(self) -> Deferred[VerifiedPayload]:
        return self._tee._verified()

    def startProducing(self, consumer: IConsumer) -> Deferred[None]:
        return self._tee._branch_started(self, consumer)

    def pauseProducing(self) -> None:
        self.paused = True
        self._tee._pace()

    def resumeProducing(self) -> None:
        self.paused = False
        self._tee._pace()

    def stopProducing(self) -> None:
        self._tee._drop(self, None)

    def release_tail(self) -> None:
        """Ask for the source's tail; it is released once every live branch asked."""
        self.wants_tail = True
        self._tee._release_tail_if_all_asked()


@implementer(IConsumer)
class Tee:
    """Streams ``source`` to ``count`` branches (``branches``); the IConsumer the source writes to.

    ``clock`` and ``start_timeout``: branches no store has started ``start_timeout``
    seconds after the tee was made are dropped, so a store that never starts its
    write cannot hold the others (and the client) forever.
    """

    def __init__(self, source: RequestBody, count: int, clock: IReactorTime, start_timeout: float) -> None:
        if count < 1:
            raise ValueError(f"a tee needs at least one branch, not {count}")
        self.source = source
        self.length: int = source.length
        self.branches = [TeeBranch(self, source.length) for _ in range(count)]
        self._state: _SourceState = "waiting"
        self._source_paused = False
        self._tail_released = False
        self._verification: VerifiedPayload | Failure | None = None
        self._awaiting_verification: list[Deferred[VerifiedPayload]] = []
        self._start_timer: IDelayedCall | None = clock.callLater(start_timeout, self._drop_unstarted)
        source.verified.addBoth(self._source_verified)

    @property
    def live_branches(self) -> int:
        """How many branches have not been dropped (started or still waiting for their store)."""
        return sum(not branch.dropped for branch in self.branches)

    def _live(self) -> list[TeeBranch]:
        return [branch for branch in self.branches if not branch.dropped]

    # -- IConsumer (written to by the source) --------------------------------

    def write(self, data: bytes) -> None:
        for branch in self.branches:
            # A write may drop this or another branch (a store that found the body too long).
            if branch.dropped or branch.consumer is None:
                continue
            try:
                branch.consumer.write(data)
            except Exception:
                self._drop(branch, Failure())

    def registerProducer(self, producer: object, streaming: bool) -> None:
        """Nothing to do: the branches' stores pace the source through pause/resumeProducing."""

    def unregisterProducer(self) -> None:
        """Nothing to do."""

    # -- from the branches -----------------------------------------------------

    def _branch_started(self, branch: TeeBranch, consumer: IConsumer) -> Deferred[None]:
        if branch.dropped:
            return fail(BranchDropped("this copy's write started after it was given up"))
        if branch.consumer is not None:
            return fail(RuntimeError("startProducing called twice on a tee branch"))
        branch.consumer = consumer
        produced: Deferred[None] = Deferred()
        branch.produced = produced
        self._start_source_if_ready()
        return produced

    def _pace(self) -> None:
        """Pause the source while any live branch is paused; resume it once none is."""
        if self._state != "producing":
            return
        paused = any(branch.paused for branch in self._live())
        if paused and not self._source_paused:
            self._source_paused = True
            self.source.pauseProducing()
        elif not paused and self._source_paused:
            self._source_paused = False
            self.source.resumeProducing()

    def _release_tail_if_all_asked(self) -> None:
        live = self._live()
        if self._tail_released or not live or not all(branch.wants_tail for branch in live):
            return
        self._tail_released = True
        self.source.release_tail()

    def _drop(self, branch: TeeBranch, failure: Failure | None) -> None:
        """Give up on ``branch``: the others go on; its Deferred errbacks with ``failure``
        (never fires if None: the branch was stopped)."""
        if branch.dropped:
            return
        branch.dropped = True
        if not self._live():
            self._stop_source()
        else:
            self._start_source_if_ready()
            self._pace()
            self._release_tail_if_all_asked()
        produced = branch.produced
        if failure is not None and produced is not None and not produced.called:
            produced.errback(failure)

    def _drop_unstarted(self) -> None:
        self._start_timer = None
        for branch in self.branches:
            if branch.consumer is None:
                self._drop(branch, None)

    # -- the source ------------------------------------------------------------

    def _cancel_start_timer(self) -> None:
        timer, self._start_timer = self._start_timer, None
        if timer is not None and timer.active():
            timer.cancel()

    def _start_source_if_ready(self) -> None:
        if self._state != "waiting" or any(branch.consumer is None for branch in self._live()):
            return
        self._cancel_start_timer()
        self._state = "producing"
        # Stores may pause before they start (a transport already full), as a body
        # producer registered on it can be: the source must not run ahead of them.
        self._pace()
        try:
            produced = self.source.startProducing(self)
        except Exception:
            self._source_done(Failure())
            return
        produced.addBoth(self._source_done)

    def _stop_source(self) -> None:
        self._cancel_start_timer()
        if self._state in ("waiting", "producing"):
            self._state = "stopped"
            self.source.stopProducing()

    def _source_done(self, result: None | Failure) -> None:
        if self._state != "producing":
            return
        self._state = "finished"
        for branch in self.branches:
            produced = branch.produced
            if branch.dropped or produced is None or produced.called:
                continue
            if isinstance(result, Failure):
                produced.errback(result)
            else:
                produced.callback(None)

    def _verified(self) -> Deferred[VerifiedPayload]:
        verified: Deferred[VerifiedPayload] = Deferred()
        if self._verification is None:
            self._awaiting_verification.append(verified)
        elif isinstance(self._verification, Failure):
            verified.errback(self._verification)
        else:
            verified.callback(self._verification)
        return verified

    def _source_verified(self, result: VerifiedPayload | Failure) -> VerifiedPayload | Failure:
        self._verification = result
        awaiting, self._awaiting_verification = self._awaiting_verification, []
        for verified in awaiting:
            if isinstance(result, Failure):
                verified.errback(result)
            else:
                verified.callback(result)
        return result
