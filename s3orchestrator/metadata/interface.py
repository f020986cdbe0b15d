"""The metadata store interface: one API over SQLite (and, later, PostgreSQL)."""

from __future__ import annotations

from typing import Callable, Sequence

from twisted.internet.defer import Deferred
from zope.interface import Interface

from s3orchestrator.metadata.records import ObjectRecord, Reservation, StoreUsage

StoreChooser = Callable[[Sequence[StoreUsage]], "str | None"]


class IMetadataStore(Interface):
    """Objects, per-store usage and quota reservations, kept transactionally."""

    def start() -> Deferred[None]:
        """Open the database and apply pending schema migrations."""

    def stop() -> Deferred[None]:
        """Close the database."""

    def sync_stores(quotas: Sequence[tuple[str, int]]) -> Deferred[None]:
        """Make sure a usage row exists for every configured (store name, quota_bytes)."""

    def clear_reservations() -> Deferred[int]:
        """Drop reservations left by a previous run of this daemon; return how many."""

    def store_usage() -> Deferred[list[StoreUsage]]:
        """Usage of every configured store, in the order given to sync_stores."""

    def reserve(size: int, choose: StoreChooser) -> Deferred[Reservation | None]:
        """In one transaction: read usage, let ``choose`` pick a store, reserve ``size`` bytes there.

        Returns None (and reserves nothing) when ``choose`` returns None.
        """

    def release(reservation_id: int) -> Deferred[None]:
        """Drop a reservation (upload failed or was abandoned)."""

    def commit_object(reservation_id: int, record: ObjectRecord) -> Deferred[ObjectRecord | None]:
        """In one transaction: turn the reservation into usage and store ``record``.

        Replaces any object under the same bucket and key, releasing its bytes from
        its store's usage; returns the replaced record (or None).
        """

    def get_object(bucket: str, key: str) -> Deferred[ObjectRecord | None]:
        """The record of one object, or None."""

    def delete_object(bucket: str, key: str) -> Deferred[ObjectRecord | None]:
        """Remove one object's record and release its bytes; return the removed record."""
