"""Read-only queries: user SQL and the listings behind `catalog models` / `catalog layers`."""
from __future__ import annotations

import difflib

import duckdb
import pyarrow as pa

from kernel_catalog.errors import CatalogError, error_summary
from kernel_catalog.store import Catalog


def run_query(catalog: Catalog, query: str, params: list | None = None, wait: float = 10.0,
              allow: tuple[str, ...] | list[str] = ()) -> pa.Table:
    """Run SQL on a read-only connection that reads the catalog's files and the files or folders in
    `allow` (the user's own, named by them), nothing else; a bad query is a CatalogError with
    DuckDB's first line."""
    with catalog.reader(wait=wait, allow=allow) as con:
        try:
            return con.sql(query, params=params).to_arrow_table()
        except duckdb.Error as error:
            raise CatalogError(f"SQL error: {error_summary(error, lines=2)}") from None


def list_models(catalog: Catalog) -> pa.Table:
    return run_query(catalog, """
        SELECT model, adapter, trained, n_layers, n_kernels, kernel_sizes,
               n_nonfinite, left(checkpoint_sha256, 12) AS sha256, source
        FROM models ORDER BY model""")


def list_layers(catalog: Catalog, model: str) -> pa.Table:
    table = run_query(catalog, """
        SELECT layer_index, layer, expert, kh, kw, n_kernels, kind, stage, block, in_channels,
               out_channels, depth_multiplier, stride, dilation, bias, bn_folded, reparam,
               n_nonfinite, n_near_zero, round(depth, 3) AS depth,
               round(sparsity, 4) AS sparsity, round(variance_entropy, 4) AS variance_entropy
        FROM layers WHERE model = ? ORDER BY layer_index, expert""", [model])
    if table.num_rows == 0:
        known = run_query(catalog, "SELECT model FROM models").column("model").to_pylist()
        close = difflib.get_close_matches(model, known, n=3)
        hint = f"did you mean {', '.join(close)}?" if close else "see `catalog models`"
        raise CatalogError(f"model '{model}' is not in catalog {catalog.root}; {hint}")
    return table
