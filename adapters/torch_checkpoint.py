"""Reading PyTorch checkpoint files (.pth/.pt/.bin): the one reader the timm and state-dict adapters share.

`load_torch` runs torch.load with weights_only=True (no code in the file runs) and mmap=True where
the format allows (legacy non-zip files are read whole, once a pass on fake tensors has checked the
storage sizes they state against the file), and turns every failure into one line
saying which file and what to do. `unwrap` descends the wrappers training scripts put around the
weights ({"state_dict": ...}, {"model": ...}, ...). A public module rather than `_torch_checkpoint`:
the package keeps `_modules` inside their own subpackage, and adapters.timm uses this one too.
"""
from __future__ import annotations

import pickle
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kernel_catalog.errors import CatalogError, error_summary

TORCH_SUFFIXES = (".pth", ".pt", ".bin")
# Keys under which training scripts nest the weights, most specific first.
WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "module", "net", "params")


def load_torch(path: Path) -> Any:
    """torch.load(weights_only=True), memory-mapped when possible; CatalogError on a bad file."""
    try:
        with warnings.catch_warnings():     # torch warns about odd pickles; the refusal is one line
            warnings.simplefilter("ignore")
            return _load(path)
    except CatalogError:
        raise
    except pickle.UnpicklingError as exc:
        raise _unpickling_error(path, exc) from None
    except Exception as exc:  # noqa: BLE001 -- torch raises many types for one cause: a bad file
        raise _not_a_checkpoint(path, f"{type(exc).__name__}: {error_summary(exc).split('. ')[0]}") from None


def _load(path: Path) -> Any:
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as exc:
        if "mmap" not in str(exc):      # legacy (non-zip) files cannot be memory-mapped
            raise
    _check_legacy_sizes(path)
    return torch.load(path, map_location="cpu", weights_only=True)


def _check_legacy_sizes(path: Path) -> None:
    """A legacy file makes torch allocate each storage at the size its pickle states before reading
    it: a first pass on fake (meta) tensors reads those sizes; one larger than the file is refused.
    (Views of one storage come back as separate fake storages, so sizes are bounded one by one.)"""
    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        obj = torch.load(path, map_location="cpu", weights_only=True)
    largest, stack = 0, [obj]
    while stack:
        item = stack.pop()
        if isinstance(item, torch.Tensor):
            largest = max(largest, item.untyped_storage().nbytes())
        elif isinstance(item, Mapping):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    size = path.stat().st_size
    if largest > size:
        raise CatalogError(f"checkpoint {path} states a tensor storage of {largest} bytes in a {size}-byte"
                           " file; the file is corrupt or not what it claims to be: get it again")


def unwrap(obj: Any, path: Path) -> tuple[Mapping, str | None]:
    """Descend {"state_dict": ...}/{"model": ...} wrappers to a dict holding tensors; (dict, key path)."""
    import torch

    keys = []
    while isinstance(obj, Mapping) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
        key = next((k for k in WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if key is None:
            break
        keys.append(key)
        obj = obj[key]
    if not isinstance(obj, Mapping):
        raise CatalogError(f"checkpoint {path} holds a {type(obj).__name__}, not a state_dict; save"
                           " model.state_dict() instead")
    return obj, "/".join(keys) or None


def _unpickling_error(path: Path, exc: pickle.UnpicklingError) -> CatalogError:
    text = str(exc)
    if "Unsupported global" in text or "Weights only load failed" in text and "GLOBAL" in text:
        # weights_only refuses arbitrary objects (a whole nn.Module, argparse.Namespace, ...)
        return CatalogError(
            f"checkpoint {path} holds objects other than tensors (torch.load with weights_only=True"
            " refuses them); save its state_dict alone (torch.save(model.state_dict())) or as"
            " .safetensors and ingest that")
    # torch's message is a page long; its one useful line follows "WeightsUnpickler error:".
    _, _, reason = text.partition("WeightsUnpickler error:")
    lines = [line.strip() for line in reason.splitlines() if line.strip()]
    return _not_a_checkpoint(path, lines[0] if lines else "unpickling failed")


def _not_a_checkpoint(path: Path, reason: str) -> CatalogError:
    return CatalogError(f"cannot read checkpoint {path}: not a safetensors or torch file ({reason});"
                        " the file is corrupt or truncated: get it again")
