"""The placement engine: reserve room, write, commit, open and delete objects' bytes on the stores.

No HTTP and no S3 calls here: failures are the stores' errors (StoreUnavailable,
StoreMisconfigured, ObjectMissing) and placement's own (NoRoom, CopyUnreadable);
the S3 layer maps them to S3 errors (s3.placement_errors).
"""

from __future__ import annotations

from collections import Counter
from contextlib import asynccontextmanager, contextmanager
from typing import (
    Any,
    AsyncIterator,
    Awaitable,
    Callable,
    Collection,
    Coroutine,
    Iterator,
    Mapping,
    Sequence,
    TypeVar,
)

import attrs
from twisted.internet.defer import Deferred, DeferredList, ensureDeferred
from twisted.internet.interfaces import IConsumer, IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from s3orchestrator.auth.payload import VerifiedPayload
from s3orchestrator.config import NORMAL, PlacementPolicy
from s3orchestrator.jobs.health import StoreHealth
from s3orchestrator.metadata.claims import (
    DELETE_CLAIM_LEASE,
    WRITE_CLAIM_LEASE,
    LocationClaimed,
    fresh_holder,
    write_holder,
)
from s3orchestrator.metadata.interface import IMetadataStore
from s3orchestrator.metadata.records import CopyRecord, IntentPlan, NewCopy, ObjectRecord, Reservation, StoreUsage
from s3orchestrator.placement.bodies import ReaderBody
from s3orchestrator.placement.body import RequestBody
from s3orchestrator.placement.errors import CapReached, CopyUnreadable, LocationBusy, NoRoom, ObjectLost
from s3orchestrator.placement.locks import KeyLocks
from s3orchestrator.placement.moves import CopyMoves
from s3orchestrator.placement.quorum import CopyWrites
from s3orchestrator.placement.reader import FailoverReader, order_copies
from s3orchestrator.placement.retry import CleanupRetrier
from s3orchestrator.placement.tee import Tee
from s3orchestrator.routing import choose_store, choose_stores
from s3orchestrator.stores.interface import (
    IObjectReader,
    IObjectStore,
    IObjectWrite,
    ObjectMissing,
    ObjectStat,
    StoreMisconfigured,
    StoreUnavailable,
)
from s3orchestrator.traffic.caps import CAP_NAMES, CAPS, READ_CAPS, WRITE_CAPS, describe
from s3orchestrator.traffic.ledger import TrafficLedger

T = TypeVar("T")

#: Seconds a store has to start its copy's write before the tee gives up on it.
TEE_START_TIMEOUT = 30.0
#: Seconds a write waits for its location to be free of other writes' and cleanups'
#: claims before it gives up (LocationBusy: 503 SlowDown, which clients retry)...
CLAIM_WAIT = 30.0
#: ...polling the database first after this many seconds, then twice as long each time, up to the last.
CLAIM_POLL = (0.02, 0.5)


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


@attrs.frozen
class Replicated:
    """What one ``replicate`` did: ``copies`` made of ``size`` bytes in all, ``missing`` still."""

    copies: int
    size: int
    missing: int


def record_for(bucket: str, key: str) -> ObjectRecord:
    """A record naming only an object's key (what undoing a failed write needs of it)."""
    return ObjectRecord(bucket=bucket, key=key, store="", location="", size=0, etag="", content_type="",
                        last_modified_ms=0)


def _claims_of(reservations: Sequence[Reservation], locations: Sequence[str]) -> dict[tuple[str, str], str]:
    """The claims of a write's copies (see metadata.claims), by (store, location)."""
    return {(reservation.store, location): write_holder(reservation.id)
            for reservation, location in zip(reservations, locations, strict=True)}


def _may_leave_bytes(write: IObjectWrite | None) -> bool:
    """Whether a copy's write that failed may have left bytes at its location (an
    unstaged one that may have replaced it); one that never started left none."""
    return write is not None and not write.location_intact


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


class Placement(CopyMoves):
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
        policy: Callable[[str], PlacementPolicy] = lambda bucket: PlacementPolicy(),
        zones: Callable[[], Mapping[str, str]] = dict,
        traffic: TrafficLedger | None = None,
        modes: Callable[[], Mapping[str, str]] = dict,
        imported: Callable[[str, str], Sequence[tuple[str, str]]] = lambda bucket, key: (),
    ) -> None:
        self._metadata = metadata
        #: (store, location) where an import may have put an object (degraded mode's reads).
        self._imported = imported
        #: The instance (``server.instance_id``) owning this process's claims, as it
        #: owns its reservations and intents.
        self.owner: str = metadata.instance_id
        #: The stores' monthly traffic and caps (None: no caps).
        self.traffic = traffic
        self._background: set[Deferred[None]] = set()
        # Read at each write, so a reload (SIGHUP) applies to the next one.
        self.policy = policy
        self._zones = zones
        # Stores' modes (config.STORE_MODES; absent: normal), read at each write.
        self._modes = modes
        self._stores = stores
        self.routing_strategy = routing_strategy
        self._clock = clock
        self._locks = locks
        self.health = health
        self.read_counters = ReadCounters()
        # Metadata cleanups a busy database refused, retried in the background.
        self.cleanups = CleanupRetrier(clock)

    # -- monthly caps -------------------------------------------------------------------------

    def write_capped(self) -> tuple[frozenset[str], frozenset[str]]:
        """Stores over a monthly write cap: in hard mode (no new copies), in soft mode (last resort)."""
        return (frozenset(), frozenset()) if self.traffic is None else self.traffic.write_capped()

    def _over_soft_cap(self, reservations: Sequence[Reservation], soft: frozenset[str]) -> None:
        """Say (once a period) that a store over a soft write cap takes a copy all the same."""
        for reservation in reservations:
            if reservation.store in soft and self.traffic is not None:
                self.traffic.say_once(
                    reservation.store, "write over cap", "Store {store} is over a monthly write cap and takes"
                    " a new copy anyway, no other store can (cap_mode soft; said once a period)",
                )

    def _caps_reached(self, stores: Collection[str], kinds: frozenset[str]) -> str:
        """Which caps of ``kinds`` keep ``stores`` out, as a client may be told."""
        assert self.traffic is not None
        reached = {store: self.traffic.reached(store) & kinds for store in sorted(stores)}
        described = [describe(store, min(caps, key=CAPS.index)) for store, caps in reached.items() if caps]
        return "; ".join(described) or "a monthly usage cap was reached"

    def closed(self) -> frozenset[str]:
        """Stores that take no new copies now: those in mode readonly or drain."""
        return frozenset(name for name, mode in self._modes().items() if mode != NORMAL)

    # -- room ---------------------------------------------------------------------------------

    async def reserve(
        self, size: int, only_store: str | None = None, intent_for: tuple[str, str] | None = None
    ) -> Reservation:
        """Reserve ``size`` bytes on a healthy store chosen by the routing strategy, or on
        ``only_store`` whatever its health; NoRoom when none has room. With ``intent_for``
        (bucket, key), the write intent of that object's bytes on the chosen store is
        recorded in the same transaction (see ``intent_plan``) and its location claimed,
        waiting while another holds it (``_claiming``)."""
        healthy = self.health.healthy() - self.closed() if only_store is None else frozenset({only_store})
        # An upload's parts go to its store whatever its caps (it finishes there).
        excluded, last = self.write_capped() if only_store is None else (frozenset(), frozenset())
        capped_out: list[bool] = []

        def choose(usage: Sequence[StoreUsage]) -> Sequence[str]:
            chosen = choose_store(self.routing_strategy, usage, size, healthy, excluded, last)
            capped_out.append(chosen is None and bool(excluded)
                              and choose_store(self.routing_strategy, usage, size, healthy) is not None)
            return () if chosen is None else (chosen,)

        if intent_for is None:
            reserved = await self._metadata.reserve_copies(size, choose)
        else:
            reserved = await self._claiming(lambda: self._metadata.reserve_copies(
                size, choose, self.intent_plan(*intent_for)))
        if not reserved:
            if capped_out and capped_out[-1]:
                raise CapReached(self._caps_reached(excluded, WRITE_CAPS))
            raise NoRoom(f"no store has room for {size} bytes")
        self._over_soft_cap(reserved, last)
        return reserved[0]

    def intent_plan(self, bucket: str, key: str) -> IntentPlan:
        """The write intents of ``bucket``/``key``'s bytes, for ``metadata.reserve_copies``:
        one per chosen store at the store's location for the key, owned by this process's
        instance (the metadata store's, for as long as its lease lives). The commit of a copy (``commit_object``,
        ``commit_copies``, ``add_copy``, with its reservation) drops its intent;
        ``release`` drops it once a failed write's bytes are gone or queued; the reaper
        resolves those a crash left."""
        return IntentPlan(
            bucket=bucket,
            key=key,
            locate=lambda store: self._stores[store].location_for(bucket, key),
        )

    async def reserve_copies(self, size: int, policy: PlacementPolicy, intent_for: tuple[str, str],
                             exclude: frozenset[str] = frozenset()) -> tuple[Reservation, ...]:
        """Reserve ``size`` bytes on up to ``policy.replicas`` healthy stores (none of
        ``exclude``) spread over zones, with the write intent of ``intent_for``'s
        (bucket, key) bytes on each and its location claimed, in one transaction
        (waiting while another holds one, see ``_claiming``); at least ``write_quorum`` of
        them, else nothing is kept and StoreUnavailable (stores with room are down)
        or NoRoom is raised. Readonly and drain stores are left out."""
        exclude = exclude | self.closed()
        healthy = self.health.healthy() - exclude
        zones = self._zones()
        excluded, last = self.write_capped()
        with_room: list[int] = []
        uncapped: list[int] = []

        def choose(usage: Sequence[StoreUsage]) -> Sequence[str]:
            candidates = [store for store in usage if store.name not in exclude]
            with_room.append(len(choose_stores(self.routing_strategy, candidates, size, None, policy.replicas)))
            uncapped.append(len(choose_stores(self.routing_strategy, candidates, size, healthy, policy.replicas)))
            chosen = choose_stores(self.routing_strategy, candidates, size, healthy, policy.replicas, zones,
                                   excluded, last)
            return chosen if len(chosen) >= policy.write_quorum else ()

        reservations = await self._claiming(
            lambda: self._metadata.reserve_copies(size, choose, self.intent_plan(*intent_for))
        )
        if reservations:
            self._over_soft_cap(reservations, last)
            return reservations
        if excluded - exclude and uncapped and uncapped[-1] >= policy.write_quorum:
            raise CapReached(self._caps_reached(excluded - exclude, WRITE_CAPS))
        if with_room and with_room[-1] >= policy.write_quorum:
            raise StoreUnavailable(
                f"fewer than {policy.write_quorum} stores with room for {size} bytes are up"
            )
        raise NoRoom(f"fewer than {policy.write_quorum} stores have room for {size} bytes")

    async def _claiming(self, reserve: Callable[[], Awaitable[T]]) -> T:
        """``reserve()``'s result, run again while a location it claims is another's
        (another write's, or a cleanup's: see metadata.claims), polling with backoff
        through the clock for up to ``CLAIM_WAIT`` seconds, then LocationBusy."""
        delay, longest = CLAIM_POLL
        waited = 0.0
        while True:
            try:
                return await reserve()
            except LocationClaimed as error:
                if waited >= CLAIM_WAIT:
                    self._log.warn("Gave up waiting {waited}s for a claimed location: {error}",
                                   waited=waited, error=str(error))
                    raise LocationBusy(str(error)) from error
                await deferLater(self._clock, delay, lambda: None)
                waited += delay
                delay = min(delay * 2, longest)

    @asynccontextmanager
    async def claimed(self, store: str, *locations: str) -> AsyncIterator[str]:
        """Hold a claim of every one of ``locations`` on ``store`` (taken at once, waiting
        as writes do) for the body of an ``async with``, which gets the claim's holder:
        for writes without a reservation of their own (CompleteMultipartUpload's object)
        and for the multipart operations' names (see s3.multipart)."""
        holder = fresh_holder()

        async def claim() -> None:
            expires_ms = int((self._clock.seconds() + WRITE_CLAIM_LEASE) * 1000)
            if not await self._metadata.claim_locations(store, locations, holder, self.owner, expires_ms):
                raise LocationClaimed(store, ", ".join(locations))

        await self._claiming(claim)
        try:
            yield holder
        finally:
            await self._end_claims([holder])

    async def settle(self, reservations: Sequence[Reservation]) -> None:
        """End the claims of committed writes' reservations, their bytes in place."""
        await self._end_claims([write_holder(reservation.id) for reservation in reservations])

    async def _end_claims(self, holders: Sequence[str]) -> None:
        """Drop claims (later, if the database is busy now). Other failures are logged, not
        raised (what the claims guarded is settled): the claims then last their lease."""
        what = f"ending the claims {', '.join(holders)}"
        try:
            await self.cleanups.run(what, lambda: self._metadata.end_claims(holders))
        except Exception:
            self._log.failure("Failed {what}", what=what)

    async def pick_store(self, size: int) -> str:
        """The healthy store the routing strategy would put ``size`` bytes on now,
        without reserving anything; NoRoom when none has room."""
        usage = await self._metadata.store_usage()
        excluded, last = self.write_capped()
        healthy = self.health.healthy() - self.closed()
        chosen = choose_store(self.routing_strategy, usage, size, healthy, excluded, last)
        if chosen is None:
            if choose_store(self.routing_strategy, usage, size, healthy) is not None:
                raise CapReached(self._caps_reached(excluded, WRITE_CAPS))
            raise NoRoom(f"no store has room for {size} bytes")
        return chosen

    async def release(self, reservation: Reservation, leftover: str | None = None) -> None:
        """Give back a reservation whose write failed, with its write intent (later, if the
        database is busy now). ``leftover``: a location on its store where the write's
        bytes may remain; they are queued for cleanup in the same transaction and removed."""
        await self.cleanups.run(
            f"release of reservation {reservation.id} on store {reservation.store}",
            lambda: self._metadata.release(reservation.id, leftover),
        )
        if leftover is not None:
            await self._delete_bytes(reservation.store, leftover, reservation.size, queued=True)

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
        """Stream ``body`` to the stores chosen by the routing strategy (as many as the
        bucket's placement asks for) and commit it as ``bucket``/``key``, replacing
        any object there; the committed record."""
        policy = self.policy(bucket)
        if policy.replicas > 1:
            return await self._write_copies(bucket, key, body, new, policy)
        reservation = await self.reserve(body.length, intent_for=(bucket, key))
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
                settled = await self.commit_write(write, record, reservation, before_done=body.release_tail)
        except BaseException:
            await self.release(reservation)
            raise
        if not settled:
            await self.settle([reservation])
        return record

    async def _write_copies(
        self, bucket: str, key: str, body: RequestBody, new: NewObject, policy: PlacementPolicy
    ) -> ObjectRecord:
        """``write`` of several copies: the body teed to every chosen store, the object
        committed once ``write_quorum`` copies are durable; the copies still being
        written then finish in the background (``_finish_late_copy``) and those that
        fail, or were never chosen, are left to the replicator."""
        reservations = await self.reserve_copies(body.length, policy, (bucket, key))
        tee = Tee(body, len(reservations), self._clock, TEE_START_TIMEOUT)
        locations = [self._stores[r.store].location_for(bucket, key) for r in reservations]
        writes: list[IObjectWrite | None] = []
        for reservation, location, branch in zip(reservations, locations, tee.branches, strict=True):
            try:
                with self.store_calls(reservation.store):
                    writes.append(self._stores[reservation.store].start_write(location, branch, body.length))
            except (StoreUnavailable, StoreMisconfigured):
                branch.stopProducing()
                writes.append(None)

        def copy_failed(index: int, failure: Failure) -> None:
            tee.branches[index].stopProducing()
            store = reservations[index].store
            if failure.check(StoreUnavailable):
                self.health.record_failure(store, failure.getErrorMessage())
            self._log.warn("Copy of {bucket}/{key} on store {store} failed: {error}",
                           bucket=bucket, key=key, store=store, error=failure.getErrorMessage())

        copies = CopyWrites(writes, policy.write_quorum, copy_failed)
        committed = False
        try:
            payload = await _verified_unless_store_fails(tee.branches[0].verified, copies.reached)
            record = ObjectRecord(
                bucket=bucket, key=key, store="", location="", size=payload.size, etag=payload.md5_hex,
                content_type=new.content_type, last_modified_ms=int(self._clock.seconds() * 1000),
                headers=dict(new.headers), user_metadata=dict(new.user_metadata),
            )
            async with self._locks.hold((bucket, key)):
                for branch in tee.branches:
                    branch.release_tail()
                await copies.reached
                # What has settled now: the commit records these; the rest finish late.
                done, failed = sorted(copies.done), list(copies.failed)
                late = [index for index in range(len(writes)) if index not in done and index not in failed]
                record = attrs.evolve(record, store=reservations[done[0]].store, location=locations[done[0]])
                previous_copies = await self._metadata.object_copies(bucket, key)
                new_copies = [NewCopy(reservations[i].store, locations[i], reservations[i].id) for i in done]
                previous = await self._metadata.commit_copies(
                    record, new_copies, missing=len(done) < policy.replicas
                )
                committed = True
                await self._publish_copies(record, [writes[i] for i in done], previous,
                                           _claims_of(reservations, locations))
                # The commit queued the old copies for cleanup; those where a copy of this
                # write is (still being written, or failed) are left to the cleanup job.
                ours = {(r.store, location) for r, location in zip(reservations, locations, strict=True)}
                await self._discard_copies(previous_copies, ours)
            await self.settle([reservations[index] for index in done])
        except BaseException:
            copies.reached.addErrback(lambda _: None)
            if not committed:
                await self._undo_copies(record_for(bucket, key), copies, reservations, locations)
            else:
                # Committed, then removed as unpublishable: the copies still going stop too.
                for index in copies.pending():
                    write = writes[index]
                    if write is not None:
                        write.abort()
                for reservation in reservations:
                    await self.release(reservation)
            raise
        for index in failed:
            await self._release_copy(record, reservations[index], locations[index], _may_leave_bytes(writes[index]))
        for index in late:
            write = writes[index]
            assert write is not None
            self.background(self._finish_late_copy(
                record, write, copies.outcome(index), reservations[index], locations[index],
            ), f"copy of {bucket}/{key} on store {reservations[index].store}")
        return record

    async def _undo_copies(
        self, record: ObjectRecord, copies: CopyWrites, reservations: Sequence[Reservation], locations: Sequence[str]
    ) -> None:
        """Stop and remove every copy of a write that will not be committed, giving back
        its reservation; where one may have replaced the key's object in place (an
        upstream PUT), that object is forgotten and the copy's bytes queued for cleanup."""
        for index, write in enumerate(copies.writes):
            replaced = write is not None and (
                (index in copies.done and not write.staged) or (index in copies.failed and not write.location_intact)
            )
            if write is not None:
                write.abort()
            if replaced:
                await self._forget_replaced_in_place(
                    attrs.evolve(record, store=reservations[index].store, location=locations[index])
                )
            await self._release_copy(record, reservations[index], locations[index], replaced)

    async def _publish_copies(
        self, record: ObjectRecord, writes: Sequence[IObjectWrite | None], previous: ObjectRecord | None,
        claims: Mapping[tuple[str, str], str],
    ) -> None:
        """Put committed copies in place; if one cannot be, the object is removed
        (never an object whose copies differ). ``claims``: the write's claims, by
        (store, location)."""
        try:
            for write in writes:
                if write is not None:
                    await write.publish()
        except BaseException:
            self._log.error("Could not publish a copy of {bucket}/{key}; removing the object",
                            bucket=record.bucket, key=record.key)
            for write in writes:
                if write is not None:
                    write.abort()  # what is staged and unpublished goes
            copies = await self._metadata.object_copies(record.bucket, record.key)
            removed = await self._metadata.delete_object(record.bucket, record.key)
            if removed is not None:
                await self._discard_copies(copies, claims=claims)
            raise

    async def _finish_late_copy(
        self, record: ObjectRecord, write: IObjectWrite, done: Deferred[None], reservation: Reservation, location: str
    ) -> None:
        """A copy still being written when its object was committed: added as a live copy
        once durable (if the object is still that one), else undone; the replicator
        makes it again if it failed."""
        try:
            await done
        except BaseException:
            await self._release_copy(record, reservation, location, _may_leave_bytes(write))
            return
        async with self._locks.hold((record.bucket, record.key)):
            if await self._metadata.add_copy(record, NewCopy(reservation.store, location, reservation.id)):
                try:
                    await write.publish()
                except BaseException:
                    self._log.error("Could not publish the copy of {bucket}/{key} on store {store}",
                                    bucket=record.bucket, key=record.key, store=reservation.store)
                    raise
                finally:
                    await self.settle([reservation])
                live = await self.live_sources(record)
                if len(live) >= self.policy(record.bucket).replicas:
                    await self._metadata.unqueue_replication(record.bucket, record.key)
                return
        await self._drop_unwanted_copy(record, write, reservation, location)

    async def _drop_unwanted_copy(
        self, record: ObjectRecord, write: IObjectWrite, reservation: Reservation, location: str
    ) -> None:
        """A durable copy ``add_copy`` refused (its object was replaced or deleted, or has
        a copy on that store already): a staged one is aborted, an unstaged one removed."""
        if write.staged:
            write.abort()
        await self._release_copy(record, reservation, location, leftover=not write.staged)

    async def _release_copy(self, record: ObjectRecord, reservation: Reservation, location: str,
                            leftover: bool) -> None:
        """Give back the reservation (and write intent) of a copy that will not join
        ``record``'s object. ``leftover``: its write may have left bytes at ``location``;
        unless a live copy or another write is there now, they are queued for cleanup in
        the same transaction and removed (``release``)."""
        async with self._locks.hold((record.bucket, record.key)):
            in_use = leftover and await self._metadata.location_in_use(reservation.store, location, reservation.id)
            await self.release(reservation, leftover=location if leftover and not in_use else None)

    def background(self, work: Coroutine[Any, Any, None], what: str) -> None:
        """Run ``work`` without waiting for it; a failure is logged (it never escapes)."""

        def failed(failure: Failure) -> None:
            self._log.failure("Background {what} failed", failure, what=what)

        running = ensureDeferred(work).addErrback(failed)
        if not running.called:
            self._background.add(running)
            running.addBoth(lambda _: self._background.discard(running))

    def settled(self) -> Deferred[None]:
        """Fires once the background work running now (late copies) has finished."""
        return DeferredList(list(self._background)).addCallback(lambda _: None)

    async def commit_write(
        self,
        write: IObjectWrite,
        record: ObjectRecord,
        reservation: Reservation,
        before_done: Callable[[], None] = lambda: None,
    ) -> bool:
        """Under the key's lock: wait for the store, commit ``record`` (turning the
        reservation into usage), publish the bytes, then drop the bytes the commit
        replaced. ``before_done`` runs first under the lock (PutObject releases its
        held-back tail there). True when the commit also ended the write's claim
        (``settle``): an unstaged write's bytes are in place once ``done`` fired, so
        nothing is left for the claim to guard once the commit describes them."""
        settle = not write.staged
        await self.commit_object_write(
            write, record, lambda: self._metadata.commit_write(reservation.id, record, settle), before_done,
            write_holder(reservation.id), commit_reads_copies=True,
        )
        return settle

    async def commit_object_write(
        self,
        write: IObjectWrite,
        record: ObjectRecord,
        commit: Callable[[], Awaitable[Any]],
        before_done: Callable[[], None] = lambda: None,
        holder: str | None = None,
        commit_reads_copies: bool = False,
    ) -> None:
        """``commit_write`` with another metadata commit: ``commit()`` stores ``record``
        (CompleteMultipartUpload's commit); with ``commit_reads_copies`` it fires with
        the replaced object's copies (``metadata.commit_write``), else they are read
        before. ``holder``: the write's claim of the record's location (see metadata.claims)."""
        async with self._locks.hold((record.bucket, record.key)):
            before_done()
            previous_copies: Sequence[CopyRecord] = (
                () if commit_reads_copies else await self._metadata.object_copies(record.bucket, record.key))
            try:
                await write.done
            except BaseException:
                if not write.location_intact:
                    # The store may have replaced the key's object in place even though
                    # its answer was lost (timeout, reset): never pair old record, new bytes.
                    await self._forget_replaced_in_place(record)
                    await self._delete_bytes(record.store, record.location, record.size, holder=holder)
                raise
            try:
                committed = await commit()
            except BaseException:
                write.abort()
                if not write.staged:
                    await self._forget_replaced_in_place(record)
                raise
            if commit_reads_copies:
                previous_copies = committed
            await self._publish(write, record, previous_copies, holder)

    async def copy(self, source: ObjectRecord, target: ObjectRecord) -> ObjectRecord:
        """Commit ``target``, a copy of ``source`` under another key or with other metadata,
        the committed record. A copy onto itself (same key) keeps its bytes where they are
        (every copy of them); any other is placed by the routing strategy on as many stores
        as the bucket's placement asks for: copied within a store that holds a copy of the
        source, streamed through the daemon to another. ObjectLost when the source has
        no live copy left."""
        if (source.bucket, source.key) == (target.bucket, target.key):
            return await self._copy_onto_itself(source, target)
        sources = await self.live_sources(source)
        if not sources:
            raise ObjectLost(f"{source.bucket}/{source.key} has no live copy left")
        policy = self.policy(target.bucket)
        if policy.replicas == 1:
            reservation = await self.reserve(source.size, intent_for=(target.bucket, target.key))
            try:
                location = self._stores[reservation.store].location_for(target.bucket, target.key)
                placed = attrs.evolve(target, store=reservation.store, location=location)
                if placed.store != source.store and self._read_capped({source.store}):
                    source = self._stream_source(await self.live_sources(source), source)
                with self.store_calls(reservation.store):
                    write = await self._start_copy(source, placed)
                    settled = await self.commit_write(write, placed, reservation)
            except BaseException:
                await self.release(reservation)
                raise
            if not settled:
                await self.settle([reservation])
            return placed
        return await self._copy_copies(source, sources, target, policy)

    async def _copy_onto_itself(self, source: ObjectRecord, target: ObjectRecord) -> ObjectRecord:
        """A metadata-only change: ``target`` committed with the source's live copies."""
        live = [copy for copy in await self._metadata.object_copies(source.bucket, source.key) if copy.state == "live"]
        if not live:
            raise ObjectLost(f"{source.bucket}/{source.key} has no live copy left")
        live.sort(key=lambda copy: (copy.store, copy.location) != (source.store, source.location))
        stores = tuple(copy.store for copy in live)
        reservations = await self._metadata.reserve_copies(0, lambda usage: stores)
        try:
            by_store = {copy.store: copy.location for copy in live}
            new_copies = [NewCopy(r.store, by_store.get(r.store, source.location), r.id) for r in reservations]
            missing = len(new_copies) < self.policy(target.bucket).replicas
            async with self._locks.hold((target.bucket, target.key)):
                await self._metadata.commit_copies(target, new_copies, missing)
        except BaseException:
            for reservation in reservations:
                await self.release(reservation)
            raise
        return target

    async def _copy_copies(self, source: ObjectRecord, sources: Mapping[str, ObjectRecord], target: ObjectRecord,
                           policy: PlacementPolicy) -> ObjectRecord:
        """``copy`` to several stores at once (from ``sources``, the source's live copies
        by store), committed when every copy settled if at least ``write_quorum`` of them
        are durable (the others are left to the replicator)."""
        reservations = await self.reserve_copies(source.size, policy, (target.bucket, target.key))
        placed = [attrs.evolve(target, store=r.store,
                               location=self._stores[r.store].location_for(target.bucket, target.key))
                  for r in reservations]
        writes: list[IObjectWrite | None] = []
        for reservation, target_copy in zip(reservations, placed, strict=True):
            try:
                with self.store_calls(reservation.store):
                    source_copy = sources.get(reservation.store) or self._stream_source(sources, source)
                    writes.append(await self._start_copy(source_copy, target_copy))
            except (StoreUnavailable, StoreMisconfigured, CopyUnreadable, CapReached):
                writes.append(None)

        def copy_failed(index: int, failure: Failure) -> None:
            if failure.check(StoreUnavailable):
                self.health.record_failure(reservations[index].store, failure.getErrorMessage())

        copies = CopyWrites(writes, policy.write_quorum, copy_failed)
        copies.reached.addErrback(lambda _: None)
        await copies.finished
        locations = [copy.location for copy in placed]
        if len(copies.done) < policy.write_quorum:
            await self._undo_copies(target, copies, reservations, locations)
            raise StoreUnavailable(f"fewer than {policy.write_quorum} copies of {target.bucket}/{target.key}"
                                   " could be made")
        done = sorted(copies.done)
        record = placed[done[0]]
        try:
            async with self._locks.hold((target.bucket, target.key)):
                previous_copies = await self._metadata.object_copies(target.bucket, target.key)
                previous = await self._metadata.commit_copies(
                    record, [NewCopy(reservations[i].store, locations[i], reservations[i].id) for i in done],
                    missing=len(done) < policy.replicas,
                )
                await self._publish_copies(record, [writes[i] for i in done], previous,
                                           _claims_of(reservations, locations))
                # The commit queued the old copies for cleanup; those where a copy of this
                # write is (still being written, or failed) are left to the cleanup job.
                ours = {(r.store, location) for r, location in zip(reservations, locations, strict=True)}
                await self._discard_copies(previous_copies, ours)
        except BaseException:
            await self._undo_copies(target, copies, reservations, locations)
            raise
        await self.settle([reservations[index] for index in done])
        for index in copies.failed:
            await self._release_copy(record, reservations[index], locations[index], _may_leave_bytes(writes[index]))
        return record

    async def replicate(self, bucket: str, key: str) -> Replicated:
        """Make the copies ``bucket``/``key`` lacks (its bucket's ``replicas`` less its live
        copies) on other healthy stores with room, each copied from a live copy (within
        the daemon, a store's copy read and streamed to the other); each one committed
        as it is done. The object leaves the replication queue once it has every copy,
        is gone, or is lost (no live copy to copy from: see ``lost_objects``). Raises
        NoRoom or StoreUnavailable when no store can take a copy."""
        record = await self._metadata.get_object(bucket, key)
        sources = {} if record is None else await self.live_sources(record)
        wanted = self.policy(bucket).replicas - len(sources)
        if record is None or wanted <= 0:
            await self._metadata.unqueue_replication(bucket, key)
            return Replicated(0, 0, 0)
        if not sources:
            self._log.error("Cannot replicate {bucket}/{key}: it has no live copy left (lost); dropped from the queue",
                            bucket=bucket, key=key)
            await self._metadata.unqueue_replication(bucket, key)
            return Replicated(0, 0, 0)
        self._readable(list(sources.values()), lambda source: source.store)  # CapReached before reserving
        copies = await self._metadata.object_copies(bucket, key)
        reservations = await self._still_wanted(record, await self.reserve_copies(
            record.size, PlacementPolicy(replicas=wanted, write_quorum=1), (bucket, key),
            exclude=frozenset(copy.store for copy in copies),
        ))
        ordered = self._readable(sorted(sources.values(), key=lambda source: not self.health.is_healthy(source.store)),
                                 lambda source: source.store)
        made = copied = 0
        for reservation in reservations:
            if await self._replicate_to(record, ordered, reservation):
                made += 1
                copied += record.size
        if made == wanted:
            await self._metadata.unqueue_replication(bucket, key)
        return Replicated(made, copied, wanted - made)

    async def _still_wanted(self, record: ObjectRecord, reservations: Sequence[Reservation]) -> list[Reservation]:
        """The reservations of new copies of ``record`` still wanted once their locations
        are claimed: a write of the key committed just before may have put a copy there,
        which a store writing in place would lose to the old bytes (a write after waits for
        the claims). The others are released (all, if the object changed)."""
        found = await self._metadata.get_object_copies(record.bucket, record.key)
        same = found is not None and (found[0].etag, found[0].last_modified_ms) == (record.etag,
                                                                                    record.last_modified_ms)
        taken = {copy.store for copy in found[1]} if found is not None and same else set()
        wanted = [reservation for reservation in reservations if same and reservation.store not in taken]
        for reservation in reservations:
            if reservation not in wanted:
                await self.release(reservation)
        return wanted

    async def _replicate_to(
        self, record: ObjectRecord, sources: Sequence[ObjectRecord], reservation: Reservation, settle: bool = True,
        commit_in_place: Callable[[NewCopy], Awaitable[bool]] | None = None,
    ) -> bool:
        """One new copy of ``record`` on the reserved store, from the first source that
        reads; True once committed. The reservation is used or released. Without
        ``settle``, the claim of a committed copy's location (``write_holder``) is the
        caller's to end. ``commit_in_place``: how to commit a copy whose bytes are in
        place once written (an unstaged write: nothing to publish), instead of
        ``add_copy``; True if it did (the claim is then its to end)."""
        store = self._stores[reservation.store]
        copy = NewCopy(reservation.store, store.location_for(record.bucket, record.key), reservation.id)
        target = attrs.evolve(record, store=copy.store, location=copy.location)
        write: IObjectWrite | None = None
        leftover = False  # a failed try may have left bytes at the location
        try:
            for source in sources:
                write = None
                try:
                    with self.store_calls(reservation.store):
                        write = await self._start_copy(source, target)
                        await write.done
                    break
                except (CopyUnreadable, StoreUnavailable, StoreMisconfigured) as error:
                    self._log.warn("Replicating {bucket}/{key} from store {source} to store {target} failed: {error}",
                                   bucket=record.bucket, key=record.key, source=source.store, target=copy.store,
                                   error=str(error))
                    leftover = leftover or _may_leave_bytes(write)
                    write = None
                    if not self.health.is_healthy(copy.store):
                        break
            if write is None:
                await self._release_copy(record, reservation, copy.location, leftover)
                return False
            async with self._locks.hold((record.bucket, record.key)):
                if commit_in_place is not None and not write.staged:
                    if await commit_in_place(copy):
                        await write.publish()  # a no-op, as the write is unstaged
                        return True
                elif await self._metadata.add_copy(record, copy):
                    published = False
                    try:
                        await write.publish()
                        published = True
                    finally:
                        if settle or not published:
                            await self.settle([reservation])
                    return True
        except BaseException:
            await self.release(reservation)
            raise
        await self._drop_unwanted_copy(record, write, reservation, copy.location)
        return False

    async def live_sources(self, record: ObjectRecord) -> dict[str, ObjectRecord]:
        """``record`` at each of its live copies, by store (the copies to read or copy from)."""
        copies = await self._metadata.object_copies(record.bucket, record.key)
        return {copy.store: attrs.evolve(record, store=copy.store, location=copy.location)
                for copy in copies if copy.state == "live"}

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
        caller's preconditions), before any store is asked. ObjectLost (GET and HEAD)
        for an object with no live copy left."""
        if byte_range is None:
            # Headers only: one statement reads record and copies together, and no bytes
            # are paired with them, so no lock (a HEAD's largest cost after the lookup).
            found = self._live(await self._metadata.get_object_copies(bucket, key), bucket, key)
            return None if found is None else (found[0], None)
        async with self._locks.hold((bucket, key)):
            found = self._live(await self._metadata.get_object_copies(bucket, key), bucket, key)
            if found is None:
                return None
            record, copies = found
            wanted = byte_range(record)
            if wanted is not None and wanted[1] < wanted[0]:
                return record, None
            return record, await self.open_copies(record, copies, wanted)

    def _live(
        self, found: tuple[ObjectRecord, tuple[CopyRecord, ...]] | None, bucket: str, key: str
    ) -> tuple[ObjectRecord, tuple[CopyRecord, ...]] | None:
        """``found`` (a record and its live copies, or None); ObjectLost if no copy is live."""
        if found is not None and not found[1]:
            # Logged as an error once, when it became lost; clients retry 500s.
            self._log.warn("Read of {bucket}/{key} refused: the object is lost (no live copy left)",
                           bucket=bucket, key=key)
            raise ObjectLost(f"{bucket}/{key} has no live copy left")
        return found

    async def open_copies(
        self, record: ObjectRecord, copies: Sequence[CopyRecord], byte_range: tuple[int, int] | None
    ) -> FailoverReader:
        """An opened reader of the object's bytes (or a range) from whichever of ``copies``
        works, tried in the bucket's ``read_order``, resuming from another copy if a store
        dies mid-stream. A copy found missing or damaged is counted and let go
        (``mark_copy_missing``: its bytes queued for cleanup, the object for the
        replicator), or kept if it is the object's only live copy (the object recorded
        lost); a store failing counts against its health. When every copy
        fails: a store error (StoreUnavailable first: retrying may work), or ObjectLost
        if every copy was missing or damaged."""
        # An object has at most one copy per store (the copies table's key).
        by_store = {copy.store: copy for copy in copies}
        status = self.health.snapshot()
        capped = self._read_capped(by_store)
        ordered = order_copies(
            [(copy.store, copy.location) for copy in copies], self.policy(record.bucket).read_order,
            self.health.healthy(),
            {name: state.consecutive_failures for name, state in status.items()}, self.health.latency(),
            frozenset(capped),
        )
        ordered = self._readable(ordered, key=lambda copy: copy[0])

        def open_copy(store: str, location: str, wanted: tuple[int, int] | None) -> Deferred[IObjectReader]:
            if store in capped and self.traffic is not None:
                self.traffic.say_once(
                    store, "read over cap", "Store {store} is over its monthly {cap} cap and serves a read"
                    " anyway (cap_mode soft; said once a period)", cap=CAP_NAMES[capped[store]],
                )
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
            self._log.error(
                "Every copy of {bucket}/{key} is missing or damaged ({copies} tried): the object is lost",
                bucket=record.bucket, key=record.key, copies=len(ordered),
            )
            raise ObjectLost(f"{record.bucket}/{record.key}: every copy is missing or damaged") from error

    def _read_capped(self, stores: Collection[str]) -> dict[str, str]:
        """The stores of ``stores`` over a monthly read cap, with the cap."""
        if self.traffic is None:
            return {}
        reached = {store: self.traffic.read_cap(store) for store in stores}
        return {store: cap for store, cap in reached.items() if cap is not None}

    def _stream_source(self, sources: Mapping[str, ObjectRecord], source: ObjectRecord) -> ObjectRecord:
        """The copy a copy to another store streams from: ``source`` (one of the live
        ``sources``), unless its store is over a monthly read cap and another's is not;
        CapReached when every copy is on a store over a hard read cap."""
        candidates = list(sources.values()) or [source]
        capped = self._read_capped({copy.store for copy in candidates})
        candidates.sort(key=lambda copy: (copy.store in capped, copy.store != source.store))
        return self._readable(candidates, lambda copy: copy.store)[0]

    def _readable(self, sources: list[T], key: Callable[[T], str]) -> list[T]:
        """``sources`` (named by ``key``) but those on a store over a monthly read cap in
        hard mode, while another is left; CapReached when none is."""
        traffic = self.traffic
        if traffic is None:
            return sources
        hard = {store for store in self._read_capped({key(source) for source in sources})
                if traffic.caps(store).mode != "soft"}
        readable = [source for source in sources if key(source) not in hard]
        if sources and not readable:
            raise CapReached(self._caps_reached(hard, READ_CAPS))
        return readable

    async def find_without_metadata(self, bucket: str, key: str) -> tuple[ObjectStat, list[tuple[str, str]]] | None:
        """Degraded mode (no metadata database): the object ``key`` of ``bucket`` as the first
        place that has it describes it, and the places to read it from: that one, then the
        later ones. The places: each store's default location (``location_for``), in
        configuration order, then those where an import may have put it (``imported``).
        None when no place has it; the last store error when none answered. Objects whose
        location was escaped differently or moved are not found."""
        places = [(name, store.location_for(bucket, key)) for name, store in self._stores.items()]
        places += [place for place in self._imported(bucket, key) if place[0] in self._stores and place not in places]
        last_error: Exception | None = None
        for index, (name, location) in enumerate(places):
            try:
                stat = await self._stores[name].stat(location)
            except ObjectMissing:
                continue
            except (StoreUnavailable, StoreMisconfigured) as error:
                if isinstance(error, StoreUnavailable):
                    self.health.record_failure(name, str(error))
                last_error = error
                continue
            return stat, places[index:]
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
        """Count and log a copy a read found missing or damaged, and let it go in the
        background (a busy database only delays that to the next read that finds it;
        the replicator's own scan finds the object short of copies meanwhile), unless it
        is the object's only live copy: that one is kept (its store may hand it back: a
        disk mounted again, an upstream's mistaken 404) and the object recorded lost."""
        self.read_counters.copies_missing[copy.store] += 1
        self._log.error(
            "Copy of {bucket}/{key} on store {store} at {location} is missing or damaged: {error}",
            bucket=record.bucket, key=record.key, store=copy.store, location=copy.location, error=str(error),
        )

        def forgotten(live_left: int | None) -> None:
            if live_left:
                self._log.info(
                    "Let go of the copy of {bucket}/{key} on store {store}; the replicator will make it again",
                    bucket=record.bucket, key=record.key, store=copy.store,
                )
            elif live_left == 0:
                self._log.error(
                    "Object {bucket}/{key} is lost: its only live copy (store {store}) is missing or damaged;"
                    " the copy is kept and reads will try it again (its store may hand it back)",
                    bucket=record.bucket, key=record.key, store=copy.store,
                )

        def not_forgotten(failure: Failure) -> None:
            self._log.warn(
                "Could not let go of the missing copy of {bucket}/{key} on store {store}: {error}",
                bucket=record.bucket, key=record.key, store=copy.store, error=str(failure.value),
            )

        self._metadata.mark_copy_missing(record.bucket, record.key, copy, keep_only_copy=True).addCallbacks(
            forgotten, not_forgotten)

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
            copies = await self._metadata.object_copies(bucket, key)
            removed = await self._metadata.delete_object(bucket, key)
            if removed is not None:
                await self._discard_copies(copies)
        return removed

    async def _forget_replaced_in_place(self, record: ObjectRecord) -> None:
        """A store that made a write visible at once replaced the key's previous object
        at ``record``'s store and location; if a live copy of the current object is
        there (whichever of its copies that is), that copy no longer holds its bytes
        (a missing copy beats serving the wrong bytes): with other live copies left, it
        is let go (its location queued for cleanup, the object for the replicator);
        as the only one, the object is forgotten. Called under the key's lock.

        While the database is busy, retried later under the lock, and only if the
        object is still the one replaced (a later PUT may have written a good one)."""
        found = await self._metadata.get_object_copies(record.bucket, record.key)
        if found is None:
            return
        current, live = found
        place = (record.store, record.location)
        clobbered = next((copy for copy in live if (copy.store, copy.location) == place), None)
        if clobbered is None:
            return
        others = len(live) > 1

        async def forget() -> None:
            if others:
                self._log.warn(
                    "Copy of {bucket}/{key} on store {store} at {location} was replaced in place by a"
                    " failed write; letting it go (the other copies remain)",
                    bucket=record.bucket, key=record.key, store=record.store, location=record.location,
                )
                # Not keep_only_copy: these bytes are known to be the failed write's,
                # never the object's again (a lone copy forgets the object instead).
                await self._metadata.mark_copy_missing(record.bucket, record.key, clobbered)
            else:
                await self._metadata.delete_object(record.bucket, record.key)

        async def forget_if_unchanged() -> None:
            async with self._locks.hold((record.bucket, record.key)):
                if await self._metadata.get_object(record.bucket, record.key) == current:
                    await forget()

        await self.cleanups.run(f"forgetting {record.bucket}/{record.key} at {record.store}", forget,
                                forget_if_unchanged)

    async def _publish(
        self, write: IObjectWrite, record: ObjectRecord, previous_copies: Sequence[CopyRecord], holder: str | None
    ) -> None:
        """Put committed bytes in place; then the bytes of the copies they replaced (queued
        by the commit) can go, but where the new bytes replaced them in place. ``holder``:
        the write's claim of the record's location."""
        replaced_in_place = {(record.store, record.location)}
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
                await self._delete_bytes(removed.store, removed.location, removed.size, queued=True, holder=holder)
            await self._discard_copies(previous_copies, replaced_in_place)
            raise
        await self._discard_copies(previous_copies, replaced_in_place)

    async def _discard_copies(
        self, copies: Sequence[CopyRecord], keep: Collection[tuple[str, str]] = (),
        claims: Mapping[tuple[str, str], str] = {},  # noqa: B006 (never changed)
    ) -> None:
        """Remove the bytes of ``copies``, which a metadata commit let go of (and queued for
        cleanup), but those at a ``keep`` (store, location): new bytes are there.
        ``claims``: the caller's claims of locations, by (store, location)."""
        for copy in copies:
            if (copy.store, copy.location) not in keep:
                await self._delete_bytes(copy.store, copy.location, copy.size, queued=True,
                                         holder=claims.get((copy.store, copy.location)))

    async def _delete_bytes(
        self, store: str, location: str, size: int, queued: bool = False, holder: str | None = None
    ) -> None:
        """Remove bytes no object describes: right away (the cleanup queue's fast path),
        then forget what is queued at their location, releasing its usage. Bytes the
        store would not delete stay queued (``queued``: the metadata commit queued them;
        otherwise they are queued now, ``size`` counted as used) for the cleanup job,
        as do those at a location another write or cleanup claims (its bytes may be
        there, see metadata.claims) or where a live copy is again. ``holder``: a claim
        of the location the caller holds already (and keeps); else one is taken and
        ended here."""
        if not queued:
            await self.cleanups.run(
                f"queueing the cleanup of {location} on store {store}",
                lambda: self._metadata.queue_cleanup(store, location, size),
            )
        own_claim = holder is None
        claim = fresh_holder() if holder is None else holder
        try:
            claimed = await self._metadata.claim_cleanup(store, location, claim, self.owner, self.delete_claim_expiry())
        except Exception as error:
            self._log.warn("Could not claim {location} on store {store}; left in the cleanup queue: {error}",
                           location=location, store=store, error=str(error))
            return
        if claimed == "claimed":
            await self._remove_claimed(store, location, claim, own_claim)

    def delete_claim_expiry(self) -> int:
        """When (ms) a claim taken now to delete bytes runs out, should it never be ended."""
        return int((self._clock.seconds() + DELETE_CLAIM_LEASE) * 1000)

    async def _remove_claimed(self, store: str, location: str, claim: str, own_claim: bool = True) -> None:
        """Remove the bytes queued for cleanup at ``location`` on ``store``, which ``claim``
        claims, then forget what is queued there; ``own_claim``: end the claim too (else
        its holder keeps it). Bytes the store would not delete stay queued."""
        try:
            await self._stores[store].delete(location)
        except Exception as error:
            self._log.warn(
                "Could not delete {location} from store {store}; left in the cleanup queue: {error}",
                location=location, store=store, error=str(error),
            )
            if own_claim:
                await self._end_claims([claim])
            return
        await self.cleanups.run(
            f"finishing the cleanup of {location} on store {store}",
            lambda: self._metadata.finish_cleanup(store, location, claim if own_claim else None),
        )
