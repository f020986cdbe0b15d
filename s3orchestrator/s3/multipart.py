"""Multipart uploads: create, upload (or copy) parts, complete, abort, list, expire.

An upload lives on one store, chosen by the routing strategy when it is created,
and maps onto that store's own multipart upload (an upstream's, or a directory
store's part files), so parts stream straight to it and Complete moves no bytes
through the daemon. A part's bytes are reserved on the store while it streams;
once stored they stay counted as reserved (see the metadata's ``parts``) until
Complete turns the listed parts into the object's usage, or Abort or expiry
release them.

Claims (in the metadata database, so across processes; see metadata.claims), of
names on the upload's store that no object location can be (they hold no "/"):
``part_claim(upload, number)`` is held for the whole of an upload of that part
number, so uploads of one part number run one at a time and the store and the
metadata agree on which one won; Complete holds the claims of every part it
lists and ``upload_claim(upload)`` (as Abort does), so no listed part changes
while the store joins them and Complete and Abort of one upload run one at a
time; Complete also claims the object's location, as any write does.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Callable, Mapping
from urllib.parse import quote

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from s3orchestrator.config import DEFAULT_MULTIPART_COMPLETED_RETENTION
from s3orchestrator.errors import S3Error
from s3orchestrator.metadata.interface import IMetadataStore
from s3orchestrator.metadata.records import CompletedUpload, ObjectRecord, PartRecord, Reservation, UploadRecord
from s3orchestrator.metadata.store import UploadNotFound
from s3orchestrator.placement.bodies import ReaderBody
from s3orchestrator.placement.engine import Placement, verified_body
from s3orchestrator.s3 import headers as s3_headers
from s3orchestrator.s3 import multipart_xml
from s3orchestrator.s3.call import S3Call, S3Response
from s3orchestrator.s3.copy import copy_source_record
from s3orchestrator.s3.list_xml import bucket_owner
from s3orchestrator.s3.listing import parse_encoding_type
from s3orchestrator.s3.objects import parse_part_number
from s3orchestrator.s3.placement_errors import placement_errors
from s3orchestrator.s3.upload_listing import list_uploads_page
from s3orchestrator.s3.xml_input import read_small_body
from s3orchestrator.stores.interface import IPartWrite, ObjectMissing, StoredPart
from s3orchestrator.stores.watched import WatchedBody

MiB = 1024**2
MIN_PART_SIZE = 5 * MiB  # every part but the last, checked at Complete
MAX_PART_SIZE = 5 * 1024 * MiB
MAX_OBJECT_SIZE = 5 * 1024**4  # 5 TiB
MAX_LISTED = 1000  # parts of a ListParts page, uploads of a ListMultipartUploads page
# A Complete request lists up to 10,000 parts of about 150 bytes (with checksums).
MAX_COMPLETE_BODY = 4 * MiB


def upload_claim(upload_id: str) -> str:
    """The name Complete and Abort of upload ``upload_id`` claim on its store."""
    return f"upload:{upload_id}"


def part_claim(upload_id: str, number: int) -> str:
    """The name an upload of part ``number`` of upload ``upload_id`` claims on its store."""
    return f"upload:{upload_id}:part:{number}"


def new_upload_id(initiated_ms: int) -> str:
    """A fresh upload id: ordered by initiation time (hex milliseconds), then random."""
    return f"{initiated_ms:012x}{secrets.token_hex(16)}"


def multipart_etag(parts: list[PartRecord]) -> str:
    """S3's ETag of a multipart object: the MD5 of the parts' binary MD5s, then ``-N``."""
    digest = hashlib.md5(b"".join(bytes.fromhex(part.etag) for part in parts))
    return f"{digest.hexdigest()}-{len(parts)}"


def _max_listed(call: S3Call, name: str) -> int:
    value = call.query.get(name)
    if value is None:
        return MAX_LISTED
    if not (value.isascii() and value.isdigit()):
        raise S3Error("InvalidArgument", f"Provided {name} not an integer or within integer range",
                      extra={"ArgumentName": name, "ArgumentValue": value})
    return min(int(value), MAX_LISTED)


def _checksum_headers(checksums: Mapping[str, str]) -> list[tuple[str, str]]:
    return [(f"x-amz-checksum-{algorithm}", value) for algorithm, value in sorted(checksums.items())]


def parse_copy_range(value: str | None, size: int) -> tuple[int, int] | None:
    """An ``x-amz-copy-source-range`` (``bytes=first-last``) within an object of ``size`` bytes."""
    if value is None:
        return None
    unit, _, spec = value.partition("=")
    first, _, last = spec.partition("-")
    digits = first.isascii() and first.isdigit() and last.isascii() and last.isdigit()
    if unit.strip() != "bytes" or not digits or int(first) > int(last):
        raise S3Error("InvalidArgument", "The x-amz-copy-source-range value must be of the form bytes=first-last "
                      "where first and last are the zero-based offsets of the first and last bytes to copy",
                      extra={"ArgumentName": "x-amz-copy-source-range", "ArgumentValue": value})
    if int(last) >= size:
        raise S3Error("InvalidRange", f"Range specified is not valid for source object of size: {size}",
                      extra={"ActualObjectSize": str(size), "RangeRequested": value})
    return int(first), int(last)


class MultipartOperations:
    """The multipart calls of the S3 API, over placement (quota, routing, store
    health and commit rules are its)."""

    _log = Logger()

    def __init__(
        self,
        placement: Placement,
        metadata: IMetadataStore,
        clock: IReactorTime,
        expire_after: float,
        completed_retention: float = DEFAULT_MULTIPART_COMPLETED_RETENTION,
    ) -> None:
        self._placement = placement
        self._metadata = metadata
        self._clock = clock
        self.expire_after = expire_after
        # Seconds a completed upload's Complete is answered again (a retry) rather than NoSuchUpload.
        self.completed_retention = completed_retention

    def _now_ms(self) -> int:
        return int(self._clock.seconds() * 1000)

    # -- create ---------------------------------------------------------------------------------

    async def create_multipart_upload(self, call: S3Call) -> S3Response:
        """Start an upload on a store chosen by the routing strategy (one with room
        for at least a minimal part), keeping the object's headers for Complete."""
        bucket, key = call.bucket, call.key
        assert bucket is not None and key is not None
        content_type = s3_headers.content_type(call.headers)
        stored = s3_headers.stored_headers(call.headers)
        metadata = s3_headers.user_metadata(call.headers)
        algorithm = s3_headers.check_checksum_algorithms(call.headers)
        with placement_errors():
            store_name = await self._placement.pick_store(MIN_PART_SIZE)
        store = self._placement.store(store_name)
        location = store.location_for(bucket, key)
        with placement_errors(), self._placement.store_calls(store_name):
            store_upload_id = await store.create_upload(location)
        initiated_ms = self._now_ms()
        upload = UploadRecord(
            upload_id=new_upload_id(initiated_ms), bucket=bucket, key=key, store=store_name, location=location,
            store_upload_id=store_upload_id, content_type=content_type, initiated_ms=initiated_ms,
            headers=stored, user_metadata=metadata, checksum_algorithm=algorithm,
        )
        try:
            await self._metadata.create_upload(upload)
        except BaseException:
            await self._abort_in_store(upload)
            raise
        headers = [("Content-Type", "application/xml")]
        if algorithm is not None:
            headers.append(("x-amz-checksum-algorithm", algorithm))
        return S3Response(200, headers, multipart_xml.initiate_result(upload), store=store_name)

    # -- parts ----------------------------------------------------------------------------------

    async def _find_upload(self, call: S3Call) -> UploadRecord:
        """The upload the call names, if it is this bucket and key's and not expired."""
        upload_id = call.query.get("uploadId", "")
        upload = await self._metadata.get_upload(upload_id) if upload_id else None
        if (
            upload is None
            or (upload.bucket, upload.key) != (call.bucket, call.key)
            or self._now_ms() - upload.initiated_ms > self.expire_after * 1000
        ):
            raise S3Error("NoSuchUpload", extra={"UploadId": upload_id})
        return upload

    async def upload_part(self, call: S3Call) -> S3Response:
        """Stream one part to the upload's store; its bytes are reserved there first."""
        body = call.body
        assert body is not None
        number = parse_part_number(call.query.get("partNumber", ""))
        s3_headers.check_checksum_algorithms(call.headers)
        upload = await self._find_upload(call)
        if body.length > MAX_PART_SIZE:
            raise S3Error("EntityTooLarge",
                          extra={"ProposedSize": str(body.length), "MaxSizeAllowed": str(MAX_PART_SIZE)})
        with placement_errors():
            async with self._placement.claimed(upload.store, part_claim(upload.upload_id, number)):
                reservation = await self._placement.reserve(body.length, only_store=upload.store)
                try:
                    with self._placement.store_calls(upload.store):
                        write = self._placement.store(upload.store).start_part_write(
                            upload.location, upload.store_upload_id, number, body, body.length
                        )
                        payload = await verified_body(body, write)

                        def stored_part() -> PartRecord:
                            return PartRecord(
                                upload_id=upload.upload_id, part_number=number, store=upload.store,
                                size=payload.size, etag=payload.md5_hex, store_etag=write.store_etag,
                                last_modified_ms=self._now_ms(), checksums=payload.checksums,
                            )

                        part = await self._commit_part(upload, number, write, stored_part, reservation,
                                                       body.release_tail)
                finally:
                    await self._placement.release(reservation)
        headers = [("ETag", s3_headers.quoted_etag(part.etag)), *_checksum_headers(part.checksums)]
        return S3Response(200, headers, store=upload.store)

    async def upload_part_copy(self, call: S3Call) -> S3Response:
        """A part made of (a range of) an object of the same bucket, streamed through
        the daemon (the source may live on another store than the upload)."""
        number = parse_part_number(call.query.get("partNumber", ""))
        upload = await self._find_upload(call)
        source = await copy_source_record(self._placement, call)
        byte_range = parse_copy_range(call.header("x-amz-copy-source-range"), source.size)
        length = source.size if byte_range is None else byte_range[1] - byte_range[0] + 1
        if length > MAX_PART_SIZE:
            raise S3Error("EntityTooLarge", extra={"ProposedSize": str(length), "MaxSizeAllowed": str(MAX_PART_SIZE)})
        with placement_errors():
            async with self._placement.claimed(upload.store, part_claim(upload.upload_id, number)):
                reservation = await self._placement.reserve(length, only_store=upload.store)
                try:
                    reader = await self._placement.open(source, byte_range)
                    md5 = hashlib.md5()
                    body = WatchedBody(ReaderBody(reader, self._clock), md5.update)
                    with self._placement.store_calls(upload.store):
                        write = self._placement.store(upload.store).start_part_write(
                            upload.location, upload.store_upload_id, number, body, length
                        )

                        def stored_part() -> PartRecord:
                            return PartRecord(
                                upload_id=upload.upload_id, part_number=number, store=upload.store, size=length,
                                etag=md5.hexdigest(), store_etag=write.store_etag,
                                last_modified_ms=self._now_ms(),
                            )

                        part = await self._commit_part(upload, number, write, stored_part, reservation)
                finally:
                    await self._placement.release(reservation)
        return S3Response(200, [("Content-Type", "application/xml")], multipart_xml.copy_part_result(part),
                          store=upload.store)

    async def _commit_part(
        self,
        upload: UploadRecord,
        number: int,
        write: IPartWrite,
        stored_part: Callable[[], PartRecord],
        reservation: Reservation,
        before_done: Callable[[], None] = lambda: None,
    ) -> PartRecord:
        """With the part's claim held: wait for the store, record the part (built by
        ``stored_part()`` once the store is done) in place of its reservation, then
        publish it. A part the store may hold but the metadata cannot describe is
        forgotten (the client uploads it again), never paired with other bytes."""
        before_done()
        try:
            await write.done
        except BaseException:
            if not write.location_intact:
                await self._metadata.forget_part(upload.upload_id, number)
            raise
        part = stored_part()
        try:
            await self._metadata.commit_part(reservation.id, part)
        except BaseException as error:
            write.abort()
            if not write.staged:
                await self._metadata.forget_part(upload.upload_id, number)
            if isinstance(error, UploadNotFound):
                raise S3Error("NoSuchUpload", extra={"UploadId": upload.upload_id}) from error
            raise
        try:
            await write.publish()
        except BaseException:
            await self._metadata.forget_part(upload.upload_id, number)
            raise
        return part

    # -- complete -------------------------------------------------------------------------------

    async def complete_multipart_upload(self, call: S3Call) -> S3Response:
        """Check the listed parts, join them in the store and commit the object; a
        Complete retried after it succeeded gets the same answer again (see
        ``_completed_again``)."""
        body = call.body
        assert body is not None
        try:
            upload = await self._find_upload(call)
        except S3Error as error:
            if error.code != "NoSuchUpload":
                raise
            completed = await self._remembered_completion(call)
            if completed is None:
                raise
            requested = multipart_xml.parse_complete_request(await read_small_body(body, MAX_COMPLETE_BODY))
            return self._completed_again(call, completed, requested)
        requested = multipart_xml.parse_complete_request(await read_small_body(body, MAX_COMPLETE_BODY))
        # The upload, every part listed (no upload of one may change it while the store
        # joins them) and the object's location, all at once (see the module docstring).
        names = [upload_claim(upload.upload_id), *(part_claim(upload.upload_id, wanted.number) for wanted in requested),
                 upload.location]
        with placement_errors():
            async with self._placement.claimed(upload.store, *names) as holder:
                if await self._metadata.get_upload(upload.upload_id) is None:
                    # Completed (or aborted) while this request waited for the claims.
                    return await self._completed_meanwhile(call, upload.upload_id, requested)
                stored = {part.part_number: part for part in await self._metadata.list_parts(upload.upload_id)}
                parts = _chosen_parts(requested, stored)
                record = ObjectRecord(
                    bucket=upload.bucket, key=upload.key, store=upload.store, location=upload.location,
                    size=sum(part.size for part in parts), etag=multipart_etag(parts),
                    content_type=upload.content_type, last_modified_ms=self._now_ms(), headers=upload.headers,
                    user_metadata=upload.user_metadata, part_sizes=tuple(part.size for part in parts),
                )
                listed = [(part.part_number, part.etag) for part in parts]
                with self._placement.store_calls(upload.store):
                    write = self._placement.store(upload.store).start_complete(
                        upload.location, upload.store_upload_id,
                        [StoredPart(part.part_number, part.size, part.store_etag) for part in parts],
                    )
                    try:
                        await self._placement.commit_object_write(
                            write, record, lambda: self._metadata.complete_upload(
                                upload.upload_id, record, listed,
                                missing=self._placement.policy(upload.bucket).replicas > 1,
                            ),
                            holder=holder,
                        )
                    except ObjectMissing as error:
                        self._log.error(
                            "Store {store} does not hold the parts of upload {upload_id} ({bucket}/{key}): {error}",
                            store=upload.store, upload_id=upload.upload_id, bucket=upload.bucket, key=upload.key,
                            error=str(error),
                        )
                        raise S3Error("InternalError") from error
                    except UploadNotFound as error:
                        raise S3Error("NoSuchUpload", extra={"UploadId": upload.upload_id}) from error
        return _complete_response(call, upload.bucket, upload.key, record.etag, upload.store)

    async def _remembered_completion(self, call: S3Call) -> CompletedUpload | None:
        """The completion of the upload the call names, if it is this bucket and key's
        and was completed less than ``completed_retention`` seconds ago."""
        upload_id = call.query.get("uploadId", "")
        completed = await self._metadata.get_completed_upload(upload_id) if upload_id else None
        if (
            completed is None
            or (completed.bucket, completed.key) != (call.bucket, call.key)
            or self._now_ms() - completed.completed_ms > self.completed_retention * 1000
        ):
            return None
        return completed

    async def _completed_meanwhile(
        self, call: S3Call, upload_id: str, requested: list[multipart_xml.RequestedPart]
    ) -> S3Response:
        completed = await self._remembered_completion(call)
        if completed is None:
            raise S3Error("NoSuchUpload", extra={"UploadId": upload_id})
        return self._completed_again(call, completed, requested)

    def _completed_again(
        self, call: S3Call, completed: CompletedUpload, requested: list[multipart_xml.RequestedPart]
    ) -> S3Response:
        """The answer to a Complete of an upload already completed: S3 answers a retry
        (an SDK whose first answer was lost) with the same result, for the same part
        list only; the object is not touched again. Another list names parts that no
        longer exist: InvalidPart."""
        listed = dict(completed.parts)
        previous = 0
        for wanted in requested:
            if wanted.number <= previous:
                raise S3Error("InvalidPartOrder")
            previous = wanted.number
            if listed.get(wanted.number) != wanted.etag:
                raise S3Error("InvalidPart", extra={"PartNumber": str(wanted.number), "ETag": wanted.etag})
        named = {wanted.number for wanted in requested}
        for number, etag in completed.parts:
            if number not in named:  # the retry leaves out a part the object is made of
                raise S3Error("InvalidPart", extra={"PartNumber": str(number), "ETag": etag})
        return _complete_response(call, completed.bucket, completed.key, completed.etag, completed.store)

    # -- abort and expiry -----------------------------------------------------------------------

    async def abort_multipart_upload(self, call: S3Call) -> S3Response:
        """Drop the upload and its parts, releasing their bytes."""
        upload = await self._find_upload(call)
        if not await self.abort(upload):
            raise S3Error("NoSuchUpload", extra={"UploadId": upload.upload_id})
        return S3Response(204, store=upload.store)

    async def abort(self, upload: UploadRecord) -> bool:
        """End ``upload`` in its store, then forget it; False if it was already gone.

        The store goes first: if it fails, the upload stays recorded (and its bytes
        counted) so that a later abort or expiry run tries again.
        """
        with placement_errors():
            async with self._placement.claimed(upload.store, upload_claim(upload.upload_id)):
                if await self._metadata.get_upload(upload.upload_id) is None:
                    return False
                with self._placement.store_calls(upload.store):
                    await self._placement.store(upload.store).abort_upload(upload.location, upload.store_upload_id)
                await self._metadata.delete_upload(upload.upload_id)
        return True

    async def _abort_in_store(self, upload: UploadRecord) -> None:
        try:
            await self._placement.store(upload.store).abort_upload(upload.location, upload.store_upload_id)
        except Exception as error:
            self._log.warn(
                "Store {store}: could not abort unrecorded upload {store_upload_id} of {location}: {error}",
                store=upload.store, store_upload_id=upload.store_upload_id, location=upload.location,
                error=str(error),
            )

    # -- listings -------------------------------------------------------------------------------

    async def list_parts(self, call: S3Call) -> S3Response:
        """One page of an upload's parts, by part number."""
        upload = await self._find_upload(call)
        url_encoding = parse_encoding_type(call.query.get("encoding-type"))
        max_parts = _max_listed(call, "max-parts")
        marker_text = call.query.get("part-number-marker", "0") or "0"
        if not (marker_text.isascii() and marker_text.isdigit()):
            raise S3Error("InvalidArgument", "Provided part-number-marker not an integer or within integer range",
                          extra={"ArgumentName": "part-number-marker", "ArgumentValue": marker_text})
        marker = int(marker_text)
        parts = await self._metadata.list_parts(upload.upload_id, marker, max_parts + 1)
        truncated = len(parts) > max_parts
        document = multipart_xml.list_parts_result(
            upload, parts[:max_parts], bucket_owner(upload.bucket), marker, max_parts, truncated, url_encoding
        )
        return S3Response(200, [("Content-Type", "application/xml")], document)

    async def list_multipart_uploads(self, call: S3Call) -> S3Response:
        """One page of the bucket's uploads in progress, by key then upload id."""
        bucket = call.bucket
        assert bucket is not None
        url_encoding = parse_encoding_type(call.query.get("encoding-type"))
        query = multipart_xml.UploadListQuery(
            prefix=call.query.get("prefix", ""),
            delimiter=call.query.get("delimiter", ""),
            key_marker=call.query.get("key-marker", ""),
            upload_id_marker=call.query.get("upload-id-marker", "") if call.query.get("key-marker") else "",
            max_uploads=_max_listed(call, "max-uploads"),
            url_encoding=url_encoding,
        )
        page = await self._metadata.scan_uploads(
            bucket, query.prefix,
            lambda fetch: list_uploads_page(fetch, query.prefix, query.delimiter, query.key_marker,
                                            query.upload_id_marker, query.max_uploads),
        )
        document = multipart_xml.list_uploads_result(bucket, query, page, bucket_owner(bucket))
        return S3Response(200, [("Content-Type", "application/xml")], document)


def _complete_response(call: S3Call, bucket: str, key: str, etag: str, store: str) -> S3Response:
    host = call.header("host") or "localhost"
    location = f"{call.scheme}://{host}/{bucket}/{quote(key, safe='/~')}"
    return S3Response(
        200, [("Content-Type", "application/xml")],
        multipart_xml.complete_result(location, bucket, key, etag), store=store,
    )


def _chosen_parts(requested: list[multipart_xml.RequestedPart], stored: Mapping[int, PartRecord]) -> list[PartRecord]:
    """The stored parts a Complete request lists, checked as S3 checks them."""
    parts: list[PartRecord] = []
    previous = 0
    for wanted in requested:
        if wanted.number <= previous:
            raise S3Error("InvalidPartOrder")
        previous = wanted.number
        part = stored.get(wanted.number)
        if part is None or part.etag != wanted.etag or any(
            part.checksums.get(algorithm, value) != value for algorithm, value in wanted.checksums.items()
        ):
            raise S3Error("InvalidPart", extra={"PartNumber": str(wanted.number), "ETag": wanted.etag})
        parts.append(part)
    for part in parts[:-1]:
        if part.size < MIN_PART_SIZE:
            raise S3Error("EntityTooSmall", extra={"ProposedSize": str(part.size), "MinSizeAllowed": str(MIN_PART_SIZE),
                                                   "PartNumber": str(part.part_number), "ETag": part.etag})
    total = sum(part.size for part in parts)
    if total > MAX_OBJECT_SIZE:
        raise S3Error("EntityTooLarge", extra={"ProposedSize": str(total), "MaxSizeAllowed": str(MAX_OBJECT_SIZE)})
    return parts
