"""Bucket-level calls: HeadBucket on the caller's own bucket and on another."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

from tests.integration.daemon import BUCKET, OTHER_BUCKET, Daemon


@pytest.fixture
def daemon(module_daemon: Daemon) -> Daemon:
    """The module's daemon: no test changes anything."""
    return module_daemon


def test_head_bucket_of_own_bucket_is_200(s3):
    response = s3.head_bucket(Bucket=BUCKET)
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 200


def test_head_bucket_of_another_bucket_is_403(s3):
    with pytest.raises(ClientError) as raised:
        s3.head_bucket(Bucket=OTHER_BUCKET)
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_list_buckets_shows_only_the_callers_bucket(s3):
    buckets = s3.list_buckets()["Buckets"]
    assert [bucket["Name"] for bucket in buckets] == [BUCKET]


def test_get_bucket_location(s3):
    assert s3.get_bucket_location(Bucket=BUCKET)["LocationConstraint"] is None


def test_create_own_bucket_is_bucket_already_owned_by_you(s3):
    with pytest.raises(ClientError) as raised:
        s3.create_bucket(Bucket=BUCKET)
    assert raised.value.response["Error"]["Code"] == "BucketAlreadyOwnedByYou"
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 409


def test_create_another_bucket_is_access_denied(s3):
    with pytest.raises(ClientError) as raised:
        s3.create_bucket(Bucket="somebody-elses")
    assert raised.value.response["Error"]["Code"] == "AccessDenied"


@pytest.mark.parametrize("call", [
    lambda s3: s3.delete_bucket(Bucket=BUCKET),
    lambda s3: s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"}),
    lambda s3: s3.put_bucket_policy(Bucket=BUCKET, Policy="{}"),
    lambda s3: s3.put_bucket_tagging(Bucket=BUCKET, Tagging={"TagSet": []}),
    lambda s3: s3.get_bucket_lifecycle_configuration(Bucket=BUCKET),
    lambda s3: s3.get_bucket_cors(Bucket=BUCKET),
], ids=["delete", "versioning", "policy", "tagging", "lifecycle", "cors"])
def test_other_bucket_management_is_not_implemented(s3, call):
    with pytest.raises(ClientError) as raised:
        call(s3)
    assert raised.value.response["Error"]["Code"] == "NotImplemented"
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 501
