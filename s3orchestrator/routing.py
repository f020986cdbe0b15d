"""Routing: which store a new object goes to (pure, no I/O)."""

from __future__ import annotations

from fractions import Fraction
from typing import Container, Sequence

from s3orchestrator.metadata.records import StoreUsage

PACK = "pack"
SPREAD = "spread"
STRATEGIES: frozenset[str] = frozenset({PACK, SPREAD})


def has_room(store: StoreUsage, size: int) -> bool:
    """True when ``size`` more bytes fit in the store's quota (0 = unlimited)."""
    if store.quota_bytes == 0:
        return True
    return store.used_bytes + store.reserved_bytes + size <= store.quota_bytes


def fill_ratio(store: StoreUsage) -> Fraction:
    """How full the store is, counting reservations; unlimited stores count as empty."""
    if store.quota_bytes == 0:
        return Fraction(0)
    # Exact fractions: floats could call two different fill levels equal on huge quotas.
    return Fraction(store.used_bytes + store.reserved_bytes, store.quota_bytes)


def choose_store(
    strategy: str,
    stores: Sequence[StoreUsage],
    size: int,
    healthy: Container[str] | None = None,
) -> str | None:
    """Name of the store a new object of ``size`` bytes should go to, or None if none fits.

    ``stores`` is in config order. Stores not in ``healthy`` (when given) are skipped.
    ``pack`` takes the first store with room; ``spread`` the least full one, ties going
    to the earlier store.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown routing strategy {strategy!r}")
    candidates = [
        (index, store)
        for index, store in enumerate(stores)
        if (healthy is None or store.name in healthy) and has_room(store, size)
    ]
    if not candidates:
        return None
    if strategy == PACK:
        return candidates[0][1].name
    _, best = min(candidates, key=lambda item: (fill_ratio(item[1]), item[0]))
    return best.name
