"""PutObject, GetObject, HeadObject and DeleteObject: the S3 side of placement."""

from __future__ import annotations

from s3orchestrator.errors import S3Error
from s3orchestrator.metadata.availability import MetadataAvailability
from s3orchestrator.metadata.interface import MetadataBusy, MetadataUnavailable
from s3orchestrator.metadata.records import ObjectRecord
from s3orchestrator.placement.engine import NewObject, Placement
from s3orchestrator.placement.reader import FailoverReader
from s3orchestrator.s3 import headers as s3_headers
from s3orchestrator.s3 import xml_output
from s3orchestrator.s3.call import S3Call, S3Response
from s3orchestrator.s3.conditions import check_preconditions
from s3orchestrator.s3.metadata_busy import metadata_unavailable
from s3orchestrator.s3.placement_errors import placement_errors
from s3orchestrator.s3.ranges import content_range, parse_range

MAX_PART_NUMBER = 10_000
_PRECONDITION_HEADERS = ("if-match", "if-none-match", "if-modified-since", "if-unmodified-since")


def parse_part_number(value: str) -> int:
    """A ``partNumber`` query parameter: 1 to 10000, else InvalidArgument."""
    number = int(value) if value.isascii() and value.isdigit() else 0
    if not 1 <= number <= MAX_PART_NUMBER:
        raise S3Error(
            "InvalidArgument",
            f"Part number must be an integer between 1 and {MAX_PART_NUMBER}, inclusive",
            extra={"ArgumentName": "partNumber", "ArgumentValue": value},
        )
    return number


def part_range(record: ObjectRecord, part_number: str, range_header: str | None) -> tuple[int, int] | None:
    """The byte range GET/HEAD ``?partNumber=N`` serves: that part of a multipart object
    (an empty part, which only a last part can be, is the empty range ``(first, first - 1)``);
    all of any other object as its only part (None: no range)."""
    if range_header is not None:
        raise S3Error("InvalidRequest", "Cannot specify both Range header and partNumber query parameter")
    number = parse_part_number(part_number)
    sizes = record.part_sizes or (record.size,)
    if number > len(sizes):
        # 400 InvalidPart, as S3 answers a part number past the object's last part (the
        # s3-tests suite checks it, though S3's error table lists a 416 InvalidPartNumber).
        # An invalid number, say 0 or 10001, is 400 InvalidArgument above.
        raise S3Error("InvalidPart", f"The object has {len(sizes)} part(s); part {number} does not exist",
                      extra={"PartNumberRequested": str(number), "ActualPartCount": str(len(sizes))})
    if not record.part_sizes:
        return None
    first = sum(sizes[: number - 1])
    return first, first + sizes[number - 1] - 1


class ObjectOperations:
    """The object calls of the S3 API over placement."""

    def __init__(
        self, placement: Placement, max_object_size: int, availability: MetadataAvailability | None = None
    ) -> None:
        self._placement = placement
        self.max_object_size = max_object_size
        # While it says the metadata database is unavailable, GET and HEAD ask the stores.
        self._availability = availability

    def _degraded(self) -> bool:
        return self._availability is not None and not self._availability.available

    async def put_object(self, call: S3Call) -> S3Response:
        """Stream the body to a store chosen by the routing strategy, then record it."""
        bucket, key, body = call.bucket, call.key, call.body
        assert bucket is not None and key is not None and body is not None
        size = body.length
        if size > self.max_object_size:
            raise S3Error(
                "EntityTooLarge",
                extra={"ProposedSize": str(size), "MaxSizeAllowed": str(self.max_object_size)},
            )
        s3_headers.check_checksum_algorithms(call.headers)
        new = NewObject(
            content_type=s3_headers.content_type(call.headers),
            headers=s3_headers.stored_headers(call.headers),
            user_metadata=s3_headers.user_metadata(call.headers),
        )
        with placement_errors():
            record = await self._placement.write(bucket, key, body, new)
        return S3Response(200, [("ETag", s3_headers.quoted_etag(record.etag))], store=record.store)

    async def get_object(self, call: S3Call) -> S3Response:
        """The object's bytes (or a range of them) and its headers."""
        return await self._read(call, with_body=True)

    async def head_object(self, call: S3Call) -> S3Response:
        """The object's headers, without touching its store."""
        return await self._read(call, with_body=False)

    async def get_object_tagging(self, call: S3Call) -> S3Response:
        """The object's tags: always none (tags are not stored), but only for an object
        that exists. The aws cli asks before a multipart copy, to copy the tags along."""
        assert call.bucket is not None and call.key is not None
        record = await self._placement.record(call.bucket, call.key)
        if record is None:
            raise S3Error("NoSuchKey", extra={"Key": call.key})
        document = xml_output.root("Tagging")
        xml_output.add(document, "TagSet")
        return S3Response(200, [("Content-Type", "application/xml")], xml_output.document(document))

    async def delete_object(self, call: S3Call) -> S3Response:
        """Forget the object and remove its bytes; succeeds for a missing key, as S3 does."""
        assert call.bucket is not None and call.key is not None
        removed = await self._placement.delete(call.bucket, call.key)
        return S3Response(204, store=removed.store if removed else None)

    async def _read(self, call: S3Call, with_body: bool) -> S3Response:
        bucket, key = call.bucket, call.key
        assert bucket is not None and key is not None
        if self._degraded():
            return await self._read_degraded(call, with_body)
        part_number = call.query.get("partNumber")
        ranges: list[tuple[int, int] | None] = []

        def wanted(record: ObjectRecord) -> tuple[int, int] | None:
            """The conditions checked, the bytes asked for (None: all)."""
            self._check_conditions(call, record)
            if part_number is None:
                ranges.append(parse_range(call.header("range"), record.size))
            else:
                ranges.append(part_range(record, part_number, call.header("range")))
            return ranges[-1]

        try:
            with placement_errors():
                found = await self._placement.read(bucket, key, wanted if with_body else None)
        except (MetadataUnavailable, MetadataBusy):
            if not self._degraded():
                raise  # busy, not yet unavailable: SlowDown
            return await self._read_degraded(call, with_body)
        if found is None:
            raise S3Error("NoSuchKey", extra={"Key": key})
        record, reader = found
        byte_range = ranges[-1] if ranges else wanted(record)
        return self._answer(call, record, byte_range, reader, record.etag)

    async def _read_degraded(self, call: S3Call, with_body: bool) -> S3Response:
        """GET/HEAD without the metadata database: the object at its default location on
        the first store that has it (see ``Placement.find_without_metadata``), with the
        size, ETag (where the store keeps one) and time the store reports; no stored
        Content-Type, headers or user metadata; ``partNumber`` and ETag conditions the
        store cannot check are 503."""
        bucket, key = call.bucket, call.key
        assert bucket is not None and key is not None
        if "partNumber" in call.query:
            raise metadata_unavailable("partNumber needs the metadata database, which is unavailable")
        with placement_errors():
            found = await self._placement.find_without_metadata(bucket, key)
        if found is None:
            raise S3Error("NoSuchKey", extra={"Key": key})
        stat, places = found
        store, location = places[0]
        record = ObjectRecord(
            bucket=bucket, key=key, store=store, location=location, size=stat.size, etag=stat.etag or "",
            content_type=s3_headers.DEFAULT_CONTENT_TYPE, last_modified_ms=int(stat.last_modified * 1000),
        )
        if stat.etag is None and (call.header("if-match") is not None or call.header("if-none-match") is not None):
            raise metadata_unavailable("ETag conditions need the metadata database, which is unavailable")
        self._check_conditions(call, record)
        byte_range = parse_range(call.header("range"), record.size)
        reader = None
        if with_body:
            with placement_errors():
                reader = await self._placement.open_places(places, stat.size, stat.etag, byte_range)
        return self._answer(call, record, byte_range, reader, stat.etag)

    def _answer(
        self, call: S3Call, record: ObjectRecord, byte_range: tuple[int, int] | None,
        reader: FailoverReader | None, etag: str | None,
    ) -> S3Response:
        """The GET/HEAD answer for ``record`` (no ETag header when ``etag`` is None)."""
        part_number = call.query.get("partNumber")
        empty_part = byte_range is not None and byte_range[1] < byte_range[0]
        headers = s3_headers.object_headers(record, call.query)
        if etag is None:
            headers = [(name, value) for name, value in headers if name != "ETag"]
        status = 200
        length = record.size
        if empty_part:
            length = 0
        elif byte_range is not None:
            first, last = byte_range
            headers.append(("Content-Range", content_range(first, last, record.size)))
            status, length = 206, last - first + 1
        if part_number is not None and record.part_sizes:
            headers.append(("x-amz-mp-parts-count", str(len(record.part_sizes))))
        if reader is None:
            headers.append(("Content-Length", str(length)))
        # The store the bytes come from (HEAD asks none).
        return S3Response(status, headers, reader, store=reader.store if reader is not None else None)

    def _check_conditions(self, call: S3Call, record: ObjectRecord) -> None:
        conditions = {name: value for name in _PRECONDITION_HEADERS if (value := call.header(name)) is not None}
        if conditions:
            check_preconditions(conditions, record.etag, record.last_modified_ms / 1000)
