"""The timm adapter plugin: depthwise kernels of any timm architecture, by name ("arch" or "arch.tag").

Weights come from one of three places:
  --checkpoint FILE   a local .safetensors / .pth with the architecture's weights;
  --random-init       timm's own initialisation under a fixed seed (trained=False);
  otherwise           the published weights: the Hugging Face cache first (no network call), else
                      a safetensors release is read by byte ranges (header, then the depthwise
                      tensors only; IngestOptions.full_download turns this off), else downloaded
                      from the hub (HF_ENDPOINT, HF_TOKEN, HF_HUB_OFFLINE respected) or, for
                      configs that give only a URL, into torch.hub's cache.

This module is the light plugin shell (importing it loads neither torch nor timm, so listing
adapters stays fast); reading is in _read, published weights in _hub (over adapters.hub).
"""
from __future__ import annotations

import re
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

from kernel_catalog.adapters.base import Extraction, IngestOptions, RemoteWeights
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
    description = ("timm models by name (arch or arch.tag): published weights (Hugging Face hub, "
                   "cached), --checkpoint FILE or --random-init")
    # Low: any name-like string lands here, so every more specific adapter is asked first.
    priority = 10

    def __init__(self) -> None:
        self._plans: dict[str, RemoteWeights] = {}
        self._ranged: dict[str, Any] = {}       # plan.source -> RemoteSafetensors fetched by fetch()
        self._building: dict[str, threading.Thread] = {}    # plan.source -> its meta-device build
        self._lock = threading.Lock()

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

    def resolve(self, source: str, options: IngestOptions) -> RemoteWeights | None:
        """The published weights a name stands for (cache or one metadata request), or None."""
        if options.random_init or options.checkpoint is not None:
            return None
        from kernel_catalog.adapters.ranged import ranged_allowed
        from kernel_catalog.adapters.timm._hub import resolve_weights
        from kernel_catalog.adapters.timm._names import parse_name, pretrained_cfg

        plan = resolve_weights(source, pretrained_cfg(parse_name(source)))
        plan = replace(plan, extra={**plan.extra, "ranged": ranged_allowed(options.full_download)})
        self._plans[source] = plan      # read(source) uses it (its license, its cache state)
        return plan

    def fetch(self, plan: RemoteWeights) -> None:
        """Read a safetensors release's depthwise tensors by byte ranges; else download the plan's
        weights into their cache (resumes a partial download)."""
        from kernel_catalog.adapters.timm._hub import fetch_weights, open_ranged_weights
        from kernel_catalog.adapters.timm._read import prebuild

        # The architecture's meta-device build (CPU) runs beside the transfer (network); read() waits for it.
        builder = threading.Thread(target=prebuild, args=(plan.source,), name="timm-build", daemon=True)
        builder.start()
        with self._lock:
            self._building[plan.source] = builder
        remote = open_ranged_weights(plan)
        if remote is None:
            fetch_weights(plan)
        else:
            with self._lock:
                self._ranged[plan.source] = remote

    def evict(self, plan: RemoteWeights) -> None:
        """Remove from the cache what fetch() added (the cache is left as it was before)."""
        from kernel_catalog.adapters.timm._hub import evict_weights

        evict_weights(plan)

    def read(self, source: str, options: IngestOptions) -> Extraction:
        """Build the architecture, find its depthwise convs, read their kernels."""
        from kernel_catalog.adapters.timm._read import read_timm     # torch + timm load only when needed

        plan = None if options.random_init or options.checkpoint else self._plans.get(source)
        with self._lock:
            remote = self._ranged.pop(source, None) if plan is not None else None
            builder = self._building.pop(source, None)
        if builder is not None:
            builder.join()
        return read_timm(source, options, plan, remote)
