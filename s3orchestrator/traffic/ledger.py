"""Each store's traffic this billing period, counted in memory and shared through the
metadata database, and what its caps allow.

Counting must not cost a database write per upstream request: ``count`` adds to this
process's pending counts, and ``sync`` (run every few seconds by the traffic job, and
at stop) adds them to the ``store_traffic`` rows in one transaction and reads back every
instance's totals. Decisions use those totals plus what is pending here. So a cap can be
overrun by what the instances move between two syncs, plus the bodies in flight when it
is reached (a read or write that started before finishes). An add whose outcome is
unknown (the connection dropped at commit) is tried again: counts err high, not low.
"""

from __future__ import annotations

import datetime
from typing import Any, Callable, Mapping

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from s3orchestrator.config import StoreCaps
from s3orchestrator.metadata.traffic import PeriodKey, Traffic, TrafficTable
from s3orchestrator.traffic import caps as cap_rules
from s3orchestrator.traffic.period import period_end, period_start, seconds_of

_NO_CAPS = StoreCaps()

#: Seconds between two syncs of the counts with the database.
SYNC_INTERVAL = 5.0


def _merge(into: dict[PeriodKey, Traffic], counts: Mapping[PeriodKey, Traffic]) -> None:
    for key, traffic in counts.items():
        into[key] = into.get(key, Traffic()) + traffic


class _Counts:
    """One store's counts of one period not synced yet (mutable: added to for every chunk)."""

    __slots__ = ("egress_bytes", "ingress_bytes", "requests_a", "requests_b", "requests_other")

    def __init__(self) -> None:
        self.egress_bytes = self.ingress_bytes = 0
        self.requests_a = self.requests_b = self.requests_other = 0

    def add(self, traffic: Traffic) -> None:
        self.egress_bytes += traffic.egress_bytes
        self.ingress_bytes += traffic.ingress_bytes
        self.requests_a += traffic.requests_a
        self.requests_b += traffic.requests_b
        self.requests_other += traffic.requests_other

    def traffic(self) -> Traffic:
        return Traffic(self.egress_bytes, self.ingress_bytes, self.requests_a, self.requests_b, self.requests_other)


class TrafficLedger:
    """The stores' traffic per billing period and their caps (``caps()``: by store,
    read at each use, so a reload applies at once)."""

    _log = Logger()

    def __init__(self, table: TrafficTable, caps: Callable[[], Mapping[str, StoreCaps]], clock: IReactorTime) -> None:
        self._table = table
        self._caps = caps
        self._clock = clock
        self._pending: dict[PeriodKey, _Counts] = {}
        self._syncing: dict[PeriodKey, Traffic] = {}  # being added to the table
        self._shared: dict[PeriodKey, Traffic] = {}  # every instance's, as last read
        self._said: set[tuple[str, datetime.date, str]] = set()  # warnings given this period
        self._sync_failing = False
        # Each store's current period: (first day, its start and end in seconds), for
        # the caps mapping last seen (a reload brings a new one, maybe a new billing_day).
        self._periods: dict[str, tuple[datetime.date, float, float]] = {}
        self._seen_caps: Mapping[str, StoreCaps] | None = None

    # -- counting -----------------------------------------------------------------------------

    def caps(self, store: str) -> StoreCaps:
        """The store's caps (none for a store not configured)."""
        caps = self._caps()
        if caps is not self._seen_caps:
            self._seen_caps = caps
            self._periods.clear()
        return caps.get(store, _NO_CAPS)

    def period(self, store: str) -> datetime.date:
        """The first day of the store's current billing period."""
        billing_day = self.caps(store).billing_day
        now = self._clock.seconds()
        known = self._periods.get(store)
        if known is None or not known[1] <= now < known[2]:
            # Computed once a period (and after a reload): counting runs for every chunk.
            start = period_start(now, billing_day)
            known = self._periods[store] = (start, seconds_of(start), seconds_of(period_end(start)))
        return known[0]

    def _counts(self, store: str) -> _Counts:
        key = (store, self.period(store))
        counts = self._pending.get(key)
        if counts is None:
            counts = self._pending[key] = _Counts()
        return counts

    def count(self, store: str, traffic: Traffic) -> None:
        """Add ``traffic`` to the store's current period."""
        self._counts(store).add(traffic)

    def count_bytes(self, store: str, egress: int = 0, ingress: int = 0) -> None:
        """Add bytes read from (``egress``) or written to (``ingress``) the store to its
        current period (``count`` without a Traffic record: this runs for every chunk)."""
        counts = self._counts(store)
        counts.egress_bytes += egress
        counts.ingress_bytes += ingress

    def month(self, store: str) -> Traffic:
        """The store's traffic this period: every instance's as last synced, plus what
        this one counted since."""
        key = (store, self.period(store))
        total = self._shared.get(key, Traffic()) + self._syncing.get(key, Traffic())
        pending = self._pending.get(key)
        return total if pending is None else total + pending.traffic()

    async def sync(self) -> int:
        """Add the pending counts to the table, then read every instance's totals of the
        stores' current periods; how many (store, period) counts were added. A failed
        add keeps the counts pending for the next sync."""
        self._syncing = {key: counts.traffic() for key, counts in self._pending.items()}
        self._pending = {}
        try:
            if self._syncing:
                await self._table.add(self._syncing)
        except BaseException:
            for key, traffic in self._syncing.items():
                self._pending.setdefault(key, _Counts()).add(traffic)
            self._syncing = {}
            self._sync_failed()
            raise
        added = len(self._syncing)
        try:
            stores = self._caps()
            since = min((self.period(store) for store in stores), default=period_start(self._clock.seconds()))
            shared = await self._table.read(since)
        except BaseException:
            # Added but not read back: count them as shared until the next read.
            _merge(self._shared, self._syncing)
            self._syncing = {}
            self._sync_failed()
            raise
        self._shared, self._syncing = shared, {}
        if self._sync_failing:
            self._sync_failing = False
            self._log.info("Store traffic counts are synced with the metadata database again")
        self._announce_caps()
        return added

    def _sync_failed(self) -> None:
        if not self._sync_failing:
            self._sync_failing = True
            self._log.warn("Could not sync the store traffic counts; they stay counted here until it works")

    # -- caps -----------------------------------------------------------------------------------

    def reached(self, store: str) -> frozenset[str]:
        """The store's caps its traffic this period has reached."""
        caps = self.caps(store)
        if not caps.any():
            return frozenset()
        return cap_rules.reached(caps, self.month(store))

    def write_capped(self) -> tuple[frozenset[str], frozenset[str]]:
        """Stores over a write cap (ingress, class A or all requests): those in ``hard``
        mode (no new copies) and those in ``soft`` mode (new copies only when no other
        store will do)."""
        hard: set[str] = set()
        soft: set[str] = set()
        for store, caps in self._caps().items():
            if self.reached(store) & cap_rules.WRITE_CAPS:
                (soft if caps.mode == "soft" else hard).add(store)
        return frozenset(hard), frozenset(soft)

    def read_cap(self, store: str) -> str | None:
        """The read cap (egress, class B or all requests) the store reached, if any."""
        over = self.reached(store) & cap_rules.READ_CAPS
        return min(over, key=cap_rules.CAPS.index) if over else None

    def say_once(self, store: str, what: str, message: str, **fields: Any) -> None:
        """Log a warning about ``store`` once per billing period for each ``what``."""
        key = (store, self.period(store), what)
        if key not in self._said:
            self._said.add(key)
            self._log.warn(message, store=store, **fields)

    def _announce_caps(self) -> None:
        for store in self._caps():
            for cap in sorted(self.reached(store)):
                self.say_once(store, f"reached {cap}", "Store {store} reached its monthly {cap} cap"
                              " ({used} of {limit}); {effect} until {until}",
                              cap=cap_rules.CAP_NAMES[cap], used=cap_rules.used(cap, self.month(store)),
                              limit=getattr(self.caps(store), cap), until=period_end(self.period(store)).isoformat(),
                              effect="it is used last" if self.caps(store).mode == "soft" else "it is avoided")

    # -- reporting ------------------------------------------------------------------------------

    def report(self) -> list[dict[str, Any]]:
        """Every store's traffic this period against its caps, for the admin API and
        metrics: name, period (start, end), mode, the counts, caps set and caps reached."""
        stores = []
        for store, caps in self._caps().items():
            month = self.month(store)
            start = self.period(store)
            stores.append({
                "name": store,
                "period_start": start.isoformat(),
                "period_end": period_end(start).isoformat(),
                "cap_mode": caps.mode,
                "egress_bytes": month.egress_bytes,
                "ingress_bytes": month.ingress_bytes,
                "requests_a": month.requests_a,
                "requests_b": month.requests_b,
                "requests_other": month.requests_other,
                "requests": month.requests,
                "caps": dict(cap_rules.limits(caps)),
                "reached": sorted(self.reached(store), key=cap_rules.CAPS.index),
            })
        return stores
