"""Authentication errors, bad bodies, quota and size limits: correct S3 errors, nothing stored."""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time

import pytest
from botocore.exceptions import ClientError

from tests.integration.conftest import make_client, metadata_rows, store_files
from tests.integration.daemon import BUCKET, OTHER_BUCKET, StoreSpec
from tests.integration.rawhttp import open_upload, send, signed_headers

MiB = 1024 * 1024


def error_code(raised: pytest.ExceptionInfo) -> str:
    return raised.value.response["Error"]["Code"]


def assert_nothing_stored(daemon, stores=("local-a", "local-b")):
    assert metadata_rows(daemon, "SELECT COUNT(*) FROM objects") == [(0,)]
    assert metadata_rows(daemon, "SELECT COUNT(*) FROM reservations") == [(0,)]
    assert metadata_rows(daemon, "SELECT SUM(used_bytes) FROM stores") == [(0,)]
    for store in stores:
        assert store_files(daemon, store) == []


def test_wrong_secret_is_signature_does_not_match(daemon):
    s3 = make_client(daemon, secret_key="not-the-secret")
    with pytest.raises(ClientError) as raised:
        s3.put_object(Bucket=BUCKET, Key="k", Body=b"x")
    assert error_code(raised) == "SignatureDoesNotMatch"
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert_nothing_stored(daemon)


def test_unknown_access_key_is_invalid_access_key_id(daemon):
    s3 = make_client(daemon, access_key="AKID_NOBODY")
    with pytest.raises(ClientError) as raised:
        s3.get_object(Bucket=BUCKET, Key="k")
    assert error_code(raised) == "InvalidAccessKeyId"


def test_other_bucket_is_access_denied(daemon):
    s3 = make_client(daemon)
    with pytest.raises(ClientError) as raised:
        s3.put_object(Bucket=OTHER_BUCKET, Key="k", Body=b"x")
    assert error_code(raised) == "AccessDenied"
    assert_nothing_stored(daemon)


def test_error_body_is_s3_xml_with_request_id(daemon):
    path, headers = signed_headers(daemon, "GET", "missing")
    status, response_headers, body = send(daemon, "GET", path, headers)
    assert status == 404
    request_id = response_headers["x-amz-request-id"]
    assert body.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>NoSuchKey</Code>')
    assert f"<RequestId>{request_id}</RequestId>".encode() in body
    assert b"<Resource>/app1-files/missing</Resource>" in body


def test_tampered_body_is_content_sha256_mismatch_and_not_stored(daemon):
    body = os.urandom(256 * 1024)
    path, headers = signed_headers(daemon, "PUT", "tampered", body)
    tampered = body[:-1] + bytes([body[-1] ^ 1])
    status, _, response = send(daemon, "PUT", path, headers, tampered)
    assert status == 400
    assert b"<Code>XAmzContentSHA256Mismatch</Code>" in response
    assert_nothing_stored(daemon)


def test_wrong_content_md5_is_bad_digest_and_not_stored(daemon):
    s3 = make_client(daemon)
    with pytest.raises(ClientError) as raised:
        s3.put_object(Bucket=BUCKET, Key="k", Body=b"payload", ContentMD5="1B2M2Y8AsgTpgAmY7PhCfg==")
    assert error_code(raised) == "BadDigest"
    assert_nothing_stored(daemon)


def test_quota_full_is_507_and_nothing_stored(start_daemon):
    daemon = start_daemon(stores=[StoreSpec("local-a", 1000), StoreSpec("local-b", 2000)])
    s3 = make_client(daemon)
    with pytest.raises(ClientError) as raised:
        s3.put_object(Bucket=BUCKET, Key="big", Body=b"x" * 2001)
    assert error_code(raised) == "InsufficientStorage"
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 507
    assert_nothing_stored(daemon)


def test_507_is_answered_before_the_body_is_sent(start_daemon):
    daemon = start_daemon(stores=[StoreSpec("local-a", 1000)])
    body_size = 50 * MiB
    path, headers = signed_headers(
        daemon, "PUT", "big", headers={"Content-Length": str(body_size)}, unsigned_payload=True)
    headers["Expect"] = "100-continue"
    sock = open_upload(daemon, path, headers)
    reply = sock.recv(65536)
    sock.close()
    assert reply.startswith(b"HTTP/1.1 507 ")
    assert b"<Code>InsufficientStorage</Code>" in reply
    assert_nothing_stored(daemon, stores=("local-a",))


def test_object_over_max_object_size_is_entity_too_large(start_daemon):
    daemon = start_daemon(max_object_size=1000)
    s3 = make_client(daemon)
    with pytest.raises(ClientError) as raised:
        s3.put_object(Bucket=BUCKET, Key="big", Body=b"x" * 1001)
    assert error_code(raised) == "EntityTooLarge"
    s3.put_object(Bucket=BUCKET, Key="fits", Body=b"x" * 1000)


def test_client_disconnect_mid_upload_leaves_nothing(daemon):
    path, headers = signed_headers(
        daemon, "PUT", "half", headers={"Content-Length": str(10 * MiB)}, unsigned_payload=True)
    sock = open_upload(daemon, path, headers)
    sock.sendall(os.urandom(3 * MiB))
    time.sleep(0.3)
    sock.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if metadata_rows(daemon, "SELECT COUNT(*) FROM reservations") == [(0,)] and not store_files(daemon, "local-a"):
            break
        time.sleep(0.1)
    assert_nothing_stored(daemon)
    # The daemon still serves requests afterwards.
    make_client(daemon).put_object(Bucket=BUCKET, Key="after", Body=b"ok")


def test_pack_fills_stores_in_config_order(start_daemon):
    daemon = start_daemon(stores=[StoreSpec("local-a", 3000), StoreSpec("local-b", 10000)], routing_strategy="pack")
    s3 = make_client(daemon)
    for index in range(5):
        s3.put_object(Bucket=BUCKET, Key=f"obj{index}", Body=b"x" * 1000)
    placement = dict(metadata_rows(daemon, "SELECT key, store FROM objects"))
    assert placement == {"obj0": "local-a", "obj1": "local-a", "obj2": "local-a", "obj3": "local-b", "obj4": "local-b"}
    assert metadata_rows(daemon, "SELECT name, used_bytes FROM stores ORDER BY name") == [
        ("local-a", 3000), ("local-b", 2000)]


def test_spread_balances_used_ratio(start_daemon):
    daemon = start_daemon(stores=[StoreSpec("local-a", 10000), StoreSpec("local-b", 30000)], routing_strategy="spread")
    s3 = make_client(daemon)
    for index in range(8):
        s3.put_object(Bucket=BUCKET, Key=f"obj{index}", Body=b"x" * 1000)
    assert metadata_rows(daemon, "SELECT name, used_bytes FROM stores ORDER BY name") == [
        ("local-a", 2000), ("local-b", 6000)]


def test_concurrent_puts_of_one_key_leave_one_consistent_object(daemon):
    bodies = [bytes([i]) * (MiB + i) for i in range(6)]
    errors = []

    def put(body):
        try:
            make_client(daemon).put_object(Bucket=BUCKET, Key="contended", Body=body)
        except Exception as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=put, args=(body,)) for body in bodies]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    got = make_client(daemon).get_object(Bucket=BUCKET, Key="contended")
    data = got["Body"].read()
    assert data in bodies
    assert got["ETag"] == f'"{hashlib.md5(data).hexdigest()}"'
    assert metadata_rows(daemon, "SELECT size FROM objects") == [(len(data),)]
    assert metadata_rows(daemon, "SELECT SUM(used_bytes), SUM(object_count) FROM stores") == [(len(data), 1)]
    assert metadata_rows(daemon, "SELECT COUNT(*) FROM reservations") == [(0,)]
    assert len(store_files(daemon, "local-a")) + len(store_files(daemon, "local-b")) == 1


def test_put_without_content_length_is_missing_content_length(daemon):
    path, headers = signed_headers(daemon, "PUT", "no-length", unsigned_payload=True)
    headers.pop("Content-Length", None)
    sock = open_upload(daemon, path, headers)
    reply = sock.recv(65536)
    sock.close()
    assert reply.startswith(b"HTTP/1.1 411 "), reply
    assert b"<Code>MissingContentLength</Code>" in reply
    assert_nothing_stored(daemon)


def test_early_error_without_expect_still_reaches_the_client(daemon):
    # No Expect: 100-continue, so the client is already sending a body we refuse
    # at header time; the lingering close must let it read the error, not a reset.
    path, headers = signed_headers(daemon, "PUT", "k", headers={"Content-Length": str(8 * MiB)},
                                   unsigned_payload=True, secret_key="wrong-secret")
    status, _, body = send(daemon, "PUT", path, headers, os.urandom(8 * MiB))
    assert status == 403
    assert b"<Code>SignatureDoesNotMatch</Code>" in body
    assert_nothing_stored(daemon)


def test_old_object_stays_readable_until_overwrite_commits(daemon):
    s3 = make_client(daemon)
    s3.put_object(Bucket=BUCKET, Key="doc", Body=b"old version")
    new_body = os.urandom(2 * MiB)
    path, headers = signed_headers(daemon, "PUT", "doc", new_body, headers={"Content-Length": str(len(new_body))})
    sock = open_upload(daemon, path, headers)
    sock.sendall(new_body[: MiB])
    time.sleep(0.2)
    assert s3.get_object(Bucket=BUCKET, Key="doc")["Body"].read() == b"old version"
    sock.sendall(new_body[MiB:])
    reply = sock.recv(65536)
    sock.close()
    assert reply.startswith(b"HTTP/1.1 200 "), reply
    assert s3.get_object(Bucket=BUCKET, Key="doc")["Body"].read() == new_body


def test_client_that_stops_reading_a_download_is_dropped_after_the_timeout(start_daemon):
    daemon = start_daemon(client_timeout=1)
    make_client(daemon).put_object(Bucket=BUCKET, Key="big", Body=os.urandom(64 * MiB))
    path, headers = signed_headers(daemon, "GET", "big")
    with socket.create_connection(("127.0.0.1", daemon.port), timeout=30) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{daemon.port}\r\n" + "".join(
            f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
        sock.sendall(request.encode())
        sock.recv(65536)
        deadline = time.monotonic() + 15
        while "Timing out client" not in daemon.log() and time.monotonic() < deadline:
            time.sleep(0.2)
    assert "Timing out client" in daemon.log()
    assert make_client(daemon).head_object(Bucket=BUCKET, Key="big")["ContentLength"] == 64 * MiB
