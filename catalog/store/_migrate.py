"""Versioned schema for the catalog's DuckDB metadata: numbered SQL files in migrations/.

Why not alembic: with DuckDB 2.0, duckdb-engine cannot reflect (so autogenerate fails), alembic
needs a dialect shim, and it runs DDL outside a transaction. DuckDB itself has transactional DDL,
so applying `NNNN_name.sql` files in order, each with its version bump in one transaction, gives
an upgrade that either happens whole or not at all, in ~60 lines we test directly.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

import duckdb

from kernel_catalog.errors import CatalogError

_MIGRATION_FILE = re.compile(r"^(\d{4})_(\w+)\.sql$")
# From this version on no view is stored in the file (migration 0009; store.views builds them).
VIEWS_DROPPED_AT = 9


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def available_migrations() -> list[Migration]:
    """Every migration shipped in the `migrations` package, in version order."""
    found = []
    for entry in resources.files("kernel_catalog.migrations").iterdir():
        match = _MIGRATION_FILE.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), match.group(2), entry.read_text()))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise RuntimeError(f"migrations must be numbered 1..n without gaps, found {versions}")
    return found


def _python_steps() -> dict[str, tuple]:
    """Python steps a migration runs after its SQL, by name (backfills SQL cannot compute)."""
    from kernel_catalog.store._layer_backfill import backfill

    return {"layer_metrics": (backfill,)}   # 0006


def head_version() -> int:
    return len(available_migrations())


def has_table(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    """Whether the database has a base table of that name (never a view: a stored view is not read)."""
    return con.execute(      # duckdb_tables(): base tables only, ~10x cheaper than information_schema
        "SELECT count(*) FROM duckdb_tables() WHERE table_name = ?", [name]).fetchall()[0][0] > 0


def current_version(con: duckdb.DuckDBPyConnection) -> int:
    """Schema version of an open catalog database (0 for an empty database)."""
    if not has_table(con, "schema_version"):
        return 0
    return con.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchall()[0][0]


def check_not_newer(version: int, where: str) -> None:
    head = head_version()
    if version > head:
        raise CatalogError(
            f"catalog {where} has schema version {version}, newer than this kernel-catalog "
            f"understands ({head}); upgrade kernel-catalog (pip install -U kernel-catalog)"
        )


def upgrade(con: duckdb.DuckDBPyConnection, target: int | None = None, where: str = "",
            version: int | None = None) -> list[int]:
    """Apply pending migrations up to `target` (default: head); returns the versions applied.
    `version`: the connection's current_version(), when the caller just read it."""
    version = current_version(con) if version is None else version
    check_not_newer(version, where)
    if version >= (head_version() if target is None else target):
        return []
    applied = []
    for migration in available_migrations():
        if migration.version <= version or (target is not None and migration.version > target):
            continue
        con.execute("BEGIN TRANSACTION")
        try:
            con.execute(
                "CREATE TABLE IF NOT EXISTS schema_version "
                "(version INTEGER NOT NULL, name VARCHAR NOT NULL, applied_at TIMESTAMP NOT NULL)"
            )
            con.execute(migration.sql)
            for step in _python_steps().get(migration.name, ()):
                step(con)   # data a migration cannot compute in SQL, same transaction
            con.execute(
                "INSERT INTO schema_version VALUES (?, ?, current_timestamp::TIMESTAMP)",
                [migration.version, migration.name],
            )
            con.execute("COMMIT")
        except Exception:
            con.execute("ROLLBACK")
            raise
        applied.append(migration.version)
    return applied
