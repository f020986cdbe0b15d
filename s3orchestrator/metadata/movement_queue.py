"""The interface of the movements queue: copies to move between stores (drain, rebalance)."""

from __future__ import annotations

from typing import Sequence

from twisted.internet.defer import Deferred
from zope.interface import Interface

from s3orchestrator.metadata.records import MoveProgress, ObjectCopies, PlannedMove, QueuedMove

#: The reasons a copy is moved.
MOVE_REASONS = ("drain", "rebalance")


class IMovementQueue(Interface):
    """The queue of copies to move between stores (part of ``IMetadataStore``)."""

    def queue_moves(moves: Sequence[PlannedMove], reason: str, now_ms: int) -> Deferred[int]:
        """Queue ``moves`` for ``reason``, due at once; a copy already queued is left as
        it is. Fire with how many were queued."""

    def copies_on_store(store: str, after: tuple[str, str] | None, limit: int) -> Deferred[list[PlannedMove]]:
        """Up to ``limit`` live copies on ``store`` after the (bucket, key) ``after``, in
        key order, as moves to a store the routing strategy picks."""

    def live_copies_on(store: str) -> Deferred[tuple[int, int]]:
        """(copies, bytes) live on ``store``."""

    def moves_due(limit: int, now_ms: int, owner: str | None = None) -> Deferred[list[QueuedMove]]:
        """Up to ``limit`` moves due by ``now_ms`` that no live instance (but ``owner``)
        has claimed, soonest first."""

    def claim_move(move: QueuedMove, owner: str, now_ms: int) -> Deferred[ObjectCopies | None]:
        """Claim ``move`` for instance ``owner`` (for as long as it lives) and fire with
        its object as the claim's transaction read it (what the move starts from); None,
        claiming nothing, when it is gone, another live instance has it, or a live
        instance (``owner`` included) has another move of the same object: one move of
        an object at a time."""

    def finish_move(move: QueuedMove, moved: bool) -> Deferred[None]:
        """Take ``move`` out of the queue; ``moved``: its copy was moved (counted in the totals)."""

    def postpone_move(move: QueuedMove, next_ms: int, error: str) -> Deferred[None]:
        """Count a failed attempt at ``move``, end its claim, and try it next at ``next_ms``."""

    def unqueue_moves(reason: str, store: str | None = None) -> Deferred[int]:
        """Drop the queued moves of ``reason`` (off ``store`` only, if given) and their
        totals; fire with how many moves were dropped."""

    def move_progress() -> Deferred[list[MoveProgress]]:
        """Moves left and made, per reason and source store (by reason, then store): one
        read of counters kept as the queue changes, cheap enough for every scrape."""

    def movement_paused() -> Deferred[bool]:
        """Whether moving is paused."""

    def pause_movement(paused: bool, now_ms: int) -> Deferred[None]:
        """Pause (True) or resume (False) moving, until told otherwise (restarts included)."""
