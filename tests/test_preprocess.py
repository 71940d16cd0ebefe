"""Preprocessing: centred unit-norm rows, min-max range, and unusable rows flagged, not lost."""
import numpy as np
import pytest

from kernel_catalog.analysis.preprocess import preprocess, preprocess_stream


def _bank(n=50, k=49, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, k)) * rng.uniform(1e-3, 10, (n, 1)) + rng.normal(size=(n, 1))).astype(np.float32)


def test_center_l2_rows_have_zero_mean_and_unit_norm():
    x, usable = preprocess(_bank())
    assert x.dtype == np.float32 and x.shape == (50, 49) and usable.all()
    np.testing.assert_allclose(x.mean(axis=1), 0.0, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, rtol=1e-5)


def test_center_l2_keeps_sign_and_ignores_scale_and_offset():
    w = _bank(5)
    x, _ = preprocess(w)
    np.testing.assert_allclose(preprocess(-w)[0], -x, atol=1e-6)
    np.testing.assert_allclose(preprocess(3.5 * w + 2.0)[0], x, atol=1e-5)


def test_unusable_rows_are_flagged_and_zeroed():
    w = _bank(8, 9)
    w[0, 3] = np.nan
    w[1, 0] = np.inf
    w[2] = 0.0
    w[3] = np.float32(5e-5) * np.sign(w[3])          # every |w| <= 1e-4: near-zero
    w[4] = 0.7                                       # constant: nothing left after centring
    w[5] = 0.0
    w[5, 4] = 2e-4                                   # one tap above eps: usable
    x, usable = preprocess(w)
    assert usable.tolist() == [False, False, False, False, False, True, True, True]
    assert (x[~usable] == 0).all() and np.isfinite(x).all()
    assert len(x) == len(w)                          # kept by the caller, never dropped here


def test_eps_is_a_parameter():
    w = np.full((1, 4), 1e-3, np.float32)
    w[0, 0] = 2e-3
    assert preprocess(w)[1][0]
    assert not preprocess(w, eps=1e-2)[1][0]


def test_min_max_spans_minus_one_to_one():
    x, usable = preprocess(_bank(), method="min-max")
    assert usable.all()
    np.testing.assert_allclose(x.min(axis=1), -1.0, atol=1e-6)
    np.testing.assert_allclose(x.max(axis=1), 1.0, atol=1e-6)


def test_none_only_flags():
    w = _bank(3)
    w[1, 0] = np.nan
    x, usable = preprocess(w, method="none")
    assert usable.tolist() == [True, False, True]
    np.testing.assert_array_equal(x[0], w[0])


def test_bad_input_raises():
    with pytest.raises(ValueError):
        preprocess(_bank(), method="zscore")
    with pytest.raises(ValueError):
        preprocess(np.zeros(9, np.float32))


def test_stream_yields_usable_preprocessed_rows_only():
    w = _bank(30, 25)
    w[[2, 17]] = 0.0
    chunks = lambda: iter([w[:10], w[10:25], w[25:]])  # noqa: E731
    rows = np.concatenate(list(preprocess_stream(chunks)()))
    x, usable = preprocess(w)
    np.testing.assert_array_equal(rows, x[usable])
    assert len(list(preprocess_stream(chunks)())) == 3   # a fresh pass per call
