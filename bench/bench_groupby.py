"""SQL group-by over a synthetic catalog of 10 M kernels (target: < 1 s on 2 cores).

The catalog is built through the real ingest path (commit_extraction -> Parquet -> views), 20
models of 500 k kernels. Baseline in the same run: the same query on a native DuckDB table
holding the same rows, so the ratio shows what reading through Parquet views costs.
Usage: python bench/bench_groupby.py [--kernels 10000000] [--keep DIR]
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kernel_catalog.adapters.base import DepthwiseLayer, Extraction  # noqa: E402
from kernel_catalog.ingest import commit_extraction  # noqa: E402
from kernel_catalog.store import Catalog  # noqa: E402

QUERIES = {
    "per model and size": "SELECT model, kh, kw, count(*) AS n, avg(l2) AS l2 FROM kernels GROUP BY ALL",
    "per model and layer": "SELECT model, layer_index, count(*) AS n, avg(max_abs) AS m, "
                           "count(*) FILTER (WHERE near_zero) AS z FROM kernels GROUP BY ALL",
}


def build(catalog: Catalog, total: int, models: int = 20, layers: int = 25) -> float:
    rng = np.random.default_rng(0)
    per_layer = total // (models * layers)
    started = time.perf_counter()
    for m in range(models):
        extraction = Extraction(f"synthetic_{m:02d}", "synthetic", True, [
            DepthwiseLayer(f"stages.{l // 5}.blocks.{l % 5}.dw",
                           rng.standard_normal((per_layer, 7, 7), dtype=np.float32))
            for l in range(layers)])
        commit_extraction(catalog, extraction, "synthetic", "0")
        print(f"  ingested model {m + 1}/{models}", end="\r", file=sys.stderr)
    return time.perf_counter() - started


def best_of(con, sql: str, repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        con.sql(sql).fetchall()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kernels", type=int, default=10_000_000)
    parser.add_argument("--keep", type=Path, default=None)
    args = parser.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="bench-groupby-"))
    catalog = Catalog(root)
    try:
        if not catalog.exists():
            seconds = build(catalog, args.kernels)
            print(f"built {args.kernels:,} kernels through ingest in {seconds:.1f} s")
        with catalog.reader() as con:
            n = con.sql("SELECT count(*) FROM kernels").fetchall()[0][0]
            print(f"catalog: {n:,} kernels in {root}")
            con.execute("SET temp_directory = ''")
            native = con.sql("SELECT model, layer_index, kh, kw, l2, max_abs, near_zero FROM kernels").to_arrow_table()
            con.register("native_kernels", native)
            for label, sql in QUERIES.items():
                view = best_of(con, sql)
                base = best_of(con, sql.replace("FROM kernels", "FROM native_kernels"))
                print(f"{label:22s} view {view:6.3f} s | in-memory Arrow baseline {base:6.3f} s | ratio {view / base:5.2f}x"
                      f" | target < 1 s: {'ok' if view < 1 else 'MISSED'}")
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
