"""Compare boto3 straight to SeaweedFS (A) with boto3 through s3orchestrator (B) on the same server.

Usage: python bench/upstream_ratio.py [--repeat 9] [--small-repeat 3] [--clients 8 32] [--parts large small]
                                      [--code DIR] [--baseline DIR] [--quick]

One run starts a SeaweedFS server (``weed mini``) on loopback and a daemon
(``twistd s3orchestrator``) whose only store is an s3 store on that server
(its own bucket, quota 0, ``payload_signing = "unsigned"``). Then:

- large object (256 MiB, generated once into a temp file): after one untimed
  PUT + GET each, single-part ``put_object`` rounds from the file (a fresh key
  each time), then ``get_object`` rounds streamed to a file, A and B alternating
  (A first on even repeats, B first on odd ones), dirty pages flushed before
  each; every download's MD5 is checked outside the timed section. Median MB/s
  (10^6 bytes/s) per side and the ratio B/A. The temp directory holds
  2 x (repeats + 1) copies in SeaweedFS (about 5 GiB with the defaults).
- small objects (2,000 x 4 KiB), with 8 and then 32 concurrent clients
  (``--clients``): four client processes, each running its share of the clients
  as threads with one boto3 client (and connection) each; all start every phase
  together: PUT, then GET (bodies compared), then HEAD, for A and for B (order
  alternating between repeats, fresh keys each repeat). Per phase: median ops/s
  over repeats, p50/p99 latency over all operations of all repeats, the ratio
  B/A of ops/s, and the CPU time per operation (from /proc, so fair on a busy
  machine) of the client processes, SeaweedFS and the daemon. From those the
  CPU-bound ceiling of B/A: A's (client + SeaweedFS) CPU per operation over B's
  (client + SeaweedFS + daemon); B/A as a share of it says how much B waited on
  anything but CPU (issue 17: >= 0.95; daemon CPU per PUT <= 0.5 ms, GET <= 0.3,
  HEAD <= 0.15).
- with ``--baseline DIR``, the small objects also go through a second daemon
  importing s3orchestrator from DIR (another checkout: ``git worktree add`` or
  ``git archive``), on its own bucket of the same SeaweedFS, as a third side
  rotating with A and B: its ops/s and CPU per operation next to this one's,
  measured under the same load (the fair before/after on a shared machine).
  ``--code DIR`` runs the main daemon from another checkout instead.
- the daemon's peak RSS (VmHWM from /proc) at the end, which covers the whole run.
- CPU seconds per GiB of the daemon, SeaweedFS and the client in the timed large
  transfers (median).

It prints the figures with the targets of issue 3 (B/A >= 0.9 for the large
object, >= 0.8 for small-object ops/s, daemon peak RSS < 150 MiB) and whether each
was met. It never fails on a target: the exit status is non-zero only when
something broke (a server did not start, a request failed, bytes differed).

Fairness: A and B use one boto3 client configuration (path-style, one attempt,
same timeouts); only endpoint and credentials differ. Over plain HTTP boto3
SHA-256-signs every PUT payload, so each 256 MiB PUT first hashes the whole file
on the client before sending: that client CPU time is the same on both sides and
pulls the PUT ratio towards 1 (the daemon itself sends UNSIGNED-PAYLOAD
upstream). SDK checksums are off by default (``request_checksum_calculation`` and
``response_checksum_validation`` = ``when_required``): with boto3's defaults the
client also CRC32s every PUT body, and SeaweedFS returns the stored CRC32 on GET,
which boto3 then verifies, while the daemon (``send_checksums = false``) returns
none, so only side A's GETs would pay for a checksum. ``--sdk-checksums`` keeps
boto3's defaults anyway. On a small machine the daemon, SeaweedFS and the
client processes share the same cores, so B also pays for the daemon's CPU use
in CPU taken from the clients and SeaweedFS; the output says how many cores.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import multiprocessing
import os
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from dataclasses import replace as dataclass_replace
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import boto3
from botocore.config import Config as BotoConfig

from _common import CHUNK, REPO, MiB, cpu_seconds, file_md5, make_file, peak_rss_mib
from tests.integration.daemon import ACCESS_KEY, BUCKET, SECRET_KEY, Daemon, StoreSpec, free_port, write_config
from tests.integration.upstreams import SeaweedFS

DIRECT_BUCKET = "bench-direct"
UPSTREAM_BUCKET = "bench-orchestrator"
BASELINE_BUCKET = "bench-baseline"
BASELINE = "B0"  # the side of the --baseline daemon
SMALL_SIZE = 4 * 1024
SMALL_PROCESSES = 4
SMALL_CONCURRENCY = (8, 32)
SMALL_PHASES = ("PUT", "GET", "HEAD")
# Issue 17: the daemon's CPU per 4 KiB request (ms) at most this, and each ratio at least this share of its ceiling.
DAEMON_CPU_TARGET_MS = {"PUT": 0.5, "GET": 0.3, "HEAD": 0.15}
CEILING_TARGET = 0.95
SMALL_WARMUP_OPS = 20
LARGE_TARGET = 0.9
SMALL_TARGET = 0.8
RSS_TARGET_MIB = 150.0
WORKER_TIMEOUT = 600.0


@dataclass(frozen=True)
class Endpoint:
    """Where one side of the comparison sends its requests (picklable for worker processes)."""

    side: str  # "A" or "B"
    url: str
    access_key: str
    secret_key: str
    bucket: str
    checksums: str  # boto3's request_checksum_calculation / response_checksum_validation


@dataclass
class SmallPhase:
    """One small-object phase on one side: operations, wall seconds, latencies, CPU seconds per operation."""

    ops: int
    seconds: float
    latencies: list[float]
    daemon_cpu: float
    seaweedfs_cpu: float
    client_cpu: float

    @property
    def ops_per_second(self) -> float:
        return self.ops / self.seconds


@dataclass
class Results:
    """Everything measured, keyed by (side, operation)."""

    large: dict[tuple[str, str], list[float]] = field(default_factory=dict)  # MB/s per repeat
    small: dict[tuple[int, str, str], list[SmallPhase]] = field(default_factory=dict)  # (clients, side, op)
    large_checked: dict[str, int] = field(default_factory=dict)  # verified downloads per side
    cpu: dict[str, tuple[float, float]] = field(default_factory=dict)  # part -> (daemon, SeaweedFS) s
    # (side, operation) -> per timed large transfer: CPU seconds of (daemon, SeaweedFS, this client)
    large_cpu: dict[tuple[str, str], list[tuple[float, float, float]]] = field(default_factory=dict)


def make_client(endpoint: Endpoint, session: Any = boto3) -> Any:
    """The boto3 S3 client both sides use; only endpoint and credentials differ."""
    return session.client(
        "s3",
        endpoint_url=endpoint.url,
        aws_access_key_id=endpoint.access_key,
        aws_secret_access_key=endpoint.secret_key,
        region_name="us-east-1",
        config=BotoConfig(
            s3={"addressing_style": "path"},
            retries={"max_attempts": 1},
            connect_timeout=5,
            read_timeout=300,
            request_checksum_calculation=endpoint.checksums,
            response_checksum_validation=endpoint.checksums,
        ),
    )


def start_servers(directory: Path, code: Path = REPO) -> tuple[SeaweedFS, Daemon]:
    """Start SeaweedFS and a daemon (importing s3orchestrator from ``code``) whose one store
    is a dedicated bucket on it."""
    seaweedfs = SeaweedFS(directory / "seaweedfs")
    seaweedfs.start()
    try:
        for bucket in (DIRECT_BUCKET, UPSTREAM_BUCKET):
            seaweedfs.boto.create_bucket(Bucket=bucket)
        daemon = start_daemon(directory / "daemon", seaweedfs, UPSTREAM_BUCKET, code)
    except BaseException:
        seaweedfs.remove()
        raise
    return seaweedfs, daemon


def start_daemon(directory: Path, seaweedfs: SeaweedFS, bucket: str, code: Path) -> Daemon:
    """A daemon importing s3orchestrator from ``code`` whose one store is ``bucket`` on SeaweedFS."""
    directory.mkdir()
    port = free_port()
    store = StoreSpec("seaweedfs", 0, s3={
        "endpoint": seaweedfs.endpoint, "bucket": bucket, "region": seaweedfs.region,
        "access_key_id": seaweedfs.access_key, "secret_access_key": seaweedfs.secret_key,
        "payload_signing": "unsigned", "timeout": 60,
    })
    daemon = Daemon(directory, write_config(directory, port, [store]), port, code=code)
    daemon.start()
    return daemon


def endpoints(seaweedfs: SeaweedFS, daemon: Daemon, sdk_checksums: bool) -> tuple[Endpoint, Endpoint]:
    """(A: straight to SeaweedFS, B: through the daemon), with the same client settings."""
    checksums = "when_supported" if sdk_checksums else "when_required"
    return (
        Endpoint("A", seaweedfs.endpoint, seaweedfs.access_key, seaweedfs.secret_key, DIRECT_BUCKET, checksums),
        Endpoint("B", daemon.endpoint, ACCESS_KEY, SECRET_KEY, BUCKET, checksums),
    )


def check_upstream_copy(seaweedfs: SeaweedFS, key: str, size: int) -> None:
    """Fail unless the daemon really stored ``key`` of its bucket in SeaweedFS."""
    head = seaweedfs.boto.head_object(Bucket=UPSTREAM_BUCKET, Key=f"{BUCKET}/{key}")
    if head["ContentLength"] != size:
        raise RuntimeError(f"SeaweedFS holds {head['ContentLength']} bytes for the daemon's {key}, not {size}")


def snapshot_cpu(seaweedfs: SeaweedFS, daemon: Daemon) -> tuple[float, float]:
    """CPU seconds used so far by (the daemon, SeaweedFS)."""
    assert daemon.process is not None and seaweedfs.process is not None
    return cpu_seconds(daemon.process.pid), cpu_seconds(seaweedfs.process.pid)


def alternate(sides: Sequence[Endpoint], repeat: int) -> Sequence[Endpoint]:
    """The sides rotated by ``repeat``: a pair in its order on even repeats, reversed on odd ones."""
    shift = repeat % len(sides)
    return [*sides[shift:], *sides[:shift]]


# --- large object ---------------------------------------------------------------------------


def put_large(client: Any, endpoint: Endpoint, key: str, source: Path) -> float:
    """Upload ``source`` in one PUT; return the seconds it took."""
    with open(source, "rb") as body:
        start = time.monotonic()
        client.put_object(Bucket=endpoint.bucket, Key=key, Body=body)
        return time.monotonic() - start


def get_large(client: Any, endpoint: Endpoint, key: str, target: Path) -> float:
    """Download ``key`` into ``target`` in one GET; return the seconds it took."""
    with open(target, "wb") as out:
        start = time.monotonic()
        response = client.get_object(Bucket=endpoint.bucket, Key=key)
        for piece in response["Body"].iter_chunks(CHUNK):
            out.write(piece)
        return time.monotonic() - start


def bench_large(
    pair: Sequence[Endpoint], source: Path, repeats: int, scratch: Path, results: Results, pids: Sequence[int]
) -> None:
    """PUT, then GET, the large object on each side, alternating; record MB/s, check every download.

    ``pids`` are the daemon's and SeaweedFS's: the CPU time they and this process
    use in each timed transfer is recorded too.

    All PUT rounds come before all GET rounds, each PUT under a fresh key (no
    overwrite, so SeaweedFS has no old chunks to delete in the background), and
    dirty pages are flushed before every timed transfer: a GET right after a
    256 MiB PUT mostly measures the disk writing back that PUT.
    """
    size = source.stat().st_size
    expected = file_md5(source)
    clients = {endpoint.side: make_client(endpoint) for endpoint in pair}
    target = scratch / "download.bin"

    def cpu_now() -> tuple[float, float, float]:
        daemon_pid, seaweedfs_pid = pids
        return cpu_seconds(daemon_pid), cpu_seconds(seaweedfs_pid), cpu_seconds(os.getpid())

    def record_cpu(endpoint: Endpoint, operation: str, before: tuple[float, float, float]) -> None:
        used = tuple(after - was for was, after in zip(before, cpu_now(), strict=True))
        results.large_cpu.setdefault((endpoint.side, operation), []).append(used)  # type: ignore[arg-type]

    def get_and_check(endpoint: Endpoint, key: str, timed: bool = True) -> float:
        """A GET of ``key`` into ``target``, then an untimed MD5 check."""
        os.sync()
        before = cpu_now()
        seconds = get_large(clients[endpoint.side], endpoint, key, target)
        if timed:
            record_cpu(endpoint, "GET", before)
        if file_md5(target) != expected:
            raise RuntimeError(f"side {endpoint.side}: downloaded bytes differ from the uploaded ones")
        results.large_checked[endpoint.side] = results.large_checked.get(endpoint.side, 0) + 1
        return seconds

    for endpoint in pair:  # untimed warm-up
        put_large(clients[endpoint.side], endpoint, "large/warm-up", source)
        get_and_check(endpoint, "large/warm-up", timed=False)
    for repeat in range(repeats):
        for endpoint in alternate(pair, repeat):
            os.sync()
            before = cpu_now()
            seconds = put_large(clients[endpoint.side], endpoint, f"large/{repeat}", source)
            record_cpu(endpoint, "PUT", before)
            results.large.setdefault((endpoint.side, "PUT"), []).append(size / seconds / 1e6)
    for repeat in range(repeats):
        for endpoint in alternate(pair, repeat):
            seconds = get_and_check(endpoint, f"large/{repeats - 1}")
            results.large.setdefault((endpoint.side, "GET"), []).append(size / seconds / 1e6)
    target.unlink(missing_ok=True)


# --- small objects --------------------------------------------------------------------------


def small_body(key: str) -> bytes:
    """The 4 KiB body of a small object, derived from its key so mix-ups show."""
    return (hashlib.sha256(key.encode()).digest() * (SMALL_SIZE // 32))[:SMALL_SIZE]


def run_small_phase(client: Any, bucket: str, phase: str, keys: Sequence[str]) -> list[float]:
    """Do one operation per key; return each one's latency in seconds."""
    bodies = {key: small_body(key) for key in keys}
    latencies = []
    for key in keys:
        start = time.monotonic()
        if phase == "PUT":
            client.put_object(Bucket=bucket, Key=key, Body=bodies[key])
        elif phase == "GET":
            if client.get_object(Bucket=bucket, Key=key)["Body"].read() != bodies[key]:
                raise RuntimeError(f"GET {key}: bytes differ from the uploaded ones")
        else:
            if client.head_object(Bucket=bucket, Key=key)["ContentLength"] != SMALL_SIZE:
                raise RuntimeError(f"HEAD {key}: wrong Content-Length")
        latencies.append(time.monotonic() - start)
    return latencies


def run_threads(clients: Sequence[Any], bucket: str, phase: str, keys: Sequence[str]) -> list[float]:
    """Run ``phase`` over ``keys`` split between one thread per client; all latencies, or the first error."""
    outcomes: list[list[float] | BaseException] = [[] for _ in clients]

    def run(index: int) -> None:
        try:
            outcomes[index] = run_small_phase(clients[index], bucket, phase, keys[index::len(clients)])
        except BaseException as error:
            outcomes[index] = error

    threads = [threading.Thread(target=run, args=(index,)) for index in range(len(clients))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    latencies: list[float] = []
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome
        latencies += outcome
    return latencies


def small_worker(conn: Connection, barrier: Barrier, pair: Sequence[Endpoint], number: int, threads: int) -> None:
    """A client process: ``threads`` boto3 clients per side, each used by its own thread; runs phases on command.

    Each command is (side, phase, keys); the reply is ("ok", start, end, latencies)
    or ("error", message). Every phase starts at a barrier shared with the other
    processes, so all clients hammer the server together.
    """
    try:
        # One session per client: boto3's default session is not thread-safe.
        clients = {endpoint.side: [make_client(endpoint, boto3.session.Session()) for _ in range(threads)]
                   for endpoint in pair}
        buckets = {endpoint.side: endpoint.bucket for endpoint in pair}
        for endpoint in pair:  # open connections, let both servers settle
            run_threads(clients[endpoint.side], endpoint.bucket, "PUT",
                        [f"warmup/{number}/{i}" for i in range(SMALL_WARMUP_OPS * threads)])
        conn.send(("ok",))
    except Exception as error:
        conn.send(("error", f"worker {number} setup: {error!r}"))
        return
    while (command := conn.recv()) is not None:
        side, phase, keys = command
        try:
            barrier.wait(timeout=WORKER_TIMEOUT)
            start = time.monotonic()  # CLOCK_MONOTONIC: comparable across processes
            latencies = run_threads(clients[side], buckets[side], phase, keys)
            conn.send(("ok", start, time.monotonic(), latencies))
        except Exception as error:
            barrier.abort()
            conn.send(("error", f"worker {number} {side} {phase}: {error!r}"))


class SmallClients:
    """``SMALL_PROCESSES`` client processes (spawned, so each builds its own boto3 state) driven phase by phase.

    ``concurrency`` clients in all, each with its own connection and thread.
    """

    def __init__(self, pair: Sequence[Endpoint], concurrency: int) -> None:
        context = multiprocessing.get_context("spawn")
        processes = min(SMALL_PROCESSES, concurrency)
        barrier = context.Barrier(processes)
        self.connections: list[Connection] = []
        self.processes = []
        for number in range(processes):
            threads = len(range(number, concurrency, processes))
            parent_end, child_end = context.Pipe()
            process = context.Process(target=small_worker, args=(child_end, barrier, pair, number, threads),
                                      daemon=True)
            process.start()
            self.connections.append(parent_end)
            self.processes.append(process)
        self.weights = [len(range(number, concurrency, processes)) for number in range(processes)]
        self._replies()  # all set up and warmed

    @property
    def pids(self) -> list[int]:
        return [process.pid for process in self.processes if process.pid is not None]

    def _replies(self) -> list[tuple]:
        replies = []
        for connection in self.connections:
            if not connection.poll(WORKER_TIMEOUT):
                raise RuntimeError("a small-object client process did not answer")
            reply = connection.recv()
            if reply[0] != "ok":
                raise RuntimeError(reply[1])
            replies.append(reply)
        return replies

    def run(self, side: str, phase: str, keys: Sequence[str]) -> tuple[int, float, list[float]]:
        """Split ``keys`` between the clients, run ``phase`` on ``side``: (operations, wall seconds, latencies)."""
        total = sum(self.weights)
        offset = 0
        for weight, connection in zip(self.weights, self.connections, strict=True):
            share = len(keys) * weight // total if connection is not self.connections[-1] else len(keys) - offset
            connection.send((side, phase, list(keys[offset:offset + share])))
            offset += share
        replies = self._replies()
        start = min(reply[1] for reply in replies)
        end = max(reply[2] for reply in replies)
        latencies = [latency for reply in replies for latency in reply[3]]
        return len(latencies), end - start, latencies

    def close(self) -> None:
        """Tell the processes to stop and wait for them (killing any that hang)."""
        for connection in self.connections:
            try:
                connection.send(None)
            except OSError:
                pass
        for process in self.processes:
            process.join(timeout=10)
            if process.is_alive():
                process.kill()
                process.join()


def bench_small(
    sides: Sequence[Endpoint], count: int, repeats: int, concurrency: int, daemon_pids: Mapping[str, int],
    seaweedfs_pid: int, results: Results
) -> None:
    """PUT, GET and HEAD ``count`` small objects on each side per repeat with ``concurrency`` clients.

    Fresh keys each repeat; the CPU time of the side's daemon (``daemon_pids``; B's
    for side A), of SeaweedFS and of the client processes in each phase is recorded.
    """
    clients = SmallClients(sides, concurrency)
    try:
        def cpu_now(side: str) -> tuple[float, float, float]:
            return (cpu_seconds(daemon_pids.get(side, daemon_pids["B"])), cpu_seconds(seaweedfs_pid),
                    sum(cpu_seconds(pid) for pid in clients.pids))

        for repeat in range(repeats):
            keys = [f"small/c{concurrency}/r{repeat}/{i:05d}" for i in range(count)]
            for endpoint in alternate(sides, repeat):
                for phase in SMALL_PHASES:
                    before = cpu_now(endpoint.side)
                    ops, seconds, latencies = clients.run(endpoint.side, phase, keys)
                    daemon_cpu, seaweedfs_cpu, client_cpu = (
                        (after - was) / ops for was, after in zip(before, cpu_now(endpoint.side), strict=True))
                    outcome = SmallPhase(ops, seconds, latencies, daemon_cpu, seaweedfs_cpu, client_cpu)
                    results.small.setdefault((concurrency, endpoint.side, phase), []).append(outcome)
    finally:
        clients.close()


# --- report ---------------------------------------------------------------------------------


def percentile(values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile of ``values`` (fraction in 0..1)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))]


def verdict(met: bool) -> str:
    return "yes" if met else "NO"


def report_lines(args: argparse.Namespace, results: Results, rss: float) -> Iterator[str]:
    """The printed report: setup, the two tables, peak RSS, and each target with whether it was met."""
    cores = os.cpu_count()
    yield (f"machine: {cores} CPU cores shared by the daemon, SeaweedFS and the client processes "
           "(figures are relative to each other, not server capacity)")
    yield ("A = boto3 straight to SeaweedFS, B = the same boto3 client config through s3orchestrator "
           "(one s3 store on the same SeaweedFS, UNSIGNED-PAYLOAD upstream)")
    yield ("client: boto3 SHA-256-signs PUT payloads over plain HTTP; SDK checksums "
           + ("on (boto3 defaults)" if args.sdk_checksums else "off (when_required)"))
    if "large" in args.parts:
        yield from large_report(args, results)
    if "small" in args.parts:
        for concurrency in args.clients:
            yield from small_report(args, results, concurrency)
    yield ""
    yield (f"daemon peak RSS (VmHWM, whole run): {rss:.1f} MiB   target < {RSS_TARGET_MIB:.0f} MiB   "
           f"met: {verdict(rss < RSS_TARGET_MIB)}")
    for part, (daemon_cpu, seaweedfs_cpu) in results.cpu.items():
        yield (f"CPU seconds (user+sys) in the {part} part: "
               f"daemon {daemon_cpu:.1f} s, SeaweedFS {seaweedfs_cpu:.1f} s")
    yield "targets are reported, never enforced: the exit status only says whether something broke"


def large_report(args: argparse.Namespace, results: Results) -> Iterator[str]:
    """The large-object table: MB/s per side, ratios, CPU seconds per GiB."""
    yield ""
    yield (f"large object: {args.size_mib} MiB, single-part put_object / get_object, {args.repeat} repeats "
           "A/B alternating + 1 warm-up, sync before each; MB/s = 10^6 B/s, median (min-max)")
    yield f"{'':6}{'A direct MB/s':>24}{'B daemon MB/s':>24}{'B/A':>7}{'target':>9}{'met':>5}"
    for operation in ("PUT", "GET"):
        a, b = results.large[("A", operation)], results.large[("B", operation)]
        ratio = statistics.median(b) / statistics.median(a)
        cells = [f"{statistics.median(v):7.1f} ({min(v):6.1f}-{max(v):6.1f})" for v in (a, b)]
        yield (f"{operation:6}{cells[0]:>24}{cells[1]:>24}{ratio:7.2f}{'>= ' + str(LARGE_TARGET):>9}"
               f"{verdict(ratio >= LARGE_TARGET):>5}")
    spreads = []
    for operation in ("PUT", "GET"):
        pairs = [b / a for a, b in zip(results.large[("A", operation)], results.large[("B", operation)], strict=False)]
        spreads.append(f"{operation} {statistics.median(pairs):.2f} ({min(pairs):.2f}-{max(pairs):.2f})")
    yield "B/A within each repeat, median (min-max): " + ", ".join(spreads)
    yield (f"downloads verified by MD5: A {results.large_checked.get('A', 0)}, "
           f"B {results.large_checked.get('B', 0)} (including warm-ups)")
    gib = args.size_mib / 1024
    for operation in ("PUT", "GET"):
        cells = []
        for side in ("A", "B"):
            rounds = results.large_cpu[(side, operation)]
            daemon_cpu, seaweedfs_cpu, client_cpu = (statistics.median(r[i] for r in rounds) / gib for i in range(3))
            cells.append(f"{side}: daemon {daemon_cpu:.2f} + SeaweedFS {seaweedfs_cpu:.2f} + client {client_cpu:.2f}"
                         f" = {daemon_cpu + seaweedfs_cpu + client_cpu:.2f}")
        yield f"CPU seconds per GiB, {operation} (median): " + "; ".join(cells)


def small_report(args: argparse.Namespace, results: Results, concurrency: int) -> Iterator[str]:
    """The small-object table at ``concurrency`` clients: ops/s, latency, CPU per operation, ceiling.

    The ceiling is the ratio B/A both sides would reach if the machine's cores were
    the only limit: A's CPU per operation (client + SeaweedFS) over B's (client +
    SeaweedFS + daemon), from the same run. B/A below it means B waited on
    something other than CPU.
    """
    processes = min(SMALL_PROCESSES, concurrency)
    yield ""
    yield (f"small objects, {concurrency} concurrent clients ({processes} processes x threads, one boto3 client "
           f"and connection each): {args.small_count} x 4 KiB, {args.small_repeat} repeats A/B alternating; "
           "medians over repeats, latency over all operations")
    yield (f"{'':5}{'A ops/s':>8}{'p50':>6}{'p99':>6}{'B ops/s':>8}{'p50':>6}{'p99':>6}{'B/A':>6}"
           f"{'ceiling':>8}{'of it':>6}{'met':>4}")
    medians: dict[str, dict[str, float]] = {}
    for phase in SMALL_PHASES:
        cells = ""
        figures: dict[str, float] = {}
        for side in ("A", "B"):
            runs = results.small[(concurrency, side, phase)]
            latencies = [latency for run in runs for latency in run.latencies]
            figures[side] = statistics.median(run.ops_per_second for run in runs)
            for name in ("daemon_cpu", "seaweedfs_cpu", "client_cpu"):
                figures[f"{side}_{name}"] = statistics.median(getattr(run, name) for run in runs) * 1e3
            p50, p99 = (percentile(latencies, fraction) * 1e3 for fraction in (0.5, 0.99))
            cells += f"{figures[side]:8.0f}{p50:6.1f}{p99:6.1f}"
        ratio = figures["B"] / figures["A"]
        ceiling = ((figures["A_client_cpu"] + figures["A_seaweedfs_cpu"])
                   / (figures["B_client_cpu"] + figures["B_seaweedfs_cpu"] + figures["B_daemon_cpu"]))
        share = ratio / ceiling
        medians[phase] = figures
        yield f"{phase:5}{cells}{ratio:6.2f}{ceiling:8.2f}{share:6.2f}{verdict(share >= CEILING_TARGET):>4}"
    yield (f"CPU ms per operation (median){'':6}{'A client':>9}{'SeaweedFS':>10}{'B client':>9}{'SeaweedFS':>10}"
           f"{'daemon':>8}{'target':>8}{'met':>4}")
    for phase in SMALL_PHASES:
        f = medians[phase]
        target = DAEMON_CPU_TARGET_MS[phase]
        yield (f"{phase:35}{f['A_client_cpu']:9.3f}{f['A_seaweedfs_cpu']:10.3f}{f['B_client_cpu']:9.3f}"
               f"{f['B_seaweedfs_cpu']:10.3f}{f['B_daemon_cpu']:8.3f}{'<= ' + str(target):>8}"
               f"{verdict(f['B_daemon_cpu'] <= target):>4}")
    if (concurrency, BASELINE, "PUT") in results.small:
        yield (f"baseline daemon ({args.baseline}), same clients, interleaved: ops/s and daemon CPU ms per operation"
               " (median), baseline -> this")
        for phase in SMALL_PHASES:
            base, this = results.small[(concurrency, BASELINE, phase)], results.small[(concurrency, "B", phase)]
            rates = [statistics.median(run.ops_per_second for run in runs) for runs in (base, this)]
            cpu = [statistics.median(run.daemon_cpu for run in runs) * 1e3 for runs in (base, this)]
            yield (f"{phase:5}{rates[0]:8.0f} -> {rates[1]:<8.0f}{cpu[0]:8.3f} -> {cpu[1]:.3f} ms "
                   f"({cpu[1] / cpu[0] - 1:+.0%})")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options; ``--quick`` shrinks everything for a smoke test."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=9, help="timed large-object rounds per side (default 9)")
    parser.add_argument("--small-repeat", type=int, default=3, help="small-object rounds per side (default 3)")
    parser.add_argument("--size-mib", type=int, default=256, help="large object size (default 256)")
    parser.add_argument("--small-count", type=int, default=2000, help="small objects per round (default 2000)")
    parser.add_argument("--sdk-checksums", action="store_true",
                        help="keep boto3's default CRC32 request checksums and response validation")
    parser.add_argument("--clients", type=int, nargs="+", default=list(SMALL_CONCURRENCY),
                        help="concurrent small-object clients, one table each (default 8 32)")
    parser.add_argument("--parts", nargs="+", choices=("large", "small"), default=["large", "small"],
                        help="which comparisons to run (default both)")
    parser.add_argument("--code", type=Path, default=REPO, metavar="DIR",
                        help="the checkout the daemon imports s3orchestrator from (default this one)")
    parser.add_argument("--baseline", type=Path, metavar="DIR",
                        help="small objects also through a daemon importing s3orchestrator from DIR (another "
                             "checkout), interleaved with this one: its ops/s and CPU per operation side by side")
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: 32 MiB, 3 large repeats, 600 small objects, 2 small repeats")
    args = parser.parse_args(argv)
    if args.quick:
        args.size_mib, args.small_count, args.repeat, args.small_repeat = 32, 600, 3, 2
    if (args.repeat < 1 or args.small_repeat < 1 or args.size_mib < 1
            or any(clients < 1 or args.small_count < clients for clients in args.clients)):
        parser.error("repeats, sizes and clients must be positive (and at least one small object per client)")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run both comparisons against one SeaweedFS and print the report."""
    args = parse_args(argv)
    results = Results()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="s3o-bench-ratio-") as tmp:
        directory = Path(tmp)
        source = directory / "object.bin"
        if "large" in args.parts:
            make_file(source, args.size_mib * MiB)
        seaweedfs, daemon = start_servers(directory, args.code)
        try:
            pair = endpoints(seaweedfs, daemon, args.sdk_checksums)
            print(f"SeaweedFS on {seaweedfs.endpoint}, s3orchestrator on {daemon.endpoint}", flush=True)
            assert daemon.process is not None and seaweedfs.process is not None
            pids = (daemon.process.pid, seaweedfs.process.pid)
            if "large" in args.parts:
                cpu_before = snapshot_cpu(seaweedfs, daemon)
                bench_large(pair, source, args.repeat, directory, results, pids)
                check_upstream_copy(seaweedfs, f"large/{args.repeat - 1}", source.stat().st_size)
                cpu_after = snapshot_cpu(seaweedfs, daemon)
                results.cpu["large-object"] = (cpu_after[0] - cpu_before[0], cpu_after[1] - cpu_before[1])
                print(f"large object done after {time.monotonic() - started:.0f} s", flush=True)
            if "small" in args.parts:
                sides = list(pair)
                daemon_pids = {"B": daemon.process.pid}
                baseline = None
                try:
                    if args.baseline is not None:
                        seaweedfs.boto.create_bucket(Bucket=BASELINE_BUCKET)
                        baseline = start_daemon(directory / "baseline", seaweedfs, BASELINE_BUCKET, args.baseline)
                        assert baseline.process is not None
                        daemon_pids[BASELINE] = baseline.process.pid
                        sides.append(dataclass_replace(pair[1], side=BASELINE, url=baseline.endpoint))
                    cpu_before = snapshot_cpu(seaweedfs, daemon)
                    for concurrency in args.clients:
                        bench_small(sides, args.small_count, args.small_repeat, concurrency, daemon_pids,
                                    seaweedfs.process.pid, results)
                        check_upstream_copy(seaweedfs, f"small/c{concurrency}/r0/00000", SMALL_SIZE)
                        print(f"small objects with {concurrency} clients done after "
                              f"{time.monotonic() - started:.0f} s", flush=True)
                finally:
                    if baseline is not None:
                        baseline.stop()
                cpu_after = snapshot_cpu(seaweedfs, daemon)
                results.cpu["small-object"] = (cpu_after[0] - cpu_before[0], cpu_after[1] - cpu_before[1])
            rss = peak_rss_mib(daemon.process.pid)
        except BaseException:
            print(f"--- daemon log (tail) ---\n{daemon.log()[-3000:]}", file=sys.stderr)
            raise
        finally:
            daemon.stop()
            seaweedfs.remove()
    print()
    for line in report_lines(args, results, rss):
        print(line)
    print(f"total time: {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
