"""Tests for the multipart part of the SQL metadata store on every engine: uploads,
parts, their quota accounting, Complete and Abort, and migration 002."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import pytest
import pytest_twisted

from s3orchestrator.metadata.engines import BaseEngine
from s3orchestrator.metadata.records import CompletedUpload, ObjectRecord, PartRecord, StoreUsage, UploadRecord
from s3orchestrator.metadata.schema import load_migrations, split_statements
from s3orchestrator.metadata.store import (
    MetadataStore,
    ReservationNotFound,
    UploadNotFound,
)

MD5_A = "0123456789abcdef0123456789abcdef"
MD5_B = "fedcba9876543210fedcba9876543210"
PARTS = [(1, MD5_A), (2, MD5_B)]  # what a Complete listed


@pytest_twisted.async_fixture
async def store(make_store) -> MetadataStore:
    metadata = make_store()
    await metadata.start()
    await metadata.sync_stores([("a", 1000), ("b", 1000)])
    return metadata


def upload(
    upload_id: str = "u1", key: str = "k", store: str = "a", bucket: str = "bkt", **changes: Any
) -> UploadRecord:
    values: dict[str, Any] = dict(
        upload_id=upload_id,
        bucket=bucket,
        key=key,
        store=store,
        location=f"{bucket}/{key}",
        store_upload_id=f"store-{upload_id}",
        content_type="text/plain",
        initiated_ms=1_700_000_000_000,
    )
    values.update(changes)
    return UploadRecord(**values)


def part(number: int = 1, size: int = 10, upload_id: str = "u1", store: str = "a", **changes: Any) -> PartRecord:
    values: dict[str, Any] = dict(
        upload_id=upload_id,
        part_number=number,
        store=store,
        size=size,
        etag=MD5_A,
        store_etag=f"store-etag-{number}",
        last_modified_ms=1_700_000_001_000,
    )
    values.update(changes)
    return PartRecord(**values)


def record(key: str = "k", store: str = "a", size: int = 10, bucket: str = "bkt", **changes: Any) -> ObjectRecord:
    values: dict[str, Any] = dict(
        bucket=bucket,
        key=key,
        store=store,
        location=f"{bucket}/{key}",
        size=size,
        etag=MD5_A,
        content_type="binary/octet-stream",
        last_modified_ms=1_700_000_002_000,
    )
    values.update(changes)
    return ObjectRecord(**values)


def pick(name: str):
    def choose(usage: Sequence[StoreUsage]) -> str:
        return name

    return choose


async def usage(store: MetadataStore) -> dict[str, tuple[int, int, int]]:
    """(used, reserved, objects) by store name."""
    return {u.name: (u.used_bytes, u.reserved_bytes, u.object_count) for u in await store.store_usage()}


async def add_part(store: MetadataStore, committed: PartRecord, reserved: int | None = None) -> PartRecord | None:
    """Reserve (``reserved`` bytes, default the part's size) on the part's store, then commit the part."""
    reservation = await store.reserve(committed.size if reserved is None else reserved, pick(committed.store))
    return await store.commit_part(reservation.id, committed)


async def put_object(store: MetadataStore, committed: ObjectRecord) -> None:
    reservation = await store.reserve(committed.size, pick(committed.store))
    await store.commit_object(reservation.id, committed)


# -- migration 002 ------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_migration_002_creates_uploads_parts_and_the_part_sizes_column(
    store: MetadataStore, db_rows, engine_name: str
) -> None:
    assert (2, "multipart") in db_rows("SELECT version, name FROM schema_version")
    assert db_rows("SELECT COUNT(*) FROM uploads") == db_rows("SELECT COUNT(*) FROM parts") == [(0,)]
    assert db_rows("SELECT COUNT(part_sizes) FROM objects") == [(0,)]
    if engine_name == "sqlite":
        indexes = {name for (name,) in db_rows("SELECT name FROM sqlite_master WHERE type = 'index'")}
    else:
        indexes = {name for (name,) in db_rows("SELECT indexname FROM pg_indexes WHERE schemaname = current_schema()")}
    assert {"uploads_by_key", "uploads_by_age", "parts_by_store"} <= indexes


def _database_of_release_one(engine: BaseEngine, db_rows: Callable[..., list[tuple]]) -> None:
    """What the release before multipart left: migration 001 applied (as schema.migrate
    applies it) and one object stored."""
    first = load_migrations()[0]
    assert (first.version, first.name) == (1, "initial")
    engine.prepare()
    db_rows(
        "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL PRIMARY KEY,"
        " name TEXT NOT NULL, applied_ms BIGINT NOT NULL)"
    )
    for statement in split_statements(engine.render_schema(first.sql)):
        db_rows(statement)
    db_rows("INSERT INTO schema_version (version, name, applied_ms) VALUES (1, 'initial', 0)")
    db_rows(
        "INSERT INTO stores (name, quota_bytes, used_bytes, object_count, config_order)"
        " VALUES ('a', 1000, 42, 1, 0)"
    )
    db_rows(
        "INSERT INTO objects (bucket, key, store, location, size, etag, content_type, headers, user_metadata,"
        " last_modified_ms) VALUES ('bkt', 'old', 'a', 'bkt/old', 42, ?, 'text/plain',"
        " '{\"cache-control\": \"no-cache\"}', '{\"team\": \"x\"}', 1600000000000)",
        (MD5_A,),
    )


@pytest_twisted.ensureDeferred
async def test_a_database_of_migration_001_is_upgraded_and_its_objects_still_read(
    make_store, make_engine, db_rows
) -> None:
    _database_of_release_one(make_engine(), db_rows)
    metadata = make_store()
    await metadata.start()
    assert db_rows("SELECT version FROM schema_version ORDER BY version") == [(m.version,) for m in load_migrations()]
    old = await metadata.get_object("bkt", "old")
    assert old == ObjectRecord(
        bucket="bkt", key="old", store="a", location="bkt/old", size=42, etag=MD5_A, content_type="text/plain",
        last_modified_ms=1_600_000_000_000, headers={"cache-control": "no-cache"}, user_metadata={"team": "x"},
    )
    assert old.part_sizes == ()
    await metadata.sync_stores([("a", 1000)])
    assert await usage(metadata) == {"a": (42, 0, 1)}


@pytest_twisted.ensureDeferred
async def test_an_upgraded_database_takes_multipart_uploads(make_store, make_engine, db_rows) -> None:
    _database_of_release_one(make_engine(), db_rows)
    metadata = make_store()
    await metadata.start()
    await metadata.sync_stores([("a", 1000)])
    await metadata.create_upload(upload(key="old"))
    await add_part(metadata, part(1, size=30))
    replaced = await metadata.complete_upload("u1", record(key="old", size=30, part_sizes=(30,)), PARTS)
    assert replaced is not None and replaced.size == 42
    assert (await metadata.get_object("bkt", "old")).part_sizes == (30,)
    assert await usage(metadata) == {"a": (30, 0, 1)}


# -- uploads ------------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_upload_round_trips(store: MetadataStore) -> None:
    created = upload(
        key="dir/ünï\nkey", headers={"cache-control": "no-store", "content-disposition": 'attachment; filename="a"'},
        user_metadata={"mtime": "1.5", "note": "ünï \"q\""}, checksum_algorithm="SHA256",
    )
    assert await store.create_upload(created) is None
    assert await store.get_upload("u1") == created


@pytest_twisted.ensureDeferred
async def test_upload_without_checksum_algorithm_round_trips(store: MetadataStore) -> None:
    await store.create_upload(upload())
    loaded = await store.get_upload("u1")
    assert loaded == upload() and loaded.checksum_algorithm is None


@pytest_twisted.ensureDeferred
async def test_unknown_upload_is_none(store: MetadataStore) -> None:
    await store.create_upload(upload())
    assert await store.get_upload("u2") is None
    assert await store.get_upload("") is None


@pytest_twisted.ensureDeferred
async def test_upload_ids_are_unique(store: MetadataStore) -> None:
    await store.create_upload(upload())
    with pytest.raises(Exception, match="(?i)unique"):  # the engine's integrity error
        await store.create_upload(upload(key="other"))
    assert (await store.get_upload("u1")).key == "k"


@pytest_twisted.ensureDeferred
async def test_creating_an_upload_reserves_nothing(store: MetadataStore) -> None:
    await store.create_upload(upload())
    assert await usage(store) == {"a": (0, 0, 0), "b": (0, 0, 0)}


# -- parts and their quota accounting -----------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_commit_part_turns_the_reservation_into_the_part_keeping_reserved_bytes(store: MetadataStore) -> None:
    await store.create_upload(upload())
    reservation = await store.reserve(10, pick("a"))
    assert await usage(store) == {"a": (0, 10, 0), "b": (0, 0, 0)}
    assert await store.commit_part(reservation.id, part(1, size=10)) is None
    assert await usage(store) == {"a": (0, 10, 0), "b": (0, 0, 0)}
    assert await store.list_parts("u1") == [part(1, size=10)]
    # The reservation is gone: releasing it now must not free the part's bytes.
    await store.release(reservation.id)
    assert await usage(store) == {"a": (0, 10, 0), "b": (0, 0, 0)}
    assert await store.clear_reservations() == 0


@pytest_twisted.ensureDeferred
async def test_parts_count_their_stored_size_not_the_reserved_one(store: MetadataStore) -> None:
    await store.create_upload(upload())
    await add_part(store, part(1, size=7), reserved=10)
    assert await usage(store) == {"a": (0, 7, 0), "b": (0, 0, 0)}


@pytest_twisted.ensureDeferred
async def test_store_usage_adds_parts_and_in_flight_reservations_per_store(store: MetadataStore) -> None:
    await store.create_upload(upload("u1", store="a"))
    await store.create_upload(upload("u2", key="k2", store="b"))
    await add_part(store, part(1, size=10, upload_id="u1", store="a"))
    await add_part(store, part(2, size=20, upload_id="u1", store="a"))
    await add_part(store, part(1, size=300, upload_id="u2", store="b"))
    await store.reserve(5, pick("a"))  # a part still streaming
    await put_object(store, record(key="plain", size=100, store="b"))
    assert await usage(store) == {"a": (0, 35, 0), "b": (100, 300, 1)}


@pytest_twisted.ensureDeferred
async def test_parts_bytes_are_seen_by_the_chooser(store: MetadataStore) -> None:
    await store.create_upload(upload())
    await add_part(store, part(1, size=400))
    seen: list[list[StoreUsage]] = []

    def choose(usage: Sequence[StoreUsage]) -> str:
        seen.append(list(usage))
        return "a"

    await store.reserve(1, choose)
    assert seen == [[StoreUsage("a", 1000, 0, 400, 0), StoreUsage("b", 1000, 0, 0, 0)]]


@pytest_twisted.ensureDeferred
async def test_a_part_uploaded_again_replaces_the_old_one_and_releases_its_bytes(store: MetadataStore) -> None:
    await store.create_upload(upload())
    first = part(1, size=10, etag=MD5_A)
    await add_part(store, first)
    await add_part(store, part(2, size=5))
    second = part(1, size=25, etag=MD5_B, store_etag="again", checksums={"crc32": "AAAAAA=="})
    assert await add_part(store, second) == first
    assert await usage(store) == {"a": (0, 30, 0), "b": (0, 0, 0)}
    assert await store.list_parts("u1") == [second, part(2, size=5)]


@pytest_twisted.ensureDeferred
async def test_parts_stay_counted_across_a_restart_that_clears_reservations(make_store, store: MetadataStore) -> None:
    await store.create_upload(upload())
    await add_part(store, part(1, size=10))
    await store.reserve(5, pick("a"))  # in flight when the daemon stopped
    await store.stop()
    restarted = make_store()
    await restarted.start()
    assert await restarted.clear_reservations() == 1
    assert await usage(restarted) == {"a": (0, 10, 0), "b": (0, 0, 0)}
    assert await restarted.get_upload("u1") == upload()
    assert await restarted.list_parts("u1") == [part(1, size=10)]


@pytest_twisted.ensureDeferred
async def test_commit_part_of_a_gone_upload_fails_and_keeps_the_reservation(store: MetadataStore) -> None:
    reservation = await store.reserve(10, pick("a"))
    with pytest.raises(UploadNotFound):
        await store.commit_part(reservation.id, part(1, size=10, upload_id="gone"))
    assert await usage(store) == {"a": (0, 10, 0), "b": (0, 0, 0)}
    assert await store.list_parts("gone") == []
    await store.release(reservation.id)
    assert await usage(store) == {"a": (0, 0, 0), "b": (0, 0, 0)}


@pytest_twisted.ensureDeferred
async def test_commit_part_after_the_upload_was_aborted_fails_and_keeps_the_reservation(
    store: MetadataStore, db_rows
) -> None:
    await store.create_upload(upload())
    reservation = await store.reserve(10, pick("a"))
    await store.delete_upload("u1")
    with pytest.raises(UploadNotFound):
        await store.commit_part(reservation.id, part(1, size=10))
    assert await usage(store) == {"a": (0, 10, 0), "b": (0, 0, 0)}
    assert db_rows("SELECT COUNT(*) FROM parts") == [(0,)]


@pytest_twisted.ensureDeferred
async def test_commit_part_with_a_released_reservation_fails_and_changes_nothing(store: MetadataStore) -> None:
    await store.create_upload(upload())
    kept = part(1, size=10, etag=MD5_A)
    await add_part(store, kept)
    reservation = await store.reserve(20, pick("a"))
    await store.release(reservation.id)
    with pytest.raises(ReservationNotFound):
        await store.commit_part(reservation.id, part(1, size=20, etag=MD5_B))
    assert await store.list_parts("u1") == [kept]
    assert await usage(store) == {"a": (0, 10, 0), "b": (0, 0, 0)}


@pytest_twisted.ensureDeferred
async def test_commit_part_on_another_store_than_reserved_fails(store: MetadataStore) -> None:
    await store.create_upload(upload())
    reservation = await store.reserve(10, pick("b"))
    with pytest.raises(ValueError):
        await store.commit_part(reservation.id, part(1, size=10, store="a"))
    assert await store.list_parts("u1") == []
    assert await usage(store) == {"a": (0, 0, 0), "b": (0, 10, 0)}


@pytest_twisted.ensureDeferred
async def test_forget_part_drops_the_row_and_releases_its_bytes(store: MetadataStore) -> None:
    await store.create_upload(upload())
    await add_part(store, part(1, size=10))
    await add_part(store, part(2, size=20))
    assert await store.forget_part("u1", 1) is None
    assert await store.list_parts("u1") == [part(2, size=20)]
    assert await usage(store) == {"a": (0, 20, 0), "b": (0, 0, 0)}
    await store.forget_part("u1", 1)  # already gone: fine
    await store.forget_part("nope", 2)
    assert await store.list_parts("u1") == [part(2, size=20)]


@pytest_twisted.ensureDeferred
async def test_list_parts_orders_by_number_and_pages_with_after_and_limit(store: MetadataStore) -> None:
    await store.create_upload(upload("u1"))
    await store.create_upload(upload("u2"))
    for number in (3, 10, 1, 2):
        await add_part(store, part(number, size=number))
    await add_part(store, part(4, upload_id="u2"))
    assert [p.part_number for p in await store.list_parts("u1")] == [1, 2, 3, 10]
    assert [p.part_number for p in await store.list_parts("u1", after=2)] == [3, 10]
    assert [p.part_number for p in await store.list_parts("u1", after=1, limit=2)] == [2, 3]
    assert [p.part_number for p in await store.list_parts("u1", limit=0)] == []
    assert await store.list_parts("u1", after=10) == []
    assert [p.part_number for p in await store.list_parts("u2")] == [4]


@pytest_twisted.ensureDeferred
async def test_part_checksums_round_trip(store: MetadataStore) -> None:
    await store.create_upload(upload(checksum_algorithm="CRC32"))
    with_checksums = part(1, checksums={"crc32": "yZRlqg==", "sha256": "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="})
    await add_part(store, with_checksums)
    (loaded,) = await store.list_parts("u1")
    assert loaded == with_checksums
    assert dict(loaded.checksums) == {"crc32": "yZRlqg==", "sha256": "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="}


@pytest_twisted.ensureDeferred
async def test_part_sizes_beyond_32_bits_round_trip(store: MetadataStore) -> None:
    await store.sync_stores([("a", 0)])
    await store.create_upload(upload())
    big = 5 * 1024**3
    await add_part(store, part(1, size=big))
    assert (await store.list_parts("u1"))[0].size == big
    assert (await store.store_usage())[0].reserved_bytes == big


# -- complete -----------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_complete_turns_the_parts_into_the_objects_usage(store: MetadataStore) -> None:
    await store.create_upload(upload())
    await add_part(store, part(1, size=100))
    await add_part(store, part(2, size=30))
    completed = record(size=130, etag=f"{MD5_B}-2", part_sizes=(100, 30))
    assert await store.complete_upload("u1", completed, PARTS) is None
    assert await usage(store) == {"a": (130, 0, 1), "b": (0, 0, 0)}
    assert await store.get_upload("u1") is None
    assert await store.list_parts("u1") == []
    loaded = await store.get_object("bkt", "k")
    assert loaded == completed and loaded.part_sizes == (100, 30)


@pytest_twisted.ensureDeferred
async def test_complete_releases_parts_it_does_not_keep(store: MetadataStore, db_rows) -> None:
    await store.create_upload(upload())
    await add_part(store, part(1, size=100))
    await add_part(store, part(2, size=50))
    await add_part(store, part(3, size=7))
    await store.complete_upload("u1", record(size=107, part_sizes=(100, 7)), PARTS)
    assert await usage(store) == {"a": (107, 0, 1), "b": (0, 0, 0)}
    assert db_rows("SELECT COUNT(*) FROM parts") == [(0,)]


@pytest_twisted.ensureDeferred
async def test_complete_keeps_in_flight_reservations(store: MetadataStore) -> None:
    await store.create_upload(upload())
    await add_part(store, part(1, size=10))
    await store.reserve(4, pick("a"))  # another request's bytes still streaming
    await store.complete_upload("u1", record(size=10, part_sizes=(10,)), PARTS)
    assert await usage(store) == {"a": (10, 4, 1), "b": (0, 0, 0)}


@pytest_twisted.ensureDeferred
async def test_complete_replaces_a_previous_object_and_releases_its_usage(store: MetadataStore) -> None:
    previous = record(size=60, store="b", location="elsewhere", etag=MD5_B)
    await put_object(store, previous)
    await store.create_upload(upload(store="a"))
    await add_part(store, part(1, size=40))
    completed = record(size=40, store="a", etag=f"{MD5_A}-1", part_sizes=(40,))
    assert await store.complete_upload("u1", completed, PARTS) == previous
    # The replaced bytes count as used until the cleanup of their location is done.
    assert await usage(store) == {"a": (40, 0, 1), "b": (60, 0, 0)}
    await store.finish_cleanup("b", "elsewhere")
    assert await usage(store) == {"a": (40, 0, 1), "b": (0, 0, 0)}
    assert await store.get_object("bkt", "k") == completed


@pytest_twisted.ensureDeferred
async def test_complete_of_a_gone_upload_fails_and_changes_nothing(store: MetadataStore) -> None:
    existing = record(size=60, etag=MD5_B)
    await put_object(store, existing)
    await store.create_upload(upload("u2"))
    await add_part(store, part(1, size=10, upload_id="u2"))
    reservation = await store.reserve(3, pick("b"))
    with pytest.raises(UploadNotFound):
        await store.complete_upload("u1", record(size=10, part_sizes=(10,)), PARTS)
    assert await store.get_object("bkt", "k") == existing
    assert await usage(store) == {"a": (60, 10, 1), "b": (0, 3, 0)}
    assert await store.list_parts("u2") == [part(1, size=10, upload_id="u2")]
    await store.release(reservation.id)


@pytest_twisted.ensureDeferred
async def test_complete_twice_fails_the_second_time(store: MetadataStore) -> None:
    await store.create_upload(upload())
    await add_part(store, part(1, size=10))
    await store.complete_upload("u1", record(size=10, part_sizes=(10,)), PARTS)
    with pytest.raises(UploadNotFound):
        await store.complete_upload("u1", record(size=99, part_sizes=(99,)), PARTS)
    assert await usage(store) == {"a": (10, 0, 1), "b": (0, 0, 0)}
    assert (await store.get_object("bkt", "k")).size == 10


@pytest_twisted.ensureDeferred
async def test_part_sizes_are_not_loaded_by_listings(store: MetadataStore) -> None:
    await store.create_upload(upload())
    await add_part(store, part(1, size=10))
    await store.complete_upload("u1", record(size=10, part_sizes=(10,)), PARTS)
    (listed,) = await store.scan_objects("bkt", "", lambda fetch: fetch("", False, 10))
    assert listed.part_sizes == ()
    assert listed == record(size=10)


@pytest_twisted.ensureDeferred
async def test_a_simple_put_over_a_multipart_object_resets_part_sizes(store: MetadataStore, db_rows) -> None:
    await store.create_upload(upload())
    await add_part(store, part(1, size=10))
    await store.complete_upload("u1", record(size=10, part_sizes=(10,)), PARTS)
    await put_object(store, record(size=3))
    loaded = await store.get_object("bkt", "k")
    assert loaded.part_sizes == ()
    assert db_rows("SELECT part_sizes FROM objects") == [(None,)]
    assert await usage(store) == {"a": (3, 0, 1), "b": (0, 0, 0)}


@pytest_twisted.ensureDeferred
async def test_deleting_a_multipart_object_releases_its_usage(store: MetadataStore) -> None:
    await store.create_upload(upload())
    await add_part(store, part(1, size=10))
    await store.complete_upload("u1", record(size=10, part_sizes=(10,)), PARTS)
    removed = await store.delete_object("bkt", "k")
    assert removed.part_sizes == (10,)
    assert await usage(store) == {"a": (10, 0, 0), "b": (0, 0, 0)}
    await store.finish_cleanup("a", removed.location)
    assert await usage(store) == {"a": (0, 0, 0), "b": (0, 0, 0)}


# -- abort --------------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_delete_upload_releases_every_part_and_returns_the_upload(store: MetadataStore) -> None:
    await store.create_upload(upload("u1"))
    await store.create_upload(upload("u2", key="other"))
    await add_part(store, part(1, size=10))
    await add_part(store, part(2, size=20))
    await add_part(store, part(1, size=5, upload_id="u2"))
    assert await store.delete_upload("u1") == upload("u1")
    assert await store.get_upload("u1") is None
    assert await store.list_parts("u1") == []
    assert await usage(store) == {"a": (0, 5, 0), "b": (0, 0, 0)}
    assert await store.list_parts("u2") == [part(1, size=5, upload_id="u2")]


@pytest_twisted.ensureDeferred
async def test_delete_upload_of_a_gone_upload_is_none(store: MetadataStore) -> None:
    await store.create_upload(upload())
    await store.delete_upload("u1")
    assert await store.delete_upload("u1") is None
    assert await store.delete_upload("never") is None


@pytest_twisted.ensureDeferred
async def test_delete_upload_leaves_objects_and_reservations_alone(store: MetadataStore) -> None:
    await put_object(store, record(size=60))
    await store.create_upload(upload())
    await add_part(store, part(1, size=10))
    await store.reserve(2, pick("a"))
    await store.delete_upload("u1")
    assert await usage(store) == {"a": (60, 2, 1), "b": (0, 0, 0)}
    assert (await store.get_object("bkt", "k")).size == 60


# -- scans --------------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_scan_uploads_orders_by_key_then_upload_id_within_bucket_and_prefix(store: MetadataStore) -> None:
    for upload_id, key, bucket in [
        ("u3", "b", "bkt"), ("u1", "b", "bkt"), ("u2", "a", "bkt"), ("u4", "a/x", "bkt"),
        ("u5", "b", "other"), ("u6", "\uffff", "bkt"), ("u7", "\U00010000", "bkt"),
    ]:
        await store.create_upload(upload(upload_id, key=key, bucket=bucket))

    def everything(fetch: Any) -> list[tuple[str, str]]:
        return [(u.key, u.upload_id) for u in fetch("", "", 100)]

    assert await store.scan_uploads("bkt", "", everything) == [
        ("a", "u2"), ("a/x", "u4"), ("b", "u1"), ("b", "u3"), ("\uffff", "u6"), ("\U00010000", "u7"),
    ]
    assert await store.scan_uploads("bkt", "a", everything) == [("a", "u2"), ("a/x", "u4")]
    assert await store.scan_uploads("other", "", everything) == [("b", "u5")]


@pytest_twisted.ensureDeferred
async def test_scan_uploads_fetch_starts_after_key_and_upload_id(store: MetadataStore) -> None:
    for upload_id, key in [("u1", "a"), ("u2", "b"), ("u3", "b"), ("u4", "c")]:
        await store.create_upload(upload(upload_id, key=key))

    def after(key: str, upload_id: str, limit: int = 100):
        return lambda fetch: [(u.key, u.upload_id) for u in fetch(key, upload_id, limit)]

    assert await store.scan_uploads("bkt", "", after("b", "")) == [("b", "u2"), ("b", "u3"), ("c", "u4")]
    assert await store.scan_uploads("bkt", "", after("b", "u2")) == [("b", "u3"), ("c", "u4")]
    assert await store.scan_uploads("bkt", "", after("b", "\U0010ffff")) == [("c", "u4")]
    assert await store.scan_uploads("bkt", "", after("a", "", 2)) == [("a", "u1"), ("b", "u2")]
    assert await store.scan_uploads("bkt", "", after("a", "", 0)) == []
    # A start before the prefix starts at the prefix.
    assert await store.scan_uploads("bkt", "b", after("a", "u9")) == [("b", "u2"), ("b", "u3")]


@pytest_twisted.ensureDeferred
async def test_scan_uploads_returns_whole_records(store: MetadataStore) -> None:
    created = upload(headers={"cache-control": "no-store"}, user_metadata={"a": "b"}, checksum_algorithm="SHA1")
    await store.create_upload(created)
    assert await store.scan_uploads("bkt", "", lambda fetch: fetch("", "", 10)) == [created]


@pytest_twisted.ensureDeferred
async def test_uploads_initiated_before_is_strict_oldest_first_and_limited(store: MetadataStore) -> None:
    for upload_id, initiated_ms in [("u1", 3000), ("u2", 1000), ("u3", 2000), ("u4", 4000)]:
        await store.create_upload(upload(upload_id, key=upload_id, initiated_ms=initiated_ms))
    assert [u.upload_id for u in await store.uploads_initiated_before(4000, 10)] == ["u2", "u3", "u1"]
    assert [u.upload_id for u in await store.uploads_initiated_before(4001, 2)] == ["u2", "u3"]
    assert await store.uploads_initiated_before(1000, 10) == []
    (oldest,) = await store.uploads_initiated_before(1001, 10)
    assert oldest == upload("u2", key="u2", initiated_ms=1000)


# -- completed uploads ----------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_a_completed_upload_is_remembered_with_its_parts_and_etag(store: MetadataStore) -> None:
    await store.create_upload(upload(upload_id="u1"))
    completed = record(size=10, part_sizes=(10,), last_modified_ms=5000)
    await store.complete_upload("u1", completed, PARTS)
    assert await store.get_upload("u1") is None
    assert await store.get_completed_upload("u1") == CompletedUpload(
        upload_id="u1", bucket=completed.bucket, key=completed.key, store=completed.store, etag=completed.etag,
        completed_ms=5000, parts=PARTS,
    )
    assert await store.get_completed_upload("u2") is None


@pytest_twisted.ensureDeferred
async def test_a_refused_completion_is_not_remembered(store: MetadataStore) -> None:
    with pytest.raises(UploadNotFound):
        await store.complete_upload("gone", record(size=10, part_sizes=(10,)), PARTS)
    assert await store.get_completed_upload("gone") is None


@pytest_twisted.ensureDeferred
async def test_completions_older_than_a_time_are_forgotten(store: MetadataStore) -> None:
    for upload_id, completed_ms in (("u1", 1000), ("u2", 2000), ("u3", 3000)):
        await store.create_upload(upload(upload_id=upload_id, key=upload_id))
        await store.complete_upload(
            upload_id, record(key=upload_id, size=1, part_sizes=(1,), last_modified_ms=completed_ms), PARTS
        )
    assert await store.forget_completed_uploads(2000) == 1
    assert [await store.get_completed_upload(u) is not None for u in ("u1", "u2", "u3")] == [False, True, True]
