"""PutObject, GetObject, HeadObject and DeleteObject: metadata, quota and store orchestration."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Awaitable, Callable, Iterator, Mapping, Sequence, TypeVar

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IConsumer, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from s3orchestrator.auth.payload import VerifiedPayload
from s3orchestrator.errors import S3Error
from s3orchestrator.jobs.health import StoreHealth
from s3orchestrator.metadata.interface import IMetadataStore
from s3orchestrator.metadata.records import ObjectRecord, Reservation, StoreUsage
from s3orchestrator.routing import choose_store
from s3orchestrator.s3 import headers as s3_headers
from s3orchestrator.s3 import xml_output
from s3orchestrator.s3.call import RequestBody, S3Call, S3Response
from s3orchestrator.s3.conditions import check_preconditions
from s3orchestrator.s3.locks import KeyLocks
from s3orchestrator.s3.metadata_busy import CleanupRetrier
from s3orchestrator.s3.ranges import content_range, parse_range
from s3orchestrator.stores.interface import (
    IObjectReader,
    IObjectStore,
    IObjectWrite,
    ObjectMissing,
    StoreMisconfigured,
    StoreUnavailable,
)

T = TypeVar("T")
MAX_PART_NUMBER = 10_000
_PRECONDITION_HEADERS = ("if-match", "if-none-match", "if-modified-since", "if-unmodified-since")


async def verified_body(body: RequestBody, write: IObjectWrite) -> VerifiedPayload:
    """What the client's body turned out to be, once it arrived whole and verified;
    if it fails, or the store's write fails first, the write is aborted."""
    try:
        return await _verified_unless_store_fails(body.verified, write.done)
    except BaseException:
        write.done.addErrback(lambda _: None)
        write.abort()
        raise


def _verified_unless_store_fails(verified: Deferred[T], done: Deferred[None]) -> Deferred[T]:
    """``verified``'s outcome, unless the store's write fails first (it then stops the body,
    which will never be verified)."""
    outcome: Deferred[T] = Deferred()

    def store_failed(failure: Failure) -> Failure:
        if not outcome.called:
            outcome.errback(failure)
        return failure

    def settle(result: T | Failure) -> None:
        if not outcome.called:
            if isinstance(result, Failure):
                outcome.errback(result)
            else:
                outcome.callback(result)

    verified.addBoth(settle)
    done.addErrback(store_failed)
    return outcome


@implementer(IObjectReader)
class _HealthReportingReader:
    """A store reader whose mid-stream outages count against the store's health."""

    def __init__(self, reader: IObjectReader, store: str, health: StoreHealth) -> None:
        self._reader = reader
        self._store = store
        self._health = health
        self.length = reader.length

    def stream_to(self, consumer: IConsumer) -> Deferred[None]:
        def failed(failure: Failure) -> Failure:
            if failure.check(StoreUnavailable):
                self._health.record_failure(self._store, str(failure.value))
            return failure

        return self._reader.stream_to(consumer).addErrback(failed)

    def cancel(self) -> None:
        self._reader.cancel()


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
    """The object calls of the S3 API over the metadata store and the object stores."""

    _log = Logger()

    def __init__(
        self,
        metadata: IMetadataStore,
        stores: Mapping[str, IObjectStore],
        routing_strategy: str,
        max_object_size: int,
        clock: IReactorTime,
        locks: KeyLocks,
        health: StoreHealth,
    ) -> None:
        self._metadata = metadata
        self._health = health
        self._stores = stores
        self.routing_strategy = routing_strategy
        self.max_object_size = max_object_size
        self._clock = clock
        self._locks = locks
        # Metadata cleanups a busy database refused, retried in the background.
        self.cleanups = CleanupRetrier(clock)

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
        content_type = s3_headers.content_type(call.headers)
        stored = s3_headers.stored_headers(call.headers)
        metadata = s3_headers.user_metadata(call.headers)
        reservation = await self.reserve(size)
        try:
            location = self._stores[reservation.store].location_for(bucket, key)
            with self.store_errors(reservation.store):
                record = await self._store_and_commit(call, reservation, location, content_type, stored, metadata)
        except BaseException:
            await self.release(reservation)
            raise
        return S3Response(200, [("ETag", s3_headers.quoted_etag(record.etag))], store=record.store)

    async def reserve(self, size: int, only_store: str | None = None) -> Reservation:
        """Reserve ``size`` bytes on a healthy store chosen by the routing strategy, or on
        ``only_store`` whatever its health; InsufficientStorage when none has room."""
        healthy = self._health.healthy() if only_store is None else frozenset({only_store})

        def choose(usage: Sequence[StoreUsage]) -> str | None:
            return choose_store(self.routing_strategy, usage, size, healthy)

        reservation = await self._metadata.reserve(size, choose)
        if reservation is None:
            raise S3Error("InsufficientStorage")
        return reservation

    async def pick_store(self, size: int) -> str:
        """The healthy store the routing strategy would put ``size`` bytes on now,
        without reserving anything; InsufficientStorage when none has room."""
        usage = await self._metadata.store_usage()
        chosen = choose_store(self.routing_strategy, usage, size, self._health.healthy())
        if chosen is None:
            raise S3Error("InsufficientStorage")
        return chosen

    async def release(self, reservation: Reservation) -> None:
        """Give back a reservation whose write failed (later, if the database is busy now)."""
        await self.cleanups.run(
            f"release of reservation {reservation.id} on store {reservation.store}",
            lambda: self._metadata.release(reservation.id),
        )

    async def record(self, bucket: str, key: str) -> ObjectRecord | None:
        """The metadata of one object, or None."""
        return await self._metadata.get_object(bucket, key)

    def store(self, name: str) -> IObjectStore:
        """The store called ``name``."""
        return self._stores[name]

    async def _store_and_commit(
        self,
        call: S3Call,
        reservation: Reservation,
        location: str,
        content_type: str,
        stored: dict[str, str],
        metadata: dict[str, str],
    ) -> ObjectRecord:
        bucket, key, body = call.bucket, call.key, call.body
        assert bucket is not None and key is not None and body is not None
        write = self._stores[reservation.store].start_write(location, body, body.length)
        payload = await verified_body(body, write)
        record = ObjectRecord(
            bucket=bucket,
            key=key,
            store=reservation.store,
            location=location,
            size=payload.size,
            etag=payload.md5_hex,
            content_type=content_type,
            last_modified_ms=int(self._clock.seconds() * 1000),
            headers=stored,
            user_metadata=metadata,
        )
        await self.commit_write(write, record, reservation, before_done=body.release_tail)
        return record

    async def commit_write(
        self,
        write: IObjectWrite,
        record: ObjectRecord,
        reservation: Reservation,
        before_done: Callable[[], None] = lambda: None,
    ) -> None:
        """Under the key's lock: wait for the store, commit ``record`` (turning the
        reservation into usage), publish the bytes, then drop the bytes the commit
        replaced. ``before_done`` runs first under the lock (PutObject releases its
        held-back tail there)."""
        await self.commit_object_write(
            write, record, lambda: self._metadata.commit_object(reservation.id, record), before_done
        )

    async def commit_object_write(
        self,
        write: IObjectWrite,
        record: ObjectRecord,
        commit: Callable[[], Awaitable[ObjectRecord | None]],
        before_done: Callable[[], None] = lambda: None,
    ) -> None:
        """``commit_write`` with another metadata commit: ``commit()`` stores ``record``
        and fires with the object it replaced (CompleteMultipartUpload's commit)."""
        async with self._locks.hold((record.bucket, record.key)):
            before_done()
            try:
                await write.done
            except BaseException:
                if not write.location_intact:
                    # The store may have replaced the key's object in place even though
                    # its answer was lost (timeout, reset): never pair old record, new bytes.
                    await self._forget_replaced_in_place(record)
                    await self._delete_bytes(record)
                raise
            try:
                previous = await commit()
            except BaseException:
                write.abort()
                if not write.staged:
                    await self._forget_replaced_in_place(record)
                raise
            await self._publish(write, record, previous)

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
        record = await self._metadata.get_object(call.bucket, call.key)
        if record is None:
            raise S3Error("NoSuchKey", extra={"Key": call.key})
        document = xml_output.root("Tagging")
        xml_output.add(document, "TagSet")
        return S3Response(200, [("Content-Type", "application/xml")], xml_output.document(document),
                          store=record.store)

    async def delete_object(self, call: S3Call) -> S3Response:
        """Forget the object and remove its bytes; succeeds for a missing key, as S3 does."""
        assert call.bucket is not None and call.key is not None
        removed = await self.delete_key(call.bucket, call.key)
        return S3Response(204, store=removed.store if removed else None)

    async def delete_key(self, bucket: str, key: str) -> ObjectRecord | None:
        """Forget one object (if any), release its quota and remove its bytes."""
        async with self._locks.hold((bucket, key)):
            removed = await self._metadata.delete_object(bucket, key)
            if removed is not None:
                await self._delete_bytes(removed)
        return removed

    async def _read(self, call: S3Call, with_body: bool) -> S3Response:
        bucket, key = call.bucket, call.key
        assert bucket is not None and key is not None
        reader: IObjectReader | None = None
        # Read the record and open its bytes under the key lock, so a concurrent
        # overwrite can never pair the old record with the new bytes.
        async with self._locks.hold((bucket, key)):
            record = await self._metadata.get_object(bucket, key)
            if record is None:
                raise S3Error("NoSuchKey", extra={"Key": key})
            self._check_conditions(call, record)
            part_number = call.query.get("partNumber")
            if part_number is None:
                byte_range = parse_range(call.header("range"), record.size)
            else:
                byte_range = part_range(record, part_number, call.header("range"))
            empty_part = byte_range is not None and byte_range[1] < byte_range[0]
            if with_body and not empty_part:
                reader = await self.open_object(record, byte_range)
        headers = s3_headers.object_headers(record, call.query)
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
        return S3Response(status, headers, reader, store=record.store)

    def _check_conditions(self, call: S3Call, record: ObjectRecord) -> None:
        conditions = {name: value for name in _PRECONDITION_HEADERS if (value := call.header(name)) is not None}
        if conditions:
            check_preconditions(conditions, record.etag, record.last_modified_ms / 1000)

    async def open_object(self, record: ObjectRecord, byte_range: tuple[int, int] | None) -> IObjectReader:
        """A reader of the object's bytes (or a range); store failures become S3 errors."""
        expected = record.size if byte_range is None else byte_range[1] - byte_range[0] + 1
        try:
            with self.store_errors(record.store):
                reader = await self._stores[record.store].open_read(record.location, byte_range)
        except ObjectMissing:
            self._log.error(
                "Object {bucket}/{key} is missing from store {store} at {location}",
                bucket=record.bucket, key=record.key, store=record.store, location=record.location,
            )
            raise S3Error("InternalError") from None
        reader = _HealthReportingReader(reader, record.store, self._health)
        if reader.length != expected:
            reader.cancel()
            self._log.error(
                "Object {bucket}/{key} on store {store} has {actual} bytes where {expected} were expected",
                bucket=record.bucket, key=record.key, store=record.store, actual=reader.length, expected=expected,
            )
            raise S3Error("InternalError")
        return reader

    @contextmanager
    def store_errors(self, store: str) -> Iterator[None]:
        """Turn a store's failures into S3 errors, counting outages against its health."""
        try:
            yield
        except StoreUnavailable as error:
            self._health.record_failure(store, str(error))
            self._log.warn("Store {store} unavailable: {error}", store=store, error=str(error))
            raise S3Error("ServiceUnavailable", headers={"Retry-After": "1"}) from error
        except StoreMisconfigured as error:
            # The client did nothing wrong: the store's configuration or credentials are off.
            self._log.error("Store {store} refused a request: {error}", store=store, error=str(error))
            raise S3Error("InternalError") from error

    async def _forget_replaced_in_place(self, record: ObjectRecord) -> None:
        """A store that made a write visible at once replaced the key's previous object
        at the same location; its record no longer describes any bytes, so drop it
        (a missing object beats serving the wrong bytes). Called under the key's lock.

        While the database is busy, retried later under the lock, and only if the
        record is still the one replaced (a later PUT may have written a good one)."""
        current = await self._metadata.get_object(record.bucket, record.key)
        if current is None or (current.store, current.location) != (record.store, record.location):
            return

        async def forget_if_unchanged() -> None:
            async with self._locks.hold((record.bucket, record.key)):
                if await self._metadata.get_object(record.bucket, record.key) == current:
                    await self._metadata.delete_object(record.bucket, record.key)

        await self.cleanups.run(
            f"forgetting {record.bucket}/{record.key}",
            lambda: self._metadata.delete_object(record.bucket, record.key),
            forget_if_unchanged,
        )

    async def _publish(self, write: IObjectWrite, record: ObjectRecord, previous: ObjectRecord | None) -> None:
        """Put committed bytes in place; then the bytes they replaced can go."""
        try:
            await write.publish()
        except BaseException:
            # Committed but not in place (a rename failed): forget the key rather
            # than describe bytes that are not there.
            self._log.error(
                "Could not publish {bucket}/{key} on store {store}; removing the object",
                bucket=record.bucket, key=record.key, store=record.store,
            )
            removed = await self._metadata.delete_object(record.bucket, record.key)
            if removed is not None:
                await self._delete_bytes(removed)
            if previous is not None:
                await self._discard_replaced(previous, record)
            raise
        if previous is not None:
            await self._discard_replaced(previous, record)

    async def _discard_replaced(self, previous: ObjectRecord, current: ObjectRecord) -> None:
        if (previous.store, previous.location) != (current.store, current.location):
            await self._delete_bytes(previous)

    async def _delete_bytes(self, record: ObjectRecord) -> None:
        try:
            await self._stores[record.store].delete(record.location)
        except Exception as error:
            # The record is gone and its usage released; only the bytes linger.
            self._log.error(
                "Could not delete {location} from store {store}; left orphaned: {error}",
                location=record.location, store=record.store, error=str(error),
            )
