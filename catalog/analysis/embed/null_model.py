"""The iid Gaussian control: real kernels must be classified far more often than random ones (docs/analysis.md).

Trained kernels must be classified far more often than random kernels of the same shape and
count under the same protocol: same preprocessing, an autoencoder of its own with the same
settings and seed, the same threshold. A control that is classified almost as often as the
data means the threshold or the latent size is too lenient for that kernel size.

Held out (a cross-fitted size, K folds): the control's kernels are iid draws, so it needs no
folds. ONE null model is trained on a draw of round((K-1)/K * n) control kernels (the training
size of a data fold model, so it memorises as much as they do) and scored on a fresh, independent
draw of n control kernels (another seed stream, `HELD_OUT_STREAM`): every scored kernel is held
out by construction. That is one training of (K-1)n/K rows instead of K, and n scores as before.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from kernel_catalog.analysis.embed.autoencoder import TrainedAutoencoder, classified, encode, train_autoencoder
from kernel_catalog.analysis.params import default_threshold
from kernel_catalog.analysis.preprocess import DEFAULT_METHOD, preprocess

# the seed stream of the control kernels a held-out null is scored on (stream 0: what it trains on,
# and the in-sample control): numpy's SeedSequence([seed, stream]), independent of stream 0
HELD_OUT_STREAM = 1


def gaussian_control(n: int, kh: int, kw: int, seed: int = 0, stream: int = 0) -> np.ndarray:
    """n iid standard-normal kernels, (n, kh*kw) float32 (scale is irrelevant after preprocessing).
    stream 0 draws from default_rng(seed); another stream from default_rng([seed, stream])."""
    rng = np.random.default_rng(seed if stream == 0 else [seed, stream])
    return rng.standard_normal((n, kh * kw)).astype(np.float32)


def control_data(n: int, kh: int, kw: int, seed: int = 0, method: str = DEFAULT_METHOD, stream: int = 0) -> np.ndarray:
    """The control's usable kernels, preprocessed as the data are: what its autoencoder trains on
    (stream 0), or what a held-out null is scored on (`HELD_OUT_STREAM`)."""
    x, usable = preprocess(gaussian_control(n, kh, kw, seed, stream), method=method)
    return x[usable]


def held_out_training_size(n: int, folds: int) -> int:
    """How many control kernels a held-out null trains on: round((folds-1)/folds * n), the training
    size of a data fold model (n less one fold; folds differ by at most one kernel)."""
    return int(round(n * (folds - 1) / folds))


def held_out_null(n: int, kh: int, kw: int, folds: int, seed: int = 0,
                  method: str = DEFAULT_METHOD) -> tuple[np.ndarray, np.ndarray]:
    """A held-out null of n scored kernels: (what its model trains on, round((folds-1)/folds * n)
    control kernels of stream 0; what it is scored on, n fresh control kernels of `HELD_OUT_STREAM`)."""
    return (control_data(held_out_training_size(n, folds), kh, kw, seed, method),
            control_data(n, kh, kw, seed, method, HELD_OUT_STREAM))


@dataclass
class ControlResult:
    classified_fraction: float   # share of control kernels with 1 - recon_cos < threshold
    threshold: float
    recon_cos: np.ndarray        # (n,) float32: the scored control kernels' reconstruction cosines
    model: TrainedAutoencoder    # the null model (held out: trained on other draws than those scored)


def run_control(n: int, kh: int, kw: int, seed: int = 0, threshold: float | None = None,
                method: str = DEFAULT_METHOD, cross_fit: int = 0, **train_kwargs: Any) -> ControlResult:
    """Train an autoencoder on `gaussian_control(n, kh, kw, seed)` with `train_kwargs` (pass the
    data run's settings) and the same seed; return the share classified under `threshold`
    (default `default_threshold(kh, kw)`). cross_fit >= 2: score it held out, as cross-fitted data
    are (`held_out_null`: trained on round((K-1)/K * n) control kernels, scored on n fresh ones)."""
    if cross_fit:
        train, scored = held_out_null(n, kh, kw, cross_fit, seed, method)
    else:
        train = scored = control_data(n, kh, kw, seed, method)
    model = train_autoencoder(train, kh, kw, seed=seed, **train_kwargs)
    _, _, rcos = encode(model, scored, threads=train_kwargs.get("threads"))
    thr = default_threshold(kh, kw) if threshold is None else threshold
    return ControlResult(float(classified(rcos, thr).mean()), thr, rcos, model)
