"""Reading a selection of kernels (a SQL WHERE over `kernels`) as numpy, in memory or streamed.

The catalog database is opened only long enough to learn which Parquet files are committed;
the kernels are then read from those files through a private in-memory DuckDB, so a long
training run never holds the catalog and writers are not kept waiting.

Two helpers every stage that reads kernels uses: `weight_rows` (a `weights` column as an (N, k)
array) and `where_error` (the one message for a `--where` the database refuses).
"""
from __future__ import annotations

from collections.abc import Iterator

import duckdb
import numpy as np
import pyarrow as pa

from kernel_catalog.errors import CatalogError, error_summary
from kernel_catalog.store import Catalog


def weight_rows(column: pa.ChunkedArray, k: int, dtype=np.float32) -> np.ndarray:
    """(N, k) array of `dtype` from a list column whose rows all hold k values (`kernels.weights`)."""
    parts = [chunk.flatten().to_numpy(zero_copy_only=False) for chunk in column.chunks]
    flat = np.concatenate(parts) if parts else np.empty(0, np.float32)
    return flat.astype(dtype, copy=False).reshape(-1, k)


def where_error(where: str, error: Exception, option: str = "--where") -> CatalogError:
    """The one message for a selection the database refuses: `--where 'x': <its first two lines>`.
    error: DuckDB's, or the CatalogError of `Catalog.sql` (its 'SQL error: ' prefix is dropped);
    option: the option that gave the condition (--where, drift's --a / --b)."""
    return CatalogError(f"{option} {where!r}: {error_summary(error, lines=2).removeprefix('SQL error: ')}")


class KernelSelection:
    """The kernels matching `where` (SQL over the `kernels` view) in one catalog."""

    def __init__(self, catalog: Catalog, where: str | None = None):
        self.catalog = catalog
        self.where = where.strip() if where and where.strip() else "true"
        with catalog.reader() as con:
            self.paths = [r[0] for r in con.execute("SELECT path FROM kernel_files ORDER BY path").fetchall()]
        self._con = catalog.data_connection()
        catalog.kernels_view(self._con, self.paths)   # local files, or a dataset on the data root URI
        try:
            self._sizes = self._con.sql(
                f"SELECT kh, kw, count(*) AS n FROM kernels WHERE ({self.where}) GROUP BY ALL ORDER BY kh, kw"
            ).fetchall()
        except duckdb.Error as error:
            raise where_error(where, error) from None

    def sizes(self) -> list[tuple[int, int, int]]:
        """(kh, kw, count) of every kernel size in the selection."""
        return [(int(kh), int(kw), int(n)) for kh, kw, n in self._sizes]

    def _query(self, kh: int, kw: int, columns: str) -> duckdb.DuckDBPyRelation:
        # No ORDER BY: DuckDB preserves file order, so the same selection always comes back in
        # the same order (deterministic training) without sorting millions of weight lists.
        return self._con.sql(
            f"SELECT {columns} FROM kernels WHERE ({self.where}) AND kh = {int(kh)} AND kw = {int(kw)}")

    def load(self, kh: int, kw: int, with_model: bool = False) -> tuple[np.ndarray, ...]:
        """(kernel_ids (N,), weights (N, kh*kw) float32) of one size, in memory; with_model adds
        each kernel's model name (N,) as a third array."""
        table = self._query(kh, kw, "kernel_id, weights" + (", model" if with_model else "")).to_arrow_table()
        ids = table.column("kernel_id").to_numpy()
        weights = weight_rows(table.column("weights"), kh * kw)
        if with_model:
            return ids, weights, np.asarray(table.column("model").to_pylist(), dtype=object)
        return ids, weights

    def batches(self, kh: int, kw: int, rows: int = 1 << 18) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Stream (kernel_ids, weights) batches of up to `rows` kernels (memory: one batch)."""
        reader = self._query(kh, kw, "kernel_id, weights").to_arrow_reader(rows)
        for batch in reader:
            table = pa.Table.from_batches([batch])
            yield table.column("kernel_id").to_numpy(), weight_rows(table.column("weights"), kh * kw)

    def close(self) -> None:
        self._con.close()
