"""The held-out null of a cross-fitted size: one model on (K-1)/K of the count, scored on fresh draws."""
from __future__ import annotations

import numpy as np
import pytest

from kernel_catalog.analysis.embed import _run as embed_module
from kernel_catalog.analysis.embed.null_model import (
    HELD_OUT_STREAM, control_data, gaussian_control, held_out_null, held_out_training_size, run_control,
)
from kernel_catalog.analysis.params import EmbedParams

TRAIN = dict(epochs=400, batch_size=4096, progress=False, threads=1)


def test_the_held_out_null_is_scored_on_draws_it_never_trained_on():
    train, scored = held_out_null(120, 3, 3, folds=5, seed=7)
    assert len(train) == held_out_training_size(120, 5) == 96 and len(scored) == 120
    # another seed stream: no scored kernel is a training kernel (nor a row of the in-sample null)
    assert not (np.abs(scored[:, None, :] - train[None, :, :]).max(axis=2) == 0).any()
    np.testing.assert_array_equal(train, control_data(96, 3, 3, seed=7))
    np.testing.assert_array_equal(scored, control_data(120, 3, 3, seed=7, stream=HELD_OUT_STREAM))
    assert not np.array_equal(gaussian_control(5, 3, 3, 7, HELD_OUT_STREAM), gaussian_control(5, 3, 3, 7))
    # deterministic: the same seed draws the same kernels, another seed others
    again = held_out_null(120, 3, 3, folds=5, seed=7)
    np.testing.assert_array_equal(again[0], train)
    np.testing.assert_array_equal(again[1], scored)
    assert not np.array_equal(held_out_null(120, 3, 3, folds=5, seed=8)[1], scored)
    assert [held_out_training_size(n, k) for n, k in ((103, 5), (10, 2), (7, 3))] == [82, 5, 5]


def test_a_held_out_null_is_not_memorised_and_is_deterministic():
    """160 iid 3x3 kernels, 400 full-batch steps: memorised in sample, not held out."""
    in_sample = run_control(160, 3, 3, seed=0, cross_fit=0, **TRAIN)
    held = run_control(160, 3, 3, seed=0, cross_fit=5, **TRAIN)
    assert len(held.recon_cos) == 160 and held.model.config["steps"] == 400
    assert in_sample.classified_fraction >= 0.5 and held.classified_fraction <= 0.2
    again = run_control(160, 3, 3, seed=0, cross_fit=5, **TRAIN)
    np.testing.assert_array_equal(again.recon_cos, held.recon_cos)


def test_embed_trains_one_null_member_on_the_held_out_draw(monkeypatch):
    """A cross-fitted plan's ensemble: the run's model, K fold models and ONE null model, trained
    on the (K-1)/K draw; the null's scores are of the fresh draw."""
    params = EmbedParams(cross_fit=5, seed=3, threads=1, epochs=2)
    weights = np.random.default_rng(0).standard_normal((50, 9)).astype(np.float32)
    plan = embed_module._plan((np.arange(50), weights), 3, 3, None, params, lambda line: None)
    train, scored = held_out_null(50, 3, 3, 5, seed=3)
    np.testing.assert_array_equal(plan.null_x, train)
    np.testing.assert_array_equal(plan.null_scored, scored)
    seen = []
    real = embed_module.ens.train_ensemble

    def spy(members, *args, **kwargs):
        seen.extend(members)
        return real(members, *args, **kwargs)

    monkeypatch.setattr(embed_module.ens, "train_ensemble", spy)
    embed_module._train_together([plan], 3, 3, params, False, {})
    assert [m.n for m in seen] == [50, 40, 40, 40, 40, 40, 40]
    assert seen[-1].data is plan.null_x and seen[-1].rows is None
    *_, null_d, folds = embed_module._finish(plan, 3, 3, params)
    assert folds == 5 and len(null_d) == 50
    expected = 1.0 - embed_module.ae.encode(plan.null_model, scored)[2].astype(np.float64)
    np.testing.assert_allclose(null_d, expected)


@pytest.mark.parametrize("folds", [0, 3])
def test_the_in_sample_null_is_unchanged(folds):
    params = EmbedParams(cross_fit=folds, seed=1)
    weights = np.random.default_rng(0).standard_normal((30, 9)).astype(np.float32)
    plan = embed_module._plan((np.arange(30), weights), 3, 3, None, params, lambda line: None)
    if folds:
        assert len(plan.null_x) == 20 and len(plan.null_scored) == 30
    else:
        np.testing.assert_array_equal(plan.null_x, control_data(30, 3, 3, seed=1))
        assert plan.null_scored is None
