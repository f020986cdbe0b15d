"""How fast the daemon computes each x-amz-checksum-* algorithm, and what a checksummed upload costs it.

Usage: python bench/checksums.py [--size-mib 256] [--repeat 3] [--skip-daemon]

1. In this process: MB/s (10^6 bytes/s) of md5 (the ETag), sha256, sha1, crc32
   and of every CRC32C and CRC64NVME implementation installed here (the one the
   daemon uses is marked), over ``--size-mib`` of data in 1 MiB updates as the
   daemon sees a body; the pure-Python fallbacks over 8 MiB only.
2. Through the daemon (directory store, temp dir, free loopback port): a
   ``--size-mib`` single-part ``put_object`` from boto3 with each
   ChecksumAlgorithm (and none, with SDK checksums off), ``--repeat`` times each
   in rotation; the median CPU seconds (user + system, from /proc/<pid>/stat)
   the daemon spent per upload. Over plain HTTP boto3 signs the payload, so the
   daemon also SHA-256s every body, and MD5s it for the ETag, whatever the
   checksum. Issue 16's target: CRC32C costs the daemon no more than CRC32.
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import tempfile
import time
import zlib
from pathlib import Path
from typing import Callable

import boto3
from botocore.config import Config as BotoConfig

from _common import CHUNK, MiB, cpu_seconds, make_file
from s3orchestrator.auth.checksums import CRC_IMPLEMENTATIONS
from s3orchestrator.auth.crc import installed_crcs
from tests.integration.daemon import ACCESS_KEY, BUCKET, SECRET_KEY, Daemon, StoreSpec, free_port, write_config

PURE_PYTHON_MIB = 8
ALGORITHMS = ("none", "CRC32", "CRC32C", "CRC64NVME", "SHA1", "SHA256")


def hashlib_update(name: str) -> Callable[[bytes], object]:
    return hashlib.new(name).update


def crc_update(function: Callable[[bytes, int], int]) -> Callable[[bytes], object]:
    state = [0]

    def update(data: bytes) -> None:
        state[0] = function(data, state[0])

    return update


def mb_per_second(update: Callable[[bytes], object], block: bytes, mib: int) -> float:
    start = time.perf_counter()
    for _ in range(mib):
        update(block)
    return mib * MiB / (time.perf_counter() - start) / 1e6


def in_process(size_mib: int) -> None:
    block = hashlib.sha512(b"seed").digest() * (CHUNK // 64)
    rows: list[tuple[str, Callable[[bytes], object], int]] = [
        ("md5 (hashlib)", hashlib_update("md5"), size_mib),
        ("sha256 (hashlib)", hashlib_update("sha256"), size_mib),
        ("sha1 (hashlib)", hashlib_update("sha1"), size_mib),
        ("crc32 (zlib)", crc_update(zlib.crc32), size_mib),
    ]
    for algorithm in ("crc32c", "crc64nvme"):
        for implementation in installed_crcs(algorithm):
            used = " [used]" if implementation == CRC_IMPLEMENTATIONS[algorithm] else ""
            mib = size_mib if implementation.native else PURE_PYTHON_MIB
            rows.append((f"{algorithm} ({implementation.source}){used}", crc_update(implementation.function), mib))
    print(f"in this process, 1 MiB updates ({size_mib} MiB; pure Python {PURE_PYTHON_MIB} MiB):")
    for name, update, mib in rows:
        print(f"  {name:32s} {mb_per_second(update, block, mib):9.1f} MB/s")


def client(endpoint: str, sdk_checksums: bool) -> object:
    when = "when_supported" if sdk_checksums else "when_required"
    return boto3.client(
        "s3", endpoint_url=endpoint, aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
        region_name="us-east-1",
        config=BotoConfig(s3={"addressing_style": "path"}, retries={"max_attempts": 1}, read_timeout=600,
                          request_checksum_calculation=when, response_checksum_validation=when),
    )


def through_the_daemon(size_mib: int, repeat: int) -> None:
    with tempfile.TemporaryDirectory(prefix="s3o-bench-checksums-") as tmp:
        directory = Path(tmp)
        source = directory / "object.bin"
        make_file(source, size_mib * MiB)
        port = free_port()
        daemon = Daemon(directory, write_config(directory, port, [StoreSpec("local-a", 0)]), port)
        daemon.start()
        try:
            assert daemon.process is not None
            pid = daemon.process.pid
            plain, checksummed = client(daemon.endpoint, False), client(daemon.endpoint, True)
            cpu: dict[str, list[float]] = {algorithm: [] for algorithm in ALGORITHMS}
            for round_ in range(repeat):
                for algorithm in ALGORITHMS:
                    extra = {} if algorithm == "none" else {"ChecksumAlgorithm": algorithm}
                    s3 = plain if algorithm == "none" else checksummed
                    with open(source, "rb") as body:
                        before = cpu_seconds(pid)
                        s3.put_object(  # type: ignore[attr-defined]
                            Bucket=BUCKET, Key=f"bench-{algorithm}-{round_}", Body=body, **extra)
                        cpu[algorithm].append(cpu_seconds(pid) - before)
        finally:
            daemon.stop()
    print(f"daemon CPU seconds per {size_mib} MiB put_object (boto3, signed payload, directory store; "
          f"median of {repeat}):")
    for algorithm in ALGORITHMS:
        print(f"  ChecksumAlgorithm={algorithm:10s} {statistics.median(cpu[algorithm]):6.2f} s"
              f"  (all: {', '.join(f'{seconds:.2f}' for seconds in cpu[algorithm])})")
    crc32, crc32c = statistics.median(cpu["CRC32"]), statistics.median(cpu["CRC32C"])
    verdict = "met" if crc32c <= crc32 * 1.05 else "NOT met"
    print(f"target (CRC32C costs no more daemon CPU than CRC32, within 5% noise): {verdict}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip-daemon", action="store_true", help="only the in-process figures")
    args = parser.parse_args()
    in_process(args.size_mib)
    if not args.skip_daemon:
        through_the_daemon(args.size_mib, args.repeat)


if __name__ == "__main__":
    main()
