"""Read a bank of kernels already cut out of their networks: .npy or .npz arrays.

Accepted arrays are floating and shaped (N, kh, kw) or (N, 1, kh, kw) with kh * kw > 1.

* .npy: one array, one layer named after the file stem. Memory-mapped, then copied once into
  float32 (no second in-memory copy of a large bank).
* .npz: one layer per kernel array, named after its key: the array "weights" and every other
  3-/4-D floating array (an npz may hold several kernel sizes: weights_7x7, weights_5x5, ...).
  1-D arrays "kernel_id", "model", "layer", "channel" (an index written next to the kernels) are
  not read as kernels; the extraction meta lists them, but layers stay named after the arrays.
  Other arrays are ignored and listed too.

Arrays are loaded with allow_pickle=False (a bank never needs Python objects). --include and
--exclude patterns apply to the array names. Where the kernels came from is not known here:
`trained=True` is what the user asserts by ingesting a bank.
"""
from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from kernel_catalog.adapters.base import DepthwiseLayer, Extraction, IngestOptions, select_by_name
from kernel_catalog.errors import CatalogError, error_summary

SUFFIXES = (".npy", ".npz")
INDEX_ARRAYS = ("kernel_id", "model", "layer", "channel")


class KernelBankAdapter:
    """Kernel banks saved with numpy: (N, kh, kw) or (N, 1, kh, kw) float arrays."""

    name = "kernelbank"
    version = "1.0.0"
    description = "kernel banks in .npy/.npz: float arrays (N,kh,kw) or (N,1,kh,kw)"
    priority = 60       # the only reader of .npy/.npz: ask it before any catch-all adapter

    def can_read(self, source: str, options: IngestOptions) -> bool:
        return Path(source).suffix.lower() in SUFFIXES

    def read(self, source: str, options: IngestOptions) -> Extraction:
        path = Path(source).expanduser()
        if not path.is_file():
            raise CatalogError(f"{path}: kernel bank file not found; check the path")
        try:
            if path.suffix.lower() == ".npy":
                layers, meta = read_npy(path, options)
            else:
                layers, meta = read_npz(path, options)
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
            raise CatalogError(f"{path}: not a readable numpy file ({type(exc).__name__}:"
                               f" {error_summary(exc)}); the file is corrupt, truncated or holds"
                               " Python objects: save it with np.save/np.savez") from None
        if not layers:
            raise CatalogError(
                f"{path}: no kernel array found (float (N,kh,kw) or (N,1,kh,kw)"
                f"{' matching --include/--exclude' if options.include or options.exclude else ''});"
                " check the file or the --include/--exclude patterns")
        return Extraction(model=path.stem, source=str(path.resolve()), trained=True,
                          layers=layers, meta=meta)


def read_npy(path: Path, options: IngestOptions) -> tuple[list[DepthwiseLayer], dict[str, Any]]:
    array = np.load(path, mmap_mode="r", allow_pickle=False)
    if not isinstance(array, np.ndarray):       # np.load goes by content: this is a zip (.npz)
        array.close()
        raise CatalogError(f"{path}: is an .npz archive, not an .npy array; rename it to .npz")
    layers = [bank_layer(path.stem, array, path)] if select_by_name(path.stem, options) else []
    return layers, {"format": "npy"}


def read_npz(path: Path, options: IngestOptions) -> tuple[list[DepthwiseLayer], dict[str, Any]]:
    layers, index, ignored = [], [], []
    archive = np.load(path, allow_pickle=False)
    if isinstance(archive, np.ndarray):         # np.load goes by content: this is one array
        raise CatalogError(f"{path}: is an .npy array, not an .npz archive; rename it to .npy")
    with archive:
        for key in archive.files:
            array = archive[key]
            if key in INDEX_ARRAYS and array.ndim == 1:
                index.append(key)
            elif key == "weights" or (array.ndim in (3, 4) and _floating(array)):
                if select_by_name(key, options):
                    layers.append(bank_layer(key, array, path))
            else:
                ignored.append(key)
    return layers, {"format": "npz", "index_arrays": index, "ignored_arrays": ignored}


def bank_layer(name: str, array: np.ndarray, path: Path) -> DepthwiseLayer:
    """Check the shape and dtype of one kernel array and make it a float32 (N, kh, kw) layer."""
    shape = tuple(array.shape)
    ok_shape = len(shape) == 3 or (len(shape) == 4 and shape[1] == 1)
    if not (_floating(array) and ok_shape and shape[0] > 0 and shape[-1] * shape[-2] > 1):
        raise CatalogError(
            f"{path}: array {name!r} has shape {shape} and dtype {array.dtype}; a kernel bank"
            " holds float arrays (N,kh,kw) or (N,1,kh,kw) with kh*kw > 1: reshape it")
    weights = np.array(array.reshape(shape[0], shape[-2], shape[-1]), dtype=np.float32)
    meta = {"kind": "bank", "array": name, "dtype": str(array.dtype), "source_shape": list(shape)}
    return DepthwiseLayer(name=name, weights=weights, meta=meta)


def _floating(array: np.ndarray) -> bool:
    return np.issubdtype(array.dtype, np.floating)


