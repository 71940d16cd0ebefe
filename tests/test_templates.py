"""Template families and naming: structured names, steered orientation at any angle, impulses,
polarity, bands, ambiguity, the master-key file."""
from pathlib import Path

import numpy as np
import pytest

from kernel_catalog.analysis.naming import AMBIGUOUS_MARGIN, match, name_clusters
from kernel_catalog.analysis.naming.templates import (
    FAMILY_NAMES, UNMATCHED, label_of, load_template_file, make_templates, render,
)
from kernel_catalog.analysis.validation import angle_error
from kernel_catalog.errors import CatalogError

from .conftest import MASTER_KEYS



def _master_key_file() -> Path:
    """The eight master-key filters, committed as a fixture (CC BY 4.0; see tests/fixtures/README.md)."""
    return MASTER_KEYS


@pytest.mark.parametrize("kh,kw", [(3, 3), (5, 5), (7, 7), (9, 9), (11, 11), (3, 5), (1, 7), (11, 1)])
def test_banks_are_centred_unit_norm_for_every_size(kh, kw):
    bank = make_templates(kh, kw)
    assert bank.matrix.shape[1] == kh * kw and bank.matrix.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(bank.matrix, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(bank.matrix.mean(axis=1), 0.0, atol=1e-6)
    for s in bank.steered:
        np.testing.assert_allclose(s.basis.mean(axis=1), 0.0, atol=1e-9)
    families = set(bank.family_names())
    if kh > 1 and kw > 1:
        assert families >= set(FAMILY_NAMES) - ({"square"} if max(kh, kw) < 5 else set())
    else:
        assert families == {"dog", "impulse", "square", "deriv1", "deriv2"}    # no saddle or cross on a band


@pytest.mark.parametrize("kh", [5, 7, 9, 11])
def test_oriented_families_are_found_at_any_angle(kh):
    bank = make_templates(kh, kh)
    rng = np.random.default_rng(kh)
    cases = [("deriv1", None, 360), ("deriv2", "pos", 180), ("deriv2", "neg", 180), ("saddle", None, 180)]
    for family, polarity, period in cases:
        angles = rng.uniform(0, period, 12)
        rows = np.array([render(family, kh, kh, sigma=1.1, orientation=a, polarity=polarity) for a in angles])
        m = match(rows, bank)
        assert list(m.family) == [family] * 12 and list(m.polarity) == [polarity] * 12
        assert angle_error(m.orientation, angles, np.full(12, period)).max() <= 1.0   # 1-degree steps
        assert (m.score > 0.95).all()


def test_orientation_convention_and_labels():
    bank = make_templates(7, 7)
    right = render("deriv1", 7, 7, orientation=0).reshape(7, 7)
    assert right[3, 4] > 0 > right[3, 2]                       # positive lobe to the right
    up = render("deriv1", 7, 7, orientation=90).reshape(7, 7)
    assert up[2, 3] > 0 > up[4, 3]                             # y up: row 2 is above row 3
    bar = render("deriv2", 7, 7, orientation=0).reshape(7, 7)
    assert bar[0, 3] > 0 and bar[3, 3] > 0 > bar[3, 5]         # deriv2-000-pos: a vertical positive bar
    sad = render("saddle", 7, 7, orientation=45).reshape(7, 7)
    assert sad[2, 4] > 0 and sad[4, 2] > 0 > sad[2, 2]         # positive lobes along 45 degrees (G_xy)
    assert label_of("deriv2", "pos", 44.0) == "deriv2-045-pos"
    assert label_of("deriv1", None, 353.0) == "deriv1-000" and label_of("saddle", None, 175.0) == "saddle-000"
    assert label_of("dog", "neg", float("nan")) == "dog-neg" and label_of("master-key-3") == "master-key-3"
    m = match(np.array([render("deriv2", 7, 7, orientation=133, polarity="neg")]), bank)
    assert m.label[0] == "deriv2-135-neg" and m.template[0].startswith("deriv2/s")


@pytest.mark.parametrize("kh", [3, 5, 7])
def test_impulses_are_named_impulse_not_dog(kh):
    bank = make_templates(kh, kh)
    rows = np.array([render("impulse", kh, kh), render("impulse", kh, kh, polarity="neg")])
    m = match(rows, bank)
    assert list(m.label) == ["impulse-pos", "impulse-neg"] and (m.score > 0.999).all()
    assert (m.margin > 0.04).all()


def test_bands_name_along_their_axis():
    m = match(np.array([render("deriv1", 1, 7, orientation=180), render("deriv2", 1, 7, sigma=0.6, polarity="neg")]),
              make_templates(1, 7))
    assert list(m.label) == ["deriv1-180", "deriv2-000-neg"]
    m = match(np.array([render("deriv1", 7, 1, orientation=90)]), make_templates(7, 1))
    assert list(m.label) == ["deriv1-090"]


def test_match_ignores_scale_and_offset_and_same_input_same_names():
    bank = make_templates(5, 5)
    k = 3.0 * render("dog", 5, 5, sigma=1.0, polarity="neg") + 0.5
    m = match(k[None], bank)
    assert m.label[0] == "dog-neg" and m.score[0] > 0.99 and m.scale[0] == pytest.approx(1.0, abs=0.3)
    x = np.random.default_rng(0).normal(size=(50, 25))
    a, b = match(x, bank), match(x, bank)
    assert list(a.label) == list(b.label) and np.array_equal(a.orientation, b.orientation, equal_nan=True)


@pytest.mark.parametrize("exact", [False, True])
def test_labels_are_label_of_the_structured_match(exact):
    """Labels come from the winning template's table, one lookup a row: the same strings as
    `label_of(family, polarity, orientation)` of every row, through `take` too."""
    bank = make_templates(7, 7)
    rng = np.random.default_rng(3)
    shapes = [render(f, 7, 7, orientation=float(a), polarity=p) for f in ("deriv1", "deriv2", "saddle", "dog")
              for a in (0, 7, 52, 97, 170, 263, 351) for p in ("pos", "neg")]
    x = np.array(shapes) + 0.3 * rng.normal(size=(len(shapes), 49))
    m = match(np.vstack([x, rng.normal(size=(40, 49))]), bank, exact=exact)
    assert list(m.label) == [label_of(f, p, o) for f, p, o in zip(m.family, m.polarity, m.orientation)]
    assert list(m.take(np.arange(0, len(m.label), 3)).label) == list(m.label[::3])


def test_weak_matches_stay_unmatched_and_close_calls_say_both():
    bank = make_templates(7, 7)
    noise = np.random.default_rng(0).normal(size=(20, 49))
    on, deriv = render("dog", 7, 7, sigma=1.2), render("deriv1", 7, 7, sigma=1.2)
    on, deriv = on / np.linalg.norm(on - on.mean()), deriv / np.linalg.norm(deriv)
    names = name_clusters(np.concatenate([noise, [on, on + deriv]]), bank, threshold=0.6)
    assert all(n == UNMATCHED for n in names.names[:20]) and (names.matches.score[:20] < 0.6).all()
    assert names.names[20] == "dog-pos" and names.matches.margin[20] > AMBIGUOUS_MARGIN
    assert "|" in names.names[21] and names.matches.margin[21] < AMBIGUOUS_MARGIN   # between dog and deriv1
    assert set(names.names[21].split("|")) >= {"dog-pos"} and names.names[21].count("deriv1") == 1


def test_master_key_file_parses_into_eight_7x7_filters():
    t = load_template_file(_master_key_file(), 7, 7)
    assert len(t) == 8 and t.matrix.shape == (8, 49)
    assert t.families == tuple(f"master-key-{i}" for i in range(1, 9))
    np.testing.assert_allclose(np.linalg.norm(t.matrix, axis=1), 1.0, rtol=1e-5)
    assert list(match(t.matrix, t).label) == list(t.families)
    # Automatic names for the eight: 1-6 oriented derivatives, 7 a centre impulse (cos 0.99), 8 an
    # on-centre DoG (close to an impulse: named 'dog-pos|impulse-pos').
    named = name_clusters(t.matrix, make_templates(7, 7))
    assert named.names[6] == "impulse-pos" and named.names[7].split("|")[0] == "dog-pos"
    assert all(n.startswith("deriv") for n in named.names[:6])
    both = make_templates(7, 7) + t                                  # usable beside the families
    assert len(both) == len(make_templates(7, 7)) + 8
    with pytest.raises(CatalogError, match="expected 5x5"):
        load_template_file(_master_key_file(), 5, 5)


def test_bad_template_files(tmp_path):
    with pytest.raises(CatalogError, match="cannot read"):
        load_template_file(tmp_path / "none.txt")
    bad = tmp_path / "bad.txt"
    bad.write_text("Filter 1:\n1 2 x\n")
    with pytest.raises(CatalogError, match="not a row of numbers"):
        load_template_file(bad, 1, 3)
    named = tmp_path / "named.txt"
    named.write_text("Filter 1:\r\n1 0 -1\r\n\r\nMy Edge:\r\n0 1 0\r\n")
    t = load_template_file(named, 1, 3)
    assert t.families == ("master-key-1", "my-edge")


def _full_search(unit, bank):
    """The plain search the fast one must reproduce: every template, every degree."""
    best, where = np.full(len(unit), -np.inf), np.zeros(len(unit), np.int64)
    at = len(bank.families)
    for s in bank.steered:
        cos = (unit @ s.basis.T) @ s.coeffs.T / s.norms
        i = cos.argmax(axis=1)
        v = cos[np.arange(len(unit)), i]
        better = v > best
        best, where = np.where(better, v, best), np.where(better, at + i, where)
        at += len(s.angles)
    return best, where


@pytest.mark.parametrize("kh,kw", [(3, 3), (5, 5), (7, 7), (1, 7)])
@pytest.mark.parametrize("family", ["deriv1", "deriv2", "saddle"])
def test_bounded_steered_search_equals_the_full_search(kh, kw, family):
    """naming evaluates only the steered templates its bounds leave: same template as every degree."""
    from kernel_catalog.analysis.naming.matching import _family_scores, _plan
    from kernel_catalog.analysis.naming.templates import unit_rows
    bank = make_templates(kh, kw, families=(family,))
    if not bank.steered:
        pytest.skip(f"no {family} on {kh}x{kw}")
    rng = np.random.default_rng(kh * 10 + kw)
    clean = [render(f, kh, kw, sigma=s, orientation=a) for f in ("deriv1", "deriv2", "saddle", "dog", "impulse")
             for s in (0.7, 1.2) for a in (0.0, 37.0, 90.0)]
    x = np.concatenate([clean, np.array(clean) + 0.3 * rng.normal(size=(len(clean), kh * kw)),
                        rng.normal(size=(200, kh * kw))])
    unit = unit_rows(x)[0]
    score, code = (a[:, 0] for a in _family_scores(unit, _plan(bank)))
    best, where = _full_search(unit, bank)
    np.testing.assert_allclose(score, best, atol=1e-12)
    allv = np.concatenate([(unit @ s.basis.T) @ s.coeffs.T / s.norms for s in bank.steered], axis=1)
    tied = allv >= best[:, None] - 1e-12                     # a tie goes to the first template
    first = len(bank.families) + tied.argmax(axis=1)
    assert np.array_equal(code, first) and tied[np.arange(len(x)), where - len(bank.families)].all()
    assert (tied.sum(axis=1) == 1).sum() > 200
