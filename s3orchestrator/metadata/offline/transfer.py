"""Copy a metadata database into another (SQLite to PostgreSQL, or back), then prove the copy.

The daemon must be stopped: the source is read in one snapshot (a SQLite file under its
exclusive lock), the target written in one transaction (schema, rows, identity
sequences), which commits only if every table's row count and checksum match the
source's. The tables come from the catalog, so tables later releases add are copied
without a change here; they are filled in foreign-key order, streamed in batches.
"""

from __future__ import annotations

import graphlib
import hashlib
from typing import Any, Callable, Iterable, Iterator, Sequence

import attrs

from s3orchestrator.metadata.offline.base import SCHEMA_VERSION_TABLE, DatabaseProblem, OfflineDatabase, TableInfo
from s3orchestrator.metadata.schema import SchemaTooNew, load_migrations, migrate_transaction

DEFAULT_BATCH_SIZE = 1000


class RowDigest:
    """Row count and SHA-256 over rows in order, the same for equal values on every engine."""

    def __init__(self) -> None:
        self.rows = 0
        self._hash = hashlib.sha256()

    def add(self, row: Sequence[Any]) -> None:
        """Count ``row`` and hash its values (type-tagged and length-prefixed, so that no
        two different rows hash alike)."""
        self.rows += 1
        for value in row:
            if isinstance(value, bool):
                value = int(value)
            if value is None:
                encoded = b"n"
            elif isinstance(value, int):
                encoded = b"i" + str(value).encode()
            elif isinstance(value, str):
                encoded = b"s" + value.encode("utf-8", "surrogatepass")
            elif isinstance(value, (bytes, bytearray, memoryview)):
                encoded = b"b" + bytes(value)
            elif isinstance(value, float):
                encoded = b"f" + repr(value).encode()
            else:
                encoded = b"o" + str(value).encode()
            self._hash.update(len(encoded).to_bytes(8, "big") + encoded)

    def counted(self, rows: Iterable[Sequence[Any]]) -> Iterator[Any]:
        """``rows``, each added on its way through."""
        for row in rows:
            self.add(row)
            yield row

    @property
    def checksum(self) -> str:
        """The hex SHA-256 of the rows so far."""
        return self._hash.hexdigest()


@attrs.frozen
class TableResult:
    """One table's rows and checksums on both sides."""

    name: str
    source_rows: int
    target_rows: int
    source_checksum: str
    target_checksum: str

    @property
    def matches(self) -> bool:
        """Whether the target holds exactly the source's rows."""
        return (self.source_rows, self.source_checksum) == (self.target_rows, self.target_checksum)


@attrs.frozen
class IdentityResult:
    """Where a database-assigned key continues on the target."""

    table: str
    column: str
    source_mark: int  # the highest value the source handed out
    target_mark: int  # the same on the target: new rows get values above it

    @property
    def matches(self) -> bool:
        """Whether the target can never hand out a value the source already used."""
        return self.target_mark >= self.source_mark


@attrs.frozen
class TransferReport:
    """What was copied and whether it checked out (the target committed only if so)."""

    schema_version: int
    tables: tuple[TableResult, ...]
    identities: tuple[IdentityResult, ...]
    schema_versions_match: bool

    @property
    def verified(self) -> bool:
        """Every table, identity and the schema history match."""
        return (self.schema_versions_match and all(table.matches for table in self.tables)
                and all(identity.matches for identity in self.identities))


def _schema_history(database: OfflineDatabase) -> list[tuple[Any, ...]]:
    return database.query(f"SELECT version, name FROM {SCHEMA_VERSION_TABLE} ORDER BY version")


def _check_source(source: OfflineDatabase, latest: int) -> int:
    version = source.schema_version()
    if version is None or version == 0:
        raise DatabaseProblem(f"{source.label} holds no s3orchestrator metadata (no schema version)")
    if version < latest:
        raise DatabaseProblem(
            f"{source.label} has schema version {version}, this release {latest}: start this release's"
            " daemon on it once (it migrates the schema at start), stop it, then copy it"
        )
    if version > latest:
        raise DatabaseProblem(
            f"{source.label} has schema version {version}, newer than this release's {latest}:"
            " copy it with the release that wrote it"
        )
    return version


def _fill_order(tables: dict[str, TableInfo]) -> list[str]:
    """Table names, each after the tables its foreign keys reference."""
    sorter: graphlib.TopologicalSorter[str] = graphlib.TopologicalSorter()
    for name in sorted(tables):
        sorter.add(name, *sorted(tables[name].references & tables.keys()))
    try:
        return list(sorter.static_order())
    except graphlib.CycleError as error:
        raise DatabaseProblem(f"the tables' foreign keys form a cycle: {error.args[1]}") from None


def _matching_tables(source: OfflineDatabase, target: OfflineDatabase) -> dict[str, tuple[TableInfo, TableInfo]]:
    source_names = set(source.table_names()) - {SCHEMA_VERSION_TABLE}
    target_names = set(target.table_names()) - {SCHEMA_VERSION_TABLE}
    if source_names != target_names:
        raise DatabaseProblem(
            f"the schemas differ: only in the source {sorted(source_names - target_names)},"
            f" only in the target {sorted(target_names - source_names)}"
        )
    pairs = {}
    for name in sorted(source_names):
        from_table, to_table = source.describe(name), target.describe(name)
        if set(from_table.columns) != set(to_table.columns) or from_table.primary_key != to_table.primary_key:
            raise DatabaseProblem(
                f"table {name} differs: source columns {from_table.columns} key {from_table.primary_key},"
                f" target columns {to_table.columns} key {to_table.primary_key}"
            )
        pairs[name] = (from_table, to_table)
    return pairs


def _empty_target(target: OfflineDatabase, tables: dict[str, TableInfo], order: list[str], replace: bool) -> None:
    held = {name: rows for name in order if (rows := target.count(tables[name]))}
    if not held:
        return
    if not replace:
        listed = ", ".join(f"{name} {rows}" for name, rows in held.items())
        raise DatabaseProblem(
            f"{target.label} is not empty (rows: {listed}): copy into an empty database,"
            " or pass --replace to delete what it holds"
        )
    for name in reversed(order):
        target.delete_all(tables[name])


def transfer(
    source: OfflineDatabase,
    target: OfflineDatabase,
    now_ms: int,
    replace: bool = False,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: Callable[[str], None] = lambda line: None,
) -> TransferReport:
    """Copy every table of ``source`` into ``target`` and verify the copy; ``target``
    commits only if the report says ``verified``, else nothing changes there.

    Raises DatabaseProblem, changing nothing, if either database is in use, the source's
    schema is not this release's, or the target is not empty (``replace``: empty it first).
    """
    latest = load_migrations()[-1].version
    for database in (source, target):
        user = database.other_users()
        if user is not None:
            raise DatabaseProblem(f"{database.label} is in use ({user}): stop every daemon using it first")
    source.begin_read()
    target.begin_write()
    try:
        version = _check_source(source, latest)
        target.check_usable()
        try:
            applied = migrate_transaction(target.transaction("migrate"), now_ms)
        except SchemaTooNew as error:
            raise DatabaseProblem(f"{target.label}: {error}") from None
        if applied:
            progress(f"schema: applied migrations {applied[0]:03d} to {applied[-1]:03d}")
        pairs = _matching_tables(source, target)
        targets = {name: pair[1] for name, pair in pairs.items()}
        order = _fill_order(targets)
        _empty_target(target, targets, order, replace)

        digests: dict[str, RowDigest] = {}
        for name in order:
            from_table, to_table = pairs[name]
            digest = digests[name] = RowDigest()
            target.insert(to_table, from_table.columns,
                          digest.counted(source.rows(from_table, from_table.columns, batch_size)))
            progress(f"{name}: copied {digest.rows} rows")

        identities = []
        for name in order:
            from_table, to_table = pairs[name]
            if to_table.identity is None:
                continue
            if from_table.identity == to_table.identity:
                mark = source.identity_mark(from_table)
            else:
                mark = source.max_value(from_table, to_table.identity)
            target.raise_identity(to_table, mark)
            identities.append(IdentityResult(name, to_table.identity, mark, target.identity_mark(to_table)))

        results = []
        for name in order:
            from_table, to_table = pairs[name]
            copied = RowDigest()
            for row in target.rows(to_table, from_table.columns, batch_size):
                copied.add(row)
            results.append(TableResult(name, digests[name].rows, copied.rows, digests[name].checksum, copied.checksum))
        report = TransferReport(version, tuple(results), tuple(identities),
                                _schema_history(source) == _schema_history(target))
        if report.verified:
            target.commit()
        else:
            target.rollback()
        return report
    except DatabaseProblem:
        target.rollback()
        raise
    except Exception as error:
        target.rollback()
        if source.is_error(error) or target.is_error(error):
            reason = " ".join(str(error).split())
            raise DatabaseProblem(f"the copy failed, {target.label} is unchanged: {reason}") from None
        raise
    finally:
        source.rollback()
