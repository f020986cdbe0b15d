"""S3Store against an in-memory fake S3 (treq.testing.RequestTraversalAgent) and a Clock.

The fake checks every request with our SigV4 *verifier* (and aws-chunked
bodies with our chunk decoder, trailing checksums included), so these tests
prove that what the store puts on the wire is what a verifier with the same
canonicalisation accepts.
"""

from __future__ import annotations

import base64
import hashlib
import zlib
from itertools import pairwise
from typing import Any
from urllib.parse import unquote_to_bytes

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from treq.testing import RequestTraversalAgent
from twisted.internet.defer import CancelledError, Deferred, fail
from twisted.internet.error import ConnectionRefusedError, DNSLookupError
from twisted.internet.interfaces import IConsumer
from twisted.internet.task import Clock
from twisted.logger import LogLevel, globalLogPublisher
from twisted.python.failure import Failure
from twisted.web.iweb import IAgent
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request
from zope.interface import implementer
from zope.interface.verify import verifyObject

from s3orchestrator.auth.checksums import CHECKSUM_HEADERS, new_checksum
from s3orchestrator.auth.chunked import (
    AwsChunkedDecoder,
    AwsChunkedSigner,
    ChunkSignatureChain,
)
from s3orchestrator.auth.sigv4 import (
    Credential,
    PayloadMode,
    parse_authorization_header,
    verify_request,
)
from s3orchestrator.config import S3StoreConfig
from s3orchestrator.errors import S3Error
from s3orchestrator.placement.reader import FailoverReader
from s3orchestrator.stores.interface import (
    IObjectReader,
    IObjectStore,
    IObjectWrite,
    ObjectMissing,
    StoreMisconfigured,
    StoreUnavailable,
)
from s3orchestrator.stores.s3 import S3Store
from s3orchestrator.stores.s3_errors import MAX_ERROR_BODY, parse_error_code
from s3orchestrator.stores.s3_framing import UploadFraming, framed_length, upload_mode
from s3orchestrator.stores.s3_http import SilenceWatchdog, request_target
from s3orchestrator.stores.s3_write import UpstreamBody
from tests.unit.fakes import FakeBody

ACCESS_KEY = "AKIDUPSTREAM"
SECRET = "upstream/secret+KEY"
NOW = 1_790_000_000.0
TIMEOUT = 30.0
LEAKY = "SECRET-DETAIL-FROM-UPSTREAM"


@pytest.fixture(autouse=True)
def logged() -> Any:
    """Every event logged during the test; fails it on an error or a traceback, or a leaked secret."""
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    yield events
    globalLogPublisher.removeObserver(events.append)
    bad = [e for e in events if e.get("log_level", LogLevel.info) >= LogLevel.error or "log_failure" in e]
    assert not bad, [(e.get("log_format"), e.get("log_failure")) for e in bad]
    for event in events:
        text = repr(event)
        assert SECRET not in text and LEAKY not in text and "Signature=" not in text


def config(**overrides: Any) -> S3StoreConfig:
    fields: dict[str, Any] = dict(
        name="up", quota_bytes=0, endpoint="http://s3.test:9000", region="eu-test-1", bucket="bucket",
        access_key_id=ACCESS_KEY, secret_access_key=SECRET, timeout=TIMEOUT,
    )
    fields.update(overrides)
    return S3StoreConfig(**fields)


# -- a fake S3 -----------------------------------------------------------------------------------


class FakeS3(Resource):
    """Verifies signatures, stores objects by decoded key, answers GET/PUT/DELETE/HEAD.

    ``errors[method] = (status, code)`` makes the next such request fail;
    ``hold`` keeps GET/PUT responses open (tests write and finish them).
    aws-chunked bodies are decoded and verified (chunk and trailer signatures,
    the trailing x-amz-checksum-* against the decoded bytes); ``trailers`` keeps
    the trailers of every such body.
    """

    isLeaf = True

    def __init__(self, clock: Clock, bucket: str = "bucket", virtual_host: bool = False) -> None:
        super().__init__()
        self.clock = clock
        self.bucket = bucket
        self.virtual_host = virtual_host
        self.objects: dict[bytes, bytes] = {}
        self.seen: list[dict[str, Any]] = []
        self.errors: dict[str, tuple[int, str]] = {}
        self.hold = False
        self.held: list[Request] = []
        self.lost: list[Request] = []
        self.etag = True
        self.put_status = 200
        self.ignore_range = False
        self.trailers: list[dict[str, str]] = []
        self.copy_answer: bytes | None = None

    def _key(self, raw_path: str) -> bytes:
        path = unquote_to_bytes(raw_path.encode("latin-1"))
        prefix = b"/" if self.virtual_host else b"/" + self.bucket.encode() + b"/"
        assert path.startswith(prefix), path
        return path[len(prefix):]

    def render(self, request: Request) -> bytes | int:
        method = request.method.decode()
        raw_path, _, raw_query = request.uri.decode("latin-1").partition("?")
        headers = {
            name.decode("latin-1").lower(): [value.decode("latin-1") for value in values]
            for name, values in request.requestHeaders.getAllRawHeaders()
        }
        body = request.content.read()
        self.seen.append({"method": method, "path": raw_path, "headers": headers, "body": body})
        request.notifyFinish().addErrback(lambda _: self.lost.append(request))
        try:
            auth = verify_request(
                method, raw_path, raw_query, headers,
                lambda key: Credential(ACCESS_KEY, SECRET, "bucket") if key == ACCESS_KEY else None,
                self.clock.seconds(),
            )
            if auth.payload_mode.is_aws_chunked:
                body = self._decode(auth, headers, body)
        except S3Error as error:
            return self._error(request, error.status, error.code)
        if method in self.errors:
            status, code = self.errors.pop(method)
            return self._error(request, status, code)
        if method == "HEAD" and raw_path in ("/" + self.bucket, "/"):
            return b""
        key = self._key(raw_path)
        if method == "PUT" and "x-amz-copy-source" in headers:
            return self._copy(request, key, headers["x-amz-copy-source"][0])
        if method == "PUT":
            self.objects[key] = body
            request.setResponseCode(self.put_status)
            if self.etag:
                request.setHeader(b"etag", b'"%s"' % hashlib.md5(body).hexdigest().encode())
            return self._maybe_hold(request, b"")
        if method == "DELETE":
            self.objects.pop(key, None)
            request.setResponseCode(204)
            return b""
        if key not in self.objects:
            return self._error(request, 404, "NoSuchKey")
        data = self.objects[key]
        request.setHeader(b"etag", b'"%s"' % hashlib.md5(data).hexdigest().encode())
        if "content-encoding" in self.seen[-1]["headers"]:
            pass
        if key.endswith(b".gz"):
            request.setHeader(b"content-encoding", b"gzip")
        ranges = headers.get("range")
        if ranges and not self.ignore_range:
            first, last = (int(x) for x in ranges[0].removeprefix("bytes=").split("-"))
            request.setResponseCode(206)
            request.setHeader(b"content-range", f"bytes {first}-{last}/{len(data)}".encode())
            data = data[first:last + 1]
        request.setHeader(b"content-length", str(len(data)).encode())
        return self._maybe_hold(request, data)

    def _copy(self, request: Request, key: bytes, source: str) -> bytes:
        # S3 may answer a copy with 200 and an <Error> document (copy_answer).
        if self.copy_answer is not None:
            return self.copy_answer
        source_key = self._key(source)
        if source_key not in self.objects:
            return self._error(request, 404, "NoSuchKey")
        self.objects[key] = self.objects[source_key]
        return b"<CopyObjectResult><ETag>&quot;x&quot;</ETag></CopyObjectResult>"

    def _decode(self, auth: Any, headers: dict[str, list[str]], body: bytes) -> bytes:
        mode = auth.payload_mode
        decoded: list[bytes] = []
        decoder = AwsChunkedDecoder(
            decoded.append, mode=mode,
            decoded_length=int(headers["x-amz-decoded-content-length"][0]),
            chain=ChunkSignatureChain.from_auth(auth) if mode.chunks_signed else None,
        )
        decoder.feed(body)
        trailers = decoder.finish()
        data = b"".join(decoded)
        declared = [name.strip().lower() for value in headers.get("x-amz-trailer", []) for name in value.split(",")]
        if sorted(declared) != sorted(trailers) or (mode.has_trailer and not trailers):
            raise S3Error("InvalidRequest", f"trailers {sorted(trailers)} but x-amz-trailer {declared}")
        for name, value in trailers.items():
            if name not in CHECKSUM_HEADERS:
                raise S3Error("InvalidRequest", f"unexpected trailer {name}")
            checksum = new_checksum(CHECKSUM_HEADERS[name])
            checksum.update(data)
            if checksum.b64digest() != value:
                raise S3Error("BadDigest")
        self.trailers.append(trailers)
        return data

    def _maybe_hold(self, request: Request, data: bytes) -> bytes | int:
        if not self.hold:
            return data
        self.held.append(request)
        return NOT_DONE_YET

    def _error(self, request: Request, status: int, code: str) -> bytes:
        request.setResponseCode(status)
        request.setHeader(b"content-type", b"application/xml")
        return (
            f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{code}</Code>"
            f"<Message>{LEAKY} {SECRET}</Message></Error>"
        ).encode()


@implementer(IConsumer)
class Collector:
    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.producer: Any = None
        self.unregistered = False

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        assert streaming
        self.producer = producer

    def unregisterProducer(self) -> None:
        self.unregistered = True

    def write(self, data: bytes) -> None:
        self.parts.append(data)

    @property
    def data(self) -> bytes:
        return b"".join(self.parts)


class Harness:
    """A store wired to a FakeS3 through an in-memory agent, with a Clock for timeouts."""

    def __init__(self, **overrides: Any) -> None:
        self.clock = Clock()
        self.clock.advance(NOW)
        self.config = config(**overrides)
        self.fake = FakeS3(self.clock, virtual_host=not self.config.path_style)
        self.agent = RequestTraversalAgent(self.fake)
        self.store = S3Store(self.config, self.clock, agent=self.agent, chunk_size=1000)

    def flush(self) -> None:
        for _ in range(20):
            self.agent.flush()

    def result(self, d: Deferred[Any]) -> Any:
        self.flush()
        results: list[Any] = []
        d.addBoth(results.append)
        assert results, "the Deferred has not fired"
        if isinstance(results[0], Failure):
            results[0].raiseException()
        return results[0]

    def failure(self, d: Deferred[Any], *types: type[BaseException]) -> BaseException:
        self.flush()
        results: list[Any] = []
        d.addBoth(results.append)
        assert results, "the Deferred has not fired"
        assert isinstance(results[0], Failure), f"expected a failure, got {results[0]!r}"
        assert results[0].check(*types), results[0]
        return results[0].value

    def put(self, location: str, data: bytes) -> None:
        write = self.store.start_write(location, FakeBody([data]), len(data))
        self.result(write.done)
        self.result(write.publish())

    def get(self, location: str, byte_range: tuple[int, int] | None = None) -> bytes:
        reader = self.result(self.store.open_read(location, byte_range))
        collector = Collector()
        streamed = reader.stream_to(collector)
        self.result(streamed)
        assert collector.unregistered
        assert len(collector.data) == reader.length
        return collector.data


def fired(d: Deferred[Any]) -> bool:
    results: list[Any] = []
    d.addBoth(lambda r: results.append(r) or r)
    return bool(results)


# -- signing and round trips -------------------------------------------------------------------


def test_provides_the_interfaces() -> None:
    h = Harness()
    assert verifyObject(IObjectStore, h.store)
    write = h.store.start_write("b/k", FakeBody([b"x"]), 1)
    assert verifyObject(IObjectWrite, write)
    h.result(write.done)
    assert verifyObject(IObjectReader, h.result(h.store.open_read("b/k", None)))


def test_locations_are_escaped_only_where_a_filesystem_backed_upstream_needs_it() -> None:
    store = Harness().store
    assert store.location_for("app", "dir/key.txt") == "app/dir/key.txt"
    assert store.location_for("app", "a//b/../c") == "app/a/%%/b/%%../c"


def test_round_trip_is_signed_and_verified() -> None:
    h = Harness()
    h.put("app/key.txt", b"hello world")
    assert h.get("app/key.txt") == b"hello world"
    put = h.fake.seen[0]
    assert put["headers"]["x-amz-content-sha256"] == ["UNSIGNED-PAYLOAD"]
    assert put["headers"]["content-length"] == ["11"]
    assert "host" in put["headers"]["authorization"][0]
    assert h.fake.objects == {b"app/key.txt": b"hello world"}


@pytest.mark.parametrize("payload_signing", ["unsigned", "streaming"])
def test_no_checksum_or_encoding_negotiation_headers_are_sent(payload_signing: str) -> None:
    # send_checksums defaults to false: B2, GCS and OCI refuse uploads with any of these.
    h = Harness(payload_signing=payload_signing)
    assert h.config.send_checksums is False
    h.put("app/k", b"data")
    h.get("app/k")
    for seen in h.fake.seen:
        names = set(seen["headers"])
        assert not {n for n in names if n.startswith("x-amz-checksum") or n == "x-amz-sdk-checksum-algorithm"}
        assert "x-amz-trailer" not in names and "accept-encoding" not in names
        assert not seen["headers"]["x-amz-content-sha256"][0].endswith("-TRAILER")
        assert b"x-amz-checksum" not in seen["body"]
    assert h.fake.trailers == ([{}] if payload_signing == "streaming" else [])


def test_wrong_secret_is_misconfigured_and_does_not_leak() -> None:
    h = Harness(secret_access_key="wrong")
    write = h.store.start_write("app/k", FakeBody([b"x"]), 1)
    error = h.failure(write.done, StoreMisconfigured)
    assert "403" in str(error) and "SignatureDoesNotMatch" in str(error)
    assert LEAKY not in str(error) and SECRET not in str(error) and "wrong" not in str(error)


@pytest.mark.parametrize("key, wire", [
    ("with space", "with%20space"),
    ("plus+sign", "plus%2Bsign"),
    ("percent%", "percent%25"),
    ("encoded%2Fslash", "encoded%252Fslash"),
    ("unicodé/日本", "unicod%C3%A9/%E6%97%A5%E6%9C%AC"),
    ("a//double/", "a//double/"),
    ("tilde~dash-dot._", "tilde~dash-dot._"),
    ("star*quote'(x)!", "star%2Aquote%27%28x%29%21"),
    ("q?hash#amp&eq=", "q%3Fhash%23amp%26eq%3D"),
])
def test_awkward_keys_are_encoded_once_and_signed_as_sent(key: str, wire: str) -> None:
    h = Harness()
    h.put(f"app/{key}", b"bytes")
    assert h.fake.seen[-1]["path"] == f"/bucket/app/{wire}"
    assert h.fake.objects == {f"app/{key}".encode(): b"bytes"}
    assert h.get(f"app/{key}") == b"bytes"
    assert h.result(h.store.delete(f"app/{key}")) is None
    assert h.fake.objects == {}


def test_virtual_host_style() -> None:
    h = Harness(path_style=False)
    h.put("app/k 1", b"v")
    seen = h.fake.seen[-1]
    assert seen["path"] == "/app/k%201"
    assert seen["headers"]["host"] == ["bucket.s3.test:9000"]
    assert h.get("app/k 1") == b"v"
    assert h.result(h.store.probe()) is None
    assert h.fake.seen[-1]["path"] == "/"


@pytest.mark.parametrize("endpoint, path_style, url, host, path", [
    ("http://s3.test:9000", True, b"http://s3.test:9000/bucket/a/b%20c", "s3.test:9000", "/bucket/a/b%20c"),
    ("http://s3.test:80/", True, b"http://s3.test/bucket/a/b%20c", "s3.test", "/bucket/a/b%20c"),
    ("https://S3.example.com", True, b"https://s3.example.com/bucket/a/b%20c", "s3.example.com", "/bucket/a/b%20c"),
    ("https://s3.example.com:443", False, b"https://bucket.s3.example.com/a/b%20c", "bucket.s3.example.com",
     "/a/b%20c"),
    ("http://[::1]:9000", True, b"http://[::1]:9000/bucket/a/b%20c", "[::1]:9000", "/bucket/a/b%20c"),
    ("http://gw.test/prefix/", True, b"http://gw.test/prefix/bucket/a/b%20c", "gw.test", "/prefix/bucket/a/b%20c"),
])
def test_request_target(endpoint: str, path_style: bool, url: bytes, host: str, path: str) -> None:
    target = request_target(config(endpoint=endpoint, path_style=path_style), "a/b c")
    assert (target.url, target.host, target.raw_path) == (url, host, path)


def test_bucket_target_for_head_bucket() -> None:
    assert request_target(config(), None).raw_path == "/bucket"
    assert request_target(config(path_style=False), None).raw_path == "/"


def test_streaming_payload_signing_is_verified_chunk_by_chunk() -> None:
    h = Harness(payload_signing="streaming")
    data = bytes(range(256)) * 10  # 2560 bytes: chunks of 1000, 1000, 560
    write = h.store.start_write("app/streamed", FakeBody([data[:7], data[7:1500], data[1500:]]), len(data))
    h.result(write.done)
    seen = h.fake.seen[-1]
    assert seen["headers"]["x-amz-content-sha256"] == ["STREAMING-AWS4-HMAC-SHA256-PAYLOAD"]
    assert seen["headers"]["content-encoding"] == ["aws-chunked"]
    assert seen["headers"]["x-amz-decoded-content-length"] == [str(len(data))]
    assert seen["headers"]["content-length"] == [str(framed_length(PayloadMode.STREAMING_SIGNED, len(data), 1000))]
    assert h.fake.objects[b"app/streamed"] == data


def test_streaming_empty_body() -> None:
    h = Harness(payload_signing="streaming")
    write = h.store.start_write("app/empty", FakeBody([]), 0)
    h.result(write.done)
    assert h.fake.objects[b"app/empty"] == b""


# -- send_checksums: a CRC32 trailer ---------------------------------------------------------------


def crc32_b64(data: bytes) -> str:
    """The x-amz-checksum-crc32 value of ``data`` (base64 of the big-endian CRC32)."""
    return base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode("ascii")


@pytest.mark.parametrize("payload_signing, content_sha256", [
    ("unsigned", "STREAMING-UNSIGNED-PAYLOAD-TRAILER"),
    ("streaming", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"),
])
@pytest.mark.parametrize("size", [0, 1, 1000, 2560])
def test_send_checksums_uploads_a_verified_crc32_trailer(payload_signing: str, content_sha256: str, size: int) -> None:
    h = Harness(payload_signing=payload_signing, send_checksums=True)
    data = (bytes(range(256)) * 10)[:size]  # chunks of 1000: the last one full, short or absent
    write = h.store.start_write("app/summed", FakeBody([data[:7], data[7:1500], data[1500:]]), size)
    h.result(write.done)
    seen = h.fake.seen[-1]
    headers = seen["headers"]
    assert headers["x-amz-content-sha256"] == [content_sha256]
    assert headers["content-encoding"] == ["aws-chunked"]
    assert headers["x-amz-decoded-content-length"] == [str(size)]
    assert headers["x-amz-trailer"] == ["x-amz-checksum-crc32"]
    assert headers["x-amz-sdk-checksum-algorithm"] == ["CRC32"]
    assert "x-amz-checksum-crc32" not in headers  # a trailer: not known when the headers go
    assert "transfer-encoding" not in headers
    assert headers["content-length"] == [str(len(seen["body"]))]
    assert len(seen["body"]) == framed_length(PayloadMode(content_sha256), size, 1000)
    signed = headers["authorization"][0].partition("SignedHeaders=")[2].partition(",")[0].split(";")
    assert {"content-encoding", "x-amz-decoded-content-length", "x-amz-trailer",
            "x-amz-sdk-checksum-algorithm"} <= set(signed)
    assert h.fake.trailers == [{"x-amz-checksum-crc32": crc32_b64(data)}]  # verified by the fake
    assert h.fake.objects[b"app/summed"] == data
    assert h.get("app/summed") == data


def test_unsigned_trailer_body_is_framed_like_botocore() -> None:
    # botocore's flexible-checksum wrapper, with the same chunk size, sends the same bytes.
    httpchecksum = pytest.importorskip("botocore.httpchecksum")
    import io

    h = Harness(send_checksums=True)
    data = bytes(range(256)) * 10
    h.put("app/k", data)
    wrapper = httpchecksum.AwsChunkedWrapper(
        io.BytesIO(data), checksum_cls=httpchecksum.Crc32Checksum,
        checksum_name="x-amz-checksum-crc32", chunk_size=1000,
    )
    assert h.fake.seen[-1]["body"] == wrapper.read()


def test_upload_corrupted_after_its_crc32_was_computed_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    # Proves the fake (and so every test above) really checks the trailer against the bytes.
    original = UploadFraming.chunk

    def corrupt(self: UploadFraming, data: Any) -> bytes:
        frame = original(self, data)
        return frame[:-3] + bytes([frame[-3] ^ 1]) + frame[-2:]  # flip a bit of the data's last byte

    monkeypatch.setattr(UploadFraming, "chunk", corrupt)
    h = Harness(send_checksums=True)
    write = h.store.start_write("app/k", FakeBody([b"abc"]), 3)
    error = h.failure(write.done, StoreUnavailable)  # damaged on the way: worth another try
    assert "400 BadDigest" in str(error)
    assert h.fake.objects == {}


@pytest.mark.parametrize("payload_signing, send_checksums, mode", [
    ("unsigned", False, PayloadMode.UNSIGNED),
    ("streaming", False, PayloadMode.STREAMING_SIGNED),
    ("unsigned", True, PayloadMode.STREAMING_UNSIGNED_TRAILER),
    ("streaming", True, PayloadMode.STREAMING_SIGNED_TRAILER),
])
def test_upload_mode(payload_signing: str, send_checksums: bool, mode: PayloadMode) -> None:
    assert upload_mode(payload_signing, send_checksums) is mode


def test_unframed_length_is_the_length() -> None:
    assert framed_length(PayloadMode.UNSIGNED, 12345, 1000) == 12345


def test_gzip_encoded_object_is_not_decoded() -> None:
    h = Harness()
    import gzip

    compressed = gzip.compress(b"abc" * 1000)
    h.fake.objects[b"app/page.gz"] = compressed
    assert h.get("app/page.gz") == compressed


def test_ranged_get() -> None:
    h = Harness()
    h.fake.objects[b"app/r"] = bytes(range(100))
    assert h.get("app/r", (10, 19)) == bytes(range(10, 20))
    assert h.fake.seen[-1]["headers"]["range"] == ["bytes=10-19"]


def test_reader_reports_the_upstream_etag() -> None:
    h = Harness()
    h.fake.objects[b"app/r"] = bytes(range(100))
    reader = h.result(h.store.open_read("app/r", (10, 19)))
    assert reader.etag == f'"{hashlib.md5(bytes(range(100))).hexdigest()}"'
    reader.cancel()


def test_range_ignored_by_upstream_is_refused() -> None:
    h = Harness()
    h.fake.objects[b"app/r"] = bytes(range(100))
    h.fake.ignore_range = True
    h.failure(h.store.open_read("app/r", (10, 19)), StoreUnavailable)


def test_put_answer_without_etag_is_a_failure_and_removes_the_object() -> None:
    h = Harness()
    h.fake.etag = False
    write = h.store.start_write("app/k", FakeBody([b"x"]), 1)
    h.failure(write.done, StoreUnavailable)
    h.flush()
    assert [seen["method"] for seen in h.fake.seen] == ["PUT", "DELETE"]
    assert h.fake.objects == {}


@pytest.mark.parametrize("status", [201, 204])
def test_any_2xx_with_an_etag_is_a_stored_object(status: int) -> None:
    h = Harness()
    h.fake.put_status = status
    write = h.store.start_write("app/k", FakeBody([b"abc"]), 3)
    h.result(write.done)
    h.result(write.publish())
    h.flush()
    assert [seen["method"] for seen in h.fake.seen] == ["PUT"]
    assert h.fake.objects == {b"app/k": b"abc"}


def test_2xx_without_an_etag_is_a_failure_and_removes_the_object() -> None:
    h = Harness()
    h.fake.put_status = 201
    h.fake.etag = False
    write = h.store.start_write("app/k", FakeBody([b"x"]), 1)
    error = h.failure(write.done, StoreUnavailable)
    assert "201 without an ETag" in str(error)
    h.flush()
    assert [seen["method"] for seen in h.fake.seen] == ["PUT", "DELETE"]
    assert h.fake.objects == {}


def test_chunk_signatures_are_seeded_with_the_request_signature() -> None:
    h = Harness()
    target = request_target(h.config, "app/k")
    wire, amz_date, seed = h.store.signed_headers("PUT", target, {}, "STREAMING-AWS4-HMAC-SHA256-PAYLOAD")
    (authorization,) = wire.getRawHeaders(b"authorization")
    assert seed == parse_authorization_header(authorization.decode()).signature
    assert wire.getRawHeaders(b"x-amz-date") == [amz_date.encode()]


def test_no_timer_is_left_behind() -> None:
    h = Harness()
    h.put("app/k", b"abc")
    h.get("app/k")
    h.get("app/k", (1, 2))
    h.result(h.store.delete("app/k"))
    h.result(h.store.probe())
    h.failure(h.store.open_read("app/k", None), ObjectMissing)
    h.fake.errors["PUT"] = (500, "InternalError")
    h.failure(h.store.start_write("app/k", FakeBody([b"x"]), 1).done, StoreUnavailable)
    assert h.clock.getDelayedCalls() == []


def test_failures_are_logged_with_store_and_status(logged: list[dict[str, Any]]) -> None:
    h = Harness()
    h.fake.errors["GET"] = (503, "SlowDown")
    h.failure(h.store.open_read("app/k", None), StoreUnavailable)
    (event,) = [e for e in logged if e.get("store") == "up"]
    assert event["operation"] == "GET" and event["status"] == 503 and event["log_level"] == LogLevel.warn
    assert event["location"] == "'app/k'" and event["duration"] >= 0


def test_publish_before_done_fails_and_after_done_is_a_no_op() -> None:
    h = Harness()
    body = FakeBody([b"ab"], length=3, hold=True)
    write = h.store.start_write("app/k", body, 3)
    h.failure(write.publish(), RuntimeError)
    assert write.staged is False
    body.consumer.write(b"c")  # type: ignore[union-attr]
    body.produced.callback(None)  # type: ignore[union-attr]
    h.result(write.done)
    assert h.result(write.publish()) is None


# -- bodies that go wrong --------------------------------------------------------------------


def test_body_longer_than_announced() -> None:
    h = Harness()
    body = FakeBody([b"abcd"], length=3)
    write = h.store.start_write("app/k", body, 3)
    error = h.failure(write.done, S3Error)
    assert error.code == "IncompleteBody"  # type: ignore[attr-defined]
    assert "stop" in body.calls
    assert h.fake.objects == {}


def test_body_shorter_than_announced() -> None:
    h = Harness()
    write = h.store.start_write("app/k", FakeBody([b"ab"], length=3), 3)
    error = h.failure(write.done, S3Error)
    assert error.code == "IncompleteBody"  # type: ignore[attr-defined]
    assert h.fake.objects == {}


def test_body_failure_is_reported_as_itself() -> None:
    h = Harness()
    body = FakeBody([b"ab"], length=3, hold=True)
    write = h.store.start_write("app/k", body, 3)
    h.flush()
    body.produced.errback(S3Error("BadDigest"))  # type: ignore[union-attr]
    error = h.failure(write.done, S3Error)
    assert error.code == "BadDigest"  # type: ignore[attr-defined]
    assert h.fake.objects == {}


def test_abort_before_done_cancels_the_upload() -> None:
    h = Harness()
    body = FakeBody([b"ab"], length=3, hold=True)
    write = h.store.start_write("app/k", body, 3)
    h.flush()
    write.abort()
    h.failure(write.done, CancelledError)
    assert "stop" in body.calls
    h.flush()
    assert h.fake.objects == {}
    assert [seen["method"] for seen in h.fake.seen] == []  # the upstream never got a whole request


def test_abort_after_done_deletes_the_object() -> None:
    h = Harness()
    write = h.store.start_write("app/k", FakeBody([b"abc"]), 3)
    h.result(write.done)
    write.abort()
    h.flush()
    assert [seen["method"] for seen in h.fake.seen] == ["PUT", "DELETE"]
    assert h.fake.objects == {}
    write.abort()  # idempotent
    h.flush()
    assert len(h.fake.seen) == 2


# -- error mapping ---------------------------------------------------------------------------


@pytest.mark.parametrize("method, status, code, expected", [
    ("GET", 404, "NoSuchKey", ObjectMissing),
    ("GET", 404, "NoSuchBucket", StoreMisconfigured),
    ("GET", 500, "InternalError", StoreUnavailable),
    ("GET", 503, "SlowDown", StoreUnavailable),
    ("GET", 403, "AccessDenied", StoreMisconfigured),
    ("GET", 401, "Unauthorized", StoreMisconfigured),
    ("GET", 416, "InvalidRange", StoreMisconfigured),
    ("PUT", 403, "AccessDenied", StoreMisconfigured),
    ("PUT", 404, "NoSuchBucket", StoreMisconfigured),
    ("PUT", 400, "RequestTimeout", StoreUnavailable),
    ("PUT", 429, "TooManyRequests", StoreUnavailable),
    ("PUT", 502, "BadGateway", StoreUnavailable),
    # Bytes damaged or cut short in transit: not the store's configuration.
    ("PUT", 400, "BadDigest", StoreUnavailable),
    ("PUT", 400, "InvalidDigest", StoreUnavailable),
    ("PUT", 400, "XAmzContentSHA256Mismatch", StoreUnavailable),
    ("PUT", 400, "IncompleteBody", StoreUnavailable),
    ("PUT", 400, "InvalidArgument", StoreMisconfigured),
    ("DELETE", 404, "NoSuchBucket", StoreMisconfigured),
    ("DELETE", 500, "InternalError", StoreUnavailable),
    ("HEAD", 403, "AccessDenied", StoreUnavailable),
    ("HEAD", 404, "NoSuchBucket", StoreUnavailable),
    ("HEAD", 500, "InternalError", StoreUnavailable),
])
def test_error_mapping(method: str, status: int, code: str, expected: type[Exception]) -> None:
    h = Harness()
    h.fake.objects[b"app/k"] = b"x"
    h.fake.errors[method] = (status, code)
    if method == "GET":
        d: Deferred[Any] = h.store.open_read("app/k", None)
    elif method == "PUT":
        d = h.store.start_write("app/k", FakeBody([b"x"]), 1).done
    elif method == "DELETE":
        d = h.store.delete("app/k")
    else:
        d = h.store.probe()
    error = h.failure(d, expected)
    if expected is not ObjectMissing:
        assert str(status) in str(error)
        assert LEAKY not in str(error) and SECRET not in str(error)


def test_delete_of_missing_key_succeeds() -> None:
    h = Harness()
    h.fake.errors["DELETE"] = (404, "NoSuchKey")
    assert h.result(h.store.delete("app/gone")) is None


def test_get_of_missing_object() -> None:
    h = Harness()
    h.failure(h.store.open_read("app/none", None), ObjectMissing)


@implementer(IAgent)
class FailingAgent:
    """Every request fails with ``error`` (or never answers when ``error`` is None)."""

    def __init__(self, error: Exception | None) -> None:
        self.error = error
        self.cancelled = 0

    def request(self, method: bytes, uri: bytes, headers: Any = None, bodyProducer: Any = None) -> Deferred[Any]:
        if self.error is not None:
            return fail(self.error)

        def cancel(d: Deferred[Any]) -> None:
            self.cancelled += 1

        return Deferred(cancel)


@pytest.mark.parametrize("error", [ConnectionRefusedError(), DNSLookupError("s3.test")])
def test_connection_errors_are_unavailable(error: Exception) -> None:
    clock = Clock()
    store = S3Store(config(), clock, agent=FailingAgent(error))
    for d in (store.probe(), store.open_read("app/k", None), store.delete("app/k"),
              store.start_write("app/k", FakeBody([b"x"]), 1).done):
        failures: list[Failure] = []
        d.addErrback(failures.append)
        assert failures and failures[0].check(StoreUnavailable), failures
        assert type(error).__name__ in str(failures[0].value)


# -- XML error parsing ------------------------------------------------------------------------


@pytest.mark.parametrize("body, code", [
    (b"<Error><Code>NoSuchKey</Code><Message>m</Message></Error>", "NoSuchKey"),
    (b"<?xml version='1.0'?><Error xmlns='http://s3.amazonaws.com/doc/2006-03-01/'><Code>AccessDenied</Code></Error>",
     "AccessDenied"),
    (b"", None),
    (b"not xml", None),
    (b"<Error><Code>Bad Code With Spaces</Code></Error>", None),
    (b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">]><Error><Code>&lol;</Code></Error>', None),
    (b'<!DOCTYPE x SYSTEM "file:///etc/passwd"><Error><Code>X</Code></Error>', None),
    (b"<Error><Code>Big</Code><Pad>" + b"x" * MAX_ERROR_BODY + b"</Pad></Error>", None),
    (b"\xef\xbb\xbf<Error><Code>WithBom</Code></Error>", "WithBom"),
    # UTF-8 whatever the declaration says: the parser gets decoded text.
    (b"<?xml version='1.0' encoding='UTF-16'?><Error><Code>Declared16</Code></Error>", "Declared16"),
    (b"<?xml version='1.0' encoding='ISO-8859-1'?><Error><Code>Latin\xe9</Code></Error>", None),
])
def test_parse_error_code(body: bytes, code: str | None) -> None:
    assert parse_error_code(body) == code


ENTITY_DOCUMENT = (
    '<?xml version="1.0" encoding="UTF-16"?><!DOCTYPE E [<!ENTITY a "Inj">]><Error><Code>&a;ected</Code></Error>'
)


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be", "utf-32"])
def test_parse_error_code_refuses_other_encodings(encoding: str) -> None:
    # In UTF-16 the bytes of "<!" are "<\0!\0": a check on bytes missed the DOCTYPE and the
    # parser expanded the entity ("Injected").
    assert parse_error_code(ENTITY_DOCUMENT.encode(encoding)) is None
    assert parse_error_code("<Error><Code>Plain</Code></Error>".encode(encoding)) is None


# -- the silence watchdog ----------------------------------------------------------------------


def test_watchdog_fires_after_silence_and_progress_postpones_it() -> None:
    clock = Clock()
    fired_at: list[float] = []
    watchdog = SilenceWatchdog(clock, 10, lambda: fired_at.append(clock.seconds()))
    watchdog.arm()
    clock.advance(9)
    watchdog.progress()
    clock.advance(9)
    watchdog.disarm()
    clock.advance(100)
    assert fired_at == []
    watchdog.arm()
    clock.advance(10)
    assert fired_at == [128]
    watchdog.arm()
    clock.advance(100)
    assert fired_at == [128]  # once only


def test_connect_that_never_completes_times_out() -> None:
    clock = Clock()
    agent = FailingAgent(None)
    store = S3Store(config(), clock, agent=agent)
    d = store.probe()
    clock.advance(TIMEOUT - 1)
    assert not fired(d)
    clock.advance(1)
    failures: list[Failure] = []
    d.addErrback(failures.append)
    assert failures[0].check(StoreUnavailable) and "no progress" in str(failures[0].value)
    assert agent.cancelled == 1


def test_upstream_silent_after_the_body_times_out() -> None:
    h = Harness()
    h.fake.hold = True
    write = h.store.start_write("app/k", FakeBody([b"abc"]), 3)
    h.flush()
    h.clock.advance(TIMEOUT - 1)
    assert not fired(write.done)
    h.clock.advance(1)
    error = h.failure(write.done, StoreUnavailable)
    assert "no progress" in str(error)


def test_slow_client_never_times_out() -> None:
    h = Harness()
    body = FakeBody([b"a"], length=3, hold=True)
    write = h.store.start_write("app/k", body, 3)
    for _ in range(10):
        h.flush()
        h.clock.advance(TIMEOUT)
        body.consumer.write(b"")  # type: ignore[union-attr]
    assert not fired(write.done)
    body.consumer.write(b"bc")  # type: ignore[union-attr]
    body.produced.callback(None)  # type: ignore[union-attr]
    h.result(write.done)
    assert h.fake.objects == {b"app/k": b"abc"}


def _held_get(h: Harness, data: bytes) -> tuple[Any, Collector, Deferred[None], Request]:
    h.fake.objects[b"app/k"] = data
    h.fake.hold = True
    opened = h.store.open_read("app/k", None)
    h.flush()
    (upstream,) = h.fake.held
    upstream.write(data[:10])
    reader = h.result(opened)
    collector = Collector()
    streamed = reader.stream_to(collector)
    h.flush()
    return reader, collector, streamed, upstream


def test_download_that_stalls_times_out_and_closes_the_upstream_connection() -> None:
    h = Harness()
    reader, collector, streamed, upstream = _held_get(h, b"x" * 100)
    assert collector.data == b"x" * 10
    h.clock.advance(TIMEOUT)
    error = h.failure(streamed, StoreUnavailable)
    assert "no progress" in str(error)
    assert collector.unregistered
    assert h.fake.lost == [upstream]


def test_paused_consumer_never_times_out() -> None:
    h = Harness()
    reader, collector, streamed, upstream = _held_get(h, b"y" * 100)
    reader.pauseProducing()
    h.clock.advance(TIMEOUT * 10)
    assert not fired(streamed)
    reader.resumeProducing()
    upstream.write(b"y" * 90)
    upstream.finish()
    h.result(streamed)
    assert collector.data == b"y" * 100


def test_consumer_that_stops_closes_the_upstream_connection() -> None:
    h = Harness()
    reader, collector, streamed, upstream = _held_get(h, b"z" * 100)
    collector.producer.stopProducing()
    h.failure(streamed, CancelledError)
    assert h.fake.lost == [upstream]
    h.clock.advance(TIMEOUT * 2)  # no watchdog left behind
    assert h.clock.getDelayedCalls() == []


def test_cancel_before_streaming_frees_the_connection() -> None:
    h = Harness()
    h.fake.objects[b"app/k"] = b"q" * 100
    h.fake.hold = True
    opened = h.store.open_read("app/k", None)
    h.flush()
    (upstream,) = h.fake.held
    upstream.write(b"q" * 10)
    reader = h.result(opened)
    reader.cancel()
    h.flush()
    assert h.fake.lost == [upstream]
    h.failure(reader.stream_to(Collector()), CancelledError)
    assert h.clock.getDelayedCalls() == []


def test_truncated_download_is_unavailable() -> None:
    h = Harness()
    reader, collector, streamed, upstream = _held_get(h, b"t" * 100)
    upstream.channel.transport.loseConnection()
    error = h.failure(streamed, StoreUnavailable)
    assert "10 of 100" in str(error)
    assert collector.unregistered


# -- aws-chunked framing -----------------------------------------------------------------------


@implementer(IConsumer)
class Sink:
    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.parts.append(data)

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        pass

    def unregisterProducer(self) -> None:
        pass


CHUNKED_MODES = [
    PayloadMode.STREAMING_SIGNED, PayloadMode.STREAMING_SIGNED_TRAILER, PayloadMode.STREAMING_UNSIGNED_TRAILER,
]


@settings(max_examples=300, deadline=None)
@given(
    mode=st.sampled_from(CHUNKED_MODES),
    data=st.binary(max_size=5000),
    chunk_size=st.integers(min_value=1, max_value=1500),
    cuts=st.lists(st.integers(min_value=0, max_value=5000), max_size=8),
)
def test_framed_length_matches_the_framing_produced(
    mode: PayloadMode, data: bytes, chunk_size: int, cuts: list[int]
) -> None:
    points = sorted({0, len(data), *(c for c in cuts if c <= len(data))})
    pieces = [data[a:b] for a, b in pairwise(points)]
    key, amz_date, scope, seed = b"k" * 32, "20260101T000000Z", "20260101/r/s3/aws4_request", "ab" * 32

    def chain() -> ChunkSignatureChain | None:
        return ChunkSignatureChain(key, amz_date, scope, seed) if mode.chunks_signed else None

    signing_chain = chain()
    signer = None if signing_chain is None else AwsChunkedSigner(signing_chain)
    framing = UploadFraming(mode, chunk_size, signer)
    body = UpstreamBody(FakeBody(pieces), len(data), SilenceWatchdog(Clock(), 1, lambda: None), framing)
    sink = Sink()
    done: list[Any] = []
    body.startProducing(sink).addBoth(done.append)
    assert done == [None]
    framed = b"".join(sink.parts)
    assert len(framed) == body.length == framed_length(mode, len(data), chunk_size)
    assert framed.endswith(b"\r\n\r\n")
    decoded: list[bytes] = []
    decoder = AwsChunkedDecoder(decoded.append, mode=mode, decoded_length=len(data), chain=chain())
    decoder.feed(framed)
    trailers = decoder.finish()  # in signed-trailer mode, the trailer signature is checked too
    assert b"".join(decoded) == data
    assert trailers == ({"x-amz-checksum-crc32": crc32_b64(data)} if mode.has_trailer else {})
    assert all(len(part) <= chunk_size + 256 for part in sink.parts)  # never more than a chunk buffered


def test_upstream_body_passes_backpressure_through_and_arms_the_watchdog() -> None:
    clock = Clock()
    silent: list[bool] = []
    watchdog = SilenceWatchdog(clock, 5, lambda: silent.append(True))
    source = FakeBody([b"abc"], hold=True)
    body = UpstreamBody(source, 3, watchdog)
    body.startProducing(Sink())
    clock.advance(100)  # the client's pace: no timeout
    body.pauseProducing()  # the upstream is slow: it owes progress now
    clock.advance(4)
    body.resumeProducing()
    clock.advance(100)
    body.pauseProducing()
    clock.advance(5)
    assert source.calls == ["pause", "resume", "pause"]
    assert silent == [True]
    body.stopProducing()
    assert source.calls[-1] == "stop"


class FakeTransport:
    def __init__(self) -> None:
        self.aborted = 0

    def abortConnection(self) -> None:
        self.aborted += 1


class LengthEnforcingSink(Sink):
    """Stands for Twisted's LengthEnforcingConsumer: the transport is its ``_consumer``."""

    def __init__(self) -> None:
        super().__init__()
        self._consumer = FakeTransport()


def test_upstream_body_stopped_short_aborts_the_connection() -> None:
    # An early answer (403, 507) while the body is still going out: Twisted only calls
    # loseConnection, which waits forever for our producer; the connection must be aborted.
    source = FakeBody([b"ab"], length=3, hold=True)
    body = UpstreamBody(source, 3, SilenceWatchdog(Clock(), 5, lambda: None))
    sink = LengthEnforcingSink()
    body.startProducing(sink)
    body.stopProducing()
    body.stopProducing()
    assert source.calls == ["stop"]
    assert sink._consumer.aborted == 1


def test_upstream_body_stopped_after_its_end_keeps_the_connection() -> None:
    body = UpstreamBody(FakeBody([b"abc"]), 3, SilenceWatchdog(Clock(), 5, lambda: None))
    sink = LengthEnforcingSink()
    done: list[Any] = []
    body.startProducing(sink).addBoth(done.append)
    assert done == [None]
    body.stopProducing()
    assert sink._consumer.aborted == 0


# -- server-side copies -------------------------------------------------------------------------


def test_copy_is_done_by_the_upstream() -> None:
    h = Harness()
    h.put("app/src", b"payload")
    copy = h.store.start_copy("app/src", "app/dst", 7)
    h.result(copy.done)
    assert h.fake.objects[b"app/dst"] == b"payload"
    assert h.fake.seen[-1]["headers"]["x-amz-copy-source"] == ["/bucket/app/src"]
    assert h.fake.seen[-1]["body"] == b""


@pytest.mark.parametrize("code,error", [
    ("InternalError", StoreUnavailable), ("SlowDown", StoreUnavailable),
    ("NoSuchKey", ObjectMissing), ("AccessDenied", StoreMisconfigured),
])
def test_copy_answered_200_with_an_error_document_fails(code: str, error: type[Exception]) -> None:
    h = Harness()
    h.put("app/src", b"payload")
    h.fake.copy_answer = f"<Error><Code>{code}</Code><Message>m</Message></Error>".encode()
    copy = h.store.start_copy("app/src", "app/dst", 7)
    h.failure(copy.done, error)


def test_copy_of_a_missing_source_is_object_missing() -> None:
    h = Harness()
    copy = h.store.start_copy("app/missing", "app/dst", 7)
    h.failure(copy.done, ObjectMissing)
    assert b"app/dst" not in h.fake.objects



# -- what a failed write leaves at its location ---------------------------------------------------


def test_refused_put_leaves_the_location_intact() -> None:
    h = Harness()
    h.fake.errors["PUT"] = (503, "SlowDown")
    write = h.store.start_write("app/k", FakeBody([b"abc"]), 3)
    h.failure(write.done, StoreUnavailable)
    assert write.location_intact is True


def test_put_whose_answer_is_lost_may_have_replaced_the_location() -> None:
    h = Harness()
    h.fake.hold = True
    write = h.store.start_write("app/k", FakeBody([b"abc"]), 3)
    h.flush()
    h.clock.advance(TIMEOUT)
    h.failure(write.done, StoreUnavailable)
    assert write.location_intact is False


def test_put_whose_body_failed_leaves_the_location_intact() -> None:
    h = Harness()
    body = FakeBody([b"ab"], length=3, hold=True)
    write = h.store.start_write("app/k", body, 3)
    h.flush()
    body.fail(S3Error("IncompleteBody"))
    h.failure(write.done, S3Error)
    assert write.location_intact is True


def test_stored_put_with_a_bad_answer_does_not_leave_the_location_intact() -> None:
    h = Harness()
    h.fake.etag = False
    write = h.store.start_write("app/k", FakeBody([b"x"]), 1)
    h.failure(write.done, StoreUnavailable)
    assert write.location_intact is False


def test_copy_refused_with_an_error_document_leaves_the_location_intact() -> None:
    h = Harness()
    h.put("app/src", b"payload")
    h.fake.copy_answer = b"<Error><Code>InternalError</Code><Message>m</Message></Error>"
    copy = h.store.start_copy("app/src", "app/dst", 7)
    h.failure(copy.done, StoreUnavailable)
    assert copy.location_intact is True


# -- reading with failover between two upstreams ---------------------------------------------------


def _two_upstreams(first_data: bytes, second_data: bytes) -> tuple[Harness, Harness, FailoverReader, list[str]]:
    one, two = Harness(name="one"), Harness(name="two")
    one.fake.objects[b"app/k"] = first_data
    two.fake.objects[b"app/k"] = second_data
    one.fake.hold = True  # the test sends the first upstream's body itself
    stores = {"one": one.store, "two": two.store}
    reports: list[str] = []
    reader = FailoverReader(
        [("one", "app/k"), ("two", "app/k")], len(first_data), hashlib.md5(first_data).hexdigest(),
        lambda store, location, byte_range: stores[store].open_read(location, byte_range),
        lambda store, error: reports.append(f"{store}: {type(error).__name__}"), one.clock,
    )
    opening = reader.open()
    one.flush()
    (upstream,) = one.fake.held
    upstream.write(first_data[:10])
    one.result(opening)
    return one, two, reader, reports


def test_an_upstream_stalling_mid_download_is_resumed_from_the_other_with_a_range() -> None:
    data = bytes(range(100))
    one, two, reader, reports = _two_upstreams(data, data)
    collector = Collector()
    streamed = reader.stream_to(collector)
    one.flush()
    one.clock.advance(TIMEOUT)  # the first upstream goes silent after 10 bytes
    two.result(streamed)
    assert collector.data == data and collector.unregistered
    assert two.fake.seen[-1]["headers"]["range"] == ["bytes=10-99"]
    assert reports == ["one: StoreUnavailable"] and reader.failovers == 1


def test_an_upstream_holding_another_object_is_not_switched_to() -> None:
    data = bytes(range(100))
    one, two, reader, reports = _two_upstreams(data, data[::-1])
    collector = Collector()
    streamed = reader.stream_to(collector)
    one.flush()
    one.clock.advance(TIMEOUT)
    two.failure(streamed, StoreUnavailable)
    assert collector.data == data[:10]
    assert reports == ["one: StoreUnavailable", "two: CopyMismatch"]
