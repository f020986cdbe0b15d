"""The daemon as one MultiService: metadata store, object stores, jobs, the S3
listener and the operators' endpoints."""

from __future__ import annotations

import hashlib
import os
import re
import signal
import sys
from typing import Any, Mapping

from twisted.internet.defer import Deferred, ensureDeferred, maybeDeferred
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort
from twisted.internet.task import deferLater
from twisted.logger import Logger, LogLevel

from s3orchestrator.auth.checksums import warn_of_slow_checksums
from s3orchestrator.auth.sigv4 import Credential, signing_key
from s3orchestrator.config import Config, ConfigError, DirectoryStoreConfig, StoreConfig, load_config
from s3orchestrator.imports.areas import conflicts
from s3orchestrator.imports.runner import Importer
from s3orchestrator.jobs.cleanup import CleanupJob
from s3orchestrator.jobs.election import JobElection
from s3orchestrator.jobs.health import HealthCheckJob, StoreHealth
from s3orchestrator.jobs.heartbeat import InstanceLease, default_instance_id
from s3orchestrator.jobs.mover import MoverJob
from s3orchestrator.jobs.multipart_expiry import MultipartExpiryJob
from s3orchestrator.jobs.reaper import ReaperJob
from s3orchestrator.jobs.rebalance import RebalanceJob, Rebalancer
from s3orchestrator.jobs.replicator import ReplicatorJob
from s3orchestrator.jobs.scrub import ScrubJob, timer_step
from s3orchestrator.jobs.traffic_sync import TrafficSyncJob
from s3orchestrator.listeners import S3, EndpointListeners, InheritedListeners, Listeners
from s3orchestrator.metadata.availability import MetadataAvailability
from s3orchestrator.metadata.database import Database
from s3orchestrator.metadata.engines import create_engine
from s3orchestrator.metadata.imports import ImportTable
from s3orchestrator.metadata.interface import MetadataBusy, MetadataUnavailable
from s3orchestrator.metadata.job_leases import JobLeases
from s3orchestrator.metadata.placements import ObjectPlacements
from s3orchestrator.metadata.scrub import ScrubPasses
from s3orchestrator.metadata.store import InstanceIdInUse, MetadataStore
from s3orchestrator.metadata.traffic import TrafficTable
from s3orchestrator.ops.admin import admin_actions, admin_endpoints
from s3orchestrator.ops.banner import ADMIN, MANHOLE, METRICS, banner_fields, banner_text, startup_banner
from s3orchestrator.ops.endpoints import OpsEndpoint, OpsRouter, ops_site
from s3orchestrator.ops.health import health_endpoint, ready_endpoint
from s3orchestrator.ops.import_api import import_routes
from s3orchestrator.ops.logs import LoggingService
from s3orchestrator.ops.manhole import manhole_listener
from s3orchestrator.ops.metrics import Metrics, metrics_endpoint
from s3orchestrator.ops.movement import MovementControl
from s3orchestrator.ops.status import scrub_pass_document, status_snapshot
from s3orchestrator.placement.engine import Placement
from s3orchestrator.placement.locks import KeyLocks
from s3orchestrator.reload import reload_plan
from s3orchestrator.s3.api import S3Api
from s3orchestrator.s3.batch_delete import BatchDelete
from s3orchestrator.s3.buckets import BucketOperations
from s3orchestrator.s3.copy import CopyOperations
from s3orchestrator.s3.listing import ListingOperations
from s3orchestrator.s3.multipart import MultipartOperations
from s3orchestrator.s3.objects import ObjectOperations
from s3orchestrator.stores.directory import DirectoryStore
from s3orchestrator.stores.interface import IObjectStore
from s3orchestrator.stores.s3 import S3Store
from s3orchestrator.traffic.ledger import TrafficLedger
from s3orchestrator.traffic.meter import MeteredStore
from s3orchestrator.web.handler import S3Handler
from s3orchestrator.web.site import S3Site
from s3orchestrator.workers.role import WorkerRole

# Seconds aborted requests get at shutdown to release their quota and parts.
CLEANUP_TIMEOUT = 5.0
# Seconds between attempts to open a metadata database another process holds locked.
START_RETRY_SECONDS = 1.0

_log = Logger()


def exit_failed() -> None:
    """End the process with status 1 (twistd itself would exit 0 after reactor.stop)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(1)


def continuation_token_secret(config: Config) -> bytes:
    """The key that authenticates listing continuation tokens.

    Derived from the configured secrets, so tokens survive a restart and work on
    every instance sharing the config, and cannot be forged by clients.
    """
    secrets = sorted(c.secret_access_key for bucket in config.buckets for c in bucket.credentials)
    return hashlib.sha256(b"s3orchestrator continuation tokens\0" + "\0".join(secrets).encode()).digest()


# Server endpoint types whose listening socket takes a backlog= argument.
_BACKLOG_ENDPOINTS = frozenset({"tcp", "tcp6", "ssl", "unix"})


def with_backlog(listen: str, backlog: int) -> str:
    """The endpoint string ``listen`` with ``backlog=`` added, if its type has one and it sets none."""
    kind, *arguments = re.split(r"(?<!\\):", listen)
    if kind.lower() not in _BACKLOG_ENDPOINTS:
        return listen
    if any(argument.partition("=")[0] == "backlog" for argument in arguments):
        return listen
    return f"{listen}:backlog={backlog}"


def build_store(config: StoreConfig, reactor, metrics: Metrics | None = None) -> IObjectStore:
    """The object store client for one configured store (upstream requests counted in ``metrics``)."""
    if isinstance(config, DirectoryStoreConfig):
        return DirectoryStore(config.name, config.path, reactor)
    return S3Store(config, reactor, observer=metrics.upstream_finished if metrics is not None else None)


async def check_imports(metadata: MetadataStore, config: Config) -> None:
    """ConfigError if a bucket of ``config`` would write where imported objects are."""
    problems = conflicts(config, await ImportTable(metadata.database).areas())
    if problems:
        raise ConfigError("; ".join(problems))


async def prepare_metadata(metadata: MetadataStore, config: Config, reactor: Any) -> None:
    """Migrate the metadata, sync the stores' rows and check no bucket writes where
    imported objects are (ConfigError); while another process holds the database
    locked, wait and try again. (What earlier processes left is the reaper's
    to release once their instance lease expired.)"""
    while True:
        try:
            await metadata.start()
            await metadata.sync_stores([(store.name, store.quota_bytes) for store in config.stores])
            await check_imports(metadata, config)
        except MetadataBusy as error:
            _log.warn(
                "Metadata database busy at start, retrying in {delay}s: {error}",
                delay=START_RETRY_SECONDS, error=str(error),
            )
            await deferLater(reactor, START_RETRY_SECONDS, lambda: None)
            continue
        return


def open_metadata(
    config: Config, reactor: Any, availability: MetadataAvailability | None = None, instance_id: str = ""
) -> MetadataStore:
    """The metadata store ``config`` names (not started), for instance ``instance_id``."""
    return MetadataStore(
        Database(create_engine(config.metadata), reactor, availability=availability), instance_id=instance_id
    )


def worker_instance_id(config: Config, worker: WorkerRole | None) -> str:
    """This process's instance id: ``server.instance_id`` (with ``/N`` appended in worker
    N of ``server.workers``, so that each process has its own), else ``host:pid``."""
    configured = config.server.instance_id
    if configured is None:
        return default_instance_id()
    return configured if worker is None else f"{configured}/{worker.index}"


class OrchestratorService(LoggingService):
    """Owns everything the daemon runs; the S3 listener starts once metadata is ready.

    As one of ``server.workers`` processes (``worker`` given), it serves the sockets its
    supervisor passed and leaves the once-per-start metadata work to the supervisor."""

    _log = Logger()

    def __init__(
        self, config: Config, reactor, config_path: str | None = None, worker: WorkerRole | None = None
    ) -> None:
        super().__init__()
        self.config = config
        self.worker = worker
        self.listeners: Listeners = (
            EndpointListeners(reactor) if worker is None else InheritedListeners(reactor, worker.sockets)
        )
        # Where SIGHUP re-reads the configuration from (None: no reloading).
        self.config_path = config_path
        self.reactor = reactor
        # Whether the metadata database answers (degraded mode while it does not).
        self.metadata_availability = MetadataAvailability(reactor, config.metadata.unavailable_after)
        #: This process's name in logs, metrics and the reservations it owns.
        self.instance_id = worker_instance_id(config, worker)
        self.metadata = open_metadata(config, reactor, self.metadata_availability, self.instance_id)
        # Registered at start, renewed while running, deregistered at a clean stop.
        self.lease = InstanceLease(self.metadata, self.instance_id, config.metadata.lease, reactor)
        self.lease.setName("instance-lease")
        # The stores' monthly traffic, against the caps of the current config.
        self.traffic = TrafficLedger(TrafficTable(self.metadata.database), lambda: self.config.store_caps(), reactor)
        # Job counters are read at scrape time from ``self.jobs`` (filled at start).
        self.metrics = Metrics(
            jobs=lambda: self.jobs, reads=lambda: self.placement.read_counters,
            metadata_up=lambda: self.metadata_availability.available, instance_id=self.instance_id,
            lease=self.lease, traffic=self.traffic.report,
        )
        self.stores: Mapping[str, IObjectStore] = {
            store.name: MeteredStore(build_store(store, reactor, self.metrics), self.traffic)
            for store in config.stores
        }
        self.health = StoreHealth(list(self.stores), config.health.unhealthy_after, now=reactor.seconds)
        # The cluster-wide jobs run on the one instance holding each job's lease.
        self.job_leases = JobLeases(self.metadata.database)
        self.election = JobElection(self.job_leases, self.instance_id, config.jobs.lease, reactor)
        self.scrub_passes = ScrubPasses(self.metadata.database)
        self.placement = Placement(
            metadata=self.metadata,
            stores=self.stores,
            routing_strategy=config.routing_strategy,
            clock=reactor,
            locks=KeyLocks(),
            health=self.health,
            policy=lambda bucket: self.config.placement_for(bucket),
            zones=lambda: self.config.store_zones(),
            traffic=self.traffic,
            modes=lambda: self.config.store_modes(),
            imported=lambda bucket, key: self.importer.areas.places(bucket, key),
        )
        # Plans rebalances (admin API, the periodic job) for the mover to carry out.
        self.rebalancer = Rebalancer(
            self.metadata, ObjectPlacements(self.metadata.database), lambda: self.config, self.health,
            lambda: self.placement.write_capped()[0], reactor,
        )
        self.objects = ObjectOperations(
            self.placement, max_object_size=config.server.max_object_size, availability=self.metadata_availability
        )
        self.multipart = MultipartOperations(
            self.placement, self.metadata, reactor, expire_after=config.multipart.expire_after,
            completed_retention=config.multipart.completed_retention,
        )
        self.listing = ListingOperations(self.metadata, token_secret=continuation_token_secret(config))
        api = S3Api(
            self.objects,
            BucketOperations(configured_at=reactor.seconds()),
            self.listing,
            BatchDelete(self.placement),
            CopyOperations(self.placement, reactor),
            self.multipart,
            availability=self.metadata_availability,
        )
        self.s3_handler = S3Handler(
            api, self.find_credential, reactor, metrics=self.metrics,
            bucket_exists=lambda name: self.config.has_bucket(name), threads=reactor,
        )
        self.site = S3Site(OpsRouter(self.s3_handler, self.ops_endpoints()), timeout=config.server.timeout,
                           reactor=reactor, header_timeout=config.server.header_timeout,
                           min_upload_rate=config.server.min_upload_rate,
                           upload_rate_window=config.server.upload_rate_window)
        # Imports started through the admin API (``s3orchestrator import``).
        self.importer = Importer(
            ImportTable(self.metadata.database), lambda: self.config, self.instance_id, reactor,
            count=self.traffic.count, replicate=self._replicate_soon,
        )
        self.importer.setName("imports")
        # The background jobs by name (the manhole's run_job), made at start.
        self.jobs: dict[
            str,
            HealthCheckJob | MultipartExpiryJob | ReaperJob | CleanupJob | ReplicatorJob | TrafficSyncJob | MoverJob
            | RebalanceJob | ScrubJob,
        ] = {}
        # Store modes, drains and rebalances for the admin API and metrics.
        self.movement = MovementControl(self.metadata, lambda: self.config.store_modes(), reactor,
                                        soon=self._mover_soon)
        self.ready = False
        self._s3_port: IListeningPort | None = None
        self._ops_ports: dict[str, IListeningPort] = {}  # by METRICS, ADMIN, MANHOLE
        self._previous_sighup: Any = None

    def find_credential(self, access_key_id: str) -> Credential | None:
        """The credential (and its bucket) of an access key, from the current config."""
        found = self.config.find_credential(access_key_id)
        if found is None:
            return None
        bucket, secret = found
        return Credential(access_key_id=access_key_id, secret_access_key=secret, bucket=bucket)

    def startService(self) -> None:
        super().startService()
        warn_of_slow_checksums(self._log)
        ensureDeferred(self._start()).addErrback(self._start_failed)

    async def _open_metadata(self) -> None:
        """Migrate the metadata, sync the stores' rows and register this instance; while
        a live process of another host or pid holds this instance id, wait and try
        again (no client waits)."""
        await prepare_metadata(self.metadata, self.config, self.reactor)
        while True:
            try:
                await self.lease.register()
            except MetadataBusy as error:
                self._log.warn(
                    "Metadata database busy at start, retrying in {delay}s: {error}",
                    delay=START_RETRY_SECONDS, error=str(error),
                )
                await deferLater(self.reactor, START_RETRY_SECONDS, lambda: None)
                continue
            except InstanceIdInUse as error:
                delay = self.lease.step
                self._log.warn("Waiting {delay:g}s for instance id {instance_id} to be free: {error}",
                               delay=delay, instance_id=self.instance_id, error=str(error))
                await deferLater(self.reactor, delay, lambda: None)
                continue
            self._log.info("Registered as instance {instance_id} (lease {lease:g} s)",
                           instance_id=self.instance_id, lease=self.config.metadata.lease)
            return

    def _replicate_soon(self) -> None:
        replicator = self.jobs.get("replicator")
        if isinstance(replicator, ReplicatorJob):
            replicator.soon()

    async def _start(self) -> None:
        await self._open_metadata()
        self.lease.setServiceParent(self)
        for store in self.stores.values():
            await store.start()
        health_checks = HealthCheckJob(
            lambda: self.stores, self.health, self.config.health.interval, self.reactor,
            slow_probe=self.config.health.slow_probe,
            probe_metadata=lambda: None if self.metadata_availability.available else self.metadata.probe(),
        )
        health_checks.setName("health-checks")
        health_checks.setServiceParent(self)

        def metadata_available() -> bool:
            return self.metadata_availability.available

        expiry = MultipartExpiryJob(
            self.multipart, self.metadata, self.config.multipart.expire_after,
            self.config.multipart.expiry_check_interval, self.reactor,
            completed_retention=self.config.multipart.completed_retention,
            metadata_available=metadata_available, lease=self.election.lease("multipart_expiry"),
        )
        expiry.setName("multipart-expiry")
        expiry.setServiceParent(self)
        jobs = self.config.placement_jobs
        reaper = ReaperJob(self.metadata, lambda: self.stores, jobs.reaper_interval, self.reactor,
                           metadata_available, self.election.lease("reaper"), owner=self.instance_id)
        reaper.setName("reaper")
        reaper.setServiceParent(self)
        cleanup = CleanupJob(self.metadata, lambda: self.stores, jobs.cleanup_interval, self.reactor,
                             metadata_available, self.election.lease("cleanup"), owner=self.instance_id)
        cleanup.setName("cleanup")
        cleanup.setServiceParent(self)
        replicator = ReplicatorJob(
            self.placement, self.metadata, lambda: [bucket.name for bucket in self.config.buckets],
            lambda bucket: self.config.placement_for(bucket), lambda: self.config.placement, self.reactor,
            metadata_available, self.election.lease("replicator"),
        )
        replicator.setName("replicator")
        replicator.setServiceParent(self)
        # A store back up may take the copies that could not be made while it was down (on
        # the instance that runs the replicator: soon() asks its lease first).
        self.health.on_change = lambda store, healthy: replicator.soon() if healthy else None
        mover = MoverJob(self.placement, self.metadata, lambda: self.config.store_modes(),
                         lambda: self.config.movement, self.reactor, metadata_available,
                         self.election.lease("mover"), owner=self.instance_id)
        mover.setName("mover")
        mover.setServiceParent(self)
        scrub = ScrubJob(
            self.placement, self.metadata, self.scrub_passes, lambda: self.stores,
            lambda: [store.name for store in self.config.stores if isinstance(store, DirectoryStoreConfig)],
            lambda: self.config.scrub, self.reactor, metadata_available, self.election.lease("scrub"),
            owner=self.instance_id, read_capped=lambda store: self.traffic.read_cap(store) is not None,
        )
        scrub.setName("scrub")
        scrub.setServiceParent(self)
        traffic_sync = TrafficSyncJob(self.traffic, self.reactor, metadata_available=metadata_available)
        traffic_sync.setName("traffic-sync")
        traffic_sync.setServiceParent(self)
        rebalance = RebalanceJob(self.rebalancer, lambda: self.config.movement.rebalance_interval, self.reactor,
                                 metadata_available, self.election.lease("rebalance"))
        rebalance.setName("rebalance")
        rebalance.setServiceParent(self)
        self.jobs = {"health_checks": health_checks, "multipart_expiry": expiry, "reaper": reaper, "cleanup": cleanup,
                     "replicator": replicator, "traffic_sync": traffic_sync, "mover": mover, "rebalance": rebalance,
                     "scrub": scrub}
        self.importer.setServiceParent(self)
        await self.start_ops_listeners()
        listen = with_backlog(self.config.server.listen, self.config.server.backlog)
        self._s3_port = await self.listeners.listen(S3, listen, self.site)
        self.ready = True
        if self.config_path is not None:
            self._previous_sighup = signal.signal(signal.SIGHUP, self._sighup)
        if self.worker is None:
            assert self._s3_port is not None
            await self._log_banner(self._s3_port)
        else:
            self._log.info("Worker {worker} serving (pid {pid})", worker=self.worker.index, pid=os.getpid())
            self.worker.ready()

    async def _log_banner(self, s3_port: IListeningPort) -> None:
        """Log where every listener is bound and what the daemon serves, as one event."""
        banner = startup_banner(
            self.config, await self.metadata.store_usage(), [s3_port.getHost()],
            {name: port.getHost() for name, port in self._ops_ports.items()}, instance_id=self.instance_id,
        )
        # The text is the event's format string: braces in it (a path) must stay braces.
        text = banner_text(banner).replace("{", "{{").replace("}", "}}")
        self._log.info(text, **banner_fields(banner))

    def ops_endpoints(self) -> dict[str, OpsEndpoint]:
        """The operator endpoints served on the S3 listener (for requests without an S3
        signature) and on ``[metrics] listen``, by path."""
        endpoints: dict[str, OpsEndpoint] = {}
        endpoints["/health"] = health_endpoint(self.health, lambda: self.metadata_availability.available)
        endpoints["/health/ready"] = ready_endpoint(lambda: self.ready)
        endpoints["/metrics"] = metrics_endpoint(self.metrics, self._metrics_status)
        return endpoints

    def _mover_soon(self) -> None:
        """Ask the mover to run now (once started; on the instance holding its lease)."""
        mover = self.jobs.get("mover")
        if isinstance(mover, MoverJob):
            mover.soon()

    async def _metrics_status(self) -> Mapping[str, Any]:
        """The status snapshot of ``/metrics``; none while the metadata database is
        unavailable (the store gauges are left out, ``s3orchestrator_metadata_up`` says why)."""
        if not self.metadata_availability.available:
            return {}
        try:
            snapshot = await status_snapshot(self.metadata, self.health)
            snapshot["movement"] = await self.movement.status()
            return snapshot
        except (MetadataUnavailable, MetadataBusy):
            return {}

    async def start_ops_listeners(self) -> None:
        """Listen where operators reach the daemon besides S3 (each only when
        configured): manhole, metrics, admin API. A port that cannot be had, or an
        unusable manhole password file, fails the start. A worker serves those its
        supervisor passed: its own private metrics socket (plain HTTP on loopback, which
        the supervisor scrapes), the manhole and admin API in worker 1 only."""
        ops = self.config.ops
        metrics_listen = ops.metrics_listen if self.worker is None else None
        listeners: list[tuple[str, str | None, Any]] = [(METRICS, metrics_listen, ops_site(self.ops_endpoints()))]
        if ops.manhole is not None:
            listeners.append((MANHOLE, ops.manhole.listen, manhole_listener(ops.manhole, self, self.reactor)))
        if ops.admin is not None:
            endpoints = admin_endpoints(ops.admin.token, self.metadata, self.health, self.metadata_availability,
                                        self.job_leases, usage=self.traffic.report, movement=self.movement,
                                        rebalancer=self.rebalancer, scrub_passes=self.scrub_passes)
            import_endpoints, import_actions = import_routes(ops.admin.token, self.importer, self.metadata)
            actions = {**admin_actions(ops.admin.token, self.health, self.movement, self.rebalancer,
                                      self.scrub_now), **import_actions}
            listeners.append((ADMIN, ops.admin.listen, ops_site({**endpoints, **import_endpoints}, actions)))
        for name, listen, factory in listeners:
            port = await self.listeners.listen(name, listen, factory)
            if port is not None:
                self._ops_ports[name] = port

    async def scrub_now(self) -> dict[str, Any]:
        """Ask for a pass of each kind not under way to begin at the scrubber's next look and
        lift the stores' suspensions (the admin API's POST /scrub): ``{"enabled",
        "within_seconds", "scrub": [passes], "lifted": [stores no longer suspended]}``."""
        settings = self.config.scrub
        lifted: list[str] = []
        if settings.enabled:
            lifted = [suspension.store for suspension in await self.scrub_passes.suspensions()]
            passes = await self.scrub_passes.request(int(self.reactor.seconds() * 1000))
            scrub = self.jobs.get("scrub")
            if isinstance(scrub, ScrubJob):
                scrub.look_soon()  # here, if this instance runs the job; else at its runner's next look
        else:
            passes = await self.scrub_passes.passes()
        return {"enabled": settings.enabled, "within_seconds": timer_step(settings),
                "scrub": [scrub_pass_document(scrub) for scrub in passes], "lifted": lifted}

    def _start_failed(self, failure) -> None:
        if failure.check(ConfigError, CannotListenError):
            self._log.critical("s3orchestrator failed to start: {error}", error=str(failure.value))
        else:
            self._log.failure("s3orchestrator failed to start", failure)
        # Exit non-zero (a supervisor restarts or reports it), once the logs are out.
        self.reactor.addSystemEventTrigger("after", "shutdown", exit_failed)
        self.reactor.stop()

    def stopService(self) -> Deferred[None]:
        self.ready = False
        return ensureDeferred(self._stop())

    async def _stop(self) -> None:
        """Stop accepting, let requests in flight finish (up to ``server.shutdown_timeout``),
        abort the rest and let their clean-up (quota, parts) run, then stop the jobs,
        the other listeners, deregister the instance, stop the stores and the metadata store."""
        if self._previous_sighup is not None:
            signal.signal(signal.SIGHUP, self._previous_sighup)
            self._previous_sighup = None
        if self._s3_port is not None:
            await maybeDeferred(self._s3_port.stopListening)
            self._s3_port = None
            aborted = await self.site.drain(self.config.server.shutdown_timeout)
            if aborted:
                self._log.warn(
                    "Shutdown: aborted {count} requests still running after {timeout:g} s",
                    count=aborted, timeout=self.config.server.shutdown_timeout,
                )
            await self.s3_handler.wait_idle(CLEANUP_TIMEOUT)
        for port in self._ops_ports.values():
            await maybeDeferred(port.stopListening)
        self._ops_ports.clear()
        await maybeDeferred(super().stopService)
        # After the jobs: what this instance still owns now is a dead instance's.
        await self.lease.deregister()
        for store in self.stores.values():
            await store.stop()
        await self.metadata.stop()
        self._log.info("s3orchestrator stopped")

    # -- reloading ------------------------------------------------------------------------------

    def _sighup(self, signum: int, frame: object) -> None:
        # A signal handler runs between two bytecodes of whatever the reactor does:
        # only schedule the reload.
        self.reactor.callFromThread(lambda: ensureDeferred(self.reload()))

    async def reload(self) -> bool:
        """Re-read the configuration file and apply what can change while running;
        False (the running configuration kept) if the new file is invalid."""
        assert self.config_path is not None
        try:
            new = load_config(self.config_path)
        except ConfigError as error:
            self._log.error(
                "Reload of {path} failed, keeping the running configuration: {error}",
                path=self.config_path, error=str(error),
            )
            return False
        try:
            await check_imports(self.metadata, new)
        except ConfigError as error:
            self._log.error(
                "Reload of {path} refused, keeping the running configuration: {error}",
                path=self.config_path, error=str(error),
            )
            return False
        changes = reload_plan(self.config, new)
        if changes.needs_restart:
            self._log.warn(
                "Reload of {path}: {settings} changed; that takes a restart, the running values stay",
                path=self.config_path, settings=", ".join(changes.needs_restart),
            )
        applied = self.config = changes.config
        signing_key.cache_clear()  # keys derived from secrets the reload may have removed
        self.listing.set_token_secret(continuation_token_secret(applied))
        self.objects.max_object_size = applied.server.max_object_size
        self.placement.routing_strategy = applied.routing_strategy
        self.site.timeOut = applied.server.timeout  # for connections accepted from now on
        self.site.header_timeout = applied.server.header_timeout
        self.site.min_upload_rate = applied.server.min_upload_rate
        self.site.upload_rate_window = applied.server.upload_rate_window
        self.multipart.expire_after = applied.multipart.expire_after
        self.multipart.completed_retention = applied.multipart.completed_retention
        self.health.unhealthy_after = applied.health.unhealthy_after
        health_checks = self.jobs.get("health_checks")
        if isinstance(health_checks, HealthCheckJob):
            health_checks.slow_probe = applied.health.slow_probe
        # Only when the file's level changed: one given by --log-level stays until then.
        if self.log_levels is not None and "logging.level" in changes.applied:
            self.log_levels.setLogLevelForNamespace("", LogLevel.levelWithName(applied.ops.log_level))
        await self.metadata.sync_stores([(store.name, store.quota_bytes) for store in applied.stores])
        self._retime_jobs()
        if "store modes" in changes.applied:
            self._mover_soon()  # a drain starts (or stops) now, not at the mover's next run
        self._log.info(
            "Reloaded {path}: {changed}", path=self.config_path,
            changed=", ".join(changes.applied) if changes.applied else "nothing changed",
        )
        return True

    def _retime_jobs(self) -> None:
        """Give the jobs the intervals of the current configuration (restarting a timer
        whose interval changed)."""
        wanted = {
            "health_checks": self.config.health.interval,
            "multipart_expiry": self.config.multipart.expiry_check_interval,
            "reaper": self.config.placement_jobs.reaper_interval,
            "cleanup": self.config.placement_jobs.cleanup_interval,
            "replicator": self.config.placement.replication_interval,
            "rebalance": RebalanceJob.timer_interval(self.config.movement.rebalance_interval),
            "mover": self.config.movement.interval,
            "scrub": timer_step(self.config.scrub),
        }
        for name, interval in wanted.items():
            job = self.jobs.get(name)
            if job is None or job.step == interval:
                continue
            job.interval = job.step = interval
            if job.running:
                job.stopService()
                job.startService()
        expiry = self.jobs.get("multipart_expiry")
        if isinstance(expiry, MultipartExpiryJob):
            expiry.expire_after = self.config.multipart.expire_after
            expiry.completed_retention = self.config.multipart.completed_retention
