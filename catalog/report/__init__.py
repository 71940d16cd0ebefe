"""What people look at: reports (tables), figures and the HTML gallery, read through SQL.

The choices and defaults the CLI offers are re-exported here from light modules, so that
parsing options does not import matplotlib.
"""
from kernel_catalog.report._figures_data import DEFAULT_LIMIT, SCALES, SORT_KEYS
from kernel_catalog.report.report import GROUPINGS

__all__ = ["DEFAULT_LIMIT", "GROUPINGS", "SCALES", "SORT_KEYS"]
