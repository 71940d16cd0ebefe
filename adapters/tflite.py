"""Depthwise kernels of LiteRT / TensorFlow Lite models (`.tflite`).

The flatbuffer is read with the `tflite` package: the classes flatc generates from TFLite's own
schema.fbs (pure Python, over `flatbuffers`), so nothing here parses bytes by hand. Every
DEPTHWISE_CONV_2D operator of every subgraph is one layer, in operator (execution) order, named
after its output tensor. Its filter is (1, kh, kw, C*M) in the file and becomes (C*M, kh, kw):
output channel c = input channel c // M, as the catalog's other adapters order them.

Weights: float32 buffers bit for bit; float16 buffers behind a DEQUANTIZE operator widened to
float32 (exact); int8 / uint8 (with or without a DEQUANTIZE in front) dequantized as TFLite does,
`(q - zero_point) * scale` in float32, per channel or per tensor, the layer flagged
`quantized` with its scale, zero point and axis in layers.meta. Stride, dilation, padding,
depth multiplier and fused activation are recorded. 1x1 depthwise filters (no spatial extent)
are left out, as in the other adapters; filters this reader cannot decode (sparse, behind a
DENSIFY operator) are listed in models.meta under `skipped` rather than guessed.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from kernel_catalog.adapters._untrusted import AGAIN as _AGAIN, check_nbytes, check_span, refuse_corrupt
from kernel_catalog.adapters.base import DepthwiseLayer, Extraction, IngestOptions, select_by_name
from kernel_catalog.errors import CatalogError

SUFFIXES = (".tflite", ".lite")
_IDENTIFIER = b"TFL3"
_DTYPES = {"FLOAT32": np.dtype("<f4"), "FLOAT16": np.dtype("<f2"), "INT8": np.dtype("i1"),
           "UINT8": np.dtype("u1")}


def _names(enum_class: type) -> dict[int, str]:
    return {v: k for k, v in vars(enum_class).items() if not k.startswith("_") and isinstance(v, int)}


class TfliteAdapter:
    """DEPTHWISE_CONV_2D filters of a .tflite flatbuffer (float32, float16, int8/uint8)."""

    name = "tflite"
    description = "LiteRT/TFLite .tflite models: DEPTHWISE_CONV_2D filters (float32, float16, int8/uint8)"
    priority = 50

    @property
    def version(self) -> str:
        from importlib.metadata import version

        return f"1.0.0+tflite{version('tflite')}"

    def can_read(self, source: str, options: IngestOptions) -> bool:
        path = Path(source)
        if path.suffix.lower() in SUFFIXES:
            return True
        try:
            with open(path, "rb") as f:
                return f.read(8)[4:8] == _IDENTIFIER
        except OSError:
            return False

    def read(self, source: str, options: IngestOptions) -> Extraction:
        path = Path(source).expanduser()
        if not path.is_file():
            raise CatalogError(f"{path}: no such file; check the path")
        data = path.read_bytes()
        if len(data) < 8 or data[4:8] != _IDENTIFIER:
            raise CatalogError(f"{path}: not a TFLite flatbuffer (no 'TFL3' identifier); the file is"
                               " corrupt or not a .tflite model")
        with refuse_corrupt(path, "TFLite flatbuffer"):
            layers, meta = _read_model(data, options, _Bounds(data, path))
        if not layers:
            skipped = f" ({len(meta['skipped'])} skipped: {meta['skipped'][0]['reason']})" if meta["skipped"] else ""
            raise CatalogError(f"{path}: no DEPTHWISE_CONV_2D filter larger than 1x1"
                               f"{' matching --include/--exclude' if options.include or options.exclude else ''}"
                               f"{skipped}")
        return Extraction(model=path.stem, source=str(path.resolve()), trained=True, layers=layers, meta=meta)


class _Bounds:
    """Lengths and indices a flatbuffer states, checked against the file (Python's flatbuffers
    reader checks none: an index past a vector reads unrelated bytes, a huge length loops for ever)."""

    def __init__(self, data: bytes, path: Path) -> None:
        self.data, self.path = data, path
        self._entries = len(data) // 4      # every vector entry we walk takes >= 4 bytes of the file

    def length(self, n: int, what: str) -> int:
        self._entries -= n
        if self._entries < 0:
            raise CatalogError(f"{self.path}: {what} lists {n} entries, more than the file can hold; {_AGAIN}")
        return n

    def index(self, i: int, n: int, what: str) -> int:
        if not 0 <= i < n:
            raise CatalogError(f"{self.path}: {what} is {i}, outside 0..{n - 1}; {_AGAIN}")
        return i


def _read_model(data: bytes, options: IngestOptions, bounds: _Bounds) -> tuple[list[DepthwiseLayer], dict[str, Any]]:
    import tflite
    from tflite.BuiltinOperator import BuiltinOperator
    from tflite.TensorType import TensorType

    ops, types = _names(BuiltinOperator), _names(TensorType)
    model = tflite.Model.GetRootAsModel(data, 0)
    n_codes = bounds.length(model.OperatorCodesLength(), "the operator code table")
    codes = [model.OperatorCodes(i) for i in range(n_codes)]
    code_names = [ops.get(max(c.BuiltinCode(), c.DeprecatedBuiltinCode()), "CUSTOM") for c in codes]
    layers: list[DepthwiseLayer] = []
    skipped: list[dict[str, Any]] = []
    seen: set[str] = set()
    n_ops = 0
    for s in range(bounds.length(model.SubgraphsLength(), "the subgraph table")):
        graph = model.Subgraphs(s)
        n_tensors = graph.TensorsLength()
        operators = [graph.Operators(i) for i in range(bounds.length(graph.OperatorsLength(), f"subgraph {s}"))]
        producers = {}
        for op in operators:
            for o in range(bounds.length(op.OutputsLength(), f"an operator of subgraph {s}")):
                producers[op.Outputs(o)] = op

        def tensor(op: Any, slot: int, what: str) -> Any:
            inputs = op.InputsLength()
            bounds.index(slot, inputs, f"{what}: input slot")
            return graph.Tensors(bounds.index(op.Inputs(slot), n_tensors, f"{what}: tensor index"))

        for i, op in enumerate(operators):
            code = bounds.index(op.OpcodeIndex(), n_codes, f"subgraph {s} operator {i}: operator code")
            if code_names[code] != "DEPTHWISE_CONV_2D":
                continue
            n_ops += 1
            where = f"subgraph {s} operator {i}"
            bounds.index(0, op.OutputsLength(), f"{where}: output slot")
            out = graph.Tensors(bounds.index(op.Outputs(0), n_tensors, f"{where}: output tensor index"))
            name = _text(out.Name()) or f"op{i}"
            name = f"subgraph{s}/{name}" if s else name
            if name in seen:            # tensor names need not be unique: keep layers apart
                name = f"{name}/op{i}"
            seen.add(name)
            filt = tensor(op, 1, where)
            shape = _shape(filt)
            if len(shape) != 4 or shape[0] != 1:
                skipped.append({"layer": name, "reason": f"filter shape {shape} is not (1, kh, kw, C)"})
                continue
            _, kh, kw, channels = shape
            if min(kh, kw, channels) < 1:
                raise CatalogError(f"{bounds.path}: the filter of {name!r} has shape {shape}; {_AGAIN}")
            if kh * kw == 1 or not select_by_name(name, options):
                continue
            stored, via = filt, None
            if _buffer(model, filt, bounds) is None:
                producer = producers.get(op.Inputs(1))
                via = code_names[bounds.index(producer.OpcodeIndex(), n_codes, f"{where}: filter producer")] \
                    if producer is not None else None
                if via != "DEQUANTIZE":
                    skipped.append({"layer": name, "reason": f"filter computed by {via or 'nothing'}, not stored"})
                    continue
                stored = tensor(producer, 0, f"{where}: DEQUANTIZE")
            dtype = types.get(stored.Type(), str(stored.Type()))
            raw = _buffer(model, stored, bounds)
            if dtype not in _DTYPES or raw is None:
                skipped.append({"layer": name, "reason": f"filter of type {dtype} ({'no data' if raw is None else 'unsupported'})"})
                continue
            check_nbytes(kh * kw * channels * _DTYPES[dtype].itemsize, len(raw), bounds.path, f"the filter of {name!r}")
            values = np.frombuffer(raw, dtype=_DTYPES[dtype]).reshape(kh, kw, channels)
            weights, quant = _to_float32(values, stored, dtype, channels, bounds.path)
            meta = _op_meta(op, tensor(op, 0, where), stored, (s, i), channels, bounds.path)
            meta.update(dtype=dtype.lower(), dequantize_op=via == "DEQUANTIZE", quantized=quant is not None,
                        quantization=quant)
            layers.append(DepthwiseLayer(name, weights, meta))
    meta = {"format": "tflite", "schema_version": model.Version(), "description": _text(model.Description()),
            "subgraphs": model.SubgraphsLength(), "depthwise_ops": n_ops, "skipped": skipped}
    return layers, meta


def _op_meta(op: Any, in_tensor: Any, stored: Any, where: tuple[int, int], channels: int, path: Path) -> dict[str, Any]:
    """Stride, dilation, padding, activation and channel counts of one DEPTHWISE_CONV_2D."""
    from tflite.ActivationFunctionType import ActivationFunctionType
    from tflite.DepthwiseConv2DOptions import DepthwiseConv2DOptions
    from tflite.Padding import Padding

    activations, paddings = _names(ActivationFunctionType), _names(Padding)
    opts = DepthwiseConv2DOptions()
    table = op.BuiltinOptions()
    if table is None:
        raise CatalogError(f"{path}: subgraph {where[0]} operator {where[1]} (DEPTHWISE_CONV_2D) has no options; {_AGAIN}")
    opts.Init(table.Bytes, table.Pos)
    in_shape = _shape(in_tensor)
    in_channels = in_shape[-1] if in_shape and in_shape[-1] > 0 else None
    return {
        "kind": "depthwise_conv_2d", "tensor_name": _text(stored.Name()), "subgraph": where[0], "operator": where[1],
        "stride": [opts.StrideH(), opts.StrideW()],
        "dilation": [opts.DilationHFactor(), opts.DilationWFactor()],
        "padding": paddings.get(opts.Padding(), str(opts.Padding())),
        "fused_activation": activations.get(opts.FusedActivationFunction()),
        "in_channels": in_channels, "out_channels": channels,
        "depth_multiplier": channels // in_channels if in_channels else opts.DepthMultiplier(),
        "depth_multiplier_option": opts.DepthMultiplier(),
        "bias": op.InputsLength() > 2 and op.Inputs(2) >= 0,
    }


def _shape(tensor: Any) -> list[int]:
    return [int(d) for d in tensor.ShapeAsNumpy()] if tensor.ShapeLength() else []


def _to_float32(values: np.ndarray, tensor: Any, dtype: str, channels: int,
                path: Path) -> tuple[np.ndarray, dict | None]:
    """(C, kh, kw) float32: exact for float types, TFLite's dequantization for int8/uint8."""
    chw = np.moveaxis(values, 2, 0)
    if dtype in ("FLOAT32", "FLOAT16"):
        return np.ascontiguousarray(chw, dtype=np.float32), None
    q = tensor.Quantization()
    scale = q.ScaleAsNumpy() if q is not None and q.ScaleLength() else None
    if scale is None:
        raise CatalogError(f"{path}: quantized filter {_text(tensor.Name())!r} has no scale; the file is incomplete")
    zero = q.ZeroPointAsNumpy() if q.ZeroPointLength() else np.zeros_like(scale, dtype=np.int64)
    axis = int(q.QuantizedDimension())
    scale = np.asarray(scale, np.float32)
    zero = np.asarray(zero, np.int64)
    if scale.size > 1 and (axis != 3 or scale.size != channels):
        raise CatalogError(f"{path}: quantized filter {_text(tensor.Name())!r}: {scale.size} scales along axis {axis},"
                           f" expected {channels} along axis 3")
    per = (slice(None), None, None)
    s = scale[per] if scale.size > 1 else scale[0]
    z = zero[per] if zero.size > 1 else zero[0]
    weights = ((chw.astype(np.int64) - z).astype(np.float32) * s).astype(np.float32)
    quant = {"scheme": "per-channel" if scale.size > 1 else "per-tensor", "axis": axis,
             "scale": [float(v) for v in scale], "zero_point": [int(v) for v in zero]}
    return np.ascontiguousarray(weights), quant


def _buffer(model: Any, tensor: Any, bounds: _Bounds) -> bytes | None:
    """The bytes of a constant tensor (inline, or at an offset for models over 2 GB), None if none."""
    n = model.BuffersLength()
    index = tensor.Buffer()
    if index == 0:                  # buffer 0 is the schema's empty sentinel
        return None
    bounds.index(index, n, f"the buffer of tensor {_text(tensor.Name())!r}")
    buf = model.Buffers(index)
    if buf.Offset() > 1:
        start, size = buf.Offset(), buf.Size()
        check_span(start, size, len(bounds.data), bounds.path, f"buffer {index}")
        return bounds.data[start:start + size]
    if buf.DataLength() == 0:
        return None
    return buf.DataAsNumpy().tobytes()


def _text(value: bytes | None) -> str:
    return value.decode("utf-8", "replace") if value else ""
