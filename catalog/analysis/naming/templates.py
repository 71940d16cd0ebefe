"""Template families for naming kernels and clusters, for any kernel size (3-11, non-square, bands).

A name is structured: a *family* (the shape, without sign or direction), a *polarity* and an
*orientation* where the shape has them, and a *scale*:

  family    polarity            orientation (deg, CCW from +x, y up)   scale
  dog       pos = on-centre     NULL (isotropic)                       sigma (px)
  deriv1    NULL                0-360: direction of the positive lobe  sigma
  deriv2    pos = positive      0-180: the derivative's direction;     sigma
            centre bar          the bar lies across it (-G_uu)
  saddle    NULL                0-180: axis of the positive lobes      sigma
                                (G_xy with y up = saddle 045)
  impulse   pos / neg           NULL (one centre pixel)                NULL
  square    pos / neg           NULL                                   box half-size (px)
  cross     pos / neg           NULL                                   arm length (px)
  user      NULL                NULL                                   NULL (a template file's filter)

Oriented families are steerable (Freeman and Adelson, IEEE PAMI 1991): a first-order Gaussian
derivative at angle t is cos(t) G_x + sin(t) G_y, a second-order one a combination of
G, x^2 G, xy G, y^2 G (so of G_xx, G_xy, G_yy). This holds pointwise, so on any sampled grid too.
A kernel is projected once on each basis and the exact cosine to the steered template is
evaluated at every whole degree (`ANGLE_STEP`): orientation is found at any angle, never snapped
to eight templates. On bands (1xk, kx1) only the directions along the band exist.

Every template (fixed shapes and steered sets alike) is also evaluated at sub-pixel centre shifts
(`SUBPIXEL_SHIFTS`, -0.25 / 0 / +0.25 px per axis; along the band only on a band): a trained
kernel is not centred on the pixel grid, and an off-grid point source or blob is otherwise named
by whichever family fits its smeared shape (at 5x5 an impulse shifted by 0.3 px looks like a
small DoG). All families get the same shifts, so the noise-floor correction in `naming` stays
fair. Planted banks (SNR 2 / 3, 80 per class, seeds 0-1), kernel family accuracy unshifted ->
shifted: 5x5 0.910 -> 0.933 / 0.941 -> 0.967, 7x7 0.967 -> 0.979 / 0.981 -> 0.990, 3x3 0.724 ->
0.726 / 0.789 -> 0.806. Cost: 9x the templates (naming 50k 7x7 kernels: 2.4 -> 13 s here with
a full search; `naming` finds the same best template from each set's geometry, exactly, see
`_steered`).

Readable labels are built from these columns (`label_of`): `dog-pos`, `deriv1-045`,
`deriv2-090-neg`, `saddle-045`, `impulse-pos`, `square-neg`, `master-key-3`. Orientation in a label
is bucketed to the nearest multiple of `ORIENTATION_BUCKET` (15 deg) and wrapped into the
family's period (deriv1 360, deriv2 and saddle 180); the exact angle is in its own column.

Geometry: the grid centre is ((kh-1)/2, (kw-1)/2); x grows to the right (columns), y grows *up*
(against the row index). Matching is by cosine after centring and unit L2 (sign-aware).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kernel_catalog.errors import CatalogError

UNMATCHED = "unmatched"
FAMILY_NAMES: tuple[str, ...] = ("dog", "deriv1", "deriv2", "saddle", "impulse", "square", "cross")
PERIOD = {"deriv1": 360, "deriv2": 180, "saddle": 180}          # oriented families
POLARIZED = ("dog", "deriv2", "impulse", "square", "cross")      # families with a centre sign
ANGLE_STEP = 1              # degrees between evaluated orientations (exact steering at each)
ORIENTATION_BUCKET = 15     # degrees: labels round the orientation to a multiple of this


def label_of(family: str, polarity: str | None = None, orientation: float | None = None) -> str:
    """Readable label from the structured name: family[-OOO][-pol] (see the module docstring)."""
    parts = [family]
    if family in PERIOD and orientation is not None and np.isfinite(orientation):
        period = PERIOD[family]
        parts.append(f"{int(round(orientation / ORIENTATION_BUCKET) * ORIENTATION_BUCKET) % period:03d}")
    if polarity:
        parts.append(polarity)
    return "-".join(parts)


# ---------------------------------------------------------------- rendering (pure maths)

def _coords(kh: int, kw: int, offset: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates (x right, y up) relative to a centre moved by offset=(dy, dx)."""
    rows = np.arange(kh) - (kh - 1) / 2.0
    cols = np.arange(kw) - (kw - 1) / 2.0
    y = -rows[:, None] - offset[0] + np.zeros((1, kw))
    x = cols[None, :] - offset[1] + np.zeros((kh, 1))
    return x, y


def _overlap(c: np.ndarray, half: float) -> np.ndarray:
    """Length of [c-0.5, c+0.5] inside [-half, half]: box edges that survive sub-pixel shifts."""
    return np.clip(np.minimum(c + 0.5, half) - np.maximum(c - 0.5, -half), 0.0, 1.0)


def render(family: str, kh: int, kw: int, *, sigma: float = 1.0, ratio: float = 2.0, size: int = 1,
           log: bool = False, offset: tuple[float, float] = (0.0, 0.0), orientation: float = 0.0,
           polarity: str | None = "pos", anisotropy: float = 1.0) -> np.ndarray:
    """One family member as a raw (kh*kw,) float64 pattern (not normalised).

    sigma: Gaussian scale (px); ratio: DoG surround / centre; log: Laplacian of Gaussian instead of
    a DoG; size: square half-size or cross arm length; offset: sub-pixel centre shift (dy, dx);
    orientation: degrees as in the module docstring; anisotropy: the envelope's sigma along the
    orientation is sigma * anisotropy, across it sigma / anisotropy; polarity 'neg' negates.
    """
    x, y = _coords(kh, kw, offset)
    t = np.deg2rad(orientation - (45.0 if family == "saddle" else 0.0))
    u, v = x * np.cos(t) + y * np.sin(t), -x * np.sin(t) + y * np.cos(t)
    su, sv = sigma * anisotropy, sigma / anisotropy

    def gauss(scale: float) -> np.ndarray:
        return np.exp(-((u / (su * scale)) ** 2 + (v / (sv * scale)) ** 2) / 2) / (2 * np.pi * su * sv * scale ** 2)

    if family == "dog":
        r2 = (u / su) ** 2 + (v / sv) ** 2
        shape = (2.0 - r2) * gauss(1.0) if log else gauss(1.0) - gauss(ratio)
    elif family == "deriv1":
        shape = u * gauss(1.0)
    elif family == "deriv2":
        shape = (1.0 - (u / su) ** 2) * gauss(1.0)      # -G_uu up to a positive factor
    elif family == "saddle":
        shape = u * v * gauss(1.0)
    elif family == "impulse":
        shape = _overlap(x, 0.5) * _overlap(y, 0.5)
    elif family == "square":
        shape = _overlap(x, size + 0.5) * _overlap(y, size + 0.5)
    elif family == "cross":
        ox, oy = _overlap(x, size + 0.5), _overlap(y, size + 0.5)
        cx, cy = _overlap(x, 0.5), _overlap(y, 0.5)
        shape = ox * cy + cx * oy - cx * cy
    else:
        raise ValueError(f"unknown template family {family!r}; known: {', '.join(FAMILY_NAMES)}")
    sign = -1.0 if polarity == "neg" else 1.0
    return (sign * shape).reshape(-1)


def default_scales(kh: int, kw: int) -> dict[str, tuple]:
    """Scale grids for a kernel size: derivative sigmas from 0.6 px to 0.6 x the radius (4 steps);
    DoG sigmas from 0.8 px (a DoG at 0.6 px has cosine 0.97 with a one-pixel impulse: that shape is
    the impulse family), surround ratios (1.6, 2.5); box half-sizes 1..r-1, arms 1..r."""
    r = (max(kh, kw) - 1) / 2.0
    sigmas = tuple(float(s) for s in np.round(np.geomspace(0.6, max(0.8, 0.6 * r), 4), 3))
    dog = tuple(float(s) for s in np.round(np.geomspace(0.8, max(1.0, 0.6 * r), 4), 3))
    boxes = tuple(range(1, max(int(r), 2)))
    arms = tuple(range(1, int(r) + 1)) if r >= 1 else (1,)
    return {"sigma": sigmas, "dog_sigma": dog, "ratio": (1.6, 2.5), "box": boxes, "arm": arms}


def unit_rows(m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centre rows and scale them to unit norm; also return the centred norms."""
    c = m - m.mean(axis=1, keepdims=True)
    n = np.linalg.norm(c, axis=1)
    return c / np.where(n > 0, n, 1.0)[:, None], n


# ---------------------------------------------------------------- the bank

@dataclass(frozen=True)
class Steered:
    """One steerable (family, sigma): templates = coeffs @ basis at every angle, exact."""

    family: str
    sigma: float
    basis: np.ndarray          # (m, k) centred, not normalised
    coeffs: np.ndarray         # (A, m)
    norms: np.ndarray          # (A,) norm of each steered template
    angles: np.ndarray         # (A,) degrees
    polarity: tuple            # (A,) 'pos' / 'neg' / None


@dataclass(frozen=True)
class TemplateBank:
    """Templates for one size: fixed rows (isotropic shapes and user filters) plus steered sets."""

    kh: int
    kw: int
    families: tuple[str, ...]          # per fixed row
    polarities: tuple                  # per fixed row, 'pos' / 'neg' / None
    scales: tuple                      # per fixed row, float or None
    variants: tuple[str, ...]          # per fixed row
    matrix: np.ndarray                 # (T, k) float32, centred, unit L2
    steered: tuple[Steered, ...] = field(default_factory=tuple)

    def __len__(self) -> int:
        return len(self.families) + sum(len(s.angles) for s in self.steered)

    def family_names(self) -> list[str]:
        return list(dict.fromkeys([*self.families, *(s.family for s in self.steered)]))

    def __add__(self, other: "TemplateBank") -> "TemplateBank":
        if (self.kh, self.kw) != (other.kh, other.kw):
            raise ValueError(f"cannot join {self.kh}x{self.kw} and {other.kh}x{other.kw} templates")
        return TemplateBank(self.kh, self.kw, self.families + other.families, self.polarities + other.polarities,
                            self.scales + other.scales, self.variants + other.variants,
                            np.concatenate([self.matrix, other.matrix]).astype(np.float32),
                            self.steered + other.steered)


def _band_angles(kh: int, kw: int, family: str) -> np.ndarray:
    """Orientations evaluated: every ANGLE_STEP degrees; on a band only those along its axis."""
    period = PERIOD[family]
    if kh > 1 and kw > 1:
        return np.arange(0, period, ANGLE_STEP, dtype=np.float64)
    if family == "saddle":
        return np.empty(0)
    along = 0.0 if kh == 1 else 90.0
    return np.array([a for a in (along, along + 180.0) if a < period])


def _steered(family: str, kh: int, kw: int, sigma: float,
             offset: tuple[float, float] = (0.0, 0.0)) -> Steered | None:
    x, y = _coords(kh, kw, offset)
    g = np.exp(-(x * x + y * y) / (2 * sigma * sigma))
    angles = _band_angles(kh, kw, family)
    if not len(angles):
        return None
    t = np.deg2rad(angles)
    c, s = np.cos(t), np.sin(t)
    if family == "deriv1":
        basis = np.stack([x * g, y * g]).reshape(2, -1)
        coeffs, pol = np.stack([c, s], axis=1), (None,) * len(t)
    else:
        basis = np.stack([g, x * x * g, x * y * g, y * y * g]).reshape(4, -1)
        if family == "deriv2":   # 1 - u^2/s^2, u = x c + y s
            one = np.stack([np.ones_like(c), -c * c, -2 * c * s, -s * s], axis=1) * [1, *(1 / sigma ** 2,) * 3]
            coeffs = np.concatenate([one, -one])
            angles = np.concatenate([angles, angles])
            pol = ("pos",) * len(t) + ("neg",) * len(t)
        else:                    # saddle at angle a: u v with u, v rotated by a - 45
            c2, s2 = np.cos(t - np.pi / 4), np.sin(t - np.pi / 4)
            coeffs = np.stack([np.zeros_like(c), -c2 * s2, c2 * c2 - s2 * s2, c2 * s2], axis=1)
            pol = (None,) * len(t)
    basis = basis - basis.mean(axis=1, keepdims=True)
    norms = np.sqrt(np.maximum(np.einsum("am,mn,an->a", coeffs, basis @ basis.T, coeffs), 0.0))
    keep = norms > 1e-9 * max(norms.max(), 1e-30)
    if not keep.any():
        return None
    return Steered(family, float(sigma), basis, coeffs[keep], norms[keep], angles[keep],
                   tuple(p for p, k in zip(pol, keep) if k))


SUBPIXEL_SHIFTS = (-0.25, 0.0, 0.25)    # px per axis: centre shifts every template is evaluated at


def _shifts(kh: int, kw: int) -> list[tuple[float, float]]:
    """Sub-pixel centre shifts (dy, dx) of every template; along the band axis only on a band."""
    ys = SUBPIXEL_SHIFTS if kh > 1 else (0.0,)
    xs = SUBPIXEL_SHIFTS if kw > 1 else (0.0,)
    return [(dy, dx) for dy in ys for dx in xs]


def _fixed_rows(kh: int, kw: int, sc: dict) -> list[tuple[str, str | None, float | None, str, np.ndarray]]:
    rows = []
    for dy, dx in _shifts(kh, kw):       # every centred shape at each sub-pixel centre shift
        off = (dy, dx)
        tag = "" if dy == dx == 0 else f"@{dy:+.2f}{dx:+.2f}"
        for pol in ("pos", "neg"):
            for s in sc["dog_sigma"]:
                for r in sc["ratio"]:
                    rows.append(("dog", pol, s, f"s{s:.2f}-r{r:.1f}{tag}",
                                 render("dog", kh, kw, sigma=s, ratio=r, polarity=pol, offset=off)))
                ls = round(1.25 * s, 3)   # a LoG is sharper than a DoG of the same sigma (LoG at 0.8 px ~ impulse)
                rows.append(("dog", pol, ls, f"log-s{ls:.2f}{tag}",
                             render("dog", kh, kw, sigma=ls, log=True, polarity=pol, offset=off)))
            rows.append(("impulse", pol, None, f"px{tag}", render("impulse", kh, kw, polarity=pol, offset=off)))
            for h in sc["box"]:
                if 2 * h + 1 >= max(kh, kw):    # a box filling the grid centres to nothing (shifted: an edge)
                    continue
                rows.append(("square", pol, float(h), f"h{h}{tag}",
                             render("square", kh, kw, size=h, polarity=pol, offset=off)))
            if kh > 1 and kw > 1:    # on a band a cross is just a bar
                for a in sc["arm"]:
                    rows.append(("cross", pol, float(a), f"a{a}{tag}",
                                 render("cross", kh, kw, size=a, polarity=pol, offset=off)))
    return rows


def make_templates(kh: int, kw: int, scales: dict[str, tuple] | None = None,
                   families: tuple[str, ...] = FAMILY_NAMES) -> TemplateBank:
    """The built-in bank for a (kh, kw) kernel (any size, square or not)."""
    if kh < 1 or kw < 1 or kh * kw < 2:
        raise ValueError(f"templates need at least 2 taps, got {kh}x{kw}")
    sc = scales or default_scales(kh, kw)
    rows = [r for r in _fixed_rows(kh, kw, sc) if r[0] in families]
    raw = np.array([r[4] for r in rows], dtype=np.float64).reshape(len(rows), kh * kw)   # none: oriented only
    unit, norms = unit_rows(raw)
    ok = norms > 1e-6 * np.abs(raw).max(axis=1).clip(1e-30)     # vanished on this grid (a 3x3 box)
    kept = [r for r, o in zip(rows, ok) if o]
    steered = tuple(s for fam in ("deriv1", "deriv2", "saddle") if fam in families
                    for sigma in sc["sigma"] for off in _shifts(kh, kw)
                    for s in [_steered(fam, kh, kw, sigma, off)] if s is not None)
    return TemplateBank(kh, kw, tuple(r[0] for r in kept), tuple(r[1] for r in kept), tuple(r[2] for r in kept),
                        tuple(r[3] for r in kept), unit[ok].astype(np.float32), steered)


def load_template_file(path: str | Path, kh: int = 7, kw: int = 7) -> TemplateBank:
    """Read a text file of blocks "Filter N:" followed by kh rows of kw floats.

    Block "Filter N:" becomes family "master-key-N" (another header becomes its slug); filters
    are re-centred and scaled to unit norm like every template; no polarity, orientation, scale.
    """
    return _file_bank(*_read_template_file(path), kh, kw)


def _read_template_file(path: str | Path) -> tuple[Path, list[str], list[list[float]]]:
    """(path, block names, block values) of a template file; a CatalogError if it is unreadable."""
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
    return p, names, blocks


def _file_bank(p: Path, names: list[str], blocks: list[list[float]], kh: int, kw: int) -> TemplateBank:
    for name, vals in zip(names, blocks):
        if len(vals) != kh * kw:
            raise CatalogError(f"{p}: block {name!r} has {len(vals)} values, expected {kh}x{kw}={kh * kw}")
    unit, norms = unit_rows(np.array(blocks, dtype=np.float64))
    if (norms == 0).any():
        raise CatalogError(f"{p}: a filter is constant and cannot be used as a template")
    n = len(names)
    return TemplateBank(kh, kw, tuple(names), (None,) * n, (None,) * n, ("file",) * n, unit.astype(np.float32))


def template_bank(spec: str, kh: int, kw: int) -> TemplateBank:
    """The templates of one kernel size from a `--templates` spec, for every command that takes one
    (cluster, identify, nearest): 'builtin', FILE, or parts joined by '+' ('builtin+FILE'), joined
    in order. A FILE that does not exist or does not parse is an error. A template file holds
    filters of one size: with 'builtin' among the parts, a file whose filters are all of another
    size extends only that size (the 7x7 master keys add to 7x7 and leave 5x5 with the built-in
    families, so one spec serves a catalog of several sizes); without it, the file is the whole
    bank, and a filter of another size is an error."""
    parts = spec.split("+")
    bank = None
    for part in parts:
        if part == "builtin":
            found = make_templates(kh, kw)
        else:
            if not Path(part).is_file():
                raise CatalogError(f"--templates {part}: no such file (use builtin, FILE or builtin+FILE)")
            p, names, blocks = _read_template_file(part)
            if "builtin" in parts and len({len(b) for b in blocks}) == 1 and len(blocks[0]) != kh * kw:
                continue   # builtin+FILE: a file of another kernel size extends only its own size
            found = _file_bank(p, names, blocks, kh, kw)
        bank = found if bank is None else bank + found
    return bank
