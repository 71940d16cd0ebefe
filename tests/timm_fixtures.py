"""Real (small) timm models for the timm adapter tests: random init, saved as real files.

`count_depthwise_kernels_independently` is deliberately written apart from the adapter's
detection (weight shapes instead of module attributes) so the two can check each other.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn

from kernel_catalog.adapters.base import DepthwiseLayer, Extraction

LAYER_META_KEYS = {"kind", "conv_class", "stride", "dilation", "padding", "in_channels",
                   "out_channels", "depth_multiplier", "groups", "bias", "stage", "block",
                   "reparam", "bn_folded", "param_name", "mixed_parent", "num_experts", "dtype"}


def build_random_model(arch: str, seed: int = 0) -> nn.Module:
    """timm.create_model(arch) under torch.manual_seed(seed), in eval mode; global RNG untouched."""
    import timm

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = timm.create_model(arch, pretrained=False)
    return model.eval()


def plain_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """state_dict with every tensor in its own contiguous storage (safetensors refuses sharing)."""
    return {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}


def save_random_model(arch: str, path: str | os.PathLike[str], seed: int = 0) -> nn.Module:
    """Build `arch` with random init and save its state_dict as safetensors; return the model."""
    model = build_random_model(arch, seed)
    save_file(plain_state_dict(model), str(path))
    return model


def count_depthwise_kernels_independently(model: nn.Module) -> int:
    """Number of spatial depthwise kernels (one per output channel, per CondConv expert).

    A conv counts when every input channel is its own group (weight.shape[1] == 1 with
    groups equal to the input channels) and its window is larger than one pixel.
    """
    from timm.layers import CondConv2d

    total = 0
    for module in model.modules():
        if isinstance(module, CondConv2d):
            per_expert = module.weight.shape[1]          # out * (in / groups) * kh * kw, flattened
            window = math.prod(module.kernel_size)
            if module.groups == module.in_channels > 1 and window > 1:
                total += module.weight.shape[0] * per_expert // window
        elif isinstance(module, nn.Conv2d):
            out_ch, in_per_group, kh, kw = module.weight.shape
            if in_per_group == 1 and module.groups == module.in_channels > 1 and kh * kw > 1:
                total += out_ch
    return total


def write_hf_cache(hub_dir: Path, repo_id: str, state: dict[str, torch.Tensor],
                   filename: str = "model.safetensors") -> Path:
    """Put `state` into a Hugging Face hub cache the way huggingface_hub lays one out.

    models--{org}--{name}/blobs/<sha256> holds the bytes, snapshots/<commit>/<filename> is a
    relative symlink to it and refs/main names the commit. Returns the snapshot path.
    """
    repo = hub_dir / ("models--" + repo_id.replace("/", "--"))
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    staging = repo / "blobs" / "staging.tmp"
    if filename.endswith(".safetensors"):
        save_file(state, str(staging))
    else:
        torch.save(state, staging)
    digest = hashlib.sha256(staging.read_bytes()).hexdigest()
    blob = repo / "blobs" / digest
    staging.rename(blob)
    commit = hashlib.sha1(digest.encode()).hexdigest()      # any 40-hex revision will do
    snapshot = repo / "snapshots" / commit / filename
    snapshot.parent.mkdir(parents=True, exist_ok=True)
    snapshot.symlink_to(os.path.relpath(blob, snapshot.parent))
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return snapshot


def bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)


def _expected_kernels(state: dict[str, torch.Tensor], layer: DepthwiseLayer) -> np.ndarray:
    """The layer's kernels cut straight from the model's own tensor, as (C, kh, kw)."""
    tensor = state[layer.meta["param_name"]].float()
    kh, kw = layer.weights.shape[1:]
    if layer.expert is None:
        return tensor.reshape(-1, kh, kw).numpy()
    return tensor[layer.expert].reshape(-1, kh, kw).numpy()


def check_extraction_against_model(extraction: Extraction, model: nn.Module) -> None:
    """Assert the adapter contract: no kernel missed, values bit-exact, metadata complete."""
    state = model.state_dict()
    modules = dict(model.named_modules())
    total = 0
    for layer in extraction.layers:
        assert layer.weights.dtype == np.float32 and layer.weights.ndim == 3
        np.testing.assert_array_equal(bits(layer.weights), bits(_expected_kernels(state, layer)))
        total += layer.weights.shape[0]
        assert LAYER_META_KEYS <= layer.meta.keys()
        module = modules[layer.name]
        meta = layer.meta
        assert meta["stride"] == list(module.stride) and meta["dilation"] == list(module.dilation)
        assert meta["out_channels"] == layer.weights.shape[0] == module.out_channels
        assert meta["depth_multiplier"] * meta["in_channels"] == meta["out_channels"]
        assert meta["groups"] == meta["in_channels"] > 1
        assert meta["bias"] == (module.bias is not None)
        assert tuple(layer.weights.shape[1:]) == tuple(module.kernel_size)
        assert meta["kind"] in {"conv2d", "mixed", "condconv"}
        assert (layer.expert is not None) == (meta["kind"] == "condconv")
    assert total == count_depthwise_kernels_independently(model)
    # Layers come in named_modules() order (experts of one CondConv stay together).
    order = {name: i for i, name in enumerate(modules)}
    positions = [order[layer.name] for layer in extraction.layers]
    assert positions == sorted(positions)
    json.dumps(extraction.meta)
    json.dumps([layer.meta for layer in extraction.layers])


def to_fb_convnext_layout(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """timm ConvNeXt keys back to the original facebookresearch/ConvNeXt release layout."""
    out = {}
    for key, value in state.items():
        key = key.replace("stem.", "downsample_layers.0.")
        key = re.sub(r"stages\.(\d+)\.downsample\.(\d+)", r"downsample_layers.\1.\2", key)
        key = re.sub(r"stages\.(\d+)\.blocks\.(\d+)", r"stages.\1.\2", key)
        key = key.replace("conv_dw", "dwconv").replace("mlp.fc", "pwconv")
        key = key.replace("head.fc.", "head.").replace("head.norm.", "norm.")
        out[key] = value
    return out
