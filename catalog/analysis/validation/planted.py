"""Planted kernel banks: kernels drawn from known families, to validate clustering and naming.

A bank is made of *classes*: a family with its polarity and a base orientation drawn uniformly
at random (continuous, never on a template grid). Per size (any kh x kw, bands included):
  dog pos/neg, impulse pos/neg, deriv1 at a, a+90, a+180, a+270, deriv2 pos at b and b+90 and
  neg at b, saddle at c, square pos, cross pos (families that do not exist on the grid are left
  out: no saddle or cross on a band, no square on 3x3; on a band orientations lie along it).
Each kernel of a class: orientation = base + uniform(+-angle_jitter) deg, sigma log-uniform in
the middle of the size's template range (`sigma_range`), the largest square and cross that fit
(a 5-pixel plus and a DoG have cosine 0.94 at 5x5), envelope anisotropy uniform in
`anisotropy` (default 1-1.15; sigma along / across the orientation = s*a, s/a), a sub-pixel centre shift uniform
in +-jitter px per axis, then centred, unit L2, times an amplitude log-uniform in `amplitude`
(default 0.05-2), plus iid Gaussian noise at `snr` = mean(pattern^2) / noise variance (SNR 2:
expected cosine to the clean pattern about sqrt(2/3) = 0.82).

The truth of every kernel (class, family, polarity, orientation, scale) comes with the bank;
`analysis.validation.validate` scores clustering and naming against it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kernel_catalog.analysis.naming.templates import PERIOD, default_scales, label_of, render


@dataclass(frozen=True)
class PlantedClass:
    family: str
    polarity: str | None
    orientation: float | None      # base orientation in degrees; None for isotropic shapes

    @property
    def label(self) -> str:
        return label_of(self.family, self.polarity, self.orientation)


@dataclass(frozen=True)
class PlantedBank:
    kernels: np.ndarray          # (N, kh*kw) float32
    cls: np.ndarray              # (N,) int: index into classes
    family: np.ndarray           # (N,) object
    polarity: np.ndarray         # (N,) object, None where the family has none
    orientation: np.ndarray      # (N,) float64, NaN for isotropic shapes
    scale: np.ndarray            # (N,) float64 sigma / size
    classes: tuple[PlantedClass, ...]

    @property
    def labels(self) -> np.ndarray:
        """Per kernel, its class's label (e.g. deriv2-045-pos)."""
        return np.array([c.label for c in self.classes], dtype=object)[self.cls].astype(str)

    def __iter__(self):              # kernels, labels = planted_bank(...)
        return iter((self.kernels, self.labels))


def sigma_range(kh: int, kw: int, family: str, spread: float = 1.2) -> tuple[float, float]:
    """Sigma range of planted kernels: the geometric middle s0 of the family's template sigma grid,
    times / divided by `spread`. A DoG spanning 3x in scale is not one cluster (cosine 0.36
    between 0.6 and 1.8 px at 7x7), so classes keep a moderate range."""
    sc = default_scales(kh, kw)
    sig = sc["dog_sigma" if family == "dog" else "sigma"]
    s0 = float(np.sqrt(min(sig) * max(sig)))
    return s0 / spread, s0 * spread


def planted_classes(kh: int, kw: int, seed: int = 0) -> tuple[PlantedClass, ...]:
    """The classes of a bank for one size, base orientations drawn from `seed`."""
    rng = np.random.default_rng([seed, kh, kw, 7])
    band = kh == 1 or kw == 1
    along = 0.0 if kh == 1 else 90.0
    a, b, c = rng.uniform(0, 360), rng.uniform(0, 180), rng.uniform(0, 180)
    out = [PlantedClass("dog", "pos", None), PlantedClass("dog", "neg", None),
           PlantedClass("impulse", "pos", None), PlantedClass("impulse", "neg", None)]
    if band:
        out += [PlantedClass("deriv1", None, along), PlantedClass("deriv1", None, along + 180),
                PlantedClass("deriv2", "pos", along % 180), PlantedClass("deriv2", "neg", along % 180)]
    else:
        out += [PlantedClass("deriv1", None, (a + d) % 360) for d in (0, 90, 180, 270)]
        out += [PlantedClass("deriv2", "pos", b), PlantedClass("deriv2", "pos", (b + 90) % 180),
                PlantedClass("deriv2", "neg", b), PlantedClass("saddle", None, c)]
    if max(kh, kw) >= 5:
        out.append(PlantedClass("square", "pos", None))
    if not band:
        out.append(PlantedClass("cross", "pos", None))
    return tuple(out)


def planted_bank(n_per_class: int, kh: int, kw: int, snr: float = 2.0, seed: int = 0,
                 classes: tuple[PlantedClass, ...] | None = None, jitter: float = 0.3,
                 angle_jitter: float = 10.0, anisotropy: tuple[float, float] = (1.0, 1.15),
                 amplitude: tuple[float, float] = (0.05, 2.0)) -> PlantedBank:
    """Draw `n_per_class` kernels of each class (rows in class blocks); see the module docstring.
    snr=inf gives clean kernels (the same draws otherwise)."""
    if snr <= 0:
        raise ValueError(f"snr must be > 0, got {snr}")
    classes = classes or planted_classes(kh, kw, seed)
    rng = np.random.default_rng(seed)
    sc = default_scales(kh, kw)
    band = kh == 1 or kw == 1
    k = kh * kw
    n = n_per_class * len(classes)
    out = np.empty((n, k), np.float64)
    fam, pol = np.empty(n, object), np.empty(n, object)
    ori, scale = np.full(n, np.nan), np.full(n, np.nan)
    cls = np.repeat(np.arange(len(classes)), n_per_class)
    for row, ci in enumerate(cls):
        c = classes[ci]
        lo, hi = sigma_range(kh, kw, c.family)
        s = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
        aniso = 1.0 if band else float(rng.uniform(*anisotropy))
        jit = 0.0 if band else float(rng.uniform(-angle_jitter, angle_jitter))
        theta = (c.orientation + jit) % PERIOD[c.family] if c.family in PERIOD else 0.0
        size = {"square": sc["box"][-1], "cross": sc["arm"][-1]}
        offset = tuple(rng.uniform(-jitter, jitter, 2) * ([0, 1] if kh == 1 else [1, 0] if kw == 1 else [1, 1]))
        pat = render(c.family, kh, kw, sigma=s, ratio=float(rng.uniform(1.6, 2.5)), size=size.get(c.family, 1),
                     offset=offset, orientation=theta if c.family != "dog" else float(rng.uniform(0, 180)),
                     polarity=c.polarity, anisotropy=aniso)
        pat = pat - pat.mean()
        norm = np.linalg.norm(pat)
        if norm == 0:
            raise ValueError(f"family {c.family!r} vanishes on a {kh}x{kw} grid")
        pat /= norm                                         # mean(pat^2) = 1/k
        amp = float(np.exp(rng.uniform(np.log(amplitude[0]), np.log(amplitude[1]))))
        noise_sd = 0.0 if np.isinf(snr) else np.sqrt(1.0 / (k * snr))
        out[row] = amp * (pat + rng.normal(0.0, noise_sd, k))
        fam[row], pol[row] = c.family, c.polarity
        ori[row] = theta if c.family in PERIOD else np.nan
        scale[row] = s if c.family in ("dog", "deriv1", "deriv2", "saddle") else size.get(c.family, np.nan)
    return PlantedBank(out.astype(np.float32), cls, fam, pol, ori, scale, classes)
