"""Two real daemons sharing one SQLite metadata file run each cluster-wide job once:
the one holding the job's lease; the other takes over when it dies."""

from __future__ import annotations

import signal
import socket
from pathlib import Path

import pytest

from tests.integration.conftest import DaemonFactory, make_client, metadata_rows, wait_for
from tests.integration.daemon import BUCKET, UNSYNCED, Daemon, free_port

pytestmark = pytest.mark.integration

CLUSTER_JOBS = ["cleanup", "mover", "multipart_expiry", "reaper", "replicator"]
# Uploads abandoned for 1 s are aborted, checked every second; every job's round each
# second, and leases of 2 s: a dead runner's jobs are taken over within 3 s.
MULTIPART = (1.0, 1.0)
JOBS_TOML = """
[jobs]
lease = 2.0
[placement]
reaper_interval = 1.0
cleanup_interval = 1.0
replication_interval = 1.0
[movement]
interval = 1.0
"""


def instance(daemon: Daemon) -> str:
    assert daemon.process is not None
    return f"{socket.gethostname()}:{daemon.process.pid}"


def holders(daemon: Daemon) -> dict[str, str]:
    """The job leases in the metadata file (which lives in the first daemon's directory)."""
    return dict(metadata_rows(daemon, "SELECT job, owner FROM job_leases ORDER BY job"))


def expired(daemon: Daemon) -> int:
    return daemon.log().count("Expired multipart upload")


@pytest.fixture
def two_daemons(start_daemon: DaemonFactory, tmp_path: Path):
    """Two daemons on the same metadata file and stores (the first started first)."""
    first = start_daemon(multipart=MULTIPART, extra_toml=JOBS_TOML)
    directory = tmp_path / "second"
    directory.mkdir()
    port = free_port()
    config = directory / "s3orchestrator.toml"
    config.write_text(first.config.read_text().replace(f"tcp:{first.port}:", f"tcp:{port}:"))
    second = Daemon(directory, config, port, wrapper=UNSYNCED)
    second.start()
    try:
        yield first, second
    finally:
        second.stop()


def test_two_daemons_on_one_database_expire_each_upload_once(two_daemons) -> None:
    first, second = two_daemons
    assert wait_for(lambda: holders(first) == dict.fromkeys(CLUSTER_JOBS, instance(first)))
    for daemon, key in ((first, "via-first"), (second, "via-second")):
        make_client(daemon).create_multipart_upload(Bucket=BUCKET, Key=key)
    assert wait_for(lambda: metadata_rows(first, "SELECT COUNT(*) FROM uploads") == [(0,)])
    assert wait_for(lambda: expired(first) == 2)
    assert expired(second) == 0
    assert "now runs job" not in second.log()
    assert holders(first) == dict.fromkeys(CLUSTER_JOBS, instance(first))
    runner = instance(first)
    first.stop()  # a clean stop gives the leases up: the other daemon takes them at its next rounds
    for job in CLUSTER_JOBS:
        assert f"({runner}) stops running job {job}" in first.log()
    assert wait_for(lambda: holders(first) == dict.fromkeys(CLUSTER_JOBS, instance(second)))


def test_when_the_runner_dies_the_other_daemon_takes_its_jobs_over(two_daemons) -> None:
    first, second = two_daemons
    assert wait_for(lambda: holders(first) == dict.fromkeys(CLUSTER_JOBS, instance(first)))
    assert first.process is not None
    first.process.send_signal(signal.SIGKILL)  # no clean stop: its leases must run out
    first.process.wait()
    assert wait_for(lambda: holders(first) == dict.fromkeys(CLUSTER_JOBS, instance(second)), timeout=20)
    make_client(second).create_multipart_upload(Bucket=BUCKET, Key="after-takeover")
    assert wait_for(lambda: expired(second) == 1)
    assert metadata_rows(first, "SELECT COUNT(*) FROM uploads") == [(0,)]
    for job in CLUSTER_JOBS:
        assert f"({instance(second)}) now runs job {job}" in second.log()
