"""One upstream S3 request: signed, watched for silence, its failures mapped and logged."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from twisted.internet.defer import Deferred
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IBodyProducer, IResponse

from s3orchestrator.auth.sigv4 import EMPTY_SHA256
from s3orchestrator.stores.interface import ObjectMissing, StoreMisconfigured, StoreUnavailable
from s3orchestrator.stores.s3_errors import MAX_ERROR_BODY, error_for_status, parse_error_code, store_failure
from s3orchestrator.stores.s3_http import CappedBody, SilenceWatchdog, Target, body_transport

if TYPE_CHECKING:
    from s3orchestrator.stores.s3 import S3Store

_log = Logger()


class Exchange:
    """One upstream request: signed, watched for silence, its failures mapped and logged."""

    def __init__(self, store: S3Store, operation: str, location: str | None) -> None:
        self.store = store
        self.operation = operation
        self.location = location
        self.watchdog = SilenceWatchdog(store.reactor, store.config.timeout, self._silent)
        self.started = store.reactor.seconds()
        self._pending: Deferred[Any] | None = None
        # Replaces the default reaction to silence (cancelling the request) once
        # something else owns the exchange: a response body being read.
        self.on_silence: Callable[[], None] | None = None
        self._recorded = False

    def _silent(self) -> None:
        if self.on_silence is not None:
            self.on_silence()
        elif self._pending is not None:
            # Not ``pending.called``: a Deferred chained on another counts as called.
            self._pending.cancel()

    @property
    def _shown_location(self) -> str:
        return "(bucket)" if self.location is None else repr(self.location)

    def timeout_error(self) -> StoreUnavailable:
        return StoreUnavailable(
            f"store {self.store.name}: {self.operation} made no progress for {self.store.config.timeout:g} s"
        )

    def mapped(self, failure: Failure) -> Failure:
        """The store exception a failure of this exchange becomes (logged if it is the store's)."""
        if self.watchdog.fired:
            failure = Failure(self.timeout_error())
        else:
            failure = store_failure(self.store.name, self.operation, failure)
        # Not logged: our own cancellations and the client's body failing (S3Error, ClientGone).
        if failure.check(StoreUnavailable, StoreMisconfigured):
            self.log(None, failure.value)
        else:
            self.record(None, failure.value)
        return failure

    def record(self, status: int | None, error: BaseException | None = None) -> None:
        """Tell the store's observer (metrics) how the exchange ended, once: the first
        report wins (``log`` reports too; this alone is for ends not worth a log line)."""
        if self._recorded:
            return
        self._recorded = True
        observer = self.store.observer
        if observer is None:
            return
        try:
            observer(
                self.store.name, self.operation, status, error, self.store.reactor.seconds() - self.started,
                timed_out=self.watchdog.fired,
            )
        except Exception:
            # Called from request paths: a broken observer must not break them.
            _log.failure("Store {store}: the request observer failed", store=self.store.name)

    def log(self, status: int | None, error: BaseException | None = None, size: int | None = None) -> None:
        """Log how the exchange ended: a warning with ``error``, else a debug line (``size`` bytes moved)."""
        self.record(status, error)
        fields = dict(
            store=self.store.name,
            operation=self.operation,
            location=self._shown_location,
            status=status,
            bytes=size,
            duration=self.store.reactor.seconds() - self.started,
        )
        if error is None:
            _log.debug("Store {store}: {operation} {location} -> {status} in {duration:.3f} s", **fields)
        else:
            _log.warn(
                "Store {store}: {operation} {location} failed after {duration:.3f} s: {error}",
                error=str(error), **fields,
            )

    async def request(
        self,
        method: str,
        target: Target,
        headers: dict[str, str] | None = None,
        payload_hash: str = EMPTY_SHA256,
        make_body: Callable[[str, str], IBodyProducer] | None = None,
    ) -> IResponse:
        """Send the request; fire with the response (headers read, body not yet).

        ``make_body(amz_date, seed_signature)`` builds the body once the request is signed.
        """
        wire_headers, amz_date, seed = self.store.signed_headers(method, target, headers or {}, payload_hash)
        body = make_body(amz_date, seed) if make_body is not None else None
        self.watchdog.arm()
        self._pending = self.store.agent.request(method.encode("ascii"), target.url, wire_headers, body)
        try:
            response: IResponse = await self._pending
        except Exception:
            self.watchdog.disarm()
            error = self.mapped(Failure()).value
            assert error is not None  # Failure() in an except block holds the exception
            raise error from None
        finally:
            self._pending = None
        self.watchdog.progress()
        return response

    async def read_small(self, response: IResponse) -> bytes:
        """Up to MAX_ERROR_BODY bytes of the response body (the rest is dropped with the connection)."""
        protocol = CappedBody(MAX_ERROR_BODY, self.watchdog)
        self.watchdog.arm()
        response.deliverBody(protocol)
        self.on_silence = protocol.stop
        try:
            return await protocol.done
        finally:
            self.on_silence = None
            self.watchdog.disarm()

    async def error(self, response: IResponse) -> Exception:
        """The exception an unexpected answer becomes (reading its S3 error Code), logged."""
        code = parse_error_code(await self.read_small(response))
        error = error_for_status(self.store.name, self.operation, response.code, code, self.location)
        if not isinstance(error, ObjectMissing):
            self.log(response.code, error)
        else:
            self.record(response.code, error)
        return error


def discard_body(response: IResponse) -> None:
    """Drop an unread response body along with its connection."""
    protocol = Protocol()
    response.deliverBody(protocol)
    transport = body_transport(protocol)
    if transport is not None:
        transport.stopProducing()
