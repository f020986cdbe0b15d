"""The ``store_traffic`` table: each store's traffic per billing period, shared by the
instances that use one metadata database (migration 011)."""

from __future__ import annotations

import datetime
from typing import Mapping

import attrs
from twisted.internet.defer import Deferred

from s3orchestrator.metadata.database import Database, Transaction

_COLUMNS = ("egress_bytes", "ingress_bytes", "requests_a", "requests_b", "requests_other")


@attrs.frozen
class Traffic:
    """Bytes moved and requests made to one store: ``egress`` read from it, ``ingress``
    written to it, requests of billing class A (writes, lists), B (reads, HEADs) and
    other (deletes, aborts: free with most providers)."""

    egress_bytes: int = 0
    ingress_bytes: int = 0
    requests_a: int = 0
    requests_b: int = 0
    requests_other: int = 0

    @property
    def requests(self) -> int:
        """Requests of every class."""
        return self.requests_a + self.requests_b + self.requests_other

    def __add__(self, other: Traffic) -> Traffic:
        # Spelt out: this runs for every chunk of every transfer.
        return Traffic(
            self.egress_bytes + other.egress_bytes,
            self.ingress_bytes + other.ingress_bytes,
            self.requests_a + other.requests_a,
            self.requests_b + other.requests_b,
            self.requests_other + other.requests_other,
        )


#: (store, first day of the billing period)
PeriodKey = tuple[str, datetime.date]


def _add(txn: Transaction, deltas: Mapping[PeriodKey, Traffic]) -> None:
    increments = ", ".join(f"{column} = store_traffic.{column} + excluded.{column}" for column in _COLUMNS)
    for (store, start), delta in sorted(deltas.items()):
        txn.execute(
            f"INSERT INTO store_traffic (store, period_start, {', '.join(_COLUMNS)}) VALUES (?, ?, ?, ?, ?, ?, ?)"
            f" ON CONFLICT (store, period_start) DO UPDATE SET {increments}",
            (store, start.isoformat(), *attrs.astuple(delta)),
        )


def _read(txn: Transaction, since: datetime.date) -> dict[PeriodKey, Traffic]:
    rows = txn.query(
        f"SELECT store, period_start, {', '.join(_COLUMNS)} FROM store_traffic WHERE period_start >= ?",
        (since.isoformat(),),
    )
    return {(store, datetime.date.fromisoformat(period)): Traffic(*(int(value) for value in values))
            for store, period, *values in rows}


class TrafficTable:
    """Adds to and reads the ``store_traffic`` table."""

    def __init__(self, database: Database) -> None:
        self._database = database

    def add(self, deltas: Mapping[PeriodKey, Traffic]) -> Deferred[None]:
        """Add ``deltas`` to the stores' counts of their periods, in one transaction."""
        # Counts lost with a crash are a few seconds' traffic: no fsync needed for them.
        return self._database.runInteraction("add_store_traffic", _add, dict(deltas), write=True, durable=False)

    def read(self, since: datetime.date) -> Deferred[dict[PeriodKey, Traffic]]:
        """Every store's traffic in the periods that start on ``since`` or later."""
        return self._database.runInteraction("read_store_traffic", _read, since)
