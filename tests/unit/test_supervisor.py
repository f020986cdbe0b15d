"""The supervisor daemon: the workers' command lines, and SIGHUP passed on."""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path

import attrs
import pytest
from twisted.internet.defer import ensureDeferred

from s3orchestrator.config import load_config
from s3orchestrator.listeners import S3, HeldSocket, ReusePortSockets, TCPAddress, parse_socket_argument
from s3orchestrator.ops.banner import ADMIN, MANHOLE, METRICS
from s3orchestrator.workers.supervisor import SupervisorService
from tests.unit.fake_processes import FakeProcessReactor

CONFIG = """
[server]
listen = "tcp:9000:interface=127.0.0.1"
workers = 2
[metadata]
sqlite = "{directory}/metadata.sqlite"
[logging]
level = "{level}"
[[buckets]]
name = "app1-files"
[[buckets.credentials]]
access_key_id = "AKID_APP1_WRITER"
secret_access_key = "secret-for-tests"
[[stores]]
name = "local-a"
type = "directory"
path = "{directory}/a"
quota_bytes = 0
"""


@attrs.frozen
class FakeSocket:
    fd: int
    family: int

    def fileno(self) -> int:
        return self.fd


@attrs.frozen
class FakePort:
    socket: FakeSocket


def held(fd: int, family: int = socket.AF_INET) -> HeldSocket:
    return HeldSocket(FakePort(FakeSocket(fd, family)))  # type: ignore[arg-type]


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    path = tmp_path / "s3orchestrator.toml"
    path.write_text(CONFIG.format(directory=tmp_path, level="info"))
    return path


def supervisor(config_path: Path, twistd_options: dict | None = None) -> tuple[SupervisorService, FakeProcessReactor]:
    reactor = FakeProcessReactor()
    service = SupervisorService(load_config(str(config_path)), reactor, str(config_path), twistd_options, "json")
    service._held.update({S3: held(7), ADMIN: held(8, socket.AF_UNIX), MANHOLE: held(9)})
    service._private.update({1: held(10), 2: held(11)})
    return service, reactor


def sockets_of(args: list[str]) -> dict[str, tuple[int, str]]:
    found = {}
    for flag, value in zip(args, args[1:], strict=False):
        if flag == "--socket":
            name, inherited = parse_socket_argument(value)
            found[name] = (inherited.fd, inherited.family)
    return found


def test_worker_1_gets_the_s3_admin_manhole_and_its_private_socket(config_path: Path) -> None:
    service, _ = supervisor(config_path)
    command = service.worker_command(1)
    assert command.executable == sys.executable
    assert command.args[:3] == [sys.executable, "-m", "s3orchestrator.workers.worker"]
    assert command.fds == {4: 7, 5: 8, 6: 9, 7: 10}
    assert sockets_of(list(command.args)) == {
        S3: (4, "inet"), ADMIN: (5, "unix"), MANHOLE: (6, "inet"), METRICS: (7, "inet"),
    }


def test_the_other_workers_get_the_s3_socket_and_their_private_one(config_path: Path) -> None:
    service, _ = supervisor(config_path)
    command = service.worker_command(2)
    assert command.fds == {4: 7, 5: 11}
    assert sockets_of(list(command.args)) == {S3: (4, "inet"), METRICS: (5, "inet")}


@pytest.mark.skipif(not hasattr(socket, "SO_REUSEPORT"), reason="no SO_REUSEPORT here")
def test_with_reuseport_each_worker_gets_an_s3_socket_of_its_own_let_go_when_it_keeps_exiting(
    config_path: Path,
) -> None:
    service, _ = supervisor(config_path)
    del service._held[S3]
    service._s3_sockets = sockets = ReusePortSockets(TCPAddress(socket.AF_INET, "127.0.0.1", 0, 50))
    try:
        first, second = service.worker_command(1), service.worker_command(2)
        assert sockets_of(list(first.args))[S3] == (4, "inet") == sockets_of(list(second.args))[S3]
        assert first.fds[4] != second.fds[4]
        assert service.worker_command(2).fds[4] == second.fds[4]
        service._worker_exited(2, 1.0)  # restarted at once: its socket is kept meanwhile
        assert service.worker_command(2).fds[4] == second.fds[4]
        service._worker_exited(2, 2.0)  # exiting again: let go until it starts
        assert 2 not in sockets._sockets
        rebound = service.worker_command(2).fds[4]
        with socket.socket(fileno=socket.dup(rebound)) as sock:
            assert sock.getsockname() == ("127.0.0.1", sockets.port)
    finally:
        sockets.close()


def test_workers_log_in_the_supervisors_format_and_level_where_it_logs(config_path: Path) -> None:
    service, _ = supervisor(config_path, {"logfile": "/var/log/s3o.log"})
    service.log_to(lambda event: None, "warn")
    args = list(service.worker_command(2).args)
    assert args[args.index("--log-format") + 1] == "json"
    assert args[args.index("--log-level") + 1] == "warn"
    assert args[args.index("--logfile") + 1] == "/var/log/s3o.log.worker2"
    assert args[args.index("--config") + 1] == str(config_path)
    assert args[args.index("--index") + 1] == "2"


def start_workers(service: SupervisorService, reactor: FakeProcessReactor) -> None:
    service.pool.startService()
    for process in reactor.processes:
        process.write_ready()


def test_a_reload_passes_sighup_on_to_every_worker(config_path: Path, tmp_path: Path) -> None:
    service, reactor = supervisor(config_path)
    service.log_to(lambda event: None, "info")
    start_workers(service, reactor)
    config_path.write_text(CONFIG.format(directory=tmp_path, level="debug"))
    assert service.reload() is True
    assert [process.signals for process in reactor.processes] == [["HUP"], ["HUP"]]
    # Workers started from now on log at the new level.
    args = list(service.worker_command(1).args)
    assert args[args.index("--log-level") + 1] == "debug"


def test_an_invalid_configuration_is_not_passed_on(config_path: Path) -> None:
    service, reactor = supervisor(config_path)
    start_workers(service, reactor)
    config_path.write_text("[server]\n")
    assert service.reload() is False
    assert [process.signals for process in reactor.processes] == [[], []]


def answer(endpoint) -> tuple[int, dict]:
    result = []
    ensureDeferred(endpoint({})).addCallback(result.append)
    return result[0].status, json.loads(result[0].body)


def test_ready_while_any_worker_serves(config_path: Path) -> None:
    service, _ = supervisor(config_path)
    ready = service.ops_endpoints()["/health/ready"]
    service.running = True
    assert answer(ready) == (503, {"ready": False, "workers_serving": 0})
    service.pool.workers[1].ready = True
    assert answer(ready) == (200, {"ready": True, "workers_serving": 1})
    service.running = False  # stopping
    assert answer(ready) == (503, {"ready": False, "workers_serving": 1})


def test_health_without_a_serving_worker_is_down(config_path: Path) -> None:
    service, _ = supervisor(config_path)
    assert answer(service.ops_endpoints()["/health"]) == (503, {"status": "down", "workers_serving": 0})
