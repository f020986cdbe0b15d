"""A rebalance plan as operators see it: the admin API's JSON document (``plan_document``)
and the table ``s3orchestrator rebalance`` prints from it (``plan_table``, standard
library only)."""

from __future__ import annotations

from fractions import Fraction
from typing import TYPE_CHECKING, Any, Mapping

from s3orchestrator.ops.report import format_bytes, printable, table

if TYPE_CHECKING:
    from s3orchestrator.placement.rebalance import RebalancePlan

#: Moves the document lists (the plan may hold many more; its totals count them all).
LISTED_MOVES = 1000


def _float(fill: Fraction | None) -> float | None:
    return float(fill) if fill is not None else None


def plan_document(plan: RebalancePlan, queued: int | None = None) -> dict[str, Any]:
    """``{"moves": N, "bytes": N, "mean_fill", "tolerance", "balanced", "objects_seen",
    "exhausted", "stores": [{name, quota_bytes, used_before, used_after, fill_before,
    fill_after, objects_out, bytes_out, objects_in, bytes_in, left_out}], "planned":
    [{bucket, key, from_store, to_store, size}] (the first LISTED_MOVES)}``, and
    ``queued`` (moves queued for the mover) when the plan was queued."""
    document: dict[str, Any] = {
        "moves": len(plan.moves),
        "bytes": plan.bytes,
        "mean_fill": _float(plan.mean_fill),
        "tolerance": float(plan.tolerance),
        "balanced": plan.balanced,
        "objects_seen": plan.objects_seen,
        "exhausted": plan.exhausted,
        "stores": [
            {
                "name": store.name,
                "quota_bytes": store.quota_bytes,
                "used_before": store.used_before,
                "used_after": store.used_after,
                "fill_before": _float(store.fill_before()),
                "fill_after": _float(store.fill_after()),
                "objects_out": store.objects_out,
                "bytes_out": store.bytes_out,
                "objects_in": store.objects_in,
                "bytes_in": store.bytes_in,
                "left_out": store.left_out,
            }
            for store in plan.stores
        ],
        "planned": [
            {"bucket": move.bucket, "key": move.key, "from_store": move.from_store, "to_store": move.to_store,
             "size": move.size}
            for move in plan.moves[:LISTED_MOVES]
        ],
    }
    if queued is not None:
        document["queued"] = queued
    return document


def _percent(fill: float | None) -> str:
    return "-" if fill is None else f"{100 * fill:.1f}%"


def _flow(objects: int, size: int) -> str:
    return f"{objects} ({format_bytes(size)})" if objects else "0"


def plan_table(document: Mapping[str, Any], list_moves: bool = False) -> str:
    """The ``plan_document`` as text: a summary line, one row per store (used and fill
    before and after, copies out and in), and, with ``list_moves``, the moves listed."""
    moves, size = document["moves"], document["bytes"]
    mean = document.get("mean_fill")
    if mean is None:
        summary = "fewer than two stores take part: nothing to balance"
    elif moves == 0 and document["balanced"]:
        summary = f"balanced: every store is within {_percent(document['tolerance'])} of the mean fill" \
                  f" {_percent(mean)}; nothing to move"
    else:
        summary = f"{moves} copies to move ({format_bytes(size)}); mean fill {_percent(mean)}," \
                  f" tolerance {_percent(document['tolerance'])}"
    lines = [summary]
    if moves and not document["balanced"]:
        lines.append(
            "after these moves the stores are not all within the tolerance yet: "
            + ("no other copy can move (room, zones, copies already there)" if document["exhausted"]
               else "the plan reached its bounds; run the rebalance again once these moves are done")
        )
    rows = [
        (
            printable(str(store["name"])),
            format_bytes(store["quota_bytes"]) if store["quota_bytes"] else "unlimited",
            format_bytes(store["used_before"]),
            _percent(store["fill_before"]),
            format_bytes(store["used_after"]),
            _percent(store["fill_after"]),
            _flow(store["objects_out"], store["bytes_out"]),
            _flow(store["objects_in"], store["bytes_in"]),
            printable(store["left_out"]) if store["left_out"] else "",
        )
        for store in document["stores"]
    ]
    lines.append(table(("STORE", "QUOTA", "USED BEFORE", "FILL", "USED AFTER", "FILL", "OUT", "IN", "LEFT OUT"),
                       rows))
    if list_moves and document["planned"]:
        lines.append(table(
            ("BUCKET", "KEY", "FROM", "TO", "SIZE"),
            ((printable(move["bucket"]), printable(move["key"]), printable(move["from_store"]),
              printable(str(move["to_store"])), format_bytes(move["size"])) for move in document["planned"]),
        ))
        if len(document["planned"]) < moves:
            lines.append(f"(the first {len(document['planned'])} of {moves} moves)")
    if "queued" in document:
        lines.append(f"queued {document['queued']} of {moves} moves for the mover")
    return "\n".join(lines) + "\n"
