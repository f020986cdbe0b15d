"""Where the test daemons keep their metadata: a SQLite file beside each daemon, or a
schema of its own in this run's PostgreSQL database.

A run (each pytest-xdist worker is one) creates one database on the server
``S3O_TEST_POSTGRES_DSN`` names, ``s3o_suite_<random>``, commented with this host and
process id, and drops it at its end; a run that was killed leaves its database behind,
and the next run on this host drops it (its process is gone). A schema per daemon, not
a database: creating and dropping a database costs seconds (checkpoints), a schema
milliseconds. Each test's schemas are dropped when it ends.
"""

from __future__ import annotations

import os
import re
import secrets
import socket
import sqlite3
import tomllib
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import quote, urlsplit, urlunsplit

POSTGRES_DSN_VARIABLE = "S3O_TEST_POSTGRES_DSN"
ENGINES = ("sqlite", "postgres")
_PREFIX = "s3o_suite_"
_COMMENT = re.compile(r"^s3orchestrator tests on (?P<host>\S+), pid (?P<pid>\d+)$")


def _with_database(dsn: str, database: str) -> str:
    return urlunsplit(urlsplit(dsn)._replace(path=f"/{database}"))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class PostgresServer:
    """The run's database on the PostgreSQL server of ``dsn`` (created by ``open``)."""

    def __init__(self, dsn: str) -> None:
        import psycopg

        self._psycopg = psycopg
        self.dsn = dsn
        self.database = f"{_PREFIX}{secrets.token_hex(6)}"
        self.url = _with_database(dsn, self.database)

    def open(self) -> None:
        """Drop what killed runs on this host left, then create this run's database."""
        with self._psycopg.connect(self.dsn, autocommit=True) as admin:
            self._drop_leftovers(admin)
            # A locale whose default order is not bytewise ("a" < "B"), so that listings show
            # the keys' COLLATE "C" at work; where ICU is missing, the server's default.
            try:
                admin.execute(f"CREATE DATABASE {self.database} LOCALE_PROVIDER icu ICU_LOCALE 'en-US'"
                              " LOCALE 'C.UTF-8' TEMPLATE template0")
            except self._psycopg.Error:
                admin.execute(f"CREATE DATABASE {self.database}")
            comment = f"s3orchestrator tests on {socket.gethostname()}, pid {os.getpid()}"
            admin.execute(f"COMMENT ON DATABASE {self.database} IS '{comment}'")

    def _drop_leftovers(self, admin: Any) -> None:
        rows = admin.execute(
            "SELECT datname, shobj_description(oid, 'pg_database') FROM pg_database WHERE datname LIKE %s",
            (f"{_PREFIX}%",),
        ).fetchall()
        for name, comment in rows:
            owner = _COMMENT.match(comment or "")
            if owner and owner["host"] == socket.gethostname() and not _alive(int(owner["pid"])):
                admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def close(self) -> None:
        """Drop the run's database (whatever schemas are left in it)."""
        with self._psycopg.connect(self.dsn, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {self.database} WITH (FORCE)")

    def create_schema(self) -> str:
        """A new empty schema in the run's database; returns its name."""
        name = f"d_{secrets.token_hex(6)}"
        with self._psycopg.connect(self.url, autocommit=True) as connection:
            connection.execute(f"CREATE SCHEMA {name}")
        return name

    def drop_schemas(self, names: list[str]) -> None:
        """Drop ``names`` (their daemons stopped); one still locked is left to ``close``."""
        with self._psycopg.connect(self.url, autocommit=True) as connection:
            connection.execute("SET lock_timeout = '5s'")
            for name in names:
                try:
                    connection.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")
                except self._psycopg.errors.LockNotAvailable:
                    pass

    def schema_url(self, schema: str) -> str:
        """The URL a daemon uses for its metadata in ``schema``."""
        return f"{self.url}?options={quote(f'-csearch_path={schema}')}"


class MetadataPlaces:
    """Where the daemons of one test keep their metadata (``url(directory)``: None for a
    SQLite file in the daemon's directory, else a PostgreSQL URL, one schema per directory)."""

    def __init__(self, engine: str, server: PostgresServer | None) -> None:
        self.engine = engine
        self._server = server
        self._schemas: dict[Path, str] = {}

    def url(self, directory: Path) -> str | None:
        """The ``[metadata] url`` for a daemon whose directory is ``directory`` (a daemon
        restarted in the same directory finds its metadata again)."""
        if self._server is None:
            return None
        if directory not in self._schemas:
            self._schemas[directory] = self._server.create_schema()
        return self._server.schema_url(self._schemas[directory])

    def close(self) -> None:
        """Drop the test's schemas (after its daemons stopped)."""
        if self._server is not None and self._schemas:
            self._server.drop_schemas(list(self._schemas.values()))
            self._schemas.clear()


def daemon_metadata(config: Path) -> tuple[str, str]:
    """("sqlite", path) or ("postgres", url): where the daemon of ``config`` keeps its metadata."""
    with config.open("rb") as file:
        table = tomllib.load(file)["metadata"]
    return ("postgres", table["url"]) if "url" in table else ("sqlite", table["sqlite"])


# ``stores`` with each store's usage as one number, summed from its counter rows (schema 8
# moved used_bytes and object_count to store_usage): a temporary view, which both engines
# look up before the table of the same name (whose name the view's own query bound when
# it was made), so that tests read usage as ``stores.used_bytes``.
_STORES_WITH_USAGE = (
    "CREATE TEMP VIEW stores AS SELECT s.name, s.quota_bytes, s.config_order,"
    " COALESCE((SELECT SUM(u.used_bytes) FROM {schema}store_usage u WHERE u.store = s.name), 0) AS used_bytes,"
    " COALESCE((SELECT SUM(u.object_count) FROM {schema}store_usage u WHERE u.store = s.name), 0) AS object_count"
    " FROM {schema}stores s"
)


def run_sql(config: Path, sql: str, args: tuple[Any, ...] = (), write: bool = False) -> list[tuple[Any, ...]]:
    """One statement (``?`` placeholders) on the metadata of the daemon of ``config``, while
    it runs, in a transaction of its own (committed); its rows, none for a statement that
    returns none. A read (not ``write``) opens a SQLite database read-only and sees
    ``stores`` with each store's ``used_bytes`` and ``object_count``."""
    engine, where = daemon_metadata(config)
    if engine == "sqlite":
        db = sqlite3.connect(f"file:{where}" + ("" if write else "?mode=ro"), uri=True)
        try:
            with db:
                if not write:
                    db.execute(_STORES_WITH_USAGE.format(schema="main."))
                cursor = db.execute(sql, args)
                return cursor.fetchall() if cursor.description is not None else []
        finally:
            db.close()
    import psycopg

    from s3orchestrator.metadata.engines.postgres import to_pyformat

    with psycopg.connect(where) as connection:
        if not write:
            connection.execute(_STORES_WITH_USAGE.format(schema=""))
        cursor = connection.execute(to_pyformat(sql) if args else sql, args or None)
        return cursor.fetchall() if cursor.description is not None else []


@contextmanager
def write_locked(config: Path) -> Iterator[None]:
    """Hold the write lock of the daemon's metadata from another connection (SQLite:
    BEGIN IMMEDIATE; PostgreSQL: the stores table locked EXCLUSIVE, which every change
    of usage waits for while plain reads go on) until the block ends."""
    engine, where = daemon_metadata(config)
    if engine == "sqlite":
        other: Any = sqlite3.connect(where, isolation_level=None, check_same_thread=False)
        begin, lock = "BEGIN IMMEDIATE", None
    else:
        import psycopg

        other = psycopg.connect(where, autocommit=True)
        begin, lock = "BEGIN", "LOCK TABLE stores IN EXCLUSIVE MODE"
    try:
        other.execute(begin)
        if lock:
            other.execute(lock)
        yield
    finally:
        other.execute("ROLLBACK")
        other.close()
