"""Large GETs from an S3 store (SeaweedFS over plain HTTP) relayed by splice(2): whole and
ranged bodies byte for byte, with egress and the access log counting them; a client
leaving mid-body and an upstream dying mid-body release the pipe and the connections (the
body resumed from another copy if there is one); a TLS client is served the ordinary way."""

from __future__ import annotations

import collections
import os
import socket

import pytest

from tests.integration.conftest import make_client, wait_for
from tests.integration.daemon import BUCKET, Daemon
from tests.integration.rawhttp import signed_headers
from tests.integration.test_caps import egress
from tests.integration.test_upstream_stores import spec

pytestmark = pytest.mark.integration

MiB = 1024 * 1024
SIZE = 24 * MiB  # well above s3_splice.SPLICE_MIN_BYTES


def descriptors(daemon: Daemon) -> collections.Counter[str]:
    """The daemon's open descriptors by kind ("pipe", "socket", "other")."""
    assert daemon.process is not None
    directory = f"/proc/{daemon.process.pid}/fd"
    kinds: collections.Counter[str] = collections.Counter()
    for fd in os.listdir(directory):
        try:
            target = os.readlink(f"{directory}/{fd}")
        except OSError:
            continue  # closed while we looked
        kinds[target.split(":")[0] if target.startswith(("pipe:", "socket:")) else "other"] += 1
    return kinds


def start_get(daemon: Daemon, key: str, wanted: int) -> tuple[socket.socket, int, bytes]:
    """A raw GET of ``key`` whose first ``wanted`` bytes (head included) are read, the rest
    left unread; (the socket, the Content-Length, the body bytes read)."""
    path, headers = signed_headers(daemon, "GET", key)
    sock = socket.create_connection(("127.0.0.1", daemon.port), timeout=30)
    head = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{daemon.port}\r\n" + "".join(
        f"{name}: {value}\r\n" for name, value in headers.items()) + "\r\n"
    sock.sendall(head.encode("latin-1"))
    received = b""
    while len(received) < wanted:
        chunk = sock.recv(256 * 1024)
        assert chunk, f"connection closed after {len(received)} bytes"
        received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    assert status_line.split()[1] == "200", received[:500]
    length = next(int(line.split(":", 1)[1]) for line in lines if line.lower().startswith("content-length:"))
    return sock, length, body


def read_to_end(sock: socket.socket, limit: int) -> bytes:
    """What arrives until the daemon closes the connection or ``limit`` bytes came."""
    chunks, total = [], 0
    try:
        while total < limit and (chunk := sock.recv(1024 * 1024)):
            chunks.append(chunk)
            total += len(chunk)
    except ConnectionResetError:
        pass
    return b"".join(chunks)


@pytest.fixture
def relay(start_daemon, seaweedfs):
    """A daemon with one store on the session's SeaweedFS (a fresh bucket)."""
    return start_daemon(stores=[spec(seaweedfs, "seaweed", 0, seaweedfs.new_bucket())])


def test_a_large_object_and_a_range_of_it_come_back_byte_for_byte(relay) -> None:
    s3 = make_client(relay)
    body = os.urandom(SIZE)
    s3.put_object(Bucket=BUCKET, Key="big", Body=body)
    before = egress(relay).get("seaweed", 0)

    assert s3.get_object(Bucket=BUCKET, Key="big")["Body"].read() == body
    first, last = 1000, 20 * MiB
    got = s3.get_object(Bucket=BUCKET, Key="big", Range=f"bytes={first}-{last}")
    assert got["ContentRange"] == f"bytes {first}-{last}/{SIZE}"
    assert got["Body"].read() == body[first:last + 1]

    assert egress(relay)["seaweed"] - before == SIZE + last - first + 1
    log = relay.log()
    assert f"GetObject {BUCKET}/big 200 {SIZE}B" in log
    assert f"GetObject {BUCKET}/big 206 {last - first + 1}B" in log


def test_a_client_leaving_mid_body_releases_the_splice_and_the_daemon_keeps_serving(relay) -> None:
    s3 = make_client(relay)
    body = os.urandom(SIZE)
    s3.put_object(Bucket=BUCKET, Key="big", Body=body)
    assert s3.get_object(Bucket=BUCKET, Key="big")["Body"].read() == body
    before = descriptors(relay)

    sock, length, _ = start_get(relay, "big", MiB)
    assert length == SIZE
    # The client reads no more: the body waits in a pipe of the splice, paused.
    assert wait_for(lambda: descriptors(relay)["pipe"] == before["pipe"] + 2)
    sock.close()

    assert wait_for(lambda: descriptors(relay)["pipe"] == before["pipe"]
                    and sum(descriptors(relay).values()) <= sum(before.values()))
    assert s3.get_object(Bucket=BUCKET, Key="big")["Body"].read() == body


def test_an_upstream_dying_mid_body_ends_the_response_short_as_before(start_daemon, start_upstream) -> None:
    seaweedfs = start_upstream("seaweedfs")
    daemon = start_daemon(stores=[spec(seaweedfs, "seaweed", 0, seaweedfs.new_bucket())])
    s3 = make_client(daemon)
    # Larger than what the sockets and the pipe between SeaweedFS and the client can hold.
    s3.put_object(Bucket=BUCKET, Key="big", Body=os.urandom(64 * MiB))
    before = descriptors(daemon)

    sock, length, read = start_get(daemon, "big", MiB)
    assert wait_for(lambda: descriptors(daemon)["pipe"] == before["pipe"] + 2)
    seaweedfs.process.kill()
    seaweedfs.process.wait()
    with sock:
        rest = read_to_end(sock, length)
    # Headers were out: the only signal left is a connection closed before Content-Length.
    assert len(read) + len(rest) < length
    assert wait_for(lambda: "Streaming GetObject response failed" in daemon.log())
    assert wait_for(lambda: descriptors(daemon)["pipe"] == before["pipe"])


def test_a_tls_client_gets_a_large_object_the_ordinary_way(start_daemon, seaweedfs, tls_files) -> None:
    daemon = start_daemon(stores=[spec(seaweedfs, "seaweed", 0, seaweedfs.new_bucket())], tls=tls_files)
    s3 = make_client(daemon)
    body = os.urandom(SIZE)
    s3.put_object(Bucket=BUCKET, Key="big", Body=body)
    assert s3.get_object(Bucket=BUCKET, Key="big")["Body"].read() == body
    got = s3.get_object(Bucket=BUCKET, Key="big", Range=f"bytes=5-{SIZE - 2}")
    assert got["Body"].read() == body[5:SIZE - 1]


def test_a_copy_dying_mid_splice_is_resumed_from_the_other_copy(start_daemon, start_upstream, seaweedfs) -> None:
    first = start_upstream("seaweedfs")
    daemon = start_daemon(
        stores=[spec(first, "first", 0, first.new_bucket()), spec(seaweedfs, "second", 0, seaweedfs.new_bucket())],
        extra_toml='\n[placement]\nreplicas = 2\nwrite_quorum = 2\nread_order = "config"\n',
    )
    s3 = make_client(daemon)
    body = os.urandom(64 * MiB)
    s3.put_object(Bucket=BUCKET, Key="big", Body=body)
    before = descriptors(daemon)

    sock, length, read = start_get(daemon, "big", MiB)
    assert wait_for(lambda: descriptors(daemon)["pipe"] == before["pipe"] + 2)
    first.process.kill()
    first.process.wait()
    with sock:
        rest = read_to_end(sock, length - len(read))
    assert read + rest == body
    assert "Resumed the read from store second" in daemon.log()
    assert wait_for(lambda: descriptors(daemon)["pipe"] == before["pipe"])
