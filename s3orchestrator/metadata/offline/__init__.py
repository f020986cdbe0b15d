"""The metadata database as the admin command uses it: synchronously, without a reactor
(check-config looks at it, migrate-metadata copies one database into another).

A database is named by a spec: ``sqlite:PATH`` or a ``postgresql://`` URL.
"""

from __future__ import annotations

from typing import Mapping

from s3orchestrator.metadata.engines.postgres import redacted_url
from s3orchestrator.metadata.offline.base import DatabaseProblem, OfflineDatabase, TableInfo
from s3orchestrator.metadata.offline.postgres import PostgresDatabase
from s3orchestrator.metadata.offline.sqlite import SqliteFile

_POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def describe_spec(spec: str) -> str:
    """``spec`` as shown to the operator: engine and path or URL, never the password."""
    if spec.startswith("sqlite:"):
        return f"SQLite {spec.removeprefix('sqlite:')}"
    return f"PostgreSQL {redacted_url(spec)}"


def check_spec(spec: str, option: str) -> None:
    """Refuse a spec that names no database (``option`` names it in the message)."""
    if spec.startswith("sqlite:") and spec.removeprefix("sqlite:"):
        return
    if spec.startswith(_POSTGRES_SCHEMES):
        return
    raise DatabaseProblem(f"{option}: expected sqlite:PATH or a postgresql:// URL (got {redacted_url(spec)!r})")


def open_exclusive(spec: str, environ: Mapping[str, str], create: bool = False) -> OfflineDatabase:
    """The database ``spec`` names, for copying from (or into, ``create``: a missing
    SQLite file is made). A SQLite file is held under its exclusive lock."""
    if spec.startswith("sqlite:"):
        return SqliteFile.open_exclusive(spec.removeprefix("sqlite:"), create=create)
    return PostgresDatabase.connect(spec, environ)


__all__ = [
    "DatabaseProblem", "OfflineDatabase", "PostgresDatabase", "SqliteFile", "TableInfo", "check_spec",
    "describe_spec", "open_exclusive",
]
