"""Clustering: labels, centroids, means, medoids, methods, feature spaces and choose_k."""
import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from kernel_catalog.analysis.cluster.clustering import choose_k, cluster, feature_space, fit_rows, nearest_centre


@pytest.fixture(autouse=True)
def _one_thread():
    """One OpenMP/BLAS thread: on a shared 2-core machine, spinning threads waiting for a busy
    core made small k-means fits many times slower; results do not depend on it."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        yield


def _blobs(sizes=(120, 80, 50), dim=6, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=8.0, size=(len(sizes), dim))
    x = np.concatenate([c + rng.normal(size=(n, dim)) for c, n in zip(centres, sizes)])
    truth = np.repeat(np.arange(len(sizes)), sizes)
    return x.astype(np.float32), truth


@pytest.mark.parametrize("method", ["kmeans", "minibatch", "gmm"])
def test_recovers_blobs(method):
    x, truth = _blobs()
    r = cluster(x, 3, seed=0, method=method)
    assert adjusted_rand_score(truth, r.labels) == 1.0
    assert r.method == method and r.labels.dtype == np.int32
    assert r.sizes.tolist() == [120, 80, 50]                  # label 0 = largest
    assert r.centroids.shape == (3, 6) and r.mean_kernels.shape == (3, 6)


def test_means_medoids_and_inertia_are_consistent():
    x, _ = _blobs()
    kernels = np.random.default_rng(1).normal(size=(len(x), 9)).astype(np.float32)
    r = cluster(x, 3, seed=0, kernels=kernels)
    for j in range(3):
        members = np.flatnonzero(r.labels == j)
        np.testing.assert_allclose(r.mean_kernels[j], kernels[members].mean(axis=0), atol=1e-5)
        d = ((x[members] - r.centroids[j]) ** 2).sum(axis=1)
        assert r.medoids[j] == members[d.argmin()]
    assert r.inertia == pytest.approx(((x - r.centroids[r.labels]) ** 2).sum(), rel=1e-4)


def test_large_inputs_fit_a_sample_and_assign_every_row_deterministically():
    x, truth = _blobs((300, 300, 300))
    a = cluster(x, 3, seed=5, fit_sample=500)
    b = cluster(x, 3, seed=5, fit_sample=500)
    assert a.method == "kmeans" and np.array_equal(a.labels, b.labels)
    assert np.array_equal(a.labels, nearest_centre(x, a.centroids))     # every row at its nearest centre
    assert adjusted_rand_score(truth, a.labels) == 1.0
    assert len(fit_rows(900, 5, "kmeans", 500)) == 500 and fit_rows(900, 5, "minibatch", 500) is None
    assert cluster(x, 3, seed=5, method="minibatch", fit_sample=500).method == "minibatch"


def test_bad_arguments():
    x, _ = _blobs()
    with pytest.raises(ValueError):
        cluster(x, 0)
    with pytest.raises(ValueError):
        cluster(x, 3, method="dbscan")
    with pytest.raises(ValueError):
        cluster(x, 3, kernels=x[:10])
    with pytest.raises(ValueError):
        feature_space("pixels", z=x)


def test_feature_spaces():
    rng = np.random.default_rng(0)
    z, recon = rng.normal(size=(10, 2)), rng.normal(size=(10, 49)) * 7
    recon[3] = 0.0
    f = feature_space("reconstruction", z, recon)
    np.testing.assert_allclose(np.linalg.norm(f[np.arange(10) != 3], axis=1), 1.0, rtol=1e-5)
    assert (f[3] == 0).all()
    np.testing.assert_array_equal(feature_space("latent", z, recon), z.astype(np.float32))


def test_choose_k_finds_the_number_of_blobs():
    rng = np.random.default_rng(3)
    x = (np.repeat(10 * np.eye(4), 100, axis=0) + rng.normal(size=(400, 4))).astype(np.float32)
    k, scores = choose_k(x, range(2, 8), seed=0)
    assert k == 4 and set(scores) == set(range(2, 8))
