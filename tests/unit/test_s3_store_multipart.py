"""S3Store multipart uploads against an in-memory fake S3 that verifies every signature.

The fake (a FakeS3 of test_s3_store that also knows ``?uploads``, ``?uploadId``
and ``?partNumber``) checks each request with our SigV4 verifier, the payload
hash of a Complete against its body, and aws-chunked part bodies with our
chunk decoder, as test_s3_store does for PUTs.
"""

from __future__ import annotations

import hashlib
import itertools
from typing import Any
from unittest.mock import ANY
from urllib.parse import unquote
from xml.etree.ElementTree import Element, SubElement, fromstring, tostring

import pytest
from hypothesis import given
from hypothesis import strategies as st
from treq.testing import RequestTraversalAgent
from twisted.internet.defer import CancelledError
from twisted.logger import LogLevel
from twisted.web.server import NOT_DONE_YET, Request
from zope.interface.verify import verifyObject

from s3orchestrator.auth.sigv4 import Credential, canonical_query_string, verify_request
from s3orchestrator.errors import S3Error
from s3orchestrator.stores.interface import (
    IObjectStore,
    IObjectWrite,
    IPartWrite,
    ObjectMissing,
    StoredPart,
    StoreMisconfigured,
    StoreUnavailable,
)
from s3orchestrator.stores.s3 import S3Store
from s3orchestrator.stores.s3_errors import MAX_ERROR_BODY
from s3orchestrator.stores.s3_multipart import ResultBody, complete_document, upload_query
from tests.unit.fakes import FakeBody
from tests.unit.test_s3_store import (  # noqa: F401 (logged: the autouse fixture failing on errors and leaks)
    ACCESS_KEY,
    LEAKY,
    SECRET,
    TIMEOUT,
    FakeS3,
    Harness,
    fired,
    logged,
)

NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"
DECLARATION = b'<?xml version="1.0" encoding="UTF-8"?>\n'


def _query(raw_query: str) -> dict[str, str]:
    """A query string's parameters, percent-decoded ('+' stays '+', as S3 reads it)."""
    pairs = (item.partition("=") for item in raw_query.split("&") if item)
    return {unquote(key): unquote(value) for key, _, value in pairs}


def _result(name: str, **fields: str) -> bytes:
    root = Element(name, xmlns=NS[1:-1])
    for field, value in fields.items():
        SubElement(root, field).text = value
    return DECLARATION + tostring(root)


class MultipartS3(FakeS3):
    """FakeS3 plus multipart uploads: ``uploads[id] = (key, {number: bytes})``.

    Upload ids contain characters that need encoding ('/', '+', ' ', '&').
    ``complete_answer`` replaces the body of the next Complete's 200;
    ``hold_complete`` sends a Complete's 200 and XML declaration, then keeps
    the request in ``held_completes`` (with the result it would send) for the
    test to write whitespace and finish.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.uploads: dict[str, tuple[bytes, dict[int, bytes]]] = {}
        self.numbers = itertools.count(1)
        self.create_answer: bytes | None = None
        self.complete_answer: bytes | None = None
        self.hold_complete = False
        self.held_completes: list[tuple[Request, bytes]] = []

    def render(self, request: Request) -> bytes | int:
        raw_path, _, raw_query = request.uri.decode("latin-1").partition("?")
        query = _query(raw_query)
        if not {"uploads", "uploadId"} & set(query):
            return super().render(request)
        method = request.method.decode()
        headers = {
            name.decode("latin-1").lower(): [value.decode("latin-1") for value in values]
            for name, values in request.requestHeaders.getAllRawHeaders()
        }
        body = request.content.read()
        self.seen.append({"method": method, "path": raw_path, "query": raw_query, "headers": headers, "body": body})
        request.notifyFinish().addErrback(lambda _: self.lost.append(request))
        try:
            auth = verify_request(
                method, raw_path, raw_query, headers,
                lambda key: Credential(ACCESS_KEY, SECRET, "bucket") if key == ACCESS_KEY else None,
                self.clock.seconds(),
            )
            if auth.payload_mode.is_aws_chunked:
                body = self._decode(auth, headers, body)
            elif auth.payload_sha256 is not None and hashlib.sha256(body).hexdigest() != auth.payload_sha256:
                raise S3Error("XAmzContentSHA256Mismatch")
        except S3Error as error:
            return self._error(request, error.status, error.code)
        if method in self.errors:
            status, code = self.errors.pop(method)
            return self._error(request, status, code)
        key = self._key(raw_path)
        if method == "POST" and "uploads" in query:
            return self._create(key)
        upload = self.uploads.get(query["uploadId"])
        if upload is None or upload[0] != key:
            return self._error(request, 404, "NoSuchUpload")
        if method == "PUT":
            upload[1][int(query["partNumber"])] = body
            request.setResponseCode(self.put_status)
            if self.etag:
                request.setHeader(b"etag", b'"%s"' % hashlib.md5(body).hexdigest().encode())
            return self._maybe_hold(request, b"")
        if method == "POST":
            return self._complete(request, query["uploadId"], body)
        assert method == "DELETE"
        del self.uploads[query["uploadId"]]
        request.setResponseCode(204)
        return b""

    def _create(self, key: bytes) -> bytes:
        if self.create_answer is not None:
            return self.create_answer
        upload_id = f"up/{next(self.numbers)}+ &=~"
        self.uploads[upload_id] = (key, {})
        return _result("InitiateMultipartUploadResult", Bucket=self.bucket, Key=key.decode(), UploadId=upload_id)

    def _complete(self, request: Request, upload_id: str, body: bytes) -> bytes | int:
        key, parts = self.uploads[upload_id]
        root = fromstring(body)
        assert root.tag == NS + "CompleteMultipartUpload"
        chosen = [(int(part.findtext(NS + "PartNumber", "")), part.findtext(NS + "ETag", "")) for part in root]
        if [number for number, _ in chosen] != sorted({number for number, _ in chosen}):
            return self._error(request, 400, "InvalidPartOrder")
        for number, etag in chosen:
            if number not in parts or etag != f'"{hashlib.md5(parts[number]).hexdigest()}"':
                return self._error(request, 400, "InvalidPart")
        if self.complete_answer is not None:
            return self.complete_answer
        self.objects[key] = b"".join(parts[number] for number, _ in chosen)
        del self.uploads[upload_id]
        result = _result("CompleteMultipartUploadResult", Key=key.decode(), ETag='"x-2"')
        if not self.hold_complete:
            return result
        request.write(DECLARATION)
        self.held_completes.append((request, result.removeprefix(DECLARATION)))
        return NOT_DONE_YET


class MultipartHarness(Harness):
    """Harness over a MultipartS3."""

    def __init__(self, **overrides: Any) -> None:
        super().__init__(**overrides)
        self.fake = MultipartS3(self.clock, virtual_host=not self.config.path_style)
        self.agent = RequestTraversalAgent(self.fake)
        self.store = S3Store(self.config, self.clock, agent=self.agent, chunk_size=1000)

    def part(self, location: str, upload_id: str, number: int, data: bytes) -> StoredPart:
        write = self.store.start_part_write(location, upload_id, number, FakeBody([data]), len(data))
        self.result(write.done)
        self.result(write.publish())
        return StoredPart(number, len(data), write.store_etag)

    def methods(self) -> list[str]:
        return [seen["method"] for seen in self.fake.seen]


def etag(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


# -- the request shapes ----------------------------------------------------------------------------


def test_provides_the_interfaces() -> None:
    h = MultipartHarness()
    assert verifyObject(IObjectStore, h.store)
    upload_id = h.result(h.store.create_upload("app/k"))
    write = h.store.start_part_write("app/k", upload_id, 1, FakeBody([b"x"]), 1)
    assert verifyObject(IPartWrite, write)
    h.result(write.done)
    complete = h.store.start_complete("app/k", upload_id, [StoredPart(1, 1, write.store_etag)])
    assert verifyObject(IObjectWrite, complete)
    h.result(complete.done)


def test_create_upload_posts_uploads_and_fires_with_the_upload_id() -> None:
    h = MultipartHarness()
    upload_id = h.result(h.store.create_upload("app/a b"))
    assert upload_id == "up/1+ &=~"
    assert h.fake.uploads == {upload_id: (b"app/a b", {})}
    (seen,) = h.fake.seen
    assert (seen["method"], seen["path"], seen["query"]) == ("POST", "/bucket/app/a%20b", "uploads=")
    assert seen["body"] == b"" and seen["headers"]["content-length"] == ["0"]


def test_create_upload_with_virtual_host_style() -> None:
    h = MultipartHarness(path_style=False)
    h.result(h.store.create_upload("app/k"))
    (seen,) = h.fake.seen
    assert (seen["path"], seen["query"], seen["headers"]["host"]) == ("/app/k", "uploads=", ["bucket.s3.test:9000"])


@pytest.mark.parametrize("answer", [
    _result("InitiateMultipartUploadResult", Bucket="bucket", Key="app/k"),
    _result("InitiateMultipartUploadResult", UploadId="  "),
    _result("Error", Code="InternalError", UploadId="x"),
    b"not xml",
])
def test_create_upload_answered_200_without_an_upload_id_is_unavailable(answer: bytes) -> None:
    h = MultipartHarness()
    h.fake.create_answer = answer
    error = h.failure(h.store.create_upload("app/k"), StoreUnavailable)
    assert "without an UploadId" in str(error)


@pytest.mark.parametrize("status, code, expected", [
    (403, "AccessDenied", StoreMisconfigured),
    (404, "NoSuchBucket", StoreMisconfigured),
    (503, "SlowDown", StoreUnavailable),
    (500, "InternalError", StoreUnavailable),
])
def test_create_upload_errors_are_mapped(status: int, code: str, expected: type[Exception]) -> None:
    h = MultipartHarness()
    h.fake.errors["POST"] = (status, code)
    error = h.failure(h.store.create_upload("app/k"), expected)
    assert str(status) in str(error) and code in str(error)
    assert LEAKY not in str(error) and SECRET not in str(error)


def test_wrong_secret_is_misconfigured() -> None:
    h = MultipartHarness(secret_access_key="wrong")
    error = h.failure(h.store.create_upload("app/k"), StoreMisconfigured)
    assert "SignatureDoesNotMatch" in str(error)


@given(st.text(min_size=1, max_size=40), st.integers(min_value=1, max_value=10000))
def test_upload_query_is_canonical_and_decodes_to_the_id(upload_id: str, number: int) -> None:
    query = upload_query(upload_id, number)
    assert canonical_query_string(query) == query
    assert _query(query) == {"partNumber": str(number), "uploadId": upload_id}
    assert canonical_query_string(upload_query(upload_id)) == upload_query(upload_id)


def test_upload_query_encodes_the_aws_way() -> None:
    assert upload_query("a/b+c d~é", 3) == "partNumber=3&uploadId=a%2Fb%2Bc%20d~%C3%A9"


def test_complete_document() -> None:
    document = complete_document([StoredPart(1, 5, "abc"), StoredPart(2, 1, "d&e<f>")])
    assert document == (
        b'<CompleteMultipartUpload xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
        b'<Part><PartNumber>1</PartNumber><ETag>"abc"</ETag></Part>'
        b'<Part><PartNumber>2</PartNumber><ETag>"d&amp;e&lt;f&gt;"</ETag></Part>'
        b"</CompleteMultipartUpload>"
    )
    assert fromstring(document).findall(f"{NS}Part/{NS}ETag")[1].text == '"d&e<f>"'


# -- a whole upload --------------------------------------------------------------------------------


@pytest.mark.parametrize("payload_signing, send_checksums, content_sha256", [
    ("unsigned", False, "UNSIGNED-PAYLOAD"),
    ("unsigned", True, "STREAMING-UNSIGNED-PAYLOAD-TRAILER"),
    ("streaming", False, "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"),
    ("streaming", True, "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"),
])
def test_upload_round_trip(payload_signing: str, send_checksums: bool, content_sha256: str) -> None:
    h = MultipartHarness(payload_signing=payload_signing, send_checksums=send_checksums)
    first, second = bytes(range(256)) * 10, b"tail"
    upload_id = h.result(h.store.create_upload("app/big"))
    parts = [h.part("app/big", upload_id, 1, first), h.part("app/big", upload_id, 2, second)]
    assert parts == [StoredPart(1, 2560, etag(first)), StoredPart(2, 4, etag(second))]
    assert h.fake.objects == {}  # nothing at the location until Complete
    for seen, data in zip(h.fake.seen[1:], (first, second), strict=True):
        assert seen["method"] == "PUT" and seen["path"] == "/bucket/app/big"
        assert _query(seen["query"]) == {"partNumber": str(data is second and 2 or 1), "uploadId": upload_id}
        assert seen["headers"]["x-amz-content-sha256"] == [content_sha256]
    assert h.fake.uploads[upload_id][1] == {1: first, 2: second}

    complete = h.store.start_complete("app/big", upload_id, parts)
    h.result(complete.done)
    assert complete.staged is False
    assert h.result(complete.publish()) is None
    assert h.get("app/big") == first + second
    assert h.fake.uploads == {}
    assert h.methods() == ["POST", "PUT", "PUT", "POST", "GET"]


def test_complete_is_signed_with_the_hash_of_its_body() -> None:
    h = MultipartHarness()
    upload_id = h.result(h.store.create_upload("app/k"))
    parts = [h.part("app/k", upload_id, 1, b"one"), h.part("app/k", upload_id, 2, b"two")]
    h.result(h.store.start_complete("app/k", upload_id, parts).done)
    seen = h.fake.seen[-1]
    assert (seen["method"], seen["path"]) == ("POST", "/bucket/app/k")
    assert seen["query"] == "uploadId=up%2F1%2B%20%26%3D~"
    assert seen["body"] == complete_document(parts)
    assert seen["headers"]["x-amz-content-sha256"] == [hashlib.sha256(seen["body"]).hexdigest()]
    assert seen["headers"]["content-length"] == [str(len(seen["body"]))]


def test_re_uploading_a_part_replaces_it() -> None:
    h = MultipartHarness()
    upload_id = h.result(h.store.create_upload("app/k"))
    h.part("app/k", upload_id, 1, b"old")
    part = h.part("app/k", upload_id, 1, b"new")
    h.result(h.store.start_complete("app/k", upload_id, [part]).done)
    assert h.get("app/k") == b"new"


def test_part_etag_comes_back_unquoted() -> None:
    h = MultipartHarness()
    upload_id = h.result(h.store.create_upload("app/k"))
    body = FakeBody([b"ab"], length=3, hold=True)
    write = h.store.start_part_write("app/k", upload_id, 7, body, 3)
    h.flush()
    assert write.staged is False
    assert write.store_etag is None
    body.write(b"c")
    body.finish()
    h.result(write.done)
    assert write.store_etag == etag(b"abc")


# -- parts that go wrong ---------------------------------------------------------------------------


def test_part_abort_before_done_cancels_the_request() -> None:
    h = MultipartHarness()
    upload_id = h.result(h.store.create_upload("app/k"))
    body = FakeBody([b"ab"], length=3, hold=True)
    write = h.store.start_part_write("app/k", upload_id, 1, body, 3)
    h.flush()
    write.abort()
    h.failure(write.done, CancelledError)
    assert "stop" in body.calls
    h.flush()
    assert h.methods() == ["POST"]
    assert h.fake.uploads[upload_id][1] == {}


def test_part_abort_after_done_never_deletes() -> None:
    h = MultipartHarness()
    h.put("app/k", b"the previous object")
    upload_id = h.result(h.store.create_upload("app/k"))
    write = h.store.start_part_write("app/k", upload_id, 1, FakeBody([b"abc"]), 3)
    h.result(write.done)
    write.abort()
    write.abort()
    h.flush()
    assert h.methods() == ["PUT", "POST", "PUT"]
    assert h.fake.objects == {b"app/k": b"the previous object"}
    assert h.fake.uploads[upload_id][1] == {1: b"abc"}  # stays until the upload is completed or aborted


def test_part_stored_without_an_etag_fails_and_deletes_nothing() -> None:
    h = MultipartHarness()
    h.put("app/k", b"the previous object")
    upload_id = h.result(h.store.create_upload("app/k"))
    h.fake.etag = False
    write = h.store.start_part_write("app/k", upload_id, 1, FakeBody([b"abc"]), 3)
    error = h.failure(write.done, StoreUnavailable)
    assert "UploadPart answered 200 without an ETag" in str(error)
    h.flush()
    assert h.methods() == ["PUT", "POST", "PUT"]
    assert h.fake.objects == {b"app/k": b"the previous object"}


def test_part_of_an_unknown_upload_is_object_missing() -> None:
    h = MultipartHarness()
    write = h.store.start_part_write("app/k", "no-such-upload", 1, FakeBody([b"abc"]), 3)
    h.failure(write.done, ObjectMissing)
    h.flush()
    assert h.methods() == ["PUT"]


@pytest.mark.parametrize("status, code, expected", [
    (403, "AccessDenied", StoreMisconfigured),
    (400, "EntityTooLarge", StoreMisconfigured),
    (400, "BadDigest", StoreUnavailable),
    (500, "InternalError", StoreUnavailable),
    (503, "SlowDown", StoreUnavailable),
])
def test_part_errors_are_mapped(status: int, code: str, expected: type[Exception]) -> None:
    h = MultipartHarness()
    upload_id = h.result(h.store.create_upload("app/k"))
    h.fake.errors["PUT"] = (status, code)
    write = h.store.start_part_write("app/k", upload_id, 1, FakeBody([b"abc"]), 3)
    error = h.failure(write.done, expected)
    assert "UploadPart" in str(error) and str(status) in str(error)
    h.flush()
    assert h.methods() == ["POST", "PUT"]


def test_part_body_failure_is_reported_as_itself() -> None:
    h = MultipartHarness()
    upload_id = h.result(h.store.create_upload("app/k"))
    body = FakeBody([b"ab"], length=3, hold=True)
    write = h.store.start_part_write("app/k", upload_id, 1, body, 3)
    h.flush()
    body.fail(S3Error("BadDigest"))
    assert h.failure(write.done, S3Error).code == "BadDigest"  # type: ignore[attr-defined]


# -- completes that go wrong -----------------------------------------------------------------------


def _uploaded(h: MultipartHarness, location: str = "app/k") -> tuple[str, list[StoredPart]]:
    upload_id = h.result(h.store.create_upload(location))
    return upload_id, [h.part(location, upload_id, 1, b"one"), h.part(location, upload_id, 2, b"two")]


@pytest.mark.parametrize("code, expected", [
    ("InternalError", StoreUnavailable),
    ("SlowDown", StoreUnavailable),
    ("ServiceUnavailable", StoreUnavailable),
    ("NoSuchUpload", ObjectMissing),
    ("InvalidPart", ObjectMissing),
    ("InvalidPartOrder", ObjectMissing),
    ("EntityTooSmall", StoreMisconfigured),
    ("AccessDenied", StoreMisconfigured),
])
def test_complete_answered_200_with_an_error_document_fails(code: str, expected: type[Exception]) -> None:
    h = MultipartHarness()
    h.put("app/k", b"the previous object")
    upload_id, parts = _uploaded(h)
    h.fake.complete_answer = DECLARATION + b"\n   \n" + _result("Error", Code=code, Message=LEAKY).removeprefix(
        DECLARATION
    )
    complete = h.store.start_complete("app/k", upload_id, parts)
    error = h.failure(complete.done, expected)
    assert LEAKY not in str(error)
    complete.abort()
    h.flush()
    assert "DELETE" not in h.methods()
    assert h.fake.objects == {b"app/k": b"the previous object"}
    assert upload_id in h.fake.uploads  # the upload can be completed again


@pytest.mark.parametrize("status, code, expected", [
    (400, "EntityTooSmall", StoreMisconfigured),
    (400, "MalformedXML", StoreMisconfigured),
    (403, "AccessDenied", StoreMisconfigured),
    (404, "NoSuchUpload", ObjectMissing),
    (400, "InvalidPart", ObjectMissing),
    (500, "InternalError", StoreUnavailable),
    (503, "SlowDown", StoreUnavailable),
])
def test_complete_errors_are_mapped(status: int, code: str, expected: type[Exception]) -> None:
    h = MultipartHarness()
    upload_id, parts = _uploaded(h)
    h.fake.errors["POST"] = (status, code)
    error = h.failure(h.store.start_complete("app/k", upload_id, parts).done, expected)
    if expected is not ObjectMissing:
        assert "CompleteMultipartUpload" in str(error) and str(status) in str(error)


def test_complete_with_a_wrong_etag_is_object_missing() -> None:
    h = MultipartHarness()
    upload_id, parts = _uploaded(h)
    wrong = [parts[0], StoredPart(2, 3, etag(b"not it"))]
    h.failure(h.store.start_complete("app/k", upload_id, wrong).done, ObjectMissing)
    assert b"app/k" not in h.fake.objects
    h.result(h.store.start_complete("app/k", upload_id, parts).done)  # the right parts still work
    assert h.get("app/k") == b"onetwo"


def test_complete_of_parts_out_of_order_is_object_missing() -> None:
    h = MultipartHarness()
    upload_id, parts = _uploaded(h)
    h.failure(h.store.start_complete("app/k", upload_id, parts[::-1]).done, ObjectMissing)


@pytest.mark.parametrize("answer", [b"", b"   ", b"<Unexpected/>", DECLARATION + b"not xml", b"<Error>"])
def test_complete_answered_200_without_a_result_is_unavailable(answer: bytes) -> None:
    h = MultipartHarness()
    upload_id, parts = _uploaded(h)
    h.fake.complete_answer = answer
    h.failure(h.store.start_complete("app/k", upload_id, parts).done, StoreUnavailable)
    h.flush()
    assert "DELETE" not in h.methods()


def test_complete_that_sends_whitespace_for_long_neither_times_out_nor_overflows() -> None:
    h = MultipartHarness()
    h.fake.hold_complete = True
    upload_id, parts = _uploaded(h)
    complete = h.store.start_complete("app/k", upload_id, parts)
    h.flush()
    ((request, result),) = h.fake.held_completes
    for _ in range(20):  # 20 * 8 KiB of whitespace, 20 timeouts long
        h.clock.advance(TIMEOUT - 1)
        request.write(b" \n" * 4096)
        h.flush()
        assert not fired(complete.done)
    assert 20 * 8192 > MAX_ERROR_BODY
    request.write(result)
    request.finish()
    h.result(complete.done)
    assert h.get("app/k") == b"onetwo"
    assert h.clock.getDelayedCalls() == []


def test_complete_that_goes_silent_times_out() -> None:
    h = MultipartHarness()
    h.fake.hold_complete = True
    upload_id, parts = _uploaded(h)
    complete = h.store.start_complete("app/k", upload_id, parts)
    h.flush()
    ((request, _),) = h.fake.held_completes
    request.write(b"  ")
    h.flush()
    h.clock.advance(TIMEOUT - 1)
    assert not fired(complete.done)
    h.clock.advance(1)
    error = h.failure(complete.done, StoreUnavailable)
    assert "CompleteMultipartUpload made no progress" in str(error)
    assert h.fake.lost == [request]
    assert "DELETE" not in h.methods()


def test_complete_abort_before_done_cancels_the_request() -> None:
    h = MultipartHarness()
    h.fake.hold_complete = True
    upload_id, parts = _uploaded(h)
    complete = h.store.start_complete("app/k", upload_id, parts)
    h.flush()
    ((request, _),) = h.fake.held_completes
    complete.abort()
    h.failure(complete.done, CancelledError)
    h.flush()
    assert h.fake.lost == [request]
    assert h.clock.getDelayedCalls() == []


def test_complete_abort_after_done_deletes_the_object() -> None:
    h = MultipartHarness()
    upload_id, parts = _uploaded(h)
    complete = h.store.start_complete("app/k", upload_id, parts)
    h.result(complete.done)
    complete.abort()
    complete.abort()
    h.flush()
    assert h.methods()[-2:] == ["POST", "DELETE"]
    assert h.fake.seen[-1]["path"] == "/bucket/app/k"  # the object, not the upload (no query)
    assert h.fake.objects == {}


def test_publish_before_done_fails() -> None:
    h = MultipartHarness()
    h.fake.hold_complete = True
    upload_id, parts = _uploaded(h)
    complete = h.store.start_complete("app/k", upload_id, parts)
    h.failure(complete.publish(), RuntimeError)


# -- aborting an upload ----------------------------------------------------------------------------


def test_abort_upload_deletes_it_and_a_gone_upload_is_fine() -> None:
    h = MultipartHarness()
    upload_id, _ = _uploaded(h)
    assert h.result(h.store.abort_upload("app/k", upload_id)) is None
    assert h.fake.uploads == {}
    seen = h.fake.seen[-1]
    assert (seen["method"], seen["path"], seen["query"]) == ("DELETE", "/bucket/app/k", upload_query(upload_id))
    assert h.result(h.store.abort_upload("app/k", upload_id)) is None  # NoSuchUpload
    write = h.store.start_part_write("app/k", upload_id, 3, FakeBody([b"x"]), 1)
    h.failure(write.done, ObjectMissing)


@pytest.mark.parametrize("status, code, expected", [
    (404, "NoSuchBucket", StoreMisconfigured),
    (403, "AccessDenied", StoreMisconfigured),
    (500, "InternalError", StoreUnavailable),
])
def test_abort_upload_errors_are_mapped(status: int, code: str, expected: type[Exception]) -> None:
    h = MultipartHarness()
    upload_id, _ = _uploaded(h)
    h.fake.errors["DELETE"] = (status, code)
    error = h.failure(h.store.abort_upload("app/k", upload_id), expected)
    assert "AbortMultipartUpload" in str(error)


# -- logging and timers ----------------------------------------------------------------------------


def test_every_exchange_is_logged(logged: list[dict[str, Any]]) -> None:  # noqa: F811
    h = MultipartHarness()
    upload_id, parts = _uploaded(h)
    h.result(h.store.start_complete("app/k", upload_id, parts).done)
    h.result(h.store.abort_upload("app/k", upload_id))
    events = [e for e in logged if e.get("store") == "up"]
    assert [(e["operation"], e["status"], e["location"]) for e in events] == [
        ("CreateMultipartUpload", 200, "'app/k'"),
        ("UploadPart", 200, "'app/k'"),
        ("UploadPart", 200, "'app/k'"),
        ("CompleteMultipartUpload", 200, "'app/k'"),
        ("AbortMultipartUpload", 404, "'app/k'"),
    ]
    assert events[3]["bytes"] == 6 and events[3]["duration"] == ANY
    assert all(e["log_level"] == LogLevel.debug for e in events)


def test_no_timer_is_left_behind() -> None:
    h = MultipartHarness()
    upload_id, parts = _uploaded(h)
    h.result(h.store.start_complete("app/k", upload_id, parts).done)
    h.result(h.store.abort_upload("app/k", upload_id))
    h.fake.errors["POST"] = (500, "InternalError")
    h.failure(h.store.create_upload("app/k"), StoreUnavailable)
    assert h.clock.getDelayedCalls() == []


# -- the result reader -----------------------------------------------------------------------------


class _Transport:
    def __init__(self) -> None:
        self.stopped = False

    def stopProducing(self) -> None:
        self.stopped = True


DOCUMENT = b"<CompleteMultipartUploadResult><Key>k</Key></CompleteMultipartUploadResult>"


@given(
    st.sampled_from([b"", DECLARATION, b"<?xml version='1.0'?>"]),
    st.lists(st.sampled_from([b" ", b"\n", b"\r\n", b"\t"]), max_size=50),
    st.lists(st.integers(min_value=0, max_value=200), max_size=10),
)
def test_result_body_starts_at_the_first_element(declaration: bytes, spaces: list[bytes], cuts: list[int]) -> None:
    data = b"".join(spaces[: len(spaces) // 2]) + declaration + b"".join(spaces) + DOCUMENT + b"\n"
    protocol = ResultBody(len(DOCUMENT) + 1)
    protocol.makeConnection(_Transport())
    edges = sorted({0, len(data), *(cut for cut in cuts if cut < len(data))})
    for start, end in itertools.pairwise(edges):
        protocol.dataReceived(data[start:end])
    protocol.connectionLost(None)
    assert protocol.done.result == DOCUMENT + b"\n"


def test_result_body_counts_only_the_document_against_its_cap() -> None:
    transport = _Transport()
    protocol = ResultBody(10)
    protocol.makeConnection(transport)
    protocol.dataReceived(DECLARATION + b" " * 1000)
    assert not transport.stopped
    protocol.dataReceived(b"<Result>0123456789")
    assert transport.stopped
    protocol.connectionLost(None)
    assert protocol.done.result == b"<Result>01"


def test_result_body_stops_reading_when_cancelled() -> None:
    transport = _Transport()
    protocol = ResultBody(10)
    protocol.makeConnection(transport)
    protocol.done.cancel()
    assert transport.stopped
    protocol.done.addErrback(lambda failure: failure.trap(CancelledError))
    protocol.connectionLost(None)  # does not fire it again
