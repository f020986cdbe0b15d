"""Claims of store locations, in the metadata database (table ``claims``, migration 007).

One live claim per (store, location): whoever moves bytes to a location (a write)
or removes bytes from it (cleanup, the reaper, the removal of replaced copies)
claims it first, in a transaction, and ends the claim once those bytes are settled.
So two processes sharing the database never write, or write and delete, the same
location at once. A claim's holder is a string naming what holds it (``write_holder``
for a write, keyed by its reservation); taking a claim one already holds succeeds
(re-entrant), and so does taking one whose owner is presumed dead (takeover).
"""

from __future__ import annotations

import secrets

from s3orchestrator.metadata.database import Transaction

#: Seconds a claim taken to delete bytes lasts should its holder fail to end it
#: (a deletion is one store call, retried later)...
DELETE_CLAIM_LEASE = 300.0
#: ...and a write's claim: writes end by themselves (commit or undo) while their instance
#: lives; a dead instance's claims are taken over as soon as its lease expired.
WRITE_CLAIM_LEASE = 24 * 3600.0


class LocationClaimed(Exception):
    """A write's location is claimed by another live writer or deleter (wait and retry)."""

    def __init__(self, store: str, location: str) -> None:
        super().__init__(f"{location!r} on store {store!r} is claimed by another write or cleanup")
        self.store = store
        self.location = location


def owner_dead(txn: Transaction, owner: str, created_ms: int, expires_ms: int, now_ms: int) -> bool:
    """Whether what ``owner`` took at ``created_ms`` to hold until ``expires_ms`` (a claim)
    is held by a dead instance: past ``expires_ms``, or no instance of that id whose
    lease runs past ``now_ms`` and that started before the claim was taken (an earlier
    process with the same id took it: this process's own previous run, too)."""
    if expires_ms <= now_ms:
        return True
    row = txn.query_one(
        "SELECT 1 FROM instances WHERE id = ? AND expires_ms > ? AND started_ms <= ?", (owner, now_ms, created_ms)
    )
    return row is None


def write_holder(reservation_id: int) -> str:
    """The holder of the claim a write takes with its reservation."""
    return f"w{reservation_id}"


def cleanup_holder(entry_id: int) -> str:
    """The holder of the claim the cleanup job takes to remove one queued entry."""
    return f"c{entry_id}"


def fresh_holder() -> str:
    """A holder for a one-off deletion (bytes a commit let go of)."""
    return f"d{secrets.token_hex(8)}"


def take_claim(
    txn: Transaction, store: str, location: str, holder: str, owner: str, now_ms: int, expires_ms: int
) -> bool:
    """Claim ``location`` on ``store`` for ``holder`` (owned by ``owner`` until
    ``expires_ms``): True if it was free, held by ``holder`` already, or held by a
    presumed dead owner (taken over); False, changing nothing, if another live
    holder has it."""
    row = txn.query_one(
        "SELECT holder, owner, created_ms, expires_ms FROM claims WHERE store = ? AND location = ?"
        + txn.engine.for_update,
        (store, location),
    )
    if row is None:
        # A concurrent claim not yet committed makes PostgreSQL wait for its
        # transaction here; once it commits, nothing is inserted.
        txn.execute(
            "INSERT INTO claims (store, location, holder, owner, created_ms, expires_ms) VALUES (?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (store, location) DO NOTHING",
            (store, location, holder, owner, now_ms, expires_ms),
        )
        return txn.rowcount == 1
    current, current_owner, current_created, current_expires = row
    if current != holder and not owner_dead(txn, current_owner, int(current_created), int(current_expires), now_ms):
        return False
    txn.execute(
        "UPDATE claims SET holder = ?, owner = ?, created_ms = ?, expires_ms = ? WHERE store = ? AND location = ?",
        (holder, owner, now_ms, expires_ms, store, location),
    )
    return True


def end_claim(txn: Transaction, holder: str) -> None:
    """Drop the claims ``holder`` holds (none if it was taken over)."""
    txn.execute("DELETE FROM claims WHERE holder = ?", (holder,))


def lock_key(txn: Transaction, bucket: str, key: str) -> None:
    """Serialise the transactions changing one object's metadata (the engine's
    ``key_lock``: a transaction-scoped advisory lock on PostgreSQL; nothing on
    SQLite, whose BEGIN IMMEDIATE already runs writers one at a time)."""
    if txn.engine.key_lock:
        # Bucket names hold no "/": the pair maps to one string and back.
        txn.execute(txn.engine.key_lock, (f"{bucket}/{key}",))
