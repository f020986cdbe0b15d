"""Rebalancer and RebalanceJob over a real metadata store: store states from the metadata,
plans read in pages, moves queued for the mover, the periodic job."""

from __future__ import annotations

from typing import Any, Callable

import attrs
import pytest
import pytest_twisted
from twisted.internet.task import Clock

from s3orchestrator.config import Config, MovementConfig, parse_config
from s3orchestrator.jobs.health import StoreHealth
from s3orchestrator.jobs.rebalance import NotSpread, RebalanceJob, Rebalancer
from s3orchestrator.metadata.placements import ObjectPlacements
from s3orchestrator.metadata.records import NewCopy, ObjectRecord, PlannedMove
from s3orchestrator.metadata.store import MetadataStore
from s3orchestrator.placement.rebalance import StoreState

Rows = Callable[..., list[tuple[Any, ...]]]
STORES = ("a", "b", "c")


def config(strategy: str = "spread", **stores: dict[str, Any]) -> Config:
    return parse_config({
        "routing_strategy": strategy,
        "server": {"listen": "tcp:0"},
        "metadata": {"sqlite": "unused"},
        "buckets": [{"name": "bkt", "credentials": [{"access_key_id": "K", "secret_access_key": "s"}]}],
        "stores": [
            {"name": name, "type": "directory", "path": f"/nonexistent/{name}", "quota_bytes": 1000,
             **stores.get(name, {})}
            for name in STORES
        ],
        "movement": {"rebalance_tolerance": 0.05},
    }, {})


async def put(metadata: MetadataStore, key: str, size: int, *stores: str) -> None:
    reservations = await metadata.reserve_copies(size, lambda usage: stores)
    record = ObjectRecord(bucket="bkt", key=key, store=stores[0], location=f"bkt/{key}", size=size,
                          etag="0" * 32, content_type="binary/octet-stream", last_modified_ms=1)
    await metadata.commit_copies(
        record, [NewCopy(r.store, f"bkt/{key}", r.id) for r in reservations], missing=False,
    )


class Setup:
    def __init__(self, metadata: MetadataStore, current: Config) -> None:
        self.metadata = metadata
        self.config = current
        self.health = StoreHealth(list(STORES), unhealthy_after=1)
        self.capped: set[str] = set()
        self.clock = Clock()
        self.clock.advance(1000)
        self.rebalancer = Rebalancer(
            metadata, ObjectPlacements(metadata.database), lambda: self.config, self.health, lambda: self.capped,
            self.clock, page_rows=7,
        )


@pytest.fixture
def setup(make_store: Callable[..., MetadataStore]) -> Callable[..., Any]:
    async def make(objects_on_a: int = 30, size: int = 20) -> Setup:
        metadata = make_store()
        await metadata.start()
        await metadata.sync_stores([(name, 1000) for name in STORES])
        for i in range(objects_on_a):
            await put(metadata, f"k{i:03d}", size, "a")
        await put(metadata, "both", 10, "b", "c")
        return Setup(metadata, config())

    return make


@pytest_twisted.ensureDeferred
async def test_store_states_come_from_usage_cleanup_modes_health_and_caps(setup, make_store) -> None:
    s = await setup(objects_on_a=3, size=10)
    await s.metadata.queue_cleanup("b", "old/bytes", 4)
    await s.metadata.queue_moves([PlannedMove("bkt", "k000", "a", "c", 10)], "rebalance", 1)
    s.config = attrs.evolve(config(b={"mode": "readonly"}))
    s.health.record_failure("c", "down")
    s.capped.add("a")
    states = await s.rebalancer.store_states()
    assert states == [
        StoreState("a", 1000, 30, leaving_bytes=10, capped=True),
        StoreState("b", 1000, 10, cleanup_bytes=4, mode="readonly"),
        StoreState("c", 1000, 10, arriving_bytes=10, healthy=False),
    ]


@pytest_twisted.ensureDeferred
async def test_the_plan_moves_copies_off_the_full_store_and_queues_nothing(setup, db_rows: Rows) -> None:
    s = await setup()
    plan = await s.rebalancer.plan()
    # 600 + 10 + 10 over 3000: mean 0.2067; a must come down to 0.2567 at most, b and c up to 0.1567.
    by_store = {store.name: store for store in plan.stores}
    assert by_store["a"].used_after <= 256
    assert all(by_store[name].used_after >= 157 for name in ("b", "c"))
    assert plan.balanced and not plan.exhausted
    assert {move.from_store for move in plan.moves} == {"a"}
    assert {move.to_store for move in plan.moves} == {"b", "c"}
    assert db_rows("SELECT COUNT(*) FROM movements") == [(0,)]


@pytest_twisted.ensureDeferred
async def test_rebalance_queues_the_plan_and_the_next_plan_counts_it_as_done(setup, db_rows: Rows) -> None:
    s = await setup()
    plan, queued = await s.rebalancer.rebalance()
    assert queued == len(plan.moves) > 0
    rows = db_rows("SELECT bucket, key, from_store, to_store, reason, size, queued_ms FROM movements"
                   " ORDER BY bucket, key")
    assert rows == sorted((m.bucket, m.key, m.from_store, m.to_store, "rebalance", m.size, 1_000_000)
                          for m in plan.moves)
    again = await s.rebalancer.plan()
    assert again.moves == ()
    assert again.balanced
    assert [(store.used_before, store.used_after) for store in again.stores] == [
        (store.used_after, store.used_after) for store in plan.stores
    ]


@pytest_twisted.ensureDeferred
async def test_the_plan_is_bounded_by_max_objects(setup) -> None:
    s = await setup()
    s.rebalancer = Rebalancer(
        s.metadata, ObjectPlacements(s.metadata.database), lambda: s.config, s.health, lambda: s.capped, s.clock,
        page_rows=7, max_objects=5,
    )
    plan = await s.rebalancer.plan()
    assert plan.objects_seen == 5 and len(plan.moves) == 4  # "both" first, on b and c already
    assert not plan.balanced and not plan.exhausted


@pytest_twisted.ensureDeferred
async def test_an_unbalanceable_set_is_read_to_the_end(setup) -> None:
    # With no tolerance, 50-byte copies never bring the fills exactly to the mean: every object is read.
    s = await setup(objects_on_a=10, size=50)
    s.config = attrs.evolve(s.config, movement=MovementConfig(rebalance_tolerance=0.0))
    await put(s.metadata, "small", 1, "a")
    plan = await s.rebalancer.plan()
    assert plan.exhausted
    assert plan.objects_seen == 12


@pytest_twisted.ensureDeferred
async def test_pack_refuses_to_rebalance(setup, db_rows: Rows) -> None:
    s = await setup()
    s.config = config("pack")
    with pytest.raises(NotSpread, match="routing_strategy is 'pack'"):
        await s.rebalancer.rebalance()
    assert db_rows("SELECT COUNT(*) FROM movements") == [(0,)]


@pytest_twisted.ensureDeferred
async def test_the_periodic_job_is_off_without_an_interval(setup, db_rows: Rows) -> None:
    s = await setup()
    job = RebalanceJob(s.rebalancer, lambda: s.config.movement.rebalance_interval, s.clock)
    assert job.step == 300.0
    assert await job._tick() == 0
    assert job.runs == 0
    assert db_rows("SELECT COUNT(*) FROM movements") == [(0,)]


@pytest_twisted.ensureDeferred
async def test_the_periodic_job_queues_a_rebalance(setup, db_rows: Rows) -> None:
    s = await setup()
    s.config = attrs.evolve(s.config, movement=MovementConfig(rebalance_interval=60))
    job = RebalanceJob(s.rebalancer, lambda: s.config.movement.rebalance_interval, s.clock)
    assert job.step == 60
    queued = await job._tick()
    assert queued > 0 and job.moves == queued and job.runs == 1
    assert db_rows("SELECT COUNT(*) FROM movements WHERE reason = 'rebalance'") == [(queued,)]
    assert await job._tick() == 0  # balanced once the queued moves count as done


@pytest_twisted.ensureDeferred
async def test_the_periodic_job_under_pack_logs_once_and_does_nothing(setup, events) -> None:
    s = await setup()
    s.config = attrs.evolve(config("pack"), movement=MovementConfig(rebalance_interval=60))
    job = RebalanceJob(s.rebalancer, lambda: s.config.movement.rebalance_interval, s.clock)
    assert await job._tick() == 0
    assert await job._tick() == 0
    assert job.errors == 0
    skipped = [event for event in events if event.get("log_format", "").startswith("Periodic rebalance skipped")]
    assert len(skipped) == 1


@pytest_twisted.ensureDeferred
async def test_a_rebalance_drops_the_moves_queued_to_stores_no_longer_normal(setup, db_rows: Rows) -> None:
    s = await setup(objects_on_a=3, size=10)
    await s.metadata.queue_moves([PlannedMove("bkt", "k000", "a", "b", 10), PlannedMove("bkt", "k001", "a", "c", 10),
                                  PlannedMove("bkt", "k002", "a", None, 10)], "rebalance", 1)
    await s.metadata.queue_moves([PlannedMove("bkt", "both", "b", "c", 10)], "drain", 1)
    s.config = config(c={"mode": "readonly"})
    await s.rebalancer.plan()  # a dry run changes nothing
    assert db_rows("SELECT COUNT(*) FROM movements") == [(4,)]
    await s.rebalancer.rebalance()
    assert db_rows("SELECT key, to_store, reason FROM movements ORDER BY key") == [
        ("both", "c", "drain"), ("k000", "b", "rebalance"), ("k002", None, "rebalance"),
    ]


@pytest_twisted.ensureDeferred
async def test_a_new_rebalance_forgets_the_totals_of_the_last_one_once_it_is_done(setup, db_rows: Rows) -> None:
    s = await setup()
    plan, _ = await s.rebalancer.rebalance()
    first = [(m.bucket, m.key, m.from_store) for m in plan.moves]
    db_rows("UPDATE movement_totals SET moved_objects = 3, moved_bytes = 60, started_ms = 5")
    # Still moving: a new rebalance (nothing to add) keeps the totals.
    assert (await s.rebalancer.rebalance())[1] == 0
    assert db_rows("SELECT moved_objects, started_ms FROM movement_totals") == [(3, 5)]
    # Done (the mover took every move), then the stores fill up unevenly again.
    for move in await s.metadata.moves_due(1000, 2**62):
        await s.metadata.finish_move(move, moved=True)
    plan, queued = await s.rebalancer.rebalance()
    assert queued == len(plan.moves) > 0 and [(m.bucket, m.key, m.from_store) for m in plan.moves] == first
    assert db_rows("SELECT moved_objects, moved_bytes, started_ms FROM movement_totals") == [(0, 0, 1_000_000)]
