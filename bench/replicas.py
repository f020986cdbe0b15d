"""Compare the daemon with replicas = 1 (R1) against replicas = 2, write_quorum = 2 (R2) over two SeaweedFS stores.

Usage: python bench/replicas.py [--rounds 3] [--size-mib 256] [--small-count 400] [--rss-size-mib 1024] [--quick]

One run starts two SeaweedFS servers (``weed mini``) on loopback and two daemons
side by side, each with the same two s3 stores (one per SeaweedFS, its own
bucket on each, quota 0, ``payload_signing = "unsigned"``, ``routing_strategy =
"pack"``): R1 keeps one copy of each object (on the first store), R2 two, and
answers 200 only once both are durable. Then, in interleaved rounds (R1 first
on even rounds, R2 first on odd ones):

- large object (``--size-mib``, single-part ``put_object`` from a file with the
  helpers of ``upstream_ratio.py``, a fresh key each round, then ``get_object``
  of the last one; dirty pages flushed before each; every download's MD5
  checked outside the timed section): median MB/s (10^6 B/s) per side, the
  ratio R2/R1, and the daemon's CPU seconds per GiB (median);
- small objects (``--small-count`` x 4 KiB, the two client processes of
  ``upstream_ratio.py``, each with half the keys): PUT then GET (bodies
  compared), median ops/s, R2/R1, and the daemon's CPU ms per operation;
- then, on R2 only, 4 concurrent single-part uploads of ``--rss-size-mib``
  (UNSIGNED-PAYLOAD, streamed from disk as ``roundtrip.py`` does): the daemon's
  peak RSS during them (VmHWM reset first through ``/proc/PID/clear_refs``), with
  the target of issue 13 (< 150 MiB), and its peak over the whole run.

R2's copies are checked on both SeaweedFS servers. The exit status is non-zero
only when something broke, never for a missed target. All processes share the
machine's cores (the output says how many): R2 pays for the second upstream
stream in daemon and SeaweedFS CPU taken from the client, so figures are
relative to each other, not server capacity.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

from _common import MiB, cpu_seconds, file_md5, make_file, peak_rss_mib, print_report, small_rounds
from roundtrip import raw_unsigned_put
from tests.integration.daemon import ACCESS_KEY, BUCKET, SECRET_KEY, Daemon, StoreSpec, free_port, write_config
from tests.integration.upstreams import SeaweedFS
from upstream_ratio import SMALL_SIZE, Endpoint, SmallClients, alternate, get_large, make_client, put_large

SIDES = {"R1": (1, 1), "R2": (2, 2)}  # side -> (replicas, write_quorum)
#: Concurrent small-object clients (upstream_ratio.SmallClients: two processes, one connection each).
SMALL_CLIENT_COUNT = 2
SMALL_PHASES = ("PUT", "GET")
RSS_UPLOADS = 4
RSS_TARGET_MIB = 150.0


@dataclass
class Side:
    """One daemon under test and what it is configured with."""

    name: str
    daemon: Daemon
    bucket: str  # its bucket on each SeaweedFS
    endpoint: Endpoint

    @property
    def pid(self) -> int:
        assert self.daemon.process is not None
        return self.daemon.process.pid


@dataclass
class Results:
    """Per (side, operation): MB/s or ops/s and the daemon's CPU seconds, one per round.

    Operations: "PUT" and "GET" of the large object, "small PUT" and "small GET".
    """

    rate: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    cpu: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    rss_during: float = 0.0
    rss_whole: dict[str, float] = field(default_factory=dict)
    verified: int = 0

    def add(self, side: str, operation: str, rate: float, cpu: float) -> None:
        self.rate.setdefault((side, operation), []).append(rate)
        self.cpu.setdefault((side, operation), []).append(cpu)


def start_side(directory: Path, name: str, seaweeds: Sequence[SeaweedFS]) -> Side:
    """A daemon with one s3 store per SeaweedFS (bucket ``bench-<name>``) and its replica settings."""
    replicas, quorum = SIDES[name]
    bucket = f"bench-{name.lower()}"
    stores = []
    for number, seaweedfs in enumerate(seaweeds):
        seaweedfs.boto.create_bucket(Bucket=bucket)
        stores.append(StoreSpec(f"seaweedfs-{number}", 0, s3={
            "endpoint": seaweedfs.endpoint, "bucket": bucket, "region": seaweedfs.region,
            "access_key_id": seaweedfs.access_key, "secret_access_key": seaweedfs.secret_key,
            "payload_signing": "unsigned", "timeout": 60,
        }))
    daemon_directory = directory / name
    daemon_directory.mkdir()
    port = free_port()
    placement = f"[placement]\nreplicas = {replicas}\nwrite_quorum = {quorum}\n"
    daemon = Daemon(daemon_directory, write_config(daemon_directory, port, stores, extra_toml=placement), port)
    daemon.start()
    endpoint = Endpoint(name, daemon.endpoint, ACCESS_KEY, SECRET_KEY, BUCKET, "when_required")
    return Side(name, daemon, bucket, endpoint)


def check_copies(seaweeds: Sequence[SeaweedFS], side: Side, key: str, size: int) -> None:
    """Fail unless every SeaweedFS holds ``key`` of ``side`` with ``size`` bytes."""
    for seaweedfs in seaweeds:
        head = seaweedfs.boto.head_object(Bucket=side.bucket, Key=f"{BUCKET}/{key}")
        if head["ContentLength"] != size:
            raise RuntimeError(f"{side.name}: {seaweedfs.endpoint} holds {head['ContentLength']} bytes of {key}")


def cpu_used(side: Side) -> Callable[[], float]:
    """Measures the daemon's CPU seconds from now until the returned function is called."""
    before = cpu_seconds(side.pid)
    return lambda: cpu_seconds(side.pid) - before


def bench_large(sides: Sequence[Side], source: Path, rounds: int, scratch: Path, results: Results) -> None:
    """Interleaved PUT rounds (fresh keys), then GET rounds of the last key, with an untimed warm-up each."""
    size = source.stat().st_size
    expected = file_md5(source)
    clients = {side.name: make_client(side.endpoint) for side in sides}
    target = scratch / "download.bin"

    def get(side: Side, key: str) -> tuple[float, float]:
        os.sync()
        cpu = cpu_used(side)
        seconds = get_large(clients[side.name], side.endpoint, key, target)
        cpu = cpu()
        if file_md5(target) != expected:
            raise RuntimeError(f"{side.name}: downloaded bytes differ from the uploaded ones")
        results.verified += 1
        return seconds, cpu

    for side in sides:
        put_large(clients[side.name], side.endpoint, "large/warm-up", source)
        get(side, "large/warm-up")
    for number in range(rounds):
        for side in alternate(sides, number):
            os.sync()
            cpu = cpu_used(side)
            seconds = put_large(clients[side.name], side.endpoint, f"large/{number}", source)
            results.add(side.name, "PUT", size / seconds / 1e6, cpu())
    for number in range(rounds):
        for side in alternate(sides, number):
            seconds, cpu = get(side, f"large/{rounds - 1}")
            results.add(side.name, "GET", size / seconds / 1e6, cpu)
    target.unlink(missing_ok=True)


def bench_small(sides: Sequence[Side], count: int, rounds: int, results: Results) -> None:
    """PUT then GET ``count`` fresh small keys per side and round, from the two client processes."""
    clients = SmallClients([side.endpoint for side in sides], SMALL_CLIENT_COUNT)
    try:
        for side, phase, outcome, cpu in small_rounds(clients, sides, count, rounds, SMALL_PHASES, alternate, cpu_used):
            operations, seconds, _ = outcome
            results.add(side.name, f"small {phase}", operations / seconds, cpu)
    finally:
        clients.close()


def bench_rss(side: Side, source: Path) -> float:
    """Upload ``source`` ``RSS_UPLOADS`` times at once to ``side``; return the daemon's peak RSS meanwhile."""
    Path(f"/proc/{side.pid}/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    errors: list[BaseException] = []

    def upload(number: int) -> None:
        try:
            raw_unsigned_put(side.daemon, f"rss/{number}", source, source.stat().st_size)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=upload, args=(number,)) for number in range(RSS_UPLOADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise RuntimeError(f"concurrent upload failed: {errors[0]!r}")
    return peak_rss_mib(side.pid)


def report_lines(args: argparse.Namespace, results: Results) -> Iterator[str]:
    """Medians, R2/R1 ratios, CPU per GiB or per operation, and the RSS target."""
    yield (f"machine: {os.cpu_count()} CPU cores shared by both daemons, both SeaweedFS servers and the clients "
           "(and here by other engineers' test runs)")
    yield ("R1 = replicas 1; R2 = replicas 2, write_quorum 2; same two SeaweedFS stores, "
           "UNSIGNED-PAYLOAD upstream, boto3 SDK checksums off")
    yield ""
    gib = args.size_mib / 1024
    yield (f"large object: {args.size_mib} MiB single-part, {args.rounds} rounds interleaved + 1 warm-up; "
           "MB/s median (min-max); daemon CPU s/GiB median")
    yield f"{'':6}{'R1 MB/s':>22}{'R2 MB/s':>22}{'R2/R1':>7}{'R1 CPU':>8}{'R2 CPU':>8}"
    for operation in ("PUT", "GET"):
        yield _row(results, operation, operation, lambda cpu: f"{cpu / gib:8.2f}")
    yield f"downloads verified by MD5: {results.verified} (including warm-ups)"
    yield ""
    yield (f"small objects: {args.small_count} x 4 KiB per round, 2 client processes, {args.rounds} rounds "
           "interleaved; ops/s median (min-max); daemon CPU ms/op median")
    yield f"{'':6}{'R1 ops/s':>22}{'R2 ops/s':>22}{'R2/R1':>7}{'R1 CPU':>8}{'R2 CPU':>8}"
    for phase in SMALL_PHASES:
        yield _row(results, f"small {phase}", phase, lambda cpu: f"{cpu / args.small_count * 1e3:8.2f}")
    yield ""
    met = "yes" if results.rss_during < RSS_TARGET_MIB else "NO"
    yield (f"R2 daemon peak RSS during {RSS_UPLOADS} concurrent {args.rss_size_mib} MiB uploads: "
           f"{results.rss_during:.1f} MiB   target < {RSS_TARGET_MIB:.0f} MiB   met: {met}")
    yield ("peak RSS over the whole run (VmHWM before the reset): "
           + ", ".join(f"{name} {rss:.1f} MiB" for name, rss in results.rss_whole.items()))


def _row(results: Results, operation: str, label: str, cpu_cell: Callable[[float], str]) -> str:
    """One table line: each side's rate median (min-max), the ratio R2/R1, each side's CPU cell."""
    cells = []
    for side in SIDES:
        rates = results.rate[(side, operation)]
        cells.append(f"{statistics.median(rates):7.1f} ({min(rates):6.1f}-{max(rates):6.1f})")
    ratio = statistics.median(results.rate[("R2", operation)]) / statistics.median(results.rate[("R1", operation)])
    cpus = "".join(cpu_cell(statistics.median(results.cpu[(side, operation)])) for side in SIDES)
    return f"{label:6}{cells[0]:>22}{cells[1]:>22}{ratio:7.2f}{cpus}"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options; ``--quick`` shrinks everything for a smoke test."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per side (default 3)")
    parser.add_argument("--size-mib", type=int, default=256, help="large object size (default 256)")
    parser.add_argument("--small-count", type=int, default=400, help="small objects per round (default 400)")
    parser.add_argument("--rss-size-mib", type=int, default=1024,
                        help=f"size of each of the {RSS_UPLOADS} concurrent uploads (default 1024)")
    parser.add_argument("--quick", action="store_true", help="smoke test: 32 MiB, 100 small objects, 64 MiB uploads")
    args = parser.parse_args(argv)
    if args.quick:
        args.size_mib, args.small_count, args.rss_size_mib = 32, 100, 64
    if min(args.rounds, args.size_mib, args.rss_size_mib) < 1 or args.small_count < 2:
        parser.error("rounds and sizes must be positive (and at least one small object per client)")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Start two SeaweedFS servers and the two daemons, run every part, print the report."""
    args = parse_args(argv)
    results = Results()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="s3o-bench-replicas-") as tmp:
        directory = Path(tmp)
        source = directory / "object.bin"
        make_file(source, args.size_mib * MiB)
        seaweeds: list[SeaweedFS] = []
        sides: list[Side] = []
        try:
            for number in range(2):
                seaweeds.append(SeaweedFS(directory / f"seaweedfs-{number}"))
                seaweeds[-1].start()
            sides = [start_side(directory, name, seaweeds) for name in SIDES]
            print(", ".join(f"{side.name} on {side.endpoint.url}" for side in sides), flush=True)
            bench_large(sides, source, args.rounds, directory, results)
            check_copies(seaweeds, sides[1], f"large/{args.rounds - 1}", source.stat().st_size)
            print(f"large object done after {time.monotonic() - started:.0f} s", flush=True)
            bench_small(sides, args.small_count, args.rounds, results)
            check_copies(seaweeds, sides[1], "small/r0/00000", SMALL_SIZE)
            print(f"small objects done after {time.monotonic() - started:.0f} s", flush=True)
            results.rss_whole = {side.name: peak_rss_mib(side.pid) for side in sides}
            source.unlink()
            make_file(source, args.rss_size_mib * MiB)
            results.rss_during = bench_rss(sides[1], source)
            for number in range(RSS_UPLOADS):
                check_copies(seaweeds, sides[1], f"rss/{number}", source.stat().st_size)
            print(f"concurrent uploads done after {time.monotonic() - started:.0f} s", flush=True)
        except BaseException:
            for side in sides:
                print(f"--- {side.name} daemon log (tail) ---\n{side.daemon.log()[-3000:]}", file=sys.stderr)
            raise
        finally:
            for side in sides:
                side.daemon.stop()
            for seaweedfs in seaweeds:
                seaweedfs.remove()
    print_report(report_lines(args, results), started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
