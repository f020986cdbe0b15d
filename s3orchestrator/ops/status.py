"""The daemon's state as operators see it: per-store health, usage, objects and uploads.

One snapshot serves ``/health``, the admin API (``s3orchestrator status``) and the
manhole's ``status()``.
"""

from __future__ import annotations

from typing import Any

from s3orchestrator.jobs.health import StoreHealth
from s3orchestrator.metadata.interface import IMetadataStore
from s3orchestrator.metadata.job_leases import JobLeases


async def status_snapshot(
    metadata: IMetadataStore, health: StoreHealth, job_leases: JobLeases | None = None
) -> dict[str, Any]:
    """``{"status": "ok" | "degraded", "stores": [...], "uploads": N, "cleanup_queue": N,
    "cleanup_bytes": N, "intents_pending": N}``: one entry per configured store (name,
    healthy, last_error, quota/used/reserved bytes, objects, uploads in progress,
    cleanup_queue/cleanup_bytes: bytes queued for removal, counted in used_bytes);
    ``degraded`` when any store is down. Given ``job_leases``, also ``"jobs": [...]``:
    which instance runs each cluster-wide job (job, holder, since_ms, expires_ms; a
    lease past expires_ms is free to take)."""
    usage = await metadata.store_usage()
    uploads = await metadata.upload_counts()
    cleanups = await metadata.cleanup_totals()
    intents = await metadata.list_intents()
    statuses = health.snapshot()
    stores = []
    for store in usage:
        status = statuses.get(store.name)
        stores.append({
            "name": store.name,
            "healthy": status.healthy if status is not None else True,
            "last_error": status.last_error if status is not None else None,
            "quota_bytes": store.quota_bytes,
            "used_bytes": store.used_bytes,
            "reserved_bytes": store.reserved_bytes,
            "objects": store.object_count,
            "uploads": uploads.get(store.name, 0),
            "cleanup_queue": cleanups.get(store.name, (0, 0))[0],
            "cleanup_bytes": cleanups.get(store.name, (0, 0))[1],
        })
    degraded = any(not store["healthy"] for store in stores)
    snapshot: dict[str, Any] = {
        "status": "degraded" if degraded else "ok",
        "stores": stores,
        "uploads": sum(uploads.values()),
        "cleanup_queue": sum(entries for entries, _ in cleanups.values()),
        "cleanup_bytes": sum(size for _, size in cleanups.values()),
        "intents_pending": len(intents),
    }
    if job_leases is not None:
        snapshot["jobs"] = [
            {"job": lease.job, "holder": lease.owner, "since_ms": lease.acquired_ms, "expires_ms": lease.expires_ms}
            for lease in await job_leases.holders()
        ]
    return snapshot
