"""Small-object PUT throughput of the daemon: 4 KiB PUTs from 8 and 32 concurrent clients.

Usage: python bench/small_puts.py [--count 2000] [--rounds 3] [--clients 8,32]
                                  [--stores directory,seaweedfs] [--code LABEL=DIR ...]

Each measurement starts a fresh daemon (``twistd s3orchestrator``, fresh metadata
database) with one store, a directory store or an s3 store on a SeaweedFS server
(``weed mini``, started once, a bucket per daemon), and PUTs ``--count`` objects of
4 KiB with N concurrent clients on keep-alive connections. The client is one
asyncio process sending PUTs signed (UNSIGNED-PAYLOAD) before the timed part, so
it costs a few tens of microseconds per request and the figures are the daemon's.

``--code LABEL=DIR`` (repeatable) names checkouts to compare (the daemon imports
s3orchestrator from DIR, e.g. an unmodified ``git archive`` of the base commit);
the default is this checkout alone. Every round runs every checkout, store and
client count, the checkouts alternating (their order flips each round), so a
shared machine's load falls on all sides alike. Printed: per measurement ops/s and
the daemon's CPU ms per PUT (user + system from /proc), then medians per side.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

from _common import REPO, cpu_seconds
from s3orchestrator.auth.sigv4 import format_amz_date, sign_request
from tests.integration.daemon import ACCESS_KEY, BUCKET, SECRET_KEY, Daemon, StoreSpec, free_port, write_config
from tests.integration.upstreams import SeaweedFS

SIZE = 4 * 1024
BODY = bytes(range(256)) * (SIZE // 256)


def signed_puts(port: int, count: int, prefix: str) -> list[bytes]:
    """``count`` header-signed PutObject requests (UNSIGNED-PAYLOAD) for fresh keys, bodies included."""
    host = f"127.0.0.1:{port}"
    amz_date = format_amz_date(time.time())
    requests = []
    for number in range(count):
        path = f"/{BUCKET}/{prefix}/{number:06d}"
        signed = sign_request(
            "PUT", path, "", {"host": host, "content-length": str(SIZE)},
            access_key_id=ACCESS_KEY, secret_access_key=SECRET_KEY, region="us-east-1", amz_date=amz_date,
        )
        head = f"PUT {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {SIZE}\r\n"
        head += "".join(f"{name}: {value}\r\n" for name, value in signed.items())
        requests.append(head.encode() + b"\r\n" + BODY)
    return requests


async def _put_worker(port: int, targets: list[bytes], failures: list[str]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while targets:
            writer.write(targets.pop())
            head = await reader.readuntil(b"\r\n\r\n")
            status = head.split(b" ", 2)[1]
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            body = await reader.readexactly(length) if length else b""
            if status != b"200":
                failures.append(f"{status.decode()} {body[:200]!r}")
                return
    finally:
        writer.close()


async def _put_all(port: int, urls: list[bytes], clients: int) -> list[str]:
    targets = list(reversed(urls))
    failures: list[str] = []
    await asyncio.gather(*(_put_worker(port, targets, failures) for _ in range(clients)))
    return failures


def measure(code: Path, store: StoreSpec, clients: int, count: int, directory: Path) -> tuple[float, float]:
    """One fresh daemon on ``store``: (PUTs per second, daemon CPU ms per PUT)."""
    directory.mkdir(parents=True)
    port = free_port()
    daemon = Daemon(directory, write_config(directory, port, [store]), port, code=code)
    daemon.start()
    try:
        urls = signed_puts(port, count + 50, "k")
        warmup, timed = urls[:50], urls[50:]
        failures = asyncio.run(_put_all(port, warmup, 4))
        assert daemon.process is not None
        cpu_before = cpu_seconds(daemon.process.pid)
        started = time.perf_counter()
        failures += asyncio.run(_put_all(port, timed, clients))
        elapsed = time.perf_counter() - started
        cpu = cpu_seconds(daemon.process.pid) - cpu_before
        if failures:
            raise RuntimeError(f"{len(failures)} PUTs failed, first: {failures[0]}\n{daemon.log()[-3000:]}")
    finally:
        daemon.stop()
    return count / elapsed, cpu * 1000 / count


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=2000, help="PUTs per measurement")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", default="8,32", help="comma-separated concurrent client counts")
    parser.add_argument("--stores", default="directory,seaweedfs", help="directory and/or seaweedfs")
    parser.add_argument("--code", action="append", default=[], metavar="LABEL=DIR",
                        help="a checkout to run the daemon from (repeatable); default: this one")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    sides = [tuple(spec.split("=", 1)) for spec in args.code] or [("this", str(REPO))]
    clients = [int(n) for n in args.clients.split(",")]
    kinds = args.stores.split(",")
    results: dict[tuple[str, str, int], list[tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="small-puts-") as temp:
        root = Path(temp)
        seaweedfs = None
        if "seaweedfs" in kinds:
            seaweedfs = SeaweedFS(root / "seaweedfs")
            seaweedfs.start()
        try:
            run = 0
            for round_number in range(args.rounds):
                order = sides if round_number % 2 == 0 else list(reversed(sides))
                for kind in kinds:
                    for n in clients:
                        for label, code in order:
                            run += 1
                            if kind == "seaweedfs":
                                assert seaweedfs is not None
                                bucket = f"bench-{run}"
                                seaweedfs.boto.create_bucket(Bucket=bucket)
                                store = StoreSpec("seaweedfs", 0, s3={
                                    "endpoint": seaweedfs.endpoint, "bucket": bucket, "region": seaweedfs.region,
                                    "access_key_id": seaweedfs.access_key,
                                    "secret_access_key": seaweedfs.secret_key,
                                    "payload_signing": "unsigned", "timeout": 60,
                                })
                            else:
                                store = StoreSpec("local")
                            ops, cpu_ms = measure(Path(code), store, n, args.count, root / f"run-{run}")
                            results.setdefault((label, kind, n), []).append((ops, cpu_ms))
                            print(f"round {round_number + 1} {label:>8} {kind:>9} c={n:<3}"
                                  f" {ops:8.1f} PUT/s  {cpu_ms:6.3f} CPU ms/PUT", flush=True)
        finally:
            if seaweedfs is not None:
                seaweedfs.remove()
    print(f"\nmedians over {args.rounds} rounds, {args.count} x 4 KiB PUTs each:")
    for (label, kind, n), values in results.items():
        print(f"{label:>8} {kind:>9} c={n:<3} {statistics.median(v[0] for v in values):8.1f} PUT/s"
              f"  {statistics.median(v[1] for v in values):6.3f} CPU ms/PUT")
    return 0


if __name__ == "__main__":
    sys.exit(main())
