"""Bucket-level calls on the caller's own (configured) bucket."""

from __future__ import annotations

from s3orchestrator.s3.call import S3Call, S3Response


class BucketOperations:
    """HeadBucket and friends; access to the bucket was checked by authentication."""

    async def head_bucket(self, call: S3Call) -> S3Response:
        """200 for the caller's own bucket (others were refused with 403 before this)."""
        return S3Response(200, [("x-amz-bucket-region", call.auth.scope.split("/")[1])])
