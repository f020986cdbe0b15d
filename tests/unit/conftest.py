"""Fixtures shared by the unit tests.

The metadata tests run on every engine: ``engine_name`` is "sqlite" (a file under
the test's tmp_path) or "postgres" (a schema of its own in a database this test
session creates from ``S3O_TEST_POSTGRES_DSN`` and drops at its end; skipped, saying
so, when the variable is unset or psycopg is not installed). ``events`` collects what
the test logs.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import pytest
from twisted.internet import reactor
from twisted.logger import LogEvent, globalLogPublisher

from s3orchestrator.metadata.database import Database
from s3orchestrator.metadata.engines import BaseEngine, PostgresEngine, SqliteEngine
from s3orchestrator.metadata.store import MetadataStore

POSTGRES_DSN_VARIABLE = "S3O_TEST_POSTGRES_DSN"
ENGINES = ("sqlite", "postgres")


def _with_database(dsn: str, database: str) -> str:
    return urlunsplit(urlsplit(dsn)._replace(path=f"/{database}"))


@pytest.fixture(scope="session")
def postgres_dsn() -> Iterator[str]:
    """The URL of a PostgreSQL database created for this test session (dropped after it)."""
    dsn = os.environ.get(POSTGRES_DSN_VARIABLE)
    if not dsn:
        pytest.skip(f"PostgreSQL tests need {POSTGRES_DSN_VARIABLE} (e.g. postgresql://postgres@127.0.0.1:5432/test)")
    psycopg = pytest.importorskip("psycopg", reason="PostgreSQL tests need psycopg 3")
    name = f"s3o_test_{secrets.token_hex(6)}"
    with psycopg.connect(dsn, autocommit=True) as admin:
        # A locale whose default order is not bytewise ("a" < "B"), so that the tests see
        # the keys' COLLATE "C" at work; where ICU is missing, the server's default.
        try:
            admin.execute(
                f"CREATE DATABASE {name} LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C.UTF-8' TEMPLATE template0"
            )
        except psycopg.Error:
            admin.execute(f"CREATE DATABASE {name}")
    try:
        yield _with_database(dsn, name)
    finally:
        with psycopg.connect(dsn, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(params=ENGINES)
def engine_name(request: pytest.FixtureRequest) -> str:
    """Which engine a metadata test runs on; tests marked ``sqlite_only`` skip PostgreSQL."""
    if request.param == "postgres" and request.node.get_closest_marker("sqlite_only"):
        pytest.skip("tests a SQLite-specific behaviour")
    return str(request.param)


@pytest.fixture
def db_path(tmp_path: Path) -> str:
    """Where a test's SQLite metadata file goes (its directory does not exist yet); on
    PostgreSQL, the name of the test's database (each name gets its own schema)."""
    return str(tmp_path / "state" / "metadata.sqlite3")


@pytest.fixture
def engine_url(engine_name: str, request: pytest.FixtureRequest) -> Iterator[Callable[[str], str]]:
    """Maps a ``db_path``-like name to where the engine keeps that database: the path
    itself on SQLite, on PostgreSQL a URL whose search_path is a schema of its own."""
    if engine_name == "sqlite":
        yield lambda path: path
        return
    dsn: str = request.getfixturevalue("postgres_dsn")  # skips first without a server or psycopg
    import psycopg

    schemas: dict[str, str] = {}

    def url(path: str) -> str:
        if path not in schemas:
            schemas[path] = f"t_{secrets.token_hex(6)}"
            with psycopg.connect(dsn, autocommit=True) as connection:
                connection.execute(f"CREATE SCHEMA {schemas[path]}")
        return f"{dsn}?options={quote(f'-csearch_path={schemas[path]}')}"

    yield url
    with psycopg.connect(dsn, autocommit=True) as connection:
        for schema in schemas.values():
            connection.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture
def postgres_schema_url(postgres_dsn: str) -> Iterator[Callable[[], str]]:
    """Makes URLs of empty databases, as far as a client sees: each a schema of its own
    (first on the URL's search_path) in the session's database, dropped after the test."""
    import psycopg

    schemas: list[str] = []

    def make() -> str:
        schemas.append(f"m_{secrets.token_hex(6)}")
        with psycopg.connect(postgres_dsn, autocommit=True) as connection:
            connection.execute(f"CREATE SCHEMA {schemas[-1]}")
        return f"{postgres_dsn}?options={quote(f'-csearch_path={schemas[-1]}')}"

    yield make
    with psycopg.connect(postgres_dsn, autocommit=True) as connection:
        for name in schemas:
            connection.execute(f"DROP SCHEMA {name} CASCADE")


@pytest.fixture
def make_engine(engine_name: str, engine_url: Callable[[str], str], db_path: str) -> Callable[..., BaseEngine]:
    """Builds an engine of ``engine_name`` on the database ``path`` (default ``db_path``)."""

    def make(path: str = db_path, **options: Any) -> BaseEngine:
        if engine_name == "sqlite":
            return SqliteEngine(engine_url(path), **options)
        return PostgresEngine(engine_url(path), **options)

    return make


@pytest.fixture
def db_rows(engine_name: str, engine_url: Callable[[str], str], db_path: str) -> Callable[..., list[tuple[Any, ...]]]:
    """Runs one SQL statement (``?`` placeholders) on the database ``path`` outside any
    store, in its own transaction, committed; returns its rows (none for a statement
    that returns none)."""

    def run(sql: str, args: tuple[Any, ...] = (), path: str = db_path) -> list[tuple[Any, ...]]:
        if engine_name == "sqlite":
            import sqlite3

            with sqlite3.connect(path) as connection:
                return connection.execute(sql, args).fetchall()
        import psycopg

        engine = PostgresEngine(engine_url(path))
        with psycopg.connect(engine.url) as connection:
            cursor = connection.execute(engine.convert_param_style(sql), args)
            return cursor.fetchall() if cursor.description is not None else []

    return run


@pytest.fixture
def make_store(make_engine: Callable[..., BaseEngine], db_path: str) -> Iterator[Callable[..., MetadataStore]]:
    """Builds metadata stores on the test's engine (at ``db_path`` unless told otherwise;
    owning what they reserve as instance ``instance_id``), closed after the test."""
    opened: list[MetadataStore] = []

    def make(path: str = db_path, instance_id: str = "test:1", clock: Any = None, **options: Any) -> MetadataStore:
        store = MetadataStore(Database(make_engine(path, **options), reactor), clock, instance_id=instance_id)
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.database.close()


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[Callable[..., MetadataStore]]:
    """Builds metadata stores on the test's SQLite file, ``metadata.sqlite3`` in its
    tmp_path, on SQLite only (tests of what runs over the metadata rather than of it),
    as instance ``instance_id`` on ``clock`` (default: the reactor); closed after the test."""
    opened: list[MetadataStore] = []

    def make(instance_id: str = "", clock: Any = None) -> MetadataStore:
        store = MetadataStore(Database(SqliteEngine(str(tmp_path / "metadata.sqlite3")), reactor), clock,
                              instance_id=instance_id)
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.database.close()


@pytest.fixture
def events() -> Iterator[list[LogEvent]]:
    """Every event logged while the test runs."""
    captured: list[LogEvent] = []
    globalLogPublisher.addObserver(captured.append)
    yield captured
    globalLogPublisher.removeObserver(captured.append)
