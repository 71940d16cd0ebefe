"""Read a timm architecture's depthwise kernels: the work behind TimmAdapter.read().

Fast path (checkpoint, cache, ranged read): the architecture is built on the meta device (no
memory, no init), its depthwise modules give the tensor names, and only those tensors are read
from the file (or fetched by byte ranges, adapters/ranged.py). A real model is built only when it must be: --reparam on a model with reparameterisable
blocks, or a checkpoint in another layout that timm's own filter has to convert.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from types import MappingProxyType
from typing import Any

import torch
from torch import nn

from kernel_catalog.adapters.base import DepthwiseLayer, Extraction, IngestOptions, select_by_name
from kernel_catalog.adapters.ranged import FullDownloadNeeded, ranged_allowed
from kernel_catalog.adapters.timm._checkpoint import RemoteWeightFile, WeightFile, describe, mismatches
from kernel_catalog.adapters import hub
from kernel_catalog.adapters.hub import RemoteWeights
from kernel_catalog.adapters.timm._hub import fetch_weights, open_ranged_weights, resolve_weights
from kernel_catalog.adapters.timm._layers import (DepthwiseSpec, find_depthwise, has_reparam_blocks,
                                  kernels_from_tensor, module_weight)
from kernel_catalog.adapters.timm._names import TimmName, cfg_to_json, parse_name, pretrained_cfg
from kernel_catalog.errors import CatalogError


def read_timm(source: str, options: IngestOptions, plan: RemoteWeights | None = None,
              remote: Any = None) -> Extraction:
    """The Extraction for a timm name under the ingest options (see TimmAdapter).

    `plan` is the resolved published weights (TimmAdapter.resolve), downloaded when missing;
    `remote` its file opened for ranged reads by TimmAdapter.fetch (RemoteSafetensors), if it was.
    """
    import timm

    name = parse_name(source)
    meta: dict[str, Any] = {"arch": name.arch, "tag": name.tag, "pretrained_cfg": None,
                            "timm_version": timm.__version__}
    if options.random_init:
        return _read_random(name, options, meta)
    shape = layout(name)
    if not shape.found:                 # say so before looking for weights
        raise _no_depthwise(name)
    if options.checkpoint is None:
        cfg = pretrained_cfg(name)
        if plan is None:
            plan = resolve_weights(name.source, cfg)
            plan = replace(plan, extra={**plan.extra, "ranged": ranged_allowed(options.full_download)})
        remote = remote if remote is not None else open_ranged_weights(plan)
        if remote is not None:
            try:
                return _read_ranged(name, shape, plan, remote, cfg, options, dict(meta))
            except FullDownloadNeeded:
                pass                        # e.g. a tensor of a dtype read here does not decode
    origin, path = _locate_weights(name, options, meta, plan)
    return _read_file(name, shape, WeightFile(path), origin, options, meta)


def _read_ranged(name: TimmName, shape: "Layout", plan: RemoteWeights,
                 remote: Any, cfg: Any, options: IngestOptions, meta: dict[str, Any]) -> Extraction:
    """The published weights read by byte ranges: the fast path over the header's shapes."""
    meta.update(weights="hf-hub" if plan.kind == "hf" else "url", file=remote.url, hf_revision=plan.revision,
                pretrained_cfg=cfg_to_json(cfg) if cfg is not None else None)
    extraction = _read_file(name, shape, RemoteWeightFile(remote), plan.repo, options, meta)
    extraction.meta["hub"] = hub.provenance(plan, {}, {plan.files[0].name: remote})
    return extraction


def _locate_weights(name: TimmName, options: IngestOptions, meta: dict[str, Any],
                    plan: RemoteWeights | None) -> tuple[str, Path]:
    """(origin to record, file to read) for --checkpoint or the published weights; fills provenance."""
    if options.checkpoint is not None:
        path = Path(options.checkpoint).expanduser().resolve()
        # Without a tag the default cfg would describe some release, not the user's file.
        cfg = pretrained_cfg(name) if name.tag else None
        origin = str(path)
        meta.update(weights="checkpoint", file=origin)
    else:
        cfg = pretrained_cfg(name)
        plan = plan or resolve_weights(name.source, cfg)
        path = fetch_weights(plan)
        provenance = hub.provenance(plan, {plan.files[0].name: path})
        origin = plan.repo
        meta.update(weights=("hf-cache" if plan.cached else "hf-hub") if plan.kind == "hf" else "url", file=str(path), hub=provenance,
                    hf_revision=plan.revision)
    if cfg is not None:
        meta["pretrained_cfg"] = cfg_to_json(cfg)
    return origin, path


class _SkipMetaInit(torch.overrides.TorchFunctionMode):
    """Turn in-place ops on meta tensors (the weight-init calls) into no-ops.

    A meta tensor has shapes but no values, so initialising it changes nothing observable;
    yet torch runs those ops through Python decompositions, which is most of the time of
    building a model on the meta device (convnext_base: ~0.3 s of ~0.35 s).
    """

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if (name.endswith("_") and not name.endswith("__") and args
                and isinstance(args[0], torch.Tensor) and args[0].is_meta):
            return args[0]
        return func(*args, **(kwargs or {}))


def _build(name: TimmName, device: str) -> nn.Module:
    return _build_named(name.build_name, device)


def _build_named(build_name: str, device: str) -> nn.Module:
    import timm

    with torch.device(device):
        if device != "meta":
            return timm.create_model(build_name, pretrained=False)
        with _SkipMetaInit():
            return timm.create_model(build_name, pretrained=False)


@dataclass(frozen=True)
class Layout:
    """What the fast path needs of an architecture, from its build on the meta device: its
    depthwise modules, the state_dict shapes it expects, its classifier's key prefixes."""

    found: tuple[DepthwiseSpec, ...]
    expected: Mapping[str, tuple[int, ...]]
    loose: tuple[str, ...]


def layout(name: TimmName) -> Layout:
    """The architecture's Layout, built once per process for each (build name, timm version):
    the meta-device build is ~0.05-0.3 s, the same for every ingest of that architecture."""
    import timm

    return _layout(name.build_name, timm.__version__)


@lru_cache(maxsize=64)
def _layout(build_name: str, timm_version: str) -> Layout:
    skeleton = _build_named(build_name, "meta")
    found = find_depthwise(skeleton, "unfused" if has_reparam_blocks(skeleton) else None)
    expected = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
    return Layout(tuple(found), MappingProxyType(expected), _classifier_prefixes(skeleton))


def prebuild(source: str) -> None:
    """Build the Layout of a timm name now (TimmAdapter.fetch runs this beside the transfer);
    any failure is left for read() to report."""
    try:
        layout(parse_name(source))
    except Exception:  # noqa: BLE001 -- read() builds again and raises the error the user sees
        pass


def _read_random(name: TimmName, options: IngestOptions, meta: dict[str, Any]) -> Extraction:
    # fork_rng: seed timm's init without touching the caller's global RNG state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(options.seed)
        model = _build(name, "cpu")
    model.eval()
    layers, reparam = _from_real_model(name, model, options)
    meta.update(weights="random-init", seed=options.seed, reparam=reparam)
    return Extraction(name.source, f"random-init(seed={options.seed})", False, layers, meta)


def _read_file(name: TimmName, shape: Layout, opened: WeightFile,
               origin: str, options: IngestOptions, meta: dict[str, Any]) -> Extraction:
    """Fast path: only the depthwise tensors of the layout leave the file, unless a real model is needed."""
    found, loose, expected = list(shape.found), shape.loose, dict(shape.expected)
    reparam = found[0].meta["reparam"]
    with opened as weights:
        meta["state_dict_key"] = weights.wrapper_key
        problems = mismatches(expected, weights.shapes, loose)
        # A weight that is not a plain state_dict entry (e.g. a parametrization) needs the module.
        direct = all(spec.param_name in expected for spec in found)
        if problems or (options.reparam and reparam) or not direct:
            model = _load_real(name, weights, problems, loose)
            layers, reparam = _from_real_model(name, model, options)
        else:
            specs = _select(name, found, options)
            layers = _layers(specs, lambda spec: weights.get(spec.param_name))
    meta.update(reparam=reparam, weights_conversion="timm checkpoint filter" if problems else None)
    return Extraction(name.source, origin, True, layers, meta)


def _classifier_prefixes(model: nn.Module) -> tuple[str, ...]:
    classifier = (getattr(model, "pretrained_cfg", None) or {}).get("classifier") or ()
    names = (classifier,) if isinstance(classifier, str) else tuple(classifier)
    return tuple(f"{n}." for n in names)


def _load_real(name: TimmName, weights: WeightFile, problems: list[str],
               loose: tuple[str, ...]) -> nn.Module:
    """A real model holding the file's weights; CatalogError when they do not fit."""
    import timm

    state = weights.state_dict()
    if problems:
        # Maybe an original release layout (e.g. FB ConvNeXt) that timm's own filter converts.
        try:
            model = timm.create_model(name.build_name, pretrained=True,
                                      pretrained_cfg_overlay={"state_dict": state})
        except Exception:  # any failure of the conversion means the same thing to the user
            raise CatalogError(f"checkpoint {weights.path} does not match architecture "
                               f"{name.build_name}: {describe(problems)}") from None
        return model.eval()
    model = _build(name, "cpu")
    current = model.state_dict()
    # A fine-tune with another class count: its head does not matter for the kernels.
    state = {k: v for k, v in state.items()
             if not (k.startswith(loose) and k in current and current[k].shape != v.shape)}
    model.load_state_dict(state, strict=False)
    return model.eval()


def _from_real_model(name: TimmName, model: nn.Module,
                     options: IngestOptions) -> tuple[list[DepthwiseLayer], str | None]:
    """Layers of a real model, fused first when asked and possible; and its reparam state."""
    if not has_reparam_blocks(model):
        reparam, fused = None, set[str]()
    elif options.reparam:
        from timm.utils import reparameterize_model

        before = list(model.modules())      # kept alive so their ids cannot be reused
        old_ids = {id(m) for m in before}
        with torch.no_grad():
            model = reparameterize_model(model, inplace=True)
        fused = {n for n, m in model.named_modules() if id(m) not in old_ids}
        reparam = "fused"
    else:
        reparam, fused = "unfused", set[str]()
    specs = _select(name, find_depthwise(model, reparam, fused), options)
    return _layers(specs, lambda spec: module_weight(model, spec)), reparam


def _no_depthwise(name: TimmName) -> CatalogError:
    return CatalogError(
        f"model {name.source} has no depthwise convolution (no Conv2d with groups == "
        "in_channels and a kernel larger than 1x1)")


def _select(name: TimmName, specs: list[DepthwiseSpec], options: IngestOptions) -> list[DepthwiseSpec]:
    """The specs --include/--exclude keep; CatalogError when none (or none at all) is left."""
    if not specs:
        raise _no_depthwise(name)
    kept = [s for s in specs if select_by_name(s.name, options)]
    if not kept:
        raise CatalogError(
            f"no depthwise layer of {name.source} matches --include/--exclude "
            f"({len(specs)} layers, e.g. '{specs[0].name}')")
    return kept


def _layers(specs: list[DepthwiseSpec],
            tensor_of: Callable[[DepthwiseSpec], torch.Tensor]) -> list[DepthwiseLayer]:
    layers: list[DepthwiseLayer] = []
    for spec in specs:
        tensor = tensor_of(spec)
        dtype = str(tensor.dtype).removeprefix("torch.")
        for expert, kernels in kernels_from_tensor(spec, tensor):
            layers.append(DepthwiseLayer(spec.name, kernels, dict(spec.meta, dtype=dtype), expert))
    return layers
