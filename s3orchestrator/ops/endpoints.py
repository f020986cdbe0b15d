"""Operator endpoints (/health, /metrics, the admin API): plain HTTP, no S3 auth.

An endpoint is an async function of the request headers returning an
``OpsResponse``. The same endpoints are served two ways: on their own listener
(``ops_site``: a ``twisted.web.server.Site``), and on the S3 listener by
``OpsRouter``, which answers a GET or HEAD of an endpoint's path that carries no
S3 signature (a signed request for ``/health`` is S3's, for a bucket of that name)
and hands every other request to the S3 handler.
"""

from __future__ import annotations

from typing import Any, Callable, Coroutine, Mapping

import attrs
from twisted.internet.defer import ensureDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import resource, server
from twisted.web.http import Request

from s3orchestrator.web.site import RequestHandler, S3Request


@attrs.frozen
class OpsResponse:
    """What an operator endpoint answers."""

    status: int
    content_type: str
    body: bytes


#: An endpoint: the request's headers (lower-case names, first values) -> its answer.
OpsEndpoint = Callable[[Mapping[str, str]], Coroutine[Any, Any, OpsResponse]]

_log = Logger()


def _headers(request: Request) -> dict[str, str]:
    return {
        name.decode("latin-1").lower(): values[0].decode("latin-1")
        for name, values in request.requestHeaders.getAllRawHeaders()
    }


def _answer(request: Request, endpoint: OpsEndpoint) -> None:
    """Run ``endpoint`` for ``request`` and write its answer (a 500 if it fails)."""

    def send(response: OpsResponse) -> None:
        if request.finished or request.channel is None:
            return
        request.setResponseCode(response.status)
        request.setHeader(b"content-type", response.content_type.encode("latin-1"))
        request.setHeader(b"content-length", b"%d" % len(response.body))
        request.setHeader(b"cache-control", b"no-store")
        if request.method != b"HEAD":
            request.write(response.body)
        request.finish()

    def failed(failure: Failure) -> None:
        _log.failure("Operator endpoint {path} failed", failure, path=request.path.decode("latin-1", "replace"))
        send(OpsResponse(500, "text/plain; charset=utf-8", b"internal error\n"))

    ensureDeferred(endpoint(_headers(request))).addCallbacks(send, failed)


class _OpsRoot(resource.Resource):
    """Every endpoint (GET, HEAD) and action (POST) by its exact path; 404 for anything else."""

    isLeaf = True

    def __init__(self, endpoints: Mapping[str, OpsEndpoint], actions: Mapping[str, OpsEndpoint]) -> None:
        super().__init__()
        self._endpoints = {path.encode("ascii"): endpoint for path, endpoint in endpoints.items()}
        self._actions = {path.encode("ascii"): action for path, action in actions.items()}

    def render(self, request: server.Request) -> bytes | int:
        action = self._actions.get(request.path)
        endpoint = action or self._endpoints.get(request.path)
        if endpoint is None:
            request.setResponseCode(404)
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return b"not found\n"
        allowed = (b"POST",) if action is not None else (b"GET", b"HEAD")
        if request.method not in allowed:
            request.setResponseCode(405)
            request.setHeader(b"allow", b", ".join(allowed))
            return b""
        _answer(request, endpoint)
        return server.NOT_DONE_YET


def ops_site(endpoints: Mapping[str, OpsEndpoint], actions: Mapping[str, OpsEndpoint] | None = None) -> server.Site:
    """A Site serving ``endpoints`` by exact path (``/health``, ``/metrics``...) to GET and
    HEAD, and ``actions`` (the admin API's ``/scrub``) to POST; 404 elsewhere."""
    site = server.Site(_OpsRoot(endpoints, actions or {}))
    site.displayTracebacks = False
    return site


class OpsRouter:
    """The S3 listener's request handler: operator endpoints first, S3 for the rest."""

    def __init__(self, s3_handler: RequestHandler, endpoints: Mapping[str, OpsEndpoint]) -> None:
        self._s3 = s3_handler
        self._endpoints = {path.encode("ascii"): endpoint for path, endpoint in endpoints.items()}

    def handle(self, request: S3Request) -> None:
        endpoint = self._endpoints.get(request.raw_path)
        if endpoint is None or request.method not in (b"GET", b"HEAD") or _signed(request):
            self._s3.handle(request)
            return
        _answer(request, endpoint)


def _signed(request: S3Request) -> bool:
    """Whether the request carries an S3 signature (a header or a presigned query)."""
    return request.requestHeaders.hasHeader(b"authorization") or b"X-Amz-Signature" in request.raw_query
