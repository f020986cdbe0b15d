"""check-config's look at the metadata database, through ``main(argv)``: SQLite here,
PostgreSQL when S3O_TEST_POSTGRES_DSN names a server (skipped, saying so, without)."""

from __future__ import annotations

import io
import os
import socket
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
import pytest_twisted
from twisted.internet import reactor

from s3orchestrator.cli import main
from s3orchestrator.metadata.database import Database
from s3orchestrator.metadata.engines import PostgresEngine, SqliteEngine
from s3orchestrator.metadata.offline.postgres import connection_problem
from s3orchestrator.metadata.schema import load_migrations
from s3orchestrator.metadata.store import MetadataStore

LATEST = load_migrations()[-1].version

CONFIG = """\
[server]
listen = "tcp:9000:interface=127.0.0.1"
[metadata]
{metadata}
[[buckets]]
name = "app1-files"
  [[buckets.credentials]]
  access_key_id = "AKID_APP1_WRITER"
  secret_access_key = "s"
[[stores]]
name = "local-a"
type = "directory"
path = "stores/a"
quota_bytes = 0
"""


def check(tmp_path: Path, metadata: str, *options: str) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of check-config on a config whose [metadata] is ``metadata``."""
    path = tmp_path / "s3orchestrator.toml"
    path.write_text(CONFIG.format(metadata=metadata))
    out, err = io.StringIO(), io.StringIO()
    status = main(["check-config", str(path), "--env-file", str(tmp_path / "none"), *options],
                  stdout=out, stderr=err, environ={})
    return status, out.getvalue(), err.getvalue()


async def migrated(engine: SqliteEngine | PostgresEngine) -> None:
    """The database brought to this release's schema by the daemon's own start."""
    store = MetadataStore(Database(engine, reactor))
    await store.start()
    await store.stop()


# -- SQLite --------------------------------------------------------------------------------


def test_a_missing_sqlite_file_is_fine_and_not_created(tmp_path) -> None:
    database = tmp_path / "var" / "metadata.sqlite"
    status, out, err = check(tmp_path, f'sqlite = "{database}"')
    assert (status, err) == (0, "")
    assert out.splitlines() == [
        f"metadata: SQLite {database}: no database file yet; it is created at start",
        f"{tmp_path / 's3orchestrator.toml'}: OK",
    ]
    assert not database.parent.exists()


@pytest_twisted.ensureDeferred
async def test_a_current_sqlite_file_is_read_without_leaving_files_beside_it(tmp_path) -> None:
    database = tmp_path / "var" / "metadata.sqlite"
    await migrated(SqliteEngine(str(database)))
    before = sorted(os.listdir(database.parent))
    status, out, err = check(tmp_path, f'sqlite = "{database}"')
    assert (status, err) == (0, "")
    assert out.splitlines()[0].startswith(f"metadata: SQLite {database}: SQLite 3.")
    assert out.splitlines()[0].endswith(f", schema version {LATEST} (current)")
    # A -wal or -shm owned by whoever ran the check (root) could lock the daemon out.
    assert sorted(os.listdir(database.parent)) == before


@pytest_twisted.ensureDeferred
async def test_an_older_sqlite_schema_is_migrated_at_start(tmp_path) -> None:
    database = tmp_path / "metadata.sqlite"
    await migrated(SqliteEngine(str(database)))
    _execute_sqlite(database, "DELETE FROM schema_version WHERE version >= ?", (LATEST - 1,))
    status, out, _ = check(tmp_path, f'sqlite = "{database}"')
    assert status == 0
    assert out.splitlines()[0].endswith(
        f", schema version {LATEST - 2}; migrations {LATEST - 1:03d} to {LATEST:03d} will be applied at start")


@pytest_twisted.ensureDeferred
async def test_a_newer_sqlite_schema_fails_the_check(tmp_path) -> None:
    database = tmp_path / "metadata.sqlite"
    await migrated(SqliteEngine(str(database)))
    _execute_sqlite(database, "INSERT INTO schema_version VALUES (?, 'future', 0)", (LATEST + 1,))
    status, out, err = check(tmp_path, f'sqlite = "{database}"')
    assert (status, out) == (1, "")
    assert err == (f"{tmp_path / 's3orchestrator.toml'}: metadata: SQLite {database} has schema version"
                   f" {LATEST + 1}, newer than this release's {LATEST}: run a newer release or restore a"
                   " matching backup\n")


def test_a_file_that_is_no_database_fails_the_check_unless_offline(tmp_path) -> None:
    database = tmp_path / "metadata.sqlite"
    database.write_text("not a database, " * 100)
    status, _, err = check(tmp_path, f'sqlite = "{database}"')
    assert status == 1
    assert err.endswith(f"metadata: SQLite {database}: file is not a database\n")
    offline = check(tmp_path, f'sqlite = "{database}"', "--offline")
    assert offline == (0, f"{tmp_path / 's3orchestrator.toml'}: OK\n", "")


def _execute_sqlite(path: Path, sql: str, args: tuple[object, ...]) -> None:
    import sqlite3

    connection = sqlite3.connect(path)
    try:
        with connection:
            connection.execute(sql, args)
    finally:
        connection.close()


# -- PostgreSQL ----------------------------------------------------------------------------


def test_an_empty_postgresql_database_will_be_migrated_at_start(tmp_path, postgres_schema_url) -> None:
    url = postgres_schema_url()
    status, out, err = check(tmp_path, f'url = "{url}"')
    assert (status, err) == (0, "")
    assert out.splitlines()[0] == (
        f"metadata: PostgreSQL {url}: PostgreSQL {_server_version(url)}, empty database;"
        " migrations will be applied at start")


@pytest_twisted.ensureDeferred
async def test_a_current_postgresql_database_shows_its_schema_version(tmp_path, postgres_schema_url) -> None:
    url = postgres_schema_url()
    await migrated(PostgresEngine(url))
    status, out, err = check(tmp_path, f'url = "{url}"')
    assert (status, err) == (0, "")
    assert out.splitlines()[0].endswith(f", schema version {LATEST} (current)")


@pytest_twisted.ensureDeferred
async def test_a_newer_postgresql_schema_fails_the_check(tmp_path, postgres_schema_url) -> None:
    url = postgres_schema_url()
    await migrated(PostgresEngine(url))
    import psycopg

    with psycopg.connect(url) as connection:
        connection.execute("INSERT INTO schema_version VALUES (%s, 'future', 0)", (LATEST + 1,))
    status, _, err = check(tmp_path, f'url = "{url}"')
    assert status == 1
    assert f"has schema version {LATEST + 1}, newer than this release's {LATEST}" in err


def test_a_postgresql_database_holding_other_tables_fails_the_check(tmp_path, postgres_schema_url) -> None:
    url = postgres_schema_url()
    import psycopg

    with psycopg.connect(url) as connection:
        connection.execute("CREATE TABLE invoices (id INTEGER)")
    status, _, err = check(tmp_path, f'url = "{url}"')
    assert status == 1
    assert "holds tables (invoices) but no s3orchestrator schema" in err


def test_an_unreachable_server_fails_the_check_without_showing_the_password(tmp_path) -> None:
    pytest.importorskip("psycopg", reason="needs psycopg 3 (Debian: python3-psycopg)")
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    status, out, err = check(tmp_path, f'url = "postgresql://s3o:pw-secret-1@127.0.0.1:{port}/s3o"')
    assert (status, out) == (1, "")
    assert f"metadata: PostgreSQL postgresql://s3o@127.0.0.1:{port}/s3o: cannot connect:" in err
    assert "cannot connect: the server is unreachable (" in err
    assert "pw-secret-1" not in err


def test_a_missing_database_fails_the_check(tmp_path, postgres_dsn) -> None:
    url = urlunsplit(urlsplit(postgres_dsn)._replace(path="/s3o_no_such_database"))
    status, _, err = check(tmp_path, f'url = "{url}"')
    assert status == 1
    assert 'cannot connect: the database does not exist (database "s3o_no_such_database" does not exist)' in err


def test_a_role_that_may_not_create_tables_fails_the_check(tmp_path, postgres_dsn, postgres_schema_url) -> None:
    import psycopg

    url = postgres_schema_url()
    role, schema = f"s3o_reader_{os.getpid()}", url.rpartition("%3D")[2]
    with psycopg.connect(postgres_dsn, autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {role} LOGIN")
        admin.execute(f"GRANT USAGE ON SCHEMA {schema} TO {role}")
    try:
        parts = urlsplit(url)
        as_role = urlunsplit(parts._replace(netloc=f"{role}@{parts.hostname}:{parts.port or 5432}"))
        status, _, err = check(tmp_path, f'url = "{as_role}"')
        assert status == 1
        assert "this role may not create tables in the schema" in err
    finally:
        with psycopg.connect(postgres_dsn, autocommit=True) as admin:
            admin.execute(f"DROP OWNED BY {role}")
            admin.execute(f"DROP ROLE {role}")


def test_a_malformed_url_fails_the_check_without_showing_the_password(tmp_path) -> None:
    pytest.importorskip("psycopg", reason="needs psycopg 3 (Debian: python3-psycopg)")
    status, _, err = check(tmp_path, 'url = "postgresql://s3o:pw-%zz-secret@db/s3o"')
    assert status == 1
    assert 'metadata: PostgreSQL postgresql://s3o@db/s3o: not a usable URL: invalid percent-encoded token: "***"' in err
    assert "secret" not in err


def test_without_psycopg_the_check_says_what_to_install(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr("s3orchestrator.metadata.offline.postgres.psycopg_available", lambda: False)
    status, _, err = check(tmp_path, 'url = "postgresql://s3o:pw-secret-3@db/s3o"')
    assert status == 1
    assert err.endswith("metadata: PostgreSQL postgresql://s3o@db/s3o: needs psycopg 3 (Debian: apt install"
                        " python3-psycopg; pip: pip install 's3orchestrator[postgres]')\n")
    assert "pw-secret-3" not in err


@pytest.mark.parametrize(("message", "said"), [
    ('connection failed: connection to server at "db" (10.0.0.5), port 5432 failed: FATAL:  password'
     ' authentication failed for user "s3o"', 'authentication failed (password authentication failed for user "s3o")'),
    ('connection failed: connection to server at "db" (10.0.0.5), port 5432 failed: fe_sendauth: no password'
     ' supplied', "authentication failed ("),
    ('connection failed: connection to server at "db" (10.0.0.5), port 5432 failed: FATAL:  no pg_hba.conf entry'
     ' for host "10.0.0.9", user "s3o", database "s3o", no encryption', "authentication failed (no pg_hba.conf"),
    ('connection failed: connection to server at "db" (10.0.0.5), port 5432 failed: FATAL:  role "s3o" does not'
     " exist", 'authentication failed (role "s3o" does not exist)'),
    ("failed to resolve host 'db': [Errno -2] Name or service not known", "the server is unreachable ("),
])
def test_connection_failures_are_named(message: str, said: str) -> None:
    problem = connection_problem(Exception(message), "PostgreSQL postgresql://s3o@db/s3o")
    assert str(problem).startswith(f"PostgreSQL postgresql://s3o@db/s3o: cannot connect: {said}")


def _server_version(url: str) -> str:
    import psycopg

    with psycopg.connect(url) as connection:
        return str(connection.execute("SHOW server_version").fetchone()[0])


# -- migrate-metadata ----------------------------------------------------------------------


def migrate(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = main(["migrate-metadata", *argv, "--env-file", "/nonexistent"], stdout=out, stderr=err, environ={})
    return status, out.getvalue(), err.getvalue()


async def with_stores(engine: SqliteEngine | PostgresEngine, *names: str) -> None:
    store = MetadataStore(Database(engine, reactor))
    await store.start()
    await store.sync_stores([(name, 0) for name in names])
    await store.stop()


@pytest_twisted.ensureDeferred
async def test_migrate_metadata_prints_each_table_and_the_verdict(tmp_path, postgres_schema_url) -> None:
    source = tmp_path / "metadata.sqlite"
    await with_stores(SqliteEngine(str(source)), "a", "b")
    url = postgres_schema_url()
    parts = urlsplit(url)
    with_password = urlunsplit(parts._replace(netloc=f"postgres:pw-secret-2@{parts.hostname}:{parts.port}"))
    status, out, err = migrate("--from", f"sqlite:{source}", "--to", with_password)
    assert (status, err) == (0, "")
    lines = out.splitlines()
    assert lines[0] == (f"copying SQLite {source} into PostgreSQL {url} (every daemon using either must be"
                        " stopped)")
    assert f"schema: applied migrations 001 to {LATEST:03d}" in lines
    assert "stores: copied 2 rows" in lines
    assert any(line.startswith("stores ") and line.endswith(" ok") and " 2 " in line for line in lines)
    assert lines[-1].startswith(f"verified: schema version {LATEST}, ")
    assert lines[-1].endswith(f" 2 rows; PostgreSQL {url} committed")
    assert "pw-secret-2" not in out


@pytest_twisted.ensureDeferred
async def test_migrate_metadata_refuses_a_target_that_holds_rows(tmp_path) -> None:
    source, target = tmp_path / "a.sqlite", tmp_path / "b.sqlite"
    await with_stores(SqliteEngine(str(source)), "a")
    await with_stores(SqliteEngine(str(target)), "b")
    status, _, err = migrate("--from", f"sqlite:{source}", "--to", f"sqlite:{target}")
    assert status == 1
    assert err == (f"s3orchestrator migrate-metadata: SQLite {target} is not empty (rows: stores 1): copy into an"
                   " empty database, or pass --replace to delete what it holds\n")
    assert migrate("--from", f"sqlite:{source}", "--to", f"sqlite:{target}", "--replace")[0] == 0


@pytest.mark.parametrize(("argv", "said"), [
    (("--from", "/var/lib/m.sqlite", "--to", "sqlite:b"), "--from: expected sqlite:PATH or a postgresql:// URL"),
    (("--from", "sqlite:a", "--to", "mysql://u:pw@h/d"), "--to: expected sqlite:PATH or a postgresql:// URL"),
    (("--from", "sqlite:a", "--to", "sqlite:a"), "--from and --to name the same database"),
    (("--from", "sqlite:/nonexistent/m.sqlite", "--to", "sqlite:b"), "SQLite /nonexistent/m.sqlite: no such file"),
])
def test_migrate_metadata_refuses_what_names_no_usable_database(argv: tuple[str, ...], said: str) -> None:
    status, _, err = migrate(*argv)
    assert status == 1
    assert err.startswith(f"s3orchestrator migrate-metadata: {said}")
    assert "pw" not in err
