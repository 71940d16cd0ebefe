"""k-means on many rows: restarts on a seeded sample, the best refined on every row (`clustering._restarts_on_sample`)."""
import numpy as np
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score

from kernel_catalog.analysis.cluster import clustering


def test_restarts_on_a_sample_find_the_full_fits_optimum_deterministically():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(6, 8)) * 3
    x = (centres[rng.integers(0, 6, 2 * clustering.RESTART_SAMPLE + 5000)] + rng.normal(size=(1, 8))
         + rng.normal(size=(2 * clustering.RESTART_SAMPLE + 5000, 8))).astype(np.float32)
    labels, found, method = clustering.fit(x, 6, seed=3, threads=1)
    again, _, _ = clustering.fit(x, 6, seed=3, threads=1)
    assert method == "kmeans" and np.array_equal(labels, again)
    full = KMeans(6, n_init=30, random_state=3).fit(x)
    assert adjusted_rand_score(full.labels_, labels) > 0.999
    inertia = ((x - found[labels]) ** 2).sum()
    assert inertia <= full.inertia_ * (1 + 1e-5)
