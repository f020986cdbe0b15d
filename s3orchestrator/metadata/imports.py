"""Imports of objects a store already holds, in SQL (tables ``imports`` and
``import_areas``, migration 013): the checkpoint of each import and the objects it
records, committed together so that a run that stops resumes exactly where it was."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime

from s3orchestrator.metadata.claims import lock_key, owner_dead
from s3orchestrator.metadata.database import Database, Transaction
from s3orchestrator.metadata.records import ObjectRecord
from s3orchestrator.metadata.store import _put_object

_COLUMNS = (
    "store, bucket, prefix, state, owner, after_key, imported_objects, imported_bytes, present, kept, skipped,"
    " started_ms, taken_ms, updated_ms, expires_ms, finished_ms, last_error"
)
_KEY = "store = ? AND bucket = ? AND prefix = ?"

#: What became of one object found in the store.
IMPORTED, PRESENT, KEPT, SKIPPED = "imported", "present", "kept", "skipped"


class ImportRunning(Exception):
    """Another live instance runs this import."""

    def __init__(self, record: ImportRecord) -> None:
        super().__init__(f"instance {record.owner} is running this import")
        self.record = record


class ImportLost(Exception):
    """This instance no longer holds the import (another took it over, or it was finished)."""


@attrs.frozen
class FoundObject:
    """An object found in a store, as the virtual bucket will show it: ``location`` is
    where the store holds it, ``area`` the first segment of the store's name for it."""

    key: str
    location: str
    area: str
    size: int
    etag: str
    content_type: str
    last_modified_ms: int
    headers: Mapping[str, str] = attrs.field(factory=dict)
    user_metadata: Mapping[str, str] = attrs.field(factory=dict)


@attrs.frozen
class ImportRecord:
    """One row of ``imports``."""

    store: str
    bucket: str
    prefix: str
    state: str
    owner: str
    after_key: str
    imported_objects: int
    imported_bytes: int
    present: int
    kept: int
    skipped: int
    started_ms: int
    taken_ms: int
    updated_ms: int
    expires_ms: int
    finished_ms: int | None
    last_error: str | None

    def document(self) -> dict[str, Any]:
        """The row as the admin API shows it (``after_key`` is the last key settled)."""
        return attrs.asdict(self)


def _record_from_row(row: Sequence[Any]) -> ImportRecord:
    values = list(row)
    for index in range(6, 15):
        values[index] = int(values[index])
    if values[15] is not None:
        values[15] = int(values[15])
    return ImportRecord(*values)


def _select(txn: Transaction, store: str, bucket: str, prefix: str, lock: bool = False) -> ImportRecord | None:
    row = txn.query_one(
        f"SELECT {_COLUMNS} FROM imports WHERE {_KEY}" + (txn.engine.for_update if lock else ""),
        (store, bucket, prefix),
    )
    return None if row is None else _record_from_row(row)


def _location_busy(txn: Transaction, store: str, location: str) -> bool:
    """Whether ``location`` on ``store`` holds another object's copy, a write in progress
    or bytes queued for removal."""
    return txn.query_one(
        "SELECT 1 FROM copies WHERE store = ? AND location = ? AND state = 'live'"
        " UNION ALL SELECT 1 FROM intents WHERE store = ? AND location = ?"
        " UNION ALL SELECT 1 FROM cleanup WHERE store = ? AND location = ?",
        (store, location) * 3,
    ) is not None


def _import_one(txn: Transaction, store: str, bucket: str, found: FoundObject, missing: bool) -> str:
    """Record ``found`` as object ``found.key`` of ``bucket`` unless the key exists (the
    existing object wins) or the location is in use; what became of it."""
    lock_key(txn, bucket, found.key)
    if txn.query_one("SELECT 1 FROM objects WHERE bucket = ? AND key = ?", (bucket, found.key)) is not None:
        here = txn.query_one(
            "SELECT 1 FROM copies WHERE bucket = ? AND key = ? AND store = ? AND location = ? AND state = 'live'",
            (bucket, found.key, store, found.location),
        )
        return PRESENT if here is not None else KEPT
    # Two imports of one store into two buckets could otherwise both find the place free.
    lock_key(txn, f"import:{store}", found.location)
    if _location_busy(txn, store, found.location):
        return SKIPPED
    record = ObjectRecord(
        bucket=bucket, key=found.key, store=store, location=found.location, size=found.size, etag=found.etag,
        content_type=found.content_type, last_modified_ms=found.last_modified_ms, headers=found.headers,
        user_metadata=found.user_metadata,
    )
    _put_object(txn, record, missing=missing)
    txn.execute(
        "INSERT INTO import_areas (store, area, bucket) VALUES (?, ?, ?) ON CONFLICT (store, area, bucket) DO NOTHING",
        (store, found.area, bucket),
    )
    return IMPORTED


class ImportTable:
    """The ``imports`` and ``import_areas`` tables of a metadata ``Database``."""

    def __init__(self, database: Database, clock: IReactorTime | None = None) -> None:
        self.database = database
        self._clock: IReactorTime = clock if clock is not None else database.reactor

    def _now_ms(self) -> int:
        return int(self._clock.seconds() * 1000)

    def begin(self, store: str, bucket: str, prefix: str, owner: str, lease_ms: int) -> Deferred[ImportRecord]:
        """Take the import of ``prefix`` of ``store`` into ``bucket`` for ``owner``: a new
        one, a failed or interrupted one (dead owner) resumed from its checkpoint with its
        counts, or a finished one started over from the first key (counts reset).
        Errbacks with ImportRunning if another live instance runs it."""
        now_ms = self._now_ms()
        expires_ms = now_ms + lease_ms

        def begin(txn: Transaction) -> ImportRecord:
            txn.execute(
                f"INSERT INTO imports ({_COLUMNS}) VALUES (?, ?, ?, 'running', ?, '', 0, 0, 0, 0, 0, ?, ?, ?, ?,"
                " NULL, NULL) ON CONFLICT (store, bucket, prefix) DO NOTHING",
                (store, bucket, prefix, owner, now_ms, now_ms, now_ms, expires_ms),
            )
            if txn.rowcount == 1:
                new = _select(txn, store, bucket, prefix)
                assert new is not None
                return new
            current = _select(txn, store, bucket, prefix, lock=True)
            assert current is not None
            if (
                current.state == "running"
                and current.owner != owner
                and not owner_dead(txn, current.owner, current.taken_ms, current.expires_ms, now_ms)
            ):
                raise ImportRunning(current)
            if current.state == "done":
                txn.execute(
                    "UPDATE imports SET after_key = '', imported_objects = 0, imported_bytes = 0, present = 0,"
                    f" kept = 0, skipped = 0, started_ms = ? WHERE {_KEY}",
                    (now_ms, store, bucket, prefix),
                )
            txn.execute(
                "UPDATE imports SET state = 'running', owner = ?, taken_ms = ?, updated_ms = ?, expires_ms = ?,"
                f" finished_ms = NULL, last_error = NULL WHERE {_KEY}",
                (owner, now_ms, now_ms, expires_ms, store, bucket, prefix),
            )
            taken = _select(txn, store, bucket, prefix)
            assert taken is not None
            return taken

        return self.database.runInteraction("begin_import", begin, write=True)

    def record(
        self, store: str, bucket: str, prefix: str, owner: str, found: Sequence[FoundObject], after_key: str,
        skipped: int, missing: bool, lease_ms: int,
    ) -> Deferred[tuple[ImportRecord, list[str]]]:
        """Record ``found`` (objects ``owner``'s import found, in key order) and move the
        checkpoint to ``after_key`` with ``skipped`` more keys left out before this, in
        one transaction; fire with the updated row and what became of each object.
        ``missing``: the bucket wants more copies (imported objects join the replication
        queue). Errbacks with ImportLost, changing nothing, if ``owner`` lost the import."""
        now_ms = self._now_ms()

        def record(txn: Transaction) -> tuple[ImportRecord, list[str]]:
            current = _select(txn, store, bucket, prefix, lock=True)
            if current is None or current.owner != owner or current.state != "running":
                raise ImportLost(f"import of {store}/{prefix!r} into {bucket} is no longer this instance's")
            outcomes = [_import_one(txn, store, bucket, item, missing) for item in found]
            imported = [item for item, outcome in zip(found, outcomes, strict=True) if outcome == IMPORTED]
            txn.execute(
                "UPDATE imports SET after_key = ?, imported_objects = imported_objects + ?,"
                " imported_bytes = imported_bytes + ?, present = present + ?, kept = kept + ?,"
                f" skipped = skipped + ?, updated_ms = ?, expires_ms = ? WHERE {_KEY}",
                (
                    after_key, len(imported), sum(item.size for item in imported), outcomes.count(PRESENT),
                    outcomes.count(KEPT), skipped + outcomes.count(SKIPPED), now_ms, now_ms + lease_ms,
                    store, bucket, prefix,
                ),
            )
            updated = _select(txn, store, bucket, prefix)
            assert updated is not None
            return updated, outcomes

        return self.database.runInteraction("record_import", record, write=True)

    def finish(self, store: str, bucket: str, prefix: str, owner: str, error: str | None) -> Deferred[None]:
        """End ``owner``'s run: done, or failed with ``error`` (resumable from its checkpoint)."""
        now_ms = self._now_ms()

        def finish(txn: Transaction) -> None:
            txn.execute(
                "UPDATE imports SET state = ?, finished_ms = ?, updated_ms = ?, last_error = ?"
                f" WHERE {_KEY} AND owner = ? AND state = 'running'",
                ("done" if error is None else "failed", now_ms, now_ms, None if error is None else error[:500],
                 store, bucket, prefix, owner),
            )

        return self.database.runInteraction("finish_import", finish, write=True)

    def imports(self) -> Deferred[list[ImportRecord]]:
        """Every import's row, by store, bucket and prefix."""

        def select(txn: Transaction) -> list[ImportRecord]:
            return [_record_from_row(row) for row in txn.query(
                f"SELECT {_COLUMNS} FROM imports ORDER BY store, bucket, prefix")]

        return self.database.runInteraction("imports", select)

    def areas(self) -> Deferred[list[tuple[str, str, str]]]:
        """(store, area, bucket) of every area imported objects were found in."""

        def select(txn: Transaction) -> list[tuple[str, str, str]]:
            return [(str(store), str(area), str(bucket)) for store, area, bucket in txn.query(
                "SELECT store, area, bucket FROM import_areas ORDER BY store, area, bucket")]

        return self.database.runInteraction("import_areas", select)
