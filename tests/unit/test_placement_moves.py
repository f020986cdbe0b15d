"""Store modes in placement (no new copies on readonly and drain stores) and moving a copy
to another store (``Placement.move_copy``), on directory stores and a SQLite metadata store;
and new copies (moved or replicated) never clobber an overwrite committed onto their store."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred, fail, succeed
from zope.interface import implementer

from s3orchestrator.config import PlacementPolicy
from s3orchestrator.jobs.health import StoreHealth
from s3orchestrator.metadata.store import MetadataStore, sqlite_metadata_store
from s3orchestrator.placement.engine import NewObject, Placement
from s3orchestrator.placement.errors import NoRoom
from s3orchestrator.placement.locks import KeyLocks
from s3orchestrator.placement.moves import GONE, MOVED, SKIPPED
from s3orchestrator.stores.directory import DirectoryStore
from s3orchestrator.stores.interface import IObjectWrite, ObjectMissing, StoreUnavailable
from tests.unit.fakes import FakeRequestBody, stored_bytes

NEW = NewObject(content_type="text/plain", headers={}, user_metadata={})
NAMES = ("a", "b", "c")


@pytest.fixture
def world(tmp_path: Path) -> Iterator[Any]:
    metadata = sqlite_metadata_store(str(tmp_path / "metadata.sqlite3"), reactor)
    stores = {name: DirectoryStore(name, str(tmp_path / name), reactor) for name in NAMES}
    yield metadata, stores
    metadata.database.close()


async def placement_of(world: Any, replicas: int = 1, modes: dict[str, str] | None = None,
                       quotas: dict[str, int] | None = None, zones: dict[str, str] | None = None) -> Placement:
    metadata, stores = world
    await metadata.start()
    await metadata.sync_stores([(name, (quotas or {}).get(name, 0)) for name in NAMES])
    for store in stores.values():
        await store.start()
    policy = PlacementPolicy(replicas=replicas, write_quorum=replicas)
    current = modes if modes is not None else {}
    return Placement(metadata, stores, "pack", reactor, KeyLocks(), StoreHealth(list(stores), unhealthy_after=1),
                     policy=lambda bucket: policy, modes=lambda: current, zones=lambda: zones or {})


async def live_copies(metadata: MetadataStore, key: str) -> list[str]:
    return [copy.store for copy in await metadata.object_copies("bkt", key) if copy.state == "live"]


async def used(metadata: MetadataStore) -> dict[str, int]:
    return {usage.name: usage.used_bytes + usage.reserved_bytes for usage in await metadata.store_usage()}


@pytest.mark.parametrize("mode", ["readonly", "drain"])
@pytest_twisted.ensureDeferred
async def test_readonly_and_drain_stores_get_no_new_copies(world, mode: str) -> None:
    metadata, _ = world
    modes = {"a": "normal", "b": "normal", "c": "normal"}
    placement = await placement_of(world, replicas=2, modes=modes)
    modes["a"] = mode
    await placement.write("bkt", "k", FakeRequestBody(b"0123456789"), NEW)
    assert await live_copies(metadata, "k") == ["b", "c"]
    assert await placement.pick_store(10) == "b"
    modes["b"] = mode
    with pytest.raises(NoRoom):
        await placement.write("bkt", "k2", FakeRequestBody(b"0123456789"), NEW)
    # Reads (and deletes) still use them.
    found = await placement.read("bkt", "k", lambda record: None)
    assert found is not None
    assert await placement.delete("bkt", "k") is not None


@pytest_twisted.ensureDeferred
async def test_a_move_copies_to_the_routed_store_then_lets_the_old_copy_go(world) -> None:
    metadata, stores = world
    modes = {"a": "normal"}
    placement = await placement_of(world, modes=modes)
    record = await placement.write("bkt", "k", FakeRequestBody(b"0123456789"), NEW)
    assert record.store == "a"
    modes["a"] = "drain"

    moved = await placement.move_copy("bkt", "k", "a")

    assert (moved.outcome, moved.to_store, moved.size) == (MOVED, "b", 10)
    assert await live_copies(metadata, "k") == ["b"]
    assert (await metadata.get_object("bkt", "k")).store == "b"
    assert await stored_bytes(stores["b"], record.location) == b"0123456789"
    with pytest.raises(ObjectMissing):
        await stored_bytes(stores["a"], record.location)
    # Quota exact: the old copy's bytes are gone, so is their usage.
    assert await used(metadata) == {"a": 0, "b": 10, "c": 0}
    assert await metadata.list_cleanups(10) == []
    # Moving it again finds no copy there.
    assert (await placement.move_copy("bkt", "k", "a")).outcome == GONE


@pytest_twisted.ensureDeferred
async def test_a_move_to_a_named_store_avoids_the_objects_other_copies(world) -> None:
    metadata, _ = world
    placement = await placement_of(world, replicas=2)
    await placement.write("bkt", "k", FakeRequestBody(b"abc"), NEW)
    assert await live_copies(metadata, "k") == ["a", "b"]
    assert (await placement.move_copy("bkt", "k", "a", to_store="b")).outcome == SKIPPED
    moved = await placement.move_copy("bkt", "k", "a", to_store="c")
    assert (moved.outcome, moved.to_store) == (MOVED, "c")
    assert await live_copies(metadata, "k") == ["b", "c"]
    assert await used(metadata) == {"a": 0, "b": 3, "c": 3}


@pytest_twisted.ensureDeferred
async def test_a_move_prefers_another_zone_than_the_other_copies(world) -> None:
    metadata, _ = world
    modes = {"a": "normal"}
    placement = await placement_of(world, replicas=2, modes=modes, zones={"b": "z1", "c": "z2", "a": "z2"})
    await placement.write("bkt", "k", FakeRequestBody(b"abc"), NEW)
    assert await live_copies(metadata, "k") == ["a", "b"]
    modes["b"] = "drain"
    # c is in a's zone, but it is the only store left: the move goes there.
    moved = await placement.move_copy("bkt", "k", "b")
    assert moved.to_store == "c"


@pytest_twisted.ensureDeferred
async def test_a_move_respects_quotas(world) -> None:
    metadata, _ = world
    placement = await placement_of(world, quotas={"a": 0, "b": 5, "c": 5})
    await placement.write("bkt", "k", FakeRequestBody(b"0123456789"), NEW)
    with pytest.raises(NoRoom):
        await placement.move_copy("bkt", "k", "a")
    assert await live_copies(metadata, "k") == ["a"]
    assert await used(metadata) == {"a": 10, "b": 0, "c": 0}


@pytest_twisted.ensureDeferred
async def test_an_object_overwritten_during_its_move_keeps_the_new_bytes(world, monkeypatch) -> None:
    metadata, stores = world
    modes = {"a": "normal"}
    placement = await placement_of(world, modes=modes)
    await placement.write("bkt", "k", FakeRequestBody(b"old bytes"), NEW)
    modes["a"] = "drain"
    # The overwrite lands after the move read the record, before its copy is added.
    replicate_to = placement._replicate_to

    async def overwritten_first(*args: Any, **kwargs: Any) -> bool:
        modes["a"] = "normal"
        modes["b"] = "readonly"
        await placement.write("bkt", "k", FakeRequestBody(b"new!"), NEW)
        modes["b"] = "normal"
        return await replicate_to(*args, **kwargs)

    monkeypatch.setattr(placement, "_replicate_to", overwritten_first)
    assert (await placement.move_copy("bkt", "k", "a")).outcome == GONE
    record = await metadata.get_object("bkt", "k")
    # The new bytes replaced the old copy's in place on a; the moved copy on b was dropped.
    assert record.size == 4 and await live_copies(metadata, "k") == ["a"]
    assert await stored_bytes(stores["a"], record.location) == b"new!"
    with pytest.raises(ObjectMissing):
        await stored_bytes(stores["b"], record.location)
    assert await used(metadata) == {"a": 4, "b": 0, "c": 0}


@pytest_twisted.ensureDeferred
async def test_a_move_cut_short_after_its_new_copy_lets_the_old_copy_go(world) -> None:
    metadata, _ = world
    placement = await placement_of(world, replicas=2)
    await placement.write("bkt", "k", FakeRequestBody(b"abc"), NEW)
    placement.policy = lambda bucket: PlacementPolicy(replicas=1, write_quorum=1)
    moved = await placement.move_copy("bkt", "k", "a")
    assert (moved.outcome, moved.to_store) == (MOVED, None)
    assert await live_copies(metadata, "k") == ["b"]
    assert await used(metadata) == {"a": 0, "b": 3, "c": 0}


@implementer(IObjectWrite)
class InPlaceWrite:
    """A store's write that replaces the location's bytes as it ends (an upstream PUT)."""

    staged = False
    location_intact = False

    def __init__(self, write: Any) -> None:
        self._write = write
        self.done = write.done.addCallback(lambda _: write.publish())

    def publish(self) -> Deferred[None]:
        return succeed(None)

    def abort(self) -> None:
        self._write.abort()


class InPlaceStore(DirectoryStore):
    def start_write(self, location: str, body: Any, length: int) -> Any:
        return InPlaceWrite(super().start_write(location, body, length))


@pytest_twisted.ensureDeferred
async def test_an_object_overwritten_onto_the_target_before_the_move_reserves_is_not_clobbered(
    world, tmp_path: Path, monkeypatch
) -> None:
    metadata, stores = world
    stores["b"] = InPlaceStore("b", str(tmp_path / "b"), reactor)
    modes = {"b": "readonly", "c": "readonly"}
    placement = await placement_of(world, modes=modes)
    await placement.write("bkt", "k", FakeRequestBody(b"old bytes"), NEW)
    modes.update(a="drain", b="normal")
    reserve_move = placement._reserve_move

    async def overwritten_first(*args: Any) -> Any:
        await placement.write("bkt", "k", FakeRequestBody(b"new!"), NEW)  # lands on b
        return await reserve_move(*args)

    monkeypatch.setattr(placement, "_reserve_move", overwritten_first)
    # The old copy's bytes outlive the overwrite a while (its store is slow to delete them).
    monkeypatch.setattr(stores["a"], "delete", lambda location: fail(StoreUnavailable("busy")))
    assert (await placement.move_copy("bkt", "k", "a")).outcome == GONE
    record = await metadata.get_object("bkt", "k")
    assert await live_copies(metadata, "k") == ["b"]
    assert await stored_bytes(stores["b"], record.location) == b"new!"
    assert await used(metadata) == {"a": 9, "b": 4, "c": 0}  # a's old bytes queued for cleanup
    assert await metadata.list_intents() == []


@pytest_twisted.ensureDeferred
async def test_the_replicator_never_clobbers_an_overwrite_committed_onto_its_target(
    world, tmp_path: Path, monkeypatch
) -> None:
    metadata, stores = world
    stores["a"] = InPlaceStore("a", str(tmp_path / "a"), reactor)
    modes = {"a": "readonly", "b": "readonly"}
    placement = await placement_of(world, modes=modes)
    await placement.write("bkt", "k", FakeRequestBody(b"old bytes"), NEW)  # on c alone
    placement.policy = lambda bucket: PlacementPolicy(replicas=2, write_quorum=2)
    modes.update(a="normal", b="normal", c="readonly")
    reserve_copies = placement.reserve_copies
    overwrites = [b"new!"]

    async def overwritten_first(*args: Any, **kwargs: Any) -> Any:
        if overwrites:  # the replicator's reserve (the overwrite's own goes straight on)
            await placement.write("bkt", "k", FakeRequestBody(overwrites.pop()), NEW)  # on a and b
            modes["c"] = "normal"
        return await reserve_copies(*args, **kwargs)

    monkeypatch.setattr(placement, "reserve_copies", overwritten_first)
    # The old copy's bytes outlive the overwrite a while (its store is slow to delete them).
    monkeypatch.setattr(stores["c"], "delete", lambda location: fail(StoreUnavailable("busy")))
    await placement.replicate("bkt", "k")
    record = await metadata.get_object("bkt", "k")
    assert await live_copies(metadata, "k") == ["a", "b"]
    for name in ("a", "b"):
        assert await stored_bytes(stores[name], record.location) == b"new!"
    assert await metadata.list_intents() == []
