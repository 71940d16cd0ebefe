"""Validation on planted banks: kernels drawn from known families (`planted`), and how well
clustering and naming recover them (`validate`) against what any method could (`ceiling`).

Public names are imported on first use (`kernel_catalog.analysis.lazy_exports`).
"""
from kernel_catalog.analysis import lazy_exports

_EXPORTS = {
    **dict.fromkeys(["PlantedBank", "PlantedClass", "planted_bank", "planted_classes", "sigma_range"], ".planted"),
    **dict.fromkeys(["angle_error", "ceiling", "score_names", "validate"], "._recovery"),
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
