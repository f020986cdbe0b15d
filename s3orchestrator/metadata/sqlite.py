"""The SQLite engine: one connection in WAL mode, write transactions under BEGIN IMMEDIATE."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from types import MappingProxyType
from typing import Any

from s3orchestrator.metadata.database import BaseEngine

_SYNCHRONOUS_MODES = ("OFF", "NORMAL", "FULL", "EXTRA")
# The longest a point read on the reactor thread waits for a lock (another process
# restarting the WAL, say) before it fails: everything else waits with it.
_POINT_READ_BUSY_SECONDS = 1.0


class SqliteEngine(BaseEngine):
    """SQLite through the stdlib ``sqlite3`` module.

    One connection (adbapi pool of one thread): SQLite serialises writers
    anyway, and one connection keeps every transaction of this process in order.
    Lookups by key (``Database.point_read``) use a second, read-only connection
    on the reactor thread.
    Other processes may share the file; WAL lets their readers run alongside a
    writer and ``busy_timeout`` makes writers queue instead of failing.
    """

    module = "sqlite3"
    # BEGIN IMMEDIATE already holds the database-wide write lock: nothing to add.
    for_update = ""
    schema_tokens = MappingProxyType({
        # SQLite's default BINARY collation compares TEXT with memcmp over its UTF-8
        # bytes, which is exactly S3's key order: nothing to add.
        "KEY_COLLATE": "",
        # AUTOINCREMENT: a plain INTEGER PRIMARY KEY hands out max(id)+1 and so reuses
        # the id of the newest row once it is deleted; a stale reservation id must
        # never name a newer reservation.
        "ID_PRIMARY_KEY": "INTEGER PRIMARY KEY AUTOINCREMENT",
    })

    def __init__(self, path: str, busy_timeout_ms: int = 10_000, synchronous: str = "NORMAL") -> None:
        if synchronous.upper() not in _SYNCHRONOUS_MODES:
            raise ValueError(f"synchronous must be one of {', '.join(_SYNCHRONOUS_MODES)}")
        self.path = path
        self.busy_timeout_ms = int(busy_timeout_ms)
        # NORMAL is crash-safe in WAL mode; only a power loss can drop the latest commits.
        self.synchronous = synchronous.upper()

    def pool_arguments(self) -> tuple[tuple[Any, ...], dict[str, Any]]:
        return (self.path,), {
            # adbapi closes connections from the reactor thread.
            "check_same_thread": False,
            # Autocommit mode in the module: begin() issues BEGIN itself, so the module
            # never opens (or silently commits) a transaction behind our back.
            "isolation_level": None,
            "timeout": self.busy_timeout_ms / 1000,
            "cp_min": 1,
            "cp_max": 1,
        }

    def prepare(self) -> None:
        if self.path != ":memory:" and not self.path.startswith("file:"):
            directory = os.path.dirname(os.path.abspath(self.path))
            os.makedirs(directory, exist_ok=True)

    def on_new_connection(self, connection: sqlite3.Connection) -> None:
        (mode,) = connection.execute("PRAGMA journal_mode=WAL").fetchone()
        if str(mode).lower() not in ("wal", "memory"):
            raise RuntimeError(f"SQLite database {self.path!r} cannot use WAL (journal_mode={mode})")
        connection.execute(f"PRAGMA synchronous={self.synchronous}")
        connection.execute("PRAGMA foreign_keys=ON")
        connection.execute(f"PRAGMA busy_timeout={self.busy_timeout_ms}")

    def connect_point_reader(self) -> sqlite3.Connection | None:
        """A second connection, used on the reactor thread for lookups by key.

        In WAL mode a reader does not wait for the writer (the pool's connection), so
        a lookup only costs its few microseconds. None for an in-memory database,
        which a second connection would not see.
        """
        if self.path == ":memory:" or self.path.startswith("file:"):
            return None
        timeout = min(self.busy_timeout_ms / 1000, _POINT_READ_BUSY_SECONDS)
        # Read-only: it can neither write nor create a file where the database was.
        uri = Path(self.path).absolute().as_uri() + "?mode=ro"
        return sqlite3.connect(uri, uri=True, isolation_level=None, timeout=timeout)

    def begin(self, cursor: Any, write: bool) -> None:
        cursor.execute("BEGIN IMMEDIATE" if write else "BEGIN")
