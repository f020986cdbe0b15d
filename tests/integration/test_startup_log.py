"""What the real daemon logs when it starts (one banner saying where everything is) and
while it idles (nothing at info level)."""

from __future__ import annotations

import json
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.daemon import (
    ACCESS_KEY,
    BUCKET,
    OTHER_ACCESS_KEY,
    OTHER_BUCKET,
    Daemon,
    StoreSpec,
    free_port,
)
from tests.integration.metadata_engines import daemon_metadata

pytestmark = pytest.mark.integration

TITLE = "s3orchestrator listening on "


def banner_and_rest(daemon: Daemon) -> tuple[list[str], list[str]]:
    """The banner's lines (its title line and the tab-indented lines after it) and every
    line logged after it."""
    lines = daemon.log().splitlines()
    (start,) = [i for i, line in enumerate(lines) if TITLE in line]
    end = start + 1
    while end < len(lines) and lines[end].startswith("\t"):
        end += 1
    return lines[start:end], lines[end:]


def metadata_shown(daemon: Daemon) -> str:
    """The banner's metadata line for ``daemon`` (its URLs hold no password to hide)."""
    engine, where = daemon_metadata(daemon.config)
    return f"SQLite {where}" if engine == "sqlite" else f"PostgreSQL {where}"


def job_runs(daemon: Daemon) -> dict[str, float]:
    """s3orchestrator_job_runs_total by job, from /metrics."""
    with urllib.request.urlopen(f"{daemon.endpoint}/metrics", timeout=10) as response:
        text = response.read().decode("utf-8")
    return {
        sample.labels["job"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "s3orchestrator_job_runs_total"
    }


def test_the_banner_says_where_to_point_clients_and_operators(start_daemon):
    metrics_port, admin_port = free_port(), free_port()
    daemon = start_daemon(server_toml='instance_id = "node-a"', extra_toml=(
        f'[metrics]\nlisten = "tcp:{metrics_port}:interface=127.0.0.1"\n'
        f'[admin]\nlisten = "tcp:{admin_port}:interface=127.0.0.1"\ntoken = "admin-token-for-tests-only"\n'
    ))
    banner, _ = banner_and_rest(daemon)
    assert banner[0].endswith(f"[s3orchestrator.service.OrchestratorService#info] {TITLE}{daemon.endpoint}")
    stores = daemon.directory / "stores"
    assert banner[1:] == [
        f"\tS3 endpoint  {daemon.endpoint}",
        "\tinstance     node-a",
        f"\tbucket       {BUCKET}: access key {ACCESS_KEY}",
        f"\tbucket       {OTHER_BUCKET}: access key {OTHER_ACCESS_KEY}",
        f"\tstore        local-a: directory {stores / 'local-a'}, used 0 B of 1.0 GiB (0%), 0 objects",
        f"\tstore        local-b: directory {stores / 'local-b'}, used 0 B of 2.0 GiB (0%), 0 objects",
        f"\tmetadata     {metadata_shown(daemon)}",
        f"\tmetrics      {daemon.endpoint}/metrics",
        f"\tmetrics      http://127.0.0.1:{metrics_port}/metrics",
        f"\thealth       {daemon.endpoint}/health, {daemon.endpoint}/health/ready",
        f"\thealth       http://127.0.0.1:{metrics_port}/health, http://127.0.0.1:{metrics_port}/health/ready",
        f"\tadmin API    http://127.0.0.1:{admin_port}/status",
        "\tmanhole      off (no [manhole] table)",
    ]
    # Every address in it answers.
    for url in (f"{daemon.endpoint}/health/ready", f"http://127.0.0.1:{metrics_port}/metrics"):
        with urllib.request.urlopen(url, timeout=10) as response:
            assert response.status == 200
    assert "admin-token-for-tests-only" not in daemon.log()


def test_the_json_banner_is_one_object_with_structured_fields(start_daemon):
    daemon = start_daemon(extra_toml='[logging]\nformat = "json"\n')
    records = [json.loads(line) for line in daemon.log().splitlines() if line.startswith("{")]
    (banner,) = [record for record in records if record["message"].startswith(TITLE)]
    assert banner["level"] == "info"
    assert banner["s3_endpoints"] == [daemon.endpoint]
    assert banner["buckets"] == [
        {"name": BUCKET, "access_key_ids": [ACCESS_KEY]}, {"name": OTHER_BUCKET, "access_key_ids": [OTHER_ACCESS_KEY]},
    ]
    assert [(store["name"], store["type"], store["path"], store["quota_bytes"], store["used_bytes"])
            for store in banner["stores"]] == [
        ("local-a", "directory", str(daemon.directory / "stores" / "local-a"), 1024**3, 0),
        ("local-b", "directory", str(daemon.directory / "stores" / "local-b"), 2 * 1024**3, 0),
    ]
    engine, where = daemon_metadata(daemon.config)
    assert (banner["metadata_sqlite"], banner["metadata_url"]) == (
        (where, None) if engine == "sqlite" else (None, where))
    assert banner["metrics"] == [f"{daemon.endpoint}/metrics"]
    assert (banner["admin_api"], banner["manhole"]) == (None, None)


FAST_JOBS = "[placement]\nreaper_interval = 0.2\ncleanup_interval = 0.2\n"


def idles_quietly(daemon: Daemon) -> None:
    """Nothing is logged for 3 s after the banner, while the jobs ran (every 0.2 s), but
    (at start, before or after the banner) that the daemon runs each cluster-wide job."""
    time.sleep(3)
    _, rest = banner_and_rest(daemon)
    assert [line for line in rest if " now runs job " not in line] == []
    assert sorted(line.rpartition(" now runs job ")[2] for line in daemon.log().splitlines()
                  if " now runs job " in line) == ["cleanup", "mover", "multipart_expiry", "reaper", "replicator"]
    runs = job_runs(daemon)
    assert all(runs[job] >= 10 for job in ("health_checks", "multipart_expiry", "reaper", "cleanup")), runs


def test_an_idle_daemon_logs_nothing_after_its_banner(start_daemon):
    idles_quietly(start_daemon(health=(0.2, 3), multipart=(86400, 0.2), extra_toml=FAST_JOBS))


def test_probes_of_upstream_s3_stores_log_nothing_either(start_daemon, seaweedfs, moto):
    # HeadBucket over pooled HTTP connections: no line per probe or per connection.
    stores = [
        StoreSpec(upstream.kind, 0, s3={
            "endpoint": upstream.endpoint, "bucket": upstream.new_bucket(), "region": upstream.region,
            "access_key_id": upstream.access_key, "secret_access_key": upstream.secret_key,
        })
        for upstream in (seaweedfs, moto)
    ]
    idles_quietly(start_daemon(stores=stores, health=(0.2, 3), multipart=(86400, 0.2), extra_toml=FAST_JOBS))
