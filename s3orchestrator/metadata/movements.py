"""The movements queue in SQL (``IMovementQueue``): copies to move between stores (drain,
rebalance), what has been moved, and whether moving is paused (table ``movements`` and its
companions, migration 012). Mixed into ``MetadataStore``; the same statements run on both engines.

What is left to move is counted in ``movement_totals`` (migration 015) by every statement
that adds or takes moves, in its transaction (``_count_left``), so that progress is one
short read however long the queue."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable, Sequence

from twisted.internet.defer import Deferred

from s3orchestrator.metadata.claims import lock_key
from s3orchestrator.metadata.database import Database, Transaction
from s3orchestrator.metadata.movement_queue import MOVE_REASONS
from s3orchestrator.metadata.records import MoveProgress, ObjectCopies, PlannedMove, QueuedMove

#: The ``movement_state`` row of the mover.
MOVER = "mover"

_MOVE_COLUMNS = "bucket, key, from_store, to_store, reason, size, queued_ms, attempts, next_ms, last_error"

# A claim of a move is void once its instance is dead: no live instance of that id that
# started before the claim (an earlier process with the same id made it).
_CLAIM_DEAD = (
    "(m.claimed_by IS NULL OR NOT EXISTS (SELECT 1 FROM instances i WHERE i.id = m.claimed_by"
    " AND i.expires_ms > ? AND i.started_ms <= m.claimed_ms))"
)


def _move_from_row(row: Sequence[Any]) -> QueuedMove:
    bucket, key, from_store, to_store, reason, size, queued_ms, attempts, next_ms, last_error = row
    return QueuedMove(
        bucket=bucket, key=key, from_store=from_store, to_store=to_store, reason=reason, size=int(size),
        queued_ms=int(queued_ms), attempts=int(attempts), next_ms=int(next_ms), last_error=last_error,
    )


def _check_reason(reason: str) -> None:
    if reason not in MOVE_REASONS:
        raise ValueError(f"unknown move reason {reason!r}")


def _start_totals(txn: Transaction, reason: str, stores: Sequence[str], now_ms: int) -> None:
    for store in sorted(set(stores)):
        txn.execute(
            "INSERT INTO movement_totals (reason, store, moved_objects, moved_bytes, started_ms)"
            " VALUES (?, ?, 0, 0, ?) ON CONFLICT (reason, store) DO NOTHING",
            (reason, store, now_ms),
        )


def _count_left(txn: Transaction, reason: str, store: str, objects: int, size: int, failing: int) -> None:
    """Add to what is left of ``reason``'s moves off ``store`` (negative: taken out)."""
    txn.execute(
        "UPDATE movement_totals SET left_objects = left_objects + ?, left_bytes = left_bytes + ?,"
        " failing = failing + ? WHERE reason = ? AND store = ?",
        (objects, size, failing, reason, store),
    )


def uncount_moves(txn: Transaction, removed: Iterable[Sequence[Any]]) -> int:
    """Count out of what is left the moves just deleted, given as the (reason, from_store,
    size, attempts) rows their DELETE ... RETURNING gave; how many there were."""
    sums: dict[tuple[str, str], list[int]] = {}
    for reason, store, size, attempts in removed:
        counts = sums.setdefault((reason, store), [0, 0, 0])
        counts[0] += 1
        counts[1] += int(size)
        counts[2] += 1 if int(attempts) > 0 else 0
    for (reason, store), (objects, size, failing) in sorted(sums.items()):
        _count_left(txn, reason, store, -objects, -size, -failing)
    return sum(counts[0] for counts in sums.values())


def finish_queued_move(txn: Transaction, move: QueuedMove, moved: bool) -> bool:
    """Take ``move`` out of the queue (``IMovementQueue.finish_move``) in ``txn``; whether
    it was still queued."""
    removed = txn.query(
        "DELETE FROM movements WHERE bucket = ? AND key = ? AND from_store = ? RETURNING reason, from_store, size,"
        " attempts",
        (move.bucket, move.key, move.from_store),
    )
    if not removed:
        return False
    uncount_moves(txn, removed)
    if moved:
        txn.execute(
            "UPDATE movement_totals SET moved_objects = moved_objects + 1, moved_bytes = moved_bytes + ?"
            " WHERE reason = ? AND store = ?",
            (move.size, move.reason, move.from_store),
        )
    return True


class MovementQueries:
    """``IMovementQueue`` over a ``Database`` (the ``database`` attribute of the class it is mixed into)."""

    database: Database

    if TYPE_CHECKING:
        def _read_object_copies(self, txn: Transaction, bucket: str, key: str) -> ObjectCopies:
            """The object and its copies, read in ``txn`` (``MetadataStore`` has it)."""

    def queue_moves(self, moves: Sequence[PlannedMove], reason: str, now_ms: int) -> Deferred[int]:
        _check_reason(reason)

        def queue(txn: Transaction) -> int:
            _start_totals(txn, reason, [move.from_store for move in moves], now_ms)
            added: dict[str, list[int]] = {}
            for move in moves:
                txn.execute(
                    f"INSERT INTO movements ({_MOVE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, 0, ?, NULL)"
                    " ON CONFLICT (bucket, key, from_store) DO NOTHING",
                    (move.bucket, move.key, move.from_store, move.to_store, reason, move.size, now_ms, now_ms),
                )
                if txn.rowcount == 1:
                    counts = added.setdefault(move.from_store, [0, 0])
                    counts[0] += 1
                    counts[1] += move.size
            for store, (objects, size) in sorted(added.items()):
                _count_left(txn, reason, store, objects, size, 0)
            return sum(objects for objects, _ in added.values())

        return self.database.runInteraction("queue_moves", queue, write=True)

    def copies_on_store(self, store: str, after: tuple[str, str] | None, limit: int) -> Deferred[list[PlannedMove]]:
        sql = "SELECT bucket, key, size FROM copies WHERE store = ? AND state = 'live'"
        args: list[Any] = [store]
        if after is not None:
            sql += " AND (bucket > ? OR (bucket = ? AND key > ?))"
            args.extend([after[0], after[0], after[1]])
        sql += " ORDER BY bucket, key LIMIT ?"
        args.append(limit)

        def select(txn: Transaction) -> list[PlannedMove]:
            return [PlannedMove(bucket, key, store, None, int(size)) for bucket, key, size in txn.query(sql, args)]

        return self.database.runInteraction("copies_on_store", select)

    def live_copies_on(self, store: str) -> Deferred[tuple[int, int]]:
        def count(txn: Transaction) -> tuple[int, int]:
            row = txn.query_one(
                "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM copies WHERE store = ? AND state = 'live'", (store,)
            )
            assert row is not None
            return int(row[0]), int(row[1])

        return self.database.runInteraction("live_copies_on", count)

    def moves_due(self, limit: int, now_ms: int, owner: str | None = None) -> Deferred[list[QueuedMove]]:
        columns = ", ".join(f"m.{column.strip()}" for column in _MOVE_COLUMNS.split(","))
        mine = "" if owner is None else " OR m.claimed_by = ?"
        args: list[Any] = [now_ms, now_ms] + ([] if owner is None else [owner]) + [limit]

        def select(txn: Transaction) -> list[QueuedMove]:
            rows = txn.query(
                f"SELECT {columns} FROM movements m WHERE m.next_ms <= ? AND ({_CLAIM_DEAD}{mine})"
                " ORDER BY m.next_ms, m.queued_ms, m.bucket, m.key, m.from_store LIMIT ?",
                args,
            )
            return [_move_from_row(row) for row in rows]

        return self.database.runInteraction("moves_due", select)

    def claim_move(self, move: QueuedMove, owner: str, now_ms: int) -> Deferred[ObjectCopies | None]:
        def claim(txn: Transaction) -> ObjectCopies | None:
            # Serialises claims of one object's moves across instances (PostgreSQL).
            lock_key(txn, move.bucket, move.key)
            # Busy: another live instance has this move, or a live one (``owner`` too) has
            # another move of the object.
            busy = txn.query_one(
                f"SELECT 1 FROM movements m WHERE m.bucket = ? AND m.key = ?"
                f" AND (m.from_store <> ? OR m.claimed_by <> ?) AND NOT {_CLAIM_DEAD}",
                (move.bucket, move.key, move.from_store, owner, now_ms),
            )
            if busy is not None:
                return None
            txn.execute(
                "UPDATE movements SET claimed_by = ?, claimed_ms = ? WHERE bucket = ? AND key = ? AND from_store = ?",
                (owner, now_ms, move.bucket, move.key, move.from_store),
            )
            if txn.rowcount != 1:
                return None
            # What the move starts from, read here rather than in transactions of its own.
            return self._read_object_copies(txn, move.bucket, move.key)

        return self.database.runInteraction("claim_move", claim, write=True)

    def finish_move(self, move: QueuedMove, moved: bool) -> Deferred[None]:
        def finish(txn: Transaction) -> None:
            finish_queued_move(txn, move, moved)

        return self.database.runInteraction("finish_move", finish, write=True)

    def postpone_move(self, move: QueuedMove, next_ms: int, error: str) -> Deferred[None]:
        def postpone(txn: Transaction) -> None:
            row = txn.query_one(
                "UPDATE movements SET attempts = attempts + 1, next_ms = ?, last_error = ?, claimed_by = NULL,"
                " claimed_ms = 0 WHERE bucket = ? AND key = ? AND from_store = ?"
                " RETURNING reason, from_store, attempts",
                (next_ms, error[:1000], move.bucket, move.key, move.from_store),
            )
            if row is not None and int(row[2]) == 1:
                _count_left(txn, row[0], row[1], 0, 0, 1)  # its first failure

        return self.database.runInteraction("postpone_move", postpone, write=True)

    def unqueue_moves(self, reason: str, store: str | None = None) -> Deferred[int]:
        _check_reason(reason)
        where, args = ("reason = ?", [reason]) if store is None else ("reason = ? AND from_store = ?", [reason, store])

        def unqueue(txn: Transaction) -> int:
            txn.execute(f"DELETE FROM movements WHERE {where}", args)
            dropped = max(txn.rowcount, 0)
            txn.execute(f"DELETE FROM movement_totals WHERE {where.replace('from_store', 'store')}", args)
            return dropped

        return self.database.runInteraction("unqueue_moves", unqueue, write=True)

    def move_progress(self) -> Deferred[list[MoveProgress]]:
        def select(txn: Transaction) -> list[MoveProgress]:
            # Sorted here: the engines' collations of TEXT differ.
            return sorted((
                MoveProgress(
                    reason=reason, store=store, left_objects=int(left_objects), left_bytes=int(left_bytes),
                    moved_objects=int(moved_objects), moved_bytes=int(moved_bytes), started_ms=int(started_ms),
                    failing=int(failing),
                )
                for reason, store, left_objects, left_bytes, moved_objects, moved_bytes, started_ms, failing
                in txn.query(
                    "SELECT reason, store, left_objects, left_bytes, moved_objects, moved_bytes, started_ms, failing"
                    " FROM movement_totals"
                )
            ), key=lambda progress: (progress.reason, progress.store))

        return self.database.runInteraction("move_progress", select)

    def movement_paused(self) -> Deferred[bool]:
        def select(txn: Transaction) -> bool:
            row = txn.query_one("SELECT paused FROM movement_state WHERE name = ?", (MOVER,))
            return row is not None and bool(row[0])

        return self.database.runInteraction("movement_paused", select)

    def pause_movement(self, paused: bool, now_ms: int) -> Deferred[None]:
        def change(txn: Transaction) -> None:
            txn.execute(
                "INSERT INTO movement_state (name, paused, changed_ms) VALUES (?, ?, ?)"
                " ON CONFLICT (name) DO UPDATE SET paused = excluded.paused, changed_ms = excluded.changed_ms",
                (MOVER, int(paused), now_ms),
            )

        return self.database.runInteraction("pause_movement", change, write=True)
