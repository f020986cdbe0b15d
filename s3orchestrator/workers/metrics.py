"""One Prometheus exposition for all workers: each worker's metrics with a ``worker``
label, plus the supervisor's own (``s3orchestrator_worker_up{worker}``, 1 while the
worker serves, and ``s3orchestrator_worker_restarts_total{worker}``)."""

from __future__ import annotations

from typing import Iterable, Iterator, Mapping

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families

from s3orchestrator.workers.pool import Worker


def labelled_families(expositions: Mapping[int, str]) -> list[Metric]:
    """The metric families of every worker's exposition (by worker number), each sample
    labelled ``worker``; a family several workers report is one family with all their samples."""
    merged: dict[str, Metric] = {}
    for index, text in sorted(expositions.items()):
        for family in text_string_to_metric_families(text):
            target = merged.get(family.name)
            if target is None:
                target = merged[family.name] = Metric(family.name, family.documentation, family.type, family.unit)
            for sample in family.samples:
                target.add_sample(
                    sample.name, dict(sample.labels, worker=str(index)), sample.value, sample.timestamp,
                    sample.exemplar,
                )
    return list(merged.values())


def worker_families(workers: Iterable[Worker]) -> list[Metric]:
    """The supervisor's own metrics about its workers."""
    up = GaugeMetricFamily("s3orchestrator_worker_up", "1 while the worker process serves, else 0.",
                           labels=["worker"])
    restarts = CounterMetricFamily("s3orchestrator_worker_restarts", "Worker processes restarted after they exited.",
                                   labels=["worker"])
    for worker in workers:
        up.add_metric([str(worker.index)], 1 if worker.ready else 0)
        restarts.add_metric([str(worker.index)], worker.restarts)
    return [up, restarts]


class _Families:
    """A collector yielding fixed families (prometheus_client renders registries only)."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)


def render(families: list[Metric]) -> bytes:
    """``families`` in the Prometheus text format."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(families))
    return generate_latest(registry)
