"""PostgreSQL helpers shared by the benchmark scripts: the server to use, databases of
their own (created on demand, dropped at the end), their transaction counts, and the
backend processes serving them (for their CPU time)."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Mapping
from urllib.parse import urlsplit, urlunsplit

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
#: Seconds until idle PostgreSQL backends have published their transaction counts
#: (PostgreSQL 15: at most once a second, at the latest 10 s after going idle).
STATS_FLUSH_WAIT = 11.0


def bench_dsn() -> str:
    """The admin DSN: ``S3O_BENCH_POSTGRES_DSN``, else ``S3O_TEST_POSTGRES_DSN``, else ``DEFAULT_DSN``."""
    return os.environ.get("S3O_BENCH_POSTGRES_DSN") or os.environ.get("S3O_TEST_POSTGRES_DSN") or DEFAULT_DSN


class Databases:
    """The bench's PostgreSQL databases on the admin DSN's server: created on demand, all dropped at the end.

    psycopg is imported when first needed: scripts that may run without PostgreSQL import this module."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.names: list[str] = []
        self.prefix = f"s3o_bench_{secrets.token_hex(4)}"

    def create(self, suffix: str) -> tuple[str, str]:
        """(name, URL) of a new empty database owned by the DSN's role."""
        name = f"{self.prefix}_{suffix.lower()}"
        import psycopg

        with psycopg.connect(self.dsn, autocommit=True) as admin:
            admin.execute(f"CREATE DATABASE {name}")
        self.names.append(name)
        return name, urlunsplit(urlsplit(self.dsn)._replace(path=f"/{name}"))

    def transactions(self) -> dict[str, int]:
        """Transactions committed or rolled back so far in each of the bench's databases."""
        import psycopg

        with psycopg.connect(self.dsn, autocommit=True) as admin:
            rows = admin.execute("SELECT datname, xact_commit + xact_rollback FROM pg_stat_database"
                                 " WHERE datname = ANY(%s)", (self.names,)).fetchall()
        return {name: int(count) for name, count in rows}

    def drop_all(self) -> None:
        import psycopg

        with psycopg.connect(self.dsn, autocommit=True) as admin:
            for name in self.names:
                admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def process_table() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, command line) of every process now."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError, ValueError):
            continue  # ended meanwhile
        table[int(entry.name)] = (parent, command)
    return table


def descendants(table: Mapping[int, tuple[int, str]], root: int) -> list[int]:
    """``root`` and every process below it."""
    children: dict[int, list[int]] = {}
    for pid, (parent, _) in table.items():
        children.setdefault(parent, []).append(pid)
    found, pending = [], [root]
    while pending:
        pid = pending.pop()
        found.append(pid)
        pending.extend(children.get(pid, ()))
    return found


def backends(table: Mapping[int, tuple[int, str]], database: str) -> list[int]:
    """The PostgreSQL backends connected to ``database`` (title "postgres: [cluster: ]user database host ...")."""
    return [pid for pid, (_, command) in table.items()
            if command.startswith("postgres: ") and database in command.split()]
