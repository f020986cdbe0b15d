"""Open a burst of connections at once and see whether the listen queue (server.backlog) holds them.

Usage: python bench/connection_burst.py [--connections 300] [--backlog 1024]

Starts its own daemon (a directory store in a temp dir) with ``server.backlog``,
then opens ``--connections`` TCP connections to it at the same moment, each
sending ``GET /health`` and reading the answer. Prints how long the slowest took
and how many took over a second (a dropped SYN is retried after ~1 s: the accept
queue overflowed), and the kernel's ListenOverflows counter across the burst.
Compare ``--backlog 50`` (Twisted's own default) with the default 1024.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import tempfile
import threading
import time
from pathlib import Path

from _common import REPO  # noqa: F401  (puts the repository on sys.path)
from tests.integration.daemon import Daemon, StoreSpec, free_port, write_config


def listen_overflows() -> int:
    """TcpExt ListenOverflows from /proc/net/netstat (all sockets of this network namespace)."""
    lines = Path("/proc/net/netstat").read_text().splitlines()
    for names, values in zip(lines[::2], lines[1::2], strict=True):
        if names.startswith("TcpExt:"):
            return int(dict(zip(names.split(), values.split(), strict=True))["ListenOverflows"])
    raise RuntimeError("no TcpExt in /proc/net/netstat")


def one_request(port: int, start: threading.Event, durations: list[float], failures: list[str]) -> None:
    start.wait()
    began = time.monotonic()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
            while sock.recv(65536):
                pass
    except OSError as error:
        failures.append(str(error))
        return
    durations.append(time.monotonic() - began)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=300)
    parser.add_argument("--backlog", type=int, default=1024)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="s3o-bench-") as tmp:
        directory = Path(tmp)
        port = free_port()
        config = write_config(directory, port, [StoreSpec("local-a", 0)], server_toml=f"backlog = {args.backlog}")
        daemon = Daemon(directory, config, port)
        daemon.start()
        try:
            start = threading.Event()
            durations: list[float] = []
            failures: list[str] = []
            threads = [threading.Thread(target=one_request, args=(port, start, durations, failures))
                       for _ in range(args.connections)]
            for thread in threads:
                thread.start()
            overflows = listen_overflows()
            start.set()
            for thread in threads:
                thread.join()
            overflows = listen_overflows() - overflows
        finally:
            daemon.stop()
    print(f"connections: {args.connections}, server.backlog: {args.backlog}")
    print(f"answered: {len(durations)}, failed: {len(failures)}")
    if durations:
        print(f"median {statistics.median(durations) * 1000:.1f} ms, max {max(durations) * 1000:.1f} ms, "
              f"over 1 s (SYN retried): {sum(duration > 1 for duration in durations)}")
    print(f"kernel ListenOverflows during the burst: {overflows}")


if __name__ == "__main__":
    main()
