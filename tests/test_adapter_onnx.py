"""The ONNX adapter on a real trained model (committed fixture), on small graphs built here, and
on all RapidOCR models (fetched from PyPI into the cache; skipped only when pip cannot download)."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from kernel_catalog.adapters.base import IngestOptions
from kernel_catalog.adapters.onnx import OnnxAdapter
from kernel_catalog.errors import CatalogError

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests" / "fixtures" / "ch_ppocr_mobile_v2.0_cls_infer.onnx"
ADAPTER = OnnxAdapter()
OPTS = IngestOptions()


def kernel_counts(extraction) -> dict[str, int]:
    """Kernels per size, e.g. {"3x3": 64, "5x5": 800}."""
    counts: Counter[str] = Counter()
    for layer in extraction.layers:
        c, kh, kw = layer.weights.shape
        counts[f"{kh}x{kw}"] += c
    return dict(counts)


# ---------------------------------------------------------------- the committed real model

def test_fixture_counts_and_meta():
    ext = ADAPTER.read(str(FIXTURE), OPTS)
    assert kernel_counts(ext) == {"3x3": 64, "5x5": 800}
    assert len(ext.layers) == 11
    assert ext.model == "ch_ppocr_mobile_v2.0_cls_infer"
    assert ext.source == str(FIXTURE.resolve())
    assert ext.trained is True
    assert ext.meta["format"] == "onnx"
    assert ext.meta["producer"] == "PaddlePaddle"
    assert ext.meta["opset"] == 11
    assert ext.meta["bn_folded"] is False
    for layer in ext.layers:
        assert layer.meta["bn_folded"] is False
        assert layer.meta["followed_by"] == "BatchNormalization"
        assert layer.meta["kind"] == "conv2d"
        assert layer.meta["in_channels"] == layer.meta["out_channels"] == layer.weights.shape[0]
        assert layer.meta["depth_multiplier"] == 1
        assert layer.meta["bias"] is False
        assert layer.weights.dtype == np.float32


def test_fixture_values_bit_identical_and_in_graph_order():
    """Read the Constant nodes independently and compare bytes, not approximate values."""
    model = onnx.load(str(FIXTURE))
    consts = {n.output[0]: numpy_helper.to_array(n.attribute[0].t)
              for n in model.graph.node if n.op_type == "Constant"}
    expected = []
    for node in model.graph.node:
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        if node.op_type == "Conv" and group > 1:
            expected.append((node.name, consts[node.input[1]]))
    ext = ADAPTER.read(str(FIXTURE), OPTS)
    assert [layer.name for layer in ext.layers] == [name for name, _ in expected]
    for layer, (_, array) in zip(ext.layers, expected):
        assert array.dtype == np.float32
        assert layer.weights.tobytes() == array.reshape(layer.weights.shape).tobytes()
        node = next(n for n in model.graph.node if n.name == layer.name)
        assert layer.meta["weight_name"] == node.input[1]


def test_fixture_include_exclude():
    ext = ADAPTER.read(str(FIXTURE), IngestOptions(include=("Conv@2", "Conv@7")))
    assert [layer.name for layer in ext.layers] == ["Conv@2", "Conv@7"]
    ext = ADAPTER.read(str(FIXTURE), IngestOptions(exclude=("Conv@2",)))
    assert len(ext.layers) == 10 and "Conv@2" not in [layer.name for layer in ext.layers]
    with pytest.raises(CatalogError, match="no depthwise convolution found"):
        ADAPTER.read(str(FIXTURE), IngestOptions(include=("nothing*",)))


def test_can_read_by_suffix():
    assert ADAPTER.can_read(str(FIXTURE), OPTS)
    assert ADAPTER.can_read("/nowhere/model.ONNX", OPTS)       # read() then says it is missing
    assert not ADAPTER.can_read("model.pth", OPTS)
    assert not ADAPTER.can_read("resnet50", OPTS)


# ---------------------------------------------------------------- small graphs built here

def conv(name: str, x: str, w: str, group: int, out: str, bias: str | None = None, **attrs):
    inputs = [x, w] + ([bias] if bias else [])
    return helper.make_node("Conv", inputs, [out], name=name, group=group, **attrs)


def init(name: str, array: np.ndarray) -> TensorProto:
    return numpy_helper.from_array(array, name)


def constant(out: str, array: np.ndarray) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [out], value=numpy_helper.from_array(array, out + "_v"))


def bn(x: str, out: str, c: int, prefix: str) -> tuple[onnx.NodeProto, list[TensorProto]]:
    params = [init(f"{prefix}_{k}", np.full(c, v, np.float32))
              for k, v in (("s", 1.0), ("b", 0.0), ("m", 0.0), ("v", 1.0))]
    node = helper.make_node("BatchNormalization", [x] + [p.name for p in params], [out])
    return node, params


def save(tmp_path: Path, nodes, inits, outputs, name="g.onnx") -> Path:
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs],
        initializer=inits)
    model = helper.make_model(graph, producer_name="kernel-catalog-test",
                              opset_imports=[helper.make_opsetid("", 13)])
    path = tmp_path / name
    onnx.save(model, str(path))
    return path


def rand(*shape, dtype=np.float32) -> np.ndarray:
    return np.random.default_rng(sum(shape)).standard_normal(shape).astype(dtype)


def test_initializer_and_constant_weights_and_rules(tmp_path):
    w_dw = rand(8, 1, 3, 3)            # depthwise, from an initializer
    w_const = rand(8, 1, 5, 5)         # depthwise, from a Constant node
    w_grey = rand(8, 1, 3, 3)          # group == 1 on a single-channel input: NOT depthwise
    w_1x1 = rand(8, 1, 1, 1)           # 1x1 depthwise: a per-channel scale, skipped
    w_mult = rand(16, 1, 3, 3)         # depth multiplier 2
    w_grouped = rand(8, 2, 3, 3)       # grouped conv, not depthwise
    nodes = [
        conv("grey", "x", "w_grey", 1, "y0"),
        conv("dw", "y0", "w_dw", 8, "y1", bias="b_dw", strides=[2, 2], pads=[1, 1, 1, 1]),
        constant("w_const", w_const),
        conv("dw_const", "y1", "w_const", 8, "y2", dilations=[2, 2], pads=[4, 4, 4, 4]),
        conv("scale", "y2", "w_1x1", 8, "y3"),
        conv("grouped", "y3", "w_grouped", 4, "y4"),
        conv("", "y4", "w_mult", 8, "y5"),       # no node name: named after its weight
    ]
    inits = [init("w_dw", w_dw), init("b_dw", rand(8)), init("w_grey", w_grey),
             init("w_1x1", w_1x1), init("w_grouped", w_grouped), init("w_mult", w_mult)]
    path = save(tmp_path, nodes, inits, ["y5"])

    ext = ADAPTER.read(str(path), OPTS)
    assert [layer.name for layer in ext.layers] == ["dw", "dw_const", "w_mult"]
    dw, dw_const, mult = ext.layers
    assert dw.weights.tobytes() == w_dw.reshape(8, 3, 3).tobytes()
    assert dw_const.weights.tobytes() == w_const.reshape(8, 5, 5).tobytes()
    assert mult.weights.tobytes() == w_mult.reshape(16, 3, 3).tobytes()
    assert dw.meta["stride"] == [2, 2] and dw.meta["padding"] == [1, 1, 1, 1]
    assert dw.meta["bias"] is True and dw_const.meta["bias"] is False
    assert dw_const.meta["dilation"] == [2, 2]
    assert mult.meta["in_channels"] == 8 and mult.meta["out_channels"] == 16
    assert mult.meta["depth_multiplier"] == 2
    assert mult.meta["weight_name"] == "w_mult"
    assert ext.meta["producer"] == "kernel-catalog-test" and ext.meta["opset"] == 13


def test_bn_folded_followed_by_and_mixed(tmp_path):
    bn_node, bn_params = bn("i1", "y2", 8, "bn")
    nodes = [
        conv("dw_bn", "x", "w1", 8, "y1"),
        helper.make_node("Identity", ["y1"], ["i1"]),     # exporters insert these; look through
        bn_node,
        conv("dw_folded", "y2", "w2", 8, "y3", bias="b2"),
        helper.make_node("Relu", ["y3"], ["y4"]),
    ]
    inits = [init("w1", rand(8, 1, 3, 3)), init("w2", rand(8, 1, 7, 7)), init("b2", rand(8)),
             *bn_params]
    path = save(tmp_path, nodes, inits, ["y4"])
    ext = ADAPTER.read(str(path), OPTS)
    first, second = ext.layers
    assert first.meta["bn_folded"] is False and first.meta["followed_by"] == "BatchNormalization"
    assert second.meta["bn_folded"] is True and second.meta["followed_by"] == "Relu"
    assert ext.meta["bn_folded"] == "mixed"
    assert ADAPTER.read(str(path), IngestOptions(include=("dw_folded",))).meta["bn_folded"] is True
    # a graph output nobody consumes: no follower, and no batch norm to fold
    assert ADAPTER.read(str(save(tmp_path, nodes[3:4], inits, ["y3"], "last.onnx")),
                        OPTS).layers[0].meta["followed_by"] is None


def test_float16_weights_upcast_exactly(tmp_path):
    w16 = rand(8, 1, 3, 3, dtype=np.float16)
    path = save(tmp_path, [conv("dw", "x", "w", 8, "y")], [init("w", w16)], ["y"])
    layer = ADAPTER.read(str(path), OPTS).layers[0]
    assert layer.weights.dtype == np.float32 and layer.meta["dtype"] == "float16"
    assert np.array_equal(layer.weights, w16.reshape(8, 3, 3).astype(np.float32))
    assert np.array_equal(layer.weights.astype(np.float16), w16.reshape(8, 3, 3))


def test_no_depthwise_is_one_line_error(tmp_path):
    path = save(tmp_path, [conv("grey", "x", "w", 1, "y")], [init("w", rand(8, 1, 3, 3))], ["y"])
    with pytest.raises(CatalogError, match="no depthwise convolution found") as err:
        ADAPTER.read(str(path), OPTS)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "missing"])
def test_bad_files_are_one_line_errors(tmp_path, damage):
    path = tmp_path / "bad.onnx"
    data = FIXTURE.read_bytes()
    if damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(b"this is not a protobuf at all\n" * 10)
    elif damage == "empty":
        path.write_bytes(b"")
    with pytest.raises(CatalogError) as err:
        ADAPTER.read(str(path), OPTS)
    message = str(err.value)
    assert str(path) in message and "\n" not in message
    assert ("not found" if damage == "missing" else "ONNX") in message


# ---------------------------------------------------------------- all RapidOCR models

EXPECTED = {
    # stem: (kernel counts, bn_folded of the extraction)
    "ch_ppocr_mobile_v2.0_cls_infer": ({"3x3": 64, "5x5": 800}, False),
    "ch_ppocr_mobile_v2.0_cls_mobile": ({"3x3": 64, "5x5": 800}, False),
    "ch_PP-OCRv4_det_infer": ({"3x3": 336, "5x5": 2112}, True),
    "ch_PP-OCRv4_rec_infer": ({"3x3": 432, "5x5": 2640}, True),
    "PP-OCRv6_det_small": ({"3x3": 2160, "7x7": 384}, True),
    # the one 1x7 layer is followed by a BatchNormalization node, the 3x3 ones are folded
    "PP-OCRv6_rec_small": ({"3x3": 2496, "1x7": 120}, "mixed"),
}


@pytest.mark.parametrize("stem", sorted(EXPECTED))
def test_rapidocr_models(rapidocr_models, stem):
    counts, folded = EXPECTED[stem]
    ext = ADAPTER.read(str(rapidocr_models[stem]), OPTS)
    assert kernel_counts(ext) == counts
    assert ext.meta["bn_folded"] == folded
    if stem == "PP-OCRv6_rec_small":
        unfolded = [layer for layer in ext.layers if not layer.meta["bn_folded"]]
        assert [layer.weights.shape[1:] for layer in unfolded] == [(1, 7)]
