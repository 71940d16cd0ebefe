"""The LiteRT/TFLite adapter on real files: MediaPipe models (committed fixtures and the mediapipe
wheel) and small models written with the tflite schema's builders, checked against LiteRT's own
interpreter (an independent reader) and, for the built ones, against the model's output.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from kernel_catalog.adapters import find_adapter
from kernel_catalog.adapters.base import IngestOptions
from kernel_catalog.adapters.tflite import TfliteAdapter
from kernel_catalog.errors import CatalogError
from kernel_catalog.store import Catalog

from .conftest import (FIXTURES, assert_one_line_error, download_cache, run_cli_in_process as cli,
                       skip_missing_tool)
from .tflite_builder import write_depthwise_model

SELFIE = FIXTURES / "selfie_segmentation.tflite"      # float16 behind DEQUANTIZE, 3x3 and 5x5
RECROP = FIXTURES / "hand_recrop.tflite"              # float32, 3x3 and 1x1 depthwise
ADAPTER = TfliteAdapter()
OPTS = IngestOptions()


def litert_depthwise(path: Path) -> dict[str, np.ndarray]:
    """Reference through LiteRT's interpreter: {output tensor name: (C*M, kh, kw) float32}."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    # The reference kernels (no XNNPACK delegate taking over weights); the default resolver for
    # models with MediaPipe's custom ops, which only it knows (only constant tensors are read).
    try:
        it = Interpreter(model_path=str(path), experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
        it.allocate_tensors()
    except RuntimeError:
        it = Interpreter(model_path=str(path))
        it.allocate_tensors()
    details = {d["index"]: d for d in it.get_tensor_details()}
    ops = it._get_ops_details()
    producer = {out: op for op in ops for out in op["outputs"]}
    reference = {}
    for op in ops:
        if op["op_name"] != "DEPTHWISE_CONV_2D":
            continue
        index = op["inputs"][1]
        if index in producer and producer[index]["op_name"] == "DEQUANTIZE":
            index = producer[index]["inputs"][0]
        stored = it.get_tensor(index)
        q = details[index]["quantization_parameters"]
        if stored.dtype in (np.int8, np.uint8):
            scale = q["scales"].astype(np.float64)
            zero = q["zero_points"].astype(np.float64)
            values = ((stored.astype(np.float64) - zero) * scale).astype(np.float32)
        else:
            values = stored.astype(np.float32)
        if values.shape[1] * values.shape[2] > 1:
            reference[details[op["outputs"][0]]["name"]] = np.moveaxis(values[0], 2, 0)
    return reference


def bits(a: np.ndarray) -> bytes:
    return np.ascontiguousarray(a, np.float32).tobytes()


@pytest.mark.parametrize("path", [SELFIE, RECROP], ids=lambda p: p.stem)
def test_real_mediapipe_fixtures_bit_identical_to_litert(path):
    extraction = ADAPTER.read(str(path), OPTS)
    reference = litert_depthwise(path)
    assert [layer.name for layer in extraction.layers] == list(reference)
    for layer in extraction.layers:
        assert layer.weights.dtype == np.float32
        assert bits(layer.weights) == bits(reference[layer.name]), layer.name
    json.dumps(extraction.meta), json.dumps([layer.meta for layer in extraction.layers])


def test_fixture_metadata():
    selfie = ADAPTER.read(str(SELFIE), OPTS)
    first = selfie.layers[0].meta
    assert first["dtype"] == "float16" and first["dequantize_op"] and not first["quantized"]
    assert first["stride"] == [2, 2] and first["dilation"] == [1, 1] and first["padding"] == "SAME"
    assert first["fused_activation"] == "NONE" and first["depth_multiplier"] == 1 and first["bias"]
    assert {layer.weights.shape[1:] for layer in selfie.layers} == {(3, 3), (5, 5)}
    recrop = ADAPTER.read(str(RECROP), OPTS)
    assert {layer.meta["dtype"] for layer in recrop.layers} == {"float32"}
    assert all(layer.weights.shape[1] * layer.weights.shape[2] > 1 for layer in recrop.layers)
    assert recrop.meta["depthwise_ops"] > len(recrop.layers)             # the 1x1 ones are left out


@pytest.mark.parametrize("storage", ["float32", "float16", "int8", "uint8"])
def test_built_models_against_litert_and_its_output(tmp_path, storage):
    rng = np.random.default_rng(1)
    c, m, kh, kw = 3, 2, 3, 5
    shape = (1, kh, kw, c * m)
    scale = zero = None
    if storage == "int8":           # per channel
        stored = rng.integers(-127, 128, size=shape).astype(np.int8)
        scale, zero = rng.uniform(1e-3, 2e-2, c * m).astype(np.float32), np.zeros(c * m, np.int64)
    elif storage == "uint8":        # per tensor, with a zero point
        stored = rng.integers(0, 256, size=shape).astype(np.uint8)
        scale, zero = np.array([0.0123], np.float32), np.array([131])
    else:
        stored = rng.normal(size=shape).astype(storage)
    path = tmp_path / f"dw_{storage}.tflite"
    write_depthwise_model(path, stored, storage, in_channels=c, scale=scale, zero_point=zero,
                          stride=(1, 1), dilation=(2, 1), padding=1, activation=0)
    (layer,) = ADAPTER.read(str(path), OPTS).layers
    (expected,) = litert_depthwise(path).values()
    assert bits(layer.weights) == bits(expected)
    meta = layer.meta
    assert meta["depth_multiplier"] == m and meta["in_channels"] == c and meta["out_channels"] == c * m
    assert meta["dilation"] == [2, 1] and meta["padding"] == "VALID" and meta["fused_activation"] == "NONE"
    assert meta["quantized"] == (storage in ("int8", "uint8"))
    if storage == "int8":
        assert meta["quantization"]["scheme"] == "per-channel" and meta["quantization"]["axis"] == 3
        assert np.array_equal(np.float32(meta["quantization"]["scale"]), scale)
    if storage == "uint8":
        assert meta["quantization"] == {"scheme": "per-tensor", "axis": 0, "scale": [float(np.float32(0.0123))],
                                        "zero_point": [131]}
    # channel order: the catalog's kernels reproduce the model's own output (output o reads input o // m)
    _check_output(path, layer.weights, m)


def _check_output(path: Path, weights: np.ndarray, m: int) -> None:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    it = Interpreter(model_path=str(path), experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
    it.allocate_tensors()
    x = np.random.default_rng(2).normal(size=tuple(it.get_input_details()[0]["shape"])).astype(np.float32)
    it.set_tensor(it.get_input_details()[0]["index"], x)
    it.invoke()
    y = it.get_tensor(it.get_output_details()[0]["index"])[0]
    bias = np.linspace(-0.5, 0.5, weights.shape[0], dtype=np.float32)
    kh, kw = weights.shape[1:]
    expected = np.zeros_like(y)
    for o in range(weights.shape[0]):
        for i in range(y.shape[0]):
            for j in range(y.shape[1]):
                patch = x[0, i:i + 2 * (kh - 1) + 1:2, j:j + kw, o // m]    # dilation (2, 1), VALID
                expected[i, j, o] = np.sum(patch * weights[o]) + bias[o]
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)


def test_chosen_by_the_registry_and_ingested(tmp_path):
    assert find_adapter(str(SELFIE), OPTS).name == "tflite"
    result = cli("--catalog", str(tmp_path / "cat"), "ingest", str(SELFIE), check=True)
    assert result.stdout.startswith("added selfie_segmentation: 11 layers, 776 kernels [tflite")
    sizes = Catalog(tmp_path / "cat").sql("SELECT kh, kw, count(*) AS n FROM kernels GROUP BY ALL ORDER BY ALL")
    assert [(r["kh"], r["kw"]) for r in sizes.to_pylist()] == [(3, 3), (5, 5)]
    assert sum(sizes.column("n").to_pylist()) == 776


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_bad_files_are_one_line_errors(tmp_path, damage):
    data = SELFIE.read_bytes()
    bad = tmp_path / "bad.tflite"
    bad.write_bytes({"truncated": data[: len(data) // 3], "garbage": b"\x1c\x00\x00\x00TFL3" + b"\xff" * 64,
                     "empty": b""}[damage])
    with pytest.raises(CatalogError) as err:
        ADAPTER.read(str(bad), OPTS)
    assert str(bad) in str(err.value) and "\n" not in str(err.value)
    result = cli("--catalog", str(tmp_path / "cat"), "ingest", str(bad))
    assert_one_line_error(result, str(bad))
    assert not (tmp_path / "cat" / "kernels").exists()


def test_include_exclude_on_tensor_names():
    names = [layer.name for layer in ADAPTER.read(str(SELFIE), OPTS).layers]
    only = ADAPTER.read(str(SELFIE), IngestOptions(include=(names[0],)))
    assert [layer.name for layer in only.layers] == [names[0]]
    with pytest.raises(CatalogError, match="--include/--exclude"):
        ADAPTER.read(str(SELFIE), IngestOptions(include=("nothing*",)))


def test_real_mediapipe_models_from_the_wheel():
    """The 14 models of mediapipe 0.10.14 (pip download): all read, all bit-identical to LiteRT."""
    from kernel_catalog.demo.wheels import DownloadError
    from kernel_catalog.demo.mediapipe import MEDIAPIPE_MODELS, fetch_mediapipe_models

    try:
        with download_cache() as cache:
            found = fetch_mediapipe_models(cache)
    except DownloadError as exc:
        skip_missing_tool(f"mediapipe wheel not downloadable here: {exc}")
    assert len(found) == len(MEDIAPIPE_MODELS) == 14
    for name in ("pose_detection", "selfie_segmentation", "hand_landmark_lite", "iris_landmark"):
        extraction = ADAPTER.read(str(found[name]), OPTS)
        reference = litert_depthwise(found[name])
        assert [layer.name for layer in extraction.layers] == list(reference), name
        for layer in extraction.layers:
            assert bits(layer.weights) == bits(reference[layer.name]), (name, layer.name)
