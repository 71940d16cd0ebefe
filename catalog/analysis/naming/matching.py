"""Naming kernels and clusters by their best template: family, polarity, orientation, scale.

Each kernel (or cluster mean) is matched against every template of a `TemplateBank` by cosine
(sign-aware); oriented families at every whole degree through steering. Per family the best
match is kept. Families are compared fairly: one with many templates (every orientation, four
scales) fits noise better than one with a single template, so each family's best cosine is
judged against its *noise floor* (the mean squared best cosine iid Gaussian kernels reach,
`noise_floor`): the adjusted cosine sqrt((cos^2 - floor) / (1 - floor)) picks the family (on
planted 5x5 banks at SNR 3, 94.0 -> 95.7 % of kernels named with their family). The name is the
winning family's best match and `score` its plain cosine; the *margin* is its adjusted cosine
minus that of the next family (for a clean template, close to the plain difference).

Speed: nothing is searched over angles. One float32 product per block of kernels gives every fixed
template's cosine, every planar set's frame coordinates and every deriv2 set's harmonic model
(`_closed`); orientation is read in closed form and only the templates next to it are evaluated.
Against the exact search (`_family_scores`, kept as the tests' and bench's reference) a name can
differ where two templates are within ~1e-3 of each other (near the deriv2 pole, where many
orientations fit about as well): on 50,000 planted 3x3 / 7x7 kernels 98.7 / 99.98 % get the same
family, polarity and orientation (within 3 deg), and the validation figures move by < 0.5 points.
Cluster means are few and their names are read closely (the demo's figure, a paper's table), so
`name_clusters` uses the exact search (`match(..., exact=True)`).
Naming 50k planted kernels on 2 cores: 18-21x faster (wall) than the search of commit 766a534, 4-7x
one float32 product with argmax (bench/bench_naming.py, bench/RESULTS.md).

Ambiguity is said, not hidden: a cluster whose margin is below `AMBIGUOUS_MARGIN` (0.05) is
named `a|b` (its best label, then the runner-up family's best label), in every place a cluster
name appears (labels, clusters, report, figures, gallery). Below the name threshold the name is
`unmatched`, never forced.
"""
from __future__ import annotations

import contextlib
import weakref
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from kernel_catalog.analysis.naming._closed import ClosedPlan, scores as closed_scores
from kernel_catalog.analysis.naming._steered import BLOCK, SteeredFamily, best_steered
from kernel_catalog.analysis.naming.templates import ORIENTATION_BUCKET, UNMATCHED, TemplateBank, label_of
from kernel_catalog.analysis.params import DEFAULT_NAME_THRESHOLD, available_cores

AMBIGUOUS_MARGIN = 0.05


@dataclass(frozen=True)
class Matches:
    """Per row: the best family's match, its label, and how clearly it wins."""

    family: np.ndarray        # (N,) object
    polarity: np.ndarray      # (N,) object, 'pos' / 'neg' / None
    orientation: np.ndarray   # (N,) float64, NaN for isotropic shapes
    scale: np.ndarray         # (N,) float64, NaN where the family has none
    template: np.ndarray      # (N,) object, "family/variant"
    score: np.ndarray         # (N,) float32 cosine
    margin: np.ndarray        # (N,) float32: best family's adjusted cosine minus the next family's (NaN: one family)
    runner_up: np.ndarray     # (N,) object: the next family's best label (None: one family)
    label: np.ndarray         # (N,) object: `label_of(family, polarity, orientation)`, the winning template's

    def names(self, threshold: float = DEFAULT_NAME_THRESHOLD, ambiguous: float | None = None) -> np.ndarray:
        """Readable names: 'unmatched' below `threshold`; 'a|b' where the margin is below `ambiguous`."""
        out = self.label.copy()
        if ambiguous is not None:
            close = np.nan_to_num(self.margin, nan=np.inf) < ambiguous
            out[close] = [f"{a}|{b}" for a, b in zip(out[close], self.runner_up[close])]
        out[self.score < threshold] = UNMATCHED
        return out

    def take(self, rows) -> "Matches":
        return Matches(*(getattr(self, f)[rows] for f in self.__dataclass_fields__))


def match(kernels: np.ndarray, bank: TemplateBank, chunk: int = 16384, exact: bool = False) -> Matches:
    """Best match per row of `kernels` (N, kh*kw); rows are centred and normalised here.
    All-zero rows get score 0. `exact`: the full search over every template (float64), for a
    few rows whose names are read closely, such as cluster means; the closed form otherwise."""
    k = np.asarray(kernels)
    if k.ndim != 2 or k.shape[1] != bank.kh * bank.kw:
        raise ValueError(f"kernels of shape {k.shape} do not fit {bank.kh}x{bank.kw} templates")
    plan = _plan(bank)
    floor = noise_floor(bank)
    with _one_blas_thread():
        parts = [_match_chunk(k[lo:lo + chunk], plan, floor, exact) for lo in range(0, len(k), chunk)] or \
            [_match_chunk(k, plan, floor, exact)]
    return Matches(*(np.concatenate([getattr(p, f) for p in parts]) for f in Matches.__dataclass_fields__))


def _one_blas_thread():
    """BLAS on one thread: blocks run on naming's own threads, and each product is small (BLAS
    threads that spin after it cost CPU time and, on a busy machine, wall time)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:   # pragma: no cover - threadpoolctl comes with scikit-learn
        return contextlib.nullcontext()
    return threadpool_limits(1, user_api="blas")


NOISE_SAMPLE = 2000     # iid Gaussian kernels that measure each family's noise floor (fixed seed)


def noise_floor(bank: TemplateBank) -> np.ndarray:
    """Per family (in `bank.family_names()` order): the mean squared best cosine that iid Gaussian
    noise reaches with the family's templates. A family with many templates (every orientation,
    four scales, nine sub-pixel shifts) fits noise better than the impulse at its nine shifts (at
    5x5: deriv2 4.6 / 24, impulse 1.8 / 24); without this correction a noisy impulse is named a
    thin deriv2 bar."""
    plan = _plan(bank)
    if plan.floor is None:
        noise = np.random.default_rng(20241).standard_normal((NOISE_SAMPLE, bank.kh * bank.kw))
        scores = _fast_scores(noise, plan)[0]
        plan.floor = (np.clip(scores, 0.0, None) ** 2).mean(axis=0)
    return plan.floor.copy()


class _Plan:
    """Per bank: fixed-row bookkeeping, steered subsets, and the tables of every template's name."""

    def __init__(self, bank: TemplateBank):
        self.fixed_names = [f"{f}/{v}" for f, v in zip(bank.families, bank.variants)]
        self.fixed_families = bank.families
        self.steered = bank.steered       # (not the bank: the cache must not keep it alive)
        self.fams = bank.family_names()
        k = bank.kh * bank.kw
        nfix = len(bank.families)
        fam_arr = np.asarray(bank.families, dtype=object)
        self.fixed_cols = {f: np.flatnonzero(fam_arr == f) for f in dict.fromkeys(bank.families)}
        # name tables over all templates: fixed rows first, then each steered set's angles
        pol = list(bank.polarities)
        ori = [np.nan] * nfix
        scl = [np.nan if s is None else s for s in bank.scales]
        self.offsets = []
        off = nfix
        for s in bank.steered:
            self.offsets.append(off)
            off += len(s.angles)
            pol.extend(s.polarity)
            ori.extend(s.angles.tolist())
            scl.extend([s.sigma] * len(s.angles))
        self.polarity = np.array(pol + [None], dtype=object)[:-1]
        self.orientation = np.array(ori, np.float64)
        self.scale = np.array(scl, np.float64)
        # steered: per family, the sets (in bank order), their frames side by side in one matrix
        by_family: dict[str, list[int]] = {}
        for i, s in enumerate(bank.steered):
            by_family.setdefault(s.family, []).append(i)
        self.steered_fams = {f: SteeredFamily(bank, sets, self.offsets) for f, sets in by_family.items()}
        frames = [fam.frame for fam in self.steered_fams.values()]
        self.frame = np.concatenate(frames, axis=1) if frames else np.zeros((k, 0))
        self.frame_at = np.cumsum([0] + [f.shape[1] for f in frames])
        fixed = [bank.matrix[cols].T.astype(np.float64) for cols in self.fixed_cols.values()]
        self.columns = np.concatenate(fixed + [self.frame], axis=1)   # (k, fixed rows by family, then frames)
        self.closed = ClosedPlan([(f, m, cols) for (f, cols), m in zip(self.fixed_cols.items(), fixed)],
                                 self.steered_fams)
        self.floor = None
        self._labels = self._names = None

    def label(self, codes: np.ndarray) -> np.ndarray:
        """Readable labels (`label_of`) of templates by code."""
        if self._labels is None:
            fixed = [label_of(f, p) for f, p in zip(self.fixed_families, self.polarity)]
            self._labels = np.array(fixed + [lab for s in self.steered for lab in _set_labels(s)] + [None],
                                    dtype=object)[:-1]
        return self._labels[codes]

    def template(self, codes: np.ndarray) -> np.ndarray:
        """'family/variant' strings by code."""
        if self._names is None:
            steered = [f"{s.family}/s{s.sigma:.2f}@{a:05.1f}" for s in self.steered for a in s.angles]
            self._names = np.array(self.fixed_names + steered + [None], dtype=object)[:-1]
        return self._names[codes]


def _set_labels(s) -> list[str]:
    """`label_of` of every template of a steered set, built once per distinct label."""
    seen: dict = {}
    out = []
    for p, a in zip(s.polarity, s.angles):
        key = (p, int(round(a / ORIENTATION_BUCKET)))
        if key not in seen:
            seen[key] = label_of(s.family, p, float(a))
        out.append(seen[key])
    return out


_PLANS: dict[int, tuple] = {}


def _plan(bank: TemplateBank) -> _Plan:
    hit = _PLANS.get(id(bank))
    if hit is not None and hit[0]() is bank:
        return hit[1]
    plan = _Plan(bank)
    for key in [key for key, (ref, _) in _PLANS.items() if ref() is None]:
        del _PLANS[key]
    _PLANS[id(bank)] = (weakref.ref(bank), plan)
    return plan


def _in_blocks(n: int, block) -> None:
    """block(lo) for every block of rows, on a thread pool when there are cores for it."""
    starts = range(0, n, BLOCK)
    workers = min(available_cores(), len(starts))
    if workers > 1:                         # blocks are independent rows: threads (numpy lets go of the GIL)
        with ThreadPoolExecutor(workers, thread_name_prefix="naming") as pool:
            list(pool.map(block, starts))
    else:
        for lo in starts:
            block(lo)


def _fast_scores(rows: np.ndarray, plan: _Plan) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row of `rows` (raw kernels: centred and normalised here, in float32, block by block) and
    family (in `plan.fams` order): the best cosine and the code of its template, by one float32
    product per block and orientation in closed form (`_closed`; what `match` uses); and whether
    the row is not constant."""
    n, nf = len(rows), len(plan.fams)
    scores, codes = np.full((nf, n), -np.inf), np.zeros((nf, n), np.int64)   # a family's row contiguous
    live = np.zeros(n, bool)
    at = {f: j for j, f in enumerate(plan.fams)}
    cols = plan.closed.columns

    def block(lo: int) -> None:
        r = rows[lo:lo + BLOCK]
        u = (r - r.mean(axis=1, keepdims=True)).astype(np.float32)      # centred in the input's precision
        norm = np.sqrt(np.einsum("ij,ij->i", u, u))
        u /= np.where(norm > 0, norm, 1.0)[:, None]
        blk = slice(lo, lo + len(u))
        live[blk] = norm > 0
        prod = u @ cols
        for part in plan.closed.parts:                                # a family's fixed rows come first
            sc, code = closed_scores(prod, part)
            s, c = scores[at[part[0]], blk], codes[at[part[0]], blk]
            better = sc > s
            s[better], c[better] = sc[better], code[better]

    _in_blocks(n, block)
    return scores.T, codes.T, live


def _family_scores(unit: np.ndarray, plan: _Plan):
    """Per row and family (in `plan.fams` order): the best cosine and the code of its template
    (an index into the plan's name tables); the full search's first best on ties. The exact
    reference of `_fast_scores` (tests, bench)."""
    n = len(unit)
    best = {f: (np.full(n, -np.inf), np.zeros(n, np.int64)) for f in plan.fams}
    fixed_at = np.cumsum([0] + [len(c) for c in plan.fixed_cols.values()])

    def block(lo: int) -> None:                                       # one product per block: every fixed
        u = unit[lo:lo + BLOCK]                                       # template and every steered frame
        blk, rows = slice(lo, lo + len(u)), np.arange(len(u))
        prod = u @ plan.columns
        for j, (f, cols) in enumerate(plan.fixed_cols.items()):
            i = prod[:, fixed_at[j]:fixed_at[j + 1]].argmax(axis=1)
            best[f][0][blk], best[f][1][blk] = prod[rows, fixed_at[j] + i], cols[i]
        z = prod[:, fixed_at[-1]:]
        for j, (f, fam) in enumerate(plan.steered_fams.items()):
            sc, code = best_steered(z[:, plan.frame_at[j]:plan.frame_at[j + 1]], fam)
            b = best[f]
            better = sc > b[0][blk]                                   # fixed rows first, as before
            b[0][blk] = np.where(better, sc, b[0][blk])
            b[1][blk] = np.where(better, code, b[1][blk])

    _in_blocks(n, block)
    scores = np.stack([best[f][0] for f in plan.fams], axis=1)       # (n, F)
    codes = np.stack([best[f][1] for f in plan.fams], axis=1)
    return scores, codes


def _exact_scores(rows: np.ndarray, plan: _Plan) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`_fast_scores`'s result by the full search, in float64."""
    u = rows.astype(np.float64)
    u = u - u.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(u, axis=1)
    scores, codes = _family_scores(u / np.where(norm > 0, norm, 1.0)[:, None], plan)
    return scores, codes, norm > 0


def _match_chunk(k: np.ndarray, plan: _Plan, floor: np.ndarray, exact: bool = False) -> Matches:
    n = len(k)
    fams = plan.fams
    scores, codes, live = (_exact_scores if exact else _fast_scores)(k, plan)
    # The family is the one that explains most of the kernel beyond its noise floor:
    # evidence = (cos^2 - floor) / (1 - floor); its square root is the "adjusted cosine".
    # A family that explains no more than noise counts 0 in the margin (so margins stay in [0, 1]).
    evidence = (np.clip(scores, 0.0, None) ** 2 - floor) / (1.0 - floor)
    rows = np.arange(n)
    top = evidence.argmax(axis=1)                                     # the first best, as a stable sort
    win = codes[rows, top]
    if len(fams) > 1:
        adjusted = np.sqrt(np.clip(evidence[rows, top], 0.0, None))
        evidence[rows, top] = -np.inf
        second = evidence.argmax(axis=1)
        margin = (adjusted - np.sqrt(np.clip(evidence[rows, second], 0.0, None))).astype(np.float32)
        runner = plan.label(codes[rows, second])
    else:
        margin, runner = np.full(n, np.nan, np.float32), np.full(n, None, object)
    score = np.where(live, scores[rows, top], 0.0).astype(np.float32)
    return Matches(np.asarray(fams, dtype=object)[top], plan.polarity[win], plan.orientation[win].copy(),
                   plan.scale[win].copy(), plan.template(win), score, margin, runner, plan.label(win))


@dataclass(frozen=True)
class ClusterNames:
    """Per cluster: the name given ('unmatched' below the threshold, 'a|b' when ambiguous) and its match."""

    names: list[str]
    matches: Matches
    threshold: float


def name_clusters(cluster_means: np.ndarray, bank: TemplateBank, threshold: float = DEFAULT_NAME_THRESHOLD,
                  ambiguous: float = AMBIGUOUS_MARGIN) -> ClusterNames:
    """Name each cluster by its mean kernel's best match (the full search: a few rows, each name
    read closely); never force a name."""
    m = match(cluster_means, bank, exact=True)
    return ClusterNames(list(m.names(threshold, ambiguous)), m, threshold)
