"""Tests for the keys the S3 API refuses before any operation or store is involved."""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted

from s3orchestrator.errors import S3Error
from s3orchestrator.s3.api import S3Api
from s3orchestrator.s3.call import S3Call, S3Response
from s3orchestrator.s3.copy import parse_copy_source
from tests.unit.fakes import auth_result


class RecordingOperations:
    """Stands in for every operations object: each operation records its call and answers 200."""

    def __init__(self) -> None:
        self.called: list[str] = []

    def __getattr__(self, name: str) -> Any:
        async def operation(call: S3Call) -> S3Response:
            self.called.append(name)
            return S3Response(200)

        return operation


def call(method: str, key: str) -> S3Call:
    return S3Call(request_id="0123456789ABCDEF", method=method, bucket="bkt", key=key, query={}, headers={},
                  auth=auth_result())


@pytest.fixture
def api() -> tuple[S3Api, RecordingOperations]:
    operations = RecordingOperations()
    return S3Api(*[operations] * 6), operations  # type: ignore[arg-type]


@pytest.mark.parametrize("operation, method", [
    ("PutObject", "PUT"), ("GetObject", "GET"), ("HeadObject", "HEAD"), ("DeleteObject", "DELETE"),
    ("CopyObject", "PUT"), ("CreateMultipartUpload", "POST"),
])
@pytest_twisted.ensureDeferred
async def test_a_key_with_nul_is_invalid_argument_before_the_operation_runs(api, operation: str, method: str) -> None:
    s3_api, operations = api
    with pytest.raises(S3Error) as raised:
        await s3_api.dispatch(operation, call(method, "a\x00b"))
    assert (raised.value.code, raised.value.status) == ("InvalidArgument", 400)
    assert operations.called == []


@pytest.mark.parametrize("key", ["../x", "a/./b", "a//b", "a\\b", "..", ".", "dir/", "\x01ctl", "%2F", "a+b c"])
@pytest_twisted.ensureDeferred
async def test_every_other_key_reaches_the_operation(api, key: str) -> None:
    s3_api, operations = api
    assert (await s3_api.dispatch("PutObject", call("PUT", key))).status == 200
    assert operations.called == ["put_object"]


def test_a_copy_source_with_nul_is_invalid_argument() -> None:
    with pytest.raises(S3Error) as raised:
        parse_copy_source("/bkt/a%00b")
    assert raised.value.code == "InvalidArgument"
    assert raised.value.extra == {"ArgumentName": "x-amz-copy-source"}
    assert parse_copy_source("/bkt/a%2F..%2Fb") == ("bkt", "a/../b")
