"""S3Store against real S3 servers on loopback (SeaweedFS checks signatures, moto does not)."""

from __future__ import annotations

import base64
import gzip
import hashlib
import os
import zlib
from typing import Any

import pytest
import pytest_twisted
from botocore.exceptions import ClientError
from twisted.internet import reactor
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IConsumer, IPushProducer
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import LogLevel, globalLogPublisher
from twisted.python.failure import Failure
from twisted.web.iweb import IBodyProducer
from zope.interface import implementer

from s3orchestrator.auth.chunked import AwsChunkedSigner
from s3orchestrator.config import S3StoreConfig
from s3orchestrator.stores.interface import ObjectMissing, StoreMisconfigured, StoreUnavailable
from s3orchestrator.stores.s3 import S3Store
from s3orchestrator.web.body import ClientGone
from tests.integration.daemon import ACCESS_KEY, BUCKET, SECRET_KEY, StoreSpec
from tests.integration.upstreams import Upstream

pytestmark = pytest.mark.integration

MIB = 1024 * 1024
UPSTREAMS = ["seaweedfs", "moto"]


@implementer(IBodyProducer)
class BytesBody:
    """Produces ``data`` in ``chunk``-sized writes, one per reactor turn, honouring pauses.

    With ``stall_at`` it stops writing after that many bytes and never finishes
    (a client that went quiet); with ``fail_at`` it fails there (a client that left).
    """

    def __init__(
        self, data: bytes, chunk: int = 256 * 1024, stall_at: int | None = None, fail_at: int | None = None
    ) -> None:
        self.data = data
        self.fail_at = fail_at
        self.length = len(data)
        self.chunk = chunk
        self.stall_at = stall_at
        self.sent = 0
        self.paused = False
        self.stopped = False
        self.pauses = 0
        self.started: Deferred[None] = Deferred()
        self._consumer: IConsumer | None = None
        self._finished: Deferred[None] | None = None
        self._scheduled = False

    def startProducing(self, consumer: IConsumer) -> Deferred[None]:
        self._consumer = consumer
        self._finished = Deferred()
        self.started.callback(None)
        self._schedule()
        return self._finished

    def _schedule(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            reactor.callLater(0, self._produce)

    def _produce(self) -> None:
        self._scheduled = False
        if self.paused or self.stopped or self._finished is None or self._finished.called:
            return
        if self.stall_at is not None and self.sent >= self.stall_at:
            return
        if self.fail_at is not None and self.sent >= self.fail_at:
            self._finished.errback(ClientGone("the client went away"))
            return
        if self.sent >= self.length:
            self._finished.callback(None)
            return
        end = self.sent + self.chunk if self.stall_at is None else min(self.sent + self.chunk, self.stall_at)
        piece = self.data[self.sent:end]
        self.sent += len(piece)
        assert self._consumer is not None
        self._consumer.write(piece)
        self._schedule()

    def pauseProducing(self) -> None:
        self.paused = True
        self.pauses += 1

    def resumeProducing(self) -> None:
        self.paused = False
        self._schedule()

    def stopProducing(self) -> None:
        self.stopped = True


@implementer(IConsumer)
class Collector:
    """Collects what a reader streams; with ``pause_for`` it pauses the producer after
    every write and resumes it that many seconds later (a slow client)."""

    def __init__(self, pause_for: float | None = None) -> None:
        self.parts: list[bytes] = []
        self.producer: IPushProducer | None = None
        self.unregistered = False
        self.pause_for = pause_for
        self.pauses = 0
        self._paused = False

    def registerProducer(self, producer: IPushProducer, streaming: bool) -> None:
        assert streaming
        self.producer = producer

    def unregisterProducer(self) -> None:
        self.unregistered = True

    def write(self, data: bytes) -> None:
        self.parts.append(data)
        if self.pause_for is not None and not self._paused and self.producer is not None:
            self._paused = True
            self.pauses += 1
            self.producer.pauseProducing()
            reactor.callLater(self.pause_for, self._resume)

    def _resume(self) -> None:
        self._paused = False
        if self.producer is not None and not self.unregistered:
            self.producer.resumeProducing()

    @property
    def data(self) -> bytes:
        return b"".join(self.parts)


@pytest.fixture(autouse=True)
def no_logged_errors() -> Any:
    """Fail a test that makes Twisted (or the store) log an error or a traceback."""
    errors: list[dict[str, Any]] = []

    def observe(event: dict[str, Any]) -> None:
        if event.get("log_level", LogLevel.info) >= LogLevel.error or "log_failure" in event:
            errors.append(event)

    globalLogPublisher.addObserver(observe)
    yield
    globalLogPublisher.removeObserver(observe)
    assert not errors, [(e.get("log_format"), e.get("log_failure")) for e in errors]


def payload(size: int) -> bytes:
    return os.urandom(size)


@pytest.fixture(params=UPSTREAMS)
def upstream(request: pytest.FixtureRequest) -> Upstream:
    """Each shared server in turn, with a fresh bucket for the test."""
    server: Upstream = request.getfixturevalue(request.param)
    return server


@pytest.fixture
def store(upstream: Upstream) -> Any:
    s3_store = S3Store(upstream.store_config(bucket=upstream.new_bucket()), reactor)
    yield s3_store
    pytest_twisted.blockon(s3_store.stop())


async def put(store: S3Store, location: str, data: bytes, **body_options: Any) -> None:
    write = store.start_write(location, BytesBody(data, **body_options), len(data))
    await write.done
    await write.publish()


async def get(store: S3Store, location: str, byte_range: tuple[int, int] | None = None, **consumer: Any) -> bytes:
    reader = await store.open_read(location, byte_range)
    collector = Collector(**consumer)
    await reader.stream_to(collector)
    assert collector.unregistered
    assert len(collector.data) == reader.length
    return collector.data


def upstream_bytes(store: S3Store, upstream: Upstream, location: str) -> bytes:
    return upstream.boto.get_object(Bucket=store.config.bucket, Key=location)["Body"].read()


@pytest.mark.parametrize("size", [0, 1, MIB, 20 * MIB], ids=["0B", "1B", "1MiB", "20MiB"])
@pytest_twisted.ensureDeferred
async def test_round_trip(store: S3Store, size: int) -> None:
    data = payload(size)
    await put(store, "app/object.bin", data)
    assert hashlib.md5(await get(store, "app/object.bin")).digest() == hashlib.md5(data).digest()


@pytest_twisted.ensureDeferred
async def test_slow_upstream_pauses_the_body(store: S3Store) -> None:
    # 4 MiB per reactor turn overflows the transport's buffer: the upload must pause the body.
    data = payload(32 * MIB)
    body = BytesBody(data, chunk=4 * MIB)
    write = store.start_write("app/big", body, len(data))
    await write.done
    assert body.pauses > 0
    assert hashlib.md5(await get(store, "app/big")).digest() == hashlib.md5(data).digest()


@pytest_twisted.ensureDeferred
async def test_object_lands_upstream_under_its_location(store: S3Store, upstream: Upstream) -> None:
    data = payload(1000)
    await put(store, "app/dir/key.txt", data)
    assert upstream_bytes(store, upstream, "app/dir/key.txt") == data


@pytest_twisted.ensureDeferred
async def test_ranged_get(store: S3Store) -> None:
    data = payload(3 * MIB + 17)
    await put(store, "app/ranged", data)
    assert await get(store, "app/ranged", (0, 0)) == data[:1]
    assert await get(store, "app/ranged", (MIB + 5, 2 * MIB + 9)) == data[MIB + 5:2 * MIB + 10]
    assert await get(store, "app/ranged", (len(data) - 10, len(data) - 1)) == data[-10:]


@pytest_twisted.ensureDeferred
async def test_gzip_encoded_object_comes_back_byte_identical(store: S3Store, upstream: Upstream) -> None:
    compressed = gzip.compress(b"hello, compressed world\n" * 5000)
    upstream.boto.put_object(
        Bucket=store.config.bucket, Key="app/page.html", Body=compressed,
        ContentEncoding="gzip", ContentType="text/html",
    )
    reader = await store.open_read("app/page.html", None)
    assert reader.length == len(compressed)
    collector = Collector()
    await reader.stream_to(collector)
    assert collector.data == compressed


@pytest.mark.parametrize("key", [
    "with space", "plus+sign", "encoded%2Fslash", "percent%", "unicodé/日本語", "a//double", "tilde~and*star'(x)!",
    "../up", "a/./b", "dir/", "back\\slash", "..",
])
@pytest_twisted.ensureDeferred
async def test_awkward_keys(store: S3Store, upstream: Upstream, key: str) -> None:
    # SeaweedFS collapses "//", refuses "." and ".." segments, splits at a backslash and keeps
    # no bytes for a key ending in "/": location_for escapes those, so each key is one object.
    location = store.location_for("app", key)
    data = key.encode("utf-8") * 3
    await put(store, location, data)
    assert await get(store, location) == data
    listed = upstream.boto.list_objects_v2(Bucket=store.config.bucket, Prefix="app/")
    assert [item["Key"] for item in listed.get("Contents", [])] == [location]


@pytest_twisted.ensureDeferred
async def test_missing_object_is_object_missing(store: S3Store) -> None:
    with pytest.raises(ObjectMissing):
        await store.open_read("app/never-written", None)


@pytest_twisted.ensureDeferred
async def test_delete_is_idempotent(store: S3Store, upstream: Upstream) -> None:
    await put(store, "app/doomed", b"bytes")
    await store.delete("app/doomed")
    await store.delete("app/doomed")
    await store.delete("app/never-existed")
    with pytest.raises(ObjectMissing):
        await store.open_read("app/doomed", None)
    with pytest.raises(ClientError):
        upstream.boto.head_object(Bucket=store.config.bucket, Key="app/doomed")


@pytest_twisted.ensureDeferred
async def test_overwrite_replaces_the_object(store: S3Store) -> None:
    await put(store, "app/k", b"first version")
    await put(store, "app/k", b"second")
    assert await get(store, "app/k") == b"second"


@pytest_twisted.ensureDeferred
async def test_probe_ok(store: S3Store) -> None:
    await store.probe()


@pytest.mark.parametrize("kind", UPSTREAMS)
@pytest_twisted.ensureDeferred
async def test_probe_of_stopped_server_is_unavailable(start_upstream: Any, kind: str) -> None:
    server = start_upstream(kind)
    store = S3Store(server.store_config(timeout=5.0), reactor)
    await store.probe()
    server.stop()
    with pytest.raises(StoreUnavailable):
        await store.probe()
    with pytest.raises(StoreUnavailable):
        await store.open_read("app/x", None)
    write = store.start_write("app/x", BytesBody(b"abc"), 3)
    with pytest.raises(StoreUnavailable):
        await write.done
    await store.stop()


@pytest_twisted.ensureDeferred
async def test_streaming_payload_signing_round_trip(upstream: Upstream) -> None:
    # SeaweedFS verifies every chunk signature; moto strips the framing.
    store = S3Store(
        upstream.store_config(bucket=upstream.new_bucket(), payload_signing="streaming"), reactor, chunk_size=64 * 1024
    )
    for size in (0, 1, 64 * 1024, 3 * MIB + 5):
        data = payload(size)
        await put(store, f"app/streamed-{size}", data, chunk=100_000)
        assert await get(store, f"app/streamed-{size}") == data
        assert upstream_bytes(store, upstream, f"app/streamed-{size}") == data
    await store.stop()


@pytest_twisted.ensureDeferred
async def test_seaweedfs_checks_our_chunk_signatures(seaweedfs: Upstream, monkeypatch: pytest.MonkeyPatch) -> None:
    # Proves the streaming round trip above is really verified: a forged chunk is refused.
    original = AwsChunkedSigner.chunk
    store = S3Store(seaweedfs.store_config(payload_signing="streaming"), reactor, chunk_size=1024)
    monkeypatch.setattr(AwsChunkedSigner, "chunk", lambda self, data: _forge(original(self, data)))
    write = store.start_write("app/forged", BytesBody(payload(4096)), 4096)
    with pytest.raises((StoreMisconfigured, StoreUnavailable)):  # SeaweedFS answers 500 to a bad chunk
        await write.done
    await store.stop()
    with pytest.raises(ClientError):
        seaweedfs.boto.head_object(Bucket=store.config.bucket, Key="app/forged")


def crc32_b64(data: bytes) -> str:
    """The x-amz-checksum-crc32 value of ``data`` (base64 of the big-endian CRC32)."""
    return base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode("ascii")


@pytest.mark.parametrize("payload_signing", ["unsigned", "streaming"])
@pytest_twisted.ensureDeferred
async def test_send_checksums_round_trip(upstream: Upstream, payload_signing: str) -> None:
    # A CRC32 trailer, STREAMING-UNSIGNED-PAYLOAD-TRAILER or STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER.
    # Both servers take both modes. SeaweedFS recomputes the CRC32 and refuses a mismatch
    # (400 InvalidDigest); moto keeps the trailer's value without checking it. Either way the
    # object's recorded CRC32 is the one we sent.
    store = S3Store(
        upstream.store_config(bucket=upstream.new_bucket(), payload_signing=payload_signing, send_checksums=True),
        reactor, chunk_size=64 * 1024,
    )
    for size in (0, 1, 64 * 1024, 3 * MIB + 5):
        data = payload(size)
        location = f"app/summed-{size}"
        await put(store, location, data, chunk=100_000)
        assert await get(store, location) == data
        assert upstream_bytes(store, upstream, location) == data
        head = upstream.boto.head_object(Bucket=store.config.bucket, Key=location, ChecksumMode="ENABLED")
        assert head["ChecksumCRC32"] == crc32_b64(data)
    await store.stop()


@pytest.mark.parametrize("payload_signing", ["unsigned", "streaming"])
@pytest_twisted.ensureDeferred
async def test_send_checksums_round_trip_through_an_s3orchestrator(start_daemon: Any, payload_signing: str) -> None:
    # Our own server as the upstream: it refuses a missing, undeclared or wrong CRC32 trailer.
    daemon = start_daemon(stores=[StoreSpec("disk", 0)])
    config = S3StoreConfig(
        name="orchestrator", quota_bytes=0, endpoint=daemon.endpoint, bucket=BUCKET, access_key_id=ACCESS_KEY,
        secret_access_key=SECRET_KEY, payload_signing=payload_signing, send_checksums=True, timeout=10.0,
    )
    store = S3Store(config, reactor, chunk_size=64 * 1024)
    for size in (0, 3 * MIB + 5):
        data = payload(size)
        await put(store, f"app/summed-{size}", data)
        assert await get(store, f"app/summed-{size}") == data
    await store.stop()


def _forge(frame: bytes) -> bytes:
    """The same chunk with its signature's last hex digit changed."""
    head, _, rest = frame.partition(b"\r\n")
    last = head[-1:]
    return head[:-1] + (b"0" if last != b"0" else b"1") + b"\r\n" + rest


@pytest_twisted.ensureDeferred
async def test_wrong_secret_is_misconfigured(seaweedfs: Upstream) -> None:
    store = S3Store(seaweedfs.store_config(secret_access_key="not-the-secret"), reactor)
    write = store.start_write("app/x", BytesBody(b"abc"), 3)
    with pytest.raises(StoreMisconfigured, match="403"):
        await write.done
    with pytest.raises(StoreMisconfigured, match="403"):
        await store.open_read("app/x", None)
    with pytest.raises(StoreUnavailable, match="403"):
        await store.probe()
    await store.stop()


@pytest_twisted.ensureDeferred
async def test_abort_before_done_leaves_no_object(store: S3Store, upstream: Upstream) -> None:
    data = payload(2 * MIB)
    body = BytesBody(data, chunk=64 * 1024, stall_at=MIB)
    write = store.start_write("app/aborted", body, len(data))
    await body.started
    while body.sent < MIB:
        await sleep(0.01)
    write.abort()
    with pytest.raises(CancelledError):
        await write.done
    assert body.stopped
    await sleep(0.2)
    with pytest.raises(ClientError):
        upstream.boto.head_object(Bucket=store.config.bucket, Key="app/aborted")


@pytest_twisted.ensureDeferred
async def test_client_leaving_mid_upload_leaves_no_object(store: S3Store, upstream: Upstream) -> None:
    data = payload(2 * MIB)
    write = store.start_write("app/half", BytesBody(data, chunk=64 * 1024, fail_at=MIB), len(data))
    with pytest.raises(ClientGone):
        await write.done
    write.abort()
    await sleep(0.2)
    with pytest.raises(ClientError):
        upstream.boto.head_object(Bucket=store.config.bucket, Key="app/half")


@pytest_twisted.ensureDeferred
async def test_abort_after_done_deletes_the_object(store: S3Store, upstream: Upstream) -> None:
    write = store.start_write("app/committed-then-aborted", BytesBody(b"abc"), 3)
    await write.done
    write.abort()
    for _ in range(100):
        try:
            upstream.boto.head_object(Bucket=store.config.bucket, Key="app/committed-then-aborted")
        except ClientError:
            return
        await sleep(0.02)
    pytest.fail("the object is still there")


@pytest_twisted.ensureDeferred
async def test_paused_consumer_still_gets_every_byte(store: S3Store) -> None:
    data = payload(4 * MIB)
    await put(store, "app/slow-reader", data)
    reader = await store.open_read("app/slow-reader", None)
    collector = Collector(pause_for=0.002)
    await reader.stream_to(collector)
    assert collector.pauses > 5
    assert collector.data == data


@pytest_twisted.ensureDeferred
async def test_consumer_that_stops_cancels_the_download(store: S3Store) -> None:
    data = payload(8 * MIB)
    await put(store, "app/abandoned", data)
    reader = await store.open_read("app/abandoned", None)

    class Quitter(Collector):
        def write(self, data: bytes) -> None:
            super().write(data)
            if self.producer is not None and len(self.parts) == 1:
                self.producer.stopProducing()

    collector = Quitter()
    with pytest.raises(CancelledError):
        await reader.stream_to(collector)
    assert len(collector.data) < len(data)
    # The store keeps working (the abandoned connection is not reused).
    assert await get(store, "app/abandoned", (0, 9)) == data[:10]


def sleep(seconds: float) -> Deferred[None]:
    d: Deferred[None] = Deferred()
    reactor.callLater(seconds, d.callback, None)
    return d


# -- an upstream that answers before it has read the body -------------------------------------------


class EarlyAnswer(Protocol):
    """Reads a request's headers, stops reading (the client's buffers fill and its body
    producer is paused), answers 403 half a second later, then ``drain_after`` seconds
    later reads and drops whatever still comes (as a lingering close does; reading is
    also how it learns that the client closed the connection)."""

    ERROR = b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>AccessDenied</Code></Error>"

    def __init__(self, drain_after: float, lost: Deferred[None]) -> None:
        self.drain_after = drain_after
        self.lost = lost
        self.head = b""
        self.answering = False
        self.calls: list[Any] = []

    def dataReceived(self, data: bytes) -> None:
        if self.answering:
            return
        self.head += data
        if b"\r\n\r\n" in self.head:
            self.answering = True
            self.transport.pauseProducing()
            self.calls.append(reactor.callLater(0.5, self.answer))

    def answer(self) -> None:
        self.transport.write(
            b"HTTP/1.1 403 Forbidden\r\nContent-Type: application/xml\r\nContent-Length: %d\r\n\r\n%s"
            % (len(self.ERROR), self.ERROR)
        )
        self.calls.append(reactor.callLater(self.drain_after, self.transport.resumeProducing))

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        for call in self.calls:
            if call.active():
                call.cancel()
        self.lost.callback(None)


@pytest.mark.parametrize("drain_after", [0, 1.0], ids=["upstream-drains-at-once", "upstream-drains-later"])
@pytest_twisted.ensureDeferred
async def test_early_error_answer_closes_the_upstream_connection(drain_after: float) -> None:
    # Twisted hands over the answer and calls loseConnection, which waits for the body
    # producer still registered on the transport: without an abort the socket stayed open,
    # never read nor written again, for good.
    lost: Deferred[None] = Deferred()
    port = reactor.listenTCP(0, Factory.forProtocol(lambda: EarlyAnswer(drain_after, lost)), interface="127.0.0.1")
    config = S3StoreConfig(
        name="early", quota_bytes=0, endpoint=f"http://127.0.0.1:{port.getHost().port}", bucket="bucket",
        access_key_id="AK", secret_access_key="SK", timeout=5.0,
    )
    store = S3Store(config, reactor)
    try:
        data = payload(64 * MIB)
        body = BytesBody(data, chunk=MIB)
        write = store.start_write("app/refused", body, len(data))
        with pytest.raises(StoreMisconfigured, match="403 AccessDenied"):
            await write.done
        assert body.stopped and body.sent < len(data)
        lost.addTimeout(5, reactor)
        await lost  # TimeoutError if our side never closes the connection
    finally:
        await store.stop()
        await port.stopListening()


# -- TLS -----------------------------------------------------------------------------------------


def self_signed(hostname: str) -> tuple[bytes, bytes]:
    """A key and a self-signed certificate (PEM) for ``hostname``."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(hostname)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )
    return key_pem, certificate.public_bytes(serialization.Encoding.PEM)


@pytest.fixture
def tls_bucket(tmp_path: Any) -> Any:
    """An https server on 127.0.0.1 with a self-signed certificate for "localhost" that
    answers HeadBucket; yields (port, path of the certificate)."""
    from twisted.internet import ssl
    from twisted.web.resource import Resource
    from twisted.web.server import Site

    class Bucket(Resource):
        isLeaf = True

        def render_HEAD(self, request: Any) -> bytes:
            return b""

    key_pem, cert_pem = self_signed("localhost")
    (tmp_path / "ca.pem").write_bytes(cert_pem)
    options = ssl.PrivateCertificate.loadPEM(key_pem + cert_pem).options()
    port = reactor.listenSSL(0, Site(Bucket()), options, interface="127.0.0.1")
    yield port.getHost().port, str(tmp_path / "ca.pem")
    pytest_twisted.blockon(port.stopListening())


@pytest.mark.filterwarnings("ignore:Passing pyOpenSSL:DeprecationWarning")  # inside Twisted
@pytest.mark.parametrize("host, with_ca, trusted", [
    ("localhost", True, True),
    ("localhost", False, False),  # not in the platform's trust store
    ("127.0.0.1", True, False),  # the certificate names localhost, not 127.0.0.1
])
@pytest_twisted.ensureDeferred
async def test_tls_verification_with_ca_file(tls_bucket: Any, host: str, with_ca: bool, trusted: bool) -> None:
    port, ca_file = tls_bucket
    config = S3StoreConfig(
        name="tls", quota_bytes=0, endpoint=f"https://{host}:{port}", bucket="bucket",
        access_key_id="AK", secret_access_key="SK", ca_file=ca_file if with_ca else None, timeout=5.0,
    )
    store = S3Store(config, reactor)
    if trusted:
        await store.probe()
    else:
        with pytest.raises(StoreUnavailable):
            await store.probe()
    await store.stop()


# -- server-side copies -------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_copy_then_read_the_target(store: S3Store, upstream: Upstream) -> None:
    data = payload(MIB + 3)
    await put(store, "app/source", data)
    key = "app/dir/tärget with spaces+plus"
    copy = store.start_copy("app/source", key, len(data))
    assert copy.staged is False
    await copy.done
    await copy.publish()
    assert await get(store, key) == data
    assert upstream_bytes(store, upstream, key) == data
    assert await get(store, "app/source") == data


@pytest_twisted.ensureDeferred
async def test_copy_from_an_awkward_key(store: S3Store) -> None:
    source = "app/sp ace/ünï+%41&?#=x"
    await put(store, source, b"awkward")
    copy = store.start_copy(source, "app/plain", 7)
    await copy.done
    assert await get(store, "app/plain") == b"awkward"


@pytest_twisted.ensureDeferred
async def test_copy_of_a_missing_source_is_object_missing(store: S3Store, upstream: Upstream) -> None:
    copy = store.start_copy("app/never-written", "app/target", 3)
    with pytest.raises(ObjectMissing):
        await copy.done
    with pytest.raises(ObjectMissing):
        await store.open_read("app/target", None)


@pytest_twisted.ensureDeferred
async def test_copy_onto_itself_keeps_the_bytes(store: S3Store) -> None:
    await put(store, "app/k", b"same bytes")
    copy = store.start_copy("app/k", "app/k", 10)
    await copy.done
    await copy.publish()
    copy.abort()  # must not delete the object it never replaced
    await sleep(0.1)
    assert await get(store, "app/k") == b"same bytes"
    with pytest.raises(ObjectMissing):
        await store.start_copy("app/none", "app/none", 1).done


@pytest_twisted.ensureDeferred
async def test_abort_after_a_copy_deletes_the_target(store: S3Store, upstream: Upstream) -> None:
    await put(store, "app/source", b"abc")
    copy = store.start_copy("app/source", "app/copied-then-aborted", 3)
    await copy.done
    copy.abort()
    for _ in range(100):
        try:
            upstream.boto.head_object(Bucket=store.config.bucket, Key="app/copied-then-aborted")
        except ClientError:
            assert await get(store, "app/source") == b"abc"
            return
        await sleep(0.02)
    pytest.fail("the copy is still there")
