"""Keeping ``server.workers`` worker processes running: spawn them, restart one that
exits (with backoff), pass signals on, stop them all.

A worker says it serves by writing ``ready`` to the pipe at ``READY_FD``. Its
standard input is a pipe from the supervisor that is never written: when the
supervisor dies, even by SIGKILL, the worker reads end-of-file and stops.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import attrs
from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import CannotListenError, ProcessExitedAlready
from twisted.internet.interfaces import IDelayedCall, IProcessTransport
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

#: The worker's end of the pipe it writes ``ready`` to.
READY_FD = 3
#: Seconds before the first restart of a worker that exited; doubled for each
#: further exit in a row, up to RESTART_DELAY_MAX.
RESTART_DELAY = 1.0
RESTART_DELAY_MAX = 60.0
#: A worker that ran this many seconds before it exited is restarted after RESTART_DELAY again.
STABLE_AFTER = 60.0


@attrs.frozen
class WorkerCommand:
    """How to start one worker: program, arguments, environment and the descriptors it
    gets (child descriptor -> the supervisor's, beyond stdio and READY_FD)."""

    executable: str
    args: Sequence[str]
    env: Mapping[str, str]
    fds: Mapping[int, int]


@attrs.define
class Worker:
    """One worker slot (1 to N) and the process filling it, if any."""

    index: int
    process: IProcessTransport | None = None
    pid: int | None = None  # of the last process started (kept for the log after it ended)
    ready: bool = False
    started_at: float = 0.0
    exits_in_a_row: int = 0
    restarts: int = 0
    restart: IDelayedCall | None = None
    reload_due: bool = False  # a reload came while it was starting: SIGHUP once it serves


def exit_description(reason: Failure) -> str:
    """How a process ended, from ``processEnded``'s reason: its exit status or signal (or
    why it could not start)."""
    if isinstance(reason.value, (OSError, CannotListenError)):
        return f"could not start: {reason.value}"
    signal = getattr(reason.value, "signal", None)
    if signal:
        return f"killed by signal {signal}"
    return f"exit status {getattr(reason.value, 'exitCode', None)}"


class _WorkerProtocol(ProcessProtocol):
    """Hears one worker's ready line and its end."""

    def __init__(self, pool: WorkerPool, worker: Worker) -> None:
        self._pool = pool
        self._worker = worker
        self._ready_buffer = b""

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        if childFD != READY_FD or self._worker.ready:
            return
        self._ready_buffer += data
        if b"ready\n" in self._ready_buffer:
            self._pool.worker_ready(self._worker)

    def processEnded(self, reason: Failure) -> None:
        self._pool.worker_ended(self._worker, reason)


class WorkerPool(Service):
    """N worker processes, each restarted when it exits until the pool stops.

    ``command(index)`` says how to start worker ``index``. ``all_ready`` is called once,
    when every worker has said it serves; ``start_failed`` if a worker exits before
    that (a worker that cannot start would only fail again); ``exited(index, delay)``
    when a serving pool's worker exited and will be started again in ``delay`` seconds."""

    _log = Logger()

    def __init__(
        self,
        reactor: Any,
        count: int,
        command: Callable[[int], WorkerCommand],
        stop_timeout: float,
        all_ready: Callable[[], None],
        start_failed: Callable[[str], None],
        exited: Callable[[int, float], None] | None = None,
    ) -> None:
        self.reactor = reactor
        self.workers = [Worker(index) for index in range(1, count + 1)]
        self._command = command
        self._stop_timeout = stop_timeout
        self._all_ready = all_ready
        self._start_failed = start_failed
        self._exited = exited
        self._started = False  # every worker was ready once
        self._stopping = False
        self._stopped: Deferred[None] | None = None

    def startService(self) -> None:
        super().startService()
        for worker in self.workers:
            self._spawn(worker)

    def _spawn(self, worker: Worker) -> None:
        worker.restart = None
        worker.started_at = self.reactor.seconds()
        try:
            command = self._command(worker.index)
            child_fds: dict[int, int | str] = {0: "w", 1: 1, 2: 2, READY_FD: "r", **command.fds}
            worker.process = self.reactor.spawnProcess(
                _WorkerProtocol(self, worker), command.executable, list(command.args), env=dict(command.env),
                childFDs=child_fds,
            )
        except (OSError, CannotListenError) as error:
            # Out of processes or descriptors, its socket not bound again: as if it had exited at once.
            worker.pid = None
            self.worker_ended(worker, Failure(error))
            return
        worker.pid = worker.process.pid
        self._log.info("Worker {worker} started (pid {pid})", worker=worker.index, pid=worker.pid)

    def worker_ready(self, worker: Worker) -> None:
        """Worker ``worker`` serves."""
        worker.ready = True
        if worker.reload_due:
            worker.reload_due = False
            self._send(worker, "HUP")
        if not self._started and all(each.ready for each in self.workers):
            self._started = True
            self._all_ready()

    def worker_ended(self, worker: Worker, reason: Failure) -> None:
        """Worker ``worker``'s process is gone: restart it (unless stopping) after a delay
        that grows while it keeps exiting soon after its start."""
        pid = worker.pid
        worker.process = None
        worker.ready = False
        worker.reload_due = False  # the next process reads the file as it is then
        how = exit_description(reason)
        if self._stopping:
            self._log.info("Worker {worker} (pid {pid}) stopped", worker=worker.index, pid=pid)
            if self._stopped is not None and all(each.process is None for each in self.workers):
                self._stopped.callback(None)
            return
        if not self._started:
            self._start_failed(f"worker {worker.index} (pid {pid}) exited before it served: {how}")
            return
        if self.reactor.seconds() - worker.started_at >= STABLE_AFTER:
            worker.exits_in_a_row = 0
        delay = min(RESTART_DELAY * 2**worker.exits_in_a_row, RESTART_DELAY_MAX)
        worker.exits_in_a_row += 1
        worker.restarts += 1
        self._log.warn(
            "Worker {worker} (pid {pid}) exited ({reason}); restarting it in {delay:g} s",
            worker=worker.index, pid=pid, reason=how, delay=delay,
        )
        worker.restart = self.reactor.callLater(delay, self._spawn, worker)
        if self._exited is not None:
            self._exited(worker.index, delay)

    def signal(self, name: str) -> None:
        """Send signal ``name`` (``TERM``, ``KILL``...) to every running worker."""
        for worker in self.workers:
            self._send(worker, name)

    def reload(self) -> None:
        """SIGHUP every serving worker; one still starting gets it once it serves (until
        then SIGHUP would end it, and it may have read the file before it changed)."""
        for worker in self.workers:
            if worker.ready:
                self._send(worker, "HUP")
            elif worker.process is not None:
                worker.reload_due = True

    @staticmethod
    def _send(worker: Worker, name: str) -> None:
        if worker.process is not None:
            try:
                worker.process.signalProcess(name)
            except ProcessExitedAlready:
                pass  # its end is on its way to worker_ended

    def stopService(self) -> Deferred[None]:
        """SIGTERM every worker (each finishes its requests in flight) and fire once all
        exited; SIGKILL those still running after the stop timeout."""
        super().stopService()
        self._stopping = True
        for worker in self.workers:
            if worker.restart is not None:
                worker.restart.cancel()
                worker.restart = None
        if all(worker.process is None for worker in self.workers):
            return succeed(None)
        self._stopped = Deferred()
        self.signal("TERM")
        kill = self.reactor.callLater(self._stop_timeout, self._kill)
        self._stopped.addBoth(lambda result: (kill.cancel() if kill.active() else None, result)[1])
        return self._stopped

    def _kill(self) -> None:
        running = [worker.index for worker in self.workers if worker.process is not None]
        self._log.warn(
            "Workers {workers} still running {timeout:g} s after SIGTERM: killing them",
            workers=", ".join(map(str, running)), timeout=self._stop_timeout,
        )
        self.signal("KILL")
