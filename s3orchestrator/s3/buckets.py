"""Bucket-level calls on the caller's own (configured) bucket."""

from __future__ import annotations

from s3orchestrator.errors import S3Error
from s3orchestrator.s3 import xml_output
from s3orchestrator.s3.call import S3Call, S3Response
from s3orchestrator.s3.timestamps import iso8601

XML_HEADERS = [("Content-Type", "application/xml")]


def request_region(call: S3Call) -> str:
    """The region the client signed for (any region is accepted)."""
    return call.auth.scope.split("/")[1]


class BucketOperations:
    """HeadBucket, GetBucketLocation, ListBuckets, CreateBucket; access was checked at authentication.

    Buckets are configured, not created: ``configured_at`` (epoch seconds, when
    the daemon loaded its config) stands in for their creation date.
    """

    def __init__(self, configured_at: float) -> None:
        self._configured_at = configured_at

    async def head_bucket(self, call: S3Call) -> S3Response:
        """200 for the caller's own bucket (others were refused with 403 before this)."""
        return S3Response(200, [("x-amz-bucket-region", request_region(call))])

    async def get_bucket_location(self, call: S3Call) -> S3Response:
        """The region the client uses; S3 spells us-east-1 as an empty constraint."""
        region = request_region(call)
        document = xml_output.root("LocationConstraint")
        if region != "us-east-1":
            document.text = region
        return S3Response(200, XML_HEADERS, xml_output.document(document))

    async def list_buckets(self, call: S3Call) -> S3Response:
        """The caller's own bucket: an access key belongs to exactly one."""
        document = xml_output.root("ListAllMyBucketsResult")
        owner = xml_output.add(document, "Owner")
        xml_output.add(owner, "ID", call.auth.credential.bucket)
        xml_output.add(owner, "DisplayName", call.auth.credential.bucket)
        bucket = xml_output.add(xml_output.add(document, "Buckets"), "Bucket")
        xml_output.add(bucket, "Name", call.auth.credential.bucket)
        xml_output.add(bucket, "CreationDate", iso8601(self._configured_at))
        return S3Response(200, XML_HEADERS, xml_output.document(document))

    async def create_bucket(self, call: S3Call) -> S3Response:
        """The caller's bucket already exists (rclone creates it before its first upload)."""
        raise S3Error("BucketAlreadyOwnedByYou", extra={"BucketName": call.bucket or ""})
