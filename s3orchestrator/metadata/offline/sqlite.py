"""A SQLite metadata file opened by the admin command: to look at, or to own while copying."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any, Iterable, Sequence

from s3orchestrator.metadata.engines.sqlite import SqliteEngine
from s3orchestrator.metadata.offline.base import DatabaseProblem, OfflineDatabase, TableInfo, quote_identifier

# SQLite gives a column TEXT affinity when its declared type contains one of these.
_TEXT_TYPES = ("CHAR", "CLOB", "TEXT")


def _uri(path: str, **parameters: str) -> str:
    query = "&".join(f"{name}={value}" for name, value in parameters.items())
    return f"{Path(path).absolute().as_uri()}?{query}"


class SqliteFile(OfflineDatabase):
    """A SQLite metadata file. ``open_for_reading`` never changes anything on disk (it may
    run as root beside a daemon running as another user); ``open_exclusive`` holds the
    file's exclusive lock until closed, so no daemon can use it meanwhile, and fails if
    one has it open."""

    def __init__(self, path: str, connection: sqlite3.Connection, engine: SqliteEngine) -> None:
        self.path = path
        self.connection = connection
        self.engine = engine
        self.label = f"SQLite {path}"

    @classmethod
    def open_for_reading(cls, path: str) -> SqliteFile | None:
        """The file read-only, or None if there is no file at ``path``.

        Without a ``-wal`` file beside it the file is complete and opened immutable:
        a read-only connection to a WAL database would otherwise leave new ``-wal`` and
        ``-shm`` files, owned by whoever runs this, that the daemon may not be able to
        open. With one (a daemon has it open, or stopped uncleanly), read-only.
        """
        if not os.path.exists(path):
            return None
        mode = {"mode": "ro"} if os.path.exists(path + "-wal") else {"immutable": "1"}
        try:
            connection = sqlite3.connect(_uri(path, **mode), uri=True, isolation_level=None)
        except sqlite3.Error as error:
            raise DatabaseProblem(f"SQLite {path}: cannot open: {error}") from None
        database = cls(path, connection, SqliteEngine(path))
        database._check_readable()
        return database

    @classmethod
    def open_exclusive(cls, path: str, create: bool = False) -> SqliteFile:
        """The file read-write under its exclusive lock (``create``: made, with its directory,
        if missing, and set up as the daemon sets up its own)."""
        engine = SqliteEngine(path, busy_timeout=0)
        if create:
            engine.prepare()
        elif not os.path.exists(path):
            raise DatabaseProblem(f"SQLite {path}: no such file")
        try:
            connection = sqlite3.connect(_uri(path, mode="rwc" if create else "rw"), uri=True,
                                         isolation_level=None, timeout=0)
        except sqlite3.Error as error:
            raise DatabaseProblem(f"SQLite {path}: cannot open read-write: {error}") from None
        database = cls(path, connection, engine)
        try:
            # In WAL mode, EXCLUSIVE locking takes a lock no other connection may hold
            # at the same time: the first transaction fails at once if a daemon has the
            # file open, even idle, and none can open it until this connection closes.
            connection.execute("PRAGMA locking_mode=EXCLUSIVE")
            if create:
                engine.on_new_connection(connection)
            connection.execute("BEGIN EXCLUSIVE")
            connection.execute("COMMIT")
        except sqlite3.Error as error:
            connection.close()
            if engine.is_busy(error):
                raise DatabaseProblem(
                    f"SQLite {path} is in use by another process (a running s3orchestrator?): stop it first"
                ) from None
            raise DatabaseProblem(f"SQLite {path}: {error}") from None
        database._check_readable()
        return database

    def _check_readable(self) -> None:
        try:
            self.connection.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
        except sqlite3.Error as error:
            self.connection.close()
            raise DatabaseProblem(f"SQLite {self.path}: {error}") from None

    def begin_read(self) -> None:
        self.connection.execute("BEGIN")

    def begin_write(self) -> None:
        self.connection.execute("BEGIN IMMEDIATE")

    def commit(self) -> None:
        self.connection.execute("COMMIT")

    def rollback(self) -> None:
        if self.connection.in_transaction:
            self.connection.execute("ROLLBACK")

    def is_error(self, error: Exception) -> bool:
        return isinstance(error, sqlite3.Error)

    def server_version(self) -> str:
        return f"SQLite {sqlite3.sqlite_version}"

    def table_names(self) -> list[str]:
        rows = self.query(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'"
            " ORDER BY name"
        )
        return [str(name) for (name,) in rows]

    def describe(self, name: str) -> TableInfo:
        quoted = quote_identifier(name)
        columns = self.query(f"PRAGMA table_info({quoted})")
        if not columns:
            raise DatabaseProblem(f"{self.label}: no table {name}")
        (sql,) = self.query("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (name,))[0]
        primary_key = tuple(str(column[1]) for column in sorted(columns, key=lambda c: c[5]) if column[5])
        autoincrement = "AUTOINCREMENT" in str(sql).upper()
        return TableInfo(
            name=name,
            columns=tuple(str(column[1]) for column in columns),
            primary_key=primary_key,
            text_columns=frozenset(
                str(column[1]) for column in columns if any(t in str(column[2]).upper() for t in _TEXT_TYPES)
            ),
            references=frozenset(str(row[2]) for row in self.query(f"PRAGMA foreign_key_list({quoted})")) - {name},
            identity=primary_key[0] if autoincrement and len(primary_key) == 1 else None,
        )

    def order_by(self, table: TableInfo) -> str:
        # BINARY (memcmp over UTF-8) is SQLite's default; said anyway, against a column
        # declared with another collation.
        return ", ".join(
            f"{quote_identifier(column)}{' COLLATE BINARY' if column in table.text_columns else ''} NULLS FIRST"
            for column in table.ordering
        )

    def insert(self, table: TableInfo, columns: Sequence[str], rows: Iterable[tuple[Any, ...]]) -> None:
        placeholders = ", ".join("?" for _ in columns)
        self.connection.executemany(
            f"INSERT INTO {quote_identifier(table.name)} ({', '.join(map(quote_identifier, columns))})"
            f" VALUES ({placeholders})",
            rows,
        )

    def _sequence(self, table: TableInfo) -> int:
        if not self.query("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'sqlite_sequence'"):
            return 0
        row = self.query("SELECT seq FROM sqlite_sequence WHERE name = ?", (table.name,))
        return int(row[0][0]) if row and row[0][0] is not None else 0

    def identity_mark(self, table: TableInfo) -> int:
        assert table.identity is not None
        return max(self.max_value(table, table.identity), self._sequence(table))

    def raise_identity(self, table: TableInfo, mark: int) -> None:
        if table.identity is None or mark <= self._sequence(table):
            return
        txn = self.transaction("raise_identity")
        txn.execute("UPDATE sqlite_sequence SET seq = ? WHERE name = ?", (mark, table.name))
        if txn.rowcount == 0:
            txn.execute("INSERT INTO sqlite_sequence (name, seq) VALUES (?, ?)", (table.name, mark))
