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
    full_download: bool = False         # published safetensors: download whole files, not byte ranges


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


@dataclass(frozen=True)
class RemoteFile:
    """One weights file of a published release, as its hub describes it."""

    name: str
    size: int | None = None
    sha256: str | None = None     # LFS files: the content digest
    etag: str | None = None


@dataclass(frozen=True)
class RemoteWeights:
    """What a published source resolves to before any weights are downloaded.

    `source` is what the adapter's read() takes once the files are local; `cache_before` is the
    set of paths the source's cache folders held before, so `evict()` can restore them.
    """

    model: str                          # default model name
    source: str                         # what to read once fetched (offline, pinned)
    repo: str                           # hub repo id, or the URL of a URL-only release
    revision: str | None                # commit sha (None when unknown, e.g. a bare URL)
    files: tuple[RemoteFile, ...]
    cached: bool                        # every file is already local: fetch() downloads nothing
    license: str | None = None
    kind: str = "hf"                    # hf | url
    cache_dir: str = ""
    cache_before: frozenset[str] = frozenset()
    extra: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Adapter(Protocol):
    """A model-adapter plugin, registered under the entry-point group `kernel_catalog.adapters`.

    Required: the four attributes, can_read() and read(). Optional capabilities, used when an
    adapter has them (declared below as their own protocols, so an adapter without them still
    satisfies this one): `expand(pattern, options) -> list[str]` (Expander: fnmatch patterns into
    source names, used by `expand_pattern`), and `resolve / fetch / evict` (RemoteSource: published
    weights that are downloaded before read(), skipped when already ingested at that revision).
    """

    name: str           # short registry name, e.g. "onnx"
    version: str        # reported by `catalog adapters`
    description: str    # one line for `catalog adapters`
    priority: int       # higher is asked first when several adapters can read a source

    def can_read(self, source: str, options: IngestOptions) -> bool:
        """Cheap check (extension, magic bytes, name lookup): no weights are read."""

    def read(self, source: str, options: IngestOptions) -> Extraction:
        """Read the source; raise catalog.errors.CatalogError with one clear line on bad input."""


@runtime_checkable
class Expander(Protocol):
    """Optional: an adapter that expands fnmatch patterns ('convnext*') into source names."""

    def expand(self, pattern: str, options: IngestOptions) -> list[str]:
        """Every source name the pattern matches ([] when none): cheap, no weights read."""


@runtime_checkable
class RemoteSource(Protocol):
    """Optional: an adapter whose sources are published weights, downloaded before read()."""

    def resolve(self, source: str, options: IngestOptions) -> RemoteWeights | None:
        """Which files at which revision (cache first, else metadata only); None: not remote."""

    def fetch(self, plan: RemoteWeights) -> None:
        """Download the plan's missing files into their cache (resumable)."""

    def evict(self, plan: RemoteWeights) -> None:
        """Delete from the cache what fetch() added, leaving it as resolve() found it."""


def select_by_name(name: str, options: IngestOptions) -> bool:
    """Apply the --include/--exclude fnmatch patterns to a layer or tensor name."""
    from fnmatch import fnmatchcase

    if options.include and not any(fnmatchcase(name, p) for p in options.include):
        return False
    return not any(fnmatchcase(name, p) for p in options.exclude)
