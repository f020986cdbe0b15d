"""The daemon's life as operators drive it: SIGHUP reloads, SIGTERM drains, JSON logs,
and logs that never show a secret."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
import urllib.request
from pathlib import Path
from typing import Callable

import pytest
from botocore.exceptions import ClientError

from tests.integration.conftest import make_client, metadata_rows, wait_for
from tests.integration.daemon import (
    ACCESS_KEY,
    BUCKET,
    OTHER_SECRET_KEY,
    SECRET_KEY,
    Daemon,
    StoreSpec,
    free_port,
)
from tests.integration.rawhttp import open_upload, response_status, signed_headers

pytestmark = pytest.mark.integration

MiB = 1024 * 1024
NEW_ACCESS_KEY = "AKID_APP1_ROTATED"
NEW_SECRET_KEY = "rotated-secret-for-tests-only-1234"


def edit_config(daemon: Daemon, old: str, new: str) -> None:
    text = daemon.config.read_text()
    assert old in text
    daemon.config.write_text(text.replace(old, new))


def restart(daemon: Daemon) -> None:
    """Stop the daemon and start it again with its (edited) config, on a fresh log."""
    daemon.stop()
    daemon.log_path.unlink()
    daemon.start()


def signal_daemon(daemon: Daemon, signum: int) -> None:
    assert daemon.process is not None
    os.kill(daemon.process.pid, signum)


def reloads(daemon: Daemon) -> int:
    return daemon.log().count("Reloaded ")


def error_code(call: Callable[[], object]) -> str:
    with pytest.raises(ClientError) as raised:
        call()
    return raised.value.response["Error"]["Code"]


# -- SIGHUP ------------------------------------------------------------------------------------


def test_sighup_applies_rotated_credentials(daemon):
    make_client(daemon).put_object(Bucket=BUCKET, Key="before", Body=b"x")
    edit_config(daemon, f'access_key_id = "{ACCESS_KEY}"\nsecret_access_key = "{SECRET_KEY}"',
                f'access_key_id = "{NEW_ACCESS_KEY}"\nsecret_access_key = "{NEW_SECRET_KEY}"')
    signal_daemon(daemon, signal.SIGHUP)
    assert wait_for(lambda: reloads(daemon) == 1), daemon.log()[-2000:]
    assert "buckets" in daemon.log().split("Reloaded ")[-1].splitlines()[0]

    old = make_client(daemon)
    assert error_code(lambda: old.get_object(Bucket=BUCKET, Key="before")) == "InvalidAccessKeyId"
    new = make_client(daemon, NEW_ACCESS_KEY, NEW_SECRET_KEY)
    assert new.get_object(Bucket=BUCKET, Key="before")["Body"].read() == b"x"
    new.put_object(Bucket=BUCKET, Key="after", Body=b"y")


def test_sighup_with_a_broken_file_keeps_the_running_config(daemon):
    edit_config(daemon, "[metadata]", "[metadata\n")
    signal_daemon(daemon, signal.SIGHUP)
    assert wait_for(lambda: "keeping the running configuration" in daemon.log()), daemon.log()[-2000:]
    assert "invalid TOML" in daemon.log()
    make_client(daemon).put_object(Bucket=BUCKET, Key="still-works", Body=b"x")
    assert reloads(daemon) == 0


def test_sighup_applies_quotas_and_names_what_needs_a_restart(start_daemon):
    daemon = start_daemon(stores=[StoreSpec("local-a", 10 * MiB)])
    edit_config(daemon, "quota_bytes = 10485760", "quota_bytes = 1048576")
    edit_config(daemon, "[server]\n", "[server]\nshutdown_timeout = 7\n")
    edit_config(daemon, f'listen = "tcp:{daemon.port}:interface=127.0.0.1"', 'listen = "tcp:1:interface=127.0.0.1"')
    signal_daemon(daemon, signal.SIGHUP)
    assert wait_for(lambda: reloads(daemon) == 1), daemon.log()[-2000:]
    assert "server.listen changed; that takes a restart" in daemon.log()
    assert metadata_rows(daemon, "SELECT quota_bytes FROM stores WHERE name = 'local-a'") == [(MiB,)]
    s3 = make_client(daemon)  # still on the old port
    assert error_code(lambda: s3.put_object(Bucket=BUCKET, Key="big", Body=b"x" * (2 * MiB))) == "InsufficientStorage"


# -- SIGTERM -----------------------------------------------------------------------------------


def upload_socket(daemon: Daemon, key: str, size: int):
    path, headers = signed_headers(daemon, "PUT", key, headers={"Content-Length": str(size)}, unsigned_payload=True)
    return open_upload(daemon, path, headers)


def stopped_by_sigterm(daemon: Daemon) -> bool:
    """The daemon exited of itself within 10 s (twistd re-raises the SIGTERM it handled)."""
    assert daemon.process is not None
    return daemon.process.wait(timeout=10) in (0, -signal.SIGTERM)


def test_sigterm_lets_an_upload_in_flight_finish(daemon):
    sock = upload_socket(daemon, "in-flight", 2 * MiB)
    sock.sendall(b"a" * MiB)
    time.sleep(0.3)
    signal_daemon(daemon, signal.SIGTERM)
    assert wait_for(lambda: "TCP Port" in daemon.log() and "Closed" in daemon.log(), 5), daemon.log()[-2000:]
    sock.sendall(b"b" * MiB)
    assert response_status(sock) == 200
    sock.close()
    assert stopped_by_sigterm(daemon)
    assert metadata_rows(daemon, "SELECT size FROM objects WHERE key = 'in-flight'") == [(2 * MiB,)]
    assert metadata_rows(daemon, "SELECT COUNT(*) FROM reservations") == [(0,)]


def test_sigterm_aborts_what_outlasts_the_shutdown_timeout(start_daemon):
    daemon = start_daemon()
    edit_config(daemon, "[server]\n", "[server]\nshutdown_timeout = 1\n")
    restart(daemon)
    s3 = make_client(daemon)
    upload_id = s3.create_multipart_upload(Bucket=BUCKET, Key="parts")["UploadId"]
    path, headers = signed_headers(daemon, "PUT", "parts", headers={"Content-Length": str(6 * MiB)},
                                   unsigned_payload=True, query=f"partNumber=1&uploadId={upload_id}")
    part = open_upload(daemon, path, headers)
    part.sendall(b"p" * MiB)
    plain = upload_socket(daemon, "stuck", 4 * MiB)
    plain.sendall(b"s" * MiB)
    time.sleep(0.3)
    started = time.monotonic()
    signal_daemon(daemon, signal.SIGTERM)
    assert stopped_by_sigterm(daemon)
    assert 0.9 < time.monotonic() - started < 8
    assert "Shutdown: aborted 2 requests still running after 1 s" in daemon.log()
    part.close()
    plain.close()
    # Nothing half-written: no object, no part, no reserved quota, no temp file.
    assert metadata_rows(daemon, "SELECT COUNT(*) FROM objects") == [(0,)]
    assert metadata_rows(daemon, "SELECT COUNT(*) FROM parts") == [(0,)]
    assert metadata_rows(daemon, "SELECT COUNT(*) FROM reservations") == [(0,)]
    assert list((daemon.directory / "stores" / "local-a" / ".tmp").iterdir()) == []


# -- logs --------------------------------------------------------------------------------------


def test_json_log_format(start_daemon):
    daemon = start_daemon()
    edit_config(daemon, "[metadata]", '[logging]\nformat = "json"\n[metadata]')
    restart(daemon)
    make_client(daemon).put_object(Bucket=BUCKET, Key="logged", Body=b"12345")
    assert wait_for(lambda: '"operation": "PutObject"' in daemon.log())
    records = [json.loads(line) for line in daemon.log().splitlines() if line.strip()]
    (put,) = [record for record in records if record.get("operation") == "PutObject"]
    assert put["request_id"] and put["access_key_id"] == ACCESS_KEY and put["status"] == 200
    assert (put["bucket"], put["key"], put["store"]) == (BUCKET, "logged", "local-a")
    assert put["level"] == "info" and put["time"].endswith("Z")


def test_debug_lines_are_logged_from_a_reload_to_level_debug(start_daemon):
    # Every probe of a store nobody listens for logs a debug line once the store is down.
    dead = StoreSpec("dead", 0, s3={
        "endpoint": f"http://127.0.0.1:{free_port()}", "bucket": "nowhere",
        "access_key_id": "AKIDDEAD", "secret_access_key": "dead-secret", "timeout": 2,
    })
    daemon = start_daemon(stores=[StoreSpec("local-a", MiB), dead], health=(0.2, 1))
    # The first failed probe is a warning (the store was up), the next ones debug lines.
    assert wait_for(lambda: "Store dead is down" in daemon.log()), daemon.log()[-2000:]
    assert wait_for(lambda: health_check_runs(daemon) >= 3)
    make_client(daemon).put_object(Bucket=BUCKET, Key="logged", Body=b"x")
    assert wait_for(lambda: "PutObject" in daemon.log())
    assert "#debug]" not in daemon.log()

    edit_config(daemon, "[metadata]", '[logging]\nlevel = "debug"\n[metadata]')
    signal_daemon(daemon, signal.SIGHUP)
    assert wait_for(lambda: reloads(daemon) == 1), daemon.log()[-2000:]
    assert "logging.level" in daemon.log().split("Reloaded ")[-1].splitlines()[0]
    assert wait_for(lambda: "#debug] Health probe of store dead failed" in daemon.log()), daemon.log()[-2000:]


def health_check_runs(daemon: Daemon) -> float:
    """s3orchestrator_job_runs_total{job="health_checks"}, from /metrics."""
    with urllib.request.urlopen(f"{daemon.endpoint}/metrics", timeout=10) as response:
        text = response.read().decode("utf-8")
    sample = 's3orchestrator_job_runs_total{job="health_checks"} '
    (runs,) = [line for line in text.splitlines() if line.startswith(sample)]
    return float(runs.rsplit(" ", 1)[1])


def test_logs_never_show_secrets_or_signatures(start_daemon, tmp_path: Path):
    daemon = start_daemon(health=(0.2, 3))
    s3 = make_client(daemon)
    s3.put_object(Bucket=BUCKET, Key="k", Body=b"x")
    s3.get_object(Bucket=BUCKET, Key="k")
    wrong = make_client(daemon, ACCESS_KEY, "not-the-secret")
    assert error_code(lambda: wrong.get_object(Bucket=BUCKET, Key="k")) == "SignatureDoesNotMatch"
    presigned_like = make_client(daemon, "AKID_UNKNOWN", "whatever")
    assert error_code(lambda: presigned_like.list_objects_v2(Bucket=BUCKET)) == "InvalidAccessKeyId"
    path, headers = signed_headers(daemon, "GET", "k")
    signature = headers["Authorization"].rsplit("Signature=", 1)[1]
    time.sleep(0.5)
    signal_daemon(daemon, signal.SIGHUP)
    assert wait_for(lambda: reloads(daemon) == 1)
    daemon.stop()
    log = daemon.log()
    for secret in (SECRET_KEY, OTHER_SECRET_KEY, "not-the-secret", signature):
        assert secret not in log
    assert "Signature=" not in log and "Authorization" not in log


def test_an_operator_port_in_use_fails_the_start(start_daemon, tmp_path: Path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(RuntimeError, match="daemon exited with 1"):
            start_daemon(extra_toml=f'[admin]\nlisten = "tcp:{port}:interface=127.0.0.1"\ntoken = "t"\n')


def test_sighup_retimes_the_health_checks(start_daemon):
    # Each run's summary is a debug line.
    daemon = start_daemon(health=(30.0, 3), extra_toml='[logging]\nlevel = "debug"\n')
    assert wait_for(lambda: daemon.log().count("Health checks:") == 1)
    assert "Health probe of store local-a took" not in daemon.log()
    edit_config(daemon, "interval = 30.0", "interval = 0.2\nslow_probe = 0.000001")
    signal_daemon(daemon, signal.SIGHUP)
    assert wait_for(lambda: reloads(daemon) == 1)
    assert "health" in daemon.log().split("Reloaded ")[-1].splitlines()[0]
    # Every 0.2 s now, where the old interval would have given none.
    assert wait_for(lambda: daemon.log().count("Health checks:") >= 6, 5)
    # And every probe is slower than the new slow_probe (a microsecond): a warning each.
    assert "#warn] Health probe of store local-a took" in daemon.log()


def test_a_key_cannot_forge_log_lines(daemon):
    make_client(daemon).put_object(Bucket=BUCKET, Key="evil\n2026-01-01T00:00:00+0000 [forged#info] FAKE", Body=b"x")
    assert wait_for(lambda: "PutObject" in daemon.log())
    assert not any(line.startswith("2026-01-01") for line in daemon.log().splitlines())
    assert "evil\\n2026-01-01T00:00:00+0000 [forged#info] FAKE" in daemon.log()
