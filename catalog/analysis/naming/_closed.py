"""Naming's fast path (issue 20, point 1): every family's best template per kernel from one float32
product per block, orientation in closed form, no search.

One product of a block of unit kernels with `columns` gives
  - every fixed template's cosine (and every template of a steered family with few of them: bands);
  - on a plane (deriv1, saddle) each set's frame coordinates (x1, x2): the set's best cosine is
    w = |x| up to the angle step (cos 0.5 deg), so the set with the largest w holds the family's
    best, and of its templates the best is next to psi = atan2(x2, x1) (`_nearest`);
  - on a curve (deriv2, whose two polarity runs are each other's negative) per set the harmonic
    model of its first run (`_steered._harmonics`) read at the kernel: its constant c and first
    harmonic a. A run's best cosine is +-c + |a| within `err` (its higher harmonics and residual),
    so the run with the largest |c| + |a| is taken, its templates next to the peak of a (angle of
    a) are evaluated exactly (the kernel's frame coordinates are the model rows' inverse times
    (c, a)), and the next run only where its estimate plus `err` can still beat that value.
What this drops against the exact search (`_steered.best_steered`, kept as the reference and for
curves of other shapes): another set a hair better than the chosen one (by at most the angle
step's cosine on a plane), and near the deriv2 pole, where many orientations fit about as well, a
template up to a few hundredths better elsewhere on the curve. Names (family, polarity, orientation
within 3 deg) agree with the exact search on 98.7 % (3x3) to 99.98 % (7x7) of 50,000 planted
kernels; the validation figures move by < 0.5 points (bench/RESULTS.md, tests/test_naming_speed.py).
"""
from __future__ import annotations

import numpy as np

from kernel_catalog.analysis.naming._steered import SteeredFamily, best_steered

FULL = 64          # a steered family with at most this many templates is evaluated template by template
NEAR = 3           # templates evaluated on each side of the closed-form angle on a curve


class ClosedPlan:
    """The product's columns for a plan's families and, per family, how to read its slice."""

    def __init__(self, fixed: list[tuple[str, np.ndarray, np.ndarray]], steered: dict[str, SteeredFamily]):
        cols, self.parts = [], []       # parts: (family, kind, start, stop, data)
        at = 0

        def add(block: np.ndarray) -> tuple[int, int]:
            nonlocal at
            cols.append(block)
            at += block.shape[1]
            return at - block.shape[1], at

        for f, mat, codes in fixed:                                   # mat (k, T), codes (T,)
            self.parts.append((f, "fixed", *add(mat), codes))
        for f, fam in steered.items():
            ns = len(fam.sets)
            fr = fam.frame.reshape(-1, 3, ns)                         # (k, 3, sets)
            if len(fam.nt) <= FULL:                                    # few templates: every one a column
                self.parts.append((f, "fixed", *add(_unit_templates(fam)), fam.code))
            elif fam.planar:
                self.parts.append((f, "planar", *add(fr[:, 1:].reshape(len(fr), -1)), fam))
            elif (inv := _antipodal_models(fam)) is not None:
                err = (np.linalg.norm(fam.rest, ord=2, axis=(2, 3)).sum(axis=1) + fam.resid)[::2] + 1e-6
                g = np.arange(ns) * 2                                  # each set's first run
                model = np.concatenate([fam.centre[g][:, None], fam.first[g]], axis=1)   # (sets, 3, 3)
                cols3 = np.einsum("kjs,sij->kis", fr, model).reshape(len(fr), -1)      # c, a1, a2 per set
                self.parts.append((f, "curve", *add(cols3), (fam, inv, err)))
            else:                                                      # any other curve: the exact search
                self.parts.append((f, "exact", *add(fr.reshape(len(fr), -1)), fam))
        k = cols[0].shape[0] if cols else 0
        self.columns = np.ascontiguousarray(np.concatenate(cols, axis=1) if cols else np.zeros((k, 0)), np.float32)


def _unit_templates(fam: SteeredFamily) -> np.ndarray:
    """(k, T) every unit template of the family, in code order (the frames times nt)."""
    ns = len(fam.sets)
    fr = fam.frame.reshape(-1, 3, ns)
    set_of_template = np.repeat(fam.set_of, fam.size)
    return np.einsum("kjt,tj->kt", fr[:, :, set_of_template], fam.nt)


def scores(prod: np.ndarray, part: tuple) -> tuple[np.ndarray, np.ndarray]:
    """Best cosine (float64) and template code per row of one family's part of the product."""
    f, kind, lo, hi, data = part
    p = prod[:, lo:hi]
    rows = np.arange(len(p))
    if kind == "fixed":
        i = p.argmax(axis=1)
        return p[rows, i].astype(np.float64), data[i]
    if kind == "planar":
        fam = data
        ns = len(fam.sets)
        x1, x2 = p[:, :ns], p[:, ns:]
        top = (x1 * x1 + x2 * x2).argmax(axis=1)
        a1, a2 = x1[rows, top], x2[rows, top]
        return _nearest(np.arctan2(a2, a1), np.stack([np.zeros_like(a1), a1, a2], axis=1), top, fam, 1)
    if kind == "exact":
        return best_steered(p.astype(np.float64), data)
    fam, inv, err = data
    ns = len(fam.sets)
    c, a1, a2 = p[:, :ns], p[:, ns:2 * ns], p[:, 2 * ns:]
    est = np.abs(c) + np.sqrt(a1 * a1 + a2 * a2)                     # a run's peak by its model, within err
    top = est.argmax(axis=1)
    val, code = _curve_candidates(rows, top, c, a1, a2, fam, inv)
    est[rows, top] = -np.inf
    top = est.argmax(axis=1)
    more = np.flatnonzero(est[rows, top] + err[top] >= val)          # the next run may still win there
    if len(more):
        v2, c2 = _curve_candidates(more, top[more], c, a1, a2, fam, inv)
        better = v2 > val[more]
        val[more[better]], code[more[better]] = v2[better], c2[better]
    return val, code


def _curve_candidates(rows, top, c, a1, a2, fam, inv) -> tuple[np.ndarray, np.ndarray]:
    """The best template near the first harmonic's peak in set `top` (the polarity run that the
    sign of the model's constant picks) for each of `rows`."""
    m = np.stack([c[rows, top], a1[rows, top], a2[rows, top]], axis=1).astype(np.float64)
    neg = m[:, 0] < 0                                                 # the second run is the first's negative
    zt = np.einsum("pij,pj->pi", inv[top], m)                         # the kernel in the set's frame
    return _nearest(np.arctan2(m[:, 2], m[:, 1]), zt, 2 * top + neg, fam, NEAR)


def _antipodal_models(fam: SteeredFamily) -> np.ndarray | None:
    """Per set, the inverse of its first run's model rows (centre, first harmonic), when every set
    has two runs, the second the first's negative (deriv2's polarities: its centre negated, its first
    harmonic the same, as its azimuths are turned by pi), and the rows are a basis of the frame."""
    if fam.runs != 2:
        return None
    g = np.arange(len(fam.sets)) * 2
    model = np.concatenate([fam.centre[g][:, None], fam.first[g]], axis=1)         # (sets, 3, 3)
    other = np.concatenate([-fam.centre[g + 1][:, None], fam.first[g + 1]], axis=1)
    if not np.allclose(other, model, atol=1e-9) or (np.abs(np.linalg.det(model)) < 1e-6).any():
        return None
    return np.linalg.inv(model)


def _nearest(psi: np.ndarray, zt: np.ndarray, g: np.ndarray, fam: SteeredFamily,
             near: int) -> tuple[np.ndarray, np.ndarray]:
    """The best of subset g's templates within `near` places of angle psi in phi order, evaluated
    exactly at frame coordinates zt (P, 3): (value float64, code)."""
    x = fam.phi0[g] + np.mod(psi - fam.phi0[g], 2 * np.pi)
    j = fam.find(g, x, "left")
    lo, hi = fam.key_at[g], fam.key_at[g] + 2 * fam.size[g] - 1
    idx = fam.perm[np.clip(j[:, None] + np.arange(-near, near + 1), lo[:, None], hi[:, None])]
    val = np.einsum("pj,pcj->pc", zt.astype(np.float64), fam.nt[idx])
    i = val.argmax(axis=1)
    rows = np.arange(len(val))
    return val[rows, i], fam.code[idx[rows, i]]
