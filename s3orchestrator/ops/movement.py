"""Movement as operators see it: store modes, drains' and rebalances' progress (moved,
left, rate, ETA), pause; for the admin API (``/movement``, ``s3orchestrator drain`` and
``movement``), ``/status`` and ``/metrics``."""

from __future__ import annotations

from typing import Any, Callable, Iterator, Mapping

from prometheus_client.core import GaugeMetricFamily, Metric
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from s3orchestrator.config import DRAIN
from s3orchestrator.metadata.interface import IMetadataStore
from s3orchestrator.metadata.records import MoveProgress
from s3orchestrator.ops.endpoints import OpsEndpoint, OpsResponse
from s3orchestrator.ops.health import json_response

_log = Logger()


def _progress(progress: MoveProgress, left: tuple[int, int], now_ms: int) -> dict[str, Any]:
    """One reason's moves off one store, with the average rate since they started and
    the time left at that rate (None: unknown, nothing moved yet)."""
    left_objects, left_bytes = left
    elapsed = (now_ms - progress.started_ms) / 1000 if progress.started_ms is not None else 0.0
    byte_rate = progress.moved_bytes / elapsed if elapsed > 0 else 0.0
    object_rate = progress.moved_objects / elapsed if elapsed > 0 else 0.0
    if not left_objects:
        eta: float | None = 0.0
    elif byte_rate > 0 and left_bytes:
        eta = left_bytes / byte_rate
    elif object_rate > 0:
        eta = left_objects / object_rate
    else:
        eta = None
    return {
        "reason": progress.reason,
        "store": progress.store,
        "moved_objects": progress.moved_objects,
        "moved_bytes": progress.moved_bytes,
        "left_objects": left_objects,
        "left_bytes": left_bytes,
        "failing": progress.failing,
        "started_ms": progress.started_ms,
        "bytes_per_second": round(byte_rate, 1),
        "objects_per_second": round(object_rate, 3),
        "eta_seconds": None if eta is None else round(eta, 1),
    }


async def movement_status(metadata: IMetadataStore, modes: Mapping[str, str], now_ms: int) -> dict[str, Any]:
    """``{"paused": bool, "stores": [{"name", "mode", "objects", "live_bytes",
    "cleanup_queue", "drained"}], "moves": [...]}``. ``stores``: every configured store
    with its live copies and bytes queued for removal; a store in mode drain is
    ``drained`` once neither is left, nor a move of its drain (its upstream is empty of
    our objects, every move counted). ``moves``:
    per reason ('drain', 'rebalance') and source store: moved and left (objects,
    bytes; for a drain, left is every live copy on the store, queued or not yet),
    ``failing`` (moves that failed at least once, tried again later), the average rate
    since the first was queued, and ``eta_seconds`` at that rate (None: unknown)."""
    progresses = await metadata.move_progress()
    draining = {progress.store for progress in progresses if progress.reason == "drain" and progress.left_objects}
    cleanups = await metadata.cleanup_totals()
    # The stores' counters (cheap at every scrape): live copies, and used bytes less those queued for removal.
    usage = {store.name: store for store in await metadata.store_usage()}
    stores = []
    live: dict[str, tuple[int, int]] = {}
    for name, mode in modes.items():
        queued, queued_bytes = cleanups.get(name, (0, 0))
        store = usage.get(name)
        live[name] = (0, 0) if store is None else (store.object_count, store.used_bytes - queued_bytes)
        stores.append({
            "name": name, "mode": mode, "objects": live[name][0], "live_bytes": live[name][1],
            "cleanup_queue": queued,
            "drained": mode == DRAIN and live[name][0] == 0 and queued == 0 and name not in draining,
        })
    moves = []
    for progress in progresses:
        left = (progress.left_objects, progress.left_bytes)
        if progress.reason == "drain" and modes.get(progress.store) == DRAIN:
            left = live[progress.store]
        moves.append(_progress(progress, left, now_ms))
    return {"paused": await metadata.movement_paused(), "stores": stores, "moves": moves}


def movement_metrics(document: Mapping[str, Any]) -> Iterator[Metric]:
    """The ``s3orchestrator_movement_*`` gauges of a ``movement_status`` document."""
    paused = GaugeMetricFamily("s3orchestrator_movement_paused", "1 while moving copies is paused, else 0.")
    paused.add_metric([], 1 if document.get("paused") else 0)
    mode = GaugeMetricFamily("s3orchestrator_movement_store_mode",
                             "1 for the store's mode (normal, readonly, drain).", labels=["store", "mode"])
    drained = GaugeMetricFamily("s3orchestrator_movement_store_drained",
                                "1 once a store in mode drain holds no copy and no bytes queued for removal.",
                                labels=["store"])
    for store in document.get("stores", ()):
        mode.add_metric([store["name"], store["mode"]], 1)
        if store["mode"] == DRAIN:
            drained.add_metric([store["name"]], 1 if store["drained"] else 0)
    labels = ["reason", "store"]
    families = {
        name: GaugeMetricFamily(f"s3orchestrator_movement_{name}", text, labels=labels)
        for name, text in (
            ("moved_objects", "Copies moved off the store for the reason (since its moves started)."),
            ("moved_bytes", "Bytes moved off the store for the reason (since its moves started)."),
            ("left_objects", "Copies left to move off the store for the reason."),
            ("left_bytes", "Bytes left to move off the store for the reason."),
            ("failing", "Moves off the store that failed at least once (tried again later)."),
            ("bytes_per_second", "Average rate of the moves off the store since they started."),
            ("eta_seconds", "Seconds the moves left would take at that rate (absent: unknown)."),
        )
    }
    for move in document.get("moves", ()):
        for name, family in families.items():
            if move[name] is not None:
                family.add_metric([move["reason"], move["store"]], move[name])
    yield from (paused, mode, drained, *families.values())



class MovementControl:
    """Movement through the admin API: its state (``status``) and the operators' actions
    (pause, resume, run now: ``soon``, the mover's, which runs it on the instance
    holding its lease)."""

    def __init__(self, metadata: IMetadataStore, modes: Callable[[], Mapping[str, str]], clock: IReactorTime,
                 soon: Callable[[], None] = lambda: None) -> None:
        self._metadata = metadata
        self._modes = modes
        self._clock = clock
        self.soon = soon

    def _now_ms(self) -> int:
        return int(self._clock.seconds() * 1000)

    async def status(self) -> dict[str, Any]:
        """The ``movement_status`` document now."""
        return await movement_status(self._metadata, self._modes(), self._now_ms())

    def endpoints(self) -> dict[str, OpsEndpoint]:
        """``/movement``: the ``movement_status`` document."""

        async def show(headers: Mapping[str, str]) -> OpsResponse:
            return json_response(200, await self.status())

        return {"/movement": show}

    def actions(self) -> dict[str, OpsEndpoint]:
        """``/movement/pause`` and ``/movement/resume`` (kept until told otherwise, across
        restarts), ``/movement/run`` (the mover runs now rather than at its next
        interval, e.g. after a reload put a store in mode drain); each answers the
        ``movement_status`` document."""

        def pausing(paused: bool) -> OpsEndpoint:
            async def action(headers: Mapping[str, str]) -> OpsResponse:
                await self._metadata.pause_movement(paused, self._now_ms())
                _log.info("Movement {what} through the admin API", what="paused" if paused else "resumed")
                if not paused:
                    self.soon()
                return json_response(200, await self.status())

            return action

        async def run(headers: Mapping[str, str]) -> OpsResponse:
            self.soon()
            return json_response(200, await self.status())

        return {"/movement/pause": pausing(True), "/movement/resume": pausing(False), "/movement/run": run}
