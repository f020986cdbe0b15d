"""The placement engine: reserve room, write, commit, open and delete objects' bytes on the stores.

No HTTP and no S3 calls here: failures are the stores' errors (StoreUnavailable,
StoreMisconfigured, ObjectMissing) and placement's own (NoRoom, CopyUnreadable);
the S3 layer maps them to S3 errors (s3.placement_errors).
"""

from __future__ import annotations

from collections import Counter
from contextlib import contextmanager
from typing import Awaitable, Callable, Iterator, Mapping, Sequence, TypeVar

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IConsumer, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from s3orchestrator.auth.payload import VerifiedPayload
from s3orchestrator.jobs.health import StoreHealth
from s3orchestrator.metadata.interface import IMetadataStore
from s3orchestrator.metadata.records import CopyRecord, ObjectRecord, Reservation, StoreUsage
from s3orchestrator.placement.bodies import NoBytes, ReaderBody
from s3orchestrator.placement.body import RequestBody
from s3orchestrator.placement.errors import CopyUnreadable, NoRoom
from s3orchestrator.placement.locks import KeyLocks
from s3orchestrator.placement.reader import FailoverReader, order_copies
from s3orchestrator.placement.retry import CleanupRetrier
from s3orchestrator.routing import choose_store
from s3orchestrator.stores.interface import (
    IObjectReader,
    IObjectStore,
    IObjectWrite,
    ObjectMissing,
    ObjectStat,
    StoreMisconfigured,
    StoreUnavailable,
)

T = TypeVar("T")


@attrs.frozen
class NewObject:
    """What a write describes besides its bytes: the object's content type and headers."""

    content_type: str
    headers: Mapping[str, str]
    user_metadata: Mapping[str, str]


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


@attrs.define
class ReadCounters:
    """What reads found, by store: copies given up on (``failovers``: a read went on to
    another copy or failed) and copies found missing or damaged (``copies_missing``)."""

    failovers: Counter[str] = attrs.field(factory=Counter)
    copies_missing: Counter[str] = attrs.field(factory=Counter)


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


class Placement:
    """Objects' bytes on the stores, kept in step with the metadata store."""

    _log = Logger()

    def __init__(
        self,
        metadata: IMetadataStore,
        stores: Mapping[str, IObjectStore],
        routing_strategy: str,
        clock: IReactorTime,
        locks: KeyLocks,
        health: StoreHealth,
        read_order: Callable[[str], str] = lambda bucket: "config",
    ) -> None:
        self._metadata = metadata
        self._stores = stores
        self.routing_strategy = routing_strategy
        self._clock = clock
        self._locks = locks
        self.health = health
        # The bucket's read_order, from the running configuration.
        self.read_order = read_order
        self.read_counters = ReadCounters()
        # Metadata cleanups a busy database refused, retried in the background.
        self.cleanups = CleanupRetrier(clock)

    # -- room ---------------------------------------------------------------------------------

    async def reserve(self, size: int, only_store: str | None = None) -> Reservation:
        """Reserve ``size`` bytes on a healthy store chosen by the routing strategy, or on
        ``only_store`` whatever its health; NoRoom when none has room."""
        healthy = self.health.healthy() if only_store is None else frozenset({only_store})

        def choose(usage: Sequence[StoreUsage]) -> str | None:
            return choose_store(self.routing_strategy, usage, size, healthy)

        reservation = await self._metadata.reserve(size, choose)
        if reservation is None:
            raise NoRoom(f"no store has room for {size} bytes")
        return reservation

    async def pick_store(self, size: int) -> str:
        """The healthy store the routing strategy would put ``size`` bytes on now,
        without reserving anything; NoRoom when none has room."""
        usage = await self._metadata.store_usage()
        chosen = choose_store(self.routing_strategy, usage, size, self.health.healthy())
        if chosen is None:
            raise NoRoom(f"no store has room for {size} bytes")
        return chosen

    async def release(self, reservation: Reservation) -> None:
        """Give back a reservation whose write failed (later, if the database is busy now)."""
        await self.cleanups.run(
            f"release of reservation {reservation.id} on store {reservation.store}",
            lambda: self._metadata.release(reservation.id),
        )

    # -- lookups ------------------------------------------------------------------------------

    async def record(self, bucket: str, key: str) -> ObjectRecord | None:
        """The metadata of one object, or None."""
        return await self._metadata.get_object(bucket, key)

    def store(self, name: str) -> IObjectStore:
        """The store called ``name``."""
        return self._stores[name]

    @contextmanager
    def store_calls(self, store: str) -> Iterator[None]:
        """Count a store's outages against its health and log its failures; the errors propagate."""
        try:
            yield
        except StoreUnavailable as error:
            self.health.record_failure(store, str(error))
            self._log.warn("Store {store} unavailable: {error}", store=store, error=str(error))
            raise
        except StoreMisconfigured as error:
            # The client did nothing wrong: the store's configuration or credentials are off.
            self._log.error("Store {store} refused a request: {error}", store=store, error=str(error))
            raise

    # -- writing ------------------------------------------------------------------------------

    async def write(self, bucket: str, key: str, body: RequestBody, new: NewObject) -> ObjectRecord:
        """Stream ``body`` to a store chosen by the routing strategy and commit it as
        ``bucket``/``key``, replacing any object there; the committed record."""
        reservation = await self.reserve(body.length)
        try:
            location = self._stores[reservation.store].location_for(bucket, key)
            with self.store_calls(reservation.store):
                write = self._stores[reservation.store].start_write(location, body, body.length)
                payload = await verified_body(body, write)
                record = ObjectRecord(
                    bucket=bucket,
                    key=key,
                    store=reservation.store,
                    location=location,
                    size=payload.size,
                    etag=payload.md5_hex,
                    content_type=new.content_type,
                    last_modified_ms=int(self._clock.seconds() * 1000),
                    headers=dict(new.headers),
                    user_metadata=dict(new.user_metadata),
                )
                await self.commit_write(write, record, reservation, before_done=body.release_tail)
        except BaseException:
            await self.release(reservation)
            raise
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

    async def copy(self, source: ObjectRecord, target: ObjectRecord) -> ObjectRecord:
        """Commit ``target``, a copy of ``source`` under another key or with other metadata,
        the committed record. A copy onto itself (same key) keeps its bytes where they are;
        any other is placed by the routing strategy: copied within the store that holds the
        source, streamed through the daemon to another."""
        if (source.bucket, source.key) == (target.bucket, target.key):
            reservation = await self.reserve(0, only_store=source.store)
            try:
                await self.commit_write(NoBytes(), target, reservation)
            except BaseException:
                await self.release(reservation)
                raise
            return target
        reservation = await self.reserve(source.size)
        try:
            location = self._stores[reservation.store].location_for(target.bucket, target.key)
            placed = attrs.evolve(target, store=reservation.store, location=location)
            with self.store_calls(reservation.store):
                write = await self._start_copy(source, placed)
                await self.commit_write(write, placed, reservation)
        except BaseException:
            await self.release(reservation)
            raise
        return placed

    async def _start_copy(self, source: ObjectRecord, target: ObjectRecord) -> IObjectWrite:
        store = self._stores[target.store]
        if target.store == source.store:
            return store.start_copy(source.location, target.location, source.size)
        reader = await self.open(source, None)
        return store.start_write(target.location, ReaderBody(reader, self._clock), source.size)

    # -- reading ------------------------------------------------------------------------------

    async def read(
        self, bucket: str, key: str, byte_range: Callable[[ObjectRecord], tuple[int, int] | None] | None
    ) -> tuple[ObjectRecord, FailoverReader | None] | None:
        """The object's record and a reader of the bytes ``byte_range(record)`` names
        (None: all of them; an empty range ``last < first``: no reader), or no reader
        when ``byte_range`` is None (headers only); None for a missing object.

        The reader fails over between the object's live copies (``open_copies``).
        Record and copies are paired under the key's lock, so a concurrent overwrite can
        never pair the old record with the new bytes. ``byte_range`` may raise (the
        caller's preconditions), before any store is asked."""
        async with self._locks.hold((bucket, key)):
            found = await self._metadata.get_object_copies(bucket, key)
            if found is None:
                return None
            record, copies = found
            if byte_range is None:
                return record, None
            wanted = byte_range(record)
            if wanted is not None and wanted[1] < wanted[0]:
                return record, None
            return record, await self.open_copies(record, copies, wanted)

    async def open_copies(
        self, record: ObjectRecord, copies: Sequence[CopyRecord], byte_range: tuple[int, int] | None
    ) -> FailoverReader:
        """An opened reader of the object's bytes (or a range) from whichever of ``copies``
        works, tried in the bucket's ``read_order``, resuming from another copy if a store
        dies mid-stream. A copy found missing or damaged is counted and forgotten
        (``mark_copy_missing``); a store failing counts against its health. When every
        copy fails: the last store error, or CopyUnreadable if every copy was missing."""
        # An object has at most one copy per store (the copies table's key).
        by_store = {copy.store: copy for copy in copies}
        status = self.health.snapshot()
        ordered = order_copies(
            [(copy.store, copy.location) for copy in copies], self.read_order(record.bucket), self.health.healthy(),
            {name: state.consecutive_failures for name, state in status.items()}, self.health.latency(),
        )

        def open_copy(store: str, location: str, wanted: tuple[int, int] | None) -> Deferred[IObjectReader]:
            return self._stores[store].open_read(location, wanted)

        def failed(store: str, error: Exception) -> None:
            self.read_counters.failovers[store] += 1
            if isinstance(error, StoreUnavailable):
                self.health.record_failure(store, str(error))
            elif isinstance(error, ObjectMissing):
                self._copy_missing(record, by_store[store], error)

        reader = FailoverReader(ordered, record.size, record.etag, open_copy, failed, self._clock, byte_range)
        try:
            return await reader.open()
        except ObjectMissing as error:
            raise CopyUnreadable(f"{record.bucket}/{record.key}: no copy could be read") from error

    async def find_without_metadata(self, bucket: str, key: str) -> tuple[ObjectStat, list[tuple[str, str]]] | None:
        """Degraded mode (no metadata database): the object ``key`` of ``bucket`` as the first
        store, in configuration order, that has it at its default location
        (``location_for``) describes it, and the places to read it from: that store's, then
        the later stores' default locations. None when no store has it; the last store
        error when none answered. Objects whose location was escaped differently or moved
        are not found."""
        names = list(self._stores)
        last_error: Exception | None = None
        for index, name in enumerate(names):
            location = self._stores[name].location_for(bucket, key)
            try:
                stat = await self._stores[name].stat(location)
            except ObjectMissing:
                continue
            except (StoreUnavailable, StoreMisconfigured) as error:
                if isinstance(error, StoreUnavailable):
                    self.health.record_failure(name, str(error))
                last_error = error
                continue
            later = [(other, self._stores[other].location_for(bucket, key)) for other in names[index + 1:]]
            return stat, [(name, location), *later]
        if last_error is not None:
            raise last_error
        return None

    async def open_places(
        self, places: Sequence[tuple[str, str]], size: int, etag: str | None, byte_range: tuple[int, int] | None
    ) -> FailoverReader:
        """Degraded mode: an opened reader of ``size`` bytes (or a range) from whichever of
        ``places`` (store, location) holds them, as ``open_copies`` without metadata (a
        place holding another length, or another ETag where both are known, is skipped)."""

        def open_copy(store: str, location: str, wanted: tuple[int, int] | None) -> Deferred[IObjectReader]:
            return self._stores[store].open_read(location, wanted)

        def failed(store: str, error: Exception) -> None:
            self.read_counters.failovers[store] += 1
            if isinstance(error, StoreUnavailable):
                self.health.record_failure(store, str(error))

        reader = FailoverReader(places, size, etag, open_copy, failed, self._clock, byte_range)
        try:
            return await reader.open()
        except ObjectMissing as error:
            raise CopyUnreadable(f"no store could read {size} bytes at {places[0][1]!r}") from error

    def _copy_missing(self, record: ObjectRecord, copy: CopyRecord, error: Exception) -> None:
        """Count and log a copy a read found missing or damaged, and forget it in the
        background (a busy database only delays that to the next read that finds it)."""
        self.read_counters.copies_missing[copy.store] += 1
        self._log.error(
            "Copy of {bucket}/{key} on store {store} at {location} is missing or damaged: {error}",
            bucket=record.bucket, key=record.key, store=copy.store, location=copy.location, error=str(error),
        )

        def forgotten(was_live: bool) -> None:
            if was_live:
                self._log.info(
                    "Forgot the copy of {bucket}/{key} on store {store}",
                    bucket=record.bucket, key=record.key, store=copy.store,
                )

        def not_forgotten(failure: Failure) -> None:
            self._log.warn(
                "Could not forget the missing copy of {bucket}/{key} on store {store}: {error}",
                bucket=record.bucket, key=record.key, store=copy.store, error=str(failure.value),
            )

        self._metadata.mark_copy_missing(record.bucket, record.key, copy).addCallbacks(forgotten, not_forgotten)

    async def open(self, record: ObjectRecord, byte_range: tuple[int, int] | None) -> IObjectReader:
        """A reader of the object's bytes (or a range); CopyUnreadable when its store has
        no such bytes or another length of them."""
        expected = record.size if byte_range is None else byte_range[1] - byte_range[0] + 1
        try:
            with self.store_calls(record.store):
                reader = await self._stores[record.store].open_read(record.location, byte_range)
        except ObjectMissing as error:
            self._log.error(
                "Object {bucket}/{key} is missing from store {store} at {location}",
                bucket=record.bucket, key=record.key, store=record.store, location=record.location,
            )
            raise CopyUnreadable(f"{record.bucket}/{record.key} is missing from store {record.store}") from error
        reader = _HealthReportingReader(reader, record.store, self.health)
        if reader.length != expected:
            reader.cancel()
            self._log.error(
                "Object {bucket}/{key} on store {store} has {actual} bytes where {expected} were expected",
                bucket=record.bucket, key=record.key, store=record.store, actual=reader.length, expected=expected,
            )
            raise CopyUnreadable(f"{record.bucket}/{record.key} on store {record.store} has another length")
        return reader

    # -- deleting -----------------------------------------------------------------------------

    async def delete(self, bucket: str, key: str) -> ObjectRecord | None:
        """Forget one object (if any), release its quota and remove its bytes."""
        async with self._locks.hold((bucket, key)):
            removed = await self._metadata.delete_object(bucket, key)
            if removed is not None:
                await self._delete_bytes(removed)
        return removed

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
