"""Tests for s3orchestrator.routing: pack and spread store choice."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from s3orchestrator.metadata.records import StoreUsage
from s3orchestrator.routing import choose_store, choose_stores, fill_ratio, has_room, zone_of


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
    # Equally full now, but the object fills the smaller store more: the bigger one wins.
    ("spread", [usage("a", 100, used=20), usage("b", 200, used=40)], 10, None, "b"),
    ("spread", [usage("a", 200, used=40), usage("b", 100, used=20)], 10, None, "a"),
    ("spread", [usage("a", 100, used=20), usage("b", 100, used=20)], 10, None, "a"),  # tie: config order
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
    assert fill_ratio(usage("a", 8, used=2, reserved=2), 2) == Fraction(3, 4)
    assert fill_ratio(usage("a", 0, used=5), 10**6) == 0


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
        return Fraction(store.used_bytes + store.reserved_bytes + size, store.quota_bytes)

    by_name = {store.name: store for store in eligible}
    assert chosen in by_name
    minimum = min(ratio(store) for store in eligible)
    assert ratio(by_name[chosen]) == minimum
    # Ties go to the earliest store in config order.
    first_minimal = next(store for store in eligible if ratio(store) == minimum)
    assert chosen == first_minimal.name


# -- several copies: choose_stores ----------------------------------------------------------


def test_pack_takes_the_first_stores_in_config_order() -> None:
    stores = [usage("a", 100), usage("b", 100), usage("c", 100)]
    assert choose_stores("pack", stores, 10, None, 2) == ("a", "b")


def test_spread_takes_the_least_full_stores_first() -> None:
    stores = [usage("a", 100, used=50), usage("b", 100, used=10), usage("c", 100, used=30)]
    assert choose_stores("spread", stores, 10, None, 2) == ("b", "c")


def test_spread_ranks_by_the_fill_with_the_object_on_it() -> None:
    # Both are 20% full; 50 bytes make a 100-byte store 70% full and a 1000-byte one 7%.
    stores = [usage("small", 100, used=20), usage("big", 1000, used=200)]
    assert choose_stores("spread", stores, 50, None, 2) == ("big", "small")


def test_one_copy_per_zone_before_a_zone_is_reused() -> None:
    stores = [usage("b2-eu", 0), usage("b2-us", 0), usage("r2", 0), usage("local", 0)]
    zones = {"b2-eu": "backblaze", "b2-us": "backblaze", "r2": "cloudflare"}
    assert choose_stores("pack", stores, 1, None, 3, zones) == ("b2-eu", "r2", "local")


def test_zones_are_reused_when_there_are_fewer_zones_than_copies() -> None:
    stores = [usage("b2-eu", 0), usage("b2-us", 0), usage("r2", 0)]
    zones = {"b2-eu": "backblaze", "b2-us": "backblaze", "r2": "cloudflare"}
    assert choose_stores("pack", stores, 1, None, 3, zones) == ("b2-eu", "r2", "b2-us")


def test_a_store_without_a_zone_is_apart_from_a_zone_of_its_name() -> None:
    stores = [usage("x", 0), usage("y", 0)]
    assert choose_stores("pack", stores, 1, None, 2, {"y": "x"}) == ("x", "y")
    assert zone_of("x", {"y": "x"}) != zone_of("y", {"y": "x"})


def test_spread_takes_the_best_store_of_each_zone() -> None:
    stores = [usage("a1", 100, used=10), usage("a2", 100, used=0), usage("b1", 100, used=5)]
    zones = {"a1": "a", "a2": "a", "b1": "b"}
    assert choose_stores("spread", stores, 1, None, 2, zones) == ("a2", "b1")


def test_fewer_stores_than_copies_gives_what_fits() -> None:
    stores = [usage("a", 100), usage("b", 100, used=95), usage("c", 100)]
    assert choose_stores("pack", stores, 10, {"a", "b"}, 3) == ("a",)
    assert choose_stores("spread", stores, 10, set(), 3) == ()


def test_count_below_one_is_an_error() -> None:
    with pytest.raises(ValueError, match="count"):
        choose_stores("pack", [usage("a", 0)], 1, None, 0)


def test_choose_stores_rejects_an_unknown_strategy() -> None:
    with pytest.raises(ValueError, match="random"):
        choose_stores("random", [usage("a", 0)], 1, None, 2)


zones_strategy = st.dictionaries(st.sampled_from("abcdefgh"), st.sampled_from(["x", "y", "z", "a"]), max_size=8)


def _rank(strategy: str, eligible: list[StoreUsage], size: int) -> list[str]:
    """The eligible stores best first, computed independently of the routing module."""
    if strategy == "pack":
        return [store.name for store in eligible]

    def key(item: tuple[int, StoreUsage]) -> tuple[Fraction, int]:
        index, store = item
        if store.quota_bytes == 0:
            return Fraction(0), index
        return Fraction(store.used_bytes + store.reserved_bytes + size, store.quota_bytes), index

    return [store.name for _, store in sorted(enumerate(eligible), key=key)]


def _zone(name: str, zones: dict[str, str]) -> object:
    return ("zone", zones[name]) if name in zones else ("store", name)


@given(
    st.sampled_from(["pack", "spread"]), stores_strategy, st.integers(0, 1200), healthy_strategy,
    st.integers(1, 9), zones_strategy,
)
def test_choose_stores_properties(
    strategy: str,
    stores: list[StoreUsage],
    size: int,
    healthy: set[str] | None,
    count: int,
    zones: dict[str, str],
) -> None:
    chosen = choose_stores(strategy, stores, size, healthy, count, zones)
    eligible = _eligible(stores, size, healthy)
    eligible_names = {store.name for store in eligible}
    # Never two copies on one store; only healthy stores with room; as many as asked for or fit.
    assert len(set(chosen)) == len(chosen)
    assert set(chosen) <= eligible_names
    assert len(chosen) == min(count, len(eligible))
    # Zones are distinct whenever the eligible stores allow it.
    chosen_zones = {_zone(name, zones) for name in chosen}
    eligible_zones = {_zone(name, zones) for name in eligible_names}
    assert len(chosen_zones) == min(len(chosen), len(eligible_zones))
    # Strategy order: the first copies (one per zone) are in rank order, each the best
    # store of its zone, and no zone left out ranks before a zone taken.
    rank = _rank(strategy, eligible, size)
    distinct = chosen[: len(chosen_zones)]
    assert len({_zone(name, zones) for name in distinct}) == len(distinct)
    assert list(distinct) == sorted(distinct, key=rank.index)
    best_of_zone: dict[object, str] = {}
    for name in rank:
        best_of_zone.setdefault(_zone(name, zones), name)
    assert all(best_of_zone[_zone(name, zones)] == name for name in distinct)
    if distinct:
        last = rank.index(distinct[-1])
        assert all(best in distinct for best in best_of_zone.values() if rank.index(best) < last)
    # The copies beyond one per zone are the best-ranked stores left, in rank order.
    rest = [name for name in rank if name not in distinct]
    assert list(chosen[len(distinct):]) == rest[: len(chosen) - len(distinct)]


@given(st.sampled_from(["pack", "spread"]), stores_strategy, st.integers(0, 1200), healthy_strategy)
def test_choose_store_is_the_first_of_choose_stores(
    strategy: str, stores: list[StoreUsage], size: int, healthy: set[str] | None
) -> None:
    many = choose_stores(strategy, stores, size, healthy, 3)
    assert choose_store(strategy, stores, size, healthy) == (many[0] if many else None)


@given(st.sampled_from(["pack", "spread"]), stores_strategy, st.integers(0, 1200), st.integers(1, 9))
def test_without_zones_the_copies_are_the_best_ranked_stores(
    strategy: str, stores: list[StoreUsage], size: int, count: int
) -> None:
    eligible = _eligible(stores, size, None)
    assert list(choose_stores(strategy, stores, size, None, count)) == _rank(strategy, eligible, size)[:count]
