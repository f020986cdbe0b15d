"""The twistd process when ``server.workers`` is above 1: it prepares the metadata
once, binds the listening sockets, keeps the worker processes running on them and
serves the aggregated ``[metrics] listen`` endpoint.

What runs where:

- S3 requests: every worker. On Linux, for a TCP (or TLS) endpoint, unless
  ``server.worker_sockets = "shared"``, each worker accepts on a socket of its own
  the supervisor bound with ``SO_REUSEPORT``, all on the one address: the kernel
  spreads new connections over them (by a hash of each connection's addresses), so
  each connection wakes one worker and a busy or lucky worker cannot take a whole
  burst. A worker's socket stays bound while it restarts after its first exit
  (connections it got meanwhile wait for the new process); when it exits again soon
  after, its socket is let go until it starts (connections queued on it are reset;
  the others' take the new ones). Otherwise (and for unix sockets or sockets from
  systemd) every worker accepts on the one socket the supervisor bound (the kernel
  gives each new connection to whichever accepts first); it stays bound while a
  worker restarts.
- ``[metrics] listen``: the supervisor. ``/metrics`` is every worker's metrics with a
  ``worker`` label, plus ``s3orchestrator_worker_up`` and
  ``s3orchestrator_worker_restarts_total``; ``/health`` is the first serving
  worker's; ``/health/ready`` is ready while any worker serves. Each worker serves
  its own on a private loopback port the supervisor bound for it and scrapes.
- The admin API and the manhole: worker 1 (on sockets the supervisor holds).
- Background jobs: every worker runs its own.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any, Mapping, Sequence

from twisted.internet.defer import Deferred, ensureDeferred, maybeDeferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import Factory
from twisted.logger import ILogObserver, Logger, LogLevel
from twisted.web.client import Agent, readBody

from s3orchestrator.config import REUSEPORT, Config, ConfigError, load_config
from s3orchestrator.listeners import (
    REUSEPORT_AVAILABLE,
    S3,
    HeldSocket,
    InheritedSocket,
    ReusePortSockets,
    hold,
    tcp_address,
)
from s3orchestrator.metadata.interface import StoreUsage
from s3orchestrator.ops.banner import ADMIN, MANHOLE, METRICS, banner_fields, banner_text, startup_banner
from s3orchestrator.ops.endpoints import OpsEndpoint, OpsResponse, ops_site
from s3orchestrator.ops.health import json_response
from s3orchestrator.ops.logs import LoggingService
from s3orchestrator.reload import reload_plan
from s3orchestrator.service import CLEANUP_TIMEOUT, exit_failed, open_metadata, prepare_metadata, with_backlog
from s3orchestrator.workers.metrics import labelled_families, render, worker_families
from s3orchestrator.workers.pool import READY_FD, RESTART_DELAY, WorkerCommand, WorkerPool
from s3orchestrator.workers.worker import worker_arguments, worker_log_options

#: Where each worker's private operator endpoints listen (a port of the supervisor's choosing).
PRIVATE_OPS = "tcp:0:interface=127.0.0.1"
#: Seconds a worker's private endpoint may take to answer a scrape.
SCRAPE_TIMEOUT = 10.0
#: Seconds a worker gets after SIGTERM beyond server.shutdown_timeout (clean-up, then exit).
STOP_MARGIN = CLEANUP_TIMEOUT + 5.0


class SupervisorService(LoggingService):
    """The supervisor daemon: metadata prepared once, sockets held, workers kept running."""

    _log = Logger()

    def __init__(
        self, config: Config, reactor: Any, config_path: str, twistd_options: Mapping[str, Any] | None = None,
        log_format: str | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.reactor = reactor
        self.config_path = config_path
        # Where the workers log: where twistd's options send the supervisor's log.
        self._twistd_options = twistd_options if twistd_options is not None else {"nodaemon": True}
        self._log_format = log_format or config.ops.log_format
        self._log_level = config.ops.log_level
        self._held: dict[str, HeldSocket] = {}
        self._s3_sockets: ReusePortSockets | None = None  # the S3 listener, one socket per worker
        self._private: dict[int, HeldSocket] = {}  # each worker's operator endpoints, by worker number
        self._metrics_port: IListeningPort | None = None
        self._usage: Sequence[StoreUsage] = ()
        self._previous_sighup: Any = None
        self.pool = WorkerPool(
            reactor, config.server.workers, self.worker_command,
            stop_timeout=config.server.shutdown_timeout + STOP_MARGIN,
            all_ready=self._all_ready,
            start_failed=self._workers_failed,
            exited=self._worker_exited,
        )

    def log_to(self, observer: ILogObserver, log_level: str) -> None:
        """Log the events at ``log_level`` or above to ``observer`` (and so do the workers)."""
        self._log_level = log_level
        super().log_to(observer, log_level)

    def worker_command(self, index: int) -> WorkerCommand:
        """How to start worker ``index``: the worker module under this Python, with the
        sockets it serves as descriptors 4 and up (its own S3 socket bound again if it was let go)."""
        sockets: dict[str, InheritedSocket] = {}
        if self._s3_sockets is not None:
            sockets[S3] = self._s3_sockets.socket_for(index)
        for name in (S3, ADMIN, MANHOLE):
            if name in self._held and (name == S3 or index == 1):
                sockets[name] = self._held[name].inherited
        sockets[METRICS] = self._private[index].inherited
        fds: dict[int, int] = {}
        arguments = []
        for child_fd, (name, inherited) in enumerate(sockets.items(), start=READY_FD + 1):
            fds[child_fd] = inherited.fd
            arguments.append(f"{name}={child_fd}:{inherited.family}")
        args = worker_arguments(self.config_path, index, arguments, self._log_format, self._log_level,
                                worker_log_options(self._twistd_options, index))
        return WorkerCommand(sys.executable, [sys.executable, "-m", "s3orchestrator.workers.worker", *args],
                             dict(os.environ), fds)

    def _worker_exited(self, index: int, delay: float) -> None:
        """Worker ``index`` exited again soon after its start: its S3 socket (if its own) is
        let go until it starts, so new connections go to the workers that serve."""
        if self._s3_sockets is not None and delay > RESTART_DELAY:
            self._s3_sockets.release(index)

    def startService(self) -> None:
        super().startService()
        ensureDeferred(self._start()).addErrback(self._start_failed)

    async def _start(self) -> None:
        metadata = open_metadata(self.config, self.reactor)
        await prepare_metadata(metadata, self.config, self.reactor)
        self._usage = await metadata.store_usage()
        await metadata.stop()
        refuse = Factory()  # the supervisor never accepts on the sockets it holds
        refuse.noisy = False
        server = self.config.server
        listen = with_backlog(server.listen, server.backlog)
        reuseport = REUSEPORT_AVAILABLE and server.worker_sockets == REUSEPORT
        where = tcp_address(self.reactor, listen) if reuseport else None
        if where is not None:
            self._s3_sockets = ReusePortSockets(where)
            for worker in self.pool.workers:
                self._s3_sockets.socket_for(worker.index)
        else:
            self._held[S3] = await hold(self.reactor, listen, refuse)
        ops = self.config.ops
        if ops.admin is not None:
            self._held[ADMIN] = await hold(self.reactor, ops.admin.listen, refuse)
        if ops.manhole is not None:
            self._held[MANHOLE] = await hold(self.reactor, ops.manhole.listen, refuse)
        for worker in self.pool.workers:
            self._private[worker.index] = await hold(self.reactor, PRIVATE_OPS, refuse)
        if ops.metrics_listen is not None:
            self._metrics_port = await serverFromString(self.reactor, ops.metrics_listen).listen(
                ops_site(self.ops_endpoints())
            )
        self.pool.setServiceParent(self)

    def _all_ready(self) -> None:
        ensureDeferred(self._serving()).addErrback(self._start_failed)

    async def _serving(self) -> None:
        """Every worker serves: take SIGHUP, log the banner."""
        self._previous_sighup = signal.signal(signal.SIGHUP, self._sighup)
        ops_addresses = {name: held.port.getHost() for name, held in self._held.items() if name != S3}
        if self._metrics_port is not None:
            ops_addresses[METRICS] = self._metrics_port.getHost()
        s3_address = self._s3_sockets.address() if self._s3_sockets is not None else self._held[S3].port.getHost()
        banner = startup_banner(self.config, self._usage, [s3_address], ops_addresses)
        self._log.info(banner_text(banner).replace("{", "{{").replace("}", "}}"), **banner_fields(banner))

    def _start_failed(self, failure: Any) -> None:
        if failure.check(ConfigError, CannotListenError):
            self._log.critical("s3orchestrator failed to start: {error}", error=str(failure.value))
        else:
            self._log.failure("s3orchestrator failed to start", failure)
        self.reactor.addSystemEventTrigger("after", "shutdown", exit_failed)
        self.reactor.stop()

    def _workers_failed(self, why: str) -> None:
        self._log.critical("s3orchestrator failed to start: {why}", why=why)
        self.reactor.addSystemEventTrigger("after", "shutdown", exit_failed)
        self.reactor.stop()

    def stopService(self) -> Deferred[None]:
        return ensureDeferred(self._stop())

    async def _stop(self) -> None:
        """Stop the workers (each drains its requests), then let go of the sockets."""
        if self._previous_sighup is not None:
            signal.signal(signal.SIGHUP, self._previous_sighup)
            self._previous_sighup = None
        await maybeDeferred(super().stopService)
        ports = [held.port for held in (*self._held.values(), *self._private.values())]
        if self._metrics_port is not None:
            ports.append(self._metrics_port)
        for port in ports:
            await maybeDeferred(port.stopListening)
        if self._s3_sockets is not None:
            self._s3_sockets.close()
        self._log.info("s3orchestrator stopped")

    # -- operators' endpoints -------------------------------------------------------------------

    def ops_endpoints(self) -> dict[str, OpsEndpoint]:
        """``[metrics] listen``'s endpoints: the workers' metrics and health, by path."""
        return {"/metrics": self._metrics, "/health": self._health, "/health/ready": self._ready}

    async def _scrape(self, index: int, path: str) -> tuple[int, bytes]:
        """GET ``path`` from worker ``index``'s private endpoint: (status, body)."""
        address = self._private[index].port.getHost()
        url = f"http://127.0.0.1:{address.port}{path}".encode("ascii")  # type: ignore[attr-defined]
        request = Agent(self.reactor).request(b"GET", url)
        request.addTimeout(SCRAPE_TIMEOUT, self.reactor)
        response = await request
        return response.code, await readBody(response)

    async def _metrics(self, headers: Mapping[str, str]) -> OpsResponse:
        expositions: dict[int, str] = {}
        for worker in self.pool.workers:
            if not worker.ready:
                continue
            try:
                status, body = await self._scrape(worker.index, "/metrics")
            except Exception as error:  # a worker that died or hangs mid-scrape is left out
                self._log.warn("Scraping worker {worker}'s metrics failed: {error}", worker=worker.index,
                               error=str(error))
                continue
            if status == 200:
                expositions[worker.index] = body.decode("utf-8")
        families = worker_families(self.pool.workers) + labelled_families(expositions)
        return OpsResponse(200, "text/plain; version=0.0.4; charset=utf-8", render(families))

    async def _health(self, headers: Mapping[str, str]) -> OpsResponse:
        for worker in self.pool.workers:
            if worker.ready:
                try:
                    status, body = await self._scrape(worker.index, "/health")
                except Exception:  # try the next worker
                    continue
                return OpsResponse(status, "application/json", body)
        return json_response(503, {"status": "down", "workers_serving": 0})

    async def _ready(self, headers: Mapping[str, str]) -> OpsResponse:
        serving = sum(1 for worker in self.pool.workers if worker.ready)
        if serving and self.running:
            return json_response(200, {"ready": True, "workers_serving": serving})
        return json_response(503, {"ready": False, "workers_serving": serving})

    # -- reloading ------------------------------------------------------------------------------

    def _sighup(self, signum: int, frame: object) -> None:
        self.reactor.callFromThread(self.reload)

    def reload(self) -> bool:
        """Check the configuration file and pass SIGHUP on to the workers (each reloads
        it); False, and nothing passed on, if the file is invalid."""
        try:
            new = load_config(self.config_path)
        except ConfigError as error:
            self._log.error(
                "Reload of {path} failed, keeping the running configuration: {error}",
                path=self.config_path, error=str(error),
            )
            return False
        changes = reload_plan(self.config, new)
        if self.log_levels is not None and "logging.level" in changes.applied:
            self._log_level = changes.config.ops.log_level  # for workers started from now on
            self.log_levels.setLogLevelForNamespace("", LogLevel.levelWithName(self._log_level))
        self.config = changes.config
        self._log.info("Reload of {path}: passing SIGHUP on to the workers", path=self.config_path)
        self.pool.reload()
        return True
