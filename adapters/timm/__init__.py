"""timm models by name: the adapter shell (`TimmAdapter`, light) and its private readers."""
from kernel_catalog.adapters.timm._adapter import TimmAdapter, list_timm_sources

__all__ = ["TimmAdapter", "list_timm_sources"]
