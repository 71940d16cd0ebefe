"""A catalog file is data, never code: what a DuckDB file made by someone else may not do.

- Its schema must be exactly what this code's migrations build at its version: no stored macro
  (one named `round` would replace DuckDB's own inside our views), no generated column, no
  default or CHECK expression of its own, no view the code did not create. Views are built by
  the code on every connection (store.views), never read from the file.
- Every data file it records must have the name of a file a catalog writes and resolve, links
  followed, inside its own data folders.
- The connections the catalog hands out read only those folders (DuckDB's allowed_directories,
  enable_external_access = false, lock_configuration = true), so no query, stored or typed, reads
  `/etc/...` or writes outside them; a user's own SQL may read files the user names (`allow`).
  A query larger than memory spills into a private folder under the system's temporary folder
  (DuckDB's default is `.tmp` in the working directory for an in-memory database, and beside the
  file, inside a catalog that may be someone else's, for a file), which DuckDB removes on close.
"""
from __future__ import annotations

import os
import tempfile
import uuid
from functools import lru_cache
from pathlib import Path

import duckdb

from kernel_catalog.errors import CatalogError
from kernel_catalog.store._owned import is_own_data_file

DATA_DIRS = ("kernels", "results")
# Views older catalogs stored in their file; shadowed by the code's TEMP views, never run.
LEGACY_VIEWS = frozenset({"kernels", "embeddings", "labels", "runs", "clusters", "models", "layers"})


def _schema(con: duckdb.DuckDBPyConnection, database: str) -> dict:
    """Everything stored in `database` that could run or change what a query means."""
    def rows(sql: str) -> list[tuple]:
        return sorted(tuple(str(v) for v in row) for row in con.execute(sql, [database]).fetchall())

    return {
        "tables": rows("SELECT schema_name, table_name FROM duckdb_tables() WHERE database_name = ? AND NOT internal"),
        "columns": rows("""SELECT c.table_name, c.column_name, c.data_type, c.column_default, c.is_generated,
                                  c.generation_expression
                           FROM duckdb_columns() c JOIN duckdb_tables() t USING (database_name, schema_name, table_name)
                           WHERE c.database_name = ? AND NOT c.internal"""),
        "constraints": rows("SELECT table_name, constraint_type, expression FROM duckdb_constraints() "
                            "WHERE database_name = ? AND constraint_type = 'CHECK'"),
        "functions": rows("SELECT schema_name, function_name FROM duckdb_functions() WHERE database_name = ? "
                          "AND NOT internal"),
        "sequences": rows("SELECT sequence_name FROM duckdb_sequences() WHERE database_name = ?"),
        "types": rows("SELECT type_name FROM duckdb_types() WHERE database_name = ? AND NOT internal"),
        "schemas": rows("SELECT schema_name FROM duckdb_schemas() WHERE database_name = ? AND NOT internal "
                        "AND schema_name <> 'main'"),
    }


@lru_cache(maxsize=None)
def _expected(version: int) -> dict:
    """The schema this code's migrations build up to `version`, in a private in-memory database."""
    from kernel_catalog.store import _migrate

    con = duckdb.connect()
    try:
        _migrate.upgrade(con, target=version)
        return _schema(con, "memory")
    finally:
        con.close()


def stored_views(con: duckdb.DuckDBPyConnection, database: str) -> set[str]:
    return {r[0] for r in con.execute("SELECT view_name FROM duckdb_views() WHERE database_name = ? "
                                      "AND NOT internal AND NOT temporary", [database]).fetchall()}


def schema_differences(con: duckdb.DuckDBPyConnection, version: int, where: str) -> list[str]:
    """How the stored schema differs from the code's at `version` (empty: it is the code's)."""
    database = con.execute("SELECT current_database()").fetchall()[0][0]
    found, expected = _schema(con, database), _expected(version)
    differences = [f"{kind}: {sorted(set(found[kind]) ^ set(expected[kind]))[:3]}"
                   for kind in found if found[kind] != expected[kind]]
    views = stored_views(con, database) - (LEGACY_VIEWS if version < _views_dropped() else set())
    if views:
        differences.append(f"views: {sorted(views)[:3]}")
    return differences


def check_schema(con: duckdb.DuckDBPyConnection, version: int, where: str, state: tuple | None = None) -> None:
    """Refuse, in one line, a catalog file whose schema is not the code's.

    `state` is file_state() of the database taken before `con` opened it: a file this process
    already checked (or committed to itself) in exactly that state is not checked again; any
    other change to the file or its WAL makes a new state, checked in full.
    """
    if state is not None and _checked.get(state[0]) == (state, version):
        return
    differences = schema_differences(con, version, where)
    if differences:
        raise CatalogError(f"catalog {where} holds objects this code did not create ({'; '.join(differences)[:300]}); "
                           "it was altered or made by something else, so nothing in it is run; "
                           "open only catalogs you trust or ask its author for a clean copy")
    if state is not None:
        mark_checked(state, version)


# Database path -> (file state, schema version) this process found to be the code's schema.
_checked: dict[str, tuple] = {}
_HEAD_BYTES = 12288     # DuckDB's file header and its two database headers (checkpoint iteration)


def file_state(db_path: Path) -> tuple:
    """(path, the database file's and its WAL's identity, size, mtime, ctime, and a digest of the
    file's headers): any write to either, even one that keeps size and timestamps, changes it."""
    import hashlib

    path = os.path.realpath(db_path)

    def stat(p: str) -> tuple | None:
        try:
            st = os.stat(p)
        except FileNotFoundError:
            return None
        return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns

    try:
        with open(path, "rb") as f:
            head = hashlib.sha256(f.read(_HEAD_BYTES)).hexdigest()
    except FileNotFoundError:
        head = None
    return path, stat(path), stat(path + ".wal"), head


def mark_checked(state: tuple, version: int) -> None:
    """Record that the database in `state` holds this code's schema at `version`."""
    _checked[state[0]] = (state, version)


def _views_dropped() -> int:
    from kernel_catalog.store._migrate import VIEWS_DROPPED_AT

    return VIEWS_DROPPED_AT


def check_recorded_paths(root: Path, paths: list[str], where: str, local: bool = True) -> None:
    """Every recorded data file is one of ours by name and (local data) inside the data folders,
    links followed."""
    real_dirs = [os.path.realpath(root / d) + os.sep for d in DATA_DIRS]
    for path in paths:
        if not is_own_data_file(path):
            raise CatalogError(f"catalog {where} records a data file '{path[:120]}' that is not a catalog file name "
                               "(it may point outside the catalog); nothing was read")
        real = os.path.realpath(root / path) if local else None
        if local and not any(real.startswith(d) for d in real_dirs):
            raise CatalogError(f"catalog {where} records a data file '{path[:120]}' that resolves outside its "
                               "data folders (a link?); nothing was read")


def lock_down(con: duckdb.DuckDBPyConnection, root: Path, allow: list[str] | tuple[str, ...] = ()) -> None:
    """From now on this connection reads and writes files only in the catalog's data folders and in
    `allow` (files or folders the user named); it cannot be turned back."""
    folders = [os.path.realpath(root / d) + os.sep for d in DATA_DIRS]
    files = []
    for entry in allow:
        real = os.path.realpath(os.path.expanduser(str(entry)))
        (folders if os.path.isdir(real) else files).append(real + (os.sep if os.path.isdir(real) else ""))
    con.execute(f"SET file_search_path = {_sql_string(str(root))}")
    con.execute("SET enable_progress_bar = false")
    con.execute(f"SET temp_directory = {_sql_string(spill_folder())}")
    con.execute(f"SET allowed_directories = [{', '.join(_sql_string(f) for f in folders)}]")
    if files:
        con.execute(f"SET allowed_paths = [{', '.join(_sql_string(f) for f in files)}]")
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")


def spill_folder() -> str:
    """A new private folder name for one connection's spilled data: created by DuckDB when a query
    outgrows memory, removed by it when the connection closes."""
    return os.path.join(tempfile.gettempdir(), f"kernel-catalog-spill-{os.getpid()}-{uuid.uuid4().hex[:12]}")


def _sql_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"
