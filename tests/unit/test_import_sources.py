"""What an import takes from a store: the areas it leaves to the daemon, listing pages,
directory walks in key order."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import reactor

from s3orchestrator.config import BucketConfig, Config, DirectoryStoreConfig, S3StoreConfig
from s3orchestrator.imports.areas import conflicts, own_area, skip_reason
from s3orchestrator.imports.directory_source import DirectorySource, walk
from s3orchestrator.imports.s3_source import parse_page
from s3orchestrator.stores.directory import DirectoryStore
from s3orchestrator.stores.interface import ObjectMissing

S3 = S3StoreConfig(name="up", quota_bytes=0, endpoint="http://127.0.0.1:1", bucket="upstream", access_key_id="k",
                   secret_access_key="s")


def directory(path: Path) -> DirectoryStoreConfig:
    return DirectoryStoreConfig(name="files", quota_bytes=0, path=str(path))


def test_the_daemon_s_own_areas_are_the_buckets_names_or_directories(tmp_path: Path) -> None:
    assert own_area(S3, "app") == "app"
    assert own_area(directory(tmp_path), "app") == "app.d"


@pytest.mark.parametrize(("name", "reason"), [
    ("photos/a.jpg", None),
    ("app/a.jpg", "the daemon's own objects"),
    ("app", "the daemon's own objects"),
    ("a\x00b", "a key cannot hold NUL"),
    ("k" * 1025, "a key holds 1 to 1024 bytes"),
])
def test_keys_an_import_leaves_out(name: str, reason: str | None) -> None:
    assert skip_reason(S3, name, frozenset({"app"})) == reason


def test_a_directory_store_s_dot_entries_are_its_own(tmp_path: Path) -> None:
    assert skip_reason(directory(tmp_path), ".tmp/x", frozenset()) == "the store's own files"
    assert skip_reason(directory(tmp_path), "docs/.hidden", frozenset()) is None


def test_a_bucket_whose_area_holds_imported_objects_conflicts(tmp_path: Path) -> None:
    config = Config(
        routing_strategy="pack", server=None, metadata=None, health=None,  # type: ignore[arg-type]
        buckets=[BucketConfig(name="photos", credentials=()), BucketConfig(name="app", credentials=())],
        stores=[S3, directory(tmp_path)],
    )
    areas = [("up", "photos", "app"), ("files", "photos", "app"), ("files", "app.d", "other"), ("gone", "app", "x")]
    assert conflicts(config, areas) == [
        "bucket 'photos' would keep its objects under 'photos' on store 'up', where objects imported into bucket"
        " 'app' are",
        "bucket 'app' would keep its objects under 'app.d' on store 'files', where objects imported into bucket"
        " 'other' are",
    ]


LISTING = b"""<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>upstream</Name>
<EncodingType>url</EncodingType><IsTruncated>true</IsTruncated><NextContinuationToken>next+1</NextContinuationToken>
<Contents><Key>a+b/%C3%BC%2B.txt</Key><LastModified>2024-05-01T10:00:00.250Z</LastModified>
<ETag>&quot;0123&quot;</ETag><Size>12</Size></Contents>
<Contents><Key>big</Key><LastModified>2024-05-01T10:00:01Z</LastModified><ETag>"abcd-3"</ETag><Size>99</Size>
</Contents></ListBucketResult>"""


def test_a_listing_page_gives_decoded_keys_sizes_etags_and_times() -> None:
    page = parse_page(LISTING)
    assert [(item.key, item.size, item.etag, item.last_modified_ms) for item in page.objects] == [
        ("a b/ü+.txt", 12, "0123", 1714557600250), ("big", 99, "abcd-3", 1714557601000)]
    assert page.next_token == "next+1"


@pytest.mark.parametrize("body", [b"<Error><Code>x</Code></Error>", b"not xml", b"<!DOCTYPE x><ListBucketResult/>"])
def test_what_is_not_a_listing_is_refused(body: bytes) -> None:
    with pytest.raises(ValueError):
        parse_page(body)


def make_tree(root: Path, names: list[str]) -> None:
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(name.encode())


def test_a_walk_yields_keys_in_bytewise_order_and_resumes_after_a_key(tmp_path: Path) -> None:
    names = ["a-b", "a/x", "a/y/z", "a0", "b", "ü"]
    make_tree(tmp_path, names)
    root = os.fsencode(tmp_path)
    assert [name.decode() for name in walk(root, b"", b"")] == sorted(names, key=lambda name: name.encode())
    assert [name.decode() for name in walk(root, b"", b"a/x")] == ["a/y/z", "a0", "b", "ü"]
    assert [name.decode() for name in walk(root, b"a/", b"")] == ["a/x", "a/y/z"]


@pytest_twisted.ensureDeferred
async def test_a_directory_source_takes_plain_files_only(tmp_path: Path) -> None:
    make_tree(tmp_path, ["docs/readme.txt", "photo.jpg", "app.d/mine", ".tmp/x/y"])
    (tmp_path / "link").symlink_to(tmp_path / "photo.jpg")
    source = DirectorySource(directory(tmp_path), reactor, frozenset({"app.d"}))
    batches = [batch async for batch in source.batches("", "")]
    found = [item for batch in batches for item in batch.found]
    assert [(item.key, item.location, item.size, item.etag, item.content_type) for item in found] == [
        ("docs/readme.txt", "/docs/readme.txt", 15, hashlib.md5(b"docs/readme.txt").hexdigest(), "text/plain"),
        ("photo.jpg", "/photo.jpg", 9, hashlib.md5(b"photo.jpg").hexdigest(), "image/jpeg"),
    ]
    assert sum(batch.skipped for batch in batches) == 1  # the symbolic link


@pytest_twisted.ensureDeferred
async def test_a_directory_store_reads_and_deletes_imported_files_but_never_writes_there(tmp_path: Path) -> None:
    make_tree(tmp_path, ["docs/2024/readme.txt"])
    store = DirectoryStore("files", str(tmp_path), reactor)
    await store.start()
    try:
        assert (await store.stat("/docs/2024/readme.txt")).size == 20
        with pytest.raises(ValueError):
            await store.start_copy("/docs/2024/readme.txt", "/docs/copy", 20).done
        await store.delete("/docs/2024/readme.txt")
        assert not (tmp_path / "docs").exists()  # the directories it left empty go too
        with pytest.raises(ObjectMissing):
            await store.stat("/docs/2024/readme.txt")
    finally:
        await store.stop()
