"""What makes a daemon process one of the supervisor's workers."""

from __future__ import annotations

import os
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


def parent_of(pid: int) -> int | None:
    """The parent process id of live process ``pid`` (Linux ``/proc``); None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rpartition(b")")[2].split()
    except OSError:
        return None
    if fields[0] == b"Z":  # exited, not reaped yet
        return None
    return int(fields[1])


def is_fellow_worker(owner: str, parent: Callable[[int], int | None] = parent_of) -> bool:
    """Whether the write intent owner ``owner`` (``host:pid``, of this host) is a live
    worker of this process's supervisor: its writes are in flight, not left by a crash."""
    pid = owner.rpartition(":")[2]
    return pid.isdigit() and parent(int(pid)) == os.getppid()
