"""The HTTP edge against the real daemon: what the channel refuses is an S3 error, slow
clients are let go with their reservation released, raw UTF-8 keys work, a deep backlog."""

from __future__ import annotations

import socket
import subprocess
import time
from xml.etree import ElementTree

import pytest
from botocore.exceptions import ClientError

from tests.integration.conftest import make_client, metadata_rows, store_files, wait_for
from tests.integration.daemon import BUCKET, Daemon, StoreSpec
from tests.integration.rawhttp import open_upload, signed_headers

MiB = 1024 * 1024


@pytest.fixture
def daemon(module_daemon: Daemon) -> Daemon:
    """The module's daemon, for the requests the HTTP layer refuses (the tests that look at
    reservations, usage or store files start a daemon of their own)."""
    return module_daemon


def exchange(daemon: Daemon, data: bytes) -> tuple[int, dict[str, str], ElementTree.Element]:
    """Send ``data`` on a new connection and read the response up to the server's close."""
    with socket.create_connection(("127.0.0.1", daemon.port), timeout=30) as sock:
        sock.sendall(data)
        return read_error(sock)


def read_error(sock: socket.socket) -> tuple[int, dict[str, str], ElementTree.Element]:
    """(status, lower-case headers, XML document) of the response on ``sock``; the server must close after it."""
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value for name, _, value in (line.partition(": ") for line in lines)}
    return int(status_line.split(" ")[1]), headers, ElementTree.fromstring(body)


def assert_s3_error(response: tuple[int, dict[str, str], ElementTree.Element], status: int, code: str) -> None:
    got_status, headers, document = response
    assert (got_status, document.findtext("Code")) == (status, code)
    assert headers["x-amz-request-id"] == document.findtext("RequestId")
    assert len(headers["x-amz-request-id"]) == 16
    assert headers["connection"] == "close"


def test_twenty_kb_of_metadata_is_request_header_section_too_large_for_boto3(daemon: Daemon) -> None:
    s3 = make_client(daemon)
    metadata = {f"k{n}": "v" * 1000 for n in range(20)}
    with pytest.raises(ClientError) as raised:
        s3.put_object(Bucket=BUCKET, Key="big-metadata", Body=b"x", Metadata=metadata)
    error = raised.value.response
    assert (error["ResponseMetadata"]["HTTPStatusCode"], error["Error"]["Code"]) == (
        400, "RequestHeaderSectionTooLarge")
    assert error["ResponseMetadata"]["RequestId"]


def test_three_kb_of_metadata_is_still_metadata_too_large(daemon: Daemon) -> None:
    s3 = make_client(daemon)
    with pytest.raises(ClientError) as raised:
        s3.put_object(Bucket=BUCKET, Key="some-metadata", Body=b"x", Metadata={"k": "v" * 3000})
    assert raised.value.response["Error"]["Code"] == "MetadataTooLarge"


def test_one_twenty_kb_header_is_request_header_section_too_large(daemon: Daemon) -> None:
    head = b"PUT /app1-files/k HTTP/1.1\r\nHost: h\r\nx-amz-meta-big: " + b"v" * 20000 + b"\r\n\r\n"
    response = exchange(daemon, head)
    assert_s3_error(response, 400, "RequestHeaderSectionTooLarge")


@pytest.mark.parametrize(
    "head",
    [b"PUT /app1-files/k HTTP/1.1\r\nHost: h\r\nContent-Length: abc\r\n\r\n",
     b"PUT /app1-files/k HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
     b"PUT /app1-files/k HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n",
     b"PUT /app1-files/k HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n",
     b"GET /app1-files/k HTTP/1.1\r\nHost: h\r\nNoColon\r\n\r\n",
     b"GET /app1-files/k HTTP/1.1\r\nHost: h\r\nX-A: a\x00b\r\n\r\n",
     b"GET /app1-files/k HTTP/1.1\r\n" + b"X-A: 1\r\n" * 501 + b"\r\n",
     # The start of a TLS ClientHello, as a TLS client sends it to a plain HTTP port.
     b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(32)],
    ids=["content-length-abc", "two-content-lengths", "negative-content-length", "transfer-encoding-gzip",
         "no-colon", "nul", "too-many-headers", "tls-client-hello"],
)
def test_a_malformed_request_gets_an_s3_invalid_request_then_the_connection_closes(
    daemon: Daemon, head: bytes
) -> None:
    assert_s3_error(exchange(daemon, head), 400, "InvalidRequest")


def test_an_unknown_http_version_gets_505(daemon: Daemon) -> None:
    assert_s3_error(exchange(daemon, b"GET /app1-files/k HTTP/2.0\r\nHost: h\r\n\r\n"), 505, "HTTPVersionNotSupported")


def test_a_key_sent_as_raw_utf8_in_the_path_is_stored_under_that_key(daemon: Daemon) -> None:
    key = "r\u00e9sum\u00e9/\u65e5\u672c\u8a9e.txt"
    body = b"raw utf-8 path"
    # Signed as clients sign it (the AWS-encoded path); sent on the wire unencoded.
    _, headers = signed_headers(daemon, "PUT", key, body)
    headers = {"Host": f"127.0.0.1:{daemon.port}", "Content-Length": str(len(body)), **headers}
    head = f"PUT /{BUCKET}/{key} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    with socket.create_connection(("127.0.0.1", daemon.port), timeout=30) as sock:
        sock.sendall(head.encode("utf-8") + body)
        status_line = sock.recv(65536).split(b"\r\n", 1)[0]
    assert status_line == b"HTTP/1.1 200 OK"
    assert make_client(daemon).get_object(Bucket=BUCKET, Key=key)["Body"].read() == body


def test_a_client_trickling_its_headers_gets_request_timeout(start_daemon) -> None:
    daemon = start_daemon(server_toml="header_timeout = 1")
    with socket.create_connection(("127.0.0.1", daemon.port), timeout=30) as sock:
        sock.sendall(b"PUT /app1-files/k HTTP/1.1\r\n")
        for n in range(10):
            time.sleep(0.3)
            try:
                sock.sendall(b"x-amz-meta-%d: 1\r\n" % n)
            except OSError:
                break  # closed after the answer: read it
        assert_s3_error(read_error(sock), 400, "RequestTimeout")


# The upload rate judged over 1 s windows (10 s by default): the trickling tests are answered within seconds.
SHORT_WINDOW = "upload_rate_window = 1"


def trickle_until_answered(daemon: Daemon, size: int) -> None:
    """PUT declaring ``size`` bytes, sending one byte every 2 s, until the daemon answers RequestTimeout
    (a daemon started with SHORT_WINDOW)."""
    path, headers = signed_headers(daemon, "PUT", "trickle", unsigned_payload=True,
                                   headers={"Content-Length": str(size)})
    sock = open_upload(daemon, path, headers)
    try:
        assert wait_for(lambda: metadata_rows(daemon, "SELECT COUNT(*) FROM reservations") == [(1,)])
        sock.settimeout(60)
        # One byte every 2 s: far below server.min_upload_rate (8 KiB/s by default).
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                sock.sendall(b"x")
            except OSError:
                break
            sock.settimeout(2)
            try:
                first = sock.recv(1, socket.MSG_PEEK)
            except TimeoutError:
                continue
            if first:
                break
        sock.settimeout(30)
        assert_s3_error(read_error(sock), 400, "RequestTimeout")
    finally:
        sock.close()


def test_a_trickling_upload_gets_request_timeout_and_its_reservation_is_released(start_daemon) -> None:
    daemon = start_daemon(server_toml=SHORT_WINDOW)
    trickle_until_answered(daemon, 512 * MiB)
    assert wait_for(lambda: metadata_rows(daemon, "SELECT COUNT(*) FROM reservations") == [(0,)])
    assert metadata_rows(daemon, "SELECT SUM(used_bytes) FROM stores") == [(0,)]
    assert metadata_rows(daemon, "SELECT COUNT(*) FROM objects") == [(0,)]
    assert store_files(daemon, "local-a") == [] and store_files(daemon, "local-b") == []


def test_a_trickling_upload_to_an_upstream_store_leaves_nothing_upstream(start_daemon, seaweedfs) -> None:
    bucket = seaweedfs.new_bucket()
    store = {"endpoint": seaweedfs.endpoint, "bucket": bucket, "region": seaweedfs.region,
             "access_key_id": seaweedfs.access_key, "secret_access_key": seaweedfs.secret_key}
    daemon = start_daemon(stores=[StoreSpec("seaweed", 10**9, s3=store)], server_toml=SHORT_WINDOW)
    trickle_until_answered(daemon, 512 * MiB)
    assert wait_for(lambda: metadata_rows(daemon, "SELECT COUNT(*) FROM reservations") == [(0,)])
    assert metadata_rows(daemon, "SELECT SUM(used_bytes) FROM stores") == [(0,)]
    upstream = seaweedfs.boto
    assert upstream.list_objects_v2(Bucket=bucket).get("Contents", []) == []
    assert upstream.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


@pytest.mark.parametrize(("server_toml", "backlog"), [("", "1024"), ("backlog = 777", "777")], ids=["default", "set"])
def test_the_listener_has_the_configured_backlog(start_daemon, server_toml: str, backlog: str) -> None:
    daemon = start_daemon(server_toml=server_toml)
    listening = subprocess.run(
        ["ss", "-Hltn", f"sport = :{daemon.port}"], check=True, capture_output=True, text=True
    ).stdout.split()
    # For a listening socket ss shows the backlog in the Send-Q column.
    assert listening[0] == "LISTEN" and listening[2] == backlog
