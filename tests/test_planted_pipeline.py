"""End to end on planted banks: preprocess -> autoencoder (latent 2) -> k-means on unit-normalised
reconstructions -> naming, against the truth; and the validation sweep (issue 9) per size and SNR.

Banks (kernel_catalog.analysis.validation.planted): every family (dog, impulse on/off, deriv1 at four, deriv2 at
three, saddle at one random continuous orientation, square, cross), random scale, anisotropy,
sub-pixel shift, amplitude 0.05-2. Settings are test-sized (one thread, >= 600 optimiser steps).
"""
from dataclasses import dataclass

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from kernel_catalog.analysis.embed.autoencoder import classified, encode, train_autoencoder
from kernel_catalog.analysis.cluster.clustering import cluster, feature_space
from kernel_catalog.analysis.naming import match, name_clusters
from kernel_catalog.analysis.embed.null_model import gaussian_control, run_control
from kernel_catalog.analysis.params import calibrated_threshold, default_threshold
from kernel_catalog.analysis.validation.planted import planted_bank, planted_classes
from kernel_catalog.analysis.preprocess import preprocess
from kernel_catalog.analysis.naming.templates import make_templates
from kernel_catalog.analysis.validation import ceiling, validate

KH = KW = 7
N_PER_CLASS = 80
TRAIN = dict(latent_dim=2, batch_size=256, min_steps=600, progress=False, threads=1)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):      # sklearn/BLAS: see tests/test_clustering.py
        yield


@dataclass
class Run:
    usable: np.ndarray
    labels: np.ndarray          # cluster per usable kernel
    latent_labels: np.ndarray   # k-means on raw latent coordinates, for comparison
    names: list[str]            # name per cluster
    families: list[str]         # family per cluster
    recon_cos: np.ndarray


def run_pipeline(weights: np.ndarray, k: int, seed: int) -> Run:
    x, usable = preprocess(weights)
    xu = x[usable]
    model = train_autoencoder(xu, KH, KW, seed=seed, **TRAIN)
    z, recon, rcos = encode(model, xu, threads=1)
    res = cluster(feature_space("reconstruction", z, recon), k, seed=seed, kernels=xu)
    latent = cluster(feature_space("latent", z, recon), k, seed=seed)
    names = name_clusters(res.mean_kernels, make_templates(KH, KW))
    return Run(usable, res.labels, latent.labels, names.names, list(names.matches.family), rcos)


@pytest.fixture(scope="module")
def bank():
    b = planted_bank(N_PER_CLASS, KH, KW, snr=2.0, seed=0)
    bad = np.zeros((3, KH * KW), np.float32)
    bad[0, 5] = np.nan                                    # flagged rows ride along, excluded
    return b, np.concatenate([b.kernels, bad])


@pytest.fixture(scope="module")
def run0(bank):
    return run_pipeline(bank[1], len(bank[0].classes), seed=0)


def test_planted_bank_is_what_it_says():
    b = planted_bank(20, 5, 5, snr=2.0, seed=1)
    classes = planted_classes(5, 5, 1)
    assert b.kernels.shape == (20 * len(classes), 25) and b.kernels.dtype == np.float32
    assert {c.family for c in classes} == {"dog", "impulse", "deriv1", "deriv2", "saddle", "square", "cross"}
    oriented = [c.orientation for c in classes if c.orientation is not None]
    assert all(o % 15 for o in oriented)                  # continuous, not on a template grid
    again = planted_bank(20, 5, 5, snr=2.0, seed=1)
    np.testing.assert_array_equal(b.kernels, again.kernels)
    clean = planted_bank(20, 5, 5, snr=np.inf, seed=1)    # same draws, noise scaled to zero
    noise = b.kernels - clean.kernels
    ratio = (clean.kernels ** 2).sum(axis=1) / (noise ** 2).sum(axis=1)
    assert np.median(ratio) == pytest.approx(2.0, rel=0.2)
    amp = np.linalg.norm(clean.kernels - clean.kernels.mean(axis=1, keepdims=True), axis=1)
    assert 0.05 <= amp.min() and amp.max() <= 2.0
    m = match(clean.kernels, make_templates(5, 5))
    assert (m.family == clean.family).mean() > 0.97
    bands = planted_classes(1, 7)
    assert {c.family for c in bands} == {"dog", "impulse", "deriv1", "deriv2", "square"}


def test_unusable_kernels_are_flagged_not_lost(bank, run0):
    assert run0.usable.sum() == len(bank[1]) - 3 and not run0.usable[-3:].any()


def test_clusters_recover_the_planted_classes(bank, run0):
    truth = bank[0].cls
    ari = adjusted_rand_score(truth, run0.labels)
    latent_ari = adjusted_rand_score(truth, run0.latent_labels)
    print(f"ARI reconstruction space {ari:.3f}, latent space {latent_ari:.3f}")
    assert ari >= 0.9
    assert ari > latent_ari          # raw latent coordinates are the wrong space (README)


def test_automatic_names_match_the_planted_families(bank, run0):
    named = np.asarray(run0.families, dtype=object)[run0.labels]
    accuracy = (named == bank[0].family).mean()
    print(f"kernels in a cluster named with their family: {accuracy:.3f}; cluster names {run0.names}")
    assert accuracy >= 0.9


def test_same_seed_same_labels_other_seed_same_partition(bank, run0):
    again = run_pipeline(bank[1], len(bank[0].classes), seed=0)
    np.testing.assert_array_equal(again.labels, run0.labels)
    other = run_pipeline(bank[1], len(bank[0].classes), seed=1)
    ari = adjusted_rand_score(run0.labels, other.labels)
    print(f"ARI between seeds 0 and 1: {ari:.3f}")
    assert ari >= 0.85


def test_gaussian_control_is_classified_far_less_and_calibrates_the_threshold(run0):
    threshold = default_threshold(KH, KW)
    planted = classified(run0.recon_cos, threshold).mean()
    n = int(run0.usable.sum())
    assert gaussian_control(n, KH, KW, seed=0).shape == (n, KH * KW)
    control = run_control(n, KH, KW, seed=0, threshold=threshold, **TRAIN)
    cal = calibrated_threshold(1 - control.recon_cos, alpha=0.05)
    null_at_cal = (1 - control.recon_cos < cal).mean()
    print(f"classified under {threshold}: planted {planted:.3f}, iid Gaussian control "
          f"{control.classified_fraction:.3f}; calibrated threshold {cal:.3f}: null {null_at_cal:.3f}")
    assert planted >= 0.9 and control.classified_fraction <= 0.1
    assert null_at_cal <= 0.05
    assert classified(run0.recon_cos, cal).mean() >= 0.8


def test_validation_per_size_and_snr():
    """The issue-9 table, test-sized: every size clustered the way `catalog analyze` does (the
    preprocessed kernels), 7x7 also through the autoencoder (the paper preset's space). Targets at
    SNR 2-3 for 7x7 and 5x5 at SNR 3 are asserted; the full sweep is bench/bench_validation.py."""
    rows = []
    for kh, kw in ((3, 3), (5, 5), (7, 7), (9, 9), (11, 11), (1, 7)):
        for snr in (2.0, 3.0):
            if (kh, kw) == (5, 5):    # near the target: the bench's protocol, 80 per class, mean of seeds 0-1
                runs = [validate(5, 5, snr, n_per_class=80, seed=seed, threads=1) for seed in (0, 1)]
                r = {f: float(np.mean([run[f] for run in runs])) for f in runs[0]}
            else:
                r = validate(kh, kw, snr, n_per_class=60 if (kh, kw) == (7, 7) else 40, threads=1)
            rows.append((f"{kh}x{kw}", snr, "kernel", r))
    for snr in (2.0, 3.0):
        rows.append(("7x7", snr, "reconstruction", validate(7, 7, snr, n_per_class=60, features="reconstruction",
                                                             threads=1)))
    print("\nsize  SNR  features        ARI    family  polarity  orient.median  within22.5  family/cluster  polarity/cluster")
    for size, snr, features, r in rows:
        print(f"{size:5s} {snr:3.0f}  {features:15s} {r['ari']:.3f}  {r['family_acc']:.3f}   {r['polarity_acc']:.3f}"
              f"     {r['orientation_median']:6.1f}        {r['orientation_22']:.3f}       {r['cluster_family_acc']:.3f}"
              f"           {r['cluster_polarity_acc']:.3f}")
    for size, snr, features, r in rows:
        if size == "7x7" or (size == "5x5" and snr == 3.0 and features == "kernel"):
            assert r["ari"] >= 0.95 and r["family_acc"] >= 0.95 and r["polarity_acc"] >= 0.95, (size, snr, features, r)
            assert r["orientation_22"] >= 0.9, (size, snr, r)
        if size in ("5x5", "7x7") and features == "kernel":      # every kernel as its cluster names it
            assert r["cluster_family_acc"] >= 0.95 and r["cluster_polarity_acc"] >= 0.95, (size, snr, r)
            assert r["cluster_orientation_22"] >= 0.9, (size, snr, r)
        if size in ("5x5", "7x7", "9x9", "11x11"):
            assert r["orientation_22"] >= 0.9 and r["polarity_acc"] >= 0.9, (size, snr, r)
        if size in ("5x5", "7x7") and features == "kernel":      # the clear calls (kernel_margin >= 0.05)
            assert r["clear_share"] >= 0.6 and r["clear_family_acc"] >= 0.98, (size, snr, r)


def test_the_bayes_ceiling_bounds_the_analysis():
    """At 5x5 and SNR 2 no method can reach ARI 0.95 on this bank: a classifier that knows the
    generator stays below it. The analysis is close to that ceiling and never above it."""
    bound = ceiling(5, 5, 2.0, n_per_class=60, references=1500)
    ours = validate(5, 5, 2.0, n_per_class=60, threads=1)
    print(f"5x5 SNR 2: ceiling ARI {bound['ari']:.3f} family {bound['family_acc']:.3f}; "
          f"analysis ARI {ours['ari']:.3f} family {ours['family_acc']:.3f}")
    assert bound["ari"] < 0.95
    assert bound["ari"] - 0.05 <= ours["ari"] <= bound["ari"] + 0.01
    assert bound["family_acc"] - 0.05 <= ours["family_acc"] <= bound["family_acc"] + 0.01
