"""A store keeping objects in a bucket of an upstream S3 service (AWS, B2, R2, OCI, MinIO, ...).

Requests go through a bare ``twisted.web.client.Agent`` over a persistent
connection pool. Not treq's ``HTTPClient``: its ``request`` always wraps the
agent in a ``ContentDecoderAgent`` (and a redirect agent), which would gunzip
objects stored with ``Content-Encoding: gzip``; bodies must pass byte for byte.

Every request is SigV4-signed by ``s3orchestrator.auth.sigv4.sign_request``
over exactly the path and query sent (the location percent-encoded the AWS
way, an upload id as well). Bodies
stream both ways with backpressure: an upload relays the client's body as an
``IBodyProducer`` (``UNSIGNED-PAYLOAD``, or re-framed into aws-chunked chunks,
see ``s3_framing``), a download registers a push producer on the consumer that
pauses and resumes the upstream socket.

``send_checksums = true`` makes every upload carry a CRC32 of the object,
computed as it streams, in an aws-chunked trailer (``x-amz-trailer:
x-amz-checksum-crc32``, ``x-amz-sdk-checksum-algorithm: CRC32``, as botocore
sends it): ``STREAMING-UNSIGNED-PAYLOAD-TRAILER`` with ``payload_signing =
"unsigned"``, ``STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER`` (signed chunks and
a signed trailer) with ``"streaming"``. An upstream that checks it (AWS,
SeaweedFS, s3orchestrator; moto only records it) refuses an upload whose bytes
do not match. With ``false`` (the default) no ``x-amz-checksum-*``,
``x-amz-trailer`` or ``x-amz-sdk-checksum-algorithm`` header is ever sent:
B2, GCS and OCI reject them.

A timeout on silence replaces fixed deadlines: a request fails with
StoreUnavailable when the upstream owes progress (a connection, reading our
body, response headers, response bytes) and none comes for ``config.timeout``
seconds; a transfer that keeps moving never times out, and waiting on a slow
client or a paused consumer does not count. Its floor on uploads: Twisted tells
a body producer nothing of the bytes the upstream reads, only that its
user-space write buffer (64 KiB) overflowed (pause) and later drained
completely (resume). Progress is that resume, so an upstream must take in a
full buffer - 64 to about 128 KiB - within ``timeout`` seconds: one reading
slower than roughly 128 KiB per ``timeout`` fails the PUT as silent.

PUTs are not retried. Agent retries a request that fails on a pooled
connection the server has just closed only if it is idempotent and has no
body, so a PUT that meets such a stale connection fails: the client gets a
503 and the store a health failure. Idle connections are dropped after
``CACHED_CONNECTION_TIMEOUT`` (15 s), below the keep-alive timeout of common
servers, to make this rare.

An object's location (its upstream key) is ``<bucket>/<key>`` where a
filesystem-backed server (SeaweedFS, MinIO) can hold that name, an escaped
form where it cannot (``location_for``, see ``s3_locations``).

Multipart uploads map one to one onto the upstream's (``s3_multipart``):
CreateMultipartUpload gives the upload id, a part is an UploadPart streamed
like a PUT (same payload modes, checksums and watchdog) whose ETag the store
keeps, and Complete names the parts by number and ETag. A part is never
deleted on its own (it goes with its upload, aborted or completed); a
completed object is, like a PUT's, on ``abort`` after ``done``. Complete's
200 may carry an ``<Error>`` after a long run of whitespace, as CopyObject's may.

The objects are written by ``s3_write`` (``S3Write``, ``S3Copy``,
``UpstreamBody``) and ``s3_multipart`` (``S3PartWrite``, ``S3Complete``) and
read by ``s3_read`` (``S3Reader``); each request is an ``s3_exchange.Exchange``.
Failures map to StoreUnavailable (network, timeout, 5xx, throttling, bytes
damaged in transit), ObjectMissing (404 on GET) and StoreMisconfigured (other
4xx: credentials, missing bucket); see ``s3_errors``.
"""

from __future__ import annotations

from email.utils import parsedate_to_datetime
from typing import Any, Callable, Sequence

from twisted.internet.defer import Deferred, succeed
from twisted.web.client import HTTPConnectionPool
from twisted.web.http_headers import Headers
from twisted.web.iweb import UNKNOWN_LENGTH, IAgent, IBodyProducer, IResponse
from zope.interface import implementer

from s3orchestrator.auth.sigv4 import format_amz_date, sign_request
from s3orchestrator.config import S3StoreConfig
from s3orchestrator.stores.interface import (
    IObjectReader,
    IObjectStore,
    IObjectWrite,
    IPartWrite,
    ObjectMissing,
    ObjectStat,
    StoredPart,
    StoreUnavailable,
)
from s3orchestrator.stores.s3_errors import error_for_status, parse_error_code
from s3orchestrator.stores.s3_exchange import Exchange, discard_body
from s3orchestrator.stores.s3_http import DEFAULT_CONNECTIONS_PER_HOST, Target, make_agent, make_pool, request_target
from s3orchestrator.stores.s3_locations import upstream_location
from s3orchestrator.stores.s3_multipart import S3Complete, S3PartWrite, abort_upload, create_upload
from s3orchestrator.stores.s3_read import S3Reader
from s3orchestrator.stores.s3_write import DEFAULT_CHUNK_SIZE, S3Copy, S3Write

__all__ = ["S3Store", "S3Complete", "S3Copy", "S3PartWrite", "S3Write", "S3Reader"]


@implementer(IObjectStore)
class S3Store:
    """Objects in one bucket of an upstream S3 service, under the location given (``location_for``).

    ``agent`` replaces the real Agent (tests); ``pool`` is shared or made here
    (persistent, ``connections_per_host`` idle connections kept per host).
    ``observer(store, operation, status, error, seconds, timed_out=...)`` is told
    how every upstream request ended (``Metrics.upstream_finished``).
    """

    def __init__(
        self,
        config: S3StoreConfig,
        reactor: Any,
        pool: HTTPConnectionPool | None = None,
        *,
        agent: IAgent | None = None,
        connections_per_host: int = DEFAULT_CONNECTIONS_PER_HOST,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        observer: Callable[..., None] | None = None,
    ) -> None:
        self.name = config.name
        self.observer = observer
        self.config = config
        self.chunk_size = chunk_size
        self.reactor = reactor
        if agent is None:
            if pool is None:
                pool = make_pool(reactor, connections_per_host)
            agent = make_agent(config, reactor, pool)
        self._pool = pool
        self.agent: IAgent = agent

    def signed_headers(
        self, method: str, target: Target, headers: dict[str, str], payload_hash: str
    ) -> tuple[Headers, str, str]:
        """Wire headers (host and ``headers`` signed), the request's x-amz-date and its signature."""
        config = self.config
        amz_date = format_amz_date(self.reactor.seconds())
        to_sign = {"host": target.host, **headers}
        added = sign_request(
            method, target.raw_path, target.raw_query, to_sign,
            access_key_id=config.access_key_id,
            secret_access_key=config.secret_access_key,
            region=config.region,
            amz_date=amz_date,
            payload_hash=payload_hash,
        )
        wire = Headers()
        for name, value in {**to_sign, **added}.items():
            wire.addRawHeader(name.encode("ascii"), value.encode("latin-1"))
        return wire, amz_date, added.signature

    def start(self) -> Deferred[None]:
        """Nothing to prepare (``probe`` checks the bucket)."""
        return succeed(None)

    def stop(self) -> Deferred[None]:
        """Close the pool's idle connections (at shutdown)."""
        if self._pool is None:
            return succeed(None)
        return self._pool.closeCachedConnections()

    def location_for(self, bucket: str, key: str) -> str:
        """``<bucket>/<key>``, escaped where a filesystem-backed server could not hold it
        (see ``s3_locations``)."""
        return upstream_location(bucket, key)

    def start_write(self, location: str, body: IBodyProducer, length: int) -> IObjectWrite:
        """PUT ``length`` bytes of ``body`` at ``location``; see S3Write."""
        write = S3Write(self, location, body, length)
        write.start()
        return write

    def start_copy(self, source_location: str, target_location: str, length: int) -> IObjectWrite:
        """CopyObject upstream (the bytes stay there); see S3Copy."""
        write = S3Copy(self, source_location, target_location, length)
        write.start()
        return write

    def open_read(self, location: str, byte_range: tuple[int, int] | None) -> Deferred[IObjectReader]:
        """GET the object (Range passed through); ObjectMissing on 404."""
        return Deferred.fromCoroutine(self._open_read(location, byte_range))

    async def _open_read(self, location: str, byte_range: tuple[int, int] | None) -> IObjectReader:
        if byte_range is not None and not 0 <= byte_range[0] <= byte_range[1]:
            raise ValueError(f"bad byte range {byte_range!r}")
        exchange = Exchange(self, "GET", location)
        headers = {} if byte_range is None else {"range": f"bytes={byte_range[0]}-{byte_range[1]}"}
        response = await exchange.request("GET", request_target(self.config, location), headers)
        if response.code not in (200, 206):
            raise await exchange.error(response)
        length = response.length
        problem = None
        if length is UNKNOWN_LENGTH:
            problem = "no Content-Length"
        elif byte_range is not None:
            first, last = byte_range
            expected = (first, last) if response.code == 206 else (0, length - 1)
            if (first, last) != expected or length != last - first + 1:
                problem = f"{response.code} for the range {first}-{last} ({length} bytes)"
            elif response.code == 206 and _content_range(response) != (first, last):
                problem = "a Content-Range that does not match the range asked for"
        if problem is not None:
            exchange.watchdog.disarm()
            discard_body(response)
            error = StoreUnavailable(f"store {self.name}: GET answered with {problem}")
            exchange.log(response.code, error)
            raise error
        return S3Reader(response, length, exchange)

    def stat(self, location: str) -> Deferred[ObjectStat]:
        """HEAD the object: its Content-Length, ETag and Last-Modified; ObjectMissing on 404."""
        return Deferred.fromCoroutine(self._stat(location))

    async def _stat(self, location: str) -> ObjectStat:
        exchange = Exchange(self, "HEAD", location)
        response = await exchange.request("HEAD", request_target(self.config, location))
        await exchange.read_small(response)
        if response.code == 404:
            exchange.record(404)
            raise ObjectMissing(location)
        if response.code != 200:
            error = error_for_status(self.name, "HEAD", response.code, None, location)
            exchange.log(response.code, error)
            raise error
        length = response.headers.getRawHeaders(b"content-length")
        etag = response.headers.getRawHeaders(b"etag")
        modified = response.headers.getRawHeaders(b"last-modified")
        try:
            size = int(length[0]) if length else -1
            last_modified = parsedate_to_datetime(modified[0].decode("latin-1")).timestamp() if modified else 0.0
        except (TypeError, ValueError):
            size = -1
        if size < 0:
            error = StoreUnavailable(f"store {self.name}: HEAD answered without a valid Content-Length")
            exchange.log(response.code, error)
            raise error
        exchange.log(200)
        return ObjectStat(
            size=size, etag=etag[0].decode("latin-1").strip('"') if etag else None, last_modified=last_modified
        )

    def delete(self, location: str) -> Deferred[None]:
        """DELETE the object; a missing one is fine."""
        return Deferred.fromCoroutine(self._delete(location))

    async def _delete(self, location: str) -> None:
        exchange = Exchange(self, "DELETE", location)
        response = await exchange.request("DELETE", request_target(self.config, location))
        body = await exchange.read_small(response)
        if response.code in (200, 204):
            exchange.log(response.code)
            return
        code = parse_error_code(body)
        if response.code == 404 and code != "NoSuchBucket":
            exchange.log(response.code)
            return
        error = error_for_status(self.name, "DELETE", response.code, code, location)
        exchange.log(response.code, error)
        raise error

    def create_upload(self, location: str) -> Deferred[str]:
        """CreateMultipartUpload; fires with the upstream's UploadId."""
        return Deferred.fromCoroutine(create_upload(self, location))

    def start_part_write(
        self, location: str, upload_id: str, part_number: int, body: IBodyProducer, length: int
    ) -> IPartWrite:
        """UploadPart of ``length`` bytes of ``body``; see S3PartWrite."""
        write = S3PartWrite(self, location, upload_id, part_number, body, length)
        write.start()
        return write

    def start_complete(self, location: str, upload_id: str, parts: Sequence[StoredPart]) -> IObjectWrite:
        """CompleteMultipartUpload of ``parts``; see S3Complete."""
        write = S3Complete(self, location, upload_id, parts)
        write.start()
        return write

    def abort_upload(self, location: str, upload_id: str) -> Deferred[None]:
        """AbortMultipartUpload; an upload that no longer exists is fine."""
        return Deferred.fromCoroutine(abort_upload(self, location, upload_id))

    def probe(self) -> Deferred[None]:
        """HeadBucket; StoreUnavailable unless it answers 200."""
        return Deferred.fromCoroutine(self._probe())

    async def _probe(self) -> None:
        exchange = Exchange(self, "HeadBucket", None)
        response = await exchange.request("HEAD", request_target(self.config, None))
        await exchange.read_small(response)
        if response.code != 200:
            error = StoreUnavailable(f"store {self.name}: HeadBucket answered HTTP {response.code}")
            exchange.log(response.code, error)
            raise error
        exchange.log(200)


def _content_range(response: IResponse) -> tuple[int, int] | None:
    """The (first, last) of a ``Content-Range: bytes first-last/size`` header, or None."""
    values = response.headers.getRawHeaders(b"content-range")
    if not values:
        return None
    unit, _, spec = values[0].decode("latin-1").strip().partition(" ")
    first, _, rest = spec.partition("-")
    last = rest.partition("/")[0]
    try:
        return (int(first), int(last)) if unit == "bytes" else None
    except ValueError:
        return None
