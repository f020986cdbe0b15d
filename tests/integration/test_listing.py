"""ListObjects and ListObjectsV2 through the real daemon: boto3, raw HTTP and both aws clis."""

from __future__ import annotations

import http.client
import json
import re
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator
from xml.etree import ElementTree

import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from tests.integration.conftest import AWS_CLIS, aws_cli, make_client, shared_daemons
from tests.integration.daemon import (
    ACCESS_KEY,
    BUCKET,
    OTHER_ACCESS_KEY,
    OTHER_BUCKET,
    OTHER_SECRET_KEY,
    SECRET_KEY,
    Daemon,
    StoreSpec,
)

NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"

# 1,050 keys in 50 directories of 21 (over 1,000: a default page, the aws clis' pages of
# 1,000, are followed by another), plus keys whose byte order matters and nested
# directories; read-only for every test of this module (uploaded once).
DIRECTORIES, FILES = 50, 21
BULK = [f"bulk/d{d:02d}/f{f:02d}" for d in range(DIRECTORIES) for f in range(FILES)]
ORDERED = ["order/a", "order/a-", "order/a/", "order/a0", "order/\uffff", "order/\U00010000", "order/é"]
NESTED = ["nest/top.txt", "nest/a/1", "nest/a/b/2", "nest/a/b/c/3", "nest/a/b/c/4", "nest/x/5", "nest/x/y/6"]
AWKWARD = ["enc/a b", "enc/a+b", "enc/100%", "enc/x&y", "enc/한글", "enc/new\nline", "enc/dir one/f", "enc/p+q/f",
           "enc/tab\there"]
ALL_KEYS = BULK + ORDERED + NESTED + AWKWARD


def byte_order(keys: list[str]) -> list[str]:
    return sorted(keys, key=lambda k: k.encode("utf-8"))


@pytest.fixture(scope="module")
def listed_daemon(metadata_engine: str, request: pytest.FixtureRequest) -> Iterator[Daemon]:
    """One daemon holding ALL_KEYS (and two objects in the other bucket) for the module."""
    with shared_daemons(request, "listing") as start:
        daemon = start(stores=[StoreSpec("local-a", 0)])
        client = make_client(daemon, max_pool_connections=16)
        with ThreadPoolExecutor(16) as pool:
            for _ in pool.map(lambda key: client.put_object(Bucket=BUCKET, Key=key, Body=key.encode()), ALL_KEYS):
                pass
        other = make_client(daemon, OTHER_ACCESS_KEY, OTHER_SECRET_KEY)
        for key in ("o1", "o2"):
            other.put_object(Bucket=OTHER_BUCKET, Key=key, Body=b"x")
        yield daemon


@pytest.fixture
def s3(listed_daemon: Daemon):
    return make_client(listed_daemon)


def raw_list(daemon: Daemon, query: str, access_key: str = ACCESS_KEY, secret_key: str = SECRET_KEY,
             bucket: str = BUCKET) -> tuple[int, dict[str, str], bytes]:
    """A signed GET /bucket?query (exactly as given: no parameter added or encoded)."""
    url = f"{daemon.endpoint}/{bucket}" + (f"?{query}" if query else "")
    request = AWSRequest(method="GET", url=url)
    S3SigV4Auth(Credentials(access_key, secret_key), "s3", "us-east-1").add_auth(request)
    connection = http.client.HTTPConnection("127.0.0.1", daemon.port, timeout=30)
    try:
        connection.request("GET", f"/{bucket}" + (f"?{query}" if query else ""), headers=dict(request.headers.items()))
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def error_code(raised: pytest.ExceptionInfo) -> tuple[int, str]:
    response = raised.value.response
    return response["ResponseMetadata"]["HTTPStatusCode"], response["Error"]["Code"]


# -- boto3 ---------------------------------------------------------------------------


@pytest.mark.parametrize("page_size", [1000, 7])
def test_v2_paginator_lists_every_key_in_byte_order(s3, page_size):
    pages = list(s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, PaginationConfig={"PageSize": page_size}))
    keys = [obj["Key"] for page in pages for obj in page.get("Contents", [])]
    assert keys == byte_order(ALL_KEYS)
    assert len(pages) == -(-len(ALL_KEYS) // page_size)
    for page in pages[:-1]:
        assert page["IsTruncated"] and page["KeyCount"] == page_size and page["MaxKeys"] == page_size
        assert "NextContinuationToken" in page
    assert not pages[-1]["IsTruncated"] and "NextContinuationToken" not in pages[-1]


def test_v1_paginator_lists_every_key(s3):
    pages = list(s3.get_paginator("list_objects").paginate(Bucket=BUCKET, PaginationConfig={"PageSize": 7}))
    keys = [obj["Key"] for page in pages for obj in page.get("Contents", [])]
    assert keys == byte_order(ALL_KEYS)
    # Without a delimiter S3 sends no NextMarker: clients continue from the last key.
    assert all("NextMarker" not in page for page in pages)


def test_contents_fields(s3):
    obj = s3.list_objects_v2(Bucket=BUCKET, Prefix="nest/top.txt")["Contents"][0]
    head = s3.head_object(Bucket=BUCKET, Key="nest/top.txt")
    assert obj["ETag"] == head["ETag"] and obj["ETag"].startswith('"')
    assert obj["Size"] == len(b"nest/top.txt")
    assert obj["StorageClass"] == "STANDARD"
    # The Last-Modified header has whole seconds; the listing shows milliseconds.
    assert obj["LastModified"].replace(microsecond=0) == head["LastModified"]
    assert "Owner" not in obj


def test_fetch_owner_and_v1_include_the_owner(s3):
    v2 = s3.list_objects_v2(Bucket=BUCKET, Prefix="nest/top.txt", FetchOwner=True)["Contents"][0]
    v1 = s3.list_objects(Bucket=BUCKET, Prefix="nest/top.txt")["Contents"][0]
    assert v2["Owner"] == v1["Owner"] == {"ID": BUCKET, "DisplayName": BUCKET}


def test_raw_v2_document(listed_daemon):
    status, headers, body = raw_list(listed_daemon, "list-type=2&prefix=nest%2Fa%2F&max-keys=2")
    assert status == 200 and headers["content-type"] == "application/xml"
    assert body.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">')
    assert b"<ETag>&quot;" in body
    root = ElementTree.fromstring(body)
    assert root.findtext(f"{NS}Name") == BUCKET
    assert root.findtext(f"{NS}Prefix") == "nest/a/"
    assert root.findtext(f"{NS}KeyCount") == "2"
    assert root.findtext(f"{NS}MaxKeys") == "2"
    assert root.findtext(f"{NS}IsTruncated") == "true"
    assert root.findtext(f"{NS}EncodingType") is None
    last_modified = root.findtext(f"{NS}Contents/{NS}LastModified")
    assert len(last_modified) == 24 and last_modified.endswith("Z") and last_modified[19] == "."


def test_delimiter_groups_nested_prefixes(s3):
    top = s3.list_objects_v2(Bucket=BUCKET, Prefix="nest/", Delimiter="/")
    assert [p["Prefix"] for p in top["CommonPrefixes"]] == ["nest/a/", "nest/x/"]
    assert [o["Key"] for o in top["Contents"]] == ["nest/top.txt"]
    assert top["KeyCount"] == 3
    deeper = s3.list_objects_v2(Bucket=BUCKET, Prefix="nest/a/", Delimiter="/")
    assert [p["Prefix"] for p in deeper["CommonPrefixes"]] == ["nest/a/b/"]
    assert [o["Key"] for o in deeper["Contents"]] == ["nest/a/1"]
    root = s3.list_objects_v2(Bucket=BUCKET, Delimiter="/")
    assert [p["Prefix"] for p in root["CommonPrefixes"]] == ["bulk/", "enc/", "nest/", "order/"]
    assert "Contents" not in root


def test_delimiter_pages_through_50_common_prefixes(s3):
    pages = list(s3.get_paginator("list_objects_v2").paginate(
        Bucket=BUCKET, Prefix="bulk/", Delimiter="/", PaginationConfig={"PageSize": 7}))
    prefixes = [p["Prefix"] for page in pages for p in page.get("CommonPrefixes", [])]
    assert prefixes == [f"bulk/d{d:02d}/" for d in range(DIRECTORIES)]
    assert len(pages) == 8


def test_multi_character_delimiter(s3):
    listed = s3.list_objects_v2(Bucket=BUCKET, Prefix="bulk/d0", Delimiter="/f0")
    assert [p["Prefix"] for p in listed["CommonPrefixes"]] == [f"bulk/d0{d}/f0" for d in range(10)]
    # The files from f10 on of the ten directories d00 to d09.
    assert len(listed["Contents"]) == 10 * (FILES - 10)


def test_start_after(s3):
    listed = s3.list_objects_v2(Bucket=BUCKET, Prefix="order/", StartAfter="order/a/")
    assert [o["Key"] for o in listed["Contents"]] == byte_order(ORDERED)[3:]
    assert listed["StartAfter"] == "order/a/"


@pytest.mark.parametrize("delimiter", [None, "/"])
def test_encoding_type_url_round_trips_awkward_keys(s3, delimiter):
    # boto3 asks for encoding-type=url itself and decodes the response.
    params = {"Bucket": BUCKET, "Prefix": "enc/"}
    if delimiter:
        params["Delimiter"] = delimiter
    listed = s3.list_objects_v2(**params)
    assert listed["EncodingType"] == "url"
    keys = [o["Key"] for o in listed.get("Contents", [])]
    prefixes = [p["Prefix"] for p in listed.get("CommonPrefixes", [])]
    if delimiter:
        assert prefixes == ["enc/dir one/", "enc/p+q/"]
        assert keys == byte_order([k for k in AWKWARD if "/" not in k[4:]])
    else:
        assert keys == byte_order(AWKWARD)
    assert listed["Prefix"] == "enc/"


def test_encoded_keys_on_the_wire(listed_daemon):
    status, _, body = raw_list(listed_daemon, "list-type=2&prefix=enc%2Fa&encoding-type=url&start-after=enc%2Fa%20b")
    assert status == 200
    root = ElementTree.fromstring(body)
    assert root.findtext(f"{NS}EncodingType") == "url"
    assert [k.text for k in root.iter(f"{NS}Key")] == ["enc/a%2Bb"]
    assert root.findtext(f"{NS}StartAfter") == "enc/a%20b"


def test_keys_round_trip_without_url_encoding(listed_daemon):
    status, _, body = raw_list(listed_daemon, "list-type=2&prefix=enc%2F")
    assert status == 200
    root = ElementTree.fromstring(body)
    assert [k.text for k in root.iter(f"{NS}Key")] == byte_order(AWKWARD)


def test_v1_marker_and_next_marker(s3):
    seen_keys: list[str] = []
    seen_prefixes: list[str] = []
    marker = ""
    while True:
        page = s3.list_objects(Bucket=BUCKET, Prefix="nest/", Delimiter="/", Marker=marker, MaxKeys=1)
        seen_keys += [o["Key"] for o in page.get("Contents", [])]
        seen_prefixes += [p["Prefix"] for p in page.get("CommonPrefixes", [])]
        assert page["Marker"] == marker
        if not page["IsTruncated"]:
            assert "NextMarker" not in page
            break
        marker = page["NextMarker"]
    assert seen_prefixes == ["nest/a/", "nest/x/"]
    assert seen_keys == ["nest/top.txt"]


def test_v1_marker_without_delimiter(s3):
    page = s3.list_objects(Bucket=BUCKET, Prefix="order/", Marker="order/a0", MaxKeys=2)
    assert [o["Key"] for o in page["Contents"]] == ["order/é", "order/\uffff"]
    assert page["IsTruncated"] and "NextMarker" not in page


def test_max_keys_zero_is_empty_and_not_truncated(s3):
    listed = s3.list_objects_v2(Bucket=BUCKET, MaxKeys=0)
    assert listed["KeyCount"] == 0 and not listed["IsTruncated"] and "Contents" not in listed


def test_max_keys_over_1000_is_capped(s3):
    listed = s3.list_objects_v2(Bucket=BUCKET, MaxKeys=5000)
    assert listed["KeyCount"] == 1000 and listed["IsTruncated"] and listed["MaxKeys"] == 1000


def test_forged_continuation_token_is_invalid_argument(s3):
    token = s3.list_objects_v2(Bucket=BUCKET, MaxKeys=1)["NextContinuationToken"]
    payload, _, mac = token.partition(".")
    for forged in ("forged", token[:-2], payload + "." + mac[::-1], token + "x"):
        with pytest.raises(ClientError) as raised:
            s3.list_objects_v2(Bucket=BUCKET, ContinuationToken=forged)
        assert error_code(raised) == (400, "InvalidArgument")
        assert raised.value.response["Error"]["Message"] == "The continuation token provided is incorrect"


def test_continuation_token_of_another_bucket_is_invalid_argument(listed_daemon, s3):
    other = make_client(listed_daemon, OTHER_ACCESS_KEY, OTHER_SECRET_KEY)
    token = other.list_objects_v2(Bucket=OTHER_BUCKET, MaxKeys=1)["NextContinuationToken"]
    with pytest.raises(ClientError) as raised:
        s3.list_objects_v2(Bucket=BUCKET, ContinuationToken=token)
    assert error_code(raised) == (400, "InvalidArgument")


@pytest.mark.parametrize("query", ["list-type=2&max-keys=-1", "list-type=2&max-keys=ten", "max-keys=1.5",
                                   "list-type=2&encoding-type=base64"])
def test_invalid_parameters_are_invalid_argument(listed_daemon, query):
    status, _, body = raw_list(listed_daemon, query)
    assert status == 400
    assert ElementTree.fromstring(body).findtext("Code") == "InvalidArgument"


def test_listing_another_bucket_is_access_denied(s3):
    with pytest.raises(ClientError) as raised:
        s3.list_objects_v2(Bucket=OTHER_BUCKET)
    assert error_code(raised) == (403, "AccessDenied")


# -- the aws clis ----------------------------------------------------------------------


@pytest.fixture(params=sorted(AWS_CLIS))
def aws(request, listed_daemon, tmp_path):
    """Run ``aws --endpoint-url ... ARGS`` against the module's daemon and return stdout."""
    return aws_cli(request.param, listed_daemon, tmp_path)


def test_aws_s3_ls_shows_prefixes_and_objects(aws):
    lines = aws("s3", "ls", f"s3://{BUCKET}/nest/").splitlines()
    assert [line.split() for line in lines if "PRE" in line] == [["PRE", "a/"], ["PRE", "x/"]]
    objects = [line.split() for line in lines if "PRE" not in line]
    assert len(objects) == 1 and objects[0][2:] == [str(len(b"nest/top.txt")), "top.txt"]


def test_aws_s3_ls_of_the_bucket_root(aws):
    lines = aws("s3", "ls", f"s3://{BUCKET}").splitlines()
    assert [line.split() for line in lines] == [["PRE", "bulk/"], ["PRE", "enc/"], ["PRE", "nest/"], ["PRE", "order/"]]


def test_aws_s3_ls_recursive_lists_every_key(aws):
    output = aws("s3", "ls", "--recursive", f"s3://{BUCKET}/")
    # "date time size key" per object (the cli pages 1000 at a time); the key with a
    # newline spills onto a second line.
    listed = re.findall(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d +(\d+) (.*)$", output, re.MULTILINE)
    expected = [k for k in byte_order(ALL_KEYS) if "\n" not in k]
    assert [key for _, key in listed if "new" not in key] == expected
    assert all(int(size) == len(key.encode()) for size, key in listed if "new" not in key)
    assert "enc/new\nline" in output


def test_aws_s3api_list_objects_v2_prefix(aws):
    listed = json.loads(aws("s3api", "list-objects-v2", "--bucket", BUCKET, "--prefix", "bulk/d07/"))
    assert [o["Key"] for o in listed["Contents"]] == [f"bulk/d07/f{f:02d}" for f in range(FILES)]
    assert all(o["Size"] == len(o["Key"]) and o["StorageClass"] == "STANDARD" for o in listed["Contents"])


def test_aws_s3api_list_objects_v2_paginates_with_page_size(aws):
    listed = json.loads(aws("s3api", "list-objects-v2", "--bucket", BUCKET, "--prefix", "bulk/", "--page-size", "300"))
    assert [o["Key"] for o in listed["Contents"]] == BULK
