"""Immutable records the metadata store reads and writes."""

from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping, Sequence

import attrs


def _frozen_mapping(value: Mapping[str, str]) -> Mapping[str, str]:
    return dict(sorted(value.items()))


@attrs.frozen
class ObjectRecord:
    """Where one object lives and what S3 returns about it.

    ``etag`` is unquoted (hex MD5, or ``hex-N`` for multipart objects);
    ``headers`` holds the stored standard headers by lower-case name
    (content-encoding, content-disposition, cache-control, expires, content-language);
    ``user_metadata`` holds x-amz-meta-* values by lower-case suffix;
    ``part_sizes`` the sizes of the parts of an object made by a multipart
    upload, in order (empty for other objects, and in records read by a listing,
    which does not load them).
    """

    bucket: str
    key: str
    store: str
    location: str
    size: int
    etag: str
    content_type: str
    last_modified_ms: int
    headers: Mapping[str, str] = attrs.field(factory=dict, converter=_frozen_mapping)
    user_metadata: Mapping[str, str] = attrs.field(factory=dict, converter=_frozen_mapping)
    part_sizes: tuple[int, ...] = attrs.field(default=(), converter=tuple[int, ...])


@attrs.frozen
class StoreUsage:
    """A store's quota and how much of it is used or reserved for uploads in flight."""

    name: str
    quota_bytes: int  # 0 = unlimited
    used_bytes: int
    reserved_bytes: int
    object_count: int = 0


@attrs.frozen
class Reservation:
    """Bytes set aside on a store for one upload until it commits or fails."""

    id: int
    store: str
    size: int


@attrs.frozen
class IntentPlan:
    """The write intents to record with a reservation: one per chosen store, for
    ``bucket``/``key`` at ``locate(store)``, owned (as the reservation) by the instance
    that records them.

    ``locate`` runs in the database thread inside the transaction: quick and pure."""

    bucket: str
    key: str
    locate: Callable[[str], str] = attrs.field(eq=False)


@attrs.frozen
class Intent:
    """A write about to create (or creating) one copy's bytes, not yet committed;
    ``owner`` is the instance id of the process writing them."""

    reservation_id: int
    bucket: str
    key: str
    store: str
    location: str
    size: int
    owner: str
    created_ms: int


@attrs.frozen
class Instance:
    """One running process as the metadata knows it: registered under ``id`` (its
    instance id) at ``started_ms``, alive until ``expires_ms`` unless its heartbeat
    renews the lease."""

    id: str
    host: str
    pid: int
    started_ms: int
    expires_ms: int


@attrs.frozen
class CleanupEntry:
    """Bytes no object describes any more, queued for removal from their store."""

    id: int
    store: str
    location: str
    size: int
    created_ms: int
    attempts: int
    next_try_ms: int
    last_error: str | None


@attrs.frozen
class UploadRecord:
    """A multipart upload in progress: where its object will live and what it will say.

    ``upload_id`` is the id clients see; ``store_upload_id`` the store's own
    (an upstream UploadId). ``checksum_algorithm`` is the upper-case
    ``x-amz-checksum-algorithm`` the client named at creation, or None.
    """

    upload_id: str
    bucket: str
    key: str
    store: str
    location: str
    store_upload_id: str
    content_type: str
    initiated_ms: int
    headers: Mapping[str, str] = attrs.field(factory=dict, converter=_frozen_mapping)
    user_metadata: Mapping[str, str] = attrs.field(factory=dict, converter=_frozen_mapping)
    checksum_algorithm: str | None = None


@attrs.frozen
class PartRecord:
    """One stored part of an upload.

    ``etag`` is the hex MD5 of its bytes (what the client sees), ``store_etag``
    the store's tag that its Complete needs; ``checksums`` holds the checksums
    the client sent for it (algorithm -> base64 value), already verified.
    """

    upload_id: str
    part_number: int
    store: str
    size: int
    etag: str
    store_etag: str
    last_modified_ms: int
    checksums: Mapping[str, str] = attrs.field(factory=dict, converter=_frozen_mapping)



def _part_pairs(pairs: Iterable[Sequence[Any]]) -> tuple[tuple[int, str], ...]:
    return tuple((int(number), str(etag)) for number, etag in pairs)


@attrs.frozen
class CompletedUpload:
    """A multipart upload that was completed: what its Complete listed and answered.

    ``parts`` holds the (part number, unquoted part ETag) pairs of the Complete
    request, in order; ``etag`` is the object's ETag it answered.
    """

    upload_id: str
    bucket: str
    key: str
    store: str
    etag: str
    completed_ms: int
    parts: tuple[tuple[int, str], ...] = attrs.field(converter=_part_pairs)


@attrs.frozen
class CopyRecord:
    """One copy of an object: its ``size`` bytes at ``location`` on ``store``, in ``state``
    (pending, live or deleting), written at ``created_ms`` (which tells this copy from a
    later one at the same place)."""

    store: str
    location: str
    state: str
    size: int
    created_ms: int


@attrs.frozen
class NewCopy:
    """A copy a write put on ``store`` at ``location``, with room reserved by ``reservation_id``."""

    store: str
    location: str
    reservation_id: int


@attrs.frozen
class ObjectCopies:
    """One object as one transaction read it: its ``record`` (None: no such object), its
    ``live`` copies (stores in configuration order, stores no longer configured last)
    and the stores ``holding`` any copy of it, live or not."""

    record: ObjectRecord | None
    live: tuple[CopyRecord, ...] = ()
    holding: frozenset[str] = frozenset()


@attrs.frozen
class QueuedReplication:
    """An object in the replication queue, there since ``since_ms`` (its oldest missing copy)."""

    bucket: str
    key: str
    since_ms: int


@attrs.frozen
class LostObject:
    """An object with no live copy left since ``since_ms``: every copy was found missing or damaged."""

    bucket: str
    key: str
    since_ms: int


@attrs.frozen
class QueueTotals:
    """The background work waiting, as operators see it: objects in the replication
    queue (``replication_oldest_ms``: when its oldest missing copy went missing; None:
    empty), write intents recorded, and objects lost (no live copy left)."""

    replication_queued: int
    replication_oldest_ms: int | None
    intents: int
    lost: int


@attrs.frozen
class ObjectPlacement:
    """Where the copies of one object are: its ``size`` and (store, state) pairs, stores
    in name order (the rebalance planner's view of an object)."""

    bucket: str
    key: str
    size: int
    copies: tuple[tuple[str, str], ...] = attrs.field(converter=tuple[tuple[str, str], ...])


@attrs.frozen
class PlannedMove:
    """A copy to move: ``bucket``/``key``'s copy of ``size`` bytes on ``from_store`` goes to
    ``to_store`` (None: a store the routing strategy picks when it is moved)."""

    bucket: str
    key: str
    from_store: str
    to_store: str | None
    size: int


@attrs.frozen
class QueuedMove:
    """A move in the movements queue (see ``PlannedMove``), queued for ``reason``
    ('drain' or 'rebalance') at ``queued_ms``, tried ``attempts`` times (the last failure:
    ``last_error``), due at ``next_ms``."""

    bucket: str
    key: str
    from_store: str
    to_store: str | None
    reason: str
    size: int
    queued_ms: int
    attempts: int = 0
    next_ms: int = 0
    last_error: str | None = None

    @property
    def planned(self) -> PlannedMove:
        """The move itself."""
        return PlannedMove(self.bucket, self.key, self.from_store, self.to_store, self.size)


@attrs.frozen
class MoveProgress:
    """The moves of one ``reason`` off one ``store``: ``left_objects`` copies of
    ``left_bytes`` still queued (``failing`` of them failed at least once), and
    ``moved_objects`` of ``moved_bytes`` moved since ``started_ms`` (None: none queued
    since the totals were last forgotten)."""

    reason: str
    store: str
    left_objects: int
    left_bytes: int
    moved_objects: int
    moved_bytes: int
    started_ms: int | None
    failing: int = 0
