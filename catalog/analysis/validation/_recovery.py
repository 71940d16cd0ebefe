"""Validation on planted banks: does the analysis recover what was planted, at any orientation?

`validate(kh, kw, snr)` draws a planted bank (`planted`), clusters it the way a
cluster run does (k = number of planted classes) and names every kernel by its own best match,
then scores against the truth:
  ari                  adjusted Rand index between clusters and planted classes
  family_acc           share of kernels named with their planted family
  polarity_acc         share of kernels with a polarity (dog, deriv2, impulse, square, cross)
                       named with the right polarity (centre sign), whatever the family
  orientation_median   median orientation error in degrees (oriented kernels named with their
                       family; deriv1 modulo 360, deriv2 and saddle modulo 180)
  orientation_22       share of those within 22.5 degrees
  cluster_*            the same four, with every kernel named by its cluster's name (what the
                       `label` column of `labels` says of it; the per-kernel ones are `kernel_label`)
  clear_share          share of kernels whose own family wins by at least the ambiguity margin
                       (`kernel_margin` >= naming.AMBIGUOUS_MARGIN, 0.05; or one family only)
  clear_family_acc     family accuracy among those: what a researcher gets who keeps the clear calls
Targets (issue 9) at SNR 2-3 for 5x5 and 7x7: ARI >= 0.95, family and polarity >= 95 %,
orientation within 22.5 deg >= 90 %. `bench/bench_validation.py` prints the whole sweep.

`ceiling(kh, kw, snr)` says what any method can reach on the same bank: a Bayes classifier
that knows the generator (each class's distribution from `references` clean draws, the exact
noise level) assigns every kernel to its most likely planted class; its ARI and family accuracy
bound what clustering and naming can do. At 5x5 SNR 2 it is ARI 0.939 and family 0.970 (80 per
class, seeds 0-1): some 5x5 families are nearly the same pattern (a 3x3 box and a small DoG,
an impulse and a narrow off-centre DoG), and no partition separates what noise has mixed.
"""
from __future__ import annotations

import numpy as np

from kernel_catalog.analysis.cluster import cluster
from kernel_catalog.analysis.naming import AMBIGUOUS_MARGIN, PERIOD, make_templates, match
from kernel_catalog.analysis.preprocess import preprocess
from kernel_catalog.analysis.validation.planted import PlantedBank, PlantedClass, planted_bank


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
             features: str = "kernel", threads: int | None = None,
             classes: tuple[PlantedClass, ...] | None = None) -> dict[str, float]:
    """Cluster and name one planted bank; `features`: 'kernel' (the preprocessed kernels, what
    `catalog analyze` clusters by default) or 'reconstruction' (through an autoencoder with the
    default settings, the paper preset's clustering space); `classes`: another set of planted
    classes than every family (`planted_classes`)."""
    from sklearn.metrics import adjusted_rand_score

    bank = planted_bank(n_per_class, kh, kw, snr=snr, seed=seed, classes=classes)
    x, usable = preprocess(bank.kernels)
    assert usable.all()
    if features == "reconstruction":
        from kernel_catalog.analysis.embed import autoencoder as ae
        model = ae.train_autoencoder(x, kh, kw, seed=seed, progress=False, threads=threads)
        _, recon, _ = ae.encode(model, x)
        f = recon / np.linalg.norm(recon, axis=1, keepdims=True).clip(1e-12)
    else:
        f = x
    k = len(bank.classes)
    result = cluster(f, k, seed=seed, kernels=x, threads=threads)
    templates = make_templates(kh, kw)
    own = match(x, templates)
    named = match(result.mean_kernels, templates, exact=True)   # each cluster's name, given to its kernels
    by_cluster = score_names(bank, *(a[result.labels] for a in (named.family, named.polarity, named.orientation)))
    clear = np.nan_to_num(own.margin, nan=np.inf) >= AMBIGUOUS_MARGIN
    return {"kernels": len(x), "classes": k,
            "clear_share": float(clear.mean()),
            "clear_family_acc": float((own.family == bank.family)[clear].mean()) if clear.any() else float("nan"),
            "ari": float(adjusted_rand_score(bank.cls, result.labels)),
            **score_names(bank, own.family, own.polarity, own.orientation),
            **{f"cluster_{name}": value for name, value in by_cluster.items()}}


def _direction_log_density(d: int, sigma2: float):
    """log density (up to a constant) of the direction u of p + noise, with |p| = 1 and iid noise
    of variance sigma2 in d dimensions, as a function of t = u.p (the projected normal)."""
    from scipy.special import logsumexp

    r = np.linspace(1e-4, 1.0 + 12.0 * np.sqrt(sigma2 * d), 4000)
    ts = np.linspace(-1.0, 1.0, 2001)
    table = logsumexp((d - 1) * np.log(r) - (r - ts[:, None]) ** 2 / (2 * sigma2), axis=1)
    table -= (1.0 - ts ** 2) / (2 * sigma2)
    return lambda t: np.interp(t, ts, table)


def ceiling(kh: int, kw: int, snr: float, n_per_class: int = 60, seed: int = 0,
            references: int = 3000, classes: tuple[PlantedClass, ...] | None = None) -> dict[str, float]:
    """What a Bayes classifier that knows the generator reaches on the bank `validate` draws:
    ARI of its most likely class per kernel, and family accuracy of its most likely family.
    Each class's likelihood is the mean over `references` clean draws of the class (its
    orientation jitter, scales, shifts, anisotropy) of the exact density of the kernel's direction
    given the noise level; amplitudes drop out after preprocessing. An upper bound up to the
    sampling of the references (3,000 and 12,000 gave the same ARI at 5x5)."""
    from scipy.special import logsumexp
    from sklearn.metrics import adjusted_rand_score

    bank = planted_bank(n_per_class, kh, kw, snr=snr, seed=seed, classes=classes)
    x, _ = preprocess(bank.kernels)
    k = kh * kw
    logf = _direction_log_density(k - 1, 1.0 / (k * snr))
    x = x.astype(np.float64)
    scores = np.stack([logsumexp(logf(x @ preprocess(planted_bank(references, kh, kw, snr=np.inf, seed=1000 + seed,
                                                                    classes=(c,)).kernels)[0].T.astype(np.float64)),
                                 axis=1) for c in bank.classes], axis=1)
    families = np.array([c.family for c in bank.classes], dtype=object)
    names = list(dict.fromkeys(families))
    by_family = np.stack([logsumexp(scores[:, families == f], axis=1) for f in names], axis=1)
    return {"ari": float(adjusted_rand_score(bank.cls, scores.argmax(axis=1))),
            "family_acc": float((np.asarray(names, dtype=object)[by_family.argmax(axis=1)] == bank.family).mean())}
