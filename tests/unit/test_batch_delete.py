"""DeleteObjects: the per-key outcome of each delete."""

from __future__ import annotations

from typing import Any

import pytest_twisted

from s3orchestrator.metadata.interface import MetadataBusy
from s3orchestrator.s3.batch_delete import BatchDelete
from s3orchestrator.s3.call import S3Call
from tests.unit.fakes import FakeRequestBody, auth_result

REQUEST = b"<Delete><Object><Key>gone</Key></Object><Object><Key>locked</Key></Object></Delete>"


class BusyPlacement:
    """Placement whose delete of ``locked`` the busy metadata database refuses."""

    async def delete(self, bucket: str, key: str) -> Any:
        if key == "locked":
            raise MetadataBusy("database is locked")
        return None


@pytest_twisted.ensureDeferred
async def test_a_key_the_busy_database_refuses_is_reported_as_slow_down() -> None:
    call = S3Call("0123456789ABCDEF", "POST", "bkt", None, {"delete": ""}, {"content-md5": ["x"]}, auth_result(),
                  body=FakeRequestBody(REQUEST))
    placement: Any = BusyPlacement()
    response = await BatchDelete(placement).delete_objects(call)
    assert isinstance(response.body, bytes)
    assert b"<Deleted><Key>gone</Key></Deleted>" in response.body
    assert b"<Error><Key>locked</Key><Code>SlowDown</Code>" in response.body
