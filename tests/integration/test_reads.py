"""Reads with the real daemon: failover between an object's copies, a missing copy let
go and made again by the replicator, and degraded mode while the metadata database is
unavailable.

The SeaweedFS test makes its second copy by hand (the object PUT on "sw-a", its bytes
put at the same location on "sw-b" and a live row added to the copies table, as
replication would leave them), so that the copy killed mid-download is known.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import pytest
from botocore.exceptions import ClientError

from tests.integration.conftest import make_client, metadata_execute, metadata_rows, store_files
from tests.integration.daemon import BUCKET, UNSYNCED, Daemon, StoreSpec, free_port, write_config
from tests.integration.metadata_engines import MetadataPlaces, write_locked
from tests.integration.upstreams import Upstream

MiB = 1024 * 1024
DATA = bytes(range(256)) * 4096  # 1 MiB


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read()


def health(daemon: Daemon) -> Any:
    return json.loads(fetch(f"{daemon.endpoint}/health"))


def until(condition: Any, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.1)


@pytest.fixture
def daemon(tmp_path: Path, metadata: MetadataPlaces) -> Iterator[Daemon]:
    """Two directory stores; a database locked for 1 s is unavailable; probes every 0.3 s."""
    port = free_port()
    config = write_config(
        tmp_path, port, [StoreSpec("local-a"), StoreSpec("local-b")], health=(0.3, 3),
        metadata_busy_timeout=0.2, metadata_unavailable_after=1.0, metadata_url=metadata.url(tmp_path),
    )
    started = Daemon(tmp_path, config, port, wrapper=UNSYNCED)
    started.start()
    yield started
    started.stop()


def s3_store(upstream: Upstream, name: str, bucket: str | None = None) -> StoreSpec:
    """An s3 store of the daemon on ``upstream``'s bucket (``bucket``, else its default one)."""
    return StoreSpec(name, 0, s3={
        "endpoint": upstream.endpoint, "bucket": bucket or upstream.bucket, "region": upstream.region,
        "access_key_id": upstream.access_key, "secret_access_key": upstream.secret_key, "timeout": 5})


def object_file(daemon: Daemon, store: str, key: str) -> Path:
    return daemon.directory / "stores" / store / f"{BUCKET}.d" / key


def used(daemon: Daemon) -> dict[str, tuple[int, int]]:
    """{store: (used_bytes, object_count)}."""
    rows = metadata_rows(daemon, "SELECT name, used_bytes, object_count FROM stores")
    return {name: (size, count) for name, size, count in rows}


def test_a_missing_copy_is_read_around_then_made_again_by_the_replicator(
    tmp_path: Path, metadata: MetadataPlaces
) -> None:
    """Two replicas; local-a's copy deleted behind the daemon's back: the GET is served from
    local-b, the lost copy is let go (its location queued for cleanup, the object queued
    for replication) and the replicator puts the bytes back on local-a, usage exact."""
    port = free_port()
    config = write_config(
        tmp_path, port, [StoreSpec("local-a"), StoreSpec("local-b")], health=(0.3, 3),
        extra_toml="\n[placement]\nreplicas = 2\nread_order = \"config\"\nreplication_interval = 1\n"
                   "cleanup_interval = 1\n",
        metadata_url=metadata.url(tmp_path),
    )
    daemon = Daemon(tmp_path, config, port, wrapper=UNSYNCED)
    daemon.start()
    try:
        client = make_client(daemon)
        client.put_object(Bucket=BUCKET, Key="doc", Body=DATA)
        assert sorted(metadata_rows(daemon, "SELECT store FROM copies WHERE key = 'doc'")) == [
            ("local-a",), ("local-b",)]
        object_file(daemon, "local-a", "doc").unlink()  # behind the daemon's back

        assert client.get_object(Bucket=BUCKET, Key="doc")["Body"].read() == DATA

        until(lambda: object_file(daemon, "local-a", "doc").exists()
              and object_file(daemon, "local-a", "doc").read_bytes() == DATA)
        until(lambda: sorted(metadata_rows(daemon, "SELECT store, state FROM copies WHERE key = 'doc'")) == [
            ("local-a", "live"), ("local-b", "live")])
        until(lambda: metadata_rows(daemon, "SELECT COUNT(*) FROM cleanup") == [(0,)])
        assert metadata_rows(daemon, "SELECT COUNT(*) FROM replication") == [(0,)]
        assert used(daemon) == {"local-a": (len(DATA), 1), "local-b": (len(DATA), 1)}
        assert client.get_object(Bucket=BUCKET, Key="doc", Range="bytes=5-9")["Body"].read() == DATA[5:10]
        metrics = fetch(f"{daemon.endpoint}/metrics").decode()
        assert 's3orchestrator_read_copies_missing_total{store="local-a"} 1.0' in metrics
        assert 's3orchestrator_read_failovers_total{store="local-a"} 1.0' in metrics
        assert 's3orchestrator_replicated_copies_total 1.0' in metrics
        assert f"Copy of {BUCKET}/doc on store local-a at {BUCKET}/doc is missing or damaged" in daemon.log()
    finally:
        daemon.stop()


def test_degraded_mode_while_the_database_stays_locked(daemon: Daemon) -> None:
    """"Unavailable" here: another process holds the write lock for longer than
    metadata.unavailable_after (1 s); requests failing busy all that time flip the daemon
    into degraded mode, and the health job's probe ends it once the lock is gone."""
    client = make_client(daemon)
    client.put_object(Bucket=BUCKET, Key="kept", Body=DATA)
    with write_locked(daemon.config):
        codes: list[str] = []

        def refused_as_unavailable() -> bool:
            with pytest.raises(ClientError) as refused:
                client.put_object(Bucket=BUCKET, Key="refused", Body=b"x")
            codes.append(refused.value.response["Error"]["Code"])
            return codes[-1] == "ServiceUnavailable"

        until(refused_as_unavailable)
        assert set(codes) <= {"SlowDown", "ServiceUnavailable"}

        got = client.get_object(Bucket=BUCKET, Key="kept")
        assert got["Body"].read() == DATA and got["ContentLength"] == len(DATA)
        assert client.head_object(Bucket=BUCKET, Key="kept")["ContentLength"] == len(DATA)
        for refused_call in (
            lambda: client.list_objects_v2(Bucket=BUCKET),
            lambda: client.delete_object(Bucket=BUCKET, Key="kept"),
        ):
            with pytest.raises(ClientError) as error:
                refused_call()
            assert error.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
        assert health(daemon)["status"] == "degraded" and health(daemon)["metadata"] == "unavailable"
        assert "s3orchestrator_metadata_up 0.0" in fetch(f"{daemon.endpoint}/metrics").decode()

    until(lambda: health(daemon)["metadata"] == "ok")
    client.put_object(Bucket=BUCKET, Key="later", Body=b"later bytes")
    assert client.get_object(Bucket=BUCKET, Key="later")["Body"].read() == b"later bytes"
    assert [path.name for path in store_files(daemon, "local-a")] == ["kept", "later"]
    log = daemon.log()
    assert log.count("Metadata database unavailable") == 1
    assert log.count("Metadata database answers again") == 1


ADMIN_TOKEN = "admin-token-for-tests-0123456789abcdef"


def admin_toml(port: int) -> str:
    return f'[admin]\nlisten = "tcp:{port}:interface=127.0.0.1"\ntoken = "{ADMIN_TOKEN}"\n'


def admin_status(port: int) -> tuple[int, Any]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/status",
                                     headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.loads(error.read())


def status_command(daemon: Daemon, *args: str) -> subprocess.CompletedProcess[str]:
    """``s3orchestrator status`` (the installed command) against the daemon's admin API."""
    return subprocess.run(
        [sys.executable, "-m", "s3orchestrator.cli", "status", "--config", str(daemon.config), *args],
        capture_output=True, text=True, timeout=60,
    )


def job_runs(daemon: Daemon, job: str) -> float:
    """A job's finished runs, as /metrics counts them."""
    prefix = f's3orchestrator_job_runs_total{{job="{job}"}} '
    for line in fetch(f"{daemon.endpoint}/metrics").decode().splitlines():
        if line.startswith(prefix):
            return float(line.removeprefix(prefix))
    return 0.0


def test_an_object_whose_every_copy_is_gone_is_lost_visibly_and_not_retried(start_daemon) -> None:
    """Two replicas, both files moved away behind the daemon's back: GET answers 500
    saying the data is lost, the loss is logged by key, counted in /metrics, the admin
    status and the CLI, and the replicator leaves it alone; the last copy is kept (HEAD,
    which asks no store, still answers), so once its file is back GET serves it again;
    an overwrite ends the loss."""
    admin_port = free_port()
    daemon = start_daemon(
        stores=[StoreSpec("local-a"), StoreSpec("local-b")], health=(0.3, 3),
        extra_toml="\n[placement]\nreplicas = 2\nreplication_interval = 1\ncleanup_interval = 1\n\n"
                   + admin_toml(admin_port),
    )
    try:
        client = make_client(daemon)
        client.put_object(Bucket=BUCKET, Key="doc", Body=DATA)
        away = {store: daemon.directory / f"away-{store}" for store in ("local-a", "local-b")}
        for store, moved in away.items():
            object_file(daemon, store, "doc").rename(moved)  # behind the daemon's back

        with pytest.raises(ClientError) as lost:
            client.get_object(Bucket=BUCKET, Key="doc")
        error = lost.value.response
        assert (error["ResponseMetadata"]["HTTPStatusCode"], error["Error"]["Code"]) == (500, "InternalError")
        assert "missing or damaged on every store" in error["Error"]["Message"]
        until(lambda: metadata_rows(daemon, "SELECT bucket, key FROM lost_objects") == [(BUCKET, "doc")])
        # One copy let go (another was live then), the last one kept: live, not queued for cleanup.
        ((kept,),) = metadata_rows(daemon, "SELECT store FROM copies WHERE key = 'doc' AND state = 'live'")
        let_go = "local-b" if kept == "local-a" else "local-a"
        until(lambda: metadata_rows(daemon, "SELECT store FROM cleanup") == [])
        assert used(daemon) == {kept: (len(DATA), 1), let_go: (0, 0)}
        assert client.head_object(Bucket=BUCKET, Key="doc")["ContentLength"] == len(DATA)
        assert [obj["Key"] for obj in client.list_objects_v2(Bucket=BUCKET)["Contents"]] == ["doc"]

        log = daemon.log()
        assert (f"Object {BUCKET}/doc is lost: its only live copy (store {kept}) is missing or damaged;"
                " the copy is kept and reads will try it again") in log
        assert f"Every copy of {BUCKET}/doc is missing or damaged" in log
        assert "s3orchestrator_objects_lost 1.0" in fetch(f"{daemon.endpoint}/metrics").decode()
        status, document = admin_status(admin_port)
        assert (status, document["objects_lost"], document["replication_queue"]) == (200, 1, 0)
        # Nothing to copy from: two replicator runs later, still not queued nor retried.
        runs = job_runs(daemon, "replicator")
        until(lambda: job_runs(daemon, "replicator") >= runs + 2)
        assert metadata_rows(daemon, "SELECT COUNT(*) FROM replication") == [(0,)]
        assert "Could not replicate" not in daemon.log()
        shown = status_command(daemon)
        assert shown.returncode == 0, shown.stderr
        assert "LOST: 1 object with no live copy left" in shown.stdout
        with pytest.raises(ClientError) as still:
            client.get_object(Bucket=BUCKET, Key="doc")  # tried again: still missing
        assert still.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500

        away[kept].rename(object_file(daemon, kept, "doc"))  # its store hands it back
        assert client.get_object(Bucket=BUCKET, Key="doc")["Body"].read() == DATA

        client.put_object(Bucket=BUCKET, Key="doc", Body=b"written again")
        assert client.get_object(Bucket=BUCKET, Key="doc")["Body"].read() == b"written again"
        assert metadata_rows(daemon, "SELECT COUNT(*) FROM lost_objects") == [(0,)]
        assert admin_status(admin_port)[1]["objects_lost"] == 0
    finally:
        daemon.stop()


def test_degraded_mode_while_the_database_file_is_damaged(tmp_path: Path) -> None:
    """The SQLite file's pages overwritten with garbage under the running daemon (a
    write by another connection first, so that the daemon's page cache is dropped):
    GET and HEAD are served from the stores' default locations, PUT gets 503
    ServiceUnavailable, /health, the admin API and the CLI say the metadata is
    unavailable; once the file is restored, the daemon recovers by itself."""
    port, admin_port = free_port(), free_port()
    config = write_config(tmp_path, port, [StoreSpec("local-a"), StoreSpec("local-b")], health=(0.3, 3),
                          extra_toml=admin_toml(admin_port))
    daemon = Daemon(tmp_path, config, port, wrapper=UNSYNCED)
    daemon.start()
    path = daemon.directory / "metadata.sqlite"
    try:
        client = make_client(daemon)
        client.put_object(Bucket=BUCKET, Key="kept", Body=DATA)

        def other_write() -> None:
            with sqlite3.connect(path, timeout=10) as other:
                other.execute("CREATE TABLE test_marker (a INTEGER)")
                other.execute("DROP TABLE test_marker")

        with sqlite3.connect(path, timeout=10) as other:
            other.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        other_write()
        original = path.read_bytes()
        with path.open("r+b") as damaged:
            damaged.write(b"garbage!" * (len(original) // 8))

        got = client.get_object(Bucket=BUCKET, Key="kept")
        assert got["Body"].read() == DATA and got["ContentLength"] == len(DATA)
        assert client.head_object(Bucket=BUCKET, Key="kept")["ContentLength"] == len(DATA)
        with pytest.raises(ClientError) as refused:
            client.put_object(Bucket=BUCKET, Key="refused", Body=b"x")
        assert refused.value.response["Error"]["Code"] == "ServiceUnavailable"
        assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
        assert health(daemon)["metadata"] == "unavailable"
        status, document = admin_status(admin_port)
        assert (status, document["error"], document["metadata"]) == (503, "metadata database unavailable",
                                                                      "unavailable")
        shown = status_command(daemon)
        assert shown.returncode == 1
        assert "is in degraded mode: metadata database unavailable" in shown.stderr
        assert "Traceback" not in shown.stderr + daemon.log()
    finally:
        if path.read_bytes() != original:
            path.write_bytes(original)  # the same inode: the daemon's connections keep it
            other_write()  # drops the daemon's cached (garbage) pages

    until(lambda: health(daemon)["metadata"] == "ok")
    client.put_object(Bucket=BUCKET, Key="later", Body=b"later bytes")
    assert client.get_object(Bucket=BUCKET, Key="later")["Body"].read() == b"later bytes"
    assert admin_status(admin_port)[0] == 200
    assert [path.name for path in store_files(daemon, "local-a")] == ["kept", "later"]
    assert metadata_rows(daemon, "PRAGMA integrity_check") == [("ok",)]
    log = daemon.log()
    assert log.count("Metadata database unavailable") == 1
    assert log.count("Metadata database answers again") == 1
    daemon.stop()


def test_a_seaweedfs_killed_mid_download_is_replaced_by_the_other_copy(start_daemon, start_upstream, seaweedfs,
                                                                       tmp_path):
    """200 MiB on SeaweedFS "sw-a" and, made by hand (module docstring), on "sw-b"; "sw-a"
    is killed after the client read 32 MiB: the client still receives one complete body
    with the right MD5 (the daemon resumed from "sw-b" with a Range), and a fresh GET
    works with "sw-a" down."""
    # "sw-a" on a private SeaweedFS (killed), "sw-b" on a bucket of its own on the session's.
    first, second, second_bucket = start_upstream("seaweedfs"), seaweedfs, seaweedfs.new_bucket()
    daemon = start_daemon(stores=[s3_store(first, "sw-a"), s3_store(second, "sw-b", second_bucket)])
    source = tmp_path / "big.bin"
    md5 = hashlib.md5()
    with source.open("wb") as out:
        for block in range(200):
            chunk = block.to_bytes(4, "big") * (MiB // 4)
            md5.update(chunk)
            out.write(chunk)
    client = make_client(daemon, read_timeout=120)
    with source.open("rb") as body:
        client.put_object(Bucket=BUCKET, Key="big", Body=body)
    location = metadata_rows(daemon, "SELECT location FROM copies WHERE key = 'big'")[0][0]
    with source.open("rb") as body:
        second.boto.put_object(Bucket=second_bucket, Key=location, Body=body)
    metadata_execute(
        daemon,
        "INSERT INTO copies (bucket, key, store, location, state, size, created_ms)"
        " SELECT bucket, key, 'sw-b', location, 'live', size, created_ms FROM copies WHERE key = 'big'",
    )

    streamed = client.get_object(Bucket=BUCKET, Key="big")["Body"]
    received = hashlib.md5()
    size = 0
    while chunk := streamed.read(MiB):
        received.update(chunk)
        size += len(chunk)
        if size == 32 * MiB:
            first.stop()

    assert size == 200 * MiB and received.hexdigest() == md5.hexdigest()
    assert "Resumed the read from store sw-b" in daemon.log()
    again = hashlib.md5(client.get_object(Bucket=BUCKET, Key="big")["Body"].read()).hexdigest()
    assert again == md5.hexdigest()
