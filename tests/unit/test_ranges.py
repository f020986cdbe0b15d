"""Tests for s3orchestrator.s3.ranges: Range header parsing with S3 semantics."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from s3orchestrator.errors import S3Error
from s3orchestrator.s3.ranges import content_range, parse_range

SATISFIABLE = [
    ("bytes=0-0", 10, (0, 0)),
    ("bytes=0-9", 10, (0, 9)),
    ("bytes=2-5", 10, (2, 5)),
    ("bytes=9-9", 10, (9, 9)),
    ("bytes=5-100", 10, (5, 9)),  # last clipped to size - 1
    ("bytes=5-", 10, (5, 9)),
    ("bytes=0-", 10, (0, 9)),
    ("bytes=-3", 10, (7, 9)),
    ("bytes=-10", 10, (0, 9)),
    ("bytes=-11", 10, (0, 9)),  # suffix longer than the object: whole object as a range
    ("bytes=-1", 1, (0, 0)),
    ("BYTES=1-2", 10, (1, 2)),
    ("bytes = 1 - 2", 10, (1, 2)),
    (" bytes=1-2 ", 10, (1, 2)),
    ("bytes=0001-0002", 10, (1, 2)),
    ("bytes=3-" + "9" * 5000, 10, (3, 9)),
    ("bytes=-" + "9" * 5000, 10, (0, 9)),
]


@pytest.mark.parametrize(("header", "size", "expected"), SATISFIABLE)
def test_satisfiable_ranges(header: str, size: int, expected: tuple[int, int]) -> None:
    assert parse_range(header, size) == expected


IGNORED = [
    None,
    "",
    "bytes",
    "bytes=",
    "bytes=-",
    "bytes=a-b",
    "bytes=1-a",
    "bytes=5-2",  # last before first: invalid, not unsatisfiable
    "bytes=0-1,3-4",  # several ranges: S3 returns the whole object
    "bytes=0-1,",
    "bytes=-1,-2",
    "items=0-1",
    "0-1",
    "bytes=+1-2",
    "bytes=1.5-2",
    "bytes=\u0661-2",  # Arabic-Indic digit one: not an ASCII digit
]


@pytest.mark.parametrize("header", IGNORED)
def test_invalid_or_multiple_ranges_mean_whole_object(header: str | None) -> None:
    assert parse_range(header, 10) is None


UNSATISFIABLE = [
    ("bytes=10-", 10),
    ("bytes=10-20", 10),
    ("bytes=11-12", 10),
    ("bytes=-0", 10),
    ("bytes=0-0", 0),  # any range on an empty object
    ("bytes=0-", 0),
    ("bytes=-1", 0),
    ("bytes=-0", 0),
    ("bytes=" + "9" * 5000 + "-", 10),
]


@pytest.mark.parametrize(("header", "size"), UNSATISFIABLE)
def test_unsatisfiable_ranges_raise_invalid_range(header: str, size: int) -> None:
    with pytest.raises(S3Error) as info:
        parse_range(header, size)
    error = info.value
    assert error.code == "InvalidRange"
    assert error.status == 416
    assert error.headers == {"Content-Range": f"bytes */{size}"}
    assert error.extra == {"RangeRequested": header, "ActualObjectSize": str(size)}


def test_content_range() -> None:
    assert content_range(0, 9, 10) == "bytes 0-9/10"
    assert content_range(7, 9, 5368709120) == "bytes 7-9/5368709120"


def reference(header: str, size: int) -> tuple[int, int] | None | str:
    """A brute-force model of S3 Range semantics; "416" for unsatisfiable."""
    m = re.fullmatch(r"bytes=(\d*)-(\d*)", header)
    if m is None or (m.group(1) == "" and m.group(2) == ""):
        return None
    first_text, last_text = m.groups()
    if first_text == "":
        n = int(last_text)
        wanted = list(range(size))[-n:] if n else []
    else:
        first = int(first_text)
        last = int(last_text) if last_text else size - 1
        if last_text and last < first:
            return None
        wanted = [i for i in range(size) if first <= i <= last]
    if not wanted:
        return "416"
    return wanted[0], wanted[-1]


numbers = st.one_of(st.just(""), st.integers(0, 40).map(str))
headers = st.one_of(
    st.builds(lambda a, b: f"bytes={a}-{b}", numbers, numbers),
    st.text(alphabet="bytes=-0123456789,", max_size=12),
)


@given(headers, st.integers(0, 30))
def test_matches_brute_force_reference(header: str, size: int) -> None:
    expected = reference(header, size)
    try:
        result: tuple[int, int] | None | str = parse_range(header, size)
    except S3Error as e:
        assert e.code == "InvalidRange"
        result = "416"
    assert result == expected


@given(st.integers(0, 100), st.integers(0, 100), st.integers(1, 100))
def test_returned_range_is_within_object(first: int, last: int, size: int) -> None:
    try:
        result = parse_range(f"bytes={first}-{last}", size)
    except S3Error:
        assert first >= size
        return
    if result is not None:
        assert 0 <= result[0] <= result[1] < size
