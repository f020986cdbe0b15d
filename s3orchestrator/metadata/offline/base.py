"""What the admin command does with a metadata database on either engine, without a reactor."""

from __future__ import annotations

from typing import Any, Iterable, Iterator, Sequence

import attrs

from s3orchestrator.metadata.database import Transaction
from s3orchestrator.metadata.engines.base import BaseEngine

SCHEMA_VERSION_TABLE = "schema_version"


class DatabaseProblem(Exception):
    """The database cannot be used as asked; str() is one line for the operator (never a password)."""


@attrs.frozen
class TableInfo:
    """One table as the database's catalog describes it."""

    name: str
    columns: tuple[str, ...]
    #: The primary key's columns in key order; empty for a table without one.
    primary_key: tuple[str, ...]
    #: Columns holding text (ordered bytewise on every engine, see ``ordering``).
    text_columns: frozenset[str]
    #: Tables this one's foreign keys reference (itself excluded).
    references: frozenset[str]
    #: The column whose values the database assigns (an identity or AUTOINCREMENT key), if any.
    identity: str | None

    @property
    def ordering(self) -> tuple[str, ...]:
        """The columns that put the rows in one defined order: the primary key, else all."""
        return self.primary_key or self.columns


def quote_identifier(name: str) -> str:
    """``name`` as a double-quoted SQL identifier (both engines)."""
    return '"' + name.replace('"', '""') + '"'


class OfflineDatabase:
    """A metadata database opened by the admin command: one DB-API connection, used from
    one thread, transactions begun and ended explicitly. ``label`` names it for the
    operator (engine and path or URL, never the password)."""

    engine: BaseEngine
    label: str
    connection: Any

    def cursor(self) -> Any:
        """A new cursor on the connection."""
        return self.connection.cursor()

    def transaction(self, desc: str) -> Transaction:
        """The connection as the schema code's ``Transaction`` (``?`` placeholders)."""
        return Transaction(self.engine, self.cursor(), desc)

    def query(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run one statement (``?`` placeholders) in the current transaction; its rows."""
        return self.transaction("query").query(sql, args)

    def begin_read(self) -> None:
        """Start a transaction that sees one state of the database until it ends."""
        raise NotImplementedError

    def begin_write(self) -> None:
        """Start the transaction the copy writes in."""
        raise NotImplementedError

    def commit(self) -> None:
        """Commit the current transaction."""
        self.connection.commit()

    def rollback(self) -> None:
        """End the current transaction, undoing what it wrote."""
        self.connection.rollback()

    def close(self) -> None:
        """Close the connection (an open transaction is rolled back)."""
        self.connection.close()

    def server_version(self) -> str:
        """The database software's version."""
        raise NotImplementedError

    def other_users(self) -> str | None:
        """Who else uses the database right now (a running daemon), as a phrase; None if
        nobody, as far as this engine can tell."""
        return None

    def table_names(self) -> list[str]:
        """The tables of the metadata schema (the engine's own bookkeeping tables excluded)."""
        raise NotImplementedError

    def describe(self, name: str) -> TableInfo:
        """What the catalog says of the table ``name``."""
        raise NotImplementedError

    def can_create_tables(self) -> bool:
        """Whether this connection may create the schema's tables."""
        return True

    def check_usable(self) -> None:
        """Raise DatabaseProblem if the daemon could not keep its metadata here."""

    def is_error(self, error: Exception) -> bool:
        """Whether ``error`` comes from this database's driver."""
        raise NotImplementedError

    def schema_version(self) -> int | None:
        """The schema's version: None where there is no ``schema_version`` table, 0 if it is empty."""
        if SCHEMA_VERSION_TABLE not in self.table_names():
            return None
        (row,) = self.query(f"SELECT MAX(version) FROM {SCHEMA_VERSION_TABLE}")
        return 0 if row[0] is None else int(row[0])

    def count(self, table: TableInfo) -> int:
        """How many rows ``table`` holds."""
        (row,) = self.query(f"SELECT COUNT(*) FROM {quote_identifier(table.name)}")
        return int(row[0])

    def delete_all(self, table: TableInfo) -> None:
        """Delete every row of ``table``."""
        self.transaction("delete_all").execute(f"DELETE FROM {quote_identifier(table.name)}")

    def order_by(self, table: TableInfo) -> str:
        """The ORDER BY list that sorts ``table``'s rows in its ``ordering``, text bytewise
        and NULL first, as on every other engine."""
        return ", ".join(f"{quote_identifier(column)} NULLS FIRST" for column in table.ordering)

    def rows(self, table: TableInfo, columns: Sequence[str], batch_size: int) -> Iterator[tuple[Any, ...]]:
        """Every row of ``table`` (``columns``, in that order) in ``table.ordering``,
        fetched ``batch_size`` at a time."""
        cursor = self.cursor()
        try:
            cursor.execute(
                f"SELECT {', '.join(map(quote_identifier, columns))} FROM {quote_identifier(table.name)}"
                f" ORDER BY {self.order_by(table)}"
            )
            while batch := cursor.fetchmany(batch_size):
                yield from batch
        finally:
            cursor.close()

    def insert(self, table: TableInfo, columns: Sequence[str], rows: Iterable[tuple[Any, ...]]) -> None:
        """Insert ``rows`` (values of ``columns``) into ``table``, identity values as given."""
        raise NotImplementedError

    def max_value(self, table: TableInfo, column: str) -> int:
        """The largest value of the integer ``column`` in ``table``, 0 if it has no rows."""
        ((value,),) = self.query(f"SELECT MAX({quote_identifier(column)}) FROM {quote_identifier(table.name)}")
        return int(value or 0)

    def identity_mark(self, table: TableInfo) -> int:
        """The highest value ``table.identity`` has handed out (rows since deleted
        included), 0 if none."""
        raise NotImplementedError

    def raise_identity(self, table: TableInfo, mark: int) -> None:
        """Make ``table.identity`` hand out values above ``mark`` from now on."""
        raise NotImplementedError
