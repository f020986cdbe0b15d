"""Rebalance planning: which copies to move so that the stores' fill levels come within a
tolerance of their mean (pure, no I/O).

A store's fill is its used bytes over its quota. The stores taking part are those with a
quota, in mode ``normal``, healthy and under their hard monthly caps (the others are left
out, and said so); their mean fill is the fill they would all have if perfectly balanced
(total used over total quota), and moves between them keep it. The plan is balanced when
every one of them is within ``tolerance`` of it.

Copies are offered object by object (``RebalancePlanner.offer``, in pages read from the
metadata, in key order): each object may get one move, from the fullest store among those
that must give to the emptiest among those that must take, when

- the target holds no copy of the object (in any state) and has room for it;
- the object's copies do not span fewer zones afterwards (two copies in one zone only
  where they were already);
- neither store crosses the tolerance band the wrong way (the source stays at or above
  mean - tolerance, the target at or below mean + tolerance);
- the move lowers the sum of used²/quota over the stores, so that balance strictly
  improves and planning ends.

The stores that must give are those above mean + tolerance, or, when none is but some
store is below mean - tolerance, those above the mean; conversely for the stores that
must take. Planning stops once balanced, after ``max_moves`` moves, or when the offers
end (no other copy could move). The result is deterministic for the same inputs.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Iterable, Sequence

import attrs

from s3orchestrator.metadata.records import ObjectPlacement, PlannedMove
from s3orchestrator.routing import zone_of

NORMAL = "normal"
LIVE = "live"
DELETING = "deleting"


@attrs.frozen
class StoreState:
    """One store as the planner sees it.

    ``used_bytes``: what stays on the store (live copies and reservations; bytes queued
    for cleanup left out), the figure balanced. ``cleanup_bytes``: bytes queued for
    cleanup, still taking room until removed. ``leaving_bytes``/``arriving_bytes``: the
    bytes of moves already queued from and to the store (planned as done)."""

    name: str
    quota_bytes: int  # 0 = unlimited
    used_bytes: int
    cleanup_bytes: int = 0
    leaving_bytes: int = 0
    arriving_bytes: int = 0
    zone: str | None = None
    mode: str = NORMAL
    healthy: bool = True
    capped: bool = False  # over a hard monthly cap

    def left_out(self) -> str | None:
        """Why the store takes no part in rebalancing (None: it does)."""
        if self.quota_bytes == 0:
            return "no quota"
        if self.mode != NORMAL:
            return f"mode {self.mode}"
        if not self.healthy:
            return "unhealthy"
        if self.capped:
            return "monthly cap reached"
        return None


@attrs.frozen
class StorePlan:
    """A store before and after the plan: used bytes (as ``StoreState.used_bytes``, queued
    moves counted as done) and the copies moving out and in; ``left_out`` says why the
    store takes no part (None: it does)."""

    name: str
    quota_bytes: int
    used_before: int
    used_after: int
    objects_out: int = 0
    bytes_out: int = 0
    objects_in: int = 0
    bytes_in: int = 0
    left_out: str | None = None

    def fill_before(self) -> Fraction | None:
        """used_before / quota (None: no quota)."""
        return Fraction(self.used_before, self.quota_bytes) if self.quota_bytes else None

    def fill_after(self) -> Fraction | None:
        """used_after / quota (None: no quota)."""
        return Fraction(self.used_after, self.quota_bytes) if self.quota_bytes else None


@attrs.frozen
class RebalancePlan:
    """The moves planned, in order, and every store before and after them.

    ``mean_fill``: the stores' mean fill (None: fewer than two stores take part);
    ``balanced``: whether every store taking part is within ``tolerance`` of it after the
    moves; ``objects_seen``: objects offered; ``exhausted``: every object was offered
    (else planning stopped early: balanced, or ``max_moves`` reached)."""

    moves: tuple[PlannedMove, ...]
    stores: tuple[StorePlan, ...]
    mean_fill: Fraction | None
    tolerance: Fraction
    balanced: bool
    objects_seen: int
    exhausted: bool

    @property
    def bytes(self) -> int:
        """Bytes the moves copy."""
        return sum(move.size for move in self.moves)


class _Store:
    """A taking-part store's figures while planning; fills compared through byte bounds
    (exact, and cheaper than fractions for every object offered)."""

    def __init__(self, state: StoreState, order: int) -> None:
        self.state = state
        self.name = state.name
        self.order = order
        self.quota = state.quota_bytes
        self.used = state.used_bytes - state.leaving_bytes + state.arriving_bytes
        # Leaving copies keep their room until moved and cleaned up; arriving ones take it.
        self.occupied = state.used_bytes + state.cleanup_bytes + state.arriving_bytes
        self.objects_out = self.bytes_out = self.objects_in = self.bytes_in = 0
        # used <= high: fill <= mean + tolerance; used >= low: fill >= mean - tolerance;
        # used > at_most_mean: fill > mean; used < at_least_mean: fill < mean.
        self.high = self.low = self.at_most_mean = self.at_least_mean = 0

    def bound(self, mean: Fraction, tolerance: Fraction) -> None:
        self.high = math.floor((mean + tolerance) * self.quota)
        self.low = math.ceil((mean - tolerance) * self.quota)
        self.at_most_mean = math.floor(mean * self.quota)
        self.at_least_mean = math.ceil(mean * self.quota)


class RebalancePlanner:
    """Plans moves among ``stores`` (in configuration order: it breaks ties), fed objects
    by ``offer`` until ``done``; ``plan()`` tells the result. A store without a zone, or
    not among ``stores``, is a zone of its own (as in routing)."""

    def __init__(
        self,
        stores: Sequence[StoreState],
        tolerance: Fraction,
        max_moves: int,
    ) -> None:
        if tolerance < 0:
            raise ValueError("tolerance must not be negative")
        if max_moves < 0:
            raise ValueError("max_moves must not be negative")
        if len({state.name for state in stores}) != len(stores):
            raise ValueError("store names must be distinct")
        self._states = tuple(stores)
        self._tolerance = Fraction(tolerance)
        self._max_moves = max_moves
        self._zones = {state.name: state.zone for state in stores if state.zone is not None}
        self._stores = {
            state.name: _Store(state, order) for order, state in enumerate(stores) if state.left_out() is None
        }
        quota = sum(store.quota for store in self._stores.values())
        self.mean_fill: Fraction | None = (
            Fraction(sum(store.used for store in self._stores.values()), quota) if len(self._stores) >= 2 else None
        )
        if self.mean_fill is not None:
            for store in self._stores.values():
                store.bound(self.mean_fill, self._tolerance)
        self._moves: list[PlannedMove] = []
        self._objects_seen = 0
        self._givers: list[_Store] = []
        self._takers: list[_Store] = []
        self._sort()

    @property
    def done(self) -> bool:
        """Whether no more offer could change the plan: balanced, or ``max_moves`` reached."""
        return not self._givers or not self._takers or len(self._moves) >= self._max_moves

    @property
    def objects_seen(self) -> int:
        """How many objects were offered while not ``done``."""
        return self._objects_seen

    @property
    def balanced(self) -> bool:
        """Whether every store taking part is within the tolerance of the mean fill."""
        return self.mean_fill is None or all(store.low <= store.used <= store.high for store in self._stores.values())

    def offer(self, objects: Iterable[ObjectPlacement]) -> None:
        """Consider each of ``objects`` for one move (until ``done``)."""
        for placement in objects:
            if self.done:
                return
            self._objects_seen += 1
            move = self._move_for(placement)
            if move is not None:
                self._apply(move)

    def plan(self, exhausted: bool) -> RebalancePlan:
        """The plan so far; ``exhausted``: every object was offered."""
        reports = []
        for state in self._states:
            store = self._stores.get(state.name)
            if store is None:
                used = state.used_bytes - state.leaving_bytes + state.arriving_bytes
                reports.append(StorePlan(state.name, state.quota_bytes, used, used, left_out=state.left_out()))
                continue
            before = store.used - store.bytes_in + store.bytes_out
            reports.append(StorePlan(
                state.name, state.quota_bytes, before, store.used,
                store.objects_out, store.bytes_out, store.objects_in, store.bytes_in,
            ))
        return RebalancePlan(
            moves=tuple(self._moves),
            stores=tuple(reports),
            mean_fill=self.mean_fill,
            tolerance=self._tolerance,
            balanced=self.balanced,
            objects_seen=self._objects_seen,
            exhausted=exhausted,
        )

    def _sort(self) -> None:
        """Recompute which stores give and which take, fullest givers and emptiest takers first."""
        self._givers, self._takers = [], []
        if self.mean_fill is None or self.balanced:
            return
        stores = list(self._stores.values())
        over = [store for store in stores if store.used > store.high]
        under = [store for store in stores if store.used < store.low]
        self._givers = over or [store for store in stores if store.used > store.at_most_mean]
        self._takers = under or [store for store in stores if store.used < store.at_least_mean]
        # int / int is correctly rounded: equal fills get equal keys, ties go to config order.
        self._givers.sort(key=lambda store: (-store.used / store.quota, store.order))
        self._takers.sort(key=lambda store: (store.used / store.quota, store.order))

    def _move_for(self, placement: ObjectPlacement) -> PlannedMove | None:
        states = dict(placement.copies)
        if any(state != LIVE and state != DELETING for state in states.values()):
            return None  # a copy is being written: the object is the writer's for now
        size = placement.size
        zones_before = -1
        for source in self._givers:
            if states.get(source.name) != LIVE or source.used - size < source.low:
                continue
            for target in self._takers:
                if target.name in states or target.occupied + size > target.quota or target.used + size > target.high:
                    continue
                # used²/quota falls iff the fill gap exceeds half the move's fill on each side.
                gap = source.used * target.quota - target.used * source.quota
                if 2 * gap <= size * (source.quota + target.quota):
                    continue
                if len(states) > 1:
                    live = [store for store, state in placement.copies if state == LIVE]
                    if zones_before < 0:
                        zones_before = len({zone_of(store, self._zones) for store in live})
                    after = {zone_of(store, self._zones) for store in live if store != source.name}
                    after.add(zone_of(target.name, self._zones))
                    if len(after) < zones_before:
                        continue
                return PlannedMove(placement.bucket, placement.key, source.name, target.name, size)
        return None

    def _apply(self, move: PlannedMove) -> None:
        source, target = self._stores[move.from_store], self._stores[move.to_store or ""]
        source.used -= move.size
        source.objects_out += 1
        source.bytes_out += move.size
        target.used += move.size
        target.occupied += move.size
        target.objects_in += 1
        target.bytes_in += move.size
        self._moves.append(move)
        self._sort()


def plan_rebalance(
    stores: Sequence[StoreState],
    objects: Iterable[ObjectPlacement],
    tolerance: Fraction,
    max_moves: int,
) -> RebalancePlan:
    """The plan for ``stores`` given every object (``RebalancePlanner`` fed at once)."""
    planner = RebalancePlanner(stores, tolerance, max_moves)
    iterator = iter(objects)
    for placement in iterator:
        if planner.done:
            return planner.plan(exhausted=False)
        planner.offer((placement,))
    return planner.plan(exhausted=True)
