"""Where an upstream S3 store keeps object ``key`` of virtual bucket ``bucket`` (pure).

The location is ``<bucket>/<key>`` whenever the upstream can hold that name, so
ordinary keys stay readable in the upstream bucket. Filesystem-backed S3 servers
(SeaweedFS, MinIO) cannot hold every key S3 accepts: they refuse ``.`` and ``..``
segments, collapse ``//``, take ``\\`` for a separator, turn a key ending in ``/``
into an empty directory, refuse NUL, names over 255 bytes and keys over 1024 bytes.
So the key is split at ``/`` into segments and only a segment that needs it is
replaced:

- A *plain* segment is kept as it is: not empty, not ``.`` or ``..``, without
  ``\\`` or NUL, not starting with ``%%``, at most 255 bytes (UTF-8).
- Any other segment becomes ``%%`` followed by the segment with ``%``, ``#``,
  ``\\`` and the C0 control characters percent-escaped (``%25``, ``%23``,
  ``%5C``, ``%00``...): ``a/../b`` -> ``a/%%../b``, ``a//b`` -> ``a/%%/b``,
  ``docs/`` -> ``docs/%%``, ``a\\b`` -> ``%%a%5Cb``, ``%%x`` -> ``%%%25%25x``.
- If that is longer than 255 bytes, the segment becomes ``%%#`` and the hex
  SHA-256 of the segment (67 bytes).
- If the whole location is then longer than 1024 bytes, it becomes
  ``<bucket>/%%##`` and the hex SHA-256 of the key.

Two different keys never share a location: the split keeps the number of
segments (no replacement contains ``/``), and the three kinds of segment are
told apart by their start (plain: not ``%%``; escaped: ``%%`` and no ``#`` next,
since ``#`` is always escaped; hashed: ``%%#``) - percent-escaping ``%`` itself
makes the escaped form decodable, and the hashed forms differ from each other
by length. Only a SHA-256 collision could join two long names.
"""

from __future__ import annotations

import hashlib

ESCAPE_MARK = "%%"
HASH_MARK = ESCAPE_MARK + "#"
KEY_HASH_MARK = ESCAPE_MARK + "##"
# S3's limit on a key (AWS, SeaweedFS); the location is the upstream's key.
MAX_LOCATION_BYTES = 1024
# NAME_MAX: SeaweedFS and servers on a filesystem refuse longer file names.
MAX_SEGMENT_BYTES = 255
_ALWAYS_ESCAPED = frozenset("%#\\") | frozenset(chr(code) for code in range(0x20))


def _is_plain(segment: str) -> bool:
    return (
        segment not in ("", ".", "..")
        and "\\" not in segment
        and "\x00" not in segment
        and not segment.startswith(ESCAPE_MARK)
        and len(segment.encode("utf-8")) <= MAX_SEGMENT_BYTES
    )


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _escape(segment: str) -> str:
    if _is_plain(segment):
        return segment
    escaped = ESCAPE_MARK + "".join(f"%{ord(char):02X}" if char in _ALWAYS_ESCAPED else char for char in segment)
    if len(escaped.encode("utf-8")) <= MAX_SEGMENT_BYTES:
        return escaped
    return HASH_MARK + _digest(segment)


def upstream_location(bucket: str, key: str) -> str:
    """The upstream key of object ``key`` of ``bucket``: ``<bucket>/<key>``, escaped where needed."""
    location = bucket + "/" + "/".join(_escape(segment) for segment in key.split("/"))
    if len(location.encode("utf-8")) <= MAX_LOCATION_BYTES:
        return location
    return f"{bucket}/{KEY_HASH_MARK}{_digest(key)}"
