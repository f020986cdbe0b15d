"""Multipart uploads to an upstream S3 store: Create, UploadPart, Complete and Abort.

A part streams exactly like a PutObject (``S3Write``, every payload mode), to
``<location>?partNumber=N&uploadId=ID``; the upstream's ETag for it is what
Complete is given back. Complete is like a CopyObject (``ResultWrite``): S3
answers 200 at once, then sends whitespace while it joins the parts, and may
end with an ``<Error>`` rather than the result.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Sequence
from xml.etree.ElementTree import Element, SubElement, tostring

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IConsumer
from twisted.web.iweb import IBodyProducer, IResponse
from zope.interface import implementer

from s3orchestrator.auth.sigv4 import uri_encode
from s3orchestrator.stores.interface import IPartWrite, ObjectMissing, StoredPart, StoreUnavailable
from s3orchestrator.stores.s3_errors import (
    MAX_ERROR_BODY,
    error_for_status,
    local_name,
    parse_error_code,
    parse_upstream_xml,
)
from s3orchestrator.stores.s3_exchange import Exchange
from s3orchestrator.stores.s3_http import CappedBody, SilenceWatchdog, Target, request_target
from s3orchestrator.stores.s3_write import ResultWrite, S3Write

if TYPE_CHECKING:
    from s3orchestrator.stores.s3 import S3Store

__all__ = [
    "S3Complete", "S3PartWrite", "abort_upload", "complete_document", "create_upload", "upload_query",
]

S3_XMLNS = "http://s3.amazonaws.com/doc/2006-03-01/"
_XML_SPACE = b" \t\r\n"
# An XML declaration (or processing instruction) longer than this is not skipped.
_MAX_PROLOGUE = 1024


def upload_query(upload_id: str, part_number: int | None = None) -> str:
    """The query naming an upload (or one of its parts), encoded and ordered as SigV4's canonical form."""
    encoded = uri_encode(upload_id.encode("utf-8"), encode_slash=True)
    part = "" if part_number is None else f"partNumber={part_number}&"
    return f"{part}uploadId={encoded}"


def complete_document(parts: Sequence[StoredPart]) -> bytes:
    """The body of a CompleteMultipartUpload naming ``parts`` (number and quoted ETag), in that order."""
    root = Element("CompleteMultipartUpload", xmlns=S3_XMLNS)
    for part in parts:
        element = SubElement(root, "Part")
        SubElement(element, "PartNumber").text = str(part.number)
        SubElement(element, "ETag").text = f'"{part.store_etag}"'
    return tostring(root, encoding="utf-8")


def _upload_id(body: bytes) -> str | None:
    """The ``<UploadId>`` of an ``<InitiateMultipartUploadResult>``, or None."""
    root = parse_upstream_xml(body)
    if root is None or local_name(root) != "InitiateMultipartUploadResult":
        return None
    for element in root:
        if local_name(element) == "UploadId":
            return (element.text or "").strip() or None
    return None


async def create_upload(store: S3Store, location: str) -> str:
    """CreateMultipartUpload: ``POST <location>?uploads``; the UploadId it answers."""
    exchange = Exchange(store, "CreateMultipartUpload", location)
    response = await exchange.request("POST", request_target(store.config, location, "uploads="))
    if response.code != 200:
        raise await exchange.error(response)
    upload_id = _upload_id(await exchange.read_small(response))
    if upload_id is None:
        error = StoreUnavailable(f"store {store.name}: CreateMultipartUpload answered 200 without an UploadId")
        exchange.log(response.code, error)
        raise error
    exchange.log(response.code)
    return upload_id


async def abort_upload(store: S3Store, location: str, upload_id: str) -> None:
    """AbortMultipartUpload: ``DELETE <location>?uploadId=ID``; an upload that no longer exists is fine."""
    exchange = Exchange(store, "AbortMultipartUpload", location)
    response = await exchange.request("DELETE", request_target(store.config, location, upload_query(upload_id)))
    code = parse_error_code(await exchange.read_small(response))
    if response.code in (200, 204) or (response.code == 404 and code != "NoSuchBucket"):
        exchange.log(response.code)
        return
    error = error_for_status(store.name, exchange.operation, response.code, code, location)
    exchange.log(response.code, error)
    raise error


@implementer(IPartWrite)
class S3PartWrite(S3Write):
    """One UploadPart: a PUT of the client's body (as S3Write) to ``<location>?partNumber=N&uploadId=ID``.

    ``done`` fires once the upstream answered 2xx with an ETag, ``store_etag``
    (unquoted). The part then replaced any earlier one with its number; ``abort``
    after ``done`` does nothing: a part cannot be deleted alone (it goes with
    the upload, completed or aborted). NoSuchUpload is ObjectMissing.
    """

    _operation = "UploadPart"

    def __init__(
        self, store: S3Store, location: str, upload_id: str, part_number: int, body: IBodyProducer, length: int
    ) -> None:
        super().__init__(store, location, body, length)
        self._query = upload_query(upload_id, part_number)

    @property
    def store_etag(self) -> str | None:
        """The upstream's ETag of the part, unquoted (None before ``done``)."""
        return self._etag

    def _target(self) -> Target:
        return request_target(self._store.config, self._location, self._query)

    async def _answer_error(self, response: IResponse) -> Exception:
        exchange = self._exchange
        code = parse_error_code(await exchange.read_small(response))
        if code == "NoSuchUpload":  # aborted, completed or expired: not the store's fault
            missing = ObjectMissing(self._location)
            exchange.record(response.code, missing)
            return missing
        error = error_for_status(self._store.name, exchange.operation, response.code, code, self._location)
        exchange.log(response.code, error)
        return error

    def _delete(self) -> None:
        """Never: the object at the location is not this part's (and a part cannot be deleted alone)."""


class S3Complete(ResultWrite):
    """One CompleteMultipartUpload: ``POST <location>?uploadId=ID`` naming the parts.

    The joined object is visible once ``done`` fires (staged is False) and
    ``abort`` after ``done`` deletes it. ``done`` fires only on a 200 whose body
    is a ``<CompleteMultipartUploadResult>`` (see ResultWrite); NoSuchUpload,
    InvalidPart and InvalidPartOrder (the upload or its parts are not what we
    think) are ObjectMissing, EntityTooSmall and other 4xx StoreMisconfigured.
    Part sizes are not checked: an upstream knows a part by its ETag.

    The whitespace an upstream sends while it works keeps the request alive and
    does not count against the size cap of the result (ResultBody).
    """

    _result = "CompleteMultipartUploadResult"
    _missing_codes = frozenset({"NoSuchUpload", "InvalidPart", "InvalidPartOrder"})

    def __init__(self, store: S3Store, location: str, upload_id: str, parts: Sequence[StoredPart]) -> None:
        super().__init__(store, location, "CompleteMultipartUpload", sum(part.size for part in parts))
        self._query = upload_query(upload_id)
        self._document = complete_document(parts)

    async def _send(self) -> None:
        store, exchange, document = self._store, self._exchange, self._document
        response = await exchange.request(
            "POST", request_target(store.config, self._location, self._query), {},
            hashlib.sha256(document).hexdigest(), lambda _date, _seed: DocumentBody(document),
        )
        await self._check_answer(response)
        self._stored = True
        exchange.log(response.code, size=self._length)

    async def _read_result(self, response: IResponse) -> bytes:
        exchange = self._exchange
        protocol = ResultBody(MAX_ERROR_BODY, exchange.watchdog)
        exchange.watchdog.arm()
        response.deliverBody(protocol)
        exchange.on_silence = protocol.stop
        try:
            body = await protocol.done
        finally:
            exchange.on_silence = None
            exchange.watchdog.disarm()
        if exchange.watchdog.fired:
            error = exchange.timeout_error()
            exchange.log(response.code, error)
            raise error
        return body


@implementer(IBodyProducer)
class DocumentBody:
    """A small request body held in memory (an XML document), written at once."""

    def __init__(self, data: bytes) -> None:
        self.length = len(data)
        self._data = data

    def startProducing(self, consumer: IConsumer) -> Deferred[None]:
        consumer.write(self._data)
        return succeed(None)

    def pauseProducing(self) -> None:
        """Nothing to pause: every byte is written already."""

    def resumeProducing(self) -> None:
        """Nothing to resume."""

    def stopProducing(self) -> None:
        """Nothing to stop."""


class ResultBody(CappedBody):
    """A CappedBody for a result document that follows an early 200: leading whitespace
    (sent while the upstream works, as AWS does) and an XML declaration are skipped,
    so they count as progress for the watchdog but not against the cap.

    ``done`` fires with the bytes from the document's first element on; cancelling
    it stops reading (and drops the connection).
    """

    def __init__(self, cap: int, watchdog: SilenceWatchdog | None = None) -> None:
        super().__init__(cap, watchdog)
        self.done: Deferred[bytes] = Deferred(lambda _: self.stop())
        self._head = b""
        self._started = False

    def dataReceived(self, data: bytes) -> None:
        if self._started:
            super().dataReceived(data)
            return
        if self._watchdog is not None:
            self._watchdog.progress()
        head = (self._head + data).lstrip(_XML_SPACE)
        while head.startswith(b"<?") and b"?>" in head:
            head = head.partition(b"?>")[2].lstrip(_XML_SPACE)
        if head in (b"", b"<") or (head.startswith(b"<?") and len(head) <= _MAX_PROLOGUE):
            self._head = head  # nothing but whitespace yet, or a declaration not complete
            return
        self._head, self._started = b"", True
        super().dataReceived(head)
