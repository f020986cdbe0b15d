"""Real S3 servers on loopback for tests: SeaweedFS (``weed mini``) and moto's standalone server.

Both check nothing but loopback ports they picked themselves; SeaweedFS verifies
SigV4 (it has an identity with keys), moto accepts any signature.

Fixtures (import them into the test module, or into a conftest.py to share one
server per session across modules)::

    from tests.integration.upstreams import moto, seaweedfs, start_upstream  # noqa: F401

    def test_something(seaweedfs):
        config = seaweedfs.store_config("sw", bucket=seaweedfs.new_bucket())
        ...

- ``seaweedfs`` / ``moto``: one server per session (per module when imported into a
  test module), with ``bucket`` created; give each test its own bucket
  (``new_bucket()``) or key prefix. Do not stop these.
- ``start_upstream("seaweedfs" | "moto")``: a private server for a test that stops,
  restarts (``stop()`` / ``start()``: same ports, same data) or breaks it; stopped
  at teardown.

Every server exposes ``endpoint``, ``access_key``, ``secret_key``, ``region``,
``bucket``, ``client()`` (a boto3 S3 client), ``new_bucket()`` and
``store_config(name, **overrides)`` (an ``S3StoreConfig`` for it).
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import boto3
import pytest
from botocore.config import Config as BotoConfig

from s3orchestrator.config import S3StoreConfig

ACCESS_KEY = "UPSTREAMTESTKEY"
SECRET_KEY = "upstream/test+SECRET/key"
REGION = "us-east-1"
BUCKET = "upstream"
_bucket_numbers = itertools.count(1)


def executable(name: str) -> str:
    """``name`` from this interpreter's bin directory (the venv), else from PATH."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"{name} not found beside {sys.executable} nor on PATH")
    return found


def free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports on 127.0.0.1 that nobody listens on right now."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


class _ExitedEarly(RuntimeError):
    """The server process exited while starting."""


class Upstream:
    """A server process on loopback; subclasses say how to start it and when it is ready."""

    kind = ""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.access_key = ACCESS_KEY
        self.secret_key = SECRET_KEY
        self.region = REGION
        self.bucket = BUCKET
        self.port = 0
        self.log_path = directory / f"{self.kind}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.startup_seconds = 0.0
        self._client: Any = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        raise NotImplementedError

    def prepare(self) -> None:
        """Pick ports and write config files before the first start (again if that start failed)."""

    def ready(self) -> bool:
        raise NotImplementedError

    def start(self, timeout: float = 30.0) -> None:
        """Start the server (again: same ports and data) and wait until it serves S3."""
        if self.process is not None:
            self._start(timeout)
            return
        self.prepare()
        try:
            self._start(timeout)
        except _ExitedEarly:
            # Most likely a free port was taken between picking and binding: new ports, once.
            self.prepare()
            self._start(timeout)

    def _start(self, timeout: float) -> None:
        self._client = None  # the ports may have changed
        started = time.monotonic()
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.command(), cwd=self.directory, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )
        deadline = started + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise _ExitedEarly(f"{self.kind} exited with {self.process.returncode}:\n{self.log()[-4000:]}")
            if self.ready():
                self.startup_seconds = time.monotonic() - started
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.kind} did not answer within {timeout} s:\n{self.log()[-4000:]}")

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL if it lingers)."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log(self) -> str:
        """Everything the server logged so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def client(self, **config: Any) -> Any:
        """A boto3 S3 client for this server (path-style, no retries, short timeouts)."""
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
            config=BotoConfig(
                s3={"addressing_style": "path"},
                retries={"max_attempts": 1},
                connect_timeout=2,
                read_timeout=10,
                **config,
            ),
        )

    @property
    def boto(self) -> Any:
        """A cached boto3 client (``client()`` makes a new one)."""
        if self._client is None:
            self._client = self.client()
        return self._client

    def new_bucket(self, prefix: str = "t") -> str:
        """Create a fresh bucket and return its name."""
        name = f"{prefix}-{os.getpid()}-{next(_bucket_numbers)}"
        self.boto.create_bucket(Bucket=name)
        return name

    def store_config(self, name: str | None = None, **overrides: Any) -> S3StoreConfig:
        """An S3StoreConfig pointing at this server (``overrides`` replace any field)."""
        fields: dict[str, Any] = dict(
            name=name or self.kind,
            quota_bytes=0,
            endpoint=self.endpoint,
            region=self.region,
            bucket=self.bucket,
            access_key_id=self.access_key,
            secret_access_key=self.secret_key,
            path_style=True,
            timeout=10.0,
        )
        fields.update(overrides)
        return S3StoreConfig(**fields)

    def _head_bucket_ok(self) -> bool:
        try:
            return self.boto.head_bucket(Bucket=self.bucket)["ResponseMetadata"]["HTTPStatusCode"] == 200
        except Exception:
            return False


class SeaweedFS(Upstream):
    """``weed mini`` with every port on loopback, no WebDAV, no Iceberg/Lance, no telemetry."""

    kind = "seaweedfs"

    def prepare(self) -> None:
        (self.directory / "data").mkdir(exist_ok=True)
        identities = {"identities": [{
            "name": "tests",
            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }]}
        (self.directory / "s3.json").write_text(json.dumps(identities))
        # Unix sockets need a short path; pytest's tmp_path can be too long.
        if not getattr(self, "_socket_directory", None):
            self._socket_directory = tempfile.mkdtemp(prefix="weed-")
        (self.port, self.master, self.master_grpc, self.volume, self.volume_grpc, self.filer,
         self.filer_grpc, self.s3_grpc) = free_ports(8)
        # The admin server cannot be turned off, and its worker dials admin port + 10000
        # whatever -admin.port.grpc says: pick a port whose +10000 is free as well.
        for candidate in free_ports(20):
            if candidate + 10000 < 65536 and _port_is_free(candidate + 10000):
                self.admin = candidate
                break
        else:
            raise RuntimeError("no free port pair for the SeaweedFS admin server")

    def command(self) -> list[str]:
        return [
            executable("weed"), "mini",
            f"-dir={self.directory / 'data'}",
            "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-master.port={self.master}", f"-master.port.grpc={self.master_grpc}",
            "-master.telemetry=false",
            f"-volume.port={self.volume}", f"-volume.port.grpc={self.volume_grpc}",
            f"-filer.port={self.filer}", f"-filer.port.grpc={self.filer_grpc}",
            f"-filer.localSocket={self._socket_directory}/filer.sock",
            f"-s3.port={self.port}", f"-s3.port.grpc={self.s3_grpc}",
            f"-s3.localSocket={self._socket_directory}/s3.sock",
            "-s3.port.iceberg=0", "-s3.port.lance=0",
            f"-s3.config={self.directory / 's3.json'}",
            "-volume.preStopSeconds=0",
            # Every test bucket is a collection that claims several volumes; the default limit
            # (free disk space / volume size) ran out in a full run and depends on the machine.
            "-volume.max=2000", "-master.volumeSizeLimitMB=64",
            "-webdav=false",
            "-admin.ui=false", f"-admin.port={self.admin}", f"-admin.port.grpc={self.admin + 10000}",
        ]

    def ready(self) -> bool:
        # Creating the bucket ourselves once S3 answers is ~0.7 s faster than -bucket=,
        # which waits for the admin server.
        if not self._head_bucket_ok():
            try:
                self.boto.create_bucket(Bucket=self.bucket)
            except Exception as error:
                if "BucketAlreadyOwnedByYou" not in str(error):
                    return False
            if not self._head_bucket_ok():
                return False
        # Only trust it once it checks signatures (the identities are loaded).
        if self._signatures_checked:
            return True
        try:
            self.client_with_secret("wrong-secret").head_bucket(Bucket=self.bucket)
        except Exception as error:
            self._signatures_checked = "403" in str(error)
        return self._signatures_checked

    _signatures_checked = False

    def client_with_secret(self, secret: str) -> Any:
        original, self.secret_key = self.secret_key, secret
        try:
            return self.client()
        finally:
            self.secret_key = original

    def remove(self) -> None:
        """Kill the server for good (its data is thrown away: no graceful stop needed)."""
        if self.running:
            assert self.process is not None
            self.process.kill()
            self.process.wait()
        shutil.rmtree(getattr(self, "_socket_directory", ""), ignore_errors=True)


class Moto(Upstream):
    """moto's standalone server (accepts any credentials, checks no signature)."""

    kind = "moto"

    def prepare(self) -> None:
        (self.port,) = free_ports(1)

    def command(self) -> list[str]:
        return [executable("moto_server"), "-H", "127.0.0.1", "-p", str(self.port)]

    def ready(self) -> bool:
        if self._head_bucket_ok():
            return True
        try:
            self.boto.create_bucket(Bucket=self.bucket)
        except Exception:
            return False
        return self._head_bucket_ok()

    def remove(self) -> None:
        self.stop()


UPSTREAM_KINDS: dict[str, type[Upstream]] = {"seaweedfs": SeaweedFS, "moto": Moto}


def _started(kind: str, directory: Path) -> Upstream:
    server = UPSTREAM_KINDS[kind](directory)
    server.start()
    return server


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    """A SeaweedFS shared by the session (bucket ``upstream`` created); do not stop it."""
    server = _started("seaweedfs", tmp_path_factory.mktemp("seaweedfs"))
    yield server  # type: ignore[misc]
    server.remove()  # type: ignore[attr-defined]


@pytest.fixture(scope="session")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Moto]:
    """A moto server shared by the session (bucket ``upstream`` created); do not stop it."""
    server = _started("moto", tmp_path_factory.mktemp("moto"))
    yield server  # type: ignore[misc]
    server.remove()  # type: ignore[attr-defined]


@pytest.fixture
def start_upstream(tmp_path: Path) -> Iterator[Callable[[str], Upstream]]:
    """Start private servers (``"seaweedfs"`` or ``"moto"``); all are removed after the test."""
    started: list[Upstream] = []

    def start(kind: str) -> Upstream:
        server = UPSTREAM_KINDS[kind](tmp_path / f"{kind}{len(started)}")
        started.append(server)
        server.start()
        return server

    yield start
    for server in started:
        server.remove()  # type: ignore[attr-defined]
