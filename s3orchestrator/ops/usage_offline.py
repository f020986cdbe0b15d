"""``s3orchestrator usage --offline``: the stores' traffic this billing period read from
the metadata database itself, for when no daemon runs (or its admin API is off).

The counts a running daemon has not synced yet (a few seconds' worth) are left out.
Runs a reactor of its own for the one read, so it is imported only for ``--offline``.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.internet.defer import ensureDeferred
from twisted.python.failure import Failure

from s3orchestrator.config import Config
from s3orchestrator.metadata.database import Database
from s3orchestrator.metadata.engines import create_engine
from s3orchestrator.metadata.traffic import TrafficTable
from s3orchestrator.traffic.ledger import TrafficLedger


class OfflineUsageError(Exception):
    """The metadata database cannot be read; str() says why, naming no secret."""


def offline_usage(config: Config) -> list[dict[str, Any]]:
    """``TrafficLedger.report()`` of the stores of ``config`` from its metadata database."""
    path = config.metadata.sqlite
    if path is not None and not os.path.exists(path):
        raise OfflineUsageError(f"no metadata database at {path} (metadata.sqlite): has the daemon ever run?")
    from twisted.internet import reactor

    async def read() -> list[dict[str, Any]]:
        database = Database(create_engine(config.metadata), reactor)
        database.start()
        try:
            ledger = TrafficLedger(TrafficTable(database), config.store_caps, reactor)
            await ledger.sync()
            return ledger.report()
        finally:
            database.close()

    outcome: list[Any] = []

    def run() -> None:
        ensureDeferred(read()).addBoth(outcome.append).addBoth(lambda _: reactor.stop())

    reactor.callWhenRunning(run)
    reactor.run()
    if not outcome:
        raise OfflineUsageError("interrupted")
    result = outcome[0]
    if isinstance(result, Failure):
        raise OfflineUsageError(f"cannot read the stores' traffic from the metadata database: {result.value}")
    return list(result)
