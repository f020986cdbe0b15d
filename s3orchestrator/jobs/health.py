"""Store health: a state machine fed by probes and request outcomes, and the job that probes.

``StoreHealth`` decides which stores are up (routing skips the others for new writes).
It only counts what it is told: the caller decides which request outcomes are failures
(connection errors and 5xx are, 404s never). ``HealthCheckJob`` probes every store
every ``interval`` seconds and feeds the outcomes in.

Logging stays quiet while all is well: transitions (down, up again), failed probes of a
store that is up and probes slower than ``slow_probe`` are logged at warn or info; a probe
failing again on a store already down, and the summary of each run, at debug.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Iterable, Mapping

import attrs
from twisted.application.internet import TimerService
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure

from s3orchestrator.config import DEFAULT_SLOW_PROBE
from s3orchestrator.stores.interface import IObjectStore, StoreUnavailable

__all__ = [
    "MAX_PROBE_TIMEOUT",
    "HealthCheckJob",
    "StoreHealth",
    "StoreStatus",
]

# A probe is a HeadBucket or a stat: anything slower than this is as good as down.
MAX_PROBE_TIMEOUT = 30.0

# Weight of the newest sample in a store's latency average (read_order = "latency").
LATENCY_WEIGHT = 0.3

StoreMap = Mapping[str, IObjectStore]
StoreSource = StoreMap | Callable[[], StoreMap]


@attrs.frozen
class StoreStatus:
    """One store's health as ops pages show it.

    ``last_error`` is the most recent failure reason (kept after recovery);
    ``last_change`` the time of the last up/down transition (None: none since start).
    """

    healthy: bool = True
    consecutive_failures: int = 0
    last_error: str | None = None
    last_change: float | None = None


class StoreHealth:
    """Which stores are up: down after ``unhealthy_after`` consecutive failures, up on one success.

    It also keeps a moving average of each store's probe durations (``latency``), which
    ``read_order = "latency"`` sorts copies by.

    Every store starts up. Outcomes for names it does not know (a store removed by a
    reload while a request to it was in flight) are ignored. ``on_change(name, healthy)``
    is called after each transition; ``now`` gives the time recorded in ``last_change``.
    """

    _log = Logger()

    def __init__(
        self,
        names: Iterable[str],
        unhealthy_after: int,
        on_change: Callable[[str, bool], object] | None = None,
        now: Callable[[], float] = time.time,
    ) -> None:
        if unhealthy_after < 1:
            raise ValueError(f"unhealthy_after must be at least 1, not {unhealthy_after!r}")
        self.unhealthy_after = unhealthy_after
        self.on_change = on_change
        self._now = now
        self._status: dict[str, StoreStatus] = {}
        self._latency: dict[str, float] = {}
        self._healthy: frozenset[str] = frozenset()
        self.set_stores(names)

    def set_stores(self, names: Iterable[str]) -> None:
        """Follow a config reload: new stores start up, removed ones are forgotten."""
        wanted = list(dict.fromkeys(names))
        self._status = {name: self._status.get(name, StoreStatus()) for name in wanted}
        self._latency = {name: seconds for name, seconds in self._latency.items() if name in self._status}
        self._refresh()

    def record_success(self, name: str) -> None:
        """A probe or request to ``name`` worked: the store is up and its failure count resets."""
        status = self._status.get(name)
        if status is None:
            return
        if status.healthy:
            if status.consecutive_failures:
                self._status[name] = attrs.evolve(status, consecutive_failures=0)
            return
        self._status[name] = attrs.evolve(
            status, healthy=True, consecutive_failures=0, last_change=self._now()
        )
        self._refresh()
        self._log.info(
            "Store {store} is up again (it was down: {reason})",
            store=name,
            reason=status.last_error,
            healthy=True,
        )
        self._notify(name, True)

    def record_failure(self, name: str, reason: str) -> None:
        """A probe or request to ``name`` failed; the ``unhealthy_after``-th in a row marks it down."""
        status = self._status.get(name)
        if status is None:
            return
        failures = status.consecutive_failures + 1
        goes_down = status.healthy and failures >= self.unhealthy_after
        self._status[name] = attrs.evolve(
            status,
            healthy=status.healthy and not goes_down,
            consecutive_failures=failures,
            last_error=reason,
            last_change=self._now() if goes_down else status.last_change,
        )
        if not goes_down:
            return
        self._refresh()
        self._log.warn(
            "Store {store} is down after {failures} consecutive failures: {reason}",
            store=name,
            failures=failures,
            reason=reason,
            healthy=False,
        )
        self._notify(name, False)

    def record_latency(self, name: str, seconds: float) -> None:
        """A successful probe of ``name`` took ``seconds``: fold it into the store's moving average."""
        if name not in self._status:
            return
        previous = self._latency.get(name)
        self._latency[name] = seconds if previous is None else previous + LATENCY_WEIGHT * (seconds - previous)

    def latency(self) -> dict[str, float]:
        """Each probed store's exponentially weighted average probe duration, in seconds."""
        return dict(self._latency)

    def healthy(self) -> frozenset[str]:
        """Names of the stores currently up."""
        return self._healthy

    def is_healthy(self, name: str) -> bool:
        """True if ``name`` is a known store that is up."""
        return name in self._healthy

    def snapshot(self) -> dict[str, StoreStatus]:
        """Every known store's status, in the order the stores were given."""
        return dict(self._status)

    def _refresh(self) -> None:
        # Routing asks for the healthy set on every write: keep it ready-made.
        self._healthy = frozenset(name for name, status in self._status.items() if status.healthy)

    def _notify(self, name: str, healthy: bool) -> None:
        if self.on_change is None:
            return
        # Outcomes are recorded from request paths: a broken hook must not break them.
        try:
            self.on_change(name, healthy)
        except Exception:
            self._log.failure("Store health change hook failed for store {store}", store=name)


class _Run:
    """The probes of one health check run, so stopping the job can abandon them."""

    def __init__(self, started: float) -> None:
        self.abandoned = False
        self.probes: list[Deferred[Any]] = []
        self.failed: list[str] = []  # stores whose probe failed
        self.started = started


class HealthCheckJob(TimerService):
    """Probe every store every ``interval`` seconds and record the outcomes in ``health``.

    ``stores`` is a mapping of store name to store, or a callable returning one (read at
    every run, so a reload can swap stores). Probes run concurrently, each cancelled and
    counted as a failure after ``min(interval, 30)`` seconds; one that succeeds after more
    than ``slow_probe`` seconds is logged as slow. Runs never overlap, and the job never
    stops on an error: each one is logged and counted in ``errors``.

    While the metadata database is unavailable, ``probe_metadata()`` probes it too.

    Counters: ``runs`` (finished runs), ``probes``, ``probe_failures``, ``timeouts``,
    ``errors`` (unexpected exceptions: bugs, not unavailable stores).
    """

    _log = Logger()
    clock: IReactorTime  # TimerService's, optional there; always given here

    def __init__(
        self,
        stores: StoreSource,
        health: StoreHealth,
        interval: float,
        clock: IReactorTime,
        slow_probe: float = DEFAULT_SLOW_PROBE,
        probe_metadata: Callable[[], Deferred[None] | None] | None = None,
    ) -> None:
        if not interval > 0 or not slow_probe > 0:
            raise ValueError(f"interval and slow_probe must be positive, not {interval!r} and {slow_probe!r}")
        TimerService.__init__(self, interval, self._tick)
        self.clock = clock
        self.health = health
        self.interval = interval
        self.probe_timeout = min(interval, MAX_PROBE_TIMEOUT)
        self.slow_probe = slow_probe
        self._stores = stores
        # Probes the metadata database while it is unavailable (None: nothing to probe);
        # its outcome reaches MetadataAvailability through the database, ending degraded mode.
        self._probe_metadata = probe_metadata
        self._current: _Run | None = None
        self._waiters: list[Deferred[None]] = []
        self.runs = 0
        self.probes = 0
        self.probe_failures = 0
        self.timeouts = 0
        self.errors = 0

    def run_once(self) -> Deferred[None]:
        """Probe every store now; fires (never fails) when the outcomes are recorded.

        If a run is already going, no new one starts: this waits for that one.
        """
        waiter: Deferred[None] = Deferred()
        self._waiters.append(waiter)
        if self._current is None:
            run = self._current = _Run(self.clock.seconds())
            maybeDeferred(self._probe_all, run).addBoth(self._finished, run)
        return waiter

    def stopService(self) -> Deferred[None]:
        """Stop the timer and cancel the probes in flight (their outcomes are not recorded)."""
        run = self._current
        if run is not None:
            run.abandoned = True
            for probe in list(run.probes):
                probe.cancel()
        return TimerService.stopService(self)

    def _tick(self) -> Deferred[None]:
        # LoopingCall stops for good on the first failure its body raises or returns,
        # so nothing may escape from here (run_once never fails either).
        try:
            return self.run_once()
        except Exception:
            self.errors += 1
            self._log.failure("Health check run failed to start")
            return succeed(None)

    def _resolve_stores(self) -> StoreMap:
        if callable(self._stores):
            return self._stores()
        return self._stores

    def _probe_all(self, run: _Run) -> Deferred[Any]:
        stores = self._resolve_stores()
        for name, store in list(stores.items()):
            run.probes.append(self._probe(run, name, store))
        metadata = self._probe_metadata() if self._probe_metadata is not None else None
        if metadata is not None:
            run.probes.append(metadata.addErrback(self._metadata_probe_failed))
        return DeferredList(run.probes, consumeErrors=True)

    def _metadata_probe_failed(self, failure: Failure) -> None:
        self._log.debug("Probe of the unavailable metadata database failed: {error}", error=str(failure.value))

    def _probe(self, run: _Run, name: str, store: IObjectStore) -> Deferred[None]:
        self.probes += 1
        timed_out = False
        started = self.clock.seconds()

        def on_timeout() -> None:
            nonlocal timed_out
            timed_out = True
            probe.cancel()

        probe: Deferred[Any] = maybeDeferred(store.probe)
        timer: IDelayedCall = self.clock.callLater(self.probe_timeout, on_timeout)

        def stop_timer(result: object) -> object:
            if timer.active():
                timer.cancel()
            return result

        def succeeded(_: object) -> None:
            if run.abandoned:
                return
            duration = self.clock.seconds() - started
            if duration > self.slow_probe:
                self._log.warn(
                    "Health probe of store {store} took {duration:.3f} s (health.slow_probe is {slow_probe:g} s)",
                    store=name, duration=duration, slow_probe=self.slow_probe,
                )
            self.health.record_latency(name, duration)
            self.health.record_success(name)

        def failed(failure: Failure) -> None:
            if run.abandoned and not timed_out:
                # Cancelled by stopService: says nothing about the store.
                return
            self.probe_failures += 1
            run.failed.append(name)
            if timed_out:
                self.timeouts += 1
                reason = f"health probe timed out after {self.probe_timeout:g}s"
            elif failure.check(StoreUnavailable):
                reason = str(failure.value) or "store unavailable"
            else:
                self.errors += 1
                self._log.failure(
                    "Health probe of store {store} failed unexpectedly", failure, store=name
                )
                reason = f"health probe failed: {type(failure.value).__name__}"
            # News while the store is up; a store already down failing again is not.
            self._log.emit(
                LogLevel.warn if self.health.is_healthy(name) else LogLevel.debug,
                "Health probe of store {store} failed after {duration:.3f}s: {reason}",
                store=name,
                reason=reason,
                duration=self.clock.seconds() - started,
            )
            self.health.record_failure(name, reason)

        def unexpected(failure: Failure) -> None:
            self.errors += 1
            self._log.failure("Recording the health of store {store} failed", failure, store=name)

        probe.addBoth(stop_timer)
        probe.addCallbacks(succeeded, failed)
        probe.addErrback(unexpected)
        return probe

    def _finished(self, result: object, run: _Run) -> None:
        if isinstance(result, Failure):
            self.errors += 1
            self._log.failure("Health check run failed", result)
        self.runs += 1
        self._current = None
        if not run.abandoned:
            self._log.debug(
                "Health checks: {probed} stores probed in {duration:.3f} s, {failed_count} failed{failed}",
                probed=len(run.probes), failed_count=len(run.failed),
                failed=f" ({', '.join(run.failed)})" if run.failed else "",
                duration=self.clock.seconds() - run.started,
            )
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.called:  # a caller may have cancelled its wait
                waiter.callback(None)
