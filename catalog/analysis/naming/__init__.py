"""Naming: template families (`templates`) and matching kernels and clusters to them (`matching`).

One `--templates` spec rule for every command (`template_bank`). Public names are imported on
first use (`kernel_catalog.analysis.lazy_exports`).
"""
from kernel_catalog.analysis import lazy_exports

_EXPORTS = {
    **dict.fromkeys(["FAMILY_NAMES", "PERIOD", "POLARIZED", "UNMATCHED", "Steered", "TemplateBank", "default_scales",
                     "label_of", "load_template_file", "make_templates", "render", "template_bank", "unit_rows"],
                    ".templates"),
    **dict.fromkeys(["AMBIGUOUS_MARGIN", "ClusterNames", "Matches", "match", "name_clusters", "noise_floor"],
                    ".matching"),
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
