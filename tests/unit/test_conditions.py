"""Tests for s3orchestrator.s3.conditions: conditional GET/HEAD and CopyObject source conditions."""

from __future__ import annotations

from email.utils import formatdate

import pytest

from s3orchestrator.errors import S3Error
from s3orchestrator.s3.conditions import check_preconditions

ETAG = "9bb58f26192e4ba00f01e2e7b136bbd8"
OTHER = "0123456789abcdef0123456789abcdef"
MODIFIED = 1_700_000_000.75  # sub-second part is not sent to clients
BEFORE = formatdate(1_699_999_999, usegmt=True)
SAME = formatdate(1_700_000_000, usegmt=True)
AFTER = formatdate(1_700_000_001, usegmt=True)


def outcome(headers: dict[str, str], etag: str = ETAG, last_modified: float = MODIFIED) -> str:
    """'200', '304' or '412 <Condition>' for a conditional GET."""
    try:
        check_preconditions(headers, etag, last_modified)
    except S3Error as e:
        if e.code == "PreconditionFailed":
            assert e.status == 412
            return f"412 {e.extra['Condition']}"
        assert e.code == "NotModified"
        assert e.status == 304
        return "304"
    return "200"


def test_no_conditions() -> None:
    assert outcome({}) == "200"


def test_unrelated_headers_ignored() -> None:
    assert outcome({"range": "bytes=0-1", "if-range": '"x"'}) == "200"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (f'"{ETAG}"', "200"),
        (ETAG, "200"),  # unquoted, as boto3 users often pass it
        ("*", "200"),
        (f'"{OTHER}", "{ETAG}"', "200"),
        (f'"{OTHER}","{ETAG}"', "200"),
        (f'  "{ETAG}"  ', "200"),
        (f'"{OTHER}"', "412 If-Match"),
        (f'"{ETAG[:-1]}"', "412 If-Match"),
        (f'"{OTHER}", "{OTHER[::-1]}"', "412 If-Match"),
        (f'W/"{ETAG}"', "412 If-Match"),  # strong comparison never matches a weak tag
        (f'"{ETAG.upper()}"', "412 If-Match"),
    ],
)
def test_if_match(value: str, expected: str) -> None:
    assert outcome({"if-match": value}) == expected


def test_if_match_multipart_etag() -> None:
    assert outcome({"if-match": '"abc-3"'}, etag="abc-3") == "200"
    assert outcome({"if-match": '"abc"'}, etag="abc-3") == "412 If-Match"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (f'"{ETAG}"', "304"),
        (ETAG, "304"),
        ("*", "304"),
        (f'W/"{ETAG}"', "304"),  # weak comparison
        (f'"{OTHER}", W/"{ETAG}"', "304"),
        (f'"{OTHER}"', "200"),
        (f'"{OTHER}", "{OTHER[::-1]}"', "200"),
    ],
)
def test_if_none_match(value: str, expected: str) -> None:
    assert outcome({"if-none-match": value}) == expected


@pytest.mark.parametrize(
    ("date", "expected"),
    [(BEFORE, "412 If-Unmodified-Since"), (SAME, "200"), (AFTER, "200")],
)
def test_if_unmodified_since(date: str, expected: str) -> None:
    assert outcome({"if-unmodified-since": date}) == expected


def test_if_unmodified_since_compares_whole_seconds() -> None:
    assert outcome({"if-unmodified-since": SAME}, last_modified=1_700_000_000.999) == "200"
    assert outcome({"if-unmodified-since": SAME}, last_modified=1_700_000_001.0) == (
        "412 If-Unmodified-Since"
    )


@pytest.mark.parametrize(
    ("date", "expected"),
    [(BEFORE, "200"), (SAME, "304"), (AFTER, "304")],
)
def test_if_modified_since(date: str, expected: str) -> None:
    assert outcome({"if-modified-since": date}) == expected


def test_if_modified_since_compares_whole_seconds() -> None:
    # A client echoing Last-Modified back must get 304 despite the sub-second part.
    assert outcome({"if-modified-since": SAME}, last_modified=1_700_000_000.999) == "304"


@pytest.mark.parametrize(
    "date",
    [
        "not a date",
        "",
        "Mon, 99 Foo 2023 25:61:61 GMT",
        "Tue, 14 Nov 2023",
        "9999999999999999999",
    ],
)
def test_invalid_dates_are_ignored(date: str) -> None:
    assert outcome({"if-modified-since": date}) == "200"
    assert outcome({"if-unmodified-since": date}) == "200"


def test_other_http_date_formats() -> None:
    # RFC 850 and asctime forms are still valid HTTP-dates.
    assert outcome({"if-modified-since": "Tuesday, 14-Nov-23 22:13:21 GMT"}) == "304"
    assert outcome({"if-modified-since": "Tue Nov 14 22:13:21 2023"}) == "304"
    assert outcome({"if-modified-since": "Tue, 14 Nov 2023 22:13:19 GMT"}) == "200"
    assert outcome({"if-modified-since": "Tue, 14 Nov 2023 22:13:20 -0000"}) == "304"


def test_blank_condition_headers_are_ignored() -> None:
    assert outcome({"if-match": "", "if-none-match": "  "}) == "200"


# -- precedence ---------------------------------------------------------------------------


def test_if_match_true_overrides_failing_if_unmodified_since() -> None:
    assert outcome({"if-match": f'"{ETAG}"', "if-unmodified-since": BEFORE}) == "200"


def test_if_match_false_with_passing_if_unmodified_since() -> None:
    assert outcome({"if-match": f'"{OTHER}"', "if-unmodified-since": AFTER}) == "412 If-Match"


def test_invalid_if_unmodified_since_with_failing_if_match() -> None:
    assert outcome({"if-match": f'"{OTHER}"', "if-unmodified-since": "junk"}) == "412 If-Match"


def test_if_none_match_false_overrides_if_modified_since() -> None:
    # If-None-Match does not match (object changed) -> If-Modified-Since is ignored -> 200.
    assert outcome({"if-none-match": f'"{OTHER}"', "if-modified-since": AFTER}) == "200"


def test_if_none_match_true_with_modified_since() -> None:
    assert outcome({"if-none-match": f'"{ETAG}"', "if-modified-since": BEFORE}) == "304"


def test_412_takes_precedence_over_304() -> None:
    assert outcome({"if-match": f'"{OTHER}"', "if-none-match": f'"{ETAG}"'}) == "412 If-Match"
    assert outcome({"if-unmodified-since": BEFORE, "if-modified-since": AFTER}) == (
        "412 If-Unmodified-Since"
    )


def test_if_match_true_and_if_none_match_true() -> None:
    assert outcome({"if-match": f'"{ETAG}"', "if-none-match": f'"{ETAG}"'}) == "304"


def test_if_match_true_and_not_modified_since() -> None:
    assert outcome({"if-match": f'"{ETAG}"', "if-modified-since": AFTER}) == "304"


def test_if_unmodified_since_true_and_if_none_match_true() -> None:
    assert outcome({"if-unmodified-since": AFTER, "if-none-match": "*"}) == "304"


def test_not_modified_carries_validators() -> None:
    with pytest.raises(S3Error) as info:
        check_preconditions({"if-none-match": "*"}, ETAG, MODIFIED)
    assert info.value.headers == {"ETag": f'"{ETAG}"', "Last-Modified": SAME}


# -- CopyObject source conditions -------------------------------------------------------


def copy_outcome(headers: dict[str, str]) -> str:
    try:
        check_preconditions(headers, ETAG, MODIFIED, copy_source=True)
    except S3Error as e:
        assert e.code == "PreconditionFailed"
        return f"412 {e.extra['Condition']}"
    return "200"


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, "200"),
        ({"x-amz-copy-source-if-match": f'"{ETAG}"'}, "200"),
        ({"x-amz-copy-source-if-match": f'"{OTHER}"'}, "412 x-amz-copy-source-If-Match"),
        ({"x-amz-copy-source-if-none-match": f'"{ETAG}"'}, "412 x-amz-copy-source-If-None-Match"),
        ({"x-amz-copy-source-if-none-match": f'"{OTHER}"'}, "200"),
        ({"x-amz-copy-source-if-modified-since": AFTER}, "412 x-amz-copy-source-If-Modified-Since"),
        ({"x-amz-copy-source-if-modified-since": BEFORE}, "200"),
        (
            {"x-amz-copy-source-if-unmodified-since": BEFORE},
            "412 x-amz-copy-source-If-Unmodified-Since",
        ),
        (
            {"x-amz-copy-source-if-match": f'"{ETAG}"',
             "x-amz-copy-source-if-unmodified-since": BEFORE},
            "200",
        ),
        (
            {"x-amz-copy-source-if-none-match": f'"{OTHER}"',
             "x-amz-copy-source-if-modified-since": AFTER},
            "200",
        ),
        # The plain conditions apply to the copy's destination request, not its source.
        ({"if-match": f'"{OTHER}"', "if-none-match": f'"{ETAG}"'}, "200"),
    ],
)
def test_copy_source_conditions(headers: dict[str, str], expected: str) -> None:
    assert copy_outcome(headers) == expected


def test_plain_conditions_ignore_copy_source_headers() -> None:
    assert outcome({"x-amz-copy-source-if-match": f'"{OTHER}"'}) == "200"
