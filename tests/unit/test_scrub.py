"""The scrubber: copies checked against their records (stat, full read), the missing and
damaged ones let go and made again, passes resumed, writes in flight left alone."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterator

import pytest
import pytest_twisted
from treq.testing import StubTreq
from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred
from twisted.internet.task import Clock, deferLater

from s3orchestrator.cli import CommandError
from s3orchestrator.config import ConfigError, PlacementPolicy, ScrubConfig, parse_config
from s3orchestrator.jobs.election import JobElection
from s3orchestrator.jobs.health import StoreHealth
from s3orchestrator.jobs.scrub import ScrubJob
from s3orchestrator.metadata.claims import fresh_holder
from s3orchestrator.metadata.job_leases import JobLeases
from s3orchestrator.metadata.records import Instance
from s3orchestrator.metadata.scrub import CHECKSUM, STAT, ScrubCopy, ScrubPasses
from s3orchestrator.metadata.store import sqlite_metadata_store
from s3orchestrator.ops.admin import admin_actions
from s3orchestrator.ops.endpoints import ops_site
from s3orchestrator.ops.metrics import scrub_metrics
from s3orchestrator.ops.report import status_table
from s3orchestrator.placement.engine import Placement
from s3orchestrator.placement.verify import DAMAGED, MISSING, FullRead, _Hasher, etag_of, md5_parts
from s3orchestrator.scrub_command import asked_text, passes_text
from tests.unit.fakes import FakeRequestBody, advance_until
from tests.unit.test_config import minimal
from tests.unit.test_placement_copies import NAMES, NEW, GatedStore, live_copies, placement_of, stored_bytes

TWO = PlacementPolicy(replicas=2, write_quorum=2)
FAST = ScrubConfig(enabled=True, interval=3600, objects_per_second=1e6, bytes_per_second=10**9,
                   full_read_interval=3600)
DATA = bytes(range(256)) * 40


@pytest.fixture
def world(tmp_path: Path) -> Iterator[Any]:
    metadata = sqlite_metadata_store(str(tmp_path / "metadata.sqlite3"), reactor)
    yield metadata, {name: GatedStore(name, str(tmp_path / name), reactor) for name in NAMES}
    metadata.database.close()


def job_for(world: Any, placement: Placement, settings: ScrubConfig = FAST, clock: Any = reactor,
            checksummed: tuple[str, ...] = NAMES) -> ScrubJob:
    metadata, stores = world
    return ScrubJob(placement, metadata, ScrubPasses(metadata.database), lambda: stores, lambda: checksummed,
                    lambda: settings, clock, owner=metadata.instance_id)


def path_of(world: Any, store: str, key: str) -> str:
    _, stores = world
    return stores[store].path_for(stores[store].location_for("bkt", key))


def corrupt(path: str) -> None:
    """Flip one byte in place: same size, another MD5."""
    with open(path, "r+b") as file:
        file.seek(5)
        byte = file.read(1)
        file.seek(5)
        file.write(bytes([byte[0] ^ 0xFF]))


def copy_of(key: str, etag: str, size: int, part_sizes: tuple[int, ...] = ()) -> ScrubCopy:
    return ScrubCopy("bkt", key, "a", f"bkt/{key}", 0, size, etag, part_sizes)


# -- what a full read can check ------------------------------------------------------------------


def test_the_spans_to_hash_follow_the_etag() -> None:
    assert md5_parts("0" * 32, 10, ()) == (10,)
    assert md5_parts("A" * 32 + "-2", 10, (6, 4)) == (6, 4)
    assert md5_parts("0" * 32 + "-3", 10, (6, 4)) is None  # parts not recorded as the ETag counts
    assert md5_parts("0" * 32 + "-2", 11, (6, 4)) is None  # parts that do not add up
    assert md5_parts("not-an-md5", 10, ()) is None  # an upstream's own tag


def test_a_multipart_etag_is_the_md5_of_the_part_md5s() -> None:
    parts = [hashlib.md5(b"abc").digest(), hashlib.md5(b"").digest()]
    assert etag_of(parts, multipart=True) == hashlib.md5(b"".join(parts)).hexdigest() + "-2"
    assert etag_of(parts[:1], multipart=False) == hashlib.md5(b"abc").hexdigest()


def test_the_hasher_splits_writes_at_part_boundaries_and_keeps_to_its_rate() -> None:
    clock = Clock()

    class Producer:
        paused = 0
        resumed = 0

        def pauseProducing(self) -> None:
            self.paused += 1

        def resumeProducing(self) -> None:
            self.resumed += 1

    hasher = _Hasher((3, 5, 0), clock, bytes_per_second=4)
    producer = Producer()
    hasher.registerProducer(producer, True)
    hasher.write(b"abcd")  # 4 bytes at 4 B/s: due at 1 s
    assert (producer.paused, producer.resumed) == (1, 0)
    clock.advance(1)
    assert producer.resumed == 1
    hasher.write(b"efgh")
    assert hasher.digests() == [hashlib.md5(b"abc").digest(), hashlib.md5(b"defgh").digest(),
                                hashlib.md5(b"").digest()]
    assert hasher.received == 8


@pytest_twisted.ensureDeferred
async def test_a_full_read_tells_good_damaged_missing_and_unverifiable_copies(world) -> None:
    _, stores = world
    store = stores["a"]
    await store.start()
    md5 = hashlib.md5(DATA).hexdigest()
    parts = (1000, len(DATA) - 1000)
    multipart = etag_of([hashlib.md5(DATA[:1000]).digest(), hashlib.md5(DATA[1000:]).digest()], multipart=True)
    for key in ("good", "parts", "bad", "short", "foreign"):
        path = Path(os.fsdecode(store.path_for(f"bkt/{key}")))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(DATA)
    corrupt(store.path_for("bkt/bad"))
    os.truncate(store.path_for("bkt/short"), 10)

    async def check(copy: ScrubCopy) -> tuple[str | None, int, bool]:
        read = FullRead(store, copy, reactor, 10**9)
        found = await read.run()
        return (None if found is None else found.problem), read.received, read.unverifiable

    assert await check(copy_of("good", md5, len(DATA))) == (None, len(DATA), False)
    assert await check(copy_of("parts", multipart, len(DATA), parts)) == (None, len(DATA), False)
    assert await check(copy_of("bad", md5, len(DATA))) == (DAMAGED, len(DATA), False)
    assert (await check(copy_of("short", md5, len(DATA))))[0] == DAMAGED
    assert (await check(copy_of("gone", md5, len(DATA))))[0] == MISSING
    assert await check(copy_of("foreign", "opaque-tag", len(DATA))) == (None, len(DATA), True)


# -- the job -------------------------------------------------------------------------------------


async def two_objects(world: Any) -> Placement:
    """Objects "damaged" and "gone" on stores a and b."""
    placement = await placement_of(world, TWO.replicas, TWO.write_quorum)
    for key in ("damaged", "gone"):
        await placement.write("bkt", key, FakeRequestBody(DATA), NEW)
    placement.health.record_failure("c", "down")  # copies made again go back to a and b
    return placement


@pytest_twisted.ensureDeferred
async def test_a_damaged_and_a_missing_copy_are_let_go_and_made_again(world, events) -> None:
    metadata, stores = world
    placement = await two_objects(world)
    corrupt(path_of(world, "a", "damaged"))
    os.unlink(path_of(world, "b", "gone"))
    job = job_for(world, placement, checksummed=("a",))

    assert await job.run_once() == 6  # 4 copies stat'ed, the 2 on store a read

    assert (dict(job.damaged), dict(job.missing), job.repaired) == ({"a": 1}, {"b": 1}, 2)
    assert dict(job.checked) == {STAT: 4, CHECKSUM: 2}
    assert job.bytes_read == 2 * len(DATA)  # the copies on store a
    for key in ("damaged", "gone"):
        assert sorted(await live_copies(metadata, key)) == ["a", "b"]
        for name in ("a", "b"):
            location = stores[name].location_for("bkt", key)
            assert await stored_bytes(stores[name], location) == DATA
    logged = [event["log_format"] for event in events if "Scrub: copy of" in event.get("log_format", "")]
    assert len(logged) == 2
    passes = {scrub.kind: scrub for scrub in await ScrubPasses(metadata.database).passes()}
    assert (passes[STAT].running, passes[STAT].checked, passes[STAT].found) == (False, 4, 1)
    assert (passes[CHECKSUM].running, passes[CHECKSUM].checked, passes[CHECKSUM].found) == (False, 2, 1)
    names = {metric.name: metric for metric in scrub_metrics(job)}
    assert {sample.labels["kind"] for sample in names["s3orchestrator_scrub_last_pass_timestamp_seconds"].samples} \
        == {STAT, CHECKSUM}

    assert await job.run_once() == 0  # no pass due for an hour


@pytest_twisted.ensureDeferred
async def test_a_copy_whose_location_a_write_claims_is_left_alone(world) -> None:
    metadata, stores = world
    placement = await two_objects(world)
    os.unlink(path_of(world, "a", "gone"))
    location = stores["a"].location_for("bkt", "gone")
    # A live writer's claim (an instance whose lease runs): not taken over.
    await metadata.register_instance(Instance("writer", "host", 1, 0, 2**62))
    holder = fresh_holder()
    assert await metadata.claim_locations("a", [location], holder, "writer", 2**62)
    job = job_for(world, placement, checksummed=())

    await job.run_once()

    assert (dict(job.missing), job.skipped) == ({}, 1)
    assert sorted(await live_copies(metadata, "gone")) == ["a", "b"]
    await metadata.end_claims([holder])


@pytest_twisted.ensureDeferred
async def test_a_copy_overwritten_since_it_was_read_is_left_alone(world) -> None:
    """The object is written again while the scrubber checks its (now old) copy: the
    record checked is no longer the object's, so nothing is let go."""
    metadata, stores = world
    placement = await two_objects(world)
    job = job_for(world, placement, checksummed=())
    original_stat = stores["a"].stat

    async def overwritten_then_stat(location: str) -> Any:
        stores["a"].stat = original_stat
        await placement.write("bkt", "damaged", FakeRequestBody(b"new bytes"), NEW)
        return await original_stat(location)  # 9 bytes where the record checked has more

    stores["a"].stat = lambda location: ensureDeferred(overwritten_then_stat(location))
    await job.run_once()

    # Both copies of the batch read before the overwrite look wrong (9 bytes), and neither is the object's now.
    assert (dict(job.damaged), dict(job.missing), job.skipped) == ({}, {}, 2)
    assert sorted(await live_copies(metadata, "damaged")) == ["a", "b"]
    assert await stored_bytes(stores["a"], stores["a"].location_for("bkt", "damaged")) == b"new bytes"


@pytest_twisted.ensureDeferred
async def test_a_pass_resumes_where_it_stands_and_keeps_to_its_rate(world) -> None:
    metadata, _ = world
    placement = await two_objects(world)
    passes = ScrubPasses(metadata.database)
    await passes.begin(STAT, 0)
    await passes.advance(STAT, ("bkt", "damaged", "b"), 2, 0)  # as a stopped instance left it
    await passes.begin(CHECKSUM, 0)
    await passes.finish(CHECKSUM, 0)
    clock = Clock()
    clock.advance(1)
    job = job_for(world, placement, ScrubConfig(enabled=True, interval=3600, objects_per_second=1,
                                                full_read_interval=3600), clock)

    done = job.run_once()
    await advance_until(clock, done)
    assert done.called and clock.seconds() >= 2  # two copies at one a second
    stat = {scrub.kind: scrub for scrub in await passes.passes()}[STAT]
    assert (stat.running, stat.checked) == (False, 4)  # 2 before, the 2 copies of "gone" now
    assert dict(job.checked) == {STAT: 2}


# -- configuration -------------------------------------------------------------------------------


def config_with(scrub: dict[str, Any] | None) -> Any:
    data = minimal()
    if scrub is not None:
        data["scrub"] = scrub
    return parse_config(data, environ={})


def test_the_scrubber_is_off_and_slow_unless_configured() -> None:
    assert config_with(None).scrub == ScrubConfig(enabled=False, interval=86400, objects_per_second=10,
                                                  bytes_per_second=10 * 1024**2, full_read_interval=30 * 86400)
    assert (config_with(None).scrub.max_findings_per_store, config_with(None).scrub.max_findings_fraction) \
        == (100, 0.5)
    configured = config_with({"enabled": True, "interval": 600, "objects_per_second": 0.5,
                              "bytes_per_second": 1000, "full_read_interval": 7200, "max_findings_per_store": 0,
                              "max_findings_fraction": 1}).scrub
    assert configured == ScrubConfig(True, 600, 0.5, 1000, 7200, 0, 1.0)


@pytest.mark.parametrize(("key", "value"), [
    ("objects_per_second", 0), ("objects_per_second", True), ("bytes_per_second", 0), ("interval", -1),
    ("full_read_interval", "1d"), ("enabled", "yes"), ("speed", 1), ("max_findings_per_store", -1),
    ("max_findings_fraction", 0), ("max_findings_fraction", 1.5), ("max_findings_fraction", "half"),
])
def test_a_bad_scrub_setting_is_refused_by_name(key: str, value: Any) -> None:
    with pytest.raises(ConfigError, match=f"scrub.{key}"):
        config_with({key: value})


def test_the_status_table_says_where_each_pass_stands() -> None:
    snapshot = {"status": "ok", "stores": [], "scrub": [
        {"kind": "checksum", "running": False, "started_ms": 0, "finished_ms": 3_600_000, "position": None,
         "checked": 12, "found": 1},
        {"kind": "stat", "running": True, "started_ms": 7_140_000, "finished_ms": None, "position": "bkt/k",
         "checked": 5, "found": 0},
    ]}
    lines = status_table(snapshot, now=7_200).splitlines()
    assert "scrub checksum pass: idle, last finished 1h 0m ago (12 copies checked, 1 missing or damaged)" in lines
    assert "scrub stat pass: running for 1m 0s at bkt/k, 5 copies checked, 0 missing or damaged; none finished yet" \
        in lines


@pytest_twisted.ensureDeferred
async def test_copies_on_a_store_over_a_read_cap_are_skipped(world) -> None:
    metadata, stores = world
    placement = await two_objects(world)
    os.unlink(path_of(world, "a", "gone"))
    job = ScrubJob(placement, metadata, ScrubPasses(metadata.database), lambda: stores, lambda: NAMES,
                   lambda: FAST, reactor, owner=metadata.instance_id, read_capped=lambda store: store == "a")

    await job.run_once()

    assert (dict(job.missing), dict(job.checked), job.skipped) == ({}, {STAT: 2, CHECKSUM: 2}, 4)
    assert sorted(await live_copies(metadata, "gone")) == ["a", "b"]


@pytest_twisted.ensureDeferred
async def test_a_stat_pass_falls_due_and_runs_while_a_long_full_read_pass_goes_on(world) -> None:
    metadata, _ = world
    placement = await two_objects(world)
    passes = ScrubPasses(metadata.database)
    await passes.begin(STAT, 0)
    await passes.finish(STAT, 0)  # due again at 10 s
    clock = Clock()
    clock.advance(1)
    # Four copies of 10 KiB read at 1000 B/s: the full-read pass takes some 40 s.
    job = job_for(world, placement, ScrubConfig(enabled=True, interval=10, objects_per_second=1000,
                                                bytes_per_second=1000, full_read_interval=3600), clock)

    done = job.run_once()
    await advance_until(clock, done)
    assert done.called
    checksum, stat = await passes.passes()
    assert (checksum.started_ms, checksum.checked) == (1000, 4)
    assert checksum.finished_ms >= 40_000  # type: ignore[operator]
    # A stat pass every 10 s meanwhile (at 11, 22, 33 s...), not one after the other.
    assert job.checked[STAT] >= 12 and stat.checked == 4 and stat.started_ms > 30_000


@pytest_twisted.ensureDeferred
async def test_a_pass_asked_for_begins_at_the_next_look_unless_one_runs(world) -> None:
    metadata, _ = world
    placement = await two_objects(world)
    passes = ScrubPasses(metadata.database)
    job = job_for(world, placement)
    assert await job.run_once() == 8
    assert await job.run_once() == 0  # none due for an hour

    asked = await passes.request(5)
    assert [scrub.requested_ms for scrub in asked] == [5, 5]
    assert await job.run_once() == 8
    assert [scrub.requested_ms for scrub in await passes.passes()] == [None, None]

    now_ms = int(reactor.seconds() * 1000)
    await passes.begin(STAT, now_ms + 1000)  # running: asking leaves it be
    assert [(scrub.kind, scrub.requested_ms) for scrub in await passes.request(now_ms + 2000)] == [
        (CHECKSUM, now_ms + 2000), (STAT, None)]


# -- asking for passes: the admin API's POST /scrub and the scrub command ------------------------


@pytest_twisted.ensureDeferred
async def test_the_admin_scrub_action_answers_posts_with_the_token_only() -> None:
    asked: list[int] = []

    async def scrub_now() -> dict[str, Any]:
        asked.append(1)
        return {"enabled": True, "within_seconds": 60, "scrub": []}

    health = StoreHealth(["a"], unhealthy_after=1)
    site = ops_site({}, admin_actions("token-0123456789", health, scrub_now=scrub_now))
    client = StubTreq(site.resource)

    refused = await client.post("http://admin.example/scrub")
    wrong_method = await client.get("http://admin.example/scrub", headers={"Authorization": "Bearer token-0123456789"})
    done = await client.post("http://admin.example/scrub", headers={"Authorization": "Bearer token-0123456789"})

    assert (refused.code, wrong_method.code, done.code) == (401, 405, 200)
    assert wrong_method.headers.getRawHeaders(b"allow") == [b"POST"]
    assert json.loads(await done.content())["within_seconds"] == 60
    assert asked == [1]


def test_the_scrub_command_says_what_now_did_kind_by_kind() -> None:
    document = {"enabled": True, "within_seconds": 60.0, "scrub": [
        {"kind": "checksum", "running": True, "position": "bkt/k\x1b", "started_ms": 0, "finished_ms": None,
         "checked": 1, "found": 0, "requested_ms": None},
        {"kind": "stat", "running": False, "position": None, "started_ms": 0, "finished_ms": 5, "checked": 1,
         "found": 0, "requested_ms": 7},
    ]}
    assert asked_text(document) == ("scrub stat pass: begins within 60 s\n"
                                    "scrub checksum pass: already running (at bkt/k\\x1b), goes on\n")
    assert asked_text({**document, "scrub": []}).count("begins within 60 s") == 2
    with pytest.raises(CommandError, match="enabled = false"):
        asked_text({**document, "enabled": False})
    assert passes_text([], 0) == "scrub: no pass has begun yet\n"


@pytest_twisted.ensureDeferred
async def test_a_job_stopped_mid_read_saves_its_place_and_the_next_one_reads_that_copy_again(world) -> None:
    metadata, _ = world
    placement = await two_objects(world)
    passes = ScrubPasses(metadata.database)
    clock = Clock()
    clock.advance(1)
    slow = ScrubConfig(enabled=True, interval=3600, objects_per_second=1000, bytes_per_second=1000,
                       full_read_interval=3600)
    job = job_for(world, placement, slow, clock)
    job.startService()
    while job.bytes_read < len(DATA):  # the first copy read (some 10 s at the rate)...
        await advance_until(clock, deferLater(reactor, 0.01, lambda: None))
    await advance_until(clock, deferLater(reactor, 0.2, lambda: None))  # ...and into the second's 10 s
    assert job.bytes_read == len(DATA)

    await advance_until(clock, job.stopService())

    checksum = {scrub.kind: scrub for scrub in await passes.passes()}[CHECKSUM]
    assert (checksum.running, checksum.position, checksum.checked) == (True, ("bkt", "damaged", "a"), 1)
    again = job_for(world, placement, slow, clock)
    await advance_until(clock, again.run_once())
    checksum = {scrub.kind: scrub for scrub in await passes.passes()}[CHECKSUM]
    assert (checksum.running, checksum.checked, again.checked[CHECKSUM]) == (False, 4, 3)


@pytest_twisted.ensureDeferred
async def test_the_scrubber_off_takes_no_lease_and_gives_up_one_it_held(world) -> None:
    metadata, _ = world
    placement = await two_objects(world)
    leases = JobLeases(metadata.database)
    lease = JobElection(leases, "me", 30, reactor).lease("scrub")
    settings = [ScrubConfig(enabled=False)]
    job = ScrubJob(placement, metadata, ScrubPasses(metadata.database), lambda: {}, lambda: (),
                   lambda: settings[0], reactor, lease=lease, owner="me")

    assert await job._tick() == 0
    assert await leases.holders() == []
    settings[0] = FAST
    await job._tick()
    assert [holder.job for holder in await leases.holders()] == ["scrub"]
    settings[0] = ScrubConfig(enabled=False)
    await job._tick()
    await deferLater(reactor, 0.05, lambda: None)  # the release, in the background
    assert await leases.holders() == []


@pytest_twisted.ensureDeferred
async def test_a_copy_whose_check_fails_unexpectedly_is_logged_and_the_pass_goes_on(world, events) -> None:
    metadata, stores = world
    placement = await two_objects(world)
    original_stat = stores["a"].stat

    def stat(location: str) -> Any:
        if location.endswith("damaged"):
            raise RuntimeError("a bug")
        return original_stat(location)

    stores["a"].stat = stat
    job = job_for(world, placement, checksummed=())

    assert await job.run_once() == 4
    assert (job.errors, job.skipped, dict(job.checked)) == (1, 1, {STAT: 3})
    assert [(event["key"], event["store"]) for event in events
            if (event.get("log_format") or "").startswith("Scrub: checking")] == [("damaged", "a")]


@pytest_twisted.ensureDeferred
async def test_a_walk_that_fails_is_left_to_the_next_run(world) -> None:
    metadata, _ = world
    placement = await two_objects(world)
    passes = ScrubPasses(metadata.database)
    calls: list[int] = []

    def broken(after: Any, limit: int) -> Any:
        calls.append(1)
        raise RuntimeError("the database said no")

    passes.next_copies = broken  # type: ignore[method-assign]
    job = ScrubJob(placement, metadata, passes, lambda: {}, lambda: ("a",), lambda: FAST, reactor)

    assert await job.run_once() == 0
    assert (job.errors, len(calls)) == (2, 2)  # each kind's walk failed once, not again and again


# -- guards: a store found mostly wrong, an object's only copy -----------------------------------

KEYS = [f"k{index:02}" for index in range(12)]


async def emptied_store(world: Any) -> Placement:
    """Objects ``KEYS`` on stores a and b, every file of store b removed (a disk not mounted)."""
    placement = await placement_of(world, TWO.replicas, TWO.write_quorum)
    for key in KEYS:
        await placement.write("bkt", key, FakeRequestBody(DATA), NEW)
    placement.health.record_failure("c", "down")
    for key in KEYS:
        os.unlink(path_of(world, "b", key))
    return placement


def guarded(limit: int, fraction: float = 1.0) -> ScrubConfig:
    return ScrubConfig(enabled=True, interval=3600, objects_per_second=1000, full_read_interval=3600,
                       max_findings_per_store=limit, max_findings_fraction=fraction)


async def on_store_b(metadata: Any) -> list[str]:
    return [key for key in KEYS if "b" in await live_copies(metadata, key)]


@pytest_twisted.ensureDeferred
async def test_a_store_found_wrong_too_often_is_suspended_and_its_other_copies_left_alone(world, events) -> None:
    metadata, stores = world
    placement = await emptied_store(world)
    clock = Clock()
    clock.advance(1)
    job = job_for(world, placement, guarded(limit=3), clock, checksummed=())

    done = job.run_once()
    await advance_until(clock, done)

    assert (dict(job.missing), dict(job.held), job.repaired) == ({"b": 12}, {"b": 9}, 3)
    assert set(job.suspended) == {"b"}
    passes = ScrubPasses(metadata.database)
    assert [(held.store, held.kind, held.found, held.checked) for held in await passes.suspensions()] \
        == [("b", STAT, 4, 4)]  # the 4th finding went over the limit
    assert [key for key in KEYS if os.path.exists(path_of(world, "b", key))] == KEYS[:3]  # made again
    assert await on_store_b(metadata) == KEYS  # the rest: their records untouched
    suspended = [event for event in events if "suspended:" in event.get("log_format", "")]
    assert len(suspended) == 1 and "scrub --now" in suspended[0]["log_format"]
    gauge = {metric.name: metric for metric in scrub_metrics(job)}["s3orchestrator_scrub_store_suspended"]
    assert {sample.labels["store"]: sample.value for sample in gauge.samples} == {"a": 0, "b": 1, "c": 0}
    [stat_pass] = [scrub for scrub in await passes.passes() if scrub.kind == STAT]
    assert (stat_pass.checked, stat_pass.found) == (24, 12)


@pytest_twisted.ensureDeferred
async def test_most_copies_of_a_store_found_wrong_suspend_it_below_the_limit(world) -> None:
    metadata, _ = world
    placement = await emptied_store(world)
    clock = Clock()
    job = job_for(world, placement, guarded(limit=0, fraction=0.5), clock, checksummed=())

    done = job.run_once()
    await advance_until(clock, done)

    # Every copy of b checked is missing: over half once FRACTION_AFTER (10) are found.
    assert (dict(job.held), job.repaired) == ({"b": 3}, 9)
    assert len(await on_store_b(metadata)) == 12


@pytest_twisted.ensureDeferred
async def test_a_suspension_outlives_the_job_until_an_operator_asks_for_passes(world) -> None:
    metadata, _ = world
    placement = await emptied_store(world)
    passes = ScrubPasses(metadata.database)
    clock = Clock()
    first = job_for(world, placement, guarded(limit=3), clock, checksummed=())
    done = first.run_once()
    await advance_until(clock, done)
    assert len(await passes.suspensions()) == 1

    clock.advance(7200)  # a new pass is due, on a restarted job with no limit
    restarted = job_for(world, placement, guarded(limit=0), clock, checksummed=())
    done = restarted.run_once()
    await advance_until(clock, done)
    assert (dict(restarted.held), restarted.repaired) == ({"b": 9}, 0)

    await passes.request(int(clock.seconds() * 1000))  # s3orchestrator scrub --now
    done = restarted.run_once()
    await advance_until(clock, done)
    assert (restarted.suspended, restarted.repaired) == ({}, 9)
    assert [key for key in KEYS if os.path.exists(path_of(world, "b", key))] == KEYS


@pytest_twisted.ensureDeferred
async def test_an_only_copy_found_missing_is_kept_and_its_object_lost_until_the_store_hands_it_back(world) -> None:
    metadata, stores = world
    placement = await placement_of(world, 1, 1)
    await placement.write("bkt", "only", FakeRequestBody(DATA), NEW)
    [store] = await live_copies(metadata, "only")
    path = os.fsdecode(path_of(world, store, "only"))
    os.rename(path, path + ".away")  # a disk gone
    job = job_for(world, placement, checksummed=())

    assert await job.run_once() == 1

    assert (dict(job.missing), dict(job.kept), job.repaired) == ({store: 1}, {store: 1}, 0)
    assert [lost.key for lost in await metadata.lost_objects(10)] == ["only"]
    assert await live_copies(metadata, "only") == [store]  # kept: nothing let go
    assert await metadata.list_cleanups(10) == []

    os.rename(path + ".away", path)  # the disk is back
    await ScrubPasses(metadata.database).request(0)
    await job.run_once()
    assert await metadata.lost_objects(10) == []
    assert await stored_bytes(stores[store], stores[store].location_for("bkt", "only")) == DATA


@pytest_twisted.ensureDeferred
async def test_an_only_copy_found_damaged_is_kept_and_served(world, events) -> None:
    metadata, stores = world
    placement = await placement_of(world, 1, 1)
    await placement.write("bkt", "only", FakeRequestBody(DATA), NEW)
    [store] = await live_copies(metadata, "only")
    corrupt(path_of(world, store, "only"))
    job = job_for(world, placement, checksummed=NAMES)

    await job.run_once()

    assert (dict(job.damaged), dict(job.kept)) == ({store: 1}, {store: 1})
    assert await live_copies(metadata, "only") == [store]
    assert (await metadata.lost_objects(10), await metadata.list_cleanups(10)) == ([], [])
    assert any("only live copy" in event.get("log_format", "") for event in events)
    record, reader = await placement.read("bkt", "only", lambda record: None)  # type: ignore[misc]
    assert reader is not None


def test_the_status_and_scrub_commands_name_a_suspended_store_and_how_to_resume() -> None:
    held = {"store": "disk\x1b", "since_ms": 7_140_000, "kind": "stat", "found": 101, "checked": 101}
    line = ("scrub: store disk\\x1b suspended 1m 0s ago (101 of 101 copies checked found missing or damaged):"
            " no copy of it is let go; check the store, then run `s3orchestrator scrub --now`")
    assert line in status_table({"status": "ok", "stores": [], "scrub_suspended": [held]}, now=7_200).splitlines()
    assert passes_text([], 7_200, [held]).splitlines() == ["scrub: no pass has begun yet", line]
    asked = asked_text({"enabled": True, "within_seconds": 60.0, "scrub": [], "lifted": ["disk"]})
    assert "scrub: store disk no longer suspended: its copies found wrong are let go again" in asked.splitlines()


@pytest_twisted.ensureDeferred
async def test_a_suspension_whose_record_failed_holds_here_and_is_recorded_at_the_next_look(world) -> None:
    metadata, _ = world
    placement = await emptied_store(world)
    clock = Clock()
    job = job_for(world, placement, guarded(limit=3), clock, checksummed=())
    passes = job._passes
    record = passes.suspend
    failures = []

    def failing_once(suspension: Any) -> Any:
        if not failures:
            failures.append(suspension)
            raise RuntimeError("database gone")
        return record(suspension)

    passes.suspend = failing_once  # type: ignore[method-assign]
    done = job.run_once()
    await advance_until(clock, done)
    # Held here all the same, and recorded at the run's next look (once the walk ended).
    assert (len(failures), dict(job.held), job.repaired) == (1, {"b": 9}, 3)
    assert [held.store for held in await passes.suspensions()] == ["b"]
    assert set(job.suspended) == {"b"}
