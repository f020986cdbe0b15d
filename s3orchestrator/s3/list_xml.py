"""The ListBucketResult documents of ListObjects (V1) and ListObjectsV2: pure functions.

Built as text rather than with ElementTree: a page holds up to 1000 entries, and
keys need escapes ElementTree does not make (a carriage return must survive the
client's XML parser, which turns a literal one into a newline).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Sequence
from urllib.parse import quote

import attrs

from s3orchestrator.metadata.records import ObjectRecord
from s3orchestrator.s3.xml_output import text

if TYPE_CHECKING:
    from s3orchestrator.s3.listing import ListQuery

XML_DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>\n'
S3_NAMESPACE = "http://s3.amazonaws.com/doc/2006-03-01/"


@attrs.frozen
class Owner:
    """The Owner element of a listing entry."""

    id: str
    display_name: str


def bucket_owner(bucket: str) -> Owner:
    """Who owns the objects of a virtual bucket: the bucket itself, as ListBuckets says."""
    return Owner(id=bucket, display_name=bucket)


def url_encode(value: str) -> str:
    """``encoding-type=url`` as S3 does it (and as the s3-tests suite checks): every
    UTF-8 byte but the unreserved ``A-Z a-z 0-9 - . _ ~`` and ``/`` percent-encoded, a
    space as ``%20`` (never ``+``), so that both a form decoder (botocore's
    unquote_plus, Go's QueryUnescape) and a plain percent-decoder get the key back."""
    return quote(value, safe="/")


def last_modified(epoch_ms: int) -> str:
    """``2026-11-23T10:00:00.000Z`` from milliseconds since the epoch."""
    seconds, millis = divmod(epoch_ms, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


class _Writer:
    """Elements appended as text; ``key`` elements are URL-encoded when asked."""

    def __init__(self, url_encoding: bool) -> None:
        self.parts: list[str] = [XML_DECLARATION, f'<ListBucketResult xmlns="{S3_NAMESPACE}">']
        self._url = url_encoding

    def element(self, name: str, value: str) -> None:
        self.parts.append(f"<{name}>{text(value)}</{name}>")

    def key(self, name: str, value: str) -> None:
        self.parts.append(f"<{name}>{text(url_encode(value) if self._url else value)}</{name}>")

    def boolean(self, name: str, value: bool) -> None:
        self.parts.append(f"<{name}>{'true' if value else 'false'}</{name}>")

    def entries(self, contents: Sequence[ObjectRecord], common_prefixes: Sequence[str], owner: Owner | None) -> None:
        key = (lambda value: text(url_encode(value))) if self._url else text
        owner_element = (
            f"<Owner><ID>{text(owner.id)}</ID><DisplayName>{text(owner.display_name)}</DisplayName></Owner>"
            if owner is not None
            else ""
        )
        # One string per entry: pages hold up to 1000 of them.
        self.parts.extend(
            f"<Contents><Key>{key(record.key)}</Key>"
            f"<LastModified>{last_modified(record.last_modified_ms)}</LastModified>"
            f"<ETag>&quot;{text(record.etag)}&quot;</ETag><Size>{record.size}</Size>{owner_element}"
            "<StorageClass>STANDARD</StorageClass></Contents>"
            for record in contents
        )
        self.parts.extend(
            f"<CommonPrefixes><Prefix>{key(prefix)}</Prefix></CommonPrefixes>" for prefix in common_prefixes
        )

    def common_head(self, query: ListQuery) -> None:
        self.parts.append(f"<MaxKeys>{query.max_keys}</MaxKeys>")
        if query.delimiter:
            self.key("Delimiter", query.delimiter)
        if query.url_encoding:
            self.element("EncodingType", "url")

    def document(self) -> bytes:
        self.parts.append("</ListBucketResult>")
        return "".join(self.parts).encode("utf-8")


def list_objects_v1(
    bucket: str,
    query: ListQuery,
    contents: Sequence[ObjectRecord],
    common_prefixes: Sequence[str],
    is_truncated: bool,
    next_marker: str | None,
    owner: Owner,
) -> bytes:
    """ListObjects' ListBucketResult; every entry has an Owner (V1 always sends one)."""
    writer = _Writer(query.url_encoding)
    writer.element("Name", bucket)
    writer.key("Prefix", query.prefix)
    writer.key("Marker", query.marker or "")
    if next_marker is not None:
        writer.key("NextMarker", next_marker)
    writer.common_head(query)
    writer.boolean("IsTruncated", is_truncated)
    writer.entries(contents, common_prefixes, owner)
    return writer.document()


def list_objects_v2(
    bucket: str,
    query: ListQuery,
    contents: Sequence[ObjectRecord],
    common_prefixes: Sequence[str],
    is_truncated: bool,
    next_token: str | None,
    owner: Owner | None,
) -> bytes:
    """ListObjectsV2's ListBucketResult; entries have an Owner when ``owner`` is given."""
    writer = _Writer(query.url_encoding)
    writer.element("Name", bucket)
    writer.key("Prefix", query.prefix)
    if query.start_after is not None:
        writer.key("StartAfter", query.start_after)
    if query.continuation_token is not None:
        writer.element("ContinuationToken", query.continuation_token)
    if next_token is not None:
        writer.element("NextContinuationToken", next_token)
    writer.parts.append(f"<KeyCount>{len(contents) + len(common_prefixes)}</KeyCount>")
    writer.common_head(query)
    writer.boolean("IsTruncated", is_truncated)
    writer.entries(contents, common_prefixes, owner)
    return writer.document()
