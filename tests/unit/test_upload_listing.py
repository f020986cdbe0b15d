"""Tests for ListMultipartUploads pagination (upload_listing.list_uploads_page): against a
brute-force reference over an in-memory fetch and over SQLite's scan_uploads, and the
S3 rules of key-marker, upload-id-marker and common prefixes."""

from __future__ import annotations

import bisect
from functools import partial
from pathlib import Path
from typing import Any, Iterator, Sequence

import pytest
import pytest_twisted
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import reactor
from twisted.internet.task import Clock

from s3orchestrator.metadata.records import UploadRecord
from s3orchestrator.metadata.store import MetadataStore, sqlite_metadata_store
from s3orchestrator.s3.upload_listing import UploadPage, list_uploads_page
from tests.unit.fakes import Outcome
from tests.unit.test_metadata_listing import InlineDatabase

# An item of a listing: (value, upload id) for an upload, (common prefix, None) for a prefix.
Item = tuple[str, "str | None"]


def upload(key: str, upload_id: str, bucket: str = "bkt") -> UploadRecord:
    return UploadRecord(
        upload_id=upload_id, bucket=bucket, key=key, store="a", location=f"{bucket}/{key}",
        store_upload_id=f"s-{upload_id}", content_type="binary/octet-stream", initiated_ms=1_700_000_000_000,
    )


class SortedUploads:
    """A fetch over an in-memory list of uploads, as scan_uploads provides it, counting rows."""

    def __init__(self, uploads: Sequence[tuple[str, str]], prefix: str) -> None:
        self.positions = sorted((key, upload_id) for key, upload_id in uploads if key.startswith(prefix))
        self.rows_read = 0
        self.queries = 0

    def fetch(self, key: str, upload_id: str, limit: int) -> list[UploadRecord]:
        self.queries += 1
        start = bisect.bisect_right(self.positions, (key, upload_id))
        rows = [upload(k, u) for k, u in self.positions[start : start + max(limit, 0)]]
        self.rows_read += len(rows)
        return rows


def reference_items(
    uploads: Sequence[tuple[str, str]], prefix: str, delimiter: str, key_marker: str, upload_id_marker: str
) -> list[Item]:
    """Every item of the listing after the markers, in listing order, brute force."""
    items: set[Item] = set()
    for key, upload_id in uploads:
        if not key.startswith(prefix):
            continue
        rest = key[len(prefix):]
        if delimiter and delimiter in rest:
            items.add((prefix + rest[: rest.index(delimiter) + len(delimiter)], None))
        else:
            items.add((key, upload_id))

    def after_markers(item: Item) -> bool:
        value, upload_id = item
        if not key_marker:
            return True
        if upload_id is None:
            return value > key_marker
        return value > key_marker or (value == key_marker and bool(upload_id_marker) and upload_id > upload_id_marker)

    return sorted((item for item in items if after_markers(item)), key=lambda item: (item[0], item[1] or ""))


def page_items(page: UploadPage) -> list[Item]:
    items: list[Item] = [(u.key, u.upload_id) for u in page.uploads] + [(p, None) for p in page.common_prefixes]
    return sorted(items, key=lambda item: (item[0], item[1] or ""))


def paginate(fetch: Any, prefix: str, delimiter: str, key_marker: str, upload_id_marker: str,
             max_uploads: int, limit: int) -> list[UploadPage]:
    """Every page from the markers on, following NextKeyMarker and NextUploadIdMarker."""
    pages = []
    for _ in range(limit):
        page = list_uploads_page(fetch, prefix, delimiter, key_marker, upload_id_marker, max_uploads)
        pages.append(page)
        if not page.is_truncated:
            return pages
        assert page.next_key_marker is not None
        key_marker, upload_id_marker = page.next_key_marker, page.next_upload_id_marker or ""
    pytest.fail("pagination does not end")


# Small alphabets so keys share prefixes, collide with delimiters and carry several uploads.
KEY_PIECES = ["a", "b", "/", "a/", "\U0010ffff"]
keys = st.lists(st.sampled_from(KEY_PIECES), min_size=1, max_size=4).map("".join)
upload_ids = st.text(alphabet="0189af", min_size=1, max_size=3)
uploads_strategy = st.lists(st.tuples(keys, upload_ids), max_size=25, unique_by=lambda u: u[1])
prefixes = st.lists(st.sampled_from(KEY_PIECES), max_size=2).map("".join)
delimiters = st.sampled_from(["", "/", "a", "//", "b/", "\U0010ffff"])


@st.composite
def markers(draw: Any, uploads: Sequence[tuple[str, str]]) -> tuple[str, str]:
    """A key-marker and upload-id-marker: often an existing upload's, sometimes arbitrary."""
    existing = [st.sampled_from(list(uploads))] if uploads else []
    key_marker, upload_id_marker = draw(st.one_of(*existing, st.tuples(keys, upload_ids)))
    return (
        draw(st.sampled_from([key_marker, ""])) if draw(st.booleans()) else key_marker,
        draw(st.sampled_from([upload_id_marker, ""])),
    )


@st.composite
def listings(draw: Any) -> tuple[list[tuple[str, str]], str, str, str, str, int]:
    uploads = draw(uploads_strategy)
    key_marker, upload_id_marker = draw(markers(uploads))
    return uploads, draw(prefixes), draw(delimiters), key_marker, upload_id_marker, draw(st.integers(1, 5))


@settings(max_examples=150, deadline=None)
@given(listing=listings())
def test_pages_concatenate_to_the_reference_listing(listing) -> None:
    uploads, prefix, delimiter, key_marker, upload_id_marker, max_uploads = listing
    source = SortedUploads(uploads, prefix)
    pages = paginate(source.fetch, prefix, delimiter, key_marker, upload_id_marker, max_uploads, len(uploads) + 2)
    listed = [item for page in pages for item in page_items(page)]
    assert listed == reference_items(uploads, prefix, delimiter, key_marker, upload_id_marker)


@settings(max_examples=100, deadline=None)
@given(listing=listings())
def test_one_page_is_the_reference_slice_and_names_its_last_item(listing) -> None:
    uploads, prefix, delimiter, key_marker, upload_id_marker, max_uploads = listing
    expected = reference_items(uploads, prefix, delimiter, key_marker, upload_id_marker)
    page = list_uploads_page(SortedUploads(uploads, prefix).fetch, prefix, delimiter, key_marker, upload_id_marker,
                             max_uploads)
    assert page_items(page) == expected[:max_uploads]
    assert page.is_truncated == (len(expected) > max_uploads)
    if expected:
        assert (page.next_key_marker, page.next_upload_id_marker) == expected[:max_uploads][-1]


# -- the same pages through SQLite's scan_uploads ----------------------------------------------


def inline_upload_store(uploads: Sequence[tuple[str, str]], bucket: str = "bkt") -> MetadataStore:
    """A MetadataStore whose interactions run at once on an in-memory SQLite connection."""
    store = MetadataStore(InlineDatabase(), clock=Clock())  # type: ignore[arg-type]
    for key, upload_id in uploads:
        assert Outcome(store.create_upload(upload(key, upload_id, bucket))).succeeded
    return store


def sqlite_page(store: MetadataStore, prefix: str, delimiter: str, key_marker: str, upload_id_marker: str,
                max_uploads: int) -> UploadPage:
    return Outcome(store.scan_uploads(
        "bkt", prefix,
        lambda fetch: list_uploads_page(fetch, prefix, delimiter, key_marker, upload_id_marker, max_uploads),
    )).result


@settings(max_examples=100, deadline=None)
@given(listing=listings())
def test_sqlite_pages_concatenate_to_the_reference_listing(listing) -> None:
    uploads, prefix, delimiter, key_marker, upload_id_marker, max_uploads = listing
    store = inline_upload_store(uploads)
    listed: list[Item] = []
    marker, id_marker = key_marker, upload_id_marker
    for _ in range(len(uploads) + 2):
        page = sqlite_page(store, prefix, delimiter, marker, id_marker, max_uploads)
        listed += page_items(page)
        if not page.is_truncated:
            break
        marker, id_marker = page.next_key_marker, page.next_upload_id_marker or ""
    else:
        pytest.fail("pagination does not end")
    assert listed == reference_items(uploads, prefix, delimiter, key_marker, upload_id_marker)


def test_sqlite_listing_only_sees_its_bucket() -> None:
    store = inline_upload_store([("k", "1"), ("k", "2")])
    assert Outcome(store.create_upload(upload("k", "3", bucket="bkt2"))).succeeded
    assert Outcome(store.create_upload(upload("j", "4", bucket="bk"))).succeeded
    page = sqlite_page(store, "", "", "", "", 10)
    assert [(u.key, u.upload_id) for u in page.uploads] == [("k", "1"), ("k", "2")]


# -- S3's marker and common prefix rules, one by one ------------------------------------------

UPLOADS = [("a", "1"), ("b", "1x"), ("b", "2"), ("b", "3"), ("c", "0")]


def items(uploads: Sequence[tuple[str, str]], prefix: str = "", delimiter: str = "", key_marker: str = "",
          upload_id_marker: str = "", max_uploads: int = 100) -> list[Item]:
    page = list_uploads_page(SortedUploads(uploads, prefix).fetch, prefix, delimiter, key_marker, upload_id_marker,
                             max_uploads)
    return page_items(page)


def test_several_uploads_of_a_key_are_listed_by_upload_id() -> None:
    assert items(UPLOADS) == [("a", "1"), ("b", "1x"), ("b", "2"), ("b", "3"), ("c", "0")]


def test_key_marker_alone_excludes_every_upload_of_that_key() -> None:
    assert items(UPLOADS, key_marker="b") == [("c", "0")]


def test_key_marker_with_upload_id_marker_includes_that_keys_later_uploads() -> None:
    assert items(UPLOADS, key_marker="b", upload_id_marker="1x") == [("b", "2"), ("b", "3"), ("c", "0")]


def test_upload_id_marker_between_ids_includes_the_greater_ones() -> None:
    assert items(UPLOADS, key_marker="b", upload_id_marker="15") == [("b", "1x"), ("b", "2"), ("b", "3"), ("c", "0")]


def test_upload_id_marker_without_key_marker_is_ignored() -> None:
    assert items(UPLOADS, upload_id_marker="2") == items(UPLOADS)


def test_key_marker_of_a_key_without_uploads_starts_after_it() -> None:
    assert items(UPLOADS, key_marker="aa", upload_id_marker="9") == [("b", "1x"), ("b", "2"), ("b", "3"), ("c", "0")]


def test_next_markers_name_the_last_upload_of_a_truncated_page() -> None:
    page = list_uploads_page(SortedUploads(UPLOADS, "").fetch, "", "", "", "", 3)
    assert page.is_truncated
    assert (page.next_key_marker, page.next_upload_id_marker) == ("b", "2")
    following = list_uploads_page(SortedUploads(UPLOADS, "").fetch, "", "", "b", "2", 3)
    assert page_items(following) == [("b", "3"), ("c", "0")]
    assert not following.is_truncated


def test_a_common_prefix_is_listed_once_and_not_again_on_later_pages() -> None:
    uploads = [("a/1", "1"), ("a/1", "2"), ("a/2", "3"), ("a0", "4"), ("b/x", "5"), ("c", "6")]
    pages = paginate(SortedUploads(uploads, "").fetch, "", "/", "", "", 1, 10)
    assert [page_items(page) for page in pages] == [[("a/", None)], [("a0", "4")], [("b/", None)], [("c", "6")]]
    assert (pages[0].next_key_marker, pages[0].next_upload_id_marker) == ("a/", None)


def test_a_key_marker_inside_a_common_prefix_does_not_list_that_prefix_again() -> None:
    uploads = [("a/1", "1"), ("a/2", "2"), ("b", "3")]
    assert items(uploads, delimiter="/", key_marker="a/1", upload_id_marker="1") == [("b", "3")]


def test_prefix_and_delimiter_roll_up_below_the_prefix() -> None:
    uploads = [("p/a/1", "1"), ("p/a/2", "2"), ("p/b", "3"), ("q/a/1", "4"), ("p", "5")]
    assert items(uploads, prefix="p/", delimiter="/") == [("p/a/", None), ("p/b", "3")]


def test_zero_max_uploads_is_an_empty_page() -> None:
    page = list_uploads_page(SortedUploads(UPLOADS, "").fetch, "", "", "", "", 0)
    assert page == UploadPage((), (), False, None, None)


DIRECTORIES = [(f"d{d:03d}/f{f:03d}", f"{d:03d}{f:03d}") for d in range(100) for f in range(100)]


def test_delimited_page_of_common_prefixes() -> None:
    page = list_uploads_page(SortedUploads(DIRECTORIES, "").fetch, "", "/", "", "", 50)
    assert page.common_prefixes == tuple(f"d{d:03d}/" for d in range(50))
    assert page.uploads == ()
    assert page.is_truncated and page.next_key_marker == "d049/"


def test_delimited_listing_reads_a_few_rows_per_common_prefix() -> None:
    source = SortedUploads(DIRECTORIES, "")
    list_uploads_page(source.fetch, "", "/", "", "", 50)
    # 51 common prefixes (one to tell the page is truncated): a few rows each, not 100.
    assert source.rows_read < 4 * 51


# -- a real SQLite file, through the database thread --------------------------------------------


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[MetadataStore]:
    store = sqlite_metadata_store(str(tmp_path / "metadata.sqlite3"), reactor)
    yield store
    store.database.close()


@pytest_twisted.ensureDeferred
async def test_pages_from_a_sqlite_file(sqlite_store: MetadataStore) -> None:
    await sqlite_store.start()
    await sqlite_store.sync_stores([("a", 0)])
    uploads = [("a/1", "01"), ("a/1", "02"), ("b", "03"), ("b", "04"), ("b", "05"), ("c/d", "06"), ("\uffff", "07"),
               ("\U00010000", "08")]
    for key, upload_id in reversed(uploads):
        await sqlite_store.create_upload(upload(key, upload_id))
    cases = [
        ("", "", "", "", 2),
        ("", "/", "", "", 1),
        ("", "/", "b", "04", 2),
        ("", "", "b", "", 3),
        ("a", "/", "", "", 5),
        ("", "/", "a/", "", 1),
    ]
    for prefix, delimiter, key_marker, upload_id_marker, max_uploads in cases:
        listed: list[Item] = []
        marker, id_marker = key_marker, upload_id_marker
        for _ in range(20):
            page = await sqlite_store.scan_uploads(
                "bkt", prefix,
                partial(
                    list_uploads_page, prefix=prefix, delimiter=delimiter, key_marker=marker,
                    upload_id_marker=id_marker, max_uploads=max_uploads,
                ),
            )
            listed += page_items(page)
            if not page.is_truncated:
                break
            marker, id_marker = page.next_key_marker, page.next_upload_id_marker or ""
        expected = reference_items(uploads, prefix, delimiter, key_marker, upload_id_marker)
        assert listed == expected, (prefix, delimiter, key_marker, upload_id_marker, max_uploads)
