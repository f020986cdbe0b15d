"""Which request headers S3 stores with an object, and how they come back on GET/HEAD."""

from __future__ import annotations

import base64
import functools
import time
import unicodedata
from email.errors import HeaderParseError
from email.header import decode_header
from typing import Mapping, Sequence

from s3orchestrator.errors import S3Error
from s3orchestrator.metadata.records import ObjectRecord
from s3orchestrator.s3.call import first_header

DEFAULT_CONTENT_TYPE = "binary/octet-stream"
#: The additional checksum algorithms S3 knows (x-amz-checksum-algorithm and
#: x-amz-sdk-checksum-algorithm values), upper-case.
CHECKSUM_ALGORITHMS = frozenset({"CRC32", "CRC32C", "CRC64NVME", "SHA1", "SHA256"})
STORED_HEADERS = (
    "cache-control",
    "content-disposition",
    "content-encoding",
    "content-language",
    "expires",
)
USER_METADATA_PREFIX = "x-amz-meta-"
# S3 limits the user-defined metadata of an object to 2 KB (names plus values).
MAX_USER_METADATA_BYTES = 2048
# GET may override these response headers with response-<name> query parameters.
RESPONSE_OVERRIDES = {
    "response-cache-control": "Cache-Control",
    "response-content-disposition": "Content-Disposition",
    "response-content-encoding": "Content-Encoding",
    "response-content-language": "Content-Language",
    "response-content-type": "Content-Type",
    "response-expires": "Expires",
}
_DISPLAY_NAMES = {
    "cache-control": "Cache-Control",
    "content-disposition": "Content-Disposition",
    "content-encoding": "Content-Encoding",
    "content-language": "Content-Language",
    "expires": "Expires",
}


def content_type(headers: Mapping[str, Sequence[str]]) -> str:
    """The Content-Type to store: the client's, or S3's default."""
    return first_header(headers, "content-type") or DEFAULT_CONTENT_TYPE


def stored_headers(headers: Mapping[str, Sequence[str]]) -> dict[str, str]:
    """The standard headers S3 keeps with an object, from a PUT's request headers."""
    kept = {}
    for name in STORED_HEADERS:
        value = first_header(headers, name)
        if name == "content-encoding" and value is not None:
            # aws-chunked is the upload's transfer framing, not the object's encoding.
            codings = [c.strip() for c in value.split(",") if c.strip().lower() != "aws-chunked"]
            value = ", ".join(codings) or None
        if value is not None:
            kept[name] = value
    return kept


def user_metadata(headers: Mapping[str, Sequence[str]]) -> dict[str, str]:
    """x-amz-meta-* values by lower-case suffix, as the text the client meant (see
    ``metadata_value``); MetadataTooLarge past S3's 2 KB of UTF-8."""
    metadata = {
        name[len(USER_METADATA_PREFIX):]: metadata_value(",".join(values))
        for name, values in headers.items()
        if name.startswith(USER_METADATA_PREFIX)
    }
    size = sum(len(k.encode("utf-8")) + len(v.encode("utf-8", "surrogatepass")) for k, v in metadata.items())
    if size > MAX_USER_METADATA_BYTES:
        raise S3Error(
            "MetadataTooLarge",
            extra={"Size": str(size), "MaxSizeAllowed": str(MAX_USER_METADATA_BYTES)},
        )
    return metadata


def metadata_value(raw: str) -> str:
    """The text of an x-amz-meta-* header value as S3 stores it.

    ``raw`` holds the header's bytes one character each (latin-1, as the web layer
    reads headers). Clients send UTF-8 bytes (boto3 and the aws cli do), so bytes
    that are valid UTF-8 are read as UTF-8, other bytes as latin-1. Then, as S3
    documents, an RFC 2047 encoded-word (``=?UTF-8?B?...?=``) is decoded before it is
    stored.
    """
    try:
        value = raw.encode("latin-1").decode("utf-8")
    except UnicodeError:
        value = raw
    if value.startswith("=?") and value.rstrip().endswith("?="):
        value = _decode_encoded_words(value)
    return value


def _decode_encoded_words(value: str) -> str:
    try:
        pieces = decode_header(value)
        return "".join(
            piece.decode(charset or "ascii", "replace") if isinstance(piece, bytes) else piece
            for piece, charset in pieces
        )
    except (HeaderParseError, LookupError, ValueError):
        return value  # not an encoded-word after all: kept as sent


# Bytes an S3 metadata value may hold as they are: printable ASCII and tab.
_PLAIN_BYTES = frozenset(range(0x20, 0x7F)) | {0x09}
# In S3's Q encoding every printable byte stands for itself but "=", "?" and "_"
# (and space, which becomes "_").
_Q_MAP = [chr(byte) if byte in _PLAIN_BYTES and chr(byte) not in "=?_ " else f"={byte:02X}" for byte in range(256)]
_Q_MAP[ord(" ")] = "_"


def encode_metadata_value(value: str) -> str:
    """An x-amz-meta-* value as S3 answers it: as is when it is printable ASCII, else
    RFC 2047-encoded UTF-8 (S3 chooses Q, or B when the text holds control or
    unprintable characters), so that the header stays ASCII and any client can
    recover the text (email.header.decode_header in Python)."""
    data = value.encode("utf-8", "surrogatepass")
    if all(byte in _PLAIN_BYTES for byte in data):
        return value
    if "\ufffd" in value or any(unicodedata.category(char).startswith("C") for char in value):
        return "=?UTF-8?B?" + base64.b64encode(data).decode("ascii") + "?="
    return "=?UTF-8?Q?" + "".join(_Q_MAP[byte] for byte in data) + "?="


def check_checksum_algorithms(headers: Mapping[str, Sequence[str]]) -> str | None:
    """The upper-case ``x-amz-checksum-algorithm`` of the request, if any; InvalidRequest
    for an algorithm S3 does not know there or in ``x-amz-sdk-checksum-algorithm``."""
    sdk = first_header(headers, "x-amz-sdk-checksum-algorithm")
    if sdk is not None and sdk.strip().upper() not in CHECKSUM_ALGORITHMS:
        raise S3Error("InvalidRequest", "Value for x-amz-sdk-checksum-algorithm header is invalid.")
    algorithm = first_header(headers, "x-amz-checksum-algorithm")
    if algorithm is None:
        return None
    algorithm = algorithm.strip().upper()
    if algorithm not in CHECKSUM_ALGORITHMS:
        raise S3Error("InvalidRequest", "Checksum algorithm provided is unsupported. Please try again with "
                      "any of the valid types: [CRC32, CRC32C, CRC64NVME, SHA1, SHA256]")
    return algorithm


_WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def http_date(epoch_seconds: float) -> str:
    """An RFC 7231 date (Last-Modified) for an epoch time (what ``email.utils.formatdate``
    with ``usegmt`` gives, at a fraction of its cost: every GET and HEAD formats one)."""
    return _http_date(int(epoch_seconds // 1))


@functools.lru_cache(maxsize=1024)
def _http_date(epoch_seconds: int) -> str:
    t = time.gmtime(epoch_seconds)
    return (
        f"{_WEEKDAYS[t.tm_wday]}, {t.tm_mday:02d} {_MONTHS[t.tm_mon - 1]} {t.tm_year:04d}"
        f" {t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} GMT"
    )


def quoted_etag(etag: str) -> str:
    """The ETag header value of an unquoted stored ETag."""
    return f'"{etag}"'


def object_headers(record: ObjectRecord, query: Mapping[str, str]) -> list[tuple[str, str]]:
    """Headers describing ``record`` on GET/HEAD, with response-* overrides applied."""
    headers = {
        "Content-Type": record.content_type,
        "ETag": quoted_etag(record.etag),
        "Last-Modified": http_date(record.last_modified_ms / 1000),
        "Accept-Ranges": "bytes",
    }
    for name, value in record.headers.items():
        headers[_DISPLAY_NAMES.get(name, name)] = value
    for parameter, header in RESPONSE_OVERRIDES.items():
        if parameter in query:
            headers[header] = query[parameter]
    result = list(headers.items())
    result.extend(
        (USER_METADATA_PREFIX + name, encode_metadata_value(value)) for name, value in record.user_metadata.items()
    )
    return result
