"""S3 details real clients and test suites check: metadata text, URL-encoded listings,
NoSuchBucket, empty continuation tokens, partNumber errors, retried Completes and
checksum algorithm names, with boto3 and raw HTTP."""

from __future__ import annotations

import time
from email.header import decode_header
from xml.etree import ElementTree

import pytest
from botocore.exceptions import ClientError

from tests.integration.conftest import make_client, metadata_rows, rclone_runner, wait_for
from tests.integration.daemon import BUCKET, OTHER_ACCESS_KEY, OTHER_BUCKET, OTHER_SECRET_KEY
from tests.integration.rawhttp import send, signed_headers

NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"
MiB = 1024 * 1024


def s3_error(raised: pytest.ExceptionInfo) -> tuple[int, str]:
    response = raised.value.response
    return response["ResponseMetadata"]["HTTPStatusCode"], response["Error"]["Code"]


def decoded(value: str) -> str:
    return "".join(
        piece.decode(charset or "ascii") if isinstance(piece, bytes) else piece
        for piece, charset in decode_header(value)
    )


def error_code(body: bytes) -> str | None:
    return ElementTree.fromstring(body).findtext("Code")


# -- user metadata that is not ASCII -------------------------------------------------------------


def test_unicode_metadata_from_boto3_comes_back_rfc2047_encoded(s3):
    # s3-tests' test_object_set_get_unicode_metadata: boto3 sends the value's UTF-8 bytes.
    def set_unicode_metadata(**kwargs):
        kwargs["params"]["headers"]["x-amz-meta-meta1"] = "Hello World\xe9"

    s3.meta.events.register("before-call.s3.PutObject", set_unicode_metadata)
    s3.put_object(Bucket=BUCKET, Key="foo", Body=b"bar")
    got = s3.get_object(Bucket=BUCKET, Key="foo")["Metadata"]["meta1"]
    # Not the mojibake "Hello WorldÃ©": S3's RFC 2047 form, which decodes to the text.
    assert got == "=?UTF-8?Q?Hello_World=C3=A9?="
    assert decoded(got) == "Hello World\xe9"
    assert s3.head_object(Bucket=BUCKET, Key="foo")["Metadata"] == {"meta1": got}


def test_unicode_metadata_bytes_round_trip_over_raw_http(daemon):
    text = "naïve 東京 ✓"
    path, headers = signed_headers(daemon, "PUT", "raw-meta", b"x", headers={"x-amz-meta-note": text})
    headers["x-amz-meta-note"] = text.encode("utf-8")  # the bytes on the wire, as clients send them
    assert send(daemon, "PUT", path, headers, b"x")[0] == 200
    path, headers = signed_headers(daemon, "GET", "raw-meta")
    status, response_headers, _ = send(daemon, "GET", path, headers)
    assert status == 200
    value = response_headers["x-amz-meta-note"]
    assert value.isascii() and value.startswith("=?UTF-8?Q?")
    assert decoded(value) == text


def test_rfc2047_metadata_is_decoded_before_it_is_stored(daemon, s3):
    sent = "=?UTF-8?B?SGVsbG8gV29ybGTDqQ==?="
    s3.put_object(Bucket=BUCKET, Key="b-encoded", Body=b"x", Metadata={"m": sent, "plain": "as is"})
    assert s3.head_object(Bucket=BUCKET, Key="b-encoded")["Metadata"] == {
        "m": "=?UTF-8?Q?Hello_World=C3=A9?=", "plain": "as is",
    }
    stored = metadata_rows(daemon, "SELECT user_metadata FROM objects WHERE key = ?", "b-encoded")
    assert "Hello World\\u00e9" in stored[0][0]


# -- encoding-type=url ---------------------------------------------------------------------------


@pytest.fixture
def encoding_keys(s3):
    for key in ("foo+1/bar", "foo/bar/xyzzy", "quux ab/thud", "asdf+b"):
        s3.put_object(Bucket=BUCKET, Key=key, Body=b"")
    return s3


def test_v2_url_encoding_is_s3_tests_encoding_basic(encoding_keys):
    # Asked for explicitly, botocore leaves the values as the server sent them.
    response = encoding_keys.list_objects_v2(Bucket=BUCKET, Delimiter="/", EncodingType="url")
    assert [item["Key"] for item in response["Contents"]] == ["asdf%2Bb"]
    assert [item["Prefix"] for item in response["CommonPrefixes"]] == ["foo%2B1/", "foo/", "quux%20ab/"]


def test_v1_url_encoding_is_s3_tests_encoding_basic(encoding_keys):
    response = encoding_keys.list_objects(Bucket=BUCKET, Delimiter="/", EncodingType="url")
    assert response["Delimiter"] == "/"
    assert [item["Key"] for item in response["Contents"]] == ["asdf%2Bb"]
    assert [item["Prefix"] for item in response["CommonPrefixes"]] == ["foo%2B1/", "foo/", "quux%20ab/"]


def test_boto3s_own_url_encoding_gives_the_keys_back(encoding_keys):
    # Without EncodingType botocore asks for url itself and decodes (unquote_plus).
    response = encoding_keys.list_objects_v2(Bucket=BUCKET, Prefix="quux ")
    assert [item["Key"] for item in response["Contents"]] == ["quux ab/thud"]


def test_upload_listings_url_encode_keys_with_percent_20(s3, daemon):
    upload_id = s3.create_multipart_upload(Bucket=BUCKET, Key="dir one/a+b")["UploadId"]
    listed = s3.list_multipart_uploads(Bucket=BUCKET, EncodingType="url")
    assert [upload["Key"] for upload in listed["Uploads"]] == ["dir%20one/a%2Bb"]
    delimited = s3.list_multipart_uploads(Bucket=BUCKET, Delimiter="/", EncodingType="url")
    assert [item["Prefix"] for item in delimited["CommonPrefixes"]] == ["dir%20one/"]
    path, headers = signed_headers(daemon, "GET", "dir one/a+b", query=f"encoding-type=url&uploadId={upload_id}")
    status, _, body = send(daemon, "GET", path, headers)
    assert status == 200
    document = ElementTree.fromstring(body)
    assert (document.findtext(f"{NS}Key"), document.findtext(f"{NS}EncodingType")) == ("dir%20one/a%2Bb", "url")


@pytest.mark.parametrize("list_url_encode", ["true", "false"])
def test_rclone_lists_keys_with_spaces_and_pluses(s3, daemon, tmp_path, list_url_encode):
    # rclone lists with ListObjects V1, asking for encoding-type=url unless told not to.
    keys = ["dir one/a+b c.txt", "dir one/x%20y", "top +.txt"]
    for key in keys:
        s3.put_object(Bucket=BUCKET, Key=key, Body=b"x")
    rclone = rclone_runner(daemon, tmp_path)
    listed = rclone("lsf", "-R", "--files-only", f"--s3-list-url-encode={list_url_encode}", f"orchestrator:{BUCKET}")
    assert sorted(listed.splitlines()) == sorted(keys)


# -- buckets that exist in no configuration ------------------------------------------------------


def test_a_bucket_configured_for_no_key_is_no_such_bucket(s3):
    with pytest.raises(ClientError) as raised:
        s3.get_object(Bucket="no-such-bucket", Key="k")
    assert s3_error(raised) == (404, "NoSuchBucket")
    with pytest.raises(ClientError) as raised:
        s3.list_objects_v2(Bucket="no-such-bucket")
    assert s3_error(raised) == (404, "NoSuchBucket")
    with pytest.raises(ClientError) as raised:
        s3.head_bucket(Bucket="no-such-bucket")
    assert s3_error(raised)[0] == 404


def test_no_such_bucket_whoever_asks_and_access_denied_for_anothers(daemon):
    other = make_client(daemon, access_key=OTHER_ACCESS_KEY, secret_key=OTHER_SECRET_KEY)
    with pytest.raises(ClientError) as raised:
        other.put_object(Bucket="no-such-bucket", Key="k", Body=b"x")
    assert s3_error(raised) == (404, "NoSuchBucket")
    with pytest.raises(ClientError) as raised:
        other.get_object(Bucket=BUCKET, Key="k")
    assert s3_error(raised) == (403, "AccessDenied")


def test_a_bad_signature_never_learns_whether_a_bucket_exists(daemon):
    forger = make_client(daemon, access_key=OTHER_ACCESS_KEY, secret_key="guessed")
    for bucket in ("no-such-bucket", BUCKET, OTHER_BUCKET):
        with pytest.raises(ClientError) as raised:
            forger.get_object(Bucket=bucket, Key="k")
        assert s3_error(raised) == (403, "SignatureDoesNotMatch"), bucket


# -- an empty continuation-token -----------------------------------------------------------------


def test_an_empty_continuation_token_is_none(s3, daemon):
    s3.put_object(Bucket=BUCKET, Key="one", Body=b"1")
    path, headers = signed_headers(daemon, "GET", "", query="continuation-token=&list-type=2")
    status, _, body = send(daemon, "GET", path, headers)
    assert status == 200, body
    assert [e.text for e in ElementTree.fromstring(body).iter(f"{NS}Key")] == ["one"]
    assert [item["Key"] for item in s3.list_objects_v2(Bucket=BUCKET, ContinuationToken="")["Contents"]] == ["one"]


# -- ?partNumber=N ---------------------------------------------------------------------------------


def test_part_numbers_past_the_last_part_are_400_invalid_part(s3, daemon):
    s3.put_object(Bucket=BUCKET, Key="simple", Body=b"0123456789")
    assert s3.get_object(Bucket=BUCKET, Key="simple", PartNumber=1)["Body"].read() == b"0123456789"
    with pytest.raises(ClientError) as raised:
        s3.get_object(Bucket=BUCKET, Key="simple", PartNumber=2)
    assert s3_error(raised) == (400, "InvalidPart")
    with pytest.raises(ClientError) as raised:
        s3.head_object(Bucket=BUCKET, Key="simple", PartNumber=2)
    assert s3_error(raised)[0] == 400
    path, headers = signed_headers(daemon, "GET", "simple", query="partNumber=3")
    status, _, body = send(daemon, "GET", path, headers)
    document = ElementTree.fromstring(body)
    assert (status, document.findtext("PartNumberRequested"), document.findtext("ActualPartCount")) == (400, "3", "1")


@pytest.mark.parametrize("value", ["0", "10001", "abc", "-1", ""])
def test_invalid_part_numbers_are_400_invalid_argument(s3, daemon, value):
    s3.put_object(Bucket=BUCKET, Key="simple", Body=b"0123456789")
    path, headers = signed_headers(daemon, "GET", "simple", query=f"partNumber={value}")
    status, _, body = send(daemon, "GET", path, headers)
    assert (status, error_code(body)) == (400, "InvalidArgument")


# -- a CompleteMultipartUpload retried after it succeeded ----------------------------------------


def upload_two_parts(s3, key: str) -> tuple[str, list[dict]]:
    upload_id = s3.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]
    parts = []
    for number, body in ((1, b"a" * (5 * MiB)), (2, b"tail")):
        etag = s3.upload_part(Bucket=BUCKET, Key=key, UploadId=upload_id, PartNumber=number, Body=body)["ETag"]
        parts.append({"PartNumber": number, "ETag": etag})
    return upload_id, parts


def test_a_retried_complete_gets_the_same_answer_and_changes_nothing(s3, daemon):
    upload_id, parts = upload_two_parts(s3, "retried")
    first = s3.complete_multipart_upload(Bucket=BUCKET, Key="retried", UploadId=upload_id,
                                         MultipartUpload={"Parts": parts})
    before = s3.head_object(Bucket=BUCKET, Key="retried")
    described = "SELECT etag, last_modified_ms, store, location FROM objects WHERE key = 'retried'"
    rows = metadata_rows(daemon, described)
    time.sleep(0.01)
    again = s3.complete_multipart_upload(Bucket=BUCKET, Key="retried", UploadId=upload_id,
                                         MultipartUpload={"Parts": parts})
    assert (again["ETag"], again["Key"], again["Location"]) == (first["ETag"], first["Key"], first["Location"])
    assert s3.head_object(Bucket=BUCKET, Key="retried")["LastModified"] == before["LastModified"]
    assert metadata_rows(daemon, described) == rows
    assert s3.get_object(Bucket=BUCKET, Key="retried")["Body"].read() == b"a" * (5 * MiB) + b"tail"


def test_a_retried_complete_with_another_part_list_is_refused(s3):
    upload_id, parts = upload_two_parts(s3, "retried")
    s3.complete_multipart_upload(Bucket=BUCKET, Key="retried", UploadId=upload_id, MultipartUpload={"Parts": parts})
    for other in ([parts[0]], [parts[0], {"PartNumber": 2, "ETag": parts[0]["ETag"]}]):
        with pytest.raises(ClientError) as raised:
            s3.complete_multipart_upload(Bucket=BUCKET, Key="retried", UploadId=upload_id,
                                         MultipartUpload={"Parts": other})
        assert s3_error(raised) == (400, "InvalidPart")
    with pytest.raises(ClientError) as raised:  # the upload id belongs to another key
        s3.complete_multipart_upload(Bucket=BUCKET, Key="elsewhere", UploadId=upload_id,
                                     MultipartUpload={"Parts": parts})
    assert s3_error(raised) == (404, "NoSuchUpload")


def test_a_completion_is_forgotten_after_completed_retention(start_daemon):
    daemon = start_daemon(extra_toml="[multipart]\ncompleted_retention = 1\nexpiry_check_interval = 0.5\n")
    s3 = make_client(daemon)
    upload_id, parts = upload_two_parts(s3, "forgotten")
    s3.complete_multipart_upload(Bucket=BUCKET, Key="forgotten", UploadId=upload_id, MultipartUpload={"Parts": parts})
    assert metadata_rows(daemon, "SELECT upload_id FROM completed_uploads") == [(upload_id,)]
    # The expiry job prunes the remembered completion once it is older than the retention.
    assert wait_for(lambda: metadata_rows(daemon, "SELECT upload_id FROM completed_uploads") == [], timeout=10)
    with pytest.raises(ClientError) as raised:
        s3.complete_multipart_upload(Bucket=BUCKET, Key="forgotten", UploadId=upload_id,
                                     MultipartUpload={"Parts": parts})
    assert s3_error(raised) == (404, "NoSuchUpload")


# -- checksum algorithm names --------------------------------------------------------------------


@pytest.mark.parametrize("header", ["x-amz-sdk-checksum-algorithm", "x-amz-checksum-algorithm"])
def test_an_unknown_checksum_algorithm_on_put_is_invalid_request(daemon, header):
    path, headers = signed_headers(daemon, "PUT", "checked", b"x", headers={header: "MD5"})
    status, _, body = send(daemon, "PUT", path, headers, b"x")
    assert (status, error_code(body)) == (400, "InvalidRequest")
    path, headers = signed_headers(daemon, "HEAD", "checked")
    assert send(daemon, "HEAD", path, headers)[0] == 404


def test_an_unknown_checksum_algorithm_on_upload_part_and_create_is_invalid_request(s3, daemon):
    upload_id = s3.create_multipart_upload(Bucket=BUCKET, Key="mp")["UploadId"]
    query = f"partNumber=1&uploadId={upload_id}"
    path, headers = signed_headers(daemon, "PUT", "mp", b"x", headers={"x-amz-sdk-checksum-algorithm": "CRC99"},
                                   query=query)
    status, _, body = send(daemon, "PUT", path, headers, b"x")
    assert (status, error_code(body)) == (400, "InvalidRequest")
    assert s3.list_parts(Bucket=BUCKET, Key="mp", UploadId=upload_id).get("Parts", []) == []
    path, headers = signed_headers(daemon, "POST", "mp", headers={"x-amz-checksum-algorithm": "MD5"}, query="uploads")
    status, _, body = send(daemon, "POST", path, headers)
    assert (status, error_code(body)) == (400, "InvalidRequest")
