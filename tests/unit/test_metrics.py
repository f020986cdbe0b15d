"""Tests for the Prometheus metrics: counters, histograms, scrape-time gauges, the /metrics
endpoint, and the hooks that feed them (S3Handler, UploadBody, the upstream S3Store)."""

from __future__ import annotations

import base64
import zlib
from typing import Any, Iterable

import pytest
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.defer import CancelledError, ensureDeferred, succeed
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock

from s3orchestrator.auth.payload import PayloadVerifier
from s3orchestrator.auth.sigv4 import PayloadMode
from s3orchestrator.errors import S3Error
from s3orchestrator.jobs.cleanup import CleanupJob
from s3orchestrator.jobs.health import HealthCheckJob, StoreHealth
from s3orchestrator.jobs.heartbeat import InstanceLease
from s3orchestrator.jobs.multipart_expiry import MultipartExpiryJob
from s3orchestrator.jobs.reaper import ReaperJob
from s3orchestrator.metadata.records import QueueTotals, StoreUsage
from s3orchestrator.ops.endpoints import OpsResponse
from s3orchestrator.ops.metrics import (
    DURATION_BUCKETS,
    Metrics,
    metrics_endpoint,
    request_status_label,
    upstream_outcome,
)
from s3orchestrator.ops.status import status_snapshot
from s3orchestrator.stores.interface import ObjectMissing, StoreMisconfigured, StoreUnavailable
from s3orchestrator.stores.s3 import S3Store
from s3orchestrator.web.body import ClientGone, UploadBody
from s3orchestrator.web.handler import S3Handler
from s3orchestrator.web.site import S3Site
from tests.unit.fakes import (
    CollectingConsumer,
    FakeBody,
    Outcome,
    RecordingStringTransport,
    RecordingTransport,
    auth_result,
)
from tests.unit.test_s3_store import TIMEOUT, FailingAgent, Harness, config

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(metrics: Metrics) -> Samples:
    """Every sample of the exposition, parsed back by prometheus_client's own parser."""
    text = metrics.render().decode("utf-8")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value (0 when the series does not exist yet)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def families(metrics: Metrics) -> set[str]:
    return {family.name for family in text_string_to_metric_families(metrics.render().decode("utf-8"))}


class FakeMetadata:
    """The two reads status_snapshot makes, answered from fixed numbers."""

    def __init__(self, usage: Iterable[StoreUsage], uploads: dict[str, int],
                 cleanups: dict[str, tuple[int, int]] | None = None, intents: int = 0, lost: int = 0) -> None:
        self.usage = list(usage)
        self.uploads = uploads
        self.cleanups = cleanups or {}
        self.intents = intents
        self.lost = lost
        self.reads = 0

    def store_usage(self) -> Any:
        self.reads += 1
        return succeed(self.usage)

    def upload_counts(self) -> Any:
        return succeed(dict(self.uploads))

    def cleanup_totals(self) -> Any:
        return succeed(dict(self.cleanups))

    def queue_totals(self) -> Any:
        return succeed(QueueTotals(replication_queued=0, replication_oldest_ms=None, intents=self.intents,
                                   lost=self.lost))


def snapshot(metadata: FakeMetadata, health: StoreHealth) -> dict[str, Any]:
    return Outcome(ensureDeferred(status_snapshot(metadata, health))).result  # type: ignore[arg-type]


# -- S3 requests ---------------------------------------------------------------------------------


def test_requests_are_counted_by_operation_and_status_by_exact_amounts() -> None:
    metrics = Metrics()
    for _ in range(3):
        metrics.request_finished("PutObject", 200, 10, 0, 0.01)
    metrics.request_finished("GetObject", 200, 0, 10, 0.01)
    metrics.request_finished("GetObject", 404, 0, 250, 0.01)

    samples = scrape(metrics)

    assert value(samples, "s3orchestrator_requests_total", operation="PutObject", status="200") == 3
    assert value(samples, "s3orchestrator_requests_total", operation="GetObject", status="200") == 1
    assert value(samples, "s3orchestrator_requests_total", operation="GetObject", status="404") == 1
    assert value(samples, "s3orchestrator_requests_total", operation="PutObject", status="404") == 0


@pytest.mark.parametrize("logged, label", [
    (200, "200"), (507, "507"), ("client-gone", "client_gone"), ("200-aborted", "aborted"), ("206-aborted", "aborted"),
])
def test_request_status_labels(logged: int | str, label: str) -> None:
    assert request_status_label(logged) == label


def test_client_gone_and_aborted_requests_get_their_own_status() -> None:
    metrics = Metrics()
    metrics.request_finished("GetObject", "client-gone", 0, 0, 1.0)
    metrics.request_finished("GetObject", "200-aborted", 0, 0, 1.0)

    samples = scrape(metrics)

    assert value(samples, "s3orchestrator_requests_total", operation="GetObject", status="client_gone") == 1
    assert value(samples, "s3orchestrator_requests_total", operation="GetObject", status="aborted") == 1


def test_bytes_in_and_out_add_up_and_both_directions_exist_from_the_start() -> None:
    metrics = Metrics()
    samples = scrape(metrics)
    assert ("s3orchestrator_request_bytes_total", frozenset({("direction", "in")})) in samples
    assert ("s3orchestrator_request_bytes_total", frozenset({("direction", "out")})) in samples

    metrics.request_finished("PutObject", 200, 1000, 0, 0.1)
    metrics.request_finished("PutObject", 200, 24, 0, 0.1)
    metrics.request_finished("GetObject", 200, 0, 4096, 0.1)
    samples = scrape(metrics)

    assert value(samples, "s3orchestrator_request_bytes_total", direction="in") == 1024
    assert value(samples, "s3orchestrator_request_bytes_total", direction="out") == 4096


def test_request_duration_histogram_buckets() -> None:
    metrics = Metrics()
    for seconds in (0.0005, 0.003, 0.003, 2.0, 120.0):
        metrics.request_finished("GetObject", 200, 0, 0, seconds)

    samples = scrape(metrics)

    def bucket(le: str) -> float:
        return value(samples, "s3orchestrator_request_duration_seconds_bucket", operation="GetObject", le=le)

    assert bucket("0.001") == 1
    assert bucket("0.0025") == 1
    assert bucket("0.005") == 3
    assert bucket("1.0") == 3
    assert bucket("2.5") == 4
    assert bucket("60.0") == 4
    assert bucket("+Inf") == 5
    assert value(samples, "s3orchestrator_request_duration_seconds_count", operation="GetObject") == 5
    assert value(samples, "s3orchestrator_request_duration_seconds_sum", operation="GetObject") == pytest.approx(
        122.0065
    )


def test_duration_buckets_run_from_a_millisecond_to_a_minute_and_beyond() -> None:
    assert DURATION_BUCKETS[0] == 0.001
    assert DURATION_BUCKETS[-2] == 60.0
    assert DURATION_BUCKETS[-1] == float("inf")
    assert list(DURATION_BUCKETS) == sorted(DURATION_BUCKETS)


def test_each_metrics_has_its_own_registry_and_leaves_the_global_one_alone() -> None:
    first, second = Metrics(), Metrics()
    first.request_finished("PutObject", 200, 1, 0, 0.1)

    assert value(scrape(first), "s3orchestrator_requests_total", operation="PutObject", status="200") == 1
    assert value(scrape(second), "s3orchestrator_requests_total", operation="PutObject", status="200") == 0
    labels = {"operation": "PutObject", "status": "200"}
    assert REGISTRY.get_sample_value("s3orchestrator_requests_total", labels) is None


# -- upstream requests -------------------------------------------------------------------------


@pytest.mark.parametrize("status, error, timed_out, outcome", [
    (200, None, False, "ok"),
    (204, None, False, "ok"),
    (404, None, False, "ok"),  # a DELETE of a missing key: what was wanted
    (404, ObjectMissing("k"), False, "4xx"),
    (403, StoreMisconfigured("denied"), False, "4xx"),
    (503, StoreUnavailable("slow down"), False, "5xx"),
    (None, StoreUnavailable("connection refused"), False, "error"),
    (200, StoreUnavailable("no ETag"), False, "error"),
    (None, StoreUnavailable("no progress"), True, "timeout"),
    (200, StoreUnavailable("no progress"), True, "timeout"),
    (None, CancelledError(), False, "cancelled"),
    (None, ClientGone("gone"), False, "cancelled"),
    (None, S3Error("BadDigest"), False, "cancelled"),
])
def test_upstream_outcome(status: int | None, error: BaseException | None, timed_out: bool, outcome: str) -> None:
    assert upstream_outcome(status, error, timed_out) == outcome


def test_upstream_requests_are_counted_by_store_operation_and_outcome() -> None:
    metrics = Metrics()
    metrics.upstream_finished("seaweed", "PUT", 200, None, 0.02)
    metrics.upstream_finished("seaweed", "PUT", 200, None, 0.03)
    metrics.upstream_finished("seaweed", "GET", 503, StoreUnavailable("x"), 0.5)
    metrics.upstream_finished("moto", "HeadBucket", None, StoreUnavailable("x"), 5.0, timed_out=True)

    samples = scrape(metrics)

    def count(store: str, operation: str, outcome: str) -> float:
        return value(samples, "s3orchestrator_upstream_requests_total", store=store, operation=operation,
                     outcome=outcome)

    assert count("seaweed", "PUT", "ok") == 2
    assert count("seaweed", "GET", "5xx") == 1
    assert count("moto", "HeadBucket", "timeout") == 1
    assert value(samples, "s3orchestrator_upstream_request_duration_seconds_count", store="seaweed",
                 operation="PUT") == 2
    assert value(samples, "s3orchestrator_upstream_request_duration_seconds_bucket", store="seaweed",
                 operation="PUT", le="0.025") == 1
    assert value(samples, "s3orchestrator_upstream_request_duration_seconds_sum", store="moto",
                 operation="HeadBucket") == 5.0


# -- store gauges and job counters, read at scrape time ---------------------------------------------


def test_store_gauges_come_from_the_status_snapshot() -> None:
    health = StoreHealth(["a", "b"], unhealthy_after=1)
    health.record_failure("b", "b: connection refused")
    metadata = FakeMetadata(
        [StoreUsage("a", 1000, 300, 50, 4), StoreUsage("b", 0, 7, 0, 1)], {"a": 2}, {"b": (3, 7)}, intents=2, lost=1,
    )
    metrics = Metrics()
    metrics.set_status(snapshot(metadata, health))

    samples = scrape(metrics)

    expected = {
        "s3orchestrator_store_quota_bytes": (1000, 0),
        "s3orchestrator_store_used_bytes": (300, 7),
        "s3orchestrator_store_reserved_bytes": (50, 0),
        "s3orchestrator_store_objects": (4, 1),
        "s3orchestrator_store_up": (1, 0),
        "s3orchestrator_multipart_uploads": (2, 0),
        "s3orchestrator_cleanup_queue": (0, 3),
        "s3orchestrator_cleanup_queue_bytes": (0, 7),
    }
    for name, (a, b) in expected.items():
        assert (value(samples, name, store="a"), value(samples, name, store="b")) == (a, b), name
        assert (name, frozenset({("store", "a")})) in samples and (name, frozenset({("store", "b")})) in samples
    assert value(samples, "s3orchestrator_intents_pending") == 2
    assert value(samples, "s3orchestrator_objects_lost") == 1


def test_reaper_resolutions_are_counted_by_outcome() -> None:
    reaper = ReaperJob(None, dict, 60, Clock())  # type: ignore[arg-type]
    reaper.resolutions.update(adopted=1, deleted=4)
    samples = scrape(Metrics(jobs=lambda: {"reaper": reaper}))
    assert value(samples, "s3orchestrator_reaper_resolutions_total", outcome="adopted") == 1
    assert value(samples, "s3orchestrator_reaper_resolutions_total", outcome="deleted") == 4
    assert value(samples, "s3orchestrator_reaper_resolutions_total", outcome="queued") == 0


def test_before_any_snapshot_the_store_gauges_have_no_samples() -> None:
    samples = scrape(Metrics())
    assert not [key for key in samples if key[0].startswith("s3orchestrator_store_")]


def test_job_counters_are_read_from_the_job_objects_at_scrape_time() -> None:
    clock = Clock()
    health_checks = HealthCheckJob({}, StoreHealth([], 1), 10, clock)
    expiry = MultipartExpiryJob(None, None, 3600, 60, clock)  # type: ignore[arg-type]
    jobs: dict[str, Any] = {}
    metrics = Metrics(jobs=lambda: jobs)
    assert not [key for key in scrape(metrics) if key[0].startswith("s3orchestrator_job_")]

    jobs.update(health_checks=health_checks, multipart_expiry=expiry)
    health_checks.runs, health_checks.probe_failures, health_checks.errors = 7, 5, 1
    expiry.runs, expiry.expired, expiry.failures, expiry.errors = 3, 9, 2, 1
    samples = scrape(metrics)

    assert value(samples, "s3orchestrator_job_runs_total", job="health_checks") == 7
    # Failed probes are store outages (s3orchestrator_store_up), not failures of the job.
    assert value(samples, "s3orchestrator_job_failures_total", job="health_checks") == 1
    assert value(samples, "s3orchestrator_job_runs_total", job="multipart_expiry") == 3
    assert value(samples, "s3orchestrator_job_failures_total", job="multipart_expiry") == 3

    expiry.runs += 1
    assert value(scrape(metrics), "s3orchestrator_job_runs_total", job="multipart_expiry") == 4


class FakeLease:
    """A job's lease: whether this instance holds it."""

    def __init__(self, leads: bool) -> None:
        self.leads = leads


def test_job_leader_says_which_cluster_wide_jobs_this_instance_runs() -> None:
    clock = Clock()
    reaper, cleanup = FakeLease(True), FakeLease(False)
    jobs = {
        "health_checks": HealthCheckJob({}, StoreHealth([], 1), 10, clock),
        "reaper": ReaperJob(None, dict, 60, clock, lease=reaper),  # type: ignore[arg-type]
        "cleanup": CleanupJob(None, dict, 60, clock, lease=cleanup),  # type: ignore[arg-type]
    }
    metrics = Metrics(jobs=lambda: jobs)
    samples = scrape(metrics)
    assert value(samples, "s3orchestrator_job_leader", job="reaper") == 1
    assert value(samples, "s3orchestrator_job_leader", job="cleanup") == 0
    assert not [key for key in samples if key[0] == "s3orchestrator_job_leader" and ("job", "health_checks") in key[1]]
    reaper.leads, cleanup.leads = False, True
    samples = scrape(metrics)
    assert (value(samples, "s3orchestrator_job_leader", job="reaper"),
            value(samples, "s3orchestrator_job_leader", job="cleanup")) == (0, 1)


def test_exposition_parses_and_has_every_documented_metric() -> None:
    metrics = Metrics(jobs=lambda: {"multipart_expiry": MultipartExpiryJob(None, None, 1, 1, Clock())})  # type: ignore[arg-type]
    metrics.request_finished("PutObject", 200, 1, 0, 0.1)
    metrics.upstream_finished("s", "PUT", 200, None, 0.1)
    metrics.set_status({"stores": [{"name": "s", "healthy": True, "quota_bytes": 0, "used_bytes": 0,
                                    "reserved_bytes": 0, "objects": 0, "uploads": 0}]})

    names = families(metrics)

    # The parser names counter families without their _total suffix.
    assert names >= {
        "s3orchestrator_requests", "s3orchestrator_request_duration_seconds", "s3orchestrator_request_bytes",
        "s3orchestrator_upstream_requests", "s3orchestrator_upstream_request_duration_seconds",
        "s3orchestrator_store_used_bytes", "s3orchestrator_store_reserved_bytes", "s3orchestrator_store_quota_bytes",
        "s3orchestrator_store_objects", "s3orchestrator_store_up", "s3orchestrator_multipart_uploads",
        "s3orchestrator_job_runs", "s3orchestrator_job_failures", "s3orchestrator_job_leader",
    }


# -- the /metrics endpoint -------------------------------------------------------------------------


def test_metrics_endpoint_refreshes_the_snapshot_before_every_scrape() -> None:
    health = StoreHealth(["a"], unhealthy_after=1)
    metadata = FakeMetadata([StoreUsage("a", 0, 10, 0, 1)], {})
    metrics = Metrics()
    endpoint = metrics_endpoint(metrics, lambda: status_snapshot(metadata, health))  # type: ignore[arg-type]

    first: OpsResponse = Outcome(ensureDeferred(endpoint({}))).result
    metadata.usage = [StoreUsage("a", 0, 25, 0, 2)]
    second: OpsResponse = Outcome(ensureDeferred(endpoint({}))).result

    assert (first.status, first.content_type) == (200, CONTENT_TYPE_LATEST)
    assert metadata.reads == 2
    parse = lambda response: {  # noqa: E731
        (s.name, frozenset(s.labels.items())): s.value
        for f in text_string_to_metric_families(response.body.decode()) for s in f.samples
    }
    assert value(parse(first), "s3orchestrator_store_used_bytes", store="a") == 10
    assert value(parse(second), "s3orchestrator_store_used_bytes", store="a") == 25
    assert value(parse(second), "s3orchestrator_store_objects", store="a") == 2


# -- the hooks: S3Handler, UploadBody, S3Store ----------------------------------------------------


def test_handler_reports_every_answered_request() -> None:
    metrics = Metrics()
    handler = S3Handler(None, lambda key: None, Clock(), metrics=metrics)  # type: ignore[arg-type]
    site = S3Site(handler, timeout=60, reactor=Clock())
    channel = site.buildProtocol(None)
    transport = RecordingStringTransport()
    channel.makeConnection(transport)

    # No signature: refused before its operation is known.
    channel.dataReceived(b"GET /bkt/key HTTP/1.1\r\nHost: s3.test\r\n\r\n")

    head, _, body = transport.value().partition(b"\r\n\r\n")
    status = head.split(b" ")[1].decode()
    assert status.startswith("4") and body
    samples = scrape(metrics)
    assert value(samples, "s3orchestrator_requests_total", operation="Unknown", status=status) == 1
    assert value(samples, "s3orchestrator_request_bytes_total", direction="out") == len(body)
    assert value(samples, "s3orchestrator_request_bytes_total", direction="in") == 0
    assert value(samples, "s3orchestrator_request_duration_seconds_count", operation="Unknown") == 1


def test_upload_body_counts_the_decoded_payload_bytes_it_received() -> None:
    data = b"hello, metrics"
    crc = base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()
    raw = b"%x\r\n%s\r\n0\r\nx-amz-checksum-crc32:%s\r\n\r\n" % (len(data), data, crc.encode())
    headers = {
        "x-amz-decoded-content-length": [str(len(data))],
        "x-amz-trailer": ["x-amz-checksum-crc32"],
        "content-encoding": ["aws-chunked"],
    }
    auth = auth_result(PayloadMode.STREAMING_UNSIGNED_TRAILER)
    body = UploadBody(RecordingTransport(), lambda on_data: PayloadVerifier(auth, headers, on_data), lambda: None)
    body.startProducing(CollectingConsumer())
    for index in range(0, len(raw), 5):
        body.dataReceived(raw[index:index + 5])
    body.bodyComplete()

    assert Outcome(body.verified).succeeded
    assert body.received == len(data)  # aws-chunked framing and trailer not counted


class Upstream:
    """A Harness (S3Store over a fake S3) whose store reports to a Metrics."""

    def __init__(self, **overrides: Any) -> None:
        self.h = Harness(**overrides)
        self.metrics = Metrics()
        self.h.store.observer = self.metrics.upstream_finished

    def count(self, operation: str, outcome: str) -> float:
        return value(scrape(self.metrics), "s3orchestrator_upstream_requests_total", store="up",
                     operation=operation, outcome=outcome)

    def total(self) -> float:
        return sum(v for (name, _), v in scrape(self.metrics).items()
                   if name == "s3orchestrator_upstream_requests_total")


def test_store_reports_each_successful_request_once() -> None:
    up = Upstream()
    up.h.put("app/k", b"abc")
    assert up.h.get("app/k") == b"abc"
    up.h.result(up.h.store.delete("app/k"))
    up.h.result(up.h.store.probe())

    assert [up.count(op, "ok") for op in ("PUT", "GET", "DELETE", "HeadBucket")] == [1, 1, 1, 1]
    assert up.total() == 4
    samples = scrape(up.metrics)
    assert value(samples, "s3orchestrator_upstream_request_duration_seconds_count", store="up", operation="GET") == 1


def test_store_reports_a_missing_object_as_4xx() -> None:
    up = Upstream()
    up.h.failure(up.h.store.open_read("app/none", None), ObjectMissing)
    assert up.count("GET", "4xx") == 1
    assert up.total() == 1


def test_store_reports_an_upstream_error_status_by_its_class() -> None:
    up = Upstream()
    up.h.fake.objects[b"app/k"] = b"x"
    up.h.fake.errors["GET"] = (503, "SlowDown")
    up.h.failure(up.h.store.open_read("app/k", None), StoreUnavailable)
    up.h.fake.errors["PUT"] = (403, "AccessDenied")
    up.h.failure(up.h.store.start_write("app/k", FakeBody([b"x"]), 1).done, StoreMisconfigured)

    assert up.count("GET", "5xx") == 1
    assert up.count("PUT", "4xx") == 1
    assert up.total() == 2


def test_store_reports_a_connection_failure_as_error() -> None:
    metrics = Metrics()
    store = S3Store(config(), Clock(), agent=FailingAgent(ConnectionRefusedError()), observer=metrics.upstream_finished)
    Outcome(store.probe())
    assert value(scrape(metrics), "s3orchestrator_upstream_requests_total", store="up", operation="HeadBucket",
                 outcome="error") == 1


def test_store_reports_silence_as_timeout() -> None:
    up = Upstream()
    up.h.fake.hold = True
    write = up.h.store.start_write("app/k", FakeBody([b"abc"]), 3)
    up.h.flush()
    up.h.clock.advance(TIMEOUT)
    up.h.failure(write.done, StoreUnavailable)

    assert up.count("PUT", "timeout") == 1
    assert up.total() == 1
    assert value(scrape(up.metrics), "s3orchestrator_upstream_request_duration_seconds_sum", store="up",
                 operation="PUT") == TIMEOUT


def test_store_reports_an_aborted_write_as_cancelled() -> None:
    up = Upstream()
    write = up.h.store.start_write("app/k", FakeBody([b"ab"], length=3, hold=True), 3)
    up.h.flush()
    write.abort()
    up.h.failure(write.done, CancelledError)
    up.h.flush()

    assert up.count("PUT", "cancelled") == 1
    assert up.total() == 1


def test_store_reports_a_download_the_client_left_as_cancelled() -> None:
    up = Upstream()
    up.h.fake.objects[b"app/k"] = b"x" * 100
    reader = up.h.result(up.h.store.open_read("app/k", None))
    reader.cancel()

    assert up.count("GET", "cancelled") == 1
    assert up.total() == 1


def test_a_broken_observer_does_not_break_the_request() -> None:
    h = Harness()

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("observer bug")

    h.store.observer = broken
    h.put("app/k", b"abc")
    assert h.get("app/k") == b"abc"


def test_the_instance_is_named_by_an_info_metric_with_its_lease_counters() -> None:
    lease = InstanceLease(None, "node-a", 30, Clock())  # type: ignore[arg-type]
    lease.renewals, lease.failures, lease.lapses = 5, 2, 1
    samples = scrape(Metrics(instance_id="node-a", lease=lease))
    assert value(samples, "s3orchestrator_instance_info", instance_id="node-a") == 1
    assert value(samples, "s3orchestrator_instance_lease_renewals_total") == 5
    assert value(samples, "s3orchestrator_instance_lease_failures_total") == 2
    assert value(samples, "s3orchestrator_instance_lease_lapses_total") == 1


def test_reservations_the_reaper_released_are_counted() -> None:
    reaper = ReaperJob(None, dict, 60, Clock())  # type: ignore[arg-type]
    reaper.released = 3
    samples = scrape(Metrics(jobs=lambda: {"reaper": reaper}))
    assert value(samples, "s3orchestrator_reaper_released_reservations_total") == 3


# -- monthly traffic and caps ----------------------------------------------------------------------


def test_the_stores_monthly_traffic_and_caps_are_gauges_read_at_scrape_time() -> None:
    report = [
        {"name": "s1", "period_start": "2026-12-01", "period_end": "2027-01-01", "cap_mode": "hard",
         "egress_bytes": 120, "ingress_bytes": 7, "requests_a": 2, "requests_b": 5, "requests_other": 1,
         "requests": 8, "caps": {"egress_bytes": 100, "class_b_requests": 50, "requests": 1000},
         "reached": ["egress_bytes"]},
    ]
    metrics = Metrics(traffic=lambda: report)

    found = scrape(metrics)

    assert value(found, "s3orchestrator_store_month_bytes", store="s1", direction="egress") == 120
    assert value(found, "s3orchestrator_store_month_bytes", store="s1", direction="ingress") == 7
    assert [value(found, "s3orchestrator_store_month_requests", store="s1", **{"class": c}) for c in "ab"] == [2, 5]
    assert value(found, "s3orchestrator_store_month_requests", store="s1", **{"class": "other"}) == 1
    assert value(found, "s3orchestrator_store_month_cap_bytes", store="s1", direction="egress") == 100
    assert value(found, "s3orchestrator_store_month_cap_requests", store="s1", **{"class": "b"}) == 50
    assert value(found, "s3orchestrator_store_month_cap_requests", store="s1", **{"class": "all"}) == 1000
    assert value(found, "s3orchestrator_store_month_cap_reached", store="s1", cap="egress_bytes") == 1
    assert value(found, "s3orchestrator_store_month_cap_reached", store="s1", cap="requests") == 0
    assert ("s3orchestrator_store_month_cap_bytes", frozenset({("store", "s1"), ("direction", "ingress")})) not in found
