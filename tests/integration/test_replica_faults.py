"""Replicas under faults, with the real daemon and real upstreams: SIGKILL mid-way through a
replicated PUT, an overwrite and a delete while one store is down, three copies over three
kinds of store (SeaweedFS, moto, a directory)."""

from __future__ import annotations

import os

import pytest
from botocore.exceptions import ClientError

from tests.integration.conftest import make_client, metadata_rows, sigkill_mid_put, store_files, wait_for
from tests.integration.daemon import BUCKET, StoreSpec
from tests.integration.test_upstream_stores import spec
from tests.integration.upstreams import Upstream

MiB = 1024 * 1024
# Leases of 1 s: a daemon restarted after a SIGKILL (a new instance id) takes its killed
# run's jobs over once their leases have run out.
FAST_JOBS = ("\n[placement]\nreplicas = {replicas}\nwrite_quorum = {quorum}\nreaper_interval = 1\n"
             "cleanup_interval = 1\nreplication_interval = 1\n[jobs]\nlease = 1\n")
# A killed daemon's instance is dead once its metadata lease expires (30 s by default):
# short, so its write intents are resolved soon after the restart.
INSTANCE_LEASE = 3


def upstream_objects(upstream: Upstream, bucket: str) -> dict[str, bytes]:
    """{key: bytes} of everything in ``bucket``, listed on the upstream itself."""
    client = upstream.client()
    listed = client.list_objects_v2(Bucket=bucket).get("Contents", [])
    return {item["Key"]: client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read() for item in listed}


def live_copies(daemon, key: str) -> dict[str, str]:
    """{store: location} of the key's live copies."""
    return dict(metadata_rows(daemon, "SELECT store, location FROM copies WHERE bucket = ? AND key = ?"
                                      " AND state = 'live'", BUCKET, key))


def usage(daemon) -> tuple[dict[str, int], dict[str, int], dict[str, int]]:
    """(used bytes, bytes of live copies, bytes queued for cleanup), by store."""
    used = dict(metadata_rows(daemon, "SELECT name, used_bytes FROM stores WHERE config_order IS NOT NULL"))
    live = dict(metadata_rows(daemon, "SELECT store, SUM(size) FROM copies WHERE state = 'live' GROUP BY store"))
    queued = dict(metadata_rows(daemon, "SELECT store, SUM(size) FROM cleanup GROUP BY store"))
    return used, live, queued


def assert_usage_is_live_copies(daemon) -> None:
    """Nothing queued, nothing reserved, and used bytes are exactly the live copies'."""
    assert metadata_rows(daemon, "SELECT COUNT(*) FROM cleanup") == [(0,)]
    assert metadata_rows(daemon, "SELECT COUNT(*) FROM reservations") == [(0,)]
    used, live, _ = usage(daemon)
    assert used == {name: live.get(name, 0) for name in used}


@pytest.fixture
def two_seaweeds(seaweedfs, start_upstream):
    """Two SeaweedFS servers, each with a fresh bucket: the session's (never stopped) and a
    private one (the tests may stop it)."""
    second = start_upstream("seaweedfs")
    return (seaweedfs, seaweedfs.new_bucket()), (second, second.new_bucket())


def test_sigkill_mid_replicated_put_leaves_no_orphan_bytes_on_either_store(start_daemon, two_seaweeds):
    (first, first_bucket), (second, second_bucket) = two_seaweeds
    daemon = start_daemon(stores=[spec(first, "sw1", 10**9, first_bucket), spec(second, "sw2", 10**9, second_bucket)],
                          extra_toml=FAST_JOBS.format(replicas=2, quorum=2),
                          metadata_toml=f"lease = {INSTANCE_LEASE}")
    s3 = make_client(daemon)
    kept = os.urandom(1000)
    s3.put_object(Bucket=BUCKET, Key="kept", Body=kept)

    sigkill_mid_put(daemon, "big", 64 * MiB, [("big", "sw1"), ("big", "sw2")])

    daemon.start()
    assert wait_for(lambda: metadata_rows(daemon, "SELECT COUNT(*) FROM intents") == [(0,)],
                    timeout=INSTANCE_LEASE + 20)
    assert daemon.log().count(f"Reaper deleted the partial bytes of {BUCKET}/big") == 2
    assert metadata_rows(daemon, "SELECT COUNT(*) FROM reservations") == [(0,)]
    used, live, queued = usage(daemon)
    assert used == {name: live.get(name, 0) + queued.get(name, 0) for name in used}
    assert wait_for(lambda: metadata_rows(daemon, "SELECT COUNT(*) FROM cleanup") == [(0,)], timeout=30)
    assert upstream_objects(first, first_bucket) == {f"{BUCKET}/kept": kept}
    assert upstream_objects(second, second_bucket) == {f"{BUCKET}/kept": kept}
    assert_usage_is_live_copies(daemon)
    assert usage(daemon)[0] == {"sw1": 1000, "sw2": 1000}
    assert s3.get_object(Bucket=BUCKET, Key="kept")["Body"].read() == kept


def test_overwrite_and_delete_while_a_store_is_down_never_serve_stale_bytes(start_daemon, two_seaweeds):
    (first, first_bucket), (second, second_bucket) = two_seaweeds
    daemon = start_daemon(stores=[spec(first, "sw1", 10**9, first_bucket), spec(second, "sw2", 10**9, second_bucket)],
                          health=(0.2, 1), extra_toml=FAST_JOBS.format(replicas=2, quorum=1))
    s3 = make_client(daemon)
    old, new, doomed = b"old body " * 3000, b"new body!" * 2000, os.urandom(7000)
    s3.put_object(Bucket=BUCKET, Key="a", Body=old)
    s3.put_object(Bucket=BUCKET, Key="b", Body=doomed)
    assert wait_for(lambda: set(live_copies(daemon, "a")) == set(live_copies(daemon, "b")) == {"sw1", "sw2"})

    second.stop()
    s3.put_object(Bucket=BUCKET, Key="a", Body=new)  # write_quorum = 1: 200 with sw1's copy
    assert s3.delete_object(Bucket=BUCKET, Key="b")["ResponseMetadata"]["HTTPStatusCode"] == 204
    assert live_copies(daemon, "a") == {"sw1": f"{BUCKET}/a"}
    assert upstream_objects(first, first_bucket) == {f"{BUCKET}/a": new}
    # sw2's old copy of a and its copy of b are still there, queued for removal.
    assert sorted(metadata_rows(daemon, "SELECT store, location, size FROM cleanup")) == [
        ("sw2", f"{BUCKET}/a", len(old)), ("sw2", f"{BUCKET}/b", len(doomed))]
    assert s3.get_object(Bucket=BUCKET, Key="a")["Body"].read() == new

    second.start()
    reads = 0

    def settled() -> bool:
        nonlocal reads
        # Every read while the replicator and the cleanup job work on sw2 gets the new body.
        assert s3.get_object(Bucket=BUCKET, Key="a")["Body"].read() == new
        with pytest.raises(ClientError) as raised:
            s3.get_object(Bucket=BUCKET, Key="b")
        assert raised.value.response["Error"]["Code"] == "NoSuchKey"
        reads += 1
        return (set(live_copies(daemon, "a")) == {"sw1", "sw2"}
                and metadata_rows(daemon, "SELECT COUNT(*) FROM cleanup") == [(0,)]
                and metadata_rows(daemon, "SELECT COUNT(*) FROM replication") == [(0,)])

    assert wait_for(settled, timeout=60), daemon.log()[-6000:]
    assert reads > 1
    for _ in range(20):  # and after
        assert s3.get_object(Bucket=BUCKET, Key="a")["Body"].read() == new
    assert upstream_objects(second, second_bucket) == {f"{BUCKET}/a": new}
    assert upstream_objects(first, first_bucket) == {f"{BUCKET}/a": new}
    assert_usage_is_live_copies(daemon)
    assert usage(daemon)[0] == {"sw1": len(new), "sw2": len(new)}


@pytest.mark.parametrize("strategy", ["spread", "pack"])
def test_three_replicas_over_seaweedfs_moto_and_a_directory(start_daemon, seaweedfs, moto, strategy):
    seaweed_bucket, moto_bucket = seaweedfs.new_bucket(), moto.new_bucket()
    daemon = start_daemon(stores=[spec(seaweedfs, "seaweed", 10**9, seaweed_bucket),
                                  spec(moto, "moto", 10**9, moto_bucket), StoreSpec("local", 10**9)],
                          routing_strategy=strategy, extra_toml=FAST_JOBS.format(replicas=3, quorum=3))
    s3 = make_client(daemon)
    body = os.urandom(3 * MiB + 17)
    s3.put_object(Bucket=BUCKET, Key="three/copies", Body=body)
    assert s3.get_object(Bucket=BUCKET, Key="three/copies")["Body"].read() == body
    assert set(live_copies(daemon, "three/copies")) == {"seaweed", "moto", "local"}
    assert upstream_objects(seaweedfs, seaweed_bucket) == {f"{BUCKET}/three/copies": body}
    assert upstream_objects(moto, moto_bucket) == {f"{BUCKET}/three/copies": body}
    assert [path.read_bytes() for path in store_files(daemon, "local")] == [body]
    assert usage(daemon)[0] == {"seaweed": len(body), "moto": len(body), "local": len(body)}

    s3.delete_object(Bucket=BUCKET, Key="three/copies")
    with pytest.raises(ClientError) as raised:
        s3.head_object(Bucket=BUCKET, Key="three/copies")
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    assert upstream_objects(seaweedfs, seaweed_bucket) == {}
    assert upstream_objects(moto, moto_bucket) == {}
    assert store_files(daemon, "local") == []
    assert_usage_is_live_copies(daemon)
    assert usage(daemon)[0] == {"seaweed": 0, "moto": 0, "local": 0}
