"""The rebalance planner's view of the copies table: whole objects, in pages, in key order."""

from __future__ import annotations

from typing import Any, Callable

import pytest_twisted

from s3orchestrator.metadata.placements import ObjectPlacements
from s3orchestrator.metadata.records import ObjectPlacement, PlannedMove
from s3orchestrator.metadata.store import MetadataStore

Rows = Callable[..., list[tuple[Any, ...]]]

# (bucket, key, [(store, state)], size); keys in byte order: "B" < "a" < "é".
COPIES = [
    ("b1", "B", [("s1", "live"), ("s2", "live"), ("s3", "deleting")], 5),
    ("b1", "a", [("s2", "live")], 7),
    ("b1", "é", [("s1", "pending"), ("s3", "live")], 9),
    ("b2", "x", [("s1", "live"), ("s3", "live")], 11),
    ("b3", "y", [("s2", "live")], 13),
]
EXPECTED = [
    ObjectPlacement(bucket, key, size, tuple(copies)) for bucket, key, copies, size in COPIES
]


class Filled(ObjectPlacements):
    metadata: MetadataStore


async def filled(make_store: Callable[..., MetadataStore], db_rows: Rows) -> Filled:
    metadata = make_store()
    await metadata.start()
    await metadata.sync_stores([("s1", 0), ("s2", 0), ("s3", 0)])
    for bucket, key, copies, size in reversed(COPIES):
        for store, state in copies:
            db_rows("INSERT INTO copies (bucket, key, store, location, state, size, created_ms)"
                    " VALUES (?, ?, ?, ?, ?, ?, 1)", (bucket, key, store, f"{bucket}/{key}", state, size))
    placements = Filled(metadata.database)
    placements.metadata = metadata
    return placements


async def read_all(placements: ObjectPlacements, limit: int) -> list[list[ObjectPlacement]]:
    pages = []
    after = None
    while page := await placements.page(after, limit):
        pages.append(page)
        after = (page[-1].bucket, page[-1].key)
    return pages


@pytest_twisted.ensureDeferred
async def test_one_page_holds_every_object_in_byte_order(make_store, db_rows: Rows) -> None:
    placements = await filled(make_store, db_rows)
    assert await read_all(placements, 100) == [EXPECTED]


@pytest_twisted.ensureDeferred
async def test_pages_hold_whole_objects_across_buckets(make_store, db_rows: Rows) -> None:
    placements = await filled(make_store, db_rows)
    pages = await read_all(placements, 4)
    assert [object for page in pages for object in page] == EXPECTED
    # A full page may end in an object cut short: it is left to the next page.
    assert pages == [EXPECTED[:1], EXPECTED[1:3], EXPECTED[3:]]


@pytest_twisted.ensureDeferred
async def test_a_limit_below_one_objects_copies_still_reads_it_whole(make_store, db_rows: Rows) -> None:
    placements = await filled(make_store, db_rows)
    pages = await read_all(placements, 1)
    assert pages == [[placement] for placement in EXPECTED]


@pytest_twisted.ensureDeferred
async def test_a_page_starts_after_the_position_given(make_store, db_rows: Rows) -> None:
    placements = await filled(make_store, db_rows)
    assert await placements.page(("b1", "a"), 100) == EXPECTED[2:]
    assert await placements.page(("b1", "ê"), 100) == EXPECTED[3:]
    assert await placements.page(("b3", "y"), 100) == []


@pytest_twisted.ensureDeferred
async def test_objects_with_a_move_queued_are_left_out(make_store, db_rows: Rows) -> None:
    placements = await filled(make_store, db_rows)
    metadata = placements.metadata
    await metadata.queue_moves([PlannedMove("b1", "a", "s2", "s1", 7), PlannedMove("b2", "x", "s1", None, 11)],
                               "rebalance", 1)
    assert await read_all(placements, 2) == [[EXPECTED[0]], [EXPECTED[2]], [EXPECTED[4]]]


@pytest_twisted.ensureDeferred
async def test_queued_move_bytes_by_source_and_target(make_store, db_rows: Rows) -> None:
    placements = await filled(make_store, db_rows)
    metadata = placements.metadata
    await metadata.queue_moves([PlannedMove("b1", "a", "s2", "s1", 7), PlannedMove("b1", "B", "s2", "s3", 5)],
                               "rebalance", 1)
    await metadata.queue_moves([PlannedMove("b2", "x", "s1", None, 11)], "drain", 1)
    assert await placements.queued_move_bytes() == ({"s1": 11, "s2": 12}, {"s1": 7, "s3": 5})
