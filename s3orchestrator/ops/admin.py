"""The admin API: token-protected JSON endpoints on their own (loopback) listener.

``s3orchestrator status`` reads ``/status``, ``s3orchestrator usage`` reads ``/usage``, ``s3orchestrator
rebalance`` reads ``/rebalance`` (``--dry-run``) or posts to it, ``s3orchestrator scrub --now`` POSTs to
``/scrub``. Requests authenticate with
``Authorization: Bearer TOKEN`` (``[admin] token``); anything else gets a 401.
While the metadata database is unavailable (degraded mode) or busy, ``/status``
answers 503 with what is known without it (see ``metadata_down``).
"""

from __future__ import annotations

import hmac
from typing import Any, Awaitable, Callable, Coroutine, Mapping, Sequence, TypeVar, cast

from twisted.logger import Logger

from s3orchestrator.jobs.health import StoreHealth
from s3orchestrator.jobs.rebalance import NotSpread, Rebalancer
from s3orchestrator.metadata.availability import MetadataAvailability
from s3orchestrator.metadata.interface import IMetadataStore, MetadataBusy, MetadataUnavailable
from s3orchestrator.metadata.job_leases import JobLeases
from s3orchestrator.metadata.scrub import ScrubPasses
from s3orchestrator.ops.endpoints import OpsAction, OpsEndpoint, OpsResponse
from s3orchestrator.ops.health import json_response
from s3orchestrator.ops.movement import MovementControl
from s3orchestrator.ops.rebalance_report import plan_document
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


_Route = TypeVar("_Route", bound=Callable[..., Coroutine[Any, Any, OpsResponse]])


def authorized(token: str, path: str, route: _Route) -> _Route:
    """``route`` (an endpoint or an action) answering 401 unless the request carries ``token``."""

    async def guarded(headers: Mapping[str, str], *args: Any) -> OpsResponse:
        given = bearer_token(headers)
        if not token_matches(given, token):
            # Never the token given: a near miss would leak most of the real one.
            _log.warn(
                "Admin API request for {path} refused: {reason}",
                path=path,
                reason="no bearer token" if given is None else "wrong token",
            )
            return json_response(401, UNAUTHORIZED)
        return await route(headers, *args)

    return cast(_Route, guarded)


def rebalance_endpoint(rebalancer: Rebalancer, queue: bool, queued: Callable[[], None] = lambda: None) -> OpsEndpoint:
    """``/rebalance``: the plan of a rebalance now (``plan_document``), which, given
    ``queue``, is queued for the mover (then ``queued()`` is called); a 409 ``{"error"}``
    unless the routing strategy is spread, a 503 while the metadata database cannot answer."""

    async def rebalance(headers: Mapping[str, str]) -> OpsResponse:
        try:
            if not queue:
                return json_response(200, plan_document(await rebalancer.plan()))
            plan, count = await rebalancer.rebalance()
        except NotSpread as refused:
            return json_response(409, {"error": str(refused)})
        except (MetadataUnavailable, MetadataBusy) as error:
            state = "busy" if isinstance(error, MetadataBusy) else "unavailable"
            return json_response(503, {"error": f"metadata database {state}", "detail": str(error)})
        if count:
            _log.info("Rebalance through the admin API: {count} moves queued", count=count)
            queued()
        return json_response(200, plan_document(plan, count))

    return rebalance


def _ignoring_body(endpoint: OpsEndpoint) -> OpsAction:
    """An action that answers as ``endpoint`` does, whatever body the POST carries."""

    async def action(headers: Mapping[str, str], body: bytes) -> OpsResponse:
        return await endpoint(headers)

    return action


def admin_actions(
    token: str, health: StoreHealth, movement: MovementControl | None = None, rebalancer: Rebalancer | None = None,
    scrub_now: Callable[[], Awaitable[Mapping[str, Any]]] | None = None,
) -> dict[str, OpsAction]:
    """The admin API's actions (POST) by path, token-guarded: given ``movement``, its
    ``actions()``; given ``rebalancer``, ``/rebalance`` (queue a rebalance, then run the mover); given
    ``scrub_now``, ``/scrub`` (scrub passes begin at once: ``s3orchestrator scrub --now``;
    a 503 with ``metadata_down`` while the metadata database is unavailable or busy)."""
    if not token:
        raise ValueError("the admin API needs a non-empty token")
    actions = dict(movement.actions()) if movement is not None else {}
    if scrub_now is not None:
        start_scrub = scrub_now

        async def scrub(headers: Mapping[str, str]) -> OpsResponse:
            try:
                return json_response(200, await start_scrub())
            except MetadataUnavailable as error:
                return json_response(503, metadata_down("unavailable", str(error), health))
            except MetadataBusy as error:
                return json_response(503, metadata_down("busy", str(error), health))

        actions["/scrub"] = scrub
    if rebalancer is not None:
        queued = movement.soon if movement is not None else (lambda: None)
        actions["/rebalance"] = rebalance_endpoint(rebalancer, queue=True, queued=queued)
    return {path: authorized(token, path, _ignoring_body(action)) for path, action in actions.items()}


def admin_endpoints(
    token: str, metadata: IMetadataStore, health: StoreHealth, availability: MetadataAvailability | None = None,
    job_leases: JobLeases | None = None, usage: Callable[[], Sequence[Mapping[str, Any]]] | None = None,
    movement: MovementControl | None = None, rebalancer: Rebalancer | None = None,
    scrub_passes: ScrubPasses | None = None,
) -> dict[str, OpsEndpoint]:
    """The admin API's endpoints by path: ``/status`` (``status_snapshot`` as JSON, with
    the holders of the job leases when given ``job_leases``, the scrubber's passes
    when given ``scrub_passes``; a 503 with ``metadata_down``
    while ``availability`` says the database is unavailable, or when it fails
    unavailable or busy) and, given ``usage`` (``TrafficLedger.report``), ``/usage``:
    ``{"stores": usage()}``. Given ``movement``, ``/status`` carries its document too
    (``"movement"``), and ``/movement`` serves it alone. Given ``rebalancer``,
    ``/rebalance`` answers the plan of a rebalance (``rebalance_endpoint``, queueing nothing)."""
    if not token:
        raise ValueError("the admin API needs a non-empty token")

    async def status(headers: Mapping[str, str]) -> OpsResponse:
        if availability is not None and not availability.available:
            return json_response(503, metadata_down("unavailable", availability.last_error, health))
        try:
            snapshot = await status_snapshot(metadata, health, job_leases, scrub_passes)
            if movement is not None:
                snapshot["movement"] = await movement.status()
        except MetadataUnavailable as error:
            return json_response(503, metadata_down("unavailable", str(error), health))
        except MetadataBusy as error:
            return json_response(503, metadata_down("busy", str(error), health))
        return json_response(200, snapshot)

    endpoints: dict[str, OpsEndpoint] = {"/status": authorized(token, "/status", status)}
    if movement is not None:
        endpoints.update({path: authorized(token, path, endpoint) for path, endpoint in movement.endpoints().items()})
    if usage is not None:
        report = usage

        async def monthly_usage(headers: Mapping[str, str]) -> OpsResponse:
            return json_response(200, {"stores": report()})

        endpoints["/usage"] = authorized(token, "/usage", monthly_usage)
    if rebalancer is not None:
        endpoints["/rebalance"] = authorized(token, "/rebalance", rebalance_endpoint(rebalancer, queue=False))
    return endpoints
