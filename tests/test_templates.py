"""Template families: shapes, unit norm, sign-aware matching, naming, the master-key file."""
import os
from pathlib import Path

import numpy as np
import pytest

from kernel_catalog.errors import CatalogError
from kernel_catalog.analysis.templates import (
    FAMILIES, UNMATCHED, load_template_file, make_templates, match, name_clusters, opposite_family,
)

ROOT = Path(__file__).resolve().parents[1]


def _master_key_file() -> Path:
    env = os.environ.get("KERNEL_CATALOG_SHARED_DATA")
    for base in ([Path(env)] if env else []) + [ROOT.parent / "shared" / "data", ROOT / "shared" / "data"]:
        p = base / "master_key_filters_8x7x7.txt"
        if p.is_file():
            return p
    pytest.skip("shared/data/master_key_filters_8x7x7.txt not found (set KERNEL_CATALOG_SHARED_DATA)")


@pytest.mark.parametrize("kh,kw", [(3, 3), (5, 5), (7, 7), (1, 7), (11, 1)])
def test_templates_are_centred_unit_norm_and_shaped(kh, kw):
    t = make_templates(kh, kw)
    assert t.matrix.shape == (len(t), kh * kw) and t.matrix.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(t.matrix, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(t.matrix.mean(axis=1), 0.0, atol=1e-6)
    gram = t.matrix @ t.matrix.T
    assert (gram[~np.eye(len(t), dtype=bool)] < 0.9999).all()       # no duplicates
    if kh > 1 and kw > 1:
        assert set(t.families) == set(FAMILIES)
    else:
        assert {"dog-on", "dog-off", "square-on", "square-off"} <= set(t.families)
        assert not any(f.startswith(("cross", "deriv2-xy")) for f in t.families)


def test_band_derivatives_keep_axis_aligned_names():
    assert {f for f in make_templates(1, 7).families if f.startswith("deriv1")} == {"deriv1-000", "deriv1-180"}
    assert {f for f in make_templates(11, 1).families if f.startswith("deriv1")} == {"deriv1-090", "deriv1-270"}


def test_each_template_matches_itself_and_its_negation_is_the_opposite_family():
    t = make_templates(7, 7)
    fam, var, score = match(t.matrix, t)
    np.testing.assert_allclose(score, 1.0, atol=1e-5)
    assert list(fam) == list(t.families) and list(var) == list(t.variants)
    neg_fam, _, neg_score = match(-t.matrix, t)
    np.testing.assert_allclose(neg_score, 1.0, atol=1e-5)
    assert list(neg_fam) == [opposite_family(f) for f in t.families]
    i = t.families.index("dog-on")
    assert match(-t.matrix[i:i + 1], t)[0][0] == "dog-off"


def test_opposite_family_pairs():
    assert opposite_family("deriv1-045") == "deriv1-225"
    assert opposite_family("deriv2-xy-pos") == "deriv2-xy-neg"
    for f in FAMILIES:
        assert opposite_family(opposite_family(f)) == f and opposite_family(f) != f


def test_orientation_convention():
    t = make_templates(7, 7)
    right = t.matrix[t.families.index("deriv1-000")].reshape(7, 7)
    up = t.matrix[t.families.index("deriv1-090")].reshape(7, 7)
    assert right[3, 4] > 0 > right[3, 2]            # positive lobe to the right
    assert up[2, 3] > 0 > up[4, 3]                  # positive lobe up (row 2 is above row 3)
    on = t.matrix[t.families.index("dog-on")].reshape(7, 7)
    assert on[3, 3] > 0 > on[0, 0] or on[3, 3] > 0 > on[3, 0]


def test_match_ignores_scale_and_offset():
    t = make_templates(5, 5)
    k = 3.0 * t.matrix[10] + 0.5
    fam, var, score = match(k[None], t)
    assert fam[0] == t.families[10] and score[0] == pytest.approx(1.0, abs=1e-5)


def test_weak_matches_stay_unmatched():
    t = make_templates(7, 7)
    noise = np.random.default_rng(0).normal(size=(20, 49)).astype(np.float32)
    means = np.concatenate([noise, t.matrix[:2]])
    names = name_clusters(means, t, threshold=0.6)
    assert names.names[-2:] == list(t.families[:2])
    assert all(n == UNMATCHED for n in names.names[:-2])
    assert all(f != UNMATCHED for f in names.best_family)          # the raw best is kept
    assert (names.scores[:-2] < 0.6).all()


def test_master_key_file_parses_into_eight_7x7_filters():
    t = load_template_file(_master_key_file(), 7, 7)
    assert len(t) == 8 and t.matrix.shape == (8, 49)
    assert t.families == tuple(f"master-key-{i}" for i in range(1, 9))
    np.testing.assert_allclose(np.linalg.norm(t.matrix, axis=1), 1.0, rtol=1e-5)
    fam, _, score = match(t.matrix, t)
    assert list(fam) == list(t.families)
    # Automatic names for the eight (scores 0.7-0.99): 1-6 oriented first derivatives, 7-8 DoG.
    named = name_clusters(t.matrix, make_templates(7, 7))
    assert named.names[6:] == ["dog-on", "dog-on"] and (named.scores[6:] > 0.95).all()
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


def test_family_margin_is_large_for_a_template_and_zero_between_two():
    from kernel_catalog.analysis.templates import family_margin, make_templates

    bank = make_templates(7, 7)
    on = bank.matrix[bank.families.index("dog-on")]
    deriv = bank.matrix[bank.families.index("deriv1-000")]
    margins = family_margin(np.stack([on, (on + deriv) / 2, -on]), bank)
    assert margins[0] > 0.1 and margins[2] > 0.1
    assert margins[1] < margins[0]
