"""The telnet manhole of a real daemon, reached over real telnet connections; and the
``s3orchestrator`` command against real daemons."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from s3orchestrator.ops.passwords import hash_password
from tests.integration.conftest import DaemonFactory, make_client
from tests.integration.daemon import BUCKET, REPO, StoreSpec, free_port, write_config

pytestmark = pytest.mark.integration

USER = "admin"
PASSWORD = "correct horse battery staple"

IAC, DONT, DO, WONT, WILL, SB, SE = 255, 254, 253, 252, 251, 250, 240
ECHO, SGA, NAWS = 1, 3, 31
_ANSI = re.compile(rb"\x1b(\[[0-9;?]*[A-Za-z]|[()][A-Za-z0-9]|[A-Za-z=>])")


class TelnetClient:
    """A minimal telnet client over a socket: answers the server's option negotiation
    (accepting echo and suppress-go-ahead from the server, offering only a window size)
    and keeps what the server printed, IAC sequences removed."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.sock.settimeout(0.2)
        self.raw = b""  # application bytes, escape sequences included
        self._pending = b""
        self._server_enabled: set[int] = set()

    @classmethod
    def tcp(cls, port: int) -> TelnetClient:
        return cls(socket.create_connection(("127.0.0.1", port), timeout=10))

    @classmethod
    def unix(cls, path: Path) -> TelnetClient:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(str(path))
        return cls(sock)

    def __enter__(self) -> TelnetClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def text(self) -> str:
        """What the server printed, without terminal escape sequences."""
        return _ANSI.sub(b"", self.raw).replace(b"\r", b"").decode("utf-8", "replace")

    def send_line(self, line: str) -> None:
        self.sock.sendall(line.encode("utf-8").replace(b"\xff", b"\xff\xff") + b"\r\n")

    def read_until(self, predicate, timeout: float = 15.0) -> str:
        """Read until ``predicate(text)`` holds; the text so far. Fails on timeout or EOF."""
        deadline = time.monotonic() + timeout
        while not predicate(self.text):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out; the server printed:\n{self.text}")
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            if not data:
                raise ConnectionError(f"the server closed the connection; it printed:\n{self.text}")
            self._feed(data)
        return self.text

    def read_until_closed(self, timeout: float = 15.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except ConnectionResetError:
                return self.text
            if not data:
                return self.text
            self._feed(data)
        raise AssertionError(f"the server did not close the connection; it printed:\n{self.text}")

    def login(self, user: str = USER, password: str = PASSWORD) -> str:
        """Answer the prompts; what the server printed after the password (a banner and
        a prompt, or the refusal)."""
        self.read_until(lambda text: text.endswith("Username: "))
        self.send_line(user)
        self.read_until(lambda text: text.endswith("Password: "))
        start = len(self.text)
        self.send_line(password)
        return self.read_until(
            lambda text: _prompt_after(text[start:]) or "Authentication failed" in text[start:])[start:]

    def command(self, line: str, done) -> str:
        """Send a line of Python; the output that follows it, once ``done(output)`` holds."""
        start = len(self.text)
        self.send_line(line)
        return self.read_until(lambda text: done(text[start:]))[start:]

    def close(self) -> None:
        self.sock.close()

    def _feed(self, data: bytes) -> None:
        data = self._pending + data
        self._pending = b""
        out = bytearray()
        i = 0
        while i < len(data):
            byte = data[i]
            if byte != IAC:
                out.append(byte)
                i += 1
                continue
            if i + 1 >= len(data):
                self._pending = data[i:]
                break
            command = data[i + 1]
            if command == IAC:
                out.append(IAC)
                i += 2
            elif command in (WILL, WONT, DO, DONT):
                if i + 2 >= len(data):
                    self._pending = data[i:]
                    break
                self._negotiate(command, data[i + 2])
                i += 3
            elif command == SB:
                end = data.find(bytes([IAC, SE]), i)
                if end < 0:
                    self._pending = data[i:]
                    break
                i = end + 2
            else:
                i += 2
        self.raw += bytes(out)

    def _negotiate(self, command: int, option: int) -> None:
        if command == WILL:
            if option in (ECHO, SGA):
                if option not in self._server_enabled:
                    self._server_enabled.add(option)
                    self.sock.sendall(bytes([IAC, DO, option]))
            else:
                self.sock.sendall(bytes([IAC, DONT, option]))
        elif command == WONT:
            if option in self._server_enabled:
                self._server_enabled.discard(option)
                self.sock.sendall(bytes([IAC, DONT, option]))
        elif command == DO:
            if option == NAWS:
                self.sock.sendall(bytes([IAC, WILL, NAWS, IAC, SB, NAWS, 0, 120, 0, 40, IAC, SE]))
            else:
                self.sock.sendall(bytes([IAC, WONT, option]))
        elif command == DONT:
            self.sock.sendall(bytes([IAC, WONT, option]))


def _prompt_after(text: str) -> bool:
    return text.rstrip(" ").endswith(">>>")


def password_file(directory: Path, password: str = PASSWORD) -> Path:
    path = directory / "manhole.passwd"
    path.write_text(f"# manhole users\n{USER}:{hash_password(password)}\n")
    path.chmod(0o600)
    return path


def manhole_toml(listen: str, passwords: Path) -> str:
    return f'[manhole]\nlisten = "{listen}"\npassword_file = "{passwords}"\n'


@pytest.fixture
def manhole(start_daemon: DaemonFactory, tmp_path: Path):
    """A daemon with a manhole on a loopback port: (daemon, port)."""
    port = free_port()
    daemon = start_daemon(extra_toml=manhole_toml(f"tcp:{port}:interface=127.0.0.1", password_file(tmp_path)))
    return daemon, port


def wait_for_log(daemon, text: str, timeout: float = 10.0) -> None:
    """Wait until the daemon has logged ``text``."""
    deadline = time.monotonic() + timeout
    while text not in daemon.log():
        assert time.monotonic() < deadline, f"the daemon did not log {text!r}:\n{daemon.log()}"
        time.sleep(0.05)


def store_row(output: str, store: str) -> list[str]:
    for line in output.splitlines():
        if line.startswith(store + " "):
            return line.split()
    raise AssertionError(f"no row for store {store} in:\n{output}")


def test_status_over_telnet_shows_every_store(manhole):
    daemon, port = manhole
    make_client(daemon).put_object(Bucket=BUCKET, Key="a.bin", Body=b"x" * 2048)
    with TelnetClient.tcp(port) as client:
        banner = client.login()
        assert "s3orchestrator manhole" in banner
        output = client.command("status()", lambda out: "local-b" in out and _prompt_after(out))
    assert "status: ok, 2 stores, 0 multipart uploads in progress" in output
    # STORE HEALTH USED RESERVED QUOTA COPIES LIVE CLEANUP UPLOADS, sizes as "2.0 KiB (0%)", "1.0 GiB"
    assert store_row(output, "local-a") == ["local-a", "up", "2.0", "KiB", "(0%)", "0", "B", "1.0", "GiB", "1",
                                            "2.0", "KiB", "0", "0"]
    assert store_row(output, "local-b") == ["local-b", "up", "0", "B", "(0%)", "0", "B", "2.0", "GiB", "0",
                                            "0", "B", "0", "0"]


def test_uploads_lists_a_multipart_upload_in_progress(manhole):
    daemon, port = manhole
    upload_id = make_client(daemon).create_multipart_upload(Bucket=BUCKET, Key="big/file.bin")["UploadId"]
    with TelnetClient.tcp(port) as client:
        client.login()
        output = client.command("uploads()", lambda out: "(oldest first)" in out and _prompt_after(out))
    row = store_row(output, f"{BUCKET}/big/file.bin")
    assert row[1:3] == [upload_id, "local-a"]
    assert "1 upload (oldest first)" in output


def test_run_job_runs_the_multipart_expiry_now(manhole):
    _, port = manhole
    with TelnetClient.tcp(port) as client:
        client.login()
        output = client.command('run_job("multipart_expiry")',
                                lambda out: "multipart_expiry: done" in out and _prompt_after(out))
        unknown = client.command('run_job("nope")', _prompt_after)
    assert "running multipart_expiry..." in output
    assert "aborted 0 multipart uploads older than 1d 0h" in output
    assert "no job named 'nope'; jobs: cleanup, health_checks, mover, multipart_expiry, reaper, rebalance" in unknown


def test_namespace_holds_the_service_objects(manhole):
    _, port = manhole
    with TelnetClient.tcp(port) as client:
        client.login()
        output = client.command("sorted(stores), sorted(jobs), config.routing_strategy, service.ready",
                                _prompt_after)
    jobs = ("['cleanup', 'health_checks', 'mover', 'multipart_expiry', 'reaper', 'rebalance', 'replicator',"
            " 'scrub', 'traffic_sync']")
    assert f"(['local-a', 'local-b'], {jobs}, 'pack', True)" in output


def test_wrong_password_is_refused_and_logged(manhole):
    daemon, port = manhole
    with TelnetClient.tcp(port) as client:
        answer = client.login(password="not the password")
        assert "Authentication failed" in answer
        client.read_until(lambda text: text.endswith("Username: "))
    wait_for_log(daemon, "Manhole login failed")
    failed = [line for line in daemon.log().splitlines() if "Manhole login failed" in line]
    assert len(failed) == 1
    assert "user admin from 127.0.0.1:" in failed[0] and "wrong password" in failed[0]
    assert "not the password" not in daemon.log()


def test_three_wrong_passwords_close_the_connection(manhole):
    _, port = manhole
    with TelnetClient.tcp(port) as client:
        for _ in range(2):
            assert "Authentication failed" in client.login(password="wrong")
        client.read_until(lambda text: text.endswith("Username: "))
        client.send_line(USER)
        client.read_until(lambda text: text.endswith("Password: "))
        client.send_line("wrong again")
        assert "Authentication failed; closing." in client.read_until_closed()


def test_changed_password_file_takes_effect_without_restart(start_daemon, tmp_path):
    port = free_port()
    passwords = password_file(tmp_path, "first password")
    start_daemon(extra_toml=manhole_toml(f"tcp:{port}:interface=127.0.0.1", passwords))
    password_file(tmp_path, "second password")
    with TelnetClient.tcp(port) as client:
        assert "Authentication failed" in client.login(password="first password")
        assert _prompt_after(client.login(password="second password"))


def test_unix_socket_manhole_is_made_with_mode_0600_and_logs_the_peer_process(start_daemon, tmp_path):
    path = tmp_path / "manhole.sock"
    daemon = start_daemon(extra_toml=manhole_toml(f"unix:{path}", password_file(tmp_path)))
    assert stat.S_ISSOCK(path.stat().st_mode)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with TelnetClient.unix(path) as client:
        client.login()
        output = client.command("status()", lambda out: "local-b" in out and _prompt_after(out))
    assert store_row(output, "local-a")[1] == "up"
    wait_for_log(daemon, f"Manhole login: user admin from unix:pid={os.getpid()},uid={os.getuid()}")


def _twistd(config: Path, cwd: Path) -> subprocess.CompletedProcess:
    twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
    return subprocess.run(
        [twistd, "--nodaemon", "--pidfile=", "s3orchestrator", "--config", str(config)],
        cwd=cwd, env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True, text=True, timeout=60,
    )


def _cli(*args: str, env: dict[str, str] | None = None, input: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "s3orchestrator.cli", *args], cwd=REPO, input=input,
        env=dict(os.environ if env is None else env, PYTHONPATH=str(REPO)), capture_output=True, text=True,
        timeout=60,
    )


def test_non_loopback_manhole_is_refused_at_start_and_by_check_config(tmp_path):
    config = write_config(tmp_path, free_port(), [StoreSpec("local-a", 100)], extra_toml=manhole_toml(
        f"tcp:{free_port()}:interface=0.0.0.0", password_file(tmp_path)))
    result = _twistd(config, tmp_path)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(
        "s3orchestrator: invalid configuration: manhole.listen: must listen on loopback only")
    checked = _cli("check-config", str(config))
    assert checked.returncode == 1
    assert "manhole.listen: must listen on loopback only" in checked.stderr


def test_malformed_password_file_stops_the_start(tmp_path):
    passwords = tmp_path / "manhole.passwd"
    passwords.write_text("admin:hunter2\n")
    config = write_config(tmp_path, free_port(), [StoreSpec("local-a", 100)], extra_toml=manhole_toml(
        f"tcp:{free_port()}:interface=127.0.0.1", passwords))
    result = _twistd(config, tmp_path)
    output = result.stdout + result.stderr
    assert "s3orchestrator listening on" not in output
    assert f"manhole.password_file: {passwords}: line 1: not a pbkdf2_sha256 hash" in output
    assert "hunter2" not in output


# -- s3orchestrator status against a daemon's admin API -------------------------------------------

ADMIN_TOKEN = "admin-token-for-tests-only"
_ADMIN_API = importlib.util.find_spec("s3orchestrator.ops.admin") is not None


@pytest.mark.skipif(not _ADMIN_API, reason="the admin API (s3orchestrator/ops/admin.py) is not there yet")
def test_status_command_reads_the_admin_endpoint(start_daemon):
    admin_port = free_port()
    daemon = start_daemon(
        extra_toml=f'[admin]\nlisten = "tcp:{admin_port}:interface=127.0.0.1"\ntoken = "{ADMIN_TOKEN}"\n')
    make_client(daemon).put_object(Bucket=BUCKET, Key="a.bin", Body=b"x" * 100)
    table = _cli("status", "--config", str(daemon.config))
    assert table.returncode == 0, table.stderr
    assert store_row(table.stdout, "local-a") == ["local-a", "up", "100", "B", "(0%)", "0", "B", "1.0", "GiB", "1",
                                                  "100", "B", "0", "0"]
    as_json = _cli("status", "--config", str(daemon.config), "--json")
    assert json.loads(as_json.stdout)["stores"][0]["used_bytes"] == 100
    refused = _cli("status", "--url", f"http://127.0.0.1:{admin_port}", "--token", "wrong")
    assert refused.returncode == 1
    assert "refused the token (401" in refused.stderr


def test_status_command_fails_clearly_when_the_daemon_is_unreachable():
    port = free_port()
    result = _cli("status", "--url", f"http://127.0.0.1:{port}", env=dict(os.environ, S3ORCHESTRATOR_ADMIN_TOKEN="t"))
    assert result.returncode == 1
    assert f"cannot reach the admin endpoint at http://127.0.0.1:{port}" in result.stderr
