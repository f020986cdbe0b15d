"""The admin API: token-protected JSON endpoints on their own (loopback) listener.

``s3orchestrator status`` reads ``/status``, ``s3orchestrator usage`` reads ``/usage``. Requests authenticate with
``Authorization: Bearer TOKEN`` (``[admin] token``); anything else gets a 401.
"""

from __future__ import annotations

import hmac
from typing import Any, Callable, Mapping, Sequence

from twisted.logger import Logger

from s3orchestrator.jobs.health import StoreHealth
from s3orchestrator.metadata.interface import IMetadataStore
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


def admin_endpoints(
    token: str, metadata: IMetadataStore, health: StoreHealth,
    usage: Callable[[], Sequence[Mapping[str, Any]]] | None = None,
) -> dict[str, OpsEndpoint]:
    """The admin API's endpoints by path: ``/status`` (``status_snapshot`` as JSON) and,
    given ``usage`` (``TrafficLedger.report``), ``/usage``: ``{"stores": usage()}``."""
    if not token:
        raise ValueError("the admin API needs a non-empty token")

    def authorized(path: str, endpoint: OpsEndpoint) -> OpsEndpoint:
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

    async def status(headers: Mapping[str, str]) -> OpsResponse:
        return json_response(200, await status_snapshot(metadata, health))

    endpoints = {"/status": authorized("/status", status)}
    if usage is not None:
        report = usage

        async def monthly_usage(headers: Mapping[str, str]) -> OpsResponse:
            return json_response(200, {"stores": report()})

        endpoints["/usage"] = authorized("/usage", monthly_usage)
    return endpoints
