"""Tests for listing: the pure pagination/grouping core against a brute-force reference,
parameters, continuation tokens, the ListBucketResult documents and the operations."""

from __future__ import annotations

import bisect
from typing import Any, Callable, Mapping, Sequence
from urllib.parse import unquote, unquote_plus
from xml.etree import ElementTree

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.defer import Deferred, ensureDeferred, succeed

from s3orchestrator.errors import S3Error
from s3orchestrator.metadata.interface import prefix_upper_bound
from s3orchestrator.metadata.records import ObjectRecord
from s3orchestrator.s3 import list_xml
from s3orchestrator.s3.api import operation_name
from s3orchestrator.s3.call import S3Call, S3Response
from s3orchestrator.s3.listing import (
    ContinuationTokens,
    ListingOperations,
    ListQuery,
    Page,
    list_page,
    parse_encoding_type,
    parse_list_query,
    parse_max_keys,
)
from tests.unit.fakes import Outcome, auth_result

NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"
SECRET = b"listing-test-secret-0123456789"


def record(key: str, bucket: str = "bkt", size: int = 3, last_modified_ms: int = 1_795_428_000_123) -> ObjectRecord:
    return ObjectRecord(
        bucket=bucket,
        key=key,
        store="a",
        location=f"{bucket}/{key}",
        size=size,
        etag="0123456789abcdef0123456789abcdef",
        content_type="binary/octet-stream",
        last_modified_ms=last_modified_ms,
    )


class SortedKeys:
    """A fetch over an in-memory key set, as the metadata store's scan_objects provides it,
    counting the rows it hands out."""

    def __init__(self, keys: Sequence[str], prefix: str) -> None:
        self.keys = sorted(k for k in set(keys) if k.startswith(prefix))
        self.records = {k: record(k) for k in self.keys}
        self.prefix = prefix
        self.rows_read = 0
        self.queries = 0

    def fetch(self, start: str, inclusive: bool, limit: int) -> list[ObjectRecord]:
        self.queries += 1
        position = (bisect.bisect_left if inclusive else bisect.bisect_right)(self.keys, start)
        rows = [self.records[k] for k in self.keys[position : position + limit]]
        self.rows_read += len(rows)
        return rows


def reference_items(keys: Sequence[str], prefix: str, delimiter: str, after: str) -> list[tuple[str, bool]]:
    """Every item of the listing after ``after``: (value, is a common prefix), brute force."""
    items: set[tuple[str, bool]] = set()
    for key in keys:
        if not key.startswith(prefix):
            continue
        rest = key[len(prefix):]
        if delimiter and delimiter in rest:
            items.add((prefix + rest[: rest.index(delimiter) + len(delimiter)], True))
        else:
            items.add((key, False))
    return sorted(item for item in items if item[0] > after)


def page_items(page: Page[ObjectRecord]) -> list[tuple[str, bool]]:
    return sorted([(r.key, False) for r in page.contents] + [(p, True) for p in page.common_prefixes])


def paginate(keys: Sequence[str], prefix: str, delimiter: str, after: str, max_keys: int) -> list[Page[ObjectRecord]]:
    source = SortedKeys(keys, prefix)
    pages = []
    while True:
        page = list_page(source.fetch, prefix, delimiter, after, max_keys)
        pages.append(page)
        if not page.is_truncated:
            return pages
        assert page.last is not None and page.last > after
        after = page.last
        assert len(pages) <= len(keys) + 1, "pagination does not advance"


# Pieces chosen to collide: delimiters inside keys, multi-character delimiters, and
# code points whose UTF-8 order matters ('\uffff' < '\U00010000', U+10FFFF last).
PIECES = ["a", "b", "/", "-", "0", "a/", "//", "ab", " ", "+", "\uffff", "\U00010000", "\U0010ffff", "\ud7ff", "\ue000"]
keys_strategy = st.lists(st.lists(st.sampled_from(PIECES), min_size=1, max_size=5).map("".join), max_size=40)
short_text = st.lists(st.sampled_from(PIECES), max_size=3).map("".join)
delimiters = st.sampled_from(["", "/", "//", "a", "a/", "-", "\U0010ffff", "/a", "ab"])


@settings(max_examples=400, deadline=None)
@given(keys=keys_strategy, prefix=short_text, delimiter=delimiters, after=short_text, max_keys=st.integers(1, 6))
def test_pages_concatenate_to_the_reference_listing(keys, prefix, delimiter, after, max_keys) -> None:
    pages = paginate(keys, prefix, delimiter, after, max_keys)
    listed = [item for page in pages for item in page_items(page)]
    assert listed == reference_items(keys, prefix, delimiter, after)


@settings(max_examples=300, deadline=None)
@given(keys=keys_strategy, prefix=short_text, delimiter=delimiters, after=short_text, max_keys=st.integers(1, 6))
def test_one_page_is_the_reference_slice(keys, prefix, delimiter, after, max_keys) -> None:
    expected = reference_items(keys, prefix, delimiter, after)
    page = list_page(SortedKeys(keys, prefix).fetch, prefix, delimiter, after, max_keys)
    assert page_items(page) == expected[:max_keys]
    assert page.is_truncated == (len(expected) > max_keys)
    assert page.key_count == min(len(expected), max_keys)
    assert page.last == (expected[:max_keys][-1][0] if expected else None)


@settings(max_examples=200, deadline=None)
@given(keys=keys_strategy, delimiter=delimiters)
def test_delimiter_equal_to_prefix(keys, delimiter) -> None:
    prefix = delimiter
    listed = [item for page in paginate(keys, prefix, delimiter, "", 2) for item in page_items(page)]
    assert listed == reference_items(keys, prefix, delimiter, "")


def test_delimited_listing_seeks_past_each_common_prefix() -> None:
    keys = [f"dir{d:03d}/file{f:03d}" for d in range(200) for f in range(200)]
    source = SortedKeys(keys, "")
    page = list_page(source.fetch, "", "/", "", 100)
    assert page.common_prefixes == tuple(f"dir{d:03d}/" for d in range(100))
    assert page.is_truncated
    # 101 common prefixes (one to tell the page is truncated): a few rows each, not 200.
    assert source.rows_read < 4 * 101
    assert source.queries < 3 * 101


def test_flat_listing_is_one_query() -> None:
    source = SortedKeys([f"k{i:05d}" for i in range(5000)], "")
    page = list_page(source.fetch, "", "", "", 1000)
    assert len(page.contents) == 1000 and page.is_truncated
    assert source.queries == 1 and source.rows_read == 1001


def test_delimiter_over_flat_keys_grows_its_batches() -> None:
    source = SortedKeys([f"k{i:05d}" for i in range(5000)], "")
    page = list_page(source.fetch, "", "/", "", 1000)
    assert len(page.contents) == 1000 and page.is_truncated
    assert source.queries <= 8 and source.rows_read == 1001


def test_max_keys_zero_is_an_empty_untruncated_page() -> None:
    source = SortedKeys(["a", "b"], "")
    assert list_page(source.fetch, "", "", "", 0) == Page((), (), False, None)
    assert source.queries == 0


def test_marker_inside_a_common_prefix_skips_the_prefix() -> None:
    keys = ["photos/a", "photos/b", "photos/c", "videos/x", "z"]
    page = list_page(SortedKeys(keys, "").fetch, "", "/", "photos/a", 10)
    assert page.common_prefixes == ("videos/",)
    assert [r.key for r in page.contents] == ["z"]


def test_common_prefix_as_marker_resumes_after_it() -> None:
    keys = ["a/1", "a/2", "b/1", "c"]
    first = list_page(SortedKeys(keys, "").fetch, "", "/", "", 1)
    assert first.common_prefixes == ("a/",) and first.is_truncated and first.last == "a/"
    second = list_page(SortedKeys(keys, "").fetch, "", "/", first.last, 10)
    assert second.common_prefixes == ("b/",)
    assert [r.key for r in second.contents] == ["c"]


def test_multi_character_delimiter() -> None:
    keys = ["a--b--c", "a--d", "a-e", "b"]
    page = list_page(SortedKeys(keys, "").fetch, "", "--", "", 10)
    assert page.common_prefixes == ("a--",)
    assert [r.key for r in page.contents] == ["a-e", "b"]


def test_prefix_and_delimiter_group_below_the_prefix() -> None:
    keys = ["logs/2026/01/a", "logs/2026/02/b", "logs/2025/x", "logs/top", "other"]
    page = list_page(SortedKeys(keys, "logs/").fetch, "logs/", "/", "", 10)
    assert page.common_prefixes == ("logs/2025/", "logs/2026/")
    assert [r.key for r in page.contents] == ["logs/top"]


def test_keys_are_listed_in_utf8_byte_order() -> None:
    keys = ["\U00010000", "\uffff", "a0", "a-", "a/", "a"]
    page = list_page(SortedKeys(keys, "").fetch, "", "", "", 10)
    listed = [r.key for r in page.contents]
    assert listed == sorted(keys, key=lambda k: k.encode("utf-8"))
    assert listed == ["a", "a-", "a/", "a0", "\uffff", "\U00010000"]


def test_common_prefix_ending_in_the_last_code_point_ends_the_listing() -> None:
    keys = ["a\U0010ffffx", "a\U0010ffffy"]
    page = list_page(SortedKeys(keys, "").fetch, "", "\U0010ffff", "", 10)
    assert page.common_prefixes == ("a\U0010ffff",)
    assert not page.is_truncated


# -- parameters ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, expected", [(None, 1000), ("0", 0), ("7", 7), ("1000", 1000), ("1001", 1000), ("2147483647", 1000)]
)
def test_max_keys(value: str | None, expected: int) -> None:
    assert parse_max_keys(value) == expected


@pytest.mark.parametrize("value", ["", "abc", "1.5", "-1", "+5", " 5", "2147483648", "１"])
def test_invalid_max_keys_is_invalid_argument(value: str) -> None:
    with pytest.raises(S3Error) as raised:
        parse_max_keys(value)
    assert raised.value.code == "InvalidArgument" and raised.value.status == 400


def test_encoding_type() -> None:
    assert parse_encoding_type(None) is False
    assert parse_encoding_type("url") is True
    for bad in ("", "URL-ish", "base64"):
        with pytest.raises(S3Error) as raised:
            parse_encoding_type(bad)
        assert raised.value.code == "InvalidArgument"
        assert raised.value.extra["ArgumentName"] == "encoding-type"


def test_v1_query() -> None:
    query = parse_list_query({"prefix": "p/", "delimiter": "/", "marker": "p/m", "max-keys": "5"}, False, "bkt",
                             ContinuationTokens(SECRET))
    assert query == ListQuery("p/", "/", 5, False, after="p/m", marker="p/m", fetch_owner=True)


def test_v2_query_prefers_the_continuation_token_over_start_after() -> None:
    tokens = ContinuationTokens(SECRET)
    query = parse_list_query(
        {"start-after": "b", "continuation-token": tokens.issue("bkt", "k"), "fetch-owner": "true",
         "encoding-type": "url"},
        True, "bkt", tokens,
    )
    assert query.after == "k" and query.start_after == "b" and query.fetch_owner and query.url_encoding


def test_v2_query_takes_an_empty_continuation_token_for_none() -> None:
    query = parse_list_query({"continuation-token": "", "start-after": "b"}, True, "bkt", ContinuationTokens(SECRET))
    assert query.after == "b" and query.continuation_token is None


def test_v2_query_starts_after_start_after() -> None:
    query = parse_list_query({"start-after": "b"}, True, "bkt", ContinuationTokens(SECRET))
    assert query.after == "b" and not query.fetch_owner and query.max_keys == 1000


# -- continuation tokens ------------------------------------------------------------


@given(
    bucket=st.text(min_size=1, max_size=20),
    last=st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=50),
)
def test_token_round_trips(bucket: str, last: str) -> None:
    tokens = ContinuationTokens(SECRET)
    token = tokens.issue(bucket, last)
    assert token.isascii() and "=" not in token and "+" not in token and "/" not in token
    assert tokens.redeem(bucket, token) == last


def _assert_bad_token(tokens: ContinuationTokens, bucket: str, token: str) -> None:
    with pytest.raises(S3Error) as raised:
        tokens.redeem(bucket, token)
    assert raised.value.code == "InvalidArgument"
    assert raised.value.message == "The continuation token provided is incorrect"
    assert raised.value.extra == {"ArgumentName": "continuation-token"}


def test_token_of_another_bucket_is_refused() -> None:
    tokens = ContinuationTokens(SECRET)
    _assert_bad_token(tokens, "bkt", tokens.issue("other", "k"))


def test_token_of_another_daemon_is_refused() -> None:
    other_token = ContinuationTokens(b"another-secret-0123456789").issue("bkt", "k")
    _assert_bad_token(ContinuationTokens(SECRET), "bkt", other_token)


def test_forged_token_is_refused() -> None:
    tokens = ContinuationTokens(SECRET)
    payload, _, mac = tokens.issue("bkt", "a").partition(".")
    forged_payload = ContinuationTokens(b"x" * 32).issue("bkt", "zzz").partition(".")[0]
    _assert_bad_token(tokens, "bkt", forged_payload + "." + mac)
    flipped = ("A" if mac[0] != "A" else "B") + mac[1:]
    _assert_bad_token(tokens, "bkt", payload + "." + flipped)


@pytest.mark.parametrize("token", ["", ".", "garbage", "not base64!.x", "YQ", "YQ.", "é.é", "a.b.c"])
def test_garbled_token_is_refused(token: str) -> None:
    _assert_bad_token(ContinuationTokens(SECRET), "bkt", token)


def test_short_secret_is_rejected() -> None:
    with pytest.raises(ValueError):
        ContinuationTokens(b"short")


# -- documents ----------------------------------------------------------------------


def parse(body: bytes) -> ElementTree.Element:
    assert body.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n')
    root = ElementTree.fromstring(body)
    assert root.tag == NS + "ListBucketResult"
    return root


def find(root: ElementTree.Element, path: str) -> str | None:
    element = root.find(path.replace("{ns}", NS))
    return None if element is None else (element.text or "")


def test_last_modified_shows_milliseconds() -> None:
    assert list_xml.last_modified(1_795_428_000_123) == "2026-11-23T10:00:00.123Z"
    assert list_xml.last_modified(1_795_428_000_000) == "2026-11-23T10:00:00.000Z"


def test_v2_document_elements() -> None:
    query = ListQuery("", "/", 2, False, after="", start_after="a")
    body = list_xml.list_objects_v2("bkt", query, [record("b")], ["c/"], True, "TOKEN", None)
    assert b"<ETag>&quot;0123456789abcdef0123456789abcdef&quot;</ETag>" in body
    root = parse(body)
    assert find(root, "{ns}Name") == "bkt"
    assert find(root, "{ns}Prefix") == ""
    assert find(root, "{ns}StartAfter") == "a"
    assert find(root, "{ns}NextContinuationToken") == "TOKEN"
    assert find(root, "{ns}ContinuationToken") is None
    assert find(root, "{ns}KeyCount") == "2"
    assert find(root, "{ns}MaxKeys") == "2"
    assert find(root, "{ns}Delimiter") == "/"
    assert find(root, "{ns}IsTruncated") == "true"
    assert find(root, "{ns}EncodingType") is None
    assert find(root, "{ns}Contents/{ns}Key") == "b"
    assert find(root, "{ns}Contents/{ns}LastModified") == "2026-11-23T10:00:00.123Z"
    assert find(root, "{ns}Contents/{ns}ETag") == '"0123456789abcdef0123456789abcdef"'
    assert find(root, "{ns}Contents/{ns}Size") == "3"
    assert find(root, "{ns}Contents/{ns}StorageClass") == "STANDARD"
    assert find(root, "{ns}Contents/{ns}Owner") is None
    assert find(root, "{ns}CommonPrefixes/{ns}Prefix") == "c/"


def test_v2_document_with_owner_and_without_delimiter() -> None:
    query = ListQuery("p", "", 1000, False, after="", fetch_owner=True)
    root = parse(list_xml.list_objects_v2("bkt", query, [record("p1")], [], False, None, list_xml.bucket_owner("bkt")))
    assert find(root, "{ns}Contents/{ns}Owner/{ns}ID") == "bkt"
    assert find(root, "{ns}Contents/{ns}Owner/{ns}DisplayName") == "bkt"
    assert find(root, "{ns}Delimiter") is None
    assert find(root, "{ns}NextContinuationToken") is None
    assert find(root, "{ns}StartAfter") is None
    assert find(root, "{ns}IsTruncated") == "false"


def test_v1_document_elements() -> None:
    query = ListQuery("", "/", 1, False, after="", marker=None, fetch_owner=True)
    root = parse(list_xml.list_objects_v1("bkt", query, [], ["a/"], True, "a/", list_xml.bucket_owner("bkt")))
    assert find(root, "{ns}Marker") == ""
    assert find(root, "{ns}NextMarker") == "a/"
    assert find(root, "{ns}KeyCount") is None
    assert find(root, "{ns}CommonPrefixes/{ns}Prefix") == "a/"


AWKWARD = ["a b", "a+b", "100%", "x&y", "한글/x", "new\nline", "cr\rhere", "tab\tq", "<tag>", "quote\"'"]


@pytest.mark.parametrize("key", AWKWARD)
def test_keys_round_trip_through_xml(key: str) -> None:
    query = ListQuery(key, "", 1000, False, after="")
    root = parse(list_xml.list_objects_v2("bkt", query, [record(key)], [], False, None, None))
    assert find(root, "{ns}Contents/{ns}Key") == key
    assert find(root, "{ns}Prefix") == key


@pytest.mark.parametrize("key", AWKWARD + ["ctl\x01", "\ufffe"])
def test_url_encoding_round_trips_with_unquote_plus(key: str) -> None:
    # botocore decodes encoding-type=url responses with unquote_plus.
    query = ListQuery(key, key, 1000, True, after="", marker=key, fetch_owner=True)
    owner = list_xml.bucket_owner("bkt")
    root = parse(list_xml.list_objects_v1("bkt", query, [record(key)], [key + key], True, key, owner))
    for path in ("{ns}Contents/{ns}Key", "{ns}Prefix", "{ns}Delimiter", "{ns}Marker", "{ns}NextMarker"):
        assert unquote_plus(find(root, path)) == key, path
    assert unquote_plus(find(root, "{ns}CommonPrefixes/{ns}Prefix")) == key + key
    assert find(root, "{ns}EncodingType") == "url"


def test_url_encoding_percent_encodes_all_but_unreserved_and_slash() -> None:
    # As s3-tests' test_bucket_list_encoding_basic expects of S3: a space is %20, not +.
    assert list_xml.url_encode("a b+c/100%&d") == "a%20b%2Bc/100%25%26d"
    assert list_xml.url_encode("quux ab/") == "quux%20ab/"
    assert list_xml.url_encode("한글/x.txt") == "%ED%95%9C%EA%B8%80/x.txt"
    assert list_xml.url_encode("test_file(3).png") == "test_file%283%29.png"
    assert list_xml.url_encode("Az09-._~*'!") == "Az09-._~%2A%27%21"


@pytest.mark.parametrize("key", AWKWARD + ["ctl\x01", "a b+c"])
def test_url_encoding_round_trips_with_plain_unquote(key: str) -> None:
    # Clients that percent-decode without the form rule (space as +) get the key back too.
    query = ListQuery(key, "/", 1000, True, after="", marker=key, fetch_owner=True)
    owner = list_xml.bucket_owner("bkt")
    root = parse(list_xml.list_objects_v1("bkt", query, [record(key)], [key + "/"], True, key, owner))
    for path in ("{ns}Contents/{ns}Key", "{ns}Prefix", "{ns}Marker", "{ns}NextMarker"):
        assert unquote(find(root, path)) == key, path
    assert unquote(find(root, "{ns}CommonPrefixes/{ns}Prefix")) == key + "/"


def test_v2_url_encoding_covers_start_after_not_tokens() -> None:
    query = ListQuery("p q", "", 1000, True, after="", start_after="s t", continuation_token="T+k")
    root = parse(list_xml.list_objects_v2("bkt", query, [], [], True, "N+k", None))
    assert find(root, "{ns}StartAfter") == "s%20t"
    assert find(root, "{ns}Prefix") == "p%20q"
    assert find(root, "{ns}ContinuationToken") == "T+k"
    assert find(root, "{ns}NextContinuationToken") == "N+k"


# -- the operations -----------------------------------------------------------------


class FakeMetadata:
    """scan_objects over in-memory records of several buckets."""

    def __init__(self, records: Sequence[ObjectRecord]) -> None:
        self.records = list(records)
        self.scans = 0

    def scan_objects(self, bucket: str, prefix: str, scan: Callable[[Any], Any]) -> Deferred[Any]:
        self.scans += 1
        source = SortedKeys([r.key for r in self.records if r.bucket == bucket], prefix)
        return succeed(scan(source.fetch))


def list_call(query: Mapping[str, str], bucket: str = "bkt") -> S3Call:
    return S3Call("0123456789ABCDEF", "GET", bucket, None, dict(query), {}, auth_result())


def run(operation: Callable[[S3Call], Any], query: Mapping[str, str], bucket: str = "bkt") -> S3Response:
    return Outcome(ensureDeferred(operation(list_call(query, bucket)))).result


def failure_of(operation: Callable[[S3Call], Any], query: Mapping[str, str]) -> S3Error:
    return Outcome(ensureDeferred(operation(list_call(query)))).failure.value


@pytest.fixture
def ops() -> ListingOperations:
    keys = [f"k{i:02d}" for i in range(10)] + ["dir/a", "dir/b", "dir/sub/c"]
    records = [record(k) for k in keys] + [record("elsewhere", bucket="other")]
    return ListingOperations(FakeMetadata(records), SECRET)


def keys_of(root: ElementTree.Element) -> list[str]:
    return [e.text or "" for e in root.findall(f"{NS}Contents/{NS}Key")]


def test_v2_response_is_application_xml(ops: ListingOperations) -> None:
    response = run(ops.list_objects_v2, {"list-type": "2"})
    assert response.status == 200
    assert ("Content-Type", "application/xml") in response.headers
    root = parse(response.body)
    assert keys_of(root) == ["dir/a", "dir/b", "dir/sub/c"] + [f"k{i:02d}" for i in range(10)]
    assert find(root, "{ns}KeyCount") == "13"


def test_v2_continuation_tokens_walk_the_bucket(ops: ListingOperations) -> None:
    seen: list[str] = []
    query = {"list-type": "2", "max-keys": "4", "delimiter": "/"}
    while True:
        root = parse(run(ops.list_objects_v2, query).body)
        seen += [p.text for p in root.findall(f"{NS}CommonPrefixes/{NS}Prefix")] + keys_of(root)
        token = find(root, "{ns}NextContinuationToken")
        if find(root, "{ns}IsTruncated") == "false":
            assert token is None
            break
        assert token
        query = {"list-type": "2", "max-keys": "4", "delimiter": "/", "continuation-token": token}
    assert seen == ["dir/"] + [f"k{i:02d}" for i in range(10)]


def test_v2_token_of_another_bucket_is_invalid_argument(ops: ListingOperations) -> None:
    token = ContinuationTokens(SECRET).issue("other", "k00")
    error = failure_of(ops.list_objects_v2, {"list-type": "2", "continuation-token": token})
    assert error.code == "InvalidArgument" and error.extra["ArgumentName"] == "continuation-token"


def test_v2_max_keys_zero_reads_nothing(ops: ListingOperations) -> None:
    root = parse(run(ops.list_objects_v2, {"list-type": "2", "max-keys": "0"}).body)
    assert keys_of(root) == [] and find(root, "{ns}IsTruncated") == "false" and find(root, "{ns}KeyCount") == "0"
    assert ops._metadata.scans == 0  # type: ignore[attr-defined]


def test_v1_next_marker_only_with_a_delimiter(ops: ListingOperations) -> None:
    plain = parse(run(ops.list_objects, {"max-keys": "2"}).body)
    assert find(plain, "{ns}IsTruncated") == "true" and find(plain, "{ns}NextMarker") is None
    assert find(plain, "{ns}Contents/{ns}Owner/{ns}ID") == "bkt"
    delimited = parse(run(ops.list_objects, {"max-keys": "2", "delimiter": "/"}).body)
    assert find(delimited, "{ns}NextMarker") == "k00"


def test_v1_marker_resumes_after_it(ops: ListingOperations) -> None:
    root = parse(run(ops.list_objects, {"marker": "k07"}).body)
    assert keys_of(root) == ["k08", "k09"] and find(root, "{ns}Marker") == "k07"


def test_invalid_parameters_are_invalid_argument(ops: ListingOperations) -> None:
    assert failure_of(ops.list_objects, {"max-keys": "x"}).code == "InvalidArgument"
    assert failure_of(ops.list_objects_v2, {"list-type": "2", "encoding-type": "zip"}).code == "InvalidArgument"


# -- routing ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "query, expected",
    [
        ({}, "ListObjects"),
        ({"prefix": "a", "marker": "b"}, "ListObjects"),
        ({"list-type": "2"}, "ListObjectsV2"),
        ({"list-type": "2", "x-id": "ListObjectsV2", "encoding-type": "url"}, "ListObjectsV2"),
        ({"location": ""}, "GetBucketLocation"),
        ({"versioning": ""}, "GetBucketVersioning"),
        ({"acl": ""}, "GetBucketAcl"),
        ({"object-lock": ""}, "GetBucketObjectLock"),
        ({"uploads": ""}, "ListMultipartUploads"),
        ({"versions": ""}, "ListObjectVersions"),
    ],
)
def test_get_on_a_bucket_is_a_listing_unless_it_names_a_subresource(query: dict[str, str], expected: str) -> None:
    assert operation_name(list_call(query)) == expected


def test_prefix_upper_bound_is_importable_from_the_interface() -> None:
    assert prefix_upper_bound("a/") == "a0"
