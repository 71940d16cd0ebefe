"""Views over a data root URI: pyarrow datasets registered in DuckDB, as TEMP views.

DuckDB 2.0 has no httpfs here; a registered pyarrow dataset is scanned through pyarrow's S3
filesystem, and DuckDB pushes partition filters (`model = ...`, `run = ...`) and column
projections down to it, so a one-model query opens only that model's files. TEMP views take
precedence over the main schema's views of the same name, so every query, export, figure and
analysis reads the object storage unchanged.
"""
from __future__ import annotations

import duckdb

from kernel_catalog.store.datafs import DataRoot
from kernel_catalog.store.kernel_table import KERNEL_SCHEMA
from kernel_catalog.store.results import DATASETS


def _paths(con: duckdb.DuckDBPyConnection, sql: str, params: list | None = None) -> list[str]:
    return [row[0] for row in con.execute(sql, params or []).fetchall()]


def kernels_dataset_view(con: duckdb.DuckDBPyConnection, data: DataRoot, paths: list[str]) -> str:
    """Register the kernel files as a dataset; returns the SELECT a `kernels` view uses."""
    from kernel_catalog.store.views import KERNEL_COLUMNS

    con.register("_kc_kernels_dataset", data.dataset(paths, KERNEL_SCHEMA, "model"))
    return f"SELECT {', '.join(KERNEL_COLUMNS)} FROM _kc_kernels_dataset"


def attach_remote_views(con: duckdb.DuckDBPyConnection, data: DataRoot) -> None:
    """TEMP views `kernels`, `embeddings`, `labels` over exactly the committed files under `data`."""
    paths = _paths(con, "SELECT path FROM kernel_files ORDER BY path")
    if paths:
        con.execute(f"CREATE OR REPLACE TEMP VIEW kernels AS {kernels_dataset_view(con, data, paths)}")
    for name, schema in DATASETS.items():
        files = _paths(con, "SELECT path FROM result_files WHERE kind = ? ORDER BY path", [name])
        if files:
            con.register(f"_kc_{name}_dataset", data.dataset(files, schema, "run"))
            columns = ", ".join(["run"] + schema.names)
            con.execute(f"CREATE OR REPLACE TEMP VIEW {name} AS SELECT {columns} FROM _kc_{name}_dataset")
