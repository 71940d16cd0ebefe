"""Planted kernel banks: kernels drawn from known template families, for validating the pipeline.

Family granularity is sign-aware, as in the paper (on- and off-centre DoG are different
clusters) and as in `catalog.templates`: a family's negation is a different family
(dog-on / dog-off, deriv1-000 / deriv1-180). So by default no kernel's sign is flipped; with
`random_sign=True` half the kernels are negated *and relabelled* with the opposite family, so
labels always name what the kernel looks like.

Each kernel: a family pattern at a random scale (sigma log-uniform in `sigma_range`, DoG
surround ratio uniform in [1.6, 2.5], one box half-size / cross arm length), a sub-pixel centre
shift (uniform in +-`jitter` px per axis), an orientation jitter (uniform in
+-`angle_jitter` deg) for derivatives, then centred, scaled to unit L2 norm, multiplied by a
random positive amplitude (log-uniform in [0.01, 1]), plus iid Gaussian noise at `snr`:
SNR = signal power / noise power = mean(pattern^2) / noise variance, per kernel.
At SNR 2 the expected cosine between a noisy kernel and its clean pattern is about
sqrt(2/3) = 0.82.
"""
from __future__ import annotations

import numpy as np

from kernel_catalog.analysis.templates import FAMILIES, default_scales, opposite_family, render

# Eight families the paper names (DoG on/off, oriented first-order and second-order
# derivatives) that stay distinct at 7x7; all render on any kernel with both sides > 1.
DEFAULT_FAMILIES: tuple[str, ...] = (
    "dog-on", "dog-off", "deriv1-000", "deriv1-090", "deriv1-180", "deriv1-270",
    "deriv2-xx-pos", "deriv2-yy-pos",
)


def default_sigma_range(kh: int, kw: int, spread: float = 1.25) -> tuple[float, float]:
    """Sigma range of planted kernels: the geometric middle s0 of the template sigma grid,
    times / divided by `spread` (7x7: 0.83 to 1.30 px)."""
    sig = default_scales(kh, kw)["sigma"]
    s0 = float(np.sqrt(min(sig) * max(sig)))
    return s0 / spread, s0 * spread


def _params(family: str, sc: dict, rng: np.random.Generator, jitter: float,
            angle_jitter: float, sigma_range: tuple[float, float], vary_size: bool) -> dict:
    lo, hi = sigma_range
    p: dict = {"offset": tuple(rng.uniform(-jitter, jitter, 2))}
    if family.startswith(("dog-", "deriv")):
        p["sigma"] = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
    if family.startswith("dog-"):
        p["ratio"] = float(rng.uniform(1.6, 2.5))
    if family.startswith("deriv"):
        p["angle_jitter"] = float(rng.uniform(-angle_jitter, angle_jitter))
    for prefix, key in (("square-", "box"), ("cross-", "arm")):
        if family.startswith(prefix):
            sizes = sc[key]
            p["size"] = int(rng.choice(sizes)) if vary_size else sizes[(len(sizes) - 1) // 2]
    return p


def planted_bank(
    n_per_family: int,
    kh: int,
    kw: int,
    families: tuple[str, ...] = DEFAULT_FAMILIES,
    snr: float = 2.0,
    seed: int = 0,
    jitter: float = 0.3,
    angle_jitter: float = 10.0,
    random_sign: bool = False,
    sigma_range: tuple[float, float] | None = None,
    vary_size: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw `n_per_family` kernels of each family; return (kernels (N, kh*kw) float32,
    labels (N,) str array of family names). Rows come in family blocks, in `families` order.

    snr: signal power / noise power (default 2.0); snr=inf gives clean kernels.
    jitter: max sub-pixel centre shift in px (default 0.3); angle_jitter: max orientation
    jitter in degrees for derivatives (default 10); random_sign: see the module docstring.
    sigma_range: (lo, hi) px, sigma is log-uniform in it; default `default_sigma_range`.
      Why not the whole template range (0.6-1.8 px at 7x7): a DoG at 0.6 px and one at 1.8 px
      have cosine 0.36, less than dog-on vs deriv2-yy-pos (0.7-0.8), so a family spanning 3x
      in scale is not one cluster; k-means with k = #families then splits it by scale (even on
      clean kernels, ARI 0.87). Over-cluster and merge by name for multi-scale families.
    vary_size: draw square half-sizes / cross arm lengths from all template sizes; default
      False = one middle size (7x7: 3x3 box, arms of 2), for the same reason: a 3x3 and a 5x5
      box are two clusters (k-means on clean kernels split square-on in half).
    """
    unknown = [f for f in families if f not in FAMILIES]
    if unknown:
        raise ValueError(f"unknown families {unknown}; known: {', '.join(FAMILIES)}")
    if snr <= 0:
        raise ValueError(f"snr must be > 0, got {snr}")
    rng = np.random.default_rng(seed)
    sc = default_scales(kh, kw)
    sig = sigma_range or default_sigma_range(kh, kw)
    k = kh * kw
    out = np.empty((n_per_family * len(families), k), dtype=np.float64)
    labels = np.empty(len(out), dtype=object)
    row = 0
    for fam in families:
        for _ in range(n_per_family):
            pat = render(fam, kh, kw, **_params(fam, sc, rng, jitter, angle_jitter, sig, vary_size))
            pat = pat - pat.mean()
            norm = np.linalg.norm(pat)
            if norm == 0:
                raise ValueError(f"family {fam!r} vanishes on a {kh}x{kw} grid")
            pat /= norm                                    # mean(pat^2) = 1/k
            name = fam
            if random_sign and rng.random() < 0.5:
                pat, name = -pat, opposite_family(fam)
            amp = float(np.exp(rng.uniform(np.log(0.01), np.log(1.0))))
            noise_sd = 0.0 if np.isinf(snr) else np.sqrt(1.0 / (k * snr))
            out[row] = amp * (pat + rng.normal(0.0, noise_sd, k))
            labels[row] = name
            row += 1
    return out.astype(np.float32), labels.astype(str)
