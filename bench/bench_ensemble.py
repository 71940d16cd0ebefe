"""Ensemble training: what training autoencoders together (one batched model) saves.

Printed, in one run, on the same data (iid Gaussian kernels of one size, preprocessed):
  floor     a bare torch loop for one model: KernelAutoencoder + torch.optim.Adam + the cosine
            loss over one pre-shuffled tensor, nothing else (no schedule, no batching, no records);
  alone     one member trained through the product code (`train_autoencoder`), same steps;
  ensemble  the members `embed --cross-fit 5` trains for one size (the run's own model on n kernels,
            five fold models on 4n/5 each, and the held-out null's one model on round(4n/5) iid
            kernels: 7) trained together (`ensemble.train_ensemble`: lanes of stacks in threads)
            against the sum of the same 7 trained alone (its floor), and against one stack on
            every thread (lanes=1, how they trained before lanes);
  embed     `embed` with cross_fit=5 against cross_fit=0 (a plain embed: the run's model and the
            null's, which also train together) on a catalog of n kernels of that size.
Each figure is the fastest of --repeats runs, the variants interleaved (a shared machine's load
moves every variant alike). Steps: --steps for the first three (one batch an epoch: n <= 4096);
embed uses its own auto epochs unless --embed-epochs. Threads: every core by default (what `embed`
uses), --threads N to cap.

Usage: python bench/bench_ensemble.py [--size 7x7] [--n 120 400 1000 4000] [--steps 300] [--threads N]
       [--auto] (also time the default, cross_fit=None)
"""
from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from kernel_catalog.analysis.embed import embed  # noqa: E402
from kernel_catalog.analysis.embed.autoencoder import KernelAutoencoder, cosine_loss, train_autoencoder  # noqa: E402
from kernel_catalog.analysis.embed.cross_fit import fold_of  # noqa: E402
from kernel_catalog.analysis.embed.ensemble import Member, train_ensemble  # noqa: E402
from kernel_catalog.analysis.embed.null_model import held_out_null  # noqa: E402
from kernel_catalog.analysis.params import EmbedParams, available_cores  # noqa: E402
from kernel_catalog.analysis.preprocess import preprocess  # noqa: E402
from kernel_catalog.ingest import ingest  # noqa: E402
from kernel_catalog.store import Catalog  # noqa: E402


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except Exception:  # noqa: BLE001 - only a label
        return platform.processor() or "unknown CPU"


def floor(x: np.ndarray, steps: int, threads: int) -> float:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = KernelAutoencoder(x.shape[1])
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    xb = torch.from_numpy(x[np.random.default_rng(0).permutation(len(x))])
    t = time.perf_counter()
    for _ in range(steps):
        loss = cosine_loss(xb, model(xb)[1])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return time.perf_counter() - t


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def cross_fit_members(x: np.ndarray, null_train: np.ndarray, folds: int = 5) -> list[Member]:
    """What `embed --cross-fit 5` trains for one size: own model, data folds, the held-out null's one model."""
    fold = fold_of(len(x), folds)
    return [Member(x)] + [Member(x, np.flatnonzero(fold != f)) for f in range(folds)] + [Member(null_train)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="7x7")
    ap.add_argument("--n", type=int, nargs="+", default=[120, 400, 1000, 4000])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--threads", type=int, default=available_cores())
    ap.add_argument("--auto", action="store_true", help="also time embed's default (cross_fit=None)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--embed-epochs", type=int, default=None, help="embed's epochs (default: its auto rule)")
    ap.add_argument("--no-embed", action="store_true")
    args = ap.parse_args()
    kh, kw = (int(v) for v in args.size.split("x"))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"# bench_ensemble {date.today()} on {platform.node()}: {len(os.sched_getaffinity(0))} cores (nproc), {cpu_model()}, "
          f"torch {torch.__version__}, threads {args.threads}, load average {load:.1f} at start")
    kwargs = dict(progress=False, threads=args.threads)
    print("| n | floor: bare loop, ms/step | alone: product code, ms/step (x floor) | 7 together, s "
          "| 7 alone, s (sum) | together / sum | together / one alone | one stack, s (together / it) | load |")
    print("|---|---|---|---|---|---|---|---|---|")
    for n in args.n:
        x, _ = preprocess(np.random.default_rng(1).standard_normal((n, kh * kw)).astype(np.float32))
        members = cross_fit_members(x, held_out_null(n, kh, kw, 5)[0])
        train_autoencoder(x, kh, kw, epochs=10, **kwargs)               # warm-up
        best = {"floor": 1e9, "alone": 1e9, "together": 1e9, "sum": 1e9, "stack": 1e9}
        for _ in range(args.repeats):
            best["floor"] = min(best["floor"], floor(x, args.steps, args.threads))
            best["alone"] = min(best["alone"], timed(lambda: train_autoencoder(x, kh, kw, epochs=args.steps, **kwargs)))
            best["together"] = min(best["together"], timed(lambda: train_ensemble(members, kh, kw, epochs=args.steps,
                                                                                  **kwargs)))
            best["stack"] = min(best["stack"], timed(lambda: train_ensemble(members, kh, kw, epochs=args.steps,
                                                                            lanes=1, **kwargs)))
            best["sum"] = min(best["sum"], sum(timed(lambda m=m: train_autoencoder(
                m.data if m.rows is None else m.data[m.rows], kh, kw, epochs=args.steps, **kwargs)) for m in members))
        ms = {k: 1e3 * v / args.steps for k, v in best.items()}
        print(f"| {n} | {ms['floor']:.2f} | {ms['alone']:.2f} ({ms['alone'] / ms['floor']:.1f}x) | "
              f"{best['together']:.2f} | {best['sum']:.2f} | **{best['together'] / best['sum']:.2f}** | "
              f"{best['together'] / best['alone']:.1f}x | {best['stack']:.2f} ({best['together'] / best['stack']:.2f}) | "
              f"{os.getloadavg()[0]:.1f} |", flush=True)
    if args.no_embed:
        return
    print()
    print("| n | embed, cross_fit=0, s | embed, cross_fit=5, s | cross_fit=5 / plain | default (auto), s | load |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.n:
            catalog = Catalog(Path(tmp) / f"catalog-{n}")
            path = Path(tmp) / f"iid{n}.npz"
            np.savez(path, weights=np.random.default_rng(2).standard_normal((n, kh, kw)).astype(np.float32))
            ingest(catalog, str(path))
            best = {0: 1e9, 5: 1e9, **({None: 1e9} if args.auto else {})}
            for rep in range(args.repeats):
                for folds in best:
                    params = EmbedParams(cross_fit=folds, threads=args.threads, epochs=args.embed_epochs, device="cpu")
                    best[folds] = min(best[folds], timed(lambda: embed(catalog, f"r{rep}-{folds}", params=params,
                                                                       progress=False)))
            auto = f"{best[None]:.2f}" if args.auto else "-"
            print(f"| {n} | {best[0]:.2f} | {best[5]:.2f} | **{best[5] / best[0]:.2f}** | {auto} | "
                  f"{os.getloadavg()[0]:.1f} |", flush=True)


if __name__ == "__main__":
    main()
