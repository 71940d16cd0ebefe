"""Kernels on a data root URI as a DuckDB relation: a pyarrow dataset registered in a connection.

DuckDB 2.0 has no httpfs here; a registered pyarrow dataset is scanned through pyarrow's S3
filesystem, and DuckDB pushes partition filters (`model = ...`, `run = ...`) and column
projections down to it, so a one-model query opens only that model's files. (store.views builds
the catalog's views over such datasets the same way.)
"""
from __future__ import annotations

import duckdb

from kernel_catalog.store.datafs import DataRoot
from kernel_catalog.store.kernel_table import KERNEL_SCHEMA


def kernels_dataset_view(con: duckdb.DuckDBPyConnection, data: DataRoot, paths: list[str]) -> str:
    """Register the kernel files as a dataset; returns the SELECT a `kernels` view uses."""
    from kernel_catalog.store.views import KERNEL_COLUMNS

    con.register("_kc_kernels_dataset", data.dataset(paths, KERNEL_SCHEMA, "model"))
    return f"SELECT {', '.join(KERNEL_COLUMNS)} FROM _kc_kernels_dataset"
