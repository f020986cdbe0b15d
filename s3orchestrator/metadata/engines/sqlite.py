"""The SQLite engine: one connection in WAL mode, write transactions under BEGIN IMMEDIATE."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from types import MappingProxyType
from typing import Any

from s3orchestrator.metadata.engines.base import BaseEngine

_SYNCHRONOUS_MODES = ("OFF", "NORMAL", "FULL", "EXTRA")
# The primary result codes of a lock another connection holds too long.
_BUSY_CODES = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})
# The primary result codes of a database file that cannot be used: I/O error, damaged,
# cannot be opened, not a database, a broken lock protocol (its -shm file).
_UNAVAILABLE_CODES = frozenset({
    sqlite3.SQLITE_IOERR, sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_NOTADB,
    sqlite3.SQLITE_PROTOCOL,
})
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
    writer, and a writer waits up to ``busy_timeout`` seconds for the write lock
    (then MetadataBusy). ``synchronous=FULL`` syncs the WAL at every commit: a
    commit that returned survives a power cut (NORMAL, in WAL mode, may lose the
    latest ones), and group commit makes that one sync per batch of writes.
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

    def __init__(self, path: str, busy_timeout: float = BaseEngine.busy_timeout, synchronous: str = "FULL") -> None:
        if synchronous.upper() not in _SYNCHRONOUS_MODES:
            raise ValueError(f"synchronous must be one of {', '.join(_SYNCHRONOUS_MODES)}")
        if busy_timeout < 0:
            raise ValueError("busy_timeout must be >= 0")
        self.path = path
        self.busy_timeout = float(busy_timeout)
        # Below FULL an acknowledged write may vanish in a power cut (NORMAL: the latest
        # commits; OFF: anything). Only benchmarks and tests want less.
        self.synchronous = synchronous.upper()

    def pool_arguments(self) -> tuple[tuple[Any, ...], dict[str, Any]]:
        return (self.path,), {
            # adbapi closes connections from the reactor thread.
            "check_same_thread": False,
            # Autocommit mode in the module: begin() issues BEGIN itself, so the module
            # never opens (or silently commits) a transaction behind our back.
            "isolation_level": None,
            "timeout": self.busy_timeout,
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
        # The undo log of each group-commit savepoint (a sub-journal) stays in memory:
        # past 64 KiB SQLite spills it to a temporary file it creates, writes and
        # deletes per transaction, as a PutObject's commit with a few others reaches.
        connection.execute("PRAGMA temp_store=MEMORY")
        self.set_lock_wait(connection, self.busy_timeout)

    def connect_point_reader(self) -> sqlite3.Connection | None:
        """A second connection, used on the reactor thread for lookups by key.

        In WAL mode a reader does not wait for the writer (the pool's connection), so
        a lookup only costs its few microseconds. None for an in-memory database,
        which a second connection would not see.
        """
        if self.path == ":memory:" or self.path.startswith("file:"):
            return None
        timeout = min(self.busy_timeout, _POINT_READ_BUSY_SECONDS)
        # Read-only: it can neither write nor create a file where the database was.
        uri = Path(self.path).absolute().as_uri() + "?mode=ro"
        return sqlite3.connect(uri, uri=True, isolation_level=None, timeout=timeout)

    def begin(self, cursor: Any, write: bool) -> None:
        cursor.execute("BEGIN IMMEDIATE" if write else "BEGIN")

    def set_lock_wait(self, cursor: Any, seconds: float) -> None:
        cursor.execute(f"PRAGMA busy_timeout={int(seconds * 1000)}")

    def set_durability(self, cursor: Any, durable: bool) -> None:
        # In WAL mode NORMAL appends the commit without a sync; the next synced commit
        # syncs it too, and a power cut loses at most a suffix of such commits, whole.
        level = self.synchronous
        if not durable and _SYNCHRONOUS_MODES.index(level) > _SYNCHRONOUS_MODES.index("NORMAL"):
            level = "NORMAL"
        cursor.execute(f"PRAGMA synchronous={level}")

    def is_busy(self, error: Exception) -> bool:
        # "database is locked" / "database table is locked"; extended codes carry the
        # primary code in their low byte (SQLITE_BUSY_SNAPSHOT, SQLITE_BUSY_RECOVERY...).
        code = getattr(error, "sqlite_errorcode", None)
        return isinstance(error, sqlite3.OperationalError) and code is not None and code & 0xFF in _BUSY_CODES

    def is_unavailable(self, error: Exception) -> bool:
        code = getattr(error, "sqlite_errorcode", None)
        return isinstance(error, sqlite3.DatabaseError) and code is not None and code & 0xFF in _UNAVAILABLE_CODES
