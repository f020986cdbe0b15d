"""What makes a daemon process one of the supervisor's workers."""

from __future__ import annotations

from typing import Callable, Mapping

import attrs

from s3orchestrator.listeners import InheritedSocket


@attrs.frozen
class WorkerRole:
    """A worker's number (1 to ``server.workers``), the listening sockets its supervisor
    passed (by listener name) and how it tells the supervisor it serves."""

    index: int
    sockets: Mapping[str, InheritedSocket]
    ready: Callable[[], None]
