"""Helpers shared by the benchmark scripts: test data files, checksums, /proc readings.

Importing this module also puts the repository root on ``sys.path`` so the scripts
can reuse ``tests.integration`` (the daemon and upstream server launchers).
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Protocol, Sequence, TypeVar

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

CHUNK = 1024 * 1024
MiB = 1024 * 1024


class Named(Protocol):
    """A side of a comparison (a daemon or a configuration under test)."""

    name: str


class PhaseRunner(Protocol):
    """The client processes of a small-object benchmark (upstream_ratio.SmallClients)."""

    def run(self, name: str, phase: str, keys: Sequence[str]) -> Any: ...


SideT = TypeVar("SideT", bound=Named)
Cost = TypeVar("Cost")


def small_rounds(
    clients: PhaseRunner,
    sides: Sequence[SideT],
    count: int,
    rounds: int,
    phases: Sequence[str],
    order: Callable[[Sequence[SideT], int], Sequence[SideT]],
    meter: Callable[[SideT], Callable[[], Cost]],
) -> Iterator[tuple[SideT, str, Any, Cost]]:
    """Each round, ``count`` fresh keys ``small/r<round>/<n>``, on which each side (in the
    round's ``order``) runs each phase through ``clients``: yields (side, phase, the
    clients' outcome, what ``meter(side)`` measured over the phase). ``meter(side)``
    starts a measurement; calling what it returns ends it."""
    for number in range(rounds):
        keys = [f"small/r{number}/{i:05d}" for i in range(count)]
        for side in order(sides, number):
            for phase in phases:
                measured = meter(side)
                outcome = clients.run(side.name, phase, keys)
                yield side, phase, outcome, measured()


def make_file(path: Path, size: int) -> str:
    """Write ``size`` pseudo-random bytes to ``path``; return their MD5."""
    md5 = hashlib.md5()
    block = hashlib.sha512(b"seed").digest() * (CHUNK // 64)
    with open(path, "wb") as f:
        written = 0
        counter = 0
        while written < size:
            piece = (counter.to_bytes(8, "big") + block)[: min(CHUNK, size - written)]
            f.write(piece)
            md5.update(piece)
            written += len(piece)
            counter += 1
    return md5.hexdigest()


def file_md5(path: Path) -> str:
    """The MD5 of a file's contents, read in ``CHUNK`` pieces."""
    md5 = hashlib.md5()
    with open(path, "rb") as f:
        while piece := f.read(CHUNK):
            md5.update(piece)
    return md5.hexdigest()


def print_report(lines: Iterable[str], started: float, before_total: str = "") -> None:
    """The report's ``lines`` after a blank line, then the run's total time since
    ``started`` (``time.monotonic()``), after ``before_total``."""
    print()
    for line in lines:
        print(line)
    print(f"{before_total}total time: {time.monotonic() - started:.0f} s")


def _proc_status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/{pid}/status")


def peak_rss_mib(pid: int) -> float:
    """The process's peak resident set size (VmHWM) in MiB."""
    return _proc_status_kib(pid, "VmHWM") / 1024


def rss_mib(pid: int) -> float:
    """The process's current resident set size (VmRSS) in MiB."""
    return _proc_status_kib(pid, "VmRSS") / 1024


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used so far, in seconds."""
    # The command name (field 2) is in parentheses and may hold spaces: split after it.
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / os.sysconf("SC_CLK_TCK")
