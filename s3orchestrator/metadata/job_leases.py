"""The job leases in SQL: which instance runs each cluster-wide job, taken and renewed
with one statement that both engines accept."""

from __future__ import annotations

import attrs
from twisted.internet.defer import Deferred

from s3orchestrator.metadata.database import Database, Transaction

# Insert the lease, or take over the row when this owner already holds it (a renewal) or
# its holder let it expire; a row another owner holds unexpired is left as it is (no row
# changed). INSERT ... ON CONFLICT DO UPDATE ... WHERE: SQLite >= 3.24 and PostgreSQL alike;
# under concurrent takers, SQLite's BEGIN IMMEDIATE and PostgreSQL's row lock on the conflict
# (the WHERE re-checked on the newest row) let exactly one of them change the row.
_TAKE = (
    "INSERT INTO job_leases (job, owner, acquired_ms, expires_ms) VALUES (?, ?, ?, ?)"
    " ON CONFLICT (job) DO UPDATE SET"
    " acquired_ms = CASE WHEN job_leases.owner = excluded.owner THEN job_leases.acquired_ms"
    " ELSE excluded.acquired_ms END,"
    " owner = excluded.owner, expires_ms = excluded.expires_ms"
    " WHERE job_leases.owner = excluded.owner OR job_leases.expires_ms <= excluded.acquired_ms"
)


@attrs.frozen
class JobLeaseRecord:
    """Who holds ``job``'s lease: ``owner`` (an instance id), since ``acquired_ms``,
    until ``expires_ms`` unless renewed (milliseconds of the holder's clock)."""

    job: str
    owner: str
    acquired_ms: int
    expires_ms: int


class JobLeases:
    """The ``job_leases`` table of a metadata ``Database``."""

    def __init__(self, database: Database) -> None:
        self.database = database

    def take(self, job: str, owner: str, now_ms: int, duration_ms: int) -> Deferred[bool]:
        """Take or renew ``job``'s lease for ``owner`` until ``now_ms + duration_ms``;
        fire with whether ``owner`` holds it now (False: another owner's has not expired)."""
        if duration_ms <= 0:
            raise ValueError("duration_ms must be positive")

        def take(txn: Transaction) -> bool:
            txn.execute(_TAKE, (job, owner, now_ms, now_ms + duration_ms))
            return txn.rowcount == 1

        return self.database.runInteraction("take_job_lease", take, write=True)

    def give_up(self, job: str, owner: str) -> Deferred[bool]:
        """Drop ``job``'s lease if ``owner`` holds it (another instance may take it at once);
        fire with whether it did."""

        def give_up(txn: Transaction) -> bool:
            txn.execute("DELETE FROM job_leases WHERE job = ? AND owner = ?", (job, owner))
            return txn.rowcount == 1

        return self.database.runInteraction("give_up_job_lease", give_up, write=True)

    def holders(self) -> Deferred[list[JobLeaseRecord]]:
        """Every job's lease row (expired ones too), by job name."""

        def select(txn: Transaction) -> list[JobLeaseRecord]:
            rows = txn.query("SELECT job, owner, acquired_ms, expires_ms FROM job_leases ORDER BY job")
            return [JobLeaseRecord(str(job), str(owner), int(acquired), int(expires))
                    for job, owner, acquired, expires in rows]

        return self.database.runInteraction("job_leases", select)
