"""Tests for s3orchestrator.routing: pack and spread store choice."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from s3orchestrator.metadata.records import StoreUsage
from s3orchestrator.routing import choose_store, fill_ratio, has_room


def usage(name: str, quota: int, used: int = 0, reserved: int = 0) -> StoreUsage:
    return StoreUsage(name=name, quota_bytes=quota, used_bytes=used, reserved_bytes=reserved)


CASES = [
    # (strategy, stores, size, healthy, expected)
    ("pack", [], 1, None, None),
    ("spread", [], 1, None, None),
    ("pack", [usage("a", 100), usage("b", 100)], 10, None, "a"),
    ("pack", [usage("a", 100, used=95), usage("b", 100)], 10, None, "b"),
    ("pack", [usage("a", 100, used=90), usage("b", 100)], 10, None, "a"),  # exactly full fits
    ("pack", [usage("a", 100, used=50, reserved=45), usage("b", 100)], 10, None, "b"),
    ("pack", [usage("a", 100, used=95), usage("b", 100, used=95)], 10, None, None),
    ("pack", [usage("a", 100, used=95), usage("b", 0, used=10**15)], 10, None, "b"),  # unlimited
    ("pack", [usage("a", 100), usage("b", 100)], 10, {"b"}, "b"),
    ("pack", [usage("a", 100), usage("b", 100)], 10, set(), None),
    ("pack", [usage("a", 100)], 0, None, "a"),
    ("pack", [usage("a", 100, used=100)], 0, None, "a"),
    ("pack", [usage("a", 100)], 101, None, None),
    ("spread", [usage("a", 100, used=50), usage("b", 100, used=10)], 10, None, "b"),
    ("spread", [usage("a", 100, used=50), usage("b", 1000, used=400)], 10, None, "b"),
    ("spread", [usage("a", 100, used=10), usage("b", 100, used=10, reserved=5)], 10, None, "a"),
    ("spread", [usage("a", 100, used=20), usage("b", 200, used=40)], 10, None, "a"),  # tie
    ("spread", [usage("a", 200, used=40), usage("b", 100, used=20)], 10, None, "a"),  # tie
    ("spread", [usage("a", 100, used=10), usage("b", 0, used=10**12)], 10, None, "b"),  # unlimited
    ("spread", [usage("a", 0, used=5), usage("b", 0)], 10, None, "a"),  # both unlimited: order
    ("spread", [usage("a", 100, used=1), usage("b", 1000, used=995)], 10, None, "a"),
    ("spread", [usage("a", 100, used=95), usage("b", 1000, used=500)], 10, None, "b"),  # a full
    ("spread", [usage("a", 100, used=0), usage("b", 100, used=50)], 10, {"b"}, "b"),
    ("spread", [usage("a", 100, used=95), usage("b", 100, used=95)], 10, None, None),
]


@pytest.mark.parametrize(("strategy", "stores", "size", "healthy", "expected"), CASES)
def test_choose_store(
    strategy: str,
    stores: list[StoreUsage],
    size: int,
    healthy: set[str] | None,
    expected: str | None,
) -> None:
    assert choose_store(strategy, stores, size, healthy) == expected


def test_unknown_strategy_is_an_error() -> None:
    with pytest.raises(ValueError, match="random"):
        choose_store("random", [usage("a", 0)], 1)


def test_healthy_accepts_any_container() -> None:
    stores = [usage("a", 0), usage("b", 0)]
    assert choose_store("pack", stores, 1, frozenset({"b"})) == "b"
    assert choose_store("pack", stores, 1, ("b",)) == "b"
    assert choose_store("pack", stores, 1, {"b": True}) == "b"


def test_has_room_and_fill_ratio() -> None:
    assert has_room(usage("a", 0, used=10**18), 10**18)
    assert has_room(usage("a", 10, used=4, reserved=3), 3)
    assert not has_room(usage("a", 10, used=4, reserved=3), 4)
    assert fill_ratio(usage("a", 0, used=5)) == 0
    assert fill_ratio(usage("a", 8, used=2, reserved=2)) == Fraction(1, 2)


stores_strategy = st.lists(
    st.builds(
        usage,
        name=st.sampled_from("abcdefgh"),
        quota=st.one_of(st.just(0), st.integers(1, 1000)),
        used=st.integers(0, 1000),
        reserved=st.integers(0, 200),
    ),
    max_size=8,
    unique_by=lambda store: store.name,
)
healthy_strategy = st.one_of(st.none(), st.sets(st.sampled_from("abcdefgh")))


def _eligible(stores: list[StoreUsage], size: int, healthy: set[str] | None) -> list[StoreUsage]:
    return [
        store
        for store in stores
        if (healthy is None or store.name in healthy)
        and (
            store.quota_bytes == 0
            or store.used_bytes + store.reserved_bytes + size <= store.quota_bytes
        )
    ]


@given(stores_strategy, st.integers(0, 1200), healthy_strategy)
def test_pack_returns_first_fitting_healthy_store(
    stores: list[StoreUsage], size: int, healthy: set[str] | None
) -> None:
    eligible = _eligible(stores, size, healthy)
    chosen = choose_store("pack", stores, size, healthy)
    assert chosen == (eligible[0].name if eligible else None)


@given(stores_strategy, st.integers(0, 1200), healthy_strategy)
def test_spread_returns_a_least_full_fitting_healthy_store(
    stores: list[StoreUsage], size: int, healthy: set[str] | None
) -> None:
    eligible = _eligible(stores, size, healthy)
    chosen = choose_store("spread", stores, size, healthy)
    if not eligible:
        assert chosen is None
        return

    def ratio(store: StoreUsage) -> Fraction:
        if store.quota_bytes == 0:
            return Fraction(0)
        return Fraction(store.used_bytes + store.reserved_bytes, store.quota_bytes)

    by_name = {store.name: store for store in eligible}
    assert chosen in by_name
    minimum = min(ratio(store) for store in eligible)
    assert ratio(by_name[chosen]) == minimum
    # Ties go to the earliest store in config order.
    first_minimal = next(store for store in eligible if ratio(store) == minimum)
    assert chosen == first_minimal.name
