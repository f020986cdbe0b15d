"""The PostgreSQL engine: psycopg 3 through adbapi, a pool of connections, row locks."""

from __future__ import annotations

import importlib.util
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from s3orchestrator.metadata.engines.base import BaseEngine

DEFAULT_POOL_SIZE = 8
# SQLSTATEs (PostgreSQL, Appendix A): a lock not granted within lock_timeout...
_LOCK_NOT_AVAILABLE = "55P03"
# ...and the transaction aborts a rerun may not meet again.
_RETRYABLE = frozenset({"40001", "40P01"})  # serialization_failure, deadlock_detected
# ...and the server gone: connection exceptions (class 08), shut down or starting up.
_SERVER_GONE = frozenset({"57P01", "57P02", "57P03"})
# Any constant: the advisory lock migrations take (see schema.py).
_SCHEMA_LOCK_KEY = 0x53334F4D49475241  # "S3OMIGRA"
# The first key of the two-key advisory locks on object keys (a space of their own).
_KEY_LOCK_SPACE = 0x53334F4B  # "S3OK"


def _milliseconds(seconds: float) -> int:
    """``lock_timeout`` for a wait of ``seconds``: 0 means "wait forever", so never less than 1 ms."""
    return max(1, int(seconds * 1000))


def psycopg_available() -> bool:
    """Whether psycopg 3 can be imported (Debian: python3-psycopg, a Recommends)."""
    return importlib.util.find_spec("psycopg") is not None


def redacted_url(url: str) -> str:
    """``url`` without its password, for logs and the banner."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}@{host}" if user else host))


def to_pyformat(sql: str) -> str:
    """``sql`` with its ``?`` placeholders as ``%s`` and literal ``%`` doubled.

    psycopg parses ``%`` everywhere in a statement that has parameters (inside
    string literals too), so every ``%`` is doubled; a ``?`` inside a quoted
    literal or identifier stays what it is.
    """
    out: list[str] = []
    quote = ""
    for char in sql:
        if char == "%":
            out.append("%%")
            continue
        if quote:
            if char == quote:
                quote = ""
        elif char in ("'", '"'):
            quote = char
        elif char == "?":
            out.append("%s")
            continue
        out.append(char)
    return "".join(out)


class PostgresEngine(BaseEngine):
    """PostgreSQL through psycopg 3, a pool of ``pool_size`` connections.

    Connections are in autocommit mode so that ``begin`` opens each transaction
    itself (psycopg would otherwise open one implicitly, before the isolation
    level could be chosen). Transactions run at READ COMMITTED: writes lock what
    they read before writing it (``row_lock``: the rows of the stores a reserve
    takes room on; ``key_lock``: an advisory lock per object key for the changes
    of one object), and each statement sees what committed before it (so what must
    be read consistently is read in one statement, as store usage is). No point
    reader: every read goes to the pool (a network round trip costs the same from
    any thread).
    """

    name = "PostgreSQL"
    module = "psycopg"
    for_update = " FOR UPDATE"
    row_lock = " FOR NO KEY UPDATE"
    schema_lock = f"SELECT pg_advisory_xact_lock({_SCHEMA_LOCK_KEY})"
    # hashtext collisions only make two keys wait for each other.
    key_lock = f"SELECT pg_advisory_xact_lock({_KEY_LOCK_SPACE}, hashtext(?))"
    schema_tokens = MappingProxyType({
        # The default collation of a database follows its locale (en_US orders "a" < "B");
        # S3 lists keys in UTF-8 byte order, which "C" is.
        "KEY_COLLATE": 'COLLATE "C"',
        # Identity values come from a sequence and are never handed out twice.
        "ID_PRIMARY_KEY": "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
    })

    def __init__(
        self, url: str, busy_timeout: float = BaseEngine.busy_timeout, pool_size: int = DEFAULT_POOL_SIZE
    ) -> None:
        if busy_timeout < 0:
            raise ValueError("busy_timeout must be >= 0")
        if pool_size < 1:
            raise ValueError("pool_size must be >= 1")
        self.url = url
        self.busy_timeout = float(busy_timeout)
        self.pool_size = pool_size
        # Statement text -> its pyformat form; the set of statement texts is small and fixed.
        self._converted: dict[str, str] = {}

    def pool_arguments(self) -> tuple[tuple[Any, ...], dict[str, Any]]:
        return (self.url,), {
            "autocommit": True,
            "application_name": "s3orchestrator",
            "cp_min": 1,
            "cp_max": self.pool_size,
            # A connection the server closed (a restart) is replaced instead of failing forever.
            "cp_reconnect": True,
        }

    def begin(self, cursor: Any, write: bool) -> None:
        cursor.execute("BEGIN ISOLATION LEVEL READ COMMITTED")

    def set_lock_wait(self, cursor: Any, seconds: float) -> None:
        cursor.execute(f"SET lock_timeout = {_milliseconds(seconds)}")

    def set_durability(self, cursor: Any, durable: bool) -> None:
        # off: the commit returns before its WAL is flushed; a crash may lose the latest
        # such commits, whole (never corrupt), which only suits what a restart discards.
        cursor.execute(f"SET synchronous_commit = {'on' if durable else 'off'}")

    def begin_with(self, cursor: Any, write: bool, lock_wait: float, durable: bool | None = None) -> None:
        # One round trip, and one transaction in pg_stat_database, instead of a SET (an
        # autocommitted transaction of its own) for each setting: they are the transaction's (SET LOCAL).
        statement = f"BEGIN ISOLATION LEVEL READ COMMITTED; SET LOCAL lock_timeout = {_milliseconds(lock_wait)}"
        if durable is not None:
            statement += f"; SET LOCAL synchronous_commit = {'on' if durable else 'off'}"
        cursor.execute(statement)

    def is_busy(self, error: Exception) -> bool:
        return getattr(error, "sqlstate", None) == _LOCK_NOT_AVAILABLE

    def is_retryable(self, error: Exception) -> bool:
        return getattr(error, "sqlstate", None) in _RETRYABLE

    def is_unavailable(self, error: Exception) -> bool:
        # psycopg.OperationalError without a SQLSTATE: no connection could be made or kept.
        sqlstate = getattr(error, "sqlstate", None)
        if sqlstate is None:
            return type(error).__name__ == "OperationalError" and type(error).__module__.startswith("psycopg")
        return sqlstate.startswith("08") or sqlstate in _SERVER_GONE

    def convert_param_style(self, sql: str) -> str:
        converted = self._converted.get(sql)
        if converted is None:
            converted = self._converted[sql] = to_pyformat(sql)
        return converted
