"""Fixtures that run the real daemon and point real clients at it."""

from __future__ import annotations

import datetime
import os
import secrets
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator
from urllib.parse import urlsplit, urlunsplit

import attrs
import boto3
import pytest
from botocore.config import Config as BotoConfig
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from tests.integration.daemon import (
    ACCESS_KEY,
    OTHER_SECRET_KEY,
    SECRET_KEY,
    UNSYNCED,
    Daemon,
    StoreSpec,
    free_port,
    write_config,
)
from tests.integration.metadata_engines import (
    ENGINES,
    POSTGRES_DSN_VARIABLE,
    MetadataPlaces,
    PostgresServer,
    run_sql,
)
from tests.integration.rawhttp import open_upload, signed_headers

# Real upstream S3 servers (SeaweedFS, moto), shared by every integration module.
from tests.integration.upstreams import moto, seaweedfs, start_upstream  # noqa: F401

DaemonFactory = Callable[..., Daemon]
# How many free ports start_daemon tries when the one it picked was taken meanwhile.
PORT_ATTEMPTS = 3
@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """This run's database on the PostgreSQL server of S3O_TEST_POSTGRES_DSN (dropped at
    the end); skips, saying so, when the variable is unset or psycopg is missing."""
    dsn = os.environ.get(POSTGRES_DSN_VARIABLE)
    if not dsn:
        pytest.skip(f"PostgreSQL variant: needs {POSTGRES_DSN_VARIABLE} "
                    "(e.g. postgresql://postgres@127.0.0.1:5432/postgres; .ci/run sets it)")
    pytest.importorskip("psycopg", reason="PostgreSQL variant: needs psycopg 3 (the test extra)")
    server = PostgresServer(dsn)
    server.open()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="module", params=ENGINES)
def metadata_engine(request: pytest.FixtureRequest) -> str:
    """The metadata engine of every daemon a test starts: each test that starts one runs
    once per engine ("sqlite", "postgres"; module-scoped so that a module's shared daemon
    is parametrized too)."""
    if request.param == "postgres":
        request.getfixturevalue("postgres_server")  # skips without a server
    return str(request.param)


def metadata_places(engine: str, request: pytest.FixtureRequest) -> MetadataPlaces:
    """Metadata places on ``engine`` (for fixtures of a wider scope than a test; close them)."""
    return MetadataPlaces(engine, request.getfixturevalue("postgres_server") if engine == "postgres" else None)


@pytest.fixture
def metadata(metadata_engine: str, request: pytest.FixtureRequest) -> Iterator[MetadataPlaces]:
    """Where the test's daemons keep their metadata (``metadata.url(directory)`` is their
    ``[metadata] url``, None for SQLite); PostgreSQL schemas are dropped after the test."""
    places = metadata_places(metadata_engine, request)
    try:
        yield places
    finally:
        places.close()


@contextmanager
def daemons_under(root: Path, metadata: MetadataPlaces) -> Iterator[DaemonFactory]:
    """Start daemons in directories under ``root``, their metadata in ``metadata``
    (unless ``metadata_url`` says where); every one is stopped at the end, and its log
    checked for secrets."""
    started: list[Daemon] = []

    def start(
        stores=(StoreSpec("local-a", 1024**3), StoreSpec("local-b", 2 * 1024**3)),
        routing_strategy: str = "pack",
        max_object_size: int = 5 * 1024**3,
        tls: tuple[Path, Path] | None = None,
        health: tuple[float, int] | None = None,
        client_timeout: float = 300,
        multipart: tuple[float, float] | None = None,
        extra_toml: str = "",
        server_toml: str = "",
        metadata_url: str | None = None,
        metadata_toml: str = "",
    ) -> Daemon:
        directory = root / f"daemon{len(started)}"
        directory.mkdir()
        for attempt in range(1, PORT_ATTEMPTS + 1):
            port = free_port()
            config = write_config(directory, port, stores, routing_strategy, max_object_size, tls, health,
                                  client_timeout, multipart, extra_toml=extra_toml, server_toml=server_toml,
                                  metadata_url=metadata_url or metadata.url(directory), metadata_toml=metadata_toml)
            daemon = Daemon(directory, config, port, "https" if tls else "http", wrapper=UNSYNCED)
            try:
                daemon.start()
            except RuntimeError:
                # Another process (a parallel test, a client's outgoing connection) took the
                # free port before the daemon bound it: a new port; the log kept aside.
                if attempt == PORT_ATTEMPTS or f"127.0.0.1:{port}: [Errno 98]" not in daemon.log():
                    raise
                daemon.log_path.rename(directory / f"daemon-port-taken-{attempt}.log")
                continue
            break
        started.append(daemon)
        return daemon

    try:
        yield start
    finally:
        for daemon in started:
            daemon.stop()
    # Every integration test doubles as a check that no secret reaches a log.
    for daemon in started:
        leaked = [name for name, secret in LOGGED_NEVER.items() if secret in daemon.log()]
        assert not leaked, f"{daemon.log_path} shows {', '.join(leaked)}"


@pytest.fixture
def start_daemon(tmp_path: Path, metadata: MetadataPlaces) -> Iterator[DaemonFactory]:
    """Start daemons with custom stores, their metadata on the test's engine (unless
    ``metadata_url`` says where); every one is stopped after the test."""
    with daemons_under(tmp_path, metadata) as start:
        yield start


@contextmanager
def shared_daemons(request: pytest.FixtureRequest, name: str) -> Iterator[DaemonFactory]:
    """For a fixture wider than a test (module-scoped): start daemons on the metadata
    engine of the tests that use it, in a directory named after ``name``; they are stopped
    and their metadata dropped when the fixture ends (make test keeps a module's tests on
    one xdist worker: --dist loadfile)."""
    places = metadata_places(request.getfixturevalue("metadata_engine"), request)
    try:
        with daemons_under(request.getfixturevalue("tmp_path_factory").mktemp(name), places) as start:
            yield start
    finally:
        places.close()


@pytest.fixture(scope="module")
def module_daemon(metadata_engine: str, request: pytest.FixtureRequest) -> Iterator[Daemon]:
    """A daemon as ``daemon``'s, shared by the tests of a module (on each engine): for
    tests that use keys of their own and look at nothing else (no store usage, no store
    files, no log), so that the module starts one daemon instead of one per test. A
    module opts in by making its ``daemon`` this one."""
    with shared_daemons(request, "module") as start:
        yield start()


# What no daemon log may ever show: the configured secrets, and a request's signature.
LOGGED_NEVER = {"a bucket secret": SECRET_KEY, "the other bucket's secret": OTHER_SECRET_KEY,
                "a signature": "Signature="}


@pytest.fixture
def daemon(start_daemon: DaemonFactory) -> Daemon:
    """A daemon with two directory stores (1 GiB and 2 GiB), pack routing."""
    return start_daemon()


def make_client(daemon: Daemon, access_key: str = ACCESS_KEY, secret_key: str = SECRET_KEY, **config):
    """A boto3 S3 client configured as the user guide says (TLS certificates are not checked)."""
    return boto3.client(
        "s3",
        endpoint_url=daemon.endpoint,
        verify=False,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        region_name="us-east-1",
        config=BotoConfig(retries={"max_attempts": 1}, **config),
    )


@pytest.fixture
def s3(daemon: Daemon):
    """A boto3 client for the default daemon's app1-files bucket."""
    return make_client(daemon)


def metadata_rows(daemon: Daemon, sql: str, *args) -> list[tuple]:
    """Rows from the daemon's metadata, SQLite or PostgreSQL (read-only, while it runs);
    ``stores`` has each store's ``used_bytes`` and ``object_count`` (summed from
    ``store_usage``, see metadata_engines.run_sql)."""
    return run_sql(daemon.config, sql, args)


def metadata_execute(daemon: Daemon, sql: str, *args) -> None:
    """Change the daemon's metadata behind its back (one statement, committed)."""
    run_sql(daemon.config, sql, args, write=True)


def store_files(daemon: Daemon, store: str) -> list[Path]:
    """Every file under a directory store's root (objects and temp files), but the health
    probe's short-lived ``probe-*`` files."""
    root = daemon.directory / "stores" / store
    if not root.exists():
        return []
    return sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith("probe-"))


def aws_env(daemon: Daemon, home: Path) -> dict[str, str]:
    """Environment for the aws cli: credentials as the guide's profile, no stray config."""
    return dict(
        os.environ,
        HOME=str(home),
        AWS_ACCESS_KEY_ID=ACCESS_KEY,
        AWS_SECRET_ACCESS_KEY=SECRET_KEY,
        AWS_DEFAULT_REGION="us-east-1",
        AWS_CONFIG_FILE=str(home / "aws-config"),
        AWS_SHARED_CREDENTIALS_FILE=str(home / "aws-credentials"),
    )


def require_client(executable: str, package: str) -> None:
    """Fail (never skip) when a client the product promises to support is missing."""
    if not (os.path.exists(executable) or shutil.which(executable)):
        pytest.fail(f"{executable} is not installed: make test installs it (Debian package {package})", pytrace=False)


# The PyPI aws cli (v1, in the venv) and Debian's (v2, which make test installs).
AWS_CLIS = {
    "v1": os.path.join(os.path.dirname(sys.executable), "aws"),
    "v2": "/usr/bin/aws",
}


def aws_cli(version: str, daemon: Daemon, workdir: Path) -> Callable[..., str]:
    """A runner for ``aws --endpoint-url DAEMON ARGS`` (the guide's s3o alias) returning stdout.

    A missing cli or a failing command fails the test.
    """
    executable = AWS_CLIS[version]
    require_client(executable, "awscli" if version == "v2" else "awscli from PyPI, in the venv")
    home = workdir / f"home-{version}"
    home.mkdir(exist_ok=True)
    env = aws_env(daemon, home)

    def run(*args: str) -> str:
        result = subprocess.run(
            [executable, "--endpoint-url", daemon.endpoint, *args],
            env=env, cwd=workdir, capture_output=True, text=True, timeout=300,
        )
        assert result.returncode == 0, f"aws {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
        return result.stdout

    return run


def s3cmd_runner(daemon: Daemon, workdir: Path) -> Callable[..., str]:
    """Run ``s3cmd -c CONFIG ARGS`` against ``daemon`` (path-style, plain HTTP) and return stdout."""
    require_client("s3cmd", "s3cmd")
    config = workdir / "s3cmd.cfg"
    host = daemon.endpoint.removeprefix("http://")
    config.write_text(
        f"[default]\naccess_key = {ACCESS_KEY}\nsecret_key = {SECRET_KEY}\nhost_base = {host}\n"
        f"host_bucket = {host}\nuse_https = False\nsignature_v2 = False\nbucket_location = us-east-1\n"
    )
    env = dict(os.environ, HOME=str(workdir))

    def run(*args: str) -> str:
        result = subprocess.run(["s3cmd", "-c", str(config), *args], env=env, cwd=workdir,
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, f"s3cmd {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
        return result.stdout

    return run


def rclone_runner(daemon: Daemon, workdir: Path):
    """Run ``rclone --config CONFIG ARGS`` with an ``orchestrator`` remote for ``daemon``;
    returns stdout and stderr (where ``rclone check`` reports)."""
    require_client("rclone", "rclone")
    config = workdir / "rclone.conf"
    config.write_text(
        "[orchestrator]\ntype = s3\nprovider = Other\n"
        f"access_key_id = {ACCESS_KEY}\nsecret_access_key = {SECRET_KEY}\n"
        f"endpoint = {daemon.endpoint}\nregion = us-east-1\n"
    )
    # rclone reads AWS_* variables too (AWS_CA_BUNDLE breaks it on plain HTTP): only its config counts.
    env = {name: value for name, value in os.environ.items() if not name.startswith("AWS_")}

    def rclone(*args: str) -> str:
        result = subprocess.run(["rclone", "--config", str(config), *args], env=env, cwd=workdir,
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, f"rclone {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
        return result.stdout + result.stderr

    return rclone


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll ``condition`` until it holds (True) or ``timeout`` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def sigkill_mid_put(daemon: Daemon, key: str, size: int, intents: list[tuple[str, str]]) -> None:
    """Start a PUT of ``size`` bytes to ``key`` sending 1 MiB at a time, slowly, and SIGKILL
    the daemon once its write intents are ``intents`` (sorted (key, store) rows): long before
    the last byte."""
    path, headers = signed_headers(daemon, "PUT", key, headers={"Content-Length": str(size)}, unsigned_payload=True)
    sock = open_upload(daemon, path, headers)
    try:
        for _ in range(8):
            sock.sendall(os.urandom(1024 * 1024))
            time.sleep(0.05)
        assert wait_for(lambda: sorted(metadata_rows(daemon, "SELECT key, store FROM intents")) == intents)
        assert daemon.process is not None
        daemon.process.kill()
        daemon.process.wait()
    finally:
        sock.close()


@pytest.fixture
def tls_files(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (key, cert) as PEM files."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256())
    )
    key_path, cert_path = tmp_path / "key.pem", tmp_path / "cert.pem"
    key_path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


@attrs.frozen
class PostgresDatabase:
    """A database made for one test, owned by a role of its own with a password."""

    url: str  # without the password (libpq takes it from PGPASSWORD)
    password: str

    @property
    def url_with_password(self) -> str:
        parts = urlsplit(self.url)
        return urlunsplit(parts._replace(netloc=f"{parts.username}:{self.password}@{parts.hostname}:{parts.port}"))


@pytest.fixture
def postgres_url(postgres_database: PostgresDatabase) -> tuple[str, str]:
    """(URL of a fresh database owned by a fresh role, with its password; that password)."""
    return postgres_database.url_with_password, postgres_database.password


@pytest.fixture
def postgres_database(metadata_engine: str) -> Iterator[PostgresDatabase]:
    """A fresh database and owner role (dropped after the test); skips, saying so, without
    S3O_TEST_POSTGRES_DSN (a role that may create roles and databases) or psycopg, and
    in the SQLite variant of a test (it brings its own PostgreSQL database)."""
    if metadata_engine == "sqlite":
        pytest.skip("brings its own PostgreSQL database and role: runs as the postgres variant only")
    dsn = os.environ.get("S3O_TEST_POSTGRES_DSN")
    if not dsn:
        pytest.skip("PostgreSQL tests need S3O_TEST_POSTGRES_DSN (e.g. postgresql://postgres@127.0.0.1:5432/postgres)")
    psycopg = pytest.importorskip("psycopg", reason="PostgreSQL tests need psycopg 3")
    name, password = f"s3o_it_{secrets.token_hex(5)}", f"pw{secrets.token_hex(8)}"
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {name} LOGIN PASSWORD '{password}'")
        try:  # a locale whose order is not bytewise, so that the listing shows COLLATE "C" at work
            admin.execute(f"CREATE DATABASE {name} OWNER {name} LOCALE_PROVIDER icu ICU_LOCALE 'en-US'"
                          " LOCALE 'C.UTF-8' TEMPLATE template0")
        except psycopg.Error:
            admin.execute(f"CREATE DATABASE {name} OWNER {name}")
    server = urlsplit(dsn)
    try:
        yield PostgresDatabase(
            urlunsplit(server._replace(netloc=f"{name}@{server.hostname}:{server.port or 5432}", path=f"/{name}")),
            password,
        )
    finally:
        with psycopg.connect(dsn, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            admin.execute(f"DROP ROLE IF EXISTS {name}")
