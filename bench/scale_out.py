"""Scale-out figures of issue 14: SQLite against PostgreSQL metadata, one process against
``workers = 2``, one instance against two behind the example HAProxy, on one SeaweedFS.

Usage: python bench/scale_out.py [--rounds 3] [--size-mib 256] [--small-count 1000] [--quick]

One run starts a SeaweedFS server (``weed mini``) on loopback and four
configurations side by side, each with one s3 store on that server (a bucket of
its own, quota 0, ``payload_signing = "unsigned"``):

- A: one daemon, SQLite metadata, one process;
- B: one daemon, PostgreSQL metadata, one process;
- C: one daemon, PostgreSQL metadata, ``[server] workers = 2`` (a supervisor and
  two worker processes on one port);
- D: two daemons on one PostgreSQL database, behind HAProxy running
  ``etc/haproxy.cfg`` with its addresses replaced by loopback ports (as
  ``tests/integration/test_several_instances.py`` does; its request log goes to a file).

B, C and D each get a database of their own, created on the server of
``S3O_BENCH_POSTGRES_DSN`` or ``S3O_TEST_POSTGRES_DSN`` (default
``postgresql://postgres@127.0.0.1:5432/postgres``, a role that may create
databases) and dropped at the end. Then, in rounds whose order rotates (A B C D,
B C D A, ...):

- large object (``--size-mib``, single-part ``put_object`` from a file and
  ``get_object`` to a file with the helpers of ``upstream_ratio.py``, a fresh key
  each round, then GETs of the last one; one untimed PUT + GET per configuration
  first; dirty pages flushed before each; every download's MD5 checked outside
  the timed section): median MB/s (10^6 B/s);
- small objects (``--small-count`` x 4 KiB fresh keys per round, the two client
  processes of ``upstream_ratio.py``, each with half the keys): PUT, GET (bodies
  compared), HEAD; median ops/s.

CPU (user + system, from /proc) is read around every timed transfer and phase:
the daemon processes (each daemon's whole process tree: with workers the
supervisor and its workers; with HAProxy both daemons), HAProxy's, and the
PostgreSQL backend processes serving the configuration's database (found by the
database name in their process title; the server's background writer, WAL
writer and checkpointer, shared with every other database of the cluster, are
not counted). Reported as ms per small operation and s per GiB (medians over
rounds), plus each process's share over the whole run for C and D. SeaweedFS's
and the clients' CPU is not counted.

Then, untimed, PostgreSQL transactions per small operation on B, C and D
(``pg_stat_database``, 200 operations of each kind from one client, the
database's idle rate of background transactions taken off).

Figures are medians per configuration and the ratios B/A (the engine), C/B
(workers) and D/B (two instances behind the load balancer). Every process shares
the machine's cores (the output gives the count and the load average at start
and end). The exit status is non-zero only when something broke.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Mapping, Sequence
from urllib.parse import urlsplit

import psycopg

from _common import MiB, cpu_seconds, file_md5, make_file, print_report, small_rounds
from _postgres import STATS_FLUSH_WAIT, Databases, backends, bench_dsn, descendants, process_table
from tests.integration.daemon import ACCESS_KEY, BUCKET, SECRET_KEY, Daemon, StoreSpec, free_port, write_config
from tests.integration.test_several_instances import HAPROXY, HAPROXY_CONFIG, listening, localised
from tests.integration.upstreams import SeaweedFS
from upstream_ratio import (
    SMALL_PHASES,
    SMALL_SIZE,
    Endpoint,
    SmallClients,
    get_large,
    make_client,
    put_large,
    run_small_phase,
)

#: Configuration -> (label, metadata engine, [server] lines, instances behind HAProxy or 1).
CONFIGS = {
    "A": ("SQLite, 1 process", "sqlite", "", 1),
    "B": ("PostgreSQL, 1 process", "postgresql", "", 1),
    "C": ("PostgreSQL, workers = 2", "postgresql", "workers = 2", 1),
    "D": ("PostgreSQL, 2 instances + HAProxy", "postgresql", "", 2),
}
#: Concurrent small-object clients (upstream_ratio.SmallClients: two processes, one connection each).
SMALL_CLIENT_COUNT = 2
RATIOS = (("B", "A"), ("C", "B"), ("D", "B"))
#: Seconds for HAProxy to see both instances healthy (etc/haproxy.cfg: inter 2s, rise 2).
HAPROXY_SETTLE = 5.0
#: Small operations of each kind per configuration in the transaction-counting pass.
TRANSACTION_SAMPLE = 200


@dataclass(frozen=True)
class Usage:
    """CPU seconds used by a configuration's daemon processes, its HAProxy and its PostgreSQL backends."""

    daemon: float = 0.0
    haproxy: float = 0.0
    postgres: float = 0.0


@dataclass(frozen=True)
class Snapshot:
    """CPU seconds so far of every process of a configuration, by role and pid."""

    processes: Mapping[str, Mapping[int, float]]  # "daemon" / "haproxy" / "postgres" -> pid -> s

    def since(self, before: Snapshot) -> Usage:
        """CPU used between ``before`` and this snapshot (a process that ended meanwhile is not counted)."""

        def used(role: str) -> float:
            was = before.processes.get(role, {})
            return sum(now - was.get(pid, 0.0) for pid, now in self.processes.get(role, {}).items())

        return Usage(used("daemon"), used("haproxy"), used("postgres"))


@dataclass
class Side:
    """One configuration under test: its daemons, HAProxy if any, its database if any, its endpoint."""

    name: str
    bucket: str  # on SeaweedFS
    daemons: list[Daemon] = field(default_factory=list)
    haproxy: subprocess.Popen[bytes] | None = None
    database: str | None = None
    endpoint: Endpoint = field(init=False)  # set once everything listens

    def snapshot(self, table: Mapping[int, tuple[int, str]]) -> Snapshot:
        """Every process's CPU so far; ``table`` is pid -> (parent pid, command line) of the machine."""
        daemons: dict[int, float] = {}
        for daemon in self.daemons:
            assert daemon.process is not None
            for pid in descendants(table, daemon.process.pid):
                daemons[pid] = _cpu(pid)
        processes: dict[str, dict[int, float]] = {"daemon": daemons}
        if self.haproxy is not None:
            processes["haproxy"] = {pid: _cpu(pid) for pid in descendants(table, self.haproxy.pid)}
        if self.database is not None:
            processes["postgres"] = {pid: _cpu(pid) for pid in backends(table, self.database)}
        return Snapshot(processes)


def _cpu(pid: int) -> float:
    try:
        return cpu_seconds(pid)
    except (OSError, IndexError):
        return 0.0  # ended between the process table and now


def snapshot_all(sides: Sequence[Side]) -> dict[str, Snapshot]:
    table = process_table()
    return {side.name: side.snapshot(table) for side in sides}


# --- setup ----------------------------------------------------------------------------------


def start_side(name: str, directory: Path, seaweedfs: SeaweedFS, databases: Databases) -> Side:
    """Start configuration ``name`` of ``CONFIGS`` on a bucket of its own on ``seaweedfs``."""
    _, engine, server_toml, instances = CONFIGS[name]
    side = Side(name, f"bench-{name.lower()}")
    seaweedfs.boto.create_bucket(Bucket=side.bucket)
    store = StoreSpec("seaweedfs", 0, s3={
        "endpoint": seaweedfs.endpoint, "bucket": side.bucket, "region": seaweedfs.region,
        "access_key_id": seaweedfs.access_key, "secret_access_key": seaweedfs.secret_key,
        "payload_signing": "unsigned", "timeout": 60,
    })
    url = None
    if engine == "postgresql":
        side.database, url = databases.create(name)
    for number in range(instances):
        daemon_directory = directory / f"{name}{number + 1}"
        daemon_directory.mkdir()
        port = free_port()
        config = write_config(daemon_directory, port, [store], server_toml=server_toml, metadata_url=url)
        daemon = Daemon(daemon_directory, config, port)
        side.daemons.append(daemon)
        daemon.start(timeout=60)
    url = side.daemons[0].endpoint
    if instances > 1:
        port = free_port()
        path = directory / "haproxy.cfg"
        path.write_text(localised(HAPROXY_CONFIG, ("bind :9000", f"bind 127.0.0.1:{port}"),
                                  (side.daemons[0].port, side.daemons[1].port)))
        with open(directory / "haproxy.log", "ab") as log:
            side.haproxy = subprocess.Popen([HAPROXY, "-f", str(path), "-db"], stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while not listening(port):
            if side.haproxy.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"HAProxy did not start:\n{(directory / 'haproxy.log').read_text()}")
            time.sleep(0.05)
        time.sleep(HAPROXY_SETTLE)
        url = f"http://127.0.0.1:{port}"
    side.endpoint = Endpoint(name, url, ACCESS_KEY, SECRET_KEY, BUCKET, "when_required")
    return side


def stop_side(side: Side) -> None:
    if side.haproxy is not None and side.haproxy.poll() is None:
        side.haproxy.terminate()
        side.haproxy.wait(timeout=10)
    for daemon in side.daemons:
        daemon.stop()


def check_upstream_copy(seaweedfs: SeaweedFS, side: Side, key: str, size: int) -> None:
    """Fail unless ``side`` really stored ``key`` in its SeaweedFS bucket."""
    head = seaweedfs.boto.head_object(Bucket=side.bucket, Key=f"{BUCKET}/{key}")
    if head["ContentLength"] != size:
        raise RuntimeError(f"{side.name}: SeaweedFS holds {head['ContentLength']} bytes of {key}, not {size}")


def rotated(sides: Sequence[Side], number: int) -> list[Side]:
    """The sides in round ``number``'s order: each round starts one further along."""
    shift = number % len(sides)
    return [*sides[shift:], *sides[:shift]]


# --- measurements ---------------------------------------------------------------------------


@dataclass
class Results:
    """Per (side, operation), one entry per round: MB/s or ops/s, and the CPU it cost.

    Operations: "PUT" and "GET" of the large object, "small PUT", "small GET", "small HEAD".
    """

    rate: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    cpu: dict[tuple[str, str], list[Usage]] = field(default_factory=dict)
    verified: int = 0
    #: Per side, per process (label): CPU seconds over the whole measured run.
    shares: dict[str, dict[str, float]] = field(default_factory=dict)
    postgres_seen: dict[str, int] = field(default_factory=dict)  # side -> backends found at the end
    transactions: dict[tuple[str, str], float] = field(default_factory=dict)  # (side, phase) -> per op

    def add(self, side: str, operation: str, rate: float, cpu: Usage) -> None:
        self.rate.setdefault((side, operation), []).append(rate)
        self.cpu.setdefault((side, operation), []).append(cpu)


def usage_since(side: Side) -> Callable[[], Usage]:
    """Measures the CPU of the side's processes from now until the returned function is called."""
    before = snapshot_all([side])[side.name]
    return lambda: snapshot_all([side])[side.name].since(before)


def bench_large(sides: Sequence[Side], source: Path, rounds: int, scratch: Path, results: Results) -> None:
    """Rotating PUT rounds (fresh keys), then GET rounds of the last key, after an untimed warm-up each."""
    size = source.stat().st_size
    expected = file_md5(source)
    clients = {side.name: make_client(side.endpoint) for side in sides}
    target = scratch / "download.bin"

    def timed(side: Side, operation: str, key: str) -> None:
        os.sync()
        usage = usage_since(side)
        if operation == "PUT":
            seconds = put_large(clients[side.name], side.endpoint, key, source)
        else:
            seconds = get_large(clients[side.name], side.endpoint, key, target)
        used = usage()
        if operation == "GET":
            if file_md5(target) != expected:
                raise RuntimeError(f"{side.name}: downloaded bytes differ from the uploaded ones")
            results.verified += 1
        if not key.endswith("warm-up"):
            results.add(side.name, operation, size / seconds / 1e6, used)

    for side in sides:
        timed(side, "PUT", "large/warm-up")
        timed(side, "GET", "large/warm-up")
    for number in range(rounds):
        for side in rotated(sides, number):
            timed(side, "PUT", f"large/{number}")
    for number in range(rounds):
        for side in rotated(sides, number):
            timed(side, "GET", f"large/{rounds - 1}")
    target.unlink(missing_ok=True)


def bench_small(sides: Sequence[Side], count: int, rounds: int, results: Results) -> None:
    """PUT, GET, HEAD ``count`` fresh small keys per side and round, from the two client processes."""
    clients = SmallClients([side.endpoint for side in sides], SMALL_CLIENT_COUNT)
    try:
        for side, phase, outcome, used in small_rounds(clients, sides, count, rounds, SMALL_PHASES, rotated,
                                                       usage_since):
            operations, seconds, _ = outcome
            results.add(side.name, f"small {phase}", operations / seconds, used)
    finally:
        clients.close()


def count_transactions(sides: Sequence[Side], databases: Databases, count: int, results: Results) -> None:
    """PostgreSQL transactions per small operation, from pg_stat_database, in an untimed pass.

    First the idle rate of each database (background work: heartbeats, job leases,
    ...) over ``2 * STATS_FLUSH_WAIT`` s; then each PostgreSQL configuration gets
    ``count`` operations of each kind from one client, and the counters are read
    once every backend has been idle long enough to publish them. The idle rate
    times each window's length is taken off.
    """
    measured = [side for side in sides if side.database is not None]
    clients = {side.name: make_client(side.endpoint) for side in measured}
    keys = [f"transactions/{number:05d}" for number in range(count)]

    def reading() -> tuple[float, dict[str, int]]:
        time.sleep(STATS_FLUSH_WAIT)
        return time.monotonic(), databases.transactions()

    idle_start, idle_counts = reading()
    time.sleep(STATS_FLUSH_WAIT)
    at, before = reading()
    idle: dict[str, float] = {}
    for side in measured:
        assert side.database is not None
        idle[side.name] = (before[side.database] - idle_counts[side.database]) / (at - idle_start)
        results.transactions[(side.name, "idle")] = idle[side.name]
    for phase in SMALL_PHASES:
        for side in measured:
            run_small_phase(clients[side.name], side.endpoint.bucket, phase, keys)
        now, after = reading()
        for side in measured:
            assert side.database is not None
            spent = after[side.database] - before[side.database] - idle[side.name] * (now - at)
            results.transactions[(side.name, phase)] = spent / count
        at, before = now, after


def _difference(was: Mapping[int, float], now: Mapping[int, float]) -> Callable[[int], float]:
    """pid -> CPU seconds used between the two readings."""
    return lambda pid: now.get(pid, 0.0) - was.get(pid, 0.0)


def record_shares(sides: Sequence[Side], before: Mapping[str, Snapshot], results: Results) -> None:
    """Each process's CPU since ``before``: one line per instance, or the supervisor and each worker."""
    table = process_table()
    for side in sides:
        was, now = before[side.name].processes, side.snapshot(table).processes
        used = _difference(was["daemon"], now["daemon"])
        shares: dict[str, float] = {}
        for number, daemon in enumerate(side.daemons):
            assert daemon.process is not None
            tree = descendants(table, daemon.process.pid)
            if len(side.daemons) > 1:
                shares[f"instance {number + 1}"] = sum(used(pid) for pid in tree)
            elif len(tree) > 1:
                shares["supervisor"] = used(daemon.process.pid)
                shares.update((f"worker pid {pid}", used(pid)) for pid in tree[1:])
            else:
                shares["daemon"] = used(daemon.process.pid)
        if side.haproxy is not None:
            shares["HAProxy"] = sum(now["haproxy"].values()) - sum(was["haproxy"].values())
        if side.database is not None:
            results.postgres_seen[side.name] = len(now["postgres"])
            shares[f"PostgreSQL backends ({len(now['postgres'])} at the end)"] = sum(
                seconds - was["postgres"].get(pid, 0.0) for pid, seconds in now["postgres"].items())
        results.shares[side.name] = shares


# --- report ---------------------------------------------------------------------------------


def load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def rate_row(results: Results, operation: str, label: str) -> str:
    """One line: each side's median (min-max), then the ratios of medians."""
    medians = {name: statistics.median(results.rate[(name, operation)]) for name in CONFIGS}
    cells = "".join(
        f"{medians[name]:8.1f} ({min(results.rate[(name, operation)]):6.1f}-"
        f"{max(results.rate[(name, operation)]):6.1f})" for name in CONFIGS)
    ratios = "".join(f"{medians[a] / medians[b]:6.2f}" for a, b in RATIOS)
    return f"{label:6}{cells}{ratios}"


def cpu_row(results: Results, operation: str, label: str, scale: Callable[[float], float]) -> str:
    """One line: median daemon CPU per side, PostgreSQL backends' for B-D, HAProxy's for D, all of D."""
    def median(name: str, part: Callable[[Usage], float]) -> float:
        return scale(statistics.median(part(usage) for usage in results.cpu[(name, operation)]))

    cells = [median(name, lambda usage: usage.daemon) for name in CONFIGS]
    cells += [median(name, lambda usage: usage.postgres) for name in ("B", "C", "D")]
    cells.append(median("D", lambda usage: usage.haproxy))
    cells += [median(name, lambda usage: usage.daemon + usage.postgres + usage.haproxy) for name in CONFIGS]
    return f"{label:6}" + "".join(f"{cell:7.2f}" for cell in cells)


CPU_HEADER = (f"{'':6}" + "".join(f"{'d ' + name:>7}" for name in CONFIGS)
              + "".join(f"{'pg ' + name:>7}" for name in "BCD") + f"{'hap D':>7}"
              + "".join(f"{'all ' + name:>7}" for name in CONFIGS))


def report_lines(args: argparse.Namespace, results: Results, dsn_host: str) -> Iterator[str]:
    """The tables of rates, ratios and CPU, then the CPU split of C and D."""
    yield "configurations (one SeaweedFS store each, same SeaweedFS, UNSIGNED-PAYLOAD upstream, SDK checksums off):"
    for name, (label, *_) in CONFIGS.items():
        yield f"  {name} = {label}"
    yield f"PostgreSQL: {dsn_host}, one database per configuration (created, dropped at the end), default pool_size"
    yield ""
    header = f"{'':6}" + "".join(f"{name + ' median (min-max)':>24}" for name in CONFIGS) + "".join(
        f"{a + '/' + b:>6}" for a, b in RATIOS)
    yield (f"small objects: {args.small_count} x 4 KiB per round, 2 client processes, {args.rounds} rounds "
           "(order rotating); ops/s")
    yield header
    for phase in SMALL_PHASES:
        yield rate_row(results, f"small {phase}", phase)
    yield ""
    yield (f"large object: {args.size_mib} MiB single-part, {args.rounds} rounds (order rotating) + 1 warm-up; "
           "MB/s (10^6 B/s)")
    yield header
    for operation in ("PUT", "GET"):
        yield rate_row(results, operation, operation)
    yield f"downloads verified by MD5: {results.verified} (including warm-ups)"
    yield ""
    yield ("CPU, median over rounds: d = daemon processes (all of them), pg = PostgreSQL backends of the "
           "configuration's database, hap = HAProxy, all = d + pg + hap")
    yield "ms per 4 KiB operation"
    yield CPU_HEADER
    for phase in SMALL_PHASES:
        yield cpu_row(results, f"small {phase}", phase, lambda cpu: cpu / args.small_count * 1e3)
    yield f"s per GiB of the {args.size_mib} MiB object"
    yield CPU_HEADER
    gib = args.size_mib / 1024
    for operation in ("PUT", "GET"):
        yield cpu_row(results, operation, operation, lambda cpu: cpu / gib)
    yield ""
    yield (f"PostgreSQL transactions per 4 KiB operation (pg_stat_database, separate untimed pass of "
           f"{min(TRANSACTION_SAMPLE, args.small_count)} operations each, one client, idle rate taken off):")
    for phase in SMALL_PHASES:
        yield f"{phase:6}" + "".join(f"{name}{results.transactions[(name, phase)]:6.2f}   " for name in "BCD")
    yield ("idle: " + ", ".join(f"{name} {results.transactions[(name, 'idle')]:.2f}" for name in "BCD")
           + " transactions/s (background work of the configuration's processes)")
    yield ""
    yield "CPU seconds over the timed part, per process:"
    for name, shares in results.shares.items():
        yield f"  {name}: " + ", ".join(f"{label} {seconds:.1f}" for label, seconds in shares.items())
    if any(seen == 0 for seen in results.postgres_seen.values()):
        yield ("  (no PostgreSQL backend of some database was found in /proc: the server runs elsewhere or as "
               "another user we cannot see, so its pg figures are 0)")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options; ``--quick`` shrinks everything for a smoke test."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="rotating rounds per configuration (default 3)")
    parser.add_argument("--size-mib", type=int, default=256, help="large object size (default 256)")
    parser.add_argument("--small-count", type=int, default=1000, help="small objects per round (default 1000)")
    parser.add_argument("--quick", action="store_true", help="smoke test: 16 MiB, 100 small objects, 2 rounds")
    args = parser.parse_args(argv)
    if args.quick:
        args.size_mib, args.small_count, args.rounds = 16, 100, 2
    if min(args.rounds, args.size_mib) < 1 or args.small_count < 2:
        parser.error("rounds and sizes must be positive (and at least one small object per client)")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Start SeaweedFS and the four configurations, measure them in rotating rounds, print the report."""
    args = parse_args(argv)
    dsn = bench_dsn()
    dsn_host = f"{urlsplit(dsn).hostname}:{urlsplit(dsn).port or 5432}"
    started = time.monotonic()
    print(f"machine: {os.cpu_count()} CPU cores, shared by every daemon, HAProxy, PostgreSQL, SeaweedFS and "
          f"the clients; load average at start: {load()}", flush=True)
    results = Results()
    databases = Databases(dsn)
    try:
        psycopg.connect(dsn, connect_timeout=10).close()
    except psycopg.Error as error:
        print(f"scale_out.py needs a PostgreSQL server it may create databases on ({dsn_host}: {error}); "
              "name one in S3O_BENCH_POSTGRES_DSN or S3O_TEST_POSTGRES_DSN", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="s3o-bench-scale-") as tmp:
        directory = Path(tmp)
        source = directory / "object.bin"
        make_file(source, args.size_mib * MiB)
        seaweedfs = SeaweedFS(directory / "seaweedfs")
        sides: list[Side] = []
        try:
            seaweedfs.start()
            for name in CONFIGS:
                sides.append(start_side(name, directory, seaweedfs, databases))
            print(", ".join(f"{side.name} on {side.endpoint.url}" for side in sides), flush=True)
            before = snapshot_all(sides)
            bench_large(sides, source, args.rounds, directory, results)
            for side in sides:
                check_upstream_copy(seaweedfs, side, f"large/{args.rounds - 1}", source.stat().st_size)
            print(f"large object done after {time.monotonic() - started:.0f} s", flush=True)
            bench_small(sides, args.small_count, args.rounds, results)
            for side in sides:
                check_upstream_copy(seaweedfs, side, "small/r0/00000", SMALL_SIZE)
            print(f"small objects done after {time.monotonic() - started:.0f} s", flush=True)
            record_shares(sides, before, results)
            count_transactions(sides, databases, min(TRANSACTION_SAMPLE, args.small_count), results)
        except BaseException:
            for side in sides:
                for daemon in side.daemons:
                    print(f"--- {side.name} {daemon.directory.name} log (tail) ---\n{daemon.log()[-3000:]}",
                          file=sys.stderr)
            raise
        finally:
            for side in sides:
                stop_side(side)
            seaweedfs.remove()
            if databases.names:
                databases.drop_all()
    print_report(report_lines(args, results, dsn_host), started, f"load average at end: {load()}; ")
    return 0


if __name__ == "__main__":
    sys.exit(main())
