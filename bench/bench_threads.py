"""CPU threads: the library's default (every core this process may use) against --threads 1.

Same run, same data, three stages of the analysis:
1. autoencoder training (train_autoencoder, 7x7, batch 4096), kernels/s per epoch;
2. encoding (autoencoder.encode), kernels/s;
3. k-means (clustering.cluster, KMeans k=10 on 200k x 49 unit rows), seconds.
Then the "two pools" question: training right after a k-means fit in the same process (scikit-learn's
OpenMP threads and torch's own pool both alive), against training in a fresh state, and training
while another process keeps one core busy (the shared-machine case that made one thread the old
default). Prints ratios; record them in bench/RESULTS.md with the date and machine.
Usage: python bench/bench_threads.py [--kernels 262144]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from kernel_catalog.analysis.autoencoder import encode, train_autoencoder  # noqa: E402
from kernel_catalog.analysis.clustering import cluster  # noqa: E402
from kernel_catalog.analysis.params import available_cores  # noqa: E402
from kernel_catalog.analysis.preprocess import preprocess  # noqa: E402

EPOCHS = 4


def train_rate(x: np.ndarray, threads: int | None) -> tuple[float, object]:
    start = time.perf_counter()
    model = train_autoencoder(x, 7, 7, epochs=EPOCHS, batch_size=4096, device="cpu", progress=False,
                              threads=threads)
    return len(x) * EPOCHS / (time.perf_counter() - start), model


def encode_rate(model, x: np.ndarray, threads: int | None) -> float:
    start = time.perf_counter()
    encode(model, x, threads=threads)
    return len(x) / (time.perf_counter() - start)


def kmeans_seconds(x: np.ndarray, threads: int | None) -> float:
    start = time.perf_counter()
    cluster(x, 10, seed=0, method="kmeans", threads=threads)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kernels", type=int, default=262_144)
    n = parser.parse_args().kernels
    cores = available_cores()
    x, _ = preprocess(np.random.default_rng(0).standard_normal((n, 49)).astype(np.float32))
    km = x[:200_000]
    print(f"{cores} cores available; {n:,} 7x7 kernels, batch 4096, {EPOCHS} epochs")
    train_rate(x[:20_000], None)   # warm-up: library loading and first allocations
    results = {}
    for label, threads in ((f"default ({cores} threads)", None), ("--threads 1", 1)):
        rate, model = train_rate(x, threads or cores)
        results[label] = (rate, encode_rate(model, x, threads or cores), kmeans_seconds(km, threads or cores))
    base = results["--threads 1"]
    for label, (train, enc, km_s) in results.items():
        print(f"  {label:22s} train {train / 1e3:7.0f} k/s ({train / base[0]:.2f}x) | encode {enc / 1e3:7.0f} k/s "
              f"({enc / base[1]:.2f}x) | k-means 200k {km_s:5.2f} s ({base[2] / km_s:.2f}x faster)")

    fresh, _ = train_rate(x, cores)
    kmeans_seconds(km, cores)
    after, _ = train_rate(x, cores)
    print(f"  two pools: training right after a k-means fit {after / 1e3:.0f} k/s vs before it "
          f"{fresh / 1e3:.0f} k/s (ratio {after / fresh:.2f})")

    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        shared = {label: train_rate(x[: n // 4], threads)[0] for label, threads in
                  ((f"default ({cores} threads)", cores), ("--threads 1", 1))}
    finally:
        busy.kill()
        busy.wait()
    print("  one core busy with another process: " + ", ".join(
        f"{label} {rate / 1e3:.0f} k/s" for label, rate in shared.items()))
    print(f"(machine: {os.uname().machine}, {cores} cores; ratios compare runs of this same process)")


if __name__ == "__main__":
    main()
