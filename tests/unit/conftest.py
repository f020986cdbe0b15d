"""Fixtures shared by the unit tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from twisted.internet import reactor

from s3orchestrator.metadata.store import MetadataStore, sqlite_metadata_store


@pytest.fixture
def db_path(tmp_path: Path) -> str:
    """Where a test's SQLite metadata file goes (its directory does not exist yet)."""
    return str(tmp_path / "state" / "metadata.sqlite3")


@pytest.fixture
def make_store(db_path: str) -> Iterator[Callable[..., MetadataStore]]:
    """Builds SQLite metadata stores (at ``db_path`` unless told otherwise), closed after the test."""
    opened: list[MetadataStore] = []

    def make(path: str = db_path) -> MetadataStore:
        store = sqlite_metadata_store(path, reactor)
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.database.close()
