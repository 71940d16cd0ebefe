"""The catalog on disk: a folder with one DuckDB file (metadata, views) and Parquet datasets.

    <root>/catalog.duckdb          metadata tables + views (schema managed by catalog.migrate)
    <root>/kernels/model=<m>/*.parquet   kernel values, hive-partitioned by model
    <root>/results/...             analysis results (appended, keyed by run and kernel_id)
    <root>/.lock                   writer lock (see catalog.lock)

Readers open the DuckDB file read-only and never take the writer lock. A writer takes the lock,
does its slow work (reading sources, writing Parquet under temporary names) without holding the
database, then opens it read-write only for the commit.
"""
from __future__ import annotations

import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import duckdb
import pyarrow as pa

from kernel_catalog.store import _migrate as migrate
from kernel_catalog.errors import CatalogError
from kernel_catalog.store.faults import crash_point
from kernel_catalog.store._lock import exclusive_lock
from kernel_catalog.store.views import refresh_views

DEFAULT_ROOT = "kernel-catalog"
ROOT_ENV = "KERNEL_CATALOG"
DB_NAME = "catalog.duckdb"
DATA_DIRS = ("kernels", "results")
# Tables whose `path` column lists the data files a catalog owns; anything else is an orphan.
FILE_TABLES = ("kernel_files", "result_files")


def default_root() -> Path:
    return Path(os.environ.get(ROOT_ENV) or DEFAULT_ROOT)


def _is_lock_error(error: Exception) -> bool:
    return "lock" in str(error).lower()


class Catalog:
    """A catalog folder. Cheap to create; connections are opened per use and closed after."""

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root if root is not None else default_root()).absolute()

    def __repr__(self) -> str:
        return f"Catalog({str(self.root)!r})"

    @property
    def db_path(self) -> Path:
        return self.root / DB_NAME

    def exists(self) -> bool:
        return self.db_path.is_file()

    def _connect(self, read_only: bool, wait: float) -> duckdb.DuckDBPyConnection:
        deadline = time.monotonic() + wait
        while True:
            try:
                con = duckdb.connect(str(self.db_path), read_only=read_only)
                break
            except duckdb.IOException as error:
                if not _is_lock_error(error):
                    raise CatalogError(f"cannot open catalog {self.root}: {error}") from None
                if time.monotonic() >= deadline:
                    raise CatalogError(
                        f"catalog {self.root} is being written by another process; "
                        "retry in a moment or pass --wait SECONDS"
                    ) from None
                time.sleep(0.1)
        return self.point_at_root(con)

    def point_at_root(self, con: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
        """Resolve the views' relative Parquet paths against this catalog's folder."""
        con.execute(f"SET file_search_path = '{str(self.root).replace(chr(39), chr(39) * 2)}'")
        return con

    @contextmanager
    def reader(self, wait: float = 10.0) -> Iterator[duckdb.DuckDBPyConnection]:
        """A read-only connection; never takes the writer lock (upgrades an old schema first)."""
        if not self.exists():
            raise CatalogError(
                f"no catalog at {self.root}; create one with `catalog ingest SOURCE` "
                "or point --catalog / KERNEL_CATALOG at an existing one"
            )
        con = self._connect(read_only=True, wait=wait)
        version = migrate.current_version(con)
        if version != migrate.head_version():
            migrate.check_not_newer(version, str(self.root))
            con.close()
            with self.writer(wait=wait):
                pass   # opening a writer upgrades the schema in place
            con = self._connect(read_only=True, wait=wait)
        try:
            yield con
        finally:
            con.close()

    @contextmanager
    def snapshot(self, wait: float = 10.0) -> Iterator[duckdb.DuckDBPyConnection]:
        """A private in-memory copy of the metadata with the same views over the committed files.

        For long reads (exports): the catalog database is open only while its small tables are
        copied, so writers are not kept waiting; the kernels themselves are read from Parquet,
        which takes no database lock. (A writer that replaces a model meanwhile deletes its old
        file after its commit; a long read of that model then fails cleanly.)
        """
        with self.reader(wait=wait) as source:
            names = [row[0] for row in source.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_type = 'BASE TABLE'").fetchall()]
            tables = {name: source.sql(f'SELECT * FROM "{name}"').to_arrow_table() for name in names}
        con = self.point_at_root(duckdb.connect())
        try:
            for name, table in tables.items():
                con.register("copied", table)
                con.execute(f'CREATE TABLE "{name}" AS SELECT * FROM copied')
                con.unregister("copied")
            refresh_views(con)
            yield con
        finally:
            con.close()

    @contextmanager
    def writer(self, wait: float | None = None) -> Iterator["WriteSession"]:
        """Exclusive write access: our lock, then the database read-write, schema upgraded.

        Callers do their slow work (reading a source) before entering, so readers are kept out
        only for the Parquet write and the commit.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        with exclusive_lock(self.root / ".lock", wait=wait, what=f"catalog {self.root}"):
            con = self._connect(read_only=False, wait=30.0 if wait is None else max(wait, 30.0))
            try:
                applied = migrate.upgrade(con, where=str(self.root))
                session = WriteSession(self, con)
                if applied or not _has_view(con, "kernels"):
                    with session.transaction():
                        pass
                session.remove_orphans()
                yield session
            finally:
                con.close()

    def sql(self, query: str, params: list | None = None) -> pa.Table:
        """Run a read-only query and return an Arrow table (`.to_pandas()` if pandas is installed)."""
        from kernel_catalog.store.query import run_query

        return run_query(self, query, params)

    def sqlalchemy_engine(self):
        """A read-only SQLAlchemy engine (duckdb-engine) for pandas.read_sql and ORM users.

        Dispose it when done: a closed SQLAlchemy connection keeps the file lock until then.
        """
        from sqlalchemy import create_engine

        if not self.exists():
            raise CatalogError(f"no catalog at {self.root}")
        return create_engine(
            f"duckdb:///{self.db_path}",
            connect_args={"read_only": True, "config": {"file_search_path": str(self.root)}},
        )


class WriteSession:
    """Inside `Catalog.writer()`: stage files, then commit metadata in one transaction."""

    def __init__(self, catalog: Catalog, con: duckdb.DuckDBPyConnection):
        self.catalog = catalog
        self.root = catalog.root
        self.con = con

    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """Run the block in one transaction; views are rebuilt inside it, then it commits.

        Readers see the new files and the new rows at the same instant. Any exception (or a
        kill) before COMMIT leaves the database exactly as it was.
        """
        con = self.con
        con.execute("BEGIN TRANSACTION")
        try:
            yield con
            refresh_views(con)
            crash_point("before-commit")
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise

    def committed_paths(self) -> set[str]:
        paths: set[str] = set()
        for table in FILE_TABLES:
            if _has_table(self.con, table):
                paths.update(row[0] for row in self.con.execute(f"SELECT path FROM {table}").fetchall())
        return paths

    def remove_orphans(self) -> list[str]:
        """Delete data files no committed row refers to (left by a write that died midway)."""
        committed = self.committed_paths()
        removed = []
        for folder in DATA_DIRS:
            for path in sorted((self.root / folder).rglob("*")):
                relative = path.relative_to(self.root).as_posix()
                if path.is_file() and relative not in committed:
                    path.unlink()
                    removed.append(relative)
        for folder in DATA_DIRS:   # empty partition folders, deepest first
            for path in sorted((self.root / folder).rglob("*"), key=lambda p: -len(p.parts)):
                if path.is_dir() and not any(path.iterdir()):
                    path.rmdir()
        return removed


def _has_table(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    return con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = ? AND table_type = 'BASE TABLE'",
        [name],
    ).fetchall()[0][0] > 0


def _has_view(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    return con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = ? AND table_type = 'VIEW'",
        [name],
    ).fetchall()[0][0] > 0
