"""Tests for RequestHead: which request lines and header lines are refused, with which S3 error."""

from __future__ import annotations

import pytest

from s3orchestrator.errors import S3Error
from s3orchestrator.web.request_head import MAX_HEAD_BYTES, MAX_HEADER_FIELDS, RequestHead, ascii_target


def head_after(*lines: bytes) -> RequestHead:
    head = RequestHead()
    for line in lines:
        head.line(line)
    return head


def refusal(*lines: bytes) -> S3Error:
    with pytest.raises(S3Error) as raised:
        head_after(*lines)
    return raised.value


def test_a_well_formed_head_passes_and_keeps_the_raw_target() -> None:
    head = head_after(b"PUT /bkt/k%2Fey?x-id=PutObject HTTP/1.1", b"Host: h", b"Content-Length: 3", b"")
    assert head.target == b"/bkt/k%2Fey?x-id=PutObject"


def test_a_raw_utf8_target_is_accepted_and_handed_to_twisted_percent_encoded() -> None:
    head = RequestHead()
    assert head.line("PUT /bkt/été HTTP/1.1".encode()) == b"PUT /bkt/%C3%A9t%C3%A9 HTTP/1.1"
    assert head.target == "/bkt/été".encode()


def test_ascii_target_leaves_ascii_alone() -> None:
    assert ascii_target(b"/a%20b?c=d") == b"/a%20b?c=d"


@pytest.mark.parametrize(
    "line",
    [b"GET /bkt/key", b"GET  /bkt/key HTTP/1.1", b"GET /bkt/key HTTP/1.1 extra", b"G(T /bkt/key HTTP/1.1",
     b"GET /bkt/\x7fkey HTTP/1.1", b"GET /bkt/key\tx HTTP/1.1", b"GET /bkt/key HTTPS/1.1"],
    ids=["no-version", "double-space", "four-parts", "bad-method", "del-in-target", "tab-in-target", "not-http"],
)
def test_a_malformed_request_line_is_an_invalid_request(line: bytes) -> None:
    error = refusal(line)
    assert (error.status, error.code) == (400, "InvalidRequest")


@pytest.mark.parametrize("version", [b"HTTP/2.0", b"HTTP/0.9", b"HTTP/1.2"])
def test_an_unsupported_http_version_is_505(version: bytes) -> None:
    error = refusal(b"GET /bkt/key " + version)
    assert (error.status, error.code) == (505, "HTTPVersionNotSupported")


@pytest.mark.parametrize(
    "header",
    [b"Content-Length: abc", b"Content-Length: -5", b"Content-Length: 1e3", b"Transfer-Encoding: gzip",
     b"Transfer-Encoding: identity", b"X-No-Colon", b"Bad Name: x", b": empty-name", b"X-Nul: a\x00b",
     b"X-Cr: a\rb"],
    ids=["cl-letters", "cl-negative", "cl-exponent", "te-gzip", "te-identity", "no-colon", "space-in-name",
         "empty-name", "nul", "bare-cr"],
)
def test_a_malformed_header_is_an_invalid_request(header: bytes) -> None:
    error = refusal(b"PUT /bkt/key HTTP/1.1", b"Host: h", header)
    assert (error.status, error.code) == (400, "InvalidRequest")


@pytest.mark.parametrize(
    "headers",
    [(b"Content-Length: 3", b"Content-Length: 4"), (b"Content-Length: 3", b"content-length: 3"),
     (b"Content-Length: 3", b"Transfer-Encoding: chunked"), (b"Transfer-Encoding: chunked", b"Content-Length: 3"),
     (b"Transfer-Encoding: chunked", b"Transfer-Encoding: chunked")],
    ids=["two-lengths", "repeated-length", "length-then-chunked", "chunked-then-length", "chunked-twice"],
)
def test_conflicting_body_framing_is_an_invalid_request(headers: tuple[bytes, bytes]) -> None:
    error = refusal(b"PUT /bkt/key HTTP/1.1", *headers)
    assert error.code == "InvalidRequest"


def test_a_folded_header_line_is_accepted() -> None:
    head_after(b"GET /bkt/key HTTP/1.1", b"X-Long: a", b"  b", b"")


def test_one_header_too_many_is_an_invalid_request() -> None:
    fields = [b"X-A: 1"] * MAX_HEADER_FIELDS
    head_after(b"GET /k HTTP/1.1", *fields)
    error = refusal(b"GET /k HTTP/1.1", *fields, b"X-A: 1")
    assert error.code == "InvalidRequest"


def test_a_head_over_the_limit_is_request_header_section_too_large() -> None:
    request_line = b"GET /k HTTP/1.1"
    filler = b"x-amz-meta-a: " + b"v" * (MAX_HEAD_BYTES - len(request_line) - 2 - len(b"x-amz-meta-a: ") - 2)
    head_after(request_line, filler)
    error = refusal(request_line, filler + b"v")
    assert (error.status, error.code) == (400, "RequestHeaderSectionTooLarge")


def test_a_tls_client_hello_is_refused() -> None:
    with pytest.raises(S3Error) as raised:
        RequestHead().first_bytes(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
    assert raised.value.code == "InvalidRequest"


def test_a_stray_empty_line_before_the_request_line_is_passed_on() -> None:
    head = RequestHead()
    assert head.line(b"") == b""
    assert head.target is None
