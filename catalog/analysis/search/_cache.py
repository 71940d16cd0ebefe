"""The search matrix behind `catalog nearest`: every usable kernel of one size, preprocessed.

What is cached, where, and when it is rebuilt:
- `<catalog>/cache/nearest/<kh>x<kw>-<key>.npy`: (N, kh*kw) float32, each row centred and scaled
  to unit L2 (analysis.preprocess, "center-l2"), so a cosine is one dot product; memory-mapped
  on use (1 M 7x7 kernels: 196 MB on disk, pages in the OS cache after the first search).
- `<kh>x<kw>-<key>.ids.npy`: the (N,) int64 kernel ids of those rows (8 MB per million).
- `key` hashes the committed Parquet files of the models that hold kernels of this size: an
  ingest or a replacement of such a model changes it, so a stale matrix is never read; the
  files of an older key are deleted when a new one is written.
Kernels with a NaN/Inf or every |w| <= 1e-4 have no direction and are not in the matrix (never
returned). Files are written under temporary names and renamed, ids first, so a reader sees a
complete pair or none; a build killed mid-write leaves a temporary file that the next build
removes (its process is gone); the cache is derived data, never a part of the catalog's state (deleting
the folder is always safe).
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa

from kernel_catalog.analysis.preprocess import preprocess
from kernel_catalog.analysis.selection import weight_rows
from kernel_catalog.errors import CatalogError, error_summary
from kernel_catalog.store import Catalog
from kernel_catalog.store.atomic import remove_dead_temporaries, staged_file
from kernel_catalog.store.remote_views import kernels_dataset_view

CACHE_DIR = ("cache", "nearest")
BATCH_ROWS = 1 << 18   # kernels preprocessed at a time while building (bounded memory)


def size_files(con: duckdb.DuckDBPyConnection, kh: int, kw: int) -> list[str]:
    """Committed kernel files of the models that hold kernels of this size (relative paths)."""
    return [r[0] for r in con.execute(
        "SELECT path FROM kernel_files WHERE model IN "
        "(SELECT model FROM layer_records WHERE kh = ? AND kw = ?) ORDER BY path", [kh, kw]).fetchall()]


def _stem(catalog: Catalog, kh: int, kw: int, paths: list[str]) -> Path:
    key = hashlib.sha256("\n".join(paths).encode()).hexdigest()[:16]
    return catalog.derived_root.joinpath(*CACHE_DIR) / f"{kh}x{kw}-{key}"


def _read_batches(catalog: Catalog, paths: list[str], kh: int, kw: int):
    """(ids, (m, k) float32 weights) batches of this size straight from the Parquet files."""
    con = catalog.data_connection()
    try:
        if catalog.data.is_local:
            files = con.sql("SELECT * FROM read_parquet(?)", params=[catalog.data.absolute(paths)])
        else:   # data on object storage: the same files as a pyarrow dataset (no httpfs needed)
            files = con.sql(kernels_dataset_view(con, catalog.data, paths))
        reader = files.filter(f"kh = {int(kh)} AND kw = {int(kw)}").select("kernel_id, weights") \
            .to_arrow_reader(BATCH_ROWS)
        for batch in reader:
            table = pa.Table.from_batches([batch])
            yield table.column("kernel_id").to_numpy(), weight_rows(table.column("weights"), kh * kw)
    finally:
        con.close()


def _save(path: Path, array: np.ndarray) -> None:
    with staged_file(path, durable=False) as temporary, open(temporary, "wb") as f:
        np.save(f, array)


def build(catalog: Catalog, kh: int, kw: int, paths: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Preprocess every usable kernel of the size and write the pair of files; returns them."""
    ids, rows = [], []
    try:
        for batch_ids, weights in _read_batches(catalog, paths, kh, kw):
            unit, usable = preprocess(weights)
            ids.append(batch_ids[usable])
            rows.append(unit[usable])
    except duckdb.Error as error:   # e.g. a writer replaced a model meanwhile and removed its file
        raise CatalogError(f"cannot read the {kh}x{kw} kernels to build the search cache "
                           f"({error_summary(error)}); run the search again") from None
    k = kh * kw
    ids_all = np.concatenate(ids) if ids else np.empty(0, np.int64)
    matrix = np.concatenate(rows) if rows else np.empty((0, k), np.float32)
    stem = _stem(catalog, kh, kw, paths)
    stem.parent.mkdir(parents=True, exist_ok=True)
    remove_dead_temporaries(stem.parent)
    _save(stem.with_name(stem.name + ".ids.npy"), ids_all)
    _save(stem.with_name(stem.name + ".npy"), matrix)
    for old in stem.parent.glob(f"{kh}x{kw}-*.npy"):
        if not old.name.startswith(stem.name + "."):
            old.unlink(missing_ok=True)
    return ids_all, matrix


def cached(catalog: Catalog, kh: int, kw: int, paths: list[str]) -> tuple[np.ndarray, np.ndarray] | None:
    """(ids (N,), unit rows (N, kh*kw) memory-mapped) for these committed files (`size_files`),
    or None when the cache is missing, stale or damaged."""
    if not paths:
        return np.empty(0, np.int64), np.empty((0, kh * kw), np.float32)
    stem = _stem(catalog, kh, kw, paths)
    matrix_path, ids_path = stem.with_name(stem.name + ".npy"), stem.with_name(stem.name + ".ids.npy")
    if matrix_path.is_file() and ids_path.is_file():
        try:
            ids, matrix = np.load(ids_path), np.load(matrix_path, mmap_mode="r")
            if matrix.shape == (len(ids), kh * kw):
                return ids, matrix
        except (OSError, ValueError):
            pass   # a damaged cache file is rebuilt
    return None
