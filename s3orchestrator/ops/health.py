"""``/health`` (liveness) and ``/health/ready`` (readiness) for load balancers and monitors.

Both are polled often (every second is common), so neither touches the metadata
database: liveness reads the in-memory store health, readiness a flag.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Mapping

from s3orchestrator.jobs.health import StoreHealth
from s3orchestrator.ops.endpoints import OpsEndpoint, OpsResponse

JSON = "application/json"


def json_response(status: int, document: Any) -> OpsResponse:
    """``document`` as a JSON answer (one line, newline-terminated, for curl)."""
    return OpsResponse(status, JSON, json.dumps(document).encode("utf-8") + b"\n")


def health_endpoint(health: StoreHealth, metadata_available: Callable[[], bool] = lambda: True) -> OpsEndpoint:
    """Liveness: always 200 while the process answers, with ``{"status": "ok" | "degraded",
    "metadata": "ok" | "unavailable", "stores": {name: {"healthy", "last_error"}}}``;
    ``degraded`` when any store is down (writes go to the others) or the metadata
    database is unavailable (degraded mode: only GET and HEAD are served)."""

    async def endpoint(headers: Mapping[str, str]) -> OpsResponse:
        stores = {
            name: {"healthy": status.healthy, "last_error": status.last_error}
            for name, status in health.snapshot().items()
        }
        metadata_ok = metadata_available()
        degraded = not metadata_ok or any(not store["healthy"] for store in stores.values())
        return json_response(200, {
            "status": "degraded" if degraded else "ok",
            "metadata": "ok" if metadata_ok else "unavailable",
            "stores": stores,
        })

    return endpoint


def ready_endpoint(is_ready: Callable[[], bool]) -> OpsEndpoint:
    """Readiness: 200 ``{"ready": true}`` when ``is_ready()``, else 503 ``{"ready": false}``
    (before migrations ran and the S3 listener is up, and during shutdown)."""

    async def endpoint(headers: Mapping[str, str]) -> OpsResponse:
        if is_ready():
            return json_response(200, {"ready": True})
        return json_response(503, {"ready": False})

    return endpoint
