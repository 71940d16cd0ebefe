"""Write small, valid .tflite files for tests with the `tflite` package's generated builders.

One DEPTHWISE_CONV_2D whose filter is stored as float32, or as float16 / int8 / uint8 behind a
DEQUANTIZE operator (per-channel or per-tensor quantization). LiteRT's interpreter runs them, so
the tests can compare the adapter against an independent reader and against the model's output.
"""
from __future__ import annotations

from pathlib import Path

import flatbuffers
import numpy as np
import tflite
from tflite.BuiltinOperator import BuiltinOperator
from tflite.BuiltinOptions import BuiltinOptions
from tflite.TensorType import TensorType

_TYPES = {"float32": TensorType.FLOAT32, "float16": TensorType.FLOAT16, "int8": TensorType.INT8,
          "uint8": TensorType.UINT8}


def _vector(b: flatbuffers.Builder, start, items, prepend) -> int:
    start(b, len(items))
    for item in reversed(items):
        prepend(item)
    return b.EndVector()


def _ints(b, start, values):
    return _vector(b, start, [int(v) for v in values], b.PrependInt32)


def _offsets(b, start, offsets):
    return _vector(b, start, offsets, b.PrependUOffsetTRelative)


def write_depthwise_model(path: Path, stored: np.ndarray, storage: str, *, in_channels: int,
                          scale: np.ndarray | None = None, zero_point: np.ndarray | None = None,
                          stride=(1, 1), dilation=(1, 1), padding: int = 0, activation: int = 0,
                          spatial: int = 8) -> None:
    """A model: input (1, s, s, C) -> [DEQUANTIZE filter] -> DEPTHWISE_CONV_2D (+ bias) -> output.

    Tensors: 0 input, 1 stored filter, 2 output, 3 bias, 4 dequantized filter (when stored quantized).

    `stored` is the filter as kept in the file, shape (1, kh, kw, C*M), of dtype `storage`;
    `scale`/`zero_point` (one value, or one per output channel) make it quantized.
    """
    _, kh, kw, out_channels = stored.shape
    b = flatbuffers.Builder(1024)
    raw = np.ascontiguousarray(stored).tobytes()
    bias = np.linspace(-0.5, 0.5, out_channels, dtype=np.float32)
    buffers = [_buffer(b, None), _buffer(b, raw), _buffer(b, bias.tobytes())]

    def tensor(name, shape, ttype, buffer, quant=None):
        n = b.CreateString(name)
        s = _ints(b, tflite.TensorStartShapeVector, shape)
        tflite.TensorStart(b)
        tflite.TensorAddShape(b, s)
        tflite.TensorAddType(b, ttype)
        tflite.TensorAddBuffer(b, buffer)
        tflite.TensorAddName(b, n)
        if quant is not None:
            tflite.TensorAddQuantization(b, quant)
        return tflite.TensorEnd(b)

    quant = None
    if scale is not None:
        sc = _vector(b, tflite.QuantizationParametersStartScaleVector, [float(v) for v in scale], b.PrependFloat32)
        zp = _vector(b, tflite.QuantizationParametersStartZeroPointVector, [int(v) for v in zero_point],
                     b.PrependInt64)
        tflite.QuantizationParametersStart(b)
        tflite.QuantizationParametersAddScale(b, sc)
        tflite.QuantizationParametersAddZeroPoint(b, zp)
        tflite.QuantizationParametersAddQuantizedDimension(b, 3 if len(scale) > 1 else 0)
        quant = tflite.QuantizationParametersEnd(b)
    dequantize = storage != "float32"
    out_size = (spatial - 1) // stride[0] + 1 if padding == 0 else (spatial - (kh - 1) * dilation[0] - 1) // stride[0] + 1
    tensors = [tensor("input", [1, spatial, spatial, in_channels], TensorType.FLOAT32, 0),
               tensor("dw/filter_stored", list(stored.shape), _TYPES[storage], 1, quant),
               tensor("dw/depthwise", [1, out_size, out_size, out_channels], TensorType.FLOAT32, 0)]
    tensors.append(tensor("dw/bias", [out_channels], TensorType.FLOAT32, 2))
    if dequantize:
        tensors.append(tensor("dw/filter", list(stored.shape), TensorType.FLOAT32, 0))
    filter_index = 4 if dequantize else 1

    codes = []
    for code in ([BuiltinOperator.DEQUANTIZE] if dequantize else []) + [BuiltinOperator.DEPTHWISE_CONV_2D]:
        tflite.OperatorCodeStart(b)
        tflite.OperatorCodeAddDeprecatedBuiltinCode(b, code)
        tflite.OperatorCodeAddBuiltinCode(b, code)
        tflite.OperatorCodeAddVersion(b, 1)
        codes.append(tflite.OperatorCodeEnd(b))

    ops = []
    if dequantize:
        ins, outs = _ints(b, tflite.OperatorStartInputsVector, [1]), _ints(b, tflite.OperatorStartOutputsVector, [4])
        tflite.OperatorStart(b)
        tflite.OperatorAddOpcodeIndex(b, 0)
        tflite.OperatorAddInputs(b, ins)
        tflite.OperatorAddOutputs(b, outs)
        ops.append(tflite.OperatorEnd(b))
    tflite.DepthwiseConv2DOptionsStart(b)
    tflite.DepthwiseConv2DOptionsAddPadding(b, padding)
    tflite.DepthwiseConv2DOptionsAddStrideH(b, stride[0])
    tflite.DepthwiseConv2DOptionsAddStrideW(b, stride[1])
    tflite.DepthwiseConv2DOptionsAddDepthMultiplier(b, out_channels // in_channels)
    tflite.DepthwiseConv2DOptionsAddFusedActivationFunction(b, activation)
    tflite.DepthwiseConv2DOptionsAddDilationHFactor(b, dilation[0])
    tflite.DepthwiseConv2DOptionsAddDilationWFactor(b, dilation[1])
    options = tflite.DepthwiseConv2DOptionsEnd(b)
    ins = _ints(b, tflite.OperatorStartInputsVector, [0, filter_index, 3])
    outs = _ints(b, tflite.OperatorStartOutputsVector, [2])
    tflite.OperatorStart(b)
    tflite.OperatorAddOpcodeIndex(b, len(codes) - 1)
    tflite.OperatorAddInputs(b, ins)
    tflite.OperatorAddOutputs(b, outs)
    tflite.OperatorAddBuiltinOptionsType(b, BuiltinOptions.DepthwiseConv2DOptions)
    tflite.OperatorAddBuiltinOptions(b, options)
    ops.append(tflite.OperatorEnd(b))

    t_vec = _offsets(b, tflite.SubGraphStartTensorsVector, tensors)
    o_vec = _offsets(b, tflite.SubGraphStartOperatorsVector, ops)
    i_vec = _ints(b, tflite.SubGraphStartInputsVector, [0])
    out_vec = _ints(b, tflite.SubGraphStartOutputsVector, [2])
    name = b.CreateString("main")
    tflite.SubGraphStart(b)
    tflite.SubGraphAddTensors(b, t_vec)
    tflite.SubGraphAddOperators(b, o_vec)
    tflite.SubGraphAddInputs(b, i_vec)
    tflite.SubGraphAddOutputs(b, out_vec)
    tflite.SubGraphAddName(b, name)
    graph = tflite.SubGraphEnd(b)

    codes_vec = _offsets(b, tflite.ModelStartOperatorCodesVector, codes)
    graphs_vec = _offsets(b, tflite.ModelStartSubgraphsVector, [graph])
    buffers_vec = _offsets(b, tflite.ModelStartBuffersVector, buffers)
    description = b.CreateString("kernel-catalog test model")
    tflite.ModelStart(b)
    tflite.ModelAddVersion(b, 3)
    tflite.ModelAddOperatorCodes(b, codes_vec)
    tflite.ModelAddSubgraphs(b, graphs_vec)
    tflite.ModelAddBuffers(b, buffers_vec)
    tflite.ModelAddDescription(b, description)
    b.Finish(tflite.ModelEnd(b), file_identifier=b"TFL3")
    Path(path).write_bytes(b.Output())


def _buffer(b: flatbuffers.Builder, data: bytes | None) -> int:
    vec = b.CreateNumpyVector(np.frombuffer(data, np.uint8)) if data else None
    tflite.BufferStart(b)
    if vec is not None:
        tflite.BufferAddData(b, vec)
    return tflite.BufferEnd(b)
