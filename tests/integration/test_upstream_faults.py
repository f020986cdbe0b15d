"""The daemon over an upstream S3 store that fails mid-request: it answers a PUT before
reading its body, or it dies while the body streams. The front daemon must close every
connection such a request leaves behind and record nothing of the object."""

from __future__ import annotations

import os
import socket
import threading
import time

import pytest

from tests.integration.conftest import metadata_rows, wait_for
from tests.integration.daemon import ACCESS_KEY, BUCKET, SECRET_KEY, Daemon, StoreSpec
from tests.integration.rawhttp import open_upload, response_status, send, signed_headers

pytestmark = pytest.mark.integration

MiB = 1024 * 1024
# Keep a store that fails every PUT in the pool: these tests count what each failure leaves.
NEVER_UNHEALTHY = (60.0, 1000)


def s3_store(name: str, endpoint: str, quota: int = 0) -> StoreSpec:
    return StoreSpec(name, quota, s3={
        "endpoint": endpoint, "bucket": BUCKET, "access_key_id": ACCESS_KEY,
        "secret_access_key": SECRET_KEY, "timeout": 5,
    })


def socket_count(daemon: Daemon) -> int:
    """Sockets the daemon's process holds open, whatever their state (a leaked one may
    be half-closed or reset by its peer and no longer listed as a connection)."""
    assert daemon.process is not None
    directory = f"/proc/{daemon.process.pid}/fd"
    count = 0
    for fd in os.listdir(directory):
        try:
            count += os.readlink(f"{directory}/{fd}").startswith("socket:")
        except OSError:
            pass  # closed while we looked
    return count


def put_unsigned(daemon: Daemon, key: str, size: int) -> int:
    """PUT ``size`` random bytes (UNSIGNED-PAYLOAD); the status."""
    path, headers = signed_headers(daemon, "PUT", key, headers={"Content-Length": str(size)}, unsigned_payload=True)
    status, _, _ = send(daemon, "PUT", path, headers, os.urandom(size))
    return status


def no_object_recorded(daemon: Daemon) -> None:
    assert wait_for(lambda: metadata_rows(daemon, "SELECT COUNT(*) FROM reservations") == [(0,)])
    assert metadata_rows(daemon, "SELECT COUNT(*) FROM objects") == [(0,)]
    assert metadata_rows(daemon, "SELECT SUM(used_bytes) FROM stores") == [(0,)]


# -- an upstream answering before it read the body -------------------------------------------------


class EarlyRefusingUpstream:
    """An S3 endpoint on loopback (a thread per connection) that answers HeadBucket, and
    every PUT with 507 InsufficientStorage as soon as its headers are in - after half a
    second without reading, so the sender's buffers are full and its body paused. It then
    reads and drops the rest, as a lingering close does, until the sender closes the
    connection: ``closed`` holds one Event per PUT, set then."""

    REFUSAL = b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>InsufficientStorage</Code></Error>"

    def __init__(self) -> None:
        self._server = socket.create_server(("127.0.0.1", 0))
        self.endpoint = f"http://127.0.0.1:{self._server.getsockname()[1]}"
        self.closed: list[threading.Event] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def stop(self) -> None:
        self._server.close()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self._server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(connection,), daemon=True).start()

    def _serve(self, connection: socket.socket) -> None:
        connection.settimeout(30)
        buffered = b""
        with connection:
            try:
                while True:
                    while b"\r\n\r\n" not in buffered:
                        data = connection.recv(65536)
                        if not data:
                            return
                        buffered += data
                    head, _, buffered = buffered.partition(b"\r\n\r\n")
                    if not head.startswith(b"PUT "):
                        connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                        continue
                    closed = threading.Event()
                    self.closed.append(closed)
                    time.sleep(0.5)
                    connection.sendall(
                        b"HTTP/1.1 507 Insufficient Storage\r\nContent-Type: application/xml\r\n"
                        b"Content-Length: %d\r\n\r\n%s" % (len(self.REFUSAL), self.REFUSAL)
                    )
                    try:
                        while connection.recv(65536):
                            pass
                    except (ConnectionResetError, BrokenPipeError):
                        pass
                    closed.set()
                    return
            except (TimeoutError, OSError):
                return


@pytest.fixture
def early_refusing_upstream() -> EarlyRefusingUpstream:
    upstream = EarlyRefusingUpstream()
    yield upstream
    upstream.stop()


def test_put_refused_before_its_body_was_read_leaves_no_connection_open(start_daemon, early_refusing_upstream):
    # Twisted hands the early answer over and calls loseConnection, which waits for the
    # body producer still registered on the connection: each such PUT used to leave a
    # socket open for good, never read or written again.
    front = start_daemon(stores=[s3_store("up", early_refusing_upstream.endpoint)], health=NEVER_UNHEALTHY)
    assert wait_for(lambda: socket_count(front) > 0)
    time.sleep(0.5)  # the startup probe's pooled connection
    before = socket_count(front)
    for index in range(3):
        assert put_unsigned(front, f"big{index}", 16 * MiB) == 503
    assert len(early_refusing_upstream.closed) == 3
    for closed in early_refusing_upstream.closed:
        assert closed.wait(5), "the front never closed its connection to the upstream"
    assert wait_for(lambda: socket_count(front) <= before, 5), (socket_count(front), before)
    no_object_recorded(front)


def test_upstream_orchestrator_out_of_room_refuses_without_leaving_connections(start_daemon):
    # The same through a real s3orchestrator upstream: its 507 comes at header time.
    upstream = start_daemon(stores=[StoreSpec("disk", MiB)])
    front = start_daemon(stores=[s3_store("up", upstream.endpoint)], health=NEVER_UNHEALTHY)
    time.sleep(0.5)
    before = socket_count(front)
    for index in range(3):
        assert put_unsigned(front, f"big{index}", 16 * MiB) == 503
    assert wait_for(lambda: socket_count(front) <= before, 5), (socket_count(front), before)
    no_object_recorded(front)
    no_object_recorded(upstream)


# -- an upstream dying mid-upload ----------------------------------------------------------------


def test_upstream_killed_mid_upload_leaves_nothing_recorded(start_daemon):
    upstream = start_daemon(stores=[StoreSpec("disk", 0)])
    front = start_daemon(stores=[s3_store("up", upstream.endpoint)])
    size = 20 * MiB
    path, headers = signed_headers(front, "PUT", "half", headers={"Content-Length": str(size)}, unsigned_payload=True)
    with open_upload(front, path, headers) as sock:
        sock.sendall(os.urandom(5 * MiB))
        # The upstream has the front's PUT (it reserved room for it): kill it mid-body.
        assert wait_for(lambda: metadata_rows(upstream, "SELECT COUNT(*) FROM reservations") == [(1,)])
        assert upstream.process is not None
        upstream.process.kill()
        upstream.process.wait()
        try:
            sock.sendall(os.urandom(size - 5 * MiB))
        except OSError:
            pass  # the front answered and gave up on the rest of the body
        assert response_status(sock) == 503
    no_object_recorded(front)
