"""Conditional requests: If-Match, If-None-Match, If-Modified-Since, If-Unmodified-Since."""

from __future__ import annotations

import math
from datetime import UTC
from email.utils import formatdate, parsedate_to_datetime
from typing import Mapping

from s3orchestrator.errors import S3Error


def check_preconditions(
    headers: Mapping[str, str],
    etag: str,
    last_modified: float,
    *,
    copy_source: bool = False,
) -> None:
    """Raise the S3 error a conditional GET/HEAD gets for this object, or return if none applies.

    ``headers`` maps lower-case header names to values; ``etag`` is unquoted;
    ``last_modified`` is in epoch seconds. Follows RFC 7232 section 6 as S3 does:
    If-Match (else If-Unmodified-Since) failing gives 412 PreconditionFailed, then
    If-None-Match (else If-Modified-Since) failing gives 304 NotModified.

    With ``copy_source`` the ``x-amz-copy-source-if-*`` headers of CopyObject are read
    instead, and every failure is a 412, as S3 answers them.
    """
    prefix = "x-amz-copy-source-" if copy_source else ""
    # Last-Modified is sent with second precision, so clients echo back whole seconds.
    modified = math.floor(last_modified)

    if_match = _present(headers, prefix + "if-match")
    if if_match is not None:
        if not _matches(if_match, etag, weak=False):
            raise _failed(prefix + "If-Match")
    else:
        since = _date(headers, prefix + "if-unmodified-since")
        if since is not None and modified > since:
            raise _failed(prefix + "If-Unmodified-Since")

    if_none_match = _present(headers, prefix + "if-none-match")
    if if_none_match is not None:
        if _matches(if_none_match, etag, weak=True):
            raise _unchanged(prefix + "If-None-Match", copy_source, etag, modified)
    else:
        since = _date(headers, prefix + "if-modified-since")
        if since is not None and modified <= since:
            raise _unchanged(prefix + "If-Modified-Since", copy_source, etag, modified)


def _present(headers: Mapping[str, str], name: str) -> str | None:
    """The header's value, or None when absent or blank (a blank condition is ignored)."""
    value = headers.get(name)
    if value is None or not value.strip():
        return None
    return value


def _matches(header: str, etag: str, *, weak: bool) -> bool:
    """Whether an If-Match / If-None-Match value names ``etag`` (or is ``*``).

    Quoted and bare tags are accepted (clients often pass S3's ETag unquoted). ``W/``
    tags match only in the weak comparison of If-None-Match (RFC 7232 section 2.3.2).
    Splitting on commas is safe: S3 ETags never contain commas or quotes.
    """
    for item in header.split(","):
        tag = item.strip()
        if tag == "*":
            return True
        is_weak = tag.startswith("W/")
        if is_weak:
            tag = tag[2:]
        if len(tag) >= 2 and tag[0] == tag[-1] == '"':
            tag = tag[1:-1]
        if tag and tag == etag and (weak or not is_weak):
            return True
    return False


def _date(headers: Mapping[str, str], name: str) -> int | None:
    """An HTTP-date header as epoch seconds, or None if absent or not a valid date."""
    value = _present(headers, name)
    if value is None:
        return None
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if parsed.tzinfo is None:
        # "-0000" parses naive; HTTP dates are always GMT.
        parsed = parsed.replace(tzinfo=UTC)
    try:
        return math.floor(parsed.timestamp())
    except (OverflowError, ValueError, OSError):
        return None


def _failed(condition: str) -> S3Error:
    return S3Error("PreconditionFailed", extra={"Condition": condition})


def _unchanged(condition: str, copy_source: bool, etag: str, modified: int) -> S3Error:
    # CopyObject answers every failed source condition with 412, never 304.
    if copy_source:
        return _failed(condition)
    # A 304 carries the validators a 200 would have carried (RFC 7232 section 4.1).
    return S3Error(
        "NotModified",
        headers={"ETag": f'"{etag}"', "Last-Modified": formatdate(modified, usegmt=True)},
    )
