"""A cluster run on a size held whole against the same size in blocks (cluster_blocks): wall time
and peak memory, same catalog, same embed run, same run; the partitions are checked equal.

Sources: one kernel bank of --kernels 7x7 kernels (the 14 planted classes of
`kernel_catalog.analysis.validation.planted`, 50 clean draws each, repeated with fresh noise at SNR 3). Each cluster
run goes in its own process, so its peak RSS (VmHWM) is its own: "whole" with the default
bounds, "blocks" with `cluster_blocks.IN_MEMORY` set to 0 (every size in blocks of --block-rows).
Usage: python bench/bench_cluster_blocks.py [--kernels 1000000] [--block-rows 262144] [--threads 2]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

CHILD = """
import json, sys, time
from kernel_catalog.analysis.cluster import _blocks as cluster_blocks, cluster_run
from kernel_catalog.analysis.params import ClusterParams
from kernel_catalog.store import Catalog
catalog, run, blocked, block_rows, threads = sys.argv[1], sys.argv[2], sys.argv[3] == "1", int(sys.argv[4]), int(sys.argv[5])
if blocked:
    cluster_blocks.IN_MEMORY, cluster_blocks.BLOCK_ROWS = 0, block_rows
started = time.perf_counter()
metrics = cluster_run(Catalog(catalog), run, "e", ClusterParams(k=14, threads=threads))["7x7"]
# VmHWM, not ru_maxrss: Linux carries the parent's high-water mark across fork + exec into ru_maxrss
hwm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM"))
print(json.dumps({"seconds": time.perf_counter() - started, "rss_mb": hwm / 1024,
                  "blocks": metrics.get("blocks", 1), "n": metrics["n"]}))
"""


def make_bank(path: Path, n: int) -> None:
    from kernel_catalog.analysis.validation import planted_bank

    base = planted_bank(50, 7, 7, snr=np.inf, seed=0)
    rng = np.random.default_rng(1)
    rows = rng.integers(0, len(base.kernels), n)
    clean = base.kernels[rows].astype(np.float32)
    scale = np.sqrt((clean ** 2).mean(axis=1, keepdims=True) / 3.0)          # SNR 3
    np.save(path, (clean + rng.normal(size=clean.shape).astype(np.float32) * scale).reshape(n, 7, 7))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kernels", type=int, default=1_000_000)
    parser.add_argument("--block-rows", type=int, default=1 << 18)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args()

    from kernel_catalog.analysis.embed import embed
    from kernel_catalog.analysis.params import EmbedParams
    from kernel_catalog.ingest import ingest
    from kernel_catalog.store import Catalog

    with tempfile.TemporaryDirectory(prefix="bench-blocks-") as folder:
        bank = Path(folder) / "bank.npy"
        started = time.perf_counter()
        make_bank(bank, args.kernels)
        catalog = Catalog(Path(folder) / "catalog")
        ingest(catalog, str(bank))
        embed(catalog, "e", params=EmbedParams(epochs=1, null_model=False, threads=args.threads), progress=False)
        print(f"{args.kernels} 7x7 kernels ingested and embedded in {time.perf_counter() - started:.0f} s")
        results = {}
        for run, blocked in (("whole", "0"), ("blocks", "1")):
            out = subprocess.run([sys.executable, "-c", CHILD, str(catalog.root), run, blocked, str(args.block_rows),
                                  str(args.threads)], capture_output=True, text=True, check=True)
            results[run] = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"{run:>6}: {results[run]['seconds']:7.1f} s, peak RSS {results[run]['rss_mb']:7.0f} MB, "
                  f"{results[run]['blocks']} block(s)")
        same = catalog.sql("SELECT avg((a.cluster IS NOT DISTINCT FROM b.cluster)::INT) AS same FROM labels a "
                           "JOIN labels b USING (kernel_id) WHERE a.run = 'whole' AND b.run = 'blocks'")
        w, b = results["whole"], results["blocks"]
        print(f"blocks / whole: time {b['seconds'] / w['seconds']:.2f}x, peak RSS {b['rss_mb'] / w['rss_mb']:.2f}x; "
              f"same cluster for {same.column('same')[0].as_py():.4%} of kernels")


if __name__ == "__main__":
    main()
