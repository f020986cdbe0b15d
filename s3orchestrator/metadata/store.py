"""IMetadataStore over a Database (any engine): objects, store usage, quota reservations."""

from __future__ import annotations

import json
from typing import Any, Callable, Generator, Mapping, Sequence, TypeVar

from twisted.internet.defer import Deferred, inlineCallbacks, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure
from zope.interface import implementer

from s3orchestrator.metadata.claims import (
    WRITE_CLAIM_LEASE,
    LocationClaimed,
    end_claim,
    lock_key,
    take_claim,
    write_holder,
)
from s3orchestrator.metadata.database import Database, Transaction
from s3orchestrator.metadata.engines.sqlite import SqliteEngine
from s3orchestrator.metadata.interface import (
    NOT_ADDED,
    IMetadataStore,
    ObjectFetch,
    StoreChooser,
    StoresChooser,
    UploadFetch,
    prefix_upper_bound,
)
from s3orchestrator.metadata.movements import MovementQueries, finish_queued_move
from s3orchestrator.metadata.records import (
    CleanupEntry,
    CompletedUpload,
    CopyRecord,
    Instance,
    Intent,
    IntentPlan,
    LostObject,
    NewCopy,
    ObjectCopies,
    ObjectRecord,
    PartRecord,
    QueuedMove,
    QueuedReplication,
    QueueTotals,
    Reservation,
    StoreUsage,
    UploadRecord,
)
from s3orchestrator.metadata.schema import migrate


class ReservationNotFound(Exception):
    """commit_object named a reservation that no longer exists (released or cleared)."""


class UploadNotFound(Exception):
    """The multipart upload named no longer exists (completed, aborted or expired)."""


class InstanceIdInUse(Exception):
    """Another live process (its lease not expired) is registered under this instance id."""


#: Counter rows per store in ``store_usage``: each transaction adds to one, chosen at
#: random, so that concurrent commits seldom wait for one another's row lock.
USAGE_SHARDS = 16


_UPLOAD_COLUMNS = (
    "upload_id, bucket, key, store, location, store_upload_id, content_type, headers, user_metadata,"
    " checksum_algorithm, initiated_ms"
)
_COMPLETED_COLUMNS = "upload_id, bucket, key, store, etag, parts, completed_ms"
_PART_COLUMNS = "upload_id, part_number, store, size, etag, store_etag, checksums, last_modified_ms"

_OBJECT_COLUMNS = (
    "bucket, key, store, location, size, etag, content_type, headers, user_metadata, last_modified_ms"
)
_QUALIFIED_OBJECT_COLUMNS = ", ".join(f"objects.{column.strip()}" for column in _OBJECT_COLUMNS.split(","))


def _record_from_row(row: Sequence[Any]) -> ObjectRecord:
    bucket, key, store, location, size, etag, content_type, headers, user_metadata, last_modified_ms = row[:10]
    part_sizes = json.loads(row[10]) if len(row) > 10 and row[10] is not None else ()
    return ObjectRecord(
        bucket=bucket,
        key=key,
        store=store,
        location=location,
        size=int(size),
        etag=etag,
        content_type=content_type,
        last_modified_ms=int(last_modified_ms),
        headers=json.loads(headers),
        user_metadata=json.loads(user_metadata),
        part_sizes=part_sizes,
    )


def _upload_from_row(row: Sequence[Any]) -> UploadRecord:
    (upload_id, bucket, key, store, location, store_upload_id, content_type, headers, user_metadata,
     checksum_algorithm, initiated_ms) = row
    return UploadRecord(
        upload_id=upload_id,
        bucket=bucket,
        key=key,
        store=store,
        location=location,
        store_upload_id=store_upload_id,
        content_type=content_type,
        initiated_ms=int(initiated_ms),
        headers=json.loads(headers),
        user_metadata=json.loads(user_metadata),
        checksum_algorithm=checksum_algorithm,
    )


def _part_from_row(row: Sequence[Any]) -> PartRecord:
    upload_id, part_number, store, size, etag, store_etag, checksums, last_modified_ms = row
    return PartRecord(
        upload_id=upload_id,
        part_number=int(part_number),
        store=store,
        size=int(size),
        etag=etag,
        store_etag=store_etag,
        last_modified_ms=int(last_modified_ms),
        checksums=json.loads(checksums),
    )


def _select_upload(txn: Transaction, upload_id: str, lock: bool = False) -> UploadRecord | None:
    """The upload, or None; ``lock``: the row stays locked until the transaction ends, so
    that changes of one upload's parts, its completion and its abort run one at a time."""
    row = txn.query_one(
        f"SELECT {_UPLOAD_COLUMNS} FROM uploads WHERE upload_id = ?" + (txn.engine.for_update if lock else ""),
        (upload_id,),
    )
    return None if row is None else _upload_from_row(row)


def _select_completed(txn: Transaction, upload_id: str) -> CompletedUpload | None:
    row = txn.query_one(f"SELECT {_COMPLETED_COLUMNS} FROM completed_uploads WHERE upload_id = ?", (upload_id,))
    if row is None:
        return None
    upload_id, bucket, key, store, etag, parts, completed_ms = row
    return CompletedUpload(upload_id=upload_id, bucket=bucket, key=key, store=store, etag=etag,
                           completed_ms=int(completed_ms), parts=json.loads(parts))


def _select_part(txn: Transaction, upload_id: str, part_number: int) -> PartRecord | None:
    row = txn.query_one(
        f"SELECT {_PART_COLUMNS} FROM parts WHERE upload_id = ? AND part_number = ?", (upload_id, part_number)
    )
    return None if row is None else _part_from_row(row)


def _take_reservation(txn: Transaction, reservation_id: int, store: str) -> None:
    """Drop the reservation an upload made, checking it is still there and for ``store``."""
    row = txn.query_one("SELECT store FROM reservations WHERE id = ?", (reservation_id,))
    if row is None:
        raise ReservationNotFound(f"reservation {reservation_id} no longer exists")
    if row[0] != store:
        raise ValueError(f"reservation {reservation_id} is for store {row[0]!r}, not {store!r}")
    txn.execute("DELETE FROM reservations WHERE id = ?", (reservation_id,))
    # Under READ COMMITTED the row may have gone since the SELECT (the reaper released it).
    if txn.rowcount != 1:
        raise ReservationNotFound(f"reservation {reservation_id} no longer exists")


def _json(mapping: Mapping[str, str]) -> str:
    # ensure_ascii (the default) keeps any str representable, lone surrogates included.
    return json.dumps(dict(mapping), sort_keys=True)


def _select_object(txn: Transaction, bucket: str, key: str) -> ObjectRecord | None:
    row = txn.query_one(
        f"SELECT {_OBJECT_COLUMNS}, part_sizes FROM objects WHERE bucket = ? AND key = ?", (bucket, key)
    )
    return None if row is None else _record_from_row(row)


def _select_object_copies(
    txn: Transaction, bucket: str, key: str
) -> tuple[ObjectRecord, tuple[CopyRecord, ...]] | None:
    # One statement (every GET and HEAD runs it): the record on each row, with one live copy
    # or, for an object without any, NULLs.
    rows = txn.query(
        f"SELECT {_QUALIFIED_OBJECT_COLUMNS}, objects.part_sizes,"
        " copies.store, copies.location, copies.size, copies.created_ms FROM objects"
        " LEFT JOIN copies ON copies.bucket = objects.bucket AND copies.key = objects.key"
        " AND copies.state = 'live'"
        " LEFT JOIN stores ON stores.name = copies.store"
        " WHERE objects.bucket = ? AND objects.key = ?"
        " ORDER BY stores.config_order IS NULL, stores.config_order, copies.store",
        (bucket, key),
    )
    if not rows:
        return None
    return _record_from_row(rows[0][:11]), tuple(
        CopyRecord(store=store, location=location, state="live", size=int(size), created_ms=int(created_ms))
        for store, location, size, created_ms in (row[11:] for row in rows)
        if store is not None
    )


_T = TypeVar("_T")


def _select_range(
    txn: Transaction,
    bucket: str,
    prefix: str,
    upper: str | None,
    start: str,
    inclusive: bool,
    limit: int,
) -> list[ObjectRecord]:
    """Up to ``limit`` records under ``prefix`` from ``start`` on, in key order.

    One lower and at most one upper bound on ``key``, so the primary key index
    serves it as a single range (two lower bounds would leave one as a filter).
    """
    if limit <= 0:
        return []
    if start < prefix:
        start, inclusive = prefix, True
    if upper is not None and start >= upper:
        return []
    sql = f"SELECT {_OBJECT_COLUMNS} FROM objects WHERE bucket = ? AND key {'>=' if inclusive else '>'} ?"
    args: list[Any] = [bucket, start]
    if upper is not None:
        sql += " AND key < ?"
        args.append(upper)
    sql += " ORDER BY key LIMIT ?"
    args.append(limit)
    return [_record_from_row(row) for row in txn.query(sql, args)]


_READ_USAGE = (
    "SELECT s.name, s.quota_bytes, COALESCE(u.used, 0), COALESCE(u.objects, 0), COALESCE(r.size, 0),"
    " COALESCE(p.size, 0) FROM stores s"
    " LEFT JOIN (SELECT store, SUM(used_bytes) AS used, SUM(object_count) AS objects FROM store_usage"
    " GROUP BY store) u ON u.store = s.name"
    " LEFT JOIN (SELECT store, SUM(size) AS size FROM reservations GROUP BY store) r ON r.store = s.name"
    " LEFT JOIN (SELECT store, SUM(size) AS size FROM parts GROUP BY store) p ON p.store = s.name"
    " WHERE s.config_order IS NOT NULL ORDER BY s.config_order"
)


def _read_usage(txn: Transaction) -> list[StoreUsage]:
    # One statement, so one snapshot even under READ COMMITTED: a commit that turns a
    # reservation into used bytes between two statements would otherwise be counted
    # in neither (or both).
    return [
        StoreUsage(
            name=name,
            quota_bytes=int(quota),
            used_bytes=int(used),
            reserved_bytes=int(reserved) + int(parts),
            object_count=int(count),
        )
        for name, quota, used, count, reserved, parts in txn.query(_READ_USAGE)
    ]


def _lock_stores(txn: Transaction, names: Sequence[str]) -> None:
    """Lock the rows of the stores ``names`` until the transaction ends (no-op where a
    write transaction already holds the database's write lock): only transactions that
    reserve on a store take it, so two reserves cannot both see the same room there.
    Everything else that changes usage never adds to used + reserved (a commit turns
    reserved bytes into used ones) and takes no store lock."""
    if txn.engine.row_lock and names:
        placeholders = ", ".join("?" for _ in names)
        txn.execute(
            f"SELECT name FROM stores WHERE name IN ({placeholders}) ORDER BY name" + txn.engine.row_lock,
            sorted(names),
        )


def _put_object(
    txn: Transaction, record: ObjectRecord, copies: Sequence[tuple[str, str]] | None = None, missing: bool = False
) -> ObjectRecord | None:
    """Insert or replace the object's row with its live ``copies`` ((store, location) pairs;
    default: its one copy at ``record.store``/``record.location``, which must come first)
    and move usage accordingly; return the replaced record. ``missing``: the object has
    fewer copies than its placement asks for, and joins the replication queue."""
    lock_key(txn, record.bucket, record.key)
    previous = _select_object(txn, record.bucket, record.key)
    live = list(copies) if copies is not None else [(record.store, record.location)]
    if live[0] != (record.store, record.location):
        raise ValueError("the record's store and location must be its first copy")
    txn.execute(
        f"INSERT INTO objects ({_OBJECT_COLUMNS}, part_sizes) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (bucket, key) DO UPDATE SET store = excluded.store,"
        " location = excluded.location, size = excluded.size, etag = excluded.etag,"
        " content_type = excluded.content_type, headers = excluded.headers,"
        " user_metadata = excluded.user_metadata, last_modified_ms = excluded.last_modified_ms,"
        " part_sizes = excluded.part_sizes",
        (
            record.bucket,
            record.key,
            record.store,
            record.location,
            record.size,
            record.etag,
            record.content_type,
            _json(record.headers),
            _json(record.user_metadata),
            record.last_modified_ms,
            json.dumps(list(record.part_sizes)) if record.part_sizes else None,
        ),
    )
    # In store order: two commits on the same stores then lock their counter rows in the
    # same order (on PostgreSQL), rather than deadlock when they picked the same shard.
    for store, location in sorted(live):
        _add_usage(txn, store, record.size, 1)
        # The new bytes replaced whatever was at their location: nothing to clean up there.
        _drop_cleanups(txn, store, location)
    _let_go_copies(txn, record.bucket, record.key, record.last_modified_ms, keep=live)
    for store, location in live:
        txn.execute(
            "INSERT INTO copies (bucket, key, store, location, state, size, created_ms)"
            " VALUES (?, ?, ?, ?, 'live', ?, ?)",
            (record.bucket, record.key, store, location, record.size, record.last_modified_ms),
        )
    txn.execute("DELETE FROM replication WHERE bucket = ? AND key = ?", (record.bucket, record.key))
    _unmark_lost(txn, record.bucket, record.key)
    if missing:
        txn.execute(
            "INSERT INTO replication (bucket, key, since_ms) VALUES (?, ?, ?)",
            (record.bucket, record.key, record.last_modified_ms),
        )
    return previous


def _all_copies(txn: Transaction, bucket: str, key: str) -> list[CopyRecord]:
    """Every copy of one object (none for a missing object), in store name order."""
    rows = txn.query(
        "SELECT store, location, state, size, created_ms FROM copies WHERE bucket = ? AND key = ? ORDER BY store",
        (bucket, key),
    )
    return [CopyRecord(store=store, location=location, state=state, size=int(size), created_ms=int(created_ms))
            for store, location, state, size, created_ms in rows]


def _let_go_copies(
    txn: Transaction, bucket: str, key: str, now_ms: int, keep: Sequence[tuple[str, str]] = ()
) -> None:
    """Forget the object's copies: each one's bytes are queued for cleanup (their usage
    stays until they are gone), but for those at a ``keep`` (store, location), which new
    bytes replaced in place (their usage is released: the new copy counts instead)."""
    for store, location, size in txn.query(
        "SELECT store, location, size FROM copies WHERE bucket = ? AND key = ? AND state = 'live'", (bucket, key)
    ):
        if (store, location) in keep:
            _add_usage(txn, store, -int(size), -1)
        else:
            _let_go_bytes(txn, store, location, int(size), now_ms)
    txn.execute("DELETE FROM copies WHERE bucket = ? AND key = ?", (bucket, key))


def _live_copies(txn: Transaction, bucket: str, key: str) -> int:
    """How many live copies the object has."""
    row = txn.query_one(
        "SELECT COUNT(*) FROM copies WHERE bucket = ? AND key = ? AND state = 'live'", (bucket, key)
    )
    return 0 if row is None else int(row[0])


def _record_lost(txn: Transaction, bucket: str, key: str, now_ms: int) -> None:
    """Record the object lost (since ``now_ms`` unless already) and take it out of the
    replication queue (nothing to copy from)."""
    txn.execute("DELETE FROM replication WHERE bucket = ? AND key = ?", (bucket, key))
    txn.execute(
        "INSERT INTO lost_objects (bucket, key, since_ms) VALUES (?, ?, ?) ON CONFLICT (bucket, key) DO NOTHING",
        (bucket, key, now_ms),
    )


def _let_go_bytes(txn: Transaction, store: str, location: str, size: int, now_ms: int) -> None:
    """A live copy's bytes stop counting as an object and are queued for cleanup
    (their usage stays until they are gone)."""
    _add_usage(txn, store, 0, -1)
    _queue_cleanup(txn, store, location, size, now_ms)


def _queue_replication(txn: Transaction, bucket: str, key: str, since_ms: int) -> None:
    """Put an existing object in the replication queue (kept there if it already is)."""
    txn.execute(
        "INSERT INTO replication (bucket, key, since_ms) SELECT bucket, key, ? FROM objects"
        " WHERE bucket = ? AND key = ? ON CONFLICT (bucket, key) DO NOTHING",
        (since_ms, bucket, key),
    )


def _unmark_lost(txn: Transaction, bucket: str, key: str) -> None:
    """The object under the key is no longer lost (replaced, deleted, or has a live copy again)."""
    txn.execute("DELETE FROM lost_objects WHERE bucket = ? AND key = ?", (bucket, key))


def _queue_cleanup(txn: Transaction, store: str, location: str, size: int, now_ms: int) -> None:
    """Queue bytes for removal; their usage (already counted) stays until they are gone."""
    txn.execute(
        "INSERT INTO cleanup (store, location, size, created_ms, attempts, next_try_ms) VALUES (?, ?, ?, ?, 0, ?)",
        (store, location, size, now_ms, now_ms),
    )


def _drop_cleanups(txn: Transaction, store: str, location: str) -> int:
    """Forget the cleanups queued at ``location`` (its bytes are gone), releasing their usage."""
    rows = txn.query("SELECT id, size FROM cleanup WHERE store = ? AND location = ?", (store, location))
    dropped = 0
    for entry_id, size in rows:
        txn.execute("DELETE FROM cleanup WHERE id = ?", (entry_id,))
        # Another transaction (the cleanup job, a commit at the location) may have dropped
        # it since the SELECT under READ COMMITTED: only one of them releases its usage.
        if txn.rowcount == 1:
            _add_usage(txn, store, -int(size), 0)
            dropped += 1
    return dropped


def _drop_intent(txn: Transaction, reservation_id: int) -> None:
    txn.execute("DELETE FROM intents WHERE reservation_id = ?", (reservation_id,))


def _claim_for_write(txn: Transaction, store: str, location: str, reservation_id: int, owner: str,
                     now_ms: int) -> None:
    """Claim a write's location for its reservation, as instance ``owner``;
    LocationClaimed (the transaction then changes nothing) if another has it."""
    expires_ms = now_ms + int(WRITE_CLAIM_LEASE * 1000)
    if not take_claim(txn, store, location, write_holder(reservation_id), owner, now_ms, expires_ms):
        raise LocationClaimed(store, location)


def _cleanup_queued_at(txn: Transaction, store: str, location: str) -> bool:
    return txn.query_one("SELECT 1 FROM cleanup WHERE store = ? AND location = ?", (store, location)) is not None


def _claim_cleanup(
    txn: Transaction, store: str, location: str, holder: str, owner: str, now_ms: int, expires_ms: int
) -> str:
    """``IMetadataStore.claim_cleanup`` in ``txn``."""
    if _live_copy_at(txn, store, location):
        return "in use"
    if not _cleanup_queued_at(txn, store, location):
        return "gone"
    if not take_claim(txn, store, location, holder, owner, now_ms, expires_ms):
        return "claimed elsewhere"
    return "claimed"


def _add_copy(txn: Transaction, record: ObjectRecord, copy: NewCopy, now_ms: int) -> bool:
    """``IMetadataStore.add_copy`` in ``txn``."""
    lock_key(txn, record.bucket, record.key)
    current = _select_object(txn, record.bucket, record.key)
    on_store = txn.query_one(
        "SELECT store FROM copies WHERE bucket = ? AND key = ? AND store = ?",
        (record.bucket, record.key, copy.store),
    )
    if (
        current is None
        or (current.etag, current.last_modified_ms) != (record.etag, record.last_modified_ms)
        or on_store is not None
    ):
        return False
    _take_reservation(txn, copy.reservation_id, copy.store)
    _drop_intent(txn, copy.reservation_id)
    _add_usage(txn, copy.store, current.size, 1)
    _drop_cleanups(txn, copy.store, copy.location)
    txn.execute(
        "INSERT INTO copies (bucket, key, store, location, state, size, created_ms)"
        " VALUES (?, ?, ?, ?, 'live', ?, ?)",
        (record.bucket, record.key, copy.store, copy.location, current.size, now_ms),
    )
    _unmark_lost(txn, record.bucket, record.key)
    return True


def _let_go_moved(txn: Transaction, record: ObjectRecord, copy: CopyRecord, now_ms: int) -> bool:
    """``IMetadataStore.let_go_copy`` in ``txn``."""
    lock_key(txn, record.bucket, record.key)
    found = _select_object_copies(txn, record.bucket, record.key)
    if found is None or (found[0].etag, found[0].last_modified_ms) != (record.etag, record.last_modified_ms):
        return False
    current, live = found
    others = [other for other in live if other.store != copy.store]
    if not others or not any(
        (other.store, other.location, other.created_ms) == (copy.store, copy.location, copy.created_ms)
        for other in live
    ):
        return False
    txn.execute("DELETE FROM copies WHERE bucket = ? AND key = ? AND store = ?",
                (record.bucket, record.key, copy.store))
    _let_go_bytes(txn, copy.store, copy.location, copy.size, now_ms)
    if (current.store, current.location) == (copy.store, copy.location):
        txn.execute("UPDATE objects SET store = ?, location = ? WHERE bucket = ? AND key = ?",
                    (others[0].store, others[0].location, record.bucket, record.key))
    return True


_INTENT_COLUMNS = "reservation_id, bucket, key, store, location, size, owner, created_ms"
_CLEANUP_COLUMNS = "id, store, location, size, created_ms, attempts, next_try_ms, last_error"


def _intent_from_row(row: Sequence[Any]) -> Intent:
    reservation_id, bucket, key, store, location, size, owner, created_ms = row
    return Intent(
        reservation_id=int(reservation_id), bucket=bucket, key=key, store=store, location=location,
        size=int(size), owner=owner, created_ms=int(created_ms),
    )


def _owner_dead(table: str) -> str:
    """SQL condition: the ``owner`` of a row of ``table`` (with ``created_ms``) is dead at
    the ``?`` time: no instance of that id whose lease runs past it and that started
    before the row was made (an earlier process with the same id made it)."""
    return (
        f"NOT EXISTS (SELECT 1 FROM instances i WHERE i.id = {table}.owner AND i.expires_ms > ?"
        f" AND i.started_ms <= {table}.created_ms)"
    )


def _cleanup_from_row(row: Sequence[Any]) -> CleanupEntry:
    entry_id, store, location, size, created_ms, attempts, next_try_ms, last_error = row
    return CleanupEntry(
        id=int(entry_id), store=store, location=location, size=int(size), created_ms=int(created_ms),
        attempts=int(attempts), next_try_ms=int(next_try_ms), last_error=last_error,
    )


def _live_copy_at(txn: Transaction, store: str, location: str) -> bool:
    row = txn.query_one(
        "SELECT 1 FROM copies WHERE store = ? AND location = ? AND state = 'live'", (store, location)
    )
    return row is not None


def _add_usage(txn: Transaction, store: str, size: int, count: int) -> None:
    """Add to a store's used bytes and object count, in the transaction's counter row."""
    shard = txn.token % USAGE_SHARDS
    txn.execute(
        "UPDATE store_usage SET used_bytes = used_bytes + ?, object_count = object_count + ?"
        " WHERE store = ? AND shard = ?",
        (size, count, store, shard),
    )
    if txn.rowcount == 1:
        return
    if txn.query_one("SELECT 1 FROM stores WHERE name = ?", (store,)) is None:
        raise ValueError(f"unknown store {store!r}")
    txn.execute(
        "INSERT INTO store_usage (store, shard, used_bytes, object_count) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (store, shard) DO UPDATE SET used_bytes = store_usage.used_bytes + excluded.used_bytes,"
        " object_count = store_usage.object_count + excluded.object_count",
        (store, shard, size, count),
    )


@implementer(IMetadataStore)
class MetadataStore(MovementQueries):
    """The metadata of objects and stores in SQL, through ``Database``.

    ``clock`` stamps reservations and migrations (defaults to the database's reactor).
    ``instance_id`` owns the reservations and write intents this store makes (see
    ``register_instance``).
    """

    def __init__(self, database: Database, clock: IReactorTime | None = None, instance_id: str = "") -> None:
        self.database = database
        self._clock: IReactorTime = clock if clock is not None else database.reactor
        self.instance_id = instance_id

    def _now_ms(self) -> int:
        return int(self._clock.seconds() * 1000)

    @inlineCallbacks
    def start(self) -> Generator[Deferred[Any], Any, None]:
        """Open the database and apply pending schema migrations."""
        self.database.start()
        try:
            yield migrate(self.database)
            self.database.open_point_reader()
        except BaseException:
            self.database.close()
            raise

    def stop(self) -> Deferred[None]:
        """Close the database (waits for a running interaction)."""
        self.database.close()
        return succeed(None)

    def sync_stores(self, quotas: Sequence[tuple[str, int]]) -> Deferred[None]:
        """Create or update a usage row per configured store; forget the order of the others.

        Rows of stores no longer configured stay (objects may still live there) but
        leave ``store_usage`` and ``reserve``.
        """
        names = [name for name, _ in quotas]
        if len(set(names)) != len(names):
            raise ValueError("duplicate store names")
        if any(quota < 0 for _, quota in quotas):
            raise ValueError("quota_bytes must be >= 0")

        def sync(txn: Transaction) -> None:
            txn.execute("UPDATE stores SET config_order = NULL")
            for order, (name, quota) in enumerate(quotas):
                txn.execute(
                    "UPDATE stores SET quota_bytes = ?, config_order = ? WHERE name = ?", (quota, order, name)
                )
                if txn.rowcount == 0:
                    txn.execute(
                        "INSERT INTO stores (name, quota_bytes, config_order) VALUES (?, ?, ?)",
                        (name, quota, order),
                    )

        return self.database.runInteraction("sync_stores", sync, write=True)

    # -- instances and their leases ---------------------------------------------------------------

    def register_instance(self, instance: Instance) -> Deferred[None]:
        """Record ``instance`` (this process) as alive until its ``expires_ms``. What an
        earlier process registered under the same id left behind becomes a dead
        instance's. Errbacks with InstanceIdInUse, changing nothing, if a live instance
        of another process (another host or pid) holds the id."""
        now_ms = self._now_ms()

        def register(txn: Transaction) -> None:
            row = txn.query_one(
                "SELECT host, pid, expires_ms FROM instances WHERE id = ?" + txn.engine.for_update, (instance.id,)
            )
            if row is not None and int(row[2]) > now_ms and (row[0], int(row[1])) != (instance.host, instance.pid):
                raise InstanceIdInUse(
                    f"instance id {instance.id!r} is held by process {row[1]} on host {row[0]!r},"
                    f" whose lease runs {(int(row[2]) - now_ms) / 1000:g} s more"
                )
            txn.execute("DELETE FROM instances WHERE id = ?", (instance.id,))
            txn.execute(
                "INSERT INTO instances (id, host, pid, started_ms, expires_ms) VALUES (?, ?, ?, ?, ?)",
                (instance.id, instance.host, instance.pid, instance.started_ms, instance.expires_ms),
            )

        return self.database.runInteraction("register_instance", register, write=True)

    def renew_instance(self, instance: Instance, expires_ms: int) -> Deferred[str]:
        """Extend ``instance``'s lease to ``expires_ms``; fire with "renewed", or "lapsed"
        if its lease had expired (or its row was forgotten: it is renewed anyway, but the
        reaper may have released its reservations meanwhile), or "taken" (nothing
        changed) if a newer process registered under its id."""
        now_ms = self._now_ms()

        def renew(txn: Transaction) -> str:
            txn.execute(
                "UPDATE instances SET expires_ms = ? WHERE id = ? AND started_ms = ? AND expires_ms > ?",
                (expires_ms, instance.id, instance.started_ms, now_ms),
            )
            if txn.rowcount == 1:
                return "renewed"
            row = txn.query_one("SELECT started_ms FROM instances WHERE id = ?", (instance.id,))
            if row is None:
                txn.execute(
                    "INSERT INTO instances (id, host, pid, started_ms, expires_ms) VALUES (?, ?, ?, ?, ?)",
                    (instance.id, instance.host, instance.pid, instance.started_ms, expires_ms),
                )
                return "lapsed"
            if int(row[0]) != instance.started_ms:
                return "taken"
            txn.execute(
                "UPDATE instances SET expires_ms = ? WHERE id = ? AND started_ms = ?",
                (expires_ms, instance.id, instance.started_ms),
            )
            return "lapsed"

        return self.database.runInteraction("renew_instance", renew, write=True, durable=False)

    def deregister_instance(self, instance: Instance) -> Deferred[None]:
        """Forget ``instance`` (a clean stop): whatever it still owns is a dead instance's."""

        def deregister(txn: Transaction) -> None:
            txn.execute(
                "DELETE FROM instances WHERE id = ? AND started_ms = ?", (instance.id, instance.started_ms)
            )

        return self.database.runInteraction("deregister_instance", deregister, write=True)

    def list_instances(self) -> Deferred[list[Instance]]:
        """Every registered instance (live or with its lease expired), by id."""

        def select(txn: Transaction) -> list[Instance]:
            rows = txn.query("SELECT id, host, pid, started_ms, expires_ms FROM instances ORDER BY id")
            return [Instance(id=i, host=h, pid=int(p), started_ms=int(s), expires_ms=int(e))
                    for i, h, p, s, e in rows]

        return self.database.runInteraction("list_instances", select)

    def release_dead_reservations(self, now_ms: int) -> Deferred[int]:
        """Drop the reservations (without a write intent: multipart parts) of the instances
        dead at ``now_ms``; fire with how many. Those with an intent are the reaper's to
        release with their partial bytes (``dead_intents``)."""

        def release(txn: Transaction) -> int:
            txn.execute(
                "DELETE FROM reservations WHERE id NOT IN (SELECT reservation_id FROM intents)"
                " AND " + _owner_dead("reservations"),
                (now_ms,),
            )
            return txn.rowcount

        return self.database.runInteraction("release_dead_reservations", release, write=True)

    def dead_intents(self, now_ms: int) -> Deferred[list[Intent]]:
        """The write intents of the instances dead at ``now_ms``, oldest first."""

        def select(txn: Transaction) -> list[Intent]:
            rows = txn.query(
                f"SELECT {_INTENT_COLUMNS} FROM intents WHERE " + _owner_dead("intents")
                + " ORDER BY created_ms, reservation_id",
                (now_ms,),
            )
            return [_intent_from_row(row) for row in rows]

        return self.database.runInteraction("dead_intents", select)

    def forget_dead_instances(self, now_ms: int) -> Deferred[int]:
        """Forget the instances whose lease expired by ``now_ms`` (what they own stays a
        dead instance's); fire with how many."""

        def forget(txn: Transaction) -> int:
            txn.execute("DELETE FROM instances WHERE expires_ms <= ?", (now_ms,))
            return txn.rowcount

        return self.database.runInteraction("forget_dead_instances", forget, write=True)

    def store_usage(self) -> Deferred[list[StoreUsage]]:
        """Usage of every configured store, in configuration order."""
        return self.database.runInteraction("store_usage", _read_usage)

    def reserve(self, size: int, choose: StoreChooser) -> Deferred[Reservation | None]:
        """Read usage, let ``choose`` pick a store and reserve ``size`` bytes there, atomically
        (``reserve_copies`` for one copy)."""

        def choose_one(usage: Sequence[StoreUsage]) -> Sequence[str]:
            chosen = choose(usage)
            return () if chosen is None else (chosen,)

        return self.reserve_copies(size, choose_one).addCallback(lambda reserved: reserved[0] if reserved else None)

    def reserve_copies(
        self, size: int, choose: StoresChooser, intent: IntentPlan | None = None
    ) -> Deferred[tuple[Reservation, ...]]:
        """Read usage, let ``choose`` pick distinct stores and reserve ``size`` bytes on each,
        in one transaction: every copy of an object has its room before a byte moves.
        With ``intent``, the write intent of each copy is recorded in that transaction
        too (keyed by its reservation's id), and its location claimed for the write
        (see metadata.claims; the claim ends with ``release`` or ``end_claims``);
        errbacks with LocationClaimed, reserving nothing, if another holds one.

        ``choose`` runs in the database thread inside the write transaction: it must
        be quick and pure (the routing functions are). It sees every configured
        store, in configuration order, with the bytes other uploads have reserved.
        The reservations and intents are owned by ``instance_id``.

        Where transactions do not hold the database's write lock (PostgreSQL), the
        chosen stores' rows are locked, usage read again and ``choose`` asked again,
        until it picks only locked stores: no other reserve can then take the room it
        saw (``choose`` may so run more than once).
        """
        if size < 0:
            raise ValueError("size must be >= 0")
        now_ms = self._now_ms()
        owner = self.instance_id

        def choose_checked(usage: Sequence[StoreUsage]) -> tuple[str, ...]:
            chosen = tuple(choose(usage))
            configured = {store.name for store in usage}
            if len(set(chosen)) != len(chosen):
                raise ValueError(f"chooser picked a store twice: {chosen!r}")
            for name in chosen:
                if name not in configured:
                    raise ValueError(f"chooser picked {name!r}, which is not a configured store")
            return chosen

        def reserve(txn: Transaction) -> tuple[Reservation, ...]:
            usage = _read_usage(txn)
            chosen = choose_checked(usage)
            locked: set[str] = set()
            while txn.engine.row_lock and not set(chosen) <= locked:
                _lock_stores(txn, sorted(set(chosen) - locked))
                locked |= set(chosen)
                fresh = _read_usage(txn)
                if fresh == usage:
                    break  # nothing changed meanwhile: the choice stands
                usage = fresh
                chosen = choose_checked(usage)
            reservations = []
            for name in chosen:
                row = txn.query_one(
                    "INSERT INTO reservations (store, size, created_ms, owner) VALUES (?, ?, ?, ?) RETURNING id",
                    (name, size, now_ms, owner),
                )
                assert row is not None
                reservations.append(Reservation(id=int(row[0]), store=name, size=size))
                if intent is not None:
                    location = intent.locate(name)
                    txn.execute(
                        f"INSERT INTO intents ({_INTENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        (int(row[0]), intent.bucket, intent.key, name, location, size, owner, now_ms),
                    )
                    _claim_for_write(txn, name, location, int(row[0]), owner, now_ms)
            return tuple(reservations)

        # Synced when intents are recorded: they must survive the crash they are for.
        # Reservations alone die with their owner (release_dead_reservations).
        return self.database.runInteraction("reserve", reserve, write=True, durable=intent is not None)

    def release(self, reservation_id: int, leftover: str | None = None) -> Deferred[None]:
        """Drop a reservation, its write intent and its claim; a missing one (already
        committed or released) is fine. ``leftover``: a location on the reservation's
        store whose bytes may remain, queued for cleanup (counted as used) in the same
        transaction."""
        now_ms = self._now_ms()

        def release(txn: Transaction) -> None:
            # DELETE ... RETURNING: of two releases racing, only the one that removed the
            # row counts its bytes.
            row = txn.query_one("DELETE FROM reservations WHERE id = ? RETURNING store, size", (reservation_id,))
            if leftover is not None and row is not None:
                _add_usage(txn, row[0], int(row[1]), 0)
                _queue_cleanup(txn, row[0], leftover, int(row[1]), now_ms)
            _drop_intent(txn, reservation_id)
            end_claim(txn, write_holder(reservation_id))

        return self.database.runInteraction("release", release, write=True, durable=leftover is not None)

    def commit_object(self, reservation_id: int, record: ObjectRecord) -> Deferred[ObjectRecord | None]:
        """Turn the reservation into usage and store ``record``, replacing any previous one.

        Errbacks with ReservationNotFound, changing nothing, if the reservation is
        gone, and with ValueError if it is for another store than ``record.store``.
        Usage grows by ``record.size`` (the bytes actually stored).
        """

        def commit(txn: Transaction) -> ObjectRecord | None:
            lock_key(txn, record.bucket, record.key)
            _take_reservation(txn, reservation_id, record.store)
            _drop_intent(txn, reservation_id)
            return _put_object(txn, record)

        return self.database.runInteraction("commit_object", commit, write=True)

    def commit_write(self, reservation_id: int, record: ObjectRecord, settle: bool) -> Deferred[list[CopyRecord]]:
        """``commit_object``, firing with the replaced object's copies instead (as
        ``object_copies`` read them just before the commit, in its transaction); with
        ``settle``, the write's claim (``write_holder``) ends in that transaction too
        (``end_claims``): a PutObject's one commit, for bytes already in place."""

        def commit(txn: Transaction) -> list[CopyRecord]:
            lock_key(txn, record.bucket, record.key)
            previous = _all_copies(txn, record.bucket, record.key)
            _take_reservation(txn, reservation_id, record.store)
            _drop_intent(txn, reservation_id)
            _put_object(txn, record)
            if settle:
                end_claim(txn, write_holder(reservation_id))
            return previous

        return self.database.runInteraction("commit_write", commit, write=True)

    def commit_copies(
        self, record: ObjectRecord, copies: Sequence[NewCopy], missing: bool
    ) -> Deferred[ObjectRecord | None]:
        """Store ``record`` with ``copies`` as its live copies (the first at ``record.store``/
        ``record.location``), turning their reservations into usage and dropping their
        write intents, in one transaction; ``missing``: it has fewer copies than its
        placement asks for and joins the replication queue. Fire with the replaced
        object: its copies are forgotten, their bytes queued for cleanup (counted as
        used until gone) but for those the new copies replaced in place. Errbacks with
        ReservationNotFound, changing nothing, if a reservation is gone."""

        def commit(txn: Transaction) -> ObjectRecord | None:
            lock_key(txn, record.bucket, record.key)
            for copy in copies:
                _take_reservation(txn, copy.reservation_id, copy.store)
                _drop_intent(txn, copy.reservation_id)
            return _put_object(txn, record, [(copy.store, copy.location) for copy in copies], missing)

        return self.database.runInteraction("commit_copies", commit, write=True)

    def add_copy(self, record: ObjectRecord, copy: NewCopy) -> Deferred[bool]:
        """Add ``copy`` as a live copy of the object ``record`` describes, turning its
        reservation into usage and dropping its write intent and any cleanup queued at
        its location; True if added. False, changing nothing (the caller releases the
        reservation), when the object is no longer that one (overwritten or deleted:
        same ETag and modification time) or already has a copy on that store."""

        return self.database.runInteraction("add_copy", _add_copy, record, copy, self._now_ms(), write=True)

    def object_copies(self, bucket: str, key: str) -> Deferred[list[CopyRecord]]:
        """Every copy of one object (none for a missing object), in store name order."""

        return self.database.runInteraction("object_copies", lambda txn: _all_copies(txn, bucket, key))

    def queue_replication(self, bucket: str, key: str, since_ms: int) -> Deferred[None]:
        """Put an existing object in the replication queue (kept there if it already is)."""

        def queue(txn: Transaction) -> None:
            _queue_replication(txn, bucket, key, since_ms)

        return self.database.runInteraction("queue_replication", queue, write=True)

    def queue_under_replicated(self, bucket: str, replicas: int, since_ms: int) -> Deferred[int]:
        """Queue every object of ``bucket`` with fewer than ``replicas`` live copies
        (``replicas`` raised, a copy lost) but at least one, and not lost (nothing to
        copy from, even a kept copy: it is missing or damaged); fire with how many
        joined the queue."""

        def queue(txn: Transaction) -> int:
            txn.execute(
                "INSERT INTO replication (bucket, key, since_ms) SELECT o.bucket, o.key, ? FROM objects o"
                " WHERE o.bucket = ? AND (SELECT COUNT(*) FROM copies c WHERE c.bucket = o.bucket"
                " AND c.key = o.key AND c.state = 'live') BETWEEN 1 AND ?"
                " AND NOT EXISTS (SELECT 1 FROM lost_objects l WHERE l.bucket = o.bucket AND l.key = o.key)"
                " ON CONFLICT (bucket, key) DO NOTHING",
                (since_ms, bucket, replicas - 1),
            )
            return txn.rowcount

        return self.database.runInteraction("queue_under_replicated", queue, write=True)

    def replication_queue(
        self, limit: int, after: tuple[int, str, str] | None = None
    ) -> Deferred[list[QueuedReplication]]:
        """Up to ``limit`` queued objects, oldest first; only those after ``after``, a
        (since_ms, bucket, key) position."""
        sql = "SELECT bucket, key, since_ms FROM replication"
        args: list[Any] = []
        if after is not None:
            sql += " WHERE since_ms > ? OR (since_ms = ? AND (bucket > ? OR (bucket = ? AND key > ?)))"
            args.extend([after[0], after[0], after[1], after[1], after[2]])
        sql += " ORDER BY since_ms, bucket, key LIMIT ?"
        args.append(limit)

        def select(txn: Transaction) -> list[QueuedReplication]:
            return [QueuedReplication(bucket=bucket, key=key, since_ms=int(since_ms))
                    for bucket, key, since_ms in txn.query(sql, args)]

        return self.database.runInteraction("replication_queue", select)

    def unqueue_replication(self, bucket: str, key: str) -> Deferred[None]:
        """Take an object out of the replication queue (it has its copies, or is gone)."""

        def unqueue(txn: Transaction) -> None:
            txn.execute("DELETE FROM replication WHERE bucket = ? AND key = ?", (bucket, key))

        return self.database.runInteraction("unqueue_replication", unqueue, write=True)

    def lost_objects(self, limit: int) -> Deferred[list[LostObject]]:
        """Up to ``limit`` objects with no live copy left, oldest loss first."""

        def select(txn: Transaction) -> list[LostObject]:
            rows = txn.query(
                "SELECT bucket, key, since_ms FROM lost_objects ORDER BY since_ms, bucket, key LIMIT ?", (limit,)
            )
            return [LostObject(bucket=bucket, key=key, since_ms=int(since_ms)) for bucket, key, since_ms in rows]

        return self.database.runInteraction("lost_objects", select)

    def queue_totals(self) -> Deferred[QueueTotals]:
        """The replication queue's length and oldest entry, the write intents and the
        lost objects, counted in one read transaction (cheap enough for every scrape:
        the queues are short but for outages, and the oldest entry is an index lookup)."""

        def count(txn: Transaction) -> QueueTotals:
            queued = txn.query_one("SELECT COUNT(*) FROM replication")
            oldest = txn.query_one("SELECT MIN(since_ms) FROM replication")
            intents = txn.query_one("SELECT COUNT(*) FROM intents")
            lost = txn.query_one("SELECT COUNT(*) FROM lost_objects")
            assert queued is not None and oldest is not None and intents is not None and lost is not None
            return QueueTotals(
                replication_queued=int(queued[0]),
                replication_oldest_ms=None if oldest[0] is None else int(oldest[0]),
                intents=int(intents[0]),
                lost=int(lost[0]),
            )

        return self.database.runInteraction("queue_totals", count)

    def get_object(self, bucket: str, key: str) -> Deferred[ObjectRecord | None]:
        """The record of one object, or None."""
        return self.database.point_read("get_object", _select_object, bucket, key)

    def get_object_copies(
        self, bucket: str, key: str
    ) -> Deferred[tuple[ObjectRecord, tuple[CopyRecord, ...]] | None]:
        """The record of one object and its live copies, stores in configuration order
        (stores no longer configured last), or None."""
        return self.database.point_read("get_object_copies", _select_object_copies, bucket, key)

    def mark_copy_missing(
        self, bucket: str, key: str, copy: CopyRecord, etag: str | None = None, keep_only_copy: bool = False
    ) -> Deferred[int | None]:
        """Let go of ``copy``, found missing or damaged, if it is still that live copy of
        the object (same store, location and ``created_ms``: a copy written since is
        spared; given ``etag``, of an object of that ETag still): whatever bytes remain
        there go to the cleanup queue (counted as used until gone), the object's record
        moves to another live copy if it named this one, and the object joins the
        replication queue so the replicator re-creates the copy
        from a good one; with no live copy left, the object is lost instead (recorded in
        ``lost_objects``, out of the replication queue). With ``keep_only_copy``, the
        object's only live copy is kept instead (still live, nothing queued for cleanup:
        its store may hand it back) and the object recorded lost. Fires with the number
        of other live copies (0: lost), or None if it was not that live copy (nothing
        changed)."""
        now_ms = self._now_ms()

        def let_go(txn: Transaction) -> int | None:
            lock_key(txn, bucket, key)
            row = txn.query_one(
                "SELECT size FROM copies WHERE bucket = ? AND key = ? AND store = ? AND location = ?"
                " AND created_ms = ? AND state = 'live'",
                (bucket, key, copy.store, copy.location, copy.created_ms),
            )
            if row is None:
                return None
            if etag is not None and txn.query_one(
                "SELECT 1 FROM objects WHERE bucket = ? AND key = ? AND etag = ?", (bucket, key, etag)
            ) is None:
                return None
            if keep_only_copy and _live_copies(txn, bucket, key) == 1:
                _record_lost(txn, bucket, key, now_ms)
                return 0
            txn.execute(
                "DELETE FROM copies WHERE bucket = ? AND key = ? AND store = ?", (bucket, key, copy.store)
            )
            _let_go_bytes(txn, copy.store, copy.location, int(row[0]), now_ms)
            found = _select_object_copies(txn, bucket, key)
            others: tuple[CopyRecord, ...] = () if found is None else found[1]
            if found is not None and others:
                record = found[0]
                if (record.store, record.location) == (copy.store, copy.location):
                    txn.execute(
                        "UPDATE objects SET store = ?, location = ? WHERE bucket = ? AND key = ?",
                        (others[0].store, others[0].location, bucket, key),
                    )
                _queue_replication(txn, bucket, key, now_ms)
            elif found is not None:
                _record_lost(txn, bucket, key, now_ms)
            return len(others)

        return self.database.runInteraction("mark_copy_missing", let_go, write=True)

    def let_go_copy(self, record: ObjectRecord, copy: CopyRecord) -> Deferred[bool]:
        """Let go of ``copy``, moved to another store, if the object is still the one
        ``record`` describes (same ETag and modification time), ``copy`` still its live copy
        (same store, location and ``created_ms``) and another live copy remains: its bytes
        go to the cleanup queue (counted as used until gone) and the object's record moves
        to another live copy if it named this one. Fires with whether it did."""
        now_ms = self._now_ms()
        return self.database.runInteraction("let_go_copy", _let_go_moved, record, copy, now_ms, write=True)

    def let_go_moved_copy(
        self, record: ObjectRecord, copy: CopyRecord, settled: Sequence[str], holder: str, expires_ms: int,
        move: QueuedMove | None = None, added: NewCopy | None = None,
    ) -> Deferred[str | None]:
        """The end of a move, in one transaction: ``let_go_copy``; the claims of
        ``settled`` end (the new copy's write, its bytes in place); once let go, the old
        copy's location is claimed for ``holder`` to remove its bytes (as
        ``claim_cleanup``, until ``expires_ms``); and ``move``, the queued move this
        makes, leaves the queue counted as moved (``finish_move``). Fires with what
        ``claim_cleanup`` would have, or None when the copy was not let go. With
        ``added``, the new copy is added first (``add_copy``), its bytes being in
        place already: when it cannot be, nothing changes and it fires with NOT_ADDED."""
        now_ms = self._now_ms()
        owner = self.instance_id

        def let_go(txn: Transaction) -> str | None:
            if added is not None and not _add_copy(txn, record, added, now_ms):
                return NOT_ADDED
            for settled_holder in settled:
                end_claim(txn, settled_holder)
            if move is not None:
                finish_queued_move(txn, move, moved=True)
            if not _let_go_moved(txn, record, copy, now_ms):
                return None
            return _claim_cleanup(txn, copy.store, copy.location, holder, owner, now_ms, expires_ms)

        return self.database.runInteraction("let_go_moved_copy", let_go, write=True)

    def _read_object_copies(self, txn: Transaction, bucket: str, key: str) -> ObjectCopies:
        found = _select_object_copies(txn, bucket, key)
        if found is None:
            return ObjectCopies(None)
        return ObjectCopies(found[0], found[1], frozenset(copy.store for copy in _all_copies(txn, bucket, key)))

    def probe(self) -> Deferred[None]:
        """A write transaction that reads one row and changes nothing (degraded mode's
        probe): it fails while the database cannot be read or its write lock had (on
        PostgreSQL: while a store row cannot be locked, as a reserve locks it)."""

        def read(txn: Transaction) -> None:
            txn.query("SELECT name FROM stores ORDER BY name LIMIT 1" + txn.engine.row_lock)

        return self.database.runInteraction("probe", read, write=True, durable=False)

    def delete_object(self, bucket: str, key: str) -> Deferred[ObjectRecord | None]:
        """Remove one object's record and queue its bytes for cleanup (their usage stays
        until they are gone); fire with the removed record."""
        now_ms = self._now_ms()

        def delete(txn: Transaction) -> ObjectRecord | None:
            lock_key(txn, bucket, key)
            previous = _select_object(txn, bucket, key)
            if previous is None:
                return None
            txn.execute("DELETE FROM objects WHERE bucket = ? AND key = ?", (bucket, key))
            txn.execute("DELETE FROM replication WHERE bucket = ? AND key = ?", (bucket, key))
            _unmark_lost(txn, bucket, key)
            _let_go_copies(txn, bucket, key, now_ms)
            return previous

        return self.database.runInteraction("delete_object", delete, write=True)

    # -- write intents and the cleanup queue ------------------------------------------------------

    def list_intents(self) -> Deferred[list[Intent]]:
        """Every write intent, oldest first."""

        def select(txn: Transaction) -> list[Intent]:
            rows = txn.query(f"SELECT {_INTENT_COLUMNS} FROM intents ORDER BY created_ms, reservation_id")
            return [_intent_from_row(row) for row in rows]

        return self.database.runInteraction("list_intents", select)

    def adopt_intent(self, reservation_id: int) -> Deferred[bool | None]:
        """Drop the intent (and its reservation and claim) if a live copy is at its store
        and location (True); False, changing nothing, if none is; None if the intent is gone."""

        def adopt(txn: Transaction) -> bool | None:
            row = txn.query_one("SELECT store, location FROM intents WHERE reservation_id = ?", (reservation_id,))
            if row is None:
                return None
            if _live_copy_at(txn, row[0], row[1]):
                txn.execute("DELETE FROM reservations WHERE id = ?", (reservation_id,))
                _drop_intent(txn, reservation_id)
                end_claim(txn, write_holder(reservation_id))
                return True
            return False

        return self.database.runInteraction("adopt_intent", adopt, write=True)

    def queue_cleanup(self, store: str, location: str, size: int) -> Deferred[None]:
        """Queue ``size`` bytes at ``location`` on ``store`` for cleanup, counting them as used."""
        now_ms = self._now_ms()

        def queue(txn: Transaction) -> None:
            _add_usage(txn, store, size, 0)
            _queue_cleanup(txn, store, location, size, now_ms)

        return self.database.runInteraction("queue_cleanup", queue, write=True)

    def due_cleanups(self, now_ms: int, limit: int) -> Deferred[list[CleanupEntry]]:
        """Up to ``limit`` queued cleanups due by ``now_ms``, soonest first."""

        def select(txn: Transaction) -> list[CleanupEntry]:
            rows = txn.query(
                f"SELECT {_CLEANUP_COLUMNS} FROM cleanup WHERE next_try_ms <= ? ORDER BY next_try_ms, id LIMIT ?",
                (now_ms, limit),
            )
            return [_cleanup_from_row(row) for row in rows]

        return self.database.runInteraction("due_cleanups", select)

    def list_cleanups(self, limit: int) -> Deferred[list[CleanupEntry]]:
        """Up to ``limit`` queued cleanups, oldest first."""

        def select(txn: Transaction) -> list[CleanupEntry]:
            rows = txn.query(f"SELECT {_CLEANUP_COLUMNS} FROM cleanup ORDER BY id LIMIT ?", (limit,))
            return [_cleanup_from_row(row) for row in rows]

        return self.database.runInteraction("list_cleanups", select)

    def cleanup_totals(self) -> Deferred[dict[str, tuple[int, int]]]:
        """(entries, bytes) queued for cleanup, by store (stores without any left out)."""

        def select(txn: Transaction) -> dict[str, tuple[int, int]]:
            rows = txn.query("SELECT store, COUNT(*), SUM(size) FROM cleanup GROUP BY store")
            return {store: (int(count), int(size or 0)) for store, count, size in rows}

        return self.database.runInteraction("cleanup_totals", select)

    def location_in_use(self, store: str, location: str, ignore_intent: int | None = None) -> Deferred[bool]:
        """Whether a live copy or a write intent (other than the one of reservation
        ``ignore_intent``) is at ``location`` on ``store``."""

        def check(txn: Transaction) -> bool:
            return _live_copy_at(txn, store, location) or txn.query_one(
                "SELECT 1 FROM intents WHERE store = ? AND location = ? AND reservation_id <> ?",
                (store, location, -1 if ignore_intent is None else ignore_intent),
            ) is not None

        return self.database.runInteraction("location_in_use", check)

    def finish_cleanup(self, store: str, location: str, holder: str | None = None) -> Deferred[int]:
        """The bytes at ``location`` on ``store`` are gone: drop every cleanup queued for
        them, releasing their usage, and ``holder``'s claim; fire with how many."""

        def finish(txn: Transaction) -> int:
            if holder is not None:
                end_claim(txn, holder)
            return _drop_cleanups(txn, store, location)

        # Not synced: if a crash loses it, the entry stays and the job deletes again (idempotent).
        return self.database.runInteraction("finish_cleanup", finish, write=True, durable=False)

    def postpone_cleanup(
        self, entry_id: int, next_try_ms: int, error: str, holder: str | None = None
    ) -> Deferred[None]:
        """Count a failed attempt at a cleanup and set when it is tried next; end
        ``holder``'s claim."""

        def postpone(txn: Transaction) -> None:
            if holder is not None:
                end_claim(txn, holder)
            txn.execute(
                "UPDATE cleanup SET attempts = attempts + 1, next_try_ms = ?, last_error = ? WHERE id = ?",
                (next_try_ms, error[:500], entry_id),
            )

        return self.database.runInteraction("postpone_cleanup", postpone, write=True, durable=False)

    # -- claims of locations (see metadata.claims) --------------------------------------------------

    def claim_locations(
        self, store: str, locations: Sequence[str], holder: str, owner: str, expires_ms: int
    ) -> Deferred[bool]:
        """Claim every one of ``locations`` on ``store`` for ``holder`` (see
        claims.take_claim), or none; fire with whether they are now ``holder``'s."""
        now_ms = self._now_ms()

        def claim(txn: Transaction) -> bool:
            for location in locations:
                if not take_claim(txn, store, location, holder, owner, now_ms, expires_ms):
                    raise LocationClaimed(store, location)  # undoes the claims taken
            return True

        def refused(failure: Failure) -> bool:
            failure.trap(LocationClaimed)
            return False

        return self.database.runInteraction("claim_locations", claim, write=True, durable=False).addErrback(refused)

    def claim_cleanup(
        self, store: str, location: str, holder: str, owner: str, expires_ms: int
    ) -> Deferred[str]:
        """Claim ``location`` on ``store`` to delete the bytes queued there for cleanup;
        fire with "claimed", or, claiming nothing: "in use" (a live copy is there: not
        the bytes to delete), "gone" (nothing is queued there any more) or "claimed
        elsewhere" (another live holder claims it: try later)."""
        now_ms = self._now_ms()
        return self.database.runInteraction(
            "claim_cleanup", _claim_cleanup, store, location, holder, owner, now_ms, expires_ms, write=True,
            durable=False,
        )

    def end_claims(self, holders: Sequence[str]) -> Deferred[None]:
        """Drop the claims of ``holders`` (their bytes are settled); missing ones are fine."""

        def end(txn: Transaction) -> None:
            for holder in holders:
                end_claim(txn, holder)

        # Not synced: a claim a crash keeps is its owner's, presumed dead at restart.
        return self.database.runInteraction("end_claims", end, write=True, durable=False)

    def drop_dead_claims(self, now_ms: int) -> Deferred[int]:
        """Drop the claims of instances dead at ``now_ms`` (see claims.owner_dead), but
        those of writes whose intent remains (the reaper resolves the intent, then the
        claim); fire with how many."""

        def drop(txn: Transaction) -> int:
            txn.execute(
                "DELETE FROM claims WHERE holder NOT IN (SELECT 'w' || CAST(reservation_id AS TEXT) FROM intents)"
                " AND (expires_ms <= ? OR NOT EXISTS (SELECT 1 FROM instances i WHERE i.id = claims.owner"
                " AND i.expires_ms > ? AND i.started_ms <= claims.created_ms))",
                (now_ms, now_ms),
            )
            return txn.rowcount

        return self.database.runInteraction("drop_dead_claims", drop, write=True, durable=False)

    def scan_objects(self, bucket: str, prefix: str, scan: Callable[[ObjectFetch], _T]) -> Deferred[_T]:
        """Run ``scan(fetch)`` in one read transaction; fire with its result.

        One interaction for a whole listing page: a page with a delimiter seeks once
        per common prefix, and a thread hop per seek would cost more than the seek.
        """
        upper = prefix_upper_bound(prefix)

        def run(txn: Transaction) -> _T:
            def fetch(start: str, inclusive: bool, limit: int) -> list[ObjectRecord]:
                return _select_range(txn, bucket, prefix, upper, start, inclusive, limit)

            return scan(fetch)

        return self.database.runInteraction("scan_objects", run)


    # -- multipart uploads ------------------------------------------------------------------------

    def create_upload(self, upload: UploadRecord) -> Deferred[None]:
        """Record a new multipart upload."""

        def create(txn: Transaction) -> None:
            txn.execute(
                f"INSERT INTO uploads ({_UPLOAD_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    upload.upload_id,
                    upload.bucket,
                    upload.key,
                    upload.store,
                    upload.location,
                    upload.store_upload_id,
                    upload.content_type,
                    _json(upload.headers),
                    _json(upload.user_metadata),
                    upload.checksum_algorithm,
                    upload.initiated_ms,
                ),
            )

        return self.database.runInteraction("create_upload", create, write=True)

    def get_upload(self, upload_id: str) -> Deferred[UploadRecord | None]:
        """The upload called ``upload_id``, or None."""
        return self.database.point_read("get_upload", _select_upload, upload_id)

    def commit_part(self, reservation_id: int, part: PartRecord) -> Deferred[PartRecord | None]:
        """Turn the part's reservation into the part's row, replacing an earlier part
        with the same number (whose bytes are so released); fire with the replaced one.

        Errbacks, changing nothing, with UploadNotFound if the upload is gone and
        with ReservationNotFound if the reservation is.
        """

        def commit(txn: Transaction) -> PartRecord | None:
            if _select_upload(txn, part.upload_id, lock=True) is None:
                raise UploadNotFound(part.upload_id)
            _take_reservation(txn, reservation_id, part.store)
            previous = _select_part(txn, part.upload_id, part.part_number)
            txn.execute(
                f"INSERT INTO parts ({_PART_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (upload_id, part_number) DO UPDATE SET store = excluded.store,"
                " size = excluded.size, etag = excluded.etag, store_etag = excluded.store_etag,"
                " checksums = excluded.checksums, last_modified_ms = excluded.last_modified_ms",
                (
                    part.upload_id,
                    part.part_number,
                    part.store,
                    part.size,
                    part.etag,
                    part.store_etag,
                    _json(part.checksums),
                    part.last_modified_ms,
                ),
            )
            return previous

        return self.database.runInteraction("commit_part", commit, write=True)

    def forget_part(self, upload_id: str, part_number: int) -> Deferred[None]:
        """Drop one part's row (its bytes are no longer what the row says)."""

        def forget(txn: Transaction) -> None:
            txn.execute("DELETE FROM parts WHERE upload_id = ? AND part_number = ?", (upload_id, part_number))

        return self.database.runInteraction("forget_part", forget, write=True)

    def list_parts(self, upload_id: str, after: int = 0, limit: int | None = None) -> Deferred[list[PartRecord]]:
        """Parts numbered above ``after``, in order; at most ``limit`` (None: all)."""
        sql = f"SELECT {_PART_COLUMNS} FROM parts WHERE upload_id = ? AND part_number > ? ORDER BY part_number"
        args: list[Any] = [upload_id, after]
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)

        def select(txn: Transaction) -> list[PartRecord]:
            return [_part_from_row(row) for row in txn.query(sql, args)]

        return self.database.runInteraction("list_parts", select)

    def complete_upload(
        self, upload_id: str, record: ObjectRecord, parts: Sequence[tuple[int, str]], missing: bool = False
    ) -> Deferred[ObjectRecord | None]:
        """In one transaction: forget the upload and its parts (releasing their bytes),
        store ``record`` as for commit_object and remember the completion (``parts``:
        the (number, ETag) pairs the Complete listed, see get_completed_upload); fire
        with the replaced object. ``missing``: as for commit_copies (the object has
        fewer copies than its placement asks for, the replicator makes the others).

        Errbacks with UploadNotFound, changing nothing, if the upload is gone.
        """

        def complete(txn: Transaction) -> ObjectRecord | None:
            if _select_upload(txn, upload_id, lock=True) is None:
                raise UploadNotFound(upload_id)
            txn.execute("DELETE FROM parts WHERE upload_id = ?", (upload_id,))
            txn.execute("DELETE FROM uploads WHERE upload_id = ?", (upload_id,))
            txn.execute(
                f"INSERT INTO completed_uploads ({_COMPLETED_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (upload_id, record.bucket, record.key, record.store, record.etag,
                 json.dumps([[number, etag] for number, etag in parts]), record.last_modified_ms),
            )
            lock_key(txn, record.bucket, record.key)
            return _put_object(txn, record, missing=missing)

        return self.database.runInteraction("complete_upload", complete, write=True)

    def get_completed_upload(self, upload_id: str) -> Deferred[CompletedUpload | None]:
        """The remembered completion of upload ``upload_id``, or None."""
        return self.database.point_read("get_completed_upload", _select_completed, upload_id)

    def forget_completed_uploads(self, before_ms: int) -> Deferred[int]:
        """Forget the completions older than ``before_ms``; fire with how many."""

        def forget(txn: Transaction) -> int:
            txn.execute("DELETE FROM completed_uploads WHERE completed_ms < ?", (before_ms,))
            return txn.rowcount

        return self.database.runInteraction("forget_completed_uploads", forget, write=True)

    def delete_upload(self, upload_id: str) -> Deferred[UploadRecord | None]:
        """Forget an upload and its parts, releasing their bytes; fire with it (None if gone)."""

        def delete(txn: Transaction) -> UploadRecord | None:
            upload = _select_upload(txn, upload_id, lock=True)
            if upload is not None:
                txn.execute("DELETE FROM parts WHERE upload_id = ?", (upload_id,))
                txn.execute("DELETE FROM uploads WHERE upload_id = ?", (upload_id,))
            return upload

        return self.database.runInteraction("delete_upload", delete, write=True)

    def scan_uploads(self, bucket: str, prefix: str, scan: Callable[[UploadFetch], _T]) -> Deferred[_T]:
        """Run ``scan(fetch)`` in one read transaction over the uploads of ``bucket``
        under ``prefix``; see IMetadataStore.scan_uploads."""
        upper = prefix_upper_bound(prefix)

        def run(txn: Transaction) -> _T:
            def fetch(key: str, upload_id: str, limit: int) -> list[UploadRecord]:
                if limit <= 0:
                    return []
                if key < prefix:
                    key, upload_id = prefix, ""
                sql = (
                    f"SELECT {_UPLOAD_COLUMNS} FROM uploads WHERE bucket = ?"
                    " AND (key > ? OR (key = ? AND upload_id > ?))"
                )
                args: list[Any] = [bucket, key, key, upload_id]
                if upper is not None:
                    sql += " AND key < ?"
                    args.append(upper)
                sql += " ORDER BY key, upload_id LIMIT ?"
                args.append(limit)
                return [_upload_from_row(row) for row in txn.query(sql, args)]

            return scan(fetch)

        return self.database.runInteraction("scan_uploads", run)

    def upload_counts(self) -> Deferred[dict[str, int]]:
        """How many multipart uploads are in progress, by store (stores without any left out)."""

        def count(txn: Transaction) -> dict[str, int]:
            return {store: int(n) for store, n in txn.query("SELECT store, COUNT(*) FROM uploads GROUP BY store")}

        return self.database.runInteraction("upload_counts", count)

    def uploads_initiated_before(
        self, before_ms: int, limit: int, after: tuple[int, str] | None = None
    ) -> Deferred[list[UploadRecord]]:
        """Up to ``limit`` uploads initiated before ``before_ms``, oldest first (ties by
        upload id); only those after ``after``, an (initiated_ms, upload_id) position."""
        sql = f"SELECT {_UPLOAD_COLUMNS} FROM uploads WHERE initiated_ms < ?"
        args: list[Any] = [before_ms]
        if after is not None:
            sql += " AND (initiated_ms > ? OR (initiated_ms = ? AND upload_id > ?))"
            args.extend([after[0], after[0], after[1]])
        sql += " ORDER BY initiated_ms, upload_id LIMIT ?"
        args.append(limit)

        def select(txn: Transaction) -> list[UploadRecord]:
            return [_upload_from_row(row) for row in txn.query(sql, args)]

        return self.database.runInteraction("uploads_initiated_before", select)


def sqlite_metadata_store(path: str, reactor: Any, **engine_options: Any) -> MetadataStore:
    """A MetadataStore on the SQLite file at ``path`` (its directory is created at start).

    ``engine_options`` go to ``SqliteEngine`` (busy_timeout, synchronous).
    """
    return MetadataStore(Database(SqliteEngine(path, **engine_options), reactor))
