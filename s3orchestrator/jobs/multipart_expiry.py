"""The job that aborts abandoned multipart uploads (S3's lifecycle rule, built in)."""

from __future__ import annotations

from typing import Callable, Protocol

from twisted.application.internet import TimerService
from twisted.internet.defer import Deferred, ensureDeferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure

from s3orchestrator.config import DEFAULT_MULTIPART_COMPLETED_RETENTION
from s3orchestrator.jobs.gate import MetadataGate
from s3orchestrator.metadata.interface import IMetadataStore
from s3orchestrator.metadata.records import UploadRecord

# Uploads read per query; a run pages on while a batch comes back full.
BATCH_SIZE = 100


class UploadAborter(Protocol):
    """What the job needs of the multipart operations."""

    async def abort(self, upload: UploadRecord) -> bool:
        ...


class MultipartExpiryJob(TimerService):
    """Every ``interval`` seconds, abort the uploads initiated more than
    ``expire_after`` seconds ago, in their store and in metadata (releasing
    their bytes), and forget the uploads completed more than
    ``completed_retention`` seconds ago (whose Complete is no longer answered again).

    The job never stops on an error: an upload whose store fails stays for the
    next run, and unexpected errors are logged and counted. A run logs at info only
    when it aborted an upload or failed to (a run with nothing to do logs at debug).
    Timed runs are skipped while ``metadata_available()`` is false (degraded mode). Counters: ``runs``,
    ``expired`` (uploads aborted), ``failures`` (aborts that failed), ``errors``,
    ``forgotten`` (completed uploads no longer remembered).
    """

    _log = Logger()
    clock: IReactorTime  # TimerService's, optional there; always given here

    def __init__(
        self,
        uploads: UploadAborter,
        metadata: IMetadataStore,
        expire_after: float,
        interval: float,
        clock: IReactorTime,
        completed_retention: float = DEFAULT_MULTIPART_COMPLETED_RETENTION,
        metadata_available: Callable[[], bool] = lambda: True,
    ) -> None:
        if not interval > 0 or not expire_after > 0 or not completed_retention > 0:
            raise ValueError("interval, expire_after and completed_retention must be positive")
        TimerService.__init__(self, interval, self._tick)
        self.clock = clock
        self.expire_after = expire_after
        self.completed_retention = completed_retention
        self.interval = interval
        self._uploads = uploads
        self._metadata = metadata
        self._running = False
        self._waiters: list[Deferred[int]] = []
        self.gate = MetadataGate("Multipart expiry", metadata_available)
        self.runs = 0
        self.expired = 0
        self.failures = 0
        self.errors = 0
        self.forgotten = 0

    def run_once(self) -> Deferred[int]:
        """Expire what is due now; fires (never fails) with how many uploads were
        aborted. A run already going is not doubled: this waits for it."""
        waiter: Deferred[int] = Deferred()
        self._waiters.append(waiter)
        if not self._running:
            self._running = True
            run = ensureDeferred(self._run())
            run.addErrback(self._run_failed)
            run.addCallback(self._finished)
        return waiter

    def _tick(self) -> Deferred[int]:
        if not self.gate.open():
            return succeed(0)
        # LoopingCall stops for good on its body's first failure: nothing may escape.
        try:
            return self.run_once()
        except Exception:
            self.errors += 1
            self._log.failure("Multipart expiry run failed to start")
            return succeed(0)

    async def _run(self) -> int:
        cutoff_ms = int((self.clock.seconds() - self.expire_after) * 1000)
        aborted = failed = 0
        after: tuple[int, str] | None = None
        while True:
            batch = await self._metadata.uploads_initiated_before(cutoff_ms, BATCH_SIZE, after)
            for upload in batch:
                try:
                    if await self._uploads.abort(upload):
                        aborted += 1
                        self._log.info(
                            "Expired multipart upload {upload_id} of {bucket}/{key} on store {store}",
                            upload_id=upload.upload_id, bucket=upload.bucket, key=upload.key, store=upload.store,
                        )
                except Exception as error:
                    # It stays recorded: the next run tries again.
                    self.failures += 1
                    failed += 1
                    self._log.warn(
                        "Could not expire multipart upload {upload_id} of {bucket}/{key} on store {store}: {error}",
                        upload_id=upload.upload_id, bucket=upload.bucket, key=upload.key, store=upload.store,
                        error=str(error),
                    )
            if len(batch) < BATCH_SIZE:
                break
            after = (batch[-1].initiated_ms, batch[-1].upload_id)
        self.expired += aborted
        retained_from_ms = int((self.clock.seconds() - self.completed_retention) * 1000)
        self.forgotten += await self._metadata.forget_completed_uploads(retained_from_ms)
        self._log.emit(
            LogLevel.info if aborted or failed else LogLevel.debug,
            "Multipart expiry: {aborted} uploads older than {expire_after:g} s aborted, {failed} failed",
            aborted=aborted, failed=failed, expire_after=self.expire_after,
        )
        return aborted

    def _run_failed(self, failure: Failure) -> int:
        self.errors += 1
        self._log.failure("Multipart expiry run failed", failure)
        return 0

    def _finished(self, result: int) -> None:
        self.runs += 1
        self._running = False
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.called:  # a caller may have cancelled its wait
                waiter.callback(result)
