"""CopyObject within one virtual bucket: server-side within a store, streamed across stores."""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

import attrs
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IConsumer, IProducer, IReactorTime
from twisted.web.iweb import IBodyProducer
from zope.interface import implementer

from s3orchestrator.errors import S3Error
from s3orchestrator.metadata.records import ObjectRecord
from s3orchestrator.s3 import headers as s3_headers
from s3orchestrator.s3 import xml_output
from s3orchestrator.s3.call import S3Call, S3Response
from s3orchestrator.s3.conditions import check_preconditions
from s3orchestrator.s3.keys import check_key
from s3orchestrator.s3.objects import ObjectOperations
from s3orchestrator.s3.timestamps import iso8601
from s3orchestrator.stores.interface import IObjectReader, IObjectWrite

COPY_SOURCE_CONDITIONS = (
    "x-amz-copy-source-if-match",
    "x-amz-copy-source-if-none-match",
    "x-amz-copy-source-if-modified-since",
    "x-amz-copy-source-if-unmodified-since",
)


def parse_copy_source(value: str) -> tuple[str, str]:
    """(bucket, key) of an ``x-amz-copy-source`` header (URL-encoded, leading slash optional)."""
    path, _, query = value.partition("?")
    if query.startswith("versionId="):
        raise S3Error("NotImplemented", "Object versions are not supported.")
    bucket, _, key = unquote(path).lstrip("/").partition("/")
    if not bucket or not key:
        raise S3Error("InvalidArgument", "Copy Source must mention the source bucket and key: sourcebucket/sourcekey",
                      extra={"ArgumentName": "x-amz-copy-source", "ArgumentValue": value})
    check_key(key, "x-amz-copy-source")
    return bucket, key


async def copy_source_record(objects: ObjectOperations, call: S3Call) -> ObjectRecord:
    """The object ``x-amz-copy-source`` names, in the caller's bucket, its
    ``x-amz-copy-source-if-*`` conditions checked (CopyObject, UploadPartCopy)."""
    source_bucket, source_key = parse_copy_source(call.header("x-amz-copy-source") or "")
    if source_bucket != call.bucket:
        raise S3Error("AccessDenied", "Cross-bucket copy is not supported: source and destination must be "
                      "in the same bucket.")
    source = await objects.record(source_bucket, source_key)
    if source is None:
        raise S3Error("NoSuchKey", extra={"Key": source_key})
    conditions = {name: value for name in COPY_SOURCE_CONDITIONS if (value := call.header(name)) is not None}
    if conditions:
        check_preconditions(conditions, source.etag, source.last_modified_ms / 1000, copy_source=True)
    return source


@implementer(IBodyProducer)
class ReaderBody:
    """An object being read from one store, as the body of a write to another."""

    def __init__(self, reader: IObjectReader, clock: IReactorTime) -> None:
        self.length = reader.length
        self._reader = reader
        self._clock = clock
        self._producer: Any = None
        self._pull = False
        self._paused = False
        self._scheduled = False

    def startProducing(self, consumer: IConsumer) -> Deferred[None]:
        return self._reader.stream_to(_Relay(consumer, self))

    def pauseProducing(self) -> None:
        self._paused = True
        if self._producer is not None and not self._pull:
            self._producer.pauseProducing()

    def resumeProducing(self) -> None:
        self._paused = False
        if self._producer is not None:
            if self._pull:
                self._schedule()
            else:
                self._producer.resumeProducing()

    def stopProducing(self) -> None:
        self._reader.cancel()

    def registered(self, producer: Any, streaming: bool) -> None:
        self._producer, self._pull = producer, not streaming
        if self._pull:
            self._schedule()

    def written(self) -> None:
        # A pull producer (a file) is asked for its next chunk after each one, unless
        # the store we write to asked us to pause.
        if self._pull and not self._paused:
            self._schedule()

    def _schedule(self) -> None:
        if not self._scheduled and self._producer is not None:
            self._scheduled = True
            self._clock.callLater(0, self._next)

    def _next(self) -> None:
        self._scheduled = False
        if self._producer is not None and not self._paused:
            self._producer.resumeProducing()


@implementer(IConsumer)
class _Relay:
    """What the source reader writes into: the target's consumer, with flow control through ReaderBody."""

    def __init__(self, consumer: IConsumer, body: ReaderBody) -> None:
        self._consumer = consumer
        self._body = body

    def write(self, data: bytes) -> None:
        self._consumer.write(data)
        self._body.written()

    def registerProducer(self, producer: IProducer, streaming: bool) -> None:
        self._body.registered(producer, streaming)

    def unregisterProducer(self) -> None:
        self._body.registered(None, True)


class CopyOperations:
    """CopyObject over the object operations (quota, routing, commit rules are theirs)."""

    def __init__(self, objects: ObjectOperations, clock: IReactorTime) -> None:
        self._objects = objects
        self._clock = clock

    async def copy_object(self, call: S3Call) -> S3Response:
        """Copy an object of the caller's bucket to another key (or onto itself, with REPLACE)."""
        key = call.key
        assert key is not None
        directive = (call.header("x-amz-metadata-directive") or "COPY").upper()
        if directive not in ("COPY", "REPLACE"):
            raise S3Error("InvalidArgument", "Unknown metadata directive.",
                          extra={"ArgumentName": "x-amz-metadata-directive", "ArgumentValue": directive})
        source = await copy_source_record(self._objects, call)
        source_key = source.key
        if source_key == key and directive == "COPY":
            raise S3Error("InvalidRequest", "This copy request is illegal because it is trying to copy an object "
                          "to itself without changing the object's metadata, storage class, website redirect "
                          "location or encryption attributes.")
        record = self._target_record(call, source, directive)
        if source_key == key:
            await self._replace_metadata(record)
        else:
            await self._copy_bytes(source, record)
        document = xml_output.root("CopyObjectResult")
        xml_output.add(document, "LastModified", iso8601(record.last_modified_ms / 1000))
        xml_output.add(document, "ETag", s3_headers.quoted_etag(record.etag))
        return S3Response(200, [("Content-Type", "application/xml")], xml_output.document(document),
                          store=record.store)

    def _target_record(self, call: S3Call, source: ObjectRecord, directive: str) -> ObjectRecord:
        assert call.key is not None
        if directive == "REPLACE":
            content_type = s3_headers.content_type(call.headers)
            stored = s3_headers.stored_headers(call.headers)
            metadata = s3_headers.user_metadata(call.headers)
        else:
            content_type, stored, metadata = source.content_type, dict(source.headers), dict(source.user_metadata)
        # Where the source is: a copy onto itself stays there, _copy_bytes places any other.
        return ObjectRecord(
            bucket=source.bucket, key=call.key, store=source.store, location=source.location,
            size=source.size, etag=source.etag, content_type=content_type,
            last_modified_ms=int(self._clock.seconds() * 1000), headers=stored, user_metadata=metadata,
            # The copy keeps the source's ETag, so it keeps the parts that ETag counts.
            part_sizes=source.part_sizes,
        )

    async def _replace_metadata(self, record: ObjectRecord) -> None:
        """Copy onto itself with REPLACE: new metadata, same bytes, no bytes moved."""
        reservation = await self._objects.reserve(0, only_store=record.store)
        try:
            await self._objects.commit_write(_NoBytes(), record, reservation)
        except BaseException:
            await self._objects.release(reservation)
            raise

    async def _copy_bytes(self, source: ObjectRecord, record: ObjectRecord) -> None:
        reservation = await self._objects.reserve(source.size)
        try:
            location = self._objects.store(reservation.store).location_for(record.bucket, record.key)
            placed = attrs.evolve(record, store=reservation.store, location=location)
            with self._objects.store_errors(reservation.store):
                write = await self._start(source, placed)
                await self._objects.commit_write(write, placed, reservation)
        except BaseException:
            await self._objects.release(reservation)
            raise

    async def _start(self, source: ObjectRecord, target: ObjectRecord) -> IObjectWrite:
        store = self._objects.store(target.store)
        if target.store == source.store:
            return store.start_copy(source.location, target.location, source.size)
        reader = await self._objects.open_object(source, None)
        return store.start_write(target.location, ReaderBody(reader, self._clock), source.size)


@implementer(IObjectWrite)
class _NoBytes:
    """The write of a metadata-only change: nothing to store, publish or undo."""

    staged = True
    location_intact = True

    def __init__(self) -> None:
        self.done: Deferred[None] = succeed(None)

    def publish(self) -> Deferred[None]:
        return succeed(None)

    def abort(self) -> None:
        pass
