"""aws-chunked decoding: AWS's documented example, botocore-made bodies, every failure."""

from __future__ import annotations

import base64
import hashlib
import io
import zlib
from typing import Iterable

import pytest
from botocore.httpchecksum import AwsChunkedWrapper, Crc32Checksum
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from s3orchestrator.auth.chunked import (
    AwsChunkedDecoder,
    AwsChunkedSigner,
    ChunkSignatureChain,
    trailer_text,
)
from s3orchestrator.auth.sigv4 import PayloadMode, signing_key
from s3orchestrator.errors import S3Error

# AWS S3 API reference, "Signature Calculations for the Authorization Header:
# Transferring Payload in Multiple Chunks (Chunked Upload)".
SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
AMZ_DATE = "20130524T000000Z"
SCOPE = "20130524/us-east-1/s3/aws4_request"
SEED = "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9"
SIG1 = "ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648"
SIG2 = "0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497"
SIG3 = "b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9"
KEY = signing_key(SECRET, "20130524", "us-east-1", "s3")
OBJECT = b"a" * 66560
AWS_EXAMPLE_BODY = (
    b"10000;chunk-signature=" + SIG1.encode() + b"\r\n" + b"a" * 65536 + b"\r\n"
    + b"400;chunk-signature=" + SIG2.encode() + b"\r\n" + b"a" * 1024 + b"\r\n"
    + b"0;chunk-signature=" + SIG3.encode() + b"\r\n\r\n"
)


def chain() -> ChunkSignatureChain:
    return ChunkSignatureChain(KEY, AMZ_DATE, SCOPE, SEED)


class Collector:
    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def __call__(self, data: bytes) -> None:
        self.parts.append(data)

    @property
    def data(self) -> bytes:
        return b"".join(self.parts)


def decoder(mode: PayloadMode = PayloadMode.STREAMING_SIGNED, decoded_length: int | None = None,
            **kw: object) -> tuple[AwsChunkedDecoder, Collector]:
    out = Collector()
    needs_chain = mode.chunks_signed
    return AwsChunkedDecoder(out, mode=mode, decoded_length=decoded_length,
                             chain=chain() if needs_chain else None, **kw), out  # type: ignore[arg-type]


def feed_in_slices(dec: AwsChunkedDecoder, body: bytes, sizes: Iterable[int]) -> None:
    pos = 0
    for size in sizes:
        if pos >= len(body):
            break
        dec.feed(body[pos:pos + size])
        pos += size
    if pos < len(body):
        dec.feed(body[pos:])


def signed_body(data: bytes, chunk: int, trailers: dict[str, str] | None = None) -> bytes:
    signer = AwsChunkedSigner(chain())
    parts = [signer.chunk(data[i:i + chunk]) for i in range(0, len(data), chunk)]
    return b"".join(parts) + signer.final(trailers)


def botocore_trailer_body(data: bytes, chunk_size: int) -> tuple[bytes, str]:
    wrapper = AwsChunkedWrapper(io.BytesIO(data), checksum_cls=Crc32Checksum,
                                checksum_name="x-amz-checksum-crc32", chunk_size=chunk_size)
    expected = base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()
    return wrapper.read(), expected


def error_of(dec: AwsChunkedDecoder, body: bytes) -> S3Error:
    with pytest.raises(S3Error) as info:
        dec.feed(body)
        dec.finish()
    return info.value


# -- AWS's documented example -----------------------------------------------------


def test_aws_example_chunk_signatures() -> None:
    c = chain()
    assert c.next_signature(hashlib.sha256(b"a" * 65536).hexdigest()) == SIG1
    assert c.next_signature(hashlib.sha256(b"a" * 1024).hexdigest()) == SIG2
    assert c.next_signature(hashlib.sha256(b"").hexdigest()) == SIG3


def test_signer_reproduces_aws_example_body() -> None:
    body = signed_body(OBJECT, 65536)
    assert body == AWS_EXAMPLE_BODY
    assert len(body) == 66824  # the example's Content-Length


def test_aws_example_decodes_in_one_feed() -> None:
    dec, out = decoder(decoded_length=66560)
    dec.feed(AWS_EXAMPLE_BODY)
    assert dec.finish() == {}
    assert out.data == OBJECT
    assert dec.size == 66560


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.integers(min_value=1, max_value=70000), min_size=1, max_size=40))
def test_aws_example_decodes_in_any_slices(sizes: list[int]) -> None:
    dec, out = decoder(decoded_length=66560)
    feed_in_slices(dec, AWS_EXAMPLE_BODY, sizes)
    dec.finish()
    assert out.data == OBJECT


def test_payload_is_emitted_before_the_chunk_ends() -> None:
    dec, out = decoder()
    dec.feed(AWS_EXAMPLE_BODY[:100])
    header_len = len(b"10000;chunk-signature=") + 64 + 2
    assert out.data == b"a" * (100 - header_len)


def test_byte_by_byte_feed() -> None:
    body = signed_body(b"hello world, chunked", 7)
    dec, out = decoder()
    for i in range(len(body)):
        dec.feed(body[i:i + 1])
    dec.finish()
    assert out.data == b"hello world, chunked"


# -- signature failures -------------------------------------------------------------


def test_tampered_data_is_signature_does_not_match() -> None:
    body = bytearray(AWS_EXAMPLE_BODY)
    body[1000] = ord("b")
    assert error_of(decoder()[0], bytes(body)).code == "SignatureDoesNotMatch"


def test_wrong_seed_is_signature_does_not_match() -> None:
    dec = AwsChunkedDecoder(lambda d: None, mode=PayloadMode.STREAMING_SIGNED,
                            chain=ChunkSignatureChain(KEY, AMZ_DATE, SCOPE, "0" * 64))
    assert error_of(dec, AWS_EXAMPLE_BODY).code == "SignatureDoesNotMatch"


def test_reordered_chunks_are_rejected() -> None:
    signer = AwsChunkedSigner(chain())
    first, second = signer.chunk(b"aaaa"), signer.chunk(b"bbbb")
    body = second + first + signer.final()
    assert error_of(decoder()[0], body).code == "SignatureDoesNotMatch"


def test_missing_chunk_signature_is_rejected() -> None:
    assert error_of(decoder()[0], b"3\r\nabc\r\n0\r\n\r\n").code == "SignatureDoesNotMatch"


def test_tampered_final_chunk_signature_is_rejected() -> None:
    body = AWS_EXAMPLE_BODY.replace(SIG3.encode(), b"f" * 64)
    assert error_of(decoder()[0], body).code == "SignatureDoesNotMatch"


def test_errors_are_sticky() -> None:
    dec, _ = decoder()
    with pytest.raises(S3Error):
        dec.feed(b"zz\r\n")
    with pytest.raises(S3Error):
        dec.feed(AWS_EXAMPLE_BODY)
    with pytest.raises(S3Error):
        dec.finish()


# -- trailers -----------------------------------------------------------------------


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=3000), st.integers(min_value=1, max_value=1024),
       st.lists(st.integers(min_value=1, max_value=512), max_size=30))
def test_botocore_unsigned_trailer_bodies_round_trip(data: bytes, chunk: int, sizes: list[int]) -> None:
    body, crc = botocore_trailer_body(data, chunk)
    dec, out = decoder(PayloadMode.STREAMING_UNSIGNED_TRAILER, decoded_length=len(data))
    feed_in_slices(dec, body, sizes)
    assert dec.finish() == {"x-amz-checksum-crc32": crc}
    assert out.data == data


def test_unsigned_trailer_without_final_crlf_is_accepted() -> None:
    body, crc = botocore_trailer_body(b"abc", 2)
    assert body.endswith(b"\r\n\r\n")
    dec, out = decoder(PayloadMode.STREAMING_UNSIGNED_TRAILER, decoded_length=3)
    dec.feed(body[:-2])
    assert dec.finish() == {"x-amz-checksum-crc32": crc}


def test_extra_crlf_after_the_end_is_tolerated() -> None:
    dec, _ = decoder()
    dec.feed(AWS_EXAMPLE_BODY + b"\r\n")
    dec.finish()


def test_data_after_the_end_is_invalid() -> None:
    assert error_of(decoder()[0], AWS_EXAMPLE_BODY + b"junk").code == "InvalidRequest"


@given(st.binary(max_size=2000), st.integers(min_value=1, max_value=600),
       st.lists(st.integers(min_value=1, max_value=300), max_size=30))
def test_signed_trailer_round_trip(data: bytes, chunk: int, sizes: list[int]) -> None:
    trailers = {"x-amz-checksum-crc32": "AAAAAA=="}
    body = signed_body(data, chunk, trailers) if data else AwsChunkedSigner(chain()).final(trailers)
    dec, out = decoder(PayloadMode.STREAMING_SIGNED_TRAILER, decoded_length=len(data))
    feed_in_slices(dec, body, sizes)
    assert dec.finish() == trailers
    assert out.data == data


def test_trailer_text_is_sorted_name_value_lines() -> None:
    assert trailer_text({"x-b": "2", "x-a": "1"}) == b"x-a:1\nx-b:2\n"


def test_tampered_signed_trailer_is_rejected() -> None:
    body = signed_body(b"abc", 3, {"x-amz-checksum-crc32": "AAAAAA=="})
    body = body.replace(b"AAAAAA==", b"AAAAAB==")
    dec, _ = decoder(PayloadMode.STREAMING_SIGNED_TRAILER)
    assert error_of(dec, body).code == "SignatureDoesNotMatch"


def test_missing_trailer_signature_is_rejected() -> None:
    body = signed_body(b"abc", 3, {"x-amz-checksum-crc32": "AAAAAA=="})
    start = body.index(b"x-amz-trailer-signature:")
    unsigned = body[:start] + b"\r\n"
    dec, _ = decoder(PayloadMode.STREAMING_SIGNED_TRAILER)
    assert error_of(dec, unsigned).code == "SignatureDoesNotMatch"
    dec, _ = decoder(PayloadMode.STREAMING_SIGNED_TRAILER)
    assert error_of(dec, body[:start]).code == "IncompleteBody"


def test_trailers_need_a_trailer_mode() -> None:
    body = signed_body(b"abc", 3)[:-2] + b"x-amz-checksum-crc32:AAAAAA==\r\n\r\n"
    assert error_of(decoder()[0], body).code == "InvalidRequest"


def test_duplicate_trailer_is_invalid() -> None:
    body = b"3\r\nabc\r\n0\r\nx-amz-checksum-crc32:a\r\nx-amz-checksum-crc32:b\r\n\r\n"
    assert error_of(decoder(PayloadMode.STREAMING_UNSIGNED_TRAILER)[0], body).code == "InvalidRequest"


def test_malformed_trailer_line_is_invalid() -> None:
    body = b"3\r\nabc\r\n0\r\nno-colon-here\r\n\r\n"
    assert error_of(decoder(PayloadMode.STREAMING_UNSIGNED_TRAILER)[0], body).code == "InvalidRequest"


# -- framing and length -------------------------------------------------------------


def test_every_truncation_is_incomplete_body() -> None:
    body = signed_body(b"0123456789", 4)
    final_line_end = body.rindex(b"\r\n\r\n") + 2  # lenient: ending right after "0;sig\r\n"
    for cut in range(len(body)):
        dec, _ = decoder(decoded_length=10)
        dec.feed(body[:cut])
        if cut == final_line_end:
            dec.finish()
            continue
        with pytest.raises(S3Error) as info:
            dec.finish()
        assert info.value.code == "IncompleteBody", cut


def test_longer_than_decoded_length_is_rejected_before_emitting() -> None:
    dec, out = decoder(decoded_length=66559)
    assert error_of(dec, AWS_EXAMPLE_BODY).code == "InvalidRequest"
    assert len(out.data) < 66560


def test_shorter_than_decoded_length_is_incomplete() -> None:
    assert error_of(decoder(decoded_length=66561)[0], AWS_EXAMPLE_BODY).code == "IncompleteBody"


@pytest.mark.parametrize("body", [
    b"xyz;chunk-signature=00\r\n",  # not hex
    b";chunk-signature=00\r\n",  # empty size
    b"\r\n",  # empty line
    b"-3\r\nabc\r\n",
])
def test_bad_size_line_is_invalid(body: bytes) -> None:
    assert error_of(decoder(PayloadMode.STREAMING_UNSIGNED_TRAILER)[0], body).code == "InvalidRequest"


def test_missing_crlf_after_data_is_invalid() -> None:
    body = b"3\r\nabcX\r\n0\r\n\r\n"
    assert error_of(decoder(PayloadMode.STREAMING_UNSIGNED_TRAILER)[0], body).code == "InvalidRequest"


def test_overlong_line_is_rejected_without_growing() -> None:
    dec, _ = decoder(PayloadMode.STREAMING_UNSIGNED_TRAILER)
    with pytest.raises(S3Error) as info:
        for _ in range(10):
            dec.feed(b"0" * 1000)
    assert info.value.code == "InvalidRequest"


def test_bare_lf_line_endings_in_framing_are_tolerated() -> None:
    dec, out = decoder(PayloadMode.STREAMING_UNSIGNED_TRAILER)
    dec.feed(b"3\nabc\r\n0\n\n")
    dec.finish()
    assert out.data == b"abc"


def test_unsigned_trailer_mode_ignores_chunk_signatures() -> None:
    dec, out = decoder(PayloadMode.STREAMING_UNSIGNED_TRAILER)
    dec.feed(b"3;chunk-signature=" + b"0" * 64 + b"\r\nabc\r\n0\r\n\r\n")
    dec.finish()
    assert out.data == b"abc"


def test_non_chunked_mode_is_refused() -> None:
    with pytest.raises(ValueError):
        AwsChunkedDecoder(lambda d: None, mode=PayloadMode.SIGNED)
    with pytest.raises(ValueError):
        AwsChunkedDecoder(lambda d: None, mode=PayloadMode.STREAMING_SIGNED)
