"""The fast naming (issue 20, point 1) against a slow reference kept here: every template of the bank
at every degree, the first best per family on ties, the same noise-floor rule. `match` must give the
same names, templates, scores and margins on planted banks, symmetric clean kernels and edge cases.
No test depends on machine speed."""
import numpy as np
import pytest

from kernel_catalog.analysis.naming import make_templates, match
from kernel_catalog.analysis.naming import _steered as steered
from kernel_catalog.analysis.naming.matching import _family_scores, _plan
from kernel_catalog.analysis.naming.templates import label_of, render, unit_rows
from kernel_catalog.analysis.preprocess import preprocess
from kernel_catalog.analysis.validation.planted import planted_bank


def _every_template(bank) -> tuple[np.ndarray, list[str]]:
    """(T, k) every unit template (fixed rows, then each steered set at every angle) and its family."""
    rows = [bank.matrix.astype(np.float64)] + [(s.coeffs @ s.basis) / s.norms[:, None] for s in bank.steered]
    fams = list(bank.families) + [s.family for s in bank.steered for _ in s.angles]
    return np.concatenate(rows), fams


def _reference_scores(unit: np.ndarray, bank) -> tuple[np.ndarray, np.ndarray]:
    """Per row and family: the best cosine over all its templates and the first that reaches it (for
    steered templates, the first within 1e-12). Families are either fixed rows or steered sets here."""
    allt, fams = _every_template(bank)
    cos = unit @ allt.T
    names = bank.family_names()
    scores, codes = np.zeros((len(unit), len(names))), np.zeros((len(unit), len(names)), np.int64)
    for j, f in enumerate(names):
        cols = np.flatnonzero(np.array(fams, dtype=object) == f)
        c = cos[:, cols]
        if f in bank.families:       # fixed rows: the first exact maximum (argmax)
            first = c.argmax(axis=1)
        else:                        # steered: the first within 1e-12 (the full product's rounding aside)
            first = (c >= c.max(axis=1)[:, None] - 1e-12).argmax(axis=1)
        scores[:, j], codes[:, j] = c[np.arange(len(c)), first], cols[first]
    return scores, codes


def _reference_match(kernels: np.ndarray, bank):
    """(family, code, score, margin, runner-up code) as `match` defines them, by the full search."""
    unit = unit_rows(np.asarray(kernels, np.float64))[0]
    noise = np.random.default_rng(20241).standard_normal((2000, bank.kh * bank.kw))
    floor = (np.clip(_reference_scores(unit_rows(noise)[0], bank)[0], 0, None) ** 2).mean(axis=0)
    scores, codes = _reference_scores(unit, bank)
    evidence = (np.clip(scores, 0, None) ** 2 - floor) / (1 - floor)
    adjusted = np.sqrt(np.clip(evidence, 0, None))
    order = np.argsort(-evidence, axis=1, kind="stable")
    rows = np.arange(len(unit))
    top, second = order[:, 0], order[:, 1]
    names = np.array(bank.family_names(), dtype=object)
    return (names[top], codes[rows, top], scores[rows, top], adjusted[rows, top] - adjusted[rows, second],
            codes[rows, second])


def _assert_same(kernels: np.ndarray, bank) -> None:
    m = match(kernels, bank)
    family, code, score, margin, runner = _reference_match(kernels, bank)
    plan = _plan(bank)
    live = np.linalg.norm(kernels - kernels.mean(axis=1, keepdims=True), axis=1) > 0
    assert list(m.family) == list(family)
    assert list(m.template) == list(plan.template(code))
    np.testing.assert_allclose(m.orientation, plan.orientation[code], equal_nan=True)
    np.testing.assert_allclose(m.score[live], score[live], atol=1e-6)
    np.testing.assert_allclose(m.margin, margin, atol=1e-6)
    fams = _every_template(bank)[1]
    assert list(m.runner_up) == [label_of(fams[c], plan.polarity[c], plan.orientation[c]) for c in runner]


@pytest.mark.parametrize("kh,kw", [(3, 3), (5, 5), (7, 7), (1, 7)])
@pytest.mark.parametrize("snr", [1.0, 3.0])
def test_match_equals_the_full_search_on_planted_banks(kh, kw, snr):
    planted = planted_bank(25, kh, kw, snr=snr, seed=int(snr) + kh)
    _assert_same(preprocess(planted.kernels)[0].astype(np.float64), make_templates(kh, kw))


@pytest.mark.parametrize("kh", [3, 5, 7])
def test_match_equals_the_full_search_on_clean_symmetric_kernels(kh):
    """Clean, centred shapes are symmetric: many templates tie exactly, and the first must win."""
    shapes = [render(f, kh, kh, sigma=s, orientation=a, polarity=p)
              for f in ("dog", "deriv1", "deriv2", "saddle", "impulse", "square", "cross")
              for s in (0.6, 1.0) for a in (0.0, 45.0, 90.0, 30.0) for p in ("pos", "neg")]
    x = np.array(shapes)
    x = x[np.linalg.norm(x - x.mean(axis=1, keepdims=True), axis=1) > 1e-9]
    _assert_same(x, make_templates(kh, kh))


def test_edge_cases_zero_rows_constant_rows_and_block_edges(monkeypatch):
    """All-zero and constant rows (every cosine 0: the first template of every family), and a batch
    that does not fill the last block."""
    monkeypatch.setattr(steered, "BLOCK", 64)
    monkeypatch.setattr("kernel_catalog.analysis.naming.matching.BLOCK", 64)
    bank = make_templates(5, 5)
    rng = np.random.default_rng(3)
    x = np.concatenate([np.zeros((2, 25)), np.full((1, 25), 2.0), rng.normal(size=(150, 25))])
    _assert_same(x, bank)
    assert (match(x, bank).score[:3] == 0).all()
    assert len(match(np.zeros((0, 25)), bank).family) == 0


@pytest.mark.parametrize("family", ["deriv1", "deriv2", "saddle"])
def test_steered_search_never_misses_the_best_template(family):
    """The per-family scores of the steered search equal the full search's on noisy kernels near every
    family (the bounds and windows are exact, not heuristics)."""
    bank = make_templates(7, 7, families=(family,))
    rng = np.random.default_rng(7)
    clean = np.array([render(f, 7, 7, sigma=s, orientation=a, offset=(dy, dx))
                      for f in ("deriv1", "deriv2", "saddle", "dog") for s in (0.7, 1.5)
                      for a in rng.uniform(0, 360, 4) for dy, dx in ((0.0, 0.0), (0.3, -0.2))])
    unit = unit_rows(np.concatenate([clean + 0.05 * rng.normal(size=clean.shape), rng.normal(size=(300, 49))]))[0]
    score, code = _family_scores(unit, _plan(bank))
    ref_score, ref_code = _reference_scores(unit, bank)
    np.testing.assert_allclose(score, ref_score, atol=1e-12)
    assert np.array_equal(code, ref_code)
