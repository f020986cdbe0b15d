"""Turning the raw request line and headers into bucket, key, query and header maps."""

from __future__ import annotations

from urllib.parse import unquote, unquote_to_bytes

from twisted.web.http_headers import Headers

from s3orchestrator.errors import S3Error

MAX_KEY_BYTES = 1024


def split_path(raw_path: bytes) -> tuple[str | None, str | None]:
    """(bucket, key) of a path-style request path; either may be None."""
    path = raw_path.decode("latin-1")
    if not path.startswith("/"):
        raise S3Error("InvalidURI")
    bucket_part, _, key_part = path[1:].partition("/")
    bucket = unquote(bucket_part) or None
    if not key_part:
        return bucket, None
    # From the wire bytes: a key sent as raw UTF-8 must not be UTF-8 encoded a second time.
    key_bytes = unquote_to_bytes(key_part.encode("latin-1"))
    if len(key_bytes) > MAX_KEY_BYTES:
        raise S3Error("KeyTooLongError", extra={"Size": str(len(key_bytes)), "MaxSizeAllowed": str(MAX_KEY_BYTES)})
    try:
        return bucket, key_bytes.decode("utf-8")
    except UnicodeDecodeError:
        raise S3Error("InvalidURI", "Object keys must be valid UTF-8.") from None


def parse_query(raw_query: bytes) -> dict[str, str]:
    """Query parameters, percent-decoded (a literal '+' stays '+'); the first value wins."""
    query: dict[str, str] = {}
    for item in raw_query.decode("latin-1").split("&"):
        if not item:
            continue
        name, _, value = item.partition("=")
        query.setdefault(unquote(name), unquote(value))
    return query


def header_map(headers: Headers) -> dict[str, list[str]]:
    """Lower-case header name -> raw values (latin-1 decoded), in wire order."""
    return {
        name.decode("latin-1").lower(): [value.decode("latin-1") for value in values]
        for name, values in headers.getAllRawHeaders()
    }
