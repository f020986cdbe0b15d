"""aws-chunked uploads: boto3 over HTTPS (unsigned payload, CRC32 trailer) and signed chunks."""

from __future__ import annotations

import base64
import datetime
import hashlib
import os
import socket
import zlib

import botocore
import pytest

from s3orchestrator.auth.chunked import AwsChunkedSigner, ChunkSignatureChain
from s3orchestrator.auth.sigv4 import credential_scope, format_amz_date, sign_request, signing_key
from tests.integration.conftest import make_client, metadata_rows, store_files
from tests.integration.daemon import ACCESS_KEY, BUCKET, SECRET_KEY, Daemon

MiB = 1024 * 1024
# botocore 1.36 (January 2025) made CRC32 trailers the default for uploads over HTTPS;
# Debian 12's botocore predates that and sends UNSIGNED-PAYLOAD instead.
BOTOCORE_SENDS_TRAILERS = tuple(int(part) for part in botocore.__version__.split(".")[:2]) >= (1, 36)


def test_boto3_upload_over_https(start_daemon, tls_files):
    daemon = start_daemon(tls=tls_files)
    s3 = make_client(daemon)
    sent = {}
    s3.meta.events.register(
        "before-send.s3.PutObject", lambda request, **_: sent.update(
            (k.lower(), v.decode() if isinstance(v, bytes) else v) for k, v in request.headers.items()))
    body = os.urandom(3 * MiB + 5)
    put = s3.put_object(Bucket=BUCKET, Key="chunked", Body=body)
    if BOTOCORE_SENDS_TRAILERS:
        assert sent["x-amz-content-sha256"] == "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
        assert sent["x-amz-trailer"] == "x-amz-checksum-crc32"
    else:
        assert sent["x-amz-content-sha256"] == "UNSIGNED-PAYLOAD"
    assert put["ETag"] == f'"{hashlib.md5(body).hexdigest()}"'
    got = s3.get_object(Bucket=BUCKET, Key="chunked")
    assert got["Body"].read() == body
    assert "ContentEncoding" not in got  # aws-chunked is framing, not the object's encoding


@pytest.mark.parametrize("algorithm", ["CRC32C", "CRC64NVME"])
def test_boto3_upload_over_https_with_a_native_crc_trailer(start_daemon, tls_files, algorithm):
    daemon = start_daemon(tls=tls_files)
    s3 = make_client(daemon)
    sent = {}
    s3.meta.events.register(
        "before-send.s3.PutObject", lambda request, **_: sent.update(
            (k.lower(), v.decode() if isinstance(v, bytes) else v) for k, v in request.headers.items()))
    body = os.urandom(3 * MiB + 5)
    s3.put_object(Bucket=BUCKET, Key="crc", Body=body, ChecksumAlgorithm=algorithm)
    if BOTOCORE_SENDS_TRAILERS:
        assert sent["x-amz-trailer"] == f"x-amz-checksum-{algorithm.lower()}"
    assert s3.get_object(Bucket=BUCKET, Key="crc")["Body"].read() == body


def signed_chunked_request(daemon: Daemon, key: str, chunks: list[bytes], trailers: dict[str, str] | None = None,
                           tamper: bool = False) -> bytes:
    """A raw STREAMING-AWS4-HMAC-SHA256-PAYLOAD[-TRAILER] PUT, framed and signed chunk by chunk."""
    amz_date = format_amz_date(datetime.datetime.now(datetime.UTC).timestamp())
    mode = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD" + ("-TRAILER" if trailers else "")
    decoded_length = sum(len(chunk) for chunk in chunks)
    chain_headers = {"x-amz-content-sha256": mode}
    # The framed length depends only on sizes, so frame once with a throwaway chain to measure it.
    measure = AwsChunkedSigner(ChunkSignatureChain(b"k", amz_date, "scope", "0" * 64))
    framed_length = sum(len(measure.chunk(c)) for c in chunks) + len(measure.final(trailers))
    headers = {
        "host": f"127.0.0.1:{daemon.port}",
        "content-encoding": "aws-chunked",
        "content-length": str(framed_length),
        "x-amz-decoded-content-length": str(decoded_length),
        **chain_headers,
    }
    if trailers:
        headers["x-amz-trailer"] = ",".join(trailers)
    path = f"/{BUCKET}/{key}"
    auth = sign_request("PUT", path, "", headers, access_key_id=ACCESS_KEY, secret_access_key=SECRET_KEY,
                        region="us-east-1", amz_date=amz_date, payload_hash=mode)
    headers.update(auth)
    seed = auth["authorization"].rsplit("Signature=", 1)[1]
    date = amz_date[:8]
    chain = ChunkSignatureChain(signing_key(SECRET_KEY, date, "us-east-1"), amz_date,
                                credential_scope(date, "us-east-1"), seed)
    signer = AwsChunkedSigner(chain)
    body = b"".join(signer.chunk(c) for c in chunks) + signer.final(trailers)
    if tamper:
        position = body.index(b"\r\n") + 10
        body = body[:position] + bytes([body[position] ^ 1]) + body[position + 1:]
    request = f"PUT {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    with socket.create_connection(("127.0.0.1", daemon.port), timeout=30) as sock:
        sock.sendall(request.encode() + body)
        reply = b""
        while b"\r\n\r\n" not in reply or (b"<Error>" in reply and b"</Error>" not in reply):
            piece = sock.recv(65536)
            if not piece:
                break
            reply += piece
    return reply


def test_signed_chunked_upload_is_stored(daemon):
    chunks = [os.urandom(64 * 1024), os.urandom(64 * 1024), os.urandom(1000)]
    reply = signed_chunked_request(daemon, "signed-chunks", chunks)
    assert reply.startswith(b"HTTP/1.1 200 "), reply
    body = b"".join(chunks)
    assert make_client(daemon).get_object(Bucket=BUCKET, Key="signed-chunks")["Body"].read() == body


def test_signed_chunked_upload_with_checksum_trailer_is_stored(daemon):
    chunks = [os.urandom(70000), os.urandom(12345)]
    body = b"".join(chunks)
    crc = base64.b64encode(zlib.crc32(body).to_bytes(4, "big")).decode()
    reply = signed_chunked_request(daemon, "trailer", chunks, {"x-amz-checksum-crc32": crc})
    assert reply.startswith(b"HTTP/1.1 200 "), reply
    assert make_client(daemon).get_object(Bucket=BUCKET, Key="trailer")["Body"].read() == body


def test_tampered_signed_chunk_is_rejected_and_not_stored(daemon):
    reply = signed_chunked_request(daemon, "tampered", [os.urandom(65536), os.urandom(100)], tamper=True)
    assert reply.startswith(b"HTTP/1.1 403 "), reply
    assert b"<Code>SignatureDoesNotMatch</Code>" in reply
    assert metadata_rows(daemon, "SELECT COUNT(*) FROM objects") == [(0,)]
    assert metadata_rows(daemon, "SELECT COUNT(*) FROM reservations") == [(0,)]
    assert store_files(daemon, "local-a") == []


def test_wrong_checksum_trailer_is_bad_digest(daemon):
    chunks = [os.urandom(1000)]
    reply = signed_chunked_request(daemon, "bad-crc", chunks, {"x-amz-checksum-crc32": "AAAAAA=="})
    assert reply.startswith(b"HTTP/1.1 400 "), reply
    assert b"<Code>BadDigest</Code>" in reply
    assert metadata_rows(daemon, "SELECT COUNT(*) FROM objects") == [(0,)]
