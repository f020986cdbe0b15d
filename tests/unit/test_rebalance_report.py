"""Tests for s3orchestrator.ops.rebalance_report: the plan's document and its table."""

from __future__ import annotations

from fractions import Fraction

from s3orchestrator.metadata.records import PlannedMove
from s3orchestrator.ops.rebalance_report import plan_document, plan_table
from s3orchestrator.placement.rebalance import RebalancePlan, StorePlan


def plan(moves: int = 2, balanced: bool = True, exhausted: bool = False, mean: Fraction | None = Fraction(1, 4),
         ) -> RebalancePlan:
    return RebalancePlan(
        moves=tuple(PlannedMove("bkt", f"k{i}", "a", "b", 512) for i in range(moves)),
        stores=(StorePlan("a", 4096, 2048, 2048 - 512 * moves, objects_out=moves, bytes_out=512 * moves),
                StorePlan("b", 4096, 0, 512 * moves, objects_in=moves, bytes_in=512 * moves),
                StorePlan("z", 0, 100, 100, left_out="no quota")),
        mean_fill=mean, tolerance=Fraction(1, 20), balanced=balanced, objects_seen=7, exhausted=exhausted,
    )


def test_the_document_has_the_totals_every_store_and_the_moves() -> None:
    document = plan_document(plan(), queued=2)
    assert {key: document[key] for key in ("moves", "bytes", "mean_fill", "tolerance", "balanced", "objects_seen",
                                           "exhausted", "queued")} == {
        "moves": 2, "bytes": 1024, "mean_fill": 0.25, "tolerance": 0.05, "balanced": True, "objects_seen": 7,
        "exhausted": False, "queued": 2}
    assert document["stores"][0] == {
        "name": "a", "quota_bytes": 4096, "used_before": 2048, "used_after": 1024, "fill_before": 0.5,
        "fill_after": 0.25, "objects_out": 2, "bytes_out": 1024, "objects_in": 0, "bytes_in": 0, "left_out": None}
    assert document["stores"][2]["fill_before"] is None
    assert document["planned"][1] == {"bucket": "bkt", "key": "k1", "from_store": "a", "to_store": "b", "size": 512}


def test_the_table_says_what_moves_and_what_is_left_out() -> None:
    lines = plan_table(plan_document(plan())).splitlines()
    assert lines[0] == "2 copies to move (1.0 KiB); mean fill 25.0%, tolerance 5.0%"
    assert lines[2].split() == ["a", "4.0", "KiB", "2.0", "KiB", "50.0%", "1.0", "KiB", "25.0%", "2", "(1.0", "KiB)",
                                "0"]
    assert lines[4].split() == ["z", "unlimited", "100", "B", "-", "100", "B", "-", "0", "0", "no", "quota"]


def test_the_table_says_why_a_plan_leaves_stores_out_of_balance() -> None:
    exhausted = plan_table(plan_document(plan(balanced=False, exhausted=True))).splitlines()
    assert exhausted[1] == ("after these moves the stores are not all within the tolerance yet: no other copy can"
                            " move (room, zones, copies already there)")
    bounded = plan_table(plan_document(plan(balanced=False))).splitlines()
    assert bounded[1].endswith("the plan reached its bounds; run the rebalance again once these moves are done")


def test_nothing_to_do() -> None:
    assert plan_table(plan_document(plan(0))).startswith(
        "balanced: every store is within 5.0% of the mean fill 25.0%; nothing to move\n")
    assert plan_table(plan_document(plan(0, mean=None))).startswith(
        "fewer than two stores take part: nothing to balance\n")


def test_the_moves_listed_and_how_many_are_not() -> None:
    document = plan_document(plan(3))
    document["planned"] = document["planned"][:2]
    lines = plan_table(document, list_moves=True).splitlines()
    assert lines[-4].split() == ["BUCKET", "KEY", "FROM", "TO", "SIZE"]
    assert lines[-3].split() == ["bkt", "k0", "a", "b", "512", "B"]
    assert lines[-1] == "(the first 2 of 3 moves)"
