"""The supervisor's /metrics: every worker's metrics with a worker label, and its own."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from s3orchestrator.workers.metrics import labelled_families, render, worker_families
from s3orchestrator.workers.pool import Worker


def exposition(requests: int, duration: float) -> str:
    """A worker's exposition: a labelled counter and a histogram."""
    registry = CollectorRegistry()
    counter = Counter("s3orchestrator_requests", "S3 requests.", ["operation"], registry=registry)
    counter.labels("GetObject").inc(requests)
    histogram = Histogram("s3orchestrator_request_duration_seconds", "Durations.", buckets=(0.1, 1.0),
                          registry=registry)
    histogram.observe(duration)
    return generate_latest(registry).decode()


def samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text.decode())
        for sample in family.samples
        if not sample.name.endswith("_created")
    }


def test_every_sample_gets_its_worker_label_and_each_family_appears_once() -> None:
    text = render(labelled_families({2: exposition(5, 0.5), 1: exposition(3, 0.05)}))
    found = samples(text)
    assert found[("s3orchestrator_requests_total", (("operation", "GetObject"), ("worker", "1")))] == 3
    assert found[("s3orchestrator_requests_total", (("operation", "GetObject"), ("worker", "2")))] == 5
    assert found[("s3orchestrator_request_duration_seconds_bucket", (("le", "0.1"), ("worker", "1")))] == 1
    assert found[("s3orchestrator_request_duration_seconds_bucket", (("le", "0.1"), ("worker", "2")))] == 0
    assert found[("s3orchestrator_request_duration_seconds_count", (("worker", "2"),))] == 1
    assert text.count(b"# TYPE s3orchestrator_requests_total counter") == 1
    assert text.count(b"# TYPE s3orchestrator_request_duration_seconds histogram") == 1


def test_worker_families_say_which_workers_serve_and_how_often_each_restarted() -> None:
    workers = [Worker(1, ready=True, restarts=0), Worker(2, ready=False, restarts=3)]
    found = samples(render(worker_families(workers)))
    assert found == {
        ("s3orchestrator_worker_up", (("worker", "1"),)): 1,
        ("s3orchestrator_worker_up", (("worker", "2"),)): 0,
        ("s3orchestrator_worker_restarts_total", (("worker", "1"),)): 0,
        ("s3orchestrator_worker_restarts_total", (("worker", "2"),)): 3,
    }


def test_no_worker_answering_leaves_the_supervisors_own_metrics() -> None:
    assert render(labelled_families({})) == b""
