"""Many concurrent overwrites of one key (boto3, one thread each): every PUT succeeds, and
the object the daemon serves, its ETag and the bytes upstream are one and the same write's
(the writes of one location are claimed one at a time in the metadata database), with one
daemon and with two daemons sharing a PostgreSQL database (S3O_TEST_POSTGRES_DSN)."""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

from tests.integration.conftest import make_client, metadata_rows, store_files, wait_for
from tests.integration.daemon import BUCKET, StoreSpec
from tests.integration.test_upstream_stores import spec

MiB = 1024 * 1024
WRITERS = 20
KEY = "contended/object.bin"


def _overwrite_concurrently(*daemons, writers: int = WRITERS) -> dict[str, bytes]:
    """PUT ``writers`` different 1 MiB bodies to ``KEY`` at once, through ``daemons`` in
    turn; their bodies by ETag."""
    bodies = [os.urandom(MiB) for _ in range(writers)]

    # Made here: creating boto3 clients from many threads at once is not safe.
    clients = [make_client(daemon, max_pool_connections=writers) for daemon in daemons]

    def put(index: int) -> str:
        client = clients[index % len(clients)]
        return str(client.put_object(Bucket=BUCKET, Key=KEY, Body=bodies[index])["ETag"])

    with ThreadPoolExecutor(writers) as pool:
        etags = list(pool.map(put, range(writers)))
    by_etag = {f'"{hashlib.md5(body).hexdigest()}"': body for body in bodies}
    assert etags == list(by_etag)  # every PUT succeeded, with its own body's ETag
    return by_etag


def _served(daemon, by_etag: dict[str, bytes]) -> bytes:
    """The object as the daemon serves it, checked against its ETag and a written body."""
    got = make_client(daemon).get_object(Bucket=BUCKET, Key=KEY)
    body = got["Body"].read()
    assert f'"{hashlib.md5(body).hexdigest()}"' == got["ETag"]
    assert by_etag[got["ETag"]] == body
    return body


def _settled(rows: Callable[[str], list[tuple[Any, ...]]]) -> bool:
    return all(rows(f"SELECT COUNT(*) FROM {table}") == [(0,)]
               for table in ("claims", "intents", "reservations", "cleanup"))


def test_concurrent_overwrites_of_one_key_on_seaweedfs_leave_one_object_whose_bytes_match_its_etag(
    start_daemon, seaweedfs
):
    bucket = seaweedfs.new_bucket()
    daemon = start_daemon(stores=[spec(seaweedfs, "seaweed", 10**9, bucket)])
    by_etag = _overwrite_concurrently(daemon)
    body = _served(daemon, by_etag)
    (location,) = [row[0] for row in metadata_rows(daemon, "SELECT location FROM copies")]
    listed = seaweedfs.boto.list_objects_v2(Bucket=bucket).get("Contents", [])
    assert [item["Key"] for item in listed] == [location]
    assert seaweedfs.boto.get_object(Bucket=bucket, Key=location)["Body"].read() == body
    assert wait_for(lambda: _settled(lambda sql: metadata_rows(daemon, sql)))
    assert metadata_rows(daemon, "SELECT used_bytes, object_count FROM stores") == [(MiB, 1)]


def test_two_daemons_sharing_postgresql_overwriting_one_key_on_seaweedfs_leave_one_object_matching_its_etag(
    start_daemon, seaweedfs, postgres_database
):
    import psycopg

    def rows(sql: str) -> list[tuple[Any, ...]]:
        with psycopg.connect(postgres_database.url_with_password) as connection:
            return connection.execute(sql).fetchall()

    bucket = seaweedfs.new_bucket()
    daemons = [start_daemon(stores=[spec(seaweedfs, "seaweed", 10**9, bucket)],
                            metadata_url=postgres_database.url_with_password)
               for _ in range(2)]
    by_etag = _overwrite_concurrently(*daemons, writers=2 * WRITERS)  # 40, as issue 14 asks
    body = _served(daemons[0], by_etag)
    assert _served(daemons[1], by_etag) == body
    (location,) = [row[0] for row in rows("SELECT location FROM copies")]
    listed = seaweedfs.boto.list_objects_v2(Bucket=bucket).get("Contents", [])
    assert [item["Key"] for item in listed] == [location]
    assert seaweedfs.boto.get_object(Bucket=bucket, Key=location)["Body"].read() == body
    assert wait_for(lambda: _settled(rows))
    assert rows("SELECT SUM(used_bytes), SUM(object_count) FROM store_usage") == [(MiB, 1)]


def test_concurrent_overwrites_of_one_key_on_a_directory_store_leave_one_file_whose_bytes_match_its_etag(
    start_daemon
):
    daemon = start_daemon(stores=[StoreSpec("local", 10**9)])
    by_etag = _overwrite_concurrently(daemon)
    body = _served(daemon, by_etag)
    assert wait_for(lambda: _settled(lambda sql: metadata_rows(daemon, sql)))
    (path,) = store_files(daemon, "local")  # no temp file left either
    assert path.read_bytes() == body
    assert metadata_rows(daemon, "SELECT used_bytes, object_count FROM stores") == [(MiB, 1)]
