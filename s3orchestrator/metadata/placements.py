"""Where every object's copies are, read in pages of the ``copies`` table in key order
(what the rebalance planner is offered), and the rebalance's view of the queued moves: the
bytes they take off and onto each store, and dropping those to stores that no longer take copies."""

from __future__ import annotations

from itertools import groupby
from typing import Any, Sequence

from twisted.internet.defer import Deferred, succeed

from s3orchestrator.metadata.database import Database, Transaction
from s3orchestrator.metadata.movements import uncount_moves
from s3orchestrator.metadata.records import ObjectPlacement

_COLUMNS = "bucket, key, store, state, size"
# Objects with a move queued are the mover's: left out.
_NOT_MOVING = "NOT EXISTS (SELECT 1 FROM movements m WHERE m.bucket = copies.bucket AND m.key = copies.key)"


def _group(rows: Sequence[tuple[Any, ...]]) -> list[ObjectPlacement]:
    placements = []
    for (bucket, key), copies in groupby(rows, key=lambda row: (row[0], row[1])):
        rows_of_object = list(copies)
        # Every copy row of an object holds the object's size.
        placements.append(ObjectPlacement(
            bucket, key, int(rows_of_object[0][4]), tuple((row[2], row[3]) for row in rows_of_object),
        ))
    return placements


class ObjectPlacements:
    """The ``copies`` table of a metadata ``Database``, object by object."""

    def __init__(self, database: Database) -> None:
        self.database = database

    def page(self, after: tuple[str, str] | None, limit: int) -> Deferred[list[ObjectPlacement]]:
        """The objects after ``after`` (a (bucket, key) position; None: from the first) in
        byte order of bucket and key, each with all its copies (stores in name order):
        as many whole objects as ``limit`` copy rows hold, at least one. Empty: no more.
        Objects with a move queued are left out."""
        if limit < 1:
            raise ValueError("limit must be positive")

        def select(txn: Transaction) -> list[ObjectPlacement]:
            # Two index range scans (the rest of one bucket, then the next buckets) rather
            # than one OR, which SQLite would not turn into a range of the primary key.
            if after is None:
                rows = txn.query(
                    f"SELECT {_COLUMNS} FROM copies WHERE {_NOT_MOVING} ORDER BY bucket, key, store LIMIT ?", (limit,),
                )
            else:
                bucket, key = after
                rows = txn.query(
                    f"SELECT {_COLUMNS} FROM copies WHERE bucket = ? AND key > ? AND {_NOT_MOVING}"
                    " ORDER BY key, store LIMIT ?",
                    (bucket, key, limit),
                )
                if len(rows) < limit:
                    rows += txn.query(
                        f"SELECT {_COLUMNS} FROM copies WHERE bucket > ? AND {_NOT_MOVING}"
                        " ORDER BY bucket, key, store LIMIT ?",
                        (bucket, limit - len(rows)),
                    )
            placements = _group(rows)
            if len(rows) == limit and placements:
                last = placements.pop()  # maybe cut short by the limit: read whole, or next time
                if not placements:
                    placements = _group(txn.query(
                        f"SELECT {_COLUMNS} FROM copies WHERE bucket = ? AND key = ? ORDER BY store",
                        (last.bucket, last.key),
                    ))
            return placements

        return self.database.runInteraction("object_placements", select)

    def queued_move_bytes(self) -> Deferred[tuple[dict[str, int], dict[str, int]]]:
        """The bytes of the queued moves (any reason) by source store, and by target store
        (where one is set)."""

        def select(txn: Transaction) -> tuple[dict[str, int], dict[str, int]]:
            leaving: dict[str, int] = {}
            arriving: dict[str, int] = {}
            for source, target, size in txn.query(
                "SELECT from_store, to_store, SUM(size) FROM movements GROUP BY from_store, to_store"
            ):
                leaving[source] = leaving.get(source, 0) + int(size)
                if target is not None:
                    arriving[target] = arriving.get(target, 0) + int(size)
            return leaving, arriving

        return self.database.runInteraction("queued_move_bytes", select)

    def drop_moves_to(self, stores: Sequence[str], reason: str) -> Deferred[int]:
        """Drop the queued moves of ``reason`` to any of ``stores`` that no mover has
        claimed; fire with how many."""
        if not stores:
            return succeed(0)
        marks = ", ".join("?" for _ in stores)

        def drop(txn: Transaction) -> int:
            return uncount_moves(txn, txn.query(
                f"DELETE FROM movements WHERE reason = ? AND to_store IN ({marks}) AND claimed_by IS NULL"
                " RETURNING reason, from_store, size, attempts",
                (reason, *stores),
            ))

        return self.database.runInteraction("drop_moves_to", drop, write=True)
