"""Time formats S3 uses in XML documents."""

from __future__ import annotations

import datetime


def iso8601(epoch_seconds: float) -> str:
    """``2026-11-23T10:00:00.000Z``: UTC with milliseconds, as S3 writes LastModified."""
    moment = datetime.datetime.fromtimestamp(epoch_seconds, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
