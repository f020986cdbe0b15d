"""A second s3orchestrator as the upstream S3 store: it verifies SigV4, so every
request here proves our upstream signing (unsigned and streaming payloads)."""

from __future__ import annotations

import gzip
import hashlib
import os
import time

import pytest
import urllib3
from botocore.exceptions import BotoCoreError, ClientError

from tests.integration.conftest import make_client, metadata_rows, shared_daemons
from tests.integration.daemon import ACCESS_KEY, BUCKET, SECRET_KEY, StoreSpec
from tests.integration.rawhttp import open_upload, signed_headers

MiB = 1024 * 1024


def upstream_spec(upstream, name="up", quota=0, **extra) -> StoreSpec:
    """An s3 store in the front daemon pointing at ``upstream``'s app1-files bucket."""
    s3 = {"endpoint": upstream.endpoint, "bucket": BUCKET, "access_key_id": ACCESS_KEY,
          "secret_access_key": SECRET_KEY, "timeout": 5, **extra}
    return StoreSpec(name, quota, s3=s3)


@pytest.fixture(scope="module", params=["unsigned", "streaming"])
def pair(request, metadata_engine):
    """(front, upstream): the front daemon's only store is the upstream daemon; shared by
    the module's tests (each uses keys of its own)."""
    with shared_daemons(request, "pair") as start:
        upstream = start(stores=[StoreSpec("disk", 0)])
        yield start(stores=[upstream_spec(upstream, payload_signing=request.param)]), upstream


@pytest.mark.parametrize("size", [0, 1, 5 * MiB, 64 * MiB])
def test_round_trip_through_an_upstream_s3orchestrator(pair, size):
    front, upstream = pair
    s3 = make_client(front)
    body = os.urandom(size)
    put = s3.put_object(Bucket=BUCKET, Key="dir/blob", Body=body)
    assert put["ETag"] == f'"{hashlib.md5(body).hexdigest()}"'
    assert s3.get_object(Bucket=BUCKET, Key="dir/blob")["Body"].read() == body
    # Stored upstream under <virtual bucket>/<key>.
    direct = make_client(upstream).get_object(Bucket=BUCKET, Key=f"{BUCKET}/dir/blob")
    assert direct["Body"].read() == body


def test_ranged_get_is_passed_upstream(pair):
    front, _ = pair
    s3 = make_client(front)
    body = bytes(range(256)) * 4
    s3.put_object(Bucket=BUCKET, Key="r", Body=body)
    got = s3.get_object(Bucket=BUCKET, Key="r", Range="bytes=100-199")
    assert got["ContentRange"] == "bytes 100-199/1024"
    assert got["Body"].read() == body[100:200]


def test_gzip_encoded_object_comes_back_byte_identical(pair):
    front, _ = pair
    s3 = make_client(front)
    compressed = gzip.compress(b"hello " * 1000)
    s3.put_object(Bucket=BUCKET, Key="page.html", Body=compressed, ContentEncoding="gzip", ContentType="text/html")
    got = s3.get_object(Bucket=BUCKET, Key="page.html")
    assert got["ContentEncoding"] == "gzip"
    assert got["Body"].read() == compressed


@pytest.mark.parametrize("key", ["with space", "plus+sign", "percent%2Fslash", "unicodé/鍵", "a//b", "tilde~(x)*!'"])
def test_awkward_keys_through_an_upstream(pair, key):
    front, _ = pair
    s3 = make_client(front)
    s3.put_object(Bucket=BUCKET, Key=key, Body=key.encode())
    assert s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == key.encode()
    s3.delete_object(Bucket=BUCKET, Key=key)
    with pytest.raises(ClientError):
        s3.head_object(Bucket=BUCKET, Key=key)


def test_delete_removes_the_upstream_object(pair):
    front, upstream = pair
    s3 = make_client(front)
    s3.put_object(Bucket=BUCKET, Key="gone", Body=b"x")
    s3.delete_object(Bucket=BUCKET, Key="gone")
    with pytest.raises(ClientError):
        make_client(upstream).head_object(Bucket=BUCKET, Key=f"{BUCKET}/gone")


def test_mixed_pool_packs_directory_then_upstream(start_daemon):
    upstream = start_daemon(stores=[StoreSpec("disk", 0)])
    front = start_daemon(stores=[StoreSpec("local", 2500), upstream_spec(upstream, quota=10**9)])
    s3 = make_client(front)
    for index in range(4):
        s3.put_object(Bucket=BUCKET, Key=f"k{index}", Body=b"x" * 1000)
    placement = dict(metadata_rows(front, "SELECT key, store FROM objects"))
    assert placement == {"k0": "local", "k1": "local", "k2": "up", "k3": "up"}
    for index in range(4):
        assert s3.get_object(Bucket=BUCKET, Key=f"k{index}")["Body"].read() == b"x" * 1000


def test_upstream_down_between_requests_is_503_and_writes_go_elsewhere(start_daemon):
    upstream = start_daemon(stores=[StoreSpec("disk", 0)])
    front = start_daemon(stores=[upstream_spec(upstream, quota=10**9), StoreSpec("local", 10**9)])
    s3 = make_client(front)
    s3.put_object(Bucket=BUCKET, Key="before", Body=b"stored upstream")
    upstream.stop()
    with pytest.raises(ClientError) as raised:
        s3.get_object(Bucket=BUCKET, Key="before")
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
    assert raised.value.response["ResponseMetadata"]["HTTPHeaders"]["retry-after"]
    # Request failures count towards the store's health (unhealthy_after = 3 by default).
    for _ in range(3):
        with pytest.raises(ClientError):
            s3.get_object(Bucket=BUCKET, Key="before")
    s3.put_object(Bucket=BUCKET, Key="after", Body=b"stored locally")
    assert dict(metadata_rows(front, "SELECT key, store FROM objects")) == {"before": "up", "after": "local"}


def test_upstream_stopped_mid_download_breaks_the_download(start_daemon):
    upstream = start_daemon(stores=[StoreSpec("disk", 0)])
    front = start_daemon(stores=[upstream_spec(upstream)])
    s3 = make_client(front)
    body = os.urandom(64 * MiB)
    s3.put_object(Bucket=BUCKET, Key="big", Body=body)
    stream = s3.get_object(Bucket=BUCKET, Key="big")["Body"]
    stream.read(MiB)
    upstream.process.kill()
    # The response announced 64 MiB: the client must see a broken transfer, never a short
    # body that looks complete (botocore raises IncompleteReadError / a connection error).
    with pytest.raises((BotoCoreError, urllib3.exceptions.HTTPError)):
        stream.read()


def test_client_disconnect_mid_upload_aborts_the_upstream_put(start_daemon):
    upstream = start_daemon(stores=[StoreSpec("disk", 0)])
    front = start_daemon(stores=[upstream_spec(upstream)])
    path, headers = signed_headers(front, "PUT", "half", headers={"Content-Length": str(20 * MiB)},
                                   unsigned_payload=True)
    sock = open_upload(front, path, headers)
    sock.sendall(os.urandom(5 * MiB))
    time.sleep(0.3)
    sock.close()
    deadline = time.monotonic() + 10
    while metadata_rows(front, "SELECT COUNT(*) FROM reservations") != [(0,)] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert metadata_rows(front, "SELECT COUNT(*) FROM reservations") == [(0,)]
    assert metadata_rows(front, "SELECT COUNT(*) FROM objects") == [(0,)]
    # The upstream never got a complete object, so it recorded nothing either.
    assert metadata_rows(upstream, "SELECT COUNT(*) FROM objects") == [(0,)]
    assert metadata_rows(upstream, "SELECT COUNT(*) FROM reservations") == [(0,)]
