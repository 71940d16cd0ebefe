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
from kernel_catalog.store.views import install_views
from kernel_catalog.store import _published
from kernel_catalog.store._owned import (
    MARKER_NAME, check_catalog_folder, is_own_data_file, is_own_temporary, marker_text, read_marker,
)
from kernel_catalog.store._sandbox import DATA_DIRS, check_schema, file_state, lock_down, mark_checked
from kernel_catalog.store.datafs import DataRoot, is_uri

DEFAULT_ROOT = "kernel-catalog"
ROOT_ENV = "KERNEL_CATALOG"
DB_NAME = "catalog.duckdb"
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
        # Read-only: a URI, or a folder `catalog publish` wrote (its manifest stands at the root).
        self.published = self.uri is not None or (self.root / _published.PUBLISH_MANIFEST).is_file()
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
                self.exists()
                self._data = DataRoot(self.root, _published.data_uri(self.uri))
            elif self.exists():
                with self.reader():
                    pass          # reads the settings table
            else:
                return DataRoot(self.root)
        return self._data

    def _load_settings(self, con: duckdb.DuckDBPyConnection) -> None:
        settings = (dict(con.execute("SELECT key, value FROM settings").fetchall())
                    if migrate.has_table(con, "settings") else {})
        self._writer_location = settings.get("writer")
        self.catalog_id = settings.get("catalog_id")
        self._data = DataRoot(self.root, _published.data_uri(self.uri) if self.uri else settings.get("data_root"))

    def _prepare_read(self, con: duckdb.DuckDBPyConnection, allow=(), upgrade_copy: bool = True,
                      state: tuple | None = None, views: bool = True) -> duckdb.DuckDBPyConnection:
        """Make a connection to the catalog file safe to query: locked to the catalog's data folders
        (and the files the user allowed) before anything is read, the stored schema checked against
        the code's, an older schema upgraded in a private in-memory copy (a read never writes), and
        the views built by the code."""
        lock_down(con, self.root, allow)
        version = migrate.current_version(con)
        migrate.check_not_newer(version, self.location)
        check_schema(con, version, self.location, state)
        if version != migrate.head_version():
            if not upgrade_copy:
                raise CatalogError(f"catalog {self.location} has an older schema ({version}); any write "
                                   "(e.g. `catalog verify --repair`) upgrades it")
            copy = _copy_tables(con, self.root, allow)
            con.close()
            con = copy
            migrate.upgrade(con, where=self.location)
        self._load_settings(con)
        if views:
            install_views(con, self._data)
        return con

    def data_connection(self, config: dict | None = None) -> duckdb.DuckDBPyConnection:
        """A private in-memory connection that can read this catalog's data files and nothing else
        (paths relative to the catalog root); for reading Parquet outside the metadata."""
        con = duckdb.connect(config=config or {})
        lock_down(con, self.root)
        return con

    def kernels_view(self, con: duckdb.DuckDBPyConnection, paths: list[str]) -> None:
        """Create a `kernels` view over these committed files in a private connection."""
        from kernel_catalog.store.views import kernels_view_sql

        data = self.data
        if data.is_local or not paths:
            con.execute(f"CREATE VIEW kernels AS {kernels_view_sql(data.absolute(paths) if data.is_local else [])}")
        else:
            from kernel_catalog.store.remote_views import kernels_dataset_view

            kernels_view_dataset = kernels_dataset_view(con, data, paths)
            con.execute(f"CREATE VIEW kernels AS {kernels_view_dataset}")

    @property
    def derived_root(self) -> Path:
        """Where derived data (caches, e.g. nearest's search matrix) is kept: the catalog folder,
        or for a published folder, which is never written, a folder of the user cache."""
        if self.published and not self.uri:
            return _published.cache_folder(str(self.root))
        return self.root

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
        if self.published:
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
                claimed = DataRoot(self.root, data_root)
                claimed.claim(self.catalog_id)       # refuses another's, before anything is recorded
                with session.transaction() as con:
                    con.execute("INSERT OR REPLACE INTO settings VALUES ('data_root', ?), ('writer', ?)",
                                [data_root.rstrip("/"), f"{os.uname().nodename}:{self.root}"])
                self._data = session.data = claimed
            return session.data

    def _claim(self, con: duckdb.DuckDBPyConnection) -> None:
        """Mark the folder (and the data root) as this catalog's; refuse one marked by another."""
        found = read_marker(self.root)
        if found is None:
            write_marker(self.root / MARKER_NAME, self.catalog_id)
        elif found != self.catalog_id:
            raise CatalogError(f"{self.root}: its marker names another catalog ({found[:8]}) than its database "
                               f"({self.catalog_id[:8]}); was a catalog file copied over another? Nothing was changed")
        if not self._data.is_local:
            self._data.claim(self.catalog_id)

    def refuse_write(self) -> None:
        where = None
        if self.exists():
            try:
                with self.reader():
                    where = self._writer_location
            except CatalogError:
                pass
        if not self.uri:
            raise CatalogError(f"catalog {self.root} is a published read-only catalog (`catalog publish` wrote it); "
                               "write to the catalog it came from and publish again")
        raise CatalogError(f"catalog {self.uri} is a published read-only snapshot; write through the writable "
                           f"catalog{' at ' + where if where else ''} (the driver's --catalog folder)")

    @contextmanager
    def hold(self, wait: float | None = None) -> Iterator[None]:
        """Keep the writer lock across several writes while files are written before their commit
        (Ray tasks, blocks, streamed parts), so no other writer removes them as orphans; writer()
        inside reuses it. On leaving, files no commit recorded (a retried task's dead attempt, a
        run that failed before its commit) are removed; storage out of reach leaves that to the
        next writer."""
        if self.published:
            self.refuse_write()
        if self._held:
            self._held += 1
            try:
                yield
            finally:
                self._held -= 1
            return
        check_catalog_folder(self.root)
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
        return con

    @contextmanager
    def reader(self, wait: float = 10.0, allow=(), views: bool = True) -> Iterator[duckdb.DuckDBPyConnection]:
        """A read-only connection that never takes the writer lock and never writes (an older schema
        is upgraded in a private copy); it reads only the catalog's files and `allow` (paths the
        user named for their own SQL). `views=False`: the tables only, no view built (for code that
        queries the metadata tables; a view name there may reach a legacy view stored in the file)."""
        if not self.exists():
            raise CatalogError(
                f"no catalog at {self.location}; create one with `catalog ingest SOURCE` "
                "or point --catalog / KERNEL_CATALOG at an existing one"
            )
        state = file_state(self.db_path)        # before opening: the state the schema check vouches for
        con = self._connect(read_only=True, wait=wait)
        try:
            con = self._prepare_read(con, allow, state=state, views=views)
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
            con = _copy_tables(source, self.root)
        try:
            install_views(con, self.data)
            yield con
        finally:
            con.close()

    @contextmanager
    def writer(self, wait: float | None = None) -> Iterator["WriteSession"]:
        """Exclusive write access: our lock, then the database read-write, schema upgraded.

        Callers do their slow work (reading a source) before entering, so readers are kept out
        only for the Parquet write and the commit.
        """
        if self.published:
            self.refuse_write()
        held = self._held > 0
        if not held:
            check_catalog_folder(self.root)
        self.root.mkdir(parents=True, exist_ok=True)
        with (nullcontext() if held else
              exclusive_lock(self.root / ".lock", wait=wait, what=f"catalog {self.root}")):
            state = file_state(self.db_path)
            con = self._connect(read_only=False, wait=30.0 if wait is None else max(wait, 30.0))
            session = None
            checked = False
            try:
                lock_down(con, self.root)      # before anything in the file is read
                version = migrate.current_version(con)
                migrate.check_not_newer(version, str(self.root))
                check_schema(con, version, str(self.root), state)
                migrate.upgrade(con, where=str(self.root), version=version)
                checked = True
                self._load_settings(con)
                self._claim(con)
                session = WriteSession(self, con)
                session.views = install_views(con, session.data)
                if not held:
                    session.swept = session.remove_orphans()
                yield session
            finally:
                con.close()
                if checked:     # our lock still held: the file as this session left it has the code's schema
                    mark_checked(file_state(self.db_path), migrate.head_version())
                if session is not None and session.committed and not session.data.is_local:
                    _published.publish(self.db_path, session.data.uri)   # after close: checkpointed file

    def sql(self, query: str, params: list | None = None, allow: tuple[str, ...] | list[str] = (),
            wait: float = 10.0) -> pa.Table:
        """Run a read-only query and return an Arrow table (`.to_pandas()` if pandas is installed);
        it may read the files or folders named in `allow` besides the catalog's own."""
        from kernel_catalog.store.query import run_query

        return run_query(self, query, params, wait=wait, allow=allow)

    def sqlalchemy_engine(self):
        """A read-only SQLAlchemy engine (duckdb-engine) for pandas.read_sql and ORM users. With
        data on object storage every connection it opens gets the TEMP views over the URI.

        Dispose it when done: a closed SQLAlchemy connection keeps the file lock until then.
        """
        from sqlalchemy import create_engine, event

        if not self.exists():
            raise CatalogError(f"no catalog at {self.root}")
        engine = create_engine(f"duckdb:///{self.db_path}", connect_args={"read_only": True})
        # each connection: locked down, schema checked, the code's views (an older schema: write first)
        event.listen(engine, "connect", lambda connection, _: self._prepare_read(connection, upgrade_copy=False))
        return engine


class WriteSession:
    """Inside `Catalog.writer()`: stage files, then commit metadata in one transaction."""

    def __init__(self, catalog: Catalog, con: duckdb.DuckDBPyConnection):
        self.catalog = catalog
        self.root = catalog.root
        self.con = con
        self.data = catalog.data if catalog._data is not None else DataRoot(catalog.root)
        self.committed = False
        self.swept: list[str] = []     # own strays removed on entering (a dead write's files)
        self.views: dict | None = None  # what install_views() built on this connection
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
            # Only the views whose files changed are rebuilt (TEMP views roll back with the transaction).
            views = install_views(con, self.data, self.views)
            crash_point("before-commit")
            con.execute("COMMIT")
            self.committed = True
            self.views = views
        except BaseException:
            self.views = None
            con.execute("ROLLBACK")
            raise

    def committed_paths(self) -> set[str]:
        paths: set[str] = set()
        for table in FILE_TABLES:
            if migrate.has_table(self.con, table):
                paths.update(row[0] for row in self.con.execute(f"SELECT path FROM {table}").fetchall())
        return paths

    def remove_orphans(self) -> list[str]:
        """Delete our own data files that no committed row names (left by a write that died
        midway); files of any other name, and links, are not ours and stay."""
        own, _ = stray_files(self.data, self.committed_paths())
        for relative in own:
            self.data.delete(relative)
        self.data.remove_empty_partitions()
        return own


def stray_files(data: DataRoot, committed: set[str]) -> tuple[list[str], list[str]]:
    """(ours, foreign): files under the data folders that no committed row names; ours have the
    catalog's own names (a dead write's leftovers), foreign ones are anyone else's (never removed)."""
    own, foreign = [], []
    for folder in DATA_DIRS:
        for relative in data.list(folder):
            if relative in committed:
                continue
            mine = (is_own_data_file(relative) or is_own_temporary(relative)) and not data.is_link(relative)
            (own if mine else foreign).append(relative)
    return own, foreign


def _copy_tables(source: duckdb.DuckDBPyConnection, root: Path, allow=()) -> duckdb.DuckDBPyConnection:
    """A private in-memory database with the rows of `source`'s tables, in tables this code's own
    migrations build at the same version (so constraints hold as in the file); locked down."""
    version = migrate.current_version(source)
    con = duckdb.connect()
    migrate.upgrade(con, target=version)
    lock_down(con, root, allow)
    names = [row[0] for row in con.execute(
        "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database() AND NOT internal").fetchall()]
    for name in names:
        con.register("copied", source.sql(f'SELECT * FROM "{name}"').to_arrow_table())
        con.execute(f'DELETE FROM "{name}"')            # (schema_version: the copy's own rows go)
        con.execute(f'INSERT INTO "{name}" BY NAME SELECT * FROM copied')
        con.unregister("copied")
    return con


def write_marker(path: Path, catalog_id: str) -> None:
    from kernel_catalog.store.atomic import staged_file

    with staged_file(path) as temporary:
        temporary.write_text(marker_text(catalog_id))

