"""Kernel Catalog: a database-backed catalog of trained depthwise convolution kernels.

The notebook API (the CLI's commands, same words):

    import kernel_catalog as kc
    cat = kc.open("kernel-catalog")
    cat.ingest("mixnet_s", random_init=True)
    table = cat.sql("SELECT model, kh, count(*) FROM kernels GROUP BY ALL")   # pyarrow.Table
    cat.analyze("default", run="r7", where="kh = 7")

Subpackages follow the data flow: `adapters` -> `store` -> `ingest` -> `analysis` ->
`report` / `export`. Names here are imported on first use, so `import kernel_catalog` loads
neither torch nor matplotlib and changes no global state.
"""
from importlib import import_module

from kernel_catalog._version import __version__
from kernel_catalog.errors import CatalogError

# public name -> module that defines it (imported on first attribute access, PEP 562)
_LAZY = {
    "open": "kernel_catalog._api",
    "Catalog": "kernel_catalog._api",
    "IngestOptions": "kernel_catalog.adapters.base",
    "DepthwiseLayer": "kernel_catalog.adapters.base",
    "Extraction": "kernel_catalog.adapters.base",
    "list_adapters": "kernel_catalog.adapters",
    "register_adapter": "kernel_catalog.adapters",
    "EmbedParams": "kernel_catalog.analysis.params",
    "ClusterParams": "kernel_catalog.analysis.params",
    "preprocess": "kernel_catalog.analysis.preprocess",
    "planted_bank": "kernel_catalog.analysis.validation",
    "make_templates": "kernel_catalog.analysis.naming",
}
_RENAMED = {"register_adapter": "register"}

__all__ = ["__version__", "CatalogError", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), _RENAMED.get(name, name))
        globals()[name] = value
        return value
    raise AttributeError(f"module 'kernel_catalog' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
