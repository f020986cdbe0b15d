"""Which request headers S3 stores with an object, and how they come back on GET/HEAD."""

from __future__ import annotations

from email.utils import formatdate
from typing import Mapping, Sequence

from s3orchestrator.errors import S3Error
from s3orchestrator.metadata.records import ObjectRecord
from s3orchestrator.s3.call import first_header

DEFAULT_CONTENT_TYPE = "binary/octet-stream"
STORED_HEADERS = (
    "cache-control",
    "content-disposition",
    "content-encoding",
    "content-language",
    "expires",
)
USER_METADATA_PREFIX = "x-amz-meta-"
# S3 limits the user-defined metadata of an object to 2 KB (names plus values).
MAX_USER_METADATA_BYTES = 2048
# GET may override these response headers with response-<name> query parameters.
RESPONSE_OVERRIDES = {
    "response-cache-control": "Cache-Control",
    "response-content-disposition": "Content-Disposition",
    "response-content-encoding": "Content-Encoding",
    "response-content-language": "Content-Language",
    "response-content-type": "Content-Type",
    "response-expires": "Expires",
}
_DISPLAY_NAMES = {
    "cache-control": "Cache-Control",
    "content-disposition": "Content-Disposition",
    "content-encoding": "Content-Encoding",
    "content-language": "Content-Language",
    "expires": "Expires",
}


def content_type(headers: Mapping[str, Sequence[str]]) -> str:
    """The Content-Type to store: the client's, or S3's default."""
    return first_header(headers, "content-type") or DEFAULT_CONTENT_TYPE


def stored_headers(headers: Mapping[str, Sequence[str]]) -> dict[str, str]:
    """The standard headers S3 keeps with an object, from a PUT's request headers."""
    kept = {}
    for name in STORED_HEADERS:
        value = first_header(headers, name)
        if name == "content-encoding" and value is not None:
            # aws-chunked is the upload's transfer framing, not the object's encoding.
            codings = [c.strip() for c in value.split(",") if c.strip().lower() != "aws-chunked"]
            value = ", ".join(codings) or None
        if value is not None:
            kept[name] = value
    return kept


def user_metadata(headers: Mapping[str, Sequence[str]]) -> dict[str, str]:
    """x-amz-meta-* values by lower-case suffix; MetadataTooLarge past S3's 2 KB."""
    metadata = {
        name[len(USER_METADATA_PREFIX):]: ",".join(values)
        for name, values in headers.items()
        if name.startswith(USER_METADATA_PREFIX)
    }
    size = sum(len(k.encode("latin-1")) + len(v.encode("latin-1")) for k, v in metadata.items())
    if size > MAX_USER_METADATA_BYTES:
        raise S3Error(
            "MetadataTooLarge",
            extra={"Size": str(size), "MaxSizeAllowed": str(MAX_USER_METADATA_BYTES)},
        )
    return metadata


def http_date(epoch_seconds: float) -> str:
    """An RFC 7231 date (Last-Modified) for an epoch time."""
    return formatdate(epoch_seconds, usegmt=True)


def quoted_etag(etag: str) -> str:
    """The ETag header value of an unquoted stored ETag."""
    return f'"{etag}"'


def object_headers(record: ObjectRecord, query: Mapping[str, str]) -> list[tuple[str, str]]:
    """Headers describing ``record`` on GET/HEAD, with response-* overrides applied."""
    headers = {
        "Content-Type": record.content_type,
        "ETag": quoted_etag(record.etag),
        "Last-Modified": http_date(record.last_modified_ms / 1000),
        "Accept-Ranges": "bytes",
    }
    for name, value in record.headers.items():
        headers[_DISPLAY_NAMES.get(name, name)] = value
    for parameter, header in RESPONSE_OVERRIDES.items():
        if parameter in query:
            headers[header] = query[parameter]
    result = list(headers.items())
    result.extend((USER_METADATA_PREFIX + name, value) for name, value in record.user_metadata.items())
    return result
