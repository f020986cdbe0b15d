"""Tests for the directory store's multipart uploads on real files: parts, Complete, abort."""

from __future__ import annotations

import errno
import hashlib
import os
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import CancelledError
from zope.interface.verify import verifyObject

from s3orchestrator.errors import S3Error
from s3orchestrator.stores import directory_multipart
from s3orchestrator.stores.directory import DirectoryStore
from s3orchestrator.stores.interface import (
    IObjectStore,
    IObjectWrite,
    IPartWrite,
    ObjectMissing,
    StoredPart,
    StoreUnavailable,
)
from tests.unit.fakes import FakeBody
from tests.unit.test_directory_store import get, put, temp_files

KIB = 1024
MIB = 1024 * KIB
LOCATION = "app/dir/big"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def store(root: Path) -> DirectoryStore:
    return DirectoryStore("local", str(root), reactor)


def chunked(data: bytes, chunk: int = 64 * KIB) -> list[bytes]:
    return [data[i : i + chunk] for i in range(0, len(data), chunk)]


async def started(store: DirectoryStore) -> str:
    await store.start()
    return await store.create_upload(LOCATION)


async def put_part(store: DirectoryStore, upload_id: str, number: int, data: bytes) -> StoredPart:
    write = store.start_part_write(LOCATION, upload_id, number, FakeBody(chunked(data)), len(data))
    await write.done
    await write.publish()
    return StoredPart(number=number, size=len(data), store_etag=write.store_etag)


async def complete(store: DirectoryStore, upload_id: str, parts: list[StoredPart]) -> None:
    write = store.start_complete(LOCATION, upload_id, parts)
    await write.done
    await write.publish()


def upload_directory(root: Path, upload_id: str) -> Path:
    return root / ".uploads" / upload_id


# -- the happy path -----------------------------------------------------------------------------


def test_store_still_provides_the_interface(store: DirectoryStore) -> None:
    assert verifyObject(IObjectStore, store)


@pytest_twisted.ensureDeferred
async def test_create_upload_makes_an_empty_upload_directory(store: DirectoryStore, root: Path) -> None:
    upload_id = await started(store)
    assert len(upload_id) == 32 and int(upload_id, 16) >= 0
    assert os.listdir(upload_directory(root, upload_id)) == []
    assert await store.create_upload(LOCATION) != upload_id


@pytest_twisted.ensureDeferred
async def test_create_upload_makes_the_uploads_directory_if_start_did_not(store: DirectoryStore, root: Path) -> None:
    root.mkdir()
    upload_id = await store.create_upload(LOCATION)
    assert upload_directory(root, upload_id).is_dir()


@pytest_twisted.ensureDeferred
async def test_parts_are_joined_in_order_into_the_object(store: DirectoryStore, root: Path) -> None:
    upload_id = await started(store)
    datas = [os.urandom(300 * KIB + 1), os.urandom(5), os.urandom(200 * KIB)]
    parts = []
    for number, data in zip((2, 5, 9), datas, strict=True):
        write = store.start_part_write(LOCATION, upload_id, number, FakeBody(chunked(data)), len(data))
        assert verifyObject(IPartWrite, write)
        assert write.staged is True
        await write.done
        assert write.store_etag == str(number)
        await write.publish()
        parts.append(StoredPart(number=number, size=len(data), store_etag=write.store_etag))
    assert (upload_directory(root, upload_id) / "5").read_bytes() == datas[1]
    joined = store.start_complete(LOCATION, upload_id, parts)
    assert verifyObject(IObjectWrite, joined)
    assert joined.staged is True
    await joined.done
    await joined.publish()
    assert await get(store, LOCATION) == b"".join(datas)
    assert temp_files(root) == []


@pytest_twisted.ensureDeferred
async def test_a_completion_is_invisible_until_published(store: DirectoryStore) -> None:
    await put(store, LOCATION, b"previous")
    upload_id = await started(store)
    part = await put_part(store, upload_id, 1, b"next")
    joined = store.start_complete(LOCATION, upload_id, [part])
    await joined.done
    assert await get(store, LOCATION) == b"previous"
    await joined.publish()
    assert await get(store, LOCATION) == b"next"


@pytest_twisted.ensureDeferred
async def test_publishing_a_completion_removes_the_upload(store: DirectoryStore, root: Path) -> None:
    upload_id = await started(store)
    part = await put_part(store, upload_id, 1, b"only part")
    await complete(store, upload_id, [part])
    assert os.listdir(root / ".uploads") == []


@pytest_twisted.ensureDeferred
async def test_a_part_may_be_empty(store: DirectoryStore) -> None:
    upload_id = await started(store)
    parts = [await put_part(store, upload_id, 1, b""), await put_part(store, upload_id, 2, b"tail")]
    await complete(store, upload_id, parts)
    assert await get(store, LOCATION) == b"tail"


@pytest_twisted.ensureDeferred
async def test_a_large_part_is_joined_intact(store: DirectoryStore) -> None:
    upload_id = await started(store)
    big, small = os.urandom(20 * MIB), os.urandom(3 * KIB)
    parts = [await put_part(store, upload_id, 1, big), await put_part(store, upload_id, 2, small)]
    await complete(store, upload_id, parts)
    reader = await store.open_read(LOCATION, None)
    assert reader.length == len(big) + len(small)
    digest = hashlib.sha256(await get(store, LOCATION)).hexdigest()
    assert digest == hashlib.sha256(big + small).hexdigest()


@pytest_twisted.ensureDeferred
async def test_join_falls_back_to_reads_and_writes(store: DirectoryStore, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any) -> int:
        raise OSError(errno.EXDEV, "cross-device")

    upload_id = await started(store)
    datas = [os.urandom(2 * MIB + 1), os.urandom(7)]
    parts = [await put_part(store, upload_id, number, data) for number, data in enumerate(datas, 1)]
    monkeypatch.setattr(os, "copy_file_range", refuse, raising=False)
    await complete(store, upload_id, parts)
    assert await get(store, LOCATION) == b"".join(datas)


# -- parts --------------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_a_rewritten_part_replaces_the_earlier_one_at_publish(store: DirectoryStore, root: Path) -> None:
    upload_id = await started(store)
    await put_part(store, upload_id, 1, b"first")
    write = store.start_part_write(LOCATION, upload_id, 1, FakeBody([b"second!"]), 7)
    await write.done
    assert (upload_directory(root, upload_id) / "1").read_bytes() == b"first"
    await write.publish()
    assert (upload_directory(root, upload_id) / "1").read_bytes() == b"second!"
    await complete(store, upload_id, [StoredPart(1, 7, "1")])
    assert await get(store, LOCATION) == b"second!"


@pytest_twisted.ensureDeferred
async def test_abort_mid_part_keeps_the_previous_part(store: DirectoryStore, root: Path) -> None:
    upload_id = await started(store)
    await put_part(store, upload_id, 3, b"previous")
    body = FakeBody([b"partial"], length=100, hold=True)
    write = store.start_part_write(LOCATION, upload_id, 3, body, 100)
    write.abort()
    with pytest.raises(CancelledError):
        await write.done
    assert body.stopped
    assert write.store_etag is None
    assert temp_files(root) == []
    assert os.listdir(upload_directory(root, upload_id)) == ["3"]
    assert (upload_directory(root, upload_id) / "3").read_bytes() == b"previous"


@pytest_twisted.ensureDeferred
async def test_abort_of_a_staged_part_keeps_the_previous_part_and_the_object(store: DirectoryStore, root: Path) -> None:
    await put(store, LOCATION, b"object")
    upload_id = await started(store)
    await put_part(store, upload_id, 1, b"previous")
    write = store.start_part_write(LOCATION, upload_id, 1, FakeBody([b"next"]), 4)
    await write.done
    write.abort()
    assert temp_files(root) == []
    assert (upload_directory(root, upload_id) / "1").read_bytes() == b"previous"
    assert await get(store, LOCATION) == b"object"
    with pytest.raises(RuntimeError):
        await write.publish()


@pytest_twisted.ensureDeferred
async def test_a_part_published_after_abort_upload_fails_and_recreates_nothing(
    store: DirectoryStore, root: Path
) -> None:
    upload_id = await started(store)
    write = store.start_part_write(LOCATION, upload_id, 1, FakeBody([b"late"]), 4)
    await write.done
    await store.abort_upload(LOCATION, upload_id)
    with pytest.raises(ObjectMissing):
        await write.publish()
    assert not upload_directory(root, upload_id).exists()
    assert temp_files(root) == []


@pytest_twisted.ensureDeferred
async def test_a_short_part_body_fails_and_stores_nothing(store: DirectoryStore, root: Path) -> None:
    upload_id = await started(store)
    write = store.start_part_write(LOCATION, upload_id, 1, FakeBody([b"abc"], length=10), 10)
    with pytest.raises(S3Error) as error:
        await write.done
    assert error.value.code == "IncompleteBody"
    assert temp_files(root) == []
    assert os.listdir(upload_directory(root, upload_id)) == []


# -- completing ---------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_completing_with_a_wrong_size_or_a_missing_part_is_object_missing(
    store: DirectoryStore, root: Path
) -> None:
    upload_id = await started(store)
    parts = [await put_part(store, upload_id, 1, b"one"), await put_part(store, upload_id, 2, b"two")]
    for wrong in ([parts[0], StoredPart(2, 4, "2")], [parts[0], StoredPart(3, 3, "3")]):
        joined = store.start_complete(LOCATION, upload_id, wrong)
        with pytest.raises(ObjectMissing):
            await joined.done
    assert temp_files(root) == []
    assert sorted(os.listdir(upload_directory(root, upload_id))) == ["1", "2"]
    with pytest.raises(ObjectMissing):
        await store.open_read(LOCATION, None)
    await complete(store, upload_id, parts)
    assert await get(store, LOCATION) == b"onetwo"


@pytest_twisted.ensureDeferred
async def test_abort_of_a_staged_completion_keeps_the_object_and_the_parts(store: DirectoryStore, root: Path) -> None:
    await put(store, LOCATION, b"previous")
    upload_id = await started(store)
    parts = [await put_part(store, upload_id, 1, b"new "), await put_part(store, upload_id, 2, b"bytes")]
    joined = store.start_complete(LOCATION, upload_id, parts)
    await joined.done
    joined.abort()
    assert temp_files(root) == []
    assert await get(store, LOCATION) == b"previous"
    assert sorted(os.listdir(upload_directory(root, upload_id))) == ["1", "2"]
    with pytest.raises(RuntimeError):
        await joined.publish()
    await complete(store, upload_id, parts)
    assert await get(store, LOCATION) == b"new bytes"


@pytest_twisted.ensureDeferred
async def test_abort_while_joining_leaves_the_parts(store: DirectoryStore, root: Path) -> None:
    upload_id = await started(store)
    part = await put_part(store, upload_id, 1, os.urandom(MIB))
    joined = store.start_complete(LOCATION, upload_id, [part])
    joined.abort()  # the joining thread is still running
    with pytest.raises(CancelledError):
        await joined.done
    assert temp_files(root) == []
    assert os.listdir(upload_directory(root, upload_id)) == ["1"]
    with pytest.raises(ObjectMissing):
        await store.open_read(LOCATION, None)


@pytest_twisted.ensureDeferred
async def test_a_completion_whose_upload_cannot_be_removed_still_publishes(
    store: DirectoryStore, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(directory: bytes) -> None:
        raise PermissionError(errno.EACCES, "denied")

    upload_id = await started(store)
    part = await put_part(store, upload_id, 1, b"done anyway")
    monkeypatch.setattr(directory_multipart, "_remove_upload", broken)
    await complete(store, upload_id, [part])
    assert await get(store, LOCATION) == b"done anyway"
    assert upload_directory(root, upload_id).exists()


@pytest.mark.parametrize(
    "parts",
    [
        [],
        [StoredPart(1, 3, '"1"')],
        [StoredPart(1, 3, "d41d8cd98f00b204e9800998ecf8427e")],
        [StoredPart(0, 3, "0")],
        [StoredPart(1, -1, "1")],
    ],
)
@pytest_twisted.ensureDeferred
async def test_completing_with_parts_not_of_this_store_is_refused(
    store: DirectoryStore, root: Path, parts: list[StoredPart]
) -> None:
    upload_id = await started(store)
    await put_part(store, upload_id, 1, b"one")
    joined = store.start_complete(LOCATION, upload_id, parts)
    assert joined.done.called
    with pytest.raises(ValueError):
        await joined.done
    assert temp_files(root) == []
    assert os.listdir(upload_directory(root, upload_id)) == ["1"]


# -- aborting uploads and restarts --------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_abort_upload_removes_the_parts_and_is_idempotent(store: DirectoryStore, root: Path) -> None:
    upload_id = await started(store)
    other = await store.create_upload(LOCATION)
    await put_part(store, upload_id, 1, b"one")
    await put_part(store, upload_id, 2, b"two")
    await store.abort_upload(LOCATION, upload_id)
    assert os.listdir(root / ".uploads") == [other]
    await store.abort_upload(LOCATION, upload_id)
    joined = store.start_complete(LOCATION, upload_id, [StoredPart(1, 3, "1")])
    with pytest.raises(ObjectMissing):
        await joined.done


@pytest_twisted.ensureDeferred
async def test_abort_upload_of_a_broken_store_is_store_unavailable(
    store: DirectoryStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(path: Any, *args: Any, **kwargs: Any) -> None:
        raise PermissionError(errno.EACCES, "denied")

    upload_id = await started(store)
    monkeypatch.setattr(directory_multipart.shutil, "rmtree", broken)
    with pytest.raises(StoreUnavailable):
        await store.abort_upload(LOCATION, upload_id)


@pytest_twisted.ensureDeferred
async def test_create_upload_of_a_broken_root_is_store_unavailable(tmp_path: Path) -> None:
    not_a_directory = tmp_path / "file"
    not_a_directory.write_bytes(b"")
    store = DirectoryStore("broken", str(not_a_directory), reactor)
    with pytest.raises(StoreUnavailable):
        await store.create_upload(LOCATION)


@pytest_twisted.ensureDeferred
async def test_start_keeps_uploads_and_clears_temp_files(store: DirectoryStore, root: Path) -> None:
    upload_id = await started(store)
    await put_part(store, upload_id, 1, b"survivor")
    (root / ".tmp" / "crashed-part").write_bytes(b"x")
    assert await store.start() == 1
    assert temp_files(root) == []
    await complete(store, upload_id, [StoredPart(1, 8, "1")])
    assert await get(store, LOCATION) == b"survivor"


# -- refused arguments --------------------------------------------------------------------------


@pytest.mark.parametrize("location", ["", "nobucket", "/app/k", "app/nul\x00"])
@pytest_twisted.ensureDeferred
async def test_unmappable_locations_are_refused(store: DirectoryStore, root: Path, location: str) -> None:
    upload_id = await started(store)
    with pytest.raises(ValueError):
        await store.create_upload(location)
    part = store.start_part_write(location, upload_id, 1, FakeBody([b"x"]), 1)
    with pytest.raises(ValueError):
        await part.done
    joined = store.start_complete(location, upload_id, [StoredPart(1, 1, "1")])
    with pytest.raises(ValueError):
        await joined.done
    with pytest.raises(ValueError):
        await store.abort_upload(location, upload_id)
    assert os.listdir(root / ".uploads") == [upload_id]
    assert temp_files(root) == []


@pytest.mark.parametrize(
    "upload_id",
    ["", "0" * 31, "0" * 33, "A" * 32, "../" + "0" * 29, "0" * 31 + "\n", "0" * 16 + "/" + "0" * 15],
)
@pytest_twisted.ensureDeferred
async def test_malformed_upload_ids_are_refused(store: DirectoryStore, root: Path, upload_id: str) -> None:
    await store.start()
    body = FakeBody([b"x"])
    part = store.start_part_write(LOCATION, upload_id, 1, body, 1)
    assert part.done.called
    with pytest.raises(ValueError):
        await part.done
    assert body.consumer is None  # never started
    joined = store.start_complete(LOCATION, upload_id, [StoredPart(1, 1, "1")])
    with pytest.raises(ValueError):
        await joined.done
    with pytest.raises(ValueError):
        await store.abort_upload(LOCATION, upload_id)
    assert os.listdir(root / ".uploads") == []
    assert temp_files(root) == []


@pytest.mark.parametrize("part_number", [0, -1, 10001, True])
@pytest_twisted.ensureDeferred
async def test_part_numbers_outside_1_to_10000_are_refused(
    store: DirectoryStore, root: Path, part_number: int
) -> None:
    upload_id = await started(store)
    part = store.start_part_write(LOCATION, upload_id, part_number, FakeBody([b"x"]), 1)
    assert part.done.called
    with pytest.raises(ValueError):
        await part.done
    assert os.listdir(upload_directory(root, upload_id)) == []


@pytest_twisted.ensureDeferred
async def test_part_number_10000_is_accepted(store: DirectoryStore, root: Path) -> None:
    upload_id = await started(store)
    part = await put_part(store, upload_id, 10000, b"last")
    assert part.store_etag == "10000"
    assert (upload_directory(root, upload_id) / "10000").read_bytes() == b"last"
