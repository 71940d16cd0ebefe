"""`catalog nearest` top-10 over 1 M 7x7 kernels, against numpy brute force in the same run.

Catalog: 1,000,000 smooth random 7x7 kernels in 10 models, written through the real ingest path
(kept under --cache so a second run skips it). Measured, warm page cache:
  first    the first `nearest` call: reads the kernels from Parquet, preprocesses them and writes
           the cached unit matrix (analysis._nearest_cache);
  ours     later calls (median over --repeats different query kernels): open the catalog, load
           the query, memory-map the cache, one matrix-vector product, top-k, fetch 10 rows' metadata;
  where    the same with --where "model = 'm3'" (a SQL condition narrowing the candidates);
  brute    numpy brute force over the same kernels already in memory as an (N, 49) float32
           array: centre + unit L2 every row, matrix-vector product, top-k (what a script does);
  matvec   only the product + top-k over the preprocessed matrix already in memory (the floor).
Target: ours < 1 s. Usage: python bench/bench_nearest.py [--n 1000000] [--repeats 7]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

import kernel_catalog as kc  # noqa: E402
from kernel_catalog.adapters.base import DepthwiseLayer, Extraction  # noqa: E402
from kernel_catalog.analysis.search import top_k  # noqa: E402
from kernel_catalog.analysis.preprocess import preprocess  # noqa: E402
from kernel_catalog.ingest import commit_extraction  # noqa: E402

MODELS = 10


def build(root: Path, n: int) -> kc.Catalog:
    cat = kc.open(root)
    if cat.exists() and cat.sql("SELECT count(*) AS n FROM kernels").to_pylist()[0]["n"] == n:
        return cat
    started = time.perf_counter()
    rng = np.random.default_rng(0)
    per_model = n // MODELS
    for m in range(MODELS):
        layers = []
        for j, size in enumerate(np.array_split(np.arange(per_model), 20)):
            w = rng.normal(size=(len(size), 7, 7)).astype(np.float32)
            w = (w + np.roll(w, 1, 1) + np.roll(w, 1, 2)).astype(np.float32)   # some spatial structure
            layers.append(DepthwiseLayer(f"stage.{j}.dw", w))
        commit_extraction(cat, Extraction(f"m{m}", f"m{m}", True, layers), "bench", "1.0", force=True)
    print(f"ingested {n:,} 7x7 kernels in {time.perf_counter() - started:.1f} s")
    return cat


def _memory() -> str:
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return f"RSS {status['VmRSS'].strip()}, peak {status['VmHWM'].strip()}"


def median_time(fn, args_list) -> float:
    times = []
    for args in args_list:
        t = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--cache", type=Path, default=Path(".cache/bench"))
    args = parser.parse_args()
    cat = build(args.cache / f"nearest-{args.n}", args.n)
    cache_dir = cat.root / "cache" / "nearest"
    for f in cache_dir.glob("*.npy") if cache_dir.exists() else ():
        f.unlink()   # measure the first call as a first call
    ids = cat.sql(f"SELECT kernel_id FROM kernels USING SAMPLE {args.repeats + 1} ROWS (reservoir, 1)"
                  ).column("kernel_id").to_pylist()

    t = time.perf_counter()
    first = cat.nearest(kernel=ids[0], limit=10)
    t_first = time.perf_counter() - t
    t_ours = median_time(lambda i: cat.nearest(kernel=i, limit=10), [(i,) for i in ids[1:]])
    t_where = median_time(lambda i: cat.nearest(kernel=i, limit=10, where="model = 'm3'"), [(i,) for i in ids[1:]])

    memory = _memory()   # before the baseline loads its own copy of the kernels
    table = cat.sql("SELECT kernel_id, weights FROM kernels")       # the same kernels, in memory
    all_ids = table.column("kernel_id").to_numpy()
    raw = np.concatenate([c.flatten().to_numpy() for c in table.column("weights").chunks]).reshape(-1, 49)
    del table
    index = {int(k): i for i, k in enumerate(all_ids)}

    def brute(kernel_id):
        unit, usable = preprocess(raw)
        unit[~usable] = 0
        idx, scores = top_k(unit, unit[index[kernel_id]], 10)
        return all_ids[idx]

    unit_mem, _ = preprocess(raw)

    def matvec(kernel_id):
        return all_ids[top_k(unit_mem, unit_mem[index[kernel_id]], 10)[0]]

    assert brute(ids[0]).tolist() == first.column("kernel_id").to_pylist()   # same answer
    t_brute = median_time(brute, [(i,) for i in ids[1:4]])
    t_matvec = median_time(matvec, [(i,) for i in ids[1:]])
    disk = sum(f.stat().st_size for f in cache_dir.glob("*.npy"))
    print(f"kernels: {len(all_ids):,} 7x7; cache on disk {disk / 1e6:.0f} MB "
          f"(memory-mapped: the same in the page cache when warm)")
    print(f"process memory after our calls: {memory} (peak includes building the cache)")
    print(f"first call (builds the cache) {t_first:7.3f} s")
    print(f"ours, later calls             {t_ours:7.3f} s   (target < 1 s)")
    print(f"ours with --where model='m3'  {t_where:7.3f} s")
    print(f"numpy brute force, in memory  {t_brute:7.3f} s   ours = {t_ours / t_brute:.2f}x")
    print(f"matvec + top-k only, in memory {t_matvec:6.3f} s   ours = {t_ours / t_matvec:.1f}x the floor")


if __name__ == "__main__":
    main()
