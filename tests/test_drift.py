"""`catalog drift`: zero against itself, grows with a planted shift, an independent computation,
every pair with a heatmap, one-line errors; and the layer-profile figure."""
from __future__ import annotations

import json

import numpy as np
import pytest

from kernel_catalog import open as open_catalog
from kernel_catalog.adapters.base import DepthwiseLayer, Extraction
from kernel_catalog.analysis.search import drift
from kernel_catalog.errors import CatalogError
from kernel_catalog.ingest import commit_extraction

from .conftest import assert_one_line_error, run_cli_in_process as cli, snapshot


def reference_drift(a: np.ndarray, b: np.ndarray, k: int, bins: int) -> float:
    """The module docstring's recipe, written independently (SVD for the PCA, explicit loops)."""
    union = np.vstack([a, b])
    mean = union.mean(axis=0)
    _, s, vt = np.linalg.svd(union - mean, full_matrices=False)
    ratio = s ** 2 / np.sum(s ** 2)
    total = 0.0
    for c in range(k):
        pa_, pb_ = (a - mean) @ vt[c], (b - mean) @ vt[c]
        both = np.concatenate([pa_, pb_])
        lo, hi = np.quantile(both, 0.001), np.quantile(both, 0.999)
        width = (hi - lo) / bins
        hist = []
        for values in (pa_, pb_):
            counts = np.zeros(bins)
            for v in np.clip(values, lo, hi):
                counts[min(int((v - lo) / width), bins - 1)] += 1
            hist.append((counts + 0.5) / (len(values) + 0.5 * bins))
        p, q = hist
        total += ratio[c] * (np.sum(p * np.log(p / q)) + np.sum(q * np.log(q / p)))
    return float(total)


def test_drift_matches_an_independent_computation():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(400, 9)) * np.linspace(2, 0.5, 9)
    b = rng.normal(size=(300, 9)) + 0.4
    assert drift(a, b, components=4, bins=16).total == pytest.approx(reference_drift(a, b, 4, 16), rel=1e-6)


def test_self_drift_is_zero_and_a_planted_shift_grows_it():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(3000, 25)) * np.linspace(3, 0.2, 25)
    assert drift(a, a).total == 0.0
    direction = rng.normal(size=25)
    direction /= np.linalg.norm(direction)
    base = rng.normal(size=(3000, 25)) * np.linspace(3, 0.2, 25)
    shifted = [drift(a, base + s * direction).total for s in (0.0, 1.0, 2.0, 4.0)]
    assert shifted == sorted(shifted) and shifted[-1] > 10 * shifted[0]


@pytest.fixture
def cat(catalog):
    rng = np.random.default_rng(2)
    for i, model in enumerate(["m0", "m1", "m2"]):
        shift = 0.5 * i
        layers = [DepthwiseLayer(f"l{j}", (rng.normal(size=(120, 5, 5)) + shift * j).astype(np.float32))
                  for j in range(3)]
        layers.append(DepthwiseLayer("l3x3", rng.normal(size=(30, 3, 3)).astype(np.float32)))
        commit_extraction(catalog, Extraction(model, model, True, layers), "arrays", "1.0")
    return open_catalog(catalog.root)


def test_drift_through_the_catalog(cat):
    same = cat.drift(a="model = 'm1' AND kh = 5", b="model = 'm1' AND kh = 5").to_pylist()
    assert [r["component"] for r in same] == [f"pc{i}" for i in range(1, 7)] + ["total"]
    assert all(r["drift"] == 0.0 for r in same) and same[0]["n_a"] == 360
    near = cat.drift(a="model = 'm0' AND kh = 5", b="model = 'm1' AND kh = 5").to_pylist()[-1]["drift"]
    as_query = cat.drift(a="SELECT * FROM kernels WHERE model = 'm0' AND kh = 5",
                         b="select kh, kw, weights from kernels where model = 'm1' and kh = 5").to_pylist()
    assert as_query[-1]["drift"] == pytest.approx(near)        # a whole query selects the same
    far = cat.drift(a="model = 'm0' AND kh = 5", b="model = 'm2' AND kh = 5").to_pylist()[-1]["drift"]
    assert 0 < near < far
    pairs = cat.drift(by="model", where="kh = 5").to_pylist()
    assert [(r["a"], r["b"]) for r in pairs] == [("m0", "m1"), ("m0", "m2"), ("m1", "m2")]
    assert pairs[0]["drift"] == pytest.approx(near) and pairs[1]["drift"] == pytest.approx(far)
    assert all(0 < r["noise_a"] < r["drift"] for r in pairs[1:])    # m2 stands out of the noise
    layers = cat.drift(by="layer", where="model = 'm2' AND kh = 5").to_pylist()
    assert [(r["a"], r["b"]) for r in layers] == [("m2/l0", "m2/l1"), ("m2/l0", "m2/l2"), ("m2/l1", "m2/l2")]
    assert layers[1]["drift"] > layers[0]["drift"]                  # l2 is shifted twice as far as l1
    from kernel_catalog.report.filterdb_figures import drift_matrix

    names, matrix = drift_matrix(pairs)
    assert names == ["m0", "m1", "m2"] and (matrix == matrix.T).all()
    assert matrix[0, 0] == pairs[0]["noise_a"] and matrix[0, 2] == pairs[1]["drift"]


def test_a_large_selection_is_compared_on_a_seeded_sample(cat, monkeypatch):
    """Above SAMPLE_ROWS a selection is a seeded sample of that many kernels: bounded memory,
    the same numbers every time, close to the drift of every kernel."""
    from kernel_catalog.analysis.search import _drift as drift_module

    whole = cat.drift(a="model = 'm0' AND kh = 5", b="model = 'm2' AND kh = 5").to_pylist()[-1]
    monkeypatch.setattr(drift_module, "SAMPLE_ROWS", 300)
    sampled = [cat.drift(a="model = 'm0' AND kh = 5", b="model = 'm2' AND kh = 5").to_pylist()[-1] for _ in range(2)]
    assert whole["n_a"] == 360 and sampled[0]["n_a"] == sampled[0]["n_b"] == 300
    assert sampled[0]["drift"] == pytest.approx(sampled[1]["drift"])
    assert sampled[0]["drift"] == pytest.approx(whole["drift"], rel=0.5)


def test_split_half_noise_shrinks_with_size():
    from kernel_catalog.analysis.search import split_half

    rng = np.random.default_rng(3)
    small, large = (split_half(rng.normal(size=(n, 9))) for n in (64, 4096))
    assert large < small and split_half(rng.normal(size=(3, 9))) is None


def test_cli_by_model_with_heatmap_and_errors(cat, tmp_path):
    root = str(cat.root)
    out = cli("--catalog", root, "drift", "--by", "model", "--where", "kh = 5", "--components", "3",
                  "--figure", str(tmp_path / "heat.png"), "--format", "json", check=True)
    assert len(json.loads(out.stdout)) == 3
    assert (tmp_path / "heat.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    csv = cli("--catalog", root, "drift", "--a", "model = 'm0' AND kh = 3", "--b", "model = 'm2' AND kh = 3",
                  "--format", "csv", check=True)
    assert csv.stdout.splitlines()[0].startswith("component,explained_variance,kl_ab,kl_ba,symmetric_kl,drift")
    before = snapshot(cat.store)
    for args, fragment in [
        (["--a", "model = 'm0'", "--b", "model = 'm1'"], "several sizes"),
        (["--a", "kh = 5", "--b", "kh = 3"], "one size"),
        (["--a", "model = 'nope'", "--b", "kh = 3"], "selects no kernel"),
        (["--a", "no_column", "--b", "kh = 3"], "--a"),
        (["--a", "kh = 3"], "a and b (--a, --b)"),
        (["--by", "model", "--where", "model = 'm0' AND kh = 5"], "at least two"),
        (["--by", "model", "--where", "kh = 5", "--figure", str(tmp_path / "x.gif")], "unknown figure format"),
    ]:
        assert_one_line_error(cli("--catalog", root, "drift", *args), fragment)
    assert snapshot(cat.store) == before
    assert not (tmp_path / "x.gif").exists()


def test_layer_profile_figure(cat, tmp_path):
    from kernel_catalog.report.filterdb_figures import draw_layer_profile, layer_profile_rows

    rows = layer_profile_rows(cat, ["m0", "m2"])
    assert {r["model"] for r in rows} == {"m0", "m2"} and len(rows) == 8
    fig = draw_layer_profile(rows)
    assert len(fig.axes) == 2 and len(fig.axes[0].lines) == 2
    cli("--catalog", str(cat.root), "figure", "layer-profile", "--model", "m0", "--model", "m1",
            "-o", str(tmp_path / "profile.svg"), check=True)
    assert (tmp_path / "profile.svg").read_text().lstrip().startswith("<?xml")
    with pytest.raises(CatalogError, match="nope"):
        layer_profile_rows(cat, ["m0", "nope"])
