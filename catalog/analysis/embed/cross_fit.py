"""Cross-fitted reconstruction scores: each kernel scored by an autoencoder that never saw it.

The protocol scores a kernel by how well the autoencoder trained on the selection reconstructs
it. A small selection is memorised (bench/bench_memorisation.py: 120 iid Gaussian 1x7 kernels
are 100 % "classified" on themselves, 3 % held out), so its classified % is mostly memory.
With K folds, K more autoencoders are trained, each on every fold but one, and each kernel is
scored by the one that left its fold out: an out-of-sample score at any selection size, the
null scored the same way. The run's own autoencoder (trained on every kernel) still gives the
embeddings, the reconstructions and `--from-model` reuse.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from kernel_catalog.analysis.embed.autoencoder import encode, train_autoencoder


def fold_of(n: int, folds: int, seed: int = 0) -> np.ndarray:
    """Each row's fold, 0..folds-1: a seeded permutation dealt round-robin (sizes differ by at most one)."""
    return (np.random.default_rng(seed).permutation(n) % folds).astype(np.int32)


def held_out_cos(x: np.ndarray, kh: int, kw: int, folds: int, seed: int = 0, threads: int | None = None,
                 **train_kwargs: Any) -> np.ndarray:
    """(n,) float32: each row's reconstruction cosine by an autoencoder trained on the other folds.
    x: preprocessed usable kernels; train_kwargs as for `train_autoencoder` (the run's settings)."""
    if folds < 2 or len(x) < 2 * folds:
        raise ValueError(f"cross-fitting {len(x)} kernels in {folds} folds needs at least 2 folds "
                         f"and 2 kernels a fold")
    fold = fold_of(len(x), folds, seed)
    scores = np.empty(len(x), np.float32)
    for f in range(folds):
        held = fold == f
        model = train_autoencoder(x[~held], kh, kw, seed=seed, threads=threads,
                                  desc=f"autoencoder {kh}x{kw}, fold {f + 1}/{folds}", **train_kwargs)
        scores[held] = encode(model, x[held], threads=threads)[2]
    return scores
