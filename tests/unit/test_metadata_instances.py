"""Instances and their leases, reservations owned by them, and usage in counter shards
(both engines): what a dead instance leaves is released, a live one's is not; concurrent
reserves on several connections never overcommit; usage sums stay exact."""

from __future__ import annotations

import time
from typing import Any, Callable, Sequence

import attrs
import pytest
import pytest_twisted
from twisted.internet import defer
from twisted.internet.task import Clock

from s3orchestrator.metadata import store as store_module
from s3orchestrator.metadata.records import Instance, IntentPlan, ObjectRecord, StoreUsage
from s3orchestrator.metadata.schema import load_migrations, migrate
from s3orchestrator.metadata.store import USAGE_SHARDS, InstanceIdInUse, MetadataStore
from s3orchestrator.routing import has_room

Rows = Callable[..., list[tuple[Any, ...]]]
MIB = 1024 * 1024
NOW_MS = 1_767_225_600_000
LEASE_MS = 30_000


def instance(instance_id: str, host: str = "h", pid: int = 1, started_ms: int = NOW_MS,
             expires_ms: int = NOW_MS + LEASE_MS) -> Instance:
    return Instance(id=instance_id, host=host, pid=pid, started_ms=started_ms, expires_ms=expires_ms)


def record(key: str, store: str, size: int) -> ObjectRecord:
    return ObjectRecord(
        bucket="bkt", key=key, store=store, location=f"bkt/{key}", size=size,
        etag="0123456789abcdef0123456789abcdef", content_type="binary/octet-stream", last_modified_ms=NOW_MS,
    )


def clock_at(ms: int) -> Clock:
    clock = Clock()
    clock.advance(ms / 1000)
    return clock


async def opened(make_store, instance_id: str, clock: Clock, stores: Sequence[tuple[str, int]] = (("a", 0),)
                 ) -> MetadataStore:
    metadata = make_store(instance_id=instance_id, clock=clock)
    await metadata.start()
    await metadata.sync_stores(list(stores))
    return metadata


async def reserved(metadata: MetadataStore) -> dict[str, int]:
    return {usage.name: usage.reserved_bytes for usage in await metadata.store_usage()}


@pytest_twisted.ensureDeferred
async def test_lease_expiry_releases_a_dead_owners_reservations_but_not_a_live_ones(make_store) -> None:
    clock = clock_at(NOW_MS)
    dead = await opened(make_store, "dead:1", clock)
    live = await opened(make_store, "live:2", clock)
    await dead.register_instance(instance("dead:1", pid=1))
    await live.register_instance(instance("live:2", pid=2))
    await dead.reserve(5, lambda usage: "a")
    await live.reserve(7, lambda usage: "a")
    assert await live.release_dead_reservations(NOW_MS + LEASE_MS - 1) == 0
    assert await live.renew_instance(instance("live:2", pid=2), NOW_MS + 2 * LEASE_MS) == "renewed"
    assert await live.release_dead_reservations(NOW_MS + LEASE_MS) == 1
    assert await reserved(live) == {"a": 7}
    assert await live.forget_dead_instances(NOW_MS + LEASE_MS) == 1
    assert [i.id for i in await live.list_instances()] == ["live:2"]


@pytest_twisted.ensureDeferred
async def test_a_deregistered_instances_reservations_are_released_at_once(make_store) -> None:
    clock = clock_at(NOW_MS)
    metadata = await opened(make_store, "node-a", clock)
    await metadata.register_instance(instance("node-a"))
    await metadata.reserve(5, lambda usage: "a")
    assert await metadata.release_dead_reservations(NOW_MS) == 0
    await metadata.deregister_instance(instance("node-a"))
    assert await metadata.release_dead_reservations(NOW_MS) == 1


@pytest_twisted.ensureDeferred
async def test_dead_intents_are_those_of_dead_owners_only(make_store) -> None:
    clock = clock_at(NOW_MS)
    dead = await opened(make_store, "dead:1", clock)
    live = await opened(make_store, "live:2", clock)
    await live.register_instance(instance("live:2", pid=2))
    plan = IntentPlan(bucket="bkt", key="k", locate=lambda store: "bkt/k")
    await dead.reserve_copies(3, lambda usage: ("a",), plan)
    await live.reserve_copies(4, lambda usage: ("a",), plan)
    assert [(i.owner, i.size) for i in await live.dead_intents(NOW_MS)] == [("dead:1", 3)]
    # Reservations with an intent wait for the reaper to resolve the intent.
    assert await live.release_dead_reservations(NOW_MS) == 0
    assert {(i.owner, i.size) for i in await live.dead_intents(NOW_MS + LEASE_MS)} == {("dead:1", 3), ("live:2", 4)}


@pytest_twisted.ensureDeferred
async def test_what_an_earlier_process_of_the_same_id_left_is_a_dead_instances(make_store) -> None:
    before = await opened(make_store, "node-a", clock_at(NOW_MS))
    await before.register_instance(instance("node-a", pid=10))
    await before.reserve(5, lambda usage: "a")
    # It crashed; the next process of that id, on the same host and pid (a container's pid 1),
    # registers before its lease ran out.
    after = await opened(make_store, "node-a", clock_at(NOW_MS + 1000))
    await after.register_instance(instance("node-a", pid=10, started_ms=NOW_MS + 1000))
    await after.reserve(7, lambda usage: "a")
    assert await after.release_dead_reservations(NOW_MS + 1000) == 1
    assert await reserved(after) == {"a": 7}


@pytest_twisted.ensureDeferred
async def test_an_id_held_by_a_live_process_elsewhere_is_refused_until_its_lease_expires(make_store) -> None:
    first = await opened(make_store, "node-a", clock_at(NOW_MS))
    await first.register_instance(instance("node-a", host="h1", pid=10))
    second = await opened(make_store, "node-a", clock_at(NOW_MS + LEASE_MS - 1))
    with pytest.raises(InstanceIdInUse):
        await second.register_instance(instance("node-a", host="h2", pid=10, started_ms=NOW_MS + LEASE_MS - 1))
    later = await opened(make_store, "node-a", clock_at(NOW_MS + LEASE_MS))
    await later.register_instance(instance("node-a", host="h2", pid=10, started_ms=NOW_MS + LEASE_MS))
    assert [(i.host, i.started_ms) for i in await later.list_instances()] == [("h2", NOW_MS + LEASE_MS)]
    # The first process's heartbeat now finds its id taken and changes nothing.
    assert await first.renew_instance(instance("node-a", host="h1", pid=10), NOW_MS + 2 * LEASE_MS) == "taken"
    assert [(i.host, i.expires_ms) for i in await later.list_instances()] == [("h2", NOW_MS + LEASE_MS)]


@pytest_twisted.ensureDeferred
async def test_a_renewal_after_the_lease_expired_says_so_and_renews(make_store) -> None:
    clock = clock_at(NOW_MS)
    metadata = await opened(make_store, "node-a", clock)
    me = instance("node-a")
    await metadata.register_instance(me)
    clock.advance(LEASE_MS / 1000)
    assert await metadata.renew_instance(me, NOW_MS + 2 * LEASE_MS) == "lapsed"
    await metadata.forget_dead_instances(NOW_MS + 2 * LEASE_MS)
    assert await metadata.list_instances() == []
    assert await metadata.renew_instance(me, NOW_MS + 3 * LEASE_MS) == "lapsed"
    assert await metadata.list_instances() == [instance("node-a", expires_ms=NOW_MS + 3 * LEASE_MS)]
    assert await metadata.renew_instance(me, NOW_MS + 4 * LEASE_MS) == "renewed"


def first_with_room(size: int) -> Callable[[Sequence[StoreUsage]], str | None]:
    def choose(usage: Sequence[StoreUsage]) -> str | None:
        # Runs in each connection's thread; the pause lets the transactions interleave.
        time.sleep(0.002)
        return next((store.name for store in usage if has_room(store, size)), None)

    return choose


@pytest_twisted.ensureDeferred
async def test_concurrent_reserves_from_two_stores_on_one_database_never_overcommit(make_store) -> None:
    # Room for 10 MiB in all, 6 on a and 4 on b: of 40 attempts of 1 MiB, exactly 10 succeed.
    clock = clock_at(NOW_MS)
    one = await opened(make_store, "one:1", clock, [("a", 6 * MIB), ("b", 4 * MIB)])
    two = await opened(make_store, "two:2", clock, [("a", 6 * MIB), ("b", 4 * MIB)])
    choose = first_with_room(MIB)
    results = await defer.gatherResults([(one if i % 2 else two).reserve(MIB, choose) for i in range(40)])
    granted = [r for r in results if r is not None]
    assert len(granted) == 10
    assert sorted(r.store for r in granted) == ["a"] * 6 + ["b"] * 4
    assert await reserved(one) == {"a": 6 * MIB, "b": 4 * MIB}


@pytest_twisted.ensureDeferred
async def test_concurrent_commits_and_releases_keep_the_usage_sums_exact(make_store, db_rows: Rows) -> None:
    clock = clock_at(NOW_MS)
    one = await opened(make_store, "one:1", clock, [("a", 0), ("b", 0)])
    two = await opened(make_store, "two:2", clock, [("a", 0), ("b", 0)])
    stores = [one, two]
    reservations = [await stores[i % 2].reserve(10 + i, lambda usage, i=i: "ab"[i % 3 % 2]) for i in range(24)]
    work = []
    for i, reservation in enumerate(reservations):
        metadata = stores[(i // 2) % 2]
        if i % 4 == 3:
            work.append(metadata.release(reservation.id))
        else:
            work.append(metadata.commit_object(reservation.id, record(f"k{i}", reservation.store, reservation.size)))
    await defer.gatherResults(work)
    expected: dict[str, tuple[int, int]] = {"a": (0, 0), "b": (0, 0)}
    for i, reservation in enumerate(reservations):
        if i % 4 != 3:
            used, count = expected[reservation.store]
            expected[reservation.store] = (used + reservation.size, count + 1)
    usage = await one.store_usage()
    assert {u.name: (u.used_bytes, u.object_count) for u in usage} == expected
    assert all(u.reserved_bytes == 0 for u in usage)
    shards = db_rows("SELECT shard FROM store_usage")
    assert all(0 <= int(shard) < USAGE_SHARDS for (shard,) in shards)


@pytest_twisted.ensureDeferred
async def test_a_copy_found_missing_while_a_commit_replaces_its_object_is_let_go_once(
    make_store, monkeypatch
) -> None:
    let_go_bytes = store_module._let_go_bytes

    def slowly(*args: Any, **kwargs: Any) -> None:
        time.sleep(0.05)  # in the database thread: the other transaction reads the same copy now
        let_go_bytes(*args, **kwargs)

    monkeypatch.setattr(store_module, "_let_go_bytes", slowly)
    clock = clock_at(NOW_MS)
    one = await opened(make_store, "one:1", clock)
    two = await opened(make_store, "two:2", clock)
    first = await one.reserve(100, lambda usage: "a")
    await one.commit_object(first.id, record("k", "a", 100))
    (old_copy,) = await one.object_copies("bkt", "k")
    replacing = await two.reserve(20, lambda usage: "a")
    await defer.gatherResults([
        one.mark_copy_missing("bkt", "k", old_copy),
        two.commit_object(replacing.id, attrs.evolve(record("k", "a", 20), location="bkt/k2")),
    ])
    # Whichever ran first, the old copy's bytes are queued once and the new object counts.
    assert [(e.location, e.size) for e in await one.list_cleanups(10)] == [("bkt/k", 100)]
    (usage,) = await one.store_usage()
    assert (usage.used_bytes, usage.object_count) == (120, 1)


@pytest_twisted.ensureDeferred
async def test_the_migration_moves_existing_usage_into_the_counter_rows(make_store, db_rows: Rows) -> None:
    previous = make_store()
    previous.database.start()
    await migrate(previous.database, load_migrations()[:7])
    await previous.stop()
    db_rows("INSERT INTO stores (name, quota_bytes, used_bytes, object_count, config_order)"
            " VALUES ('a', 1000, 300, 3, 0), ('b', 0, 25, 1, 1)")
    db_rows("INSERT INTO reservations (store, size, created_ms) VALUES ('a', 50, 1)")
    metadata = make_store()
    await metadata.start()
    assert await metadata.store_usage() == [StoreUsage("a", 1000, 300, 50, 3), StoreUsage("b", 0, 25, 0, 1)]
    # The reservation a process of the previous release left belongs to no instance.
    assert await metadata.release_dead_reservations(0) == 1
