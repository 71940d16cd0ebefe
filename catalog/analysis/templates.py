"""Template families for naming kernels and clusters automatically, for any kernel size.

Every template is a family plus a variant (its scale), rendered on a (kh, kw) grid, then
preprocessed like the kernels (centred, unit L2), so a cosine is a plain dot product.
Matching is sign-aware: a template's negation is a different family (dog-on vs dog-off).

Geometry: the grid centre is ((kh-1)/2, (kw-1)/2); x grows to the right (columns), y grows
*up* (against the row index). Angles are in degrees, counter-clockwise from +x.

Families (stable names; the sign is part of the family, the scale is the variant):
  dog-on, dog-off          difference of Gaussians G(s) - G(r*s), centre positive / negative;
                           the Laplacian of Gaussian is a variant of the same family (`log-s*`):
                           a DoG approximates it, and two families for one shape would split
                           clusters by noise.
  deriv1-000 ... deriv1-315  first-order Gaussian derivative whose *positive* lobe points to
                           the angle (8 directions every 45 deg: 4 orientations x 2 signs, so
                           deriv1-045 and deriv1-225 are each other's negation).
  deriv2-{xx,yy,xy}-{pos,neg}  second-order Gaussian derivatives; for xx/yy "pos" means a
                           positive centre bar (-G_xx: a vertical bar for xx), for xy "pos" means
                           positive top-right and bottom-left quadrants (G_xy with y up).
  square-on, square-off    a centred box (+) against its surround (-), box half-sizes h.
  cross-on, cross-off      a one-pixel-wide plus sign (+) against the rest (-), arm lengths a.
Scales depend on the kernel size (see `default_scales`). Templates that vanish after centring
(e.g. a vertical derivative on a 1x7 band) are dropped, and near-duplicates (cos >= 0.9999)
keep only the first in the order above, so every shape, square or band, gets a clean bank.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kernel_catalog.errors import CatalogError

DEFAULT_NAME_THRESHOLD = 0.6   # a cluster mean needs cos >= 0.6 to its best template to be named
UNMATCHED = "unmatched"
# Axis-aligned directions first: on a band (1x7) the diagonals duplicate them and dedup keeps
# the first, so a horizontal band derivative is named deriv1-000/180, not deriv1-045/135.
DERIV1_ANGLES = (0, 90, 180, 270, 45, 135, 225, 315)
FAMILIES: tuple[str, ...] = (
    "dog-on", "dog-off",
    *(f"deriv1-{a:03d}" for a in DERIV1_ANGLES),
    "deriv2-xx-pos", "deriv2-xx-neg", "deriv2-yy-pos", "deriv2-yy-neg",
    "deriv2-xy-pos", "deriv2-xy-neg",
    "square-on", "square-off", "cross-on", "cross-off",
)
_DEDUP_COS = 0.9999


@dataclass(frozen=True)
class TemplateSet:
    """Templates for one kernel size: row i of `matrix` is family[i] / variant[i]."""

    kh: int
    kw: int
    families: tuple[str, ...]
    variants: tuple[str, ...]
    matrix: np.ndarray            # (T, kh*kw) float32, centred, unit L2 norm

    def __len__(self) -> int:
        return len(self.families)

    def names(self) -> list[str]:
        return [f"{f}/{v}" for f, v in zip(self.families, self.variants)]

    def __add__(self, other: "TemplateSet") -> "TemplateSet":
        if (self.kh, self.kw) != (other.kh, other.kw):
            raise ValueError(f"cannot join {self.kh}x{self.kw} and {other.kh}x{other.kw} templates")
        return TemplateSet(self.kh, self.kw, self.families + other.families,
                           self.variants + other.variants,
                           np.concatenate([self.matrix, other.matrix]).astype(np.float32))


# ---------------------------------------------------------------- rendering (pure maths)

def _coords(kh: int, kw: int, offset: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates (x right, y up) relative to a centre moved by offset=(dy, dx)."""
    rows = np.arange(kh) - (kh - 1) / 2.0
    cols = np.arange(kw) - (kw - 1) / 2.0
    y = -rows[:, None] - offset[0] + np.zeros((1, kw))
    x = cols[None, :] - offset[1] + np.zeros((kh, 1))
    return x, y


def _gauss(x: np.ndarray, y: np.ndarray, s: float) -> np.ndarray:
    return np.exp(-(x * x + y * y) / (2 * s * s)) / (2 * np.pi * s * s)


def _overlap(c: np.ndarray, half: float) -> np.ndarray:
    """Length of [c-0.5, c+0.5] inside [-half, half]: box edges that survive sub-pixel shifts."""
    return np.clip(np.minimum(c + 0.5, half) - np.maximum(c - 0.5, -half), 0.0, 1.0)


def _sign(family: str) -> float:
    return -1.0 if family.endswith(("-off", "-neg")) else 1.0


def render(family: str, kh: int, kw: int, *, sigma: float = 1.0, ratio: float = 2.0,
           size: int = 1, log: bool = False, offset: tuple[float, float] = (0.0, 0.0),
           angle_jitter: float = 0.0) -> np.ndarray:
    """Render one family member as a raw (kh*kw,) float64 pattern (not normalised).

    sigma: Gaussian scale in pixels (dog, deriv1, deriv2); ratio: surround/centre sigma (dog);
    log: draw the Laplacian of Gaussian instead of a DoG (dog families); size: box half-size
    (square) or arm length (cross); offset: sub-pixel centre shift (dy, dx) in pixels (dy up);
    angle_jitter: degrees added to the orientation (deriv1, deriv2).
    """
    x, y = _coords(kh, kw, offset)
    s = float(sigma)
    if family in ("dog-on", "dog-off"):
        g = _gauss(x, y, s)
        r2 = (x * x + y * y) / (s * s)
        shape = (2.0 - r2) / (s * s) * g if log else g - _gauss(x, y, s * ratio)
    elif family.startswith("deriv1-"):
        a = np.deg2rad(int(family.split("-")[1]) + angle_jitter)
        shape = (x * np.cos(a) + y * np.sin(a)) * _gauss(x, y, s)
    elif family.startswith("deriv2-"):
        t = np.deg2rad(angle_jitter)
        u, v = x * np.cos(t) + y * np.sin(t), -x * np.sin(t) + y * np.cos(t)
        g = _gauss(x, y, s)
        axis = family.split("-")[1]
        if axis == "xy":
            shape = u * v * g
        else:
            w = u if axis == "xx" else v
            shape = (1.0 - w * w / (s * s)) * g    # -G_ww up to a positive factor: centre > 0
    elif family in ("square-on", "square-off"):
        shape = _overlap(x, size + 0.5) * _overlap(y, size + 0.5)
    elif family in ("cross-on", "cross-off"):
        ox, oy = _overlap(x, size + 0.5), _overlap(y, size + 0.5)
        cx, cy = _overlap(x, 0.5), _overlap(y, 0.5)
        shape = ox * cy + cx * oy - cx * cy
    else:
        raise ValueError(f"unknown template family {family!r}; known: {', '.join(FAMILIES)}")
    return (_sign(family) * shape).reshape(-1)


def opposite_family(family: str) -> str:
    """The family of the negated pattern (dog-on <-> dog-off, deriv1-045 <-> deriv1-225, ...)."""
    if family.startswith("deriv1-"):
        return f"deriv1-{(int(family.split('-')[1]) + 180) % 360:03d}"
    for a, b in (("-on", "-off"), ("-pos", "-neg")):
        if family.endswith(a):
            return family[: -len(a)] + b
        if family.endswith(b):
            return family[: -len(b)] + a
    raise ValueError(f"family {family!r} has no sign-flipped partner")


def default_scales(kh: int, kw: int) -> dict[str, tuple]:
    """Scale grids for a kernel size: sigmas from 0.6 px to 0.6 x the radius (4 steps),
    DoG surround ratios (1.6, 2.5), box half-sizes 1..r-1 (0 for 3-wide kernels), arms 1..r."""
    r = (max(kh, kw) - 1) / 2.0
    sigmas = tuple(float(s) for s in np.round(np.geomspace(0.6, max(0.8, 0.6 * r), 4), 3))
    boxes = tuple(range(1, int(r))) if r >= 2 else (0,)
    arms = tuple(range(1, int(r) + 1)) if r >= 1 else (0,)
    return {"sigma": sigmas, "ratio": (1.6, 2.5), "box": boxes, "arm": arms}


def _fits(family: str, kh: int, kw: int) -> bool:
    """False for families that need an axis a band lacks: on a 1x7 band, -G_yy is just a
    Gaussian bump and a cross is just a bar, so those names would mislead."""
    needs_rows = family.startswith(("deriv2-yy", "deriv2-xy", "cross"))
    needs_cols = family.startswith(("deriv2-xx", "deriv2-xy", "cross"))
    return not (needs_rows and kh == 1) and not (needs_cols and kw == 1)


def _variants(family: str, sc: dict[str, tuple]) -> list[tuple[str, dict]]:
    if family.startswith("dog-"):
        out = [(f"s{s:.2f}-r{r:.1f}", {"sigma": s, "ratio": r}) for s in sc["sigma"] for r in sc["ratio"]]
        return out + [(f"log-s{s:.2f}", {"sigma": s, "log": True}) for s in sc["sigma"]]
    if family.startswith("deriv"):
        return [(f"s{s:.2f}", {"sigma": s}) for s in sc["sigma"]]
    if family.startswith("square-"):
        return [(f"h{h}", {"size": h}) for h in sc["box"]]
    return [(f"a{a}", {"size": a}) for a in sc["arm"]]


def _unit_rows(m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centre rows and scale them to unit norm; also return the centred norms."""
    c = m - m.mean(axis=1, keepdims=True)
    n = np.linalg.norm(c, axis=1)
    return c / np.where(n > 0, n, 1.0)[:, None], n


def _dedup(families: list[str], variants: list[str], rows: np.ndarray
           ) -> tuple[list[str], list[str], np.ndarray]:
    """Keep the first of every group of near-identical templates (cos >= 0.9999)."""
    keep: list[int] = []
    for i in range(len(rows)):
        if not keep or (rows[keep] @ rows[i]).max() < _DEDUP_COS:
            keep.append(i)
    return [families[i] for i in keep], [variants[i] for i in keep], rows[keep]


def make_templates(kh: int, kw: int, families: tuple[str, ...] = FAMILIES,
                   scales: dict[str, tuple] | None = None) -> TemplateSet:
    """Build the template bank for a (kh, kw) kernel (any size, square or not)."""
    if kh < 1 or kw < 1 or kh * kw < 2:
        raise ValueError(f"templates need at least 2 taps, got {kh}x{kw}")
    sc = scales or default_scales(kh, kw)
    fams, vars_, rows = [], [], []
    for fam in (f for f in families if _fits(f, kh, kw)):
        for variant, params in _variants(fam, sc):
            fams.append(fam)
            vars_.append(variant)
            rows.append(render(fam, kh, kw, **params))
    unit, norms = _unit_rows(np.array(rows, dtype=np.float64))
    ok = norms > 1e-6 * np.abs(np.array(rows)).max(axis=1).clip(1e-30)   # vanished on this grid
    f, v, m = _dedup([x for x, o in zip(fams, ok) if o], [x for x, o in zip(vars_, ok) if o], unit[ok])
    return TemplateSet(kh, kw, tuple(f), tuple(v), m.astype(np.float32))


def load_template_file(path: str | Path, kh: int = 7, kw: int = 7) -> TemplateSet:
    """Read a text file of blocks "Filter N:" followed by kh rows of kw floats.

    Block "Filter N:" becomes family "master-key-N" (another header becomes its slug), variant
    "file". Filters are re-centred and scaled to unit norm like every template.
    """
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise CatalogError(f"cannot read template file {p}: {e.strerror or e}") from None
    names: list[str] = []
    blocks: list[list[float]] = []
    for ln, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        if line.endswith(":"):
            head = line[:-1].strip()
            m = re.fullmatch(r"[Ff]ilter\s+(\d+)", head)
            names.append(f"master-key-{m.group(1)}" if m else re.sub(r"[^a-z0-9]+", "-", head.lower()).strip("-"))
            blocks.append([])
            continue
        if not blocks:
            raise CatalogError(f"{p}:{ln}: numbers before the first 'Filter N:' header")
        try:
            blocks[-1].extend(float(t) for t in line.split())
        except ValueError:
            raise CatalogError(f"{p}:{ln}: not a row of numbers: {line[:60]!r}") from None
    if not blocks:
        raise CatalogError(f"{p}: no 'Filter N:' blocks found")
    for name, vals in zip(names, blocks):
        if len(vals) != kh * kw:
            raise CatalogError(f"{p}: block {name!r} has {len(vals)} values, expected {kh}x{kw}={kh * kw}")
    unit, norms = _unit_rows(np.array(blocks, dtype=np.float64))
    if (norms == 0).any():
        raise CatalogError(f"{p}: a filter is constant and cannot be used as a template")
    return TemplateSet(kh, kw, tuple(names), ("file",) * len(names), unit.astype(np.float32))


# ---------------------------------------------------------------- matching

def match(kernels: np.ndarray, templates: TemplateSet, chunk: int = 65536
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Best template per kernel by cosine, sign-aware (no abs).

    kernels: (N, kh*kw); rows are re-centred and normalised here, so any preprocessing works.
    Returns (best_family (N,) str, best_variant (N,) str, best_score (N,) float32 in [-1, 1]);
    all-zero rows (unusable kernels) get score 0 and the first template's name.
    """
    k = np.asarray(kernels, dtype=np.float32)
    if k.ndim != 2 or k.shape[1] != templates.matrix.shape[1]:
        raise ValueError(f"kernels of shape {k.shape} do not fit {templates.kh}x{templates.kw} templates")
    idx = np.zeros(len(k), dtype=np.int64)
    score = np.zeros(len(k), dtype=np.float32)
    for lo in range(0, len(k), chunk):
        unit, _ = _unit_rows(k[lo:lo + chunk].astype(np.float64))
        cos = unit.astype(np.float32) @ templates.matrix.T
        idx[lo:lo + chunk] = cos.argmax(axis=1)
        score[lo:lo + chunk] = cos.max(axis=1)
    fam = np.asarray(templates.families, dtype=object)[idx]
    var = np.asarray(templates.variants, dtype=object)[idx]
    return fam, var, score


def family_margin(kernels: np.ndarray, templates: TemplateSet) -> np.ndarray:
    """Per kernel: best cosine over all templates minus the best cosine of any *other* family.

    Near 0: the kernel sits between two families and its name is a coin toss; large: clear.
    """
    unit, _ = _unit_rows(np.asarray(kernels, dtype=np.float64))
    cos = unit.astype(np.float32) @ templates.matrix.T                   # (N, T)
    families = np.asarray(templates.families, dtype=object)
    names = list(dict.fromkeys(templates.families))
    per_family = np.stack([cos[:, families == f].max(axis=1) for f in names], axis=1)   # (N, F)
    if per_family.shape[1] < 2:
        return np.full(len(unit), np.nan, np.float32)
    top2 = np.sort(per_family, axis=1)[:, -2:]
    return (top2[:, 1] - top2[:, 0]).astype(np.float32)


@dataclass(frozen=True)
class ClusterNames:
    """Per cluster: the name given ('unmatched' below the threshold) and the raw best match."""

    names: list[str]
    best_family: list[str]
    best_variant: list[str]
    scores: np.ndarray
    threshold: float


def name_clusters(cluster_means: np.ndarray, templates: TemplateSet,
                  threshold: float = DEFAULT_NAME_THRESHOLD) -> ClusterNames:
    """Name each cluster by its mean kernel's best template family; never force a name:
    a best cosine below `threshold` (default 0.6) gives 'unmatched'."""
    fam, var, score = match(cluster_means, templates)
    names = [f if s >= threshold else UNMATCHED for f, s in zip(fam, score)]
    return ClusterNames(names, list(fam), list(var), score, threshold)
