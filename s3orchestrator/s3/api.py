"""Which S3 operation a call is, by method, path shape and sub-resource query parameters."""

from __future__ import annotations

from twisted.logger import Logger

from s3orchestrator.errors import S3Error
from s3orchestrator.metadata.availability import MetadataAvailability
from s3orchestrator.metadata.interface import MetadataBusy, MetadataUnavailable
from s3orchestrator.s3.batch_delete import BatchDelete
from s3orchestrator.s3.buckets import BucketOperations
from s3orchestrator.s3.call import S3Call, S3Response
from s3orchestrator.s3.copy import CopyOperations
from s3orchestrator.s3.keys import check_key
from s3orchestrator.s3.listing import ListingOperations
from s3orchestrator.s3.metadata_busy import metadata_unavailable, slow_down
from s3orchestrator.s3.multipart import MultipartOperations
from s3orchestrator.s3.objects import ObjectOperations

# Query parameters that select a sub-resource or another operation than plain
# object/bucket access; anything else in the query (x-id=PutObject from the Go
# SDK, response-* overrides) is a parameter, not an operation.
_OBJECT_SUBRESOURCES = frozenset(
    {"acl", "attributes", "legal-hold", "restore", "retention", "select", "tagging", "torrent",
     "uploads", "uploadId"}
)
# What degraded mode (the metadata database unavailable) serves; everything else is 503.
_DEGRADED_OPERATIONS = frozenset({"GetObject", "HeadObject", "ListBuckets", "HeadBucket", "GetBucketLocation"})
_BODY_OPERATIONS = frozenset({"PutObject", "DeleteObjects", "UploadPart", "CompleteMultipartUpload"})
# The multipart calls on an object, by method and the sub-resource they name.
_MULTIPART_OPERATIONS = {
    ("POST", "uploads"): "CreateMultipartUpload",
    ("PUT", "uploadId"): "UploadPart",
    ("POST", "uploadId"): "CompleteMultipartUpload",
    ("DELETE", "uploadId"): "AbortMultipartUpload",
    ("GET", "uploadId"): "ListParts",
}
# Sub-resources of a bucket: a GET naming one is not a listing of its objects.
_BUCKET_SUBRESOURCES = frozenset(
    {"accelerate", "acl", "analytics", "cors", "encryption", "intelligent-tiering", "inventory",
     "lifecycle", "location", "logging", "metadataTable", "metrics", "notification", "object-lock",
     "ownershipControls", "policy", "policyStatus", "publicAccessBlock", "replication",
     "requestPayment", "session", "tagging", "uploads", "versioning", "versions", "website"}
)


def _bucket_get_operation(call: S3Call) -> str:
    """GET on a bucket: a listing (V2 with ``list-type=2``) unless it names a sub-resource."""
    subresources = _BUCKET_SUBRESOURCES.intersection(call.query)
    if not subresources:
        return "ListObjectsV2" if call.query.get("list-type") == "2" else "ListObjects"
    if subresources == {"uploads"}:
        return "ListMultipartUploads"
    if subresources == {"versions"}:
        return "ListObjectVersions"
    return "GetBucket" + "".join(
        "".join(part[:1].upper() + part[1:] for part in name.split("-")) for name in sorted(subresources)
    )


def operation_name(call: S3Call) -> str:
    """The S3 API name of the call (for dispatch, logs and metrics)."""
    method = call.method
    if call.bucket is None:
        return "ListBuckets" if method == "GET" else "Unknown"
    if call.key is None:
        if method == "GET":
            return _bucket_get_operation(call)
        if method == "POST" and "delete" in call.query:
            return "DeleteObjects"
        if method in ("PUT", "DELETE") and _BUCKET_SUBRESOURCES.intersection(call.query):
            return method.capitalize() + "BucketSubresource"
        return {"HEAD": "HeadBucket", "PUT": "CreateBucket",
                "DELETE": "DeleteBucket", "POST": "PostBucket"}.get(method, "Unknown")
    subresources = _OBJECT_SUBRESOURCES.intersection(call.query)
    if len(subresources) == 1:
        multipart = _MULTIPART_OPERATIONS.get((method, next(iter(subresources))))
        if multipart == "UploadPart" and call.header("x-amz-copy-source") is not None:
            return "UploadPartCopy"
        if multipart is not None:
            return multipart
    if subresources:
        return method.capitalize() + "Object" + "".join(sorted(s.capitalize() for s in subresources))
    if method == "PUT" and call.header("x-amz-copy-source") is not None:
        return "CopyObject"
    return {"GET": "GetObject", "HEAD": "HeadObject", "PUT": "PutObject",
            "DELETE": "DeleteObject"}.get(method, "Unknown")


class S3Api:
    """Routes calls to the operations that implement them."""

    _log = Logger()

    def __init__(
        self,
        objects: ObjectOperations,
        buckets: BucketOperations,
        listing: ListingOperations,
        batch_delete: BatchDelete,
        copies: CopyOperations,
        multipart: MultipartOperations,
        availability: MetadataAvailability | None = None,
    ) -> None:
        self._availability = availability
        self._handlers = {
            "ListBuckets": buckets.list_buckets,
            "HeadBucket": buckets.head_bucket,
            "CreateBucket": buckets.create_bucket,
            "GetBucketLocation": buckets.get_bucket_location,
            "ListObjects": listing.list_objects,
            "ListObjectsV2": listing.list_objects_v2,
            "DeleteObjects": batch_delete.delete_objects,
            "PutObject": objects.put_object,
            "CopyObject": copies.copy_object,
            "GetObject": objects.get_object,
            "HeadObject": objects.head_object,
            "DeleteObject": objects.delete_object,
            "GetObjectTagging": objects.get_object_tagging,
            "CreateMultipartUpload": multipart.create_multipart_upload,
            "UploadPart": multipart.upload_part,
            "UploadPartCopy": multipart.upload_part_copy,
            "CompleteMultipartUpload": multipart.complete_multipart_upload,
            "AbortMultipartUpload": multipart.abort_multipart_upload,
            "ListParts": multipart.list_parts,
            "ListMultipartUploads": multipart.list_multipart_uploads,
        }

    def needs_body(self, operation: str) -> bool:
        """Whether the operation consumes a request body."""
        return operation in _BODY_OPERATIONS

    async def dispatch(self, operation: str, call: S3Call) -> S3Response:
        """Run the operation; unknown or unsupported ones are NotImplemented, one
        on a key holding NUL InvalidArgument (see ``keys.check_key``), one the
        busy metadata database refused is SlowDown, and one that needs the metadata
        database while it is unavailable (degraded mode) is ServiceUnavailable."""
        handler = self._handlers.get(operation)
        if handler is None:
            raise S3Error("NotImplemented", f"{operation} is not implemented by s3orchestrator.")
        if call.key is not None:
            check_key(call.key)
        degraded = self._availability is not None and not self._availability.available
        if degraded and operation not in _DEGRADED_OPERATIONS:
            raise metadata_unavailable()
        try:
            return await handler(call)
        except MetadataUnavailable as error:
            raise metadata_unavailable() from error
        except MetadataBusy as error:
            if self._availability is not None and not self._availability.available:
                raise metadata_unavailable() from error
            self._log.warn(
                "Metadata database busy: {operation} (request {request_id}) refused with SlowDown",
                operation=operation, request_id=call.request_id,
            )
            raise slow_down() from error
