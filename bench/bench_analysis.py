"""Analysis benchmarks: autoencoder training throughput, and `analyze` end to end on 1 M kernels.

1. Throughput (kernels/s per training epoch, 7x7, batch 4096) of catalog.autoencoder's
   train_autoencoder against a bare torch loop over the same MLP and batches (the floor:
   no shuffling buffer, no schedule, no bookkeeping), on 1 and 2 threads, and on CUDA when
   torch sees a GPU.
2. `analyze --preset default` (embed with the null model, cluster k=10, name) on 1 M synthetic
   7x7 kernels (a planted bank) ingested through the real path; target < 5 min on 2 cores.
Usage: python bench/bench_analysis.py [--kernels 1000000] [--skip-e2e]
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from kernel_catalog.adapters.base import DepthwiseLayer, Extraction  # noqa: E402
from kernel_catalog.analysis.analyze import analyze  # noqa: E402
from kernel_catalog.report.report import report  # noqa: E402
from kernel_catalog.analysis.autoencoder import KernelAutoencoder, cosine_loss, train_autoencoder  # noqa: E402
from kernel_catalog.ingest import commit_extraction  # noqa: E402
from kernel_catalog.analysis.planted import planted_bank, planted_classes  # noqa: E402
from kernel_catalog.analysis.preprocess import preprocess  # noqa: E402
from kernel_catalog.store import Catalog  # noqa: E402


def bare_loop(x: np.ndarray, epochs: int, batch: int, device: str) -> float:
    torch.manual_seed(0)
    model = KernelAutoencoder(x.shape[1], 2).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    data = torch.from_numpy(x).to(device)
    start = time.perf_counter()
    for _ in range(epochs):
        for lo in range(0, len(data), batch):
            xb = data[lo:lo + batch]
            loss = cosine_loss(xb, model(xb)[1])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    if device == "cuda":
        torch.cuda.synchronize()
    return len(x) * epochs / (time.perf_counter() - start)


def ours(x: np.ndarray, epochs: int, batch: int, device: str, threads: int) -> float:
    start = time.perf_counter()
    train_autoencoder(x, 7, 7, epochs=epochs, batch_size=batch, device=device, progress=False, threads=threads)
    return len(x) * epochs / (time.perf_counter() - start)


def throughput(n: int = 262_144, epochs: int = 4) -> None:
    x, _ = preprocess(np.random.default_rng(0).standard_normal((n, 49)).astype(np.float32))
    print(f"training throughput, {n:,} 7x7 kernels, batch 4096, {epochs} epochs "
          f"({n * 49 * 4 / 1e6:.0f} MB of kernels per epoch)")
    devices = [("cpu", 1), ("cpu", 2)] + ([("cuda", 1)] if torch.cuda.is_available() else [])
    for device, threads in devices:
        torch.set_num_threads(threads)
        floor = bare_loop(x, epochs, 4096, device)
        mine = ours(x, epochs, 4096, device, threads)
        print(f"  {device} x{threads} thread(s): train_autoencoder {mine / 1e3:8.0f} k kernels/s | "
              f"bare torch loop {floor / 1e3:8.0f} k/s | ratio {mine / floor:.2f}")


def end_to_end(total: int) -> None:
    root = Path(tempfile.mkdtemp(prefix="bench-analyze-"))
    try:
        catalog = Catalog(root)
        per_class = total // len(planted_classes(7, 7)) // 10
        started = time.perf_counter()
        for part in range(10):      # 10 models of 100 k kernels: ingest stays in bounded memory
            kernels, _ = planted_bank(per_class, 7, 7, snr=2.0, seed=part)
            layers = [DepthwiseLayer(f"blocks.{i}.dw", chunk.reshape(-1, 7, 7))
                      for i, chunk in enumerate(np.array_split(kernels, 10))]
            commit_extraction(catalog, Extraction(f"planted_{part}", "planted", True, layers), "bench", "0")
        print(f"ingested {total:,} planted 7x7 kernels in {time.perf_counter() - started:.1f} s")
        started = time.perf_counter()
        run = analyze(catalog, "default", "bench", progress=False, echo=lambda line: print("  " + line))
        table = report(catalog, run, "model")
        seconds = time.perf_counter() - started
        row = table.to_pylist()[0]
        print(f"analyze --preset default on {total:,} kernels: {seconds:.0f} s (target < 300 s: "
              f"{'met' if seconds < 300 else 'MISSED'}); e.g. {row['model']}: classified {row['classified_pct']} % "
              f"vs null {row['null_classified_pct']} %")
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kernels", type=int, default=1_000_000)
    parser.add_argument("--skip-e2e", action="store_true")
    args = parser.parse_args()
    throughput()
    if not args.skip_e2e:
        end_to_end(args.kernels)


if __name__ == "__main__":
    main()
