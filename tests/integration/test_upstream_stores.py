"""The daemon in front of real upstream S3 servers (SeaweedFS, moto) mixed with a directory store."""

from __future__ import annotations

import gzip
import hashlib
import os
import time

import pytest
from botocore.exceptions import ClientError

from tests.integration.conftest import make_client, metadata_rows
from tests.integration.daemon import BUCKET, StoreSpec
from tests.integration.upstreams import Upstream

MiB = 1024 * 1024


def spec(upstream: Upstream, name: str, quota: int = 0, bucket: str | None = None, **extra) -> StoreSpec:
    """An s3 store for the daemon config, pointing at ``upstream``."""
    return StoreSpec(name, quota, s3={
        "endpoint": upstream.endpoint, "bucket": bucket or upstream.bucket, "region": upstream.region,
        "access_key_id": upstream.access_key, "secret_access_key": upstream.secret_key, "timeout": 5, **extra})


@pytest.fixture
def mixed(start_daemon, seaweedfs, moto):
    """A daemon spreading over SeaweedFS, moto and a directory store (fresh buckets each test)."""
    daemon = start_daemon(
        stores=[spec(seaweedfs, "seaweed", 10**9, seaweedfs.new_bucket()),
                spec(moto, "moto", 10**9, moto.new_bucket()),
                StoreSpec("local", 10**9)],
        routing_strategy="spread",
    )
    return daemon


@pytest.mark.parametrize("size", [0, 1, 5 * MiB, 64 * MiB])
def test_spread_round_trips_over_every_kind_of_store(mixed, size):
    s3 = make_client(mixed)
    bodies = {f"obj-{index}": os.urandom(size) for index in range(3)}
    for key, body in bodies.items():
        put = s3.put_object(Bucket=BUCKET, Key=key, Body=body)
        assert put["ETag"] == f'"{hashlib.md5(body).hexdigest()}"'
    placement = dict(metadata_rows(mixed, "SELECT key, store FROM objects"))
    if size:
        assert sorted(placement.values()) == ["local", "moto", "seaweed"]
    for key, body in bodies.items():
        assert s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == body


def test_ranged_gets_on_every_store(mixed):
    s3 = make_client(mixed)
    body = os.urandom(1000)
    for index in range(3):
        s3.put_object(Bucket=BUCKET, Key=f"r{index}", Body=body)
    for index in range(3):
        got = s3.get_object(Bucket=BUCKET, Key=f"r{index}", Range="bytes=-10")
        assert got["ContentRange"] == "bytes 990-999/1000"
        assert got["Body"].read() == body[-10:]


def test_gzip_encoded_objects_are_byte_identical_on_every_store(mixed):
    s3 = make_client(mixed)
    compressed = gzip.compress(os.urandom(2000))
    for index in range(3):
        s3.put_object(Bucket=BUCKET, Key=f"g{index}", Body=compressed, ContentEncoding="gzip")
    for index in range(3):
        got = s3.get_object(Bucket=BUCKET, Key=f"g{index}")
        assert got["ContentEncoding"] == "gzip"
        assert got["Body"].read() == compressed


@pytest.mark.parametrize("key", ["with space.txt", "plus+sign", "percent%2Fslash", "unicodé/ключ/鍵.bin", "~(x)*!'"])
def test_awkward_keys_on_every_store(mixed, key):
    s3 = make_client(mixed)
    for index in range(3):
        s3.put_object(Bucket=BUCKET, Key=f"{index}/{key}", Body=key.encode())
    for index in range(3):
        assert s3.get_object(Bucket=BUCKET, Key=f"{index}/{key}")["Body"].read() == key.encode()
        s3.delete_object(Bucket=BUCKET, Key=f"{index}/{key}")
    assert metadata_rows(mixed, "SELECT COUNT(*) FROM objects") == [(0,)]


def test_objects_live_upstream_under_bucket_slash_key(start_daemon, moto):
    bucket = moto.new_bucket()
    daemon = start_daemon(stores=[spec(moto, "moto", 0, bucket)])
    make_client(daemon).put_object(Bucket=BUCKET, Key="a/b.txt", Body=b"payload")
    assert moto.boto.get_object(Bucket=bucket, Key=f"{BUCKET}/a/b.txt")["Body"].read() == b"payload"


def test_health_job_marks_a_stopped_upstream_down_and_back_up(start_daemon, start_upstream):
    upstream = start_upstream("moto")
    daemon = start_daemon(stores=[spec(upstream, "moto", 10**9), StoreSpec("local", 10**9)],
                          health=(0.2, 2))
    s3 = make_client(daemon)
    s3.put_object(Bucket=BUCKET, Key="first", Body=b"x")
    upstream.stop()
    wait_for_log(daemon, "moto", "down")
    s3.put_object(Bucket=BUCKET, Key="while-down", Body=b"x")
    upstream.start()
    wait_for_log(daemon, "moto", "up")
    s3.put_object(Bucket=BUCKET, Key="after", Body=b"x")
    assert dict(metadata_rows(daemon, "SELECT key, store FROM objects")) == {
        "first": "moto", "while-down": "local", "after": "moto"}


def test_upstream_quota_full_is_507_and_nothing_recorded(start_daemon, seaweedfs):
    daemon = start_daemon(stores=[spec(seaweedfs, "seaweed", 100, seaweedfs.new_bucket())])
    with pytest.raises(ClientError) as raised:
        make_client(daemon).put_object(Bucket=BUCKET, Key="big", Body=b"x" * 101)
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 507
    assert metadata_rows(daemon, "SELECT COUNT(*) FROM objects") == [(0,)]
    assert metadata_rows(daemon, "SELECT COUNT(*) FROM reservations") == [(0,)]


def test_wrong_upstream_credentials_are_500_not_the_clients_fault(start_daemon, seaweedfs):
    daemon = start_daemon(stores=[spec(seaweedfs, "seaweed", 0, seaweedfs.new_bucket(),
                                       secret_access_key="not-the-secret")])
    with pytest.raises(ClientError) as raised:
        make_client(daemon).put_object(Bucket=BUCKET, Key="k", Body=b"x")
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500
    assert "Store seaweed refused a request" in daemon.log()
    assert "not-the-secret" not in daemon.log()
    assert metadata_rows(daemon, "SELECT COUNT(*) FROM reservations") == [(0,)]


def wait_for_log(daemon, store: str, state: str, timeout: float = 10.0) -> None:
    """Wait until the daemon logs that ``store`` went ``state`` (up/down)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if f"Store {store} is {state}" in daemon.log():
            return
        time.sleep(0.1)
    raise AssertionError(f"store {store} never went {state}:\n{daemon.log()[-3000:]}")


@pytest.mark.parametrize("kind", ["seaweedfs", "moto"])
def test_copy_within_an_upstream_store_and_to_another_store(start_daemon, seaweedfs, moto, kind):
    upstream = {"seaweedfs": seaweedfs, "moto": moto}[kind]
    daemon = start_daemon(stores=[spec(upstream, "up", 150_000, upstream.new_bucket()), StoreSpec("local", 10**9)])
    s3 = make_client(daemon)
    body = os.urandom(60_000)
    s3.put_object(Bucket=BUCKET, Key="src", Body=body, ContentType="text/plain")
    s3.copy_object(Bucket=BUCKET, Key="same-store", CopySource=f"{BUCKET}/src")  # server-side, upstream
    s3.copy_object(Bucket=BUCKET, Key="other-store", CopySource=f"{BUCKET}/src")  # no room left: streamed
    placement = dict(metadata_rows(daemon, "SELECT key, store FROM objects"))
    assert placement == {"src": "up", "same-store": "up", "other-store": "local"}
    for key in placement:
        got = s3.get_object(Bucket=BUCKET, Key=key)
        assert got["Body"].read() == body
        assert got["ContentType"] == "text/plain"
