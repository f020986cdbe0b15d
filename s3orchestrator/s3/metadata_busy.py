"""A busy or unavailable metadata database, seen from the S3 API: answer SlowDown or
ServiceUnavailable, finish cleanups later.

The metadata store raises MetadataBusy when another process held the database
locked for longer than ``metadata.busy_timeout``; nothing was changed. Clients get
``503 SlowDown`` with ``Retry-After`` (their SDKs back off and retry). A cleanup that
must not be lost (giving back a failed upload's reservation) is retried in the
background (placement.retry) until the database takes it, so the refused request's
answer does not wait for the lock.
"""

from __future__ import annotations

from s3orchestrator.errors import S3Error

#: What ``Retry-After`` tells a client refused because the database was busy.
RETRY_AFTER_SECONDS = 1


def slow_down() -> S3Error:
    """The S3 answer to a request the busy metadata database refused."""
    return S3Error("SlowDown", headers={"Retry-After": str(RETRY_AFTER_SECONDS)})


def metadata_unavailable(message: str = "The metadata database is unavailable") -> S3Error:
    """The S3 answer to what degraded mode (no metadata database) cannot serve."""
    return S3Error("ServiceUnavailable", message, headers={"Retry-After": str(RETRY_AFTER_SECONDS)})
