"""Operations for several instances: a SQLite daemon's metadata migrated to PostgreSQL,
and two daemons on one PostgreSQL database behind HAProxy or nginx (etc/haproxy.cfg,
etc/nginx.conf).

The PostgreSQL tests skip, saying so, without S3O_TEST_POSTGRES_DSN; HAProxy and nginx
are among the programs ``make test`` installs (tests/tools/install-clients), so they
are required.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from boto3.s3.transfer import TransferConfig
from botocore.config import Config as BotoConfig

from tests.integration.conftest import LOGGED_NEVER, PostgresDatabase, make_client, require_client, wait_for
from tests.integration.daemon import ACCESS_KEY, BUCKET, REPO, SECRET_KEY, UNSYNCED, Daemon, free_port, write_config

pytestmark = pytest.mark.integration

HAPROXY_CONFIG = REPO / "etc" / "haproxy.cfg"
NGINX_CONFIG = REPO / "etc" / "nginx.conf"
# /usr/sbin is not on every user's PATH.
HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
# Byte order differs from most locales' order: "B" < "a" < "z" < "é" < "日本" < an emoji.
KEYS = ("a", "B", "dir/z", "\u00e9t\u00e9", "\u65e5\u672c/\u8a9e", "\U0001f600")
MiB = 1024 * 1024


def body_of(key: str, size: int = 1000) -> bytes:
    seed = hashlib.sha256(key.encode()).digest()
    return (seed * (size // len(seed) + 1))[:size]


def stores_toml(root: Path) -> str:
    """Two directory stores under ``root``: every instance of a test shares them."""
    return "".join(
        f'[[stores]]\nname = "{name}"\ntype = "directory"\npath = "{root / name}"\nquota_bytes = 0\n'
        for name in ("local-a", "local-b")
    )


@pytest.fixture
def start_instance(tmp_path: Path) -> Iterator:
    """Starts daemons on the stores under tmp_path/stores (each in a directory of its own,
    metadata in ``metadata_url`` or that directory's SQLite file); stops them after the
    test and checks that no log shows a secret."""
    started: list[Daemon] = []
    secrets: dict[str, str] = dict(LOGGED_NEVER)

    def start(name: str, metadata_url: str | None = None, password: str | None = None) -> Daemon:
        directory = tmp_path / name
        directory.mkdir()
        port = free_port()
        config = write_config(directory, port, (), metadata_url=metadata_url,
                              extra_toml=stores_toml(tmp_path / "stores"))
        daemon = Daemon(directory, config, port, wrapper=UNSYNCED)
        started.append(daemon)
        if password is not None:
            secrets["the database password"] = password
        daemon.start()
        return daemon

    yield start
    for daemon in started:
        daemon.stop()
    for daemon in started:
        leaked = [name for name, secret in secrets.items() if secret in daemon.log()]
        assert not leaked, f"{daemon.log_path} shows {', '.join(leaked)}"


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "s3orchestrator.cli", *args, "--env-file", "/nonexistent"],
                          cwd=REPO, env=dict(env, PYTHONPATH=str(REPO)), capture_output=True, text=True, timeout=300)


def listed_keys(s3) -> list[str]:
    return [entry["Key"] for entry in s3.list_objects_v2(Bucket=BUCKET)["Contents"]]


# -- SQLite to PostgreSQL ------------------------------------------------------------------


def test_a_sqlite_daemons_metadata_migrated_to_postgresql_serves_the_same_objects(
    start_instance, postgres_database: PostgresDatabase, monkeypatch
) -> None:
    before = start_instance("sqlite")
    s3 = make_client(before)
    for key in KEYS:
        s3.put_object(Bucket=BUCKET, Key=key, Body=body_of(key))
    s3.delete_object(Bucket=BUCKET, Key="dir/z")
    upload = s3.create_multipart_upload(Bucket=BUCKET, Key="big/\u00fcpload")["UploadId"]
    first = s3.upload_part(Bucket=BUCKET, Key="big/\u00fcpload", UploadId=upload, PartNumber=1,
                           Body=body_of("part1", 5 * MiB))["ETag"]
    before.stop()

    # The password as the README says: PGPASSWORD, never on the command line.
    monkeypatch.setenv("PGPASSWORD", postgres_database.password)
    migrated = cli("migrate-metadata", "--from", f"sqlite:{before.directory / 'metadata.sqlite'}",
                   "--to", postgres_database.url, env=dict(os.environ))
    assert migrated.returncode == 0, migrated.stdout + migrated.stderr
    assert migrated.stdout.splitlines()[-1].startswith("verified: schema version ")
    assert re.search(r"^objects +5 +5 +[0-9a-f]{16} ok$", migrated.stdout, re.MULTILINE), migrated.stdout
    assert postgres_database.password not in migrated.stdout + migrated.stderr

    url = postgres_database.url.replace("@", ":${PGPASSWORD}@", 1)
    after = start_instance("postgres", metadata_url=url, password=postgres_database.password)
    checked = cli("check-config", str(after.config), env=dict(os.environ))
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.splitlines()[0].endswith(" (current)")

    s3 = make_client(after)
    for key in set(KEYS) - {"dir/z"}:
        assert s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == body_of(key)
    assert listed_keys(s3) == sorted(set(KEYS) - {"dir/z"}, key=lambda key: key.encode())
    # The upload begun on SQLite completes on PostgreSQL.
    second = s3.upload_part(Bucket=BUCKET, Key="big/\u00fcpload", UploadId=upload, PartNumber=2,
                            Body=b"end")["ETag"]
    s3.complete_multipart_upload(Bucket=BUCKET, Key="big/\u00fcpload", UploadId=upload, MultipartUpload={
        "Parts": [{"PartNumber": 1, "ETag": first}, {"PartNumber": 2, "ETag": second}]})
    assert s3.get_object(Bucket=BUCKET, Key="big/\u00fcpload")["Body"].read() == body_of("part1", 5 * MiB) + b"end"


# -- HAProxy -------------------------------------------------------------------------------


def test_the_example_haproxy_config_is_valid() -> None:
    require_client(HAPROXY, "haproxy")
    checked = subprocess.run([HAPROXY, "-c", "-f", str(HAPROXY_CONFIG)], capture_output=True, text=True,
                             timeout=30)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def localised(config: Path, listen: tuple[str, str], backends: tuple[int, int]) -> str:
    """An example config with its listen address (``listen``: as written, replacement)
    and its two servers' replaced by loopback ports."""
    text = config.read_text()
    for old, new in (listen, ("10.0.0.11:9000", f"127.0.0.1:{backends[0]}"),
                     ("10.0.0.12:9000", f"127.0.0.1:{backends[1]}")):
        assert text.count(old) == 1, f"{config.name} no longer has {old!r} once"
        text = text.replace(old, new)
    return text


def haproxy_command(tmp_path: Path, port: int, backends: tuple[int, int]) -> list[str]:
    require_client(HAPROXY, "haproxy")
    path = tmp_path / "haproxy.cfg"
    path.write_text(localised(HAPROXY_CONFIG, ("bind :9000", f"bind 127.0.0.1:{port}"), backends))
    return [HAPROXY, "-f", str(path), "-db"]


def nginx_command(tmp_path: Path, port: int, backends: tuple[int, int]) -> list[str]:
    """nginx in the foreground, the example inside a minimal main config of its own files."""
    require_client(NGINX, "nginx")
    work = tmp_path / "nginx"
    work.mkdir()
    (work / "s3orchestrator.conf").write_text(
        localised(NGINX_CONFIG, ("listen 9000;", f"listen 127.0.0.1:{port};"), backends))
    temp_paths = "".join(f"    {kind}_temp_path {work / kind};\n"
                         for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    (work / "nginx.conf").write_text(
        ("user root;\n" if os.geteuid() == 0 else "")  # else workers run as nobody, outside tmp_path
        + f"daemon off;\npid {work / 'nginx.pid'};\nerror_log {work / 'error.log'} notice;\nevents {{}}\n"
        f"http {{\n    access_log {work / 'access.log'};\n{temp_paths}"
        f"    include {work / 's3orchestrator.conf'};\n}}\n"
    )
    return [NGINX, "-e", str(work / "startup.log"), "-p", str(work), "-c", str(work / "nginx.conf")]


PROXIES = {"haproxy": haproxy_command, "nginx": nginx_command}


@pytest.fixture
def start_proxy(tmp_path: Path) -> Iterator:
    """Runs a proxy's example config in the foreground in front of two backend ports."""
    processes: list[subprocess.Popen[bytes]] = []

    def start(proxy: str, backends: tuple[int, int]) -> str:
        port = free_port()
        command = PROXIES[proxy](tmp_path, port, backends)
        with open(tmp_path / f"{proxy}.log", "ab") as log:
            processes.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT))
        assert wait_for(lambda: listening(port) or processes[-1].poll() is not None), f"{proxy} did not start"
        assert processes[-1].poll() is None, (tmp_path / f"{proxy}.log").read_text()
        return f"http://127.0.0.1:{port}"

    yield start
    for process in processes:
        process.terminate()
        process.wait(timeout=10)


def put_objects_answered(daemon: Daemon) -> int:
    """PutObject and UploadPart requests ``daemon`` answered 200, from its /metrics."""
    with socket.create_connection(("127.0.0.1", daemon.port), timeout=10) as sock:
        sock.sendall(b"GET /metrics HTTP/1.0\r\nHost: metrics\r\n\r\n")
        text = b"".join(iter(lambda: sock.recv(65536), b"")).decode()
    pattern = r'^s3orchestrator_requests_total\{operation="(?:PutObject|UploadPart)",status="200"\} (\S+)$'
    return int(sum(float(count) for count in re.findall(pattern, text, re.MULTILINE)))


@pytest.mark.parametrize("proxy", sorted(PROXIES))
def test_two_instances_on_one_database_behind_a_proxy_survive_one_stopping(
    proxy: str, start_instance, start_proxy, postgres_database: PostgresDatabase
) -> None:
    url = postgres_database.url_with_password
    first = start_instance("one", metadata_url=url, password=postgres_database.password)
    second = start_instance("two", metadata_url=url, password=postgres_database.password)
    endpoint = start_proxy(proxy, (first.port, second.port))
    s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
                      region_name="us-east-1", config=BotoConfig(retries={"total_max_attempts": 1}))  # no retries

    for key in KEYS:
        s3.put_object(Bucket=BUCKET, Key=key, Body=body_of(key), Metadata={"signed_name": key.encode().hex()})
    # A multipart upload whose parts stream through the proxy to both instances.
    large = body_of("large", 12 * MiB)
    s3.upload_fileobj(io.BytesIO(large), BUCKET, "large",
                      Config=TransferConfig(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB,
                                            max_concurrency=2))
    assert s3.get_object(Bucket=BUCKET, Key="large")["Body"].read() == large
    for key in KEYS:
        answer = s3.get_object(Bucket=BUCKET, Key=key)
        assert answer["Body"].read() == body_of(key)
        assert answer["Metadata"] == {"signed_name": key.encode().hex()}
    assert listed_keys(s3) == sorted([*KEYS, "large"], key=lambda key: key.encode())
    assert put_objects_answered(first) > 0 and put_objects_answered(second) > 0, f"{proxy} used one instance only"

    first.stop()
    for round_ in range(10):
        key = f"after-stop/{round_}"
        s3.put_object(Bucket=BUCKET, Key=key, Body=body_of(key))
        assert s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == body_of(key)
        assert s3.get_object(Bucket=BUCKET, Key=KEYS[round_ % len(KEYS)])["Body"].read() == body_of(
            KEYS[round_ % len(KEYS)])
    assert len(listed_keys(s3)) == len(KEYS) + 1 + 10
