"""The scrubber's passes in SQL (table ``scrub_passes``, migration 014): where each kind of
pass stands, and the next live copies it checks, read in primary key order from there."""

from __future__ import annotations

import json
from typing import Sequence

import attrs
from twisted.internet.defer import Deferred

from s3orchestrator.metadata.claims import lock_key
from s3orchestrator.metadata.database import Database, Transaction

#: The kinds of pass: a stat (HEAD) of every live copy, a full read of those on directory stores.
STAT = "stat"
CHECKSUM = "checksum"
KINDS = (STAT, CHECKSUM)

#: A copy's place in the walk: (bucket, key, store), the copies table's primary key.
Position = tuple[str, str, str]


@attrs.frozen
class ScrubPass:
    """Where one kind of pass stands: the current one (or the last, when none runs) began
    at ``started_ms``; the last one finished at ``finished_ms`` (None: none has yet);
    ``position``: the last copy done in the running pass (None: none yet, or not running);
    ``checked`` and ``found`` (missing or damaged) copies in it; ``requested_ms``: when
    an operator asked for a pass to begin at once (None: not asked)."""

    kind: str
    started_ms: int
    finished_ms: int | None
    position: Position | None
    checked: int
    found: int
    requested_ms: int | None = None

    @property
    def running(self) -> bool:
        """Whether a pass is under way (begun and not finished)."""
        return self.finished_ms is None or self.finished_ms < self.started_ms


@attrs.frozen
class ScrubCopy:
    """A live copy to check, with what its object's record says it holds: ``size`` bytes
    of ETag ``etag`` (unquoted), made of parts of ``part_sizes`` (a multipart object;
    empty for others); ``created_ms`` tells this copy from one written since; ``lost``:
    its object is recorded lost (a sole copy the scrubber found missing and kept)."""

    bucket: str
    key: str
    store: str
    location: str
    created_ms: int
    size: int
    etag: str
    part_sizes: tuple[int, ...] = attrs.field(default=(), converter=tuple[int, ...])
    lost: bool = False

    @property
    def position(self) -> Position:
        return (self.bucket, self.key, self.store)


@attrs.frozen
class Suspension:
    """A store the scrubber no longer lets copies go from, since ``since_ms``: the passes
    under way then had found ``found`` of the ``checked`` copies they checked there wrong,
    the last by the pass of ``kind``."""

    store: str
    since_ms: int
    kind: str
    found: int
    checked: int


_PASS_COLUMNS = "kind, started_ms, finished_ms, bucket, key, store, checked, found, requested_ms"
#: SQL: the pass of the row runs (as ScrubPass.running).
_RUNNING = "(finished_ms IS NULL OR finished_ms < started_ms)"


def _pass_from_row(row: Sequence[object]) -> ScrubPass:
    kind, started, finished, bucket, key, store, checked, found, requested = row
    position = None if bucket is None else (str(bucket), str(key), str(store))
    return ScrubPass(str(kind), int(str(started)), None if finished is None else int(str(finished)), position,
                     int(str(checked)), int(str(found)), None if requested is None else int(str(requested)))


class ScrubPasses:
    """The ``scrub_passes`` table of a metadata ``Database``, and the walk over the copies."""

    def __init__(self, database: Database) -> None:
        self.database = database

    def passes(self) -> Deferred[list[ScrubPass]]:
        """Every kind of pass begun so far, by kind."""

        def select(txn: Transaction) -> list[ScrubPass]:
            return [_pass_from_row(row) for row in txn.query(f"SELECT {_PASS_COLUMNS} FROM scrub_passes ORDER BY kind")]

        return self.database.runInteraction("scrub_passes", select)

    def begin(self, kind: str, now_ms: int) -> Deferred[ScrubPass]:
        """Begin a pass of ``kind`` at ``now_ms``, from the first copy. A pass begun in the
        millisecond the previous one finished begins a millisecond later: a pass runs while
        it finished before it began (see ``ScrubPass.running``)."""

        def begin(txn: Transaction) -> ScrubPass:
            txn.execute(
                "INSERT INTO scrub_passes (kind, started_ms, checked, found) VALUES (?, ?, 0, 0)"
                " ON CONFLICT (kind) DO UPDATE SET started_ms = CASE"
                " WHEN scrub_passes.finished_ms >= excluded.started_ms THEN scrub_passes.finished_ms + 1"
                " ELSE excluded.started_ms END,"
                " bucket = NULL, key = NULL, store = NULL, checked = 0, found = 0, requested_ms = NULL",
                (kind, now_ms),
            )
            row = txn.query_one(f"SELECT {_PASS_COLUMNS} FROM scrub_passes WHERE kind = ?", (kind,))
            assert row is not None
            return _pass_from_row(row)

        return self.database.runInteraction("begin_scrub_pass", begin, write=True)

    def request(self, now_ms: int) -> Deferred[list[ScrubPass]]:
        """Ask for a pass of every kind not under way to begin at the scrubber's next look,
        and lift every store's suspension (an operator's ``s3orchestrator scrub --now``);
        every kind's pass begun so far. A kind never begun has none yet: it begins at the
        first look anyway."""

        def request(txn: Transaction) -> list[ScrubPass]:
            txn.execute(f"UPDATE scrub_passes SET requested_ms = ? WHERE NOT {_RUNNING}", (now_ms,))
            txn.execute("DELETE FROM scrub_suspended")
            return [_pass_from_row(row) for row in txn.query(f"SELECT {_PASS_COLUMNS} FROM scrub_passes ORDER BY kind")]

        return self.database.runInteraction("request_scrub_passes", request, write=True)

    def advance(self, kind: str, position: Position, checked: int, found: int) -> Deferred[None]:
        """Record that the running pass of ``kind`` is done up to ``position``, having
        checked ``checked`` more copies and found ``found`` more missing or damaged."""

        def advance(txn: Transaction) -> None:
            txn.execute(
                "UPDATE scrub_passes SET bucket = ?, key = ?, store = ?, checked = checked + ?, found = found + ?"
                " WHERE kind = ?",
                (*position, checked, found, kind),
            )

        # Lost with a crash, a few copies are checked again: no fsync needed.
        return self.database.runInteraction("advance_scrub_pass", advance, write=True, durable=False)

    def finish(self, kind: str, now_ms: int) -> Deferred[None]:
        """End the running pass of ``kind`` at ``now_ms``."""

        def finish(txn: Transaction) -> None:
            txn.execute(
                "UPDATE scrub_passes SET finished_ms = ?, bucket = NULL, key = NULL, store = NULL WHERE kind = ?",
                (now_ms, kind),
            )

        return self.database.runInteraction("finish_scrub_pass", finish, write=True)

    def suspensions(self) -> Deferred[list[Suspension]]:
        """The stores the scrubber no longer lets copies go from, by name."""

        def select(txn: Transaction) -> list[Suspension]:
            rows = txn.query("SELECT store, since_ms, kind, found, checked FROM scrub_suspended ORDER BY store")
            return [Suspension(str(store), int(str(since)), str(kind), int(str(found)), int(str(checked)))
                    for store, since, kind, found, checked in rows]

        return self.database.runInteraction("scrub_suspensions", select)

    def suspend(self, suspension: Suspension) -> Deferred[None]:
        """Record that the scrubber no longer lets copies of ``suspension.store`` go
        (a store already suspended keeps its first record)."""

        def suspend(txn: Transaction) -> None:
            txn.execute(
                "INSERT INTO scrub_suspended (store, since_ms, kind, found, checked) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (store) DO NOTHING",
                attrs.astuple(suspension),
            )

        return self.database.runInteraction("suspend_scrub_store", suspend, write=True)

    def record_lost(self, copy: ScrubCopy, now_ms: int) -> Deferred[bool]:
        """Record ``copy``'s object lost, its copy kept live (a sole copy found missing:
        its store may hand it back, a disk mounted again), if that copy is still the only
        live one of the object as checked (same ETag); out of the replication queue
        (nothing to copy from). True if recorded."""

        def record(txn: Transaction) -> bool:
            lock_key(txn, copy.bucket, copy.key)
            if not _sole_copy(txn, copy):
                return False
            txn.execute("DELETE FROM replication WHERE bucket = ? AND key = ?", (copy.bucket, copy.key))
            txn.execute(
                "INSERT INTO lost_objects (bucket, key, since_ms) VALUES (?, ?, ?)"
                " ON CONFLICT (bucket, key) DO NOTHING",
                (copy.bucket, copy.key, now_ms),
            )
            return True

        return self.database.runInteraction("scrub_record_lost", record, write=True)

    def found_again(self, copy: ScrubCopy, now_ms: int) -> Deferred[bool]:
        """The object of ``copy``, a live copy found right, is no longer lost (its store
        handed it back); queued for replication (its other copies, if it lacks any).
        True if it was recorded lost."""

        def found(txn: Transaction) -> bool:
            lock_key(txn, copy.bucket, copy.key)
            if txn.query_one(
                "SELECT 1 FROM objects WHERE bucket = ? AND key = ? AND etag = ?", (copy.bucket, copy.key, copy.etag)
            ) is None or txn.query_one(
                "SELECT 1 FROM lost_objects WHERE bucket = ? AND key = ?", (copy.bucket, copy.key)
            ) is None:
                return False
            txn.execute("DELETE FROM lost_objects WHERE bucket = ? AND key = ?", (copy.bucket, copy.key))
            txn.execute(
                "INSERT INTO replication (bucket, key, since_ms) VALUES (?, ?, ?) ON CONFLICT (bucket, key) DO NOTHING",
                (copy.bucket, copy.key, now_ms),
            )
            return True

        return self.database.runInteraction("scrub_found_again", found, write=True)

    def next_copies(self, after: Position | None, limit: int) -> Deferred[list[ScrubCopy]]:
        """Up to ``limit`` live copies after ``after`` (None: from the first) in
        (bucket, key, store) order."""
        return self.database.runInteraction("scrub_copies", _next_copies, after, limit)


def _sole_copy(txn: Transaction, copy: ScrubCopy) -> bool:
    """Whether ``copy`` is still the only live copy of its object, of the ETag checked."""
    if txn.query_one(
        "SELECT 1 FROM objects WHERE bucket = ? AND key = ? AND etag = ?", (copy.bucket, copy.key, copy.etag)
    ) is None:
        return False
    rows = txn.query(
        "SELECT store, location, created_ms FROM copies WHERE bucket = ? AND key = ? AND state = 'live'",
        (copy.bucket, copy.key),
    )
    return [(str(store), str(location), int(str(created))) for store, location, created in rows] == [
        (copy.store, copy.location, copy.created_ms)
    ]


def _next_copies(txn: Transaction, after: Position | None, limit: int) -> list[ScrubCopy]:
    # No filter on the store here: the planner would pick copies_by_store and sort every
    # copy of the store at each batch; the primary key walks from the position instead.
    where = "c.state = 'live'"
    args: list[object] = []
    if after is not None:
        # A row-value comparison (SQLite >= 3.15, PostgreSQL) walks the primary key index.
        where += " AND (c.bucket, c.key, c.store) > (?, ?, ?)"
        args += list(after)
    rows = txn.query(
        "SELECT c.bucket, c.key, c.store, c.location, c.created_ms, o.size, o.etag, o.part_sizes, l.since_ms"
        " FROM copies c JOIN objects o ON o.bucket = c.bucket AND o.key = c.key"
        " LEFT JOIN lost_objects l ON l.bucket = c.bucket AND l.key = c.key"
        f" WHERE {where} ORDER BY c.bucket, c.key, c.store LIMIT ?",
        (*args, limit),
    )
    return [
        ScrubCopy(str(bucket), str(key), str(store), str(location), int(created), int(size), str(etag),
                  json.loads(part_sizes) if part_sizes else (), lost_since is not None)
        for bucket, key, store, location, created, size, etag, part_sizes, lost_since in rows
    ]
