"""Drain and rebalance throughput between two SeaweedFS stores, and what a drain costs clients' latency.

Usage: python bench/movement.py [--small-count 2000] [--large-count 8] [--large-mib 64]
                                [--load-seconds 20] [--max-concurrent 2] [--postgres] [--quick]

One run starts two SeaweedFS servers (``weed mini``) on loopback and one daemon whose two
s3 stores are a bucket on each (``seaweedfs-0`` first, ``routing_strategy = "pack"``,
``payload_signing = "unsigned"``, ``[movement] interval = 0.5``, ``max_concurrent`` as
given, no rate limit, SQLite metadata; with ``--postgres``, a PostgreSQL database of its own on the
server of ``S3O_BENCH_POSTGRES_DSN`` or ``S3O_TEST_POSTGRES_DSN`` (default
``postgresql://postgres@127.0.0.1:5432/postgres``, a role that may create databases),
dropped at the end). Then:

1. ``--small-count`` objects of 4 KiB are written (all land on seaweedfs-0);
2. baseline: for ``--load-seconds``, one client thread GETs random small objects and one
   PUTs new 4 KiB objects, each timing every request (nothing moves meanwhile);
3. small drain: seaweedfs-0 is put in mode drain (config file + SIGHUP) while the same
   client load runs, until the admin API (``/movement``) says the store is drained: the
   drain's objects/s and MB/s (copies moved / seconds from the reload to empty), and the
   clients' p50/p99 during it;
4. large drain: seaweedfs-0 back to normal and seaweedfs-1 readonly, ``--large-count``
   objects of ``--large-mib`` are written (onto seaweedfs-0); then seaweedfs-1 normal and
   seaweedfs-0 drain, no client load: the drain's MB/s.
5. rebalance: every object is now on seaweedfs-1; both stores get a quota of what it
   holds (mean fill 50%), ``routing_strategy = "spread"`` and both in mode normal
   (``[movement] rebalance_tolerance = 0.01``), then ``POST /rebalance`` queues the plan
   (large objects first, in key order, then small ones), no client load: copies/s and
   MB/s from the POST until no rebalance move is left.

After each drain, seaweedfs-0's bucket is listed upstream (must be empty) and objects
are read back through the daemon (every small one compared, every large one's MD5);
after the rebalance, every object is read back again and seaweedfs-0 must hold the
copies planned onto it.
CPU (user + system, from /proc) is read around each drain and the rebalance: the daemon's
and, with ``--postgres``, the backends serving its database (by the database name in their
process title), reported per copy moved. With ``--postgres``, the rebalance's PostgreSQL
transactions per copy moved are counted too (``pg_stat_database``, read once every backend
has published its counts, the database's idle rate of background transactions, measured
just before, taken off).
The exit status is non-zero only when something broke. Daemon, SeaweedFS servers and
clients share the machine's cores: figures compare with each other, not with capacity.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from _common import MiB, cpu_seconds, make_file
from _postgres import STATS_FLUSH_WAIT, Databases, backends, bench_dsn, process_table
from s3orchestrator.cli import fetch_status
from tests.integration.daemon import ACCESS_KEY, BUCKET, SECRET_KEY, Daemon, StoreSpec, free_port, write_config
from tests.integration.upstreams import SeaweedFS
from upstream_ratio import Endpoint, make_client

SMALL = 4096
TOKEN = "bench-movement-admin-token-0123456789"
BUCKET_UPSTREAM = "bench-movement"


@dataclass
class Latencies:
    """Request latencies (seconds) by operation, and failed requests."""

    seconds: dict[str, list[float]] = field(default_factory=lambda: {"GET": [], "PUT": []})
    failures: list[str] = field(default_factory=list)


@dataclass
class Drain:
    """One drain: copies and bytes moved, seconds from the reload to an empty store; CPU
    seconds the daemon and the PostgreSQL backends (if any) used meanwhile."""

    objects: int
    size: int
    seconds: float
    cpu: tuple[float, float] = (0.0, 0.0)


class Bench:
    """The two SeaweedFS servers, the daemon, its config, and a client."""

    def __init__(self, directory: Path, max_concurrent: int, databases: Any | None = None) -> None:
        self.directory = directory
        #: ``_postgres.Databases`` to put the metadata in (None: SQLite); the database's name.
        self.databases = databases
        self.database: str | None = None
        self.metadata_url: str | None = None
        self.seaweeds = [SeaweedFS(directory / f"seaweedfs-{number}") for number in range(2)]
        self.port, self.admin_port = free_port(), free_port()
        self.max_concurrent = max_concurrent
        self.daemon: Daemon | None = None
        self.reloads = 0

    def start(self) -> None:
        for seaweedfs in self.seaweeds:
            seaweedfs.start()
            seaweedfs.boto.create_bucket(Bucket=BUCKET_UPSTREAM)
        daemon_directory = self.directory / "daemon"
        daemon_directory.mkdir()
        if self.databases is not None:
            self.database, self.metadata_url = self.databases.create("movement")
        self.daemon = Daemon(daemon_directory, self.write({}), self.port)
        self.daemon.start()
        self.client = make_client(self.endpoint)

    @property
    def endpoint(self) -> Endpoint:
        assert self.daemon is not None
        return Endpoint("bench", self.daemon.endpoint, ACCESS_KEY, SECRET_KEY, BUCKET, "when_required")

    def write(self, modes: dict[str, str], quota: int = 0, routing_strategy: str = "pack") -> Path:
        """The daemon's config file with the stores in ``modes`` (absent: normal), each
        with ``quota`` bytes (0: unlimited)."""
        stores = []
        for number, seaweedfs in enumerate(self.seaweeds):
            name = f"seaweedfs-{number}"
            stores.append(StoreSpec(name, quota, s3={
                "endpoint": seaweedfs.endpoint, "bucket": BUCKET_UPSTREAM, "region": seaweedfs.region,
                "access_key_id": seaweedfs.access_key, "secret_access_key": seaweedfs.secret_key,
                "payload_signing": "unsigned", "timeout": 60,
            }, settings={"mode": modes.get(name, "normal")}))
        extra = (f'[admin]\nlisten = "tcp:{self.admin_port}:interface=127.0.0.1"\ntoken = "{TOKEN}"\n'
                 f"[movement]\ninterval = 0.5\nmax_concurrent = {self.max_concurrent}\nrebalance_tolerance = 0.01\n"
                 "[placement]\ncleanup_interval = 1\n")
        return write_config(self.directory / "daemon", self.port, stores, routing_strategy, extra_toml=extra,
                            metadata_url=self.metadata_url)

    def set_modes(self, modes: dict[str, str], quota: int = 0, routing_strategy: str = "pack") -> float:
        """Rewrite the config with ``modes`` (and ``write``'s other settings) and reload
        the daemon; when it reloaded."""
        assert self.daemon is not None and self.daemon.process is not None
        self.write(modes, quota, routing_strategy)
        self.reloads += 1
        os.kill(self.daemon.process.pid, signal.SIGHUP)
        while self.daemon.log().count("Reloaded ") < self.reloads:
            time.sleep(0.02)
        return time.monotonic()

    def cpu(self) -> tuple[float, float]:
        """CPU seconds used so far by the daemon and by the backends serving its database."""
        assert self.daemon is not None and self.daemon.process is not None
        backends_cpu = 0.0
        if self.database is not None:
            for pid in backends(process_table(), self.database):
                try:
                    backends_cpu += cpu_seconds(pid)
                except (OSError, IndexError):
                    pass  # ended meanwhile
        return cpu_seconds(self.daemon.process.pid), backends_cpu

    def transactions(self) -> tuple[float, int]:
        """(when, monotonic; PostgreSQL transactions of the daemon's database so far), read
        once the backends published them."""
        assert self.databases is not None and self.database is not None
        time.sleep(STATS_FLUSH_WAIT)
        return time.monotonic(), self.databases.transactions()[self.database]

    def admin(self, path: str, method: str = "GET") -> dict[str, Any]:
        return fetch_status(f"http://127.0.0.1:{self.admin_port}", TOKEN, path=path, method=method, timeout=300)

    def movement(self) -> dict[str, Any]:
        return self.admin("/movement")

    def rebalance(self) -> Drain:
        """Queue a rebalance and wait until no rebalance move is left; what it planned and
        how long from the request to the last move."""
        since, cpu = time.monotonic(), self.cpu()
        plan = self.admin("/rebalance", "POST")
        if plan["queued"] != plan["moves"] or not plan["moves"]:
            raise RuntimeError(f"rebalance queued {plan['queued']} of {plan['moves']} moves")
        while True:
            moves = [move for move in self.movement()["moves"] if move["reason"] == "rebalance"]
            if moves and all(move["left_objects"] == 0 for move in moves):
                return Drain(plan["moves"], plan["bytes"], time.monotonic() - since, spent(cpu, self.cpu()))
            time.sleep(0.1)

    def drain(self, store: str, since: float, cpu: tuple[float, float]) -> Drain:
        """Wait until ``store`` is drained; what moved since ``since`` (monotonic), the CPU
        used since ``cpu`` (``self.cpu()`` then)."""
        while True:
            document = self.movement()
            state = next(entry for entry in document["stores"] if entry["name"] == store)
            if state["drained"]:
                seconds = time.monotonic() - since
                move = next(move for move in document["moves"] if move["reason"] == "drain" and move["store"] == store)
                return Drain(move["moved_objects"], move["moved_bytes"], seconds, spent(cpu, self.cpu()))
            time.sleep(0.1)

    def upstream_keys(self, number: int) -> list[str]:
        pages = self.seaweeds[number].boto.get_paginator("list_objects_v2").paginate(Bucket=BUCKET_UPSTREAM)
        return [item["Key"] for page in pages for item in page.get("Contents", ())]

    def stop(self) -> None:
        if self.daemon is not None:
            self.daemon.stop()
        for seaweedfs in self.seaweeds:
            seaweedfs.remove()


def spent(before: tuple[float, float], after: tuple[float, float]) -> tuple[float, float]:
    return after[0] - before[0], after[1] - before[1]


def load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def small_body(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest() * (SMALL // 32)


def put_small(bench: Bench, keys: Sequence[str], threads: int = 4) -> None:
    def put(part: Sequence[str]) -> None:
        client = make_client(bench.endpoint)
        for key in part:
            client.put_object(Bucket=BUCKET, Key=key, Body=small_body(key))

    workers = [threading.Thread(target=put, args=(keys[i::threads],)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()


def client_load(bench: Bench, keys: Sequence[str], stop: threading.Event, prefix: str) -> Latencies:
    """One GET thread (random small keys, bodies compared) and one PUT thread (new keys) until ``stop``."""
    latencies = Latencies()

    def getter() -> None:
        client = make_client(bench.endpoint)
        while not stop.is_set():
            key = random.choice(keys)
            started = time.perf_counter()
            try:
                body = client.get_object(Bucket=BUCKET, Key=key)["Body"].read()
            except Exception as error:  # noqa: BLE001 (counted and reported)
                latencies.failures.append(f"GET {key}: {error}")
                continue
            latencies.seconds["GET"].append(time.perf_counter() - started)
            if body != small_body(key):
                latencies.failures.append(f"GET {key}: wrong bytes")

    def putter() -> None:
        client = make_client(bench.endpoint)
        number = 0
        while not stop.is_set():
            key = f"{prefix}/{number:06d}"
            number += 1
            started = time.perf_counter()
            try:
                client.put_object(Bucket=BUCKET, Key=key, Body=small_body(key))
            except Exception as error:  # noqa: BLE001
                latencies.failures.append(f"PUT {key}: {error}")
                continue
            latencies.seconds["PUT"].append(time.perf_counter() - started)

    workers = [threading.Thread(target=getter), threading.Thread(target=putter)]
    for worker in workers:
        worker.start()
    stop.wait()
    for worker in workers:
        worker.join()
    return latencies


def loaded(bench: Bench, keys: Sequence[str], prefix: str) -> tuple[threading.Event, threading.Thread, list[Latencies]]:
    stop = threading.Event()
    box: list[Latencies] = []
    thread = threading.Thread(target=lambda: box.append(client_load(bench, keys, stop, prefix)))
    thread.start()
    return stop, thread, box


def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else float("nan")


def read_back(bench: Bench, keys: Sequence[str], large_keys: Sequence[str], expected: str) -> None:
    """Every small object and every large one's MD5, read through the daemon."""
    for key in keys:
        if bench.client.get_object(Bucket=BUCKET, Key=key)["Body"].read() != small_body(key):
            raise RuntimeError(f"{key} reads other bytes")
    for key in large_keys:
        md5 = hashlib.md5()
        for piece in bench.client.get_object(Bucket=BUCKET, Key=key)["Body"].iter_chunks(MiB):
            md5.update(piece)
        if md5.hexdigest() != expected:
            raise RuntimeError(f"{key} reads other bytes")


def check_empty(bench: Bench, number: int) -> None:
    left = bench.upstream_keys(number)
    if left:
        raise RuntimeError(f"seaweedfs-{number} still holds {len(left)} objects after its drain, e.g. {left[0]}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small-count", type=int, default=2000, help="4 KiB objects to drain (default 2000)")
    parser.add_argument("--large-count", type=int, default=8, help="large objects to drain (default 8)")
    parser.add_argument("--large-mib", type=int, default=64, help="size of each large object (default 64)")
    parser.add_argument("--load-seconds", type=float, default=20.0, help="baseline client load (default 20)")
    parser.add_argument("--max-concurrent", type=int, default=2, help="[movement] max_concurrent (default 2)")
    parser.add_argument("--postgres", action="store_true", help="PostgreSQL metadata (a database of its own)")
    parser.add_argument("--quick", action="store_true", help="smoke test: 200 small, 2 x 8 MiB, 3 s of load")
    args = parser.parse_args(argv)
    if args.quick:
        args.small_count, args.large_count, args.large_mib, args.load_seconds = 200, 2, 8, 3.0
    started = time.monotonic()
    start_load = load()
    databases = Databases(bench_dsn()) if args.postgres else None
    transactions_per_copy: float | None = None
    with tempfile.TemporaryDirectory(prefix="s3o-bench-movement-") as tmp:
        bench = Bench(Path(tmp), args.max_concurrent, databases)
        try:
            bench.start()
            keys = [f"small/{number:06d}" for number in range(args.small_count)]
            put_small(bench, keys)
            print(f"{len(keys)} small objects written after {time.monotonic() - started:.0f} s", flush=True)

            stop, thread, box = loaded(bench, keys, "load-baseline")
            time.sleep(args.load_seconds)
            stop.set()
            thread.join()
            baseline = box[0]

            stop, thread, box = loaded(bench, keys, "load-drain")
            cpu = bench.cpu()
            since = bench.set_modes({"seaweedfs-0": "drain"})
            small = bench.drain("seaweedfs-0", since, cpu)
            stop.set()
            thread.join()
            during = box[0]
            check_empty(bench, 0)
            read_back(bench, keys, (), "")
            print(f"small drain done after {time.monotonic() - started:.0f} s", flush=True)

            bench.set_modes({"seaweedfs-1": "readonly"})
            source = Path(tmp) / "large.bin"
            expected = make_file(source, args.large_mib * MiB)
            large_keys = [f"large/{number}" for number in range(args.large_count)]
            for key in large_keys:
                bench.client.upload_file(str(source), BUCKET, key)
            source.unlink()
            cpu = bench.cpu()
            since = bench.set_modes({"seaweedfs-0": "drain"})
            large = bench.drain("seaweedfs-0", since, cpu)
            check_empty(bench, 0)
            read_back(bench, (), large_keys, expected)
            print(f"large drain done after {time.monotonic() - started:.0f} s", flush=True)

            held = next(store for store in bench.admin("/status")["stores"] if store["name"] == "seaweedfs-1")
            bench.set_modes({}, quota=held["used_bytes"], routing_strategy="spread")
            if databases is not None:
                idle_since, idle_before = bench.transactions()
                idle_at, before = bench.transactions()
                idle_rate = (before - idle_before) / (idle_at - idle_since)
            rebalanced = bench.rebalance()
            if databases is not None:
                now, after = bench.transactions()
                transactions_per_copy = (after - before - idle_rate * (now - idle_at)) / rebalanced.objects
            if len(bench.upstream_keys(0)) < rebalanced.objects:
                raise RuntimeError("seaweedfs-0 holds fewer objects than the rebalance moved onto it")
            read_back(bench, keys, large_keys, expected)
            print(f"rebalance done after {time.monotonic() - started:.0f} s", flush=True)
        except BaseException:
            if bench.daemon is not None:
                print(f"--- daemon log (tail) ---\n{bench.daemon.log()[-3000:]}", file=sys.stderr)
            raise
        finally:
            bench.stop()
            if databases is not None and databases.names:
                databases.drop_all()

    print()
    engine = "PostgreSQL" if args.postgres else "SQLite"
    print(f"machine: {os.cpu_count()} CPU cores shared by the daemon, two SeaweedFS servers, the clients"
          f"{' and PostgreSQL' if args.postgres else ''}; load average at start: {start_load}, at end: {load()}")
    print(f"[movement] max_concurrent = {args.max_concurrent}, no rate limit; {engine} metadata")
    print()
    print("drain / rebalance        copies       MB   seconds   copies/s     MB/s  daemon ms/copy  pg ms/copy")
    for label, drain in (("small (4 KiB), clients on", small), (f"large ({args.large_mib} MiB), idle", large),
                         ("rebalance (mixed), idle", rebalanced)):
        postgres_cpu = f"{drain.cpu[1] * 1e3 / drain.objects:12.1f}" if args.postgres else f"{'-':>12}"
        print(f"{label:24}{drain.objects:7d}{drain.size / 1e6:9.1f}{drain.seconds:10.1f}"
              f"{drain.objects / drain.seconds:11.1f}{drain.size / 1e6 / drain.seconds:9.2f}"
              f"{drain.cpu[0] * 1e3 / drain.objects:16.1f}{postgres_cpu}")
    if transactions_per_copy is not None:
        print(f"PostgreSQL transactions per copy moved (rebalance, idle rate off): {transactions_per_copy:.1f}")
    print()
    print("client latency (ms)        GET p50   GET p99   PUT p50   PUT p99   requests")
    for label, latencies in (("no drain", baseline), ("during the small drain", during)):
        gets, puts = latencies.seconds["GET"], latencies.seconds["PUT"]
        print(f"{label:26}{percentile(gets, 0.5) * 1e3:8.1f}{percentile(gets, 0.99) * 1e3:10.1f}"
              f"{percentile(puts, 0.5) * 1e3:10.1f}{percentile(puts, 0.99) * 1e3:10.1f}{len(gets) + len(puts):11d}")
    failures = baseline.failures + during.failures
    print(f"failed client requests: {len(failures)}" + (f" (first: {failures[0]})" if failures else ""))
    print(f"total time: {time.monotonic() - started:.0f} s")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
