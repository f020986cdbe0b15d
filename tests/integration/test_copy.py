"""CopyObject: boto3 copy_object, aws s3 cp s3->s3 and s3cmd cp, within and across stores."""

from __future__ import annotations

import hashlib
import os

import pytest
from botocore.exceptions import ClientError

from tests.integration.conftest import AWS_CLIS, aws_cli, make_client, metadata_rows, s3cmd_runner, store_files
from tests.integration.daemon import BUCKET, OTHER_BUCKET, StoreSpec


def test_copy_object_within_the_bucket(s3, daemon):
    body = os.urandom(100_000)
    s3.put_object(Bucket=BUCKET, Key="old/location.txt", Body=body, ContentType="text/plain",
                  Metadata={"owner": "alice"})
    result = s3.copy_object(Bucket=BUCKET, Key="new/location.txt", CopySource=f"{BUCKET}/old/location.txt")
    assert result["CopyObjectResult"]["ETag"] == f'"{hashlib.md5(body).hexdigest()}"'
    got = s3.get_object(Bucket=BUCKET, Key="new/location.txt")
    assert got["Body"].read() == body
    assert got["ContentType"] == "text/plain"
    assert got["Metadata"] == {"owner": "alice"}
    assert s3.get_object(Bucket=BUCKET, Key="old/location.txt")["Body"].read() == body
    assert metadata_rows(daemon, "SELECT SUM(used_bytes), SUM(object_count) FROM stores") == [(200_000, 2)]


def test_copy_source_with_leading_slash_and_encoded_key(s3):
    s3.put_object(Bucket=BUCKET, Key="dir/with space+plus", Body=b"x")
    s3.copy_object(Bucket=BUCKET, Key="copy", CopySource={"Bucket": BUCKET, "Key": "dir/with space+plus"})
    assert s3.get_object(Bucket=BUCKET, Key="copy")["Body"].read() == b"x"


def test_replace_directive_onto_itself_updates_metadata_only(s3, daemon):
    s3.put_object(Bucket=BUCKET, Key="doc", Body=b"content", ContentType="text/plain", Metadata={"v": "1"})
    files_before = store_files(daemon, "local-a")
    s3.copy_object(Bucket=BUCKET, Key="doc", CopySource=f"{BUCKET}/doc", MetadataDirective="REPLACE",
                   ContentType="application/json", Metadata={"v": "2"})
    head = s3.head_object(Bucket=BUCKET, Key="doc")
    assert head["ContentType"] == "application/json"
    assert head["Metadata"] == {"v": "2"}
    assert s3.get_object(Bucket=BUCKET, Key="doc")["Body"].read() == b"content"
    assert store_files(daemon, "local-a") == files_before
    assert metadata_rows(daemon, "SELECT SUM(used_bytes), SUM(object_count) FROM stores") == [(7, 1)]


def test_copy_onto_itself_without_replace_is_invalid_request(s3):
    s3.put_object(Bucket=BUCKET, Key="doc", Body=b"content")
    with pytest.raises(ClientError) as raised:
        s3.copy_object(Bucket=BUCKET, Key="doc", CopySource=f"{BUCKET}/doc")
    assert raised.value.response["Error"]["Code"] == "InvalidRequest"


def test_cross_bucket_copy_is_access_denied_with_a_clear_message(s3):
    with pytest.raises(ClientError) as raised:
        s3.copy_object(Bucket=BUCKET, Key="k", CopySource=f"{OTHER_BUCKET}/k")
    assert raised.value.response["Error"]["Code"] == "AccessDenied"
    assert "Cross-bucket copy is not supported" in raised.value.response["Error"]["Message"]


def test_copy_of_a_missing_source_is_no_such_key(s3):
    with pytest.raises(ClientError) as raised:
        s3.copy_object(Bucket=BUCKET, Key="k", CopySource=f"{BUCKET}/missing")
    assert raised.value.response["Error"]["Code"] == "NoSuchKey"


def test_copy_source_conditions(s3):
    put = s3.put_object(Bucket=BUCKET, Key="src", Body=b"x")
    with pytest.raises(ClientError) as raised:
        s3.copy_object(Bucket=BUCKET, Key="dst", CopySource=f"{BUCKET}/src",
                       CopySourceIfMatch='"0123456789abcdef0123456789abcdef"')
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
    s3.copy_object(Bucket=BUCKET, Key="dst", CopySource=f"{BUCKET}/src", CopySourceIfMatch=put["ETag"])
    assert s3.get_object(Bucket=BUCKET, Key="dst")["Body"].read() == b"x"


def test_copy_across_stores_streams_the_bytes(start_daemon):
    daemon = start_daemon(stores=[StoreSpec("local-a", 150_000), StoreSpec("local-b", 10**9)])
    s3 = make_client(daemon)
    body = os.urandom(100_000)
    s3.put_object(Bucket=BUCKET, Key="src", Body=body)
    s3.copy_object(Bucket=BUCKET, Key="dst", CopySource=f"{BUCKET}/src")  # no room left on local-a
    assert dict(metadata_rows(daemon, "SELECT key, store FROM objects")) == {"src": "local-a", "dst": "local-b"}
    assert s3.get_object(Bucket=BUCKET, Key="dst")["Body"].read() == body


def test_copy_with_no_room_is_507_and_leaves_nothing(start_daemon):
    daemon = start_daemon(stores=[StoreSpec("local-a", 150_000)])
    s3 = make_client(daemon)
    s3.put_object(Bucket=BUCKET, Key="src", Body=os.urandom(100_000))
    with pytest.raises(ClientError) as raised:
        s3.copy_object(Bucket=BUCKET, Key="dst", CopySource=f"{BUCKET}/src")
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 507
    assert metadata_rows(daemon, "SELECT COUNT(*) FROM objects") == [(1,)]
    assert metadata_rows(daemon, "SELECT COUNT(*) FROM reservations") == [(0,)]


@pytest.mark.parametrize("cli", sorted(AWS_CLIS))
def test_aws_s3_cp_within_the_bucket(daemon, tmp_path, cli):
    aws = aws_cli(cli, daemon, tmp_path)
    make_client(daemon).put_object(Bucket=BUCKET, Key="old/location.txt", Body=b"moved by the cli")
    aws("s3", "cp", f"s3://{BUCKET}/old/location.txt", f"s3://{BUCKET}/new/location.txt")
    assert make_client(daemon).get_object(Bucket=BUCKET, Key="new/location.txt")["Body"].read() == b"moved by the cli"


def test_s3cmd_cp(daemon, tmp_path):
    s3cmd = s3cmd_runner(daemon, tmp_path)
    make_client(daemon).put_object(Bucket=BUCKET, Key="a.txt", Body=b"s3cmd copy")
    s3cmd("cp", f"s3://{BUCKET}/a.txt", f"s3://{BUCKET}/b.txt")
    assert make_client(daemon).get_object(Bucket=BUCKET, Key="b.txt")["Body"].read() == b"s3cmd copy"
