"""Compare a multipart upload straight to SeaweedFS (A) with the same upload through s3orchestrator (B).

Usage: python bench/multipart_ratio.py [--repeat 5] [--size-mib 2048] [--quick]

One run starts SeaweedFS (``weed mini``) and a daemon whose only store is an s3
store on it (the same setup as ``upstream_ratio.py``). A file of ``--size-mib``
MiB (2 GiB by default) is generated once; then boto3's ``upload_file`` sends it
with 16 MiB parts, 4 in flight (``TransferConfig(multipart_chunksize=16 MiB,
max_concurrency=4)``), to A and to B alternately (A first on even repeats, B
first on odd ones), each to a fresh key, dirty pages flushed before each. Every
upload's ETag is checked to be a 128-part multipart ETag equal to the one
computed locally, outside the timed section. The median MB/s (10^6 bytes/s) per
side and the ratio B/A are printed with issue 5's targets (B/A >= 0.9, daemon
peak RSS < 150 MiB) and whether each was met; the exit status is non-zero only
when something broke.

Through the daemon, parts go to SeaweedFS's own multipart upload as they
arrive and Complete moves no data. SDK checksums are off on both sides (see
``upstream_ratio.py``); over plain HTTP boto3 SHA-256-signs every part on the
client, the same work on both sides.

It also prints the CPU seconds per GiB each process used (median over the timed
rounds): the daemon, SeaweedFS and the client share the machine's cores, so
when they are all busy the ratio is about (A's total) / (A's total + the daemon's).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

from boto3.s3.transfer import TransferConfig

from _common import MiB, cpu_seconds, make_file, peak_rss_mib
from upstream_ratio import RSS_TARGET_MIB, Endpoint, alternate, endpoints, make_client, start_servers, verdict

PART_SIZE = 16 * MiB
CONCURRENCY = 4
TARGET = 0.9


def multipart_etag(path: Path, part_size: int) -> str:
    """The ETag S3 gives ``path`` uploaded in ``part_size`` parts."""
    digests = []
    with open(path, "rb") as f:
        while part := f.read(part_size):
            digests.append(hashlib.md5(part).digest())
    return f'"{hashlib.md5(b"".join(digests)).hexdigest()}-{len(digests)}"'


def upload(client: Any, endpoint: Endpoint, key: str, source: Path) -> float:
    """``upload_file`` of ``source`` in 16 MiB parts, 4 in flight; the seconds it took."""
    config = TransferConfig(multipart_threshold=PART_SIZE, multipart_chunksize=PART_SIZE,
                            max_concurrency=CONCURRENCY, use_threads=True)
    os.sync()
    start = time.monotonic()
    client.upload_file(str(source), endpoint.bucket, key, Config=config)
    return time.monotonic() - start


def cpu_snapshot(*pids: int) -> list[float]:
    """CPU seconds used so far by each process."""
    return [cpu_seconds(pid) for pid in pids]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options; ``--quick`` shrinks everything for a smoke test."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="timed uploads per side (default 5)")
    parser.add_argument("--size-mib", type=int, default=2048, help="object size in MiB (default 2048)")
    parser.add_argument("--quick", action="store_true", help="smoke test: 128 MiB, 2 repeats")
    args = parser.parse_args(argv)
    if args.quick:
        args.size_mib, args.repeat = 128, 2
    if args.repeat < 1 or args.size_mib < 1:
        parser.error("repeats and size must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the comparison against one SeaweedFS and print the report."""
    args = parse_args(argv)
    started = time.monotonic()
    speeds: dict[str, list[float]] = {"A": [], "B": []}
    # Per timed round: CPU seconds of (daemon, SeaweedFS, this client process).
    cpu: dict[str, list[list[float]]] = {"A": [], "B": []}
    with tempfile.TemporaryDirectory(prefix="s3o-bench-multipart-") as tmp:
        directory = Path(tmp)
        source = directory / "object.bin"
        make_file(source, args.size_mib * MiB)
        size = source.stat().st_size
        expected = multipart_etag(source, PART_SIZE)
        seaweedfs, daemon = start_servers(directory)
        try:
            pair = endpoints(seaweedfs, daemon, sdk_checksums=False)
            clients = {endpoint.side: make_client(endpoint) for endpoint in pair}
            assert daemon.process is not None and seaweedfs.process is not None
            print(f"SeaweedFS on {seaweedfs.endpoint}, s3orchestrator on {daemon.endpoint}", flush=True)
            for repeat in range(args.repeat + 1):  # round 0 warms up, untimed
                for endpoint in alternate(pair, repeat):
                    client = clients[endpoint.side]
                    key = f"multipart/{repeat}"
                    pids = (daemon.process.pid, seaweedfs.process.pid, os.getpid())
                    before = cpu_snapshot(*pids)
                    seconds = upload(client, endpoint, key, source)
                    used = [after - was for was, after in zip(before, cpu_snapshot(*pids), strict=True)]
                    etag = client.head_object(Bucket=endpoint.bucket, Key=key)["ETag"]
                    if etag != expected:
                        raise RuntimeError(f"{endpoint.side}: ETag {etag}, expected {expected}")
                    client.delete_object(Bucket=endpoint.bucket, Key=key)
                    if repeat:
                        speeds[endpoint.side].append(size / seconds / 1e6)
                        cpu[endpoint.side].append(used)
                        print(f"  {endpoint.side} round {repeat}: {speeds[endpoint.side][-1]:.0f} MB/s", flush=True)
            rss = peak_rss_mib(daemon.process.pid)
        except BaseException:
            print(f"--- daemon log (tail) ---\n{daemon.log()[-3000:]}", file=sys.stderr)
            raise
        finally:
            daemon.stop()
            seaweedfs.remove()
    direct, through = statistics.median(speeds["A"]), statistics.median(speeds["B"])
    ratio = through / direct
    print()
    print(f"multipart upload of {args.size_mib} MiB, {PART_SIZE // MiB} MiB parts, {CONCURRENCY} in flight,"
          f" {args.repeat} rounds per side, {os.cpu_count()} cores")
    print(f"  A direct to SeaweedFS:    median {direct:7.1f} MB/s  ({', '.join(f'{v:.0f}' for v in speeds['A'])})")
    print(f"  B through s3orchestrator: median {through:7.1f} MB/s  ({', '.join(f'{v:.0f}' for v in speeds['B'])})")
    print(f"  ratio B/A {ratio:.2f} (target >= {TARGET}): {verdict(ratio >= TARGET)}")
    print(f"  daemon peak RSS {rss:.0f} MiB (target < {RSS_TARGET_MIB:.0f}): {verdict(rss < RSS_TARGET_MIB)}")
    gib = size / 2**30
    for side in "AB":
        daemon_cpu, seaweedfs_cpu, client_cpu = (statistics.median(r[i] for r in cpu[side]) / gib for i in range(3))
        print(f"  CPU seconds per GiB, side {side}: daemon {daemon_cpu:.2f}, SeaweedFS {seaweedfs_cpu:.2f},"
              f" client {client_cpu:.2f} (total {daemon_cpu + seaweedfs_cpu + client_cpu:.2f})")
    print(f"total time: {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
