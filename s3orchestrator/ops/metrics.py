"""Prometheus metrics (prometheus_client, API of 0.16 and later) and the ``/metrics`` endpoint.

``Metrics`` owns its own ``CollectorRegistry``: never the process-wide default
one, so any number of daemons (tests start many) keep separate counts. The web
layer reports every S3 request (``request_finished``), the upstream S3 stores
every upstream request (``upstream_finished``). Store usage, health, uploads in
progress and job counters are not kept here: a collector reads them at scrape
time from a status snapshot (``ops.status.status_snapshot``) that the endpoint
takes just before rendering, and from the job objects.

Metric names (counters carry the ``_total`` suffix in the exposition):

- ``s3orchestrator_requests_total{operation,status}``: S3 requests answered.
  ``status`` is the HTTP status sent, ``client_gone`` when the client went away
  before its answer was complete, ``aborted`` when a download broke after its
  headers were sent. ``operation`` is ``Unknown`` for requests refused before
  their operation was known (authentication failures).
- ``s3orchestrator_request_duration_seconds{operation}``: histogram, from
  request headers received to the answer's last byte.
- ``s3orchestrator_request_bytes_total{direction}``: ``in``: request payload
  bytes read (object data and XML documents, aws-chunked framing removed);
  ``out``: response body bytes sent.
- ``s3orchestrator_upstream_requests_total{store,operation,outcome}``: requests
  to upstream S3 stores (directory stores make none). ``outcome``: ``ok``;
  ``4xx`` / ``5xx`` (the upstream answered with that class of error status);
  ``timeout`` (no progress for the store's ``timeout``); ``cancelled`` (we
  dropped it: the client went away, its body failed, the write was aborted);
  ``error`` (no usable answer: connection refused or reset, a truncated body, a
  2xx that is not what was asked for).
- ``s3orchestrator_upstream_request_duration_seconds{store,operation}``: histogram,
  from sending the request to its end (the last body byte of a download).
- ``s3orchestrator_store_used_bytes``, ``_reserved_bytes``, ``_quota_bytes``
  (0: unlimited), ``_objects``, ``_up`` (1 healthy, 0 down), all ``{store}``.
- ``s3orchestrator_multipart_uploads{store}``: multipart uploads in progress.
- ``s3orchestrator_cleanup_queue{store}``, ``s3orchestrator_cleanup_queue_bytes{store}``:
  entries and bytes queued for removal (deleted or replaced objects' bytes a store has
  not deleted yet; counted in used bytes until gone).
- ``s3orchestrator_intents_pending``: write intents recorded (writes in flight, and
  those of dead writers the reaper has not resolved yet).
- ``s3orchestrator_objects_lost``: objects whose every copy was found missing or
  damaged (the last one kept): their GET answers 500 until the bytes are back or they
  are overwritten or deleted (the manhole's ``lost_objects()`` lists them). Alert on
  anything above 0.
- ``s3orchestrator_reaper_resolutions_total{outcome}``: dead writers' intents resolved:
  ``adopted`` (the copy was live), ``deleted`` (partial bytes removed), ``queued``
  (the store failed: the bytes went to the cleanup queue).
- ``s3orchestrator_reaper_released_reservations_total``: reservations without a write
  intent (multipart parts in flight) of dead instances the reaper released.
- ``s3orchestrator_read_failovers_total{store}``: copies on the store a GET gave up
  on (it failed to open, was missing or damaged, or its store died mid-stream) and
  went on to the next copy or failed.
- ``s3orchestrator_read_copies_missing_total{store}``: copies reads found missing or
  damaged on the store (each is let go and re-made by the replicator, see README "Replicas").
- ``s3orchestrator_scrub_copies_checked_total{kind}``: copies the scrubber checked (on
  this instance, while it runs the scrub job): ``stat`` (size and ETag as the store
  describes them), ``checksum`` (every byte read: a directory store's copies).
- ``s3orchestrator_scrub_bytes_read_total``: bytes the scrubber's full reads read.
- ``s3orchestrator_scrub_copies_damaged_total{store}``, ``_missing_total{store}``: copies
  it found damaged (another size, ETag or MD5) or missing (let go, unless held or kept);
  ``_held_total{store}``: those of them left alone because their store is suspended;
  ``_kept_total{store}``: those kept because they were their object's only live copy;
  ``s3orchestrator_scrub_copies_repaired_total``: copies it made again from a good one
  (the others are left to the replicator); ``_skipped_total``: copies it could not
  check (store down or failing) or left as they were (a write claimed the location, the
  object changed); ``_unverifiable_total``: full reads whose ETag the bytes cannot give
  (only their length was checked).
- ``s3orchestrator_scrub_last_pass_timestamp_seconds{kind}``: when the last pass of each
  kind finished (as of the scrubber's last run; absent: none yet).
- ``s3orchestrator_scrub_store_suspended{store}``: 1 while the scrubber lets no copy of
  the store go (too many findings in a pass; lifted by ``s3orchestrator scrub --now``),
  else 0 (as of the scrubber's last look, on the instance running it).
- ``s3orchestrator_instance_info{instance_id}``: always 1; names this process as
  the metadata knows it (its reservations, write intents and logs carry the id).
- ``s3orchestrator_instance_lease_renewals_total``, ``_lease_failures_total``,
  ``_lease_lapses_total``: heartbeats that renewed this instance's lease, that failed,
  and renewals that found it expired (the reaper may have released its reservations).
- ``s3orchestrator_metadata_up``: 1 while the metadata database answers, 0 while it
  is unavailable (degraded mode; the store gauges are then left out).
- ``s3orchestrator_store_month_bytes{store,direction}``: bytes read from (``egress``)
  and written to (``ingress``) the store this billing period, by every instance
  sharing the metadata database (as of the last sync, plus this one's since).
- ``s3orchestrator_store_month_requests{store,class}``: requests to the store this
  period, by billing class: ``a`` (writes, copies, multipart), ``b`` (reads, HEADs,
  health probes), ``other`` (deletes, aborts).
- ``s3orchestrator_store_month_cap_bytes{store,direction}``,
  ``s3orchestrator_store_month_cap_requests{store,class}`` (``class``: ``a``, ``b``,
  ``all``): the store's monthly caps, those set only.
- ``s3orchestrator_store_month_cap_reached{store,cap}``: 1 once the store's traffic
  reached the cap this period (``cap``: ``egress_bytes``, ``ingress_bytes``,
  ``requests``, ``class_a_requests``, ``class_b_requests``), else 0.
- ``s3orchestrator_movement_*`` (see ``ops.movement.movement_metrics``): ``_paused``;
  ``_store_mode{store,mode}`` (1); ``_store_drained{store}`` (drain stores: 1 once empty);
  per ``{reason,store}`` (reason ``drain`` or ``rebalance``, store the source):
  ``_moved_objects``, ``_moved_bytes``, ``_left_objects``, ``_left_bytes``, ``_failing``,
  ``_bytes_per_second`` (average since the moves started) and ``_eta_seconds``.
- ``s3orchestrator_job_runs_total{job}``, ``s3orchestrator_job_failures_total{job}``:
  finished runs of each background job, and its failures (runs that raised,
  plus the items of work it could not do, e.g. uploads expiry could not abort).
- ``s3orchestrator_job_leader{job}``: 1 while this instance holds the lease of a
  cluster-wide job (and so runs it for every instance sharing the metadata database),
  0 while another does (jobs every instance runs, health checks, are left out).
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable, Iterator, Mapping, Sequence

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from twisted.internet.defer import CancelledError

from s3orchestrator.errors import S3Error
from s3orchestrator.ops.endpoints import OpsEndpoint, OpsResponse
from s3orchestrator.ops.movement import movement_metrics
from s3orchestrator.web.body import ClientGone

__all__ = [
    "DURATION_BUCKETS",
    "Metrics",
    "metrics_endpoint",
    "request_status_label",
    "upstream_outcome",
]

#: Latency buckets (seconds): 1 ms to 60 s, then +Inf. Small requests answer in
#: milliseconds; big transfers and slow upstreams take seconds to minutes.
DURATION_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0, float("inf"),
)

JobSource = Callable[[], Mapping[str, Any]]


def request_status_label(status: int | str) -> str:
    """The ``status`` label of an S3 request as the handler logs it: ``"200"``,
    ``"client_gone"`` (for ``client-gone``), ``"aborted"`` (for ``NNN-aborted``)."""
    if isinstance(status, int):
        return str(status)
    if status.endswith("-aborted"):
        return "aborted"
    return status.replace("-", "_")


def upstream_outcome(status: int | None, error: BaseException | None, timed_out: bool = False) -> str:
    """The ``outcome`` label of an upstream request (see the module docstring)."""
    if timed_out:
        return "timeout"
    if error is None:
        return "ok"
    if isinstance(error, (CancelledError, ClientGone, S3Error)):
        # Ours, not the upstream's: we cancelled it, or the client's body failed.
        return "cancelled"
    if status is not None and 400 <= status < 600:
        return f"{status // 100}xx"
    return "error"


class Metrics:
    """The daemon's metrics, in a registry of their own (``registry``)."""

    def __init__(
        self, jobs: JobSource | None = None, reads: Callable[[], Any] | None = None,
        metadata_up: Callable[[], bool] | None = None, instance_id: str | None = None, lease: Any = None,
        traffic: Callable[[], Sequence[Mapping[str, Any]]] | None = None,
    ) -> None:
        self.registry = CollectorRegistry()
        self._instance_id = instance_id
        # The InstanceLease (``renewals``, ``failures``, ``lapses``), or None.
        self._lease = lease
        # The stores' monthly traffic against their caps (``TrafficLedger.report``).
        self._traffic = traffic
        self._jobs = jobs
        # Placement's ReadCounters (``failovers``, ``copies_missing``: counts by store).
        self._reads = reads
        self._metadata_up = metadata_up
        self._status: Mapping[str, Any] | None = None
        self.requests = Counter(
            "s3orchestrator_requests", "S3 requests answered, by operation and status.",
            ["operation", "status"], registry=self.registry,
        )
        self.request_duration = Histogram(
            "s3orchestrator_request_duration_seconds", "Time to answer an S3 request, by operation.",
            ["operation"], buckets=DURATION_BUCKETS, registry=self.registry,
        )
        self.request_bytes = Counter(
            "s3orchestrator_request_bytes",
            "S3 payload bytes: in = request bodies read (aws-chunked framing removed), out = response bodies sent.",
            ["direction"], registry=self.registry,
        )
        self.upstream_requests = Counter(
            "s3orchestrator_upstream_requests",
            "Requests to upstream S3 stores, by store, operation and outcome"
            " (ok, 4xx, 5xx, timeout, cancelled, error).",
            ["store", "operation", "outcome"], registry=self.registry,
        )
        self.upstream_duration = Histogram(
            "s3orchestrator_upstream_request_duration_seconds",
            "Duration of requests to upstream S3 stores, by store and operation.",
            ["store", "operation"], buckets=DURATION_BUCKETS, registry=self.registry,
        )
        # Both directions exist from the start: rate() needs a series before it moves.
        self._bytes_in = self.request_bytes.labels(direction="in")
        self._bytes_out = self.request_bytes.labels(direction="out")
        # The children of each label set, kept: labels() takes a lock and builds a key on
        # every call, a measurable part of a small request's CPU (the sets are few).
        self._request_children: dict[tuple[str, int | str], tuple[Any, Any]] = {}
        self._upstream_children: dict[tuple[str, str, str], tuple[Any, Any]] = {}
        self.registry.register(_StateCollector(self))

    # -- what the code reports --------------------------------------------------------------

    def request_finished(
        self, operation: str, status: int | str, bytes_in: int, bytes_out: int, seconds: float
    ) -> None:
        """One S3 request was answered (or given up on); ``status`` as the handler logs it."""
        children = self._request_children.get((operation, status))
        if children is None:
            children = self._request_children[operation, status] = (
                self.requests.labels(operation=operation, status=request_status_label(status)),
                self.request_duration.labels(operation=operation),
            )
        children[0].inc()
        children[1].observe(max(seconds, 0.0))
        if bytes_in:
            self._bytes_in.inc(bytes_in)
        if bytes_out:
            self._bytes_out.inc(bytes_out)

    def upstream_finished(
        self,
        store: str,
        operation: str,
        status: int | None,
        error: BaseException | None,
        seconds: float,
        *,
        timed_out: bool = False,
    ) -> None:
        """One upstream request ended: answered ``status`` (None: no answer), failed with
        ``error`` (None: it worked), after ``seconds``; ``timed_out`` if the watchdog fired."""
        outcome = upstream_outcome(status, error, timed_out)
        children = self._upstream_children.get((store, operation, outcome))
        if children is None:
            children = self._upstream_children[store, operation, outcome] = (
                self.upstream_requests.labels(store=store, operation=operation, outcome=outcome),
                self.upstream_duration.labels(store=store, operation=operation),
            )
        children[0].inc()
        children[1].observe(max(seconds, 0.0))

    def set_status(self, status: Mapping[str, Any]) -> None:
        """The status snapshot (``status_snapshot``) the store gauges are read from."""
        self._status = status

    # -- exposition ---------------------------------------------------------------------------

    def render(self) -> bytes:
        """The text exposition of every metric."""
        return generate_latest(self.registry)

    def _state(self) -> Iterator[Metric]:
        labels = ["store"]
        used = GaugeMetricFamily("s3orchestrator_store_used_bytes", "Bytes of objects held by the store.",
                                 labels=labels)
        reserved = GaugeMetricFamily("s3orchestrator_store_reserved_bytes",
                                     "Bytes reserved for uploads to the store in progress.", labels=labels)
        quota = GaugeMetricFamily("s3orchestrator_store_quota_bytes", "The store's quota in bytes (0: unlimited).",
                                  labels=labels)
        objects = GaugeMetricFamily("s3orchestrator_store_objects", "Objects held by the store.", labels=labels)
        up = GaugeMetricFamily("s3orchestrator_store_up", "1 if the store is healthy, 0 if it is down.",
                               labels=labels)
        uploads = GaugeMetricFamily("s3orchestrator_multipart_uploads", "Multipart uploads in progress.",
                                    labels=labels)
        cleanup = GaugeMetricFamily("s3orchestrator_cleanup_queue", "Entries queued for removal from the store.",
                                    labels=labels)
        cleanup_bytes = GaugeMetricFamily("s3orchestrator_cleanup_queue_bytes",
                                          "Bytes queued for removal from the store.", labels=labels)
        status = self._status
        for store in (status or {}).get("stores", ()):
            name = [store["name"]]
            used.add_metric(name, store["used_bytes"])
            reserved.add_metric(name, store["reserved_bytes"])
            quota.add_metric(name, store["quota_bytes"])
            objects.add_metric(name, store["objects"])
            up.add_metric(name, 1 if store["healthy"] else 0)
            uploads.add_metric(name, store["uploads"])
            cleanup.add_metric(name, store.get("cleanup_queue", 0))
            cleanup_bytes.add_metric(name, store.get("cleanup_bytes", 0))
        yield from (used, reserved, quota, objects, up, uploads, cleanup, cleanup_bytes)
        if status is not None and "intents_pending" in status:
            intents = GaugeMetricFamily("s3orchestrator_intents_pending", "Write intents recorded, not resolved.")
            intents.add_metric([], status["intents_pending"])
            yield intents
        if status is not None and "objects_lost" in status:
            lost = GaugeMetricFamily(
                "s3orchestrator_objects_lost",
                "Objects with no live copy left (every copy missing or damaged): unreadable until overwritten.",
            )
            lost.add_metric([], status["objects_lost"])
            yield lost

        runs = CounterMetricFamily("s3orchestrator_job_runs", "Finished runs of a background job.", labels=["job"])
        failures = CounterMetricFamily(
            "s3orchestrator_job_failures",
            "Failures of a background job: runs that raised, plus work items it could not do.",
            labels=["job"],
        )
        jobs = self._jobs() if self._jobs is not None else {}
        leader = GaugeMetricFamily(
            "s3orchestrator_job_leader",
            "1 while this instance runs a cluster-wide job (holds its lease), 0 while another does.",
            labels=["job"],
        )
        for job_name, job in jobs.items():
            runs.add_metric([job_name], getattr(job, "runs", 0))
            failures.add_metric([job_name], job_failures(job))
            lease = getattr(job, "lease", None)
            if lease is not None:
                leader.add_metric([job_name], 1 if lease.leads else 0)
        yield from (runs, failures, leader)
        resolutions = CounterMetricFamily(
            "s3orchestrator_reaper_resolutions", "Dead writers' intents the reaper resolved, by outcome.",
            labels=["outcome"],
        )
        released = CounterMetricFamily(
            "s3orchestrator_reaper_released_reservations",
            "Reservations without a write intent (multipart parts in flight) of dead instances the reaper released.",
        )
        released_total = 0
        for job in jobs.values():
            for outcome, count in getattr(job, "resolutions", {}).items():
                resolutions.add_metric([outcome], count)
            released_total += getattr(job, "released", 0)
        released.add_metric([], released_total)
        yield from (resolutions, released)
        failovers = CounterMetricFamily(
            "s3orchestrator_read_failovers",
            "Copies on a store a read gave up on (it went on to another copy or failed).",
            labels=["store"],
        )
        found_missing = CounterMetricFamily(
            "s3orchestrator_read_copies_missing", "Copies reads found missing or damaged on a store.", labels=["store"]
        )
        if self._reads is not None:
            counters = self._reads()
            for store, count in sorted(counters.failovers.items()):
                failovers.add_metric([store], count)
            for store, count in sorted(counters.copies_missing.items()):
                found_missing.add_metric([store], count)
        yield from (failovers, found_missing)

        yield from self._instance_metrics()
        if self._metadata_up is not None:
            yield GaugeMetricFamily(
                "s3orchestrator_metadata_up",
                "1 if the metadata database answers, 0 while it is unavailable (degraded mode).",
                value=1 if self._metadata_up() else 0,
            )
        replicator = jobs.get("replicator")
        if replicator is not None:
            yield from replication_metrics(replicator, replicator.clock.seconds())
        scrub = jobs.get("scrub")
        if scrub is not None:
            yield from scrub_metrics(scrub)
        if self._traffic is not None:
            yield from traffic_metrics(self._traffic())
        if status is not None and "movement" in status:
            yield from movement_metrics(status["movement"])

    def _instance_metrics(self) -> Iterator[Metric]:
        if self._instance_id is not None:
            info = GaugeMetricFamily("s3orchestrator_instance_info", "This process's instance id.",
                                     labels=["instance_id"])
            info.add_metric([self._instance_id], 1)
            yield info
        if self._lease is not None:
            for name, text in (
                ("renewals", "Heartbeats that renewed this instance's lease."),
                ("failures", "Heartbeats that failed to renew this instance's lease."),
                ("lapses", "Heartbeats that found this instance's lease expired."),
            ):
                counter = CounterMetricFamily(f"s3orchestrator_instance_lease_{name}", text)
                counter.add_metric([], getattr(self._lease, name))
                yield counter


#: The ``direction`` or ``class`` label of each cap's gauge.
_CAP_LABELS = {
    "egress_bytes": "egress", "ingress_bytes": "ingress",
    "class_a_requests": "a", "class_b_requests": "b", "requests": "all",
}


def traffic_metrics(stores: Sequence[Mapping[str, Any]]) -> Iterator[Metric]:
    """The stores' monthly traffic and caps, from ``TrafficLedger.report()``."""
    month_bytes = GaugeMetricFamily("s3orchestrator_store_month_bytes",
                                    "Bytes read from (egress) and written to (ingress) the store this billing period.",
                                    labels=["store", "direction"])
    month_requests = GaugeMetricFamily("s3orchestrator_store_month_requests",
                                       "Requests to the store this billing period, by billing class (a, b, other).",
                                       labels=["store", "class"])
    cap_bytes = GaugeMetricFamily("s3orchestrator_store_month_cap_bytes",
                                  "The store's monthly egress and ingress caps in bytes.",
                                  labels=["store", "direction"])
    cap_requests = GaugeMetricFamily("s3orchestrator_store_month_cap_requests",
                                     "The store's monthly request caps, by class (a, b, all).",
                                     labels=["store", "class"])
    reached = GaugeMetricFamily("s3orchestrator_store_month_cap_reached",
                                "1 if the store reached the monthly cap this billing period.", labels=["store", "cap"])
    for store in stores:
        name = store["name"]
        month_bytes.add_metric([name, "egress"], store["egress_bytes"])
        month_bytes.add_metric([name, "ingress"], store["ingress_bytes"])
        for request_class in ("a", "b", "other"):
            month_requests.add_metric([name, request_class], store[f"requests_{request_class}"])
        for cap, limit in store["caps"].items():
            (cap_bytes if cap.endswith("_bytes") else cap_requests).add_metric([name, _CAP_LABELS[cap]], limit)
            reached.add_metric([name, cap], 1 if cap in store["reached"] else 0)
    yield from (month_bytes, month_requests, cap_bytes, cap_requests, reached)


def replication_metrics(replicator: Any, now: float) -> Iterator[Metric]:
    """The replicator's gauges (as of its last run) and counters."""
    missing = GaugeMetricFamily("s3orchestrator_copies_missing",
                                "Copies of objects the replicator has still to make (as of its last run).")
    missing.add_metric([], replicator.missing)
    queue = GaugeMetricFamily("s3orchestrator_replication_queue",
                              "Objects waiting for the replicator (as of its last run).")
    queue.add_metric([], replicator.queued)
    lag = GaugeMetricFamily("s3orchestrator_replication_lag_seconds",
                            "Age of the oldest missing copy (0: none missing).")
    lag.add_metric([], 0 if replicator.oldest_ms is None else max(0.0, now - replicator.oldest_ms / 1000))
    copies = CounterMetricFamily("s3orchestrator_replicated_copies", "Copies the replicator made.")
    copies.add_metric([], replicator.copies)
    size = CounterMetricFamily("s3orchestrator_replicated_bytes", "Bytes the replicator copied.")
    size.add_metric([], replicator.bytes)
    yield from (missing, queue, lag, copies, size)

def scrub_metrics(scrub: Any) -> Iterator[Metric]:
    """The scrubber's counters and when its passes last finished."""
    checked = CounterMetricFamily("s3orchestrator_scrub_copies_checked", "Copies the scrubber checked, by kind.",
                                  labels=["kind"])
    for kind, count in sorted(scrub.checked.items()):
        checked.add_metric([kind], count)
    yield checked
    yield CounterMetricFamily("s3orchestrator_scrub_bytes_read", "Bytes the scrubber's full reads read.",
                              value=scrub.bytes_read)
    for name, counts, text in (
        ("damaged", scrub.damaged, "Copies the scrubber found damaged, by store."),
        ("missing", scrub.missing, "Copies the scrubber found missing, by store."),
        ("held", scrub.held, "Copies found wrong and left alone: their store is suspended, by store."),
        ("kept", scrub.kept, "Copies found wrong and kept: their object's only live copy, by store."),
    ):
        family = CounterMetricFamily(f"s3orchestrator_scrub_copies_{name}", text, labels=["store"])
        for store, count in sorted(counts.items()):
            family.add_metric([store], count)
        yield family
    for name, value, text in (
        ("repaired", scrub.repaired, "Copies the scrubber made again from a good one."),
        ("skipped", scrub.skipped, "Copies the scrubber could not check, or left as they were."),
        ("unverifiable", scrub.unverifiable, "Full reads whose ETag the bytes cannot give (length checked only)."),
    ):
        yield CounterMetricFamily(f"s3orchestrator_scrub_copies_{name}", text, value=value)
    last = GaugeMetricFamily("s3orchestrator_scrub_last_pass_timestamp_seconds",
                             "When the scrubber's last pass of each kind finished.", labels=["kind"])
    for kind, scrub_pass in sorted(scrub.passes.items()):
        if scrub_pass.finished_ms is not None:
            last.add_metric([kind], scrub_pass.finished_ms / 1000)
    yield last
    suspended = GaugeMetricFamily("s3orchestrator_scrub_store_suspended",
                                  "1 while the scrubber lets no copy of the store go (too many findings).",
                                  labels=["store"])
    for store in sorted(set(scrub.store_names()) | set(scrub.suspended)):
        suspended.add_metric([store], 1 if store in scrub.suspended else 0)
    yield suspended


def job_failures(job: Any) -> int:
    """A job's failures: ``errors`` (runs that raised) plus ``failures`` where the job
    counts items it could not do (MultipartExpiryJob; a HealthCheckJob's failed probes
    are store outages, not failures of the job)."""
    return int(getattr(job, "errors", 0)) + int(getattr(job, "failures", 0))


class _StateCollector:
    """Reads the store gauges and job counters at scrape time."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        return self._metrics._state()


def metrics_endpoint(metrics: Metrics, refresh: Callable[[], Awaitable[Mapping[str, Any]]]) -> OpsEndpoint:
    """``/metrics``: takes a status snapshot (``refresh()``, e.g. ``status_snapshot``),
    then answers the exposition of every metric."""

    async def endpoint(headers: Mapping[str, str]) -> OpsResponse:
        metrics.set_status(await refresh())
        return OpsResponse(200, CONTENT_TYPE_LATEST, metrics.render())

    return endpoint
