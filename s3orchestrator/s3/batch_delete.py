"""DeleteObjects (POST ?delete): up to 1000 keys in one request."""

from __future__ import annotations

from twisted.internet.defer import Deferred, DeferredSemaphore, ensureDeferred, gatherResults
from twisted.logger import Logger

from s3orchestrator.errors import S3Error
from s3orchestrator.metadata.interface import MetadataBusy
from s3orchestrator.placement.engine import Placement
from s3orchestrator.s3 import xml_output
from s3orchestrator.s3.call import S3Call, S3Response
from s3orchestrator.s3.metadata_busy import slow_down
from s3orchestrator.s3.xml_input import child_text, children, local_name, parse_xml, read_small_body

MAX_KEYS = 1000
# Store deletes running at once for one request: enough to hide upstream latency,
# few enough not to swamp a store.
CONCURRENCY = 16
_INTEGRITY_HEADERS = ("content-md5", "x-amz-checksum-crc32", "x-amz-checksum-crc32c",
                      "x-amz-checksum-sha1", "x-amz-checksum-sha256", "x-amz-checksum-crc64nvme",
                      "x-amz-sdk-checksum-algorithm")


def parse_delete_request(data: bytes) -> tuple[list[str], bool]:
    """The keys of a ``<Delete>`` document and whether it asks for Quiet mode."""
    document = parse_xml(data)
    if local_name(document) != "Delete":
        raise S3Error("MalformedXML")
    keys = [child_text(entry, "Key") for entry in children(document, "Object")]
    if not keys or len(keys) > MAX_KEYS or any(key is None or key == "" for key in keys):
        raise S3Error("MalformedXML")
    quiet = (child_text(document, "Quiet") or "").strip().lower() == "true"
    return [key for key in keys if key is not None], quiet


class BatchDelete:
    """Deletes many keys of the caller's bucket, each exactly as DeleteObject would."""

    _log = Logger()

    def __init__(self, placement: Placement) -> None:
        self._placement = placement

    async def delete_objects(self, call: S3Call) -> S3Response:
        """Per-key Deleted/Error entries; missing keys count as deleted, as in S3."""
        assert call.bucket is not None and call.body is not None
        if not any(call.header(name) for name in _INTEGRITY_HEADERS):
            # S3 insists on an integrity check for this call (verified with the payload).
            raise S3Error("InvalidRequest", "Missing required header for this request: Content-MD5")
        keys, quiet = parse_delete_request(await read_small_body(call.body))
        semaphore = DeferredSemaphore(CONCURRENCY)
        bucket = call.bucket

        def delete(key: str) -> Deferred[S3Error | None]:
            return ensureDeferred(self._delete_one(bucket, key))

        outcomes = await gatherResults([semaphore.run(delete, key) for key in keys], consumeErrors=True)
        document = xml_output.root("DeleteResult")
        for key, error in zip(keys, outcomes, strict=True):
            if error is None:
                if not quiet:
                    xml_output.add(xml_output.add(document, "Deleted"), "Key", key)
                continue
            entry = xml_output.add(document, "Error")
            xml_output.add(entry, "Key", key)
            xml_output.add(entry, "Code", error.code)
            xml_output.add(entry, "Message", error.message)
        return S3Response(200, [("Content-Type", "application/xml")], xml_output.document(document))

    async def _delete_one(self, bucket: str, key: str) -> S3Error | None:
        try:
            await self._placement.delete(bucket, key)
        except S3Error as error:
            return error
        except MetadataBusy:
            return slow_down()
        except Exception:
            self._log.failure("Deleting {bucket}/{key} failed", bucket=bucket, key=key)
            return S3Error("InternalError")
        return None
