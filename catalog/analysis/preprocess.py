"""Kernel preprocessing: the one pure function every analysis step uses.

Defaults follow the follow-up work of Babaiee et al. (docs/analysis.md): centre each kernel and scale it to unit L2 norm
("center-l2", what the follow-up work's code does; the paper's own choice is unconfirmed).
Kernels with a NaN/Inf, or with every |w| <= eps (1e-4, the authors' later loader), are
flagged unusable: their rows become zeros and the caller keeps them, flagged, in the catalog.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import numpy as np

METHODS = ("center-l2", "min-max", "none")
DEFAULT_METHOD = "center-l2"
DEFAULT_EPS = 1e-4
BLOCK_ROWS = 8192      # kernels preprocessed at a time (float64 temporaries of ~3 MB at 7x7)


def preprocess(
    weights: np.ndarray, method: str = DEFAULT_METHOD, eps: float = DEFAULT_EPS
) -> tuple[np.ndarray, np.ndarray]:
    """Preprocess kernels row by row; return `(x, usable)`.

    weights: (N, k) array, one flattened (row-major kh*kw) kernel per row.
    method:
      - "center-l2" (default): x = (w - mean(w)) / ||w - mean(w)||_2, so every usable row has
        zero mean and unit norm. Sign is kept (on- and off-centre stay different).
      - "min-max": x = 2 * (w - min(w)) / (max(w) - min(w)) - 1, each row spans exactly [-1, 1]
        (an affine map: the min goes to -1, the max to +1; our reading of the later loader).
      - "none": x = w (float32 copy); only the usable mask is computed.
    eps: a row with every |w| <= eps is near-zero and unusable (default 1e-4).

    usable[i] is False when row i has a NaN/Inf, is near-zero, or cannot be normalised by the
    method (a constant kernel has no centred norm and no range). Unusable rows are zeros in x.
    """
    if method not in METHODS:
        raise ValueError(f"unknown preprocessing method {method!r}; choose one of {METHODS}")
    w = np.asarray(weights)
    if w.ndim != 2 or w.shape[1] == 0:
        raise ValueError(f"expected (N, k) kernels with k >= 1, got shape {w.shape}")
    if len(w) <= BLOCK_ROWS:
        return _preprocess(w, method, eps)
    # Row by row, so in blocks: the float64 temporaries of a block stay in cache, where those of
    # a million kernels (~400 MB each) made it ~4x slower; the same numbers either way.
    x, usable = np.empty(w.shape, np.float32), np.empty(len(w), bool)
    for lo in range(0, len(w), BLOCK_ROWS):
        x[lo:lo + BLOCK_ROWS], usable[lo:lo + BLOCK_ROWS] = _preprocess(w[lo:lo + BLOCK_ROWS], method, eps)
    return x, usable


def _preprocess(w: np.ndarray, method: str, eps: float) -> tuple[np.ndarray, np.ndarray]:
    # float64 for the arithmetic: float32 sums of 49-121 taps lose the last digits of the mean.
    w64 = w.astype(np.float64, copy=False)
    with np.errstate(invalid="ignore", over="ignore"):
        finite = np.isfinite(w64).all(axis=1)
        near_zero = ~(np.abs(w64) > eps).any(axis=1)
    usable = finite & ~near_zero
    safe = np.where(usable[:, None], w64, 0.0)

    if method == "center-l2":
        centred = safe - safe.mean(axis=1, keepdims=True)
        norm = np.linalg.norm(centred, axis=1)
        # Constant kernels centre to zero; 1e-12 relative to the raw scale catches rounding.
        scale = np.abs(safe).max(axis=1)
        usable &= norm > 1e-12 * np.maximum(scale, 1e-30)
        x = centred / np.where(usable, norm, 1.0)[:, None]
    elif method == "min-max":
        lo, hi = safe.min(axis=1), safe.max(axis=1)
        rng = hi - lo
        usable &= rng > 0
        x = 2.0 * (safe - lo[:, None]) / np.where(usable, rng, 1.0)[:, None] - 1.0
    else:
        x = safe.copy()
    x[~usable] = 0.0
    return x.astype(np.float32), usable


def preprocess_stream(
    batches: Callable[[], Iterable[np.ndarray]],
    method: str = DEFAULT_METHOD,
    eps: float = DEFAULT_EPS,
) -> Callable[[], Iterator[np.ndarray]]:
    """Wrap a factory of raw (m, k) batches into a factory of preprocessed, usable-only batches.

    This is what `train_autoencoder` takes for streaming from Parquet: each call of the
    returned factory starts a fresh pass (one epoch). Memory: one batch at a time.
    """

    def factory() -> Iterator[np.ndarray]:
        for raw in batches():
            x, usable = preprocess(raw, method=method, eps=eps)
            if usable.any():
                yield x[usable]

    return factory
