"""Start the real daemon (twistd s3orchestrator) on a free loopback port, for tests and benchmarks."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Mapping, Sequence

import attrs

REPO = Path(__file__).resolve().parents[2]
BUCKET = "app1-files"
ACCESS_KEY = "AKID_APP1_WRITER"
SECRET_KEY = "wJalrXUtnFEMI/K7MDENG+bPxRfiTESTSECRET"
OTHER_BUCKET = "app2-files"
OTHER_ACCESS_KEY = "AKID_APP2_WRITER"
OTHER_SECRET_KEY = "app2-secret-for-tests-only"
# What test daemons run under: eatmydata turns fsync into a no-op, so that a test does not
# wait for the disk at every write (the daemon still makes its fsync calls; a process that
# is killed loses nothing the kernel holds). Benchmarks, and the durability test that
# watches the fsync calls, run without it; make test installs it (tests/tools/install-clients).
UNSYNCED: tuple[str, ...] = ("eatmydata",) if shutil.which("eatmydata") else ()


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@attrs.frozen
class StoreSpec:
    """A store for a test daemon: a directory store, or an s3 store when ``s3`` holds
    its keys (endpoint, bucket, access_key_id, secret_access_key, ...); ``settings``:
    keys of any store type (monthly caps, zone, ...)."""

    name: str
    quota_bytes: int = 0
    s3: Mapping[str, object] | None = None
    settings: Mapping[str, object] = attrs.field(factory=dict)


def write_config(
    directory: Path,
    port: int,
    stores: Sequence[StoreSpec],
    routing_strategy: str = "pack",
    max_object_size: int = 5 * 1024**3,
    tls: tuple[Path, Path] | None = None,
    health: tuple[float, int] | None = None,
    client_timeout: float = 300,
    multipart: tuple[float, float] | None = None,
    extra_toml: str = "",
    server_toml: str = "",
    metadata_busy_timeout: float | None = None,
    metadata_url: str | None = None,
    metadata_unavailable_after: float | None = None,
    metadata_toml: str = "",
) -> Path:
    """A config file for a daemon with two buckets and the given directory stores.

    ``tls`` is a (private key, certificate) pair of PEM files to listen with TLS;
    ``health`` is (interval seconds, unhealthy_after) for the health-check job;
    ``client_timeout`` is server.timeout (idle client connections are dropped);
    ``multipart`` is (expire_after, expiry_check_interval) seconds for abandoned uploads;
    ``extra_toml`` is appended to the file as written (tables such as ``[manhole]``);
    ``server_toml`` is added to the ``[server]`` table as written (``metadata_toml``,
    to ``[metadata]``);
    ``metadata_busy_timeout`` sets metadata.busy_timeout (``metadata_unavailable_after``,
    metadata.unavailable_after); ``metadata_url`` puts the
    metadata in that PostgreSQL database instead of a SQLite file.
    """
    if tls is None:
        listen = f"tcp:{port}:interface=127.0.0.1"
    else:
        listen = f"ssl:{port}:interface=127.0.0.1:privateKey={tls[0]}:certKey={tls[1]}"
    lines = [
        f'routing_strategy = "{routing_strategy}"',
        "[server]",
        f'listen = "{listen}"',
        f"max_object_size = {max_object_size}",
        f"timeout = {client_timeout}",
        server_toml,
        "[metadata]",
        f'sqlite = "{directory / "metadata.sqlite"}"' if metadata_url is None else f'url = "{metadata_url}"',
        metadata_toml,
    ]
    if metadata_busy_timeout is not None:
        lines.append(f"busy_timeout = {metadata_busy_timeout}")
    if metadata_unavailable_after is not None:
        lines.append(f"unavailable_after = {metadata_unavailable_after}")
    if health is not None:
        lines += ["[health]", f"interval = {health[0]}", f"unhealthy_after = {health[1]}"]
    if multipart is not None:
        lines += ["[multipart]", f"expire_after = {multipart[0]}", f"expiry_check_interval = {multipart[1]}"]
    for bucket, key, secret in (
        (BUCKET, ACCESS_KEY, SECRET_KEY),
        (OTHER_BUCKET, OTHER_ACCESS_KEY, OTHER_SECRET_KEY),
    ):
        lines += [
            "[[buckets]]",
            f'name = "{bucket}"',
            "[[buckets.credentials]]",
            f'access_key_id = "{key}"',
            f'secret_access_key = "{secret}"',
        ]
    for store in stores:
        lines += ["[[stores]]", f'name = "{store.name}"', f"quota_bytes = {store.quota_bytes}"]
        if store.s3 is None:
            lines += ['type = "directory"', f'path = "{directory / "stores" / store.name}"']
        else:
            lines.append('type = "s3"')
            lines += [f"{key} = {_toml_value(value)}" for key, value in store.s3.items()]
        lines += [f"{key} = {_toml_value(value)}" for key, value in store.settings.items()]
    path = directory / "s3orchestrator.toml"
    path.write_text("\n".join(lines) + "\n" + (extra_toml.rstrip("\n") + "\n" if extra_toml else ""))
    return path


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


class Daemon:
    """A running ``twistd -n s3orchestrator`` process."""

    def __init__(
        self,
        directory: Path,
        config: Path,
        port: int,
        scheme: str = "http",
        code: Path = REPO,
        wrapper: Sequence[str] = (),
    ) -> None:
        self.directory = directory
        # A command the daemon runs under (strace -f ...), before twistd's.
        self.wrapper = tuple(wrapper)
        # Where the daemon imports s3orchestrator from (benchmarks compare two checkouts).
        self.code = code
        self.config = config
        self.port = port
        self.endpoint = f"{scheme}://127.0.0.1:{port}"
        self.log_path = directory / "daemon.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20.0) -> None:
        """Start the daemon and wait until it listens."""
        env = dict(os.environ, PYTHONPATH=str(self.code))
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [*self.wrapper, os.path.join(os.path.dirname(sys.executable), "twistd"), "--nodaemon", "--pidfile=",
             "s3orchestrator", "--config", str(self.config)],
            cwd=self.directory,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"daemon exited with {self.process.returncode}:\n{self.log()}")
            # The log line, not just an open port: another process could own the port.
            if "s3orchestrator listening on" in self.log():
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"daemon did not listen within {timeout}s:\n{self.log()}")

    def stop(self) -> None:
        """Stop the daemon (SIGTERM, then SIGKILL if it lingers)."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def log(self) -> str:
        """Everything the daemon logged so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
