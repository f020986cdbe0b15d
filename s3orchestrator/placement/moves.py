"""Moving one copy of an object to another store (drain, rebalance): a new copy is made
and committed, then the old one is let go through the cleanup queue, so that quota is
released only once its bytes are gone. Mixed into ``Placement``.

A move costs few metadata transactions: what it starts from can come with the mover's
claim (``ObjectCopies``), and letting the old copy go also ends the new copy's claim,
claims the old location for the removal of its bytes and takes the queued move out of
the queue (``let_go_moved_copy``); where the new copy's bytes are in place as soon as
written (an S3 store's PUT: nothing to publish), that transaction adds it too."""

from __future__ import annotations

from typing import TYPE_CHECKING, Awaitable, Callable, Mapping, Sequence

import attrs

from s3orchestrator.config import PlacementPolicy
from s3orchestrator.jobs.health import StoreHealth
from s3orchestrator.metadata.claims import fresh_holder, write_holder
from s3orchestrator.metadata.interface import NOT_ADDED, IMetadataStore
from s3orchestrator.metadata.records import CopyRecord, NewCopy, ObjectCopies, ObjectRecord, QueuedMove, Reservation
from s3orchestrator.placement.errors import CapReached, LocationBusy, NoRoom
from s3orchestrator.placement.locks import KeyLocks
from s3orchestrator.stores.interface import IObjectStore, StoreUnavailable

#: Outcomes of ``move_copy``: the copy is on another store now; there was no such copy
#: to move (its object was deleted or overwritten, or it left the store otherwise);
#: the move was not wanted any more (its target store holds a copy of the object already).
MOVED, GONE, SKIPPED = "moved", "gone", "skipped"


@attrs.frozen
class Moved:
    """What one ``move_copy`` did: its ``outcome`` (MOVED, GONE or SKIPPED) and, once
    moved, the store the copy went to and the ``size`` bytes copied; ``unqueued``: the
    queued move it was given left the queue, counted as moved, with the old copy."""

    outcome: str
    to_store: str | None = None
    size: int = 0
    unqueued: bool = False


def _same_object(current: ObjectRecord | None, record: ObjectRecord) -> bool:
    return current is not None and (current.etag, current.last_modified_ms) == (record.etag, record.last_modified_ms)


class CopyMoves:
    """``move_copy``, over what ``Placement`` has."""

    _metadata: IMetadataStore
    _stores: Mapping[str, IObjectStore]
    _locks: KeyLocks
    _zones: Callable[[], Mapping[str, str]]
    health: StoreHealth
    policy: Callable[[str], PlacementPolicy]

    if TYPE_CHECKING:
        async def reserve_copies(self, size: int, policy: PlacementPolicy, intent_for: tuple[str, str],
                                 exclude: frozenset[str] = frozenset()) -> tuple[Reservation, ...]: ...

        async def _replicate_to(
            self, record: ObjectRecord, sources: Sequence[ObjectRecord], reservation: Reservation,
            settle: bool = True, commit_in_place: Callable[[NewCopy], Awaitable[bool]] | None = None,
        ) -> bool: ...

        async def settle(self, reservations: Sequence[Reservation]) -> None: ...

        def delete_claim_expiry(self) -> int: ...

        async def _remove_claimed(self, store: str, location: str, claim: str, own_claim: bool = True) -> None: ...

        async def _still_wanted(self, record: ObjectRecord,
                                reservations: Sequence[Reservation]) -> list[Reservation]: ...

    async def move_copy(self, bucket: str, key: str, from_store: str, to_store: str | None = None,
                        found: ObjectCopies | None = None, queued: QueuedMove | None = None) -> Moved:
        """Move the live copy of ``bucket``/``key`` on ``from_store`` to ``to_store``, or to
        the store the routing strategy picks (healthy, with room, in normal mode, within
        monthly caps, holding no copy of the object, in another zone than its other copies
        where one has room): the new copy is read from the old one (or another live copy)
        and added as a live copy; then the old copy is let go (its bytes queued for cleanup
        and removed). A concurrent overwrite or delete wins: the new copy is then dropped,
        or the old one is already gone. Raises NoRoom, CapReached, LocationBusy or
        StoreUnavailable when it cannot be done now (the caller tries again later).
        ``found``: the object as read when the move was claimed (else it is read here);
        ``queued``: the queued move this makes, taken out of the queue with the old copy
        (``Moved.unqueued``)."""
        if found is None:
            found = await self._object_copies(bucket, key)
        record, live, holding = found.record, found.live, found.holding
        if record is None:
            return Moved(GONE)
        old = next((copy for copy in live if copy.store == from_store), None)
        if old is None:
            return Moved(GONE)
        if len(live) > self.policy(bucket).replicas:
            # More copies than wanted (a move cut short after its new copy was added): the
            # old one just goes.
            return await self._let_go(record, old, None, (), queued)
        if to_store is not None and to_store in holding:
            return Moved(SKIPPED)
        exclude = holding if to_store is None else holding | (frozenset(self._stores) - {to_store})
        reservation = await self._reserve_move(record, live, old, exclude)
        if not await self._still_wanted(record, [reservation]):
            if not _same_object(await self._metadata.get_object(bucket, key), record):
                return Moved(GONE)
            raise LocationBusy(f"{bucket}/{key} got a copy on store {reservation.store} meanwhile")
        sources = [old, *(copy for copy in live if copy is not old)]
        ordered = [attrs.evolve(record, store=copy.store, location=copy.location) for copy in sources]
        claim = fresh_holder()
        ended: list[str | None] = []  # what the end of the move answered, if it added the new copy

        async def add_and_let_go(copy: NewCopy) -> bool:
            # Bytes in place as soon as written: the new copy is added in the transaction
            # that lets the old one go.
            answer = await self._metadata.let_go_moved_copy(
                record, old, [write_holder(copy.reservation_id)], claim, self.delete_claim_expiry(), queued,
                added=copy)
            if answer == NOT_ADDED:
                return False
            ended.append(answer)
            return True

        if not await self._replicate_to(record, ordered, reservation, settle=False, commit_in_place=add_and_let_go):
            if not _same_object(await self._metadata.get_object(bucket, key), record):
                return Moved(GONE)
            raise StoreUnavailable(f"could not copy {bucket}/{key} from store {from_store} to store"
                                   f" {reservation.store}")
        if ended:
            if ended[0] == "claimed":
                await self._remove_claimed(old.store, old.location, claim)
            return Moved(MOVED, reservation.store, record.size, unqueued=queued is not None)
        try:
            return await self._let_go(record, old, reservation.store, [write_holder(reservation.id)], queued)
        except BaseException:
            # The new copy is in place: its claim ends whatever became of the old one.
            await self.settle([reservation])
            raise

    async def _object_copies(self, bucket: str, key: str) -> ObjectCopies:
        found = await self._metadata.get_object_copies(bucket, key)
        if found is None:
            return ObjectCopies(None)
        holding = frozenset(copy.store for copy in await self._metadata.object_copies(bucket, key))
        return ObjectCopies(found[0], found[1], holding)

    async def _let_go(self, record: ObjectRecord, old: CopyRecord, to_store: str | None, settled: Sequence[str],
                      queued: QueuedMove | None) -> Moved:
        """Let the moved copy ``old`` go, ending the claims of ``settled`` and taking
        ``queued`` out of the queue in that transaction, and remove its bytes (unless an
        overwrite or delete let go of every copy since)."""
        claim = fresh_holder()
        async with self._locks.hold((record.bucket, record.key)):
            claimed = await self._metadata.let_go_moved_copy(
                record, old, settled, claim, self.delete_claim_expiry(), queued)
        if claimed == "claimed":
            await self._remove_claimed(old.store, old.location, claim)
        return Moved(MOVED, to_store, record.size, unqueued=queued is not None)

    async def _reserve_move(self, record: ObjectRecord, live: Sequence[CopyRecord], old: CopyRecord,
                            exclude: frozenset[str]) -> Reservation:
        """Room for the moved copy, with its intent, on a store none of ``exclude``:
        first outside the zones of the object's other copies, then anywhere."""
        zones = self._zones()
        taken = {zones.get(copy.store, copy.store) for copy in live if copy is not old}
        same_zone = frozenset(name for name in self._stores if zones.get(name, name) in taken)
        single = PlacementPolicy(replicas=1, write_quorum=1)
        intent_for = (record.bucket, record.key)
        if same_zone - exclude:
            try:
                return (await self.reserve_copies(record.size, single, intent_for, exclude | same_zone))[0]
            except (NoRoom, StoreUnavailable, CapReached):
                pass
        return (await self.reserve_copies(record.size, single, intent_for, exclude))[0]
