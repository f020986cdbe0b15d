"""The S3 errors placement's and the stores' failures become."""

from __future__ import annotations

import pytest

from s3orchestrator.errors import S3Error
from s3orchestrator.placement.errors import CopyUnreadable, NoRoom, ObjectLost
from s3orchestrator.s3.placement_errors import LOST_MESSAGE, placement_errors
from s3orchestrator.stores.interface import StoreMisconfigured, StoreUnavailable


@pytest.mark.parametrize(
    ("failure", "code", "headers"),
    [
        (StoreUnavailable("connection refused"), "ServiceUnavailable", {"Retry-After": "1"}),
        (NoRoom("no store has room for 5 bytes"), "InsufficientStorage", {}),
        (StoreMisconfigured("403 from upstream"), "InternalError", {}),
        (CopyUnreadable("bkt/key is missing from store one"), "InternalError", {}),
    ],
)
def test_a_placement_failure_becomes_its_s3_error(failure: Exception, code: str, headers: dict[str, str]) -> None:
    with pytest.raises(S3Error) as raised, placement_errors():
        raise failure
    assert raised.value.code == code
    assert dict(raised.value.headers) == headers
    assert raised.value.__cause__ is failure


def test_other_errors_pass_through() -> None:
    with pytest.raises(KeyError), placement_errors():
        raise KeyError("x")


def test_a_lost_object_is_an_internal_error_that_says_so() -> None:
    with pytest.raises(S3Error) as raised, placement_errors():
        raise ObjectLost("bkt/key has no live copy left")
    assert (raised.value.status, raised.value.code, raised.value.message) == (500, "InternalError", LOST_MESSAGE)
