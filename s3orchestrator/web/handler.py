"""From an S3Request to an S3 response: authenticate, dispatch, render, log."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Callable

import attrs
from twisted.internet.defer import CancelledError, Deferred, ensureDeferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from s3orchestrator.auth.digests import ThreadRunner
from s3orchestrator.auth.payload import PayloadVerifier
from s3orchestrator.auth.sigv4 import Credential, verify_request
from s3orchestrator.errors import S3Error
from s3orchestrator.ops.report import printable
from s3orchestrator.s3.api import S3Api, operation_name
from s3orchestrator.s3.call import S3Call, S3Response
from s3orchestrator.stores.interface import IObjectReader
from s3orchestrator.web.body import ClientGone, UploadBody
from s3orchestrator.web.errors import error_document
from s3orchestrator.web.request_parsing import header_map, parse_query, split_path
from s3orchestrator.web.site import S3Request

if TYPE_CHECKING:
    from s3orchestrator.ops.metrics import Metrics

CredentialLookup = Callable[[str], "Credential | None"]


class _Exchange:
    """What the handler tracks about one request while it is answered (for the log line)."""

    def __init__(self, request: S3Request) -> None:
        self.request = request
        self.operation = "Unknown"
        self.access_key_id: str | None = None
        self.bucket: str | None = None
        self.key: str | None = None
        self.store: str | None = None
        self.status: int | str = 0
        self.bytes_out = 0
        self.client_gone = False
        self.streaming: IObjectReader | None = None
        self.upload: UploadBody | None = None  # the request body, if the operation reads one
        request.notifyFinish().addErrback(self._gone)

    def _gone(self, _: Failure) -> None:
        self.client_gone = True
        if self.streaming is not None:
            # The transport may not stop its producer (a timed-out connection is
            # aborted), so release the store's file or upstream connection here.
            self.streaming.cancel()


def _timed_out(failure: Failure) -> bool:
    failure.trap(CancelledError)
    return False


class S3Handler:
    """Answers every S3Request of the site; errors become S3 XML error responses."""

    _log = Logger()

    def __init__(
        self,
        api: S3Api,
        credentials: CredentialLookup,
        clock: IReactorTime,
        metrics: Metrics | None = None,
        bucket_exists: Callable[[str], bool] = lambda name: True,
        threads: ThreadRunner | None = None,
    ) -> None:
        self.api = api
        # Where large bodies' digests are computed (the reactor's thread pool); None: inline.
        self._threads = threads
        self.credentials = credentials
        # Whether a bucket is configured (for any key): NoSuchBucket or AccessDenied.
        self.bucket_exists = bucket_exists
        self._clock = clock
        self.metrics = metrics
        self._in_flight = 0
        self._idle_waiters: list[Deferred[None]] = []

    def handle(self, request: S3Request) -> None:
        """Start answering ``request`` (called when its headers are complete)."""
        exchange = _Exchange(request)
        self._in_flight += 1
        answering = ensureDeferred(self._answer(exchange))
        answering.addErrback(self._internal_failure, exchange)
        answering.addBoth(self._answered)

    def _answered(self, _: object) -> None:
        self._in_flight -= 1
        if not self._in_flight:
            waiters, self._idle_waiters = self._idle_waiters, []
            for waiter in waiters:
                waiter.callback(None)

    def wait_idle(self, timeout: float) -> Deferred[bool]:
        """Fires True once no request is being answered (their clean-up included: a
        request whose client was cut off still releases its quota), False after
        ``timeout`` seconds (shutdown)."""
        if not self._in_flight:
            return succeed(True)
        idle: Deferred[None] = Deferred()
        self._idle_waiters.append(idle)
        idle.addTimeout(timeout, self._clock, onTimeoutCancel=lambda result, timeout: result)
        return idle.addCallbacks(lambda _: True, _timed_out)

    async def _answer(self, exchange: _Exchange) -> None:
        request = exchange.request
        try:
            call = self._authenticate(exchange)
            response = await self.api.dispatch(exchange.operation, call)
        except S3Error as error:
            self._send_error(exchange, error)
        except ClientGone:
            exchange.client_gone = True
        except Exception:
            self._log.failure(
                "Unexpected error in {operation} (request {request_id})",
                operation=exchange.operation, request_id=request.request_id,
            )
            self._send_error(exchange, S3Error("InternalError"))
        else:
            exchange.store = response.store
            await self._send(exchange, response)
        if request.body is not None:
            # A body the operation stopped waiting for may still fail later (client gone).
            request.body.verified.addErrback(lambda _: None)
        self._log_request(exchange)

    def _authenticate(self, exchange: _Exchange) -> S3Call:
        request = exchange.request
        method = request.method.decode("ascii", "replace").upper()
        bucket, key = split_path(request.raw_path)
        exchange.bucket, exchange.key = bucket, key
        query = parse_query(request.raw_query)
        headers = header_map(request.requestHeaders)
        auth = verify_request(
            method,
            request.raw_path.decode("latin-1"),
            request.raw_query.decode("latin-1"),
            headers,
            self.credentials,
            self._clock.seconds(),
        )
        exchange.access_key_id = auth.credential.access_key_id
        scheme = "https" if request.isSecure() else "http"
        call = S3Call(request.request_id, method, bucket, key, query, headers, auth, scheme=scheme)
        exchange.operation = operation_name(call)
        if bucket is not None and bucket != auth.credential.bucket:
            self._refuse_bucket(exchange.operation, bucket, auth.credential.access_key_id)
        if self.api.needs_body(exchange.operation):
            if "content-length" not in headers and "transfer-encoding" not in headers:
                raise S3Error("MissingContentLength")
            body = UploadBody(
                request.reader if request.reader is not None else request.channel.transport,
                lambda on_data: PayloadVerifier(auth, headers, on_data, threads=self._threads),
                lambda: self._continue(request, headers),
            )
            if request.body_complete:
                # Content-Length: 0: the (empty) body is already all there.
                body.bodyComplete()
            else:
                request.body = body
            exchange.upload = body
            call = attrs.evolve(call, body=body)
        return call

    def _refuse_bucket(self, operation: str, bucket: str, access_key_id: str) -> None:
        """The error for a validly signed request naming a bucket its key does not own.

        As on S3, only once the signature checked out: a bucket configured for no key
        does not exist (NoSuchBucket), another key's bucket is AccessDenied. Creating a
        bucket that does not exist is AccessDenied too (buckets are configured, not made).
        """
        if not self.bucket_exists(bucket) and operation != "CreateBucket":
            raise S3Error("NoSuchBucket", extra={"BucketName": bucket})
        raise S3Error("AccessDenied", f"Access key {access_key_id} may not access bucket {bucket}.")

    def _continue(self, request: S3Request, headers: dict[str, list[str]]) -> None:
        expect = headers.get("expect", [""])[0].lower()
        if expect == "100-continue" and not request.startedWriting and request.clientproto == b"HTTP/1.1":
            request.channel.send100Continue()

    async def _send(self, exchange: _Exchange, response: S3Response) -> None:
        request = exchange.request
        if exchange.client_gone:
            if response.body is not None and not isinstance(response.body, bytes):
                response.body.cancel()
            return
        self._start_response(exchange, response.status)
        for name, value in response.headers:
            request.responseHeaders.addRawHeader(name, value.encode("latin-1", "replace"))
        body = response.body
        if isinstance(body, bytes):
            request.setHeader(b"content-length", b"%d" % len(body))
            request.write(body)
            exchange.bytes_out = len(body)
        elif body is not None:
            request.setHeader(b"content-length", b"%d" % body.length)
            exchange.streaming = body
            try:
                await body.stream_to(request)
            except CancelledError:
                # The transport stopped the producer: the client went away mid-download.
                exchange.client_gone = True
                return
            except Exception as error:
                if not exchange.client_gone:
                    self._log.warn(
                        "Streaming {operation} response failed (request {request_id}): {error}",
                        operation=exchange.operation, request_id=request.request_id, error=str(error),
                    )
                    # Headers are out: the only honest signal left is a broken connection.
                    exchange.status = f"{exchange.status}-aborted"
                    request.channel.transport.abortConnection()
                return
            finally:
                exchange.streaming = None
            exchange.bytes_out = body.length
        elif not request.responseHeaders.hasHeader(b"content-length") and response.status not in (204, 304):
            request.setHeader(b"content-length", b"0")
        if not exchange.client_gone:
            request.finish()

    def _send_error(self, exchange: _Exchange, error: S3Error) -> None:
        request = exchange.request
        if exchange.client_gone or request.finished:
            return
        if request.startedWriting:
            request.channel.transport.abortConnection()
            return
        self._start_response(exchange, error.status)
        for name, value in error.headers.items():
            request.setHeader(name.encode("latin-1"), value.encode("latin-1"))
        if error.status == 304 or request.method == b"HEAD":
            # HEAD responses and 304s carry no body (the status says it all).
            request.setHeader(b"content-length", b"0")
        else:
            document = error_document(error, request.raw_path.decode("latin-1"), request.request_id)
            request.setHeader(b"content-type", b"application/xml")
            request.setHeader(b"content-length", b"%d" % len(document))
            request.write(document)
            exchange.bytes_out = len(document)
        request.finish()

    def _start_response(self, exchange: _Exchange, status: int) -> None:
        request = exchange.request
        exchange.status = status
        request.setResponseCode(status)
        if not request.body_complete:
            # Answered before the body was read: the connection closes after this
            # response (see S3Channel.requestDone), and the client must not reuse it.
            request.setHeader(b"connection", b"close")

    def _internal_failure(self, failure: Failure, exchange: _Exchange) -> None:
        self._log.failure("Failed to answer request {request_id}", failure, request_id=exchange.request.request_id)
        if not exchange.request.finished and not exchange.client_gone:
            exchange.request.channel.transport.abortConnection()

    def _log_request(self, exchange: _Exchange) -> None:
        request = exchange.request
        self._log.info(
            "{request_id} {access_key_id} {operation} {bucket}/{key} {status} {bytes_out}B {duration_ms}ms"
            " store={store}",
            request_id=request.request_id,
            access_key_id=exchange.access_key_id or "-",
            operation=exchange.operation,
            bucket=printable(exchange.bucket or ""),
            # Keys come from clients: a newline in one must not forge a log line.
            key=printable(exchange.key or ""),
            status=exchange.status if not exchange.client_gone else "client-gone",
            bytes_out=exchange.bytes_out,
            duration_ms=round((time.monotonic() - request.started) * 1000, 1),
            store=exchange.store,
        )
        if self.metrics is not None:
            self.metrics.request_finished(
                exchange.operation,
                "client-gone" if exchange.client_gone else exchange.status,
                exchange.upload.received if exchange.upload is not None else 0,
                exchange.bytes_out,
                time.monotonic() - request.started,
            )

