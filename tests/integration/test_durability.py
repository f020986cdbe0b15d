"""A 200 means the object's metadata is on disk: the daemon syncs the WAL before answering.

The daemon runs under ``strace -f``, which records (with file names, ``-y``) the
requests it reads, the WAL frames it writes, the syncs and the answers it sends.
SQLite only (no PostgreSQL variant): on PostgreSQL the server, not the daemon, syncs its WAL.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
from pathlib import Path

from tests.integration.conftest import make_client
from tests.integration.daemon import BUCKET, Daemon, StoreSpec, free_port, write_config

_TRACED = "recvfrom,read,pwrite64,write,fsync,fdatasync,sendto,sendmsg,writev"


def traced_daemon(directory: Path, trace: Path) -> Daemon:
    strace = shutil.which("strace")
    assert strace is not None, "this test needs strace (apt-get install strace)"
    port = free_port()
    config = write_config(directory, port, [StoreSpec("local", 0)])
    wrapper = [strace, "-f", "-y", "-s", "1024", "-e", f"trace={_TRACED}", "-o", str(trace)]
    return Daemon(directory, config, port, wrapper=wrapper)


def stop_traced(daemon: Daemon) -> None:
    """Stop twistd itself (strace, told to stop, would detach and leave it running);
    strace exits with it."""
    assert daemon.process is not None
    pid = daemon.process.pid
    children = Path(f"/proc/{pid}/task/{pid}/children")
    for child in children.read_text().split() if children.exists() else ():
        os.kill(int(child), signal.SIGTERM)
    daemon.process.wait(timeout=30)


def first_line(lines: list[str], pattern: str, start: int = 0) -> int:
    for number in range(start, len(lines)):
        if re.search(pattern, lines[number]):
            return number
    raise AssertionError(f"no traced call matches {pattern!r} after line {start}")


def test_the_wal_is_written_and_synced_before_a_put_is_answered(tmp_path: Path) -> None:
    trace = tmp_path / "strace.txt"
    daemon = traced_daemon(tmp_path, trace)
    daemon.start(timeout=60)
    try:
        client = make_client(daemon)
        body = b"durable bytes " * 100
        etag = hashlib.md5(body).hexdigest()
        response = client.put_object(Bucket=BUCKET, Key="durable-key", Body=body)
        assert response["ETag"] == f'"{etag}"'
    finally:
        stop_traced(daemon)
    lines = trace.read_text(errors="replace").splitlines()

    request = first_line(lines, rf"(recvfrom|read)\(.*PUT /{BUCKET}/durable-key ")
    answer = first_line(lines, rf"(sendto|write|writev|sendmsg)\(.*HTTP/1.1 200 .*{etag}", request)
    wal = r"<[^>]*metadata\.sqlite-wal>"
    frame = first_line(lines, rf"pwrite64\(\d+{wal}", request)
    sync = first_line(lines, rf"f(data)?sync\(\d+{wal}\) += 0", frame)
    assert request < frame < sync < answer, (request, frame, sync, answer)
