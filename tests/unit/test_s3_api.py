"""S3Api.dispatch: which errors of the layers below become which S3 errors."""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted

from s3orchestrator.errors import S3Error
from s3orchestrator.metadata.interface import MetadataBusy
from s3orchestrator.s3.api import S3Api
from s3orchestrator.s3.call import S3Call
from tests.unit.fakes import auth_result


class Raising:
    """Operations whose every call raises ``error``."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def __getattr__(self, name: str) -> Any:
        async def operation(call: S3Call) -> None:
            raise self.error

        return operation


def api(error: Exception) -> S3Api:
    operations: Any = Raising(error)
    return S3Api(operations, operations, operations, operations, operations, operations)


def call(method: str) -> S3Call:
    return S3Call("0123456789ABCDEF", method, "bkt", "key", {}, {}, auth_result())


@pytest_twisted.ensureDeferred
async def test_a_busy_metadata_database_is_slow_down_with_retry_after() -> None:
    with pytest.raises(S3Error) as raised:
        await api(MetadataBusy("database is locked")).dispatch("PutObject", call("PUT"))
    assert (raised.value.code, raised.value.status) == ("SlowDown", 503)
    assert raised.value.headers == {"Retry-After": "1"}


@pytest_twisted.ensureDeferred
async def test_other_errors_pass_through_unchanged() -> None:
    with pytest.raises(RuntimeError, match="boom"):
        await api(RuntimeError("boom")).dispatch("GetObject", call("GET"))
