"""/health, /health/ready and the admin API on the real daemon, read with plain urllib."""

from __future__ import annotations

import json
import shutil
import socket
import time
import urllib.error
import urllib.request
from typing import Any

import pytest

from tests.integration.conftest import make_client
from tests.integration.daemon import BUCKET, Daemon, StoreSpec, free_port

ADMIN_TOKEN = "admin-token-for-tests-0123456789abcdef"
GiB = 1024**3


def fetch(url: str, method: str = "GET", headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """Status, headers (lower-case names) and body of one plain HTTP request."""
    request = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, {k.lower(): v for k, v in error.headers.items()}, error.read()


def fetch_json(url: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    status, response_headers, body = fetch(url, headers=headers)
    assert response_headers["content-type"] == "application/json"
    return status, json.loads(body)


def admin_toml(port: int, token: str = ADMIN_TOKEN) -> str:
    return f'[admin]\nlisten = "tcp:{port}:interface=127.0.0.1"\ntoken = "{token}"\n'


# -- on the S3 port -----------------------------------------------------------------------------


@pytest.fixture
def daemon(module_daemon: Daemon) -> Daemon:
    """The module's daemon: the tests on the S3 port only read it (and one key of their own)."""
    return module_daemon


def test_health_on_the_s3_port_is_ok_without_auth(daemon: Daemon) -> None:
    status, body = fetch_json(f"{daemon.endpoint}/health")

    assert status == 200
    assert body == {
        "status": "ok",
        "metadata": "ok",
        "stores": {
            "local-a": {"healthy": True, "last_error": None},
            "local-b": {"healthy": True, "last_error": None},
        },
    }


def test_ready_on_the_s3_port_is_200_once_listening(daemon: Daemon) -> None:
    assert fetch_json(f"{daemon.endpoint}/health/ready") == (200, {"ready": True})


def test_head_of_health_has_no_body(daemon: Daemon) -> None:
    status, headers, body = fetch(f"{daemon.endpoint}/health", method="HEAD")

    assert status == 200
    assert int(headers["content-length"]) > 0
    assert body == b""


def test_s3_clients_still_reach_their_objects_next_to_the_endpoints(daemon: Daemon) -> None:
    s3 = make_client(daemon)
    s3.put_object(Bucket=BUCKET, Key="health", Body=b"not an endpoint")

    assert s3.get_object(Bucket=BUCKET, Key="health")["Body"].read() == b"not an endpoint"
    assert fetch_json(f"{daemon.endpoint}/health")[0] == 200


def test_health_is_degraded_but_200_while_an_upstream_store_is_down(start_daemon) -> None:
    closed = free_port()
    dead = StoreSpec("dead", 0, s3={
        "endpoint": f"http://127.0.0.1:{closed}", "bucket": "nowhere",
        "access_key_id": "AKIDDEAD", "secret_access_key": "dead-secret", "timeout": 2,
    })
    daemon = start_daemon(stores=[dead, StoreSpec("local", GiB)], health=(0.2, 2))

    deadline = time.monotonic() + 15
    while True:
        status, body = fetch_json(f"{daemon.endpoint}/health")
        if body["status"] == "degraded" or time.monotonic() > deadline:
            break
        time.sleep(0.1)

    assert status == 200
    assert body["status"] == "degraded"
    assert body["stores"]["local"] == {"healthy": True, "last_error": None}
    assert body["stores"]["dead"]["healthy"] is False
    assert body["stores"]["dead"]["last_error"]
    # Liveness, not readiness: the daemon still serves (writes go to the healthy store).
    assert fetch_json(f"{daemon.endpoint}/health/ready") == (200, {"ready": True})


# -- the admin API ------------------------------------------------------------------------------


@pytest.fixture
def admin(start_daemon) -> tuple[Daemon, str]:
    port = free_port()
    daemon = start_daemon(extra_toml=admin_toml(port))
    return daemon, f"http://127.0.0.1:{port}/status"


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong-token"}, {"Authorization": f"Basic {ADMIN_TOKEN}"}],
    ids=["missing", "wrong", "basic"],
)
def test_admin_status_without_the_right_token_is_401(admin: tuple[Daemon, str], headers: dict[str, str]) -> None:
    daemon, url = admin

    assert fetch_json(url, headers) == (401, {"error": "unauthorized"})
    assert "Admin API request for /status refused" in daemon.log()
    assert ADMIN_TOKEN not in daemon.log()
    assert "wrong-token" not in daemon.log()


def test_admin_status_reports_usage_objects_and_uploads(admin: tuple[Daemon, str]) -> None:
    daemon, url = admin
    s3 = make_client(daemon)
    s3.put_object(Bucket=BUCKET, Key="a", Body=b"x" * 1234)
    s3.put_object(Bucket=BUCKET, Key="b", Body=b"y" * 66)
    s3.create_multipart_upload(Bucket=BUCKET, Key="big")

    status, body = fetch_json(url, {"Authorization": f"Bearer {ADMIN_TOKEN}"})

    assert status == 200
    assert daemon.process is not None
    # The one daemon on this database runs every cluster-wide job.
    assert {job["job"]: job["holder"] for job in body.pop("jobs")} == dict.fromkeys(
        ["cleanup", "mover", "multipart_expiry", "reaper", "replicator"], f"{socket.gethostname()}:{daemon.process.pid}"
    )
    assert body.pop("movement") == {"paused": False, "moves": [], "stores": [
        {"name": "local-a", "mode": "normal", "objects": 2, "live_bytes": 1300, "cleanup_queue": 0, "drained": False},
        {"name": "local-b", "mode": "normal", "objects": 0, "live_bytes": 0, "cleanup_queue": 0, "drained": False},
    ]}
    assert body.pop("scrub") == []  # the scrubber is off: no pass has begun
    assert body.pop("scrub_suspended") == []
    assert body == {
        "status": "ok",
        "uploads": 1,
        "cleanup_queue": 0,
        "cleanup_bytes": 0,
        "intents_pending": 0,
        "replication_queue": 0,
        "replication_oldest_ms": None,
        "objects_lost": 0,
        "stores": [
            {"name": "local-a", "healthy": True, "last_error": None, "quota_bytes": GiB, "used_bytes": 1300,
             "reserved_bytes": 0, "objects": 2, "live_bytes": 1300, "uploads": 1, "cleanup_queue": 0,
             "cleanup_bytes": 0},
            {"name": "local-b", "healthy": True, "last_error": None, "quota_bytes": 2 * GiB, "used_bytes": 0,
             "reserved_bytes": 0, "objects": 0, "live_bytes": 0, "uploads": 0, "cleanup_queue": 0,
             "cleanup_bytes": 0},
        ],
    }
    assert ADMIN_TOKEN not in daemon.log()


def test_admin_status_counts_copies_and_the_replication_queue_per_store(start_daemon) -> None:
    """Two replicas with local-b refusing writes (its directory is a file): the object
    has one live copy, on local-a, and waits in the replication queue."""
    port = free_port()
    daemon = start_daemon(extra_toml="[placement]\nreplicas = 2\nwrite_quorum = 1\nreplication_interval = 3600\n"
                                     + admin_toml(port))
    blocker = daemon.directory / "stores" / "local-b"
    # The store's health probe writes and removes a file meanwhile: try until the file wins.
    for _ in range(100):
        shutil.rmtree(blocker, ignore_errors=True)
        try:
            blocker.write_bytes(b"not a directory")
            break
        except (IsADirectoryError, FileExistsError):
            continue
    assert blocker.is_file()
    make_client(daemon).put_object(Bucket=BUCKET, Key="a", Body=b"x" * 1000)

    status, body = fetch_json(f"http://127.0.0.1:{port}/status", {"Authorization": f"Bearer {ADMIN_TOKEN}"})

    assert status == 200
    assert [(store["name"], store["objects"], store["live_bytes"]) for store in body["stores"]] == [
        ("local-a", 1, 1000), ("local-b", 0, 0)]
    assert body["replication_queue"] == 1
    assert body["replication_oldest_ms"] / 1000 == pytest.approx(time.time(), abs=60)


def test_admin_endpoints_are_not_on_the_s3_port(admin: tuple[Daemon, str]) -> None:
    daemon, _ = admin

    status, _, _ = fetch(f"{daemon.endpoint}/status", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})

    assert status != 200  # an S3 request for a bucket named "status"


def test_admin_listener_serves_only_its_endpoints(admin: tuple[Daemon, str]) -> None:
    _, url = admin

    status, _, _ = fetch(url.replace("/status", "/health"), headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})

    assert status == 404


# -- the metrics listener -----------------------------------------------------------------------


def test_metrics_listener_serves_health_too(start_daemon) -> None:
    port = free_port()
    start_daemon(extra_toml=f'[metrics]\nlisten = "tcp:{port}:interface=127.0.0.1"\n')

    status, body = fetch_json(f"http://127.0.0.1:{port}/health")
    missing, _, _ = fetch(f"http://127.0.0.1:{port}/nope")

    assert status == 200
    assert body["status"] == "ok"
    assert set(body["stores"]) == {"local-a", "local-b"}
    assert missing == 404
