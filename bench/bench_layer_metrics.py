"""What per-layer sparsity and variance entropy add to the ingest of convnext_base.

convnext_base, random init, saved as safetensors (as bench/bench_ingest.py does, offline), then
`ingest(..., force=True)` into one catalog, alternating runs with the metrics on (as shipped)
and off (`kernel_table.layer_metrics` replaced by a stub returning NULLs), median of N each,
plus the metrics alone over the same 36 layers. Target: on / off < 1.10.
Usage: python bench/bench_layer_metrics.py [--repeats 9] [--arch convnext_base]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from kernel_catalog.adapters.base import IngestOptions  # noqa: E402
from kernel_catalog.ingest import ingest, read_source  # noqa: E402
from kernel_catalog.store import Catalog, kernel_table  # noqa: E402


def checkpoint(arch: str, cache: Path) -> Path:
    path = cache / f"{arch}-random.safetensors"
    if not path.exists():
        import timm
        import torch
        from safetensors.torch import save_file

        cache.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(0)
        save_file(timm.create_model(arch, pretrained=False).state_dict(), str(path))
    return path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--arch", default="convnext_base")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--cache", type=Path, default=Path(".cache/bench"))
    args = parser.parse_args()
    path = checkpoint(args.arch, args.cache)
    options = IngestOptions(checkpoint=path)
    real = kernel_table.layer_metrics
    _, extraction = read_source(args.arch, options)
    flats = [np.ascontiguousarray(l.weights, np.float32).reshape(len(l.weights), -1) for l in extraction.layers]
    with tempfile.TemporaryDirectory() as tmp:
        catalog = Catalog(Path(tmp) / "catalog")
        n = ingest(catalog, args.arch, options, force=True).n_kernels     # warm-up
        on, off = [], []
        for _ in range(args.repeats):
            for metrics, times in ((real, on), (lambda flat: (None, None), off)):
                kernel_table.layer_metrics = metrics
                t = time.perf_counter()
                ingest(catalog, args.arch, options, force=True)
                times.append(time.perf_counter() - t)
        kernel_table.layer_metrics = real
        ingest(catalog, args.arch, options, force=True)
        rows = catalog.sql("SELECT count(*) AS n, count(variance_entropy) AS filled FROM layers").to_pylist()[0]
    alone = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        with kernel_table._one_blas_thread():   # as build_kernel_table runs them
            for flat in flats:
                real(flat)
        alone.append(time.perf_counter() - t)
    t_on, t_off, t_alone = (statistics.median(x) for x in (on, off, alone))
    print(f"{args.arch}: {n:,} kernels in {rows['n']} layers ({rows['filled']} with variance entropy)")
    print(f"ingest, metrics off  {t_off:7.3f} s")
    print(f"ingest, metrics on   {t_on:7.3f} s   = {t_on / t_off:.3f}x (target < 1.10)")
    print(f"metrics alone        {t_alone:7.4f} s   = {100 * t_alone / t_off:.1f} % of the ingest")


if __name__ == "__main__":
    main()
