"""`catalog drift`: distribution drift between two selections of kernels of one size.

The measure of CNN Filter DB (Gavrikov and Keuper, CVPR 2022), with every choice stated:
1. the raw weights of both selections (kernels with a NaN/Inf left out) are stacked and centred
   by the mean kernel of their union (column means, as for variance entropy);
2. PCA of the union: the eigenvectors of the centred union's scatter matrix, by decreasing
   eigenvalue; the first K (`components`, default 6) are kept, each with its explained
   variance ratio (its eigenvalue over the sum of all eigenvalues);
3. per component, both selections' coefficients go into histograms with the same `bins`
   (default 32) equal-width bins between the 0.1 % and 99.9 % quantiles of the union's
   coefficients (values beyond fall into the end bins, so one outlier cannot squeeze the rest
   into a single bin);
4. smoothing: each bin gets 0.5 added to its count before normalising, p_i = (c_i + 0.5) /
   (N + 0.5 B) (the Jeffreys / Krichevsky-Trofimov estimator), so no bin is empty and KL is finite;
5. per component, the symmetric KL divergence KL(p||q) + KL(q||p) in nats;
6. drift = the sum over the K components of (explained variance ratio x symmetric KL).
Identical selections give identical histograms, hence exactly 0.

A selection larger than `SAMPLE_ROWS` (500,000 kernels) is read as a seeded reservoir sample of
that many (DuckDB's `USING SAMPLE reservoir(... ROWS) REPEATABLE`): 32-bin histograms of 500 k
coefficients are exact to a few 1e-4 per bin, while every kernel of a 10^8-kernel selection would
not fit in memory as float64. `n_a` / `n_b` are the kernels actually compared.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from itertools import combinations

import numpy as np
import pyarrow as pa

from kernel_catalog.analysis.selection import weight_rows, where_error
from kernel_catalog.errors import CatalogError
from kernel_catalog.store import Catalog

DEFAULT_COMPONENTS = 6
DEFAULT_BINS = 32
SMOOTHING = 0.5          # added to every bin's count (Jeffreys prior)
CLIP_QUANTILE = 0.001    # shared bins span the union's 0.1 % .. 99.9 % quantiles per component
SAMPLE_ROWS = 500_000    # a larger selection is read as a seeded sample of this many kernels


# ---------------------------------------------------------------- pure maths

@dataclass(frozen=True)
class Drift:
    n_a: int
    n_b: int
    explained_variance: np.ndarray   # (K,) ratio of the union's total variance
    kl_ab: np.ndarray                # (K,) KL(a || b) per component, nats
    kl_ba: np.ndarray                # (K,)

    @property
    def symmetric(self) -> np.ndarray:
        return self.kl_ab + self.kl_ba

    @property
    def total(self) -> float:
        return float((self.explained_variance * self.symmetric).sum())


def pca(x: np.ndarray, components: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean kernel (d,), basis (K, d) by decreasing variance, explained variance ratio (K,))."""
    mean = x.mean(axis=0)
    centred = x - mean
    values, vectors = np.linalg.eigh(centred.T @ centred)
    order = np.argsort(values)[::-1]
    values, vectors = np.clip(values[order], 0.0, None), vectors[:, order]
    total = values.sum()
    if not total > 0:
        raise CatalogError("the selections have no variance (every kernel is the same); drift is undefined")
    k = min(components, x.shape[1])
    return mean, vectors[:, :k].T, values[:k] / total


def smoothed_histograms(a: np.ndarray, b: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Two probability vectors over shared equal-width bins (see the module docstring, 3-4)."""
    union = np.concatenate([a, b])
    lo, hi = np.quantile(union, [CLIP_QUANTILE, 1 - CLIP_QUANTILE])
    if not hi > lo:
        lo, hi = union.min(), union.max()
    if not hi > lo:
        hi = lo + 1.0   # one value everywhere: both histograms put everything in one bin
    edges = np.linspace(lo, hi, bins + 1)
    counts = [np.histogram(np.clip(v, lo, hi), bins=edges)[0].astype(np.float64) for v in (a, b)]
    return tuple((c + SMOOTHING) / (c.sum() + SMOOTHING * bins) for c in counts)


def kl(p: np.ndarray, q: np.ndarray) -> float:
    return float(np.sum(p * np.log(p / q)))


def drift(a: np.ndarray, b: np.ndarray, components: int = DEFAULT_COMPONENTS,
          bins: int = DEFAULT_BINS) -> Drift:
    """Drift between two (N, d) kernel sets of one size (raw weights)."""
    if components < 1 or bins < 2:
        raise CatalogError(f"--components {components} / --bins {bins}: need components >= 1 and bins >= 2")
    a, b = (np.asarray(v, np.float64) for v in (a, b))
    a, b = (v[np.isfinite(v).all(axis=1)] for v in (a, b))
    if len(a) == 0 or len(b) == 0:
        raise CatalogError("a selection has no kernel with finite values; drift needs both non-empty")
    mean, basis, ratio = pca(np.concatenate([a, b]), components)
    ca, cb = (a - mean) @ basis.T, (b - mean) @ basis.T
    kl_ab, kl_ba = [], []
    for c in range(basis.shape[0]):
        p, q = smoothed_histograms(ca[:, c], cb[:, c], bins)
        kl_ab.append(kl(p, q))
        kl_ba.append(kl(q, p))
    return Drift(len(a), len(b), ratio, np.array(kl_ab), np.array(kl_ba))


# ---------------------------------------------------------------- selections from the catalog

def _load(catalog: Catalog, where: str, what: str, group: str | None = None) -> tuple[dict, tuple[int, int]]:
    """{group value (or what): (N, d) weights} of a one-size selection, and its size.

    `where` is a condition over `kernels`, or a whole SELECT / WITH query whose rows have kh, kw
    and weights (e.g. kernels joined with a run's labels)."""
    column = f"{group}::VARCHAR AS g" if group else "NULL::VARCHAR AS g"
    text = (where or "true").strip()
    source, condition = (f"({text})", "true") if re.match(r"(?is)^(select|with)\b", text) else ("kernels", text)
    query = f"SELECT {column}, kh, kw, weights FROM {source} AS selection WHERE ({condition})"
    try:
        count = catalog.sql(f"SELECT count(*) AS n FROM ({query})").column("n")[0].as_py()
        if count > SAMPLE_ROWS:   # bounded memory: a seeded sample (see the module docstring)
            query = f"SELECT * FROM ({query}) USING SAMPLE reservoir({int(SAMPLE_ROWS)} ROWS) REPEATABLE (0)"
        table = catalog.sql(query)
    except CatalogError as error:
        raise where_error(where, error, what) from None
    if table.num_rows == 0:
        raise CatalogError(f"{what} {where!r}: selects no kernel")
    sizes = sorted(set(zip(table.column("kh").to_pylist(), table.column("kw").to_pylist())))
    if len(sizes) > 1:
        listed = ", ".join(f"{h}x{w}" for h, w in sizes)
        raise CatalogError(f"{what} {where!r}: selects kernels of several sizes ({listed}); drift compares "
                           f"one size: add e.g. 'AND kh = {sizes[0][0]} AND kw = {sizes[0][1]}'")
    kh, kw = sizes[0]
    weights = weight_rows(table.column("weights"), kh * kw, np.float64)
    keys = np.asarray(table.column("g").to_pylist(), dtype=object)
    if not group:
        return {what: weights}, (kh, kw)
    return {str(g): weights[keys == g] for g in sorted(set(keys.tolist()))}, (kh, kw)


def drift_table(catalog: Catalog, a: str, b: str, components: int = DEFAULT_COMPONENTS,
                bins: int = DEFAULT_BINS) -> pa.Table:
    """`catalog drift --a SQL --b SQL`: one row per component, then the weighted total."""
    wa, size_a = _load(catalog, a, "--a")
    wb, size_b = _load(catalog, b, "--b")
    if size_a != size_b:
        raise CatalogError(f"--a selects {size_a[0]}x{size_a[1]} kernels and --b {size_b[0]}x{size_b[1]}; "
                           "drift compares kernels of one size")
    result = drift(wa["--a"], wb["--b"], components, bins)
    k = len(result.explained_variance)
    return pa.table({
        "component": [f"pc{i + 1}" for i in range(k)] + ["total"],
        "explained_variance": [*result.explained_variance.tolist(), float(result.explained_variance.sum())],
        "kl_ab": [*result.kl_ab.tolist(), None],
        "kl_ba": [*result.kl_ba.tolist(), None],
        "symmetric_kl": [*result.symmetric.tolist(), None],
        "drift": [*(result.explained_variance * result.symmetric).tolist(), result.total],
        "n_a": [result.n_a] * (k + 1),
        "n_b": [result.n_b] * (k + 1),
    })


BY = ("model", "layer")


def drift_by(catalog: Catalog, by: str = "model", where: str | None = None,
             components: int = DEFAULT_COMPONENTS, bins: int = DEFAULT_BINS) -> pa.Table:
    """Drift of every pair of groups (models, or layers as 'model/layer') in a one-size selection:
    rows a, b (a < b), n_a, n_b, drift, noise_a, noise_b (`split_half` of each group); each pair
    on the PCA basis of its own union."""
    if by not in BY:
        raise CatalogError(f"--by {by}: choose one of {', '.join(BY)}")
    group = "model" if by == "model" else "model || '/' || layer"
    groups, _ = _load(catalog, where or "true", "--where", group)
    if len(groups) < 2:
        raise CatalogError(f"--by {by}: the selection has {len(groups)} {by}; drift needs at least two")
    noise = {name: split_half(weights, components, bins) for name, weights in groups.items()}
    rows = []
    for x, y in combinations(sorted(groups), 2):
        result = drift(groups[x], groups[y], components, bins)
        rows.append({"a": x, "b": y, "n_a": result.n_a, "n_b": result.n_b, "drift": result.total,
                     "noise_a": noise[x], "noise_b": noise[y]})
    return pa.Table.from_pylist(rows)


def split_half(weights: np.ndarray, components: int = DEFAULT_COMPONENTS, bins: int = DEFAULT_BINS,
               seed: int = 0) -> float | None:
    """Drift between two random halves of one selection (seeded): the level that sampling noise
    alone reaches at this size; a drift between groups means little until well above it.
    None for fewer than 4 kernels."""
    finite = weights[np.isfinite(weights).all(axis=1)]
    if len(finite) < 4:
        return None
    order = np.random.default_rng(seed).permutation(len(finite))
    half = len(finite) // 2
    try:
        return drift(finite[order[:half]], finite[order[half:]], components, bins).total
    except CatalogError:   # no variance at all
        return None
