"""Depthwise kernels from a bare state dict (.safetensors, .pth/.pt/.bin), without model code.

Rule: a tensor is taken as a depthwise kernel when it is 4-D with shape (C, 1, kh, kw), C > 1,
kh * kw > 1, and of a floating dtype. Without the model code this rule is a guess, and it can be
wrong both ways:

* false positives: the first conv of a grey-scale network (C_out, 1, k, k), a ConvTranspose
  weight with one output channel per group, or any other tensor that happens to have this shape;
* misses: CondConv experts stored flattened (E, C*kh*kw), kernels stored 3-D, a depthwise conv
  with a depth multiplier looks like (m*C, 1, kh, kw) and is found, but its multiplier is unknown.

Fix it with fnmatch patterns on tensor names: `--exclude 'stem.*'`, `--include 'blocks.*'`
(`select_by_name` on the tensor name). For a known architecture prefer the timm adapter with
`--checkpoint`, which knows the modules.

A layer is named after its tensor without a trailing ".weight". Order: for .pth/.pt/.bin the dict
order (module order when saved from `state_dict()`); a .safetensors header is sorted by name, not
by module, so we use a natural sort (digit runs compared as integers: blocks.9 before blocks.10).
.safetensors are read lazily: the header first, then only the depthwise tensors. Torch pickles
are loaded with `weights_only=True` (no code runs) and memory-mapped where the format allows.
float16 / bfloat16 become float32 exactly; float32 is kept bit-identical.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from kernel_catalog.adapters._untrusted import refuse_corrupt
from kernel_catalog.adapters.base import DepthwiseLayer, Extraction, IngestOptions, select_by_name
from kernel_catalog.adapters.torch_checkpoint import TORCH_SUFFIXES, WRAPPER_KEYS, load_torch, unwrap  # noqa: F401 (re-exported)
from kernel_catalog.errors import CatalogError, error_summary

SAFETENSORS_SUFFIXES = (".safetensors",)
_SAFETENSORS_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16"}


class StateDictAdapter:
    """Depthwise-shaped tensors of a bare state dict, found by shape alone."""

    name = "statedict"
    version = "1.0.0"
    description = "tensors shaped (C,1,kh,kw) in a .safetensors/.pth/.pt/.bin state dict"
    priority = 40

    def can_read(self, source: str, options: IngestOptions) -> bool:
        return Path(source).suffix.lower() in SAFETENSORS_SUFFIXES + TORCH_SUFFIXES

    def read(self, source: str, options: IngestOptions) -> Extraction:
        path = Path(source).expanduser()
        if not path.is_file():
            raise CatalogError(f"{path}: state dict file not found; check the path")
        if path.stat().st_size == 0:
            raise CatalogError(f"{path}: empty file; get it again")
        with refuse_corrupt(path, "state dict"):
            if path.suffix.lower() in SAFETENSORS_SUFFIXES:
                layers, meta = read_safetensors(path, options)
            else:
                layers, meta = read_torch(path, options)
        if not layers:
            raise _none_found(path, options)
        return Extraction(model=path.stem, source=str(path.resolve()), trained=True,
                          layers=layers, meta={**meta, "trained_assumed": True})


def read_remote_safetensors(remote: Any, options: IngestOptions) -> Extraction:
    """The same rule over a safetensors file read by byte ranges (adapters.ranged.RemoteSafetensors):
    the header's shapes pick the tensors, only those are fetched; the layers equal read()'s."""
    names = [n for n in sorted(remote.tensors, key=natural_key) if select_by_name(n, options)
             and is_depthwise_shape(remote.tensors[n].shape, _floating(remote.tensors[n].dtype))]
    remote.fetch(names)
    layers = [_layer(n, _torch_to_float32(remote.get(n)), _SAFETENSORS_DTYPES.get(remote.tensors[n].dtype,
                                                                                   remote.tensors[n].dtype.lower()))
              for n in names]
    if not layers:
        raise _none_found(remote.where, options)
    return Extraction(model=remote.where, source=remote.url, trained=True, layers=layers,
                      meta={"format": "safetensors", "metadata": remote.metadata, "trained_assumed": True})


def _floating(dtype: str) -> bool:
    return dtype.startswith("F") or dtype == "BF16"


def _none_found(where: Any, options: IngestOptions) -> CatalogError:
    return CatalogError(
        f"{where}: no depthwise tensor found (4-D float (C,1,kh,kw), C>1, kh*kw>1"
        f"{' matching --include/--exclude' if options.include or options.exclude else ''});"
        " check the --include/--exclude patterns, or use the adapter for its architecture"
        " (timm with --checkpoint)")


def is_depthwise_shape(shape: tuple[int, ...] | list[int], floating: bool) -> bool:
    """The shape rule of this adapter (see the module docstring)."""
    return (floating and len(shape) == 4 and shape[1] == 1 and shape[0] > 1
            and shape[2] * shape[3] > 1)


def natural_key(name: str) -> tuple[Any, ...]:
    """Sort key comparing digit runs as integers ("blocks.9" < "blocks.10")."""
    parts = re.split(r"([0-9]+)", name)
    return tuple(int(p) if i % 2 else p for i, p in enumerate(parts))


def layer_name(tensor_name: str) -> str:
    return tensor_name.removesuffix(".weight")


def read_safetensors(path: Path, options: IngestOptions) -> tuple[list[DepthwiseLayer], dict]:
    """Header first (names, shapes, dtypes); then load only the tensors the rule keeps.

    safetensors itself refuses a header that is too long (> 100 MB) or longer than the file, offsets
    that overlap, leave gaps or pass the end, and shapes whose size overflows or differs from their
    byte span, all when the file is opened: nothing is added here (tests/test_untrusted_models.py).
    """
    from safetensors import SafetensorError, safe_open

    layers = []
    try:
        opened = safe_open(str(path), framework="pt")   # pt: numpy has no bfloat16; torch widens it exactly
    except SafetensorError as exc:
        raise CatalogError(f"{path}: not a readable safetensors file ({error_summary(exc).split('. ')[0]});"
                           " the file is corrupt or truncated: get it again") from None
    with opened as f:
        file_meta = f.metadata()
        for name in sorted(f.keys(), key=natural_key):
            view = f.get_slice(name)
            dtype = view.get_dtype()
            if not is_depthwise_shape(view.get_shape(), _floating(dtype)):
                continue
            if not select_by_name(name, options):
                continue
            weights = _torch_to_float32(f.get_tensor(name))
            layers.append(_layer(name, weights, _SAFETENSORS_DTYPES.get(dtype, dtype.lower())))
    return layers, {"format": "safetensors", "metadata": file_meta}


def read_torch(path: Path, options: IngestOptions) -> tuple[list[DepthwiseLayer], dict]:
    """torch.load (weights only, mmap when possible), unwrap, then walk the dict in order."""
    import torch

    state, wrapper = unwrap(load_torch(path), path)
    layers = []
    for name, value in state.items():
        if not isinstance(value, torch.Tensor) or not isinstance(name, str):
            continue
        if not is_depthwise_shape(tuple(value.shape), value.is_floating_point()):
            continue
        if select_by_name(name, options):
            dtype = str(value.dtype).removeprefix("torch.")
            layers.append(_layer(name, _torch_to_float32(value), dtype))
    return layers, {"format": "pytorch", "wrapper": wrapper}


def _torch_to_float32(tensor: Any) -> np.ndarray:
    import torch

    if tensor.dtype != torch.float32:       # fp16/bf16 -> fp32 is exact; fp32 is not touched
        tensor = tensor.to(torch.float32)
    array = tensor.detach().cpu().numpy()
    # A copy: a view would keep a memory-mapped checkpoint file alive (and SIGBUS if it shrinks).
    return np.array(array.reshape(array.shape[0], array.shape[2], array.shape[3]), copy=True)


def _layer(tensor_name: str, weights: np.ndarray, dtype: str) -> DepthwiseLayer:
    meta = {"kind": "tensor", "tensor_name": tensor_name, "dtype": dtype,
            # in_channels is unknown without the model: m*C_in and C_in look alike here.
            "out_channels": int(weights.shape[0])}
    return DepthwiseLayer(name=layer_name(tensor_name), weights=weights, meta=meta)


