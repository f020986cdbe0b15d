"""Several instances on one metadata database, driven by real clients (issue 14): two
daemons on one PostgreSQL database (and one daemon with ``workers = 2``, on SQLite and
on PostgreSQL) never overcommit a store's quota under 40 concurrent PUTs, show consistent
listings while both write, clean up after one of them is SIGKILLed mid-upload (its
reservation, its partial bytes, its jobs), and answer 503 while the database is gone,
then recover by themselves.

Concurrent overwrites of one key through two daemons are tested in
test_concurrent_overwrites.py. Two strict xfails show what a directory store shared by
several instances does not do yet (clean up a dead writer's temp file; leave the temp
files of the others' writes alone when an instance starts). Tests that bring their own PostgreSQL database
(``postgres_database``) run as the postgres variant only, and skip without
S3O_TEST_POSTGRES_DSN.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit

import pytest
from botocore.exceptions import ClientError

from tests.integration.conftest import (
    DaemonFactory,
    PostgresDatabase,
    make_client,
    metadata_rows,
    wait_for,
)
from tests.integration.daemon import BUCKET, Daemon
from tests.integration.rawhttp import open_upload, response_status, signed_headers
from tests.integration.test_upstream_stores import spec

pytestmark = pytest.mark.integration

MiB = 1024 * 1024
WRITERS = 40
# Room for exactly 10 of the 40 1 MiB objects.
QUOTA = 10 * MiB


def etag(body: bytes) -> str:
    return f'"{hashlib.md5(body).hexdigest()}"'


def shared_directory_store(root: Path, name: str = "shared", quota: int = 0) -> str:
    """A ``[[stores]]`` table for a directory store every daemon of a test shares."""
    return f'[[stores]]\nname = "{name}"\ntype = "directory"\npath = "{root / name}"\nquota_bytes = {quota}\n'


def files_under(root: Path) -> list[Path]:
    """The files under ``root`` but a health probe's (written and removed at once)."""
    if not root.exists():
        return []
    return sorted(path for path in root.rglob("*") if path.is_file() and not path.name.startswith("probe-"))


def two_daemons(start_daemon: DaemonFactory, database: PostgresDatabase, **options: Any) -> list[Daemon]:
    """Two daemons on ``database`` with the same stores and options (the first started first)."""
    return [start_daemon(metadata_url=database.url_with_password, **options) for _ in range(2)]


def in_flight(daemon: Daemon) -> dict[str, list[tuple[Any, ...]]]:
    """The reservations, write intents, location claims and queued cleanups there are."""
    return {table: rows for table in ("reservations", "intents", "claims", "cleanup")
            if (rows := metadata_rows(daemon, f"SELECT * FROM {table}"))}


def settled(daemon: Daemon) -> bool:
    """Nothing in flight."""
    return not in_flight(daemon)


def assert_usage_is_live_copies(daemon: Daemon) -> None:
    """Each configured store's used bytes and object count are exactly its live copies'."""
    used = metadata_rows(daemon, "SELECT name, used_bytes, object_count FROM stores"
                                 " WHERE config_order IS NOT NULL ORDER BY name")
    live = {store: (size, count) for store, size, count in metadata_rows(
        daemon, "SELECT store, SUM(size), COUNT(*) FROM copies WHERE state = 'live' GROUP BY store")}
    assert used == [(name, *live.get(name, (0, 0))) for name, _, _ in used]


# -- 40 PUTs into room for 10 -----------------------------------------------------------------


def put_forty_into_room_for_ten(daemons: list[Daemon], bucket_keys: Callable[[], list[str]]) -> None:
    """40 concurrent 1 MiB PUTs through ``daemons`` in turn: exactly 10 accepted (the
    others InsufficientStorage), each readable, exactly 10 objects upstream
    (``bucket_keys``), used bytes exactly 10 MiB and nothing left reserved."""
    clients = [make_client(daemon, max_pool_connections=WRITERS) for daemon in daemons]
    bodies = [os.urandom(MiB) for _ in range(WRITERS)]

    def put(index: int) -> str:
        for _ in range(5):  # a 503 (the metadata database busy under the load) is tried again, as clients do
            try:
                clients[index % len(clients)].put_object(Bucket=BUCKET, Key=f"fill/{index:02d}", Body=bodies[index])
            except ClientError as error:
                outcome = f"{error.response['ResponseMetadata']['HTTPStatusCode']} {error.response['Error']['Code']}"
                if not outcome.startswith("503 "):
                    return outcome
            else:
                return "200"
        return outcome

    with ThreadPoolExecutor(WRITERS) as pool:
        outcomes = list(pool.map(put, range(WRITERS)))
    accepted = [index for index, outcome in enumerate(outcomes) if outcome == "200"]
    assert sorted(set(outcomes)) == ["200", "507 InsufficientStorage"], outcomes
    assert len(accepted) == 10
    for index in accepted:
        for client in clients:
            assert client.get_object(Bucket=BUCKET, Key=f"fill/{index:02d}")["Body"].read() == bodies[index]
    listed = [entry["Key"] for entry in clients[-1].list_objects_v2(Bucket=BUCKET)["Contents"]]
    assert listed == [f"fill/{index:02d}" for index in accepted]
    assert len(bucket_keys()) == 10
    assert wait_for(lambda: settled(daemons[0]))
    assert metadata_rows(daemons[0], "SELECT used_bytes, object_count FROM stores WHERE name = 'seaweed'") == [
        (QUOTA, 10)]
    assert_usage_is_live_copies(daemons[0])


def seaweed_keys(seaweedfs, bucket: str) -> Callable[[], list[str]]:
    return lambda: [item["Key"] for item in seaweedfs.boto.list_objects_v2(Bucket=bucket).get("Contents", [])]


def test_forty_puts_through_two_daemons_on_postgresql_into_room_for_ten_accept_exactly_ten(
    postgres_database, start_daemon, seaweedfs
) -> None:
    bucket = seaweedfs.new_bucket()
    daemons = two_daemons(start_daemon, postgres_database, stores=[spec(seaweedfs, "seaweed", QUOTA, bucket)])
    put_forty_into_room_for_ten(daemons, seaweed_keys(seaweedfs, bucket))


def test_forty_puts_through_two_workers_into_room_for_ten_accept_exactly_ten(start_daemon, seaweedfs) -> None:
    # On each metadata engine (the SQLite file shared by both workers).
    bucket = seaweedfs.new_bucket()
    daemon = start_daemon(stores=[spec(seaweedfs, "seaweed", QUOTA, bucket)], server_toml="workers = 2")
    put_forty_into_room_for_ten([daemon], seaweed_keys(seaweedfs, bucket))


# -- Listings while both daemons write ----------------------------------------------------------


def listing(client) -> list[tuple[str, str, int]]:
    """(key, ETag, size) of every object, in pages of 7 (continuations span the writes)."""
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, PaginationConfig={"PageSize": 7})
    return [(entry["Key"], entry["ETag"], entry["Size"]) for page in pages for entry in page.get("Contents", [])]


def test_listings_through_either_daemon_are_consistent_while_both_write(
    postgres_database, start_daemon, tmp_path
) -> None:
    """Every listing taken while both daemons create, overwrite and delete keys is in
    byte order without duplicates, shows every key that exists throughout, each with the
    ETag and size of a body written to it, every created key whose PUT had returned
    before the listing began and no deleted key whose DELETE had; the last listing is
    exactly what was written."""
    daemons = two_daemons(start_daemon, postgres_database, stores=(),
                          extra_toml=shared_directory_store(tmp_path / "stores"))
    clients = [make_client(daemon, max_pool_connections=8) for daemon in daemons]
    written: dict[str, set[tuple[str, int]]] = {}  # key: every (ETag, size) it was given
    final: dict[str, tuple[str, int]] = {}
    state = threading.Lock()  # over written, final, created and deleted

    def put(client, key: str, body: bytes) -> None:
        with state:
            written.setdefault(key, set()).add((etag(body), len(body)))
        client.put_object(Bucket=BUCKET, Key=key, Body=body)
        with state:
            final[key] = (etag(body), len(body))

    for index in range(20):
        put(clients[index % 2], f"stable/{index:02d}", os.urandom(100 + index))
        put(clients[index % 2], f"doomed/{index:02d}", os.urandom(200 + index))
    created: set[str] = set()
    deleted: set[str] = set()
    writing = threading.Event()
    writing.set()

    def write(writer: int) -> None:
        client = clients[writer % 2]
        for round_ in range(15):
            put(client, f"new/{writer}/{round_:02d}", os.urandom(50 + round_))
            with state:
                created.add(f"new/{writer}/{round_:02d}")
            put(client, f"stable/{(writer * 5 + round_) % 20:02d}", os.urandom(1000 + writer * 100 + round_))
            if round_ < 5:
                key = f"doomed/{writer * 5 + round_:02d}"
                client.delete_object(Bucket=BUCKET, Key=key)
                with state:
                    deleted.add(key)
                    final.pop(key)

    def check_listings(reader: int) -> int:
        taken = 0
        while writing.is_set() or taken < 2:
            with state:
                created_before, deleted_before = set(created), set(deleted)
            listed = listing(clients[reader % 2])
            with state:
                known = {key: set(values) for key, values in written.items()}
            keys = [key for key, _, _ in listed]
            assert keys == sorted(set(keys), key=lambda key: key.encode())
            assert {f"stable/{index:02d}" for index in range(20)} <= set(keys)
            assert created_before <= set(keys)
            assert not deleted_before & set(keys)
            for key, tag, size in listed:
                assert (tag, size) in known[key], key
            taken += 1
        return taken

    with ThreadPoolExecutor(6) as pool:
        readers = [pool.submit(check_listings, reader) for reader in range(2)]
        writers = [pool.submit(write, writer) for writer in range(4)]
        for future in writers:
            future.result()
        writing.clear()
        assert all(future.result() >= 2 for future in readers)
    for client in clients:
        assert listing(client) == sorted(((key, *value) for key, value in final.items()),
                                         key=lambda entry: entry[0].encode())
    assert wait_for(lambda: settled(daemons[0]))
    assert_usage_is_live_copies(daemons[0])


# -- SIGKILL mid-upload -------------------------------------------------------------------------

# The killed instance is dead once its 3 s lease runs out; every job's round comes each
# second, with leases of 1 s: the survivor takes each over within a few seconds.
INSTANCE_LEASE = 3
FAST_JOBS = ("[placement]\nreaper_interval = 1\ncleanup_interval = 1\nreplication_interval = 1\n"
             "[multipart]\nexpiry_check_interval = 1\n[jobs]\nlease = 1\n[movement]\ninterval = 1\n")
CLUSTER_JOBS = ["cleanup", "mover", "multipart_expiry", "reaper", "replicator"]


def instance_id(daemon: Daemon) -> str:
    (row,) = metadata_rows(daemon, "SELECT id FROM instances WHERE pid = ?", daemon.process.pid)
    return str(row[0])


def job_holders(daemon: Daemon) -> dict[str, str]:
    return dict(metadata_rows(daemon, "SELECT job, owner FROM job_leases ORDER BY job"))


@pytest.mark.parametrize("store", [
    "seaweed",
    "directory",
])
def test_when_one_daemon_is_killed_mid_upload_the_other_frees_its_room_and_bytes_and_takes_its_jobs(
    postgres_database, start_daemon, seaweedfs, tmp_path, store
) -> None:
    root = tmp_path / "stores"
    if store == "seaweed":
        bucket = seaweedfs.new_bucket()
        options: dict[str, Any] = dict(stores=[spec(seaweedfs, "shared", 10**9, bucket)], extra_toml=FAST_JOBS)

        def leftovers() -> list[str]:
            keys = seaweed_keys(seaweedfs, bucket)()
            uploads = seaweedfs.boto.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
            return keys + [f"upload of {upload['Key']}" for upload in uploads]
    else:
        # The survivor's health probes sweep the dead writer's temp file.
        options = dict(stores=(), extra_toml=shared_directory_store(root) + FAST_JOBS, health=(1, 3))

        def leftovers() -> list[str]:
            return [path.name for path in files_under(root)]
    first, second = two_daemons(start_daemon, postgres_database, metadata_toml=f"lease = {INSTANCE_LEASE}",
                                **options)
    killed = instance_id(first)
    assert wait_for(lambda: job_holders(first) == dict.fromkeys(CLUSTER_JOBS, killed))
    kept = os.urandom(1000)
    make_client(second).put_object(Bucket=BUCKET, Key="kept", Body=kept)

    size = 64 * MiB
    path, headers = signed_headers(first, "PUT", "big", headers={"Content-Length": str(size)}, unsigned_payload=True)
    sock = open_upload(first, path, headers)
    try:
        for _ in range(8):  # slowly: the daemon is killed long before the last byte
            sock.sendall(os.urandom(MiB))
            time.sleep(0.05)
        assert wait_for(lambda: metadata_rows(first, "SELECT key, owner FROM intents") == [("big", killed)])
        assert metadata_rows(first, "SELECT owner, size FROM reservations") == [(killed, size)]
        assert first.process is not None
        first.process.kill()
        first.process.wait()
    finally:
        sock.close()

    # The survivor's reaper (a job the killed daemon ran), once the dead instance's lease has run out.
    assert wait_for(lambda: metadata_rows(second, "SELECT COUNT(*) FROM intents") == [(0,)],
                    timeout=INSTANCE_LEASE + 20)
    assert "Reaper deleted the partial bytes of app1-files/big" in second.log()
    assert wait_for(lambda: settled(second))
    survivor = instance_id(second)
    assert metadata_rows(second, "SELECT id FROM instances") == [(survivor,)]
    assert wait_for(lambda: job_holders(second) == dict.fromkeys(CLUSTER_JOBS, survivor), timeout=10)
    assert wait_for(lambda: len(leftovers()) == 1)
    assert [name.rsplit("/", 1)[-1] for name in leftovers()] == ["kept"]
    assert_usage_is_live_copies(second)
    assert metadata_rows(second, "SELECT used_bytes FROM stores WHERE name = 'shared'") == [(1000,)]
    s3 = make_client(second)
    assert s3.get_object(Bucket=BUCKET, Key="kept")["Body"].read() == kept
    body = os.urandom(size)
    s3.put_object(Bucket=BUCKET, Key="big", Body=body)
    assert s3.get_object(Bucket=BUCKET, Key="big")["Body"].read() == body


def test_starting_an_instance_leaves_the_uploads_of_another_to_a_shared_directory_store_alone(
    postgres_database, start_daemon, tmp_path
) -> None:
    root = tmp_path / "stores"
    first = start_daemon(metadata_url=postgres_database.url_with_password, stores=(),
                         extra_toml=shared_directory_store(root))
    body = os.urandom(8 * MiB)
    path, headers = signed_headers(first, "PUT", "big", headers={"Content-Length": str(len(body))},
                                   unsigned_payload=True)
    sock = open_upload(first, path, headers)
    try:
        sock.sendall(body[:4 * MiB])
        assert wait_for(lambda: len(files_under(root)) == 1)  # the upload's temp file
        start_daemon(metadata_url=postgres_database.url_with_password, stores=(),
                     extra_toml=shared_directory_store(root))
        sock.sendall(body[4 * MiB:])
        assert response_status(sock) == 200
    finally:
        sock.close()
    assert make_client(first).get_object(Bucket=BUCKET, Key="big")["Body"].read() == body


# -- The database gone under load ---------------------------------------------------------------


def test_requests_get_503_while_the_database_is_gone_and_succeed_again_without_a_restart(
    postgres_database, start_daemon, tmp_path
) -> None:
    """Stands in for a restart of the PostgreSQL server, which other tests running in
    parallel share: for the daemons a restart is every connection of theirs dropped and
    new ones refused for a while, which is what terminating every backend of the test's
    database, again and again, while the database refuses connections
    (ALLOW_CONNECTIONS false) does. Clients keep writing and reading through both
    daemons all along: every answer is 200 or a 503 ServiceUnavailable, both daemons
    answer 503 while the database is gone and 200 again after it is back, without a
    restart, and nothing is lost, leaked or left reserved."""
    import psycopg

    daemons = two_daemons(start_daemon, postgres_database, stores=(), health=(0.3, 3),
                          extra_toml=shared_directory_store(tmp_path / "stores"))
    clients = [make_client(daemon, max_pool_connections=8) for daemon in daemons]
    database = urlsplit(postgres_database.url).path.lstrip("/")
    outcomes: list[tuple[int, str, int, str]] = []  # (daemon, operation, status, error code)
    accepted: dict[str, bytes] = {}
    loading = threading.Event()
    loading.set()

    def load(worker: int) -> None:
        client = clients[worker % 2]
        round_ = 0
        while loading.is_set():
            key, body = f"load/{worker}/{round_:04d}", os.urandom(2000 + round_)
            for operation in ("put", "get"):
                try:
                    if operation == "put":
                        client.put_object(Bucket=BUCKET, Key=key, Body=body)
                        accepted[key] = body
                    elif key in accepted:
                        assert client.get_object(Bucket=BUCKET, Key=key)["Body"].read() == body
                    outcomes.append((worker % 2, operation, 200, ""))
                except ClientError as error:
                    outcomes.append((worker % 2, operation, error.response["ResponseMetadata"]["HTTPStatusCode"],
                                     error.response["Error"]["Code"]))
            round_ += 1
            time.sleep(0.02)

    def put_answered(status: int, since: int) -> set[int]:
        """The daemons that answered a PUT with ``status`` since outcome ``since``
        (GETs are answered from the stores while the database is gone)."""
        return {daemon for daemon, operation, got, _ in outcomes[since:] if operation == "put" and got == status}

    with psycopg.connect(os.environ["S3O_TEST_POSTGRES_DSN"], autocommit=True) as admin:

        def terminate() -> None:
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (database,))

        with ThreadPoolExecutor(4) as pool:
            loaders = [pool.submit(load, worker) for worker in range(4)]
            try:
                assert wait_for(lambda: put_answered(200, 0) == {0, 1})
                admin.execute(f"ALTER DATABASE {database} ALLOW_CONNECTIONS false")
                try:
                    down = len(outcomes)
                    terminate()
                    assert wait_for(lambda: terminate() is None and put_answered(503, down) == {0, 1}, timeout=20)
                finally:
                    admin.execute(f"ALTER DATABASE {database} ALLOW_CONNECTIONS true")
                up = len(outcomes)
                assert wait_for(lambda: put_answered(200, up) == {0, 1}, timeout=30)
            finally:
                loading.clear()
                for future in loaders:
                    future.result()

    assert {(status, code) for _, _, status, code in outcomes} == {(200, ""), (503, "ServiceUnavailable")}
    assert all(daemon.process is not None and daemon.process.poll() is None for daemon in daemons)
    for daemon in daemons:
        assert "Metadata database answers again" in daemon.log()
    for key, body in accepted.items():
        assert clients[0].get_object(Bucket=BUCKET, Key=key)["Body"].read() == body
    listed = {entry["Key"] for page in clients[1].get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
              for entry in page.get("Contents", [])}
    assert set(accepted) <= listed
    assert wait_for(lambda: settled(daemons[0]), timeout=20), in_flight(daemons[0])
    assert_usage_is_live_copies(daemons[0])
