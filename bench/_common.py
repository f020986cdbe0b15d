"""Helpers shared by the benchmark scripts: test data files, checksums, /proc readings.

Importing this module also puts the repository root on ``sys.path`` so the scripts
can reuse ``tests.integration`` (the daemon and upstream server launchers).
"""

from __future__ import annotations

import hashlib
import os
import secrets
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Protocol, Sequence, TypeVar
from urllib.parse import urlsplit, urlunsplit

import psycopg

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

CHUNK = 1024 * 1024
#: The PostgreSQL server benches create their databases on, unless S3O_BENCH_POSTGRES_DSN or
#: S3O_TEST_POSTGRES_DSN names another (a role that may create databases).
DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
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


def postgres_dsn() -> str:
    """The admin DSN of the PostgreSQL server benches create their databases on."""
    return os.environ.get("S3O_BENCH_POSTGRES_DSN") or os.environ.get("S3O_TEST_POSTGRES_DSN") or DEFAULT_DSN


class Databases:
    """The bench's PostgreSQL databases on the admin DSN's server: created on demand, all dropped at the end."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.names: list[str] = []
        self.prefix = f"s3o_bench_{secrets.token_hex(4)}"

    def create(self, suffix: str) -> tuple[str, str]:
        """(name, URL) of a new empty database owned by the DSN's role."""
        name = f"{self.prefix}_{suffix.lower()}"
        with psycopg.connect(self.dsn, autocommit=True) as admin:
            admin.execute(f"CREATE DATABASE {name}")
        self.names.append(name)
        return name, urlunsplit(urlsplit(self.dsn)._replace(path=f"/{name}"))

    def transactions(self) -> dict[str, int]:
        """Transactions committed or rolled back so far in each of the bench's databases."""
        with psycopg.connect(self.dsn, autocommit=True) as admin:
            rows = admin.execute("SELECT datname, xact_commit + xact_rollback FROM pg_stat_database"
                                 " WHERE datname = ANY(%s)", (self.names,)).fetchall()
        return {name: int(count) for name, count in rows}

    def drop_all(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as admin:
            for name in self.names:
                admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def process_table() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, command line) of every process now."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError, ValueError):
            continue  # ended meanwhile
        table[int(entry.name)] = (parent, command)
    return table


def descendants(table: Mapping[int, tuple[int, str]], root: int) -> list[int]:
    """``root`` and every process below it."""
    children: dict[int, list[int]] = {}
    for pid, (parent, _) in table.items():
        children.setdefault(parent, []).append(pid)
    found, pending = [], [root]
    while pending:
        pid = pending.pop()
        found.append(pid)
        pending.extend(children.get(pid, ()))
    return found


def backends(table: Mapping[int, tuple[int, str]], database: str) -> list[int]:
    """The PostgreSQL backends connected to ``database`` (title "postgres: [cluster: ]user database host ...")."""
    return [pid for pid, (_, command) in table.items()
            if command.startswith("postgres: ") and database in command.split()]
