"""The paper's analysis as runs, one subpackage per stage of the data flow.

    embed/        autoencoders per kernel size, the iid Gaussian null, cross-fitting, thresholds: `catalog embed`
    cluster/      k-means (or minibatch, gmm) per size, in memory or in blocks: `catalog cluster`, `identify`
    naming/       template families and matching kernels and clusters to them
    search/       `catalog nearest` (cosine search) and `catalog drift` (CNN Filter DB's measure)
    validation/   planted banks and how well clustering and naming recover them

Shared by every stage, one module each: `params` (every choice and default), `preprocess` (the one
preprocessing function), `runs` (run records and result files), `selection` (kernels by a SQL
WHERE). `analyze` chains embed -> cluster -> name with a preset. Which stage may import which is
declared in pyproject.toml ([tool.importlinter]).

Each stage package lists its public names in `__all__` and imports them on first use (PEP 562,
`lazy_exports`): `import kernel_catalog.analysis.cluster` loads neither torch nor scikit-learn.
"""
from __future__ import annotations

import sys
from importlib import import_module


def lazy_exports(package: str, names: dict[str, str]):
    """`__getattr__` and `__dir__` for a stage package whose public names live in its modules:
    names maps a public name to its module, relative to the package ('._run'); the value is
    imported on first access and kept in the package."""

    def __getattr__(name: str):
        if name not in names:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(import_module(names[name], package), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(names))

    return __getattr__, __dir__
