"""/metrics on the real daemon: scraped before and after known boto3 traffic, the
counters must have moved by exactly that traffic."""

from __future__ import annotations

import os
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from botocore.exceptions import ClientError
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.conftest import make_client
from tests.integration.daemon import BUCKET, UNSYNCED, Daemon, StoreSpec, free_port, write_config
from tests.integration.metadata_engines import MetadataPlaces
from tests.integration.test_upstream_stores import spec

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str) -> Samples:
    """Every sample of the exposition at ``url`` (no S3 credentials)."""
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        assert response.headers["content-type"].startswith("text/plain")
        text = response.read().decode("utf-8")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value; 0 for a series that does not exist yet (nothing counted)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def requests_total(samples: Samples) -> float:
    return sum(v for (name, _), v in samples.items() if name == "s3orchestrator_requests_total")


def test_counters_and_store_gauges_move_by_exactly_the_traffic(daemon: Daemon) -> None:
    s3 = make_client(daemon)
    url = f"{daemon.endpoint}/metrics"
    before = scrape(url)
    assert requests_total(scrape(url)) == requests_total(before)  # scrapes are not S3 requests

    sizes = {"a.bin": 1000, "b.bin": 20_000, "c.bin": 300_000}
    bodies = {key: os.urandom(size) for key, size in sizes.items()}
    for key, body in bodies.items():
        s3.put_object(Bucket=BUCKET, Key=key, Body=body)
    assert s3.get_object(Bucket=BUCKET, Key="a.bin")["Body"].read() == bodies["a.bin"]
    assert s3.get_object(Bucket=BUCKET, Key="b.bin")["Body"].read() == bodies["b.bin"]
    with pytest.raises(ClientError) as missing:
        s3.get_object(Bucket=BUCKET, Key="no-such-key")
    assert missing.value.response["Error"]["Code"] == "NoSuchKey"
    error_document = int(missing.value.response["ResponseMetadata"]["HTTPHeaders"]["content-length"])
    after = scrape(url)

    requests = "s3orchestrator_requests_total"
    assert moved(before, after, requests, operation="PutObject", status="200") == 3
    assert moved(before, after, requests, operation="GetObject", status="200") == 2
    assert moved(before, after, requests, operation="GetObject", status="404") == 1
    assert requests_total(after) - requests_total(before) == 6
    durations = "s3orchestrator_request_duration_seconds_count"
    assert moved(before, after, durations, operation="PutObject") == 3
    assert moved(before, after, durations, operation="GetObject") == 3
    assert moved(before, after, "s3orchestrator_request_duration_seconds_bucket", operation="PutObject",
                 le="+Inf") == 3
    bytes_total = "s3orchestrator_request_bytes_total"
    assert moved(before, after, bytes_total, direction="in") == sum(sizes.values())
    assert moved(before, after, bytes_total, direction="out") == 1000 + 20_000 + error_document
    # Pack routing: everything on the first store.
    assert moved(before, after, "s3orchestrator_store_used_bytes", store="local-a") == sum(sizes.values())
    assert moved(before, after, "s3orchestrator_store_objects", store="local-a") == 3
    assert moved(before, after, "s3orchestrator_store_used_bytes", store="local-b") == 0
    assert value(after, "s3orchestrator_store_quota_bytes", store="local-a") == 1024**3
    assert value(after, "s3orchestrator_store_quota_bytes", store="local-b") == 2 * 1024**3
    assert value(after, "s3orchestrator_store_reserved_bytes", store="local-a") == 0
    assert value(after, "s3orchestrator_store_up", store="local-a") == 1
    assert value(after, "s3orchestrator_store_up", store="local-b") == 1
    # Directory stores make no upstream requests.
    assert not [key for key in after if key[0] == "s3orchestrator_upstream_requests_total"]


def test_job_counters_are_exposed(daemon: Daemon) -> None:
    url = f"{daemon.endpoint}/metrics"
    deadline = time.monotonic() + 10
    samples = scrape(url)
    # The health checks run once at start; their run is counted when it finishes.
    while value(samples, "s3orchestrator_job_runs_total", job="health_checks") < 1 and time.monotonic() < deadline:
        time.sleep(0.1)
        samples = scrape(url)
    assert value(samples, "s3orchestrator_job_runs_total", job="health_checks") >= 1
    assert value(samples, "s3orchestrator_job_failures_total", job="health_checks") == 0
    assert ("s3orchestrator_job_runs_total", frozenset({("job", "multipart_expiry")})) in samples
    assert value(samples, "s3orchestrator_job_failures_total", job="multipart_expiry") == 0


def test_multipart_uploads_gauge_counts_unfinished_uploads(daemon: Daemon) -> None:
    s3 = make_client(daemon)
    url = f"{daemon.endpoint}/metrics"

    def uploads() -> float:
        samples = scrape(url)
        return sum(value(samples, "s3orchestrator_multipart_uploads", store=store) for store in ("local-a", "local-b"))

    assert uploads() == 0
    first = s3.create_multipart_upload(Bucket=BUCKET, Key="big-1")["UploadId"]
    s3.upload_part(Bucket=BUCKET, Key="big-1", UploadId=first, PartNumber=1, Body=b"x" * 1000)
    second = s3.create_multipart_upload(Bucket=BUCKET, Key="big-2")["UploadId"]
    assert uploads() == 2

    s3.abort_multipart_upload(Bucket=BUCKET, Key="big-1", UploadId=first)
    assert uploads() == 1
    s3.abort_multipart_upload(Bucket=BUCKET, Key="big-2", UploadId=second)
    assert uploads() == 0


def test_upstream_requests_are_counted_by_store_operation_and_outcome(start_daemon, seaweedfs) -> None:
    daemon = start_daemon(stores=[spec(seaweedfs, "seaweed", 10**9, seaweedfs.new_bucket())])
    s3 = make_client(daemon)
    url = f"{daemon.endpoint}/metrics"
    before = scrape(url)

    s3.put_object(Bucket=BUCKET, Key="one", Body=b"1" * 5000)
    s3.put_object(Bucket=BUCKET, Key="two", Body=b"2" * 7000)
    assert s3.get_object(Bucket=BUCKET, Key="one")["Body"].read() == b"1" * 5000
    with pytest.raises(ClientError):
        s3.get_object(Bucket=BUCKET, Key="three")  # answered from metadata: no upstream request
    after = scrape(url)

    upstream = "s3orchestrator_upstream_requests_total"
    assert moved(before, after, upstream, store="seaweed", operation="PUT", outcome="ok") == 2
    assert moved(before, after, upstream, store="seaweed", operation="GET", outcome="ok") == 1
    for operation in ("PUT", "GET"):
        for outcome in ("4xx", "5xx", "timeout", "cancelled", "error"):
            assert moved(before, after, upstream, store="seaweed", operation=operation, outcome=outcome) == 0
    latency = "s3orchestrator_upstream_request_duration_seconds_count"
    assert moved(before, after, latency, store="seaweed", operation="PUT") == 2
    assert moved(before, after, latency, store="seaweed", operation="GET") == 1
    assert moved(before, after, "s3orchestrator_store_used_bytes", store="seaweed") == 12_000
    assert moved(before, after, "s3orchestrator_store_objects", store="seaweed") == 2
    assert value(after, "s3orchestrator_store_up", store="seaweed") == 1


def test_metrics_on_their_own_loopback_listener(tmp_path: Path, metadata: MetadataPlaces) -> None:
    port, metrics_port = free_port(), free_port()
    config = write_config(tmp_path, port, [StoreSpec("local", 0)], metadata_url=metadata.url(tmp_path))
    with config.open("a") as file:
        file.write(f'[metrics]\nlisten = "tcp:{metrics_port}:interface=127.0.0.1"\n')
    daemon = Daemon(tmp_path, config, port, wrapper=UNSYNCED)
    daemon.start()
    try:
        url = f"http://127.0.0.1:{metrics_port}/metrics"
        before = scrape(url)
        make_client(daemon).put_object(Bucket=BUCKET, Key="k", Body=b"abc")
        after = scrape(url)
        assert moved(before, after, "s3orchestrator_requests_total", operation="PutObject", status="200") == 1
        assert moved(before, after, "s3orchestrator_request_bytes_total", direction="in") == 3
        assert value(after, "s3orchestrator_store_objects", store="local") == 1
        with pytest.raises(urllib.error.HTTPError) as other:
            urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/{BUCKET}/k", timeout=10)
        assert other.value.code == 404
    finally:
        daemon.stop()
