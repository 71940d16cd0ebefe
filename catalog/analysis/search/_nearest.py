"""`catalog nearest`: the kernels anywhere in the catalog that look most like a query kernel.

The query is a catalog kernel (`kernel`), a template by name (`template`: a built-in family or a
filter of a template file such as the eight master-key filters), or an array file (`npy`).
Query and candidates are preprocessed alike (centre, unit L2: analysis.preprocess), so the
score is the cosine of the centred kernels, sign-aware (an off-centre kernel scores -1 against
its on-centre twin) unless `signless` (|cosine|). Candidates are the usable kernels of the
query's size (optionally narrowed by a SQL condition over `kernels`), from a cached,
memory-mapped matrix (`_cache`): one matrix-vector product per search.
"""
from __future__ import annotations

import duckdb
import numpy as np
import pyarrow as pa

from kernel_catalog.analysis.preprocess import preprocess
from kernel_catalog.analysis.search import _cache as cache
from kernel_catalog.analysis.selection import where_error
from kernel_catalog.errors import CatalogError, error_summary
from kernel_catalog.store import Catalog

DEFAULT_K = 10
DEFAULT_SIZE = "7x7"   # the size of a template query unless --size (the master-key filters are 7x7)
COLUMNS = ["kernel_id", "model", "layer", "channel", "kh", "kw", "cosine"]


# ---------------------------------------------------------------- pure maths

def top_k(matrix: np.ndarray, query: np.ndarray, k: int, signless: bool = False,
          candidates: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of the k highest cosines and the cosines, highest first (ties: lower index).

    matrix: (N, d) unit rows; query: (d,) unit vector; candidates: optional (N,) bool mask."""
    scores = np.asarray(matrix @ query.astype(matrix.dtype), dtype=np.float64)
    if signless:
        scores = np.abs(scores)
    if candidates is not None:
        scores[~candidates] = -np.inf
    n = int(np.isfinite(scores).sum()) if candidates is not None else len(scores)
    k = min(k, n)
    if k <= 0:
        return np.empty(0, np.int64), np.empty(0)
    part = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
    # the k-th score may tie with rows outside the partition: take every row at that score
    tied = np.flatnonzero(scores == scores[part].min())
    pool = np.union1d(part, tied)
    order = np.lexsort((pool, -scores[pool]))[:k]
    return pool[order], scores[pool[order]]


def unit_query(weights: np.ndarray, what: str) -> np.ndarray:
    """The query kernel centred and scaled to unit L2 (float32 row), or a CatalogError."""
    x, usable = preprocess(np.asarray(weights, dtype=np.float64).reshape(1, -1))
    if not usable[0]:
        raise CatalogError(f"{what} has no direction to compare (NaN/Inf, all |w| <= 1e-4, or constant)")
    return x[0]


# ---------------------------------------------------------------- the query

def parse_size(size: str) -> tuple[int, int]:
    try:
        kh, kw = (int(v) for v in size.lower().split("x"))
    except ValueError:
        raise CatalogError(f"--size {size}: expected KHxKW, e.g. 7x7") from None
    if kh < 1 or kw < 1 or kh * kw < 2:
        raise CatalogError(f"--size {size}: a kernel needs at least 2 taps")
    return kh, kw


def template_rows(spec: str, kh: int, kw: int) -> dict[str, np.ndarray]:
    """Named template rows of one size from a --templates spec ('builtin', FILE, 'builtin+FILE'),
    read by the rule every command uses (`naming.template_bank`).

    Names: a template file's filters by their name ('master-key-3'); built-in rows by family and
    polarity as the catalog labels them, plus 'name/variant' for each scale; a name alone means
    its first variant. Oriented (steered) built-in families are not offered: use --npy."""
    from kernel_catalog.analysis.naming import template_bank

    bank = template_bank(spec, kh, kw)
    rows: dict[str, np.ndarray] = {}
    for family, polarity, variant, row in zip(bank.families, bank.polarities, bank.variants, bank.matrix):
        name = f"{family}-{polarity}" if polarity else family
        rows.setdefault(name, row)
        if variant != "file":
            rows.setdefault(f"{name}/{variant}", row)
    return rows


def query_kernel(con: duckdb.DuckDBPyConnection, kernel: int | None = None, template: str | None = None,
                 npy: str | None = None, templates: str = "builtin", size: str | None = None
                 ) -> tuple[np.ndarray, int, int, int | None]:
    """(raw query weights (kh*kw,), kh, kw, the query's kernel id or None) from exactly one source."""
    given = [name for name, value in (("--kernel", kernel), ("--template", template), ("--npy", npy))
             if value is not None]
    if len(given) != 1:
        raise CatalogError("give exactly one query: --kernel ID, --template NAME or --npy FILE"
                           + (f" (got {', '.join(given)})" if given else ""))
    if kernel is not None:
        rows = con.sql("SELECT kh, kw, weights FROM kernels WHERE kernel_id = ?", params=[int(kernel)]).fetchall()
        if not rows:
            raise CatalogError(f"--kernel {kernel}: no such kernel id in this catalog")
        rows = [dict(zip(("kh", "kw", "weights"), rows[0]))]
        return np.asarray(rows[0]["weights"], np.float64), rows[0]["kh"], rows[0]["kw"], int(kernel)
    if template is not None:
        kh, kw = parse_size(size or DEFAULT_SIZE)
        rows = template_rows(templates, kh, kw)
        if template not in rows:
            names = sorted(n for n in rows if "/" not in n)
            raise CatalogError(f"--template {template}: no such {kh}x{kw} template in {templates}; "
                               f"known: {', '.join(names)}")
        return np.asarray(rows[template], np.float64), kh, kw, None
    try:
        array = np.load(npy, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise CatalogError(f"--npy {npy}: not a readable .npy file ({error_summary(error)})") from None
    while array.ndim > 2 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 2 or array.size < 2 or not np.issubdtype(array.dtype, np.number):
        raise CatalogError(f"--npy {npy}: expected one kernel of shape (kh, kw), got {array.shape} {array.dtype}")
    kh, kw = array.shape
    if size is not None and parse_size(size) != (kh, kw):
        raise CatalogError(f"--npy {npy}: the kernel is {kh}x{kw}, not --size {size}")
    return array.astype(np.float64).reshape(-1), kh, kw, None


# ---------------------------------------------------------------- the search

def _selected_ids(con: duckdb.DuckDBPyConnection, where: str, kh: int, kw: int) -> np.ndarray:
    try:
        table = con.sql(f"SELECT kernel_id FROM kernels WHERE kh = {kh} AND kw = {kw} AND ({where})").to_arrow_table()
    except duckdb.Error as error:
        raise where_error(where, error) from None
    return table.column("kernel_id").to_numpy()


SCHEMA = pa.schema([("kernel_id", pa.int64()), ("model", pa.string()), ("layer", pa.string()),
                    ("channel", pa.int32()), ("kh", pa.int32()), ("kw", pa.int32()), ("cosine", pa.float64())])


def _rows(con: duckdb.DuckDBPyConnection, ids: np.ndarray, scores: np.ndarray) -> pa.Table:
    found = con.sql(
        "SELECT kernel_id, model, layer, channel, kh::INTEGER AS kh, kw::INTEGER AS kw FROM kernels "
        "WHERE kernel_id IN (SELECT unnest(?::BIGINT[]))", params=[ids.tolist()]).to_arrow_table().to_pylist()
    by_id = {r["kernel_id"]: r for r in found}
    rows = [{**by_id[int(i)], "cosine": float(s)} for i, s in zip(ids, scores) if int(i) in by_id]
    return pa.Table.from_pylist(rows, schema=SCHEMA)


def nearest(catalog: Catalog, *, kernel: int | None = None, template: str | None = None,
            npy: str | None = None, k: int = DEFAULT_K, where: str | None = None, signless: bool = False,
            templates: str = "builtin", size: str | None = None) -> pa.Table:
    """The k kernels of the query's size with the highest cosine to it, highest first.

    Rows: kernel_id, model, layer, channel, kh, kw, cosine. A catalog kernel's own id comes
    first with cosine 1 (when `where` admits it)."""
    if k < 1:
        raise CatalogError(f"limit {k} (--limit): give a positive number of kernels")
    with catalog.reader() as con:
        weights, kh, kw, own = query_kernel(con, kernel, template, npy, templates, size)
        query = unit_query(weights, f"--kernel {kernel}" if own is not None else "the query kernel")
        mask_ids = _selected_ids(con, where, kh, kw) if where and where.strip() else None
        paths = cache.size_files(con, kh, kw)
        loaded = cache.cached(catalog, kh, kw, paths)
        if loaded is not None:                        # the usual case: one short read in all
            return _search(con, *loaded, query, own, k, signless, mask_ids)
    loaded = cache.build(catalog, kh, kw, paths)     # no catalog connection held while it builds
    with catalog.reader() as con:
        return _search(con, *loaded, query, own, k, signless, mask_ids)


def _search(con, ids: np.ndarray, matrix: np.ndarray, query: np.ndarray, own: int | None, k: int,
            signless: bool, mask_ids: np.ndarray | None) -> pa.Table:
    candidates = np.isin(ids, mask_ids) if mask_ids is not None else None
    index, scores = top_k(matrix, query, k + (own is not None), signless, candidates)
    found = ids[index]
    if own is not None:   # itself: cosine 1 by definition, first (float rounding may say 0.9999999)
        keep = found != own
        at = np.flatnonzero(ids == own)
        admitted = len(at) > 0 and (candidates is None or bool(candidates[at[0]]))
        found, scores = found[keep], scores[keep]
        if admitted:
            found, scores = np.concatenate([[own], found]), np.concatenate([[1.0], scores])
        found, scores = found[:k], scores[:k]
    return _rows(con, found, scores) if len(found) else SCHEMA.empty_table()
