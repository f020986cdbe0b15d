"""A metadata database locked by another process: writes get 503 SlowDown, lookups keep working."""

from __future__ import annotations

import threading
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Iterator

import pytest
from botocore.exceptions import ClientError

from tests.integration.conftest import make_client, metadata_rows, store_files, wait_for
from tests.integration.daemon import BUCKET, UNSYNCED, Daemon, StoreSpec, free_port, write_config
from tests.integration.metadata_engines import MetadataPlaces, write_locked


@pytest.fixture
def daemon(tmp_path: Path, metadata: MetadataPlaces) -> Iterator[Daemon]:
    """A daemon with one directory store whose requests wait at most 0.5 s for a locked database."""
    port = free_port()
    config = write_config(tmp_path, port, [StoreSpec("local", 0)], metadata_busy_timeout=0.5,
                          metadata_url=metadata.url(tmp_path))
    started = Daemon(tmp_path, config, port, wrapper=UNSYNCED)
    started.start()
    yield started
    started.stop()


def test_a_locked_database_refuses_writes_with_slow_down_and_answers_lookups(daemon: Daemon) -> None:
    client = make_client(daemon)
    client.put_object(Bucket=BUCKET, Key="kept", Body=b"kept bytes")
    with write_locked(daemon.config):
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

    client.put_object(Bucket=BUCKET, Key="later", Body=b"later bytes")
    assert client.get_object(Bucket=BUCKET, Key="later")["Body"].read() == b"later bytes"
    assert metadata_rows(daemon, "SELECT COUNT(*) FROM reservations") == [(0,)]
    assert sorted(row[0] for row in metadata_rows(daemon, "SELECT key FROM objects")) == ["kept", "later"]
    assert [path.name for path in store_files(daemon, "local")] == ["kept", "later"]
    assert "Metadata database busy: PutObject" in daemon.log()


def test_a_daemon_starting_on_a_locked_database_waits_for_it(tmp_path: Path, metadata: MetadataPlaces) -> None:
    port = free_port()
    config = write_config(tmp_path, port, [StoreSpec("local", 0)], metadata_busy_timeout=0.2,
                          metadata_url=metadata.url(tmp_path))
    first = Daemon(tmp_path, config, port, wrapper=UNSYNCED)
    first.start()  # creates the database
    first.stop()
    lock = ExitStack()
    lock.enter_context(write_locked(config))
    (tmp_path / "second").mkdir()
    daemon = Daemon(tmp_path / "second", config, port, wrapper=UNSYNCED)  # a log of its own

    def unlock_once_it_waits() -> None:
        try:
            wait_for(lambda: "Metadata database busy at start, retrying" in daemon.log(), timeout=60)
        finally:
            lock.close()

    unlock = threading.Thread(target=unlock_once_it_waits)
    unlock.start()
    try:
        daemon.start(timeout=30)
        assert "Metadata database busy at start, retrying" in daemon.log()
        client = make_client(daemon)
        client.put_object(Bucket=BUCKET, Key="k", Body=b"v")
        assert client.get_object(Bucket=BUCKET, Key="k")["Body"].read() == b"v"
    finally:
        unlock.join()
        daemon.stop()
