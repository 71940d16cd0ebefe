"""The iid Gaussian control: real kernels must be classified far more often than random ones (docs/analysis.md).

Trained kernels must be classified far more often than random kernels of the same shape and
count under the same protocol: same preprocessing, an autoencoder of its own with the same
settings and seed, the same threshold. A control that is classified almost as often as the
data means the threshold or the latent size is too lenient for that kernel size.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from kernel_catalog.analysis.embed.autoencoder import TrainedAutoencoder, classified, encode, train_autoencoder
from kernel_catalog.analysis.embed.cross_fit import held_out_cos
from kernel_catalog.analysis.params import default_threshold
from kernel_catalog.analysis.preprocess import DEFAULT_METHOD, preprocess


def gaussian_control(n: int, kh: int, kw: int, seed: int = 0) -> np.ndarray:
    """n iid standard-normal kernels, (n, kh*kw) float32 (scale is irrelevant after preprocessing)."""
    return np.random.default_rng(seed).standard_normal((n, kh * kw)).astype(np.float32)


def control_data(n: int, kh: int, kw: int, seed: int = 0, method: str = DEFAULT_METHOD) -> np.ndarray:
    """The control's usable kernels, preprocessed as the data are: what its autoencoder trains on."""
    x, usable = preprocess(gaussian_control(n, kh, kw, seed), method=method)
    return x[usable]


@dataclass
class ControlResult:
    classified_fraction: float   # share of control kernels with 1 - recon_cos < threshold
    threshold: float
    recon_cos: np.ndarray        # (n,) float32
    model: TrainedAutoencoder | None   # None when cross-fitted: the fold models score the control


def run_control(n: int, kh: int, kw: int, seed: int = 0, threshold: float | None = None,
                method: str = DEFAULT_METHOD, cross_fit: int = 0, **train_kwargs: Any) -> ControlResult:
    """Train an autoencoder on `gaussian_control(n, kh, kw, seed)` with `train_kwargs` (pass the
    data run's settings) and the same seed; return the share classified under `threshold`
    (default `default_threshold(kh, kw)`). cross_fit >= 2: score each control kernel held out,
    as the data were (`cross_fit.held_out_cos`)."""
    x = control_data(n, kh, kw, seed, method)
    if cross_fit:   # scored by the fold models alone: a model of every control kernel would go unused
        model, rcos = None, held_out_cos(x, kh, kw, cross_fit, seed=seed, **train_kwargs)
    else:
        model = train_autoencoder(x, kh, kw, seed=seed, **train_kwargs)
        _, _, rcos = encode(model, x)
    thr = default_threshold(kh, kw) if threshold is None else threshold
    return ControlResult(float(classified(rcos, thr).mean()), thr, rcos, model)
