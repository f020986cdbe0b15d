"""Versioned schema migrations: ``migrations/NNN_name.sql`` applied in order at start.

Each file runs in its own write transaction together with the row that records
it in ``schema_version``, so a migration is applied entirely or not at all (DDL
is transactional on both engines), and two processes starting at once apply it
once (SQLite: BEGIN IMMEDIATE; PostgreSQL: the engine's ``schema_lock``). The
same files serve every engine: ``@NAME@`` tokens are replaced by the engine's SQL. A database whose version is newer
than the newest file this code ships is refused (``SchemaTooNew``): it was
migrated by a newer release and this one may misread it.
"""

from __future__ import annotations

import re
from importlib import resources
from typing import Any, Generator, Sequence

import attrs
from twisted.internet.defer import Deferred, inlineCallbacks

from s3orchestrator.metadata.database import Database, Transaction

_FILE_NAME = re.compile(r"^(\d{3})_([a-z0-9_]+)\.sql$")

_CREATE_VERSION_TABLE = """
CREATE TABLE IF NOT EXISTS schema_version (
    version INTEGER NOT NULL PRIMARY KEY,
    name TEXT NOT NULL,
    applied_ms BIGINT NOT NULL
)
"""


class SchemaError(Exception):
    """The schema cannot be brought to the version this code expects."""


class SchemaTooNew(SchemaError):
    """The database was migrated by a newer release than this one."""


@attrs.frozen
class Migration:
    """One schema change: ``version`` counts from 1, ``sql`` holds its statements."""

    version: int
    name: str
    sql: str


def load_migrations(package: str = "s3orchestrator.metadata", directory: str = "migrations") -> list[Migration]:
    """The migration files shipped as package data, in version order (1, 2, ... without gaps)."""
    found: list[Migration] = []
    for entry in resources.files(package).joinpath(directory).iterdir():
        match = _FILE_NAME.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), match.group(2), entry.read_text(encoding="utf-8")))
    found.sort(key=lambda migration: migration.version)
    for expected, migration in enumerate(found, start=1):
        if migration.version != expected:
            raise SchemaError(
                f"migration files must be numbered 001, 002, ... without gaps; found {migration.version:03d}"
            )
    return found


def split_statements(sql: str) -> list[str]:
    """Split a migration file into statements at the ``;`` outside quotes and comments.

    Comments are dropped. Statements with nested ``;`` (trigger bodies) are not supported.
    """
    statements: list[str] = []
    current: list[str] = []
    i, n = 0, len(sql)
    while i < n:
        char = sql[i]
        if sql.startswith("--", i):
            end = sql.find("\n", i)
            i = n if end < 0 else end
            continue
        if sql.startswith("/*", i):
            end = sql.find("*/", i + 2)
            if end < 0:
                raise SchemaError("unterminated /* comment in migration")
            i = end + 2
            current.append(" ")
            continue
        if char in ("'", '"'):
            end = i + 1
            while True:
                end = sql.find(char, end)
                if end < 0:
                    raise SchemaError("unterminated quote in migration")
                if sql.startswith(char * 2, end):  # doubled quote: an escaped one
                    end += 2
                    continue
                break
            current.append(sql[i : end + 1])
            i = end + 1
            continue
        if char == ";":
            statements.append("".join(current).strip())
            current = []
        else:
            current.append(char)
        i += 1
    statements.append("".join(current).strip())
    return [statement for statement in statements if statement]


def _current_version(txn: Transaction) -> int:
    row = txn.query_one("SELECT MAX(version) FROM schema_version")
    return int(row[0]) if row and row[0] is not None else 0


def _check_version(txn: Transaction, latest: int) -> int:
    if txn.engine.schema_lock:
        # PostgreSQL's write transactions take no lock at BEGIN: without this, two processes
        # starting at once would both create schema_version or apply the same migration.
        txn.execute(txn.engine.schema_lock)
    txn.execute(_CREATE_VERSION_TABLE)
    current = _current_version(txn)
    if current > latest:
        raise SchemaTooNew(
            f"the metadata database has schema version {current}, newer than {latest}, the newest"
            " this release knows; run a newer release or restore a matching backup"
        )
    return current


def _apply(txn: Transaction, migration: Migration, latest: int, now_ms: int) -> bool:
    # Checked again under the write lock: another process may have migrated meanwhile.
    current = _check_version(txn, latest)
    if current >= migration.version:
        return False
    if current != migration.version - 1:
        raise SchemaError(f"cannot apply migration {migration.version:03d} to schema version {current}")
    for statement in split_statements(txn.engine.render_schema(migration.sql)):
        txn.execute(statement)
    txn.execute(
        "INSERT INTO schema_version (version, name, applied_ms) VALUES (?, ?, ?)",
        (migration.version, migration.name, now_ms),
    )
    return True


def migrate_transaction(txn: Transaction, now_ms: int, migrations: Sequence[Migration] | None = None) -> list[int]:
    """Apply the pending migrations inside ``txn``, one transaction the caller ends (the
    admin command's copy of a database: schema and rows commit together); the versions applied."""
    if migrations is None:
        migrations = load_migrations()
    latest = migrations[-1].version if migrations else 0
    return [migration.version for migration in migrations if _apply(txn, migration, latest, now_ms)]


@inlineCallbacks
def migrate(
    database: Database, migrations: Sequence[Migration] | None = None
) -> Generator[Deferred[Any], Any, list[int]]:
    """Apply the pending migrations in order; fire with the list of versions applied."""
    if migrations is None:
        migrations = load_migrations()
    latest = migrations[-1].version if migrations else 0
    yield database.runInteraction("check_schema_version", _check_version, latest, write=True)
    applied: list[int] = []
    for migration in migrations:
        now_ms = int(database.reactor.seconds() * 1000)
        done = yield database.runInteraction(
            f"migrate_{migration.version:03d}_{migration.name}", _apply, migration, latest, now_ms, write=True
        )
        if done:
            applied.append(migration.version)
    return applied


def schema_version(database: Database) -> Deferred[int]:
    """The schema version of the database (0 before any migration)."""

    def read(txn: Transaction) -> int:
        if txn.engine.schema_lock:
            txn.execute(txn.engine.schema_lock)
        txn.execute(_CREATE_VERSION_TABLE)
        return _current_version(txn)

    return database.runInteraction("schema_version", read, write=True)
