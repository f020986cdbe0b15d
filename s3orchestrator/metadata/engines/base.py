"""What one SQL engine does differently from the others (after Synapse's ``storage/engines``)."""

from __future__ import annotations

import re
from types import MappingProxyType
from typing import Any, Mapping

_SCHEMA_TOKEN = re.compile(r"@([A-Z_]+)@")


class BaseEngine:
    """What one SQL engine does differently from the others."""

    #: The engine's name in logs and the banner.
    name: str = ""
    #: The DB-API module adbapi imports.
    module: str = ""
    #: Appended to a SELECT that must lock the rows it reads until the transaction ends
    #: (PostgreSQL: `` FOR UPDATE``). Empty where a write transaction already holds a
    #: database-wide write lock from its first statement (SQLite's BEGIN IMMEDIATE).
    for_update: str = ""
    #: As ``for_update`` for rows the transaction will neither delete nor re-key (the store
    #: rows a reserve locks): it leaves inserts of rows that reference them free to run.
    row_lock: str = ""
    #: Replacements for the ``@NAME@`` tokens of migration files (see ``render_schema``).
    schema_tokens: Mapping[str, str] = MappingProxyType({})
    #: Run first in every migration transaction so that processes starting together migrate
    #: one after the other (empty where BEGIN IMMEDIATE already serialises writers).
    schema_lock: str = ""
    #: One statement, one ``?`` (the object's "bucket/key"), that serialises the write
    #: transactions of one object until they end (empty where BEGIN IMMEDIATE already
    #: serialises every writer). See metadata.claims.lock_key.
    key_lock: str = ""
    #: Seconds an interaction may wait for a lock another connection holds before it
    #: fails with MetadataBusy (the S3 layer answers 503 SlowDown).
    busy_timeout: float = 2.0

    def pool_arguments(self) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """Positional and keyword arguments for ``adbapi.ConnectionPool`` (after the module)."""
        raise NotImplementedError

    def prepare(self) -> None:
        """Get ready to connect (for SQLite: create the database file's directory)."""

    def on_new_connection(self, connection: Any) -> None:
        """Configure a freshly opened DB-API connection."""

    def connect_point_reader(self) -> Any | None:
        """A connection for point reads on the reactor thread, or None to read in the pool.

        Only where a read costs less than handing it to the pool's thread and back
        (an embedded database) and can never wait long for a lock.
        """
        return None

    def begin(self, cursor: Any, write: bool) -> None:
        """Start a transaction; ``write`` transactions take the write lock before any read."""
        raise NotImplementedError

    def set_lock_wait(self, cursor: Any, seconds: float) -> None:
        """Make the connection's next statements wait at most ``seconds`` for a lock."""
        raise NotImplementedError

    def set_durability(self, cursor: Any, durable: bool) -> None:
        """Before a write transaction begins: whether its commit must be on disk when it
        returns (else a power cut may lose it, never tear it); durable by default."""

    def begin_with(self, cursor: Any, write: bool, lock_wait: float, durable: bool | None = None) -> None:
        """``set_lock_wait``, ``set_durability`` (unless ``durable`` is None: a read) and
        ``begin``: the start of every transaction the database runs."""
        self.set_lock_wait(cursor, lock_wait)
        if durable is not None:
            self.set_durability(cursor, durable)
        self.begin(cursor, write)

    def is_busy(self, error: Exception) -> bool:
        """Whether ``error`` says another connection held a lock too long (retry later)."""
        return False

    def is_unavailable(self, error: Exception) -> bool:
        """Whether ``error`` says the database cannot be used at all (gone, unreadable,
        damaged, unreachable), rather than busy or a statement's own failure."""
        return False

    def is_retryable(self, error: Exception) -> bool:
        """Whether ``error`` aborted the transaction for a reason a rerun of the whole
        interaction may not meet again (a deadlock, a serialization failure)."""
        return False

    def convert_param_style(self, sql: str) -> str:
        """Rewrite ``?`` placeholders into the module's paramstyle."""
        return sql

    def render_schema(self, sql: str) -> str:
        """Replace the ``@NAME@`` tokens of a migration file by this engine's SQL."""

        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in self.schema_tokens:
                raise ValueError(f"unknown schema token @{name}@")
            return self.schema_tokens[name]

        return _SCHEMA_TOKEN.sub(replace, sql)
