"""The metadata store interface: one API over SQLite (and, later, PostgreSQL)."""

from __future__ import annotations

from typing import Callable, Sequence, TypeVar

from twisted.internet.defer import Deferred
from zope.interface import Attribute

from s3orchestrator.metadata.movement_queue import IMovementQueue
from s3orchestrator.metadata.records import (
    CleanupEntry,
    CompletedUpload,
    CopyRecord,
    Instance,
    Intent,
    IntentPlan,
    LostObject,
    NewCopy,
    ObjectRecord,
    PartRecord,
    QueuedMove,
    QueuedReplication,
    QueueTotals,
    Reservation,
    StoreUsage,
    UploadRecord,
)

#: What ``IMetadataStore.let_go_moved_copy`` fires with when the new copy it was to add could not be.
NOT_ADDED = "not added"

StoreChooser = Callable[[Sequence[StoreUsage]], "str | None"]
#: Picks the distinct stores an object's copies go to (none: no room anywhere).
StoresChooser = Callable[[Sequence[StoreUsage]], Sequence[str]]

_T = TypeVar("_T")

#: ``fetch(start, inclusive, limit)`` of ``IMetadataStore.scan_objects``: up to ``limit``
#: records whose key starts with the scan's prefix and is greater than ``start`` (or
#: equal to it, when ``inclusive``), in byte order of keys.
ObjectFetch = Callable[[str, bool, int], "list[ObjectRecord]"]

#: ``fetch(key, upload_id, limit)`` of ``IMetadataStore.scan_uploads``: up to ``limit``
#: uploads under the scan's prefix that come after (``key``, ``upload_id``) in the
#: order of keys, then upload ids (an empty ``upload_id`` takes every upload of ``key``).
UploadFetch = Callable[[str, str, int], "list[UploadRecord]"]

_LAST_CODE_POINT = "\U0010ffff"


class MetadataBusy(Exception):
    """The metadata database stayed locked by another connection or process for longer
    than its busy timeout: nothing was changed, and trying again later may work."""


class MetadataUnavailable(Exception):
    """The metadata database cannot be used at all (its file unreadable or damaged, its
    server down or unreachable), as opposed to busy: reads fall back to the stores
    (degraded mode, ``metadata.availability``)."""


def prefix_upper_bound(prefix: str) -> str | None:
    """The smallest string greater than every key that starts with ``prefix``; None when
    no string is (``prefix`` is empty or only U+10FFFF).

    Keys order bytewise by their UTF-8, which for valid UTF-8 is code point order
    (Python's ``str`` order): drop trailing U+10FFFF, after which no code point
    comes, and step the last code point, jumping the surrogates, which no key holds.
    """
    stripped = prefix.rstrip(_LAST_CODE_POINT)
    if not stripped:
        return None
    following = ord(stripped[-1]) + 1
    if 0xD800 <= following <= 0xDFFF:
        following = 0xE000
    return stripped[:-1] + chr(following)


class IMetadataStore(IMovementQueue):
    """Objects, per-store usage and quota reservations, kept transactionally."""

    instance_id = Attribute("The instance (this process) owning the reservations, intents and claims it makes.")

    def start() -> Deferred[None]:
        """Open the database and apply pending schema migrations."""

    def stop() -> Deferred[None]:
        """Close the database."""

    def sync_stores(quotas: Sequence[tuple[str, int]]) -> Deferred[None]:
        """Make sure a usage row exists for every configured (store name, quota_bytes)."""

    def register_instance(instance: Instance) -> Deferred[None]:
        """Record this process as a live instance until ``instance.expires_ms``
        (InstanceIdInUse if a live process of another host or pid holds the id)."""

    def renew_instance(instance: Instance, expires_ms: int) -> Deferred[str]:
        """Extend the instance's lease: "renewed", "lapsed" (it had expired) or "taken"."""

    def deregister_instance(instance: Instance) -> Deferred[None]:
        """Forget the instance (a clean stop)."""

    def list_instances() -> Deferred[list[Instance]]:
        """Every registered instance."""

    def release_dead_reservations(now_ms: int) -> Deferred[int]:
        """Drop the reservations without a write intent of instances dead at ``now_ms``."""

    def dead_intents(now_ms: int) -> Deferred[list[Intent]]:
        """The write intents of instances dead at ``now_ms``, oldest first."""

    def forget_dead_instances(now_ms: int) -> Deferred[int]:
        """Forget the instances whose lease expired by ``now_ms``."""

    def store_usage() -> Deferred[list[StoreUsage]]:
        """Usage of every configured store, in the order given to sync_stores."""

    def reserve(size: int, choose: StoreChooser) -> Deferred[Reservation | None]:
        """In one transaction: read usage, let ``choose`` pick a store, reserve ``size`` bytes there.

        Returns None (and reserves nothing) when ``choose`` returns None.
        """

    def reserve_copies(
        size: int, choose: StoresChooser, intent: IntentPlan | None = None
    ) -> Deferred[tuple[Reservation, ...]]:
        """In one transaction: read usage, let ``choose`` pick distinct stores, reserve
        ``size`` bytes on each (in the order chosen) and record ``intent``'s write intent
        for each, claiming its location (LocationClaimed, reserving nothing, if another
        holds one); none when ``choose`` picks none."""

    def release(reservation_id: int, leftover: str | None = None) -> Deferred[None]:
        """Drop a reservation, its write intent and its claim (upload failed, abandoned
        or settled); with ``leftover`` (a location on the reservation's store where bytes
        may remain), queue those bytes for cleanup in the same transaction."""

    def commit_object(reservation_id: int, record: ObjectRecord) -> Deferred[ObjectRecord | None]:
        """In one transaction: turn the reservation into usage and store ``record``.

        Replaces any object under the same bucket and key: its bytes are queued for
        cleanup (their usage stays until they are gone), unless they were at the same
        store and location (replaced in place); so are any bytes queued there before.
        Drops the reservation's write intent. Returns the replaced record (or None).
        """

    def commit_write(reservation_id: int, record: ObjectRecord, settle: bool) -> Deferred[list[CopyRecord]]:
        """``commit_object``, firing with the copies of the object it replaced (read in
        its transaction); ``settle`` also ends the write's claim in that transaction."""

    def commit_copies(
        record: ObjectRecord, copies: Sequence[NewCopy], missing: bool
    ) -> Deferred[ObjectRecord | None]:
        """In one transaction: store ``record`` with its live ``copies`` (reservations
        become usage, their write intents are dropped), the replaced object's copies
        queued for cleanup as ``commit_object`` does; ``missing`` queues it for
        replication; fire with the replaced object."""

    def add_copy(record: ObjectRecord, copy: NewCopy) -> Deferred[bool]:
        """Add a live copy to the object ``record`` describes, if it is still that object
        and has no copy on that store (its reservation used, its intent dropped); else
        change nothing."""

    def object_copies(bucket: str, key: str) -> Deferred[list[CopyRecord]]:
        """Every copy of one object."""

    def queue_replication(bucket: str, key: str, since_ms: int) -> Deferred[None]:
        """Put an existing object in the replication queue."""

    def queue_under_replicated(bucket: str, replicas: int, since_ms: int) -> Deferred[int]:
        """Queue the objects of ``bucket`` with fewer than ``replicas`` live copies; how many."""

    def replication_queue(
        limit: int, after: tuple[int, str, str] | None = None
    ) -> Deferred[list[QueuedReplication]]:
        """Up to ``limit`` queued objects, oldest first, after a (since_ms, bucket, key) position."""

    def unqueue_replication(bucket: str, key: str) -> Deferred[None]:
        """Take an object out of the replication queue."""

    def lost_objects(limit: int) -> Deferred[list[LostObject]]:
        """Up to ``limit`` objects with no live copy left, oldest loss first."""

    def queue_totals() -> Deferred[QueueTotals]:
        """Replication queue length and oldest entry, write intents, lost objects: counts."""

    def get_object(bucket: str, key: str) -> Deferred[ObjectRecord | None]:
        """The record of one object, or None."""

    def get_object_copies(bucket: str, key: str) -> Deferred[tuple[ObjectRecord, tuple[CopyRecord, ...]] | None]:
        """The record of one object and its live copies (stores in configuration order,
        stores no longer configured last), or None."""

    def mark_copy_missing(
        bucket: str, key: str, copy: CopyRecord, etag: str | None = None, keep_only_copy: bool = False
    ) -> Deferred[int | None]:
        """A read found ``copy`` missing or damaged: if it is still that live copy of the
        object (given ``etag``, of an object of that ETag still: the scrubber's check), it
        is no longer live, its bytes go to the cleanup queue and the object to the
        replication queue, or, with no live copy left, to the lost objects. With
        ``keep_only_copy``, the object's only live copy stays live (no cleanup: its store
        may hand it back) and the object goes to the lost objects. Fire with the other
        live copies left (0: lost; None: it was not that live copy, nothing changed)."""

    def let_go_copy(record: ObjectRecord, copy: CopyRecord) -> Deferred[bool]:
        """``copy`` was moved to another store: if the object is still ``record``'s, the
        copy still that live copy and another remains, its bytes go to the cleanup queue
        (the record naming another live copy); fire with whether it did."""

    def let_go_moved_copy(
        record: ObjectRecord, copy: CopyRecord, settled: Sequence[str], holder: str, expires_ms: int,
        move: QueuedMove | None = None, added: NewCopy | None = None,
    ) -> Deferred[str | None]:
        """The end of a move in one transaction: ``let_go_copy``, the claims of
        ``settled`` ended, the old copy's location claimed for ``holder`` to remove its
        bytes (as ``claim_cleanup``) and ``move`` out of the queue, counted as moved
        (``finish_move``). Fire with ``claim_cleanup``'s answer, or None when the copy
        was not let go. With ``added`` (a new copy whose bytes are in place), it is
        added first (``add_copy``); if it cannot be, nothing changes: NOT_ADDED."""

    def probe() -> Deferred[None]:
        """Check the database can be read and written (degraded mode's probe); changes nothing."""

    def delete_object(bucket: str, key: str) -> Deferred[ObjectRecord | None]:
        """Remove one object's record and queue every copy's bytes for cleanup (their
        usage stays until they are gone); return the removed record."""

    def list_intents() -> Deferred[list[Intent]]:
        """Every write intent, oldest first."""

    def adopt_intent(reservation_id: int) -> Deferred[bool | None]:
        """Resolve an intent whose write committed: if a live copy is at its store and
        location, drop it, its reservation and its claim and fire True; False (changing nothing) if
        none is; None if the intent is gone."""

    def queue_cleanup(store: str, location: str, size: int) -> Deferred[None]:
        """Queue ``size`` bytes at ``location`` on ``store`` for cleanup, counting them as used."""

    def due_cleanups(now_ms: int, limit: int) -> Deferred[list[CleanupEntry]]:
        """Up to ``limit`` queued cleanups due by ``now_ms``, soonest first."""

    def list_cleanups(limit: int) -> Deferred[list[CleanupEntry]]:
        """Up to ``limit`` queued cleanups, oldest first."""

    def cleanup_totals() -> Deferred[dict[str, tuple[int, int]]]:
        """(entries, bytes) queued for cleanup, by store (stores without any left out)."""

    def location_in_use(store: str, location: str, ignore_intent: int | None = None) -> Deferred[bool]:
        """Whether a live copy or a write intent (other than the one of reservation
        ``ignore_intent``) is at ``location`` on ``store``."""

    def finish_cleanup(store: str, location: str, holder: str | None = None) -> Deferred[int]:
        """The bytes at ``location`` on ``store`` are gone: drop every cleanup queued for
        them, releasing their usage, and ``holder``'s claim; fire with how many."""

    def postpone_cleanup(entry_id: int, next_try_ms: int, error: str, holder: str | None = None) -> Deferred[None]:
        """Count a failed attempt at a cleanup and set when it is tried next; end
        ``holder``'s claim."""

    def claim_locations(
        store: str, locations: Sequence[str], holder: str, owner: str, expires_ms: int
    ) -> Deferred[bool]:
        """Claim every one of ``locations`` on ``store`` for ``holder``, owned by ``owner``
        until ``expires_ms`` (each free, already ``holder``'s, or held by a presumed dead
        owner), or none; fire with whether they are now ``holder``'s (see metadata.claims)."""

    def claim_cleanup(store: str, location: str, holder: str, owner: str, expires_ms: int) -> Deferred[str]:
        """Claim ``location`` on ``store`` to delete the bytes queued there for cleanup:
        "claimed", else "in use" (a live copy is there), "gone" (nothing queued there)
        or "claimed elsewhere" (another live holder has it)."""

    def end_claims(holders: Sequence[str]) -> Deferred[None]:
        """Drop the claims of ``holders``; missing ones are fine."""

    def drop_dead_claims(now_ms: int) -> Deferred[int]:
        """Drop the claims of instances dead at ``now_ms``, but those of writes whose
        intent remains; fire with how many."""

    def scan_objects(bucket: str, prefix: str, scan: Callable[[ObjectFetch], _T]) -> Deferred[_T]:
        """Run ``scan(fetch)`` in one read transaction and fire with what it returns.

        ``fetch(start, inclusive, limit)`` (see ``ObjectFetch``) reads the objects of
        ``bucket`` under ``prefix`` from ``start`` on, one bounded index range scan per
        call, all from the same snapshot. ``scan`` runs in the database thread: it must
        be quick and pure, and ``fetch`` is valid only while it runs.
        """

    def create_upload(upload: UploadRecord) -> Deferred[None]:
        """Record a new multipart upload."""

    def get_upload(upload_id: str) -> Deferred[UploadRecord | None]:
        """The upload called ``upload_id``, or None."""

    def commit_part(reservation_id: int, part: PartRecord) -> Deferred[PartRecord | None]:
        """Turn the part's reservation into the part's row (its bytes now count as
        reserved for the upload), replacing and releasing an earlier part with the
        same number; fire with that one. UploadNotFound if the upload is gone."""

    def forget_part(upload_id: str, part_number: int) -> Deferred[None]:
        """Drop one part's row and release its bytes."""

    def list_parts(upload_id: str, after: int = 0, limit: int | None = None) -> Deferred[list[PartRecord]]:
        """Parts numbered above ``after``, in order; at most ``limit`` (None: all)."""

    def complete_upload(
        upload_id: str, record: ObjectRecord, parts: Sequence[tuple[int, str]], missing: bool = False
    ) -> Deferred[ObjectRecord | None]:
        """Forget the upload and its parts, store ``record`` (as commit_object does,
        its size becoming usage) and remember the completion with the (number, ETag)
        ``parts`` the Complete listed, atomically; fire with the replaced object.
        UploadNotFound if the upload is gone."""

    def get_completed_upload(upload_id: str) -> Deferred[CompletedUpload | None]:
        """The remembered completion of an upload (see complete_upload), or None."""

    def forget_completed_uploads(before_ms: int) -> Deferred[int]:
        """Forget the completions older than ``before_ms``; fire with how many."""

    def delete_upload(upload_id: str) -> Deferred[UploadRecord | None]:
        """Forget an upload and its parts, releasing their bytes; fire with it (None if gone)."""

    def scan_uploads(bucket: str, prefix: str, scan: Callable[[UploadFetch], _T]) -> Deferred[_T]:
        """Run ``scan(fetch)`` over the uploads of ``bucket`` under ``prefix`` in one read
        transaction, like scan_objects (see ``UploadFetch``)."""

    def upload_counts() -> Deferred[dict[str, int]]:
        """How many multipart uploads are in progress, by store (stores without any left out)."""

    def uploads_initiated_before(
        before_ms: int, limit: int, after: tuple[int, str] | None = None
    ) -> Deferred[list[UploadRecord]]:
        """Up to ``limit`` uploads initiated before ``before_ms``, oldest first (ties by
        upload id); only those after ``after``, an (initiated_ms, upload_id) position."""
