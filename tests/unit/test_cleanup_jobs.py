"""The reaper and the cleanup job, and the engine's cleanup queue, over a real SQLite
metadata store and real directory stores, with a Clock."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import attrs
import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred, ensureDeferred, fail
from twisted.internet.task import Clock, deferLater

from s3orchestrator.jobs.cleanup import CleanupJob, retry_delay
from s3orchestrator.jobs.health import StoreHealth
from s3orchestrator.jobs.heartbeat import InstanceLease
from s3orchestrator.jobs.reaper import ReaperJob
from s3orchestrator.metadata.records import IntentPlan
from s3orchestrator.metadata.store import MetadataStore
from s3orchestrator.placement.engine import NewObject, Placement
from s3orchestrator.placement.errors import LocationBusy
from s3orchestrator.placement.locks import KeyLocks
from s3orchestrator.stores.directory import DirectoryStore, relative_path
from tests.unit.fakes import FakeRequestBody, FlakyStore, advance_until

NOW = 1_767_225_600
ME = "host-a:200"
LEASE = 30.0
NEW = NewObject(content_type="binary/octet-stream", headers={}, user_metadata={})


@attrs.define
class World:
    metadata: MetadataStore
    store: FlakyStore
    root: Path
    clock: Clock
    placement: Placement
    reaper: ReaperJob
    cleanup: CleanupJob
    lease: InstanceLease
    others: dict[str, MetadataStore]

    def files(self) -> list[str]:
        return sorted(str(p.relative_to(self.root)) for p in self.root.rglob("*") if p.is_file()
                      and ".tmp" not in p.parts)

    async def used(self) -> int:
        (usage,) = await self.metadata.store_usage()
        assert usage.reserved_bytes == 0
        return usage.used_bytes

    async def put(self, key: str, data: bytes) -> None:
        await self.placement.write("bkt", key, FakeRequestBody(data), NEW)

    async def intent_of_a_dead_writer(self, key: str, data: bytes, owner: str = "host-a:100") -> str:
        """Bytes at the key's location and the intent a writer (by default a crashed one,
        never registered) left for them."""
        location = self.store.location_for("bkt", key)
        plan = IntentPlan(bucket="bkt", key=key, locate=lambda store: location)
        metadata = self.metadata if owner == ME else self.others[owner]
        await metadata.reserve_copies(len(data), lambda usage: ("one",), plan)
        self.path(key).parent.mkdir(parents=True, exist_ok=True)
        self.path(key).write_bytes(data)
        return location

    def path(self, key: str) -> Path:
        return self.root / relative_path(f"bkt/{key}")


@pytest.fixture
def build(tmp_path: Path, sqlite_store: Callable[..., MetadataStore]):
    async def make() -> World:
        clock = Clock()
        clock.advance(NOW)
        metadata = sqlite_store(ME, clock)
        await metadata.start()
        others = {}
        for other in ("host-a:100", "host-b:7"):
            others[other] = sqlite_store(other, clock)
            await others[other].start()
        lease = InstanceLease(metadata, ME, LEASE, clock, host="host-a", pid=200)
        await lease.register()
        await metadata.sync_stores([("one", 0)])
        root = tmp_path / "one"
        directory = DirectoryStore("one", str(root), reactor)
        await directory.start()
        store = FlakyStore(directory)
        health = StoreHealth(["one"], unhealthy_after=3, now=clock.seconds)
        placement = Placement(metadata, {"one": store}, "pack", clock, KeyLocks(), health)
        stores: dict[str, Any] = {"one": store}
        reaper = ReaperJob(metadata, lambda: stores, 60, clock, owner=ME)
        cleanup = CleanupJob(metadata, lambda: stores, 60, clock, owner=ME)
        return World(metadata, store, root, clock, placement, reaper, cleanup, lease, others)

    return make


# -- the reaper ---------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_the_reaper_deletes_the_partial_bytes_of_a_previous_run_and_releases_its_room(build) -> None:
    world = await build()
    await world.intent_of_a_dead_writer("k", b"partial")
    assert await world.reaper.run_once() == 1
    assert world.files() == []
    assert await world.metadata.list_intents() == []
    assert await world.used() == 0
    assert world.reaper.resolutions == {"adopted": 0, "deleted": 1, "queued": 0}


@pytest_twisted.ensureDeferred
async def test_the_reaper_adopts_a_live_copy_at_the_intents_location(build) -> None:
    world = await build()
    await world.put("k", b"committed")
    await world.intent_of_a_dead_writer("k", b"committed")  # the location holds the live copy
    assert await world.reaper.run_once() == 1
    assert world.reaper.resolutions == {"adopted": 1, "deleted": 0, "queued": 0}
    assert world.files() == [relative_path("bkt/k")] and world.path("k").read_bytes() == b"committed"
    assert await world.metadata.list_intents() == []
    assert await world.used() == len(b"committed")


@pytest_twisted.ensureDeferred
async def test_the_reaper_spares_live_instances_until_their_lease_ends(build) -> None:
    world = await build()
    theirs = InstanceLease(world.others["host-b:7"], "host-b:7", LEASE, world.clock, host="host-b", pid=7)
    await theirs.register()
    await world.intent_of_a_dead_writer("mine", b"x", owner=ME)
    await world.intent_of_a_dead_writer("theirs", b"y", owner="host-b:7")
    assert await world.reaper.run_once() == 0
    world.clock.advance(LEASE - 1)
    await world.lease.beat()  # this instance renews its lease, host-b:7 does not
    assert await world.reaper.run_once() == 0
    world.clock.advance(1)
    assert await world.reaper.run_once() == 1
    assert [intent.owner for intent in await world.metadata.list_intents()] == [ME]
    assert world.files() == [relative_path("bkt/mine")]


@pytest_twisted.ensureDeferred
async def test_the_reaper_releases_a_dead_instances_reservations_without_intents(build) -> None:
    world = await build()
    await world.others["host-a:100"].reserve(5, lambda usage: "one")  # a part in flight when it died
    await world.metadata.reserve(3, lambda usage: "one")  # this live instance's
    assert await world.reaper.run_once() == 1
    assert world.reaper.released == 1
    (usage,) = await world.metadata.store_usage()
    assert usage.reserved_bytes == 3


@pytest_twisted.ensureDeferred
async def test_a_store_down_sends_the_partial_bytes_to_the_cleanup_queue(build) -> None:
    world = await build()
    await world.intent_of_a_dead_writer("k", b"partial")
    world.store.down = True
    await world.reaper.run_once()
    assert world.reaper.resolutions == {"adopted": 0, "deleted": 0, "queued": 1}
    assert await world.metadata.list_intents() == []
    assert await world.used() == len(b"partial")  # counted until the bytes are gone
    world.store.down = False
    assert await world.cleanup.run_once() == 1
    assert world.files() == []
    assert await world.used() == 0


@pytest_twisted.ensureDeferred
async def test_the_reaper_leaves_a_location_a_live_writer_is_writing_to_the_cleanup_job(build) -> None:
    world = await build()
    await world.intent_of_a_dead_writer("k", b"partial")
    await world.intent_of_a_dead_writer("k", b"the live write", owner=ME)
    await world.reaper.run_once()
    assert world.reaper.resolutions == {"adopted": 0, "deleted": 0, "queued": 1}
    assert world.store.deleted == [] and world.path("k").read_bytes() == b"the live write"
    assert [intent.owner for intent in await world.metadata.list_intents()] == [ME]
    assert [entry.location for entry in await world.metadata.list_cleanups(10)] == ["bkt/k"]


@pytest_twisted.ensureDeferred
async def test_release_with_leftover_bytes_removes_them_or_keeps_them_queued(build) -> None:
    world = await build()
    reservation = await world.placement.reserve(7, intent_for=("bkt", "k"))
    world.path("k").parent.mkdir(parents=True, exist_ok=True)
    world.path("k").write_bytes(b"partial")
    world.store.down = True
    await world.placement.release(reservation, leftover="bkt/k")
    assert [(e.location, e.size) for e in await world.metadata.list_cleanups(10)] == [("bkt/k", 7)]
    assert await world.metadata.list_intents() == []
    assert world.path("k").exists()
    assert await world.used() == 7
    world.store.down = False
    reservation = await world.placement.reserve(7, intent_for=("bkt", "k"))
    await world.placement.release(reservation, leftover="bkt/k")
    assert not world.path("k").exists()
    assert await world.metadata.list_cleanups(10) == []
    assert await world.used() == 0


class BrokenMetadata:
    def release_dead_reservations(self, now_ms: int) -> Deferred[Any]:
        return fail(RuntimeError("the database went away"))


def test_the_reaper_survives_failing_runs_and_keeps_its_schedule() -> None:
    clock = Clock()
    reaper = ReaperJob(BrokenMetadata(), dict, 60, clock)  # type: ignore[arg-type]
    reaper.startService()
    try:
        assert (reaper.runs, reaper.errors) == (1, 1)  # at start
        clock.advance(60)
        assert (reaper.runs, reaper.errors) == (2, 2)
    finally:
        reaper.stopService()


# -- the cleanup job and the engine's queue -----------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_a_delete_while_the_store_is_down_keeps_the_bytes_queued_and_counted(build) -> None:
    world = await build()
    await world.put("k", b"0123456789")
    world.store.down = True
    assert await world.placement.delete("bkt", "k") is not None
    assert await world.placement.record("bkt", "k") is None
    assert world.files() == [relative_path("bkt/k")]
    assert await world.used() == 10
    (entry,) = await world.metadata.list_cleanups(10)
    assert (entry.location, entry.size, entry.attempts) == ("bkt/k", 10, 0)


@pytest_twisted.ensureDeferred
async def test_the_cleanup_job_retries_with_backoff_until_the_store_deletes(build) -> None:
    world = await build()
    await world.put("k", b"0123456789")
    world.store.down = True
    await world.placement.delete("bkt", "k")
    assert await world.cleanup.run_once() == 0
    (entry,) = await world.metadata.list_cleanups(10)
    assert (entry.attempts, entry.next_try_ms) == (1, (NOW + retry_delay(1, 60)) * 1000)
    world.clock.advance(retry_delay(1, 60) - 1)
    await world.cleanup.run_once()  # not due yet: not tried
    assert (await world.metadata.list_cleanups(10))[0].attempts == 1
    world.clock.advance(1)
    await world.cleanup.run_once()
    (entry,) = await world.metadata.list_cleanups(10)
    assert entry.attempts == 2 and entry.next_try_ms == int((world.clock.seconds() + retry_delay(2, 60)) * 1000)
    assert retry_delay(2, 60) == 2 * retry_delay(1, 60) == 120
    world.store.down = False
    world.clock.advance(retry_delay(2, 60))
    assert await world.cleanup.run_once() == 1
    assert world.files() == [] and await world.metadata.list_cleanups(10) == []
    assert await world.used() == 0
    assert (world.cleanup.removed, world.cleanup.failures) == (1, 2)


@pytest_twisted.ensureDeferred
async def test_a_delete_removes_the_bytes_at_once_when_the_store_answers(build) -> None:
    world = await build()
    await world.put("k", b"0123456789")
    await world.placement.delete("bkt", "k")
    assert world.files() == [] and await world.metadata.list_cleanups(10) == []
    assert await world.used() == 0


@pytest_twisted.ensureDeferred
async def test_an_overwrite_at_the_same_location_queues_nothing_and_keeps_the_new_bytes(build) -> None:
    world = await build()
    await world.put("k", b"old bytes")
    await world.put("k", b"the new bytes")
    assert await world.metadata.list_cleanups(10) == []
    await world.cleanup.run_once()
    assert world.store.deleted == []
    assert world.path("k").read_bytes() == b"the new bytes"
    assert await world.used() == len(b"the new bytes")


@pytest_twisted.ensureDeferred
async def test_a_queued_location_written_again_is_not_cleaned_up(build) -> None:
    world = await build()
    await world.put("k", b"old bytes")
    world.store.down = True
    await world.placement.delete("bkt", "k")
    world.store.down = False
    await world.put("k", b"written again")
    assert await world.metadata.list_cleanups(10) == []
    await world.cleanup.run_once()
    assert world.path("k").read_bytes() == b"written again"
    assert await world.used() == len(b"written again")


@pytest_twisted.ensureDeferred
async def test_the_cleanup_job_skips_a_location_a_write_in_flight_claims_until_it_is_released(build) -> None:
    world = await build()
    await world.metadata.queue_cleanup("one", "bkt/k", 5)
    await world.intent_of_a_dead_writer("k", b"in flight", owner=ME)
    assert await world.cleanup.run_once() == 0
    assert world.store.deleted == [] and world.files() == [relative_path("bkt/k")]
    (entry,) = await world.metadata.list_cleanups(10)
    assert (entry.attempts, entry.last_error) == (0, None)  # skipped, not failed: due again at the next run
    (intent,) = await world.metadata.list_intents()
    await world.metadata.release(intent.reservation_id)  # the write gave up, leaving its bytes
    assert await world.cleanup.run_once() == 1
    assert world.files() == [] and await world.metadata.list_cleanups(10) == []
    assert await world.used() == 0


@pytest_twisted.ensureDeferred
async def test_the_cleanup_job_postpones_a_location_holding_a_live_copy_again(build) -> None:
    world = await build()
    await world.put("k", b"live")
    await world.metadata.queue_cleanup("one", "bkt/k", 5)  # a stale entry
    assert await world.cleanup.run_once() == 0
    assert world.path("k").read_bytes() == b"live"
    (entry,) = await world.metadata.list_cleanups(10)
    assert entry.attempts == 1 and entry.last_error == "the location is in use again"


@pytest_twisted.ensureDeferred
async def test_a_reservation_for_a_write_records_its_intent_and_the_commit_drops_it(build) -> None:
    world = await build()
    reservation = await world.placement.reserve(4, intent_for=("bkt", "k"))
    (intent,) = await world.metadata.list_intents()
    assert (intent.reservation_id, intent.store, intent.location, intent.owner, intent.created_ms) == (
        reservation.id, "one", "bkt/k", ME, NOW * 1000,
    )
    await world.placement.release(reservation)
    assert await world.metadata.list_intents() == []
    await world.put("k", b"data")
    assert await world.metadata.list_intents() == []
    assert await world.used() == 4


def test_retry_delays_double_up_to_an_hour() -> None:
    assert [retry_delay(attempts, 60) for attempts in (1, 2, 3, 6, 7, 100)] == [60, 120, 240, 1920, 3600, 3600]


@pytest_twisted.ensureDeferred
async def test_a_cleanup_delete_carried_out_late_spares_a_write_started_meanwhile(build) -> None:
    world = await build()
    await world.put("k", b"old bytes")
    world.store.down = True
    await world.placement.delete("bkt", "k")
    world.store.down = False
    sent: Deferred[None] = Deferred()
    carried_out: Deferred[None] = Deferred()
    prompt_delete = world.store.delete

    def late_delete(location: str) -> Deferred[None]:
        # The store receives the cleanup's DELETE now and carries it out later (as an
        # upstream may, over another connection); every later delete is prompt.
        world.store.delete = prompt_delete  # type: ignore[method-assign]
        sent.callback(None)
        return carried_out.addCallback(lambda _: prompt_delete(location))

    world.store.delete = late_delete  # type: ignore[method-assign]
    cleaning = world.cleanup.run_once()
    await sent
    # The cleanup claims the location until its DELETE is done: the write waits for it.
    writing = ensureDeferred(world.put("k", b"written again"))
    world.clock.advance(1)
    assert not writing.called and world.path("k").read_bytes() == b"old bytes"  # not deleted yet
    carried_out.callback(None)
    await cleaning
    while not writing.called:
        world.clock.advance(1)
        await deferLater(reactor, 0, lambda: None)  # the database thread answers the next try
    await writing
    assert world.path("k").read_bytes() == b"written again"
    assert await world.metadata.list_cleanups(10) == [] and await world.used() == len(b"written again")


# -- claims: writes of one location one at a time ------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_a_write_waits_while_another_write_claims_its_location(build) -> None:
    world = await build()
    other = await world.placement.reserve(3, intent_for=("bkt", "k"))  # another write, in flight
    writing = ensureDeferred(world.put("k", b"mine"))
    for _ in range(5):
        world.clock.advance(1)
        await deferLater(reactor, 0, lambda: None)
    assert not writing.called and not world.path("k").exists()
    await world.placement.release(other)
    await advance_until(world.clock, writing)
    await writing
    assert world.path("k").read_bytes() == b"mine"
    assert await world.metadata.list_intents() == [] and await world.used() == 4


@pytest_twisted.ensureDeferred
async def test_a_write_whose_location_stays_claimed_gives_up_with_location_busy(build) -> None:
    world = await build()
    world.lease.startService()  # this instance stays alive while the write waits
    other = await world.placement.reserve(3, intent_for=("bkt", "k"))
    writing = ensureDeferred(world.put("k", b"mine"))
    await advance_until(world.clock, writing)
    with pytest.raises(LocationBusy):
        await writing
    await world.lease.stopService()
    assert [intent.reservation_id for intent in await world.metadata.list_intents()] == [other.id]
    assert not world.path("k").exists()
    await world.placement.release(other)
    assert await world.used() == 0


@pytest_twisted.ensureDeferred
async def test_a_delete_leaves_bytes_a_new_write_claims_to_that_write(build) -> None:
    world = await build()
    await world.put("k", b"old bytes")
    world.store.down = True
    await world.placement.delete("bkt", "k")  # the old bytes stay queued
    world.store.down = False
    writer = await world.placement.reserve(13, intent_for=("bkt", "k"))
    world.path("k").write_bytes(b"written again")  # the writer's bytes, not committed yet
    assert await world.cleanup.run_once() == 0
    assert world.store.deleted == [] and world.path("k").read_bytes() == b"written again"
    await world.placement.release(writer, leftover="bkt/k")  # it failed: everything there goes
    assert await world.cleanup.run_once() == 0  # removed at once by the release already
    assert world.files() == [] and await world.metadata.list_cleanups(10) == []
    assert await world.used() == 0


@pytest_twisted.ensureDeferred
async def test_the_reaper_takes_over_the_claim_of_a_dead_writer_to_delete_its_bytes(build) -> None:
    world = await build()
    theirs = InstanceLease(world.others["host-b:7"], "host-b:7", LEASE, world.clock, host="host-b", pid=7)
    await theirs.register()  # alive now, and never renewed
    await world.intent_of_a_dead_writer("k", b"partial", owner="host-b:7")
    writing = ensureDeferred(world.put("k", b"mine"))
    await deferLater(reactor, 0.05, lambda: None)
    assert not writing.called  # the dead writer's claim holds until its lease ends...
    world.clock.advance(3600)  # ...and the next poll takes it over
    await advance_until(world.clock, writing)
    await writing
    assert world.path("k").read_bytes() == b"mine"
    await world.reaper.run_once()  # the dead intent: its location holds a live copy now
    assert world.reaper.resolutions == {"adopted": 1, "deleted": 0, "queued": 0}
    assert world.path("k").read_bytes() == b"mine"
    assert await world.metadata.list_intents() == [] and await world.used() == 4
