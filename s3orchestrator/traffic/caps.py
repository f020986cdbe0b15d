"""Which of a store's monthly caps its traffic has reached (pure)."""

from __future__ import annotations

from typing import Iterator

from s3orchestrator.config import StoreCaps
from s3orchestrator.metadata.traffic import Traffic

EGRESS = "egress_bytes"
INGRESS = "ingress_bytes"
REQUESTS = "requests"
CLASS_A = "class_a_requests"
CLASS_B = "class_b_requests"
CAPS = (EGRESS, INGRESS, REQUESTS, CLASS_A, CLASS_B)

#: Caps that stop new copies on the store: what writing to it costs.
WRITE_CAPS = frozenset({INGRESS, CLASS_A, REQUESTS})
#: Caps that stop reads from the store: what reading from it costs.
READ_CAPS = frozenset({EGRESS, CLASS_B, REQUESTS})

#: How messages name each cap ("store X reached its monthly egress cap").
CAP_NAMES = {
    EGRESS: "egress",
    INGRESS: "ingress",
    REQUESTS: "request",
    CLASS_A: "class A request",
    CLASS_B: "class B request",
}


def used(cap: str, traffic: Traffic) -> int:
    """What ``traffic`` counts against ``cap``."""
    if cap == REQUESTS:
        return traffic.requests
    if cap == CLASS_A:
        return traffic.requests_a
    if cap == CLASS_B:
        return traffic.requests_b
    return int(getattr(traffic, cap))


def limits(caps: StoreCaps) -> Iterator[tuple[str, int]]:
    """The caps set, as (cap, limit), in ``CAPS`` order."""
    for cap in CAPS:
        limit = getattr(caps, cap)
        if limit is not None:
            yield cap, limit


def reached(caps: StoreCaps, traffic: Traffic) -> frozenset[str]:
    """The caps ``traffic`` has reached (used up to or past their limit)."""
    return frozenset(cap for cap, limit in limits(caps) if used(cap, traffic) >= limit)


def describe(store: str, cap: str) -> str:
    """What an operator or client is told: ``store X reached its monthly egress cap``."""
    return f"store {store} reached its monthly {CAP_NAMES[cap]} cap"
