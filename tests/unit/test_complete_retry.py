"""Tests for CompleteMultipartUpload retried after it succeeded (MultipartOperations over a
real SQLite metadata store and a real directory store)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable, Mapping

import attrs
import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred, gatherResults
from twisted.internet.task import Clock, deferLater

from s3orchestrator.errors import S3Error
from s3orchestrator.jobs.health import StoreHealth
from s3orchestrator.metadata.records import Instance
from s3orchestrator.metadata.store import MetadataStore
from s3orchestrator.placement.engine import Placement
from s3orchestrator.placement.locks import KeyLocks
from s3orchestrator.s3.call import S3Call, S3Response
from s3orchestrator.s3.multipart import MultipartOperations, part_claim
from s3orchestrator.stores.directory import DirectoryStore
from tests.unit.fakes import FakeRequestBody, advance_until, auth_result

NOW = 1_767_225_600.0
MiB = 1024 * 1024
PART_ONE, PART_TWO = b"a" * (5 * MiB), b"tail"


@attrs.define
class World:
    metadata: MetadataStore
    clock: Clock
    multipart: MultipartOperations


@pytest_twisted.async_fixture
async def world(tmp_path: Path, sqlite_store: Callable[..., MetadataStore]) -> World:
    clock = Clock()
    clock.advance(NOW)
    # One clock for the placement and the metadata: claims expire by it.
    metadata = sqlite_store("test:1", clock)
    await metadata.start()
    await metadata.sync_stores([("one", 0)])
    await metadata.register_instance(Instance(id="test:1", host="test", pid=1, started_ms=0, expires_ms=2**62))
    store = DirectoryStore("one", str(tmp_path / "one"), reactor)
    await store.start()
    locks = KeyLocks()
    health = StoreHealth(["one"], unhealthy_after=3, now=clock.seconds)
    placement = Placement(metadata, {"one": store}, "pack", clock, locks, health)
    multipart = MultipartOperations(placement, metadata, clock, expire_after=86400, completed_retention=600)
    return World(metadata, clock, multipart)


def call(method: str, query: Mapping[str, str], body: bytes | None = None, key: str = "obj") -> S3Call:
    return S3Call(
        request_id="0123456789ABCDEF", method=method, bucket="bkt", key=key, query=dict(query),
        headers={"host": ["s3.test"]}, auth=auth_result(), body=None if body is None else FakeRequestBody(body),
    )


def complete_document(parts: list[tuple[int, bytes]]) -> bytes:
    listed = "".join(
        f'<Part><PartNumber>{number}</PartNumber><ETag>"{hashlib.md5(data).hexdigest()}"</ETag></Part>'
        for number, data in parts
    )
    return f"<CompleteMultipartUpload>{listed}</CompleteMultipartUpload>".encode()


async def uploaded(world: World) -> str:
    """An upload of ``obj`` with its two parts stored; its id."""
    created = await world.multipart.create_multipart_upload(call("POST", {"uploads": ""}))
    assert isinstance(created.body, bytes)
    upload_id = created.body.split(b"<UploadId>")[1].split(b"</UploadId>")[0].decode()
    for number, data in ((1, PART_ONE), (2, PART_TWO)):
        await world.multipart.upload_part(call("PUT", {"uploadId": upload_id, "partNumber": str(number)}, data))
    return upload_id


async def complete(world: World, upload_id: str, parts: list[tuple[int, bytes]], key: str = "obj") -> S3Response:
    return await world.multipart.complete_multipart_upload(
        call("POST", {"uploadId": upload_id}, complete_document(parts), key=key)
    )


async def refused(world: World, upload_id: str, parts: list[tuple[int, bytes]], key: str = "obj") -> S3Error:
    with pytest.raises(S3Error) as raised:
        await complete(world, upload_id, parts, key)
    return raised.value


BOTH = [(1, PART_ONE), (2, PART_TWO)]


@pytest_twisted.ensureDeferred
async def test_a_retried_complete_is_answered_again_without_a_new_commit(world: World) -> None:
    upload_id = await uploaded(world)
    first = await complete(world, upload_id, BOTH)
    committed = await world.metadata.get_object("bkt", "obj")
    world.clock.advance(30)
    again = await complete(world, upload_id, BOTH)
    assert (again.status, again.body, again.headers) == (first.status, first.body, first.headers)
    assert await world.metadata.get_object("bkt", "obj") == committed  # same ETag and time: no re-commit


@pytest_twisted.ensureDeferred
async def test_a_retry_listing_other_parts_is_invalid_part(world: World) -> None:
    upload_id = await uploaded(world)
    await complete(world, upload_id, BOTH)
    left_out = await refused(world, upload_id, [(1, PART_ONE)])
    assert (left_out.code, left_out.extra["PartNumber"]) == ("InvalidPart", "2")
    other_etag = await refused(world, upload_id, [(1, PART_ONE), (2, b"other")])
    assert (other_etag.code, other_etag.extra["PartNumber"]) == ("InvalidPart", "2")
    unordered = await refused(world, upload_id, [(2, PART_TWO), (1, PART_ONE)])
    assert unordered.code == "InvalidPartOrder"


@pytest_twisted.ensureDeferred
async def test_a_retry_for_another_key_or_after_the_retention_is_no_such_upload(world: World) -> None:
    upload_id = await uploaded(world)
    await complete(world, upload_id, BOTH)
    assert (await refused(world, upload_id, BOTH, key="other")).code == "NoSuchUpload"
    world.clock.advance(601)
    assert (await refused(world, upload_id, BOTH)).code == "NoSuchUpload"


@pytest_twisted.ensureDeferred
async def test_a_complete_of_an_upload_never_made_is_no_such_upload(world: World) -> None:
    assert (await refused(world, "0123nosuchupload", BOTH)).code == "NoSuchUpload"


@pytest_twisted.ensureDeferred
async def test_an_aborted_upload_is_not_answered_as_completed(world: World) -> None:
    upload_id = await uploaded(world)
    await world.multipart.abort_multipart_upload(call("DELETE", {"uploadId": upload_id}))
    assert (await refused(world, upload_id, BOTH)).code == "NoSuchUpload"



@pytest_twisted.ensureDeferred
async def test_a_complete_that_waited_for_the_first_one_gets_its_answer(world: World) -> None:
    upload_id = await uploaded(world)
    # Both find the upload; the second waits for the upload's claim, then finds it completed.
    first = ensureDeferred(complete(world, upload_id, BOTH))
    second = ensureDeferred(complete(world, upload_id, BOTH))
    both = gatherResults([first, second])
    await advance_until(world.clock, both)
    answers = await both
    assert [answer.status for answer in answers] == [200, 200]
    assert answers[0].body == answers[1].body


@pytest_twisted.ensureDeferred
async def test_a_complete_waits_for_an_upload_of_a_listed_part_in_another_process(world: World) -> None:
    upload_id = await uploaded(world)
    # Another daemon is uploading part 2 again: it holds that part's claim.
    assert await world.metadata.claim_locations("one", [part_claim(upload_id, 2)], "theirs", "host-b:7", 2**62)
    completing = ensureDeferred(complete(world, upload_id, BOTH))
    for _ in range(5):
        world.clock.advance(1)
        await deferLater(reactor, 0, lambda: None)
    assert not completing.called and await world.metadata.get_object("bkt", "obj") is None
    await world.metadata.end_claims(["theirs"])
    await advance_until(world.clock, completing)
    assert (await completing).status == 200
    assert await world.metadata.get_object("bkt", "obj") is not None


@pytest_twisted.ensureDeferred
async def test_an_upload_of_a_part_number_another_process_uploads_waits_then_gets_slow_down(world: World) -> None:
    created = await world.multipart.create_multipart_upload(call("POST", {"uploads": ""}))
    assert isinstance(created.body, bytes)
    upload_id = created.body.split(b"<UploadId>")[1].split(b"</UploadId>")[0].decode()
    # Another live instance (another process sharing the database) uploads part 1.
    await world.metadata.register_instance(Instance(id="host-b:7", host="host-b", pid=7, started_ms=0,
                                                    expires_ms=2**62))
    assert await world.metadata.claim_locations("one", [part_claim(upload_id, 1)], "theirs", "host-b:7", 2**62)
    uploading = ensureDeferred(world.multipart.upload_part(
        call("PUT", {"uploadId": upload_id, "partNumber": "1"}, PART_TWO)))
    await advance_until(world.clock, uploading)
    with pytest.raises(S3Error) as raised:
        await uploading
    assert raised.value.code == "SlowDown"
    assert await world.metadata.list_parts(upload_id) == []
    await world.metadata.end_claims(["theirs"])
    await world.multipart.upload_part(call("PUT", {"uploadId": upload_id, "partNumber": "1"}, PART_TWO))
    assert [part.part_number for part in await world.metadata.list_parts(upload_id)] == [1]
