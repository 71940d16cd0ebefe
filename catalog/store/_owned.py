"""What a catalog owns, and how it says so.

A catalog deletes or replaces only what it wrote. It knows its own files by name: kernel files
`kernels/model=<quoted name>/<16 hex>-<8 hex>.parquet`, result files
`results/run=<run>/<kind>-<16 (earlier 8) hex>.parquet|.pt`, and the temporaries `staged_file` leaves beside
them (`.<own name>.tmp-<pid>`). Anything else under its folders (a user's `results/` that was
there first, a link) is not its own and is never removed.

A marker file (`.kernel-catalog`, JSON with the catalog's id) stands at the catalog folder and at
its data root; the same id is in the database's settings. A write refuses a non-empty folder
without a catalog, and a data root marked by another catalog.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from kernel_catalog.errors import CatalogError

MARKER_NAME = ".kernel-catalog"
# Entries a catalog folder may hold before its database exists (a first write that died early).
_OWN_ENTRIES = {MARKER_NAME, ".lock", "catalog.duckdb", "catalog.duckdb.wal", "kernels", "results", "cache"}

_KERNEL_FILE = r"kernels/model=[A-Za-z0-9._+%-]+/[0-9a-f]{16}-[0-9a-f]{8}\.parquet"
_RESULT_FILE = r"results/run=[A-Za-z0-9._+-]+/[a-z]+-(?:[0-9a-f]{8}|[0-9a-f]{16})\.(?:parquet|pt)"   # 8: before 2026-11
OWN_DATA_FILE = re.compile(rf"^(?:{_KERNEL_FILE}|{_RESULT_FILE})$")
_OWN_TEMPORARY = re.compile(r"^\.(?P<name>[^/]+)\.tmp-\d+$")


def is_own_data_file(relative: str) -> bool:
    """A relative path with the name pattern of a file this catalog writes (committed or not)."""
    return bool(OWN_DATA_FILE.match(relative))


def is_own_temporary(relative: str) -> bool:
    """A temporary left beside one of our own data files by a write that died (`staged_file`)."""
    folder, _, name = relative.rpartition("/")
    match = _OWN_TEMPORARY.match(name)
    return bool(match) and is_own_data_file(f"{folder}/{match['name']}")


def marker_text(catalog_id: str) -> str:
    return json.dumps({"kernel_catalog": catalog_id,
                       "note": "This folder is a kernel catalog's; the catalog removes only files it wrote."}) + "\n"


def marker_id(text: str | None) -> str | None:
    """The catalog id in a marker's text (None: no marker, or not one of ours)."""
    if not text:
        return None
    try:
        value = json.loads(text).get("kernel_catalog")
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def read_marker(folder: Path) -> str | None:
    path = folder / MARKER_NAME
    try:
        return marker_id(path.read_text()) if path.is_file() and not path.is_symlink() else None
    except OSError:
        return None


def check_catalog_folder(root: Path) -> None:
    """Before a write: `root` is new, empty, or a catalog; anything else is someone's folder."""
    if root.is_symlink() or (root.exists() and not root.is_dir()):
        raise CatalogError(f"{root} is not a folder; choose a new folder for the catalog")
    if not root.is_dir() or (root / "catalog.duckdb").is_file():
        return
    foreign = sorted(p.name for p in root.iterdir() if p.name not in _OWN_ENTRIES)
    if foreign or any((root / d).exists() for d in ("kernels", "results")) and read_marker(root) is None:
        shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "") if foreign else "kernels/ or results/"
        raise CatalogError(f"{root} is not empty and is not a kernel catalog (it holds {shown}); "
                           "choose a new or empty folder for --catalog")
