"""The adapter contract: what a plugin yields and how ingest asks for it.

Adapters know nothing of DuckDB or Parquet: they turn one *source* (a timm name, a checkpoint
file, an ONNX graph, ...) into an `Extraction`, a list of depthwise layers with metadata.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class IngestOptions:
    """Everything a user can say about how to read a source (the `catalog ingest` flags)."""

    checkpoint: Path | None = None      # weights file for an architecture source (timm)
    name: str | None = None             # model name to record instead of the default
    random_init: bool = False           # build the architecture with random weights (trained=False)
    include: tuple[str, ...] = ()       # fnmatch patterns on layer/tensor names to keep
    exclude: tuple[str, ...] = ()       # fnmatch patterns on layer/tensor names to drop
    reparam: bool = False               # fuse reparameterisable blocks before extraction
    seed: int = 0                       # seed for --random-init, so re-ingest is idempotent


@dataclass(frozen=True)
class DepthwiseLayer:
    """One depthwise convolution (or one expert of a CondConv) as found in the source.

    `weights` has shape (C, kh, kw), float32, values exactly as in the source tensor
    (C counts output channels, so a depth multiplier m > 1 gives C = m * in_channels).
    `meta` is JSON-serialisable: stride, dilation, padding, in_channels, out_channels, bias,
    depth_multiplier, kind, stage, block, bn_folded, reparam, ... (keys an adapter knows).
    """

    name: str
    weights: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)
    expert: int | None = None


@dataclass(frozen=True)
class Extraction:
    """What an adapter read from one source: ingest turns it into catalog rows."""

    model: str                          # default model name (ingest applies --name over it)
    source: str                         # path or hub id the weights came from
    trained: bool
    layers: list[DepthwiseLayer]
    meta: dict[str, Any] = field(default_factory=dict)   # pretrained cfg, file format, ...


@runtime_checkable
class Adapter(Protocol):
    """A model-adapter plugin, registered under the entry-point group `catalog.adapters`."""

    name: str           # short registry name, e.g. "onnx"
    version: str        # reported by `catalog adapters`
    description: str    # one line for `catalog adapters`
    priority: int       # higher is asked first when several adapters can read a source

    def can_read(self, source: str, options: IngestOptions) -> bool:
        """Cheap check (extension, magic bytes, name lookup): no weights are read."""

    def read(self, source: str, options: IngestOptions) -> Extraction:
        """Read the source; raise catalog.errors.CatalogError with one clear line on bad input."""


def select_by_name(name: str, options: IngestOptions) -> bool:
    """Apply the --include/--exclude fnmatch patterns to a layer or tensor name."""
    from fnmatch import fnmatchcase

    if options.include and not any(fnmatchcase(name, p) for p in options.include):
        return False
    return not any(fnmatchcase(name, p) for p in options.exclude)
