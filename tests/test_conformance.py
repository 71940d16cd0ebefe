"""The conformance test every built-in adapter passes (and a plugin author can copy).

For each adapter, on a real source of its kind: the adapter is registered through the entry
points, every depthwise kernel of the source is found (count from an independent reader),
values are bit-identical to the source tensors, metadata is complete and JSON-safe, and the
catalog gives the same stable kernel ids when the same source is ingested into two catalogs.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from safetensors.numpy import load_file

from kernel_catalog import adapters as registry
from kernel_catalog.adapters.base import IngestOptions
from kernel_catalog.ingest import ingest
from kernel_catalog.store import Catalog

from .conftest import CLS_ONNX, FIXTURES
from .hub_fixtures import empty_hub, shard  # noqa: F401 (fixture)
from .test_adapter_tflite import litert_depthwise
from .timm_fixtures import save_random_model


@dataclass
class Case:
    adapter: str
    make: Callable[..., tuple[str, IngestOptions, dict[str, np.ndarray]]]   # (tmp, request) -> source, options, reference


def _onnx(tmp: Path, request):
    """Reference: every Conv whose initializer/Constant weight is (C,1,kh,kw), group == C_in > 1."""
    graph = onnx.load(str(CLS_ONNX)).graph
    tensors = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            tensors[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    reference = {}
    for node in graph.node:
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        w = tensors.get(node.input[1]) if node.op_type == "Conv" else None
        if w is not None and w.shape[1] == 1 and group > 1 and w.shape[2] * w.shape[3] > 1:
            reference[node.name or node.input[1]] = w[:, 0]
    return str(CLS_ONNX), IngestOptions(), reference


def _statedict(tmp: Path, request):
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3), torch.nn.Conv2d(16, 16, 7, groups=16),
        torch.nn.Conv2d(16, 32, 5, groups=16), torch.nn.Conv2d(32, 8, 1))
    path = tmp / "net.safetensors"
    from safetensors.torch import save_file
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    reference = {k.removesuffix(".weight"): v[:, 0] for k, v in load_file(str(path)).items()
                 if v.ndim == 4 and v.shape[1] == 1 and v.shape[2] * v.shape[3] > 1}
    return str(path), IngestOptions(), reference


def _kernelbank(tmp: Path, request):
    rng = np.random.default_rng(3)
    arrays = {"weights_7x7": rng.normal(size=(40, 7, 7)).astype(np.float32),
              "weights_1x5": rng.normal(size=(12, 1, 1, 5)).astype(np.float32)}
    path = tmp / "bank.npz"
    np.savez(path, **arrays)
    return str(path), IngestOptions(), {k: v.reshape(v.shape[0], v.shape[-2], v.shape[-1]) for k, v in arrays.items()}


def _timm(tmp: Path, request):
    path = tmp / "mixnet_s.safetensors"
    model = save_random_model("mixnet_s", path)
    reference = {name: module.weight.detach().numpy()[:, 0] for name, module in model.named_modules()
                 if isinstance(module, torch.nn.Conv2d) and module.weight.shape[1] == 1
                 and module.groups == module.in_channels > 1 and module.weight.shape[2] * module.weight.shape[3] > 1}
    return "mixnet_s", IngestOptions(checkpoint=path), reference


def _tflite(tmp: Path, request):
    """Reference: LiteRT's own interpreter reads each DEPTHWISE_CONV_2D filter (float16 in the file)."""
    path = FIXTURES / "selfie_segmentation.tflite"
    return str(path), IngestOptions(), litert_depthwise(path)


def _hf(tmp: Path, request):
    """A sharded safetensors repo on the local hub; reference: safetensors' own reader, per shard."""
    from safetensors.numpy import load

    hub = request.getfixturevalue("empty_hub")
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3), torch.nn.Conv2d(16, 16, 7, groups=16), torch.nn.Conv2d(16, 32, 1),
        torch.nn.Conv2d(32, 32, 5, groups=32), torch.nn.Conv2d(32, 8, 1))
    files = shard({k: v.contiguous() for k, v in model.state_dict().items()}, n=2)
    hub.add("acme/tiny-dw", files)
    reference = {}
    for name, data in files.items():
        if name.endswith(".safetensors"):
            reference.update({k.removesuffix(".weight"): v[:, 0] for k, v in load(data).items()
                              if v.ndim == 4 and v.shape[1] == 1 and v.shape[2] * v.shape[3] > 1})
    return "hf:acme/tiny-dw", IngestOptions(), reference


CASES = [Case("onnx", _onnx), Case("statedict", _statedict), Case("kernelbank", _kernelbank), Case("timm", _timm),
         Case("tflite", _tflite), Case("hf", _hf)]


def test_every_builtin_adapter_has_a_conformance_case():
    builtin = {ep.name for ep in entry_points(group=registry.GROUP) if ep.dist and ep.dist.name == "kernel-catalog"}
    assert builtin == {case.adapter for case in CASES}


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.adapter)
def test_adapter_conformance(case: Case, tmp_path, request):
    source, options, reference = case.make(tmp_path, request)
    adapter = registry.find_adapter(source, options)
    assert adapter.name == case.adapter                       # chosen through the registry
    extraction = adapter.read(source, options)

    # nothing missed, nothing extra, values bit-identical (CondConv-free sources: one record per layer)
    found = {layer.name: layer.weights for layer in extraction.layers}
    assert set(found) == set(reference)
    for name, expected in reference.items():
        got = found[name]
        assert got.dtype == np.float32 and got.shape == expected.shape
        assert got.tobytes() == np.ascontiguousarray(expected, np.float32).tobytes(), name

    # metadata complete and JSON-safe
    assert extraction.model and extraction.source and isinstance(extraction.trained, bool)
    json.dumps(extraction.meta)
    for layer in extraction.layers:
        json.dumps(layer.meta)
        assert layer.meta.get("kind"), layer.name

    # stable ids through the catalog: two catalogs, the same ids for the same kernels
    ids = []
    for name in ("one", "two"):
        catalog = Catalog(tmp_path / name)
        result = ingest(catalog, source, options)
        assert result.n_kernels == sum(w.shape[0] for w in reference.values())
        ids.append(catalog.sql("SELECT layer, channel, kernel_id FROM kernels ORDER BY ALL").to_pylist())
    assert ids[0] == ids[1]
