"""A PostgreSQL metadata database opened by the admin command (psycopg 3, synchronously)."""

from __future__ import annotations

import itertools
from typing import Any, Iterable, Iterator, Mapping, Sequence
from urllib.parse import unquote, urlsplit

from s3orchestrator.metadata.engines.postgres import PostgresEngine, psycopg_available, redacted_url
from s3orchestrator.metadata.offline.base import DatabaseProblem, OfflineDatabase, TableInfo, quote_identifier

#: What the admin command's sessions call themselves in pg_stat_activity (the daemon's: "s3orchestrator").
APPLICATION_NAME = "s3orchestrator-admin"
DAEMON_APPLICATION_NAME = "s3orchestrator"
DEFAULT_CONNECT_TIMEOUT = 10

# What libpq says when the server refused who we are (messages of the server's FATAL
# or of libpq itself; connection failures carry no SQLSTATE).
_AUTHENTICATION_FAILED = ("authentication failed", "no password supplied", "pg_hba.conf", "role \"")
_OWN_TABLE = """
    (SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE n.nspname = current_schema() AND c.relname = ?)
"""
_TABLE_NAME = "format('%I.%I', current_schema(), ?::text)"
_COLLATE_C = ' COLLATE "C"'


def _hidden(text: str, secrets: Iterable[str | None]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def connection_problem(error: Exception, label: str, secrets: Iterable[str | None] = ()) -> DatabaseProblem:
    """One line saying why a connection could not be made: the server unreachable,
    authentication failed, the database missing (libpq's own words after it, any of
    ``secrets`` they might quote masked)."""
    message = _hidden(" ".join(str(error).split()), secrets)
    detail = message.rpartition("failed: ")[2] if "failed: FATAL:" in message else message
    detail = detail.removeprefix("FATAL: ").strip()
    lowered = message.lower()
    if "database \"" in lowered and "does not exist" in lowered:
        kind = "the database does not exist"
    elif any(marker in lowered for marker in _AUTHENTICATION_FAILED):
        kind = "authentication failed"
    else:
        kind = "the server is unreachable"
    return DatabaseProblem(f"{label}: cannot connect: {kind} ({detail})")


class PostgresDatabase(OfflineDatabase):
    """A PostgreSQL database of the metadata schema, in the search_path's first schema."""

    def __init__(self, url: str, connection: Any) -> None:
        self.url = url
        self.connection = connection
        self.engine = PostgresEngine(url)
        self.label = f"PostgreSQL {redacted_url(url)}"
        self._cursors = itertools.count(1)

    @classmethod
    def connect(cls, url: str, environ: Mapping[str, str]) -> PostgresDatabase:
        """Connect to ``url``. Its password may come from ``environ``'s PGPASSWORD (the
        service's EnvironmentFile read by the CLI), else as libpq finds one (its
        environment, ~/.pgpass)."""
        label = f"PostgreSQL {redacted_url(url)}"
        if not psycopg_available():
            raise DatabaseProblem(
                f"{label}: needs psycopg 3 (Debian: apt install python3-psycopg;"
                " pip: pip install 's3orchestrator[postgres]')"
            )
        import psycopg
        from psycopg.conninfo import conninfo_to_dict

        # libpq's messages quote a malformed URL's pieces, which may be the password's.
        secrets = [urlsplit(url).password, unquote(urlsplit(url).password or ""), environ.get("PGPASSWORD")]
        try:
            settings = conninfo_to_dict(url)
        except psycopg.Error as error:
            raise DatabaseProblem(f"{label}: not a usable URL: {_hidden(str(error), secrets)}") from None
        options: dict[str, Any] = {"application_name": APPLICATION_NAME}
        if "connect_timeout" not in settings:
            options["connect_timeout"] = DEFAULT_CONNECT_TIMEOUT
        if "password" not in settings and environ.get("PGPASSWORD"):
            options["password"] = environ["PGPASSWORD"]
        try:
            connection = psycopg.connect(url, autocommit=False, **options)
        except psycopg.Error as error:
            raise connection_problem(error, label, secrets) from None
        return cls(url, connection)

    def begin_read(self) -> None:
        import psycopg

        # One snapshot for every table the copy reads.
        self.connection.rollback()
        self.connection.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        self.connection.read_only = True
        self.query("SELECT 1")

    def begin_write(self) -> None:
        import psycopg

        self.connection.rollback()
        self.connection.isolation_level = psycopg.IsolationLevel.READ_COMMITTED
        self.connection.read_only = False
        self.query("SELECT 1")

    def is_error(self, error: Exception) -> bool:
        import psycopg

        return isinstance(error, psycopg.Error)

    def check_usable(self) -> None:
        encoding = self.encoding()
        if encoding != "UTF8":
            raise DatabaseProblem(
                f"{self.label}: the database's encoding is {encoding}; keys need UTF8"
                " (CREATE DATABASE ... ENCODING 'UTF8' TEMPLATE template0)"
            )
        if self.current_schema() is None:
            raise DatabaseProblem(f"{self.label}: no schema of the search_path exists")

    def server_version(self) -> str:
        ((version,),) = self.query("SELECT current_setting('server_version')")
        return f"PostgreSQL {version}"

    def encoding(self) -> str:
        """The database's character encoding (keys need UTF8)."""
        ((encoding,),) = self.query("SELECT current_setting('server_encoding')")
        return str(encoding)

    def current_schema(self) -> str | None:
        """Where the tables are: the first schema of the search_path that exists."""
        ((schema,),) = self.query("SELECT current_schema()")
        return None if schema is None else str(schema)

    def other_users(self) -> str | None:
        ((count,),) = self.query(
            "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND application_name = ? AND pid <> pg_backend_pid()",
            (DAEMON_APPLICATION_NAME,),
        )
        if not count:
            return None
        return f"{count} connection{'s' if count != 1 else ''} of a running s3orchestrator"

    def can_create_tables(self) -> bool:
        ((allowed,),) = self.query(
            "SELECT current_schema() IS NOT NULL AND has_schema_privilege(current_schema(), 'CREATE')"
        )
        return bool(allowed)

    def table_names(self) -> list[str]:
        rows = self.query(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p') ORDER BY c.relname"
        )
        return [str(name) for (name,) in rows]

    def describe(self, name: str) -> TableInfo:
        columns = self.query(
            "SELECT a.attname, t.typcategory = 'S',"
            f" pg_get_serial_sequence({_TABLE_NAME}, a.attname) IS NOT NULL"
            " FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid"
            f" WHERE a.attrelid = {_OWN_TABLE} AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
            (name, name),
        )
        if not columns:
            raise DatabaseProblem(f"{self.label}: no table {name}")
        primary_key = self.query(
            "SELECT a.attname FROM pg_index i"
            " JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)"
            f" WHERE i.indrelid = {_OWN_TABLE} AND i.indisprimary"
            " ORDER BY array_position(i.indkey::int2[], a.attnum)",
            (name,),
        )
        references = self.query(
            "SELECT DISTINCT r.relname FROM pg_constraint k JOIN pg_class r ON r.oid = k.confrelid"
            f" WHERE k.conrelid = {_OWN_TABLE} AND k.contype = 'f'",
            (name,),
        )
        identities = [str(column) for column, _, serial in columns if serial]
        return TableInfo(
            name=name,
            columns=tuple(str(column) for column, _, _ in columns),
            primary_key=tuple(str(column) for (column,) in primary_key),
            text_columns=frozenset(str(column) for column, text, _ in columns if text),
            references=frozenset(str(table) for (table,) in references) - {name},
            identity=identities[0] if len(identities) == 1 else None,
        )

    def order_by(self, table: TableInfo) -> str:
        # "C": bytewise over UTF-8, as SQLite's BINARY, whatever the database's locale.
        return ", ".join(
            f"{quote_identifier(column)}{_COLLATE_C if column in table.text_columns else ''} NULLS FIRST"
            for column in table.ordering
        )

    def rows(self, table: TableInfo, columns: Sequence[str], batch_size: int) -> Iterator[tuple[Any, ...]]:
        # A server-side cursor: the rows come batch_size at a time, never the whole table.
        cursor = self.connection.cursor(name=f"s3o_rows_{next(self._cursors)}")
        try:
            cursor.itersize = batch_size
            cursor.execute(
                f"SELECT {', '.join(map(quote_identifier, columns))} FROM {quote_identifier(table.name)}"
                f" ORDER BY {self.order_by(table)}"
            )
            while batch := cursor.fetchmany(batch_size):
                yield from batch
        finally:
            cursor.close()

    def insert(self, table: TableInfo, columns: Sequence[str], rows: Iterable[tuple[Any, ...]]) -> None:
        # COPY writes identity columns as given (as INSERT ... OVERRIDING SYSTEM VALUE would).
        with self.cursor() as cursor, cursor.copy(
            f"COPY {quote_identifier(table.name)} ({', '.join(map(quote_identifier, columns))}) FROM STDIN"
        ) as copy:
            for row in rows:
                copy.write_row(row)

    def _sequence_mark(self, table: TableInfo) -> int:
        ((value,),) = self.query(
            f"SELECT pg_sequence_last_value(pg_get_serial_sequence({_TABLE_NAME}, ?)::regclass)",
            (table.name, table.identity),
        )
        return int(value or 0)

    def identity_mark(self, table: TableInfo) -> int:
        assert table.identity is not None
        return max(self.max_value(table, table.identity), self._sequence_mark(table))

    def raise_identity(self, table: TableInfo, mark: int) -> None:
        if table.identity is None or mark <= self._sequence_mark(table):
            return
        # is_called: the next value handed out is mark + 1.
        self.query(f"SELECT setval(pg_get_serial_sequence({_TABLE_NAME}, ?)::regclass, ?::bigint)",
                   (table.name, table.identity, mark))
