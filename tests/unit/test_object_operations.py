"""Tests for ObjectOperations over a real SQLite metadata store and real directory stores."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import attrs
import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred, ensureDeferred, fail, succeed
from twisted.internet.task import Clock
from twisted.web.iweb import IBodyProducer
from zope.interface import implementer

from s3orchestrator.auth.payload import PayloadVerifier
from s3orchestrator.errors import S3Error
from s3orchestrator.jobs.health import StoreHealth
from s3orchestrator.metadata.interface import MetadataBusy
from s3orchestrator.metadata.records import CopyRecord, ObjectRecord, StoreUsage
from s3orchestrator.metadata.store import MetadataStore
from s3orchestrator.placement.engine import Placement
from s3orchestrator.placement.locks import KeyLocks
from s3orchestrator.s3.call import S3Call, S3Response
from s3orchestrator.s3.objects import ObjectOperations
from s3orchestrator.stores.directory import DirectoryStore
from s3orchestrator.stores.interface import IObjectStore, IObjectWrite, StoreUnavailable
from s3orchestrator.web.body import UploadBody
from tests.unit.fakes import CollectingConsumer, FakeRequestBody, RecordingTransport, auth_result

NOW = 1_767_225_600  # 2026-01-01T00:00:00Z
DATA = bytes(range(256)) * 4  # 1 KiB, every byte value
Headers = Mapping[str, Sequence[str]]


@attrs.define
class World:
    """ObjectOperations and everything behind it, with the roots of the directory stores."""

    metadata: MetadataStore
    stores: dict[str, Any]
    roots: dict[str, Path]
    locks: KeyLocks
    placement: Placement
    ops: ObjectOperations
    view: Any  # what ops reads metadata through (the store, or a test wrapper around it)
    clock: Clock

    async def usage(self) -> dict[str, StoreUsage]:
        return {usage.name: usage for usage in await self.metadata.store_usage()}

    def files(self, store: str) -> list[str]:
        """Every file under the store's root, temp files included."""
        root = self.roots[store]
        return sorted(str(path.relative_to(root)) for path in root.rglob("*") if path.is_file())


@pytest.fixture
def build(tmp_path: Path, sqlite_store: Callable[..., MetadataStore]):
    """An async factory of Worlds: directory stores with the given quotas, pack routing."""

    async def make(
        quotas: Sequence[tuple[str, int]] = (("one", 0),),
        max_object_size: int = 5 * 1024**3,
        stores: Mapping[str, Any] | None = None,
        metadata_wrapper: Any = None,
    ) -> World:
        metadata = sqlite_store()
        await metadata.start()
        await metadata.sync_stores(list(quotas))
        roots = {name: tmp_path / name for name, _ in quotas}
        object_stores: dict[str, Any] = {name: DirectoryStore(name, str(root), reactor) for name, root in roots.items()}
        for store in object_stores.values():
            await store.start()
        object_stores.update(stores or {})
        clock = Clock()
        clock.advance(NOW)
        locks = KeyLocks()
        view = metadata if metadata_wrapper is None else metadata_wrapper(metadata)
        health = StoreHealth(list(object_stores), unhealthy_after=3, now=clock.seconds)
        placement = Placement(view, object_stores, "pack", clock, locks, health)
        ops = ObjectOperations(placement, max_object_size)
        return World(metadata, object_stores, roots, locks, placement, ops, view, clock)

    return make


def s3_call(method: str, key: str = "key", headers: Headers | None = None, body: Any = None) -> S3Call:
    return S3Call(
        request_id="0123456789ABCDEF",
        method=method,
        bucket="bkt",
        key=key,
        query={},
        headers=dict(headers or {}),
        auth=auth_result(),
        body=body,
    )


async def put(world: World, data: bytes, key: str = "key", headers: Headers | None = None) -> S3Response:
    return await world.ops.put_object(s3_call("PUT", key, headers, FakeRequestBody(data)))


async def read(world: World, response: S3Response) -> bytes:
    """The response's body, the world's clock turned until it is all there (a directory
    store's file is pulled once per reactor turn)."""
    consumer = CollectingConsumer()
    streamed = response.body.stream_to(consumer)  # type: ignore[union-attr]
    while not streamed.called:
        world.clock.advance(0)
    await streamed
    return consumer.body


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


# -- put / get ----------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_put_then_get_returns_the_bytes_etag_size_and_content_type(build) -> None:
    world = await build()

    stored = await put(world, DATA, headers={"content-type": ["text/plain"]})
    got = await world.ops.get_object(s3_call("GET"))

    assert stored.status == 200
    assert dict(stored.headers)["ETag"] == f'"{md5(DATA)}"'
    headers = dict(got.headers)
    assert got.status == 200
    assert headers["ETag"] == f'"{md5(DATA)}"'
    assert headers["Content-Type"] == "text/plain"
    assert got.body.length == len(DATA)  # type: ignore[union-attr]
    assert await read(world, got) == DATA


@pytest_twisted.ensureDeferred
async def test_put_stores_user_metadata_and_defaults_the_content_type(build) -> None:
    world = await build()

    await put(world, DATA, headers={"x-amz-meta-colour": ["blue"]})
    got = await world.ops.head_object(s3_call("HEAD"))

    headers = dict(got.headers)
    assert headers["x-amz-meta-colour"] == "blue"
    assert headers["Content-Type"] == "binary/octet-stream"


@pytest_twisted.ensureDeferred
async def test_put_turns_the_reservation_into_usage(build) -> None:
    world = await build([("one", 0)])

    await put(world, DATA)

    usage = (await world.usage())["one"]
    assert (usage.used_bytes, usage.reserved_bytes, usage.object_count) == (len(DATA), 0, 1)
    assert world.files("one") == ["bkt.d/key"]
    assert len(world.locks) == 0


@pytest_twisted.ensureDeferred
async def test_put_with_no_room_anywhere_is_insufficient_storage_and_reserves_nothing(build) -> None:
    world = await build([("one", 100), ("two", 100)])
    body = FakeRequestBody(DATA)

    with pytest.raises(S3Error) as error:
        await world.ops.put_object(s3_call("PUT", body=body))

    assert error.value.code == "InsufficientStorage"
    assert all(u.reserved_bytes == 0 and u.used_bytes == 0 for u in (await world.usage()).values())
    assert not body.started.called
    assert world.files("one") == world.files("two") == []


@pytest_twisted.ensureDeferred
async def test_put_larger_than_the_maximum_object_size_is_entity_too_large(build) -> None:
    world = await build(max_object_size=len(DATA) - 1)

    with pytest.raises(S3Error) as error:
        await put(world, DATA)

    assert error.value.code == "EntityTooLarge"
    assert (await world.usage())["one"].reserved_bytes == 0


@pytest_twisted.ensureDeferred
async def test_failed_body_verification_leaves_no_object_reservation_or_file(build) -> None:
    world = await build([("one", 0)])
    body = FakeRequestBody(DATA, verified=False)
    putting = ensureDeferred(world.ops.put_object(s3_call("PUT", body=body)))
    await body.started
    assert len(world.files("one")) == 1  # the head of the body sits in a temp file

    body.verified.errback(S3Error("BadDigest"))
    with pytest.raises(S3Error) as error:
        await putting

    assert error.value.code == "BadDigest"
    assert await world.metadata.get_object("bkt", "key") is None
    usage = (await world.usage())["one"]
    assert (usage.used_bytes, usage.reserved_bytes, usage.object_count) == (0, 0, 0)
    assert world.files("one") == []
    assert body.stopped


@pytest_twisted.ensureDeferred
async def test_failed_overwrite_keeps_the_previous_object(build) -> None:
    world = await build([("one", 0)])
    await put(world, DATA)
    body = FakeRequestBody(b"x" * 100, verified=False)
    putting = ensureDeferred(world.ops.put_object(s3_call("PUT", body=body)))
    await body.started

    body.verified.errback(S3Error("XAmzContentSHA256Mismatch"))
    with pytest.raises(S3Error):
        await putting

    got = await world.ops.get_object(s3_call("GET"))
    assert dict(got.headers)["ETag"] == f'"{md5(DATA)}"'
    assert await read(world, got) == DATA


# -- overwrite and delete -------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_overwrite_on_the_same_store_replaces_the_bytes_and_counts_once(build) -> None:
    world = await build([("one", 0)])
    await put(world, DATA)

    await put(world, b"new bytes")

    usage = (await world.usage())["one"]
    assert (usage.used_bytes, usage.object_count) == (len(b"new bytes"), 1)
    assert await read(world, await world.ops.get_object(s3_call("GET"))) == b"new bytes"


@pytest_twisted.ensureDeferred
async def test_overwrite_onto_another_store_deletes_the_old_file_and_moves_usage(build) -> None:
    world = await build([("one", 1500), ("two", 0)])
    first = await put(world, DATA)
    assert first.store == "one"
    replacement = bytes(reversed(DATA))

    second = await put(world, replacement)

    assert second.store == "two"
    assert world.files("one") == []
    assert world.files("two") == ["bkt.d/key"]
    usage = await world.usage()
    assert (usage["one"].used_bytes, usage["one"].object_count) == (0, 0)
    assert (usage["two"].used_bytes, usage["two"].object_count) == (len(replacement), 1)
    assert await read(world, await world.ops.get_object(s3_call("GET"))) == replacement


@pytest_twisted.ensureDeferred
async def test_delete_releases_usage_and_removes_the_file(build) -> None:
    world = await build([("one", 0)])
    await put(world, DATA)

    deleted = await world.ops.delete_object(s3_call("DELETE"))

    assert deleted.status == 204
    usage = (await world.usage())["one"]
    assert (usage.used_bytes, usage.object_count) == (0, 0)
    assert world.files("one") == []
    assert await world.metadata.get_object("bkt", "key") is None


@pytest_twisted.ensureDeferred
async def test_delete_of_a_missing_key_succeeds(build) -> None:
    world = await build()

    deleted = await world.ops.delete_object(s3_call("DELETE", "nothing-here"))

    assert deleted.status == 204


# -- reads ----------------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_get_with_a_range_returns_206_content_range_and_those_bytes(build) -> None:
    world = await build()
    await put(world, DATA)

    got = await world.ops.get_object(s3_call("GET", headers={"range": ["bytes=10-19"]}))

    assert got.status == 206
    assert ("Content-Range", f"bytes 10-19/{len(DATA)}") in got.headers
    assert got.body.length == 10  # type: ignore[union-attr]
    assert await read(world, got) == DATA[10:20]


@pytest_twisted.ensureDeferred
async def test_get_with_an_unsatisfiable_range_is_invalid_range(build) -> None:
    world = await build()
    await put(world, DATA)

    with pytest.raises(S3Error) as error:
        await world.ops.get_object(s3_call("GET", headers={"range": [f"bytes={len(DATA)}-"]}))

    assert error.value.code == "InvalidRange"
    assert error.value.headers["Content-Range"] == f"bytes */{len(DATA)}"


@pytest_twisted.ensureDeferred
async def test_head_returns_content_length_and_no_body(build) -> None:
    world = await build()
    await put(world, DATA)

    head = await world.ops.head_object(s3_call("HEAD"))

    assert head.status == 200
    assert ("Content-Length", str(len(DATA))) in head.headers
    assert dict(head.headers)["ETag"] == f'"{md5(DATA)}"'
    assert head.body is None


@pytest.mark.parametrize("method", ["GET", "HEAD"])
@pytest_twisted.ensureDeferred
async def test_read_of_a_missing_key_is_no_such_key(build, method: str) -> None:
    world = await build()
    read_object = world.ops.get_object if method == "GET" else world.ops.head_object

    with pytest.raises(S3Error) as error:
        await read_object(s3_call(method, "missing"))

    assert error.value.code == "NoSuchKey"
    assert len(world.locks) == 0


@pytest_twisted.ensureDeferred
async def test_get_of_an_object_whose_file_vanished_is_internal_error(build) -> None:
    world = await build([("one", 0)])
    await put(world, DATA)
    (world.roots["one"] / "bkt.d" / "key").unlink()

    with pytest.raises(S3Error) as error:
        await world.ops.get_object(s3_call("GET"))

    assert error.value.code == "InternalError"


@pytest_twisted.ensureDeferred
async def test_conditional_get_with_a_matching_if_none_match_is_not_modified(build) -> None:
    world = await build()
    await put(world, DATA)

    with pytest.raises(S3Error) as error:
        await world.ops.get_object(s3_call("GET", headers={"if-none-match": [f'"{md5(DATA)}"']}))

    assert error.value.code == "NotModified"


# -- store and metadata failures ---------------------------------------------------------------


@implementer(IObjectWrite)
class _FailedWrite:
    def __init__(self) -> None:
        self.done: Deferred[None] = Deferred()

    def abort(self) -> None:
        pass


@implementer(IObjectStore)
class DiskFullStore:
    """Fails on the first byte written, as DirectoryWrite does on an I/O error: stops the body."""

    name = "one"

    def __init__(self) -> None:
        self.started: Deferred[None] = Deferred()
        self.writes: list[_FailedWrite] = []

    def location_for(self, bucket: str, key: str) -> str:
        return f"{bucket}/{key}"

    def start_write(self, location: str, body: IBodyProducer, length: int) -> _FailedWrite:
        write = _FailedWrite()
        self.writes.append(write)
        store = self

        class Consumer:
            def write(self, data: bytes) -> None:
                if not write.done.called:
                    body.stopProducing()
                    write.done.errback(StoreUnavailable("write failed: No space left on device"))

            def registerProducer(self, producer: Any, streaming: bool) -> None:
                pass

            def unregisterProducer(self) -> None:
                pass

        body.startProducing(Consumer())
        store.started.callback(None)
        return write


@pytest_twisted.ensureDeferred
async def test_store_failing_mid_body_fails_the_put_instead_of_hanging(build) -> None:
    store = DiskFullStore()
    world = await build([("one", 0)], stores={"one": store})
    headers = {"content-length": ["6"]}
    body = UploadBody(
        RecordingTransport(),
        lambda on_data: PayloadVerifier(auth_result(), headers, on_data),
        lambda: None,
    )
    putting = ensureDeferred(world.ops.put_object(s3_call("PUT", headers=headers, body=body)))
    putting.addTimeout(2, reactor)
    await store.started

    body.dataReceived(b"ab")
    body.dataReceived(b"cd")  # "ab" reaches the store, which fails and stops the body
    body.dataReceived(b"ef")
    body.bodyComplete()

    # Before the fix this waited for a `verified` that never comes (TimeoutError after 2 s).
    with pytest.raises(S3Error) as raised:
        await putting
    assert raised.value.code == "ServiceUnavailable"
    assert raised.value.headers["Retry-After"] == "1"
    assert world.placement.health.snapshot()["one"].consecutive_failures == 1
    assert (await world.usage())["one"].reserved_bytes == 0
    assert await world.metadata.get_object("bkt", "key") is None


class FailingCommit:
    """The metadata store, except that a PUT's commit (commit_write) fails (say, SQLite busy) when told to."""

    def __init__(self, inner: MetadataStore) -> None:
        self._inner = inner
        self.fail_commits = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def commit_write(self, reservation_id: int, record: ObjectRecord, settle: bool) -> Deferred[list[CopyRecord]]:
        if self.fail_commits:
            return fail(RuntimeError("database is locked"))
        return self._inner.commit_write(reservation_id, record, settle)


@pytest_twisted.ensureDeferred
async def test_overwrite_whose_commit_fails_keeps_the_previous_object(build) -> None:
    world = await build([("one", 0)], metadata_wrapper=FailingCommit)
    await put(world, DATA)
    world.view.fail_commits = True

    with pytest.raises(RuntimeError):
        await put(world, b"replacement")

    got = await world.ops.get_object(s3_call("GET"))
    assert dict(got.headers)["ETag"] == f'"{md5(DATA)}"'
    assert await read(world, got) == DATA
    assert len(world.files("one")) == 1
    assert [(u.used_bytes, u.reserved_bytes) for u in await world.metadata.store_usage()] == [(len(DATA), 0)]


@pytest_twisted.ensureDeferred
async def test_new_object_whose_commit_fails_leaves_no_file(build) -> None:
    world = await build([("one", 0)], metadata_wrapper=FailingCommit)
    world.view.fail_commits = True

    with pytest.raises(RuntimeError):
        await put(world, DATA)

    assert world.files("one") == []
    assert [(u.used_bytes, u.reserved_bytes) for u in await world.metadata.store_usage()] == [(0, 0)]


class BusyDatabase:
    """The metadata store, except that the writes named in ``busy`` fail as a database
    locked by another process makes them fail, each for its next ``times`` calls."""

    def __init__(self, inner: MetadataStore) -> None:
        self._inner = inner
        self.busy: dict[str, int] = {}

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._inner, name)

        def call(*args: Any) -> Any:
            if self.busy.get(name, 0) > 0:
                self.busy[name] -= 1
                return fail(MetadataBusy("database is locked"))
            return method(*args)

        return call


@pytest_twisted.ensureDeferred
async def test_a_put_the_busy_database_refuses_to_reserve_leaves_nothing(build) -> None:
    world = await build([("one", 0)], metadata_wrapper=BusyDatabase)
    world.view.busy = {"reserve_copies": 1}
    body = FakeRequestBody(DATA)

    with pytest.raises(MetadataBusy):
        await world.ops.put_object(s3_call("PUT", body=body))

    assert not body.started.called  # refused before a byte of the body was read
    assert world.files("one") == []
    assert [(u.used_bytes, u.reserved_bytes) for u in await world.metadata.store_usage()] == [(0, 0)]


@pytest_twisted.ensureDeferred
async def test_a_put_whose_commit_the_busy_database_refuses_leaves_no_bytes_and_no_reservation(build) -> None:
    world = await build([("one", 0)], metadata_wrapper=BusyDatabase)
    await put(world, DATA)
    # The commit is refused, and so is the release of the reservation right after it.
    world.view.busy = {"commit_write": 1, "release": 2}

    with pytest.raises(MetadataBusy):
        await put(world, b"replacement")

    assert len(world.files("one")) == 1  # the previous object's file, and no temp file
    usage = await world.metadata.store_usage()
    assert [(u.used_bytes, u.reserved_bytes) for u in usage] == [(len(DATA), len(b"replacement"))]
    world.clock.advance(1)  # the first retry: still busy
    assert [u.reserved_bytes for u in await world.metadata.store_usage()] == [len(b"replacement")]
    world.clock.advance(2)  # the second retry, after twice the delay: released
    assert [(u.used_bytes, u.reserved_bytes) for u in await world.metadata.store_usage()] == [(len(DATA), 0)]
    got = await world.ops.get_object(s3_call("GET"))
    assert await read(world, got) == DATA


@implementer(IObjectWrite)
class _FailsAfterTheBody:
    """An unstaged write (an upstream PUT) that fails once the whole body went out:
    refused by the store (``location_intact``), or with its answer lost."""

    staged = False

    def __init__(self, body: IBodyProducer, location_intact: bool) -> None:
        self.done: Deferred[None] = Deferred()
        self.location_intact = location_intact
        sink = CollectingConsumer()
        body.startProducing(sink).addCallback(lambda _: self.done.errback(StoreUnavailable("upstream failed")))

    def publish(self) -> Deferred[None]:
        return fail(RuntimeError("never published"))

    def abort(self) -> None:
        pass


class FailingOverwrites:
    """A directory store whose writes fail after the body, as an upstream store's can."""

    def __init__(self, inner: DirectoryStore, location_intact: bool) -> None:
        self._inner = inner
        self._location_intact = location_intact
        self.failing = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def start_write(self, location: str, body: IBodyProducer, length: int) -> IObjectWrite:
        if self.failing:
            return _FailsAfterTheBody(body, self._location_intact)
        return self._inner.start_write(location, body, length)


@pytest.mark.parametrize("location_intact", [True, False])
@pytest_twisted.ensureDeferred
async def test_overwrite_failing_in_the_store_keeps_the_previous_object_only_if_untouched(
    build, tmp_path: Path, location_intact: bool
) -> None:
    store = FailingOverwrites(DirectoryStore("one", str(tmp_path / "one"), reactor), location_intact)
    world = await build([("one", 0)], stores={"one": store})
    await put(world, DATA)
    store.failing = True

    with pytest.raises(S3Error):
        await put(world, b"replacement")

    record = await world.metadata.get_object("bkt", "key")
    if location_intact:
        # Refused: the store still holds the previous object, which stays readable.
        assert record is not None and record.etag == md5(DATA)
        assert await read(world, await world.ops.get_object(s3_call("GET"))) == DATA
    else:
        # The store may have replaced it: forgetting the key beats serving wrong bytes.
        assert record is None
    assert (await world.usage())["one"].reserved_bytes == 0


@implementer(IObjectWrite)
class _VisibleAtOnce:
    """An unstaged write that succeeds (an upstream PUT: the bytes replace the location's
    object as soon as they are stored)."""

    staged = False
    location_intact = True

    def __init__(self, body: IBodyProducer) -> None:
        self.done: Deferred[None] = Deferred()
        self.aborted = False
        body.startProducing(CollectingConsumer()).addCallback(lambda _: self.done.callback(None))

    def publish(self) -> Deferred[None]:
        return succeed(None)

    def abort(self) -> None:
        self.aborted = True


class UnstagedStore:
    """A directory store whose writes, once ``unstaged`` is set, are visible at once."""

    def __init__(self, inner: DirectoryStore) -> None:
        self._inner = inner
        self.unstaged = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def start_write(self, location: str, body: IBodyProducer, length: int) -> IObjectWrite:
        return _VisibleAtOnce(body) if self.unstaged else self._inner.start_write(location, body, length)


async def replaced_in_place_while_busy(build, tmp_path: Path) -> World:
    """A PUT over an existing key of an unstaged store whose commit (and the forgetting
    of the replaced record) the busy database refuses."""
    store = UnstagedStore(DirectoryStore("one", str(tmp_path / "one"), reactor))
    world = await build([("one", 0)], stores={"one": store}, metadata_wrapper=BusyDatabase)
    await put(world, DATA)
    store.unstaged = True
    world.view.busy = {"commit_write": 1, "delete_object": 1}
    with pytest.raises(MetadataBusy):
        await put(world, b"replacement")
    store.unstaged = False
    assert await world.metadata.get_object("bkt", "key") is not None  # forgetting it was refused too
    return world


@pytest_twisted.ensureDeferred
async def test_a_record_replaced_in_place_is_forgotten_once_the_busy_database_takes_it(build, tmp_path) -> None:
    world = await replaced_in_place_while_busy(build, tmp_path)
    world.clock.advance(1)
    await world.placement.cleanups.settled()
    assert await world.metadata.get_object("bkt", "key") is None
    # The bytes at the key's location (the replacement) are queued for the cleanup job,
    # their usage kept until they are gone.
    queued = await world.metadata.list_cleanups(10)
    assert [(entry.store, entry.location) for entry in queued] == [("one", "bkt/key")]
    assert [(u.used_bytes, u.reserved_bytes) for u in await world.metadata.store_usage()] == [(queued[0].size, 0)]


@pytest_twisted.ensureDeferred
async def test_a_delayed_forget_spares_the_record_of_a_later_put(build, tmp_path) -> None:
    world = await replaced_in_place_while_busy(build, tmp_path)
    await put(world, b"a later PUT")
    world.clock.advance(1)
    await world.placement.cleanups.settled()
    record = await world.metadata.get_object("bkt", "key")
    assert record is not None and record.etag == md5(b"a later PUT")
