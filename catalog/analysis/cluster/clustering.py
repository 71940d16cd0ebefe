"""Clustering kernel embeddings (scikit-learn) and choosing k.

Feature space, measured on planted banks (every family at random continuous orientations,
random scale, anisotropy, sub-pixel shift and amplitude, 14 classes; bench/bench_validation.py;
80 per class, seeds 0-3, k-means n_init 30; ARI against the planted classes):

  space            5x5 SNR 2   5x5 SNR 3   7x7 SNR 2   7x7 SNR 3
  kernel             0.910       0.955       0.995       0.998
  reconstruction     0.878       0.922       0.976       0.994    (latent 2, seeds 0-1)

So `space="kernel"` (the preprocessed kernels themselves: centred, unit L2) is the default: an
autoencoder with a 2-D bottleneck decides what is *classified* (the paper's verdict) but its
reconstructions squeeze 14 families onto a 2-D sheet, which merges neighbours that the kernels
still tell apart. "reconstruction" (the unit-normalised reconstructions, the paper preset) and
"latent" (raw latent coordinates: k-means there does poorly, 0.57-0.82 on 7x7 banks, as the
latent plane is not a space of round blobs) are offered for comparison. For scale: a Bayes
classifier that knows the generator reaches ARI 0.939 at 5x5 SNR 2 and 0.971 at SNR 3
(`analysis.validation.ceiling`).

Methods: "kmeans" = KMeans (n_init=30, Lloyd; 10 restarts left ARI 0.84-0.92 on 5x5 banks where
30 gave 0.90-0.92: at 10 one seed in four fell into a split-and-merge optimum; above 40,000 rows
the 30 restarts run on a seeded 20,000-row sample and the 5 best are refined on every row,
`_restarts_on_sample`: 5x faster on 200,000 rows, same optimum). Above
`fit_sample` rows (200,000) it is fitted on a seeded sample of that many rows and every row is
assigned to its nearest centre (`fit_rows`, `nearest_centre`; a cluster run passes the kernel
ids, and the sample is then chosen by id, `fit_rows_by_id`: the very sample a size clustered in
blocks or on Ray fits on, `cluster._blocks`): on 301,000 planted 7x7 kernels (14 classes, SNR 2, one thread) that gave ARI
0.994 for both seeds in 15 s, where MiniBatchKMeans (batch 4096, n_init=3, what this switched to
before) gave 0.994 and 0.895 in 1 s, and at 1 M kernels split clusters unstably (seed ARI 0.73).
"minibatch" = MiniBatchKMeans on every row, for speed; "gmm" = full-covariance GaussianMixture
(n_init=3). Labels are renumbered by decreasing cluster size (0 = largest), so reports read the
same way.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np

from kernel_catalog.analysis.params import CLUSTER_METHODS as METHODS, SPACES

KMEANS_RESTARTS = 30
FIT_SAMPLE = 200_000      # k-means is fitted on at most this many rows (seeded sample), then assigns all
ASSIGN_BLOCK = 1 << 20    # rows per block when assigning to the nearest centre (bounded memory)
# k-means on more than twice RESTART_SAMPLE rows: restarts on a seeded sample of this many rows,
# the REFINED best of them run on every row (`_restarts_on_sample`)
RESTART_SAMPLE = 20_000
REFINED = 5


def feature_space(space: str, z: np.ndarray | None = None, recon: np.ndarray | None = None,
                  kernels: np.ndarray | None = None) -> np.ndarray:
    """The clustering features: the preprocessed kernels (default), unit-normalised
    reconstructions, or latent z."""
    if space == "kernel":
        if kernels is None:
            raise ValueError("space 'kernel' needs kernels")
        return np.asarray(kernels, dtype=np.float32)
    if space == "reconstruction":
        if recon is None:
            raise ValueError("space 'reconstruction' needs recon")
        r = np.asarray(recon, dtype=np.float32)
        n = np.linalg.norm(r, axis=1, keepdims=True)
        return r / np.where(n > 0, n, 1.0)
    if space == "latent":
        if z is None:
            raise ValueError("space 'latent' needs z")
        return np.asarray(z, dtype=np.float32)
    raise ValueError(f"unknown feature space {space!r}; choose one of {SPACES}")


@dataclass
class ClusterResult:
    labels: np.ndarray          # (N,) int32, 0 = largest cluster
    centroids: np.ndarray       # (k, f) in feature space
    inertia: float              # sum of squared distances to the assigned centroid
    sizes: np.ndarray           # (k,) int64
    mean_kernels: np.ndarray    # (k, kdim): mean of `kernels` per cluster (zeros if empty)
    medoids: np.ndarray         # (k,) int64 row index of the member nearest the centroid, -1 if empty
    method: str                 # the method actually used (kmeans / minibatch / gmm)


def _limit(threads: int | None) -> contextlib.AbstractContextManager:
    """Cap OpenMP/BLAS threads (None = leave them): on a shared 2-core machine, threads spinning
    for a busy core made small k-means fits 10-40x slower here."""
    if not threads:
        return contextlib.nullcontext()
    # threadpoolctl caps only libraries already loaded: import scikit-learn's compiled k-means
    # (and its OpenMP runtime) first, or the first fit in a process runs uncapped and, with
    # several threads, reduces in a different order (a different partition for the same seed).
    from importlib import import_module

    from threadpoolctl import threadpool_limits

    for module in ("sklearn.cluster", "sklearn.mixture"):
        import_module(module)

    return threadpool_limits(threads)


def fit(x: np.ndarray, k: int, seed: int = 0, method: str = "kmeans", n_init: int | None = None,
        threads: int | None = None) -> tuple[np.ndarray, np.ndarray, str]:
    """One fit on every row of x: (labels, centres, method), in the fit's own order (not renumbered)."""
    with _limit(threads):
        return _fit(np.asarray(x, dtype=np.float32), k, seed, method, n_init)


def _fit(x: np.ndarray, k: int, seed: int, method: str, n_init: int | None) -> tuple[np.ndarray, np.ndarray, str]:
    from sklearn.cluster import KMeans, MiniBatchKMeans
    from sklearn.mixture import GaussianMixture

    if method == "kmeans":
        if len(x) > 2 * RESTART_SAMPLE:
            km = _restarts_on_sample(x, k, seed, n_init or KMEANS_RESTARTS)
        else:
            km = KMeans(k, n_init=n_init or KMEANS_RESTARTS, random_state=seed).fit(x)
        return km.labels_, km.cluster_centers_, method
    if method == "minibatch":
        km = MiniBatchKMeans(k, n_init=n_init or 3, batch_size=4096, random_state=seed).fit(x)
        return km.predict(x), km.cluster_centers_, method
    if method == "gmm":
        gm = GaussianMixture(k, covariance_type="full", n_init=n_init or 3, random_state=seed).fit(x)
        return gm.predict(x), gm.means_, method
    raise ValueError(f"unknown clustering method {method!r}; choose one of {METHODS}")


def _restarts_on_sample(x: np.ndarray, k: int, seed: int, restarts: int):
    """k-means on many rows: the restarts (k-means++ and Lloyd) on a seeded sample of RESTART_SAMPLE
    rows, the REFINED best of them (by inertia there) run to convergence on every row from their
    centres, the lowest inertia kept. On the 200,000-kernel fit sample of the 1 M planted 7x7 bank
    (bench/RESULTS.md) 30 restarts on every row took 11 s, this 2 s, for the same optimum (inertia
    within 2e-6, ARI 0.998-0.999 to it, seeds 0-2)."""
    from sklearn.cluster import KMeans

    rows = np.sort(np.random.default_rng(seed).choice(len(x), RESTART_SAMPLE, replace=False))
    state = np.random.RandomState(seed)
    starts = sorted((KMeans(k, n_init=1, random_state=state.randint(2**31 - 1)).fit(x[rows]) for _ in range(restarts)),
                    key=lambda km: km.inertia_)
    refined = [KMeans(k, init=start.cluster_centers_, n_init=1, random_state=seed).fit(x) for start in starts[:REFINED]]
    return min(refined, key=lambda km: km.inertia_)


def fit_rows(n: int, seed: int, method: str = "kmeans", fit_sample: int = FIT_SAMPLE) -> np.ndarray | None:
    """The rows a k-means fit sees: None (all of them) up to `fit_sample` rows or for another
    method, else a sorted seeded sample of `fit_sample` rows."""
    if method != "kmeans" or n <= fit_sample:
        return None
    return np.sort(np.random.default_rng(seed).choice(n, fit_sample, replace=False))


def sample_mask(seed: int) -> int:
    """The int64 a seed XORs kernel ids with to order them for the fit sample (`fit_rows_by_id`)."""
    info = np.iinfo(np.int64)
    return int(np.random.default_rng([seed, 0x6B63]).integers(info.min, info.max, dtype=np.int64))


def fit_rows_by_id(ids: np.ndarray, seed: int, method: str = "kmeans",
                   fit_sample: int = FIT_SAMPLE) -> np.ndarray | None:
    """Like `fit_rows`, chosen by kernel id: the `fit_sample` rows whose id XOR `sample_mask(seed)`
    is smallest. Kernel ids are uniform 64-bit hashes, so this is a seeded uniform sample, and
    DuckDB draws the very same one from a size it never holds (ORDER BY xor(kernel_id, mask)
    LIMIT n, `cluster._sizes.fit_sample`)."""
    if method != "kmeans" or len(ids) <= fit_sample:
        return None
    key = np.asarray(ids, np.int64) ^ np.int64(sample_mask(seed))
    return np.sort(np.argpartition(key, fit_sample - 1)[:fit_sample])


def cluster(
    features: np.ndarray,
    k: int,
    seed: int = 0,
    method: str = "kmeans",
    kernels: np.ndarray | None = None,
    n_init: int | None = None,
    fit_sample: int | None = None,
    threads: int | None = None,
    ids: np.ndarray | None = None,
) -> ClusterResult:
    """Cluster rows of `features` into k groups.

    kernels: optional (N, kdim) preprocessed kernels aligned with features; each cluster's
    mean kernel is their mean (what naming matches against templates). Without it, the mean
    of the features. The medoid is the member nearest its centroid in feature space (an exact
    medoid costs O(n^2) per cluster). k-means above `fit_sample` rows (default FIT_SAMPLE): fitted on a seeded sample,
    every row assigned to its nearest centre; the sample is drawn by kernel id when `ids` (aligned
    with the rows) are given (`fit_rows_by_id`, what a size clustered in blocks fits on), else by
    position. threads: OpenMP/BLAS thread cap while fitting.
    """
    x = np.asarray(features, dtype=np.float32)
    if x.ndim != 2 or len(x) == 0:
        raise ValueError(f"need (N, f) features with N > 0, got {x.shape}")
    if not 1 <= k <= len(x):
        raise ValueError(f"k={k} must be between 1 and the number of rows ({len(x)})")
    fit_sample = fit_sample or FIT_SAMPLE
    rows = fit_rows(len(x), seed, method, fit_sample) if ids is None else fit_rows_by_id(ids, seed, method, fit_sample)
    with _limit(threads):
        raw, centres, used = _fit(x if rows is None else x[rows], k, seed, method, n_init)
        if rows is not None:
            raw = nearest_centre(x, centres)
    return summarise(x, raw, centres, k, used, kernels)


def summarise(features: np.ndarray, raw: np.ndarray, centres: np.ndarray, k: int, method: str,
              kernels: np.ndarray | None = None) -> ClusterResult:
    """A ClusterResult from raw labels and centres (from one fit, or assigned per block)."""
    x = np.asarray(features, dtype=np.float32)
    # Renumber by decreasing size (ties: lower old label first) so label 0 is the largest.
    sizes = np.bincount(raw, minlength=k)
    order = np.lexsort((np.arange(k), -sizes))
    remap = np.empty(k, dtype=np.int64)
    remap[order] = np.arange(k)
    labels = remap[raw].astype(np.int32)
    centres = np.asarray(centres, dtype=np.float32)[order]
    sizes = sizes[order]

    d2 = ((x - centres[labels]) ** 2).sum(axis=1)
    medoids = np.full(k, -1, dtype=np.int64)
    by_label = np.lexsort((d2, labels))                 # rows sorted by (label, distance)
    firsts = np.searchsorted(labels[by_label], np.arange(k))
    medoids[sizes > 0] = by_label[firsts[sizes > 0]]

    src = x if kernels is None else np.asarray(kernels, dtype=np.float32)
    if len(src) != len(x):
        raise ValueError(f"kernels has {len(src)} rows, features {len(x)}")
    means = np.zeros((k, src.shape[1]), dtype=np.float64)
    nonempty = sizes > 0
    # float64 sums per cluster, one column at a time (as `_blocks.block_stats` adds a block up)
    sums = np.stack([np.bincount(labels, weights=src[:, j], minlength=k) for j in range(src.shape[1])], axis=1)
    means[nonempty] = sums[nonempty] / sizes[nonempty, None]
    return ClusterResult(labels, centres, float(d2.sum()), sizes.astype(np.int64),
                         means.astype(np.float32), medoids, method)


def nearest_centre(x: np.ndarray, centres: np.ndarray, block: int = ASSIGN_BLOCK) -> np.ndarray:
    """Each row's nearest centre (squared Euclidean), as k-means' predict assigns it."""
    x = np.asarray(x, dtype=np.float32)
    c = np.asarray(centres, dtype=np.float32)
    cc = (c * c).sum(axis=1)[None, :]
    out = np.empty(len(x), np.int64)
    for lo in range(0, len(x), block):    # ||x||^2 is the same for every centre: left out
        out[lo:lo + block] = np.argmin(cc - 2.0 * x[lo:lo + block] @ c.T, axis=1)
    return out


def k_for(features: np.ndarray, k: int | str, k_range: range, seed: int = 0,
          threads: int | None = None) -> tuple[int, dict[int, float] | None]:
    """The k to cluster with: as given (at most the number of rows), or for k='auto' the best
    silhouette's over `k_range` (`choose_k`, whose scores come back too)."""
    if k == "auto":
        return choose_k(features, k_range, seed=seed, threads=threads)
    return min(int(k), len(features)), None


def choose_k(
    features: np.ndarray,
    k_range: range | list[int] = range(2, 16),
    seed: int = 0,
    sample: int = 5000,
    threads: int | None = None,
) -> tuple[int, dict[int, float]]:
    """`--k auto`: the k with the highest mean silhouette (Euclidean, in feature space).

    For speed and memory (silhouette is O(n^2)), both the k-means fits (n_init=4) and the
    silhouette use one fixed-seed subsample of at most `sample` rows (default 5000). Ties go to
    the smaller k. Returns (best_k, {k: silhouette}). On planted 7x7 banks (reconstruction
    space) it picked 8 for 8 families and 13 for 14 (a weak criterion: check the curve).
    """
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score

    x = np.asarray(features, dtype=np.float32)
    rng = np.random.default_rng(seed)
    if len(x) > sample:
        x = x[np.sort(rng.choice(len(x), sample, replace=False))]
    scores: dict[int, float] = {}
    with _limit(threads):
        for k in k_range:
            if not 2 <= k < len(x):
                continue
            labels = KMeans(k, n_init=4, random_state=seed).fit_predict(x)
            if len(np.unique(labels)) < 2:
                continue
            scores[k] = float(silhouette_score(x, labels))
    if not scores:
        raise ValueError(f"no k in {list(k_range)} fits {len(x)} rows")
    best = max(scores, key=lambda k: (scores[k], -k))
    return best, scores
