"""DeleteObjects (POST ?delete) through boto3 and hand-made requests."""

from __future__ import annotations

import base64
import hashlib

import pytest

from tests.integration.conftest import metadata_rows
from tests.integration.daemon import BUCKET
from tests.integration.rawhttp import send, signed_headers


def test_delete_objects_reports_each_key_and_releases_usage(s3, daemon):
    for index in range(30):
        s3.put_object(Bucket=BUCKET, Key=f"k{index:02d}", Body=b"x" * 100)
    keys = [f"k{index:02d}" for index in range(30)] + ["never-existed"]
    result = s3.delete_objects(Bucket=BUCKET, Delete={"Objects": [{"Key": key} for key in keys]})
    assert sorted(entry["Key"] for entry in result["Deleted"]) == sorted(keys)
    assert "Errors" not in result
    assert metadata_rows(daemon, "SELECT COUNT(*) FROM objects") == [(0,)]
    assert metadata_rows(daemon, "SELECT SUM(used_bytes), SUM(object_count) FROM stores") == [(0, 0)]


def test_quiet_delete_objects_lists_nothing_deleted(s3):
    s3.put_object(Bucket=BUCKET, Key="a", Body=b"x")
    result = s3.delete_objects(Bucket=BUCKET, Delete={"Objects": [{"Key": "a"}], "Quiet": True})
    assert "Deleted" not in result
    assert "Errors" not in result
    assert s3.list_objects_v2(Bucket=BUCKET)["KeyCount"] == 0


def delete_request(daemon, body: bytes, with_md5: bool = True):
    headers = {"Content-Length": str(len(body))}
    if with_md5:
        headers["Content-MD5"] = base64.b64encode(hashlib.md5(body).digest()).decode()
    path, signed = signed_headers(daemon, "POST", "", body, headers=headers, query="delete")
    return send(daemon, "POST", path, signed, body)


def test_more_than_1000_keys_is_malformed_xml(daemon):
    objects = "".join(f"<Object><Key>k{index}</Key></Object>" for index in range(1001))
    status, _, body = delete_request(daemon, f"<Delete>{objects}</Delete>".encode())
    assert status == 400
    assert b"<Code>MalformedXML</Code>" in body


@pytest.mark.parametrize("document", [
    b"<Delete><Object><Key>a</Key></Object>",
    b'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY e "x">]><Delete><Object><Key>&e;</Key></Object></Delete>',
    b"<NotDelete><Object><Key>a</Key></Object></NotDelete>",
    b"<Delete></Delete>",
])
def test_bad_documents_are_malformed_xml(daemon, document):
    status, _, body = delete_request(daemon, document)
    assert status == 400
    assert b"<Code>MalformedXML</Code>" in body


def test_delete_objects_without_an_integrity_header_is_refused(daemon):
    status, _, body = delete_request(daemon, b"<Delete><Object><Key>a</Key></Object></Delete>", with_md5=False)
    assert status == 400
    assert b"Content-MD5" in body
