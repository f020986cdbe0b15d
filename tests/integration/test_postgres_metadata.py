"""The daemon with its metadata in PostgreSQL (``[metadata] url``), driven by boto3.

Needs ``S3O_TEST_POSTGRES_DSN`` (a role that may create roles and databases) and psycopg;
skipped, saying so, without them. The database and its owner role are made for the test
(the ``postgres_url`` fixture of conftest.py).
"""

from __future__ import annotations

import pytest

from tests.integration.conftest import make_client
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
