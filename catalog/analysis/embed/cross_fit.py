"""Cross-fitted reconstruction scores: each kernel scored by an autoencoder that never saw it.

The protocol scores a kernel by how well the autoencoder trained on the selection reconstructs
it. A small selection is memorised (bench/bench_memorisation.py: 120 iid Gaussian 1x7 kernels
are 100 % "classified" on themselves, 3 % held out), so its classified % is mostly memory.
With K folds, K more autoencoders are trained, each on every fold but one, and each kernel is
scored by the one that left its fold out: an out-of-sample score at any selection size. The null
is held out too, but needs no folds (its kernels are iid draws): one null model trained on
(K-1)/K as many control kernels as a fold model sees, scored on fresh draws
(`null_model.held_out_null`). The run's own autoencoder (trained on every kernel) still gives the
embeddings, the reconstructions and `--from-model` reuse. The K fold models train together as one
batched ensemble (`ensemble`), with the run's own model and the null's when `embed` runs them:
n + K(K-1)n/K + (K-1)n/K rows a step (5.8n at K = 5) against 2n for an embed in sample.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from kernel_catalog.analysis.embed.autoencoder import TrainedAutoencoder, encode
from kernel_catalog.analysis.embed.ensemble import Member, train_ensemble


def fold_of(n: int, folds: int, seed: int = 0) -> np.ndarray:
    """Each row's fold, 0..folds-1: a seeded permutation dealt round-robin (sizes differ by at most one)."""
    return (np.random.default_rng(seed).permutation(n) % folds).astype(np.int32)


def fold_members(x: np.ndarray, kh: int, kw: int, folds: int, seed: int = 0) -> tuple[np.ndarray, list[Member]]:
    """Each row's fold, and one ensemble member a fold: trained on every other fold (rows of `x`,
    not copied), with the run's seed."""
    if folds < 2 or len(x) < 2 * folds:
        raise ValueError(f"cross-fitting {len(x)} kernels in {folds} folds needs at least 2 folds "
                         f"and 2 kernels a fold")
    fold = fold_of(len(x), folds, seed)
    return fold, [Member(x, np.flatnonzero(fold != f), seed, f"autoencoder {kh}x{kw}, fold {f + 1}/{folds}")
                  for f in range(folds)]


def score_held_out(models: list[TrainedAutoencoder], x: np.ndarray, fold: np.ndarray,
                   threads: int | None = None) -> np.ndarray:
    """(n,) float32: each row scored by the model of its fold (`models[f]` never saw fold f)."""
    scores = np.empty(len(x), np.float32)
    for f, model in enumerate(models):
        held = fold == f
        scores[held] = encode(model, x[held], threads=threads)[2]
    return scores


def held_out_cos(x: np.ndarray, kh: int, kw: int, folds: int, seed: int = 0, threads: int | None = None,
                 **train_kwargs: Any) -> np.ndarray:
    """(n,) float32: each row's reconstruction cosine by an autoencoder trained on the other folds.
    x: preprocessed usable kernels; train_kwargs as for `train_autoencoder` (the run's settings).
    The fold models train together (`ensemble.train_ensemble`)."""
    fold, members = fold_members(x, kh, kw, folds, seed)
    models = train_ensemble(members, kh, kw, threads=threads, desc=f"autoencoders {kh}x{kw}, {folds} folds",
                            **train_kwargs)
    return score_held_out(models, x, fold, threads)
