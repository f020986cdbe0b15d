"""Routing: which stores the copies of a new object go to (pure, no I/O)."""

from __future__ import annotations

from fractions import Fraction
from typing import Container, Mapping, Sequence

from s3orchestrator.metadata.records import StoreUsage

PACK = "pack"
SPREAD = "spread"
STRATEGIES: frozenset[str] = frozenset({PACK, SPREAD})


def has_room(store: StoreUsage, size: int) -> bool:
    """True when ``size`` more bytes fit in the store's quota (0 = unlimited)."""
    if store.quota_bytes == 0:
        return True
    return store.used_bytes + store.reserved_bytes + size <= store.quota_bytes


def fill_ratio(store: StoreUsage, size: int = 0) -> Fraction:
    """How full the store is (counting reservations) once ``size`` more bytes are on it;
    unlimited stores count as empty."""
    if store.quota_bytes == 0:
        return Fraction(0)
    # Exact fractions: floats could call two different fill levels equal on huge quotas.
    return Fraction(store.used_bytes + store.reserved_bytes + size, store.quota_bytes)


def zone_of(store: str, zones: Mapping[str, str]) -> tuple[bool, str]:
    """The zone a store counts in: its configured zone, or a zone of its own (a store
    named like another store's zone is still apart from it)."""
    zone = zones.get(store)
    return (True, zone) if zone is not None else (False, store)


def choose_stores(
    strategy: str,
    stores: Sequence[StoreUsage],
    size: int,
    healthy: Container[str] | None = None,
    count: int = 1,
    zones: Mapping[str, str] | None = None,
    excluded: Container[str] = frozenset(),
    last_resort: Container[str] = frozenset(),
) -> tuple[str, ...]:
    """Names of up to ``count`` distinct stores for the copies of a new object of
    ``size`` bytes, best first; fewer (down to ``()``) when fewer fit, the caller
    weighing that against its write quorum.

    ``stores`` is in config order. Stores not in ``healthy`` (when given), stores in
    ``excluded`` (over a hard monthly cap) and stores without room for ``size`` are
    skipped. The others are ranked by the strategy:
    ``pack`` in config order, ``spread`` by how full they would be with the object
    (ties to the earlier store). ``zones`` maps store names to zones (a store without
    one is its own zone): the best store of each zone is taken first, in rank order,
    and a zone is used twice only when there are fewer zones than ``count``. Stores
    in ``last_resort`` (over a soft monthly cap) are taken only when the others
    leave copies to place.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown routing strategy {strategy!r}")
    if count < 1:
        raise ValueError(f"count must be at least 1 (got {count})")
    ranked = [
        store for store in stores
        if (healthy is None or store.name in healthy) and store.name not in excluded and has_room(store, size)
    ]
    if strategy == SPREAD:
        # sorted() is stable: equally full stores keep their config order.
        ranked.sort(key=lambda store: fill_ratio(store, size))
    zone_map = zones if zones is not None else {}
    chosen: list[str] = []
    _take(chosen, [store.name for store in ranked if store.name not in last_resort], count, zone_map)
    _take(chosen, [store.name for store in ranked if store.name in last_resort], count, zone_map)
    return tuple(chosen)


def _take(chosen: list[str], ranked: Sequence[str], count: int, zones: Mapping[str, str]) -> None:
    """Add to ``chosen`` (up to ``count`` in all) stores of ``ranked``: the best one of
    each zone not in ``chosen`` yet first, then the others in rank order."""
    seen_zones = {zone_of(name, zones) for name in chosen}
    for name in ranked:
        zone = zone_of(name, zones)
        if len(chosen) < count and zone not in seen_zones:
            seen_zones.add(zone)
            chosen.append(name)
    for name in ranked:
        if len(chosen) < count and name not in chosen:
            chosen.append(name)


def choose_store(
    strategy: str,
    stores: Sequence[StoreUsage],
    size: int,
    healthy: Container[str] | None = None,
    excluded: Container[str] = frozenset(),
    last_resort: Container[str] = frozenset(),
) -> str | None:
    """Name of the store a new object of ``size`` bytes should go to, or None if none
    fits: ``choose_stores`` for one copy."""
    chosen = choose_stores(strategy, stores, size, healthy, excluded=excluded, last_resort=last_resort)
    return chosen[0] if chosen else None
