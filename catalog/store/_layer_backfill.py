"""Migration 0006's Python step: sparsity and variance entropy for layers ingested before it.

SQL cannot take a singular value spectrum, so the migration's transaction calls `backfill`,
which reads each model's committed kernel files (paths resolved through the connection's
file_search_path, the catalog root) and writes the metrics of `kernel_table.layer_metrics`, the
same function ingest uses. One model's weights are in memory at a time.
"""
from __future__ import annotations

import duckdb
import numpy as np
import pyarrow as pa

from kernel_catalog.errors import CatalogError, error_summary
from kernel_catalog.store.kernel_table import layer_metrics


def _layer_groups(table: pa.Table):
    """Yield (layer, expert, (N, k) weights) for every (layer, expert) in one model's rows."""
    layers = table.column("layer").to_numpy(zero_copy_only=False)
    experts = np.asarray(table.column("expert").fill_null(-1).to_numpy(zero_copy_only=False))
    weights = table.column("weights").combine_chunks()
    lengths = weights.value_lengths().to_numpy(zero_copy_only=False)
    values = weights.flatten().to_numpy(zero_copy_only=False)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    keys = list(dict.fromkeys(zip(layers, experts)))
    for layer, expert in keys:
        rows = np.flatnonzero((layers == layer) & (experts == expert))
        k = int(lengths[rows[0]])
        flat = values[offsets[rows][:, None] + np.arange(k)]
        yield layer, (None if expert < 0 else int(expert)), flat


def backfill(con: duckdb.DuckDBPyConnection) -> int:
    """Fill sparsity / variance_entropy of every layer row that has neither; returns rows updated."""
    models = [r[0] for r in con.execute(
        "SELECT DISTINCT model FROM layer_records WHERE sparsity IS NULL AND variance_entropy IS NULL "
        "ORDER BY model").fetchall()]
    updated = 0
    for model in models:
        paths = [r[0] for r in con.execute(
            "SELECT path FROM kernel_files WHERE model = ? ORDER BY path", [model]).fetchall()]
        if not paths:
            continue
        try:
            root = con.execute("SELECT current_setting('file_search_path')").fetchall()[0][0]
            table = con.sql("SELECT layer, expert, weights FROM read_parquet(?)",
                            params=[[f"{root}/{p}" for p in paths]]).to_arrow_table()
        except duckdb.Error as error:
            raise CatalogError(f"upgrading the catalog: cannot read the kernels of model '{model}' "
                               f"to compute layer metrics ({error_summary(error)})") from None
        for layer, expert, flat in _layer_groups(table):
            sparsity, entropy = layer_metrics(flat)
            con.execute(
                "UPDATE layer_records SET sparsity = ?, variance_entropy = ? "
                "WHERE model = ? AND layer = ? AND expert IS NOT DISTINCT FROM ?",
                [sparsity, entropy, model, layer, expert])
            updated += 1
    return updated
