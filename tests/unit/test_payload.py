"""PayloadVerifier on bodies made by botocore (and by our signer where botocore has none)."""

from __future__ import annotations

import base64
import hashlib
import zlib
from typing import Any

import pytest
from botocore.httpchecksum import apply_request_checksum

from s3orchestrator.auth import checksums
from s3orchestrator.auth.checksums import new_checksum
from s3orchestrator.auth.chunked import AwsChunkedSigner, ChunkSignatureChain
from s3orchestrator.auth.payload import PayloadVerifier, VerifiedPayload
from s3orchestrator.auth.sigv4 import (
    AuthResult,
    PayloadMode,
    parse_authorization_header,
    sign_request,
    verify_request,
)
from s3orchestrator.errors import S3Error
from tests.unit.test_sigv4 import AKID, CRED, HOST, NOW, SECRET, botocore_sign, lookup

Headers = dict[str, list[str]]
BODY = b"The quick brown fox jumps over the lazy dog\n" * 50
AMZ_DATE = "20261124T010203Z"


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def md5_b64(data: bytes) -> str:
    return b64(hashlib.md5(data).digest())


def botocore_put(body: bytes, *, checksum: tuple[str, str] | None = None, content_md5: bool = False,
                 sign_payload: bool = True) -> tuple[AuthResult, Headers, bytes]:
    """A PutObject body and headers as botocore builds them, verified by verify_request."""
    headers: dict[str, str] = {}
    if content_md5:
        headers["Content-MD5"] = md5_b64(body)
    request: dict[str, Any] = {"headers": headers, "body": body, "context": {}}
    if checksum is not None:
        algorithm, where = checksum
        request["context"]["checksum"] = {"request_algorithm": {
            "algorithm": algorithm, "in": where, "name": f"x-amz-checksum-{algorithm}"}}
        apply_request_checksum(request)
    raw = request["body"] if isinstance(request["body"], bytes) else request["body"].read()
    path, query, wire, _ = botocore_sign("PUT", "/photos/obj", request["headers"], raw,
                                         context=request["context"], sign_payload=sign_payload)
    if "transfer-encoding" not in wire:
        wire["content-length"] = [str(len(raw))]  # added by the HTTP client, unsigned
    auth = verify_request("PUT", path, query, wire, lookup, NOW)
    return auth, wire, raw


def our_signed_chunked_put(body: bytes, *, chunk: int = 100, trailer: tuple[str, str] | None = None,
                           extra: dict[str, str] | None = None) -> tuple[AuthResult, Headers, bytes]:
    """STREAMING-AWS4-HMAC-SHA256-PAYLOAD[-TRAILER] (botocore never sends these)."""
    mode = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD" + ("-TRAILER" if trailer else "")
    headers = {"host": HOST, "content-encoding": "aws-chunked",
               "x-amz-decoded-content-length": str(len(body)), **(extra or {})}
    if trailer:
        headers["x-amz-trailer"] = trailer[0]
    signed = sign_request("PUT", "/photos/obj", "", headers, access_key_id=AKID, secret_access_key=SECRET,
                          region="us-east-1", amz_date=AMZ_DATE, payload_hash=mode)
    wire = {k: [v] for k, v in {**headers, **signed}.items()}
    auth = verify_request("PUT", "/photos/obj", "", wire, lookup, NOW)
    seed = parse_authorization_header(signed["authorization"]).signature
    signer = AwsChunkedSigner(ChunkSignatureChain(auth.signing_key, AMZ_DATE, auth.scope, seed))
    raw = b"".join(signer.chunk(body[i:i + chunk]) for i in range(0, len(body), chunk))
    raw += signer.final(dict([trailer]) if trailer else None)
    wire["content-length"] = [str(len(raw))]
    return auth, wire, raw


def run(auth: AuthResult, headers: Headers, raw: bytes,
        slice_size: int = 37) -> tuple[VerifiedPayload, bytes]:
    out: list[bytes] = []
    verifier = PayloadVerifier(auth, headers, out.append)
    for i in range(0, len(raw), slice_size):
        verifier.feed(raw[i:i + slice_size])
    return verifier.finish(), b"".join(out)


def failure(auth: AuthResult, headers: Headers, raw: bytes) -> S3Error:
    with pytest.raises(S3Error) as info:
        run(auth, headers, raw)
    return info.value


def fake_auth(mode: PayloadMode, sha256: str | None = None) -> AuthResult:
    return AuthResult(CRED, mode, sha256, AMZ_DATE, "20261124/us-east-1/s3/aws4_request", b"k" * 32, "0" * 64)


# -- every mode, accepted -----------------------------------------------------------


def test_signed_sha256_body() -> None:
    auth, headers, raw = botocore_put(BODY)
    assert auth.payload_mode is PayloadMode.SIGNED
    result, data = run(auth, headers, raw)
    assert data == BODY
    assert result == VerifiedPayload(len(BODY), hashlib.md5(BODY).hexdigest(), {})


def test_unsigned_payload_body_with_content_md5() -> None:
    auth, headers, raw = botocore_put(BODY, content_md5=True, sign_payload=False)
    assert auth.payload_mode is PayloadMode.UNSIGNED
    result, data = run(auth, headers, raw)
    assert (result.size, data) == (len(BODY), BODY)


@pytest.mark.parametrize("algorithm", ["crc32", "sha1", "sha256"])
def test_botocore_checksum_header_verified(algorithm: str) -> None:
    auth, headers, raw = botocore_put(BODY, checksum=(algorithm, "header"))
    assert f"x-amz-checksum-{algorithm}" in headers
    result, _ = run(auth, headers, raw)
    assert result.checksums == {algorithm: headers[f"x-amz-checksum-{algorithm}"][0]}


@pytest.mark.parametrize("algorithm", ["crc32", "sha1", "sha256"])
def test_botocore_unsigned_trailer_body(algorithm: str) -> None:
    auth, headers, raw = botocore_put(BODY, checksum=(algorithm, "trailer"))
    assert auth.payload_mode is PayloadMode.STREAMING_UNSIGNED_TRAILER
    assert "content-length" not in headers  # boto3 sends Transfer-Encoding: chunked
    result, data = run(auth, headers, raw, slice_size=7)
    assert data == BODY
    assert result.size == len(BODY)
    assert list(result.checksums) == [algorithm]


def test_empty_body_unsigned_trailer() -> None:
    auth, headers, raw = botocore_put(b"", checksum=("crc32", "trailer"))
    result, data = run(auth, headers, raw)
    assert (result.size, data, result.md5_hex) == (0, b"", hashlib.md5(b"").hexdigest())


def test_streaming_signed_body() -> None:
    auth, headers, raw = our_signed_chunked_put(BODY, extra={"content-md5": md5_b64(BODY)})
    assert auth.payload_mode is PayloadMode.STREAMING_SIGNED
    result, data = run(auth, headers, raw, slice_size=1000)
    assert data == BODY and result.size == len(BODY)


def test_streaming_signed_trailer_body() -> None:
    crc = b64(zlib.crc32(BODY).to_bytes(4, "big"))
    auth, headers, raw = our_signed_chunked_put(BODY, trailer=("x-amz-checksum-crc32", crc))
    assert auth.payload_mode is PayloadMode.STREAMING_SIGNED_TRAILER
    result, _ = run(auth, headers, raw)
    assert result.checksums == {"crc32": crc}


@pytest.mark.parametrize("algorithm", sorted(checksums.ALGORITHMS))
def test_every_checksum_algorithm_as_header(algorithm: str) -> None:
    c = new_checksum(algorithm)
    c.update(BODY)
    headers = {"content-length": [str(len(BODY))], f"x-amz-checksum-{algorithm}": [c.b64digest()],
               "x-amz-sdk-checksum-algorithm": [algorithm.upper()]}
    result, _ = run(fake_auth(PayloadMode.UNSIGNED), headers, BODY)
    assert result.checksums == {algorithm: c.b64digest()}
    headers[f"x-amz-checksum-{algorithm}"] = [b64(bytes(checksums.ALGORITHMS[algorithm]))]
    err = failure(fake_auth(PayloadMode.UNSIGNED), headers, BODY)
    assert (err.code, err.message) == (
        "BadDigest", f"The {algorithm.upper()} you specified did not match the calculated checksum.")


def test_decoded_length_comes_from_the_right_header() -> None:
    auth, headers, _ = our_signed_chunked_put(BODY)
    assert PayloadVerifier(auth, headers, lambda d: None).decoded_length == len(BODY)
    auth, headers, _ = botocore_put(BODY)
    assert PayloadVerifier(auth, headers, lambda d: None).decoded_length == len(BODY)


def test_no_content_length_and_no_transfer_encoding_is_an_empty_body() -> None:
    result, _ = run(fake_auth(PayloadMode.UNSIGNED), {}, b"")
    assert result.size == 0


# -- failures -----------------------------------------------------------------------


def test_transfer_encoding_without_content_length_is_missing_content_length() -> None:
    auth, headers, _ = botocore_put(BODY)
    del headers["content-length"]
    headers["transfer-encoding"] = ["chunked"]
    with pytest.raises(S3Error) as info:
        PayloadVerifier(auth, headers, lambda d: None)
    assert (info.value.code, info.value.status) == ("MissingContentLength", 411)


@pytest.mark.parametrize("value", ["abc", "-1", "1.5", "", "٣"])
def test_invalid_content_length_is_missing_content_length(value: str) -> None:
    with pytest.raises(S3Error) as info:
        PayloadVerifier(fake_auth(PayloadMode.UNSIGNED), {"content-length": [value]}, lambda d: None)
    assert info.value.code == "MissingContentLength"


def test_aws_chunked_without_decoded_length_is_missing_content_length() -> None:
    auth, headers, _ = botocore_put(BODY, checksum=("crc32", "trailer"))
    del headers["x-amz-decoded-content-length"]
    with pytest.raises(S3Error) as info:
        PayloadVerifier(auth, headers, lambda d: None)
    assert info.value.code == "MissingContentLength"


@pytest.mark.parametrize("trailer", [
    "x-amz-checksum-crc32,x-amz-checksum-sha256",
    "x-amz-checksum-crc32, x-amz-checksum-crc32",
    "x-amz-meta-foo",
    "x-amz-checksum-md5",
])
def test_bad_x_amz_trailer_is_invalid_argument(trailer: str) -> None:
    headers = {"x-amz-decoded-content-length": ["3"], "x-amz-trailer": [trailer]}
    with pytest.raises(S3Error) as info:
        PayloadVerifier(fake_auth(PayloadMode.STREAMING_UNSIGNED_TRAILER), headers, lambda d: None)
    assert info.value.code == "InvalidArgument"


def test_trailer_declared_without_trailer_mode_is_invalid_argument() -> None:
    headers = {"content-length": ["3"], "x-amz-trailer": ["x-amz-checksum-crc32"]}
    with pytest.raises(S3Error) as info:
        PayloadVerifier(fake_auth(PayloadMode.UNSIGNED), headers, lambda d: None)
    assert info.value.code == "InvalidArgument"


@pytest.mark.parametrize("value", ["not base64!", b64(b"short"), b64(b"x" * 17)])
def test_malformed_content_md5_is_invalid_digest(value: str) -> None:
    headers = {"content-length": ["3"], "content-md5": [value]}
    with pytest.raises(S3Error) as info:
        PayloadVerifier(fake_auth(PayloadMode.UNSIGNED), headers, lambda d: None)
    assert info.value.code == "InvalidDigest"


def test_two_checksum_headers_are_invalid_request() -> None:
    headers = {"content-length": ["3"], "x-amz-checksum-crc32": [b64(b"1234")],
               "x-amz-checksum-sha1": [b64(b"1" * 20)]}
    with pytest.raises(S3Error) as info:
        PayloadVerifier(fake_auth(PayloadMode.UNSIGNED), headers, lambda d: None)
    assert info.value.code == "InvalidRequest"


def test_malformed_checksum_header_is_invalid_request() -> None:
    headers = {"content-length": ["3"], "x-amz-checksum-crc32": [b64(b"12345")]}
    with pytest.raises(S3Error) as info:
        PayloadVerifier(fake_auth(PayloadMode.UNSIGNED), headers, lambda d: None)
    assert info.value.code == "InvalidRequest"


def test_body_not_matching_signed_sha256_is_mismatch() -> None:
    auth, headers, raw = botocore_put(BODY)
    tampered = raw[:-1] + b"!"
    err = failure(auth, headers, tampered)
    assert err.code == "XAmzContentSHA256Mismatch"
    assert err.extra == {"ClientComputedContentSHA256": hashlib.sha256(BODY).hexdigest(),
                         "S3ComputedContentSHA256": hashlib.sha256(tampered).hexdigest()}


def test_content_md5_mismatch_is_bad_digest() -> None:
    auth, headers, raw = botocore_put(BODY, content_md5=True, sign_payload=False)
    err = failure(auth, headers, raw[:-1] + b"!")
    assert (err.code, err.status) == ("BadDigest", 400)


@pytest.mark.parametrize("algorithm", ["crc32", "sha256"])
def test_checksum_header_mismatch_is_bad_digest(algorithm: str) -> None:
    auth, headers, raw = botocore_put(BODY, checksum=(algorithm, "header"), sign_payload=False)
    err = failure(auth, headers, raw[:-1] + b"!")
    assert err.code == "BadDigest"
    assert err.message == f"The {algorithm.upper()} you specified did not match the calculated checksum."


def test_trailer_checksum_mismatch_is_bad_digest() -> None:
    auth, headers, raw = botocore_put(BODY, checksum=("crc32", "trailer"))
    tampered = raw.replace(b"quick", b"quack", 1)
    err = failure(auth, headers, tampered)
    assert err.code == "BadDigest"
    assert "CRC32" in err.message


def test_short_body_is_incomplete() -> None:
    auth, headers, raw = botocore_put(BODY)
    assert failure(auth, headers, raw[:-10]).code == "IncompleteBody"


def test_short_aws_chunked_body_is_incomplete() -> None:
    auth, headers, raw = botocore_put(BODY, checksum=("crc32", "trailer"))
    assert failure(auth, headers, raw[:100]).code == "IncompleteBody"


def test_decoded_length_larger_than_body_is_incomplete() -> None:
    auth, headers, raw = botocore_put(BODY, checksum=("crc32", "trailer"))
    headers["x-amz-decoded-content-length"] = [str(len(BODY) + 1)]
    assert failure(auth, headers, raw).code == "IncompleteBody"


def test_body_longer_than_content_length_is_rejected() -> None:
    headers = {"content-length": ["3"]}
    assert failure(fake_auth(PayloadMode.UNSIGNED), headers, b"abcd").code == "InvalidRequest"


def test_tampered_signed_chunk_is_signature_does_not_match() -> None:
    auth, headers, raw = our_signed_chunked_put(BODY)
    assert failure(auth, headers, raw.replace(b"quick", b"quack", 1)).code == "SignatureDoesNotMatch"


def test_undeclared_trailer_is_invalid_request() -> None:
    auth, headers, raw = botocore_put(BODY, checksum=("crc32", "trailer"))
    headers["x-amz-trailer"] = []
    assert failure(auth, headers, raw).code == "InvalidRequest"


def test_missing_declared_trailer_is_invalid_request() -> None:
    auth, headers, raw = botocore_put(BODY, checksum=("crc32", "trailer"))
    cut = raw.index(b"0\r\nx-amz-checksum-crc32")
    assert failure(auth, headers, raw[:cut] + b"0\r\n\r\n").code == "InvalidRequest"
