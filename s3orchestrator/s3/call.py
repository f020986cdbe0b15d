"""What the web layer hands the S3 operations, and what they hand back: no HTTP objects."""

from __future__ import annotations

from typing import Mapping, Sequence, Union

import attrs

from s3orchestrator.auth.sigv4 import AuthResult
from s3orchestrator.placement.body import RequestBody
from s3orchestrator.stores.interface import IObjectReader


def first_header(headers: Mapping[str, Sequence[str]], name: str) -> str | None:
    """The first value of header ``name`` (lower-case), or None: for headers where S3
    takes the first of repeated values (unlike the security headers, see
    auth.sigv4.single_header)."""
    values = headers.get(name)
    return values[0] if values else None


@attrs.frozen
class S3Call:
    """One authenticated S3 request.

    ``headers`` maps lower-case names to raw values; ``query`` maps decoded
    parameter names to their (first) decoded value; ``bucket``/``key`` are None
    when the path does not name them.
    """

    request_id: str
    method: str
    bucket: str | None
    key: str | None
    query: Mapping[str, str]
    headers: Mapping[str, Sequence[str]]
    auth: AuthResult
    body: RequestBody | None = None
    # How the client reached us ("http" or "https"), for URLs in answers.
    scheme: str = "http"

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (lower-case), or None."""
        return first_header(self.headers, name)


# Union: zope.interface before 6 (Debian 12's) has no ``|`` for interfaces.
ResponseBody = Union[bytes, IObjectReader, None]  # noqa: UP007


@attrs.frozen
class S3Response:
    """Status, headers and body (bytes, a store reader to stream, or nothing)."""

    status: int
    headers: Sequence[tuple[str, str]] = ()
    body: ResponseBody = None
    # Set by operations for the request log line.
    store: str | None = None
