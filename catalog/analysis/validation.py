"""Validation on planted banks: does the analysis recover what was planted, at any orientation?

`validate(kh, kw, snr)` draws a planted bank (`catalog.analysis.planted`), clusters it the way a
cluster run does (k = number of planted classes) and names every kernel by its own best match,
then scores against the truth:
  ari                  adjusted Rand index between clusters and planted classes
  family_acc           share of kernels named with their planted family
  polarity_acc         share of kernels with a polarity (dog, deriv2, impulse, square, cross)
                       named with the right polarity (centre sign), whatever the family
  orientation_median   median orientation error in degrees (oriented kernels named with their
                       family; deriv1 modulo 360, deriv2 and saddle modulo 180)
  orientation_22       share of those within 22.5 degrees
Targets (issue 9) at SNR 2-3 for 5x5 and 7x7: ARI >= 0.95, family and polarity >= 95 %,
orientation within 22.5 deg >= 90 %. `bench/bench_validation.py` prints the whole sweep.
"""
from __future__ import annotations

import numpy as np

from kernel_catalog.analysis.clustering import cluster
from kernel_catalog.analysis.naming import match
from kernel_catalog.analysis.planted import PlantedBank, planted_bank
from kernel_catalog.analysis.preprocess import preprocess
from kernel_catalog.analysis.templates import PERIOD, make_templates


def angle_error(predicted: np.ndarray, truth: np.ndarray, period: np.ndarray) -> np.ndarray:
    """Smallest absolute difference of two angles modulo `period` (degrees)."""
    d = np.abs(predicted - truth) % period
    return np.minimum(d, period - d)


def score_names(bank: PlantedBank, family: np.ndarray, polarity: np.ndarray,
                orientation: np.ndarray) -> dict[str, float]:
    """Family, polarity and orientation scores of per-kernel names against the truth."""
    fam_ok = family == bank.family
    has_pol = np.array([p is not None for p in bank.polarity])
    pol_ok = polarity == bank.polarity
    oriented = np.isin(bank.family, list(PERIOD)) & fam_ok
    period = np.array([PERIOD.get(f, 360) for f in bank.family], np.float64)
    err = angle_error(orientation, bank.orientation, period)[oriented]
    return {"family_acc": float(fam_ok.mean()),
            "polarity_acc": float(pol_ok[has_pol].mean()) if has_pol.any() else float("nan"),
            "orientation_median": float(np.median(err)) if len(err) else float("nan"),
            "orientation_22": float((err <= 22.5).mean()) if len(err) else float("nan")}


def validate(kh: int, kw: int, snr: float, n_per_class: int = 60, seed: int = 0,
             features: str = "reconstruction", threads: int | None = None) -> dict[str, float]:
    """Cluster and name one planted bank; `features`: 'kernel' (the preprocessed kernels) or
    'reconstruction' (an autoencoder with the default settings, as `catalog analyze`)."""
    from sklearn.metrics import adjusted_rand_score

    bank = planted_bank(n_per_class, kh, kw, snr=snr, seed=seed)
    x, usable = preprocess(bank.kernels)
    assert usable.all()
    if features == "reconstruction":
        from kernel_catalog.analysis import autoencoder as ae
        model = ae.train_autoencoder(x, kh, kw, seed=seed, progress=False, threads=threads)
        _, recon, _ = ae.encode(model, x)
        f = recon / np.linalg.norm(recon, axis=1, keepdims=True).clip(1e-12)
    else:
        f = x
    k = len(bank.classes)
    result = cluster(f, k, seed=seed, kernels=x, threads=threads)
    m = match(x, make_templates(kh, kw))
    return {"kernels": len(x), "classes": k,
            "ari": float(adjusted_rand_score(bank.cls, result.labels)),
            **score_names(bank, m.family, m.polarity, m.orientation)}
