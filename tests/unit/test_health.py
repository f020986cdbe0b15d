"""Tests for s3orchestrator.jobs.health: the store health state machine and the probing job."""

from __future__ import annotations

from typing import Callable

import pytest
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.logger import LogEvent, LogLevel, formatEvent
from zope.interface import implementer

from s3orchestrator.jobs.health import HealthCheckJob, StoreHealth, StoreStatus
from s3orchestrator.metadata.records import StoreUsage
from s3orchestrator.routing import PACK, SPREAD, choose_store
from s3orchestrator.stores.interface import IObjectStore, StoreUnavailable
from tests.unit.fakes import Outcome

HEALTH_NAMESPACE = "s3orchestrator.jobs.health.StoreHealth"


@implementer(IObjectStore)
class FakeStore:
    """A store whose probe outcome the test controls.

    ``mode`` is "ok", "down" (StoreUnavailable), "hang" (a Deferred the test fires via
    ``pending``), "raise" (synchronous exception) or "bug" (a failing Deferred with a
    non-StoreUnavailable exception).
    """

    def __init__(self, name: str, mode: str = "ok") -> None:
        self.name = name
        self.mode = mode
        self.calls = 0
        self.pending: list[Deferred[None]] = []
        self.cancelled = 0

    def probe(self) -> Deferred[None]:
        self.calls += 1
        if self.mode == "ok":
            return succeed(None)
        if self.mode == "down":
            return fail(StoreUnavailable(f"{self.name}: connection refused"))
        if self.mode == "raise":
            raise RuntimeError("probe blew up synchronously")
        if self.mode == "bug":
            return fail(KeyError("not a StoreUnavailable"))
        assert self.mode == "hang"

        def cancel(d: Deferred[None]) -> None:
            self.cancelled += 1

        d: Deferred[None] = Deferred(cancel)
        self.pending.append(d)
        return d

    @property
    def in_flight(self) -> int:
        return sum(1 for d in self.pending if not d.called)

    def finish(self) -> None:
        """Let every pending probe succeed."""
        for d in self.pending:
            if not d.called:
                d.callback(None)


def transitions(events: list[LogEvent]) -> list[tuple[str, bool]]:
    return [
        (event["store"], event["healthy"])
        for event in events
        if event.get("log_namespace") == HEALTH_NAMESPACE and "healthy" in event
    ]


def make_job(
    stores: dict[str, FakeStore] | Callable[[], dict[str, FakeStore]],
    interval: float = 10.0,
    unhealthy_after: int = 3,
    slow_probe: float = 2.0,
) -> tuple[HealthCheckJob, StoreHealth, Clock]:
    clock = Clock()
    names = stores() if callable(stores) else stores
    health = StoreHealth(list(names), unhealthy_after=unhealthy_after, now=clock.seconds)
    return HealthCheckJob(stores, health, interval, clock, slow_probe=slow_probe), health, clock


def logged(events: list[LogEvent], level: LogLevel = LogLevel.info) -> list[tuple[str, str]]:
    """(level, text) of the health events at ``level`` or above."""
    return [
        (event["log_level"].name, formatEvent(event))
        for event in events
        if event.get("log_namespace", "").startswith("s3orchestrator.jobs.health") and event["log_level"] >= level
    ]


# StoreHealth: the state machine


def test_every_store_starts_healthy() -> None:
    health = StoreHealth(["a", "b"], unhealthy_after=3)
    assert health.healthy() == frozenset({"a", "b"})
    assert health.is_healthy("a") and health.is_healthy("b")
    assert health.snapshot() == {"a": StoreStatus(), "b": StoreStatus()}


def test_failures_below_threshold_keep_store_up() -> None:
    health = StoreHealth(["a"], unhealthy_after=3)
    health.record_failure("a", "timeout")
    health.record_failure("a", "timeout")
    assert health.is_healthy("a")
    assert health.snapshot()["a"] == StoreStatus(
        healthy=True, consecutive_failures=2, last_error="timeout", last_change=None
    )


def test_kth_consecutive_failure_marks_store_down() -> None:
    clock = Clock()
    health = StoreHealth(["a", "b"], unhealthy_after=3, now=clock.seconds)
    clock.advance(42)
    for reason in ("refused", "refused", "503"):
        health.record_failure("a", reason)
    assert not health.is_healthy("a")
    assert health.healthy() == frozenset({"b"})
    assert health.snapshot()["a"] == StoreStatus(
        healthy=False, consecutive_failures=3, last_error="503", last_change=42.0
    )


def test_one_failure_marks_down_when_threshold_is_one() -> None:
    health = StoreHealth(["a"], unhealthy_after=1)
    health.record_failure("a", "refused")
    assert health.healthy() == frozenset()


def test_one_success_marks_down_store_up_again() -> None:
    clock = Clock()
    health = StoreHealth(["a"], unhealthy_after=2, now=clock.seconds)
    health.record_failure("a", "refused")
    health.record_failure("a", "refused")
    clock.advance(7)
    health.record_success("a")
    assert health.is_healthy("a")
    assert health.snapshot()["a"] == StoreStatus(
        healthy=True, consecutive_failures=0, last_error="refused", last_change=7.0
    )


def test_success_between_failures_resets_the_count() -> None:
    health = StoreHealth(["a"], unhealthy_after=3)
    health.record_failure("a", "x")
    health.record_failure("a", "x")
    health.record_success("a")
    health.record_failure("a", "x")
    health.record_failure("a", "x")
    assert health.is_healthy("a")
    assert health.snapshot()["a"].consecutive_failures == 2
    health.record_failure("a", "x")
    assert not health.is_healthy("a")


def test_failures_while_down_keep_counting_without_new_transition(events: list[LogEvent]) -> None:
    health = StoreHealth(["a"], unhealthy_after=2)
    for _ in range(5):
        health.record_failure("a", "refused")
    assert health.snapshot()["a"].consecutive_failures == 5
    assert transitions(events) == [("a", False)]


def test_transitions_are_logged_once_each(events: list[LogEvent]) -> None:
    health = StoreHealth(["a", "b"], unhealthy_after=3)
    for _ in range(6):
        health.record_failure("a", "connection refused")
    for _ in range(3):
        health.record_success("a")
    health.record_success("b")
    assert transitions(events) == [("a", False), ("a", True)]
    down, up = [e for e in events if e.get("log_namespace") == HEALTH_NAMESPACE]
    assert down["reason"] == "connection refused"
    assert down["log_level"].name == "warn"
    assert up["reason"] == "connection refused"


def test_on_change_hook_called_once_per_transition() -> None:
    changes: list[tuple[str, bool]] = []
    health = StoreHealth(["a"], unhealthy_after=2, on_change=lambda name, up: changes.append((name, up)))
    for _ in range(4):
        health.record_failure("a", "x")
    health.record_success("a")
    health.record_success("a")
    assert changes == [("a", False), ("a", True)]


def test_failing_on_change_hook_does_not_break_recording(events: list[LogEvent]) -> None:
    def hook(name: str, up: bool) -> None:
        raise RuntimeError("hook bug")

    health = StoreHealth(["a"], unhealthy_after=1, on_change=hook)
    health.record_failure("a", "x")
    assert health.healthy() == frozenset()
    assert any(e.get("log_failure") is not None for e in events)


def test_outcomes_for_unknown_stores_are_ignored() -> None:
    health = StoreHealth(["a"], unhealthy_after=1)
    health.record_failure("gone", "x")
    health.record_success("gone")
    assert health.healthy() == frozenset({"a"})
    assert not health.is_healthy("gone")
    assert set(health.snapshot()) == {"a"}


def test_set_stores_adds_new_stores_up_and_forgets_removed_ones() -> None:
    health = StoreHealth(["a", "b"], unhealthy_after=1)
    health.record_failure("a", "x")
    health.record_failure("b", "x")
    health.set_stores(["a", "c"])
    assert health.healthy() == frozenset({"c"})
    assert set(health.snapshot()) == {"a", "c"}
    assert not health.snapshot()["a"].healthy  # kept its state
    health.set_stores(["a", "b"])
    assert health.is_healthy("b")  # came back as a new store


def test_unhealthy_after_must_be_positive() -> None:
    with pytest.raises(ValueError):
        StoreHealth(["a"], unhealthy_after=0)


def test_routing_skips_a_down_store() -> None:
    health = StoreHealth(["a", "b"], unhealthy_after=2)
    usage = [
        StoreUsage(name="a", quota_bytes=100, used_bytes=0, reserved_bytes=0),
        StoreUsage(name="b", quota_bytes=100, used_bytes=50, reserved_bytes=0),
    ]
    assert choose_store(PACK, usage, 10, healthy=health.healthy()) == "a"
    assert choose_store(SPREAD, usage, 10, healthy=health.healthy()) == "a"
    health.record_failure("a", "refused")
    health.record_failure("a", "refused")
    assert choose_store(PACK, usage, 10, healthy=health.healthy()) == "b"
    assert choose_store(SPREAD, usage, 10, healthy=health.healthy()) == "b"
    health.record_failure("b", "refused")
    health.record_failure("b", "refused")
    assert choose_store(PACK, usage, 10, healthy=health.healthy()) is None


# HealthCheckJob: the probing


def test_job_probes_every_store_at_start_and_every_interval() -> None:
    stores = {"a": FakeStore("a"), "b": FakeStore("b")}
    job, _, clock = make_job(stores, interval=10)
    job.startService()
    assert [s.calls for s in stores.values()] == [1, 1]
    clock.advance(9.9)
    assert [s.calls for s in stores.values()] == [1, 1]
    clock.advance(0.1)
    assert [s.calls for s in stores.values()] == [2, 2]
    clock.pump([10] * 5)
    assert [s.calls for s in stores.values()] == [7, 7]
    assert job.runs == 7 and job.probes == 14 and job.probe_failures == 0
    job.stopService()


def test_job_marks_store_down_after_k_failed_probes_and_up_after_one_success() -> None:
    stores = {"a": FakeStore("a", "down"), "b": FakeStore("b")}
    job, health, clock = make_job(stores, interval=10, unhealthy_after=3)
    job.startService()
    clock.advance(10)
    assert health.healthy() == frozenset({"a", "b"})  # two failures
    clock.advance(10)
    assert health.healthy() == frozenset({"b"})
    assert health.snapshot()["a"].last_error == "a: connection refused"
    stores["a"].mode = "ok"
    clock.advance(10)
    assert health.healthy() == frozenset({"a", "b"})
    assert job.probe_failures == 3
    job.stopService()


def test_hung_probe_times_out_is_cancelled_and_counts_as_failure() -> None:
    store = FakeStore("a", "hang")
    job, health, clock = make_job({"a": store}, interval=10, unhealthy_after=1)
    done = Outcome(job.run_once())
    clock.advance(9.9)
    assert done.pending and health.is_healthy("a")
    clock.advance(0.1)
    assert done.succeeded
    assert store.cancelled == 1
    assert not health.is_healthy("a")
    assert health.snapshot()["a"].last_error == "health probe timed out after 10s"
    assert job.timeouts == 1 and job.probe_failures == 1 and job.errors == 0


def test_probe_timeout_is_capped_at_30_seconds() -> None:
    store = FakeStore("a", "hang")
    job, health, clock = make_job({"a": store}, interval=120, unhealthy_after=1)
    assert job.probe_timeout == 30
    done = Outcome(job.run_once())
    clock.advance(29.9)
    assert done.pending
    clock.advance(0.1)
    assert done.succeeded and not health.is_healthy("a")


def test_slow_probe_that_answers_in_time_counts_as_success() -> None:
    store = FakeStore("a", "hang")
    job, health, clock = make_job({"a": store}, interval=10, unhealthy_after=1)
    done = Outcome(job.run_once())
    clock.advance(5)
    store.finish()
    assert done.succeeded and health.is_healthy("a")
    assert clock.getDelayedCalls() == []  # the timeout was cancelled


@pytest.mark.parametrize("mode", ["raise", "bug"])
def test_job_keeps_running_after_unexpected_probe_errors(mode: str, events: list[LogEvent]) -> None:
    stores = {"bad": FakeStore("bad", mode), "good": FakeStore("good")}
    job, health, clock = make_job(stores, interval=10, unhealthy_after=2)
    job.startService()
    clock.pump([10] * 4)
    assert stores["bad"].calls == 5 and stores["good"].calls == 5
    assert job.runs == 5 and job.errors == 5 and job.probe_failures == 5
    assert health.healthy() == frozenset({"good"})
    assert health.snapshot()["bad"].last_error.startswith("health probe failed: ")
    assert any(e.get("log_failure") is not None and e.get("store") == "bad" for e in events)
    job.stopService()


def test_job_keeps_running_when_the_store_source_raises() -> None:
    store = FakeStore("a")
    calls = 0

    def stores() -> dict[str, FakeStore]:
        nonlocal calls
        calls += 1
        if calls in (2, 3):  # the first call is make_job's
            raise RuntimeError("reload in a bad state")
        return {"a": store}

    job, _, clock = make_job(stores, interval=10)
    job.startService()
    clock.pump([10] * 3)
    assert store.calls == 2  # runs 3 and 4 probed
    assert job.runs == 4 and job.errors == 2
    job.stopService()


def test_store_source_callable_is_read_at_every_run() -> None:
    a, b = FakeStore("a"), FakeStore("b")
    current = {"a": a}
    job, health, clock = make_job(lambda: current, interval=10)
    job.startService()
    current = {"b": b}
    health.set_stores(["b"])
    clock.advance(10)
    assert (a.calls, b.calls) == (1, 1)
    job.stopService()


def test_runs_never_overlap_while_probes_are_slow() -> None:
    store = FakeStore("a", "hang")
    job, _, clock = make_job({"a": store}, interval=60)  # probes time out after 30 s
    job.startService()
    for _ in range(25):
        clock.advance(1)
        job.run_once()  # a manual run joins the run in flight
    assert store.calls == 1 and store.in_flight == 1
    store.finish()  # the run ends at t=25
    assert job.runs == 1
    clock.advance(34)
    assert store.calls == 1
    clock.advance(1)  # t=60: the next tick
    assert store.calls == 2 and store.in_flight == 1
    clock.advance(30)  # that probe times out
    assert store.in_flight == 0 and job.runs == 2 and store.calls == 2
    job.stopService()


def test_run_once_during_a_run_waits_for_it_without_probing_again() -> None:
    store = FakeStore("a", "hang")
    job, _, clock = make_job({"a": store}, interval=10)
    job.startService()
    second = Outcome(job.run_once())
    assert store.calls == 1 and second.pending
    store.finish()
    assert second.succeeded and job.runs == 1
    job.stopService()


def test_cancelling_a_run_once_wait_does_not_disturb_the_run() -> None:
    store = FakeStore("a", "hang")
    job, health, clock = make_job({"a": store}, interval=10)
    waiting = job.run_once()
    waiting.cancel()
    waiting.addErrback(lambda _: None)
    store.finish()
    assert job.runs == 1 and job.errors == 0 and health.is_healthy("a")


def test_stop_service_stops_probing() -> None:
    store = FakeStore("a")
    job, _, clock = make_job({"a": store}, interval=10)
    job.startService()
    clock.advance(10)
    stopped = Outcome(job.stopService())
    assert stopped.succeeded and not job.running
    clock.advance(1000)
    assert store.calls == 2
    assert clock.getDelayedCalls() == []


def test_stop_service_cancels_probes_in_flight_without_recording_them() -> None:
    store = FakeStore("a", "hang")
    job, health, clock = make_job({"a": store}, interval=10, unhealthy_after=1)
    job.startService()
    stopped = Outcome(job.stopService())
    assert stopped.succeeded
    assert store.cancelled == 1
    assert health.is_healthy("a") and job.probe_failures == 0
    clock.advance(1000)
    assert store.calls == 1 and clock.getDelayedCalls() == []


def test_job_can_be_restarted_after_stop() -> None:
    store = FakeStore("a")
    job, _, clock = make_job({"a": store}, interval=10)
    job.startService()
    job.stopService()
    job.startService()
    clock.advance(10)
    assert store.calls == 3
    job.stopService()


def test_interval_must_be_positive() -> None:
    with pytest.raises(ValueError):
        make_job({"a": FakeStore("a")}, interval=0)


# HealthCheckJob: what it logs (quiet while all is well)


def test_rounds_of_healthy_probes_log_only_at_debug(events: list[LogEvent]) -> None:
    job, _, clock = make_job({"a": FakeStore("a"), "b": FakeStore("b")}, interval=10)
    job.startService()
    clock.pump([10] * 5)
    assert job.runs == 6
    assert logged(events) == []
    summaries = [text for level, text in logged(events, LogLevel.debug) if text.startswith("Health checks:")]
    assert len(summaries) == 6 and summaries[0].startswith("Health checks: 2 stores probed in 0.000 s, 0 failed")
    job.stopService()


def test_failed_probes_warn_while_the_store_is_up_then_go_to_debug(events: list[LogEvent]) -> None:
    store = FakeStore("a", "down")
    job, _, clock = make_job({"a": store, "b": FakeStore("b")}, interval=10, unhealthy_after=2)
    job.startService()
    clock.advance(10)
    assert logged(events) == [
        ("warn", "Health probe of store a failed after 0.000s: a: connection refused"),
        ("warn", "Health probe of store a failed after 0.000s: a: connection refused"),
        ("warn", "Store a is down after 2 consecutive failures: a: connection refused"),
    ]
    del events[:]
    clock.advance(10)
    assert logged(events) == []
    assert ("debug", "Health probe of store a failed after 0.000s: a: connection refused") in logged(
        events, LogLevel.debug)
    store.mode = "ok"
    clock.advance(10)
    assert logged(events) == [("info", "Store a is up again (it was down: a: connection refused)")]
    job.stopService()


def test_a_probe_slower_than_slow_probe_is_a_warning(events: list[LogEvent]) -> None:
    store = FakeStore("a", "hang")
    job, health, clock = make_job({"a": store}, interval=10, slow_probe=2.0)
    done = Outcome(job.run_once())
    clock.advance(2.0)
    store.finish()
    assert done.succeeded and logged(events) == []  # exactly the threshold is not slower
    done = Outcome(job.run_once())
    clock.advance(2.5)
    store.finish()
    assert done.succeeded and health.is_healthy("a")
    assert logged(events) == [("warn", "Health probe of store a took 2.500 s (health.slow_probe is 2 s)")]


def test_slow_probe_must_be_positive() -> None:
    with pytest.raises(ValueError):
        make_job({"a": FakeStore("a")}, slow_probe=0)


def test_latency_is_a_moving_average_of_probe_durations() -> None:
    health = StoreHealth(["a", "b"], unhealthy_after=1)
    health.record_latency("a", 1.0)
    assert health.latency() == {"a": 1.0}  # the first sample is the average
    health.record_latency("a", 2.0)
    assert health.latency()["a"] == pytest.approx(1.3)
    health.record_latency("ghost", 5.0)  # unknown stores are ignored
    assert "ghost" not in health.latency()


def test_a_removed_store_loses_its_latency() -> None:
    health = StoreHealth(["a", "b"], unhealthy_after=1)
    health.record_latency("a", 1.0)
    health.record_latency("b", 2.0)
    health.set_stores(["b"])
    assert health.latency() == {"b": 2.0}


def test_successful_probes_feed_the_latency_and_failed_ones_do_not() -> None:
    fast, slow, down = FakeStore("fast", "hang"), FakeStore("slow", "hang"), FakeStore("down", "down")
    job, health, clock = make_job({"fast": fast, "slow": slow, "down": down})
    done = Outcome(job.run_once())
    clock.advance(0.5)
    fast.finish()
    clock.advance(1.5)
    slow.finish()
    assert done.succeeded
    assert health.latency() == {"fast": 0.5, "slow": 2.0}
