"""Crash safety and the cleanup queue with the real daemon: SIGKILL mid-PUT leaves no
orphan bytes after a restart (once the killed instance's lease expired), a DELETE on a
store that is down is finished once it is back (a directory store and a private
SeaweedFS), and instances register, deregister and keep their ids unique."""

from __future__ import annotations

import os
import threading

import pytest

from tests.integration.conftest import make_client, metadata_rows, sigkill_mid_put, store_files, wait_for
from tests.integration.daemon import BUCKET, UNSYNCED, Daemon, StoreSpec, free_port, write_config
from tests.integration.upstreams import Upstream

MiB = 1024 * 1024
# Job leases of 1 s: a daemon restarted after a SIGKILL (a new instance id) takes its
# killed run's jobs over once their leases have run out.
FAST_JOBS = "[placement]\nreaper_interval = 1\ncleanup_interval = 1\n[jobs]\nlease = 1\n"
# A killed daemon's instance is dead once its lease expires: short, so the test waits little.
LEASE = 3


def s3_spec(upstream: Upstream, name: str) -> StoreSpec:
    return StoreSpec(name, 10**9, s3={
        "endpoint": upstream.endpoint, "bucket": upstream.bucket, "region": upstream.region,
        "access_key_id": upstream.access_key, "secret_access_key": upstream.secret_key, "timeout": 5})


def upstream_keys(upstream: Upstream) -> list[str]:
    listed = upstream.client().list_objects_v2(Bucket=upstream.bucket)
    return sorted(item["Key"] for item in listed.get("Contents", []))


def assert_usage_is_live_copies(daemon) -> None:
    """Used bytes are exactly the live copies' (nothing queued, nothing reserved)."""
    used = metadata_rows(daemon, "SELECT name, used_bytes FROM stores WHERE config_order IS NOT NULL ORDER BY name")
    live = dict(metadata_rows(daemon, "SELECT store, SUM(size) FROM copies WHERE state = 'live' GROUP BY store"))
    assert used == [(name, live.get(name, 0)) for name, _ in used]
    assert metadata_rows(daemon, "SELECT COUNT(*) FROM reservations") == [(0,)]
    assert metadata_rows(daemon, "SELECT COUNT(*) FROM cleanup") == [(0,)]


@pytest.mark.parametrize("first", ["local", "seaweed"])
def test_sigkill_mid_put_leaves_no_orphan_bytes_after_a_restart(start_daemon, start_upstream, first):
    seaweed = start_upstream("seaweedfs")
    stores = [StoreSpec("local", 10**9), s3_spec(seaweed, "seaweed")]
    if first == "seaweed":
        stores.reverse()
    daemon = start_daemon(stores=stores, extra_toml=FAST_JOBS, metadata_toml=f"lease = {LEASE}")
    # pack: every object goes to ``first``
    s3 = make_client(daemon)
    kept = os.urandom(1000)
    s3.put_object(Bucket=BUCKET, Key="kept", Body=kept)

    size = 64 * MiB
    sigkill_mid_put(daemon, "big", size, [("big", first)])

    (killed,) = metadata_rows(daemon, "SELECT id FROM instances")
    daemon.start()
    # The new process is another instance; the killed one's intent waits for its lease to expire.
    assert wait_for(lambda: metadata_rows(daemon, "SELECT COUNT(*) FROM intents") == [(0,)], timeout=LEASE + 20)
    # The same reaper pass forgets the dead instance, a moment after resolving its intent.
    assert wait_for(lambda: killed not in metadata_rows(daemon, "SELECT id FROM instances"))
    assert "Reaper deleted the partial bytes of app1-files/big" in daemon.log()
    assert [path.name for path in store_files(daemon, "local")] == (["kept"] if first == "local" else [])
    assert upstream_keys(seaweed) == (["app1-files/kept"] if first == "seaweed" else [])
    assert_usage_is_live_copies(daemon)
    assert s3.get_object(Bucket=BUCKET, Key="kept")["Body"].read() == kept
    # The room of the killed PUT is free again: a PUT of the same size fits.
    body = os.urandom(size)
    s3.put_object(Bucket=BUCKET, Key="big", Body=body)
    assert s3.get_object(Bucket=BUCKET, Key="big")["Body"].read() == body


def test_a_delete_while_the_upstream_is_down_is_finished_when_it_returns(start_daemon, start_upstream):
    seaweed = start_upstream("seaweedfs")
    daemon = start_daemon(stores=[s3_spec(seaweed, "seaweed")], extra_toml=FAST_JOBS)
    s3 = make_client(daemon)
    body = os.urandom(5000)
    s3.put_object(Bucket=BUCKET, Key="doomed", Body=body)
    s3.put_object(Bucket=BUCKET, Key="stays", Body=b"stays")

    seaweed.stop()
    deleted = s3.delete_object(Bucket=BUCKET, Key="doomed")
    assert deleted["ResponseMetadata"]["HTTPStatusCode"] == 204
    # Queued, still counted as used, and retried (and failing) while the upstream is down.
    assert metadata_rows(daemon, "SELECT store, location, size FROM cleanup") == [
        ("seaweed", "app1-files/doomed", 5000)]
    assert metadata_rows(daemon, "SELECT used_bytes FROM stores WHERE name = 'seaweed'") == [(5000 + 5,)]
    assert wait_for(lambda: metadata_rows(daemon, "SELECT MAX(attempts) FROM cleanup")[0][0] >= 1)

    seaweed.start()  # the bytes remained while it was down; the cleanup job (every 1 s) now removes them
    assert wait_for(lambda: metadata_rows(daemon, "SELECT COUNT(*) FROM cleanup") == [(0,)], timeout=30)
    assert upstream_keys(seaweed) == ["app1-files/stays"]
    assert_usage_is_live_copies(daemon)
    assert metadata_rows(daemon, "SELECT used_bytes FROM stores WHERE name = 'seaweed'") == [(5,)]


def test_an_instance_registers_at_start_and_deregisters_at_a_clean_stop(start_daemon):
    daemon = start_daemon(server_toml='instance_id = "node-a"', metadata_toml=f"lease = {LEASE}")
    assert daemon.process is not None
    assert metadata_rows(daemon, "SELECT id, pid FROM instances") == [("node-a", daemon.process.pid)]
    assert "Registered as instance node-a" in daemon.log()
    daemon.stop()
    assert metadata_rows(daemon, "SELECT COUNT(*) FROM instances") == [(0,)]


def test_a_second_process_with_the_same_instance_id_waits_until_the_first_stops(tmp_path):
    options = dict(server_toml='instance_id = "node-a"', metadata_toml=f"lease = {LEASE}")
    first_port, second_port = free_port(), free_port()
    first = Daemon(tmp_path, write_config(tmp_path, first_port, [StoreSpec("local", 0)], **options), first_port,
                   wrapper=UNSYNCED)
    first.start()
    (tmp_path / "second").mkdir()
    # The same metadata database (and store), another port and log.
    config = write_config(tmp_path, second_port, [StoreSpec("local", 0)], **options)
    second = Daemon(tmp_path / "second", config, second_port, wrapper=UNSYNCED)
    starting = threading.Thread(target=second.start, kwargs={"timeout": 30})
    starting.start()
    try:
        assert wait_for(lambda: "for instance id node-a to be free" in second.log())
        assert "s3orchestrator listening on" not in second.log()
        first.stop()  # deregisters: the id is free at the second's next try
        starting.join()
        assert "s3orchestrator listening on" in second.log()
        assert second.process is not None
        assert metadata_rows(first, "SELECT id, pid FROM instances") == [("node-a", second.process.pid)]
    finally:
        first.stop()
        starting.join()
        second.stop()
