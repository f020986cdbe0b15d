"""PutObject / GetObject / HeadObject / DeleteObject through boto3, byte for byte."""

from __future__ import annotations

import hashlib
import os
import time

import pytest
from botocore.exceptions import ClientError

from tests.integration.conftest import make_client, metadata_rows
from tests.integration.daemon import BUCKET, Daemon

MiB = 1024 * 1024


@pytest.fixture
def daemon(module_daemon: Daemon) -> Daemon:
    """The module's daemon: each test uses keys of its own (those that count the stores'
    usage start a daemon of their own)."""
    return module_daemon


@pytest.mark.parametrize("size", [0, 1, 5 * MiB, 64 * MiB])
def test_put_get_round_trip_is_byte_identical(s3, size):
    body = os.urandom(size)
    put = s3.put_object(Bucket=BUCKET, Key=f"blob-{size}", Body=body)
    assert put["ETag"] == f'"{hashlib.md5(body).hexdigest()}"'
    got = s3.get_object(Bucket=BUCKET, Key=f"blob-{size}")
    assert got["Body"].read() == body
    assert got["ContentLength"] == size
    assert got["ETag"] == put["ETag"]


def test_upload_file_and_download_file(s3, tmp_path):
    source = tmp_path / "myfile.txt"
    source.write_bytes(os.urandom(3 * MiB + 17))
    s3.upload_file(str(source), BUCKET, "path/to/myfile.txt")
    target = tmp_path / "downloaded.txt"
    s3.download_file(BUCKET, "path/to/myfile.txt", str(target))
    assert target.read_bytes() == source.read_bytes()


def test_metadata_round_trip(s3):
    s3.put_object(
        Bucket=BUCKET,
        Key="path/to/data.json",
        Body=b'{"key": "value"}',
        ContentType="application/json",
        ContentEncoding="identity",
        ContentDisposition='attachment; filename="data.json"',
        ContentLanguage="en-GB",
        CacheControl="max-age=60",
        Expires="Wed, 21 Oct 2037 07:28:00 GMT",
        Metadata={"owner": "alice", "Mixed-Case": "Value With Spaces"},
        ACL="private",
    )
    for response in (
        s3.head_object(Bucket=BUCKET, Key="path/to/data.json"),
        s3.get_object(Bucket=BUCKET, Key="path/to/data.json"),
    ):
        assert response["ContentType"] == "application/json"
        assert response["ContentEncoding"] == "identity"
        assert response["ContentDisposition"] == 'attachment; filename="data.json"'
        assert response["ContentLanguage"] == "en-GB"
        assert response["CacheControl"] == "max-age=60"
        assert response["ResponseMetadata"]["HTTPHeaders"]["expires"] == "Wed, 21 Oct 2037 07:28:00 GMT"
        assert response["Metadata"] == {"owner": "alice", "mixed-case": "Value With Spaces"}
        assert response["ContentLength"] == 16
        assert "VersionId" not in response
        assert response["ResponseMetadata"]["HTTPHeaders"]["x-amz-request-id"]


def test_default_content_type_is_binary_octet_stream(s3):
    s3.put_object(Bucket=BUCKET, Key="no-type", Body=b"x")
    assert s3.head_object(Bucket=BUCKET, Key="no-type")["ContentType"] == "binary/octet-stream"


def test_head_reports_size_and_etag_without_body(s3):
    body = os.urandom(1000)
    s3.put_object(Bucket=BUCKET, Key="k", Body=body)
    head = s3.head_object(Bucket=BUCKET, Key="k")
    assert head["ContentLength"] == 1000
    assert head["ETag"] == f'"{hashlib.md5(body).hexdigest()}"'
    assert head["AcceptRanges"] == "bytes"


@pytest.mark.parametrize(
    "header,expected,content_range",
    [
        ("bytes=0-9", slice(0, 10), "bytes 0-9/100"),
        ("bytes=90-", slice(90, 100), "bytes 90-99/100"),
        ("bytes=-5", slice(95, 100), "bytes 95-99/100"),
        ("bytes=50-1000", slice(50, 100), "bytes 50-99/100"),
    ],
)
def test_ranged_get_returns_206_with_content_range(s3, header, expected, content_range):
    body = bytes(range(100))
    s3.put_object(Bucket=BUCKET, Key="ranged", Body=body)
    got = s3.get_object(Bucket=BUCKET, Key="ranged", Range=header)
    assert got["ResponseMetadata"]["HTTPStatusCode"] == 206
    assert got["ContentRange"] == content_range
    assert got["Body"].read() == body[expected]


def test_unsatisfiable_range_is_416_invalid_range(s3):
    s3.put_object(Bucket=BUCKET, Key="short", Body=b"abc")
    with pytest.raises(ClientError) as raised:
        s3.get_object(Bucket=BUCKET, Key="short", Range="bytes=10-20")
    error = raised.value.response
    assert error["Error"]["Code"] == "InvalidRange"
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 416
    assert error["ResponseMetadata"]["HTTPHeaders"]["content-range"] == "bytes */3"


def test_missing_key_is_no_such_key(s3):
    with pytest.raises(ClientError) as raised:
        s3.get_object(Bucket=BUCKET, Key="nope")
    assert raised.value.response["Error"]["Code"] == "NoSuchKey"
    assert raised.value.response["Error"]["Key"] == "nope"
    with pytest.raises(ClientError) as raised:
        s3.head_object(Bucket=BUCKET, Key="nope")
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404


def test_conditional_get(s3):
    put = s3.put_object(Bucket=BUCKET, Key="cond", Body=b"hello")
    etag = put["ETag"]
    with pytest.raises(ClientError) as raised:
        s3.get_object(Bucket=BUCKET, Key="cond", IfNoneMatch=etag)
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 304
    with pytest.raises(ClientError) as raised:
        s3.get_object(Bucket=BUCKET, Key="cond", IfMatch='"0123456789abcdef0123456789abcdef"')
    assert raised.value.response["Error"]["Code"] == "PreconditionFailed"
    assert s3.get_object(Bucket=BUCKET, Key="cond", IfMatch=etag)["Body"].read() == b"hello"


def test_response_header_overrides(s3):
    s3.put_object(Bucket=BUCKET, Key="o", Body=b"x", ContentType="text/plain")
    got = s3.get_object(
        Bucket=BUCKET, Key="o", ResponseContentType="application/pdf",
        ResponseContentDisposition="inline", ResponseCacheControl="no-cache",
    )
    assert got["ContentType"] == "application/pdf"
    assert got["ContentDisposition"] == "inline"
    assert got["CacheControl"] == "no-cache"


def test_delete_is_204_and_idempotent(start_daemon):
    daemon = start_daemon()
    s3 = make_client(daemon)
    s3.put_object(Bucket=BUCKET, Key="gone", Body=b"bytes")
    assert s3.delete_object(Bucket=BUCKET, Key="gone")["ResponseMetadata"]["HTTPStatusCode"] == 204
    assert s3.delete_object(Bucket=BUCKET, Key="gone")["ResponseMetadata"]["HTTPStatusCode"] == 204
    with pytest.raises(ClientError):
        s3.head_object(Bucket=BUCKET, Key="gone")
    assert metadata_rows(daemon, "SELECT used_bytes, object_count FROM stores WHERE name='local-a'") == [(0, 0)]


@pytest.mark.parametrize(
    "key",
    ["with space.txt", "plus+sign", "percent%2Fslash", "unicodé/ключ/鍵.bin", "a//double", "tilde~and!bang'(x)*",
     "../escape-attempt", "dir/./dot", "trailing/"],
)
def test_awkward_keys_round_trip(s3, key):
    s3.put_object(Bucket=BUCKET, Key=key, Body=key.encode())
    assert s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == key.encode()
    s3.delete_object(Bucket=BUCKET, Key=key)


def test_overwrite_replaces_object_and_releases_old_bytes(start_daemon):
    daemon = start_daemon()
    s3 = make_client(daemon)
    s3.put_object(Bucket=BUCKET, Key="over", Body=b"a" * 1000)
    s3.put_object(Bucket=BUCKET, Key="over", Body=b"b" * 10)
    assert s3.get_object(Bucket=BUCKET, Key="over")["Body"].read() == b"b" * 10
    assert metadata_rows(daemon, "SELECT SUM(used_bytes), SUM(object_count) FROM stores") == [(10, 1)]


def test_last_modified_is_recent(s3):
    s3.put_object(Bucket=BUCKET, Key="t", Body=b"x")
    modified = s3.head_object(Bucket=BUCKET, Key="t")["LastModified"].timestamp()
    assert abs(modified - time.time()) < 60


def test_go_sdk_style_query_parameters_are_ignored(daemon):
    s3 = make_client(daemon)
    s3.meta.events.register(
        "before-sign.s3.PutObject",
        lambda request, **kwargs: setattr(request, "url", request.url + "?x-id=PutObject"),
    )
    s3.put_object(Bucket=BUCKET, Key="go-style", Body=b"go")
    assert make_client(daemon).get_object(Bucket=BUCKET, Key="go-style")["Body"].read() == b"go"


def test_head_with_range_is_206_with_the_range_length(s3):
    s3.put_object(Bucket=BUCKET, Key="head-range", Body=bytes(100))
    head = s3.head_object(Bucket=BUCKET, Key="head-range", Range="bytes=10-19")
    assert head["ResponseMetadata"]["HTTPStatusCode"] == 206
    assert head["ContentLength"] == 10
    assert head["ResponseMetadata"]["HTTPHeaders"]["content-range"] == "bytes 10-19/100"


def test_object_tagging_reads_an_empty_tag_set_of_existing_objects_only(s3):
    # Tags are not stored; the aws cli v2 reads them before a multipart copy.
    s3.put_object(Bucket=BUCKET, Key="tagged", Body=b"x", Tagging="team=a")
    assert s3.get_object_tagging(Bucket=BUCKET, Key="tagged")["TagSet"] == []
    with pytest.raises(ClientError) as raised:
        s3.get_object_tagging(Bucket=BUCKET, Key="missing")
    assert raised.value.response["Error"]["Code"] == "NoSuchKey"
