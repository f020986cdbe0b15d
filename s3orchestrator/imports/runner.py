"""Runs imports in the daemon: lists a store (``s3_source``, ``directory_source``) and
records what it finds as objects of a virtual bucket (``metadata.imports``), a batch
per transaction with the checkpoint, until the listing ends.

One instance runs a given (store, bucket, prefix) at a time (the ``imports`` row's
owner and lease); a run that stops (the daemon stopped or died, the store failed) is
resumed from its checkpoint by starting it again, on any instance. A stopping daemon
cancels its runs; their rows stay ``running`` under its (then dead) instance id, and
every instance looks for such imports at start and every ``RESUME_INTERVAL`` seconds
to resume them (a failed one waits to be started again: its store needs a look first).
"""

from __future__ import annotations

from typing import Any, Callable, Protocol

from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred, ensureDeferred
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from s3orchestrator.config import Config, DirectoryStoreConfig, StoreConfig
from s3orchestrator.imports.areas import KnownAreas, own_areas
from s3orchestrator.imports.batch import Batch
from s3orchestrator.imports.directory_source import DirectorySource
from s3orchestrator.imports.s3_source import S3Source
from s3orchestrator.metadata.imports import IMPORTED, ImportLost, ImportRecord, ImportRunning, ImportTable
from s3orchestrator.metadata.traffic import Traffic

#: Seconds an instance holds an import without recording a batch before another may take it.
IMPORT_LEASE = 300.0
#: Seconds between looks for interrupted imports to resume (the first at start).
RESUME_INTERVAL = 60.0

_log = Logger()


class ImportRefused(Exception):
    """An import cannot start: ``status`` is the admin API's answer (400, 404, 409)."""

    def __init__(self, status: int, message: str, record: ImportRecord | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.record = record


class Source(Protocol):
    """What an import lists objects from."""

    def batches(self, prefix: str, after: str) -> Any:
        """An async iterator of ``Batch``es from the first key after ``after``."""

    async def close(self) -> None:
        """Release what listing held."""


class Importer(Service):
    """Starts imports on this instance and keeps them running until they end or it stops.

    ``config()`` is the current configuration; ``count(store, traffic)`` hears of the
    listing requests; ``replicate()`` is called when imported objects joined the
    replication queue (their bucket wants more copies). Interrupted imports are resumed
    every ``resume_interval`` seconds (see the module docstring).
    """

    def __init__(
        self, table: ImportTable, config: Callable[[], Config], owner: str, reactor: Any,
        count: Callable[[str, Traffic], None] | None = None, replicate: Callable[[], None] | None = None,
        lease: float = IMPORT_LEASE, resume_interval: float = RESUME_INTERVAL,
    ) -> None:
        self.table = table
        self._config = config
        self.owner = owner
        self._reactor = reactor
        self._count = count
        self._replicate = replicate
        self._lease_ms = int(lease * 1000)
        self._runs: dict[tuple[str, str, str], Deferred[None]] = {}
        #: The areas of imported objects (degraded mode's reads look there), refreshed as
        #: interrupted imports are looked for and as this instance's imports record objects.
        self.areas = KnownAreas(lambda: config().stores)
        self._resumer = LoopingCall(lambda: ensureDeferred(self.resume_interrupted()))
        self._resumer.clock = reactor
        self._resume_interval = resume_interval

    def startService(self) -> None:
        super().startService()
        self._resumer.start(self._resume_interval, now=True)

    async def resume_interrupted(self) -> int:
        """Resume the imports left running by dead instances; how many this one took.
        (The areas of imported objects are read again too.)"""
        try:
            records = await self.table.imports()
            self.areas.remember(await self.table.areas(), replace=True)
        except Exception as error:
            _log.warn("Cannot look for interrupted imports: {error}", error=str(error))
            return 0
        resumed = 0
        for record in records:
            if record.state != "running" or self.runs(record.store, record.bucket, record.prefix):
                continue
            try:
                await self.start(record.store, record.bucket, record.prefix)
            except ImportRefused:
                continue  # another live instance runs it, or its store or bucket is gone
            except Exception as error:
                _log.warn("Cannot resume the import of {store}/{prefix} into bucket {bucket}: {error}",
                          store=record.store, prefix=record.prefix, bucket=record.bucket, error=str(error))
                continue
            resumed += 1
        return resumed

    def _source(self, store: StoreConfig, config: Config) -> Source:
        own = own_areas(store, [bucket.name for bucket in config.buckets])
        if isinstance(store, DirectoryStoreConfig):
            return DirectorySource(store, self._reactor, own)
        return S3Source(store, self._reactor, own, self._count)

    async def start(self, store_name: str, bucket: str, prefix: str) -> ImportRecord:
        """Start (or resume) importing ``prefix`` of ``store_name`` into ``bucket``; fire
        with its row. ImportRefused if the names are unknown or another instance runs it."""
        config = self._config()
        store = next((store for store in config.stores if store.name == store_name), None)
        if store is None:
            raise ImportRefused(404, f"no store {store_name!r} is configured")
        if not config.has_bucket(bucket):
            raise ImportRefused(404, f"no bucket {bucket!r} is configured")
        if "\x00" in prefix:
            raise ImportRefused(400, "a prefix cannot hold NUL")
        name = (store_name, bucket, prefix)
        if not self.running:
            raise ImportRefused(409, "the daemon is stopping")
        if name in self._runs:
            for record in await self.table.imports():
                if (record.store, record.bucket, record.prefix) == name:
                    return record
        try:
            record = await self.table.begin(store_name, bucket, prefix, self.owner, self._lease_ms)
        except ImportRunning as running:
            raise ImportRefused(409, str(running), running.record) from None
        missing = config.placement_for(bucket).replicas > 1
        run = ensureDeferred(self._run(store, bucket, prefix, record.after_key, missing))
        self._runs[name] = run
        run.addBoth(self._forget, name)
        _log.info("Import of {store}/{prefix} into bucket {bucket} started after {after!r}",
                  store=store_name, prefix=prefix, bucket=bucket, after=record.after_key)
        return record

    async def _run(self, store: StoreConfig, bucket: str, prefix: str, after: str, missing: bool) -> None:
        source = self._source(store, self._config())
        error: str | None = None
        try:
            batches = source.batches(prefix, after)
            async for batch in batches:
                await self._record(store.name, bucket, prefix, batch, missing)
        except CancelledError:
            _log.info("Import of {store}/{prefix} into bucket {bucket} stopped; it resumes when started again",
                      store=store.name, prefix=prefix, bucket=bucket)
            raise
        except ImportLost as lost:
            _log.warn("Import of {store}/{prefix} into bucket {bucket} stopped: {error}",
                      store=store.name, prefix=prefix, bucket=bucket, error=str(lost))
            return
        except Exception as failed:
            error = f"{type(failed).__name__}: {failed}" if not str(failed) else str(failed)
            _log.failure("Import of {store}/{prefix} into bucket {bucket} failed", store=store.name, prefix=prefix,
                         bucket=bucket)
        finally:
            await source.close()
        try:
            await self.table.finish(store.name, bucket, prefix, self.owner, error)
        except Exception:
            # The row stays running under this live instance: starting the import again resumes it.
            _log.failure("Import of {store}/{prefix} into bucket {bucket}: its end could not be recorded",
                         store=store.name, prefix=prefix, bucket=bucket)
            return
        if error is None:
            _log.info("Import of {store}/{prefix} into bucket {bucket} done", store=store.name, prefix=prefix,
                      bucket=bucket)

    async def _record(self, store: str, bucket: str, prefix: str, batch: Batch, missing: bool) -> None:
        _, outcomes = await self.table.record(
            store, bucket, prefix, self.owner, batch.found, batch.last_key, batch.skipped, missing, self._lease_ms,
        )
        self.areas.remember((store, found.area, bucket) for found, outcome in zip(batch.found, outcomes, strict=True)
                            if outcome == IMPORTED)
        if missing and IMPORTED in outcomes and self._replicate is not None:
            self._replicate()

    def _forget(self, result: object, name: tuple[str, str, str]) -> object:
        """Drop an ended run; a cancelled one (the daemon stopping) ends quietly."""
        self._runs.pop(name, None)
        if isinstance(result, Failure) and result.check(CancelledError):
            return None
        return result

    def runs(self, store: str, bucket: str, prefix: str) -> bool:
        """Whether this instance runs that import now."""
        return (store, bucket, prefix) in self._runs

    def running_imports(self) -> frozenset[tuple[str, str, str]]:
        """The (store, bucket, prefix) of every import this instance runs now. A run leaves
        this set only once its end is recorded, so a row read after taking the set and still
        running, yet not in it, is not run here."""
        return frozenset(self._runs)

    def stopService(self) -> Deferred[None] | None:
        """Cancel the runs (each resumes from its checkpoint when started again)."""
        super().stopService()
        if self._resumer.running:
            self._resumer.stop()
        runs = list(self._runs.values())
        for run in runs:
            run.cancel()
        return None
