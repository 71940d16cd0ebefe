"""Training and encoding throughput on one device against the arithmetic bound (issue 20, point 4).

Prints, in one run on one device (a GPU when torch sees one; --device cpu runs the same code here):
  train   `ensemble.train_ensemble` of M members (--members), each on its own --rows rows of one
          shared array (as cross-fit folds share theirs), batch 4,096, --epochs epochs: kernels a
          second summed over members, ms a step; on a GPU with the data resident on the device
          (the default there) and, for comparison, copied from the host every step;
  encode  `autoencoder.encode` of --encode kernels at two batch sizes: kernels a second;
  bound   the device's float32 peak (--peak-tflops; known GPUs by name) over the FLOPs a kernel
          costs: 2 x the MLP's multiply-adds a forward pass, 3 forward passes' worth a training
          step (forward, and backward's two products); what each figure is as a share of it.
Targets (issue 20): training >= 20 M kernels/s summed over members, encoding >= 50 M kernels/s.

Usage: python bench/bench_gpu.py [--device auto|cpu|cuda] [--members 1 7 64] [--rows 200000] [--epochs 3]
       [--encode 10000000] [--peak-tflops X]
       Here (no GPU), a smoke run: --device cpu --members 1 2 --rows 5000 --epochs 1 --encode 100000
On a lent GPU machine (its image holds torch and numpy; nothing to install: the modules timed
import neither duckdb nor timm), from the repository root:
       mkdir -p /tmp/kc && ln -s $PWD/catalog /tmp/kc/kernel_catalog &&
       PYTHONPATH=/tmp/kc PYTHONUNBUFFERED=1 python3 bench/bench_gpu.py
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from kernel_catalog.analysis.embed.autoencoder import KernelAutoencoder, encode, resolve_device  # noqa: E402
from kernel_catalog.analysis.embed.ensemble import Member, train_ensemble  # noqa: E402
from kernel_catalog.analysis.preprocess import preprocess  # noqa: E402

# dense float32 peaks without tensor cores (TF32 off: torch's default for float32 matmuls), TFLOP/s
FP32_PEAK = {"H200": 67.0, "H100": 67.0, "A100": 19.5, "L40S": 91.6, "A10": 31.2, "L4": 30.3}


def multiply_adds(k: int) -> int:
    module = KernelAutoencoder(k)
    return sum(m.in_features * m.out_features for m in module.modules() if isinstance(m, torch.nn.Linear))


def synced(dev: torch.device, fn):
    if dev.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    return out, time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="auto")
    ap.add_argument("--members", type=int, nargs="+", default=[1, 7, 64])
    ap.add_argument("--rows", type=int, default=200_000, help="rows a member trains on")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--encode", type=int, default=10_000_000)
    ap.add_argument("--peak-tflops", type=float, default=None)
    args = ap.parse_args()
    dev = resolve_device(args.device)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or "CPU"
    peak = args.peak_tflops or next((v for key, v in FP32_PEAK.items() if key in name), None)
    k = 49
    flops_forward = 2 * multiply_adds(k)
    bound_train = peak * 1e12 / (3 * flops_forward) if peak else None
    bound_encode = peak * 1e12 / flops_forward if peak else None
    print(f"# bench_gpu {date.today()} on {platform.node()}: {name}, torch {torch.__version__}, "
          f"{len(os.sched_getaffinity(0))} CPU cores; 7x7: {flops_forward} FLOPs a forward pass, "
          f"{3 * flops_forward} a training step a kernel; float32 peak "
          + (f"{peak} TFLOP/s: bound {bound_train / 1e9:.2f} G kernel-steps/s, {bound_encode / 1e9:.2f} G kernels/s encoded"
             if peak else "unknown (--peak-tflops)"), flush=True)
    most = max(args.members)
    rng = np.random.default_rng(0)
    x, _ = preprocess(rng.standard_normal((most * args.rows, k)).astype(np.float32))
    order = rng.permutation(len(x))
    train_ensemble([Member(x[:8192])], 7, 7, epochs=2, device=str(dev), progress=False)   # warm-up
    print("| members | rows each | data | steps | s | ms a step | M kernels/s, summed | share of bound |")
    print("|---|---|---|---|---|---|---|---|")
    model = None
    for m in args.members:
        members = [Member(x, order[j * args.rows:(j + 1) * args.rows], seed=j) for j in range(m)]
        for resident in ([True, False] if dev.type == "cuda" else [False]):
            models, seconds = synced(dev, lambda: train_ensemble(
                members, 7, 7, epochs=args.epochs, device=str(dev), progress=False, resident=resident))
            model = model or models[0]
            steps = models[0].config["steps"]
            rate = m * args.rows * args.epochs / seconds
            share = f"{rate / bound_train:.1%}" if bound_train else "-"
            print(f"| {m} | {args.rows:,} | {'on the device' if resident else 'from the host'} | {steps} | "
                  f"{seconds:.2f} | {1e3 * seconds / steps:.2f} | **{rate / 1e6:.2f}** | {share} |", flush=True)
    print()
    print("| encode | batch | s | M kernels/s | share of bound |")
    print("|---|---|---|---|---|")
    xe = x[np.arange(args.encode) % len(x)]
    for batch in (65_536, 1 << 20):
        encode(model, xe[:batch], batch_size=batch)       # warm-up
        _, seconds = synced(dev, lambda: encode(model, xe, batch_size=batch))
        rate = len(xe) / seconds
        share = f"{rate / bound_encode:.1%}" if bound_encode else "-"
        print(f"| {len(xe):,} kernels | {batch:,} | {seconds:.2f} | **{rate / 1e6:.1f}** | {share} |", flush=True)


if __name__ == "__main__":
    main()
