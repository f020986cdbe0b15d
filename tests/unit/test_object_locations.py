"""Tests that objects and uploads live where their store says (``location_for``), recorded in metadata."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import Clock

from s3orchestrator.jobs.health import StoreHealth
from s3orchestrator.metadata.store import sqlite_metadata_store
from s3orchestrator.placement.engine import Placement
from s3orchestrator.placement.locks import KeyLocks
from s3orchestrator.s3.call import S3Call
from s3orchestrator.s3.copy import CopyOperations
from s3orchestrator.s3.multipart import MultipartOperations
from s3orchestrator.s3.objects import ObjectOperations
from s3orchestrator.stores.directory import DirectoryStore
from tests.unit.fakes import CollectingConsumer, FakeRequestBody, auth_result

NOW = 1_767_225_600


class VersionedStore(DirectoryStore):
    """A directory store whose locations sit under a layout version the test can change
    (as a store whose location scheme changed between releases)."""

    layout = "v1"

    def location_for(self, bucket: str, key: str) -> str:
        return f"{bucket}/{self.layout}/{key}"


@pytest.fixture
def world(tmp_path: Path) -> Iterator[Any]:
    metadata = sqlite_metadata_store(str(tmp_path / "metadata.sqlite3"), reactor)
    stores = {name: VersionedStore(name, str(tmp_path / name), reactor) for name in ("one", "two")}
    yield metadata, stores, tmp_path
    metadata.database.close()


async def started(world: Any, quotas: tuple[tuple[str, int], ...] = (("one", 0), ("two", 0))) -> Any:
    metadata, stores, tmp_path = world
    await metadata.start()
    await metadata.sync_stores(list(quotas))
    for store in stores.values():
        await store.start()
    clock = Clock()
    clock.advance(NOW)
    locks = KeyLocks()
    health = StoreHealth(list(stores), unhealthy_after=3, now=clock.seconds)
    # The reactor paces a copy between stores (ReaderBody schedules its reads).
    placement = Placement(metadata, stores, "pack", reactor, locks, health)
    objects = ObjectOperations(placement, 5 * 1024**3)
    return objects, CopyOperations(placement, reactor), MultipartOperations(placement, metadata, clock, 86400.0)


def s3_call(method: str, key: str, headers: dict[str, list[str]] | None = None, body: Any = None,
            query: dict[str, str] | None = None) -> S3Call:
    return S3Call(request_id="0123456789ABCDEF", method=method, bucket="bkt", key=key, query=query or {},
                  headers=headers or {}, auth=auth_result(), body=body)


async def get(objects: ObjectOperations, key: str) -> bytes:
    response = await objects.get_object(s3_call("GET", key))
    consumer = CollectingConsumer()
    # The reactor pulls the file through the failover reader.
    await response.body.stream_to(consumer)  # type: ignore[union-attr]
    return consumer.body


async def location_of(metadata: Any, key: str) -> str:
    record = await metadata.get_object("bkt", key)
    assert record is not None
    return str(record.location)


def files(root: Path) -> list[str]:
    return sorted(str(path.relative_to(root)) for path in root.rglob("*") if path.is_file())


@pytest_twisted.ensureDeferred
async def test_put_records_and_uses_the_location_its_store_gives(world) -> None:
    metadata, stores, tmp_path = world
    objects, _, _ = await started(world)
    await objects.put_object(s3_call("PUT", "k", body=FakeRequestBody(b"bytes")))
    assert await location_of(metadata, "k") == "bkt/v1/k"
    assert files(tmp_path / "one") == ["bkt.d/v1.d/k"]


@pytest_twisted.ensureDeferred
async def test_an_object_keeps_its_recorded_location_until_it_is_overwritten(world) -> None:
    metadata, stores, tmp_path = world
    objects, copies, _ = await started(world)
    await objects.put_object(s3_call("PUT", "k", body=FakeRequestBody(b"old bytes")))
    stores["one"].layout = "v2"

    assert await get(objects, "k") == b"old bytes"
    await copies.copy_object(s3_call("PUT", "k", {"x-amz-copy-source": ["bkt/k"],
                                                  "x-amz-metadata-directive": ["REPLACE"]}))
    assert await location_of(metadata, "k") == "bkt/v1/k"
    assert await get(objects, "k") == b"old bytes"

    await objects.put_object(s3_call("PUT", "k", body=FakeRequestBody(b"new bytes")))
    assert await location_of(metadata, "k") == "bkt/v2/k"
    assert await get(objects, "k") == b"new bytes"
    assert files(tmp_path / "one") == ["bkt.d/v2.d/k"]


@pytest.mark.parametrize("target_quota", [0, 1], ids=["same-store", "other-store"])
@pytest_twisted.ensureDeferred
async def test_a_copy_lands_where_the_target_store_says(world, target_quota: int) -> None:
    metadata, stores, tmp_path = world
    # A 1-byte quota on "one" sends the copy (5 bytes) to "two".
    objects, copies, _ = await started(world, (("one", 0), ("two", 0)))
    await objects.put_object(s3_call("PUT", "src", body=FakeRequestBody(b"bytes")))
    stores["one"].layout = stores["two"].layout = "v2"
    if target_quota:
        await metadata.sync_stores([("one", target_quota), ("two", 0)])

    await copies.copy_object(s3_call("PUT", "dst", {"x-amz-copy-source": ["bkt/src"]}))

    record = await metadata.get_object("bkt", "dst")
    assert record is not None
    assert (record.store, record.location) == ("two" if target_quota else "one", "bkt/v2/dst")
    assert await get(objects, "dst") == b"bytes"
    assert await location_of(metadata, "src") == "bkt/v1/src"


@pytest_twisted.ensureDeferred
async def test_a_multipart_upload_is_created_where_its_store_says(world) -> None:
    metadata, stores, tmp_path = world
    objects, _, multipart = await started(world)
    stores["one"].layout = "v3"
    response = await multipart.create_multipart_upload(s3_call("POST", "big", query={"uploads": ""}))
    upload_id = response.body.decode().split("<UploadId>")[1].split("</UploadId>")[0]  # type: ignore[union-attr]
    upload = await metadata.get_upload(upload_id)
    assert upload is not None
    assert (upload.store, upload.location) == ("one", "bkt/v3/big")
