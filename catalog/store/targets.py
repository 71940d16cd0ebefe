"""Where outputs may go: one rule for every `-o` (sql, report, figure, export, gallery).

- Nothing that exists is overwritten without `force`.
- A file is never written over a catalog's own entries (its database, marker, lock, data folders).
- `force` on a folder replaces only a folder this tool wrote (it holds OUTPUT_MARKER), and never a
  catalog, a folder holding one, the working directory (or a folder above it) or the home folder.
"""
from __future__ import annotations

import os
from pathlib import Path

from kernel_catalog.errors import CatalogError
from kernel_catalog.store._owned import MARKER_NAME

OUTPUT_MARKER = ".kernel-catalog-output"
_CATALOG_ENTRIES = {"catalog.duckdb", "catalog.duckdb.wal", MARKER_NAME, ".lock", "kernels", "results", "cache"}


def _is_catalog(folder: Path) -> bool:
    return (folder / "catalog.duckdb").is_file() or (folder / MARKER_NAME).is_file()


def output_file(path: str | os.PathLike, force: bool = False) -> Path:
    """Check a file target before any work: its folder exists, it is not a folder, it is not part of
    a catalog, and it exists only if `force`. Returns the absolute path."""
    target = Path(path).expanduser().absolute()
    if not target.parent.is_dir():
        raise CatalogError(f"{path}: folder {target.parent} does not exist; create it first")
    if target.is_dir():
        raise CatalogError(f"{path}: is a folder; give a file name")
    real = Path(os.path.realpath(target))
    for folder in real.parents:
        if _is_catalog(folder) and real.relative_to(folder).parts[0] in _CATALOG_ENTRIES:
            raise CatalogError(f"{path}: is part of the catalog at {folder}; write outputs elsewhere")
    if (target.exists() or target.is_symlink()) and not force:
        raise CatalogError(f"{path}: exists; pass --force to overwrite it")
    return target


def output_folder(path: str | os.PathLike, force: bool = False) -> Path:
    """Check a folder target: new or empty, or (with `force`) a folder this tool wrote before."""
    target = Path(path).expanduser().absolute()
    if target.exists() and not target.is_dir() or target.is_symlink():
        raise CatalogError(f"{path}: exists and is not a folder; choose another -o")
    if not target.parent.is_dir():
        raise CatalogError(f"{path}: folder {target.parent} does not exist; create it first")
    if not target.is_dir() or not any(target.iterdir()):
        return target
    protected = _protected(target, walk=False)
    if protected:
        raise CatalogError(f"{path}: is {protected}; it is never replaced, choose another -o")
    if not force:
        raise CatalogError(f"{path}: folder exists and is not empty; pass --force to replace it "
                           "(only a folder this tool wrote is replaced)")
    if not (target / OUTPUT_MARKER).is_file():
        raise CatalogError(f"{path}: was not written by kernel-catalog (no {OUTPUT_MARKER} in it), so --force "
                           "does not replace it; choose another -o or empty it yourself")
    protected = _protected(target, walk=True)     # even when marked: a marker can be copied anywhere
    if protected:
        raise CatalogError(f"{path}: is {protected}; it is never replaced, choose another -o")
    return target


def mark_output_folder(folder: Path) -> None:
    """Say that `folder` is this tool's output (so a later --force may replace it)."""
    (folder / OUTPUT_MARKER).write_text("Written by kernel-catalog; `--force` may replace this folder.\n")


def _protected(target: Path, walk: bool) -> str | None:
    real = Path(os.path.realpath(target))
    cwd, home = Path(os.path.realpath(os.getcwd())), Path(os.path.realpath(os.path.expanduser("~")))
    if real == cwd or real in cwd.parents:   # (a folder below the working directory may be replaced)
        return "the working directory (or a folder above it)"
    if real == home or real in home.parents:
        return "the home folder (or a folder above it)"
    if _is_catalog(real):
        return "a kernel catalog"
    for top, dirs, files in os.walk(real) if walk else ():   # links are not followed
        if "catalog.duckdb" in files or MARKER_NAME in files:
            return f"a folder holding a kernel catalog ({top})"
    return None
