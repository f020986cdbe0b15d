"""check-config's look at the configured metadata database: can the daemon use it, and
at which schema version is it."""

from __future__ import annotations

from typing import Mapping

from s3orchestrator.config import MetadataConfig
from s3orchestrator.metadata.offline.base import DatabaseProblem, OfflineDatabase
from s3orchestrator.metadata.offline.postgres import PostgresDatabase
from s3orchestrator.metadata.offline.sqlite import SqliteFile
from s3orchestrator.metadata.schema import load_migrations


def _schema_state(database: OfflineDatabase, latest: int) -> str:
    version = database.schema_version()
    if not version:
        others = sorted(set(database.table_names()) - {"schema_version"})
        if others:
            raise DatabaseProblem(
                f"{database.label} holds tables ({', '.join(others[:5])}{', ...' if len(others) > 5 else ''})"
                " but no s3orchestrator schema: give the daemon a database of its own"
            )
        if not database.can_create_tables():
            raise DatabaseProblem(
                f"{database.label}: this role may not create tables in the schema; make it the database's"
                " owner (CREATE DATABASE ... OWNER role) or GRANT CREATE ON SCHEMA to it"
            )
        return "empty database; migrations will be applied at start"
    if version > latest:
        raise DatabaseProblem(
            f"{database.label} has schema version {version}, newer than this release's {latest}:"
            " run a newer release or restore a matching backup"
        )
    if version < latest:
        return f"schema version {version}; migrations {version + 1:03d} to {latest:03d} will be applied at start"
    return f"schema version {version} (current)"


def probe_metadata(config: MetadataConfig, environ: Mapping[str, str]) -> str:
    """One line on the configured database: where it is, its server, its schema version;
    DatabaseProblem if the daemon could not use it (unreachable, authentication failed,
    missing, not UTF8, schema newer than this release). Changes nothing."""
    latest = load_migrations()[-1].version
    database: OfflineDatabase | None
    if config.url is not None:
        database = PostgresDatabase.connect(config.url, environ)
    else:
        assert config.sqlite is not None  # the config has exactly one of the two
        database = SqliteFile.open_for_reading(config.sqlite)
        if database is None:
            return f"SQLite {config.sqlite}: no database file yet; it is created at start"
    try:
        database.check_usable()
        state = _schema_state(database, latest)
        return f"{database.label}: {database.server_version()}, {state}"
    except Exception as error:
        if isinstance(error, DatabaseProblem) or not database.is_error(error):
            raise
        raise DatabaseProblem(f"{database.label}: {' '.join(str(error).split())}") from None
    finally:
        database.close()
