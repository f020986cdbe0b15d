"""Tests of writing several copies of an object: the tee, the write quorum, late copies."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

import attrs
import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from zope.interface import implementer

from s3orchestrator.config import PlacementPolicy
from s3orchestrator.jobs.cleanup import CleanupJob
from s3orchestrator.jobs.health import StoreHealth
from s3orchestrator.jobs.reaper import ReaperJob
from s3orchestrator.metadata.records import Instance
from s3orchestrator.metadata.store import MetadataStore
from s3orchestrator.placement.engine import NewObject, Placement
from s3orchestrator.placement.errors import NoRoom
from s3orchestrator.placement.locks import KeyLocks
from s3orchestrator.s3.multipart import MultipartOperations
from s3orchestrator.stores.directory import DirectoryStore
from s3orchestrator.stores.interface import IObjectWrite, ObjectMissing, StoreUnavailable
from tests.unit import test_complete_retry as retry_world
from tests.unit.fakes import CollectingConsumer, FakeRequestBody, stored_bytes

NEW = NewObject(content_type="text/plain", headers={}, user_metadata={})
NAMES = ("a", "b", "c")


@implementer(IObjectWrite)
class GatedWrite:
    """A store's write whose ``done`` waits for the test's ``gate`` too (a slow store),
    and fails with the gate's failure (a store that broke at the end)."""

    def __init__(self, write: Any, gate: Deferred[None], fail_publish: bool = False) -> None:
        self._write = write
        self._fail_publish = fail_publish
        self.staged = write.staged
        self.done: Deferred[None] = Deferred()

        def stored(result: object) -> None:
            def opened(gated: object) -> None:
                outcome = gated if isinstance(gated, Failure) else result
                if isinstance(outcome, Failure):
                    self._write.abort()
                    self.done.errback(outcome)
                else:
                    self.done.callback(None)

            gate.addBoth(opened)

        write.done.addBoth(stored)

    @property
    def location_intact(self) -> bool:
        return bool(self._write.location_intact)

    def publish(self) -> Deferred[None]:
        if self._fail_publish:
            return fail(StoreUnavailable("rename failed"))
        result: Deferred[None] = self._write.publish()
        return result

    def abort(self) -> None:
        self._write.abort()


@implementer(IObjectWrite)
class ClobberingWrite:
    """An unstaged write (an upstream PUT) whose answer is lost once the whole body went
    out: the store may have replaced the object at its location."""

    staged = False
    location_intact = False

    def __init__(self, body: Any) -> None:
        self.done: Deferred[None] = Deferred()
        body.startProducing(CollectingConsumer()).addCallback(
            lambda _: self.done.errback(StoreUnavailable("connection reset"))
        )

    def publish(self) -> Deferred[None]:
        return fail(RuntimeError("never published"))

    def abort(self) -> None:
        pass


class GatedStore(DirectoryStore):
    """A directory store whose writes can be held (``gate``), refused (``refuse``) or
    lost after replacing the location's bytes (``clobber``)."""

    gate: Deferred[None] | None = None
    refuse = False
    fail_publish = False
    clobber = False

    def start_write(self, location: str, body: Any, length: int) -> Any:
        if self.refuse:
            raise StoreUnavailable("connection refused")
        if self.clobber:
            return ClobberingWrite(body)
        write = super().start_write(location, body, length)
        self.last_write = write
        if self.fail_publish:
            return GatedWrite(write, succeed(None), fail_publish=True)
        return write if self.gate is None else GatedWrite(write, self.gate)


def hold_writes(store: GatedStore) -> Deferred[None]:
    """The gate the store's writes wait for from now on (a slow store)."""
    gate: Deferred[None] = Deferred()
    store.gate = gate
    return gate


@pytest.fixture
def world(tmp_path: Path, sqlite_store: Callable[..., MetadataStore]) -> Any:
    stores = {name: GatedStore(name, str(tmp_path / name), reactor) for name in NAMES}
    return sqlite_store(), stores


async def placement_of(world: Any, replicas: int, write_quorum: int, quotas: dict[str, int] | None = None) -> Placement:
    """A placement over the world's stores a, b and c (started) that keeps ``replicas``
    copies of each object, ``write_quorum`` of them before it answers."""
    metadata, stores = world
    policy = PlacementPolicy(replicas=replicas, write_quorum=write_quorum)
    await metadata.start()
    await metadata.sync_stores([(name, (quotas or {}).get(name, 0)) for name in NAMES])
    for store in stores.values():
        await store.start()
    health = StoreHealth(list(stores), unhealthy_after=1)
    return Placement(metadata, stores, "pack", reactor, KeyLocks(), health, policy=lambda bucket: policy)


async def live_copies(metadata: MetadataStore, key: str) -> list[str]:
    return [copy.store for copy in await metadata.object_copies("bkt", key) if copy.state == "live"]


async def used(metadata: MetadataStore) -> dict[str, tuple[int, int]]:
    return {usage.name: (usage.used_bytes, usage.reserved_bytes) for usage in await metadata.store_usage()}


async def queued(metadata: MetadataStore) -> list[str]:
    return [entry.key for entry in await metadata.replication_queue(100)]


@pytest_twisted.ensureDeferred
async def test_two_replicas_put_the_bytes_on_two_stores_and_count_both(world) -> None:
    metadata, stores = world
    placement = await placement_of(world, 2, 2)
    record = await placement.write("bkt", "k", FakeRequestBody(b"0123456789"), NEW)
    assert await live_copies(metadata, "k") == ["a", "b"]
    for name in ("a", "b"):
        assert await stored_bytes(stores[name], record.location) == b"0123456789"
    assert await used(metadata) == {"a": (10, 0), "b": (10, 0), "c": (0, 0)}
    assert await queued(metadata) == []


@pytest_twisted.ensureDeferred
async def test_an_overwrite_replaces_every_copy_and_its_usage(world) -> None:
    metadata, stores = world
    placement = await placement_of(world, 2, 2)
    await placement.write("bkt", "k", FakeRequestBody(b"old old old"), NEW)
    record = await placement.write("bkt", "k", FakeRequestBody(b"new"), NEW)
    for name in ("a", "b"):
        assert await stored_bytes(stores[name], record.location) == b"new"
    assert await used(metadata) == {"a": (3, 0), "b": (3, 0), "c": (0, 0)}
    await placement.delete("bkt", "k")
    assert await used(metadata) == {"a": (0, 0), "b": (0, 0), "c": (0, 0)}
    for name in ("a", "b"):
        with pytest.raises(ObjectMissing):
            await stored_bytes(stores[name], record.location)


@pytest_twisted.ensureDeferred
async def test_the_client_is_answered_at_the_quorum_and_the_late_copy_commits_when_done(world) -> None:
    metadata, stores = world
    placement = await placement_of(world, 3, 2)
    gate = hold_writes(stores["c"])
    record = await placement.write("bkt", "k", FakeRequestBody(b"0123456789"), NEW)
    assert await live_copies(metadata, "k") == ["a", "b"]
    assert await queued(metadata) == ["k"]
    assert await used(metadata) == {"a": (10, 0), "b": (10, 0), "c": (0, 10)}

    gate.callback(None)
    await placement.settled()
    assert await live_copies(metadata, "k") == ["a", "b", "c"]
    assert await queued(metadata) == []
    assert await stored_bytes(stores["c"], record.location) == b"0123456789"
    assert await used(metadata) == {"a": (10, 0), "b": (10, 0), "c": (10, 0)}


@pytest_twisted.ensureDeferred
async def test_a_copy_done_while_the_others_commit_joins_the_object_and_leaves_no_reservation(world) -> None:
    metadata, stores = world
    placement = await placement_of(world, 3, 2)
    gate = hold_writes(stores["c"])
    commit_copies = metadata.commit_copies

    async def commit_after_c_is_done(*args: Any, **kwargs: Any) -> Any:
        await stores["c"].last_write.done
        gate.callback(None)  # c is durable now, after the commit took its snapshot
        return await commit_copies(*args, **kwargs)

    metadata.commit_copies = commit_after_c_is_done
    await placement.write("bkt", "k", FakeRequestBody(b"0123456789"), NEW)
    await placement.settled()
    assert await live_copies(metadata, "k") == ["a", "b", "c"]
    assert await used(metadata) == {"a": (10, 0), "b": (10, 0), "c": (10, 0)}
    assert await queued(metadata) == []


@pytest_twisted.ensureDeferred
async def test_a_copy_that_cannot_be_published_removes_the_object_and_stops_the_late_copies(world) -> None:
    metadata, stores = world
    placement = await placement_of(world, 3, 2)
    stores["b"].fail_publish = True
    gate = hold_writes(stores["c"])
    with pytest.raises(StoreUnavailable):
        await placement.write("bkt", "k", FakeRequestBody(b"0123456789"), NEW)
    gate.callback(None)
    await placement.settled()
    assert await metadata.get_object("bkt", "k") is None
    assert await used(metadata) == {"a": (0, 0), "b": (0, 0), "c": (0, 0)}
    for name in NAMES:  # no object, no temp file left
        assert [path for path in Path(stores[name].root).rglob("*") if path.is_file()] == []


@pytest_twisted.ensureDeferred
async def test_a_late_copy_that_fails_leaves_the_object_queued_and_its_room_released(world) -> None:
    metadata, stores = world
    placement = await placement_of(world, 3, 2)
    gate = hold_writes(stores["c"])
    record = await placement.write("bkt", "k", FakeRequestBody(b"0123456789"), NEW)
    gate.errback(StoreUnavailable("the disk went away"))
    await placement.settled()
    assert await live_copies(metadata, "k") == ["a", "b"]
    assert await queued(metadata) == ["k"]
    assert await used(metadata) == {"a": (10, 0), "b": (10, 0), "c": (0, 0)}
    with pytest.raises(ObjectMissing):
        await stored_bytes(stores["c"], record.location)


@pytest_twisted.ensureDeferred
async def test_a_store_refusing_its_copy_under_a_full_quorum_fails_the_write_with_nothing_left(world) -> None:
    metadata, stores = world
    placement = await placement_of(world, 2, 2)
    stores["b"].refuse = True
    with pytest.raises(StoreUnavailable):
        await placement.write("bkt", "k", FakeRequestBody(b"0123456789"), NEW)
    assert await metadata.get_object("bkt", "k") is None
    assert await used(metadata) == {"a": (0, 0), "b": (0, 0), "c": (0, 0)}
    with pytest.raises(ObjectMissing):
        await stored_bytes(stores["a"], "bkt/k")


@pytest_twisted.ensureDeferred
async def test_a_copy_failing_at_the_end_under_a_full_quorum_fails_the_write(world) -> None:
    metadata, stores = world
    placement = await placement_of(world, 2, 2)
    hold_writes(stores["b"]).errback(StoreUnavailable("reset"))
    with pytest.raises(StoreUnavailable):
        await placement.write("bkt", "k", FakeRequestBody(b"0123456789"), NEW)
    assert await metadata.get_object("bkt", "k") is None
    assert await used(metadata) == {"a": (0, 0), "b": (0, 0), "c": (0, 0)}


@pytest_twisted.ensureDeferred
async def test_a_failed_write_that_may_have_replaced_a_second_copy_in_place_lets_only_that_copy_go(world) -> None:
    """The object's copies are on a (its first) and b; an overwrite fails, its write to b
    with its answer lost (b may hold the new bytes now): b's copy is let go, a's stays."""
    metadata, stores = world
    placement = await placement_of(world, 2, 2)
    record = await placement.write("bkt", "k", FakeRequestBody(b"old old old"), NEW)
    assert (record.store, await live_copies(metadata, "k")) == ("a", ["a", "b"])
    stores["b"].clobber = True
    with pytest.raises(StoreUnavailable):
        await placement.write("bkt", "k", FakeRequestBody(b"new"), NEW)

    assert await live_copies(metadata, "k") == ["a"]
    assert await queued(metadata) == ["k"]
    # b's location (old copy or new bytes, whichever it holds) removed, its usage released.
    with pytest.raises(ObjectMissing):
        await stored_bytes(stores["b"], record.location)
    assert await metadata.list_cleanups(10) == []
    assert await used(metadata) == {"a": (11, 0), "b": (0, 0), "c": (0, 0)}
    found = await placement.read("bkt", "k", lambda record: None)
    assert found is not None and found[1] is not None and found[1].store == "a"
    found[1].cancel()


@pytest_twisted.ensureDeferred
async def test_a_quorum_of_one_with_a_store_refusing_commits_one_copy_and_queues_the_other(world) -> None:
    metadata, stores = world
    placement = await placement_of(world, 2, 1)
    stores["a"].refuse = True
    await placement.write("bkt", "k", FakeRequestBody(b"0123456789"), NEW)
    assert await live_copies(metadata, "k") == ["b"]
    assert await queued(metadata) == ["k"]
    assert await used(metadata) == {"a": (0, 0), "b": (10, 0), "c": (0, 0)}


@pytest_twisted.ensureDeferred
async def test_too_few_healthy_stores_for_the_quorum_is_unavailable_and_too_little_room_is_no_room(world) -> None:
    metadata, stores = world
    placement = await placement_of(world, 3, 3, quotas={"c": 5})
    with pytest.raises(NoRoom):
        await placement.write("bkt", "k", FakeRequestBody(b"0123456789"), NEW)
    placement.health.record_failure("b", "down")
    with pytest.raises(StoreUnavailable):
        await placement.write("bkt", "k", FakeRequestBody(b"01"), NEW)
    assert await used(metadata) == {"a": (0, 0), "b": (0, 0), "c": (0, 0)}


def copy_target(source: Any, key: str) -> Any:
    return attrs.evolve(source, key=key, last_modified_ms=source.last_modified_ms + 1)


@pytest_twisted.ensureDeferred
async def test_a_copy_to_another_key_makes_the_configured_number_of_copies(world) -> None:
    metadata, stores = world
    placement = await placement_of(world, 1, 1)
    source = await placement.write("bkt", "src", FakeRequestBody(b"0123456789"), NEW)
    placement.policy = lambda bucket: PlacementPolicy(replicas=2, write_quorum=2)
    # On a within the store, to b streamed from a.
    copied = await placement.copy(source, copy_target(source, "dst"))
    assert await live_copies(metadata, "dst") == ["a", "b"]
    for name in ("a", "b"):
        assert await stored_bytes(stores[name], copied.location) == b"0123456789"
    assert await used(metadata) == {"a": (20, 0), "b": (10, 0), "c": (0, 0)}


@pytest_twisted.ensureDeferred
async def test_a_copy_onto_itself_keeps_every_copy(world) -> None:
    metadata, stores = world
    placement = await placement_of(world, 2, 2)
    source = await placement.write("bkt", "k", FakeRequestBody(b"0123456789"), NEW)
    replaced = attrs.evolve(source, content_type="image/png", last_modified_ms=source.last_modified_ms + 1)
    await placement.copy(source, replaced)
    assert await live_copies(metadata, "k") == ["a", "b"]
    assert (await metadata.get_object("bkt", "k")).content_type == "image/png"  # type: ignore[union-attr]
    assert await used(metadata) == {"a": (10, 0), "b": (10, 0), "c": (0, 0)}
    for name in ("a", "b"):
        assert await stored_bytes(stores[name], source.location) == b"0123456789"


@pytest_twisted.ensureDeferred
async def test_a_copy_short_of_its_quorum_is_unavailable_and_leaves_nothing(world) -> None:
    metadata, stores = world
    placement = await placement_of(world, 1, 1)
    source = await placement.write("bkt", "src", FakeRequestBody(b"0123456789"), NEW)
    placement.policy = lambda bucket: PlacementPolicy(replicas=2, write_quorum=2)
    stores["b"].refuse = True
    with pytest.raises(StoreUnavailable):
        await placement.copy(source, copy_target(source, "dst"))
    assert await metadata.get_object("bkt", "dst") is None
    assert await used(metadata) == {"a": (10, 0), "b": (0, 0), "c": (0, 0)}


@pytest_twisted.ensureDeferred
async def test_a_completed_multipart_upload_has_one_copy_and_waits_for_the_replicator(world) -> None:
    metadata, stores = world
    placement = await placement_of(world, 2, 2)
    multipart = MultipartOperations(placement, metadata, reactor, expire_after=86400)
    await placement.write("bkt", "obj", FakeRequestBody(b"an older object"), NEW)
    upload_id = await retry_world.uploaded(SimpleNamespace(multipart=multipart))
    await retry_world.complete(SimpleNamespace(multipart=multipart), upload_id, retry_world.BOTH)
    assert await live_copies(metadata, "obj") == ["a"]
    assert await queued(metadata) == ["obj"]
    size = len(retry_world.PART_ONE) + len(retry_world.PART_TWO)
    assert await used(metadata) == {"a": (size, 0), "b": (0, 0), "c": (0, 0)}
    with pytest.raises(ObjectMissing):
        await stored_bytes(stores["b"], "bkt/obj")  # the older object's second copy is gone


async def pending_intents(metadata: MetadataStore) -> list[str]:
    return [intent.store for intent in await metadata.list_intents()]


async def queued_cleanups(metadata: MetadataStore) -> list[tuple[str, str, int]]:
    return [(entry.store, entry.location, entry.size) for entry in await metadata.list_cleanups(100)]


async def counts(metadata: MetadataStore) -> dict[str, int]:
    return {usage.name: usage.object_count for usage in await metadata.store_usage()}


@pytest_twisted.ensureDeferred
async def test_an_overwrite_elsewhere_queues_the_old_copy_its_store_keeps_until_the_cleanup_job(world) -> None:
    metadata, stores = world
    placement = await placement_of(world, 2, 2)
    old = await placement.write("bkt", "k", FakeRequestBody(b"old old old"), NEW)
    placement.health.record_failure("a", "down")
    stores["a"].delete = lambda location: fail(StoreUnavailable("down"))  # type: ignore[method-assign]
    # On b over the old copy in place, and on c; a's copy is queued and counted until gone.
    await placement.write("bkt", "k", FakeRequestBody(b"new"), NEW)
    assert await live_copies(metadata, "k") == ["b", "c"]
    assert await pending_intents(metadata) == []
    assert await queued_cleanups(metadata) == [("a", old.location, 11)]
    assert await used(metadata) == {"a": (11, 0), "b": (3, 0), "c": (3, 0)}
    assert await counts(metadata) == {"a": 0, "b": 1, "c": 1}

    del stores["a"].delete
    assert await CleanupJob(metadata, lambda: stores, 60, reactor).run() == 1
    assert await queued_cleanups(metadata) == []
    assert await used(metadata) == {"a": (0, 0), "b": (3, 0), "c": (3, 0)}
    with pytest.raises(ObjectMissing):
        await stored_bytes(stores["a"], old.location)

    await placement.delete("bkt", "k")
    assert await queued_cleanups(metadata) == []
    assert await used(metadata) == {"a": (0, 0), "b": (0, 0), "c": (0, 0)}
    assert await counts(metadata) == {"a": 0, "b": 0, "c": 0}


@pytest_twisted.ensureDeferred
async def test_every_copy_records_its_intent_and_the_commits_drop_them(world) -> None:
    metadata, stores = world
    placement = await placement_of(world, 3, 2)
    gate = hold_writes(stores["c"])
    reserve_copies = metadata.reserve_copies
    recorded: list[list[str]] = []

    async def reserve_and_look(*args: Any) -> Any:
        reserved = await reserve_copies(*args)
        recorded.append(await pending_intents(metadata))
        return reserved

    metadata.reserve_copies = reserve_and_look
    await placement.write("bkt", "k", FakeRequestBody(b"0123456789"), NEW)
    assert recorded == [["a", "b", "c"]]
    assert await pending_intents(metadata) == ["c"]  # the late copy's, until add_copy
    gate.callback(None)
    await placement.settled()
    assert await pending_intents(metadata) == []
    assert await live_copies(metadata, "k") == ["a", "b", "c"]


@pytest_twisted.ensureDeferred
async def test_a_failed_late_copy_drops_its_intent_and_queues_nothing_where_its_bytes_never_landed(world) -> None:
    metadata, stores = world
    placement = await placement_of(world, 3, 2)
    gate = hold_writes(stores["c"])
    await placement.write("bkt", "k", FakeRequestBody(b"0123456789"), NEW)
    gate.errback(StoreUnavailable("the disk went away"))
    await placement.settled()
    assert await pending_intents(metadata) == []
    assert await queued_cleanups(metadata) == []
    assert await used(metadata) == {"a": (10, 0), "b": (10, 0), "c": (0, 0)}


@pytest_twisted.ensureDeferred
async def test_the_replicators_copies_record_intents_that_add_copy_drops(world) -> None:
    metadata, stores = world
    placement = await placement_of(world, 1, 1)
    await placement.write("bkt", "k", FakeRequestBody(b"0123456789"), NEW)
    placement.policy = lambda bucket: PlacementPolicy(replicas=3, write_quorum=3)
    add_copy = metadata.add_copy
    seen: list[list[str]] = []

    async def look_then_add(*args: Any) -> Any:
        seen.append(await pending_intents(metadata))
        return await add_copy(*args)

    metadata.add_copy = look_then_add
    replicated = await placement.replicate("bkt", "k")
    assert (replicated.copies, replicated.missing) == (2, 0)
    assert seen == [["b", "c"], ["c"]]
    assert await pending_intents(metadata) == []
    assert await live_copies(metadata, "k") == ["a", "b", "c"]
    assert await used(metadata) == {"a": (10, 0), "b": (10, 0), "c": (10, 0)}


@pytest_twisted.ensureDeferred
async def test_after_a_crash_mid_overwrite_the_reaper_and_cleanup_job_settle_the_late_copy(world) -> None:
    metadata, stores = world
    placement = await placement_of(world, 3, 3)
    old = await placement.write("bkt", "k", FakeRequestBody(b"old old old"), NEW)
    placement.policy = lambda bucket: PlacementPolicy(replicas=3, write_quorum=2)
    gate = hold_writes(stores["c"])  # c's copy does not finish: the writer dies with it in flight
    await placement.write("bkt", "k", FakeRequestBody(b"new"), NEW)
    assert await pending_intents(metadata) == ["c"]
    assert await queued_cleanups(metadata) == [("c", old.location, 11)]  # c's old copy, let go of
    # The writer's instance, alive for now: its lease ends before ``later``.
    now_ms = int(reactor.seconds() * 1000)
    await metadata.register_instance(Instance(id=metadata.instance_id, host="host", pid=1, started_ms=0,
                                              expires_ms=now_ms + 1_800_000))
    later = Clock()
    later.advance(reactor.seconds() + 3600)
    cleanup = CleanupJob(metadata, lambda: stores, 60, later)
    assert await cleanup.run() == 0  # the late copy's intent guards the location

    reaper = ReaperJob(metadata, lambda: stores, 60, later)  # the writer's lease has ended: dead
    assert await reaper.run() == 1 and reaper.resolutions["deleted"] == 1
    later.advance(60)  # the postponed entry's next try
    assert await cleanup.run() == 1
    assert await pending_intents(metadata) == [] and await queued_cleanups(metadata) == []
    assert await used(metadata) == {"a": (3, 0), "b": (3, 0), "c": (0, 0)}
    assert await counts(metadata) == {"a": 1, "b": 1, "c": 0}
    with pytest.raises(ObjectMissing):
        await stored_bytes(stores["c"], old.location)
    gate.errback(StoreUnavailable("gone with its process"))  # ends the test's dead coroutine
    await placement.settled()
