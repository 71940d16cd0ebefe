"""Find the depthwise convolutions of a timm (torch) model and turn their tensors into kernels.

Works on a model built on the meta device (shapes only: the fast path reads the values from a
file) as well as on a real one. A depthwise conv here is a 2-D convolution with
groups == in_channels > 1 and a spatial kernel larger than 1x1, with any depth multiplier
(out_channels = m * in_channels). 1x1 depthwise convs are per-channel scales (e.g. the scale
branches of MobileOne blocks), not spatial kernels, so they are skipped.
"""
from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

# Names that say where a layer sits, tried in order; the first that matches wins.
# (stage, block) pairs: "stages.2.blocks.5", "stages.0.3", "layers.1.0", resnet "layer3.1",
# efficientnet-style "blocks.4.2"; then a stage alone ("stages.1.downsample") or a block alone
# ("blocks.7" in convmixer, "features.3" in rexnet).
_STAGE_BLOCK = (
    re.compile(r"(?:^|\.)(?:stages?|layers|levels)[._](\d+)\.(?:blocks?\.)?(\d+)(?:\.|$)"),
    re.compile(r"(?:^|\.)layer(\d+)\.(\d+)(?:\.|$)"),
    re.compile(r"(?:^|\.)blocks\.(\d+)\.(\d+)(?:\.|$)"),
)
_STAGE_ONLY = re.compile(r"(?:^|\.)(?:stages?|layers|levels)[._](\d+)(?:\.|$)")
_BLOCK_ONLY = re.compile(r"(?:^|\.)(?:blocks|features)\.(\d+)(?:\.|$)")

_REPARAM_METHODS = ("reparameterize", "fuse", "switch_to_deploy")


@dataclass(frozen=True)
class DepthwiseSpec:
    """One depthwise module as found in a model: where its weight lives and what it looks like."""

    name: str                       # module path from named_modules()
    param_name: str                 # state_dict key of its weight
    param_shape: tuple[int, ...]    # expected shape of that tensor
    kernel_size: tuple[int, int]
    out_channels: int
    num_experts: int | None         # CondConv: one kernel set per expert
    meta: dict[str, Any]


def stage_block(name: str) -> tuple[int | None, int | None]:
    """(stage, block) parsed from a module path when the path tells, else None for each."""
    for pattern in _STAGE_BLOCK:
        match = pattern.search(name)
        if match:
            return int(match.group(1)), int(match.group(2))
    stage = _STAGE_ONLY.search(name)
    if stage:
        return int(stage.group(1)), None
    block = _BLOCK_ONLY.search(name)
    return None, (int(block.group(1)) if block else None)


def has_reparam_blocks(model: nn.Module) -> bool:
    """True when timm.utils.reparameterize_model would change something in this model."""
    return any(hasattr(m, attr) for m in model.modules() for attr in _REPARAM_METHODS)


def _is_spatial_depthwise(groups: int, in_channels: int, kernel_size: tuple[int, ...]) -> bool:
    return in_channels > 1 and groups == in_channels and kernel_size[0] * kernel_size[1] > 1


def _padding(module: nn.Module) -> list[int] | str:
    # timm's "SAME" convs pad dynamically at forward time; their .padding attribute says 0.
    from timm.layers import Conv2dSame

    dynamic = getattr(module, "same_pad", False) or getattr(module, "dynamic_padding", False)
    if isinstance(module, Conv2dSame) or dynamic:
        return "same"
    return module.padding if isinstance(module.padding, str) else list(module.padding)


def _common_meta(name: str, module: nn.Module, kind: str, reparam: str | None) -> dict[str, Any]:
    stage, block = stage_block(name)
    return {
        "kind": kind,
        "conv_class": type(module).__name__,
        "stride": list(module.stride),
        "dilation": list(module.dilation),
        "padding": _padding(module),
        "in_channels": int(module.in_channels),
        "out_channels": int(module.out_channels),
        "depth_multiplier": int(module.out_channels) // int(module.in_channels),
        "groups": int(module.groups),
        "bias": module.bias is not None,
        "stage": stage,
        "block": block,
        "reparam": reparam,
        "bn_folded": False,
        "param_name": f"{name}.weight",
        "mixed_parent": None,
        "num_experts": None,
    }


def find_depthwise(model: nn.Module, reparam: str | None = None,
                   fused: Collection[str] = ()) -> list[DepthwiseSpec]:
    """Every spatial depthwise conv of `model`, in named_modules() order.

    `reparam` ("fused", "unfused" or None) is copied into each layer's meta; modules named in
    `fused` were made by reparameterisation (branches and BatchNorm folded into the kernel).
    """
    from timm.layers import CondConv2d, MixedConv2d

    modules = dict(model.named_modules())
    specs: list[DepthwiseSpec] = []
    for name, module in modules.items():
        if isinstance(module, CondConv2d):
            if not _is_spatial_depthwise(module.groups, module.in_channels, module.kernel_size):
                continue
            meta = _common_meta(name, module, "condconv", reparam)
            meta["num_experts"] = int(module.num_experts)
            meta["bn_folded"] = name in fused
            specs.append(DepthwiseSpec(
                name, f"{name}.weight", tuple(module.weight.shape), tuple(module.kernel_size),
                int(module.out_channels), int(module.num_experts), meta))
        elif isinstance(module, nn.Conv2d):
            if module.weight.shape[1] != 1 or not _is_spatial_depthwise(
                    module.groups, module.in_channels, module.kernel_size):
                continue
            parent = name.rpartition(".")[0]
            mixed = isinstance(modules.get(parent), MixedConv2d)
            meta = _common_meta(name, module, "mixed" if mixed else "conv2d", reparam)
            meta["mixed_parent"] = parent if mixed else None
            meta["bn_folded"] = name in fused
            specs.append(DepthwiseSpec(
                name, f"{name}.weight", tuple(module.weight.shape), tuple(module.kernel_size),
                int(module.out_channels), None, meta))
    return specs


def kernels_from_tensor(spec: DepthwiseSpec, tensor: torch.Tensor) -> list[tuple[int | None, np.ndarray]]:
    """(expert, (C, kh, kw) float32 array) pairs, values exactly those of `tensor`.

    fp16 / bf16 widen to float32 exactly; float32 is copied bit for bit. The copy also detaches
    the array from memory-mapped checkpoint storage.
    """
    kh, kw = spec.kernel_size
    values = tensor.detach().to("cpu")
    if values.dtype != torch.float32:
        values = values.to(torch.float32)
    if spec.num_experts is None:
        array = values.reshape(spec.out_channels, kh, kw).numpy().copy()
        return [(None, array)]
    # CondConv stores each expert flattened, row-major over (out, in/groups=1, kh, kw).
    experts = values.reshape(spec.num_experts, spec.out_channels, kh, kw).numpy()
    return [(e, experts[e].copy()) for e in range(spec.num_experts)]


def module_weight(model: nn.Module, spec: DepthwiseSpec) -> torch.Tensor:
    """The weight tensor of a spec's module in a real (non-meta) model."""
    return model.get_submodule(spec.name).weight
