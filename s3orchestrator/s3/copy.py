"""CopyObject within one virtual bucket: server-side within a store, streamed across stores."""

from __future__ import annotations

from urllib.parse import unquote

from twisted.internet.interfaces import IReactorTime

from s3orchestrator.errors import S3Error
from s3orchestrator.metadata.records import ObjectRecord
from s3orchestrator.placement.engine import Placement
from s3orchestrator.s3 import headers as s3_headers
from s3orchestrator.s3 import xml_output
from s3orchestrator.s3.call import S3Call, S3Response
from s3orchestrator.s3.conditions import check_preconditions
from s3orchestrator.s3.keys import check_key
from s3orchestrator.s3.placement_errors import placement_errors
from s3orchestrator.s3.timestamps import iso8601

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


async def copy_source_record(placement: Placement, call: S3Call) -> ObjectRecord:
    """The object ``x-amz-copy-source`` names, in the caller's bucket, its
    ``x-amz-copy-source-if-*`` conditions checked (CopyObject, UploadPartCopy)."""
    source_bucket, source_key = parse_copy_source(call.header("x-amz-copy-source") or "")
    if source_bucket != call.bucket:
        raise S3Error("AccessDenied", "Cross-bucket copy is not supported: source and destination must be "
                      "in the same bucket.")
    source = await placement.record(source_bucket, source_key)
    if source is None:
        raise S3Error("NoSuchKey", extra={"Key": source_key})
    conditions = {name: value for name in COPY_SOURCE_CONDITIONS if (value := call.header(name)) is not None}
    if conditions:
        check_preconditions(conditions, source.etag, source.last_modified_ms / 1000, copy_source=True)
    return source


class CopyOperations:
    """CopyObject over placement (quota, routing, commit rules are its)."""

    def __init__(self, placement: Placement, clock: IReactorTime) -> None:
        self._placement = placement
        self._clock = clock

    async def copy_object(self, call: S3Call) -> S3Response:
        """Copy an object of the caller's bucket to another key (or onto itself, with REPLACE)."""
        key = call.key
        assert key is not None
        directive = (call.header("x-amz-metadata-directive") or "COPY").upper()
        if directive not in ("COPY", "REPLACE"):
            raise S3Error("InvalidArgument", "Unknown metadata directive.",
                          extra={"ArgumentName": "x-amz-metadata-directive", "ArgumentValue": directive})
        source = await copy_source_record(self._placement, call)
        source_key = source.key
        if source_key == key and directive == "COPY":
            raise S3Error("InvalidRequest", "This copy request is illegal because it is trying to copy an object "
                          "to itself without changing the object's metadata, storage class, website redirect "
                          "location or encryption attributes.")
        record = self._target_record(call, source, directive)
        with placement_errors():
            record = await self._placement.copy(source, record)
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
        # Where the source is: a copy onto itself stays there, placement places any other.
        return ObjectRecord(
            bucket=source.bucket, key=call.key, store=source.store, location=source.location,
            size=source.size, etag=source.etag, content_type=content_type,
            last_modified_ms=int(self._clock.seconds() * 1000), headers=stored, user_metadata=metadata,
            # The copy keeps the source's ETag, so it keeps the parts that ETag counts.
            part_sizes=source.part_sizes,
        )
