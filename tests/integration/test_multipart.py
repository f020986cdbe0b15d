"""Multipart uploads through the real daemon, driven by boto3: round trips over every
kind of store, the low-level calls, S3's validation errors, quota and expiry."""

from __future__ import annotations

import datetime
import hashlib
import os
import re
import socket
import threading
import time
from pathlib import Path
from typing import Any, Callable
from urllib.parse import unquote, unquote_plus

import attrs
import pytest
from boto3.s3.transfer import TransferConfig
from botocore.exceptions import ClientError

from tests.integration.conftest import make_client, metadata_rows, store_files
from tests.integration.daemon import BUCKET, OTHER_ACCESS_KEY, OTHER_BUCKET, OTHER_SECRET_KEY, Daemon, StoreSpec
from tests.integration.rawhttp import open_upload, signed_headers
from tests.integration.test_payload_modes import BOTOCORE_SENDS_TRAILERS
from tests.integration.test_upstream_s3orchestrator import upstream_spec
from tests.integration.test_upstream_stores import spec

MiB = 1024 * 1024
KiB = 1024


# -- helpers -----------------------------------------------------------------------------------


def s3_error(raised: pytest.ExceptionInfo[ClientError]) -> tuple[str, int]:
    """(S3 error code, HTTP status) of a ClientError."""
    response = raised.value.response
    return response["Error"]["Code"], response["ResponseMetadata"]["HTTPStatusCode"]


def md5_hex(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def multipart_etag(parts: list[bytes]) -> str:
    """S3's quoted ETag of an object made of ``parts``: MD5 of the parts' MD5s, ``-N``."""
    digest = hashlib.md5(b"".join(hashlib.md5(part).digest() for part in parts)).hexdigest()
    return f'"{digest}-{len(parts)}"'


def chunks(data: bytes, size: int) -> list[bytes]:
    return [data[offset:offset + size] for offset in range(0, len(data), size)]


def store_usage(daemon: Daemon) -> dict[str, tuple[int, int]]:
    """{store: (used_bytes, object_count)} from the metadata."""
    return {name: (used, count) for name, used, count
            in metadata_rows(daemon, "SELECT name, used_bytes, object_count FROM stores")}


def reserved_bytes(daemon: Daemon) -> int:
    """Bytes reserved on every store: reservations in flight plus stored parts."""
    # One statement: one snapshot (a part's commit moves its bytes from reservations to parts).
    ((reserved,),) = metadata_rows(daemon, "SELECT (SELECT COALESCE(SUM(size), 0) FROM reservations)"
                                           " + (SELECT COALESCE(SUM(size), 0) FROM parts)")
    return reserved


def multipart_rows(daemon: Daemon) -> tuple[list[tuple], list[tuple]]:
    """(uploads rows, parts rows)."""
    return (metadata_rows(daemon, "SELECT upload_id, key FROM uploads"),
            metadata_rows(daemon, "SELECT upload_id, part_number, size FROM parts"))


def upload_directories(daemon: Daemon, store: str) -> list[Path]:
    """The upload directories of a directory store (``.uploads/<id>``)."""
    uploads = daemon.directory / "stores" / store / ".uploads"
    return sorted(uploads.iterdir()) if uploads.exists() else []


def complete(s3: Any, key: str, upload_id: str, etags: dict[int, str]) -> dict:
    return s3.complete_multipart_upload(
        Bucket=BUCKET, Key=key, UploadId=upload_id,
        MultipartUpload={"Parts": [{"PartNumber": n, "ETag": etag} for n, etag in etags.items()]},
    )


def upload_parts(s3: Any, key: str, upload_id: str, parts: list[bytes]) -> dict[int, str]:
    """Upload ``parts`` as parts 1..N; {number: ETag}."""
    return {number: s3.upload_part(Bucket=BUCKET, Key=key, UploadId=upload_id, PartNumber=number,
                                   Body=body)["ETag"]
            for number, body in enumerate(parts, start=1)}


def read_response(sock: socket.socket) -> bytes:
    """Read one HTTP response (headers and a Content-Length body) from ``sock``, then close it."""
    sock.settimeout(10)
    response = b""
    try:
        while True:
            head, separator, body = response.partition(b"\r\n\r\n")
            if separator:
                length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
                if length is None or len(body) >= int(length.group(1)):
                    return response
            chunk = sock.recv(65536)
            if not chunk:
                return response
            response += chunk
    finally:
        sock.close()


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)


# -- the daemon over each kind of store --------------------------------------------------------


@attrs.define
class Placement:
    """A daemon whose only store is of one kind, and a look at that store."""

    daemon: Daemon
    kind: str
    open_uploads: Callable[[], list[str]]  # the store's own uploads in progress
    stored_object: Callable[[str], dict] | None = None  # HEAD of a location in an upstream store


@pytest.fixture
def placement_factory(request, start_daemon) -> Callable[..., Placement]:
    """Start a daemon whose only store is ``kind`` (directory, seaweedfs, moto, s3orchestrator)."""

    def start(kind: str, quota: int = 0, multipart: tuple[float, float] | None = None) -> Placement:
        if kind == "directory":
            daemon = start_daemon(stores=[StoreSpec("store", quota)], multipart=multipart)
            return Placement(daemon, kind, lambda: [p.name for p in upload_directories(daemon, "store")])
        if kind == "s3orchestrator":
            upstream = start_daemon(stores=[StoreSpec("disk", 0)])
            daemon = start_daemon(stores=[upstream_spec(upstream, "store", quota)], multipart=multipart)
            client = make_client(upstream)
            bucket = BUCKET
        else:
            server = request.getfixturevalue(kind)
            bucket = server.new_bucket()
            daemon = start_daemon(stores=[spec(server, "store", quota, bucket)], multipart=multipart)
            client = server.client()

        def open_uploads() -> list[str]:
            return [u["UploadId"] for u in client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])]

        def stored_object(location: str) -> dict:
            return client.head_object(Bucket=bucket, Key=location)

        return Placement(daemon, kind, open_uploads, stored_object)

    return start


STORE_KINDS = ["directory", "seaweedfs", "moto", "s3orchestrator"]


# -- round trips -------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", STORE_KINDS)
@pytest.mark.parametrize("size, chunk", [(20 * MiB, 8 * MiB), (100 * MiB, 16 * MiB)], ids=["20MiB", "100MiB"])
def test_transfer_manager_round_trip(placement_factory, tmp_path, kind, size, chunk):
    placement = placement_factory(kind)
    daemon = placement.daemon
    s3 = make_client(daemon)
    data = os.urandom(size)
    source = tmp_path / "source.bin"
    source.write_bytes(data)
    config = TransferConfig(multipart_threshold=chunk, multipart_chunksize=chunk, max_concurrency=4)
    key = "big/object.bin"
    s3.upload_file(str(source), BUCKET, key, Config=config,
                   ExtraArgs={"ContentType": "application/x-test", "Metadata": {"owner": "tests", "run": "mp"}})

    parts = chunks(data, chunk)
    etag = multipart_etag(parts)
    head = s3.head_object(Bucket=BUCKET, Key=key)
    assert head["ETag"] == etag and etag.endswith(f'-{len(parts)}"')
    assert head["ContentLength"] == size
    assert head["ContentType"] == "application/x-test"
    assert head["Metadata"] == {"owner": "tests", "run": "mp"}
    (listed,) = s3.list_objects_v2(Bucket=BUCKET, Prefix="big/")["Contents"]
    assert (listed["Key"], listed["Size"], listed["ETag"]) == (key, size, etag)

    target = tmp_path / "target.bin"
    s3.download_file(BUCKET, key, str(target), Config=config)
    assert hashlib.sha256(target.read_bytes()).hexdigest() == hashlib.sha256(data).hexdigest()

    # Nothing of the upload is left: no rows, no reservation, the store's own upload completed.
    assert multipart_rows(daemon) == ([], [])
    assert reserved_bytes(daemon) == 0
    assert store_usage(daemon)["store"] == (size, 1)
    assert placement.open_uploads() == []
    if placement.stored_object is not None:
        # Completed by the upstream itself (its own multipart object), under <bucket>/<key>.
        upstream = placement.stored_object(f"{BUCKET}/{key}")
        assert upstream["ContentLength"] == size
        assert upstream["ETag"].endswith(f'-{len(parts)}"')


# -- the low-level calls -----------------------------------------------------------------------


def test_create_upload_parts_and_complete(daemon):
    s3 = make_client(daemon)
    before = store_usage(daemon)
    created = s3.create_multipart_upload(Bucket=BUCKET, Key="docs/report.pdf", ContentType="application/pdf",
                                         Metadata={"team": "storage"}, CacheControl="max-age=60")
    assert (created["Bucket"], created["Key"]) == (BUCKET, "docs/report.pdf")
    upload_id = created["UploadId"]
    assert metadata_rows(daemon, "SELECT key, store FROM uploads") == [("docs/report.pdf", "local-a")]
    parts = [os.urandom(5 * MiB), os.urandom(5 * MiB), b"tail"]
    etags = upload_parts(s3, "docs/report.pdf", upload_id, parts)
    assert etags == {n: f'"{md5_hex(body)}"' for n, body in enumerate(parts, start=1)}
    assert reserved_bytes(daemon) == 10 * MiB + 4  # stored parts stay reserved until Complete
    assert "docs/report.pdf" not in [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])]

    result = complete(s3, "docs/report.pdf", upload_id, etags)
    assert result["ETag"] == multipart_etag(parts)
    assert (result["Bucket"], result["Key"]) == (BUCKET, "docs/report.pdf")
    got = s3.get_object(Bucket=BUCKET, Key="docs/report.pdf")
    assert got["Body"].read() == b"".join(parts)
    assert got["ETag"] == multipart_etag(parts)
    assert got["ContentType"] == "application/pdf"
    assert got["Metadata"] == {"team": "storage"}
    assert got["CacheControl"] == "max-age=60"
    assert multipart_rows(daemon) == ([], [])
    assert reserved_bytes(daemon) == 0
    assert store_usage(daemon)["local-a"] == (before["local-a"][0] + 10 * MiB + 4, before["local-a"][1] + 1)
    assert upload_directories(daemon, "local-a") == []
    # The upload is gone once completed.
    with pytest.raises(ClientError) as raised:
        s3.list_parts(Bucket=BUCKET, Key="docs/report.pdf", UploadId=upload_id)
    assert s3_error(raised) == ("NoSuchUpload", 404)


def test_list_parts_paginates_with_max_parts_and_part_number_marker(s3):
    upload_id = s3.create_multipart_upload(Bucket=BUCKET, Key="k")["UploadId"]
    bodies = [os.urandom(KiB + n) for n in range(5)]
    upload_parts(s3, "k", upload_id, bodies)
    seen = []
    marker = 0
    pages = []
    while True:
        page = s3.list_parts(Bucket=BUCKET, Key="k", UploadId=upload_id, MaxParts=2, PartNumberMarker=marker)
        assert page["MaxParts"] == 2 and page["UploadId"] == upload_id and page["Key"] == "k"
        numbers = [part["PartNumber"] for part in page.get("Parts", [])]
        pages.append((numbers, page["IsTruncated"]))
        seen += [(part["PartNumber"], part["Size"], part["ETag"]) for part in page.get("Parts", [])]
        if not page["IsTruncated"]:
            break
        assert page["NextPartNumberMarker"] == numbers[-1]
        marker = page["NextPartNumberMarker"]
    assert pages == [([1, 2], True), ([3, 4], True), ([5], False)]
    assert seen == [(n, len(body), f'"{md5_hex(body)}"') for n, body in enumerate(bodies, start=1)]
    # A marker past the last part: an empty, final page.
    last = s3.list_parts(Bucket=BUCKET, Key="k", UploadId=upload_id, PartNumberMarker=5)
    assert last.get("Parts", []) == [] and not last["IsTruncated"]


def test_list_multipart_uploads_paginates_filters_and_groups(s3):
    keys = ["a/1", "a/2", "a/2", "b/x/y", "c", "d"]
    uploads = sorted((key, s3.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]) for key in keys)

    listed, pages = [], 0
    request: dict[str, str] = {}
    while True:
        page = s3.list_multipart_uploads(Bucket=BUCKET, MaxUploads=2, **request)
        pages += 1
        assert page["MaxUploads"] == 2
        batch = [(u["Key"], u["UploadId"]) for u in page.get("Uploads", [])]
        assert len(batch) <= 2
        listed += batch
        if not page["IsTruncated"]:
            break
        assert (page["NextKeyMarker"], page["NextUploadIdMarker"]) == batch[-1]
        request = {"KeyMarker": page["NextKeyMarker"], "UploadIdMarker": page["NextUploadIdMarker"]}
    assert listed == uploads
    assert pages == 3
    now = datetime.datetime.now(datetime.UTC)
    for upload in s3.list_multipart_uploads(Bucket=BUCKET)["Uploads"]:
        assert abs((now - upload["Initiated"]).total_seconds()) < 60

    # A key marker alone skips every upload of that key.
    after_a2 = s3.list_multipart_uploads(Bucket=BUCKET, KeyMarker="a/2")
    assert [(u["Key"], u["UploadId"]) for u in after_a2["Uploads"]] == uploads[3:]
    # Key and upload id markers: the later uploads of the same key, then the rest.
    first_a2 = uploads[1]
    after_first_a2 = s3.list_multipart_uploads(Bucket=BUCKET, KeyMarker=first_a2[0], UploadIdMarker=first_a2[1])
    assert [(u["Key"], u["UploadId"]) for u in after_first_a2["Uploads"]] == uploads[2:]

    prefixed = s3.list_multipart_uploads(Bucket=BUCKET, Prefix="a/")
    assert [(u["Key"], u["UploadId"]) for u in prefixed["Uploads"]] == uploads[:3]
    assert prefixed["Prefix"] == "a/"

    grouped = s3.list_multipart_uploads(Bucket=BUCKET, Delimiter="/")
    assert [p["Prefix"] for p in grouped["CommonPrefixes"]] == ["a/", "b/"]
    assert [u["Key"] for u in grouped["Uploads"]] == ["c", "d"]
    nested = s3.list_multipart_uploads(Bucket=BUCKET, Delimiter="/", Prefix="b/")
    assert [p["Prefix"] for p in nested["CommonPrefixes"]] == ["b/x/"]
    assert nested.get("Uploads", []) == []


def test_abort_forgets_the_upload_its_parts_and_their_bytes(daemon):
    s3 = make_client(daemon)
    s3.put_object(Bucket=BUCKET, Key="existing", Body=b"x" * 1000)
    before = store_usage(daemon)
    files_before = store_files(daemon, "local-a")
    upload_id = s3.create_multipart_upload(Bucket=BUCKET, Key="doomed")["UploadId"]
    etags = upload_parts(s3, "doomed", upload_id, [os.urandom(5 * MiB), os.urandom(MiB)])
    assert len(metadata_rows(daemon, "SELECT * FROM parts")) == 2
    assert reserved_bytes(daemon) == 6 * MiB
    assert len(store_files(daemon, "local-a")) == len(files_before) + 2

    s3.abort_multipart_upload(Bucket=BUCKET, Key="doomed", UploadId=upload_id)

    for call in (
        lambda: s3.upload_part(Bucket=BUCKET, Key="doomed", UploadId=upload_id, PartNumber=3, Body=b"late"),
        lambda: complete(s3, "doomed", upload_id, etags),
        lambda: s3.list_parts(Bucket=BUCKET, Key="doomed", UploadId=upload_id),
        lambda: s3.abort_multipart_upload(Bucket=BUCKET, Key="doomed", UploadId=upload_id),
    ):
        with pytest.raises(ClientError) as raised:
            call()
        assert s3_error(raised) == ("NoSuchUpload", 404)
    assert s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []
    assert multipart_rows(daemon) == ([], [])
    assert metadata_rows(daemon, "SELECT COUNT(*) FROM reservations") == [(0,)]
    assert reserved_bytes(daemon) == 0
    assert store_usage(daemon) == before
    assert store_files(daemon, "local-a") == files_before
    assert upload_directories(daemon, "local-a") == []
    with pytest.raises(ClientError) as raised:
        s3.head_object(Bucket=BUCKET, Key="doomed")
    assert s3_error(raised)[1] == 404


# -- validation --------------------------------------------------------------------------------


def test_unknown_upload_id_is_no_such_upload(s3):
    bogus = "0" * 44
    for call in (
        lambda: s3.upload_part(Bucket=BUCKET, Key="k", UploadId=bogus, PartNumber=1, Body=b"x"),
        lambda: s3.list_parts(Bucket=BUCKET, Key="k", UploadId=bogus),
        lambda: complete(s3, "k", bogus, {1: '"' + "0" * 32 + '"'}),
        lambda: s3.abort_multipart_upload(Bucket=BUCKET, Key="k", UploadId=bogus),
    ):
        with pytest.raises(ClientError) as raised:
            call()
        assert s3_error(raised) == ("NoSuchUpload", 404)


def test_upload_id_of_another_key_is_no_such_upload(daemon):
    s3 = make_client(daemon)
    upload_id = s3.create_multipart_upload(Bucket=BUCKET, Key="mine")["UploadId"]
    etags = upload_parts(s3, "mine", upload_id, [b"part one"])
    for call in (
        lambda: s3.upload_part(Bucket=BUCKET, Key="other", UploadId=upload_id, PartNumber=2, Body=b"x"),
        lambda: s3.list_parts(Bucket=BUCKET, Key="other", UploadId=upload_id),
        lambda: complete(s3, "other", upload_id, etags),
        lambda: s3.abort_multipart_upload(Bucket=BUCKET, Key="other", UploadId=upload_id),
    ):
        with pytest.raises(ClientError) as raised:
            call()
        assert s3_error(raised) == ("NoSuchUpload", 404)
    # The upload is untouched and still completes under its own key.
    assert [p["PartNumber"] for p in s3.list_parts(Bucket=BUCKET, Key="mine", UploadId=upload_id)["Parts"]] == [1]
    complete(s3, "mine", upload_id, etags)
    assert s3.get_object(Bucket=BUCKET, Key="mine")["Body"].read() == b"part one"
    with pytest.raises(ClientError):
        s3.head_object(Bucket=BUCKET, Key="other")


@pytest.mark.parametrize("number", [0, 10001])
def test_part_number_out_of_range_is_invalid_argument(daemon, number):
    s3 = make_client(daemon)
    upload_id = s3.create_multipart_upload(Bucket=BUCKET, Key="k")["UploadId"]
    with pytest.raises(ClientError) as raised:
        s3.upload_part(Bucket=BUCKET, Key="k", UploadId=upload_id, PartNumber=number, Body=b"x")
    assert s3_error(raised) == ("InvalidArgument", 400)
    assert metadata_rows(daemon, "SELECT COUNT(*) FROM parts") == [(0,)]
    assert reserved_bytes(daemon) == 0


def test_complete_rejects_bad_part_lists_and_the_upload_stays_completable(daemon):
    s3 = make_client(daemon)
    key = "strict"
    upload_id = s3.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]
    big1, small2, small3 = os.urandom(5 * MiB), os.urandom(MiB), b"last part"
    etags = upload_parts(s3, key, upload_id, [big1, small2, small3])

    def attempt(parts: list[tuple[int, str]]) -> tuple[str, int]:
        with pytest.raises(ClientError) as raised:
            s3.complete_multipart_upload(Bucket=BUCKET, Key=key, UploadId=upload_id, MultipartUpload={
                "Parts": [{"PartNumber": n, "ETag": etag} for n, etag in parts]})
        return s3_error(raised)

    # Part 2 (1 MiB) is not the last one listed: too small.
    assert attempt([(1, etags[1]), (2, etags[2]), (3, etags[3])]) == ("EntityTooSmall", 400)
    assert attempt([(1, etags[1]), (3, '"' + "0" * 32 + '"')]) == ("InvalidPart", 400)  # wrong ETag
    assert attempt([(1, etags[1]), (4, etags[3])]) == ("InvalidPart", 400)  # no such part
    assert attempt([(3, etags[3]), (1, etags[1])]) == ("InvalidPartOrder", 400)
    assert attempt([(1, etags[1]), (1, etags[1])]) == ("InvalidPartOrder", 400)
    # Nothing changed: same parts, no object.
    assert [p["PartNumber"] for p in s3.list_parts(Bucket=BUCKET, Key=key, UploadId=upload_id)["Parts"]] == [1, 2, 3]
    with pytest.raises(ClientError):
        s3.head_object(Bucket=BUCKET, Key=key)

    # Leaving part 2 out is a valid list (gaps are allowed): the object is parts 1 and 3.
    result = s3.complete_multipart_upload(Bucket=BUCKET, Key=key, UploadId=upload_id, MultipartUpload={
        "Parts": [{"PartNumber": 1, "ETag": etags[1]}, {"PartNumber": 3, "ETag": etags[3]}]})
    assert result["ETag"] == multipart_etag([big1, small3])
    assert s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == big1 + small3
    # The part left out is dropped with the upload; usage counts only the object.
    assert multipart_rows(daemon) == ([], [])
    assert reserved_bytes(daemon) == 0
    assert store_usage(daemon)["local-a"] == (len(big1) + len(small3), 1)
    assert upload_directories(daemon, "local-a") == []


def test_single_put_over_max_object_size_is_entity_too_large_but_multipart_is_not(start_daemon):
    daemon = start_daemon(max_object_size=6 * MiB)
    s3 = make_client(daemon)
    with pytest.raises(ClientError) as raised:
        s3.put_object(Bucket=BUCKET, Key="too-big", Body=b"x" * (6 * MiB + 1))
    assert s3_error(raised) == ("EntityTooLarge", 400)
    assert metadata_rows(daemon, "SELECT COUNT(*) FROM objects") == [(0,)]
    assert reserved_bytes(daemon) == 0
    # The guide: "For larger objects, use multipart upload".
    parts = [os.urandom(5 * MiB), os.urandom(5 * MiB)]
    upload_id = s3.create_multipart_upload(Bucket=BUCKET, Key="too-big")["UploadId"]
    complete(s3, "too-big", upload_id, upload_parts(s3, "too-big", upload_id, parts))
    assert s3.get_object(Bucket=BUCKET, Key="too-big")["Body"].read() == b"".join(parts)


# -- parts replaced, copied, read back ---------------------------------------------------------


def test_uploading_a_part_number_again_replaces_it(daemon):
    s3 = make_client(daemon)
    upload_id = s3.create_multipart_upload(Bucket=BUCKET, Key="again")["UploadId"]
    first, second, tail = os.urandom(5 * MiB), os.urandom(5 * MiB + 7), b"tail"
    upload_parts(s3, "again", upload_id, [first, tail])
    replaced = s3.upload_part(Bucket=BUCKET, Key="again", UploadId=upload_id, PartNumber=1, Body=second)["ETag"]
    assert replaced == f'"{md5_hex(second)}"'
    assert metadata_rows(daemon, "SELECT part_number, size, etag FROM parts ORDER BY part_number") == [
        (1, len(second), md5_hex(second)), (2, len(tail), md5_hex(tail))]
    assert reserved_bytes(daemon) == len(second) + len(tail)  # the first part 1 no longer counts
    (listed1, _) = s3.list_parts(Bucket=BUCKET, Key="again", UploadId=upload_id)["Parts"]
    assert (listed1["Size"], listed1["ETag"]) == (len(second), replaced)

    # The old ETag no longer names part 1.
    with pytest.raises(ClientError) as raised:
        complete(s3, "again", upload_id, {1: f'"{md5_hex(first)}"', 2: f'"{md5_hex(tail)}"'})
    assert s3_error(raised) == ("InvalidPart", 400)
    complete(s3, "again", upload_id, {1: replaced, 2: f'"{md5_hex(tail)}"'})
    assert s3.get_object(Bucket=BUCKET, Key="again")["Body"].read() == second + tail
    assert reserved_bytes(daemon) == 0
    assert store_usage(daemon)["local-a"] == (len(second) + len(tail), 1)
    assert len(store_files(daemon, "local-a")) == 1


def test_upload_part_copy_with_source_ranges(daemon):
    s3 = make_client(daemon)
    source = os.urandom(12 * MiB)
    s3.put_object(Bucket=BUCKET, Key="source", Body=source)
    upload_id = s3.create_multipart_upload(Bucket=BUCKET, Key="assembled")["UploadId"]
    first = s3.upload_part_copy(Bucket=BUCKET, Key="assembled", UploadId=upload_id, PartNumber=1,
                                CopySource={"Bucket": BUCKET, "Key": "source"},
                                CopySourceRange=f"bytes={7 * MiB}-{12 * MiB - 1}")
    assert first["CopyPartResult"]["ETag"] == f'"{md5_hex(source[7 * MiB:])}"'
    second = s3.upload_part_copy(Bucket=BUCKET, Key="assembled", UploadId=upload_id, PartNumber=2,
                                 CopySource={"Bucket": BUCKET, "Key": "source"},
                                 CopySourceRange="bytes=0-99")
    assert second["CopyPartResult"]["ETag"] == f'"{md5_hex(source[:100])}"'
    uploaded = s3.upload_part(Bucket=BUCKET, Key="assembled", UploadId=upload_id, PartNumber=3, Body=b"!")["ETag"]
    # Past the source's end: InvalidRange.
    with pytest.raises(ClientError) as raised:
        s3.upload_part_copy(Bucket=BUCKET, Key="assembled", UploadId=upload_id, PartNumber=4,
                            CopySource={"Bucket": BUCKET, "Key": "source"},
                            CopySourceRange=f"bytes=0-{12 * MiB}")
    assert s3_error(raised)[0] == "InvalidRange"
    for source_args, expected in (
        (dict(CopySource=f"{BUCKET}/source", CopySourceIfMatch='"' + "0" * 32 + '"'), ("PreconditionFailed", 412)),
        (dict(CopySource=f"{BUCKET}/missing"), ("NoSuchKey", 404)),
        (dict(CopySource=f"{OTHER_BUCKET}/source"), ("AccessDenied", 403)),
    ):
        with pytest.raises(ClientError) as raised:
            s3.upload_part_copy(Bucket=BUCKET, Key="assembled", UploadId=upload_id, PartNumber=4, **source_args)
        assert s3_error(raised) == expected
    assert [p["PartNumber"] for p in s3.list_parts(Bucket=BUCKET, Key="assembled", UploadId=upload_id)["Parts"]] == [
        1, 2, 3]
    # Part 2 (100 bytes) is not last: leave it out of this object, as S3 would refuse it.
    result = complete(s3, "assembled", upload_id, {
        1: first["CopyPartResult"]["ETag"], 3: uploaded})
    expected = source[7 * MiB:] + b"!"
    assert result["ETag"] == multipart_etag([source[7 * MiB:], b"!"])
    assert s3.get_object(Bucket=BUCKET, Key="assembled")["Body"].read() == expected
    assert s3.get_object(Bucket=BUCKET, Key="source")["Body"].read() == source
    assert reserved_bytes(daemon) == 0
    assert store_usage(daemon)["local-a"] == (len(source) + len(expected), 2)


def test_get_and_head_part_number_serve_that_part(s3):
    parts = [os.urandom(5 * MiB), os.urandom(5 * MiB + 1), os.urandom(1000)]
    upload_id = s3.create_multipart_upload(Bucket=BUCKET, Key="parts")["UploadId"]
    complete(s3, "parts", upload_id, upload_parts(s3, "parts", upload_id, parts))
    total = sum(map(len, parts))
    offset = 0
    for number, body in enumerate(parts, start=1):
        got = s3.get_object(Bucket=BUCKET, Key="parts", PartNumber=number)
        assert got["ResponseMetadata"]["HTTPStatusCode"] == 206
        assert got["ContentRange"] == f"bytes {offset}-{offset + len(body) - 1}/{total}"
        assert got["PartsCount"] == 3
        assert got["ContentLength"] == len(body)
        assert got["ETag"] == multipart_etag(parts)
        assert got["Body"].read() == body
        head = s3.head_object(Bucket=BUCKET, Key="parts", PartNumber=number)
        assert head["ResponseMetadata"]["HTTPStatusCode"] == 206
        assert (head["ContentLength"], head["PartsCount"]) == (len(body), 3)
        assert head["ContentRange"] == got["ContentRange"]
        offset += len(body)
    with pytest.raises(ClientError) as raised:
        s3.get_object(Bucket=BUCKET, Key="parts", PartNumber=4)
    assert s3_error(raised) == ("InvalidPart", 400)
    with pytest.raises(ClientError) as raised:
        s3.get_object(Bucket=BUCKET, Key="parts", PartNumber=0)
    assert s3_error(raised) == ("InvalidArgument", 400)
    with pytest.raises(ClientError) as raised:
        s3.get_object(Bucket=BUCKET, Key="parts", PartNumber=1, Range="bytes=0-9")
    assert s3_error(raised) == ("InvalidRequest", 400)


def test_copies_of_a_multipart_object_keep_its_parts(s3):
    parts = [os.urandom(5 * MiB), os.urandom(5 * MiB), b"tail"]
    upload_id = s3.create_multipart_upload(Bucket=BUCKET, Key="original")["UploadId"]
    complete(s3, "original", upload_id, upload_parts(s3, "original", upload_id, parts))
    s3.copy_object(Bucket=BUCKET, Key="copy", CopySource=f"{BUCKET}/original")
    # A metadata-only change: no byte moves, the object is still the same three parts.
    s3.copy_object(Bucket=BUCKET, Key="original", CopySource=f"{BUCKET}/original",
                   MetadataDirective="REPLACE", Metadata={"reviewed": "yes"})
    for key in ("copy", "original"):
        head = s3.head_object(Bucket=BUCKET, Key=key)
        assert head["ETag"] == multipart_etag(parts)
        # The ETag says three parts; ?partNumber must agree.
        got = s3.get_object(Bucket=BUCKET, Key=key, PartNumber=2)
        assert (got["PartsCount"], got["ContentLength"]) == (3, len(parts[1]))
        assert got["Body"].read() == parts[1]


# -- overwrite rule ----------------------------------------------------------------------------


def test_existing_object_stays_readable_during_an_upload_and_is_replaced_at_complete(daemon):
    s3 = make_client(daemon)
    old = os.urandom(3 * MiB)
    s3.put_object(Bucket=BUCKET, Key="report", Body=old)
    upload_id = s3.create_multipart_upload(Bucket=BUCKET, Key="report")["UploadId"]
    parts = [os.urandom(5 * MiB), os.urandom(2 * MiB)]
    etags = upload_parts(s3, "report", upload_id, parts)
    got = s3.get_object(Bucket=BUCKET, Key="report")
    assert got["Body"].read() == old
    assert got["ETag"] == f'"{md5_hex(old)}"'
    assert store_usage(daemon)["local-a"] == (len(old), 1)

    complete(s3, "report", upload_id, etags)
    got = s3.get_object(Bucket=BUCKET, Key="report")
    assert got["Body"].read() == b"".join(parts)
    assert got["ETag"] == multipart_etag(parts)
    # The old bytes are released: usage and files are the new object's only.
    assert store_usage(daemon)["local-a"] == (7 * MiB, 1)
    assert reserved_bytes(daemon) == 0
    (only_file,) = store_files(daemon, "local-a")
    assert only_file.read_bytes() == b"".join(parts)


# -- quota -------------------------------------------------------------------------------------


def test_part_that_does_not_fit_is_507_and_the_upload_stays_usable(start_daemon):
    daemon = start_daemon(stores=[StoreSpec("small", 12 * MiB)])
    s3 = make_client(daemon)
    upload_id = s3.create_multipart_upload(Bucket=BUCKET, Key="big")["UploadId"]
    parts = [os.urandom(5 * MiB), os.urandom(5 * MiB)]
    etags = upload_parts(s3, "big", upload_id, parts)
    with pytest.raises(ClientError) as raised:
        s3.upload_part(Bucket=BUCKET, Key="big", UploadId=upload_id, PartNumber=3, Body=os.urandom(5 * MiB))
    assert s3_error(raised) == ("InsufficientStorage", 507)
    assert reserved_bytes(daemon) == 10 * MiB
    assert [p["PartNumber"] for p in s3.list_parts(Bucket=BUCKET, Key="big", UploadId=upload_id)["Parts"]] == [1, 2]
    # A part that fits still goes in.
    small = os.urandom(MiB)
    etags[3] = s3.upload_part(Bucket=BUCKET, Key="big", UploadId=upload_id, PartNumber=3, Body=small)["ETag"]
    complete(s3, "big", upload_id, etags)
    assert s3.get_object(Bucket=BUCKET, Key="big")["Body"].read() == b"".join(parts) + small
    assert store_usage(daemon)["small"] == (11 * MiB, 1)
    assert reserved_bytes(daemon) == 0


def test_create_on_a_full_store_is_507(start_daemon):
    daemon = start_daemon(stores=[StoreSpec("small", 12 * MiB)])
    s3 = make_client(daemon)
    s3.put_object(Bucket=BUCKET, Key="filler", Body=b"x" * (8 * MiB))
    with pytest.raises(ClientError) as raised:
        s3.create_multipart_upload(Bucket=BUCKET, Key="more")
    assert s3_error(raised) == ("InsufficientStorage", 507)
    assert multipart_rows(daemon) == ([], [])
    assert upload_directories(daemon, "small") == []


def test_concurrent_parts_never_overcommit_a_nearly_full_store(start_daemon):
    quota = 12 * MiB
    daemon = start_daemon(stores=[StoreSpec("small", quota)])
    s3 = make_client(daemon, max_pool_connections=16)
    s3.put_object(Bucket=BUCKET, Key="filler", Body=b"f" * (4 * MiB))
    upload_id = s3.create_multipart_upload(Bucket=BUCKET, Key="race")["UploadId"]
    bodies = {number: os.urandom(MiB) for number in range(1, 13)}  # 12 MiB wanted, 8 MiB free
    outcomes: dict[int, str] = {}
    start = threading.Barrier(len(bodies))

    def upload(number: int) -> None:
        client = make_client(daemon)
        start.wait()
        try:
            client.upload_part(Bucket=BUCKET, Key="race", UploadId=upload_id, PartNumber=number, Body=bodies[number])
            outcomes[number] = "ok"
        except ClientError as error:
            outcomes[number] = error.response["Error"]["Code"]

    threads = [threading.Thread(target=upload, args=(number,)) for number in bodies]
    for thread in threads:
        thread.start()
    committed = []
    while any(thread.is_alive() for thread in threads):
        ((total,),) = metadata_rows(daemon, "SELECT (SELECT used_bytes FROM stores WHERE name = 'small')"
                                            " + (SELECT COALESCE(SUM(size), 0) FROM reservations)"
                                            " + (SELECT COALESCE(SUM(size), 0) FROM parts)")
        committed.append(total)
        time.sleep(0.01)
    for thread in threads:
        thread.join()
    assert max(committed, default=0) <= quota
    assert sorted(outcomes.values()) == ["InsufficientStorage"] * 4 + ["ok"] * 8
    stored = metadata_rows(daemon, "SELECT part_number, size FROM parts ORDER BY part_number")
    assert stored == [(n, MiB) for n, outcome in sorted(outcomes.items()) if outcome == "ok"]
    assert 4 * MiB + reserved_bytes(daemon) == quota
    listed = s3.list_parts(Bucket=BUCKET, Key="race", UploadId=upload_id)["Parts"]
    assert [(p["PartNumber"], p["ETag"]) for p in listed] == [
        (n, f'"{md5_hex(bodies[n])}"') for n, _ in stored]
    s3.abort_multipart_upload(Bucket=BUCKET, Key="race", UploadId=upload_id)
    assert reserved_bytes(daemon) == 0
    assert store_usage(daemon)["small"] == (4 * MiB, 1)


# -- expiry ------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["directory", "moto"])
def test_abandoned_upload_expires_with_its_parts_and_reservation(placement_factory, kind):
    placement = placement_factory(kind, quota=100 * MiB, multipart=(2, 0.5))
    daemon = placement.daemon
    s3 = make_client(daemon)
    upload_id = s3.create_multipart_upload(Bucket=BUCKET, Key="abandoned")["UploadId"]
    s3.upload_part(Bucket=BUCKET, Key="abandoned", UploadId=upload_id, PartNumber=1, Body=os.urandom(MiB))
    assert reserved_bytes(daemon) == MiB
    assert len(placement.open_uploads()) == 1
    if kind == "directory":
        assert len(store_files(daemon, "store")) == 1

    wait_until(lambda: multipart_rows(daemon) == ([], []), 8, "the upload to expire")
    with pytest.raises(ClientError) as raised:
        s3.list_parts(Bucket=BUCKET, Key="abandoned", UploadId=upload_id)
    assert s3_error(raised) == ("NoSuchUpload", 404)
    assert s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []
    assert reserved_bytes(daemon) == 0
    assert store_usage(daemon)["store"] == (0, 0)
    assert placement.open_uploads() == []
    if kind == "directory":
        assert store_files(daemon, "store") == []
    assert "Expired multipart upload" in daemon.log()
    # A fresh upload still works on the same daemon.
    fresh = s3.create_multipart_upload(Bucket=BUCKET, Key="fresh")["UploadId"]
    complete(s3, "fresh", fresh, upload_parts(s3, "fresh", fresh, [b"quick"]))
    assert s3.get_object(Bucket=BUCKET, Key="fresh")["Body"].read() == b"quick"


# -- more edges: other stores, failures, restarts, isolation ----------------------------------


@pytest.mark.parametrize("kind", ["seaweedfs", "moto", "s3orchestrator"])
def test_abort_ends_the_upstream_upload(placement_factory, kind):
    placement = placement_factory(kind)
    daemon = placement.daemon
    s3 = make_client(daemon)
    upload_id = s3.create_multipart_upload(Bucket=BUCKET, Key="dir/doomed")["UploadId"]
    upload_parts(s3, "dir/doomed", upload_id, [os.urandom(5 * MiB), b"tail"])
    assert len(placement.open_uploads()) == 1
    s3.abort_multipart_upload(Bucket=BUCKET, Key="dir/doomed", UploadId=upload_id)
    assert placement.open_uploads() == []
    assert multipart_rows(daemon) == ([], [])
    assert reserved_bytes(daemon) == 0
    assert store_usage(daemon)["store"] == (0, 0)
    with pytest.raises(ClientError) as raised:
        s3.list_parts(Bucket=BUCKET, Key="dir/doomed", UploadId=upload_id)
    assert s3_error(raised) == ("NoSuchUpload", 404)


def test_upload_part_copy_from_an_object_on_another_store(start_daemon, seaweedfs):
    # "first" keeps the source and then has no room for a new upload: the upload goes upstream.
    daemon = start_daemon(stores=[StoreSpec("first", 6 * MiB), spec(seaweedfs, "sw", 0, seaweedfs.new_bucket())])
    s3 = make_client(daemon)
    source = os.urandom(5 * MiB + 512 * KiB)
    s3.put_object(Bucket=BUCKET, Key="source", Body=source)
    upload_id = s3.create_multipart_upload(Bucket=BUCKET, Key="copy")["UploadId"]
    assert metadata_rows(daemon, "SELECT store FROM uploads") == [("sw",)]
    first = s3.upload_part_copy(Bucket=BUCKET, Key="copy", UploadId=upload_id, PartNumber=1,
                                CopySource=f"{BUCKET}/source")["CopyPartResult"]["ETag"]
    second = s3.upload_part_copy(Bucket=BUCKET, Key="copy", UploadId=upload_id, PartNumber=2,
                                 CopySource={"Bucket": BUCKET, "Key": "source"},
                                 CopySourceRange="bytes=10-1033")["CopyPartResult"]["ETag"]
    assert (first, second) == (f'"{md5_hex(source)}"', f'"{md5_hex(source[10:1034])}"')
    complete(s3, "copy", upload_id, {1: first, 2: second})
    assert s3.get_object(Bucket=BUCKET, Key="copy")["Body"].read() == source + source[10:1034]
    assert dict(metadata_rows(daemon, "SELECT key, store FROM objects")) == {"source": "first", "copy": "sw"}
    assert reserved_bytes(daemon) == 0


def test_completing_onto_a_key_held_by_another_store_releases_the_old_bytes(start_daemon, seaweedfs):
    daemon = start_daemon(stores=[StoreSpec("first", 6 * MiB), spec(seaweedfs, "sw", 0, seaweedfs.new_bucket())])
    s3 = make_client(daemon)
    old = os.urandom(3 * MiB)
    s3.put_object(Bucket=BUCKET, Key="k", Body=old)
    upload_id = s3.create_multipart_upload(Bucket=BUCKET, Key="k")["UploadId"]  # on sw: first is too full
    parts = [os.urandom(5 * MiB), b"end"]
    etags = upload_parts(s3, "k", upload_id, parts)
    assert s3.get_object(Bucket=BUCKET, Key="k")["Body"].read() == old
    complete(s3, "k", upload_id, etags)
    assert s3.get_object(Bucket=BUCKET, Key="k")["Body"].read() == b"".join(parts)
    usage = store_usage(daemon)
    assert usage["first"] == (0, 0)
    assert usage["sw"] == (5 * MiB + 3, 1)
    assert store_files(daemon, "first") == []


def uploaded_files(daemon, store: str) -> list:
    """The store's files but the health job's probes (written and removed every interval)."""
    return [path for path in store_files(daemon, store) if not path.name.startswith("probe-")]


def test_part_with_a_bad_content_md5_is_bad_digest_and_keeps_the_earlier_part(daemon):
    s3 = make_client(daemon)
    files_before = uploaded_files(daemon, "local-a")
    upload_id = s3.create_multipart_upload(Bucket=BUCKET, Key="md5")["UploadId"]
    good = b"good part"
    etag = s3.upload_part(Bucket=BUCKET, Key="md5", UploadId=upload_id, PartNumber=1, Body=good)["ETag"]
    wrong_md5 = "1B2M2Y8AsgTpgAmY7PhCfg=="  # MD5 of nothing
    for number in (1, 2):
        with pytest.raises(ClientError) as raised:
            s3.upload_part(Bucket=BUCKET, Key="md5", UploadId=upload_id, PartNumber=number,
                           Body=b"corrupted", ContentMD5=wrong_md5)
        assert s3_error(raised) == ("BadDigest", 400)
    # The directory store had not replaced part 1 yet: it is still the good one.
    assert metadata_rows(daemon, "SELECT part_number, size FROM parts") == [(1, len(good))]
    assert metadata_rows(daemon, "SELECT COUNT(*) FROM reservations") == [(0,)]
    assert reserved_bytes(daemon) == len(good)
    assert len(uploaded_files(daemon, "local-a")) == len(files_before) + 1  # part 1 only, no temp file
    complete(s3, "md5", upload_id, {1: etag})
    assert s3.get_object(Bucket=BUCKET, Key="md5")["Body"].read() == good


def test_client_vanishing_mid_part_leaves_no_part_and_no_reservation(daemon):
    s3 = make_client(daemon)
    upload_id = s3.create_multipart_upload(Bucket=BUCKET, Key="half")["UploadId"]
    path, headers = signed_headers(daemon, "PUT", "half", headers={"Content-Length": str(20 * MiB)},
                                   unsigned_payload=True, query=f"partNumber=1&uploadId={upload_id}")
    sock = open_upload(daemon, path, headers)
    sock.sendall(os.urandom(5 * MiB))
    time.sleep(0.3)
    sock.close()
    wait_until(lambda: metadata_rows(daemon, "SELECT COUNT(*) FROM reservations") == [(0,)], 10,
               "the part's reservation to be released")
    assert metadata_rows(daemon, "SELECT COUNT(*) FROM parts") == [(0,)]
    wait_until(lambda: store_files(daemon, "local-a") == [], 5, "the part's temp file to go")
    assert s3.list_parts(Bucket=BUCKET, Key="half", UploadId=upload_id).get("Parts", []) == []
    # The upload goes on.
    complete(s3, "half", upload_id, upload_parts(s3, "half", upload_id, [b"whole"]))
    assert s3.get_object(Bucket=BUCKET, Key="half")["Body"].read() == b"whole"


def test_uploads_outlive_a_daemon_restart(daemon):
    s3 = make_client(daemon)
    first = os.urandom(5 * MiB)
    upload_id = s3.create_multipart_upload(Bucket=BUCKET, Key="durable", Metadata={"kept": "yes"})["UploadId"]
    etags = upload_parts(s3, "durable", upload_id, [first])
    daemon.stop()
    # A fresh log, so start() waits for the new process's "listening" line.
    daemon.log_path.rename(daemon.directory / "daemon-before-restart.log")
    daemon.start()
    s3 = make_client(daemon)  # no pooled connection to the old process
    assert reserved_bytes(daemon) == len(first)  # parts are not cleared like reservations
    assert [u["UploadId"] for u in s3.list_multipart_uploads(Bucket=BUCKET)["Uploads"]] == [upload_id]
    etags[2] = s3.upload_part(Bucket=BUCKET, Key="durable", UploadId=upload_id, PartNumber=2, Body=b"2")["ETag"]
    complete(s3, "durable", upload_id, etags)
    got = s3.get_object(Bucket=BUCKET, Key="durable")
    assert got["Body"].read() == first + b"2"
    assert got["Metadata"] == {"kept": "yes"}


def test_uploads_are_bound_to_their_bucket(daemon):
    mine = make_client(daemon)
    other = make_client(daemon, OTHER_ACCESS_KEY, OTHER_SECRET_KEY)
    upload_id = mine.create_multipart_upload(Bucket=BUCKET, Key="shared-name")["UploadId"]
    etags = upload_parts(mine, "shared-name", upload_id, [b"app1 data"])
    assert other.list_multipart_uploads(Bucket=OTHER_BUCKET).get("Uploads", []) == []
    with pytest.raises(ClientError) as raised:
        other.list_multipart_uploads(Bucket=BUCKET)
    assert s3_error(raised) == ("AccessDenied", 403)
    with pytest.raises(ClientError) as raised:
        other.list_parts(Bucket=OTHER_BUCKET, Key="shared-name", UploadId=upload_id)
    assert s3_error(raised) == ("NoSuchUpload", 404)
    with pytest.raises(ClientError) as raised:
        other.complete_multipart_upload(Bucket=OTHER_BUCKET, Key="shared-name", UploadId=upload_id,
                                        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etags[1]}]})
    assert s3_error(raised) == ("NoSuchUpload", 404)
    with pytest.raises(ClientError) as raised:
        other.abort_multipart_upload(Bucket=OTHER_BUCKET, Key="shared-name", UploadId=upload_id)
    assert s3_error(raised) == ("NoSuchUpload", 404)
    complete(mine, "shared-name", upload_id, etags)
    assert mine.get_object(Bucket=BUCKET, Key="shared-name")["Body"].read() == b"app1 data"


def test_complete_without_parts_is_malformed_xml(s3):
    upload_id = s3.create_multipart_upload(Bucket=BUCKET, Key="empty")["UploadId"]
    with pytest.raises(ClientError) as raised:
        s3.complete_multipart_upload(Bucket=BUCKET, Key="empty", UploadId=upload_id, MultipartUpload={"Parts": []})
    assert s3_error(raised) == ("MalformedXML", 400)
    s3.abort_multipart_upload(Bucket=BUCKET, Key="empty", UploadId=upload_id)


def test_list_multipart_uploads_paginates_over_common_prefixes(s3):
    for key in ["a/1", "a/2", "b/1", "c", "d/x/1"]:
        s3.create_multipart_upload(Bucket=BUCKET, Key=key)
    pages = []
    request: dict[str, str] = {}
    while True:
        page = s3.list_multipart_uploads(Bucket=BUCKET, Delimiter="/", MaxUploads=1, **request)
        pages.append(([p["Prefix"] for p in page.get("CommonPrefixes", [])],
                      [u["Key"] for u in page.get("Uploads", [])]))
        if not page["IsTruncated"]:
            break
        request = {"KeyMarker": page["NextKeyMarker"], "UploadIdMarker": page.get("NextUploadIdMarker", "")}
        assert len(pages) < 10
    assert pages == [(["a/"], []), (["b/"], []), ([], ["c"]), (["d/"], [])]


AWKWARD_KEYS = ["with space+plus.bin", "unicodé/日本語", "percent%2Fslash", "tilde~(x)*!'", "a//b"]


@pytest.mark.parametrize("kind", ["directory", "s3orchestrator"])
def test_awkward_keys(placement_factory, kind):
    daemon = placement_factory(kind).daemon
    s3 = make_client(daemon)
    uploads = {}
    for key in AWKWARD_KEYS:
        upload_id = s3.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]
        uploads[key] = upload_id, upload_parts(s3, key, upload_id, [os.urandom(5 * MiB), key.encode()])
    listed = s3.list_multipart_uploads(Bucket=BUCKET)["Uploads"]
    assert [(u["Key"], u["UploadId"]) for u in listed] == sorted(
        ((key, upload_id) for key, (upload_id, _) in uploads.items()), key=lambda pair: pair[0].encode())
    # botocore decodes url-encoded keys of ListObjects only: decode as it would.
    encoded = s3.list_multipart_uploads(Bucket=BUCKET, EncodingType="url")
    assert encoded["EncodingType"] == "url"
    assert [unquote_plus(u["Key"]) for u in encoded["Uploads"]] == [u["Key"] for u in listed]
    for key, (upload_id, etags) in uploads.items():
        assert s3.list_parts(Bucket=BUCKET, Key=key, UploadId=upload_id)["Key"] == key
        complete(s3, key, upload_id, etags)
        assert s3.get_object(Bucket=BUCKET, Key=key, PartNumber=2)["Body"].read() == key.encode()


def test_a_single_empty_part_makes_an_empty_object(s3):
    upload_id = s3.create_multipart_upload(Bucket=BUCKET, Key="empty")["UploadId"]
    etags = upload_parts(s3, "empty", upload_id, [b""])
    assert complete(s3, "empty", upload_id, etags)["ETag"] == multipart_etag([b""])
    got = s3.get_object(Bucket=BUCKET, Key="empty")
    assert (got["ContentLength"], got["Body"].read()) == (0, b"")


def test_upload_part_copy_into_a_full_store_is_507(start_daemon):
    daemon = start_daemon(stores=[StoreSpec("small", 12 * MiB)])
    s3 = make_client(daemon)
    s3.put_object(Bucket=BUCKET, Key="source", Body=os.urandom(4 * MiB))
    upload_id = s3.create_multipart_upload(Bucket=BUCKET, Key="copy")["UploadId"]
    s3.upload_part_copy(Bucket=BUCKET, Key="copy", UploadId=upload_id, PartNumber=1, CopySource=f"{BUCKET}/source")
    s3.upload_part_copy(Bucket=BUCKET, Key="copy", UploadId=upload_id, PartNumber=2, CopySource=f"{BUCKET}/source")
    with pytest.raises(ClientError) as raised:
        s3.upload_part_copy(Bucket=BUCKET, Key="copy", UploadId=upload_id, PartNumber=3,
                            CopySource=f"{BUCKET}/source")
    assert s3_error(raised) == ("InsufficientStorage", 507)
    assert reserved_bytes(daemon) == 8 * MiB
    assert metadata_rows(daemon, "SELECT COUNT(*) FROM reservations") == [(0,)]


def test_part_finishing_after_its_upload_was_aborted_is_no_such_upload(daemon):
    s3 = make_client(daemon)
    upload_id = s3.create_multipart_upload(Bucket=BUCKET, Key="late")["UploadId"]
    body = os.urandom(4 * MiB)
    path, headers = signed_headers(daemon, "PUT", "late", headers={"Content-Length": str(len(body))},
                                   unsigned_payload=True, query=f"partNumber=1&uploadId={upload_id}")
    sock = open_upload(daemon, path, headers)
    sock.sendall(body[:MiB])
    time.sleep(0.2)
    s3.abort_multipart_upload(Bucket=BUCKET, Key="late", UploadId=upload_id)
    sock.sendall(body[MiB:])
    response = read_response(sock)
    assert response.startswith(b"HTTP/1.1 404"), response[:500]
    assert b"<Code>NoSuchUpload</Code>" in response
    wait_until(lambda: metadata_rows(daemon, "SELECT COUNT(*) FROM reservations") == [(0,)], 5, "no reservation")
    assert multipart_rows(daemon) == ([], [])
    wait_until(lambda: store_files(daemon, "local-a") == [], 5, "no part file")
    assert upload_directories(daemon, "local-a") == []


@pytest.mark.parametrize("kind", ["directory", "moto"])
def test_same_part_number_uploaded_concurrently_keeps_one_consistent_part(placement_factory, kind):
    daemon = placement_factory(kind).daemon
    s3 = make_client(daemon)
    upload_id = s3.create_multipart_upload(Bucket=BUCKET, Key="race")["UploadId"]
    bodies = [os.urandom(5 * MiB) for _ in range(4)]
    start = threading.Barrier(len(bodies))
    errors = []

    def upload(body: bytes) -> None:
        client = make_client(daemon)
        start.wait()
        try:
            client.upload_part(Bucket=BUCKET, Key="race", UploadId=upload_id, PartNumber=1, Body=body)
        except ClientError as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=upload, args=(body,)) for body in bodies]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    (part,) = s3.list_parts(Bucket=BUCKET, Key="race", UploadId=upload_id)["Parts"]
    assert reserved_bytes(daemon) == 5 * MiB
    complete(s3, "race", upload_id, {1: part["ETag"]})
    stored = s3.get_object(Bucket=BUCKET, Key="race")["Body"].read()
    assert stored in bodies
    assert f'"{md5_hex(stored)}"' == part["ETag"]


def test_parts_sent_aws_chunked_over_https_reserve_their_decoded_size(start_daemon, tls_files):
    # Exactly room for two 5 MiB parts: a reservation of the framed length would not fit.
    daemon = start_daemon(stores=[StoreSpec("exact", 10 * MiB)], tls=tls_files)
    s3 = make_client(daemon)
    sent = []
    s3.meta.events.register("before-send.s3.UploadPart", lambda request, **_: sent.append(
        {k.lower(): (v.decode() if isinstance(v, bytes) else v) for k, v in request.headers.items()}))
    data = os.urandom(10 * MiB)
    source = tls_files[0].parent / "ten.bin"
    source.write_bytes(data)
    s3.upload_file(str(source), BUCKET, "ten.bin",
                   Config=TransferConfig(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB))
    if BOTOCORE_SENDS_TRAILERS:
        assert {headers["x-amz-content-sha256"] for headers in sent} == {"STREAMING-UNSIGNED-PAYLOAD-TRAILER"}
    assert len(sent) == 2
    head = s3.head_object(Bucket=BUCKET, Key="ten.bin")
    assert head["ETag"] == multipart_etag(chunks(data, 5 * MiB))
    assert s3.get_object(Bucket=BUCKET, Key="ten.bin")["Body"].read() == data
    assert store_usage(daemon)["exact"] == (10 * MiB, 1)
    assert reserved_bytes(daemon) == 0


def test_upload_lost_upstream_fails_complete_cleanly_and_can_be_aborted(start_daemon, seaweedfs):
    # SeaweedFS answers NoSuchUpload for an upload aborted behind our back (moto answers 500).
    bucket = seaweedfs.new_bucket()
    daemon = start_daemon(stores=[spec(seaweedfs, "store", 0, bucket)])
    s3 = make_client(daemon)
    upload_id = s3.create_multipart_upload(Bucket=BUCKET, Key="lost")["UploadId"]
    etags = upload_parts(s3, "lost", upload_id, [os.urandom(5 * MiB), b"tail"])
    (upstream,) = seaweedfs.boto.list_multipart_uploads(Bucket=bucket)["Uploads"]
    seaweedfs.boto.abort_multipart_upload(Bucket=bucket, Key=upstream["Key"], UploadId=upstream["UploadId"])

    with pytest.raises(ClientError) as raised:
        complete(s3, "lost", upload_id, etags)
    assert s3_error(raised) == ("InternalError", 500)
    assert metadata_rows(daemon, "SELECT COUNT(*) FROM objects") == [(0,)]
    assert metadata_rows(daemon, "SELECT COUNT(*) FROM reservations") == [(0,)]
    assert store_usage(daemon)["store"] == (0, 0)
    s3.abort_multipart_upload(Bucket=BUCKET, Key="lost", UploadId=upload_id)
    assert multipart_rows(daemon) == ([], [])
    assert reserved_bytes(daemon) == 0


def test_part_to_a_stopped_upstream_fails_and_the_upload_resumes(start_daemon):
    upstream = start_daemon(stores=[StoreSpec("disk", 0)])  # an s3orchestrator keeps its data over a restart
    daemon = start_daemon(stores=[upstream_spec(upstream, "store", 0)])
    s3 = make_client(daemon)
    upload_id = s3.create_multipart_upload(Bucket=BUCKET, Key="resume")["UploadId"]
    parts = [os.urandom(5 * MiB), os.urandom(5 * MiB), b"tail"]
    etags = upload_parts(s3, "resume", upload_id, parts[:1])
    upstream.stop()
    with pytest.raises(ClientError) as raised:
        s3.upload_part(Bucket=BUCKET, Key="resume", UploadId=upload_id, PartNumber=2, Body=parts[1])
    assert s3_error(raised)[1] == 503
    assert metadata_rows(daemon, "SELECT part_number FROM parts") == [(1,)]
    assert reserved_bytes(daemon) == len(parts[0])
    upstream.log_path.rename(upstream.directory / "daemon-before-restart.log")  # start() waits for a new line
    upstream.start()
    etags[2] = s3.upload_part(Bucket=BUCKET, Key="resume", UploadId=upload_id, PartNumber=2, Body=parts[1])["ETag"]
    etags[3] = s3.upload_part(Bucket=BUCKET, Key="resume", UploadId=upload_id, PartNumber=3, Body=parts[2])["ETag"]
    complete(s3, "resume", upload_id, etags)
    assert s3.get_object(Bucket=BUCKET, Key="resume")["Body"].read() == b"".join(parts)
    assert reserved_bytes(daemon) == 0


def test_stored_parts_count_against_the_store_for_other_uploads(start_daemon):
    daemon = start_daemon(stores=[StoreSpec("small", 12 * MiB), StoreSpec("big", 0)])
    s3 = make_client(daemon)
    upload_id = s3.create_multipart_upload(Bucket=BUCKET, Key="pending")["UploadId"]
    upload_parts(s3, "pending", upload_id, [os.urandom(5 * MiB), os.urandom(5 * MiB)])
    s3.put_object(Bucket=BUCKET, Key="fits", Body=b"x" * MiB)
    s3.put_object(Bucket=BUCKET, Key="overflows", Body=b"x" * (2 * MiB))  # 10 + 1 + 2 > 12
    assert dict(metadata_rows(daemon, "SELECT key, store FROM objects")) == {"fits": "small", "overflows": "big"}
    s3.abort_multipart_upload(Bucket=BUCKET, Key="pending", UploadId=upload_id)
    s3.put_object(Bucket=BUCKET, Key="after-abort", Body=b"x" * (5 * MiB))
    assert metadata_rows(daemon, "SELECT store FROM objects WHERE key = 'after-abort'") == [("small",)]


def test_part_over_5_gib_is_entity_too_large_before_any_byte(daemon):
    s3 = make_client(daemon)
    upload_id = s3.create_multipart_upload(Bucket=BUCKET, Key="huge")["UploadId"]
    path, headers = signed_headers(daemon, "PUT", "huge", headers={"Content-Length": str(5 * 1024**3 + 1)},
                                   unsigned_payload=True, query=f"partNumber=1&uploadId={upload_id}")
    response = read_response(open_upload(daemon, path, headers))
    assert response.startswith(b"HTTP/1.1 400"), response[:300]
    assert b"<Code>EntityTooLarge</Code>" in response
    assert reserved_bytes(daemon) == 0


@pytest.mark.parametrize("tls", [
    pytest.param(False, id="http"),
    pytest.param(True, id="https"),
])
def test_complete_answers_the_objects_url(start_daemon, tls_files, tls):
    daemon = start_daemon(tls=tls_files if tls else None)
    s3 = make_client(daemon)
    key = "dir/with space+plus ü.bin"
    upload_id = s3.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]
    location = complete(s3, key, upload_id, upload_parts(s3, key, upload_id, [b"x"]))["Location"]
    assert location.startswith(f"{daemon.endpoint}/{BUCKET}/"), location
    assert " " not in location
    assert unquote(location[len(daemon.endpoint):]) == f"/{BUCKET}/{key}"
