"""A metadata database locked by another process: writes get 503 SlowDown, lookups keep working."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest
from botocore.exceptions import ClientError

from tests.integration.conftest import make_client, metadata_rows, store_files
from tests.integration.daemon import BUCKET, Daemon, StoreSpec, free_port, write_config


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    """A daemon with one directory store whose requests wait at most 0.5 s for a locked database."""
    port = free_port()
    config = write_config(tmp_path, port, [StoreSpec("local", 0)], metadata_busy_timeout=0.5)
    started = Daemon(tmp_path, config, port)
    started.start()
    yield started
    started.stop()


def test_a_locked_database_refuses_writes_with_slow_down_and_answers_lookups(daemon: Daemon) -> None:
    client = make_client(daemon)
    client.put_object(Bucket=BUCKET, Key="kept", Body=b"kept bytes")
    other_process = sqlite3.connect(daemon.directory / "metadata.sqlite", isolation_level=None)
    try:
        other_process.execute("BEGIN IMMEDIATE")
        started = time.monotonic()
        with pytest.raises(ClientError) as refused:
            client.put_object(Bucket=BUCKET, Key="refused", Body=b"refused bytes")
        waited = time.monotonic() - started
        error = refused.value.response
        assert error["Error"]["Code"] == "SlowDown"
        assert error["ResponseMetadata"]["HTTPStatusCode"] == 503
        assert error["ResponseMetadata"]["HTTPHeaders"]["retry-after"] == "1"
        assert waited < 5.0  # busy_timeout is 0.5 s (it used to be a 10 s wait, then 500)

        assert client.get_object(Bucket=BUCKET, Key="kept")["Body"].read() == b"kept bytes"
        assert client.head_object(Bucket=BUCKET, Key="kept")["ContentLength"] == len(b"kept bytes")
    finally:
        other_process.execute("ROLLBACK")
        other_process.close()

    client.put_object(Bucket=BUCKET, Key="later", Body=b"later bytes")
    assert client.get_object(Bucket=BUCKET, Key="later")["Body"].read() == b"later bytes"
    assert metadata_rows(daemon, "SELECT COUNT(*) FROM reservations") == [(0,)]
    assert sorted(row[0] for row in metadata_rows(daemon, "SELECT key FROM objects")) == ["kept", "later"]
    assert [path.name for path in store_files(daemon, "local")] == ["kept", "later"]
    assert "Metadata database busy: PutObject" in daemon.log()


def test_a_daemon_starting_on_a_locked_database_waits_for_it(tmp_path: Path) -> None:
    port = free_port()
    config = write_config(tmp_path, port, [StoreSpec("local", 0)], metadata_busy_timeout=0.2)
    first = Daemon(tmp_path, config, port)
    first.start()  # creates the database
    first.stop()
    other_process = sqlite3.connect(tmp_path / "metadata.sqlite", isolation_level=None, check_same_thread=False)
    other_process.execute("BEGIN IMMEDIATE")
    (tmp_path / "second").mkdir()
    daemon = Daemon(tmp_path / "second", config, port)  # a log of its own
    unlock = threading.Timer(2.0, lambda: other_process.execute("ROLLBACK"))
    unlock.start()
    try:
        daemon.start(timeout=30)
        assert "Metadata database busy at start, retrying" in daemon.log()
        client = make_client(daemon)
        client.put_object(Bucket=BUCKET, Key="k", Body=b"v")
        assert client.get_object(Bucket=BUCKET, Key="k")["Body"].read() == b"v"
    finally:
        unlock.join()
        other_process.close()
        daemon.stop()
