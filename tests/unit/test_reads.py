"""Reads over an object's live copies (failover, missing copies forgotten) and degraded
mode (no metadata database: GET/HEAD from the stores' default locations)."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path
from typing import Any, Iterator

import attrs
import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock

from s3orchestrator.config import DirectoryStoreConfig, PlacementPolicy
from s3orchestrator.errors import S3Error
from s3orchestrator.imports.areas import KnownAreas
from s3orchestrator.jobs.health import HealthCheckJob, StoreHealth
from s3orchestrator.metadata.availability import MetadataAvailability
from s3orchestrator.metadata.database import Database
from s3orchestrator.metadata.engines.postgres import PostgresEngine
from s3orchestrator.metadata.engines.sqlite import SqliteEngine
from s3orchestrator.metadata.interface import MetadataBusy, MetadataUnavailable
from s3orchestrator.metadata.store import sqlite_metadata_store
from s3orchestrator.placement.engine import Placement
from s3orchestrator.placement.errors import ObjectLost
from s3orchestrator.placement.locks import KeyLocks
from s3orchestrator.s3.call import S3Call, S3Response
from s3orchestrator.s3.objects import ObjectOperations
from s3orchestrator.s3.placement_errors import LOST_MESSAGE
from s3orchestrator.stores.directory import DirectoryStore
from s3orchestrator.stores.interface import StoreUnavailable
from tests.unit.fakes import CollectingConsumer, FakeRequestBody, auth_result

NOW = 1_767_225_600
DATA = bytes(range(256)) * 4


class World:
    """Two directory stores ("one", "two"), SQLite metadata, ObjectOperations over them."""

    def __init__(self, tmp_path: Path, read_order: str = "config") -> None:
        self.tmp_path = tmp_path
        self.metadata = sqlite_metadata_store(str(tmp_path / "metadata.sqlite3"), reactor)
        self.roots = {name: tmp_path / name for name in ("one", "two")}
        self.stores = {name: DirectoryStore(name, str(root), reactor) for name, root in self.roots.items()}
        self.clock = Clock()
        self.clock.advance(NOW)
        self.health = StoreHealth(list(self.stores), unhealthy_after=3, now=self.clock.seconds)
        self.availability = MetadataAvailability(self.clock, unavailable_after=10.0)
        self.placement = Placement(
            self.metadata, self.stores, "pack", self.clock, KeyLocks(), self.health,
            policy=lambda b: PlacementPolicy(read_order=read_order),
        )
        self.ops = ObjectOperations(self.placement, 5 * 1024**3, availability=self.availability)

    async def start(self) -> World:
        await self.metadata.start()
        await self.metadata.sync_stores([("one", 0), ("two", 0)])
        for store in self.stores.values():
            await store.start()
        return self

    def file(self, store: str, key: str = "key") -> Path:
        return self.roots[store] / "bkt.d" / key

    async def second_copy(self, key: str = "key") -> None:
        """A live copy on store "two" made by hand, as replication would: the same bytes
        at the store's default location, and a copies row."""
        path = self.file("two", key)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(self.file("one", key).read_bytes())
        with sqlite3.connect(self.tmp_path / "metadata.sqlite3") as db:
            db.execute(
                "INSERT INTO copies (bucket, key, store, location, state, size, created_ms)"
                " SELECT bucket, key, 'two', location, 'live', size, created_ms FROM copies WHERE key = ?",
                (key,),
            )

    async def read(self, response: S3Response) -> bytes:
        consumer = CollectingConsumer()
        streamed = response.body.stream_to(consumer)  # type: ignore[union-attr]
        while not streamed.called:
            self.clock.advance(0)
        await streamed
        return consumer.body

    async def copies_after_writes(self) -> list[tuple[str, str]]:
        """The copies rows once the writes queued so far (a background mark) are committed:
        write interactions commit in order, so a no-op one queued now comes after them."""
        await self.metadata.release(0)
        return self.copies()

    def copies(self) -> list[tuple[str, str]]:
        with sqlite3.connect(self.tmp_path / "metadata.sqlite3") as db:
            return db.execute("SELECT store, state FROM copies ORDER BY store").fetchall()


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    made = World(tmp_path)
    yield made
    made.metadata.database.close()


def call(method: str, key: str = "key", headers: dict[str, list[str]] | None = None, body: Any = None) -> S3Call:
    return S3Call(request_id="0123456789ABCDEF", method=method, bucket="bkt", key=key, query={},
                  headers=headers or {}, auth=auth_result(), body=body)


async def put(world: World, data: bytes = DATA, key: str = "key") -> None:
    await world.ops.put_object(call("PUT", key, body=FakeRequestBody(data)))


async def lost_object(world: World) -> None:
    """Start ``world`` with ``bkt/key`` stored on "one" only, then lose its only copy:
    a GET finds it missing and the object is recorded as lost (the copy kept)."""
    await world.start()
    await put(world)
    world.file("one").unlink()
    with pytest.raises(S3Error):
        await world.ops.get_object(call("GET"))
    await world.copies_after_writes()


async def no_copy_left(world: World) -> None:
    """Start ``world`` with ``bkt/key`` stored on "one" only, its only copy then let go
    (as a copy replaced in place by a failed write, or an older version, leaves it):
    the object is lost with no live copy."""
    await world.start()
    await put(world)
    _, copies = await world.metadata.get_object_copies("bkt", "key")  # type: ignore[misc]
    assert await world.metadata.mark_copy_missing("bkt", "key", copies[0]) == 0


# -- metadata ------------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_get_object_copies_lists_live_copies_in_config_order(world: World) -> None:
    await world.start()
    await put(world)
    await world.second_copy()

    found = await world.metadata.get_object_copies("bkt", "key")

    assert found is not None
    record, copies = found
    assert record.size == len(DATA)
    assert [(copy.store, copy.location) for copy in copies] == [("one", "bkt/key"), ("two", "bkt/key")]
    assert await world.metadata.get_object_copies("bkt", "nope") is None


@pytest_twisted.ensureDeferred
async def test_mark_copy_missing_forgets_only_that_copy_as_it_was_read(world: World) -> None:
    await world.start()
    await put(world)
    await world.second_copy()
    _, copies = await world.metadata.get_object_copies("bkt", "key")  # type: ignore[misc]

    stale = attrs.evolve(copies[1], created_ms=copies[1].created_ms - 1)  # a copy written before this one
    assert await world.metadata.mark_copy_missing("bkt", "key", stale) is None
    assert await world.metadata.mark_copy_missing("bkt", "key", copies[1]) == 1

    assert world.copies() == [("one", "live")]


# -- failover --------------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_get_serves_the_other_copy_and_forgets_the_missing_one(world: World) -> None:
    await world.start()
    await put(world)
    await world.second_copy()
    world.file("one").unlink()

    response = await world.ops.get_object(call("GET"))

    assert await world.read(response) == DATA
    assert response.store == "two"
    assert world.placement.read_counters.copies_missing == {"one": 1}
    assert world.placement.read_counters.failovers == {"one": 1}
    assert await world.copies_after_writes() == [("two", "live")]


@pytest_twisted.ensureDeferred
async def test_a_copy_of_another_length_is_skipped_and_forgotten(world: World) -> None:
    await world.start()
    await put(world)
    await world.second_copy()
    world.file("one").write_bytes(b"damaged")

    response = await world.ops.get_object(call("GET"))

    assert await world.read(response) == DATA
    assert await world.copies_after_writes() == [("two", "live")]


@pytest_twisted.ensureDeferred
async def test_read_order_health_tries_a_healthy_store_first(tmp_path: Path) -> None:
    world = World(tmp_path, read_order="health")
    try:
        await world.start()
        await put(world)
        await world.second_copy()
        for _ in range(3):
            world.health.record_failure("one", "down")

        response = await world.ops.get_object(call("GET"))

        assert await world.read(response) == DATA
        assert response.store == "two" and world.placement.read_counters.failovers == {}
    finally:
        world.metadata.database.close()


@pytest_twisted.ensureDeferred
async def test_every_copy_missing_makes_the_object_lost_its_last_copy_kept_and_read_again(world: World) -> None:
    await world.start()
    await put(world)
    await world.second_copy()
    world.file("one").unlink()
    world.file("two").write_bytes(b"damaged")

    with pytest.raises(S3Error) as error:
        await world.ops.get_object(call("GET"))

    assert (error.value.code, error.value.status, error.value.message) == ("InternalError", 500, LOST_MESSAGE)
    # "one" let go (another copy was live then); "two", the only one left, kept.
    assert await world.copies_after_writes() == [("two", "live")]
    assert [(e.store, e.location) for e in await world.metadata.list_cleanups(10)] == [("one", "bkt/key")]
    assert [(lost.bucket, lost.key) for lost in await world.metadata.lost_objects(10)] == [("bkt", "key")]
    assert await world.metadata.replication_queue(10) == []
    # Each GET tries the kept copy again.
    with pytest.raises(S3Error) as again:
        await world.ops.get_object(call("GET"))
    assert (again.value.code, again.value.status, again.value.message) == ("InternalError", 500, LOST_MESSAGE)
    assert world.placement.read_counters.copies_missing == {"one": 1, "two": 2}
    assert await world.copies_after_writes() == [("two", "live")]

    world.file("two").write_bytes(DATA)  # its store hands it back
    response = await world.ops.get_object(call("GET"))
    assert await world.read(response) == DATA and response.store == "two"


@pytest_twisted.ensureDeferred
async def test_an_only_copy_missing_is_kept_and_read_again_once_it_is_back(world: World) -> None:
    await world.start()
    await put(world)
    used = {usage.name: (usage.used_bytes, usage.object_count) for usage in await world.metadata.store_usage()}
    assert used["one"] == (len(DATA), 1)
    moved = world.tmp_path / "moved-away"
    world.file("one").rename(moved)  # a disk not mounted, say

    with pytest.raises(S3Error) as error:
        await world.ops.get_object(call("GET"))

    assert (error.value.code, error.value.status, error.value.message) == ("InternalError", 500, LOST_MESSAGE)
    assert await world.copies_after_writes() == [("one", "live")]
    assert await world.metadata.list_cleanups(10) == []
    assert {usage.name: (usage.used_bytes, usage.object_count) for usage in await world.metadata.store_usage()} == used
    assert [(lost.bucket, lost.key) for lost in await world.metadata.lost_objects(10)] == [("bkt", "key")]
    assert world.placement.read_counters.copies_missing == {"one": 1}

    moved.rename(world.file("one"))
    response = await world.ops.get_object(call("GET"))
    assert await world.read(response) == DATA and response.store == "one"
    assert world.placement.read_counters.copies_missing == {"one": 1}


@pytest_twisted.ensureDeferred
async def test_an_object_with_no_live_copy_is_refused_as_lost_by_head_and_get(world: World) -> None:
    await no_copy_left(world)

    # HEAD (which asks no store) and GET answer so at once.
    for method, ask in (("HEAD", world.ops.head_object), ("GET", world.ops.get_object)):
        with pytest.raises(S3Error) as again:
            await ask(call(method))
        assert (again.value.code, again.value.status, again.value.message) == ("InternalError", 500, LOST_MESSAGE)
    assert world.placement.read_counters.copies_missing == {}


@pytest_twisted.ensureDeferred
async def test_a_missing_copy_and_a_store_down_is_service_unavailable_and_the_object_not_lost(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    await world.start()
    await put(world)
    await world.second_copy()
    world.file("one").unlink()

    def down(location: str, byte_range: Any) -> Deferred[Any]:
        return fail(StoreUnavailable("connection refused"))

    monkeypatch.setattr(world.stores["two"], "open_read", down)
    with pytest.raises(S3Error) as error:
        await world.ops.get_object(call("GET"))

    assert (error.value.code, error.value.status) == ("ServiceUnavailable", 503)
    assert error.value.headers == {"Retry-After": "1"}
    assert await world.copies_after_writes() == [("two", "live")]
    assert await world.metadata.lost_objects(10) == []


@pytest_twisted.ensureDeferred
async def test_the_replicator_drops_a_lost_object_from_its_queue(world: World) -> None:
    await lost_object(world)
    await world.metadata.queue_replication("bkt", "key", 5)  # as a run queued before the loss would have

    outcome = await world.placement.replicate("bkt", "key")

    assert (outcome.copies, outcome.missing) == (0, 0)
    assert await world.metadata.replication_queue(10) == []
    assert len(await world.metadata.lost_objects(10)) == 1


@pytest_twisted.ensureDeferred
async def test_an_overwrite_of_a_lost_object_makes_it_readable_again(world: World) -> None:
    await lost_object(world)

    await put(world, b"new bytes")

    assert await world.read(await world.ops.get_object(call("GET"))) == b"new bytes"
    assert await world.metadata.lost_objects(10) == []


# -- degraded mode ------------------------------------------------------------------------------------


def test_availability_goes_down_at_once_on_an_unavailable_database_and_up_on_a_success() -> None:
    availability = MetadataAvailability(Clock(), unavailable_after=10.0)

    availability.record_failure(MetadataUnavailable("disk I/O error"))
    assert not availability.available
    availability.record_success()
    assert availability.available


def test_availability_goes_down_only_after_busy_failures_for_unavailable_after() -> None:
    clock = Clock()
    availability = MetadataAvailability(clock, unavailable_after=10.0)

    availability.record_failure(MetadataBusy("locked"))
    clock.advance(9)
    availability.record_failure(MetadataBusy("locked"))
    assert availability.available
    availability.record_success()  # a success in between starts the count again
    clock.advance(5)
    availability.record_failure(MetadataBusy("locked"))
    clock.advance(10)
    availability.record_failure(MetadataBusy("locked"))
    assert not availability.available


def test_availability_ignores_errors_that_are_not_the_databases() -> None:
    availability = MetadataAvailability(Clock(), unavailable_after=0.0)
    availability.record_failure(ValueError("a bug"))
    assert availability.available


@pytest_twisted.ensureDeferred
async def test_a_damaged_sqlite_file_is_metadata_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "metadata.sqlite3"
    path.write_bytes(b"this is not a database" * 200)
    availability = MetadataAvailability(Clock())
    database = Database(SqliteEngine(str(path)), reactor, availability=availability)
    database.start()
    try:
        with pytest.raises(MetadataUnavailable):
            await database.runQuery("probe", "SELECT 1 FROM stores")
    finally:
        database.close()
    assert not availability.available


@pytest_twisted.ensureDeferred
async def test_degraded_get_and_head_answer_from_the_default_location(world: World) -> None:
    await world.start()
    await put(world)
    world.availability.record_failure(MetadataUnavailable("gone"))
    world.metadata.database.close()  # any use of the database would now fail

    got = await world.ops.get_object(call("GET", headers={"range": ["bytes=10-19"]}))
    head = await world.ops.head_object(call("HEAD"))

    assert got.status == 206 and await world.read(got) == DATA[10:20]
    assert got.store == "one"
    assert dict(head.headers)["Content-Length"] == str(len(DATA))
    assert "ETag" not in dict(head.headers)  # a file has none
    with pytest.raises(S3Error) as missing:
        await world.ops.head_object(call("HEAD", "nope"))
    assert missing.value.code == "NoSuchKey"


@pytest_twisted.ensureDeferred
async def test_degraded_get_falls_over_to_a_later_store(world: World) -> None:
    await world.start()
    await put(world)
    await world.second_copy()
    world.availability.record_failure(MetadataUnavailable("gone"))
    world.file("one").unlink()

    got = await world.ops.get_object(call("GET"))

    assert await world.read(got) == DATA and got.store == "two"


@pytest_twisted.ensureDeferred
async def test_degraded_etag_condition_a_file_cannot_check_is_service_unavailable(world: World) -> None:
    await world.start()
    await put(world)
    world.availability.record_failure(MetadataUnavailable("gone"))

    with pytest.raises(S3Error) as error:
        await world.ops.get_object(call("GET", headers={"if-match": [f'"{hashlib.md5(DATA).hexdigest()}"']}))

    assert error.value.code == "ServiceUnavailable"


def test_the_health_job_probes_the_metadata_database_only_while_it_is_unavailable() -> None:
    clock = Clock()
    probes: list[Deferred[None]] = []
    available = [True]

    def probe_metadata() -> Deferred[None] | None:
        if available[0]:
            return None
        probes.append(succeed(None))
        return probes[-1]

    job = HealthCheckJob({}, StoreHealth([], unhealthy_after=1), 10.0, clock, probe_metadata=probe_metadata)
    job.run_once()
    assert probes == []
    available[0] = False
    job.run_once()
    assert len(probes) == 1


def _psycopg_error(sqlstate: str | None) -> Exception:
    error_type = type("OperationalError", (Exception,), {"__module__": "psycopg"})
    error = error_type("server closed the connection unexpectedly")
    error.sqlstate = sqlstate  # type: ignore[attr-defined]
    return error


@pytest.mark.parametrize(("sqlstate", "unavailable"), [
    (None, True), ("08006", True), ("57P01", True), ("55P03", False), ("40P01", False), ("42P01", False),
])
def test_postgres_server_gone_is_unavailable_but_a_lock_or_a_bad_statement_is_not(
    sqlstate: str | None, unavailable: bool
) -> None:
    assert PostgresEngine("postgresql://localhost/x").is_unavailable(_psycopg_error(sqlstate)) is unavailable


@pytest_twisted.ensureDeferred
async def test_a_copy_of_a_lost_object_is_refused_as_lost_with_nothing_reserved(world: World) -> None:
    await no_copy_left(world)
    source = await world.metadata.get_object("bkt", "key")
    assert source is not None

    for target in (attrs.evolve(source, key="other"), source):  # elsewhere, and onto itself
        with pytest.raises(ObjectLost):
            await world.placement.copy(source, target)

    assert [usage.reserved_bytes for usage in await world.metadata.store_usage()] == [0, 0]
    assert await world.metadata.get_object("bkt", "other") is None


@pytest_twisted.ensureDeferred
async def test_degraded_get_finds_an_imported_object_where_it_was_found(world: World) -> None:
    await world.start()
    areas = KnownAreas(lambda: [DirectoryStoreConfig(name, 0, str(root)) for name, root in world.roots.items()])
    placement = Placement(world.metadata, world.stores, "pack", world.clock, KeyLocks(), world.health,
                          imported=areas.places)
    ops = ObjectOperations(placement, 5 * 1024**3, availability=world.availability)
    imported = world.roots["two"] / "docs" / "guide.txt"  # as the import found it: its name is the key
    imported.parent.mkdir(parents=True)
    imported.write_bytes(DATA)
    world.availability.record_failure(MetadataUnavailable("gone"))
    world.metadata.database.close()
    with pytest.raises(S3Error) as unknown:
        await ops.get_object(call("GET", "docs/guide.txt"))
    assert unknown.value.code == "NoSuchKey"  # no import is known to have found objects there

    areas.remember([("two", "docs", "bkt")])
    got = await ops.get_object(call("GET", "docs/guide.txt"))

    assert await world.read(got) == DATA and got.store == "two"
    assert areas.places("bkt", "docs/guide.txt") == [("two", "/docs/guide.txt")]
    assert areas.places("bkt", "other/guide.txt") == areas.places("other", "docs/guide.txt") == []
    areas.remember([("one", "docs", "bkt")], replace=True)
    assert areas.places("bkt", "docs/guide.txt") == [("one", "/docs/guide.txt")]
