"""``server.workers = 2``: one port served by two supervised worker processes, on
SQLite (one socket shared by the workers) and on PostgreSQL (a socket per worker),
driven by boto3; a worker killed is replaced, SIGHUP reloads every worker, SIGTERM
stops them all."""

from __future__ import annotations

import os
import signal
import socket
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.conftest import make_client
from tests.integration.daemon import BUCKET, Daemon, free_port

pytestmark = pytest.mark.integration

NEW_ACCESS_KEY = "AKID_APP1_ADDED"
NEW_SECRET_KEY = "secret-added-by-a-reload"


def children(pid: int) -> set[int]:
    """The live processes whose parent is ``pid``."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may hold spaces, so split after its closing parenthesis.
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        if int(ppid) == pid and state != "Z":
            found.add(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` if it does not in ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not seen within {timeout} s: {what}")
        time.sleep(0.1)


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def requests_by_worker(metrics_url: str) -> dict[str, float]:
    """S3 requests answered, per worker label, from the supervisor's /metrics."""
    status, body = get(metrics_url)
    assert status == 200
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            if sample.name == "s3orchestrator_requests_total":
                worker = sample.labels["worker"]
                counts[worker] = counts.get(worker, 0) + sample.value
    return counts


def worker_samples(metrics_url: str, name: str) -> dict[str, float]:
    _, body = get(metrics_url)
    return {
        sample.labels["worker"]: sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
        if sample.name == name
    }


def add_credential(daemon: Daemon) -> None:
    """A second access key for the first bucket, in the config file."""
    text = daemon.config.read_text()
    assert '[[buckets]]\nname = "app2-files"' in text
    daemon.config.write_text(text.replace(
        "[[buckets]]\nname = \"app2-files\"",
        f'[[buckets.credentials]]\naccess_key_id = "{NEW_ACCESS_KEY}"\nsecret_access_key = "{NEW_SECRET_KEY}"\n'
        '[[buckets]]\nname = "app2-files"',
    ))


def exercise(daemon: Daemon, metrics_url: str) -> None:
    """The whole life of a two-worker daemon, checked at each step."""
    assert daemon.process is not None
    supervisor = daemon.process.pid
    workers = children(supervisor)
    assert len(workers) == 2

    # Many objects through the one port, on several connections at once.
    client = make_client(daemon, max_pool_connections=8)
    bodies = {f"many/{index:03d}": os.urandom(1000 + index) for index in range(60)}
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda item: client.put_object(Bucket=BUCKET, Key=item[0], Body=item[1]), bodies.items()))
        read = dict(pool.map(
            lambda key: (key, client.get_object(Bucket=BUCKET, Key=key)["Body"].read()), sorted(bodies)
        ))
    assert read == bodies
    listed = [entry["Key"] for page in client.get_paginator("list_objects_v2").paginate(
        Bucket=BUCKET, Prefix="many/", PaginationConfig={"PageSize": 25}) for entry in page["Contents"]]
    assert listed == sorted(bodies)

    # Each new connection goes to whichever worker accepts it first: both serve.
    for _ in range(200):
        if len(requests_by_worker(metrics_url)) == 2:
            break
        make_client(daemon).head_object(Bucket=BUCKET, Key="many/000")
    served = requests_by_worker(metrics_url)
    assert set(served) == {"1", "2"} and all(count > 0 for count in served.values())

    # A worker killed is replaced; the port serves all along.
    victim = min(workers)
    os.kill(victim, signal.SIGKILL)
    for key in sorted(bodies)[:10]:
        assert make_client(daemon).get_object(Bucket=BUCKET, Key=key)["Body"].read() == bodies[key]
    wait_until(lambda: len(children(supervisor) - {victim}) == 2, "a replacement worker process")
    wait_until(lambda: get(metrics_url.replace("/metrics", "/health/ready"))[1].count(b'"workers_serving": 2') == 1,
               "both workers serving again")
    assert sum(worker_samples(metrics_url, "s3orchestrator_worker_restarts_total").values()) == 1
    assert "exited (killed by signal 9); restarting it in 1 s" in daemon.log()
    workers = children(supervisor)
    assert victim not in workers

    # SIGHUP: every worker reloads the file (a new access key works on either).
    add_credential(daemon)
    os.kill(supervisor, signal.SIGHUP)
    wait_until(lambda: daemon.log().count("Reloaded ") >= 2, "both workers reloaded")
    for _ in range(20):
        fresh = make_client(daemon, access_key=NEW_ACCESS_KEY, secret_key=NEW_SECRET_KEY)
        assert fresh.get_object(Bucket=BUCKET, Key="many/001")["Body"].read() == bodies["many/001"]

    # SIGTERM stops the workers and the supervisor; nothing keeps the port.
    daemon.stop()
    # twistd ends by raising again the signal that stopped it, as it does with one process.
    assert daemon.process.returncode in (0, -signal.SIGTERM)
    assert daemon.log().rstrip().endswith("Server Shut Down.")
    assert not [pid for pid in workers if alive(pid)]
    with socket.socket() as probe, pytest.raises(ConnectionRefusedError):
        probe.connect(("127.0.0.1", daemon.port))
    assert "s3orchestrator stopped" in daemon.log()


def metrics_toml() -> tuple[str, str]:
    port = free_port()
    return f'[metrics]\nlisten = "tcp:{port}:interface=127.0.0.1"\n', f"http://127.0.0.1:{port}/metrics"


def test_two_workers_on_sqlite_sharing_one_socket(start_daemon) -> None:
    toml, metrics_url = metrics_toml()
    daemon = start_daemon(server_toml='workers = 2\nworker_sockets = "shared"', extra_toml=toml)
    exercise(daemon, metrics_url)


def test_two_workers_on_postgresql(start_daemon, postgres_url) -> None:
    url, _ = postgres_url
    toml, metrics_url = metrics_toml()
    daemon = start_daemon(server_toml="workers = 2", extra_toml=toml, metadata_url=url)
    exercise(daemon, metrics_url)


#: New connections in the spreading test; each worker must serve at least 12 of them (by
#: the kernel's hash of each connection, one worker gets fewer about once in 10 million runs).
SPREAD_CONNECTIONS = 64
SPREAD_LEAST = 12


def test_new_connections_spread_over_both_workers(start_daemon) -> None:
    # Each worker accepts on a listening socket of its own (SO_REUSEPORT) and the kernel
    # gives each new connection to one of them: an idle worker does not win every race
    # for a shared socket, a busy one does not take a whole burst.
    toml, metrics_url = metrics_toml()
    daemon = start_daemon(server_toml="workers = 2", extra_toml=toml)
    make_client(daemon).put_object(Bucket=BUCKET, Key="spread", Body=b"x")
    before = requests_by_worker(metrics_url)
    # All connected before any is used, as a client's pool fills at its start.
    connections = [socket.create_connection(("127.0.0.1", daemon.port), timeout=10)
                   for _ in range(SPREAD_CONNECTIONS)]
    for sock in connections:
        with sock:
            sock.sendall(f"GET /{BUCKET}/spread HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode())
            while sock.recv(65536):
                pass
    served = requests_by_worker(metrics_url)
    new = {worker: served.get(worker, 0) - before.get(worker, 0) for worker in ("1", "2")}
    assert sum(new.values()) == SPREAD_CONNECTIONS
    assert min(new.values()) >= SPREAD_LEAST, new


def admin_status(path: Path, token: str) -> bytes:
    """The admin API's GET /status over its unix socket: the raw answer."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(10)
        sock.connect(str(path))
        sock.sendall(f"GET /status HTTP/1.0\r\nAuthorization: Bearer {token}\r\n\r\n".encode())
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def test_two_workers_over_tls_with_the_admin_api_on_a_unix_socket(start_daemon, tls_files, tmp_path) -> None:
    admin = tmp_path / "admin.sock"
    daemon = start_daemon(
        tls=tls_files, server_toml="workers = 2\nshutdown_timeout = 5",
        extra_toml=f'[admin]\nlisten = "unix:{admin}:mode=600"\ntoken = "admin-token"\n',
    )
    client = make_client(daemon)
    client.put_object(Bucket=BUCKET, Key="tls.bin", Body=b"over tls")
    assert client.get_object(Bucket=BUCKET, Key="tls.bin")["Body"].read() == b"over tls"
    assert admin.stat().st_mode & 0o777 == 0o600
    assert admin_status(admin, "admin-token").startswith(b"HTTP/1.0 200")

    # Worker 1 serves the admin API: once it is replaced, the same socket answers again.
    # (An idle TLS connection closes when its client answers the close: let the client go first.)
    client.close()
    assert daemon.process is not None
    first = min(children(daemon.process.pid))
    os.kill(first, signal.SIGTERM)  # it stops itself cleanly, and is restarted
    wait_until(lambda: daemon.log().count("Worker 1 serving") == 2, "worker 1 replaced")
    assert admin.stat().st_mode & 0o777 == 0o600
    assert admin_status(admin, "admin-token").startswith(b"HTTP/1.0 200")
    for _ in range(10):
        assert make_client(daemon).get_object(Bucket=BUCKET, Key="tls.bin")["Body"].read() == b"over tls"
    daemon.stop()
    assert daemon.process.returncode in (0, -signal.SIGTERM)
    assert not admin.exists()


def test_workers_stop_when_their_supervisor_is_killed(start_daemon) -> None:
    daemon = start_daemon(server_toml="workers = 2")
    assert daemon.process is not None
    workers = children(daemon.process.pid)
    assert len(workers) == 2
    daemon.process.kill()
    daemon.process.wait()
    wait_until(lambda: not [pid for pid in workers if alive(pid)], "the workers gone")
    assert daemon.log().count("Supervisor gone") == 2


def test_a_workers_reaper_leaves_the_other_workers_writes_alone(start_daemon) -> None:
    # The reaper runs often in both workers while both write: each sees the other's
    # write intents (same host, another pid) and must not take them for a crash's.
    daemon = start_daemon(server_toml="workers = 2", extra_toml="[placement]\nreaper_interval = 0.05\n")
    client = make_client(daemon, max_pool_connections=8)
    bodies = {f"big/{index:02d}": os.urandom(4 * 1024 * 1024) for index in range(24)}
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda item: client.put_object(Bucket=BUCKET, Key=item[0], Body=item[1]), bodies.items()))
        read = dict(pool.map(
            lambda key: (key, client.get_object(Bucket=BUCKET, Key=key)["Body"].read()), sorted(bodies)
        ))
    assert read == bodies
    assert "Reaper deleted" not in daemon.log()
    assert "Reaper adopted" not in daemon.log()
    client.close()
