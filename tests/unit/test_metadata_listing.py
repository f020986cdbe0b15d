"""Tests for listing from the SQL metadata store: prefix bounds, byte order of keys,
bounded index range scans, and whole pages from SQLite against a brute-force reference."""

from __future__ import annotations

import sqlite3
from functools import partial
from typing import Any, Callable, Sequence

import pytest
import pytest_twisted
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from zope.interface.verify import verifyObject

from s3orchestrator.metadata.database import Transaction
from s3orchestrator.metadata.engines.sqlite import SqliteEngine
from s3orchestrator.metadata.interface import IMetadataStore, prefix_upper_bound
from s3orchestrator.metadata.records import ObjectRecord
from s3orchestrator.metadata.schema import load_migrations, split_statements
from s3orchestrator.metadata.store import MetadataStore
from s3orchestrator.s3.listing import list_page
from tests.unit.test_listing import PIECES, reference_items

# Valid keys: any code point but the surrogates (keys are UTF-8).
key_chars = st.characters(blacklist_categories=["Cs"])  # the name hypothesis 6.67 (Debian 12) knows
awkward_text = st.one_of(
    st.text(key_chars, max_size=6),
    st.lists(st.sampled_from(PIECES), max_size=4).map("".join),
)


# -- prefix bounds --------------------------------------------------------------------


@pytest.mark.parametrize(
    "prefix, bound",
    [
        ("", None),
        ("a", "b"),
        ("a/", "a0"),
        ("photos/2026", "photos/2027"),
        ("\U0010ffff", None),
        ("\U0010ffff\U0010ffff", None),
        ("a\U0010ffff", "b"),
        ("a\U0010ffff\U0010ffff", "b"),
        ("\ud7ff", "\ue000"),
        ("\uffff", "\U00010000"),
        ("z\x7f", "z\x80"),
    ],
)
def test_prefix_upper_bound(prefix: str, bound: str | None) -> None:
    assert prefix_upper_bound(prefix) == bound


@given(prefix=awkward_text, key=awkward_text)
def test_prefix_upper_bound_brackets_exactly_the_keys_with_the_prefix(prefix: str, key: str) -> None:
    bound = prefix_upper_bound(prefix)
    inside = prefix <= key and (bound is None or key < bound)
    assert inside == key.startswith(prefix)
    if bound is not None:
        assert bound.encode("utf-8") > prefix.encode("utf-8")


@given(a=st.text(key_chars), b=st.text(key_chars))
def test_python_string_order_is_utf8_byte_order(a: str, b: str) -> None:
    # What lets the listing core compare keys as str while SQLite compares bytes.
    assert (a < b) == (a.encode("utf-8") < b.encode("utf-8"))


# -- scan_objects on an inline SQLite connection (hypothesis needs no reactor) ---------


class InlineDatabase:
    """``Database.runInteraction`` run at once on one in-memory SQLite connection,
    recording every statement it executes."""

    def __init__(self) -> None:
        self.engine = SqliteEngine(":memory:")
        self.connection = sqlite3.connect(":memory:", isolation_level=None)
        for migration in load_migrations():
            for statement in split_statements(self.engine.render_schema(migration.sql)):
                self.connection.execute(statement)
        self.connection.execute("INSERT INTO stores (name, quota_bytes) VALUES ('a', 0)")
        self.statements: list[str] = []
        self.connection.set_trace_callback(self.statements.append)
        self.reactor = None

    def insert(self, bucket: str, keys: Sequence[str]) -> None:
        self.connection.executemany(
            "INSERT INTO objects (bucket, key, store, location, size, etag, content_type, headers,"
            " user_metadata, last_modified_ms) VALUES (?, ?, 'a', ?, 1, 'e', 't', '{}', '{}', 0)",
            [(bucket, key, f"{bucket}/{key}") for key in set(keys)],
        )

    def runInteraction(self, desc: str, func: Callable[..., Any], *args: Any, write: bool = False) -> Deferred[Any]:
        cursor = self.connection.cursor()
        self.engine.begin(cursor, write)
        try:
            result = func(Transaction(self.engine, cursor, desc), *args)
        except Exception:
            cursor.execute("ROLLBACK")
            return fail()
        cursor.execute("COMMIT")
        return succeed(result)


def inline_store(keys: Sequence[str] = (), bucket: str = "bkt") -> tuple[MetadataStore, InlineDatabase]:
    database = InlineDatabase()
    database.insert(bucket, keys)
    return MetadataStore(database, clock=Clock()), database  # type: ignore[arg-type]


def scan(store: MetadataStore, prefix: str, func: Callable[[Any], Any], bucket: str = "bkt") -> Any:
    results: list[Any] = []
    store.scan_objects(bucket, prefix, func).addBoth(results.append)
    assert results and not hasattr(results[0], "raiseException"), results
    return results[0]


def fetch_keys(store: MetadataStore, prefix: str, start: str, inclusive: bool, limit: int) -> list[str]:
    return [r.key for r in scan(store, prefix, lambda fetch: fetch(start, inclusive, limit))]


@settings(max_examples=300, deadline=None)
@given(
    keys=st.lists(awkward_text, max_size=30),
    prefix=awkward_text,
    start=awkward_text,
    inclusive=st.booleans(),
    limit=st.integers(0, 12),
)
def test_fetch_is_the_byte_ordered_range(keys, prefix, start, inclusive, limit) -> None:
    store, _ = inline_store(keys)
    expected = sorted(
        (k for k in set(keys) if k.startswith(prefix) and (k >= start if inclusive else k > start)),
        key=lambda k: k.encode("utf-8"),
    )[:limit]
    assert fetch_keys(store, prefix, start, inclusive, limit) == expected


@settings(max_examples=300, deadline=None)
@given(
    keys=st.lists(awkward_text, max_size=30),
    prefix=st.lists(st.sampled_from(PIECES), max_size=2).map("".join),
    delimiter=st.sampled_from(["", "/", "//", "a", "-", "\U0010ffff", "\uffff"]),
    after=awkward_text,
    max_keys=st.integers(1, 5),
)
def test_sqlite_pages_concatenate_to_the_reference_listing(keys, prefix, delimiter, after, max_keys) -> None:
    store, _ = inline_store(keys)
    listed: list[tuple[str, bool]] = []
    position = after
    for _ in range(len(keys) + 2):
        page_of = partial(list_page, prefix=prefix, delimiter=delimiter, after=position, max_keys=max_keys)
        page = scan(store, prefix, page_of)
        listed += [(r.key, False) for r in page.contents] + [(p, True) for p in page.common_prefixes]
        if not page.is_truncated:
            break
        position = page.last
    else:
        pytest.fail("pagination does not end")
    assert sorted(listed) == reference_items(keys, prefix, delimiter, after)


def test_keys_come_back_in_byte_order_not_code_unit_order() -> None:
    keys = ["\U00010000", "\uffff", "a0", "a-", "a/", "a", "é", "z"]
    store, _ = inline_store(keys)
    # UTF-16 (Java, JavaScript) would put U+10000 (a surrogate pair) before U+FFFF.
    assert fetch_keys(store, "", "", True, 100) == ["a", "a-", "a/", "a0", "z", "é", "\uffff", "\U00010000"]


def test_prefix_ending_in_the_last_code_point() -> None:
    keys = ["a\U0010ffff", "a\U0010ffffz", "a\U0010ffff\U0010ffff", "b", "a"]
    store, _ = inline_store(keys)
    assert fetch_keys(store, "a\U0010ffff", "", False, 10) == ["a\U0010ffff", "a\U0010ffffz", "a\U0010ffff\U0010ffff"]
    assert fetch_keys(store, "\U0010ffff", "", False, 10) == []


def test_fetch_only_sees_its_bucket() -> None:
    store, database = inline_store(["k1", "k2"], bucket="bkt")
    database.insert("bkt-other", ["k0", "k3"])
    database.insert("bk", ["k1"])
    assert fetch_keys(store, "", "", False, 10) == ["k1", "k2"]
    assert fetch_keys(store, "k", "", False, 10) == ["k1", "k2"]


def test_fetch_returns_whole_records() -> None:
    store, database = inline_store()
    database.connection.execute(
        "INSERT INTO objects (bucket, key, store, location, size, etag, content_type, headers,"
        " user_metadata, last_modified_ms) VALUES ('bkt', 'k', 'a', 'bkt/k', 42, 'abc', 'text/plain',"
        " '{\"cache-control\": \"no-cache\"}', '{\"team\": \"x\"}', 1795428000123)"
    )
    records = scan(store, "", lambda fetch: fetch("", False, 10))
    assert records == [
        ObjectRecord(
            bucket="bkt", key="k", store="a", location="bkt/k", size=42, etag="abc", content_type="text/plain",
            last_modified_ms=1795428000123, headers={"cache-control": "no-cache"}, user_metadata={"team": "x"},
        )
    ]


@pytest.mark.parametrize("prefix", ["", "dir/", "\U0010ffff"])
def test_every_fetch_is_one_index_range_scan(prefix: str) -> None:
    store, database = inline_store([f"dir/{i}" for i in range(50)] + ["other"])
    database.statements.clear()
    scan(store, prefix, lambda fetch: (fetch("", False, 5), fetch("dir/3", True, 5), fetch("dir/3", False, 5)))
    selects = [s for s in database.statements if s.startswith("SELECT")]
    assert len(selects) == 3
    for statement in selects:
        plan = " ".join(row[3] for row in database.connection.execute("EXPLAIN QUERY PLAN " + statement))
        assert "SEARCH objects USING INDEX sqlite_autoindex_objects_1 (bucket=? AND key>" in plan, plan
        assert "TEMP B-TREE" not in plan, plan  # no sort: the index gives the order
        if prefix and prefix_upper_bound(prefix) is not None:
            assert "key<?)" in plan, plan


def test_delimited_page_reads_a_few_rows_per_common_prefix() -> None:
    keys = [f"d{d:03d}/f{f:03d}" for d in range(150) for f in range(150)]
    store, database = inline_store(keys)
    rows_read: list[int] = []

    def counting(fetch: Any) -> Any:
        def counted(start: str, inclusive: bool, limit: int) -> list[ObjectRecord]:
            rows = fetch(start, inclusive, limit)
            rows_read.append(len(rows))
            return rows

        return list_page(counted, "", "/", "", 100)

    page = scan(store, "", counting)
    assert page.common_prefixes == tuple(f"d{d:03d}/" for d in range(100))
    assert sum(rows_read) < 4 * 101


# -- the real store, through its database thread ---------------------------------------


@pytest.fixture
def sqlite_store(make_store) -> MetadataStore:
    """A store on the test's engine (SQLite, then PostgreSQL: see conftest)."""
    return make_store()


def test_metadata_store_provides_scan_objects(sqlite_store: MetadataStore) -> None:
    assert verifyObject(IMetadataStore, sqlite_store)


@pytest_twisted.ensureDeferred
async def test_scan_objects_in_byte_order_on_a_real_database(sqlite_store: MetadataStore) -> None:
    await sqlite_store.start()
    await sqlite_store.sync_stores([("a", 0)])
    # "B" < "a" bytewise (a locale's collation would say otherwise): COLLATE "C" on PostgreSQL.
    keys = ["b/2", "b/1", "\U00010000", "\uffff", "a", "c", "B"]
    for key in keys:
        reservation = await sqlite_store.reserve(1, lambda usage: "a")
        await sqlite_store.commit_object(
            reservation.id,
            ObjectRecord(bucket="bkt", key=key, store="a", location=key, size=1, etag="e",
                         content_type="t", last_modified_ms=0),
        )
    page = await sqlite_store.scan_objects("bkt", "", lambda fetch: list_page(fetch, "", "/", "", 3))
    assert [r.key for r in page.contents] == ["B", "a"]
    assert page.common_prefixes == ("b/",)
    assert page.is_truncated and page.last == "b/"
    all_keys = await sqlite_store.scan_objects("bkt", "", lambda fetch: [r.key for r in fetch("", False, 100)])
    assert all_keys == ["B", "a", "b/1", "b/2", "c", "\uffff", "\U00010000"]


@pytest_twisted.ensureDeferred
async def test_scan_errors_reach_the_caller(sqlite_store: MetadataStore) -> None:
    await sqlite_store.start()

    def broken(fetch: Any) -> None:
        raise RuntimeError("scan failed")

    with pytest.raises(RuntimeError, match="scan failed"):
        await sqlite_store.scan_objects("bkt", "", broken)
