"""Every key S3 accepts works on every kind of store: SeaweedFS, moto and a directory store.

SeaweedFS is a filesystem-backed S3 server: it refuses ``.`` and ``..`` segments,
collapses ``//``, splits at ``\\``, drops the bytes of a key ending in ``/`` and
refuses names over 255 bytes. The daemon stores such keys upstream under an escaped
location, and every other key under ``<bucket>/<key>``.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from s3orchestrator.stores.s3_locations import upstream_location
from tests.integration.conftest import aws_cli, make_client, metadata_rows
from tests.integration.daemon import BUCKET, Daemon, StoreSpec
from tests.integration.upstreams import Upstream

MiB = 1024 * 1024
# What S3 accepts and a filesystem-backed server cannot hold as it is...
ESCAPED_KEYS = [
    "../x", "a/./b", "a//b", "a\\b", "..", ".", "dir/", "/leading", "%%looks-escaped",
    "s" * 300 + "/long-segment",  # a file name over 255 bytes
    "/".join(["d" * 204] * 5),  # 1024 bytes of short segments: too long behind "<bucket>/"
    "L" * 1024,
]
# ...and keys every store holds as they are.
PLAIN_KEYS = ["unicodé/日本語/ключ", "%2F", "a+b", "with spaces/x y", "tilde~(x)*!'", "a%5Cb"]
KEYS = ESCAPED_KEYS + PLAIN_KEYS
STORE_KINDS = ["seaweedfs", "moto", "directory"]


def body_of(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest() * 3 + key.encode()


@pytest.fixture(params=STORE_KINDS)
def one_store(request: pytest.FixtureRequest, start_daemon: Any) -> tuple[Daemon, Upstream | None, str | None]:
    """A daemon whose only store is of the given kind: (daemon, upstream server, upstream bucket)."""
    if request.param == "directory":
        return start_daemon(stores=[StoreSpec("local", 0)]), None, None
    upstream: Upstream = request.getfixturevalue(request.param)
    bucket = upstream.new_bucket()
    store = StoreSpec("up", 0, s3={
        "endpoint": upstream.endpoint, "bucket": bucket, "region": upstream.region,
        "access_key_id": upstream.access_key, "secret_access_key": upstream.secret_key, "timeout": 10})
    return start_daemon(stores=[store]), upstream, bucket


def upstream_keys(upstream: Upstream, bucket: str) -> set[str]:
    pages = upstream.boto.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return {item["Key"] for page in pages for item in page.get("Contents", [])}


def listed_keys(s3: Any, prefix: str = "") -> list[str]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return [item["Key"] for page in pages for item in page.get("Contents", [])]


def assert_clean_log(daemon: Daemon) -> None:
    log = daemon.log()
    assert "Traceback" not in log and "InternalError" not in log, log[-3000:]


def test_every_key_round_trips_lists_and_copies(one_store) -> None:
    daemon, upstream, bucket = one_store
    s3 = make_client(daemon)
    for key in KEYS:
        put = s3.put_object(Bucket=BUCKET, Key=key, Body=body_of(key))
        assert put["ETag"] == f'"{hashlib.md5(body_of(key)).hexdigest()}"'
    for key in KEYS:
        assert s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == body_of(key), key
        assert s3.head_object(Bucket=BUCKET, Key=key)["ContentLength"] == len(body_of(key))
    assert listed_keys(s3) == sorted(KEYS, key=lambda k: k.encode())

    copied = [key for key in KEYS if len(key.encode()) <= 1024 - len("copy/")]  # copies' keys get a prefix
    for key in copied:
        s3.copy_object(Bucket=BUCKET, Key=f"copy/{key}", CopySource={"Bucket": BUCKET, "Key": key})
        assert s3.get_object(Bucket=BUCKET, Key=f"copy/{key}")["Body"].read() == body_of(key), key
    assert listed_keys(s3, "copy/") == sorted((f"copy/{k}" for k in copied), key=lambda k: k.encode())

    for key in listed_keys(s3):
        s3.delete_object(Bucket=BUCKET, Key=key)
        with pytest.raises(ClientError) as raised:
            s3.head_object(Bucket=BUCKET, Key=key)
        assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    assert listed_keys(s3) == []
    if upstream is not None:
        assert upstream_keys(upstream, bucket) == set()
    assert_clean_log(daemon)


@pytest.mark.parametrize("kind", ["seaweedfs", "moto"])
def test_upstream_holds_plain_keys_as_bucket_slash_key_and_escapes_only_the_others(
    start_daemon: Any, kind: str, request: pytest.FixtureRequest
) -> None:
    upstream: Upstream = request.getfixturevalue(kind)
    bucket = upstream.new_bucket()
    daemon = start_daemon(stores=[StoreSpec("up", 0, s3={
        "endpoint": upstream.endpoint, "bucket": bucket, "region": upstream.region,
        "access_key_id": upstream.access_key, "secret_access_key": upstream.secret_key, "timeout": 10})])
    s3 = make_client(daemon)
    for key in KEYS:
        s3.put_object(Bucket=BUCKET, Key=key, Body=body_of(key))

    stored = dict(metadata_rows(daemon, "SELECT key, location FROM objects"))
    assert {key: stored[key] for key in PLAIN_KEYS} == {key: f"{BUCKET}/{key}" for key in PLAIN_KEYS}
    assert stored["../x"] == f"{BUCKET}/%%../x"
    assert stored["a//b"] == f"{BUCKET}/a/%%/b"
    assert stored["dir/"] == f"{BUCKET}/dir/%%"
    assert stored["a\\b"] == f"{BUCKET}/%%a%5Cb"
    for key in ESCAPED_KEYS:
        assert stored[key] != f"{BUCKET}/{key}"
        assert stored[key] == upstream_location(BUCKET, key)
    # The upstream holds exactly those names, each with its object's bytes.
    assert upstream_keys(upstream, bucket) == set(stored.values())
    for key, location in stored.items():
        assert upstream.boto.get_object(Bucket=bucket, Key=location)["Body"].read() == body_of(key)
    assert_clean_log(daemon)


def test_multipart_upload_of_an_escaped_key(one_store) -> None:
    daemon, upstream, bucket = one_store
    s3 = make_client(daemon)
    key = "parts/../of//a\\key/"
    parts = [os.urandom(5 * MiB), os.urandom(MiB + 7)]
    upload_id = s3.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]
    assert [u["Key"] for u in s3.list_multipart_uploads(Bucket=BUCKET)["Uploads"]] == [key]
    etags = [s3.upload_part(Bucket=BUCKET, Key=key, UploadId=upload_id, PartNumber=number, Body=data)["ETag"]
             for number, data in enumerate(parts, 1)]
    s3.complete_multipart_upload(Bucket=BUCKET, Key=key, UploadId=upload_id, MultipartUpload={
        "Parts": [{"PartNumber": number, "ETag": etag} for number, etag in enumerate(etags, 1)]})
    assert s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == b"".join(parts)
    assert listed_keys(s3) == [key]
    if upstream is not None:
        assert upstream_keys(upstream, bucket) == {f"{BUCKET}/parts/%%../of/%%/%%a%5Ckey/%%"}
    assert_clean_log(daemon)


def test_aws_cli_copies_escaped_keys_up_and_down(one_store, tmp_path: Path) -> None:
    daemon, upstream, bucket = one_store
    aws = aws_cli("v2", daemon, tmp_path)
    small, big = tmp_path / "small", tmp_path / "big"
    small.write_bytes(b"small object")
    big.write_bytes(os.urandom(9 * MiB))  # over the cli's 8 MiB threshold: a multipart upload
    aws("s3api", "put-object", "--bucket", BUCKET, "--key", "cli/../small", "--body", str(small))
    aws("s3", "cp", str(big), f"s3://{BUCKET}/cli//./big")
    aws("s3api", "get-object", "--bucket", BUCKET, "--key", "cli/../small", str(tmp_path / "small.back"))
    aws("s3", "cp", f"s3://{BUCKET}/cli//./big", str(tmp_path / "big.back"))
    assert (tmp_path / "small.back").read_bytes() == small.read_bytes()
    assert (tmp_path / "big.back").read_bytes() == big.read_bytes()
    assert listed_keys(make_client(daemon)) == ["cli/../small", "cli//./big"]
    assert_clean_log(daemon)


def test_a_key_with_nul_is_400_invalid_argument_on_every_store(one_store) -> None:
    daemon, upstream, bucket = one_store
    s3 = make_client(daemon)
    for call in (lambda: s3.put_object(Bucket=BUCKET, Key="nul\x00key", Body=b"x"),
                 lambda: s3.get_object(Bucket=BUCKET, Key="nul\x00key"),
                 lambda: s3.create_multipart_upload(Bucket=BUCKET, Key="nul\x00key")):
        with pytest.raises(ClientError) as raised:
            call()
        assert raised.value.response["Error"]["Code"] == "InvalidArgument"
        assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    s3.put_object(Bucket=BUCKET, Key="plain", Body=b"x")
    with pytest.raises(ClientError) as raised:
        s3.copy_object(Bucket=BUCKET, Key="plain-copy", CopySource={"Bucket": BUCKET, "Key": "nul\x00key"})
    assert raised.value.response["Error"]["Code"] == "InvalidArgument"
    assert metadata_rows(daemon, "SELECT key FROM objects") == [("plain",)]
    assert_clean_log(daemon)
