"""Tests for the directory store on real files: path scheme, atomic writes, streaming reads."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import reactor
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IConsumer, IPullProducer
from twisted.web.iweb import IBodyProducer
from zope.interface import implementer
from zope.interface.verify import verifyObject

from s3orchestrator.errors import S3Error
from s3orchestrator.stores import directory
from s3orchestrator.stores.directory import DirectoryStore, relative_path
from s3orchestrator.stores.interface import (
    IObjectReader,
    IObjectStore,
    IObjectWrite,
    ObjectMissing,
    StoreUnavailable,
)
from tests.unit.fakes import FakeBody

KIB = 1024


@implementer(IConsumer)
class CollectingConsumer:
    """Collects bytes; pulls from a registered pull producer only when told to."""

    def __init__(self) -> None:
        self.data: list[bytes] = []
        self.producer: Any = None
        self.streaming: bool | None = None
        self.unregistered = False

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        self.producer, self.streaming = producer, streaming

    def unregisterProducer(self) -> None:
        self.producer = None
        self.unregistered = True

    def write(self, data: bytes) -> None:
        self.data.append(data)

    def pull_all(self) -> None:
        while self.producer is not None:
            self.producer.resumeProducing()

    @property
    def body(self) -> bytes:
        return b"".join(self.data)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def store(root: Path) -> DirectoryStore:
    return DirectoryStore("local", str(root), reactor)


async def put(store: DirectoryStore, location: str, data: bytes, chunk: int = 64 * KIB) -> None:
    chunks = [data[i : i + chunk] for i in range(0, len(data), chunk)]
    write = store.start_write(location, FakeBody(chunks), len(data))
    await write.done
    await write.publish()


async def get(store: DirectoryStore, location: str, byte_range: tuple[int, int] | None = None) -> bytes:
    reader = await store.open_read(location, byte_range)
    consumer = CollectingConsumer()
    streamed = reader.stream_to(consumer)
    consumer.pull_all()
    await streamed
    assert len(consumer.body) == reader.length
    return consumer.body


def temp_files(root: Path) -> list[str]:
    """The files under ``.tmp`` (in any process's temp directory)."""
    return sorted(path.name for path in (root / ".tmp").rglob("*") if path.is_file())


def all_files(root: Path) -> list[Path]:
    return sorted(path for path in root.rglob("*") if path.is_file())


# -- path scheme --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("location", "expected"),
    [
        ("app/a", "app.d/a"),
        ("app/a/b", "app.d/a.d/b"),
        ("app/a//b", "app.d/a.d/%.d/b"),
        ("app/docs/", "app.d/docs.d/%"),
        ("app/../x", "app.d/%2E..d/x"),
        ("app/x/..", "app.d/x.d/%2E."),
        ("app/./.", "app.d/%2E.d/%2E"),
        ("app/.tmp", "app.d/%2Etmp"),
        ("app/%2F", "app.d/%252F"),
        ("app/x.d", "app.d/x%2Ed"),
        ("app/line\nbreak", "app.d/line%0Abreak"),
        ("app/ünï cödé", "app.d/ünï cödé"),
    ],
)
def test_relative_path_scheme(location: str, expected: str) -> None:
    assert relative_path(location) == expected


@pytest.mark.parametrize("location", ["", "app", "/.tmp/x", "//x", "/a/../b", "app/a\x00b", "app/\udcff"])
def test_unmappable_locations_are_refused(location: str) -> None:
    with pytest.raises(ValueError):
        relative_path(location)


def test_long_segments_are_hashed_within_name_max() -> None:
    key_a, key_b = "x" * 1024, "x" * 1023 + "y"
    path_a, path_b = relative_path("app/" + key_a), relative_path("app/" + key_b)
    assert path_a != path_b
    for path in (path_a, path_b, relative_path(f"app/{key_a}/z"), relative_path("app/" + "é" * 600)):
        assert all(len(name.encode()) <= 255 for name in path.split("/"))
    assert relative_path(f"app/{key_a}/z").split("/")[1].endswith(".d")


def _check_paths(locations: list[str]) -> None:
    paths = {}
    for location in locations:
        path = relative_path(location)
        names = path.split("/")
        assert all(name not in ("", ".", "..") and not name.startswith(".") for name in names)
        assert all(len(name.encode("utf-8")) <= 255 and "\x00" not in name for name in names)
        resolved = os.path.normpath(os.path.join("/root", path))
        assert resolved.startswith("/root/") and resolved == "/root/" + path
        paths[location] = path
    # Distinct locations, distinct files; and no file is another location's directory.
    files = list(paths.values())
    assert len(set(files)) == len(set(paths))
    for a in files:
        for b in files:
            assert not b.startswith(a + "/")


_key_chars = st.sampled_from(["/", ".", "%", "d", "a", "A", "\n", " ", "é", "日", "\U0001f600", "2", "E", "F"])
_keys = st.text(_key_chars, min_size=1, max_size=40) | st.text(min_size=1, max_size=300).filter(
    lambda key: "\x00" not in key and not any(0xD800 <= ord(c) <= 0xDFFF for c in key)
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_keys, min_size=1, max_size=20))
def test_paths_stay_under_root_and_are_distinct(keys: list[str]) -> None:
    _check_paths([f"bkt/{key}" for key in keys])


@settings(max_examples=50, deadline=None)
@given(st.lists(_keys, min_size=1, max_size=8, unique=True))
def test_random_keys_coexist_on_disk(tmp_path_factory: pytest.TempPathFactory, keys: list[str]) -> None:
    root = tmp_path_factory.mktemp("store")
    for index, key in enumerate(keys):
        target = root / relative_path(f"bkt/{key}")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(str(index).encode())
        assert target.resolve().is_relative_to(root.resolve())
    for index, key in enumerate(keys):
        assert (root / relative_path(f"bkt/{key}")).read_bytes() == str(index).encode()
    assert len(all_files(root)) == len(keys)


# -- writing and reading ------------------------------------------------------------------------


def test_store_provides_the_interface(store: DirectoryStore) -> None:
    assert verifyObject(IObjectStore, store)


@pytest.mark.parametrize("key", ["dir/key.txt", "../x", "a//b", "a\\b", "docs/", "."])
def test_location_is_bucket_slash_key_for_every_key(store: DirectoryStore, key: str) -> None:
    # The path scheme maps any such location to its own file: no key needs another location.
    assert store.location_for("app", key) == f"app/{key}"
    relative_path(store.location_for("app", key))


@pytest_twisted.ensureDeferred
async def test_round_trip(store: DirectoryStore, root: Path) -> None:
    data = os.urandom(700 * KIB + 3)
    write = store.start_write("app/dir/key", FakeBody([data[:100], data[100:]]), len(data))
    assert verifyObject(IObjectWrite, write)
    await write.done
    await write.publish()
    assert await get(store, "app/dir/key") == data
    assert (root / "app.d" / "dir.d" / "key").read_bytes() == data
    assert temp_files(root) == []


@pytest_twisted.ensureDeferred
async def test_empty_object_round_trips(store: DirectoryStore) -> None:
    await put(store, "app/empty", b"")
    assert await get(store, "app/empty") == b""


@pytest_twisted.ensureDeferred
async def test_range_reads(store: DirectoryStore) -> None:
    data = os.urandom(600 * KIB)
    await put(store, "app/k", data)
    for first, last in [(0, 0), (5, 9), (len(data) - 1, len(data) - 1), (100, 300 * KIB), (0, len(data) - 1)]:
        assert await get(store, "app/k", (first, last)) == data[first : last + 1]


@pytest_twisted.ensureDeferred
async def test_range_past_the_end_of_the_file_is_a_store_failure(store: DirectoryStore) -> None:
    await put(store, "app/k", b"0123456789")
    with pytest.raises(StoreUnavailable):
        await store.open_read("app/k", (5, 10))


@pytest_twisted.ensureDeferred
async def test_overwrite_replaces_the_object(store: DirectoryStore) -> None:
    await put(store, "app/k", b"first version")
    await put(store, "app/k", b"second")
    assert await get(store, "app/k") == b"second"


@pytest_twisted.ensureDeferred
async def test_open_reader_keeps_reading_the_object_it_opened(store: DirectoryStore) -> None:
    await put(store, "app/k", b"old bytes")
    reader = await store.open_read("app/k", None)
    await put(store, "app/k", b"new")
    await store.delete("app/k")
    consumer = CollectingConsumer()
    streamed = reader.stream_to(consumer)
    consumer.pull_all()
    await streamed
    assert consumer.body == b"old bytes"


@pytest_twisted.ensureDeferred
async def test_abort_mid_write_leaves_no_temp_file_and_the_previous_object(store: DirectoryStore, root: Path) -> None:
    await put(store, "app/k", b"previous")
    body = FakeBody([b"partial "], length=100, hold=True)
    write = store.start_write("app/k", body, 100)
    body.write(b"more")
    assert len(temp_files(root)) == 1
    write.abort()
    with pytest.raises(CancelledError):
        await write.done
    assert body.stopped
    assert temp_files(root) == []
    assert await get(store, "app/k") == b"previous"
    write.abort()  # safe to call again


@pytest_twisted.ensureDeferred
async def test_a_staged_write_is_invisible_until_published(store: DirectoryStore, root: Path) -> None:
    await put(store, "app/k", b"previous")
    write = store.start_write("app/k", FakeBody([b"next"]), 4)
    await write.done
    assert await get(store, "app/k") == b"previous"
    await write.publish()
    assert await get(store, "app/k") == b"next"
    assert temp_files(root) == []


@pytest_twisted.ensureDeferred
async def test_abort_of_a_staged_write_keeps_the_previous_object(store: DirectoryStore, root: Path) -> None:
    await put(store, "app/k", b"previous")
    write = store.start_write("app/k", FakeBody([b"next"]), 4)
    await write.done
    write.abort()
    assert temp_files(root) == []
    assert await get(store, "app/k") == b"previous"
    with pytest.raises(RuntimeError):
        await write.publish()


@pytest_twisted.ensureDeferred
async def test_publish_before_done_fails(store: DirectoryStore) -> None:
    body = FakeBody([b"partial"], length=100, hold=True)
    write = store.start_write("app/k", body, 100)
    with pytest.raises(RuntimeError):
        await write.publish()
    write.abort()


@pytest_twisted.ensureDeferred
async def test_abort_after_the_last_byte_before_the_rename_leaves_nothing(store: DirectoryStore, root: Path) -> None:
    write = store.start_write("app/k", FakeBody([b"complete"]), 8)
    write.abort()  # the fsync is running in a thread now
    with pytest.raises(CancelledError):
        await write.done
    assert temp_files(root) == []
    with pytest.raises(ObjectMissing):
        await store.open_read("app/k", None)


@pytest_twisted.ensureDeferred
async def test_producer_failure_leaves_nothing_and_calls_nothing_more(store: DirectoryStore, root: Path) -> None:
    body = FakeBody([b"some bytes"], length=100, hold=True)
    write = store.start_write("app/k", body, 100)

    class BadDigest(Exception):
        pass

    body.fail(BadDigest())
    with pytest.raises(BadDigest):
        await write.done
    write.abort()
    assert body.calls_after_failure == []
    assert temp_files(root) == []
    assert all_files(root) == []


@pytest_twisted.ensureDeferred
async def test_producer_raising_in_start_producing_leaves_nothing(store: DirectoryStore, root: Path) -> None:
    @implementer(IBodyProducer)
    class Broken(FakeBody):
        def startProducing(self, consumer: IConsumer) -> Deferred[None]:
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        await store.start_write("app/k", Broken([]), 5).done
    assert all_files(root) == []


@pytest_twisted.ensureDeferred
async def test_short_body_fails_and_stores_nothing(store: DirectoryStore, root: Path) -> None:
    with pytest.raises(S3Error) as error:
        await store.start_write("app/k", FakeBody([b"1234"]), 5).done
    assert error.value.code == "IncompleteBody"
    assert all_files(root) == []


@pytest_twisted.ensureDeferred
async def test_long_body_fails_stops_the_producer_and_stores_nothing(store: DirectoryStore, root: Path) -> None:
    body = FakeBody([b"123", b"456"], length=5)
    with pytest.raises(S3Error):
        await store.start_write("app/k", body, 5).done
    assert body.stopped
    assert all_files(root) == []


@pytest_twisted.ensureDeferred
async def test_pull_body_producer_is_driven(store: DirectoryStore) -> None:
    @implementer(IBodyProducer, IPullProducer)
    class PullBody:
        length = 30

        def __init__(self) -> None:
            self.remaining = 3

        def startProducing(self, consumer: IConsumer) -> Deferred[None]:
            self.consumer, self.produced = consumer, Deferred()
            consumer.registerProducer(self, False)
            return self.produced

        def resumeProducing(self) -> None:
            if self.remaining:
                self.remaining -= 1
                self.consumer.write(b"x" * 10)
            else:
                self.consumer.unregisterProducer()
                self.produced.callback(None)

        def pauseProducing(self) -> None:
            pass

        def stopProducing(self) -> None:
            pass

    write = store.start_write("app/k", PullBody(), 30)
    await write.done
    await write.publish()
    assert await get(store, "app/k") == b"x" * 30


@pytest_twisted.ensureDeferred
async def test_edge_case_keys_coexist(store: DirectoryStore, root: Path) -> None:
    keys = ["a", "a/b", "a/b/c", "a//b", "a/", "../x", "x/..", "..", ".", "%2F", "%", "x.d", "x.d/y",
            "ünïcödé/日本語 \U0001f600", "k" * 1024, "k" * 1023 + "/", "/" * 20, "\n"]
    for index, key in enumerate(keys):
        await put(store, f"app/{key}", f"object {index}".encode())
    for index, key in enumerate(keys):
        assert await get(store, f"app/{key}") == f"object {index}".encode()
    files = all_files(root)
    assert len(files) == len(keys)
    assert all(path.resolve().is_relative_to(root.resolve()) for path in files)


@pytest_twisted.ensureDeferred
async def test_unmappable_locations_fail_through_the_deferreds(store: DirectoryStore, root: Path) -> None:
    body = FakeBody([b"x"])
    with pytest.raises(ValueError):
        await store.start_write("/etc/passwd", body, 1).done
    assert body.consumer is None  # never started
    with pytest.raises(ValueError):
        await store.open_read("app/a\x00", None)
    with pytest.raises(ValueError):
        await store.delete("noslash")
    assert not root.exists() or all_files(root) == []


@pytest_twisted.ensureDeferred
async def test_too_long_paths_are_refused(store: DirectoryStore) -> None:
    with pytest.raises(ValueError):
        await store.open_read("app/" + "/" * 1024, None)


# -- reading with backpressure ------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_reader_is_a_pull_producer_writing_one_chunk_per_resume(store: DirectoryStore) -> None:
    data = os.urandom(3 * 256 * KIB + 10)
    await put(store, "app/k", data)
    reader = await store.open_read("app/k", None)
    assert verifyObject(IObjectReader, reader) and reader.length == len(data)
    consumer = CollectingConsumer()
    streamed = reader.stream_to(consumer)
    assert consumer.producer is reader and consumer.streaming is False
    assert consumer.data == []  # nothing until asked
    resumes = 0
    while consumer.producer is not None:
        reader.resumeProducing()
        resumes += 1
        assert len(consumer.data) == resumes
    assert [len(chunk) for chunk in consumer.data] == [256 * KIB] * 3 + [10]
    assert consumer.unregistered
    await streamed
    assert consumer.body == data


@pytest_twisted.ensureDeferred
async def test_reader_resumed_from_within_write_does_not_recurse(store: DirectoryStore) -> None:
    data = os.urandom(2 * 256 * KIB)
    await put(store, "app/k", data)
    reader = await store.open_read("app/k", None)

    class EagerConsumer(CollectingConsumer):
        def write(self, data: bytes) -> None:
            super().write(data)
            if self.producer is not None:
                self.producer.resumeProducing()

    consumer = EagerConsumer()
    streamed = reader.stream_to(consumer)
    reader.resumeProducing()
    await streamed
    assert consumer.body == data


@pytest_twisted.ensureDeferred
async def test_reader_cancel_closes_the_file_and_fails_the_stream(store: DirectoryStore) -> None:
    await put(store, "app/k", os.urandom(600 * KIB))
    reader = await store.open_read("app/k", None)
    consumer = CollectingConsumer()
    streamed = reader.stream_to(consumer)
    reader.resumeProducing()
    reader.cancel()
    with pytest.raises(CancelledError):
        await streamed
    assert consumer.unregistered
    reader.resumeProducing()  # a late pull does nothing
    assert len(consumer.data) == 1


@pytest_twisted.ensureDeferred
async def test_reader_stop_producing_fails_the_stream(store: DirectoryStore) -> None:
    await put(store, "app/k", b"data")
    reader = await store.open_read("app/k", None)
    streamed = reader.stream_to(CollectingConsumer())
    reader.stopProducing()
    with pytest.raises(CancelledError):
        await streamed


@pytest_twisted.ensureDeferred
async def test_reader_of_a_truncated_file_fails(store: DirectoryStore, root: Path) -> None:
    await put(store, "app/k", b"0123456789")
    reader = await store.open_read("app/k", None)
    os.truncate(root / "app.d" / "k", 4)
    consumer = CollectingConsumer()
    streamed = reader.stream_to(consumer)
    consumer.pull_all()
    with pytest.raises(StoreUnavailable):
        await streamed


@pytest_twisted.ensureDeferred
async def test_missing_object_is_object_missing(store: DirectoryStore) -> None:
    with pytest.raises(ObjectMissing):
        await store.open_read("app/nothing", None)
    await put(store, "app/a", b"file")
    with pytest.raises(ObjectMissing):
        await store.open_read("app/a/b", None)


# -- delete -------------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_delete_removes_the_file_and_empty_directories(store: DirectoryStore, root: Path) -> None:
    await put(store, "app/x/y/z/deep", b"1")
    await put(store, "app/x/other", b"2")
    await store.delete("app/x/y/z/deep")
    assert not (root / "app.d" / "x.d" / "y.d").exists()
    assert (root / "app.d" / "x.d" / "other").exists()
    await store.delete("app/x/other")
    assert (root / "app.d").is_dir() and os.listdir(root / "app.d") == []
    await store.delete("app/x/other")  # missing is fine
    await store.delete("app/never/existed")


@pytest_twisted.ensureDeferred
async def test_write_survives_a_concurrent_delete_removing_its_directory(
    store: DirectoryStore, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await put(store, "app/dir/keep", b"1")
    real_replace = os.replace
    raced: list[bytes] = []

    def replace_after_rmdir(source: Any, target: Any) -> None:
        if not raced:
            # A delete of the last other object in dir/ prunes the directory just now.
            raced.append(target)
            os.unlink(root / "app.d" / "dir.d" / "keep")
            os.rmdir(os.path.dirname(target))
        real_replace(source, target)

    monkeypatch.setattr(directory.os, "replace", replace_after_rmdir)
    await put(store, "app/dir/new", b"2")
    monkeypatch.undo()
    assert raced
    assert await get(store, "app/dir/new") == b"2"
    assert temp_files(root) == []


# -- start and probe ----------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_start_creates_the_root_and_removes_stale_temp_files(store: DirectoryStore, root: Path) -> None:
    assert await store.start() == 0
    (root / ".tmp" / "crashed-upload").write_bytes(b"x")
    (root / ".tmp" / "crashed-dir").mkdir()
    assert await store.start() == 2
    assert temp_files(root) == []


@pytest_twisted.ensureDeferred
async def test_starting_a_store_on_a_shared_root_leaves_the_writes_of_another_alone(root: Path) -> None:
    first, second = (DirectoryStore("shared", str(root), reactor) for _ in range(2))
    await first.start()
    write = first.start_write("app/k", FakeBody([b"in flight"]), 9)
    await write.done  # staged: the temp file waits for publish
    assert await second.start() == 0
    await second.probe()
    assert len(temp_files(root)) == 1
    await write.publish()
    assert await get(second, "app/k") == b"in flight"
    await first.stop()
    await second.stop()
    assert os.listdir(root / ".tmp") == []  # a clean stop leaves nothing


@pytest_twisted.ensureDeferred
async def test_the_temp_files_of_a_stopped_store_are_swept_by_another(root: Path) -> None:
    first, second = (DirectoryStore("shared", str(root), reactor) for _ in range(2))
    await first.start()
    await second.start()
    write = first.start_write("app/k", FakeBody([b"abandoned"]), 9)
    await write.done
    await first.stop()  # as a dying process would: its lock is released
    await second.probe()
    assert temp_files(root) == []
    assert len(os.listdir(root / ".tmp")) == 1  # the second store's own
    with pytest.raises(ObjectMissing):
        await get(second, "app/k")


CLAIMING_PROCESS = """
import os, sys
from s3orchestrator.stores import directory_temp
path, _ = directory_temp.claim(os.fsencode(sys.argv[1]))
open(os.path.join(path, b"partial"), "wb").close()
print(os.fsdecode(path), flush=True)
sys.stdin.read()
"""


@pytest_twisted.ensureDeferred
async def test_a_probe_sweeps_the_temp_files_of_a_killed_process_only_once_it_is_gone(
    store: DirectoryStore, root: Path
) -> None:
    await store.start()
    other = subprocess.Popen([sys.executable, "-c", CLAIMING_PROCESS, str(root / ".tmp")],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                             cwd=Path(__file__).resolve().parents[2])  # this tree's package
    try:
        assert other.stdout is not None
        owner = Path(other.stdout.readline().strip())
        await store.probe()
        assert os.listdir(owner) == ["partial"]
        assert await DirectoryStore("shared", str(root), reactor).start() == 0
        assert os.listdir(owner) == ["partial"]
    finally:
        other.kill()
        other.wait()
    await store.probe()
    assert not owner.exists()
    assert temp_files(root) == []


@pytest_twisted.ensureDeferred
async def test_probe_succeeds_and_leaves_nothing(store: DirectoryStore, root: Path) -> None:
    await store.probe()
    assert temp_files(root) == []


@pytest_twisted.ensureDeferred
async def test_probe_of_a_broken_root_is_store_unavailable(tmp_path: Path) -> None:
    not_a_directory = tmp_path / "file"
    not_a_directory.write_bytes(b"")
    store = DirectoryStore("broken", str(not_a_directory), reactor)
    with pytest.raises(StoreUnavailable):
        await store.probe()
    failing = store.start_write("app/k", FakeBody([b"x"]), 1)
    with pytest.raises(StoreUnavailable):
        await failing.done


# -- server-side copies -------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_copy_round_trip(store: DirectoryStore, root: Path) -> None:
    data = os.urandom(300 * KIB + 7)
    await put(store, "app/source", data)
    copy = store.start_copy("app/source", "app/nested/target", len(data))
    assert verifyObject(IObjectWrite, copy)
    assert copy.staged is True
    await copy.done
    assert temp_files(root) != []
    with pytest.raises(ObjectMissing):
        await store.open_read("app/nested/target", None)  # staged: invisible until published
    await copy.publish()
    assert await get(store, "app/nested/target") == data
    assert await get(store, "app/source") == data
    assert temp_files(root) == []


@pytest_twisted.ensureDeferred
async def test_copy_of_an_empty_object(store: DirectoryStore, root: Path) -> None:
    await put(store, "app/empty", b"")
    copy = store.start_copy("app/empty", "app/copy", 0)
    await copy.done
    await copy.publish()
    assert await get(store, "app/copy") == b""
    assert temp_files(root) == []


@pytest_twisted.ensureDeferred
async def test_copy_onto_itself_keeps_the_bytes(store: DirectoryStore, root: Path) -> None:
    data = os.urandom(70 * KIB)
    await put(store, "app/k", data)
    copy = store.start_copy("app/k", "app/k", len(data))
    await copy.done
    await copy.publish()
    assert await get(store, "app/k") == data
    aborted = store.start_copy("app/k", "app/k", len(data))
    await aborted.done
    aborted.abort()
    assert await get(store, "app/k") == data
    assert temp_files(root) == []


@pytest_twisted.ensureDeferred
async def test_copy_of_a_missing_source_is_object_missing(store: DirectoryStore, root: Path) -> None:
    await put(store, "app/other", b"x")
    for source in ("app/missing", "app/other/below"):
        copy = store.start_copy(source, "app/target", 1)
        with pytest.raises(ObjectMissing):
            await copy.done
    with pytest.raises(ObjectMissing):
        await store.open_read("app/target", None)
    assert temp_files(root) == []


@pytest_twisted.ensureDeferred
async def test_copy_of_a_source_of_another_size_fails(store: DirectoryStore, root: Path) -> None:
    await put(store, "app/source", b"abc")
    copy = store.start_copy("app/source", "app/target", 4)
    with pytest.raises(StoreUnavailable):
        await copy.done
    assert temp_files(root) == []


@pytest_twisted.ensureDeferred
async def test_abort_of_a_staged_copy_leaves_nothing(store: DirectoryStore, root: Path) -> None:
    await put(store, "app/source", b"new")
    await put(store, "app/target", b"old")
    copy = store.start_copy("app/source", "app/target", 3)
    await copy.done
    copy.abort()
    assert temp_files(root) == []
    assert await get(store, "app/target") == b"old"
    with pytest.raises(RuntimeError):
        await copy.publish()


@pytest_twisted.ensureDeferred
async def test_abort_while_copying_leaves_nothing(store: DirectoryStore, root: Path) -> None:
    await put(store, "app/source", b"abc")
    copy = store.start_copy("app/source", "app/target", 3)
    copy.abort()  # the copy thread is still running
    with pytest.raises(CancelledError):
        await copy.done
    assert temp_files(root) == []
    with pytest.raises(ObjectMissing):
        await store.open_read("app/target", None)


@pytest_twisted.ensureDeferred
async def test_copy_with_unmappable_locations_fails_at_once(store: DirectoryStore, root: Path) -> None:
    await put(store, "app/source", b"abc")
    for source, target, length in (("nobucket", "app/t", 3), ("app/source", "", 3), ("app/source", "app/t", -1)):
        copy = store.start_copy(source, target, length)
        assert copy.done.called
        with pytest.raises(ValueError):
            await copy.done
    assert temp_files(root) == []


def test_copy_fd_falls_back_to_reads_and_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    def refuse(*args: Any) -> int:
        raise OSError(errno.EXDEV, "cross-device")

    monkeypatch.setattr(os, "copy_file_range", refuse, raising=False)
    data = os.urandom(3 * 1024 * KIB + 5)
    (tmp_path / "a").write_bytes(data)
    source = os.open(tmp_path / "a", os.O_RDONLY)
    target = os.open(tmp_path / "b", os.O_WRONLY | os.O_CREAT)
    try:
        assert directory._copy_fd(source, target, len(data) + 10) == len(data)
    finally:
        os.close(source)
        os.close(target)
    assert (tmp_path / "b").read_bytes() == data
