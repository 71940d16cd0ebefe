"""The exact steered search behind naming (`matching`): per kernel, the best template of a
steered family, found by evaluating only the templates whose bound can still win
(`best_steered`); the result is the full search's (the same template, the first best on ties).
"""
from __future__ import annotations

import numpy as np

from kernel_catalog.analysis.naming.templates import TemplateBank

# ---------------------------------------------------------------- fast exact steered search
#
# A steered set's normalised templates n_t are unit vectors in a subspace of dimension 2 (deriv1,
# saddle: a great circle) or 3 (deriv2 of one polarity: a cone around a pole n0). In an orthonormal
# basis of that subspace, n_t = cos(a_t) n0 + sin(a_t) (cos(phi_t) e1 + sin(phi_t) e2) (a_t = 90 deg
# on a great circle), and a kernel's cosine to n_t is
#     f_t = v0 cos(a_t) + w sin(a_t) cos(phi_t - psi),
# (v0, w, psi: the kernel's projection on n0, its length and angle in the e1, e2 plane). So
#     f_t <= K0 + w c s,  c = cos(phi_t - psi),  K0 = max_t v0 cos(a_t),  s = max / min sin(a_t),
# a bound that grows with c: every template that can beat a value L already found lies in one
# window |phi_t - psi| <= delta(L) (a contiguous run of the templates sorted by phi). Only those are
# evaluated, with the same formula as before, and the first best (set order, then angle order)
# wins, as with a full argmax: the result is the full search's, exactly.

BLOCK = 4096            # rows per block in the steered search (bounds the candidate arrays)
_TOL = 1e-9             # slack on every bound (values are computed to ~1e-15)
_TIE = 1e-12           # two cosines this close are a tie for the full search's rounding to break
_BIN = 0.25             # angle-table bins per smallest gap between sorted template angles


def _subset_geometry(s, lo: int, hi: int, k: int):
    """(n0, e1, e2 in pixel space, cos a range, sin a range, sorted phi, order, residual) of one
    polarity run of a steered set; None where the window search does not apply (evaluate all)."""
    tn = (s.coeffs[lo:hi] @ s.basis) / s.norms[lo:hi, None]      # (A, k) unit templates
    if hi - lo < 4:
        return None
    _, sv, vt = np.linalg.svd(tn, full_matrices=False)
    r = int((sv > 1e-9 * sv[0]).sum())
    if r not in (2, 3):
        return None
    q = vt[:r].T                                                  # (k, r) orthonormal
    z = tn @ q
    res = float(np.linalg.norm(tn - z @ q.T, axis=1).max())
    if r == 2:
        n0, e = np.zeros(2), np.eye(2)
    else:
        n0 = z.mean(axis=0)
        if np.linalg.norm(n0) < 1e-6:
            return None
        n0 = n0 / np.linalg.norm(n0)
        e = np.linalg.svd(np.eye(3) - np.outer(n0, n0))[0][:, :2]    # orthonormal complement
    ca, xy = z @ n0, z @ e
    sa = np.hypot(xy[:, 0], xy[:, 1])
    if sa.min() < 1e-6:
        return None
    phi = np.arctan2(xy[:, 1], xy[:, 0])
    order = np.argsort(phi, kind="stable")
    return q @ n0, q @ e, ca[order], sa[order], phi[order], order, res


class SteeredFamily:
    """All steered sets of one family, split into polarity runs ('subsets'), flattened for a
    vectorised window search (see `best_steered`)."""

    def __init__(self, bank: TemplateBank, sets: list[int], offsets: list[int], basis_at: np.ndarray):
        k = bank.kh * bank.kw
        n0s, e1s, e2s, rows = [], [], [], []
        coeffs, norms, codes, setcol = [], [], [], []
        phis2, perm2, table, tables_at, ca2, sa2 = [], [], [], [], [], []
        npt = 0
        nphi = 0
        ntab = 0
        for i in sets:
            s = bank.steered[i]
            pols = list(s.polarity)
            lo = 0
            for j in range(1, len(pols) + 1):
                if j < len(pols) and pols[j] == pols[lo]:
                    continue
                hi, a = j, j - lo
                g = _subset_geometry(s, lo, hi, k)
                coeffs.append(s.coeffs[lo:hi])
                norms.append(s.norms[lo:hi])
                codes.append(offsets[i] + np.arange(lo, hi))
                setcol.append(np.full(a, basis_at[i]))
                if g is None:
                    n0, e, ca, sa, phi, order, res = (np.zeros(k), np.zeros((k, 2)), np.zeros(a), np.zeros(a),
                                                      np.linspace(-np.pi, np.pi, a, endpoint=False),
                                                      np.arange(a), 0.0)
                else:
                    n0, e, ca, sa, phi, order, res = g
                n0s.append(n0)
                e1s.append(e[:, 0])
                e2s.append(e[:, 1])
                rows.append((g is None, a, ca.min(), ca.max(), sa.min(), sa.max(), _TOL + 2 * res, phi[0], npt, nphi,
                             ntab))
                ca2.append(np.concatenate([ca, ca]))
                sa2.append(np.concatenate([sa, sa]))
                p2 = np.concatenate([phi, phi + 2 * np.pi])
                gap = max(float(np.diff(p2).min()), 1e-6)
                width = gap * _BIN
                nb = int(np.ceil(4 * np.pi / width)) + 2
                edges = phi[0] + width * np.arange(nb)
                table.append(np.searchsorted(p2, edges, side="left"))
                tables_at.append((width, nb))
                phis2.append(p2)
                perm2.append(np.concatenate([order, order]) + npt)
                npt += a
                nphi += 2 * a
                ntab += nb
                lo = j
        self.full = np.array([r[0] for r in rows])
        self.size = np.array([r[1] for r in rows], np.int64)
        self.ca_min, self.ca_max, self.sa_min, self.sa_max, self.tol, self.phi0 = (
            np.array([r[c] for r in rows], np.float64) for c in range(2, 8))
        self.pt_at, self.phi_at, self.tab_at = (np.array([r[c] for r in rows], np.int64) for c in range(8, 11))
        self.width = np.array([t[0] for t in tables_at])
        self.nbins = np.array([t[1] for t in tables_at], np.int64)
        self.proj = np.concatenate([np.stack(n0s, 1), np.stack(e1s, 1), np.stack(e2s, 1)], axis=1)  # (k, 3G)
        self.coeffs = np.concatenate(coeffs)
        self.norms = np.concatenate(norms)
        self.codes = np.concatenate(codes)
        self.setcol = np.concatenate(setcol)
        self.phis2 = np.concatenate(phis2)
        self.ca2 = np.concatenate(ca2)
        self.sa2 = np.concatenate(sa2)
        self.perm2 = np.concatenate(perm2)
        self.table = np.concatenate(table)
        self.sets = list(sets)
        self.m = bank.steered[sets[0]].basis.shape[0]
        assert all(bank.steered[i].basis.shape[0] == self.m for i in sets)

    def below(self, x: np.ndarray) -> np.ndarray:
        """For angles x (n, G) in [phi0, phi0 + 4 pi]: how many sorted angles of each subset's doubled
        list lie below the start of x's table bin (a position at or before x's)."""
        b = np.clip(np.floor((x - self.phi0) / self.width).astype(np.int64), 0, self.nbins - 1)
        return self.table[self.tab_at + b]

    def values(self, p: np.ndarray, rows: np.ndarray, pts: np.ndarray) -> np.ndarray:
        """Cosines of kernels `rows` to templates `pts` (flat point indices), as the full product
        (unit @ basis.T) @ coeffs.T / norms computes them."""
        cols = self.setcol[pts][:, None] + np.arange(self.m)
        return np.einsum("cm,cm->c", p[rows[:, None], cols], self.coeffs[pts]) / self.norms[pts]


def best_steered(u: np.ndarray, p: np.ndarray, fam: SteeredFamily):
    """Best cosine per row over the family's steered templates, and its code: the full argmax's
    (first best in set and angle order), found by evaluating only the templates whose bound can
    reach the best value seen (see the comment above)."""
    n, G = len(u), len(fam.size)
    if n == 0:
        return np.full(0, -np.inf), np.zeros(0, np.int64)
    proj = u @ fam.proj
    v0, x1, x2 = proj[:, :G], proj[:, G:2 * G], proj[:, 2 * G:]
    w = np.hypot(x1, x2)
    psi = np.arctan2(x2, x1)
    two_pi = 2 * np.pi
    # lower bound: the templates next to psi in every subset, by the geometry (exact to ~1e-15)
    x = fam.phi0 + np.mod(psi - fam.phi0, two_pi)
    j = fam.below(x) + fam.phi_at
    hi = fam.phi_at + 2 * fam.size - 1
    low = np.full((n, G), -np.inf)
    for d in (-1, 0, 1):
        pos = np.clip(j + d, fam.phi_at, hi)
        low = np.maximum(low, v0 * fam.ca2[pos] + w * fam.sa2[pos] * np.cos(fam.phis2[pos] - psi))
    low = np.where(fam.full, -np.inf, low - fam.tol).max(axis=1)
    # window of every subset: |phi - psi| <= delta, where the bound reaches low
    k0 = np.where(v0 >= 0, v0 * fam.ca_max, v0 * fam.ca_min)
    need = low[:, None] - fam.tol - k0
    with np.errstate(divide="ignore", invalid="ignore"):
        c_thr = np.where(need >= 0, need / (w * fam.sa_max), need / (w * fam.sa_min))
    c_thr = np.where(w > 0, c_thr, np.where(need <= 0, -np.inf, np.inf))
    every = (c_thr <= -1) | fam.full
    delta = np.arccos(np.clip(c_thr, -1, 1)) + 1e-9
    lo = fam.phi0 + np.mod(psi - delta - fam.phi0, two_pi)
    start = np.clip(fam.below(lo) - 1, 0, fam.size)
    stop = fam.below(np.minimum(lo + 2 * delta, fam.phi0 + 2 * two_pi)) + 2
    cnt = np.clip(stop - start, 0, fam.size)
    start = np.where(every, 0, start)
    cnt = np.where(every, fam.size, np.where(c_thr > 1, 0, cnt))
    # evaluate every window (row-major: row, then subset in set order)
    r, g = np.nonzero(cnt)
    c = cnt[r, g]
    seg = np.cumsum(c) - c
    total = int(c.sum())
    pos = np.repeat(start[r, g] - seg + fam.phi_at[g], c) + np.arange(total)
    pts = fam.perm2[pos]
    val = fam.values(p, np.repeat(r, c), pts)
    mx = np.maximum.reduceat(val, seg)
    code = np.minimum.reduceat(np.where(val == np.repeat(mx, c), fam.codes[pts], np.iinfo(np.int64).max), seg)
    vals = np.full((n, G), -np.inf)
    vals[r, g] = mx
    codes = np.zeros((n, G), np.int64)
    codes[r, g] = code
    pick = vals.argmax(axis=1)                 # first subset with the best: set order, as the full search
    best = vals[np.arange(n), pick]
    code = codes[np.arange(n), pick]
    # A tie (two templates within _TIE, as symmetric kernels give) goes to the first template in
    # set and angle order: the full product's rounding would decide it otherwise, and that differs
    # between batch sizes.
    close = val >= np.repeat(best[r], c) - _TIE
    cr, cc, cv = np.repeat(r, c)[close], fam.codes[pts][close], val[close]
    o = np.lexsort((cc, cr))
    cr, cc, cv = cr[o], cc[o], cv[o]
    head = np.r_[True, cr[1:] != cr[:-1]]
    code[cr[head]], best[cr[head]] = cc[head], cv[head]
    return best, code
