"""Time ListObjectsV2 pages over 10^6 keys; print median and p95 page latency per scenario.

Usage: python bench/list_objects.py [--prefixes 1000] [--keys-per-prefix 1000] [--samples 100]

Starts its own daemon once (to create the metadata schema), stops it, loads the
keys straight into its SQLite metadata (``dir0000/obj0000.dat`` ... : 1,000
prefixes of 1,000 keys), starts it again and lists through HTTP:

- no delimiter, 1000-key pages starting at random keys spread over the keyspace;
- no delimiter, a walk of consecutive pages with continuation tokens;
- delimiter "/" at the top: one page of the 1,000 common prefixes (each seek skips
  1,000 keys), and 100-prefix pages walked with continuation tokens;
- delimiter "/" inside one prefix (1,000 keys).

Each page is timed twice: with boto3 (what a user sees, botocore's XML parsing
included: it alone takes tens of milliseconds over 1000 keys, printed once) and
with a raw signed HTTP request (the daemon's time plus loopback transfer).
Target: median page < 50 ms (printed, never asserted).
"""

from __future__ import annotations

import argparse
import http.client
import random
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable
from urllib.parse import quote

import boto3
from botocore import parsers
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

import _common  # noqa: F401  (puts the repository on sys.path)
from tests.integration.daemon import ACCESS_KEY, BUCKET, SECRET_KEY, Daemon, StoreSpec, free_port, write_config

TARGET_MS = 50.0


def key_name(prefix: int, key: int) -> str:
    return f"dir{prefix:04d}/obj{key:04d}.dat"


def load_keys(database: Path, prefixes: int, keys_per_prefix: int) -> float:
    """Insert the keys straight into the objects table (schema made by the daemon); return seconds."""
    started = time.perf_counter()
    db = sqlite3.connect(database, isolation_level=None)
    try:
        db.execute("PRAGMA synchronous=OFF")
        db.execute("BEGIN")
        etag = "d41d8cd98f00b204e9800998ecf8427e"
        now_ms = int(time.time() * 1000)
        size = 1024
        rows = (
            (BUCKET, name, "local-a", f"{BUCKET}/{name}", size, etag, "binary/octet-stream", "{}", "{}", now_ms)
            for name in (key_name(p, k) for p in range(prefixes) for k in range(keys_per_prefix))
        )
        db.executemany(
            "INSERT INTO objects (bucket, key, store, location, size, etag, content_type, headers,"
            " user_metadata, last_modified_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        count = prefixes * keys_per_prefix
        db.execute(
            "UPDATE stores SET used_bytes = ?, object_count = ? WHERE name = 'local-a'", (count * size, count)
        )
        db.execute("COMMIT")
        db.execute("ANALYZE")
    finally:
        db.close()
    return time.perf_counter() - started


class RawLister:
    """Signed ListObjectsV2 requests over one kept-alive HTTP connection."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.connection = http.client.HTTPConnection("127.0.0.1", daemon.port, timeout=60)
        self.credentials = Credentials(ACCESS_KEY, SECRET_KEY)

    def list(self, params: dict[str, str]) -> bytes:
        query = "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in sorted(params.items()))
        path = f"/{BUCKET}?{query}"
        request = AWSRequest(method="GET", url=self.daemon.endpoint + path)
        S3SigV4Auth(self.credentials, "s3", "us-east-1").add_auth(request)
        self.connection.request("GET", path, headers=dict(request.headers.items()))
        response = self.connection.getresponse()
        body = response.read()
        if response.status != 200:
            raise RuntimeError(f"list failed: {response.status} {body[:300]!r}")
        return body


def next_token(body: bytes) -> str | None:
    """The NextContinuationToken of a raw ListObjectsV2 response, if truncated."""
    if b"<NextContinuationToken>" not in body:
        return None
    return body.split(b"<NextContinuationToken>")[1].split(b"<")[0].decode()


def timed(samples: list[float], call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``call(*args, **kwargs)``, its duration appended to ``samples`` (milliseconds)."""
    started = time.perf_counter()
    result = call(*args, **kwargs)
    samples.append((time.perf_counter() - started) * 1000)
    return result


def parse_ms(s3, body: bytes, repeat: int = 5) -> float:
    """Milliseconds botocore's XML parser alone takes over one ListObjectsV2 body (best of ``repeat``)."""
    shape = s3.meta.service_model.operation_model("ListObjectsV2").output_shape
    parser = parsers.RestXMLParser()
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        parser.parse({"body": body, "headers": {}, "status_code": 200}, shape)
        best = min(best, (time.perf_counter() - started) * 1000)
    return best


def report(name: str, boto_ms: list[float], raw_ms: list[float], per_page: str) -> None:
    def stats(values: list[float]) -> str:
        ordered = sorted(values)
        p95 = ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]
        return f"median {statistics.median(ordered):7.1f} ms  p95 {p95:7.1f} ms"

    def verdict(values: list[float]) -> str:
        return "meets" if statistics.median(values) < TARGET_MS else "MISSES"

    print(f"{name} ({len(boto_ms)} pages, {per_page}):")
    print(f"    boto3     {stats(boto_ms)}   [{verdict(boto_ms)} the {TARGET_MS:.0f} ms median target]")
    print(f"    raw HTTP  {stats(raw_ms)}   [{verdict(raw_ms)} the {TARGET_MS:.0f} ms median target]")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prefixes", type=int, default=1000)
    parser.add_argument("--keys-per-prefix", type=int, default=1000)
    parser.add_argument("--samples", type=int, default=100)
    args = parser.parse_args()
    rng = random.Random(42)
    total = args.prefixes * args.keys_per_prefix
    with tempfile.TemporaryDirectory(prefix="s3o-bench-list-") as tmp:
        directory = Path(tmp)
        port = free_port()
        config = write_config(directory, port, [StoreSpec("local-a", 0)])
        daemon = Daemon(directory, config, port)
        daemon.start()  # creates the schema and the store's usage row
        daemon.stop()
        # Daemon.start waits for the "listening" line of the log: start the next one afresh.
        daemon.log_path.rename(directory / "daemon-schema.log")
        seconds = load_keys(directory / "metadata.sqlite", args.prefixes, args.keys_per_prefix)
        size_mib = (directory / "metadata.sqlite").stat().st_size / 2**20
        print(f"loaded {total:,} keys into SQLite in {seconds:.1f}s ({size_mib:.0f} MiB)")
        daemon.start()
        try:
            s3 = boto3.client(
                "s3", endpoint_url=daemon.endpoint, aws_access_key_id=ACCESS_KEY,
                aws_secret_access_key=SECRET_KEY, region_name="us-east-1",
            )
            raw = RawLister(daemon)
            # Warm up connections and SQLite's page cache a little, as a running daemon would be.
            s3.list_objects_v2(Bucket=BUCKET, MaxKeys=1000)
            raw.list({"list-type": "2"})

            boto_ms: list[float] = []
            raw_ms: list[float] = []
            for _ in range(args.samples):
                after = key_name(rng.randrange(args.prefixes), rng.randrange(args.keys_per_prefix))
                page = timed(boto_ms, s3.list_objects_v2, Bucket=BUCKET, StartAfter=after)
                assert page["KeyCount"] == 1000 or not page["IsTruncated"]
                timed(raw_ms, raw.list, {"list-type": "2", "start-after": after, "encoding-type": "url"})
            report("no delimiter, pages at random start-after keys", boto_ms, raw_ms, "1000 keys each")
            body = raw.list({"list-type": "2", "encoding-type": "url"})
            print(f"    (botocore's XML parser alone takes {parse_ms(s3, body):.1f} ms over one 1000-key page)")

            boto_ms, raw_ms = [], []
            token = None
            raw_token = None
            for _ in range(args.samples):
                params = {"Bucket": BUCKET} if token is None else {"Bucket": BUCKET, "ContinuationToken": token}
                page = timed(boto_ms, s3.list_objects_v2, **params)
                token = page.get("NextContinuationToken")  # None at the end: start over
                raw_params = {"list-type": "2"}
                if raw_token is not None:
                    raw_params["continuation-token"] = raw_token
                body = timed(raw_ms, raw.list, raw_params)
                raw_token = next_token(body)
            report("no delimiter, consecutive pages by continuation token", boto_ms, raw_ms, "1000 keys each")

            boto_ms, raw_ms = [], []
            for _ in range(max(10, args.samples // 4)):
                page = timed(boto_ms, s3.list_objects_v2, Bucket=BUCKET, Delimiter="/")
                assert len(page["CommonPrefixes"]) == min(1000, args.prefixes)
                timed(raw_ms, raw.list, {"list-type": "2", "delimiter": "/", "encoding-type": "url"})
            report('delimiter "/" at the top', boto_ms, raw_ms,
                   f"{min(1000, args.prefixes)} common prefixes of {args.keys_per_prefix} keys each")

            boto_ms, raw_ms = [], []
            for _ in range(max(1, args.samples // 10)):
                token = None
                while True:
                    params = {"Bucket": BUCKET, "Delimiter": "/", "MaxKeys": 100}
                    if token is not None:
                        params["ContinuationToken"] = token
                    page = timed(boto_ms, s3.list_objects_v2, **params)
                    token = page.get("NextContinuationToken")
                    if token is None:
                        break
                raw_token = None
                while True:
                    raw_params = {"list-type": "2", "delimiter": "/", "max-keys": "100", "encoding-type": "url"}
                    if raw_token is not None:
                        raw_params["continuation-token"] = raw_token
                    body = timed(raw_ms, raw.list, raw_params)
                    raw_token = next_token(body)
                    if raw_token is None:
                        break
            report(
                'delimiter "/" at the top, walked by continuation token', boto_ms, raw_ms, "100 common prefixes each"
            )

            boto_ms, raw_ms = [], []
            for _ in range(args.samples):
                prefix = f"dir{rng.randrange(args.prefixes):04d}/"
                page = timed(boto_ms, s3.list_objects_v2, Bucket=BUCKET, Prefix=prefix, Delimiter="/")
                assert page["KeyCount"] == min(1000, args.keys_per_prefix)
                timed(raw_ms, raw.list, {"list-type": "2", "prefix": prefix, "delimiter": "/"})
            per_page = min(1000, args.keys_per_prefix)
            report('delimiter "/" inside a random prefix', boto_ms, raw_ms, f"{per_page} keys each")
        finally:
            daemon.stop()


if __name__ == "__main__":
    main()
