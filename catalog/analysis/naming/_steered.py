"""The exact steered search (naming's reference, `matching._family_scores`; `match` itself reads
orientation in closed form, `_closed`, from the frames, harmonic models and tables built here): per
kernel, the best template of a steered family, from each set's geometry instead of a search over
angles. The result is the full search's (every template at every degree): the same template, the
first best on ties.

Geometry. A steered set's unit templates lie in a subspace of dimension <= 3 of pixel space (deriv1,
saddle: a circle in a plane; deriv2: two closed curves, one per polarity). In an orthonormal frame
(pole, e1, e2) of that subspace (`frame`) a template of one polarity run ('subset') is
    n_t = ca_t pole + sa_t (cos(phi_t) e1 + sin(phi_t) e2)      (ca_t = 0, sa_t = 1 in a plane)
and a kernel with frame coordinates z = (v0, w cos psi, w sin psi) has cosine z . n_t, so
  - a set's bound |v0| max|ca_t| + w max sa_t (a run's: max_t v0 ca_t + w max sa_t) caps every
    template in it: sets and runs below the best value found are never looked at;
  - on a plane z . n_t = w cos(phi_t - psi): the best template is one of the two next to psi in phi
    order (orientation in closed form);
  - on a curve, a run's templates as a function of phi_t are a few harmonics plus a small residual
    (`_harmonics`), so z . n_t <= z.centre + |a| cos(phi_t - psi') + slack: only a window
    |phi_t - psi'| <= delta of the templates sorted by phi can reach a value L (`_windows`).
Positions in a sorted list come from a bin table (`_bin_table`), not a binary search.

Per block of kernels and per family: the templates next to psi in the set with the largest bound
give a first value L; every set (and run) whose bound reaches L has its window evaluated; of the
templates within _TIE of the best the first in code order (set order, then angle order) wins, as in
the full search. All of it in flat arrays: no Python loop over kernels, sets or angles.
"""
from __future__ import annotations

import numpy as np

from kernel_catalog.analysis.naming.templates import TemplateBank

BLOCK = 4096            # rows per block: one product of the block with every template column
_TIE = 1e-12            # two cosines this close are a tie: the first template in code order wins
_SLACK = 1e-9           # slack on every bound (values are computed to ~1e-15)
_BIG = np.iinfo(np.int64).max


def frame(coeffs: np.ndarray, basis: np.ndarray, pole_rows: slice) -> tuple[np.ndarray, np.ndarray]:
    """(k, 3) orthonormal frame (pole, e1, e2) of the span of a set's unit templates coeffs @ basis
    and the templates in it (A, 3); the pole is the mean direction of the templates `pole_rows` (one
    polarity run: its curve then stays close to one latitude, and the bounds are tight). A span of
    dimension <= 2 gets a zero pole column (a plane: v0 = ca_t = 0). Works in the basis's m <= 4
    coordinates, never on (A, k)."""
    q, r = np.linalg.qr(basis.T)                                 # basis.T = q r, q (k, m) orthonormal
    c = coeffs @ r.T                                              # (A, m): the templates in q coordinates
    _, sv, vt = np.linalg.svd(c, full_matrices=False)
    d = int((sv > 1e-9 * sv[0]).sum())
    if d > 3:
        raise ValueError(f"a steered set spans {d} dimensions; the search handles at most 3")
    pad = ((0, 0), (0, 0) if d == 3 else (1, 2 - d))
    fr, nt = np.pad(q @ vt[:d].T, pad), np.pad(c @ vt[:d].T, pad)
    pole = nt[pole_rows].mean(axis=0)
    if d == 3 and np.linalg.norm(pole) > 1e-6:
        rot = np.linalg.qr(np.column_stack([pole, np.eye(3)]))[0][:, :3]     # (3, 3): pole first
        rot[:, 0] *= np.sign(rot[:, 0] @ pole)
        fr, nt = fr @ rot, nt @ rot
    return fr, nt / np.linalg.norm(nt, axis=1, keepdims=True)


def _runs(polarity: tuple) -> list[tuple[int, int]]:
    """(lo, hi) of each run of equal polarity."""
    cuts = [0] + [j for j in range(1, len(polarity)) if polarity[j] != polarity[j - 1]] + [len(polarity)]
    return list(zip(cuts[:-1], cuts[1:]))


class SteeredFamily:
    """All steered sets of one family: frames side by side, templates in frame coordinates, and per
    polarity run ('subset') its coordinate ranges and its templates sorted by phi (listed twice, the
    second time shifted by 2 pi, so that a window that wraps is one contiguous run)."""

    def __init__(self, bank: TemplateBank, sets: list[int], offsets: list[int]):
        frames, nts, codes, sub = [], [], [], []
        keys, perm, tables, models = [], [], [], []
        at = 0
        for j, i in enumerate(sets):
            s = bank.steered[i]
            lo, hi = _runs(s.polarity)[0]
            fr, nt = frame(s.coeffs / s.norms[:, None], s.basis, slice(lo, hi))
            frames.append(fr)
            nts.append(nt)
            codes.append(offsets[i] + np.arange(len(nt), dtype=np.int64))
            for lo, hi in _runs(s.polarity):
                t = nt[lo:hi]
                sa = np.hypot(t[:, 1], t[:, 2])
                phi = np.arctan2(t[:, 2], t[:, 1])
                order = np.argsort(phi, kind="stable")
                sub.append((j, t[:, 0].min(), t[:, 0].max(), sa.min(), sa.max(), phi[order[0]], hi - lo,
                            2 * sum(r[6] for r in sub)))
                p2 = np.concatenate([phi[order], phi[order] + 2 * np.pi])
                keys.append(p2)
                perm.append(at + lo + np.concatenate([order, order]))
                tables.append(_bin_table(p2))
                models.append(_harmonics(t[order], phi[order]))
            at += len(nt)
        self.sets = list(sets)
        k, ns = len(frames[0]), len(frames)
        self.frame = np.stack(frames, axis=2).reshape(k, 3 * ns)   # (k, 3 * sets): poles, then e1s, then e2s
        self.nt, self.code = np.concatenate(nts), np.concatenate(codes)
        self.nt0, self.nt1, self.nt2 = (np.ascontiguousarray(self.nt[:, j]) for j in range(3))
        cols = np.array(sub, np.float64).T
        self.set_of = cols[0].astype(np.int64)                     # per subset: its set
        self.ca_min, self.ca_max, self.sa_min, self.sa_max, self.phi0 = cols[1:6]
        self.size, self.key_at = cols[6].astype(np.int64), cols[7].astype(np.int64)
        self.keys, self.perm = np.concatenate(keys), np.concatenate(perm)
        self.width = np.array([t[0] for t in tables])
        self.nbins = np.array([len(t[1]) for t in tables], np.int64)
        self.tab_at = np.cumsum(self.nbins) - self.nbins
        self.table = np.concatenate([t[1] for t in tables]) + np.repeat(self.key_at, self.nbins)
        self.per_bin = max(t[2] for t in tables)
        self.centre, self.first, self.rest, self.resid = (np.array([m[i] for m in models]) for i in range(4))
        self.runs = len(sub) // ns                                   # polarity runs per set (1 or 2)
        if len(sub) != ns * self.runs or not np.array_equal(self.set_of, np.repeat(np.arange(ns), self.runs)):
            raise ValueError("every set of a steered family needs the same polarity runs")
        self.planar = bool(self.runs == 1 and (self.ca_min == 0).all() and (self.ca_max == 0).all())
        self.set_ca = np.maximum(np.abs(self.ca_min), np.abs(self.ca_max)).reshape(ns, -1).max(axis=1)
        self.set_sa = self.sa_max.reshape(ns, -1).max(axis=1)

    def find(self, g: np.ndarray, x: np.ndarray, side: str) -> np.ndarray:
        """Position in `keys` of angle x (in [phi0, phi0 + 4 pi)) in subset g's doubled sorted list, as
        searchsorted(side) would give it: a table lookup, then at most `per_bin` steps."""
        b = np.clip(((x - self.phi0[g]) / self.width[g]).astype(np.int64), 0, self.nbins[g] - 1)
        pos = self.table[self.tab_at[g] + b]
        end = self.key_at[g] + 2 * self.size[g]
        last = len(self.keys) - 1
        for _ in range(self.per_bin):
            v = self.keys[np.minimum(pos, last)]
            pos = pos + ((pos < end) & ((v < x) if side == "left" else (v <= x)))
        return pos


HARMONICS = 4           # harmonics of phi in the model of a run's curve (the first sets the window)


def _harmonics(nt: np.ndarray, phi: np.ndarray) -> tuple:
    """A run's templates as a function of their azimuth: n_t = centre + first (cos, sin)(phi_t) +
    sum_h rest_h (cos, sin)(h phi_t) + e_t with |e_t| <= resid (least squares; exact bounds follow)."""
    cols = [np.ones_like(phi)] + [f(h * phi) for h in range(1, HARMONICS + 1) for f in (np.cos, np.sin)]
    basis = np.stack(cols, axis=1)
    coef = np.linalg.lstsq(basis, nt, rcond=None)[0]                     # (1 + 2H, 3)
    resid = float(np.linalg.norm(nt - basis @ coef, axis=1).max())
    return coef[0], coef[1:3], coef[3:].reshape(HARMONICS - 1, 2, 3), resid


def _bin_table(p2: np.ndarray) -> tuple[float, np.ndarray, int]:
    """(bin width, per bin the count of p2 below its start, the most values in one bin) for sorted
    p2 over [p2[0], p2[0] + 4 pi): bins a quarter of the smallest gap wide (at most 20,000 bins)."""
    gap = float(np.diff(p2).min()) if len(p2) > 1 else 4 * np.pi
    width = max(gap / 4, 4 * np.pi / 20000)
    edges = p2[0] + width * np.arange(int(np.ceil(4 * np.pi / width)) + 2)
    below = np.searchsorted(p2, edges, side="left")
    return width, below[:-1], int(np.diff(below).max(initial=0)) + 1


def run_bounds(zp: np.ndarray, s: np.ndarray, fam: SteeredFamily) -> np.ndarray:
    """(P, runs): the best cosine any template of each polarity run of set s can reach (see the
    module docstring), for kernel coordinates zp (P, 3)."""
    v0, w = zp[:, 0], np.hypot(zp[:, 1], zp[:, 2])
    g = s[:, None] * fam.runs + np.arange(fam.runs)
    return np.maximum(v0[:, None] * fam.ca_min[g], v0[:, None] * fam.ca_max[g]) + w[:, None] * fam.sa_max[g]


def _neighbours(zp: np.ndarray, g: np.ndarray, fam: SteeredFamily) -> tuple[np.ndarray, np.ndarray]:
    """Values and codes (P, 3) of the templates of subset g next to psi (before, at, after it in phi
    order): on a plane the best template of the set is among them (the nearest on the circle)."""
    if fam.planar:
        psi = np.arctan2(zp[:, 2], zp[:, 1])
    else:                                   # where the run's first harmonic peaks: near the best
        a = np.einsum("pij,pj->pi", fam.first[g], zp)
        psi = np.arctan2(a[:, 1], a[:, 0])
    x = fam.phi0[g] + np.mod(psi - fam.phi0[g], 2 * np.pi)
    j = fam.find(g, x, "left")
    lo, hi = fam.key_at[g], fam.key_at[g] + 2 * fam.size[g] - 1
    idx = fam.perm[np.clip(j[:, None] + np.arange(-1, 2), lo[:, None], hi[:, None])]
    return np.einsum("pj,pcj->pc", zp, fam.nt[idx]), fam.code[idx]


def _windows(zp: np.ndarray, g: np.ndarray, low: np.ndarray, fam: SteeredFamily) -> tuple[np.ndarray, np.ndarray]:
    """(start in `fam.perm`, count) of each pair's window: a run of subset g's templates in phi order
    that holds every one that can reach `low` (minus _TIE and the slack). With the run's harmonic
    model, f_t = z.centre + a . (cos, sin)(phi_t) + sum_h rest_h(z) + z.e_t
             <= z.centre + |a| cos(phi_t - psi) + sum_h |rest_h z| + |z| resid,  psi = angle of a:
    a window |phi_t - psi| <= delta."""
    const = np.einsum("pj,pj->p", zp, fam.centre[g])
    a = np.einsum("pij,pj->pi", fam.first[g], zp)
    amp, psi = np.hypot(a[:, 0], a[:, 1]), np.arctan2(a[:, 1], a[:, 0])
    slack = (np.sqrt((np.einsum("phij,pj->phi", fam.rest[g], zp) ** 2).sum(axis=2)).sum(axis=1)
             + np.sqrt(np.einsum("pj,pj->p", zp, zp)) * fam.resid[g])
    size = fam.size[g]
    need = low - _TIE - 4 * _SLACK - const - slack
    with np.errstate(divide="ignore", invalid="ignore"):
        c = need / amp
    c = np.where(amp > 0, c, np.where(need <= 0, -np.inf, np.inf))
    delta = np.arccos(np.clip(c, -1.0, 1.0)) + 1e-9
    lo = fam.phi0[g] + np.mod(psi - delta - fam.phi0[g], 2 * np.pi)
    start = np.maximum(fam.find(g, lo, "left") - 1, fam.key_at[g])
    stop = fam.find(g, np.minimum(lo + 2 * delta, fam.phi0[g] + 4 * np.pi), "right") + 1
    count = np.clip(stop - start, 0, size)
    count = np.where(c <= -1, size, np.where(c > 1, 0, count))
    start = np.where(c <= -1, fam.key_at[g], start)
    return start, count


def best_steered(z: np.ndarray, fam: SteeredFamily) -> tuple[np.ndarray, np.ndarray]:
    """Best cosine per row over the family's steered templates and its code (see the module
    docstring); z (n, 3 * sets): every row's coordinates in every set's frame, as `u @ fam.frame`."""
    n, ns = len(z), len(fam.sets)
    if n == 0:
        return np.full(0, -np.inf), np.zeros(0, np.int64)
    v0, x1, x2 = z[:, :ns], z[:, ns:2 * ns], z[:, 2 * ns:]
    if fam.planar:
        return _best_planar(x1, x2, fam)
    w = np.sqrt(x1 * x1 + x2 * x2)
    bound = np.abs(v0) * fam.set_ca + w * fam.set_sa                 # per set (n, sets)
    rows, top = np.arange(n), bound.argmax(axis=1)                    # the set with the largest bound
    zt = np.stack([v0[rows, top], x1[rows, top], x2[rows, top]], axis=1)
    g = top * fam.runs + run_bounds(zt, top, fam).argmax(axis=1)
    low = _neighbours(zt, g, fam)[0].max(axis=1)                     # a value the best reaches
    reach = low - _TIE - 2 * _SLACK
    r, s = np.nonzero(bound >= reach[:, None])                        # sets that can reach it
    zp = np.stack([v0[r, s], x1[r, s], x2[r, s]], axis=1)
    if fam.runs > 1:                                                  # runs of those sets that can
        i, j = np.nonzero(run_bounds(zp, s, fam) >= reach[r, None])
        r, g, zp = r[i], s[i] * fam.runs + j, zp[i]
    else:
        g = s
    start, cnt = _windows(zp, g, low[r], fam)
    pair = np.repeat(np.arange(len(r)), cnt)                          # per evaluated template: its pair
    idx = fam.perm[start[pair] + (np.arange(len(pair)) - (np.cumsum(cnt) - cnt)[pair])]
    val = (zp[:, 0].take(pair) * fam.nt0.take(idx) + zp[:, 1].take(pair) * fam.nt1.take(idx)
           + zp[:, 2].take(pair) * fam.nt2.take(idx))
    code = fam.code.take(idx)
    return _first_best(r.take(pair), val, code, n)


def _first_best(row: np.ndarray, val: np.ndarray, code: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row (entries grouped by row, every row present): the first template in code order within
    _TIE of the row's best, and its value."""
    per_row = np.bincount(row, minlength=n)
    at = np.cumsum(per_row) - per_row
    best = np.maximum.reduceat(val, at)
    close = val >= np.repeat(best, per_row) - _TIE
    first = np.minimum.reduceat(np.where(close, code, _BIG), at)
    score = np.maximum.reduceat(np.where(code == np.repeat(first, per_row), val, -np.inf), at)
    return score, first


def _best_planar(x1: np.ndarray, x2: np.ndarray, fam: SteeredFamily) -> tuple[np.ndarray, np.ndarray]:
    """`best_steered` on a plane: the bound of a set is w itself, and its best template is next to
    psi; a row whose other sets all fall below its first set's value keeps that set's answer."""
    n = len(x1)
    w2 = x1 * x1 + x2 * x2
    rows, top = np.arange(n), w2.argmax(axis=1)
    zt = np.stack([np.zeros(n), x1[rows, top], x2[rows, top]], axis=1)
    val, code = _neighbours(zt, top, fam)                             # (n, 3)
    reach = val.max(axis=1) - _TIE - 2 * _SLACK
    more = w2 >= np.where(reach > 0, reach * reach, -1.0)[:, None]    # w >= reach
    more[rows, top] = False
    r, s = np.nonzero(more)                                           # other sets that can reach it
    if len(r):
        again = np.unique(r)
        extra, extra_code = _neighbours(np.stack([np.zeros(len(r)), x1[r, s], x2[r, s]], axis=1), s, fam)
        row = np.concatenate([np.repeat(again, 3), np.repeat(r, 3)])
        order = np.argsort(row, kind="stable")
        sc, fi = _first_best(np.searchsorted(again, row[order]),
                             np.concatenate([val[again].reshape(-1), extra.reshape(-1)])[order],
                             np.concatenate([code[again].reshape(-1), extra_code.reshape(-1)])[order], len(again))
    score, first = _first_best(np.repeat(rows, 3), val.reshape(-1), code.reshape(-1), n)
    if len(r):
        score[again], first[again] = sc, fi
    return score, first
