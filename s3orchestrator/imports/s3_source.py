"""What an upstream S3 bucket holds, for an import: ListObjectsV2 pages in key order,
then a HEAD of each object (a listing has no content type nor user metadata), a few
at a time.

Keys are listed with ``encoding-type=url`` (a key may hold characters XML 1.0 cannot
carry), which AWS answers form-encoded (a space is ``+``, a plus ``%2B``) as botocore
decodes it; an upstream that ignores it sends them as they are, which its answer says.
"""

from __future__ import annotations

from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any, AsyncIterator, Callable
from urllib.parse import unquote_plus
from xml.etree import ElementTree

import attrs
from twisted.internet.defer import Deferred, DeferredSemaphore, FirstError, ensureDeferred, gatherResults
from twisted.web.client import readBody

from s3orchestrator.auth.sigv4 import uri_encode
from s3orchestrator.config import S3StoreConfig
from s3orchestrator.imports.areas import area_of, counted_skips, skip_reason
from s3orchestrator.imports.batch import Batch
from s3orchestrator.metadata.imports import FoundObject
from s3orchestrator.metadata.traffic import Traffic
from s3orchestrator.s3.headers import DEFAULT_CONTENT_TYPE, STORED_HEADERS, USER_METADATA_PREFIX
from s3orchestrator.stores.interface import StoreUnavailable
from s3orchestrator.stores.s3 import S3Store
from s3orchestrator.stores.s3_exchange import Exchange
from s3orchestrator.stores.s3_http import request_target

#: Keys per listing page, and so per batch recorded.
PAGE_SIZE = 100
#: HEAD requests in flight at once, per import.
HEAD_CONCURRENCY = 8
_LIST = Traffic(requests_a=1)
_HEAD = Traffic(requests_b=1)


@attrs.frozen
class Listed:
    """One object of a listing page."""

    key: str
    size: int
    etag: str
    last_modified_ms: int


@attrs.frozen
class Page:
    """A listing page: its objects, and the token of the next page (None: the last)."""

    objects: tuple[Listed, ...]
    next_token: str | None
    undecodable: int = 0


def _local(element: ElementTree.Element) -> str:
    return element.tag.rpartition("}")[2]


def _child(element: ElementTree.Element, name: str) -> str | None:
    for child in element:
        if _local(child) == name:
            return child.text or ""
    return None


def parse_page(body: bytes) -> Page:
    """A ListObjectsV2 answer; ValueError if it is not one."""
    text = body.decode("utf-8")
    if "<!DOCTYPE" in text or "<!ENTITY" in text:
        raise ValueError("a listing with a document type declaration")
    try:
        root = ElementTree.fromstring(text)
    except ElementTree.ParseError as error:
        raise ValueError(f"a listing that is not XML: {error}") from None
    if _local(root) != "ListBucketResult":
        raise ValueError(f"a {_local(root)} document instead of a listing")
    encoded = (_child(root, "EncodingType") or "").lower() == "url"
    objects = []
    undecodable = 0
    for contents in root:
        if _local(contents) != "Contents":
            continue
        key = _child(contents, "Key") or ""
        if encoded:
            try:
                key = unquote_plus(key, errors="strict")
            except UnicodeDecodeError:
                undecodable += 1
                continue
        modified = _child(contents, "LastModified") or ""
        objects.append(Listed(
            key=key,
            size=int(_child(contents, "Size") or "0"),
            etag=(_child(contents, "ETag") or "").strip('"'),
            last_modified_ms=int(datetime.fromisoformat(modified.replace("Z", "+00:00")).timestamp() * 1000),
        ))
    truncated = (_child(root, "IsTruncated") or "").lower() == "true"
    token = _child(root, "NextContinuationToken") if truncated else None
    if truncated and not token:
        raise ValueError("a truncated listing without NextContinuationToken")
    return Page(tuple(objects), token, undecodable)


async def list_page(store: S3Store, prefix: str, start_after: str, token: str | None) -> Page:
    """One ListObjectsV2 page of ``store``'s bucket, of keys under ``prefix``: after
    ``start_after``, or from ``token``."""
    parameters = {"encoding-type": "url", "list-type": "2", "max-keys": str(PAGE_SIZE), "prefix": prefix}
    if token is not None:
        parameters["continuation-token"] = token
    elif start_after:
        parameters["start-after"] = start_after
    query = "&".join(f"{name}={uri_encode(value, encode_slash=True)}" for name, value in sorted(parameters.items()))
    exchange = Exchange(store, "ListObjectsV2", None)
    response = await exchange.request("GET", request_target(store.config, None, query))
    if response.code != 200:
        raise await exchange.error(response)
    exchange.watchdog.disarm()
    body = await readBody(response).addTimeout(store.config.timeout, store.reactor)
    try:
        page = parse_page(body)
    except (ValueError, UnicodeDecodeError) as error:
        failure = StoreUnavailable(f"store {store.name}: ListObjectsV2 answered {error}")
        exchange.log(200, failure)
        raise failure from None
    exchange.log(200, size=len(body))
    return page


async def head_object(store: S3Store, listed: Listed) -> FoundObject | None:
    """What a HEAD says of a listed object (content type, headers, user metadata; size
    and ETag as they are now); None if it is gone."""
    exchange = Exchange(store, "HEAD", listed.key)
    response = await exchange.request("HEAD", request_target(store.config, listed.key))
    await exchange.read_small(response)
    if response.code == 404:
        exchange.record(404)
        return None
    if response.code != 200:
        error = await exchange.error(response)
        raise error
    exchange.log(200)
    headers: dict[str, str] = {}
    for name, values in response.headers.getAllRawHeaders():
        headers[name.decode("latin-1").lower()] = values[0].decode("latin-1")
    etag = headers.get("etag", listed.etag).strip('"')
    last_modified_ms = listed.last_modified_ms
    if etag != listed.etag and "last-modified" in headers:
        last_modified_ms = int(parsedate_to_datetime(headers["last-modified"]).timestamp() * 1000)
    return FoundObject(
        key=listed.key,
        location=listed.key,
        area=area_of(listed.key),
        size=int(headers.get("content-length", listed.size)),
        etag=etag,
        content_type=headers.get("content-type") or DEFAULT_CONTENT_TYPE,
        last_modified_ms=last_modified_ms,
        headers={name: headers[name] for name in STORED_HEADERS if name in headers},
        user_metadata={name.removeprefix(USER_METADATA_PREFIX): value for name, value in headers.items()
                       if name.startswith(USER_METADATA_PREFIX)},
    )


class S3Source:
    """The objects of an upstream S3 store's bucket under a prefix, in key order.

    Requests go through a client of its own (its own connections, closed by ``close``);
    ``count`` hears of each as the store's traffic.
    """

    def __init__(
        self, config: S3StoreConfig, reactor: Any, own: frozenset[str],
        count: Callable[[str, Traffic], None] | None = None,
    ) -> None:
        self.config = config
        self.store = S3Store(config, reactor)
        self.own = own
        self._count = count
        self._heads = DeferredSemaphore(HEAD_CONCURRENCY)

    def _counted(self, traffic: Traffic) -> None:
        if self._count is not None:
            self._count(self.config.name, traffic)

    def _head(self, listed: Listed) -> Deferred[FoundObject | None]:
        return ensureDeferred(head_object(self.store, listed))

    async def batches(self, prefix: str, after: str) -> AsyncIterator[Batch]:
        """One batch per listing page, from the first key after ``after``."""
        token: str | None = None
        while True:
            self._counted(_LIST)
            page = await list_page(self.store, prefix, after, token)
            if not page.objects:
                return
            reasons = [skip_reason(self.config, listed.key, self.own) for listed in page.objects]
            wanted = [listed for listed, reason in zip(page.objects, reasons, strict=True) if reason is None]
            for _ in wanted:
                self._counted(_HEAD)
            try:
                results = await gatherResults(
                    [self._heads.run(self._head, listed) for listed in wanted],
                    consumeErrors=True,
                )
            except FirstError as error:
                error.subFailure.raiseException()
            found = [result for result in results if result is not None]
            skipped = counted_skips(reasons) + len(wanted) - len(found) + page.undecodable
            yield Batch(found, skipped, page.objects[-1].key)
            if page.next_token is None:
                return
            token = page.next_token

    async def close(self) -> None:
        """Close the client's connections."""
        await self.store.stop()

