"""A store keeping objects in a bucket of an upstream S3 service (AWS, B2, R2, OCI, MinIO, ...).

Requests go through a bare ``twisted.web.client.Agent`` over a persistent
connection pool. Not treq's ``HTTPClient``: its ``request`` always wraps the
agent in a ``ContentDecoderAgent`` (and a redirect agent), which would gunzip
objects stored with ``Content-Encoding: gzip``; bodies must pass byte for byte.

Every request is SigV4-signed by ``s3orchestrator.auth.sigv4.sign_request``
over exactly the path sent (the location percent-encoded the AWS way). Bodies
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
client or a paused consumer does not count.

Failures map to StoreUnavailable (network, timeout, 5xx, throttling),
ObjectMissing (404 on GET) and StoreMisconfigured (other 4xx: credentials,
missing bucket); see ``s3_errors``.
"""

from __future__ import annotations

from typing import Any, Coroutine

from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import HTTPConnectionPool
from twisted.web.http_headers import Headers
from twisted.web.iweb import UNKNOWN_LENGTH, IAgent, IBodyProducer
from zope.interface import implementer

from s3orchestrator.auth.chunked import AwsChunkedSigner, ChunkSignatureChain
from s3orchestrator.auth.sigv4 import (
    credential_scope,
    format_amz_date,
    sign_request,
    signing_key,
)
from s3orchestrator.config import S3StoreConfig
from s3orchestrator.stores.interface import IObjectReader, IObjectStore, IObjectWrite, StoreUnavailable
from s3orchestrator.stores.s3_errors import error_for_status, parse_error_code
from s3orchestrator.stores.s3_exchange import Exchange, discard_body
from s3orchestrator.stores.s3_framing import UploadFraming, framing_headers, upload_mode
from s3orchestrator.stores.s3_http import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_CONNECTIONS_PER_HOST,
    Target,
    UpstreamBody,
    make_agent,
    make_pool,
    request_target,
)
from s3orchestrator.stores.s3_read import S3Reader, parse_content_range

__all__ = ["S3Store", "S3Write", "S3Reader"]

_log = Logger()


# -- writing -----------------------------------------------------------------------------------


@implementer(IObjectWrite)
class S3Write:
    """One upstream PUT. The object is visible as soon as the upstream answers 200 (``done``)."""

    staged = False

    def __init__(self, store: S3Store, location: str, body: IBodyProducer, length: int) -> None:
        self.done: Deferred[None] = Deferred()
        self._store = store
        self._location = location
        self._body = body
        self._length = length
        self._mode = upload_mode(store.config.payload_signing, store.config.send_checksums)
        self._exchange = Exchange(store, "PUT", location)
        self._upstream_body: UpstreamBody | None = None
        self._state = "sending"  # -> done | failed | aborted
        self._stored = False  # the upstream answered 200: the object exists there
        self._running: Deferred[None] | None = None

    def start(self) -> None:
        self._running = Deferred.fromCoroutine(self._put())
        self._running.addCallbacks(self._succeeded, self._failed)

    async def _put(self) -> None:
        store, config = self._store, self._store.config
        headers = framing_headers(self._mode, self._length)
        exchange = self._exchange
        response = await exchange.request(
            "PUT", request_target(config, self._location), headers, self._mode.value, self._make_body
        )
        upstream_body = self._upstream_body
        assert upstream_body is not None
        if response.code == 200 and upstream_body.complete:
            self._stored = True
            etag = response.headers.getRawHeaders(b"etag")
            await exchange.read_small(response)
            if not etag:
                raise exchange.logged(StoreUnavailable(f"store {store.name}: PUT answered 200 without an ETag"))
            exchange.log_success(200, self._length)
            return
        # An answer before the whole body went out (an early error): stop sending.
        upstream_body.stopProducing()
        if response.code == 200:
            exchange.watchdog.disarm()
            discard_body(response)
            raise exchange.logged(StoreUnavailable(f"store {store.name}: PUT answered 200 before the body was sent"))
        raise await exchange.error(response)

    def _make_body(self, amz_date: str, seed_signature: str) -> IBodyProducer:
        config, mode = self._store.config, self._mode
        framing = None
        if mode.is_aws_chunked:
            signer = None
            if mode.chunks_signed:
                scope_date = amz_date[:8]
                chain = ChunkSignatureChain(
                    signing_key(config.secret_access_key, scope_date, config.region),
                    amz_date,
                    credential_scope(scope_date, config.region),
                    seed_signature,
                )
                signer = AwsChunkedSigner(chain)
            framing = UploadFraming(mode, self._store.chunk_size, signer)
        self._upstream_body = UpstreamBody(self._body, self._length, self._exchange.watchdog, framing)
        return self._upstream_body

    def _succeeded(self, _: object) -> None:
        if self._state == "sending":
            self._state = "done"
            self.done.callback(None)
        elif self._state == "aborted":
            self._delete()

    def _failed(self, failure: Failure) -> None:
        body = self._upstream_body
        if body is not None and body.failure is not None:
            failure = body.failure  # the client's body failed, not the upstream
        if self._state == "sending":
            self._state = "failed"
            self.done.errback(failure)
            if self._stored:  # stored, but the answer was not right: remove it
                self._delete()
        elif self._state == "aborted" and self._stored:
            self._delete()

    def publish(self) -> Deferred[None]:
        """Nothing to do: the upstream PUT already made the object what reads return."""
        if self._state != "done":
            return fail(RuntimeError(f"cannot publish a write that is {self._state}"))
        return succeed(None)

    def abort(self) -> None:
        """Before ``done``: cancel the PUT (no object is left; ``done`` errbacks with
        CancelledError). After ``done``: delete the object (best effort, logged)."""
        if self._state == "sending":
            self._state = "aborted"
            self.done.errback(CancelledError("write aborted"))
            if self._running is not None:
                self._running.cancel()
            if self._stored:
                self._delete()
        elif self._state == "done":
            self._state = "aborted"
            self._delete()

    def _delete(self) -> None:
        if self._state == "deleted":
            return
        self._state = "deleted"

        def failed(failure: Failure) -> None:
            _log.warn(
                "Store {store}: could not delete {location} after a failed or aborted write: {error}",
                store=self._store.name, location=self._location, error=str(failure.value),
            )

        self._store.delete(self._location).addErrback(failed)


# -- the store ---------------------------------------------------------------------------------


@implementer(IObjectStore)
class S3Store:
    """Objects in one bucket of an upstream S3 service, under the location given (``<bucket>/<key>``).

    ``agent`` replaces the real Agent (tests); ``pool`` is shared or made here
    (persistent, ``connections_per_host`` idle connections kept per host).
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
    ) -> None:
        self.name = config.name
        self.config = config
        self.chunk_size = chunk_size
        self.reactor = reactor
        if pool is None and agent is None:
            pool = make_pool(reactor, connections_per_host)
        self._pool = pool
        self.agent: IAgent = agent if agent is not None else make_agent(config, reactor, pool)

    def signed_headers(
        self, method: str, target: Target, headers: dict[str, str], payload_hash: str
    ) -> tuple[Headers, str, str]:
        """Wire headers (host and ``headers`` signed), the request's x-amz-date and its signature."""
        config = self.config
        amz_date = format_amz_date(self.reactor.seconds())
        to_sign = {"host": target.host, **headers}
        added = sign_request(
            method, target.raw_path, "", to_sign,
            access_key_id=config.access_key_id,
            secret_access_key=config.secret_access_key,
            region=config.region,
            amz_date=amz_date,
            payload_hash=payload_hash,
        )
        wire = Headers()
        for name, value in {**to_sign, **added}.items():
            wire.addRawHeader(name.encode("ascii"), value.encode("latin-1"))
        return wire, amz_date, added["authorization"].rpartition("Signature=")[2]

    def _run(self, coroutine: Coroutine[Any, Any, Any]) -> Deferred[Any]:
        return Deferred.fromCoroutine(coroutine)

    def start(self) -> Deferred[None]:
        """Nothing to prepare (``probe`` checks the bucket)."""
        return succeed(None)

    def stop(self) -> Deferred[None]:
        """Close the pool's idle connections (at shutdown)."""
        if self._pool is None:
            return succeed(None)
        return self._pool.closeCachedConnections()

    close = stop

    def start_write(self, location: str, body: IBodyProducer, length: int) -> IObjectWrite:
        """PUT ``length`` bytes of ``body`` at ``location``; see S3Write."""
        write = S3Write(self, location, body, length)
        write.start()
        return write

    def open_read(self, location: str, byte_range: tuple[int, int] | None) -> Deferred[IObjectReader]:
        """GET the object (Range passed through); ObjectMissing on 404."""
        return self._run(self._open_read(location, byte_range))

    async def _open_read(self, location: str, byte_range: tuple[int, int] | None) -> IObjectReader:
        if byte_range is not None and not 0 <= byte_range[0] <= byte_range[1]:
            raise ValueError(f"bad byte range {byte_range!r}")
        exchange = Exchange(self, "GET", location)
        headers = {} if byte_range is None else {"range": "bytes=%d-%d" % byte_range}
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
            elif response.code == 206 and parse_content_range(response) != (first, last):
                problem = "a Content-Range that does not match the range asked for"
        if problem is not None:
            exchange.watchdog.disarm()
            discard_body(response)
            raise exchange.logged(StoreUnavailable(f"store {self.name}: GET answered with {problem}"), response.code)
        return S3Reader(response, length, exchange)

    def delete(self, location: str) -> Deferred[None]:
        """DELETE the object; a missing one is fine."""
        return self._run(self._delete(location))

    async def _delete(self, location: str) -> None:
        exchange = Exchange(self, "DELETE", location)
        response = await exchange.request("DELETE", request_target(self.config, location))
        if response.code in (200, 204):
            await exchange.read_small(response)
            exchange.log_success(response.code)
            return
        body = await exchange.read_small(response)
        code = parse_error_code(body)
        if response.code == 404 and code != "NoSuchBucket":
            exchange.log_success(response.code)
            return
        raise exchange.logged(error_for_status(self.name, "DELETE", response.code, code, location), response.code)

    def probe(self) -> Deferred[None]:
        """HeadBucket; StoreUnavailable unless it answers 200."""
        return self._run(self._probe())

    async def _probe(self) -> None:
        exchange = Exchange(self, "HeadBucket", None)
        response = await exchange.request("HEAD", request_target(self.config, None))
        await exchange.read_small(response)
        if response.code != 200:
            raise exchange.logged(
                StoreUnavailable(f"store {self.name}: HeadBucket answered HTTP {response.code}"), response.code
            )
        exchange.log_success(200)
