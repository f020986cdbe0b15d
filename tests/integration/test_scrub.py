"""The scrubber with the real daemon: a directory store and SeaweedFS, two replicas; one
copy corrupted and another deleted behind the daemon's back are found, let go and made
again from the good copies, and a real client reads both objects whole afterwards."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from typing import Any

from tests.integration.conftest import make_client, metadata_rows, store_files
from tests.integration.daemon import BUCKET, Daemon, StoreSpec, free_port
from tests.integration.upstreams import Upstream

CORRUPTED = bytes(range(256)) * 64  # 16 KiB
DELETED = b"deleted upstream " * 1000
ADMIN_TOKEN = "admin-token-for-scrub-tests-0123456789"


def seaweedfs_store(upstream: Upstream, name: str) -> StoreSpec:
    return StoreSpec(name, 0, s3={
        "endpoint": upstream.endpoint, "bucket": upstream.bucket, "region": upstream.region,
        "access_key_id": upstream.access_key, "secret_access_key": upstream.secret_key, "timeout": 5})


def metrics(daemon: Daemon) -> dict[str, float]:
    """The scrubber's samples of /metrics, by name and labels as exposed."""
    with urllib.request.urlopen(f"{daemon.endpoint}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {name: float(value) for name, _, value in
            (line.rpartition(" ") for line in text.splitlines() if line.startswith("s3orchestrator_scrub_"))}


def until(condition: Any, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.1)


def test_a_corrupted_directory_copy_and_a_deleted_upstream_copy_are_found_and_made_again(
    start_daemon, start_upstream
) -> None:
    seaweedfs = start_upstream("seaweedfs")
    admin_port = free_port()
    daemon = start_daemon(
        stores=[StoreSpec("local", 0), seaweedfs_store(seaweedfs, "sw")],
        extra_toml=(
            "\n[placement]\nreplicas = 2\nread_order = \"config\"\n"
            "\n[scrub]\nenabled = true\ninterval = 0.5\nfull_read_interval = 0.5\nobjects_per_second = 200\n"
            f'\n[admin]\nlisten = "tcp:{admin_port}:interface=127.0.0.1"\ntoken = "{ADMIN_TOKEN}"\n'
        ),
    )
    client = make_client(daemon)
    client.put_object(Bucket=BUCKET, Key="corrupted", Body=CORRUPTED)
    client.put_object(Bucket=BUCKET, Key="deleted", Body=DELETED)
    locations = dict(((key, store), location) for key, store, location in metadata_rows(
        daemon, "SELECT key, store, location FROM copies WHERE state = 'live'"))
    assert len(locations) == 4

    # Behind the daemon's back: one byte flipped in the directory copy (same size: only a
    # full read can tell), the upstream copy deleted.
    [local_file] = [path for path in store_files(daemon, "local") if path.name == "corrupted"]
    damaged = bytearray(local_file.read_bytes())
    damaged[100] ^= 0xFF
    local_file.write_bytes(bytes(damaged))
    seaweedfs.boto.delete_object(Bucket=seaweedfs.bucket, Key=locations["deleted", "sw"])

    until(lambda: metrics(daemon).get("s3orchestrator_scrub_copies_repaired_total", 0) >= 2)

    found = metrics(daemon)
    assert found['s3orchestrator_scrub_copies_damaged_total{store="local"}'] == 1
    assert found['s3orchestrator_scrub_copies_missing_total{store="sw"}'] == 1
    assert found["s3orchestrator_scrub_copies_repaired_total"] == 2
    assert found['s3orchestrator_scrub_copies_checked_total{kind="checksum"}'] >= 2
    assert found["s3orchestrator_scrub_bytes_read_total"] >= len(CORRUPTED) + len(DELETED)
    log = daemon.log()
    assert f"Scrub: copy of {BUCKET}/corrupted on store local at {locations['corrupted', 'local']} is damaged" in log
    assert f"Scrub: copy of {BUCKET}/deleted on store sw at {locations['deleted', 'sw']} is missing" in log
    # Both copies are back where they were, whole.
    assert local_file.read_bytes() == CORRUPTED
    upstream_copy = seaweedfs.boto.get_object(Bucket=seaweedfs.bucket, Key=locations["deleted", "sw"])
    assert upstream_copy["Body"].read() == DELETED
    assert sorted(metadata_rows(daemon, "SELECT key, store FROM copies WHERE state = 'live'")) == [
        ("corrupted", "local"), ("corrupted", "sw"), ("deleted", "local"), ("deleted", "sw")]
    # The real client reads both objects whole (the damaged copy is read first: read_order config).
    assert client.get_object(Bucket=BUCKET, Key="corrupted")["Body"].read() == CORRUPTED
    assert client.get_object(Bucket=BUCKET, Key="deleted")["Body"].read() == DELETED

    status = subprocess.run(
        [sys.executable, "-m", "s3orchestrator.cli", "status", "--config", str(daemon.config), "--json"],
        capture_output=True, text=True, timeout=60,
    )
    assert status.returncode == 0, status.stderr
    passes = {scrub["kind"]: scrub for scrub in json.loads(status.stdout)["scrub"]}
    assert set(passes) == {"stat", "checksum"}
    assert passes["checksum"]["finished_ms"] is not None


def scrub_command(daemon: Daemon, *args: str) -> subprocess.CompletedProcess[str]:
    """``s3orchestrator scrub`` (the installed command) against the daemon's admin API."""
    return subprocess.run(
        [sys.executable, "-m", "s3orchestrator.cli", "scrub", "--config", str(daemon.config), *args],
        capture_output=True, text=True, timeout=60,
    )


def hourly_scrub_daemon(start_daemon: Any, scrub_toml: str = "") -> Daemon:
    """A daemon on two directory stores, two replicas, passes due hourly (``scrub_toml``:
    more ``[scrub]`` keys) and the admin API, once its first (empty) passes are done."""
    admin_port = free_port()
    daemon = start_daemon(
        stores=[StoreSpec("local-a", 0), StoreSpec("local-b", 0)],
        extra_toml=(
            "\n[placement]\nreplicas = 2\n"
            "\n[scrub]\nenabled = true\ninterval = 3600\nfull_read_interval = 3600\nobjects_per_second = 200\n"
            f"{scrub_toml}"
            f'\n[admin]\nlisten = "tcp:{admin_port}:interface=127.0.0.1"\ntoken = "{ADMIN_TOKEN}"\n'
        ),
    )
    until(lambda: "Scrub: the checksum pass is done: 0 copies checked" in daemon.log())  # the first, at start
    return daemon


def test_scrub_now_begins_passes_at_once_that_were_not_due_for_an_hour(start_daemon) -> None:
    daemon = hourly_scrub_daemon(start_daemon)
    client = make_client(daemon)
    client.put_object(Bucket=BUCKET, Key="corrupted", Body=CORRUPTED)
    [local_file] = [path for path in store_files(daemon, "local-b") if path.name == "corrupted"]
    local_file.write_bytes(bytes(reversed(CORRUPTED)))

    asked = scrub_command(daemon, "--now")

    assert asked.returncode == 0, asked.stderr
    assert asked.stdout == "scrub stat pass: begins within 60 s\nscrub checksum pass: begins within 60 s\n"
    until(lambda: metrics(daemon).get("s3orchestrator_scrub_copies_repaired_total", 0) == 1, seconds=20)
    assert metrics(daemon)['s3orchestrator_scrub_copies_damaged_total{store="local-b"}'] == 1
    assert local_file.read_bytes() == CORRUPTED
    assert client.get_object(Bucket=BUCKET, Key="corrupted")["Body"].read() == CORRUPTED
    shown = scrub_command(daemon)
    assert shown.returncode == 0, shown.stderr
    assert "scrub checksum pass: idle, last finished" in shown.stdout
    assert "(2 copies checked, 1 missing or damaged)" in shown.stdout


def test_a_store_emptied_behind_the_daemons_back_is_suspended_and_its_records_kept(start_daemon) -> None:
    daemon = hourly_scrub_daemon(start_daemon, "max_findings_per_store = 2\n")
    client = make_client(daemon)
    keys = [f"k{index}" for index in range(6)]
    for key in keys:
        client.put_object(Bucket=BUCKET, Key=key, Body=DELETED)
    for path in store_files(daemon, "local-b"):  # a disk not mounted: every file gone
        path.unlink()

    asked = scrub_command(daemon, "--now")
    assert asked.returncode == 0, asked.stderr
    until(lambda: "Scrub: store local-b suspended" in daemon.log(), seconds=20)

    assert metrics(daemon)['s3orchestrator_scrub_store_suspended{store="local-b"}'] == 1
    assert metrics(daemon)['s3orchestrator_scrub_store_suspended{store="local-a"}'] == 0
    # The first two copies were let go and made again; the others' records are as they were.
    assert sorted(path.name for path in store_files(daemon, "local-b")) == ["k0", "k1"]
    assert sorted(key for (key,) in metadata_rows(
        daemon, "SELECT key FROM copies WHERE store = 'local-b' AND state = 'live'")) == keys
    assert daemon.log().count("suspended: the") == 1
    shown = scrub_command(daemon)
    assert shown.returncode == 0, shown.stderr
    assert "scrub: store local-b suspended" in shown.stdout and "scrub --now" in shown.stdout

    lifted = scrub_command(daemon, "--now")
    assert lifted.returncode == 0, lifted.stderr
    assert "scrub: store local-b no longer suspended" in lifted.stdout
