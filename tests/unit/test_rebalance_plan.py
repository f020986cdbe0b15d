"""Tests for s3orchestrator.placement.rebalance: the rebalance planner."""

from __future__ import annotations

from fractions import Fraction
from typing import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from s3orchestrator.metadata.records import ObjectPlacement, PlannedMove
from s3orchestrator.placement.rebalance import RebalancePlanner, StoreState, plan_rebalance

TOLERANCE = Fraction(5, 100)


def live(bucket: str, key: str, size: int, *stores: str) -> ObjectPlacement:
    return ObjectPlacement(bucket, key, size, tuple((store, "live") for store in sorted(stores)))


def objects_on(store: str, count: int, size: int, prefix: str = "k") -> list[ObjectPlacement]:
    return [live("b", f"{prefix}{i:05d}", size, store) for i in range(count)]


def store_plan(plan, name):  # type: ignore[no-untyped-def]
    return next(store for store in plan.stores if store.name == name)


def test_moves_from_the_full_store_to_the_empty_one_until_within_tolerance() -> None:
    stores = [StoreState("a", 1000, 800), StoreState("b", 1000, 0)]
    plan = plan_rebalance(stores, objects_on("a", 80, 10), TOLERANCE, 1000)
    assert plan.mean_fill == Fraction(2, 5)
    assert plan.balanced
    assert all(move.from_store == "a" and move.to_store == "b" and move.size == 10 for move in plan.moves)
    a, b = store_plan(plan, "a"), store_plan(plan, "b")
    # Stops as soon as both are within 0.05 of 0.4: a at 0.45, b at 0.35.
    assert (a.used_before, a.used_after, b.used_before, b.used_after) == (800, 450, 0, 350)
    assert (a.objects_out, a.bytes_out, b.objects_in, b.bytes_in) == (35, 350, 35, 350)
    assert plan.bytes == 350
    assert not plan.exhausted


def test_moves_are_the_first_objects_offered_in_order() -> None:
    stores = [StoreState("a", 100, 60), StoreState("b", 100, 0)]
    plan = plan_rebalance(stores, objects_on("a", 6, 10), Fraction(0), 1000)
    assert plan.moves == (
        PlannedMove("b", "k00000", "a", "b", 10),
        PlannedMove("b", "k00001", "a", "b", 10),
        PlannedMove("b", "k00002", "a", "b", 10),
    )
    assert plan.balanced
    assert plan.objects_seen == 3


def test_a_balanced_set_of_stores_gets_no_move() -> None:
    stores = [StoreState("a", 1000, 420), StoreState("b", 2000, 760)]  # 0.42 and 0.38 around 0.3933
    plan = plan_rebalance(stores, objects_on("a", 42, 10), TOLERANCE, 1000)
    assert plan.moves == ()
    assert plan.balanced
    assert plan.objects_seen == 0


def test_fill_is_relative_to_each_quota() -> None:
    stores = [StoreState("small", 100, 90), StoreState("big", 1000, 0)]
    plan = plan_rebalance(stores, objects_on("small", 9, 10), Fraction(2, 100), 1000)
    # mean 90/1100 ~ 0.082: small must come down to 0.10, i.e. 10 bytes left.
    assert store_plan(plan, "small").used_after == 10
    assert store_plan(plan, "big").used_after == 80
    assert plan.balanced


def test_a_store_within_tolerance_gives_only_when_another_is_too_empty() -> None:
    # a and b are within 0.05 of the mean (0.40), c is far below it: a and b must give.
    stores = [StoreState("a", 100, 44), StoreState("b", 100, 44), StoreState("c", 100, 32)]
    objects = [*objects_on("a", 44, 1, "a"), *objects_on("b", 44, 1, "b")]
    plan = plan_rebalance(stores, objects, Fraction(1, 100), 1000)
    assert plan.balanced
    assert {move.to_store for move in plan.moves} == {"c"}
    assert store_plan(plan, "c").used_after == 39  # within 0.01 of 0.4


def test_the_fullest_store_gives_first() -> None:
    stores = [StoreState("a", 100, 60), StoreState("b", 100, 90), StoreState("c", 100, 0)]
    objects = [live("b", f"k{i}", 10, "a", "b") for i in range(6)]
    plan = plan_rebalance(stores, objects, TOLERANCE, 1)
    assert plan.moves == (PlannedMove("b", "k0", "b", "c", 10),)


def test_the_emptiest_store_takes_first_and_ties_go_to_config_order() -> None:
    stores = [StoreState("a", 100, 90), StoreState("b", 100, 30), StoreState("c", 100, 20), StoreState("d", 100, 20)]
    plan = plan_rebalance(stores, objects_on("a", 9, 10), TOLERANCE, 1)
    assert plan.moves[0].to_store == "c"


def test_never_onto_a_store_holding_a_copy_in_any_state() -> None:
    stores = [StoreState("a", 100, 80), StoreState("b", 1000, 0), StoreState("c", 2000, 0)]
    objects = [
        live("b", "both", 10, "a", "c"),
        ObjectPlacement("b", "deleting", 10, (("a", "live"), ("c", "deleting"))),
    ]
    plan = plan_rebalance(stores, objects, Fraction(0), 10)
    # c, the emptiest, holds each object already; b is the only other taker.
    assert [(move.key, move.to_store) for move in plan.moves] == [("both", "b"), ("deleting", "b")]


def test_objects_being_written_are_left_alone() -> None:
    stores = [StoreState("a", 100, 80), StoreState("b", 100, 0)]
    objects = [ObjectPlacement("b", "k", 10, (("a", "live"), ("c", "pending")))]
    assert plan_rebalance(stores, objects, TOLERANCE, 10).moves == ()


def test_only_live_copies_move() -> None:
    stores = [StoreState("a", 100, 80), StoreState("b", 100, 0)]
    objects = [ObjectPlacement("b", "k", 10, (("a", "deleting"), ("z", "live")))]
    assert plan_rebalance(stores, objects, TOLERANCE, 10).moves == ()


def test_copies_never_span_fewer_zones() -> None:
    stores = [
        StoreState("a1", 100, 80, zone="A"),
        StoreState("b1", 100, 45, zone="B"),
        StoreState("b2", 100, 0, zone="B"),
    ]
    objects = [live("b", "k", 10, "a1", "b1"), live("b", "m", 10, "a1")]
    plan = plan_rebalance(stores, objects, TOLERANCE, 10)
    # Moving k's copy off a1 onto b2 would put both copies in zone B: only m moves.
    assert [(move.key, move.from_store, move.to_store) for move in plan.moves] == [("m", "a1", "b2")]


def test_copies_may_move_within_a_zone_or_into_a_new_one() -> None:
    stores = [
        StoreState("a1", 100, 80, zone="A"),
        StoreState("a2", 100, 0, zone="A"),
        StoreState("c1", 100, 40, zone="C"),
    ]
    objects = [live("b", "k", 10, "a1", "c1")]
    plan = plan_rebalance(stores, objects, TOLERANCE, 10)
    assert plan.moves == (PlannedMove("b", "k", "a1", "a2", 10),)


def test_two_copies_already_in_one_zone_may_stay_so() -> None:
    stores = [StoreState("a1", 100, 80, zone="A"), StoreState("a2", 100, 40, zone="A"), StoreState("a3", 100, 0,
                                                                                                    zone="A")]
    plan = plan_rebalance(stores, [live("b", "k", 10, "a1", "a2")], TOLERANCE, 10)
    assert plan.moves == (PlannedMove("b", "k", "a1", "a3", 10),)


@pytest.mark.parametrize(("left_out", "reason"), [
    (StoreState("x", 100, 0, mode="readonly"), "mode readonly"),
    (StoreState("x", 100, 0, mode="drain"), "mode drain"),
    (StoreState("x", 100, 0, healthy=False), "unhealthy"),
    (StoreState("x", 100, 0, capped=True), "monthly cap reached"),
    (StoreState("x", 0, 0), "no quota"),
])
def test_left_out_stores_neither_give_nor_take(left_out: StoreState, reason: str) -> None:
    stores = [StoreState("a", 100, 80), StoreState("b", 100, 60), left_out]
    objects = objects_on("a", 8, 10)
    plan = plan_rebalance(stores, objects, TOLERANCE, 100)
    assert all(move.to_store == "b" for move in plan.moves)
    assert plan.mean_fill == Fraction(7, 10)  # x left out of the mean
    x = store_plan(plan, "x")
    assert (x.left_out, x.used_before, x.used_after) == (reason, 0, 0)


def test_a_left_out_store_holding_copies_does_not_give() -> None:
    stores = [StoreState("a", 100, 10), StoreState("b", 100, 10), StoreState("r", 100, 100, mode="readonly")]
    assert plan_rebalance(stores, objects_on("r", 10, 10), Fraction(0), 100).moves == ()


def test_fewer_than_two_stores_taking_part_plan_nothing() -> None:
    stores = [StoreState("a", 100, 90), StoreState("b", 100, 0, healthy=False)]
    plan = plan_rebalance(stores, objects_on("a", 9, 10), Fraction(0), 100)
    assert plan.moves == ()
    assert plan.mean_fill is None
    assert plan.balanced


def test_the_target_needs_room_counting_bytes_queued_for_cleanup() -> None:
    # b's fill is low (cleanup bytes do not count), but they still take its room.
    stores = [StoreState("a", 100, 90), StoreState("b", 100, 10, cleanup_bytes=85)]
    plan = plan_rebalance(stores, objects_on("a", 9, 10), Fraction(0), 100)
    assert plan.moves == ()
    assert not plan.balanced
    assert plan.exhausted


def test_no_move_overshoots_the_tolerance_band() -> None:
    # A 40-byte object would take b from 0.1 to 0.5, above 0.35 + 0.05.
    stores = [StoreState("a", 100, 60), StoreState("b", 100, 10)]
    plan = plan_rebalance(stores, [live("b", "big", 40, "a"), live("b", "small", 20, "a")], TOLERANCE, 100)
    assert [move.key for move in plan.moves] == ["small"]
    assert plan.balanced


def test_a_move_that_would_not_improve_balance_is_not_planned() -> None:
    # With no tolerance, moving the only 30-byte object would just swap which is fuller.
    stores = [StoreState("a", 100, 60), StoreState("b", 100, 40)]
    plan = plan_rebalance(stores, [live("b", "k", 30, "a")], Fraction(1, 2), 100)
    assert plan.moves == ()
    plan = plan_rebalance(stores, [live("b", "k", 30, "a")], Fraction(0), 100)
    assert plan.moves == ()


def test_queued_moves_count_as_done() -> None:
    stores = [StoreState("a", 100, 80, leaving_bytes=30), StoreState("b", 100, 0, arriving_bytes=30)]
    plan = plan_rebalance(stores, objects_on("a", 8, 10), TOLERANCE, 100)
    a, b = store_plan(plan, "a"), store_plan(plan, "b")
    assert (a.used_before, b.used_before) == (50, 30)
    assert [move.size for move in plan.moves] == [10]
    assert (a.used_after, b.used_after) == (40, 40)


def test_max_moves_bounds_the_plan() -> None:
    stores = [StoreState("a", 100, 80), StoreState("b", 100, 0)]
    plan = plan_rebalance(stores, objects_on("a", 8, 10), TOLERANCE, 2)
    assert len(plan.moves) == 2
    assert not plan.balanced
    assert not plan.exhausted


def test_the_planner_reads_no_more_objects_than_it_needs() -> None:
    stores = [StoreState("a", 100, 80), StoreState("b", 100, 0)]
    taken: list[int] = []

    def endless() -> Iterator[ObjectPlacement]:
        i = 0
        while True:
            taken.append(i)
            yield live("b", f"k{i}", 10, "a")
            i += 1

    plan = plan_rebalance(stores, endless(), TOLERANCE, 100)
    assert plan.balanced
    assert len(taken) == len(plan.moves) + 1


def test_offers_in_pages_give_the_plan_of_one_offer() -> None:
    stores = [StoreState("a", 1000, 700), StoreState("b", 1000, 300), StoreState("c", 1000, 0)]
    objects = [live("b", f"k{i:03d}", 7 + i % 5, "a" if i % 3 else "b") for i in range(150)]
    planner = RebalancePlanner(stores, TOLERANCE, 1000)
    for start in range(0, len(objects), 16):
        if planner.done:
            break
        planner.offer(objects[start:start + 16])
    assert planner.plan(exhausted=False) == plan_rebalance(stores, objects, TOLERANCE, 1000)


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError):
        RebalancePlanner([StoreState("a", 1, 0)], Fraction(-1), 1)
    with pytest.raises(ValueError):
        RebalancePlanner([StoreState("a", 1, 0), StoreState("a", 1, 0)], TOLERANCE, 1)


@st.composite
def scenarios(draw):  # type: ignore[no-untyped-def]
    count = draw(st.integers(2, 5))
    names = [f"s{i}" for i in range(count)]
    zones = draw(st.lists(st.sampled_from([None, "z1", "z2"]), min_size=count, max_size=count))
    quotas = draw(st.lists(st.integers(50, 400), min_size=count, max_size=count))
    wanted = draw(st.lists(
        st.tuples(st.integers(1, 30), st.sets(st.integers(0, count - 1), min_size=1, max_size=3)), max_size=60,
    ))
    objects = []
    used = [0] * count
    for i, (size, holders) in enumerate(wanted):
        if any(used[holder] + size > quotas[holder] for holder in holders):
            continue
        for holder in holders:
            used[holder] += size
        objects.append(live("b", f"k{i:03d}", size, *(names[holder] for holder in holders)))
    stores = [StoreState(names[i], quotas[i], used[i], zone=zones[i]) for i in range(count)]
    return stores, objects, Fraction(draw(st.integers(0, 20)), 100)


@settings(deadline=None)
@given(scenarios())
def test_every_plan_keeps_the_invariants(scenario) -> None:  # type: ignore[no-untyped-def]
    stores, objects, tolerance = scenario
    plan = plan_rebalance(stores, objects, tolerance, 1000)
    by_name = {state.name: state for state in stores}
    holders = {(placement.bucket, placement.key): {store for store, _ in placement.copies} for placement in objects}
    zone = {state.name: state.zone or f"own:{state.name}" for state in stores}
    moved: set[tuple[str, str]] = set()
    used = {state.name: state.used_bytes for state in stores}
    potential = sum(Fraction(used[name] ** 2, by_name[name].quota_bytes) for name in used)
    for move in plan.moves:
        key = (move.bucket, move.key)
        assert key not in moved  # one move per object
        moved.add(key)
        assert move.to_store is not None
        assert move.from_store in holders[key] and move.to_store not in holders[key]
        before = {zone[name] for name in holders[key]}
        holders[key] = holders[key] - {move.from_store} | {move.to_store}
        assert len({zone[name] for name in holders[key]}) >= len(before)
        used[move.from_store] -= move.size
        used[move.to_store] += move.size
        assert used[move.to_store] <= by_name[move.to_store].quota_bytes
        after = sum(Fraction(used[name] ** 2, by_name[name].quota_bytes) for name in used)
        assert after < potential  # balance strictly improves
        potential = after
    mean = plan.mean_fill
    assert mean == Fraction(sum(state.used_bytes for state in stores), sum(state.quota_bytes for state in stores))
    for report in plan.stores:
        assert report.used_after == used[report.name]
        fill_before, fill_after = report.fill_before(), report.fill_after()
        assert fill_before is not None and fill_after is not None
        # No store crosses the band the wrong way, nor ends further from the mean beyond it.
        if report.bytes_out:
            assert fill_after >= mean - tolerance
        if report.bytes_in:
            assert fill_after <= mean + tolerance
    assert plan.balanced == all(abs(Fraction(used[s.name], s.quota_bytes) - mean) <= tolerance for s in stores)
    if not plan.balanced:
        assert plan.exhausted
