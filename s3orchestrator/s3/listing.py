"""ListObjects (V1) and ListObjectsV2 from metadata: parameters, tokens, pages.

A listing is a sequence of *items* in byte order: the keys under ``prefix``,
except that every key holding ``delimiter`` after the prefix is rolled up into
its common prefix (the key up to and including that first delimiter). A page is
the first ``max-keys`` items greater than the marker (V1 ``marker``, V2
``start-after`` or the key or common prefix a continuation token names), so a
common prefix at or before the marker is never repeated, which is also what
lets a V1 client pass a common prefix back as ``marker``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from typing import Callable, Generic, Mapping, Protocol, Sequence, TypeVar

import attrs

from s3orchestrator.errors import S3Error
from s3orchestrator.metadata.interface import IMetadataStore, prefix_upper_bound
from s3orchestrator.metadata.records import ObjectRecord
from s3orchestrator.s3 import list_xml
from s3orchestrator.s3.call import S3Call, S3Response

DEFAULT_MAX_KEYS = 1000
MAX_KEYS_CAP = 1000
_MAX_KEYS_LIMIT = 2**31 - 1  # S3 parses max-keys as a signed 32-bit integer
_DIGITS = re.compile(r"[0-9]+")
_BASE64URL = re.compile(r"[A-Za-z0-9_-]*")
# With a delimiter, the rows after a common prefix's first key are skipped: start
# with a small batch and adapt (see list_page), so a page of 1000 common prefixes
# of 1000 keys each reads a few thousand rows, not a million.
FIRST_DELIMITED_BATCH = 32


class _Keyed(Protocol):
    @property
    def key(self) -> str:
        ...


R = TypeVar("R", bound=_Keyed)
#: ``fetch(start, inclusive, limit)``: up to ``limit`` rows under the listing's prefix
#: whose key is > ``start`` (>= when ``inclusive``), in key order.
Fetch = Callable[[str, bool, int], Sequence[R]]


@attrs.frozen
class Page(Generic[R]):
    """One page: its objects and common prefixes, and where the next page starts.

    ``last`` is the greatest item (key or common prefix) of the page, None if empty.
    """

    contents: tuple[R, ...]
    common_prefixes: tuple[str, ...]
    is_truncated: bool
    last: str | None

    @property
    def key_count(self) -> int:
        """Objects plus common prefixes (V2's KeyCount)."""
        return len(self.contents) + len(self.common_prefixes)


def common_prefix(key: str, prefix: str, delimiter: str) -> str | None:
    """The common prefix ``key`` rolls up into, or None if it is listed itself."""
    if not delimiter:
        return None
    position = key.find(delimiter, len(prefix))
    return None if position < 0 else key[: position + len(delimiter)]


def list_page(fetch: Fetch[R], prefix: str, delimiter: str, after: str, max_keys: int) -> Page[R]:
    """The first ``max_keys`` items greater than ``after``, read through ``fetch``.

    Rows under a common prefix are never walked: once a common prefix is seen,
    the scan seeks to the first key past every key that starts with it.
    """
    if max_keys <= 0:
        return Page((), (), False, None)
    wanted = max_keys + 1  # one more item than the page tells whether it is truncated
    items: list[tuple[str, R | None]] = []
    start, inclusive = after, False
    batch = min(wanted, FIRST_DELIMITED_BATCH) if delimiter else wanted
    while len(items) < wanted:
        limit = min(batch, wanted - len(items))
        rows = fetch(start, inclusive, limit)
        seek_to: str | None = None
        skipped = 0
        finished = len(rows) < limit
        for row in rows:
            key = row.key
            if seek_to is not None:
                if key < seek_to:
                    skipped += 1
                    continue
                seek_to = None
            rolled_up = common_prefix(key, prefix, delimiter)
            if rolled_up is None:
                items.append((key, row))
            else:
                # A key past ``after`` may still roll up into a common prefix at or
                # before it (``after`` was that prefix, or a key under it).
                if rolled_up > after:
                    items.append((rolled_up, None))
                bound = prefix_upper_bound(rolled_up)
                if bound is None:
                    finished = True
                    break
                seek_to = bound
            if len(items) >= wanted:
                break
        if finished or len(items) >= wanted:
            break
        if seek_to is not None:
            start, inclusive = seek_to, True
        else:
            start, inclusive = rows[-1].key, False
        # Rows skipped inside a common prefix were wasted: read fewer next time;
        # rows that all became items: read more.
        batch = max(1, batch // 2) if skipped else min(batch * 2, wanted)
    truncated = len(items) > max_keys
    shown = items[:max_keys]
    return Page(
        contents=tuple(row for _, row in shown if row is not None),
        common_prefixes=tuple(value for value, row in shown if row is None),
        is_truncated=truncated,
        last=shown[-1][0] if shown else None,
    )


class ContinuationTokens:
    """Opaque V2 continuation tokens: the bucket and the last item of a page,
    authenticated with HMAC-SHA256 under a secret of this daemon."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 16:
            raise ValueError("the continuation token secret must be at least 16 bytes")
        self._secret = secret

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._secret, b"s3orchestrator continuation token\0" + payload, hashlib.sha256).digest()

    def issue(self, bucket: str, last: str) -> str:
        """A token that resumes a listing of ``bucket`` after the item ``last``."""
        payload = json.dumps({"v": 1, "b": bucket, "k": last}, ensure_ascii=False, separators=(",", ":"))
        encoded = payload.encode("utf-8")
        return _b64encode(encoded) + "." + _b64encode(self._mac(encoded))

    def redeem(self, bucket: str, token: str) -> str:
        """The item a token of ``bucket`` resumes after; InvalidArgument for any other token."""
        payload_part, dot, mac_part = token.partition(".")
        try:
            payload = _b64decode(payload_part)
            mac = _b64decode(mac_part)
        except (binascii.Error, ValueError):
            raise _bad_token() from None
        if not dot or not hmac.compare_digest(mac, self._mac(payload)):
            raise _bad_token()
        try:
            value = json.loads(payload.decode("utf-8"))
        except ValueError:
            raise _bad_token() from None
        if (
            not isinstance(value, dict)
            or value.get("v") != 1
            or value.get("b") != bucket
            or not isinstance(value.get("k"), str)
        ):
            raise _bad_token()
        return value["k"]


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _b64decode(text: str) -> bytes:
    if not _BASE64URL.fullmatch(text):
        raise ValueError("not unpadded base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _bad_token() -> S3Error:
    return S3Error(
        "InvalidArgument",
        "The continuation token provided is incorrect",
        extra={"ArgumentName": "continuation-token"},
    )


@attrs.frozen
class ListQuery:
    """The parameters of one list call, validated; ``after`` is where its page starts."""

    prefix: str
    delimiter: str  # "" = none
    max_keys: int
    url_encoding: bool
    after: str
    marker: str | None = None  # V1, as sent
    start_after: str | None = None  # V2, as sent
    continuation_token: str | None = None  # V2, as sent
    fetch_owner: bool = False


def parse_max_keys(value: str | None) -> int:
    """max-keys: default 1000, larger values capped at 1000; InvalidArgument if not 0..2^31-1."""
    if value is None:
        return DEFAULT_MAX_KEYS
    if value.startswith("-") and _DIGITS.fullmatch(value[1:]):
        raise S3Error(
            "InvalidArgument",
            "Argument maxKeys must be an integer between 0 and 2147483647",
            extra={"ArgumentName": "maxKeys", "ArgumentValue": value},
        )
    if not _DIGITS.fullmatch(value) or int(value) > _MAX_KEYS_LIMIT:
        raise S3Error(
            "InvalidArgument",
            "Provided max-keys not an integer or within integer range",
            extra={"ArgumentName": "max-keys", "ArgumentValue": value},
        )
    return min(int(value), MAX_KEYS_CAP)


def parse_encoding_type(value: str | None) -> bool:
    """Whether keys are URL-encoded in the response (``encoding-type=url``)."""
    if value is None:
        return False
    if value != "url":
        raise S3Error(
            "InvalidArgument",
            "Invalid Encoding Method specified in Request",
            extra={"ArgumentName": "encoding-type", "ArgumentValue": value},
        )
    return True


def parse_list_query(query: Mapping[str, str], v2: bool, bucket: str, tokens: ContinuationTokens) -> ListQuery:
    """Validate the query parameters of a ListObjects (``v2=False``) or ListObjectsV2 call."""
    prefix = query.get("prefix", "")
    delimiter = query.get("delimiter", "")
    max_keys = parse_max_keys(query.get("max-keys"))
    url_encoding = parse_encoding_type(query.get("encoding-type"))
    if not v2:
        marker = query.get("marker")
        return ListQuery(prefix, delimiter, max_keys, url_encoding, after=marker or "", marker=marker, fetch_owner=True)
    start_after = query.get("start-after")
    # S3 takes an empty continuation-token for none (SDKs send one when a caller
    # passes the empty NextContinuationToken of a last page back).
    token = query.get("continuation-token") or None
    if token is not None:
        after = tokens.redeem(bucket, token)
    else:
        after = start_after or ""
    return ListQuery(
        prefix,
        delimiter,
        max_keys,
        url_encoding,
        after=after,
        start_after=start_after,
        continuation_token=token,
        fetch_owner=query.get("fetch-owner", "").lower() == "true",
    )


_XML_HEADERS = (("Content-Type", "application/xml"),)


class ListingOperations:
    """ListObjects and ListObjectsV2 over the metadata store (no object store is asked).

    ``token_secret`` authenticates V2 continuation tokens; tokens stay valid as
    long as it does (it is derived from the configured secrets: until they change).
    """

    def __init__(self, metadata: IMetadataStore, token_secret: bytes) -> None:
        self._metadata = metadata
        self._tokens = ContinuationTokens(token_secret)

    def set_token_secret(self, token_secret: bytes) -> None:
        """Authenticate continuation tokens with a new secret (after a reload changed the
        credentials); tokens issued before stop being accepted."""
        self._tokens = ContinuationTokens(token_secret)

    async def _page(self, bucket: str, query: ListQuery) -> Page[ObjectRecord]:
        if query.max_keys == 0:
            return Page((), (), False, None)

        def scan(fetch: Fetch[ObjectRecord]) -> Page[ObjectRecord]:
            return list_page(fetch, query.prefix, query.delimiter, query.after, query.max_keys)

        return await self._metadata.scan_objects(bucket, query.prefix, scan)

    async def list_objects(self, call: S3Call) -> S3Response:
        """ListObjects (V1): ``marker``; NextMarker only with a delimiter (S3's rule)."""
        bucket = call.bucket
        assert bucket is not None
        query = parse_list_query(call.query, False, bucket, self._tokens)
        page = await self._page(bucket, query)
        next_marker = page.last if page.is_truncated and query.delimiter else None
        body = list_xml.list_objects_v1(
            bucket, query, page.contents, page.common_prefixes, page.is_truncated, next_marker,
            list_xml.bucket_owner(bucket),
        )
        return S3Response(200, _XML_HEADERS, body)

    async def list_objects_v2(self, call: S3Call) -> S3Response:
        """ListObjectsV2: ``start-after``, ``continuation-token``, ``fetch-owner``, KeyCount."""
        bucket = call.bucket
        assert bucket is not None
        query = parse_list_query(call.query, True, bucket, self._tokens)
        page = await self._page(bucket, query)
        next_token = self._tokens.issue(bucket, page.last) if page.is_truncated and page.last is not None else None
        owner = list_xml.bucket_owner(bucket) if query.fetch_owner else None
        body = list_xml.list_objects_v2(
            bucket, query, page.contents, page.common_prefixes, page.is_truncated, next_token, owner,
        )
        return S3Response(200, _XML_HEADERS, body)
