"""The timm adapter plugin: depthwise kernels of any timm architecture, by name ("arch" or "arch.tag").

Weights come from one of three places:
  --checkpoint FILE   a local .safetensors / .pth with the architecture's weights;
  --random-init       timm's own initialisation under a fixed seed (trained=False);
  otherwise           the published weights, from the local Hugging Face cache only (offline).

This module is the light plugin shell (importing it loads neither torch nor timm, so listing
adapters stays fast); the reading is in adapters.timm_read.
"""
from __future__ import annotations

import re
from pathlib import Path

from kernel_catalog.adapters.base import Extraction, IngestOptions
from kernel_catalog.adapters.timm._names import list_timm_sources

__all__ = ["TimmAdapter", "list_timm_sources"]

# A timm name is one identifier, optionally ".tag"; these suffixes mean a file someone mistyped.
_NAME = re.compile(r"^[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)?$")
_FILE_SUFFIXES = {".onnx", ".pt", ".pth", ".bin", ".safetensors", ".ckpt", ".npz", ".npy",
                  ".h5", ".pb", ".tflite", ".tar", ".zip", ".json", ".parquet"}


def _version() -> str:
    # importlib.metadata, not `import timm`: listing adapters should stay fast.
    from importlib.metadata import PackageNotFoundError, version

    from kernel_catalog._version import __version__

    try:
        timm_version = version("timm")
    except PackageNotFoundError:
        timm_version = "missing"
    return f"{__version__}+timm{timm_version}"


class TimmAdapter:
    """Reads timm architectures by name; weights from a checkpoint, the HF cache or random init."""

    name = "timm"
    version = _version()
    description = ("timm models by name (arch or arch.tag): weights from the local Hugging Face "
                   "cache, --checkpoint FILE or --random-init")
    # Low: any name-like string lands here, so every more specific adapter is asked first.
    priority = 10

    def can_read(self, source: str, options: IngestOptions) -> bool:
        """Not an existing file, and a timm-style name (read() suggests names for typos)."""
        if Path(source).expanduser().exists():
            return False
        if options.checkpoint is not None:
            return True
        return bool(_NAME.match(source)) and Path(source).suffix.lower() not in _FILE_SUFFIXES

    def expand(self, pattern: str, options: IngestOptions) -> list[str]:
        """fnmatch over timm names: architectures for --random-init, else arch.tag with weights."""
        return list_timm_sources([pattern], pretrained=not options.random_init and options.checkpoint is None)

    def read(self, source: str, options: IngestOptions) -> Extraction:
        """Build the architecture, find its depthwise convs, read their kernels."""
        from kernel_catalog.adapters.timm._read import read_timm     # torch + timm load only when needed

        return read_timm(source, options)
