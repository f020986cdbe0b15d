"""A worker process: ``python -m s3orchestrator.workers.worker``, started by the
supervisor (never by hand) with the listening sockets it serves.

It runs the daemon's service as one process would, on the inherited sockets, logs
where the supervisor's log goes (each event marked with the worker's number), stops
on SIGTERM as twistd would and when its supervisor goes away.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from typing import Any, Callable, Mapping, Sequence

from twisted.internet import abstract, fdesc
from twisted.internet.error import ReactorNotRunning
from twisted.logger import FilteringLogObserver, ILogObserver, Logger, globalLogBeginner
from twisted.python.failure import Failure
from zope.interface import implementer

from s3orchestrator.config import LOG_FORMATS, LOG_LEVELS, ConfigError, load_config
from s3orchestrator.listeners import parse_socket_argument
from s3orchestrator.ops.logs import log_destination
from s3orchestrator.service import OrchestratorService
from s3orchestrator.workers.pool import READY_FD
from s3orchestrator.workers.role import WorkerRole

_log = Logger()


def worker_arguments(
    config_path: str, index: int, sockets: Sequence[str], log_format: str, log_level: str,
    log_options: Sequence[str],
) -> list[str]:
    """The command-line arguments (after the program) of worker ``index``."""
    arguments = ["--config", config_path, "--index", str(index), "--log-format", log_format, "--log-level", log_level]
    for socket in sockets:
        arguments += ["--socket", socket]
    return arguments + list(log_options)


def worker_log_options(twistd_options: Mapping[str, Any], index: int) -> list[str]:
    """Where worker ``index`` logs, given where twistd's options send the supervisor's log:
    syslog alike, standard output alike (inherited), or a log file of its own beside the
    supervisor's (``NAME.worker1``...: one rotating file takes one writer)."""
    if twistd_options.get("syslog"):
        return ["--syslog", "--prefix", twistd_options.get("prefix") or "twisted"]
    name = twistd_options.get("logfile") or ""
    if name == "-" or (not name and twistd_options.get("nodaemon")):
        return []
    return ["--logfile", f"{name or 'twistd.log'}.worker{index}"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="s3orchestrator worker", description=__doc__)
    parser.add_argument("--config", required=True)
    parser.add_argument("--index", type=int, required=True)
    parser.add_argument("--socket", action="append", default=[], type=parse_socket_argument,
                        help="NAME=FD:FAMILY, a listening socket to adopt")
    parser.add_argument("--log-format", choices=LOG_FORMATS, default="text")
    parser.add_argument("--log-level", choices=LOG_LEVELS, default="info")
    parser.add_argument("--logfile", default="-")
    parser.add_argument("--syslog", action="store_true")
    parser.add_argument("--prefix", default=None)
    return parser


@implementer(ILogObserver)
class WorkerLogObserver:
    """Passes events on marked as worker ``index``'s: a ``worker`` field (JSON lines)
    and ``workerN`` before the namespace (text lines)."""

    def __init__(self, observer: ILogObserver, index: int) -> None:
        self._observer = observer
        self._index = index

    def __call__(self, event: dict[str, Any]) -> None:
        system = event.get("log_system")
        if system is None:
            level = getattr(event.get("log_level"), "name", "-")
            system = f"{event.get('log_namespace', '-')}#{level}"
        self._observer(dict(event, worker=self._index, log_system=f"worker{self._index} {system}"))


class Lifeline(abstract.FileDescriptor):
    """Reads the pipe from the supervisor (nothing comes); at its end, ``gone()``."""

    def __init__(self, reactor: Any, fd: int, gone: Callable[[], None]) -> None:
        super().__init__(reactor)
        self._fd = fd
        self._gone = gone
        fdesc.setNonBlocking(fd)

    def fileno(self) -> int:
        return self._fd

    def doRead(self) -> Any:
        return fdesc.readFromFD(self._fd, lambda data: None)

    def readConnectionLost(self, reason: Failure) -> None:
        # End of file (the reactor's own shutdown calls connectionLost, not this).
        self.connectionLost(reason)
        self._gone()


def main(argv: Sequence[str] | None = None) -> None:
    """Run one worker until SIGTERM or until the supervisor is gone."""
    options = _parser().parse_args(argv)
    try:
        config = load_config(options.config)
    except ConfigError as error:
        sys.exit(f"s3orchestrator worker {options.index}: invalid configuration: {error}")
    from twisted.internet import reactor

    destination = log_destination(
        {"nodaemon": True, "logfile": options.logfile, "syslog": options.syslog, "prefix": options.prefix},
        options.log_format,
        reactor,
    )

    def ready() -> None:
        os.write(READY_FD, b"ready\n")

    service = OrchestratorService(config, reactor, config_path=options.config, worker=WorkerRole(
        index=options.index, sockets=dict(options.socket), ready=ready,
    ))
    service.log_to(WorkerLogObserver(destination, options.index), options.log_level)
    assert isinstance(service.log_observer, FilteringLogObserver)
    globalLogBeginner.beginLoggingTo([service.log_observer], redirectStandardIO=False)

    def supervisor_gone() -> None:
        _log.warn("Supervisor gone: worker {worker} stops", worker=options.index)
        try:
            reactor.stop()
        except ReactorNotRunning:
            pass  # already stopping

    def start() -> None:
        # Ctrl-C at a terminal reaches the whole process group: the supervisor stops
        # this worker (SIGTERM), which would otherwise stop twice.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        service.startService()

    reactor.addReader(Lifeline(reactor, 0, supervisor_gone))
    reactor.callWhenRunning(start)
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
    reactor.run()


if __name__ == "__main__":
    main()
