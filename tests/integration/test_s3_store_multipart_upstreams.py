"""S3Store multipart uploads against real S3 servers on loopback (SeaweedFS checks signatures, moto does not)."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
import pytest_twisted
from botocore.exceptions import ClientError
from twisted.internet import reactor

from s3orchestrator.stores.interface import ObjectMissing, StoredPart, StoreMisconfigured, StoreUnavailable
from s3orchestrator.stores.s3 import S3Store
from tests.integration.test_s3_store_upstreams import (  # noqa: F401 (fixtures: store, upstream, no_logged_errors)
    MIB,
    BytesBody,
    get,
    no_logged_errors,
    payload,
    put,
    store,
    upstream,
    upstream_bytes,
)
from tests.integration.upstreams import Upstream

pytestmark = pytest.mark.integration

KIB = 1024


async def upload_part(store: S3Store, location: str, upload_id: str, number: int, data: bytes) -> StoredPart:
    write = store.start_part_write(location, upload_id, number, BytesBody(data), len(data))
    await write.done
    await write.publish()
    assert write.store_etag == hashlib.md5(data).hexdigest()
    return StoredPart(number, len(data), write.store_etag)


async def complete(store: S3Store, location: str, upload_id: str, parts: list[StoredPart]) -> None:
    write = store.start_complete(location, upload_id, parts)
    await write.done
    await write.publish()


def open_uploads(store: S3Store, upstream: Upstream) -> list[str]:
    listed = upstream.boto.list_multipart_uploads(Bucket=store.config.bucket)
    return [upload["UploadId"] for upload in listed.get("Uploads", [])]


@pytest_twisted.ensureDeferred
async def test_upload_round_trip(store: S3Store, upstream: Upstream) -> None:
    first, second = payload(5 * MIB), payload(KIB)
    upload_id = await store.create_upload("app/big")
    parts = [
        await upload_part(store, "app/big", upload_id, 1, first),
        await upload_part(store, "app/big", upload_id, 2, second),
    ]
    with pytest.raises(ObjectMissing):  # nothing at the location before Complete
        await store.open_read("app/big", None)
    await complete(store, "app/big", upload_id, parts)
    assert await get(store, "app/big") == first + second
    assert upstream_bytes(store, upstream, "app/big") == first + second
    assert open_uploads(store, upstream) == []


@pytest.mark.parametrize("key", ["with space+plus", "unicodé/日本語", "tilde~star*quote'(x)!"])
@pytest_twisted.ensureDeferred
async def test_awkward_keys(store: S3Store, key: str) -> None:
    location = f"app/{key}"
    upload_id = await store.create_upload(location)
    part = await upload_part(store, location, upload_id, 1, b"only part")
    await complete(store, location, upload_id, [part])
    assert await get(store, location) == b"only part"


@pytest.mark.parametrize("payload_signing", ["unsigned", "streaming"])
@pytest.mark.parametrize("send_checksums", [False, True], ids=["plain", "crc32"])
@pytest_twisted.ensureDeferred
async def test_payload_modes_on_seaweedfs(seaweedfs: Upstream, payload_signing: str, send_checksums: bool) -> None:
    # SeaweedFS verifies the request and chunk signatures and the CRC32 trailer of every part.
    store = S3Store(
        seaweedfs.store_config(
            bucket=seaweedfs.new_bucket(), payload_signing=payload_signing, send_checksums=send_checksums,
        ),
        reactor, chunk_size=64 * KIB,
    )
    first, second = payload(5 * MIB), payload(KIB)
    upload_id = await store.create_upload("app/framed")
    parts = [
        await upload_part(store, "app/framed", upload_id, 1, first),
        await upload_part(store, "app/framed", upload_id, 2, second),
    ]
    await complete(store, "app/framed", upload_id, parts)
    assert await get(store, "app/framed") == first + second
    await store.stop()


@pytest_twisted.ensureDeferred
async def test_re_uploading_a_part_replaces_it(store: S3Store) -> None:
    old, new, tail = payload(5 * MIB), payload(5 * MIB), payload(KIB)
    upload_id = await store.create_upload("app/k")
    await upload_part(store, "app/k", upload_id, 1, old)
    parts = [
        await upload_part(store, "app/k", upload_id, 1, new),
        await upload_part(store, "app/k", upload_id, 2, tail),
    ]
    await complete(store, "app/k", upload_id, parts)
    assert await get(store, "app/k") == new + tail


@pytest_twisted.ensureDeferred
async def test_complete_with_a_wrong_etag_is_object_missing_and_keeps_the_upload(store: S3Store) -> None:
    first, second = payload(5 * MIB), payload(KIB)
    upload_id = await store.create_upload("app/k")
    parts = [
        await upload_part(store, "app/k", upload_id, 1, first),
        await upload_part(store, "app/k", upload_id, 2, second),
    ]
    wrong = [parts[0], StoredPart(2, KIB, hashlib.md5(b"other bytes").hexdigest())]
    with pytest.raises(ObjectMissing):
        await complete(store, "app/k", upload_id, wrong)
    with pytest.raises(ObjectMissing):
        await store.open_read("app/k", None)
    await complete(store, "app/k", upload_id, parts)
    assert await get(store, "app/k") == first + second


@pytest_twisted.ensureDeferred
async def test_complete_of_a_too_small_part_is_misconfigured(store: S3Store) -> None:
    # Every part but the last must have 5 MiB: the orchestration has to check it
    # before Complete, as the store cannot tell a client's fault from its own.
    upload_id = await store.create_upload("app/k")
    parts = [
        await upload_part(store, "app/k", upload_id, 1, payload(KIB)),
        await upload_part(store, "app/k", upload_id, 2, payload(KIB)),
    ]
    with pytest.raises(StoreMisconfigured, match="EntityTooSmall"):
        await complete(store, "app/k", upload_id, parts)


@pytest_twisted.ensureDeferred
async def test_part_write_after_abort_upload_fails(store: S3Store, upstream: Upstream) -> None:
    upload_id = await store.create_upload("app/k")
    await upload_part(store, "app/k", upload_id, 1, payload(KIB))
    assert open_uploads(store, upstream) == [upload_id]
    await store.abort_upload("app/k", upload_id)
    assert open_uploads(store, upstream) == []
    write = store.start_part_write("app/k", upload_id, 2, BytesBody(b"late"), 4)
    # moto (5.2) answers 500 (a KeyError inside it) where S3 and SeaweedFS answer 404 NoSuchUpload.
    with pytest.raises(StoreUnavailable if upstream.kind == "moto" else ObjectMissing):
        await write.done
    await store.abort_upload("app/k", upload_id)  # gone already: fine


@pytest_twisted.ensureDeferred
async def test_part_abort_after_done_leaves_the_object_and_the_upload(store: S3Store, upstream: Upstream) -> None:
    await put(store, "app/k", b"the previous object")
    upload_id = await store.create_upload("app/k")
    data = payload(KIB)
    write = store.start_part_write("app/k", upload_id, 1, BytesBody(data), len(data))
    await write.done
    write.abort()
    assert await get(store, "app/k") == b"the previous object"
    assert open_uploads(store, upstream) == [upload_id]
    await complete(store, "app/k", upload_id, [StoredPart(1, len(data), write.store_etag)])
    assert await get(store, "app/k") == data


@pytest_twisted.ensureDeferred
async def test_complete_abort_after_done_deletes_the_object(store: S3Store, upstream: Upstream) -> None:
    upload_id = await store.create_upload("app/k")
    part = await upload_part(store, "app/k", upload_id, 1, b"bytes")
    write = store.start_complete("app/k", upload_id, [part])
    await write.done
    write.abort()
    for _ in range(100):  # the DELETE is fire-and-forget
        try:
            upstream.boto.head_object(Bucket=store.config.bucket, Key="app/k")
        except ClientError:
            break
        await _sleep(0.05)
    else:
        raise AssertionError("the completed object was not deleted")


def _sleep(seconds: float) -> Any:
    from twisted.internet.task import deferLater

    return deferLater(reactor, seconds, lambda: None)
