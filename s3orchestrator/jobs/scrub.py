"""The scrubber: a slow background job that checks every live copy against its object's
record, lets go of the copies it finds missing or damaged and has them made again from
a good copy."""

from __future__ import annotations

from collections import Counter
from typing import Callable, Mapping, Protocol, Sequence

import attrs
from twisted.internet.defer import CancelledError, Deferred, DeferredList, ensureDeferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure

from s3orchestrator.config import ScrubConfig
from s3orchestrator.jobs.election import JobLease
from s3orchestrator.jobs.health import StoreHealth
from s3orchestrator.jobs.timed import TimedJob
from s3orchestrator.metadata.claims import DELETE_CLAIM_LEASE, fresh_holder
from s3orchestrator.metadata.interface import IMetadataStore
from s3orchestrator.metadata.records import CopyRecord
from s3orchestrator.metadata.scrub import CHECKSUM, STAT, Position, ScrubCopy, ScrubPass, ScrubPasses, Suspension
from s3orchestrator.placement.engine import Replicated
from s3orchestrator.placement.verify import MISSING, Finding, FullRead, stat_copy
from s3orchestrator.stores.interface import IObjectStore, ObjectStat, StoreMisconfigured, StoreUnavailable

#: Copies read from the database at a time.
BATCH_SIZE = 100
#: Seconds between saves of a pass's position (and at the end of every batch).
SAVE_EVERY = 10.0
#: Longest the timer waits between looks at whether a pass is due.
LONGEST_STEP = 60.0
#: Findings on a store in a pass before ``max_findings_fraction`` applies (a few copies
#: checked tell nothing of the store).
FRACTION_AFTER = 10


class Repairs(Protocol):
    """What the job needs of placement: the stores' health and ``replicate``."""

    health: StoreHealth

    async def replicate(self, bucket: str, key: str) -> Replicated:
        ...


def timer_step(settings: ScrubConfig) -> float:
    """Seconds between the timer's looks at whether a pass is due."""
    return min(LONGEST_STEP, settings.interval, settings.full_read_interval)


@attrs.define
class _Progress:
    """A walk's place: the last copy done (``position``), the last saved, copies checked
    (``done``) and those not saved yet (``unsaved``, found wrong ``unsaved_found``)."""

    position: Position | None
    saved: Position | None = None
    done: int = 0
    unsaved: int = 0
    unsaved_found: int = 0

    def __attrs_post_init__(self) -> None:
        self.saved = self.position

    def checked(self, copy: ScrubCopy, found: int) -> None:
        self.position = copy.position
        self.done += 1
        self.unsaved += 1
        self.unsaved_found += found


class ScrubJob(TimedJob):
    """Two kinds of pass over the live copies, each walking them in key order from where
    it stands in ``scrub_passes`` (so a restart, or another instance taking the job's
    lease over, resumes it): a ``stat`` pass, begun ``settings().interval`` seconds after
    the previous one began, asks each copy's store for its size and ETag (a stat, a HEAD);
    a ``checksum`` pass, begun ``full_read_interval`` seconds after the previous one,
    reads every byte of the copies on ``checksummed()`` stores (the directory stores) and
    checks their MD5 (see placement.verify). Both run at once (a run looks again every
    ``timer_step`` seconds, or at once when ``look_soon()`` is called, for a pass fallen
    due or asked for); together they check at most ``objects_per_second`` copies a
    second, and the full reads read at most ``bytes_per_second``. Copies on stores that
    are down, or ``read_capped`` (over a monthly read cap: a scrub is no reason to go
    past it), are skipped. While ``settings().enabled`` is false nothing runs and no
    lease is taken.

    A copy found missing or damaged is checked again under a claim of its location (no
    write can be moving bytes there meanwhile) and only while its object's record, ETag
    and copy are still those checked; a full read's finding also needs the file to be
    the one read (same size and modification time). Then it is let go
    (``mark_copy_missing``: no longer read, its bytes queued for cleanup) and made again
    from a good copy at once (``replicate``; else by the replicator), one log line each.

    Two guards keep a store that answers but is empty or wrong (a disk not mounted, a
    bucket emptied, credentials of another bucket) from having every copy on it let go
    and made again. A store on which the passes under way (both kinds together) find
    more than ``max_findings_per_store`` copies wrong, or (once they found
    ``FRACTION_AFTER``) more than ``max_findings_fraction`` of the copies they checked
    there, is suspended
    (``scrub_suspended``, one error logged): its findings are still counted and logged,
    but none of its copies is let go, until an operator lifts it (``s3orchestrator
    scrub --now``: ``ScrubPasses.request``); it stays suspended across restarts and
    lease moves. And the only live copy of an object is never let go: found missing,
    the object is recorded lost but its copy kept (reads fail as before; the store may
    hand it back, and a pass that finds it right again takes the object off the lost
    ones); found damaged, it is kept and served as it is, logged as an error (there is
    no other copy to serve or to repair from).

    Counters: ``runs``, ``errors`` (runs, walks and checks that raised), ``checked`` (by
    kind), ``bytes_read``, ``damaged`` and ``missing`` (found, by store), ``held``
    (findings left alone on suspended stores, by store), ``kept`` (only copies found
    wrong and kept, by store), ``repaired`` (copies made again), ``skipped`` (store
    down, failing or over a read cap, location claimed, copy changed while checked),
    ``unverifiable`` (full reads whose ETag the bytes cannot give: length checked only);
    ``passes``: the passes as of the last look, by kind; ``suspended``: the suspended
    stores as of the last look (and those suspended since), by name."""

    _log = Logger()
    description = "Scrub"

    def __init__(
        self,
        repairs: Repairs,
        metadata: IMetadataStore,
        passes: ScrubPasses,
        stores: Callable[[], Mapping[str, IObjectStore]],
        checksummed: Callable[[], Sequence[str]],
        settings: Callable[[], ScrubConfig],
        clock: IReactorTime,
        metadata_available: Callable[[], bool] = lambda: True,
        lease: JobLease | None = None,
        owner: str = "",
        read_capped: Callable[[str], bool] = lambda store: False,
    ) -> None:
        super().__init__(timer_step(settings()), clock, metadata_available, lease)
        self._read_capped = read_capped
        self._repairs = repairs
        self._metadata = metadata
        self._passes = passes
        self._stores = stores
        self._checksummed = checksummed
        self._settings = settings
        self.owner = owner
        self._stopping = False
        self._waits: set[Deferred[None]] = set()
        self._look: Deferred[int | None] | None = None  # fired: a run looks again at once
        self._reads: set[FullRead] = set()
        self._due = 0.0
        self.checked: Counter[str] = Counter()
        self.damaged: Counter[str] = Counter()
        self.missing: Counter[str] = Counter()
        self.held: Counter[str] = Counter()
        self.kept: Counter[str] = Counter()
        self.suspended: dict[str, Suspension] = {}
        self._recorded: set[str] = set()  # suspended stores known to be in scrub_suspended
        # This instance's counts in the running pass of each kind, by (kind, store): the guard's.
        self._pass_checked: Counter[tuple[str, str]] = Counter()
        self._pass_found: Counter[tuple[str, str]] = Counter()
        self.bytes_read = self.repaired = self.skipped = self.unverifiable = 0
        self.passes: dict[str, ScrubPass] = {}

    def startService(self) -> None:
        self._stopping = False
        super().startService()

    def _tick(self) -> Deferred[int]:
        # Off: no lease taken (or kept, after a reload turned it off), nothing run.
        if not self._settings().enabled:
            if self.lease is not None and self.lease.leads:
                self.lease.release()
            return succeed(0)
        return super()._tick()

    def store_names(self) -> list[str]:
        """The configured stores, by name."""
        return sorted(self._stores())

    def look_soon(self) -> None:
        """Look at once whether a pass is due or asked for (and begin it), in the run going
        on, or in a new run (if this instance holds the job's lease)."""
        if self._look is not None:
            if not self._look.called:
                self._look.callback(0)
        elif not self._running and self.running and not self._stopping:
            self._tick()

    def stopService(self) -> Deferred[None]:
        # A pass takes hours: stop at once, where it stands (saved; resumed next start).
        self._stopping = True
        if self._look is not None and not self._look.called:
            self._look.callback(0)
        for wait in list(self._waits):
            wait.cancel()
        for read in list(self._reads):
            read.cancel()
        return super().stopService()

    async def run(self) -> int:
        """Begin the passes that are due (or asked for), go on with those running, and look
        again every ``timer_step`` seconds meanwhile (one kind may fall due while the other
        runs), until none runs, the job stops or it loses its lease; copies checked."""
        walks: dict[str, Deferred[int | None]] = {}
        failed: set[str] = set()  # kinds whose walk failed: left to the next run
        checked = 0
        self._due = self.clock.seconds()
        while self._going():
            await self._begin_due(walks, failed)
            if not walks:
                break
            look = self._look = Deferred()
            timer = self.clock.callLater(timer_step(self._settings()), self.look_soon)
            try:
                await DeferredList([*walks.values(), look], fireOnOneCallback=True, consumeErrors=True)
            finally:
                self._look = None
                if timer.active():
                    timer.cancel()
            for kind in [kind for kind, walk in walks.items() if walk.called]:
                done = await walks.pop(kind)
                if done is None:
                    failed.add(kind)
                checked += done or 0
        for walk in walks.values():  # stopping: they stop at their next copy
            checked += await walk or 0
        return checked

    async def _begin_due(self, walks: dict[str, Deferred[int | None]], failed: set[str]) -> None:
        """Begin each kind of pass that is due or asked for and not under way, and walk
        those running that ``walks`` (by kind) does not walk yet, but ``failed`` kinds."""
        settings = self._settings()
        now_ms = int(self.clock.seconds() * 1000)
        self.passes = {scrub.kind: scrub for scrub in await self._passes.passes()}
        await self._look_at_suspensions()
        for kind, every in ((STAT, settings.interval), (CHECKSUM, settings.full_read_interval)):
            if kind in walks or kind in failed:
                continue
            current = self.passes.get(kind)
            if current is None or (not current.running and (
                current.requested_ms is not None or now_ms - current.started_ms >= every * 1000
            )):
                current = self.passes[kind] = await self._passes.begin(kind, now_ms)
                self._forget_counts(0, kind)
                self._log.info("Scrub: a {kind} pass begins", kind=kind)
            if current.running:
                walks[kind] = ensureDeferred(self._walk(current)).addErrback(self._walk_failed, kind)

    async def _look_at_suspensions(self) -> None:
        """Record the suspensions not recorded yet (a write that failed), and read them
        all: a store recorded suspended and no longer is was lifted (its count starts
        again); those suspended elsewhere (another instance ran the job) are taken in."""
        for suspension in [held for store, held in self.suspended.items() if store not in self._recorded]:
            await self._record(suspension)
        now = {suspension.store: suspension for suspension in await self._passes.suspensions()}
        for store in sorted(self._recorded - set(now)):
            self._recorded.discard(store)
            self.suspended.pop(store, None)
            self._forget_counts(1, store)
            self._log.info("Scrub: store {store} is no longer suspended; its copies found wrong are let go again",
                           store=store)
        self.suspended.update(now)
        self._recorded.update(now)

    def _forget_counts(self, index: int, name: str) -> None:
        """Start the guard's counts again for a kind (``index`` 0) or a store (1)."""
        for counts in (self._pass_checked, self._pass_found):
            for counted in [counted for counted in counts if counted[index] == name]:
                del counts[counted]

    def _walk_failed(self, failure: Failure, kind: str) -> None:
        self.errors += 1
        self._log.failure("Scrub: the {kind} pass failed; it goes on from where it stands at the next run",
                          failure, kind=kind)

    def _going(self) -> bool:
        return not self._stopping and self._settings().enabled and (self.lease is None or self.lease.leads)

    async def _walk(self, current: ScrubPass) -> int:
        """Go on with the running pass ``current`` from its position (saved every
        ``SAVE_EVERY`` seconds and when it stops); copies checked."""
        kind = current.kind
        progress = _Progress(current.position)
        saved_at = self.clock.seconds()
        try:
            while self._going():
                stores = None if kind == STAT else frozenset(self._checksummed())
                batch = [] if stores == frozenset() else await self._passes.next_copies(progress.position, BATCH_SIZE)
                for copy in batch:
                    if stores is None or copy.store in stores:
                        await self._pace()
                        if not self._going():
                            return progress.done
                        found = await self._check_or_log(kind, copy)
                        if self._stopping:
                            return progress.done  # the check may have been cut short: again on resume
                        progress.checked(copy, found)
                    else:
                        progress.position = copy.position  # not a copy this kind of pass reads
                    if self.clock.seconds() - saved_at >= SAVE_EVERY:
                        await self._save(kind, progress)
                        saved_at = self.clock.seconds()
                if len(batch) < BATCH_SIZE:
                    await self._save(kind, progress)
                    await self._finish(kind)
                    return progress.done
        finally:
            await self._save(kind, progress)
        return progress.done

    async def _save(self, kind: str, progress: _Progress) -> None:
        """Record how far the pass went since the last save."""
        if progress.position is not None and progress.position != progress.saved:
            await self._passes.advance(kind, progress.position, progress.unsaved, progress.unsaved_found)
            progress.saved, progress.unsaved, progress.unsaved_found = progress.position, 0, 0

    async def _finish(self, kind: str) -> None:
        now_ms = int(self.clock.seconds() * 1000)
        await self._passes.finish(kind, now_ms)
        for scrub in await self._passes.passes():
            self.passes[scrub.kind] = scrub
        ended = self.passes.get(kind)
        self._log.info(
            "Scrub: the {kind} pass is done: {checked} copies checked, {found} missing or damaged",
            kind=kind, checked=ended.checked if ended else 0, found=ended.found if ended else 0,
        )

    async def _pace(self) -> None:
        """Wait for this copy's turn: ``objects_per_second`` at most, both passes together."""
        now = self.clock.seconds()
        wait = self._due - now
        self._due = max(self._due, now) + 1 / self._settings().objects_per_second
        if wait > 0:
            await self._sleep(wait)

    async def _sleep(self, seconds: float) -> None:
        wait = deferLater(self.clock, seconds, lambda: None)
        self._waits.add(wait)
        try:
            await wait
        except CancelledError:
            pass  # stopping
        finally:
            self._waits.discard(wait)

    async def _check_or_log(self, kind: str, copy: ScrubCopy) -> int:
        """``_check``; an unexpected error is logged and counted, and the pass goes on."""
        try:
            return await self._check(kind, copy)
        except Exception:
            self.errors += 1
            self.skipped += 1
            self._log.failure("Scrub: checking {bucket}/{key} on store {store} failed; left for the next pass",
                              bucket=copy.bucket, key=copy.key, store=copy.store)
            return 0

    async def _check(self, kind: str, copy: ScrubCopy) -> int:
        """Check one copy (1 if it was let go as missing or damaged, else 0)."""
        store = self._stores().get(copy.store)
        if store is None or not self._repairs.health.is_healthy(copy.store) or self._read_capped(copy.store):
            self.skipped += 1
            return 0
        read_stat: ObjectStat | None = None  # the file a full read found wrong, before the read
        try:
            stat, finding = await stat_copy(store, copy)
            self.checked[kind] += 1
            self._pass_checked[(kind, copy.store)] += 1
            if finding is None and kind == CHECKSUM:
                finding = await self._full_read(store, copy)
                read_stat = stat
        except (StoreUnavailable, StoreMisconfigured) as error:
            if isinstance(error, StoreUnavailable):
                self._repairs.health.record_failure(copy.store, str(error))
            self.skipped += 1
            self._log.warn("Scrub: could not check {bucket}/{key} on store {store}: {error}",
                           bucket=copy.bucket, key=copy.key, store=copy.store, error=str(error))
            return 0
        if finding is None and copy.lost and not self._stopping:
            await self._found_again(copy)
        if finding is None or self._stopping:
            return 0
        return await self._confirm(kind, store, copy, finding, read_stat)

    async def _found_again(self, copy: ScrubCopy) -> None:
        if await self._passes.found_again(copy, int(self.clock.seconds() * 1000)):
            self._log.warn("Scrub: {bucket}/{key}, recorded lost, has its copy on store {store} again;"
                           " no longer lost", bucket=copy.bucket, key=copy.key, store=copy.store)

    async def _full_read(self, store: IObjectStore, copy: ScrubCopy) -> Finding | None:
        read = FullRead(store, copy, self.clock, self._settings().bytes_per_second)
        self._reads.add(read)
        try:
            return await read.run()
        except CancelledError:
            return None  # stopping
        finally:
            self._reads.discard(read)
            self.bytes_read += read.received
            self.unverifiable += read.unverifiable

    async def _confirm(
        self, kind: str, store: IObjectStore, copy: ScrubCopy, finding: Finding, read_stat: ObjectStat | None
    ) -> int:
        """Act on a copy found missing or damaged, once the finding holds under a claim of
        its location for the object as checked: let it go and have it made again, unless
        its store is (or now gets) suspended or it is the object's only live copy; 1 if
        the finding held. ``read_stat``: the file a full read found wrong, as stat
        described it before."""
        holder = fresh_holder()
        expires_ms = int((self.clock.seconds() + DELETE_CLAIM_LEASE) * 1000)
        if not await self._metadata.claim_locations(copy.store, [copy.location], holder, self.owner, expires_ms):
            return self._skip(copy, finding, "its location is claimed (a write?)")
        left: int | None = None
        suspension: Suspension | None = None
        try:
            current = await self._current_copy(copy)
            if current is None:
                return self._skip(copy, finding, "the object changed meanwhile")
            live, copies = current
            try:
                stat, again = await stat_copy(store, copy)
            except (StoreUnavailable, StoreMisconfigured) as error:
                return self._skip(copy, finding, f"its store failed the check again ({error})")
            if read_stat is not None and again is None:
                if stat is None or (stat.size, stat.last_modified) != (read_stat.size, read_stat.last_modified):
                    return self._skip(copy, finding, "the file changed since it was read")
                again = finding
            if again is None:
                return self._skip(copy, finding, "it is right again")
            self._pass_found[(kind, copy.store)] += 1
            if copy.store not in self.suspended and self._over_limit(copy.store):
                # At once: the other pass's next finding there is held too.
                suspension = self.suspended[copy.store] = Suspension(
                    copy.store, int(self.clock.seconds() * 1000), kind, *self._counts(copy.store))
            elif copy.store not in self.suspended and copies > 1:
                left = await self._metadata.mark_copy_missing(copy.bucket, copy.key, live, etag=copy.etag)
                if left is None:
                    return self._skip(copy, again, "the object changed meanwhile")
        finally:
            await self._end_claim(holder)
        (self.missing if again.problem == MISSING else self.damaged)[copy.store] += 1
        if suspension is not None:
            await self._suspend(suspension)
        if left is None:
            await self._leave(copy, again)
            return 1
        self._log.error(
            "Scrub: copy of {bucket}/{key} on store {store} at {location} is {problem} ({detail}); let go",
            bucket=copy.bucket, key=copy.key, store=copy.store, location=copy.location,
            problem=again.problem, detail=again.detail,
        )
        await self._repair(copy)
        return 1

    def _counts(self, store: str) -> tuple[int, int]:
        """Copies of ``store`` found wrong and checked in the passes under way (both kinds:
        two passes at once let no more go than one)."""
        return (sum(self._pass_found[(kind, store)] for kind in (STAT, CHECKSUM)),
                sum(self._pass_checked[(kind, store)] for kind in (STAT, CHECKSUM)))

    def _over_limit(self, store: str) -> bool:
        """Whether the passes under way found too many copies on ``store`` wrong to go on
        letting them go (see the class docstring)."""
        settings = self._settings()
        found, checked = self._counts(store)
        if settings.max_findings_per_store and found > settings.max_findings_per_store:
            return True
        return found >= FRACTION_AFTER and found > settings.max_findings_fraction * checked

    async def _suspend(self, suspension: Suspension) -> None:
        """Say why a store is suspended (once) and record it."""
        settings = self._settings()
        self._log.error(
            "Scrub: store {store} suspended: the passes under way found {found} of the {checked} copies they"
            " checked there missing or damaged, the last by the {kind} pass (over [scrub] max_findings_per_store ="
            " {limit} or max_findings_fraction = {fraction}); none of its copies is let go any more. Check that"
            " the store holds what it should (its disk mounted, the right bucket, endpoint and credentials, the"
            " bucket not emptied), then run `s3orchestrator scrub --now` to resume",
            store=suspension.store, kind=suspension.kind, found=suspension.found, checked=suspension.checked,
            limit=settings.max_findings_per_store, fraction=settings.max_findings_fraction,
        )
        await self._record(suspension)

    async def _record(self, suspension: Suspension) -> None:
        try:
            await self._passes.suspend(suspension)
        except Exception as error:
            # Still suspended here; tried again at the next look.
            self._log.warn("Scrub: could not record that store {store} is suspended (tried again): {error}",
                           store=suspension.store, error=str(error))
            return
        self._recorded.add(suspension.store)

    async def _leave(self, copy: ScrubCopy, finding: Finding) -> None:
        """A copy found wrong and not let go: its store is suspended, or it is its object's
        only live copy (found missing: the object is recorded lost, the copy kept)."""
        if copy.store in self.suspended:
            self.held[copy.store] += 1
            self._log.info(
                "Scrub: copy of {bucket}/{key} on store {store} at {location} is {problem} ({detail}); left as it is:"
                " the store is suspended", bucket=copy.bucket, key=copy.key, store=copy.store,
                location=copy.location, problem=finding.problem, detail=finding.detail,
            )
            return
        self.kept[copy.store] += 1
        if finding.problem == MISSING and copy.lost:
            self._log.info("Scrub: {bucket}/{key}, lost, still has its only copy missing on store {store}",
                           bucket=copy.bucket, key=copy.key, store=copy.store)
        elif finding.problem == MISSING and await self._passes.record_lost(copy, int(self.clock.seconds() * 1000)):
            self._log.error(
                "Object {bucket}/{key} is lost: the scrubber found its only live copy, on store {store} at {location},"
                " missing; the copy is kept (nothing deleted): the object reads again if its store hands it back,"
                " else overwrite or delete it",
                bucket=copy.bucket, key=copy.key, store=copy.store, location=copy.location,
            )
        elif finding.problem != MISSING:
            self._log.error(
                "Scrub: the only live copy of {bucket}/{key}, on store {store} at {location}, is damaged ({detail});"
                " kept and still served (no other copy to serve or to make it again from): restore the object",
                bucket=copy.bucket, key=copy.key, store=copy.store, location=copy.location, detail=finding.detail,
            )

    async def _current_copy(self, copy: ScrubCopy) -> tuple[CopyRecord, int] | None:
        """The live copy ``copy`` names and how many live copies its object has, if the
        object and that copy are still those checked."""
        found = await self._metadata.get_object_copies(copy.bucket, copy.key)
        if found is None or found[0].etag != copy.etag or found[0].size != copy.size:
            return None
        for live in found[1]:
            if (live.store, live.location, live.created_ms) == (copy.store, copy.location, copy.created_ms):
                return live, len(found[1])
        return None

    async def _end_claim(self, holder: str) -> None:
        try:
            await self._metadata.end_claims([holder])
        except Exception as error:
            self._log.warn("Scrub: could not end its claim {holder} (it expires by itself): {error}",
                           holder=holder, error=str(error))

    def _skip(self, copy: ScrubCopy, finding: Finding, why: str) -> int:
        self.skipped += 1
        self._log.info(
            "Scrub: copy of {bucket}/{key} on store {store} looked {problem} ({detail}) but {why}; left as it is",
            bucket=copy.bucket, key=copy.key, store=copy.store, problem=finding.problem, detail=finding.detail,
            why=why,
        )
        return 0

    async def _repair(self, copy: ScrubCopy) -> None:
        try:
            made = await self._repairs.replicate(copy.bucket, copy.key)
        except Exception as error:
            self._log.warn("Scrub: could not make {bucket}/{key}'s copy again now, the replicator will: {error}",
                           bucket=copy.bucket, key=copy.key, error=str(error))
            return
        self.repaired += made.copies
        if made.copies:
            self._log.info("Scrub: made {copies} copy of {bucket}/{key} again from a good one",
                           copies=made.copies, bucket=copy.bucket, key=copy.key)
        else:
            self._log.warn("Scrub: {bucket}/{key}'s copy could not be made again now; the replicator will",
                           bucket=copy.bucket, key=copy.key)
