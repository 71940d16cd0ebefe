"""The catalog on disk: a folder with one DuckDB file (metadata, views) and Parquet datasets.

    <root>/catalog.duckdb          metadata tables + views (schema managed by catalog.migrate)
    <root>/kernels/model=<m>/*.parquet   kernel values, hive-partitioned by model
    <root>/results/...             analysis results (appended, keyed by run and kernel_id)
    <root>/.lock                   writer lock (see catalog.lock)

With a data root URI (`init(data_root="s3://bucket/prefix")`, recorded in the settings table)
the Parquet lives under the URI instead (store.datafs); the metadata stays in <root> with the
driver, the main-schema views stay empty, and every connection handed out by reader() and
snapshot() shadows them with TEMP views over pyarrow datasets of the committed files (DuckDB
pushes partition filters and projections down; no httpfs needed). After each commit the writer
publishes catalog.duckdb next to the data; `Catalog("s3://bucket/prefix")` opens that published
snapshot read-only from a local cache.

Readers open the DuckDB file read-only and never take the writer lock. A writer takes the lock,
does its slow work (reading sources, writing Parquet under temporary names) without holding the
database, then opens it read-write only for the commit.
"""
from __future__ import annotations

import os
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Iterator

import duckdb
import pyarrow as pa

from kernel_catalog.store import _migrate as migrate
from kernel_catalog.errors import CatalogError
from kernel_catalog.store.faults import crash_point
from kernel_catalog.store._lock import exclusive_lock
from kernel_catalog.store.views import refresh_views
from kernel_catalog.store import _published
from kernel_catalog.store.datafs import DataRoot, is_uri

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
        location = root if root is not None else default_root()
        # A URI names a published catalog (read-only); its snapshot is cached in a local folder.
        self.uri = str(location).rstrip("/") if is_uri(location) else None
        self.root = _published.cache_folder(self.uri) if self.uri else Path(location).absolute()
        self._data: DataRoot | None = None
        self._fetched = False
        self._held = 0            # > 0 while hold() keeps the writer lock for this instance
        self._writer_location: str | None = None

    def __repr__(self) -> str:
        return f"Catalog({self.uri or str(self.root)!r})"

    @property
    def location(self) -> str:
        return self.uri or str(self.root)

    @property
    def data(self) -> DataRoot:
        """Where this catalog's Parquet lives (the catalog folder unless a data root was set)."""
        if self._data is None:
            if self.uri:
                self._data = DataRoot(self.root, self.uri)
            elif self.exists():
                with self.reader():
                    pass          # reads the settings table
            else:
                return DataRoot(self.root)
        return self._data

    def _load_settings(self, con: duckdb.DuckDBPyConnection) -> None:
        settings = dict(con.execute("SELECT key, value FROM settings").fetchall()) if _has_table(con, "settings") else {}
        self._writer_location = settings.get("writer")
        self._data = DataRoot(self.root, self.uri or settings.get("data_root"))

    def attach_data(self, con: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
        """For a data root URI: TEMP views over pyarrow datasets shadow the (empty) main views."""
        self._load_settings(con)
        if not self._data.is_local:
            from kernel_catalog.store.remote_views import attach_remote_views

            attach_remote_views(con, self._data)
        return con

    def kernels_view(self, con: duckdb.DuckDBPyConnection, paths: list[str]) -> None:
        """Create a `kernels` view over these committed files in a private connection."""
        from kernel_catalog.store.views import kernels_view_sql

        data = self.data
        if data.is_local or not paths:
            con.execute(f"CREATE VIEW kernels AS {kernels_view_sql(paths if data.is_local else [])}")
        else:
            from kernel_catalog.store.remote_views import kernels_dataset_view

            kernels_view_dataset = kernels_dataset_view(con, data, paths)
            con.execute(f"CREATE VIEW kernels AS {kernels_view_dataset}")

    @property
    def db_path(self) -> Path:
        return self.root / DB_NAME

    def exists(self) -> bool:
        if self.uri and not self._fetched:    # once per instance: refresh the cached snapshot by ETag
            _published.fetch(self.uri)
            self._fetched = True
        return self.db_path.is_file()

    def init(self, data_root: str | None = None) -> DataRoot:
        """Create the catalog (idempotent); `data_root` (a URI) puts its Parquet on object storage."""
        if self.uri:
            self.refuse_write()
        if data_root is not None and not is_uri(data_root):
            raise CatalogError(f"--data-root {data_root}: give a URI such as s3://BUCKET/PREFIX "
                               "(a local catalog keeps its data in its own folder)")
        if data_root is not None:
            DataRoot(self.root, data_root).check()      # unreachable: one line, nothing created
        with self.writer() as session:
            current = session.data.uri
            if data_root is not None and current != data_root.rstrip("/"):
                if current is not None or session.committed_paths():
                    raise CatalogError(f"catalog {self.root} already keeps its data at {session.data.location}")
                with session.transaction() as con:
                    con.execute("INSERT OR REPLACE INTO settings VALUES ('data_root', ?), ('writer', ?)",
                                [data_root.rstrip("/"), f"{os.uname().nodename}:{self.root}"])
                self._data = DataRoot(self.root, data_root)
                session.data = self._data
            return session.data

    def refuse_write(self) -> None:
        where = None
        if self.exists():
            try:
                with self.reader():
                    where = self._writer_location
            except CatalogError:
                pass
        raise CatalogError(f"catalog {self.uri} is a published read-only snapshot; write through the writable "
                           f"catalog{' at ' + where if where else ''} (the driver's --catalog folder)")

    @contextmanager
    def hold(self, wait: float | None = None) -> Iterator[None]:
        """Keep the writer lock across several writes while files are written before their commit
        (Ray tasks, blocks, streamed parts), so no other writer removes them as orphans; writer()
        inside reuses it. On leaving, files no commit recorded (a retried task's dead attempt, a
        run that failed before its commit) are removed; storage out of reach leaves that to the
        next writer."""
        if self.uri:
            self.refuse_write()
        if self._held:
            self._held += 1
            try:
                yield
            finally:
                self._held -= 1
            return
        self.root.mkdir(parents=True, exist_ok=True)
        with exclusive_lock(self.root / ".lock", wait=wait, what=f"catalog {self.root}"):
            self._held = 1
            try:
                with self.writer(wait=wait) as session:
                    session.remove_orphans()   # (and the schema upgrade) before any worker writes
                yield
            finally:
                try:
                    with self.writer(wait=wait) as session:
                        session.remove_orphans()
                except CatalogError:
                    pass
                self._held = 0

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
            if self.uri:
                raise CatalogError(f"catalog {self.uri} was published by an older version (schema {version}); "
                                   "any write by its driver publishes it upgraded")
            with self.writer(wait=wait):
                pass   # opening a writer upgrades the schema in place
            con = self._connect(read_only=True, wait=wait)
        try:
            self.attach_data(con)
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
            self.attach_data(con)
            yield con
        finally:
            con.close()

    @contextmanager
    def writer(self, wait: float | None = None) -> Iterator["WriteSession"]:
        """Exclusive write access: our lock, then the database read-write, schema upgraded.

        Callers do their slow work (reading a source) before entering, so readers are kept out
        only for the Parquet write and the commit.
        """
        if self.uri:
            self.refuse_write()
        self.root.mkdir(parents=True, exist_ok=True)
        held = self._held > 0
        with (nullcontext() if held else
              exclusive_lock(self.root / ".lock", wait=wait, what=f"catalog {self.root}")):
            con = self._connect(read_only=False, wait=30.0 if wait is None else max(wait, 30.0))
            session = None
            try:
                applied = migrate.upgrade(con, where=str(self.root))
                self._load_settings(con)
                session = WriteSession(self, con)
                if applied or not _has_view(con, "kernels"):
                    with session.transaction():
                        pass
                if not held:
                    session.remove_orphans()
                yield session
            finally:
                con.close()
                if session is not None and session.committed and not session.data.is_local:
                    _published.publish(self.db_path, session.data.uri)   # after close: checkpointed file

    def sql(self, query: str, params: list | None = None) -> pa.Table:
        """Run a read-only query and return an Arrow table (`.to_pandas()` if pandas is installed)."""
        from kernel_catalog.store.query import run_query

        return run_query(self, query, params)

    def sqlalchemy_engine(self):
        """A read-only SQLAlchemy engine (duckdb-engine) for pandas.read_sql and ORM users. With
        data on object storage every connection it opens gets the TEMP views over the URI.

        Dispose it when done: a closed SQLAlchemy connection keeps the file lock until then.
        """
        from sqlalchemy import create_engine, event

        if not self.exists():
            raise CatalogError(f"no catalog at {self.root}")
        engine = create_engine(
            f"duckdb:///{self.db_path}",
            connect_args={"read_only": True, "config": {"file_search_path": str(self.root)}},
        )
        if not self.data.is_local:
            event.listen(engine, "connect", lambda connection, _: self.attach_data(connection))
        return engine


class WriteSession:
    """Inside `Catalog.writer()`: stage files, then commit metadata in one transaction."""

    def __init__(self, catalog: Catalog, con: duckdb.DuckDBPyConnection):
        self.catalog = catalog
        self.root = catalog.root
        self.con = con
        self.data = catalog.data if catalog._data is not None else DataRoot(catalog.root)
        self.committed = False
        self._open = False

    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """Run the block in one transaction; views are rebuilt inside it, then it commits.

        Readers see the new files and the new rows at the same instant. Any exception (or a
        kill) before COMMIT leaves the database exactly as it was. Inside another transaction
        it joins that one (several models committed at once: views rebuilt once).
        """
        con = self.con
        if self._open:
            yield con
            return
        self._open = True
        try:
            with self._transaction(con):
                yield con
        finally:
            self._open = False

    @contextmanager
    def _transaction(self, con: duckdb.DuckDBPyConnection) -> Iterator[duckdb.DuckDBPyConnection]:
        con.execute("BEGIN TRANSACTION")
        try:
            yield con
            refresh_views(con)
            crash_point("before-commit")
            con.execute("COMMIT")
            self.committed = True
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
        if not self.data.is_local:
            for folder in DATA_DIRS:
                for relative in self.data.list(folder):
                    if relative not in committed:
                        self.data.delete(relative)
                        removed.append(relative)
            return removed
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
