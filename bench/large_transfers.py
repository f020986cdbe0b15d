"""Large transfers (issue 17, targets 3-5): MB/s and CPU seconds per GiB of each process.

Usage: python bench/large_transfers.py [--size-mib 256] [--repeat 3] [--before DIR]
       [--sections directory,upload,seaweedfs,rss,workers] [--stream-gib 2]

``--before DIR`` is a checkout of the code to compare with (``git archive <commit> | tar -x -C DIR``):
each daemon section runs once with it ("before") and once with this checkout ("after").

- directory: a daemon with one directory store; one object of ``--size-mib`` PUT, then
  GET ``--repeat`` times (the first GET's MD5 checked, untimed rounds after). Plain TCP,
  so "after" serves it by sendfile. Then the floor: the same GETs from a process that
  only runs a blocking sendfile loop (no HTTP parsing, no reactor).
- upload: one 1 GiB single PUT (UNSIGNED-PAYLOAD: MD5 only; then SHA-256-signed: MD5 +
  SHA-256) into the directory store; MB/s and daemon CPU-s/GiB.
- seaweedfs: SeaweedFS (``weed mini``) direct vs through the daemon (an s3 store on it):
  PUT and GET of ``--size-mib``; ratios daemon/direct and CPU-s/GiB of daemon and SeaweedFS.
- rss: four concurrent 2 GiB uploads, then four concurrent 2 GiB downloads of one object
  (directory store); the daemon's peak RSS (VmHWM).
- workers: 4 KiB PUT/GET/HEAD from 4 client processes, ``--small-ops`` operations each
  (a new connection every 100), on three daemons with a directory store started side by
  side: SQLite with one process (the reference), PostgreSQL with one process, with
  server.workers = 2 and with server.workers = 2 on one shared socket
  (``worker_sockets = "shared"``; each its own database on the server of
  ``S3O_BENCH_POSTGRES_DSN`` or ``S3O_TEST_POSTGRES_DSN``, default
  ``postgresql://postgres@127.0.0.1:5432/postgres``, dropped at the end), in
  ``--small-rounds`` rounds whose order rotates. Per daemon and operation, medians over
  rounds: ops/s, daemon CPU per operation (every process: supervisor and workers), the
  PostgreSQL backends' CPU per operation, and for workers = 2 each worker's share of the
  requests (from the supervisor's /metrics) and of the CPU, and the supervisor's CPU
  beside the workers'; then an estimate of ops/s per core and on a 16-core host from the
  CPU per operation.

The client is http.client with SigV4 from botocore, reading into one reused buffer, so
its own CPU stays small. CPU figures come from /proc (user + system) and are fair on a
shared machine; MB/s figures are not (other work on the cores slows them).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import hashlib
import http.client
import multiprocessing
import os
import socket
import statistics
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable, Iterator

from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from prometheus_client.parser import text_string_to_metric_families

from _common import CHUNK, MiB, cpu_seconds, make_file, peak_rss_mib
from _postgres import Databases, backends, bench_dsn, descendants, process_table
from tests.integration.daemon import ACCESS_KEY, BUCKET, REPO, SECRET_KEY, Daemon, StoreSpec, free_port, write_config
from tests.integration.upstreams import SeaweedFS

GiB = 1024 * MiB
UNSIGNED = "UNSIGNED-PAYLOAD"
DIRECT_BUCKET = "bench-direct"
UPSTREAM_BUCKET = "bench-orchestrator"
SMALL_SIZE = 4096
SMALL_OPS = 2000
SMALL_CLIENTS = 4
#: Small requests a client sends on one connection before it opens a new one.
RECONNECT_EVERY = 100
#: The workers section's daemons: label, metadata engine, server.workers, server.worker_sockets.
SMALL_CONFIGS = (
    ("SQLite, 1 process", "sqlite", 1, None),
    ("PostgreSQL, 1 process", "postgresql", 1, None),
    ("PostgreSQL, workers = 2", "postgresql", 2, None),
    ("PostgreSQL, workers = 2, shared", "postgresql", 2, "shared"),
)


class _Signer(S3SigV4Auth):
    def __init__(self, access: str, secret: str, payload: str) -> None:
        super().__init__(Credentials(access, secret), "s3", "us-east-1")
        self._payload = payload

    def payload(self, request: Any) -> str:
        return self._payload


class Client:
    """Raw SigV4 requests to one endpoint and bucket."""

    def __init__(self, endpoint: str, access: str, secret: str, bucket: str) -> None:
        self.host, port = endpoint.removeprefix("http://").split(":")
        self.port = int(port)
        self.access, self.secret, self.bucket = access, secret, bucket
        self._connection: http.client.HTTPConnection | None = None

    def _headers(self, method: str, key: str, headers: dict[str, str], payload: str) -> dict[str, str]:
        request = AWSRequest(method=method, url=f"http://{self.host}:{self.port}/{self.bucket}/{key}",
                             headers=headers)
        _Signer(self.access, self.secret, payload).add_auth(request)
        return dict(request.headers.items())

    def fresh(self) -> Client:
        """A client of the same endpoint and bucket with its own connection."""
        return Client(f"http://{self.host}:{self.port}", self.access, self.secret, self.bucket)

    def connection(self) -> http.client.HTTPConnection:
        if self._connection is None:
            self._connection = http.client.HTTPConnection(self.host, self.port, timeout=600, blocksize=CHUNK)
        return self._connection

    def put(self, key: str, body: Any, size: int, payload: str = UNSIGNED) -> None:
        headers = self._headers("PUT", key, {"Content-Length": str(size)}, payload)
        connection = self.connection()
        connection.request("PUT", f"/{self.bucket}/{key}", body=body, headers=headers)
        response = connection.getresponse()
        response.read()
        if response.status != 200:
            raise RuntimeError(f"PUT {key}: {response.status}")

    def get(self, key: str, md5: Any = None) -> int:
        """GET ``key`` into a reused buffer; the byte count (``md5`` updated if given)."""
        connection = self.connection()
        connection.request("GET", f"/{self.bucket}/{key}", headers=self._headers("GET", key, {}, UNSIGNED))
        response = connection.getresponse()
        if response.status != 200:
            raise RuntimeError(f"GET {key}: {response.status} {response.read()[:200]!r}")
        buffer = bytearray(CHUNK)
        view = memoryview(buffer)
        total = 0
        while count := response.readinto(buffer):
            total += count
            if md5 is not None:
                md5.update(view[:count])
        return total

    def small(self, method: str, key: str, body: bytes = b"") -> int:
        """One small request, retried (as SDKs do) while the answer is 503 SlowDown; the retries."""
        payload = hashlib.sha256(body).hexdigest()
        for attempt in range(10):
            headers = self._headers(method, key, {"Content-Length": str(len(body))} if body else {}, payload)
            connection = self.connection()
            connection.request(method, f"/{self.bucket}/{key}", body=body or None, headers=headers)
            response = connection.getresponse()
            response.read()
            if response.status == 200:
                return attempt
            if response.status != 503:
                break
            if response.getheader("connection", "").lower() == "close":
                connection.close()
                self._connection = None
            time.sleep(0.05 * (attempt + 1))
        raise RuntimeError(f"{method} {key}: {response.status}")


def generated(size: int) -> Iterator[bytes]:
    """``size`` bytes of a repeated pseudo-random block, generated as they are sent."""
    block = hashlib.sha512(b"stream").digest() * (CHUNK // 64)
    sent = 0
    while sent < size:
        piece = block[: min(CHUNK, size - sent)]
        sent += len(piece)
        yield piece


def drop_dirty_pages() -> None:
    os.sync()


def thread_cpu_seconds(pid: int) -> float:
    """User + system CPU time of the process's main thread (the daemon's reactor thread)."""
    fields = Path(f"/proc/{pid}/task/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Measured:
    """CPU seconds of some processes over a section of work, and its wall time
    (for a daemon, also of its reactor thread alone)."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.readers: dict[str, Callable[[], float]] = {}
        for name, pid in pids.items():
            self.readers[name] = functools.partial(cpu_seconds, pid)
            if name == "daemon":
                self.readers["reactor thread"] = functools.partial(thread_cpu_seconds, pid)

    def __enter__(self) -> Measured:
        self.cpu = {name: read() for name, read in self.readers.items()}
        self.start = time.monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.monotonic() - self.start
        self.cpu = {name: read() - self.cpu[name] for name, read in self.readers.items()}


def describe(label: str, size: int, runs: list[Measured]) -> str:
    mbs = statistics.median(size / run.seconds / 1e6 for run in runs)
    cpu = "  ".join(
        f"{name} {statistics.median(run.cpu[name] for run in runs) / (size / GiB):.2f}"
        for name in runs[0].cpu
    )
    return f"  {label:44s} {mbs:8.1f} MB/s   CPU-s/GiB: {cpu}"


def directory_daemon(directory: Path, code: Path, server_toml: str = "") -> Daemon:
    directory.mkdir(parents=True)
    port = free_port()
    config = write_config(directory, port, [StoreSpec("local", 0)], server_toml=server_toml,
                          max_object_size=8 * GiB)
    daemon = Daemon(directory, config, port, code=code)
    daemon.start()
    return daemon


def daemon_client(daemon: Daemon) -> Client:
    return Client(daemon.endpoint, ACCESS_KEY, SECRET_KEY, BUCKET)


def _bare_sendfile_server(listener: socket.socket, path: Path) -> None:
    """Answer each request on each connection with ``path``'s bytes by a blocking sendfile loop."""
    size = path.stat().st_size
    header = f"HTTP/1.1 200 OK\r\nContent-Length: {size}\r\n\r\n".encode()
    with open(path, "rb") as file:
        while True:
            connection, _ = listener.accept()
            with connection:
                pending = b""
                while True:
                    while b"\r\n\r\n" not in pending and (data := connection.recv(65536)):
                        pending += data
                    if b"\r\n\r\n" not in pending:
                        break
                    pending = pending.split(b"\r\n\r\n", 1)[1]
                    connection.sendall(header)
                    offset = 0
                    while offset < size:
                        offset += os.sendfile(connection.fileno(), file.fileno(), offset, 8 * MiB)


def bare_sendfile(path: Path, size: int, repeat: int) -> str:
    """The floor: a process of its own sending ``path`` by a blocking sendfile loop (no
    HTTP parsing, no reactor) to the same client, measured as the daemon is."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    server = multiprocessing.get_context("fork").Process(target=_bare_sendfile_server, args=(listener, path))
    server.start()
    listener.close()
    assert server.pid is not None
    try:
        client = Client(f"http://127.0.0.1:{port}", ACCESS_KEY, SECRET_KEY, BUCKET)
        if client.get("large") != size:
            raise RuntimeError("the bare sendfile server sent a short body")
        runs = []
        for _ in range(repeat):
            with Measured({"bare sendfile loop": server.pid, "client": os.getpid()}) as run:
                client.get("large")
            runs.append(run)
        return describe("GET bare blocking sendfile loop (the floor)", size, runs)
    finally:
        server.kill()
        server.join()


def section_directory(work: Path, source: Path, md5: str, size: int, repeat: int, codes: dict[str, Path]) -> None:
    print(f"directory store GET ({size // MiB} MiB, plain TCP, median of {repeat}; client CPU-s/GiB beside)")
    for label, code in codes.items():
        daemon = directory_daemon(work / f"directory-{label}", code)
        try:
            assert daemon.process is not None
            client = daemon_client(daemon)
            with open(source, "rb") as body:
                client.put("large", body, size)
            check = hashlib.md5()
            client.get("large", check)
            if check.hexdigest() != md5:
                raise RuntimeError("downloaded bytes differ")
            runs = []
            for _ in range(repeat):
                with Measured({"daemon": daemon.process.pid, "client": os.getpid()}) as run:
                    client.get("large")
                runs.append(run)
            print(describe(f"GET {label}", size, runs))
        finally:
            daemon.stop()
    print(bare_sendfile(source, size, repeat))


def section_upload(work: Path, codes: dict[str, Path]) -> None:
    size = GiB
    source = work / "upload.bin"
    make_file(source, size)
    sha256 = hashlib.sha256(source.read_bytes()).hexdigest()
    print("single 1 GiB upload into a directory store")
    for label, code in codes.items():
        daemon = directory_daemon(work / f"upload-{label}", code)
        try:
            assert daemon.process is not None
            client = daemon_client(daemon)
            for payload_label, payload in (("UNSIGNED-PAYLOAD", UNSIGNED), ("signed SHA-256", sha256)):
                drop_dirty_pages()
                with Measured({"daemon": daemon.process.pid}) as run, open(source, "rb") as body:
                    client.put(f"upload-{payload_label.replace(' ', '-')}", body, size, payload)
                print(describe(f"PUT {label} ({payload_label})", size, [run]))
        finally:
            daemon.stop()
    source.unlink()


def section_seaweedfs(work: Path, source: Path, md5: str, size: int, repeat: int, codes: dict[str, Path]) -> None:
    print(f"SeaweedFS direct vs relayed by the daemon ({size // MiB} MiB, median of {repeat})")
    seaweedfs = SeaweedFS(work / "seaweedfs")
    seaweedfs.start()
    try:
        assert seaweedfs.process is not None
        for bucket in (DIRECT_BUCKET, UPSTREAM_BUCKET):
            seaweedfs.boto.create_bucket(Bucket=bucket)
        direct = Client(seaweedfs.endpoint, seaweedfs.access_key, seaweedfs.secret_key, DIRECT_BUCKET)
        store = StoreSpec("seaweedfs", 0, s3={
            "endpoint": seaweedfs.endpoint, "bucket": UPSTREAM_BUCKET, "region": seaweedfs.region,
            "access_key_id": seaweedfs.access_key, "secret_access_key": seaweedfs.secret_key,
            "payload_signing": "unsigned", "timeout": 60,
        })
        results: dict[str, dict[str, list[Measured]]] = {}
        for label, code in [("direct", REPO), *codes.items()]:
            daemon = None
            pids = {"seaweedfs": seaweedfs.process.pid}
            if label == "direct":
                client = direct
            else:
                directory = work / f"relay-{label}"
                directory.mkdir()
                port = free_port()
                daemon = Daemon(directory, write_config(directory, port, [store], max_object_size=8 * GiB), port,
                                code=code)
                daemon.start()
                assert daemon.process is not None
                pids["daemon"] = daemon.process.pid
                client = daemon_client(daemon)
            try:
                puts, gets = [], []
                for round_number in range(repeat + 1):
                    drop_dirty_pages()
                    with Measured(pids) as run, open(source, "rb") as body:
                        client.put(f"{label}-{round_number}", body, size)
                    if round_number:
                        puts.append(run)
                    check = hashlib.md5() if not round_number else None
                    with Measured(pids) as run:
                        client.get(f"{label}-{round_number}", check)
                    if check is not None and check.hexdigest() != md5:
                        raise RuntimeError("downloaded bytes differ")
                    if round_number:
                        gets.append(run)
                results[label] = {"PUT": puts, "GET": gets}
                print(describe(f"PUT {label}", size, puts))
                print(describe(f"GET {label}", size, gets))
            finally:
                if daemon is not None:
                    daemon.stop()
        for label in codes:
            for method in ("PUT", "GET"):
                ratio = (statistics.median(run.seconds for run in results["direct"][method])
                         / statistics.median(run.seconds for run in results[label][method]))
                print(f"  {method} {label} / direct: {ratio:.2f}")
    finally:
        seaweedfs.remove()


def section_rss(work: Path, stream_size: int, codes: dict[str, Path]) -> None:
    print(f"peak RSS, 4 concurrent {stream_size / GiB:g} GiB streams (directory store)")
    for label, code in codes.items():
        daemon = directory_daemon(work / f"rss-{label}", code)
        try:
            assert daemon.process is not None
            client = daemon_client(daemon)
            up = concurrently(functools.partial(put_stream, client, stream_size))
            after_puts = peak_rss_mib(daemon.process.pid)
            down = concurrently(functools.partial(get_stream, client, stream_size))
            peak = peak_rss_mib(daemon.process.pid)
            total = 4 * stream_size
            print(f"  {label}: 4 PUTs {total / up / 1e6:.0f} MB/s, peak RSS {after_puts:.1f} MiB; "
                  f"4 GETs {total / down / 1e6:.0f} MB/s, peak RSS {peak:.1f} MiB")
        finally:
            daemon.stop()
        for file in (work / f"rss-{label}" / "stores").rglob("*"):
            if file.is_file():
                file.unlink()


def concurrently(job: Callable[[int], None], count: int = 4) -> float:
    """Run ``job(0)`` to ``job(count - 1)`` in threads at once; the seconds until all are done."""
    errors: list[BaseException] = []

    def guarded(number: int) -> None:
        try:
            job(number)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=guarded, args=(number,)) for number in range(count)]
    start = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return time.monotonic() - start


def put_stream(client: Client, size: int, number: int) -> None:
    client.fresh().put(f"stream-{number}", generated(size), size)


def get_stream(client: Client, size: int, number: int) -> None:
    count = client.fresh().get(f"stream-{number}")
    if count != size:
        raise RuntimeError(f"got {count} bytes, not {size}")


def _small_client(endpoint: str, prefix: str, phase: str, count: int, barrier: Any, done: Any) -> None:
    client = Client(endpoint, ACCESS_KEY, SECRET_KEY, BUCKET)
    body = os.urandom(SMALL_SIZE)
    barrier.wait()
    retries = 0
    for number in range(count):
        if number and number % RECONNECT_EVERY == 0:
            client = client.fresh()  # a new connection: each lands on a worker of the kernel's choice
        retries += client.small(phase, f"{prefix}-{number}", body if phase == "PUT" else b"")
    done.put(retries)


@dataclasses.dataclass
class SmallSide:
    """One daemon of the workers section: its label, ``server.workers``, its PostgreSQL database if any."""

    label: str
    workers: int
    daemon: Daemon
    metrics_url: str
    database: str | None


@dataclasses.dataclass
class SmallRun:
    """One phase on one side: ops/s, CPU seconds (daemon processes by pid, PostgreSQL backends),
    requests answered by each worker, 503 retries."""

    ops: int
    seconds: float
    daemon_cpu: dict[int, float]
    postgres_cpu: float
    requests: dict[str, float]
    retries: int

    @property
    def rate(self) -> float:
        return self.ops / self.seconds

    @property
    def cpu_ms(self) -> float:
        return sum(self.daemon_cpu.values()) / self.ops * 1e3


def start_small_side(work: Path, code: Path, label: str, engine: str, workers: int, sockets: str | None,
                     databases: Databases) -> SmallSide:
    """A daemon with one directory store, ``workers`` processes (accepting on ``sockets``),
    metadata in SQLite or a new PostgreSQL database, and a metrics listener (per-worker
    request counts)."""
    server_toml = f"workers = {workers}" if workers > 1 else ""
    if sockets is not None:
        server_toml += f'\nworker_sockets = "{sockets}"'
    directory = work / f"workers-{label.replace(' ', '-').replace(',', '')}"
    directory.mkdir(parents=True)
    database, url = databases.create(f"w{len(databases.names)}") if engine == "postgresql" else (None, None)
    port, metrics_port = free_port(), free_port()
    config = write_config(directory, port, [StoreSpec("local", 0)], max_object_size=8 * GiB,
                          server_toml=server_toml, metadata_url=url,
                          extra_toml=f'[metrics]\nlisten = "tcp:{metrics_port}:interface=127.0.0.1"\n')
    daemon = Daemon(directory, config, port, code=code)
    daemon.start(timeout=60)
    return SmallSide(label, workers, daemon, f"http://127.0.0.1:{metrics_port}/metrics", database)


def requests_by_worker(metrics_url: str) -> dict[str, float]:
    """S3 requests answered so far, by worker (``-`` for a daemon without workers)."""
    with urllib.request.urlopen(metrics_url, timeout=30) as response:
        text = response.read().decode()
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "s3orchestrator_requests_total":
                worker = sample.labels.get("worker", "-")
                counts[worker] = counts.get(worker, 0) + sample.value
    return counts


def run_small_phase(side: SmallSide, phase: str, prefix: str, ops_per_client: int) -> SmallRun:
    """``SMALL_CLIENTS`` client processes doing ``phase`` on their keys under ``prefix``, measured."""
    assert side.daemon.process is not None
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(SMALL_CLIENTS + 1)
    done = context.Queue()
    clients = [context.Process(target=_small_client, args=(side.daemon.endpoint, f"{prefix}-c{n}", phase,
                                                            ops_per_client, barrier, done))
               for n in range(SMALL_CLIENTS)]
    for process in clients:
        process.start()
    table = process_table()
    pids = descendants(table, side.daemon.process.pid)
    postgres = backends(table, side.database) if side.database else []
    requests = requests_by_worker(side.metrics_url)
    before = {pid: cpu_seconds(pid) for pid in [*pids, *postgres]}
    barrier.wait()
    start = time.monotonic()
    retries = sum(done.get(timeout=900) for _ in clients)
    seconds = time.monotonic() - start
    spent = {pid: cpu_seconds(pid) - before[pid] for pid in before}
    answered = requests_by_worker(side.metrics_url)
    for process in clients:
        process.join()
        if process.exitcode:
            raise RuntimeError(f"a {phase} client failed")
    return SmallRun(
        SMALL_CLIENTS * ops_per_client, seconds, {pid: spent[pid] for pid in pids},
        sum(spent[pid] for pid in postgres),
        {worker: count - requests.get(worker, 0) for worker, count in answered.items()}, retries,
    )


def shares(values: dict[Any, float]) -> str:
    """Each value's share of their sum, in percent, in key order: "52/48 %"."""
    total = sum(values.values()) or 1
    return "/".join(f"{100 * values[key] / total:.0f}" for key in sorted(values)) + " %"


def section_workers(work: Path, codes: dict[str, Path], rounds: int, ops_per_client: int) -> None:
    print(f"small objects ({SMALL_SIZE} B), {SMALL_CLIENTS} client processes x {ops_per_client} operations "
          f"(a new connection every {RECONNECT_EVERY}), {rounds} rounds in rotating order, directory store")
    databases = Databases(bench_dsn())
    sides: list[SmallSide] = []
    runs: dict[tuple[str, str], list[SmallRun]] = {}
    try:
        for code_label, code in codes.items():
            for config_label, engine, workers, sockets in SMALL_CONFIGS:
                label = f"{code_label} {config_label}" if len(codes) > 1 else config_label
                if code != REPO and sockets is not None:
                    continue  # an older checkout may not know the key
                sides.append(start_small_side(work, code, label, engine, workers, sockets, databases))
        for number in range(rounds):
            shift = number % len(sides)
            for side in [*sides[shift:], *sides[:shift]]:
                for phase in ("PUT", "GET", "HEAD"):
                    run = run_small_phase(side, phase, f"r{number}", ops_per_client)
                    runs.setdefault((side.label, phase), []).append(run)
            print(f"  round {number + 1} done, load average {os.getloadavg()[0]:.2f}", flush=True)
    finally:
        for side in sides:
            side.daemon.stop()
        databases.drop_all()
    for side in sides:
        for phase in ("PUT", "GET", "HEAD"):
            measured = runs[(side.label, phase)]
            line = (f"  {side.label:34s} {phase:4s} {statistics.median(run.rate for run in measured):6.0f} ops/s  "
                    f"daemon {statistics.median(run.cpu_ms for run in measured):.2f} CPU-ms/op")
            if side.database:
                postgres = statistics.median(run.postgres_cpu / run.ops * 1e3 for run in measured)
                line += f", PostgreSQL backends {postgres:.2f}"
            if side.workers > 1:
                assert side.daemon.process is not None
                total: dict[str, float] = {}
                cpu: dict[int, float] = {}
                for run in measured:
                    for worker, count in run.requests.items():
                        total[worker] = total.get(worker, 0) + count
                    for pid, seconds in run.daemon_cpu.items():
                        cpu[pid] = cpu.get(pid, 0) + seconds
                supervisor_share = cpu.pop(side.daemon.process.pid) / (sum(cpu.values()) or 1) * 100
                per_round = " ".join(shares(run.requests) for run in measured)
                line += (f"; requests per worker {shares(total)} (rounds: {per_round}), "
                         f"CPU per worker {shares(cpu)}, supervisor {supervisor_share:.1f} %")
            retries = sum(run.retries for run in measured)
            print(line + (f"; 503 retries {retries}" if retries else ""))
    cores = os.cpu_count() or 1
    print(f"  estimate for a 16-core host from the CPU per operation ({cores} cores here; CPU-bound, "
          "the clients elsewhere):")
    for side in sides:
        if not side.database:
            continue
        cells = []
        for phase in ("PUT", "GET", "HEAD"):
            measured = runs[(side.label, phase)]
            daemon = statistics.median(run.cpu_ms for run in measured)
            postgres = statistics.median(run.postgres_cpu / run.ops * 1e3 for run in measured)
            cells.append(f"{phase} {1e3 / daemon:.0f}/core -> {16e3 / daemon:,.0f} "
                         f"({16e3 / (daemon + postgres):,.0f} with PostgreSQL on the host)")
        print(f"    {side.label}: " + "; ".join(cells))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--stream-gib", type=float, default=2)
    parser.add_argument("--before", type=Path, help="a checkout of the code to compare with")
    parser.add_argument("--sections", default="directory,upload,seaweedfs,rss,workers")
    parser.add_argument("--small-rounds", type=int, default=3, help="rounds of the workers section")
    parser.add_argument("--small-ops", type=int, default=SMALL_OPS,
                        help="operations of each kind per client process and round (workers section)")
    args = parser.parse_args()
    codes = {"after": REPO} if args.before is None else {"before": args.before.resolve(), "after": REPO}
    size = args.size_mib * MiB
    sections = args.sections.split(",")
    print(f"{os.cpu_count()} cores; load average {os.getloadavg()[0]:.2f} at start")
    with tempfile.TemporaryDirectory(prefix="s3o-large-") as tmp:
        work = Path(tmp)
        source = work / "object.bin"
        md5 = make_file(source, size)
        if "directory" in sections:
            section_directory(work, source, md5, size, args.repeat, codes)
        if "upload" in sections:
            section_upload(work, codes)
        if "seaweedfs" in sections:
            section_seaweedfs(work, source, md5, size, args.repeat, codes)
        if "rss" in sections:
            section_rss(work, int(args.stream_gib * GiB), {"after": REPO})
        if "workers" in sections:
            section_workers(work, codes, args.small_rounds, args.small_ops)
    print(f"load average {os.getloadavg()[0]:.2f} at end")


if __name__ == "__main__":
    main()
