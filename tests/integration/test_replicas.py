"""Replicas over real stores: every object on two stores, the write quorum, the replicator."""

from __future__ import annotations

import hashlib

import pytest
from botocore.exceptions import ClientError

from tests.integration.conftest import make_client, metadata_rows, store_files, wait_for
from tests.integration.daemon import BUCKET, StoreSpec
from tests.integration.test_upstream_stores import spec
from tests.integration.upstreams import Upstream

MiB = 1024 * 1024
REPLICATION = "\n[placement]\nreplicas = 2\nwrite_quorum = {quorum}\nreplication_interval = {interval}\n"


def live_copies(daemon, key: str) -> dict[str, str]:
    """{store: location} of the key's live copies."""
    return dict(metadata_rows(daemon, "SELECT store, location FROM copies WHERE bucket = ? AND key = ?"
                                      " AND state = 'live'", BUCKET, key))


def usage_is_exact(daemon) -> None:
    """Each store's used bytes are the sum of its live copies and of the bytes queued for
    cleanup there, and nothing stays reserved."""
    used = dict(metadata_rows(daemon, "SELECT name, used_bytes FROM stores"))
    copies = dict(metadata_rows(daemon, "SELECT store, SUM(size) FROM copies WHERE state = 'live' GROUP BY store"))
    queued = dict(metadata_rows(daemon, "SELECT store, SUM(size) FROM cleanup GROUP BY store"))
    assert used == {name: copies.get(name, 0) + queued.get(name, 0) for name in used}
    assert metadata_rows(daemon, "SELECT store, size FROM reservations") == [], daemon.log()[-6000:]


def upstream_bytes(upstream: Upstream, bucket: str, location: str) -> bytes:
    return upstream.boto.get_object(Bucket=bucket, Key=location)["Body"].read()


def test_two_replicas_over_two_directory_stores(start_daemon):
    daemon = start_daemon(extra_toml=REPLICATION.format(quorum=2, interval=0.5))
    s3 = make_client(daemon)
    body = b"replicated " * 1000
    s3.put_object(Bucket=BUCKET, Key="obj", Body=body)
    assert set(live_copies(daemon, "obj")) == {"local-a", "local-b"}
    for store in ("local-a", "local-b"):
        assert [path.read_bytes() for path in store_files(daemon, store)] == [body]

    # CopyObject within the bucket makes two copies too.
    s3.copy_object(Bucket=BUCKET, Key="copied", CopySource={"Bucket": BUCKET, "Key": "obj"})
    assert set(live_copies(daemon, "copied")) == {"local-a", "local-b"}
    assert s3.get_object(Bucket=BUCKET, Key="copied")["Body"].read() == body

    # A multipart upload completes on one store; the replicator makes the second copy.
    parts = [b"a" * (5 * MiB), b"b" * 1000]
    upload = s3.create_multipart_upload(Bucket=BUCKET, Key="multi")["UploadId"]
    etags = [s3.upload_part(Bucket=BUCKET, Key="multi", UploadId=upload, PartNumber=n, Body=data)["ETag"]
             for n, data in enumerate(parts, 1)]
    s3.complete_multipart_upload(Bucket=BUCKET, Key="multi", UploadId=upload, MultipartUpload={
        "Parts": [{"PartNumber": n, "ETag": etag} for n, etag in enumerate(etags, 1)]})
    assert wait_for(lambda: len(live_copies(daemon, "multi")) == 2)
    # The replicator takes the object out of the queue just after committing its copy.
    assert wait_for(lambda: metadata_rows(daemon, "SELECT COUNT(*) FROM replication") == [(0,)])
    for store in ("local-a", "local-b"):
        assert hashlib.md5(b"".join(parts)).hexdigest() in {
            hashlib.md5(path.read_bytes()).hexdigest() for path in store_files(daemon, store)}
    usage_is_exact(daemon)

    for key in ("obj", "copied", "multi"):
        s3.delete_object(Bucket=BUCKET, Key=key)
    assert store_files(daemon, "local-a") == store_files(daemon, "local-b") == []
    usage_is_exact(daemon)


@pytest.fixture
def two_seaweeds(seaweedfs, start_upstream):
    """Two SeaweedFS servers, each with a fresh bucket: the session's (never stopped) and a
    private one (the tests stop it)."""
    second = start_upstream("seaweedfs")
    return (seaweedfs, seaweedfs.new_bucket()), (second, second.new_bucket())


def seaweed_daemon(start_daemon, two_seaweeds, quorum: int):
    """A daemon over both SeaweedFS; its replicator runs at start, then only when a store comes back up."""
    (first, first_bucket), (second, second_bucket) = two_seaweeds
    return start_daemon(stores=[spec(first, "sw1", 10**9, first_bucket), spec(second, "sw2", 10**9, second_bucket)],
                        health=(0.2, 1), extra_toml=REPLICATION.format(quorum=quorum, interval=3600))


def test_two_replicas_over_two_seaweedfs_and_a_copy_restored_after_an_outage(start_daemon, two_seaweeds):
    (first, first_bucket), (second, second_bucket) = two_seaweeds
    daemon = seaweed_daemon(start_daemon, two_seaweeds, quorum=1)
    s3 = make_client(daemon)
    body = b"on both clouds " * 5000
    s3.put_object(Bucket=BUCKET, Key="both", Body=body)
    # Answered at the first durable copy; the second commits when its store answers.
    assert wait_for(lambda: set(live_copies(daemon, "both")) == {"sw1", "sw2"})
    copies = live_copies(daemon, "both")
    assert upstream_bytes(first, first_bucket, copies["sw1"]) == body
    assert upstream_bytes(second, second_bucket, copies["sw2"]) == body

    second.stop()
    s3.put_object(Bucket=BUCKET, Key="while-down", Body=b"one store is down")  # write_quorum = 1: 200
    assert set(live_copies(daemon, "while-down")) == {"sw1"}
    assert metadata_rows(daemon, "SELECT key FROM replication") == [("while-down",)]

    second.start()  # the store's return starts the replicator
    assert wait_for(lambda: set(live_copies(daemon, "while-down")) == {"sw1", "sw2"}, timeout=20)
    location = live_copies(daemon, "while-down")["sw2"]
    assert upstream_bytes(second, second_bucket, location) == b"one store is down"
    assert wait_for(lambda: metadata_rows(daemon, "SELECT COUNT(*) FROM replication") == [(0,)])
    usage_is_exact(daemon)


def test_a_write_quorum_of_two_with_one_store_down_is_503_and_leaves_nothing(start_daemon, two_seaweeds):
    (first, first_bucket), (second, _) = two_seaweeds
    daemon = seaweed_daemon(start_daemon, two_seaweeds, quorum=2)
    s3 = make_client(daemon)
    second.stop()
    with pytest.raises(ClientError) as raised:
        s3.put_object(Bucket=BUCKET, Key="refused", Body=b"needs two stores")
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
    assert metadata_rows(daemon, "SELECT COUNT(*) FROM objects") == [(0,)]
    assert first.boto.list_objects_v2(Bucket=first_bucket).get("KeyCount", 0) == 0
    usage_is_exact(daemon)


def test_replicas_of_two_with_a_stopped_store_and_a_directory_store_left(start_daemon, start_upstream):
    upstream = start_upstream("seaweedfs")
    bucket = upstream.new_bucket()
    daemon = start_daemon(stores=[spec(upstream, "sw", 10**9, bucket), StoreSpec("local", 10**9)],
                          health=(0.2, 1), extra_toml=REPLICATION.format(quorum=2, interval=3600))
    s3 = make_client(daemon)
    s3.put_object(Bucket=BUCKET, Key="k", Body=b"x" * 100)
    assert set(live_copies(daemon, "k")) == {"sw", "local"}
    assert upstream_bytes(upstream, bucket, live_copies(daemon, "k")["sw"]) == b"x" * 100
    usage_is_exact(daemon)
