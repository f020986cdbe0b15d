"""HTTP Range requests on GET, with the semantics S3 gives them."""

from __future__ import annotations

import re

from s3orchestrator.errors import S3Error

_SINGLE_RANGE = re.compile(r"\s*bytes\s*=\s*([0-9]*)\s*-\s*([0-9]*)\s*", re.ASCII | re.IGNORECASE)
# Python refuses int() on strings over 4300 digits; any number this long is past every size.
_MAX_DIGITS = 30
_HUGE = 10**_MAX_DIGITS


def _number(digits: str) -> int:
    digits = digits.lstrip("0") or "0"
    return _HUGE if len(digits) > _MAX_DIGITS else int(digits)


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The inclusive (first, last) byte range a Range header asks of a ``size``-byte object.

    None means "send the whole object": no header, or one S3 ignores (malformed, or
    several ranges). Raises S3Error InvalidRange (416) for a range the object cannot
    satisfy, including any range on an empty object.
    """
    if header is None:
        return None
    match = _SINGLE_RANGE.fullmatch(header)
    if match is None:
        return None
    first_digits, last_digits = match.groups()
    if first_digits:
        first = _number(first_digits)
        last = _number(last_digits) if last_digits else size - 1
        if last_digits and last < first:
            return None
        if first >= size:
            raise _unsatisfiable(header, size)
        return first, min(last, size - 1)
    if not last_digits:
        return None
    suffix = _number(last_digits)
    if suffix == 0 or size == 0:
        raise _unsatisfiable(header, size)
    return max(size - suffix, 0), size - 1


def content_range(first: int, last: int, size: int) -> str:
    """The Content-Range header value of a 206 response."""
    return f"bytes {first}-{last}/{size}"


def _unsatisfiable(header: str, size: int) -> S3Error:
    return S3Error(
        "InvalidRange",
        headers={"Content-Range": f"bytes */{size}"},
        extra={"RangeRequested": header, "ActualObjectSize": str(size)},
    )
