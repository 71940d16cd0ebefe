"""`embed --cross-fit`: held-out scores for small selections, which are otherwise memorised."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from kernel_catalog.analysis.embed.cross_fit import fold_of, held_out_cos
from kernel_catalog.analysis.embed import embed
from kernel_catalog.analysis.params import EmbedParams
from kernel_catalog.analysis.validation.planted import planted_bank, planted_classes
from kernel_catalog.ingest import ingest
from kernel_catalog.report.report import verdict_warnings
from kernel_catalog.store import Catalog

from .conftest import assert_one_line_error, copy_catalog, run_cli_in_process as cli, snapshot

# the paper's fixed thresholds everywhere (no calibration), so in-sample and held-out shares
# are read at the same threshold; 400 optimiser steps (one batch an epoch), a fifth of what auto
# epochs would give these sizes: already enough to memorise them
PARAMS = EmbedParams(threshold_rule="fixed", threads=2, epochs=400)
NOISE_N = 160


def test_folds_are_balanced_seeded_and_cover_every_row():
    fold = fold_of(103, 5, seed=3)
    assert sorted(np.bincount(fold)) == [20, 20, 21, 21, 21]
    assert np.array_equal(fold, fold_of(103, 5, seed=3)) and not np.array_equal(fold, fold_of(103, 5, seed=4))
    with pytest.raises(ValueError, match="at least 2 folds"):
        held_out_cos(np.ones((10, 9), np.float32), 3, 3, folds=1)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A catalog with 160 iid Gaussian 3x3 kernels (a null: nothing to find) and 280 planted
    7x7 kernels (14 families at SNR 3: structure to find), both far below MIN_VERDICT_KERNELS."""
    folder = tmp_path_factory.mktemp("cross_fit")
    catalog = Catalog(folder / "catalog")
    noise = np.random.default_rng(11).standard_normal((NOISE_N, 3, 3)).astype(np.float32)
    np.savez(folder / "noise.npz", weights=noise)
    bank = planted_bank(20, 7, 7, snr=3.0, seed=5, classes=planted_classes(7, 7, 0))
    np.savez(folder / "planted.npz", weights=bank.kernels.reshape(-1, 7, 7))
    ingest(catalog, str(folder / "noise.npz"))
    ingest(catalog, str(folder / "planted.npz"))
    in_sample = embed(catalog, "plain", params=replace(PARAMS, cross_fit=0), progress=False)   # explicitly in sample
    held_out = embed(catalog, "held", params=replace(PARAMS, cross_fit=2), progress=False)
    return catalog, in_sample, held_out


def test_cross_fitting_removes_the_memory_from_a_small_selections_classified_share(small):
    catalog, in_sample, held_out = small
    noise, planted = held_out["3x3"], held_out["7x7"]
    # 160 random 3x3 kernels: memorised in sample, not held out
    assert in_sample["3x3"]["classified"] >= 0.5
    assert noise["classified"] <= 0.2 and noise["cross_fit"] == 2
    # the in-sample share is reported beside the held-out one, from the same full-data model
    assert noise["classified_in_sample"] == pytest.approx(in_sample["3x3"]["classified"])
    # 280 planted kernels: in sample, the null is memorised too (15 % "classified" at 0.3);
    # held out, the null is not, and the planted families keep a verdict (74 %)
    assert in_sample["7x7"]["null_classified"] >= 0.08
    assert planted["null_classified"] <= 0.02 and planted["classified"] >= 0.5


def test_stored_scores_are_held_out_and_the_embeddings_come_from_the_full_model(small):
    catalog, _, held_out = small
    rows = catalog.sql("""
        SELECT e.run, e.kh, avg(CASE WHEN 1 - e.recon_cos < (CASE e.kh WHEN 3 THEN 0.1 ELSE 0.3 END)
                                THEN 1 ELSE 0 END) AS classified
        FROM embeddings e WHERE e.usable GROUP BY ALL ORDER BY ALL""").to_pylist()
    shares = {(r["run"], r["kh"]): r["classified"] for r in rows}
    assert shares[("held", 3)] == pytest.approx(held_out["3x3"]["classified"])
    assert shares[("held", 7)] == pytest.approx(held_out["7x7"]["classified"])
    same_z = catalog.sql("""
        SELECT bool_and(list_cosine_similarity(a.z, b.z) > 0.9999) AS same FROM embeddings a
        JOIN embeddings b USING (kernel_id) WHERE a.run = 'plain' AND b.run = 'held' AND a.usable""").to_pylist()
    assert same_z == [{"same": True}]


def test_a_cross_fitted_small_size_gets_no_memory_warning(small):
    catalog, _, _ = small
    plain, held = verdict_warnings(catalog, "plain"), verdict_warnings(catalog, "held")
    assert any("160 usable kernels" in w and "--cross-fit" in w for w in plain)
    assert not any("too small" in w for w in held)


def test_bad_cross_fit_requests_are_one_line_errors_and_change_nothing(small):
    catalog, _, _ = small
    before = snapshot(catalog)
    root = str(catalog.root)
    assert_one_line_error(cli("--catalog", root, "embed", "--run", "r1", "--cross-fit", "1"), "--cross-fit 1", "at least 2")
    assert_one_line_error(cli("--catalog", root, "embed", "--run", "r2", "--cross-fit", "2", "--from-model", "plain"),
                          "--from-model")
    assert_one_line_error(cli("--catalog", root, "embed", "--run", "r3", "--cross-fit", "100", "--epochs", "10",
                                  "--where", "kh = 3"), "3x3 has only 160", "--cross-fit 100")
    assert snapshot(catalog) == before
    runs = catalog.sql("SELECT run FROM runs ORDER BY run").to_pylist()
    assert "r1" not in [r["run"] for r in runs] and "r3" not in [r["run"] for r in runs]


def test_per_model_runs_score_each_models_kernels_held_out(small, tmp_path):
    catalog, _, held_out = small
    catalog = copy_catalog(catalog, tmp_path)                  # this test writes a run
    metrics = embed(catalog, "held-pm", "kh = 3", params=replace(PARAMS, cross_fit=2, per_model=True),
                    progress=False)["3x3"]
    (model, m), = metrics["models"].items()      # the one model with 3x3 kernels here
    assert model == "noise" and m["cross_fit"] == 2 and metrics["cross_fit"] == 2
    assert metrics["classified"] == pytest.approx(held_out["3x3"]["classified"])   # same folds, same seed
    assert metrics["classified_in_sample"] == pytest.approx(held_out["3x3"]["classified_in_sample"])


def test_auto_folds_follow_the_verdict_count():
    auto = EmbedParams()
    assert auto.cross_fit is None
    assert [auto.folds(n) for n in (0, 3, 4, 7, 10, 999, 1000, 50_000)] == [0, 0, 2, 3, 5, 5, 0, 0]
    assert EmbedParams(cross_fit=0).folds(10) == 0 and EmbedParams(cross_fit=3).folds(50_000) == 3


def test_by_default_a_small_size_is_scored_held_out_and_the_report_says_so(small, tmp_path):
    from kernel_catalog.report.report import held_out_lines

    catalog = copy_catalog(small[0], tmp_path)                  # this test writes a run
    said = []
    metrics = embed(catalog, "auto", "kh = 3", params=replace(PARAMS, cross_fit=None, epochs=50), progress=False,
                    echo=said.append)["3x3"]
    assert metrics["cross_fit"] == 5 and metrics["cross_fit_rule"] == "auto" and "classified_in_sample" in metrics
    assert any("3x3: scored held out by default" in line for line in said)
    (line,) = held_out_lines(catalog, "auto")
    assert line.startswith("3x3: scored held out in 5 folds (by default: fewer than 1000 usable kernels")
    assert held_out_lines(catalog, "plain") == [] and "as asked" in held_out_lines(catalog, "held")[0]
    assert not any("too small" in w for w in verdict_warnings(catalog, "auto"))
