"""Searching the catalog: the kernels most like a query (`nearest`, a cosine search over a cached
matrix per size) and the drift between two selections of one size (`drift_table`, `drift_by`: CNN
Filter DB's measure). DEFAULT_K and DEFAULT_SIZE are `catalog nearest`'s defaults; BY,
DEFAULT_BINS and DEFAULT_COMPONENTS `catalog drift`'s.

Public names are imported on first use (`kernel_catalog.analysis.lazy_exports`).
"""
from kernel_catalog.analysis import lazy_exports

_EXPORTS = {
    **dict.fromkeys(["DEFAULT_K", "DEFAULT_SIZE", "nearest", "parse_size", "query_kernel", "template_rows", "top_k",
                     "unit_query"], "._nearest"),
    **dict.fromkeys(["BY", "DEFAULT_BINS", "DEFAULT_COMPONENTS", "Drift", "drift", "drift_by", "drift_table", "pca",
                     "smoothed_histograms", "split_half"], "._drift"),
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
