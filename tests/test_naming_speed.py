"""The fast naming (issue 20, point 1) against a slow reference kept here: every template of the bank
at every degree, the first best per family on ties, the same noise-floor rule. `match` finds
orientation in closed form (a float32 product, no search), so it must agree with the reference on
nearly every row (family, polarity, orientation within 3 deg, score within 0.02, never above it),
exactly where the structure guarantees it (fixed rows; planes within the angle step). The exact
steered search is kept and checked too. No test depends on machine speed."""
import numpy as np
import pytest

from kernel_catalog.analysis.naming import make_templates, match
from kernel_catalog.analysis.naming.matching import _family_scores, _fast_scores, _plan
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


_FLOORS: dict = {}     # the reference noise floor per bank (the same 2,000 noise kernels)


def _reference_match(kernels: np.ndarray, bank):
    """(family, code, score, margin, runner-up code) as `match` defines them, by the full search."""
    unit = unit_rows(np.asarray(kernels, np.float64))[0]
    key = (bank.kh, bank.kw, len(bank), tuple(bank.family_names()))
    if key not in _FLOORS:
        noise = np.random.default_rng(20241).standard_normal((2000, bank.kh * bank.kw))
        _FLOORS[key] = (np.clip(_reference_scores(unit_rows(noise)[0], bank)[0], 0, None) ** 2).mean(axis=0)
    floor = _FLOORS[key]
    scores, codes = _reference_scores(unit, bank)
    evidence = (np.clip(scores, 0, None) ** 2 - floor) / (1 - floor)
    adjusted = np.sqrt(np.clip(evidence, 0, None))
    order = np.argsort(-evidence, axis=1, kind="stable")
    rows = np.arange(len(unit))
    top, second = order[:, 0], order[:, 1]
    names = np.array(bank.family_names(), dtype=object)
    return (names[top], codes[rows, top], scores[rows, top], adjusted[rows, top] - adjusted[rows, second],
            codes[rows, second])


def _assert_close(kernels: np.ndarray, bank, agree: float = 0.99, margin: float = 0.02) -> None:
    """`match` against the full search: the same family, polarity and orientation (within 3 deg) on at
    least `agree` of the rows, a score never above the full search's (every value is a real
    template's cosine) and within 0.02 of it on `agree` of the rows, margins within 0.02 where the
    family agrees."""
    m = match(kernels, bank)
    family, code, score, ref_margin, runner = _reference_match(kernels, bank)
    plan = _plan(bank)
    live = np.linalg.norm(kernels - kernels.mean(axis=1, keepdims=True), axis=1) > 0
    same = m.family == family
    assert same.mean() >= agree
    assert (m.polarity[same] == plan.polarity[code][same]).mean() >= agree
    ori = plan.orientation[code]
    d = np.abs(np.nan_to_num(m.orientation) - np.nan_to_num(ori))
    period = np.array([{"deriv1": 360.0}.get(f, 180.0) for f in family])
    d = np.minimum(d % period, period - d % period)
    assert (np.isnan(m.orientation) == np.isnan(ori))[same].all()
    assert (d[same] <= 3.0).mean() >= agree - 0.01          # deriv2 near its pole: a tie of many angles
    assert (m.score[live] <= score[live] + 1e-5).all()
    assert (np.abs(m.score[live] - score[live]) <= 0.02).mean() >= agree
    assert (np.abs(m.margin - ref_margin)[same] <= margin).mean() >= agree
    assert (m.score[~live] == 0).all()


@pytest.mark.parametrize("kh,kw", [(3, 3), (5, 5), (7, 7), (1, 7)])
@pytest.mark.parametrize("snr", [1.0, 3.0])
def test_match_agrees_with_the_full_search_on_planted_banks(kh, kw, snr):
    planted = planted_bank(40, kh, kw, snr=snr, seed=int(snr) + kh)
    _assert_close(preprocess(planted.kernels)[0].astype(np.float64), make_templates(kh, kw))


@pytest.mark.parametrize("kh", [3, 5, 7])
def test_match_agrees_with_the_full_search_on_clean_kernels(kh):
    """Clean, centred shapes: named as the full search names them (symmetric ones tie: any of the
    tied templates will do, so orientation and score are checked, not the template)."""
    shapes = [render(f, kh, kh, sigma=s, orientation=a, polarity=p)
              for f in ("dog", "deriv1", "deriv2", "saddle", "impulse", "square", "cross")
              for s in (0.6, 1.0) for a in (0.0, 45.0, 90.0, 30.0) for p in ("pos", "neg")]
    x = np.array(shapes)
    x = x[np.linalg.norm(x - x.mean(axis=1, keepdims=True), axis=1) > 1e-9]
    _assert_close(x, make_templates(kh, kh), agree=0.97, margin=0.05)


def test_edge_cases_zero_rows_constant_rows_and_block_edges(monkeypatch):
    """All-zero and constant rows (score 0), and a batch that does not fill the last block: the
    same names whatever the block size."""
    bank = make_templates(5, 5)
    rng = np.random.default_rng(3)
    x = np.concatenate([np.zeros((2, 25)), np.full((1, 25), 2.0), rng.normal(size=(150, 25))])
    whole = match(x, bank)
    monkeypatch.setattr("kernel_catalog.analysis.naming.matching.BLOCK", 64)
    blocks = match(x, bank)
    assert list(blocks.template) == list(whole.template)
    np.testing.assert_allclose(blocks.score, whole.score, atol=1e-6)
    _assert_close(x, bank, agree=0.97)
    assert (whole.score[:3] == 0).all()
    assert len(match(np.zeros((0, 25)), bank).family) == 0


def _near_every_family(kh: int, kw: int, rng) -> np.ndarray:
    clean = np.array([render(f, kh, kw, sigma=s, orientation=a, offset=(dy, dx))
                      for f in ("deriv1", "deriv2", "saddle", "dog") for s in (0.7, 1.5)
                      for a in rng.uniform(0, 360, 4) for dy, dx in ((0.0, 0.0), (0.3, -0.2))])
    return np.concatenate([clean + 0.05 * rng.normal(size=clean.shape), rng.normal(size=(300, kh * kw))])


@pytest.mark.parametrize("kh", [3, 7])
def test_fast_scores_per_family_against_the_full_search(kh):
    """Per family: fixed rows exact (to float32), a plane (deriv1, saddle) within the angle step's
    cosine of the best, a deriv2 curve never above it and within 0.01 on most rows; orientations of
    the planar families within one step."""
    bank = make_templates(kh, kh)
    rng = np.random.default_rng(7 + kh)
    x = _near_every_family(kh, kh, rng)
    score, code, live = _fast_scores(x, _plan(bank))
    ref, ref_code = _reference_scores(unit_rows(x)[0], bank)
    plan = _plan(bank)
    assert live.all()
    assert (score <= ref + 1e-5).all()
    for j, f in enumerate(bank.family_names()):
        gap = ref[:, j] - score[:, j]
        if f in bank.families:
            assert gap.max() <= 1e-5
        elif f in ("deriv1", "saddle"):
            assert gap.max() <= 1e-3
            d = np.abs(plan.orientation[code[:, j]] - plan.orientation[ref_code[:, j]]) % 180
            assert (np.minimum(d, 180 - d) <= 1.0 + 1e-9).mean() >= 0.99
        else:
            assert (gap <= 0.01).mean() >= 0.9 and gap.max() <= 0.1


@pytest.mark.parametrize("family", ["deriv1", "deriv2", "saddle"])
def test_exact_steered_search_never_misses_the_best_template(family):
    """The exact search (`_family_scores`, the reference the fast path is measured against, and
    naming's fallback for curves without antipodal runs) equals the full search."""
    bank = make_templates(7, 7, families=(family,))
    rng = np.random.default_rng(7)
    unit = unit_rows(_near_every_family(7, 7, rng))[0]
    score, code = _family_scores(unit, _plan(bank))
    ref_score, ref_code = _reference_scores(unit, bank)
    np.testing.assert_allclose(score, ref_score, atol=1e-12)
    assert np.array_equal(code, ref_code)


def test_curves_without_antipodal_runs_fall_back_to_the_exact_search(monkeypatch):
    """A curve whose runs are not each other's negative is searched exactly (same scores)."""
    monkeypatch.setattr("kernel_catalog.analysis.naming._closed._antipodal_models", lambda fam: None)
    bank = make_templates(5, 5, families=("deriv2",))
    x = _near_every_family(5, 5, np.random.default_rng(11))
    plan = _plan(bank)
    assert [p[1] for p in plan.closed.parts] == ["exact"]
    score, code, _ = _fast_scores(x, plan)
    ref, ref_code = _reference_scores(unit_rows(x)[0], bank)
    np.testing.assert_allclose(score, ref, atol=1e-5)
    assert (code == ref_code).mean() >= 0.99


@pytest.mark.parametrize("kh,snr,per_class", [(3, 2.0, 40), (7, 1.0, 100)])
def test_cluster_names_come_from_the_full_search(kh, snr, per_class):
    """A cluster's name is read closely and there are few of them: `name_clusters` (and
    `match(..., exact=True)`) give the full search's template and score on every row, also where
    the closed form settles for a nearby deriv2 orientation (the rows picked here)."""
    from kernel_catalog.analysis.naming import name_clusters

    bank = make_templates(kh, kh)
    planted = preprocess(planted_bank(per_class, kh, kh, snr=snr, seed=kh).kernels)[0].astype(np.float64)
    family, code, score, _, _ = _reference_match(planted, bank)
    fast = match(planted, bank)
    differ = np.flatnonzero(np.abs(fast.score - score) > 1e-4)
    assert len(differ) > 0                                   # the rows where the fast path gives something up
    rows = planted[np.concatenate([differ[:20], np.arange(10)])]
    family, code, score, _, _ = _reference_match(rows, bank)
    for m in (match(rows, bank, exact=True), name_clusters(rows, bank).matches):
        assert list(m.family) == list(family)
        assert list(m.template) == list(_plan(bank).template(code))
        np.testing.assert_allclose(m.score, score, atol=1e-6)
