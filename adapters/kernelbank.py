"""Read a bank of kernels already cut out of their networks: .npy or .npz arrays.

Accepted arrays are floating and shaped (N, kh, kw) or (N, 1, kh, kw) with kh * kw > 1.

* .npy: one array, one layer named after the file stem. Memory-mapped, then copied once into
  float32 (no second in-memory copy of a large bank).
* .npz: one layer per kernel array, named after its key: the array "weights" and every other
  3-/4-D floating array (an npz may hold several kernel sizes: weights_7x7, weights_5x5, ...).
  1-D arrays "kernel_id", "model", "layer", "channel" (an index written next to the kernels) are
  not read as kernels; the extraction meta lists them, but layers stay named after the arrays.
  Other arrays are ignored and listed too.

Arrays are loaded with allow_pickle=False (a bank never needs Python objects), and each header's
shape x dtype must equal the bytes that follow it (in the file, or the zip member's size, itself
bounded by what deflate can expand to) before numpy maps or allocates anything. --include and
--exclude patterns apply to the array names. Where the kernels came from is not known here:
`trained=True` is what the user asserts by ingesting a bank.
"""
from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from kernel_catalog.adapters._untrusted import AGAIN, check_nbytes, element_count, refuse_corrupt
from kernel_catalog.adapters.base import DepthwiseLayer, Extraction, IngestOptions, select_by_name
from kernel_catalog.errors import CatalogError

SUFFIXES = (".npy", ".npz")
INDEX_ARRAYS = ("kernel_id", "model", "layer", "channel")
_ZIP, _NPY = b"PK\x03\x04", b"\x93NUMPY"
# numpy writes format 1.0, or 2.0 for headers over 64 kB (3.0 only for non-Latin-1 field names).
_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
_DEFLATE_MAX_RATIO = 1032    # deflate cannot expand data more than this: a member claiming more lies


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
        with refuse_corrupt(path, "numpy file (save banks with np.save/np.savez)"):
            if path.suffix.lower() == ".npy":
                layers, meta = read_npy(path, options)
            else:
                layers, meta = read_npz(path, options)
        if not layers:
            raise CatalogError(
                f"{path}: no kernel array found (float (N,kh,kw) or (N,1,kh,kw)"
                f"{' matching --include/--exclude' if options.include or options.exclude else ''});"
                " check the file or the --include/--exclude patterns")
        return Extraction(model=path.stem, source=str(path.resolve()), trained=True,
                          layers=layers, meta=meta)


def read_npy(path: Path, options: IngestOptions) -> tuple[list[DepthwiseLayer], dict[str, Any]]:
    with open(path, "rb") as f:
        if f.read(len(_ZIP)) == _ZIP:
            raise CatalogError(f"{path}: is an .npz archive, not an .npy array; rename it to .npz")
        f.seek(0)
        array_header(f, path.stat().st_size, path, path.stem)   # before numpy maps anything
    array = np.load(path, mmap_mode="r", allow_pickle=False)
    layers = [bank_layer(path.stem, array, path)] if select_by_name(path.stem, options) else []
    return layers, {"format": "npy"}


def read_npz(path: Path, options: IngestOptions) -> tuple[list[DepthwiseLayer], dict[str, Any]]:
    """Each member's header is checked against its size before its data is read (np.load would
    allocate what a header states first)."""
    layers, index, ignored = [], [], []
    with open(path, "rb") as f:
        if f.read(len(_NPY)) == _NPY:
            raise CatalogError(f"{path}: is an .npy array, not an .npz archive; rename it to .npy")
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        if len(set(names)) != len(names):       # np.savez never writes two; a reader keeps either
            twice = sorted({n for n in names if names.count(n) > 1})
            raise CatalogError(f"{path}: the archive holds two members named {twice[0]!r}; {AGAIN}")
        for info in archive.infolist():
            key = info.filename.removesuffix(".npy")
            if info.is_dir() or not info.filename.endswith(".npy"):
                ignored.append(key)
                continue
            array = _member(archive, info, key, path)
            if key in INDEX_ARRAYS and array.ndim == 1:
                index.append(key)
            elif key == "weights" or (array.ndim in (3, 4) and _floating(array)):
                if select_by_name(key, options):
                    layers.append(bank_layer(key, array, path))
            else:
                ignored.append(key)
    return layers, {"format": "npz", "index_arrays": index, "ignored_arrays": ignored}


def array_header(f: BinaryIO, size: int, path: Path, name: str) -> tuple[tuple[int, ...], bool, np.dtype]:
    """(shape, fortran order, dtype) of an .npy header, refused unless the data after it is
    exactly shape x dtype bytes of `size` (the file's or zip member's) and holds no Python objects."""
    version = np.lib.format.read_magic(f)
    if version not in _HEADER_READERS:
        raise CatalogError(f"{path}: array {name!r} has .npy format {version}; save it with np.save")
    shape, fortran, dtype = _HEADER_READERS[version](f)
    if dtype.hasobject:
        raise CatalogError(f"{path}: array {name!r} holds Python objects (dtype {dtype}); a kernel bank"
                           " holds float arrays: save it with np.save/np.savez")
    count = element_count(shape, path, f"array {name!r}")
    check_nbytes(count * dtype.itemsize, size - f.tell(), path, f"array {name!r}")
    return shape, fortran, dtype


def _member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, key: str, path: Path) -> np.ndarray:
    """One .npy member, its stated sizes checked before anything is allocated."""
    ratio = {zipfile.ZIP_STORED: 1, zipfile.ZIP_DEFLATED: _DEFLATE_MAX_RATIO}.get(info.compress_type)
    if ratio is None or info.file_size > info.compress_size * ratio + 1024:
        raise CatalogError(f"{path}: member {info.filename!r} claims {info.file_size} bytes from"
                           f" {info.compress_size} stored (compression {info.compress_type}); {AGAIN}")
    with archive.open(info) as member:
        shape, fortran, dtype = array_header(member, info.file_size, path, key)
        data = member.read()
    return np.frombuffer(data, dtype=dtype).reshape(shape, order="F" if fortran else "C")


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


