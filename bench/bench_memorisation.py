"""Small selections: does the autoencoder memorise the kernels it is trained on?

The protocol (as the paper's) scores each kernel by how well the autoencoder trained on the
selection reconstructs it: training kernels and scored kernels are the same. With few kernels
(auto epochs give at least 3,000 optimiser steps, so a small set is seen up to 2,000 times) a
k -> 64 -> 32 -> 2 -> 32 -> 64 -> k MLP can memorise them. This bench measures it on the iid
Gaussian null: per size and n, an autoencoder is trained on n null kernels exactly as `embed`
trains one, then scored on those n (what the protocol does) and on n fresh null kernels (held
out). Printed: share classified at the fixed threshold (`params.default_threshold`) and median
reconstruction cosine, on the training kernels and held out. A null should stay near 0 %
classified; where training and held-out columns differ, the training-set score is memorisation.
Last column: the same n training kernels scored as `embed --cross-fit K` scores them (each by an
autoencoder trained on the other folds): it should follow the held-out column, not the training one.

Usage: python bench/bench_memorisation.py [--sizes 1x7 3x3 7x7] [--n 120 400 1000 4000 16000] [--folds 5] [--threads 2]
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from kernel_catalog.analysis.embed import autoencoder as ae  # noqa: E402
from kernel_catalog.analysis.embed import gaussian_control, held_out_cos  # noqa: E402
from kernel_catalog.analysis.params import default_threshold  # noqa: E402
from kernel_catalog.analysis.preprocess import preprocess  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", nargs="+", default=["1x7", "3x3", "7x7"])
    ap.add_argument("--n", type=int, nargs="+", default=[120, 400, 1000, 4000, 16000])
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--folds", type=int, default=5, help="cross-fitted column: folds (0: leave it out)")
    args = ap.parse_args()
    print(f"# bench_memorisation {date.today()} on {platform.node()} ({os.cpu_count()} cores)")
    print("| size | n | threshold | classified, training kernels | held out | median cos, training | held out "
          f"| classified, cross-fitted ({args.folds} folds) |")
    print("|---|---|---|---|---|---|---|---|")
    for size in args.sizes:
        kh, kw = (int(v) for v in size.split("x"))
        threshold = default_threshold(kh, kw)
        for n in args.n:
            x, _ = preprocess(gaussian_control(2 * n, kh, kw, seed=0))
            train, held_out = x[:n], x[n:]
            model = ae.train_autoencoder(train, kh, kw, seed=0, progress=False, threads=args.threads)
            cos_train, cos_held = ae.encode(model, train)[2], ae.encode(model, held_out)[2]
            crossed = "-"
            if args.folds:
                cos_crossed = held_out_cos(train, kh, kw, args.folds, seed=0, progress=False, threads=args.threads)
                crossed = f"{np.mean(1 - cos_crossed < threshold):.0%}"
            print(f"| {size} | {n} | {threshold:g} | {np.mean(1 - cos_train < threshold):.0%} | "
                  f"{np.mean(1 - cos_held < threshold):.0%} | {np.median(cos_train):.3f} | {np.median(cos_held):.3f} "
                  f"| {crossed} |", flush=True)


if __name__ == "__main__":
    main()
