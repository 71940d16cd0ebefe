"""The SQL views users query: `kernels`, `models`, `layers` (the public interface of the catalog).

`kernels` reads exactly the Parquet files recorded in kernel_files, so it is rebuilt inside every
write transaction: a file becomes visible in the same commit that records it, never before.
Paths are relative to the catalog root, which each connection sets as DuckDB's file_search_path,
so a catalog folder can be moved or copied whole.
"""
from __future__ import annotations

import duckdb

from kernel_catalog.store.kernel_table import KERNEL_SCHEMA
from kernel_catalog.store.results import DATASETS, dataset_view_sql

# Column order of the view: identity first, then where the kernel sits, then values and stats.
KERNEL_COLUMNS = [
    "kernel_id", "model", "checkpoint_sha256", "adapter", "trained", "layer", "layer_index",
    "depth", "expert", "channel", "kh", "kw", "weights", "l2", "max_abs", "mean",
    "nonfinite", "near_zero",
]

_LAYER_META_COLUMNS = {
    "kind": "VARCHAR", "stage": "INTEGER", "block": "INTEGER", "in_channels": "INTEGER",
    "out_channels": "INTEGER", "depth_multiplier": "INTEGER", "bias": "BOOLEAN",
    "stride": "JSON", "dilation": "JSON", "padding": "JSON", "bn_folded": "BOOLEAN",
    "reparam": "VARCHAR",
}


def kernels_view_sql(paths: list[str]) -> str:
    return dataset_view_sql(paths, KERNEL_SCHEMA, "model", KERNEL_COLUMNS)


def _paths(con: duckdb.DuckDBPyConnection, sql: str, params: list | None = None) -> list[str]:
    return [row[0] for row in con.execute(sql, params or []).fetchall()]


def _data_root_uri(con: duckdb.DuckDBPyConnection) -> str | None:
    """The data root URI recorded by `catalog init --data-root` (migration 0007), or None."""
    if not con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = 'settings' "
                       "AND table_type = 'BASE TABLE'").fetchall()[0][0]:
        return None
    rows = con.execute("SELECT value FROM settings WHERE key = 'data_root'").fetchall()
    return rows[0][0] if rows else None


def refresh_views(con: duckdb.DuckDBPyConnection) -> None:
    """(Re)create every view from the committed metadata; call inside the write transaction."""
    # Data on object storage (settings.data_root): these views stay empty and every connection
    # the catalog hands out shadows them with TEMP views over the URI (store.remote_views).
    remote = _data_root_uri(con) is not None
    paths = [] if remote else _paths(con, "SELECT path FROM kernel_files ORDER BY path")
    con.execute(f"CREATE OR REPLACE VIEW kernels AS {kernels_view_sql(paths)}")
    for name, schema in DATASETS.items():
        files = [] if remote else _paths(con, "SELECT path FROM result_files WHERE kind = ? ORDER BY path", [name])
        columns = ["run"] + schema.names
        present = {r[0] for r in con.execute("SELECT DISTINCT name FROM parquet_schema(?)", [files]).fetchall()} \
            if files else None
        con.execute(f"CREATE OR REPLACE VIEW {name} AS {dataset_view_sql(files, schema, 'run', columns, present)}")
    con.execute("""
        CREATE OR REPLACE VIEW runs AS
        SELECT run, kind, parent, selection, params, metrics, code_version, device, created_at,
               round(seconds, 2) AS seconds
        FROM run_records ORDER BY created_at""")
    con.execute("CREATE OR REPLACE VIEW clusters AS SELECT * FROM cluster_records ORDER BY run, kh, kw, cluster")
    con.execute("""
        CREATE OR REPLACE VIEW models AS
        SELECT m.model, m.checkpoint_sha256, m.adapter, m.adapter_version, m.trained, m.source,
               m.n_layers, m.n_kernels,
               (SELECT list(DISTINCT l.kh || 'x' || l.kw ORDER BY l.kh || 'x' || l.kw)
                  FROM layer_records l WHERE l.model = m.model) AS kernel_sizes,
               (SELECT sum(l.n_nonfinite) FROM layer_records l WHERE l.model = m.model)::BIGINT AS n_nonfinite,
               (SELECT sum(l.n_near_zero) FROM layer_records l WHERE l.model = m.model)::BIGINT AS n_near_zero,
               m.meta, m.ingested_at
        FROM model_records m
    """)
    meta_columns = ",\n".join(
        f"TRY_CAST(json_extract{'_string' if t == 'VARCHAR' else ''}(l.meta, '$.{name}') AS {t}) AS {name}"
        for name, t in _LAYER_META_COLUMNS.items()
    )
    con.execute(f"""
        CREATE OR REPLACE VIEW layers AS
        SELECT l.model, l.layer, l.expert, l.layer_index, l.depth, l.kh, l.kw, l.n_kernels,
               l.n_nonfinite, l.n_near_zero, l.sparsity, l.variance_entropy,
               {meta_columns},
               l.meta
        FROM layer_records l
    """)
