"""Read trained depthwise kernels out of an ONNX graph, without running it.

A `Conv` node is taken as a depthwise convolution when

* its weight (input 1) is a constant: a graph initializer or the `value` of a `Constant`
  node, possibly passed through `Identity` nodes;
* the weight has shape (C, 1, kh, kw) and the attribute `group` is > 1. By the ONNX Conv
  definition C_in = group * shape[1], so shape[1] == 1 means one input channel per group:
  group == C_in, and C = m * C_in for a depth multiplier m = C // group.
  A `group == 1` conv whose weight has shape[1] == 1 is an ordinary conv on a single-channel
  input (a grey-scale stem), not a depthwise one, and is not taken;
* kh * kw > 1. A 1x1 depthwise conv is a per-channel scale, not a spatial kernel: skipped.

Weights come from `onnx.numpy_helper.to_array` and are converted to float32 only when they are
not float32 already, so float32 models are bit-identical and float16 is upcast exactly (float64
would be rounded; no such model is known). Only the main graph is searched (not the bodies of
`If`/`Loop`). External-data tensors are read here, one by one, from beside the .onnx file (onnx
never opens them): every location must stay inside the model's folder (links followed) and every
offset/length inside its file, all checked before the first byte is read.

Batch norm: the catalog records per layer whether batch norm is *folded into the kernel*
(`bn_folded`). It is False when a `BatchNormalization` node consumes the conv output (through
`Identity` nodes only), True otherwise; `followed_by` gives the op type of the first consumer.
This is a graph reading, not a proof: a conv of a network trained without batch norm also reads
"folded". Measured on the RapidOCR models (Apache-2.0, see kernel_catalog/demo/rapidocr.py):

======================================  =========================  ==========================
model                                   depthwise kernels          batch norm
======================================  =========================  ==========================
ch_ppocr_mobile_v2.0_cls_infer          64 3x3 + 800 5x5           separate (11 of 11 layers)
ch_PP-OCRv4_det_infer                   336 3x3 + 2112 5x5         folded (conv bias, then Mul)
ch_PP-OCRv4_rec_infer                   432 3x3 + 2640 5x5         folded (conv bias, then Mul)
PP-OCRv6_det_small                      2160 3x3 + 384 7x7         folded (bias as an Add)
PP-OCRv6_rec_small                      2496 3x3 + 120 1x7         mixed: the 1x7 layer has BN
======================================  =========================  ==========================
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from kernel_catalog.adapters._untrusted import (check_nbytes, check_span, contained_file, element_count,
                                                refuse_corrupt)
from kernel_catalog.adapters.base import DepthwiseLayer, Extraction, IngestOptions, select_by_name
from kernel_catalog.errors import CatalogError

_PASS_THROUGH = {"Identity"}
# TensorProto numbers (fixed by the ONNX spec; onnx is imported only when a file is read):
# bytes per element of the types read from external files (FLOAT, FLOAT16, DOUBLE, BFLOAT16).
_EXTERNAL = 1
_EXTERNAL_ITEMSIZE = {1: 4, 10: 2, 11: 8, 16: 2}


class OnnxAdapter:
    """Depthwise conv kernels from the constant weights of an .onnx file."""

    name = "onnx"
    version = "1.0.0"
    description = "depthwise Conv nodes (group > 1, weight (C,1,kh,kw)) of an .onnx graph"
    priority = 50

    def can_read(self, source: str, options: IngestOptions) -> bool:
        # Claim by suffix even when the file is missing, so read() can say so clearly.
        return Path(source).suffix.lower() == ".onnx"

    def read(self, source: str, options: IngestOptions) -> Extraction:
        path = Path(source).expanduser()
        with refuse_corrupt(path, "ONNX model"):
            return _read(path, options)


def _read(path: Path, options: IngestOptions) -> Extraction:
    """The depthwise layers of one .onnx file (`OnnxAdapter.read` inside its error edge)."""
    model = load_model(path)
    graph = model.graph
    tensors = constant_tensors(graph)
    for tensor in tensors.values():     # every external reference checked before any is read
        if tensor.data_location == _EXTERNAL:
            external_span(tensor, path)
    consumers = consumer_map(graph)

    layers: list[DepthwiseLayer] = []
    seen: set[str] = set()
    for node in graph.node:
        found = depthwise_weight(node, tensors)
        if found is None:
            continue
        weight_name, tensor = found
        name = node.name or weight_name
        if name in seen:            # node names need not be unique in ONNX
            name = f"{name}/{weight_name}"
        seen.add(name)
        if not select_by_name(name, options):
            continue
        weights, dtype = _to_float32(tensor, path)
        meta = conv_meta(node, weights.shape, consumers)
        meta.update(weight_name=weight_name, dtype=dtype)
        c, _, kh, kw = weights.shape
        layers.append(DepthwiseLayer(name=name, weights=weights.reshape(c, kh, kw), meta=meta))

    if not layers:
        filtered = ", after --include/--exclude" if options.include or options.exclude else ""
        raise CatalogError(
            f"{path}: no depthwise convolution found (Conv with group > 1, weight (C,1,kh,kw),"
            f" kh*kw > 1{filtered});"
            " check the file, or the --include/--exclude patterns")
    folded = {layer.meta["bn_folded"] for layer in layers}
    return Extraction(
        model=path.stem,
        source=str(path.resolve()),
        trained=True,
        layers=layers,
        meta={
            "format": "onnx",
            "producer": model.producer_name,
            "producer_version": model.producer_version,
            "opset": _default_opset(model),
            "bn_folded": folded.pop() if len(folded) == 1 else "mixed",
        },
    )


def load_model(path: Path) -> Any:
    """onnx.load without external data (read later by `external_bytes`, within the model's folder)."""
    import onnx

    if not path.is_file():
        raise CatalogError(f"{path}: ONNX file not found; check the path")
    model = onnx.load(str(path), load_external_data=False)   # a parse error: refuse_corrupt says so
    if not model.HasField("graph"):     # an empty file parses as an empty ModelProto
        raise CatalogError(f"{path}: not an ONNX model (no graph); check the file")
    return model


def constant_tensors(graph: Any) -> dict[str, Any]:
    """Name -> TensorProto for initializers and Constant nodes, followed through Identity."""
    tensors = {t.name: t for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    tensors[node.output[0]] = attr.t
        elif node.op_type in _PASS_THROUGH and node.input and node.input[0] in tensors:
            tensors[node.output[0]] = tensors[node.input[0]]
    return tensors


def consumer_map(graph: Any) -> dict[str, list[Any]]:
    """Tensor name -> the nodes that read it, in graph order."""
    consumers: dict[str, list[Any]] = defaultdict(list)
    for node in graph.node:
        for name in node.input:
            consumers[name].append(node)
    return consumers


def depthwise_weight(node: Any, tensors: dict[str, Any]) -> tuple[str, Any] | None:
    """(weight name, TensorProto) when `node` is a spatial depthwise Conv, else None."""
    if node.op_type != "Conv" or len(node.input) < 2 or node.input[1] not in tensors:
        return None
    tensor = tensors[node.input[1]]
    dims = tuple(tensor.dims)
    group = _attr(node, "group", 1)
    if len(dims) != 4 or dims[1] != 1 or group <= 1 or dims[2] * dims[3] <= 1:
        return None
    return node.input[1], tensor


def conv_meta(node: Any, shape: tuple[int, ...], consumers: dict[str, list[Any]]) -> dict[str, Any]:
    """JSON-ready facts about one depthwise Conv node."""
    group = _attr(node, "group", 1)
    users = _effective_consumers(node.output[0], consumers)
    meta: dict[str, Any] = {
        "kind": "conv2d",
        "stride": list(_attr(node, "strides", [1, 1])),
        "dilation": list(_attr(node, "dilations", [1, 1])),
        "padding": list(_attr(node, "pads", [0, 0, 0, 0])),
        "in_channels": group,
        "out_channels": shape[0],
        "depth_multiplier": shape[0] // group,
        "bias": len(node.input) > 2 and bool(node.input[2]),
        "bn_folded": not any(u.op_type == "BatchNormalization" for u in users),
        "followed_by": users[0].op_type if users else None,
    }
    auto_pad = _attr(node, "auto_pad", b"NOTSET")
    if auto_pad not in (b"NOTSET", "NOTSET"):
        meta["auto_pad"] = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    return meta


def _effective_consumers(output: str, consumers: dict[str, list[Any]]) -> list[Any]:
    """Consumers of `output`, looking through Identity nodes (exporters insert many)."""
    found: list[Any] = []
    for user in consumers.get(output, []):
        if user.op_type in _PASS_THROUGH:
            found.extend(_effective_consumers(user.output[0], consumers))
        else:
            found.append(user)
    return found


def _to_float32(tensor: Any, path: Path) -> tuple[np.ndarray, str]:
    """TensorProto -> float32 array (no copy-cast when already float32) and source dtype."""
    from onnx import TensorProto, numpy_helper

    if tensor.data_location == _EXTERNAL:
        inline = TensorProto()
        inline.CopyFrom(tensor)
        inline.ClearField("external_data")
        inline.data_location = TensorProto.DEFAULT
        inline.raw_data = external_bytes(tensor, path)
        tensor = inline
    array = numpy_helper.to_array(tensor)       # no base_dir: onnx itself never opens a file here
    dtype = str(array.dtype)
    if array.dtype != np.float32:
        array = array.astype(np.float32)
    return np.ascontiguousarray(array), dtype


def external_span(tensor: Any, path: Path) -> tuple[Path, int, int | None]:
    """(file, offset, stated length) of an external-data tensor, after checking that the file lies
    inside the model's folder and the stated span inside the file; nothing is read."""
    info = {entry.key: entry.value for entry in tensor.external_data}
    what = f"the external data of tensor {tensor.name!r}"
    target = contained_file(path.parent, info.get("location", ""), path, what)
    offset = int(info.get("offset") or 0)
    length = int(info["length"]) if info.get("length") else None
    check_span(offset, length or 0, target.stat().st_size, path, what)
    return target, offset, length


def external_bytes(tensor: Any, path: Path) -> bytes:
    """The bytes of one external-data float tensor: exactly dims x dtype, from inside its file."""
    from onnx import helper

    target, offset, length = external_span(tensor, path)
    itemsize = _EXTERNAL_ITEMSIZE.get(tensor.data_type)
    what = f"the external data of tensor {tensor.name!r}"
    if itemsize is None:
        kind = helper.tensor_dtype_to_string(tensor.data_type)
        raise CatalogError(f"{path}: {what} is of type {kind}; only float weights are read from external"
                           " files: convert the model with its weights inside the .onnx file")
    nbytes = element_count(tensor.dims, path, f"tensor {tensor.name!r}") * itemsize
    if length is not None:
        check_nbytes(nbytes, length, path, what)
    check_span(offset, nbytes, target.stat().st_size, path, what)
    with open(target, "rb") as f:
        f.seek(offset)
        data = f.read(nbytes)
    check_nbytes(nbytes, len(data), path, what)     # the file shrank since it was checked
    return data


def _attr(node: Any, name: str, default: Any) -> Any:
    from onnx import helper

    for attr in node.attribute:
        if attr.name == name:
            return helper.get_attribute_value(attr)
    return default


def _default_opset(model: Any) -> int | None:
    for opset in model.opset_import:
        if opset.domain in ("", "ai.onnx"):
            return int(opset.version)
    return None


