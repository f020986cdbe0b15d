"""The daemon's state as operators see it: per-store health, usage, copies, queues and uploads.

One snapshot serves the admin API (``s3orchestrator status``), ``/metrics`` (taken at
every scrape, so every query here is cheap: per-store counters, counts of short tables)
and the manhole's ``status()``.
"""

from __future__ import annotations

from typing import Any

from s3orchestrator.jobs.health import StoreHealth
from s3orchestrator.metadata.interface import IMetadataStore
from s3orchestrator.metadata.job_leases import JobLeases
from s3orchestrator.metadata.scrub import ScrubPass, ScrubPasses, Suspension


async def status_snapshot(
    metadata: IMetadataStore, health: StoreHealth, job_leases: JobLeases | None = None,
    scrub_passes: ScrubPasses | None = None,
) -> dict[str, Any]:
    """``{"status": "ok" | "degraded", "stores": [...], "uploads": N, "cleanup_queue": N,
    "cleanup_bytes": N, "intents_pending": N, "replication_queue": N,
    "replication_oldest_ms": ms | None, "objects_lost": N}``.

    One entry per configured store: name, healthy, last_error, quota/used/reserved
    bytes, ``objects`` (live copies on the store) and ``live_bytes`` (their bytes),
    uploads in progress, ``cleanup_queue``/``cleanup_bytes`` (bytes queued for removal,
    counted in used_bytes along with the live copies). ``replication_queue``: objects
    waiting for the replicator, the oldest missing copy since ``replication_oldest_ms``
    (None: none missing); ``objects_lost``: objects with no live copy left. ``degraded``
    when any store is down. Given ``job_leases``, also ``"jobs": [...]``: which instance
    runs each cluster-wide job (job, holder, since_ms, expires_ms; a lease past
    expires_ms is free to take). Given ``scrub_passes``, also ``"scrub": [...]``: the
    scrubber's passes begun so far (kind "stat" or "checksum", running, started_ms,
    finished_ms: the last pass's end or None, position: "bucket/key" of the last copy
    checked in the running pass or None, checked, found: copies missing or damaged,
    requested_ms: when a pass was asked for, or None), and ``"scrub_suspended": [...]``:
    the stores the scrubber lets no copy go from (store, since_ms, kind, found, checked:
    the pass that suspended it found ``found`` of ``checked`` copies wrong there)."""
    usage = await metadata.store_usage()
    uploads = await metadata.upload_counts()
    cleanups = await metadata.cleanup_totals()
    totals = await metadata.queue_totals()
    statuses = health.snapshot()
    stores = []
    for store in usage:
        status = statuses.get(store.name)
        queued, queued_bytes = cleanups.get(store.name, (0, 0))
        stores.append({
            "name": store.name,
            "healthy": status.healthy if status is not None else True,
            "last_error": status.last_error if status is not None else None,
            "quota_bytes": store.quota_bytes,
            "used_bytes": store.used_bytes,
            "reserved_bytes": store.reserved_bytes,
            "objects": store.object_count,
            # Used bytes are the live copies' and those queued for removal, nothing else.
            "live_bytes": store.used_bytes - queued_bytes,
            "uploads": uploads.get(store.name, 0),
            "cleanup_queue": queued,
            "cleanup_bytes": queued_bytes,
        })
    degraded = any(not store["healthy"] for store in stores)
    snapshot: dict[str, Any] = {
        "status": "degraded" if degraded else "ok",
        "stores": stores,
        "uploads": sum(uploads.values()),
        "cleanup_queue": sum(entries for entries, _ in cleanups.values()),
        "cleanup_bytes": sum(size for _, size in cleanups.values()),
        "intents_pending": totals.intents,
        "replication_queue": totals.replication_queued,
        "replication_oldest_ms": totals.replication_oldest_ms,
        "objects_lost": totals.lost,
    }
    if job_leases is not None:
        snapshot["jobs"] = [
            {"job": lease.job, "holder": lease.owner, "since_ms": lease.acquired_ms, "expires_ms": lease.expires_ms}
            for lease in await job_leases.holders()
        ]
    if scrub_passes is not None:
        snapshot["scrub"] = [scrub_pass_document(scrub) for scrub in await scrub_passes.passes()]
        snapshot["scrub_suspended"] = [suspension_document(held) for held in await scrub_passes.suspensions()]
    return snapshot


def scrub_pass_document(scrub: ScrubPass) -> dict[str, Any]:
    """One kind of scrub pass as the admin API shows it."""
    return {
        "kind": scrub.kind, "running": scrub.running, "started_ms": scrub.started_ms,
        "finished_ms": scrub.finished_ms,
        "position": None if scrub.position is None else f"{scrub.position[0]}/{scrub.position[1]}",
        "checked": scrub.checked, "found": scrub.found, "requested_ms": scrub.requested_ms,
    }


def suspension_document(suspension: Suspension) -> dict[str, Any]:
    """A store the scrubber suspended, as the admin API shows it."""
    return {"store": suspension.store, "since_ms": suspension.since_ms, "kind": suspension.kind,
            "found": suspension.found, "checked": suspension.checked}
