"""The SQL views users query: `kernels`, `models`, `layers` (the public interface of the catalog).

The views are TEMP views that the code builds on every connection the catalog hands out (and
again inside every write transaction): nothing stored in a catalog file is ever run. `kernels`
reads exactly the Parquet files recorded in kernel_files, so a file becomes visible in the same
commit that records it, never before. Paths are relative to the catalog root, which each
connection sets as DuckDB's file_search_path, so a catalog folder can be moved or copied whole.
With a data root URI the same views read pyarrow datasets over the URI (no httpfs needed).
"""
from __future__ import annotations

from functools import lru_cache

import duckdb

from kernel_catalog.store._sandbox import check_recorded_paths
from kernel_catalog.store.datafs import DataRoot
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
    """SELECT over these kernel files (absolute paths: DuckDB's allowed_directories checks a path
    before resolving it against file_search_path)."""
    return dataset_view_sql(paths, KERNEL_SCHEMA, "model", KERNEL_COLUMNS)


def _paths(con: duckdb.DuckDBPyConnection, sql: str, params: list | None = None) -> list[str]:
    return [row[0] for row in con.execute(sql, params or []).fetchall()]


@lru_cache(maxsize=256)
def _present_columns(files: tuple[str, ...]) -> frozenset[str]:
    """The columns some of these result files have (files are never rewritten: cached by name)."""
    con = duckdb.connect()
    try:
        return frozenset(r[0] for r in con.execute("SELECT DISTINCT name FROM parquet_schema(?)", [list(files)]).fetchall())
    finally:
        con.close()


def install_views(con: duckdb.DuckDBPyConnection, data: DataRoot, installed: dict | None = None) -> dict:
    """Create every view of this connection from its committed metadata, as TEMP views: built by
    this code on each connection, never stored in (nor read from) the catalog file. Recorded paths
    are checked first (store._sandbox): a file that is not the catalog's own is never read.

    Returns what was installed; given back as `installed` (the same connection, views not rolled
    back since), only the views whose files changed are built again."""
    installed = dict(installed or {}) if (installed or {}).get("data") == data.location else {"data": data.location}
    kernel_paths = _paths(con, "SELECT path FROM kernel_files ORDER BY path")
    result_paths = {name: _paths(con, "SELECT path FROM result_files WHERE kind = ? ORDER BY path", [name])
                    for name in DATASETS}
    check_recorded_paths(data.local_root, kernel_paths + [p for ps in result_paths.values() for p in ps],
                         data.location, local=data.is_local)
    if installed.get("kernels") != kernel_paths:
        if data.is_local or not kernel_paths:
            con.execute(f"CREATE OR REPLACE TEMP VIEW kernels AS "
                        f"{kernels_view_sql(data.absolute(kernel_paths) if data.is_local else [])}")
        else:
            con.register("_kc_kernels_dataset", data.dataset(kernel_paths, KERNEL_SCHEMA, "model"))
            con.execute(f"CREATE OR REPLACE TEMP VIEW kernels AS SELECT {', '.join(KERNEL_COLUMNS)} FROM _kc_kernels_dataset")
        installed["kernels"] = kernel_paths
    for name, schema in DATASETS.items():
        files = result_paths[name]
        if installed.get(name) == files:
            continue
        installed[name] = files
        columns = ["run"] + schema.names
        if files and not data.is_local:
            con.register(f"_kc_{name}_dataset", data.dataset(files, schema, "run"))
            con.execute(f"CREATE OR REPLACE TEMP VIEW {name} AS SELECT {', '.join(columns)} FROM _kc_{name}_dataset")
            continue
        files = data.absolute(files)
        present = _present_columns(tuple(files)) if files else None
        con.execute(f"CREATE OR REPLACE TEMP VIEW {name} AS {dataset_view_sql(files, schema, 'run', columns, present)}")
    if installed.get("static"):
        return installed
    installed["static"] = True
    con.execute("""
        CREATE OR REPLACE TEMP VIEW runs AS
        SELECT run, kind, parent, selection, params, metrics, code_version, device, created_at,
               round(seconds, 2) AS seconds
        FROM run_records ORDER BY created_at""")
    con.execute("CREATE OR REPLACE TEMP VIEW clusters AS SELECT * FROM cluster_records ORDER BY run, kh, kw, cluster")
    con.execute("""
        CREATE OR REPLACE TEMP VIEW models AS
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
        CREATE OR REPLACE TEMP VIEW layers AS
        SELECT l.model, l.layer, l.expert, l.layer_index, l.depth, l.kh, l.kw, l.n_kernels,
               l.n_nonfinite, l.n_near_zero, l.sparsity, l.variance_entropy,
               {meta_columns},
               l.meta
        FROM layer_records l
    """)
    return installed
