"""Immutable records the metadata store reads and writes."""

from __future__ import annotations

from typing import Mapping

import attrs


def _frozen_mapping(value: Mapping[str, str]) -> Mapping[str, str]:
    return dict(sorted(value.items()))


@attrs.frozen
class ObjectRecord:
    """Where one object lives and what S3 returns about it.

    ``etag`` is unquoted (hex MD5, or ``hex-N`` for multipart objects);
    ``headers`` holds the stored standard headers by lower-case name
    (content-encoding, content-disposition, cache-control, expires, content-language);
    ``user_metadata`` holds x-amz-meta-* values by lower-case suffix.
    """

    bucket: str
    key: str
    store: str
    location: str
    size: int
    etag: str
    content_type: str
    last_modified_ms: int
    headers: Mapping[str, str] = attrs.field(factory=dict, converter=_frozen_mapping)
    user_metadata: Mapping[str, str] = attrs.field(factory=dict, converter=_frozen_mapping)


@attrs.frozen
class StoreUsage:
    """A store's quota and how much of it is used or reserved for uploads in flight."""

    name: str
    quota_bytes: int  # 0 = unlimited
    used_bytes: int
    reserved_bytes: int
    object_count: int = 0


@attrs.frozen
class Reservation:
    """Bytes set aside on a store for one upload until it commits or fails."""

    id: int
    store: str
    size: int
