"""Upload and download one large object through the daemon; print MB/s and the daemon's peak RSS.

Usage: python bench/roundtrip.py [--size-mib 1024]

Starts its own daemon (directory stores in a temp dir) on a free loopback port.
Two uploads are measured: boto3 (SHA-256-signed payload, as boto3 does over plain
HTTP) and a raw HTTP PUT with UNSIGNED-PAYLOAD (what rclone sends); then a boto3
download. Peak RSS is the daemon's VmHWM from /proc after all transfers.
"""

from __future__ import annotations

import argparse
import http.client
import tempfile
import time
from pathlib import Path

import boto3
from boto3.s3.transfer import TransferConfig

from _common import CHUNK, file_md5, make_file, peak_rss_mib
from tests.integration.daemon import ACCESS_KEY, BUCKET, SECRET_KEY, Daemon, StoreSpec, free_port, write_config
from tests.integration.rawhttp import signed_headers


def raw_unsigned_put(daemon: Daemon, key: str, source: Path, size: int) -> None:
    """PUT a file with UNSIGNED-PAYLOAD, streamed from disk by http.client."""
    path, headers = signed_headers(
        daemon, "PUT", key, headers={"Content-Length": str(size)}, unsigned_payload=True)
    connection = http.client.HTTPConnection("127.0.0.1", daemon.port, timeout=600, blocksize=CHUNK)
    with open(source, "rb") as body:
        connection.request("PUT", path, body=body, headers=headers)
        response = connection.getresponse()
        response.read()
    connection.close()
    if response.status != 200:
        raise RuntimeError(f"PUT failed: {response.status}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    args = parser.parse_args()
    size = args.size_mib * CHUNK
    with tempfile.TemporaryDirectory(prefix="s3o-bench-") as tmp:
        directory = Path(tmp)
        source = directory / "object.bin"
        expected_md5 = make_file(source, size)
        port = free_port()
        config = write_config(directory, port, [StoreSpec("local-a", 0)])
        daemon = Daemon(directory, config, port)
        daemon.start()
        try:
            s3 = boto3.client(
                "s3", endpoint_url=daemon.endpoint, aws_access_key_id=ACCESS_KEY,
                aws_secret_access_key=SECRET_KEY, region_name="us-east-1",
            )
            single_part = TransferConfig(multipart_threshold=2 * size + 1, max_concurrency=1)
            results = {}
            start = time.monotonic()
            s3.upload_file(str(source), BUCKET, "bench-signed", Config=single_part)
            results["PUT boto3 (signed payload)"] = time.monotonic() - start
            start = time.monotonic()
            raw_unsigned_put(daemon, "bench-unsigned", source, size)
            results["PUT raw (UNSIGNED-PAYLOAD)"] = time.monotonic() - start
            target = directory / "download.bin"
            start = time.monotonic()
            s3.download_file(BUCKET, "bench-unsigned", str(target), Config=single_part)
            results["GET boto3"] = time.monotonic() - start
            assert file_md5(target) == expected_md5, "downloaded bytes differ"
            rss = peak_rss_mib(daemon.process.pid)
        finally:
            daemon.stop()
    print(f"object size: {args.size_mib} MiB")
    for name, seconds in results.items():
        print(f"{name:32s} {size / seconds / 1e6:8.1f} MB/s  ({seconds:.2f} s)")
    print(f"daemon peak RSS (VmHWM): {rss:.1f} MiB")


if __name__ == "__main__":
    main()
