"""The daemon's Importer and its admin API routes, over a directory store and a real
metadata database."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred

from s3orchestrator.config import BucketConfig, Config, DirectoryStoreConfig
from s3orchestrator.imports.runner import Importer, ImportRefused
from s3orchestrator.metadata.imports import ImportTable
from s3orchestrator.metadata.store import MetadataStore
from s3orchestrator.ops.import_api import import_routes

TOKEN = "token-for-the-import-tests"
AUTH = {"authorization": f"Bearer {TOKEN}"}


def make_config(root: Path) -> Config:
    return Config(
        routing_strategy="pack", server=None, metadata=None, health=None,  # type: ignore[arg-type]
        buckets=[BucketConfig(name="bkt", credentials=())],
        stores=[DirectoryStoreConfig(name="files", quota_bytes=0, path=str(root))],
    )


@pytest_twisted.async_yield_fixture
async def metadata(make_store) -> Any:
    store: MetadataStore = make_store()
    await store.start()
    await store.sync_stores([("files", 0)])
    yield store
    await store.stop()


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """The directory store's root (beside the SQLite database)."""
    return tmp_path / "store"


@pytest.fixture
def importer(metadata: MetadataStore, root: Path) -> Any:
    for name in ("a.txt", "dir/b.txt", "bkt.d/own"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(name)
    importer = Importer(ImportTable(metadata.database), lambda: make_config(root), "me", reactor)
    importer.startService()
    yield importer
    importer.stopService()


async def finished(importer: Importer) -> None:
    """Wait for the runs in progress to end."""
    for run in list(importer._runs.values()):
        done: Deferred[None] = Deferred()
        run.addBoth(lambda _, done=done: done.callback(None))
        await done


@pytest_twisted.ensureDeferred
async def test_an_import_records_the_files_and_ends_done(importer: Importer, metadata: MetadataStore) -> None:
    record = await importer.start("files", "bkt", "")
    assert (record.state, record.owner) == ("running", "me")
    await finished(importer)
    (done,) = await importer.table.imports()
    assert (done.state, done.imported_objects, done.imported_bytes, done.after_key) == ("done", 2, 14, "dir/b.txt")
    found = await metadata.get_object("bkt", "dir/b.txt")
    assert found is not None and found.location == "/dir/b.txt"


@pytest_twisted.ensureDeferred
async def test_a_store_that_cannot_be_listed_fails_the_import_with_its_error(importer: Importer, root: Path) -> None:
    importer._config = lambda: make_config(root / "missing")
    await importer.start("files", "bkt", "")
    await finished(importer)
    (failed,) = await importer.table.imports()
    assert failed.state == "failed" and "No such file or directory" in (failed.last_error or "")


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize(("store", "bucket", "message"), [
    ("nowhere", "bkt", "no store 'nowhere' is configured"), ("files", "nobody", "no bucket 'nobody' is configured")])
async def test_unknown_names_are_refused(importer: Importer, store: str, bucket: str, message: str) -> None:
    with pytest.raises(ImportRefused, match=message) as refused:
        await importer.start(store, bucket, "")
    assert refused.value.status == 404


@pytest_twisted.ensureDeferred
async def test_the_admin_api_starts_an_import_and_shows_its_progress(
    importer: Importer, metadata: MetadataStore
) -> None:
    (endpoints, actions) = import_routes(TOKEN, importer, metadata)
    started = await actions["/imports"](AUTH, json.dumps({"store": "files", "bucket": "bkt"}).encode())
    assert started.status == 202
    assert json.loads(started.body)["import"]["state"] == "running"
    await finished(importer)
    shown = json.loads((await endpoints["/imports"](AUTH)).body)
    assert shown["instance"] == "me"
    assert [(row["state"], row["imported_objects"], row["running_here"]) for row in shown["imports"]] == [
        ("done", 2, False)]
    assert shown["stores"][0]["name"] == "files" and shown["stores"][0]["used_bytes"] == 14


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize(("body", "status"), [
    (b"[]", 400), (b"not json", 400), (b'{"store": "files"}', 400), (b'{"store": "files", "bucket": "bkt",'
                                                                      b' "prefix": 3}', 400),
    (b'{"store": "x", "bucket": "bkt"}', 404)])
async def test_the_admin_api_refuses_bad_requests(
    importer: Importer, metadata: MetadataStore, body: bytes, status: int
) -> None:
    _, actions = import_routes(TOKEN, importer, metadata)
    answer = await actions["/imports"](AUTH, body)
    assert answer.status == status and "error" in json.loads(answer.body)


@pytest_twisted.ensureDeferred
async def test_the_admin_api_wants_the_token(importer: Importer, metadata: MetadataStore) -> None:
    endpoints, actions = import_routes(TOKEN, importer, metadata)
    assert (await actions["/imports"]({}, b'{"store": "files", "bucket": "bkt"}')).status == 401
    assert (await endpoints["/imports"]({"authorization": "Bearer wrong"})).status == 401
    assert await importer.table.imports() == []


@pytest_twisted.ensureDeferred
async def test_an_import_a_dead_instance_left_running_is_resumed_a_failed_one_is_not(importer: Importer) -> None:
    await importer.table.begin("files", "bkt", "", "dead-instance", 60_000)
    await importer.table.begin("files", "bkt", "dir/", "me", 60_000)
    await importer.table.finish("files", "bkt", "dir/", "me", "store files: unreadable")
    assert await importer.resume_interrupted() == 1
    await finished(importer)
    states = {record.prefix: (record.state, record.owner) for record in await importer.table.imports()}
    assert states == {"": ("done", "me"), "dir/": ("failed", "me")}
