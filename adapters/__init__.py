"""Adapter plugins: the contract (`base`), the registry, and the built-in adapters.

Plugin authors import from `kernel_catalog.adapters.base` (or from here); the registry is
private (`_registry`), its public functions are re-exported below.
"""
from kernel_catalog.adapters._registry import (
    GROUP, PLUGINS_ENV, AdapterInfo, adapters_table, broken_adapters, expand_pattern, find_adapter, get_adapter,
    list_adapters, register, reset,
)
from kernel_catalog.adapters.base import (
    Adapter, DepthwiseLayer, Expander, Extraction, IngestOptions, RemoteFile, RemoteSource, RemoteWeights, select_by_name,
)

__all__ = ["GROUP", "PLUGINS_ENV", "Adapter", "AdapterInfo", "DepthwiseLayer", "Expander", "Extraction",
           "IngestOptions", "RemoteFile", "RemoteSource", "RemoteWeights", "adapters_table", "broken_adapters", "expand_pattern", "find_adapter",
           "get_adapter", "list_adapters", "register", "reset", "select_by_name"]
