"""Read tensors from a weights file lazily: only the ones asked for leave the disk.

.safetensors files are opened with safetensors.safe_open (header only until a tensor is asked
for); .pth/.bin/.pt files through adapters.torch_checkpoint (torch.load(mmap=True, weights_only=True),
shared with the state-dict adapter), so untouched tensors are never paged in. Training checkpoints wrapped as {"state_dict": ...} or {"model": ...} and
DDP / torch.compile key prefixes are unwrapped the way timm does it.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from kernel_catalog.adapters.torch_checkpoint import load_torch, unwrap
from kernel_catalog.errors import CatalogError, error_summary

_PREFIXES = ("_orig_mod.", "module.")      # torch.compile, DDP


class WeightFile:
    """A checkpoint opened for lazy reads: `shapes` of every tensor, `get(key)` one tensor."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.wrapper_key: str | None = None     # which {"state_dict"/"model": ...} was unwrapped
        self._safe: Any = None
        self._tensors: Mapping[str, torch.Tensor] = {}
        self._keys: dict[str, str] = {}          # clean key -> key in the file
        if not self.path.is_file():
            raise CatalogError(f"checkpoint {self.path} does not exist")
        if self.path.suffix == ".safetensors":
            self._open_safetensors()
        else:
            self._open_torch()

    def _open_safetensors(self) -> None:
        from safetensors import SafetensorError, safe_open

        try:
            self._safe = safe_open(str(self.path), framework="pt", device="cpu")
        except (SafetensorError, OSError) as exc:
            raise CatalogError(f"cannot read checkpoint {self.path}: not a readable safetensors file"
                               f" ({error_summary(exc)}); the file is corrupt or truncated: get it again") from None
        self._keys = _clean_keys(self._safe.keys())
        self.shapes = {k: tuple(self._safe.get_slice(f).get_shape()) for k, f in self._keys.items()}

    def _open_torch(self) -> None:
        obj, self.wrapper_key = unwrap(load_torch(self.path), self.path)
        self._tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
        self._keys = _clean_keys(self._tensors.keys())
        self.shapes = {k: tuple(self._tensors[f].shape) for k, f in self._keys.items()}

    def get(self, key: str) -> torch.Tensor:
        """One tensor by its clean state_dict key (the only place values are read)."""
        file_key = self._keys[key]
        if self._safe is not None:
            return self._safe.get_tensor(file_key)
        return self._tensors[file_key]

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Every tensor (for the paths that build a real model)."""
        return {key: self.get(key) for key in self._keys}

    def close(self) -> None:
        self._safe, self._tensors = None, {}

    def __enter__(self) -> WeightFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RemoteWeightFile(WeightFile):
    """WeightFile's interface over a safetensors file read by byte ranges (adapters.ranged):
    shapes from its header; get() fetches a tensor not fetched yet; state_dict() fetches them all."""

    def __init__(self, remote: Any) -> None:
        self.path = remote.url
        self.wrapper_key = None
        self._safe, self._tensors = None, {}
        self._remote = remote
        self._keys = _clean_keys(remote.tensors)
        self.shapes = {k: tuple(remote.tensors[f].shape) for k, f in self._keys.items()}

    def get(self, key: str) -> torch.Tensor:
        return self._remote.get(self._keys[key])

    def state_dict(self) -> dict[str, torch.Tensor]:
        self._remote.fetch(self._keys.values())
        return super().state_dict()

    def close(self) -> None:
        self._remote.release()


def _clean_keys(keys: Iterable[str]) -> dict[str, str]:
    clean: dict[str, str] = {}
    for key in keys:
        short = key
        while short.startswith(_PREFIXES):          # wrapped in either order, maybe twice
            for prefix in _PREFIXES:
                short = short.removeprefix(prefix)
        clean[short] = key
    return clean




def mismatches(
    expected: Mapping[str, tuple[int, ...]],
    found: Mapping[str, tuple[int, ...]],
    loose_prefixes: tuple[str, ...] = (),
) -> list[str]:
    """Why `found` (a file's shapes) cannot stand for `expected` (a model's state_dict shapes).

    Extra keys in the file are fine (EMA copies, aux heads). Keys under `loose_prefixes` (the
    classifier) may differ in shape: a fine-tune with another class count has the same kernels.
    BatchNorm's num_batches_tracked may be absent (torch fills it in on load).
    """
    problems: list[str] = []
    for key, shape in expected.items():
        if key.endswith("num_batches_tracked"):
            continue
        if key not in found:
            problems.append(f"missing '{key}'")
        elif found[key] != shape and not key.startswith(loose_prefixes):
            problems.append(f"'{key}' has shape {list(found[key])}, the architecture {list(shape)}")
    return problems


def describe(problems: list[str]) -> str:
    """The first problem and how many more, for a one-line error."""
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return problems[0] + more
