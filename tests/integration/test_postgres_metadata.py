"""The daemon with its metadata in PostgreSQL (``[metadata] url``), driven by boto3.

Needs ``S3O_TEST_POSTGRES_DSN`` (a role that may create roles and databases) and psycopg;
skipped, saying so, without them. The database and its owner role are made for the test
(the ``postgres_url`` fixture of conftest.py).
"""

from __future__ import annotations

import json
import os
import urllib.request
from urllib.parse import urlsplit

import pytest
from botocore.exceptions import ClientError

from tests.integration.conftest import make_client, wait_for
from tests.integration.daemon import BUCKET

pytestmark = pytest.mark.integration


def test_objects_round_trip_and_list_in_byte_order_on_postgresql(start_daemon, postgres_url) -> None:
    url, password = postgres_url
    daemon = start_daemon(metadata_url=url)
    s3 = make_client(daemon)
    for key in ("b/2", "a", "B", "\u00e9"):
        s3.put_object(Bucket=BUCKET, Key=key, Body=key.encode() * 10)
    assert s3.get_object(Bucket=BUCKET, Key="\u00e9")["Body"].read() == "\u00e9".encode() * 10
    listed = s3.list_objects_v2(Bucket=BUCKET, Delimiter="/")
    assert [entry["Key"] for entry in listed["Contents"]] == ["B", "a", "\u00e9"]
    assert [prefix["Prefix"] for prefix in listed["CommonPrefixes"]] == ["b/"]
    s3.delete_object(Bucket=BUCKET, Key="a")
    assert [entry["Key"] for entry in s3.list_objects_v2(Bucket=BUCKET)["Contents"]] == ["B", "b/2", "\u00e9"]

    log = daemon.log()
    shown = url.replace(f":{password}@", "@")
    assert f"metadata     PostgreSQL {shown}" in log
    assert password not in log


def test_degraded_mode_while_the_postgresql_server_refuses_the_daemon(start_daemon, postgres_url) -> None:
    """The server gone for the daemon (its role may no longer log in and its connections are
    terminated): requests that need the database are 503, health says degraded at once
    (no busy wait: the engine sees the connection lost), and the health job's probe ends
    degraded mode once the role may log in again."""
    url, _ = postgres_url
    role = urlsplit(url).username
    daemon = start_daemon(metadata_url=url, health=(0.3, 3))
    client = make_client(daemon)
    client.put_object(Bucket=BUCKET, Key="kept", Body=b"kept bytes")
    dsn = os.environ["S3O_TEST_POSTGRES_DSN"]
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute(f"ALTER ROLE {role} NOLOGIN")
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (role,))
        try:
            with pytest.raises(ClientError) as refused:
                client.put_object(Bucket=BUCKET, Key="refused", Body=b"x")
            assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
            assert wait_for(lambda: health(daemon)["metadata"] == "unavailable")
            assert health(daemon)["status"] == "degraded"
        finally:
            admin.execute(f"ALTER ROLE {role} LOGIN")

    assert wait_for(lambda: health(daemon)["metadata"] == "ok", timeout=30)
    client.put_object(Bucket=BUCKET, Key="later", Body=b"later bytes")
    assert sorted(entry["Key"] for entry in client.list_objects_v2(Bucket=BUCKET)["Contents"]) == ["kept", "later"]
    log = daemon.log()
    assert log.count("Metadata database unavailable") == 1
    assert log.count("Metadata database answers again") == 1


def health(daemon) -> dict:
    with urllib.request.urlopen(f"{daemon.endpoint}/health", timeout=10) as response:
        return json.loads(response.read())
