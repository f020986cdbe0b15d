"""The admin API's imports (``s3orchestrator import``), behind the admin token:

- ``POST /imports`` with ``{"store": NAME, "bucket": VBUCKET, "prefix": P}`` starts the
  import (or resumes it from its checkpoint; one already running on this instance is
  left running): 202 ``{"import": row}``; 404 for an unknown store or bucket, 400 for a
  bad document, 409 ``{"error", "import": row}`` while another instance runs it.
- ``GET /imports``: ``{"instance": this instance's id, "imports": [row...], "stores":
  [{"name", "quota_bytes", "used_bytes", "reserved_bytes", "object_count"}]}``, a row per
  import ever started (``metadata.imports.ImportRecord``: state, counts, checkpoint,
  owner), from any instance, with ``running_here``: whether this instance runs it.

Both answer 503 ``{"error"}`` while the metadata database is unavailable or busy.
"""

from __future__ import annotations

import json
from typing import Any, Mapping

from s3orchestrator.imports.runner import Importer, ImportRefused
from s3orchestrator.metadata.interface import IMetadataStore, MetadataBusy, MetadataUnavailable
from s3orchestrator.ops.admin import authorized
from s3orchestrator.ops.endpoints import OpsAction, OpsEndpoint, OpsResponse
from s3orchestrator.ops.health import json_response

IMPORTS_PATH = "/imports"


def _request(body: bytes) -> tuple[str, str, str]:
    """(store, bucket, prefix) of a POST's document; ValueError if it is not one."""
    try:
        document = json.loads(body)
    except ValueError:
        raise ValueError("the body must be a JSON object") from None
    if not isinstance(document, dict):
        raise ValueError("the body must be a JSON object")
    store, bucket, prefix = document.get("store"), document.get("bucket"), document.get("prefix", "")
    if not isinstance(store, str) or not store or not isinstance(bucket, str) or not bucket:
        raise ValueError("store and bucket must be non-empty strings")
    if not isinstance(prefix, str):
        raise ValueError("prefix must be a string")
    return store, bucket, prefix


def import_routes(token: str, importer: Importer, metadata: IMetadataStore) -> tuple[
    dict[str, OpsEndpoint], dict[str, OpsAction]
]:
    """The endpoints and actions of the imports, by path, behind ``token``."""

    async def start(headers: Mapping[str, str], body: bytes) -> OpsResponse:
        try:
            store, bucket, prefix = _request(body)
        except ValueError as error:
            return json_response(400, {"error": str(error)})
        try:
            record = await importer.start(store, bucket, prefix)
        except ImportRefused as refused:
            answer: dict[str, Any] = {"error": str(refused)}
            if refused.record is not None:
                answer["import"] = refused.record.document()
            return json_response(refused.status, answer)
        except (MetadataUnavailable, MetadataBusy) as error:
            return json_response(503, {"error": f"metadata database: {error}"})
        return json_response(202, {"import": record.document()})

    async def progress(headers: Mapping[str, str]) -> OpsResponse:
        # Taken before the rows are read: a run ending in between shows as ended, never as
        # running elsewhere.
        running = importer.running_imports()
        try:
            records = await importer.table.imports()
            usage = await metadata.store_usage()
        except (MetadataUnavailable, MetadataBusy) as error:
            return json_response(503, {"error": f"metadata database: {error}"})
        return json_response(200, {
            "instance": importer.owner,
            "imports": [{**record.document(), "running_here": (record.store, record.bucket, record.prefix) in running}
                        for record in records],
            "stores": [
                {"name": store.name, "quota_bytes": store.quota_bytes, "used_bytes": store.used_bytes,
                 "reserved_bytes": store.reserved_bytes, "object_count": store.object_count}
                for store in usage
            ],
        })

    return (
        {IMPORTS_PATH: authorized(token, IMPORTS_PATH, progress)},
        {IMPORTS_PATH: authorized(token, IMPORTS_PATH, start)},
    )
