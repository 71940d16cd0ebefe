"""The clustering stage (`catalog cluster`, `catalog identify`): the clusters of an embed run per
kernel size (`clustering`: scikit-learn), named by templates (`analysis.naming`); a size too large
to hold is clustered in blocks, and with --ray each block is a Ray task.

Public names are imported on first use (`kernel_catalog.analysis.lazy_exports`): the package itself
loads neither torch nor scikit-learn.
"""
from kernel_catalog.analysis import lazy_exports

_EXPORTS = {
    **dict.fromkeys(["cluster_run", "identify", "seed_stability"], "._run"),
    **dict.fromkeys(["ClusterResult", "choose_k", "cluster", "feature_space", "fit", "fit_rows", "fit_rows_by_id",
                     "k_for", "nearest_centre", "summarise"], ".clustering"),
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
