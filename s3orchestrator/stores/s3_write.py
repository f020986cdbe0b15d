"""Writing to an upstream S3 store: one request makes the object (or part) visible there.

``UpstreamWrite`` is the IObjectWrite life every such request shares (``done``
once the upstream answered, ``publish`` a no-op, ``abort`` cancels or deletes);
``S3Write`` relays a client's body with backpressure (PutObject, and UploadPart
in ``s3_multipart``); ``ResultWrite`` sends no client body and reads a result
document from the answer (CopyObject here, CompleteMultipartUpload in ``s3_multipart``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.interfaces import IConsumer, IPushProducer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IBodyProducer, IResponse
from zope.interface import implementer

from s3orchestrator.auth.chunked import AwsChunkedSigner, ChunkSignatureChain
from s3orchestrator.auth.sigv4 import credential_scope, signing_key, uri_encode
from s3orchestrator.errors import S3Error
from s3orchestrator.stores.interface import IObjectWrite, ObjectMissing, StoreMisconfigured, StoreUnavailable
from s3orchestrator.stores.s3_errors import local_name, parse_error_code, parse_upstream_xml
from s3orchestrator.stores.s3_exchange import Exchange, discard_body
from s3orchestrator.stores.s3_framing import UploadFraming, framing_headers, upload_mode
from s3orchestrator.stores.s3_http import SilenceWatchdog, Target, request_target

if TYPE_CHECKING:
    from s3orchestrator.stores.s3 import S3Store

__all__ = ["DEFAULT_CHUNK_SIZE", "ResultWrite", "S3Copy", "S3Write", "UpstreamBody", "UpstreamWrite"]

DEFAULT_CHUNK_SIZE = 64 * 1024

_log = Logger()


@implementer(IObjectWrite)
class UpstreamWrite:
    """One upstream request that makes its bytes what reads of the location return
    as soon as the upstream answers 2xx (``done``; ``staged`` is False).

    ``abort`` before ``done`` cancels the request; after it (or when the object
    was stored but the answer was not right) the object is deleted, best effort.
    Subclasses send the request in ``_send`` and set ``_stored`` once the
    upstream holds the object.
    """

    staged = False

    # False where the bytes at the location are not this write's to remove (a copy
    # onto itself: they are the previous object's).
    _owns_target = True

    def __init__(self, store: S3Store, location: str, operation: str, length: int) -> None:
        self.done: Deferred[None] = Deferred()
        self._store = store
        self._location = location
        self._length = length
        self._exchange = Exchange(store, operation, location)
        self._upstream_body: UpstreamBody | None = None
        self._state = "sending"  # -> done | failed | aborted (-> deleted)
        self._stored = False  # the upstream answered 2xx to the whole request: the object exists there
        self._refused = False  # the upstream answered with an error: the location is as it was
        self._running: Deferred[None] | None = None

    @property
    def location_intact(self) -> bool:
        """After ``done`` failed: the upstream refused the request, or never got all of its body."""
        if self._stored:
            return False
        body = self._upstream_body
        return self._refused or (body is not None and not body.complete)

    def start(self) -> None:
        self._running = Deferred.fromCoroutine(self._send())
        self._running.addCallbacks(self._succeeded, self._failed)

    async def _send(self) -> None:
        raise NotImplementedError

    def _succeeded(self, _: object) -> None:
        if self._state == "sending":
            self._state = "done"
            self.done.callback(None)
        elif self._state == "aborted" and self._owns_target:
            self._delete()

    def _failed(self, failure: Failure) -> None:
        body = self._upstream_body
        if body is not None and body.failure is not None:
            failure = body.failure  # the client's body failed, not the upstream
        self._exchange.record(None, failure.value)  # unless its end was reported already
        if self._state == "sending":
            self._state = "failed"
            self.done.errback(failure)
            if self._stored:  # stored, but the answer was not right: remove it
                self._delete()
        elif self._state == "aborted" and self._stored:
            self._delete()

    def publish(self) -> Deferred[None]:
        """Nothing to do: the upstream request already made the object what reads return."""
        if self._state != "done":
            return fail(RuntimeError(f"cannot publish a write that is {self._state}"))
        return succeed(None)

    def abort(self) -> None:
        """Before ``done``: cancel the request (no object is left; ``done`` errbacks with
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
            if self._owns_target:
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


class S3Write(UpstreamWrite):
    """One upstream PUT of a client's body. The object is visible as soon as the upstream answers 2xx (``done``)."""

    _operation = "PUT"

    def __init__(self, store: S3Store, location: str, body: IBodyProducer, length: int) -> None:
        super().__init__(store, location, self._operation, length)
        self._body = body
        self._mode = upload_mode(store.config.payload_signing, store.config.send_checksums)
        self._etag: str | None = None  # the upstream's ETag (unquoted) once stored

    def _target(self) -> Target:
        return request_target(self._store.config, self._location)

    async def _answer_error(self, response: IResponse) -> Exception:
        """The exception a non-2xx answer becomes (logged unless ObjectMissing)."""
        return await self._exchange.error(response)

    async def _send(self) -> None:
        store, exchange = self._store, self._exchange
        response = await exchange.request(
            "PUT", self._target(), framing_headers(self._mode, self._length), self._mode.value, self._make_body,
        )
        upstream_body = self._upstream_body
        assert upstream_body is not None
        success = 200 <= response.code < 300
        operation = exchange.operation
        if not upstream_body.complete:
            # An answer before the whole body went out (an early error): stop sending,
            # which also drops the connection (it cannot carry this request to its end).
            upstream_body.stopProducing()
            if not success:
                raise await self._answer_error(response)
            # A success for bytes not sent yet means nothing: the previous object may
            # well still be there, so nothing is deleted either.
            exchange.watchdog.disarm()
            discard_body(response)
            error = StoreUnavailable(
                f"store {store.name}: {operation} answered {response.code} before the body was sent"
            )
            exchange.log(response.code, error)
            raise error
        if not success:
            self._refused = True
            raise await self._answer_error(response)
        # Any 2xx (some services answer 201 or 204): the object exists upstream now.
        self._stored = True
        etag = response.headers.getRawHeaders(b"etag")
        await exchange.read_small(response)
        if not etag:
            error = StoreUnavailable(f"store {store.name}: {operation} answered {response.code} without an ETag")
            exchange.log(response.code, error)
            raise error
        self._etag = etag[0].decode("latin-1").strip().strip('"')
        exchange.log(response.code, size=self._length)

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


# Codes of an <Error> a result-bearing answer carries (even with 200) that mean "try again later".
_RESULT_TRANSIENT_CODES = frozenset({
    "InternalError", "SlowDown", "ServiceUnavailable", "Throttling", "RequestTimeout",
})


def _root_tag(body: bytes) -> str | None:
    """The local name of the root element of a small, safe XML document, or None."""
    root = parse_upstream_xml(body)
    return None if root is None else local_name(root)


class ResultWrite(UpstreamWrite):
    """An upstream write without a client body (the bytes are upstream already) whose
    answer is a result document, the root element ``_result``.

    S3 sends the 200 before it has finished such a request, so a 200 may still
    report a failure in an ``<Error>`` document: ``done`` fires only on a 200
    whose body is the result. InternalError, SlowDown and the like (and 5xx,
    429) are StoreUnavailable, ``_missing_codes`` (and a 404 without a code)
    ObjectMissing, any other error StoreMisconfigured; a 200 with neither
    document StoreUnavailable.
    """

    _result = ""
    _missing_codes: frozenset[str] = frozenset()

    def _missing(self) -> ObjectMissing:
        return ObjectMissing(self._location)

    async def _read_result(self, response: IResponse) -> bytes:
        """The body of a 200 answer."""
        return await self._exchange.read_small(response)

    async def _check_answer(self, response: IResponse) -> None:
        """Read the answer; raise unless it is a 200 carrying the ``_result`` document."""
        exchange = self._exchange
        if response.code != 200:
            self._refused = True
            raise self._error(response.code, parse_error_code(await exchange.read_small(response)))
        body = await self._read_result(response)
        tag = _root_tag(body)
        if tag == self._result:
            return
        if tag == "Error":
            self._refused = True
            raise self._error(response.code, parse_error_code(body))
        error = StoreUnavailable(
            f"store {self._store.name}: {exchange.operation} answered 200 without a {self._result}"
        )
        exchange.log(response.code, error)
        raise error

    def _error(self, status: int, code: str | None) -> Exception:
        """The exception an error answer becomes (logged unless ObjectMissing)."""
        described = f"store {self._store.name}: {self._exchange.operation} answered HTTP {status}" + (
            f" {code}" if code else ""
        )
        error: Exception
        if code in self._missing_codes or (status == 404 and code is None):
            missing = self._missing()
            self._exchange.record(status, missing)
            return missing
        if status >= 500 or status == 429 or code in _RESULT_TRANSIENT_CODES:
            error = StoreUnavailable(described)
        elif status == 200 and code is None:
            error = StoreUnavailable(described + " with an unreadable error")
        else:
            error = StoreMisconfigured(described)
        self._exchange.log(status, error)
        return error


class S3Copy(ResultWrite):
    """One upstream CopyObject (``PUT`` with ``x-amz-copy-source``, no body): the bytes
    never pass through the daemon. Like S3Write, the object is visible once ``done``
    fires (staged is False) and ``abort`` after ``done`` deletes it.

    ``done`` fires only on a 200 whose body is a ``<CopyObjectResult>`` (see
    ResultWrite); NoSuchKey (the source) is ObjectMissing.

    A copy onto itself sends no copy (S3 refuses one that changes nothing): a
    HEAD checks the object is there (ObjectMissing if not) with ``length``
    bytes, and ``abort`` then deletes nothing.
    """

    _result = "CopyObjectResult"
    _missing_codes = frozenset({"NoSuchKey"})

    def __init__(self, store: S3Store, source_location: str, target_location: str, length: int) -> None:
        self._self_copy = source_location == target_location
        super().__init__(store, target_location, "HEAD" if self._self_copy else "CopyObject", length)
        self._source = source_location
        self._owns_target = not self._self_copy

    def _missing(self) -> ObjectMissing:
        return ObjectMissing(self._source)

    @property
    def location_intact(self) -> bool:
        """A copy onto itself never changes the location; another copy as any write."""
        return self._self_copy or super().location_intact

    async def _send(self) -> None:
        await (self._check() if self._self_copy else self._copy())

    def copy_source(self) -> str:
        """The ``x-amz-copy-source`` header: ``/<bucket>/<source location, URI-encoded>``."""
        bucket = uri_encode(self._store.config.bucket, encode_slash=True)
        return f"/{bucket}/{uri_encode(self._source.encode('utf-8'), encode_slash=False)}"

    async def _copy(self) -> None:
        store, exchange = self._store, self._exchange
        headers = {"x-amz-copy-source": self.copy_source(), "x-amz-metadata-directive": "COPY"}
        response = await exchange.request("PUT", request_target(store.config, self._location), headers)
        await self._check_answer(response)
        self._stored = True
        exchange.log(response.code, size=self._length)

    async def _check(self) -> None:
        store, exchange = self._store, self._exchange
        response = await exchange.request("HEAD", request_target(store.config, self._location))
        await exchange.read_small(response)
        if response.code == 404:
            missing = ObjectMissing(self._source)
            exchange.record(response.code, missing)
            raise missing
        if response.code != 200:
            raise self._error(response.code, None)
        # Twisted sets ``length`` to 0 for any HEAD: the size is the Content-Length header.
        values = response.headers.getRawHeaders(b"content-length") or [b""]
        size = values[0].decode("latin-1").strip()
        if size != str(self._length):
            error = StoreUnavailable(
                f"store {store.name}: the object to copy onto itself has {size or 'unknown'} bytes,"
                f" not the {self._length} expected"
            )
            exchange.log(response.code, error)
            raise error
        exchange.log(response.code)


@implementer(IBodyProducer)
class UpstreamBody:
    """The body of an upstream PUT: relays ``body``, as is or re-framed by ``framing``
    into ``framing.chunk_size`` aws-chunked chunks (signed, with a checksum trailer, or both).

    Pause/resume/stop pass through to ``body``, so the upstream's backpressure
    reaches the client. The watchdog is armed while the upstream owes progress
    (connecting, paused us, or the body is complete and the answer is due).
    ``failure`` keeps the body's own failure (a client that went away, a bad
    digest) so it is reported as such rather than as an upstream failure.
    """

    def __init__(
        self,
        body: IBodyProducer,
        length: int,
        watchdog: SilenceWatchdog,
        framing: UploadFraming | None = None,
    ) -> None:
        self._body = body
        self._decoded_length = length
        self._watchdog = watchdog
        self._framing = framing
        self.length = length if framing is None else framing.length(length)
        self.received = 0
        self.complete = False
        self.failure: Failure | None = None
        self._buffer = bytearray()
        self._consumer: IConsumer | None = None
        self._finished: Deferred[None] | None = None
        self._stopped = False

    # -- IBodyProducer (driven by the HTTP client) --

    def startProducing(self, consumer: IConsumer) -> Deferred[None]:
        self._consumer = consumer
        # The HTTP client cancels this when the request is cancelled: stop the body too.
        self._finished = Deferred(lambda _: self.stopProducing())
        self._watchdog.progress()
        self._watchdog.disarm()  # from now on the pace is the client's
        try:
            produced = self._body.startProducing(self)
        except Exception:
            self._body_failed(Failure())
        else:
            produced.addCallbacks(self._body_done, self._body_failed)
        return self._finished

    def pauseProducing(self) -> None:
        self._watchdog.arm()
        if not self.complete and not self._stopped:
            self._body.pauseProducing()

    def resumeProducing(self) -> None:
        self._watchdog.progress()
        if not self.complete:
            self._watchdog.disarm()
            if not self._stopped:
                self._body.resumeProducing()

    def stopProducing(self) -> None:
        """Stop the body and, short of its end, drop the connection; the
        startProducing Deferred never fires after this."""
        if self._stopped:
            return
        self._stopped = True
        self._buffer.clear()
        if not self.complete:
            self._body.stopProducing()
            self._abort_connection()

    def _abort_connection(self) -> None:
        # A request whose body stops short can never end on this connection. Twisted
        # aborts it itself when the request is cancelled or its body fails, but not
        # when the response came first (an early 403 or 507): it only calls
        # loseConnection, which waits for this producer to be unregistered from the
        # transport - never, since the Deferred of startProducing never fires - so
        # the socket would stay open, unread and unwritten, forever. The HTTP client
        # gives its body producer no public way to the transport; the
        # LengthEnforcingConsumer it hands us keeps it as ``_consumer`` (Twisted
        # 22.4 to 26.x). Without it (another consumer) nothing can be done here.
        transport = getattr(self._consumer, "_consumer", None)
        abort = getattr(transport, "abortConnection", None)
        if abort is not None:
            abort()

    # -- IConsumer (fed by the client's body) --

    def write(self, data: bytes) -> None:
        if self._stopped or self.complete or self._finished is None or self._finished.called:
            return
        self.received += len(data)
        if self.received > self._decoded_length:
            self._fail(S3Error("IncompleteBody", f"the body is longer than the {self._decoded_length} bytes announced"))
            return
        assert self._consumer is not None
        framing = self._framing
        if framing is None:
            self._consumer.write(data)
            return
        # Whole chunks only (the last one excepted): the framed length was announced.
        self._buffer += data
        size = framing.chunk_size
        if len(self._buffer) >= size:
            view = memoryview(self._buffer)
            end = len(self._buffer) - len(self._buffer) % size
            frames = [framing.chunk(view[start:start + size]) for start in range(0, end, size)]
            view.release()
            del self._buffer[:end]
            for frame in frames:
                self._consumer.write(frame)

    def registerProducer(self, producer: IPushProducer, streaming: bool) -> None:
        """Nothing to do: backpressure reaches the body through pause/resumeProducing."""

    def unregisterProducer(self) -> None:
        """Nothing to do."""

    # -- the body's outcome --

    def _body_done(self, _: object) -> None:
        if self._stopped or self._finished is None or self._finished.called:
            return
        if self.received != self._decoded_length:
            self._fail(S3Error("IncompleteBody", f"got {self.received} of {self._decoded_length} bytes"), stop=False)
            return
        assert self._consumer is not None
        if self._framing is not None:
            if self._buffer:
                self._consumer.write(self._framing.chunk(bytes(self._buffer)))
                self._buffer.clear()
            self._consumer.write(self._framing.final())
        self.complete = True
        self._watchdog.arm()  # the upstream owes us its answer now
        self._finished.callback(None)

    def _body_failed(self, failure: Failure) -> None:
        if self._stopped or self._finished is None or self._finished.called:
            return
        self.failure = failure
        self._finished.errback(failure)

    def _fail(self, error: Exception, stop: bool = True) -> None:
        if stop:
            self._stopped = True
            self._body.stopProducing()
        self.failure = Failure(error)
        if self._finished is not None and not self._finished.called:
            self._finished.errback(self.failure)
