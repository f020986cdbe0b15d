"""Bucket-level calls: HeadBucket on the caller's own bucket and on another."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

from tests.integration.daemon import BUCKET, OTHER_BUCKET


def test_head_bucket_of_own_bucket_is_200(s3):
    response = s3.head_bucket(Bucket=BUCKET)
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 200


def test_head_bucket_of_another_bucket_is_403(s3):
    with pytest.raises(ClientError) as raised:
        s3.head_bucket(Bucket=OTHER_BUCKET)
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
