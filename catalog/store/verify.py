"""`catalog verify`: check a catalog the way fsck checks a file system, and say what is wrong.

Read-only: the file is opened read-only and locked down like every other connection; nothing in
it is run. Checked: the schema is at head and is exactly the code's (no stored view, macro or
foreign object), the markers name this catalog, every committed data file has a catalog file name,
lies inside the data folders, exists, and has its recorded size and SHA-256 (files recorded before
digests: size only, counted), the views build, and no stray file lies in the data folders.
`repair=True` removes only the strays the catalog owns (a dead write's files), through the writer,
which also upgrades an older schema; foreign files are reported, never touched.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import duckdb

from kernel_catalog.errors import CatalogError, error_summary
from kernel_catalog.store import _migrate as migrate
from kernel_catalog.store._catalog import Catalog, stray_files
from kernel_catalog.store._sandbox import check_recorded_paths, lock_down, schema_differences
from kernel_catalog.store.views import install_views


_SHOWN = 20   # lines per kind of finding


@dataclass
class VerifyReport:
    location: str
    problems: list[str] = field(default_factory=list)    # one line each
    files: int = 0                                        # committed data files checked
    size_only: int = 0                                    # of which recorded without a digest
    own_strays: list[str] = field(default_factory=list)   # ours, no row names them: --repair removes
    foreign: list[str] = field(default_factory=list)      # not ours: reported, never removed
    repaired: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not (self.problems or self.own_strays or self.foreign)

    def lines(self) -> list[str]:
        out = [f"catalog {self.location}: {'clean' if self.clean else 'NOT clean'}; "
               f"{self.files} data files checked ({self.size_only} by size only: recorded before digests)"]
        for what, items in (("problem", self.problems),
                             ("stray (ours, `catalog verify --repair` removes it)", self.own_strays),
                             ("foreign file in the data folders (not the catalog's; left alone)", self.foreign),
                             ("removed", self.repaired)):
            out += [f"{what}: {item}" for item in items[:_SHOWN]]
            if len(items) > _SHOWN:
                out.append(f"{what}: ... and {len(items) - _SHOWN} more")
        return out


def verify(catalog: Catalog, repair: bool = False) -> VerifyReport:
    if not catalog.exists():
        raise CatalogError(f"no catalog at {catalog.location}")
    repaired: list[str] = []
    if repair:
        with catalog.writer() as session:    # refuses a foreign schema; upgrades an old one
            repaired = session.swept + session.remove_orphans()
    report = _check(catalog)
    report.repaired = repaired
    return report


def _check(catalog: Catalog) -> VerifyReport:
    report = VerifyReport(catalog.location)
    con = catalog._connect(read_only=True, wait=10.0)
    try:
        lock_down(con, catalog.root)
        version = migrate.current_version(con)
        if version > migrate.head_version():
            report.problems.append(f"schema version {version} is newer than this code's ({migrate.head_version()})")
            return report
        differences = schema_differences(con, version, catalog.location)
        if differences:   # nothing further is read from a file that is not the code's
            report.problems += [f"object not created by this code: {d}" for d in differences]
            return report
        if version != migrate.head_version():
            report.problems.append(f"schema version {version}, head {migrate.head_version()}: "
                                   "any write upgrades it (`catalog verify --repair`)")
            return report
        catalog._load_settings(con)
        _check_markers(catalog, report)
        _check_files(catalog, con, report)
        if not report.problems:
            try:
                install_views(con, catalog.data)
                con.execute("SELECT count(*) FROM kernels").fetchall()
            except (CatalogError, duckdb.Error) as error:
                report.problems.append(f"the views do not build: {error_summary(error)}")
    finally:
        con.close()
    return report


def _check_markers(catalog: Catalog, report: VerifyReport) -> None:
    from kernel_catalog.store._owned import read_marker

    # (a catalog opened by URI: its local folder is only a cache of the snapshot, with no marker)
    for where, found in ([] if catalog.uri else [(catalog.root, read_marker(catalog.root))]) + (
            [] if catalog.data.is_local else [(catalog.data.location, catalog.data.read_marker())]):
        if found != catalog.catalog_id:
            report.problems.append(f"marker at {where} names {found or 'no catalog'}, not this catalog "
                                   f"({catalog.catalog_id}); any write marks it (`catalog verify --repair`)")


def _check_files(catalog: Catalog, con: duckdb.DuckDBPyConnection, report: VerifyReport) -> None:
    rows = con.execute("SELECT path, bytes, sha256 FROM kernel_files UNION ALL "
                       "SELECT path, bytes, sha256 FROM result_files ORDER BY 1").fetchall()
    data = catalog.data
    committed = set()
    for path, size, digest in rows:
        committed.add(path)
        report.files += 1
        try:
            check_recorded_paths(data.local_root, [path], catalog.location, local=data.is_local)
        except CatalogError as error:
            report.problems.append(str(error))
            continue
        try:
            actual = data.size(path)
        except (OSError, CatalogError):
            report.problems.append(f"{path}: recorded, missing")
            continue
        if actual != size:
            report.problems.append(f"{path}: {actual} bytes, {size} recorded")
        elif digest is None:
            report.size_only += 1
        elif data.sha256(path, fresh=True) != digest:
            report.problems.append(f"{path}: content differs from the SHA-256 recorded at its commit")
    own, foreign = stray_files(data, committed)
    report.own_strays, report.foreign = own, foreign
