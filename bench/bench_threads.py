"""CPU threads: the default (every core this process may use) against --threads 1, and why the
CLI sets OMP_WAIT_POLICY=PASSIVE.

Each configuration runs in a fresh process (OpenMP reads its wait policy once, at start):
threads (every core | 1) x OpenMP wait policy (the runtime's default, ACTIVE spinning | PASSIVE,
what `catalog` sets) x machine (idle | one core kept busy by another process). Measured per
process: autoencoder training (7x7, batch 4096) in kernels/s per epoch, encoding in kernels/s,
and a k-means fit (k = 10, unit rows) in seconds; and two models trained together, as a run trains
its own and its null's (`train_ensemble`: lanes of one thread each by default, and one stack on
every thread, lanes=1, for comparison), in kernels/s summed. Ratios are against --threads 1 in the
same run; record them in bench/RESULTS.md with the date and machine.
Usage: python bench/bench_threads.py [--kernels 131072]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

WORKER = """
import json, sys, time
import numpy as np
from kernel_catalog.analysis.cluster import cluster
from kernel_catalog.analysis.embed import Member, encode, train_autoencoder, train_ensemble
from kernel_catalog.analysis.preprocess import preprocess
n, threads, epochs = int(sys.argv[1]), int(sys.argv[2]), 4
x, _ = preprocess(np.random.default_rng(0).standard_normal((n, 49)).astype(np.float32))
train_autoencoder(x[:8192], 7, 7, epochs=1, batch_size=4096, device="cpu", progress=False, threads=threads)
t = time.perf_counter()
model = train_autoencoder(x, 7, 7, epochs=epochs, batch_size=4096, device="cpu", progress=False, threads=threads)
train = n * epochs / (time.perf_counter() - t)
t = time.perf_counter()
encode(model, x, threads=threads)
enc = n / (time.perf_counter() - t)
t = time.perf_counter()
cluster(x[: n // 2], 10, seed=0, method="kmeans", threads=threads)
kmeans_s = time.perf_counter() - t
half = [Member(x, np.arange(0, n, 2), seed=1), Member(x, np.arange(1, n, 2), seed=2)]
pair = {}
for name, lanes in (("lanes", None), ("stack", 1)):
    t = time.perf_counter()
    train_ensemble(half, 7, 7, epochs=2 * epochs, device="cpu", progress=False, threads=threads, lanes=lanes)
    pair[name] = n * 2 * epochs / (time.perf_counter() - t)
print(json.dumps({"train": train, "encode": enc, "kmeans_s": kmeans_s, "pair_lanes": pair["lanes"],
                  "pair_stack": pair["stack"]}))
"""


def measure(n: int, threads: int, policy: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if policy:
        env["OMP_WAIT_POLICY"] = policy
    out = subprocess.run([sys.executable, "-c", WORKER, str(n), str(threads)], env=env, cwd=REPO,
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kernels", type=int, default=131_072)
    n = parser.parse_args().kernels
    sys.path.insert(0, str(REPO))
    from kernel_catalog.analysis.params import available_cores

    cores = available_cores()
    print(f"{cores} cores available; {n:,} 7x7 kernels (k-means on {n // 2:,}); one process per line")
    for machine in ("idle", "one core busy"):
        busy = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if machine != "idle" else None
        try:
            rows = {(threads, policy): measure(n, threads, policy)
                    for policy in (None, "PASSIVE") for threads in (1, cores)}
        finally:
            if busy is not None:
                busy.kill()
                busy.wait()
        for (threads, policy), r in rows.items():
            base = rows[(1, policy)]
            print(f"  {machine:13s} {policy or 'ACTIVE (default)':16s} threads {threads:2d}: "
                  f"train {r['train'] / 1e3:6.0f} k/s ({r['train'] / base['train']:.2f}x) | "
                  f"encode {r['encode'] / 1e3:6.0f} k/s ({r['encode'] / base['encode']:.2f}x) | "
                  f"k-means {r['kmeans_s']:5.2f} s ({base['kmeans_s'] / r['kmeans_s']:.2f}x) | "
                  f"two models: lanes {r['pair_lanes'] / 1e3:6.0f} k/s, one stack {r['pair_stack'] / 1e3:6.0f} k/s")
    print(f"(machine: {os.uname().machine}, {cores} cores)")


if __name__ == "__main__":
    main()
