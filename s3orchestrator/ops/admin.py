"""The admin API: token-protected JSON endpoints on their own (loopback) listener.

``s3orchestrator status`` reads ``/status``, ``s3orchestrator usage`` reads ``/usage``,
``s3orchestrator scrub --now`` POSTs to ``/scrub``. Requests authenticate with
``Authorization: Bearer TOKEN`` (``[admin] token``); anything else gets a 401.
While the metadata database is unavailable (degraded mode) or busy, ``/status``
answers 503 with what is known without it (see ``metadata_down``).
"""

from __future__ import annotations

import hmac
from typing import Any, Awaitable, Callable, Mapping, Sequence

from twisted.logger import Logger

from s3orchestrator.jobs.health import StoreHealth
from s3orchestrator.metadata.availability import MetadataAvailability
from s3orchestrator.metadata.interface import IMetadataStore, MetadataBusy, MetadataUnavailable
from s3orchestrator.metadata.job_leases import JobLeases
from s3orchestrator.metadata.scrub import ScrubPasses
from s3orchestrator.ops.endpoints import OpsEndpoint, OpsResponse
from s3orchestrator.ops.health import json_response
from s3orchestrator.ops.status import status_snapshot

_log = Logger()

UNAUTHORIZED = {"error": "unauthorized"}


def bearer_token(headers: Mapping[str, str]) -> str | None:
    """The token of an ``Authorization: Bearer TOKEN`` header (scheme case-insensitive), or None."""
    scheme, _, token = headers.get("authorization", "").strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token


def token_matches(given: str | None, expected: str) -> bool:
    """Whether ``given`` is ``expected``, compared in constant time."""
    if given is None:
        return False
    # Header values arrive decoded as latin-1: back to their wire bytes. The configured
    # token is text from the TOML file: UTF-8 on the wire.
    return hmac.compare_digest(given.encode("latin-1", "replace"), expected.encode("utf-8"))


def metadata_down(state: str, detail: str | None, health: StoreHealth) -> dict[str, Any]:
    """The ``/status`` document while the metadata database cannot answer (with a 503):
    ``{"error": "metadata database <state>", "detail": the database's error,
    "status": "degraded", "metadata": state ("unavailable" or "busy"),
    "stores": [{"name", "healthy", "last_error"}]}`` (store health is kept in memory)."""
    return {
        "error": f"metadata database {state}",
        "detail": detail,
        "status": "degraded",
        "metadata": state,
        "stores": [
            {"name": name, "healthy": state.healthy, "last_error": state.last_error}
            for name, state in health.snapshot().items()
        ],
    }


def authorized(token: str, path: str, endpoint: OpsEndpoint) -> OpsEndpoint:
    """``endpoint``, answered only to requests bearing ``token`` (a 401 to others)."""

    async def guarded(headers: Mapping[str, str]) -> OpsResponse:
        given = bearer_token(headers)
        if not token_matches(given, token):
            # Never the token given: a near miss would leak most of the real one.
            _log.warn(
                "Admin API request for {path} refused: {reason}",
                path=path,
                reason="no bearer token" if given is None else "wrong token",
            )
            return json_response(401, UNAUTHORIZED)
        return await endpoint(headers)

    return guarded


def admin_actions(
    token: str, health: StoreHealth, scrub_now: Callable[[], Awaitable[Mapping[str, Any]]],
) -> dict[str, OpsEndpoint]:
    """The admin API's actions (POST) by path: ``/scrub`` asks for scrub passes to begin
    at once (``scrub_now()``: ``s3orchestrator scrub --now``), a 503 with ``metadata_down``
    while the metadata database is unavailable or busy."""
    if not token:
        raise ValueError("the admin API needs a non-empty token")

    async def scrub(headers: Mapping[str, str]) -> OpsResponse:
        try:
            return json_response(200, await scrub_now())
        except MetadataUnavailable as error:
            return json_response(503, metadata_down("unavailable", str(error), health))
        except MetadataBusy as error:
            return json_response(503, metadata_down("busy", str(error), health))

    return {"/scrub": authorized(token, "/scrub", scrub)}


def admin_endpoints(
    token: str, metadata: IMetadataStore, health: StoreHealth, availability: MetadataAvailability | None = None,
    job_leases: JobLeases | None = None, usage: Callable[[], Sequence[Mapping[str, Any]]] | None = None,
    scrub_passes: ScrubPasses | None = None,
) -> dict[str, OpsEndpoint]:
    """The admin API's endpoints by path: ``/status`` (``status_snapshot`` as JSON, with
    the holders of the job leases when given ``job_leases``, the scrubber's passes
    when given ``scrub_passes``; a 503 with ``metadata_down``
    while ``availability`` says the database is unavailable, or when it fails
    unavailable or busy) and, given ``usage`` (``TrafficLedger.report``), ``/usage``:
    ``{"stores": usage()}``."""
    if not token:
        raise ValueError("the admin API needs a non-empty token")

    async def status(headers: Mapping[str, str]) -> OpsResponse:
        if availability is not None and not availability.available:
            return json_response(503, metadata_down("unavailable", availability.last_error, health))
        try:
            snapshot = await status_snapshot(metadata, health, job_leases, scrub_passes)
        except MetadataUnavailable as error:
            return json_response(503, metadata_down("unavailable", str(error), health))
        except MetadataBusy as error:
            return json_response(503, metadata_down("busy", str(error), health))
        return json_response(200, snapshot)

    endpoints = {"/status": authorized(token, "/status", status)}
    if usage is not None:
        report = usage

        async def monthly_usage(headers: Mapping[str, str]) -> OpsResponse:
            return json_response(200, {"stores": report()})

        endpoints["/usage"] = authorized(token, "/usage", monthly_usage)
    return endpoints
