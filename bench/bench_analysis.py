"""Analysis benchmarks: autoencoder training throughput, and `analyze` end to end on 1 M kernels.

1. Throughput (kernels/s per training epoch, 7x7, batch 4096) of catalog.autoencoder's
   train_autoencoder against a bare torch loop over the same MLP and batches (the floor:
   no shuffling buffer, no schedule, no bookkeeping), and `encode` throughput (1 M kernels), on
   1 thread, on every core, and on CUDA when torch sees a GPU.
2. `analyze --preset default` (embed with the null model, cluster k=10, name) on 1 M synthetic
   7x7 kernels (a planted bank) ingested through the real path (not timed; --keep DIR ingests once
   and reuses it); target <= 60 s on 2 cores (issue 20, point 5).
   Each step's start is printed with the seconds since the analysis began.
Usage: python bench/bench_analysis.py [--kernels 1000000] [--skip-e2e] [--skip-throughput] [--device auto|cpu|cuda]
       [--keep DIR]
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
from kernel_catalog.analysis.embed.autoencoder import KernelAutoencoder, cosine_loss, encode, train_autoencoder  # noqa: E402
from kernel_catalog.analysis.params import available_cores  # noqa: E402
from kernel_catalog.ingest import commit_extraction  # noqa: E402
from kernel_catalog.analysis.validation import planted_bank, planted_classes  # noqa: E402
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


def encode_rate(x: np.ndarray, device: str, threads: int) -> float:
    """Kernels per second through `encode` (a trained model; the second of two passes)."""
    model = train_autoencoder(x[:65536], 7, 7, epochs=1, device=device, progress=False, threads=threads)
    encode(model, x[:65536], threads=threads)                       # warm-up (CUDA context, kernels)
    start = time.perf_counter()
    encode(model, x, threads=threads)
    return len(x) / (time.perf_counter() - start)


def throughput(n: int = 262_144, epochs: int = 4, encode_n: int = 1_048_576) -> None:
    x, _ = preprocess(np.random.default_rng(0).standard_normal((n, 49)).astype(np.float32))
    xe, _ = preprocess(np.random.default_rng(1).standard_normal((encode_n, 49)).astype(np.float32))
    print(f"training throughput, {n:,} 7x7 kernels, batch 4096, {epochs} epochs "
          f"({n * 49 * 4 / 1e6:.0f} MB of kernels per epoch); encoding {encode_n:,} kernels")
    cores = available_cores()
    devices = [("cpu", 1)] + ([("cpu", cores)] if cores > 1 else []) + \
        ([("cuda", 1)] if torch.cuda.is_available() else [])
    if torch.cuda.is_available():
        print(f"  GPU: {torch.cuda.get_device_name(0)}, torch {torch.__version__}")
    for device, threads in devices:
        torch.set_num_threads(threads)
        if device == "cuda":          # CUDA context and cuBLAS handles: not part of either loop's time
            bare_loop(x[:16384], 1, 4096, device)
        floor = bare_loop(x, epochs, 4096, device)
        mine = ours(x, epochs, 4096, device, threads)
        rate = encode_rate(xe, device, threads)
        print(f"  {device} x{threads} thread(s): train_autoencoder {mine / 1e3:8.0f} k kernels/s | "
              f"bare torch loop {floor / 1e3:8.0f} k/s | ratio {mine / floor:.2f} | encode {rate / 1e3:8.0f} k/s",
              flush=True)


def end_to_end(total: int, device: str = "auto", keep: str | None = None, target: float = 60.0,
               floor: bool = False) -> None:
    """Ingest the planted bank (into `keep` when given, reused by later runs: ingest is not part
    of the analysis), then time `analyze --preset default`, each step's start printed."""
    import os
    import resource

    root = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="bench-analyze-"))
    marker = root / f".bench-planted-{total}"
    try:
        catalog = Catalog(root)
        if marker.exists():
            print(f"reusing the {total:,} planted 7x7 kernels ingested in {root}")
        else:
            per_class = total // len(planted_classes(7, 7)) // 10
            started = time.perf_counter()
            for part in range(10):      # 10 models of 100 k kernels: ingest stays in bounded memory
                kernels, _ = planted_bank(per_class, 7, 7, snr=2.0, seed=part)
                layers = [DepthwiseLayer(f"blocks.{i}.dw", chunk.reshape(-1, 7, 7))
                          for i, chunk in enumerate(np.array_split(kernels, 10))]
                commit_extraction(catalog, Extraction(f"planted_{part}", "planted", True, layers), "bench", "0")
            print(f"ingested {total:,} planted 7x7 kernels in {time.perf_counter() - started:.1f} s")
            if keep:
                marker.touch()
        print(f"load average {os.getloadavg()[0]:.2f} before the analysis; torch threads {torch.get_num_threads()}",
              flush=True)
        started = time.perf_counter()
        def echo(line: str) -> None:
            print(f"  {time.perf_counter() - started:6.1f} s  {line}", flush=True)

        run = analyze(catalog, "default", "bench", device=device, progress=False, echo=echo, replace=True)
        echo("analysis done")
        seconds = time.perf_counter() - started
        table = report(catalog, run, "model")
        row = table.to_pylist()[0]
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        if floor:   # the training's floor: a bare torch loop, one model, as many steps of the same batch
            from kernel_catalog.analysis.embed._run import load_run_models

            model = load_run_models(catalog, f"{run}-ae")["7x7"][None]
            steps, batch = model.config["steps"], model.config["batch_size"]
            x, _ = preprocess(np.random.default_rng(0).standard_normal((8 * batch, 49)).astype(np.float32))
            torch.set_num_threads(available_cores())
            rate = bare_loop(x, steps // 8, batch, "cpu")
            one = steps * batch / rate
            print(f"floor: a bare torch loop trains one model {steps} steps of {batch} in {one:.1f} s; the run trains "
                  f"2 (its model and the null's): floor {2 * one:.1f} s for training", flush=True)
        print(f"analyze --preset default on {total:,} kernels: {seconds:.1f} s (target <= {target:.0f} s: "
              f"{'met' if seconds <= target else 'MISSED'}); e.g. {row['model']}: classified {row['classified_pct']} % "
              f"vs null {row['null_classified_pct']} %; peak RSS {peak:.2f} GiB; load average {os.getloadavg()[0]:.2f} "
              f"at the end")
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kernels", type=int, default=1_000_000)
    parser.add_argument("--skip-e2e", action="store_true")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--device", default="auto", help="end to end: auto (CUDA when torch sees one) | cpu | cuda")
    parser.add_argument("--keep", metavar="DIR", help="end to end: ingest into DIR once and reuse it in later runs")
    parser.add_argument("--floor", action="store_true", help="end to end: also time the training's floor (a bare loop)")
    args = parser.parse_args()
    if not args.skip_throughput:
        throughput()
    if not args.skip_e2e:
        end_to_end(args.kernels, args.device, args.keep, floor=args.floor)


if __name__ == "__main__":
    main()
