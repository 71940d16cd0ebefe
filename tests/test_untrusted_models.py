"""Model files, hub repos and checkpoints made by others are hostile data (ARCHITECTURE.md, "Trust
boundaries"). Each case builds a hostile file from a real small one and checks that `catalog
ingest` refuses it with one `Error:` line naming it and a non-zero exit, leaves the catalog as it
was, reads nothing outside the model's own folder, and allocates nothing a header merely states.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import pickle
import re
import struct
import sys
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save as safetensors_bytes

from kernel_catalog.ingest import ingest
from kernel_catalog.store import Catalog

from . import tflite_builder
from .conftest import CLS_ONNX, assert_one_line_error, run_cli_in_process, snapshot
from .hub_fixtures import empty_hub  # noqa: F401 (fixture)

REPO = Path(__file__).resolve().parents[1]

# ------------------------------------------------------------------ what the CLI opened

_OPENED: list[str] | None = None


def _audit(event: str, args: tuple) -> None:
    if _OPENED is not None and event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
        _OPENED.append(os.path.realpath(os.fsdecode(args[0])))


sys.addaudithook(_audit)      # Python-level opens (open, os.open, np.load, ...) while a case runs


@contextlib.contextmanager
def opened_files():
    global _OPENED
    _OPENED = []
    try:
        yield _OPENED
    finally:
        _OPENED = None


@pytest.fixture
def filled(tmp_path) -> Catalog:
    """A catalog holding one small kernel bank, so 'unchanged' compares real content."""
    bank = tmp_path / "seed_bank.npy"
    np.save(bank, np.random.default_rng(0).standard_normal((6, 3, 3)).astype(np.float32))
    catalog = Catalog(tmp_path / "catalog")
    ingest(catalog, str(bank))
    return catalog


def refused(catalog: Catalog, *args: str, names: str, peak_bytes: int | None = None) -> tuple[str, list[str]]:
    """`catalog ingest ARGS` is one `Error:` line naming `names`, exit 1, catalog unchanged;
    (the line, the files it opened). With peak_bytes, Python-tracked allocations stay below it."""
    before = snapshot(catalog)
    if peak_bytes:
        tracemalloc.start()
    try:
        with opened_files() as opened:
            result = run_cli_in_process("--catalog", str(catalog.root), "ingest", *args)
        peak = tracemalloc.get_traced_memory()[1] if peak_bytes else 0
    finally:
        if peak_bytes:
            tracemalloc.stop()
    assert_one_line_error(result, names)
    assert result.returncode == 1
    assert snapshot(catalog) == before
    if peak_bytes:
        assert peak < peak_bytes, f"{peak} bytes allocated while refusing"
    return result.stderr.strip(), list(opened)


# ------------------------------------------------------------------ ONNX external data

def external_onnx(folder: Path, location: str, offset: int | None = None, length: int | None = None) -> Path:
    """The real PP-OCR classifier with its first depthwise weight moved out to `folder/weights.bin`,
    recorded under `location` (offset / length as given)."""
    import onnx
    from onnx import TensorProto, numpy_helper

    model = onnx.load(str(CLS_ONNX))
    tensor = _first_depthwise_weight(model)
    folder.mkdir(exist_ok=True)
    (folder / "weights.bin").write_bytes(numpy_helper.to_array(tensor).tobytes())
    for field in ("raw_data", "float_data", "external_data"):
        tensor.ClearField(field)
    for key, value in (("location", location), ("offset", offset), ("length", length)):
        if value is not None:
            entry = tensor.external_data.add()
            entry.key, entry.value = key, str(value)
    tensor.data_location = TensorProto.EXTERNAL
    path = folder / "cls_external.onnx"
    path.write_bytes(model.SerializeToString())      # not onnx.save: it would write external data
    return path


def _first_depthwise_weight(model):
    """The TensorProto (inside `model`, so edits stick) of its first depthwise Conv's weight."""
    from kernel_catalog.adapters.onnx import constant_tensors, depthwise_weight

    tensors = constant_tensors(model.graph)
    return next(found[1] for node in model.graph.node if (found := depthwise_weight(node, tensors)))


@pytest.fixture
def secret(tmp_path) -> Path:
    """A file outside the model's folder, the size of the weight (a read would succeed)."""
    (tmp_path / "outside").mkdir()
    path = tmp_path / "outside" / "secret.bin"
    path.write_bytes(np.full(8 * 9, 1234.5, np.float32).tobytes())
    return path


@pytest.mark.parametrize("how", ["absolute", "dotdot", "file_link", "folder_link"])
def test_onnx_external_data_outside_the_folder_is_refused_unread(filled, tmp_path, secret, how):
    folder = tmp_path / "model"
    folder.mkdir()
    if how == "file_link":
        (folder / "link.bin").symlink_to(secret)
    if how == "folder_link":
        (folder / "shared").symlink_to(secret.parent, target_is_directory=True)
    location = {"absolute": str(secret), "dotdot": "../outside/secret.bin", "file_link": "link.bin",
                "folder_link": "shared/secret.bin"}[how]
    model = external_onnx(folder, location)
    line, opened = refused(filled, str(model), names=str(model))
    assert "external data" in line and ("resolves outside" in line or "not a plain path" in line)
    assert str(secret) not in opened and str(secret.resolve()) not in opened


@pytest.mark.parametrize("span", [dict(offset=10**9), dict(length=10**9), dict(length=100),
                                  dict(offset=8), dict(offset=-4)])
def test_onnx_external_span_beyond_its_file_is_refused(filled, tmp_path, span):
    model = external_onnx(tmp_path / "model", "weights.bin", **span)
    line, _ = refused(filled, str(model), names=str(model))
    assert "external data of tensor" in line


def test_onnx_external_data_inside_the_folder_is_read(filled, tmp_path):
    """The same file read through an in-folder link gives the fixture's exact kernels."""
    from kernel_catalog.adapters.base import IngestOptions
    from kernel_catalog.adapters.onnx import OnnxAdapter

    folder = tmp_path / "model"
    model = external_onnx(folder, "inner.bin")
    (folder / "inner.bin").symlink_to("weights.bin")
    ours, reference = (OnnxAdapter().read(str(p), IngestOptions()) for p in (model, CLS_ONNX))
    assert [(l.name, l.weights.tobytes()) for l in ours.layers] == \
        [(l.name, l.weights.tobytes()) for l in reference.layers]
    result = run_cli_in_process("--catalog", str(filled.root), "ingest", str(model))
    assert result.returncode == 0, result.stderr


def test_onnx_inline_weight_with_an_absurd_shape_is_refused(filled, tmp_path):
    import onnx

    model = onnx.load(str(CLS_ONNX))
    _first_depthwise_weight(model).dims[0] = 2**40
    path = tmp_path / "huge.onnx"
    path.write_bytes(model.SerializeToString())
    refused(filled, str(path), names=str(path), peak_bytes=64 << 20)


# ------------------------------------------------------------------ hub names

def test_hub_names_typed_wrong_are_refused_before_any_request(filled, empty_hub):
    for source in ("hf:acme/net@../../refs", "hf:acme/net@/main", "hf:acme/net/../../x.onnx",
                   "hf:acme/net/sub\\x.onnx", "hf:acme/a..b", "hf:acme/net-", "hf:acme/net@.hidden"):
        refused(filled, source, names=source)
    assert empty_hub.requests == []


def test_hub_listing_with_a_file_outside_the_repo_is_refused(filled, empty_hub, tmp_path):
    state = {"a.weight": torch.randn(8, 1, 3, 3)}
    empty_hub.add("acme/escape", {"model.safetensors": safetensors_bytes(state), "../../escape.bin": b"x"})
    line, _ = refused(filled, "hf:acme/escape", names="'../../escape.bin' is not a file inside acme/escape")
    assert "cannot be trusted" in line
    assert empty_hub.downloads() == []
    assert not list(tmp_path.rglob("escape.bin"))


def test_hub_listing_with_a_commit_that_is_a_path_is_refused(filled, empty_hub, tmp_path):
    empty_hub.add("acme/badsha", {"model.safetensors": safetensors_bytes({"a.weight": torch.randn(8, 1, 3, 3)})},
                  revisions={"main": "../../../outside"})
    refused(filled, "hf:acme/badsha", names="not 40 hex digits")
    assert empty_hub.downloads() == [] and not (tmp_path / "outside").exists()


def test_shard_index_naming_a_file_outside_the_repo_is_refused(filled, empty_hub):
    index = {"metadata": {}, "weight_map": {"a.weight": "../../../outside.safetensors"}}
    empty_hub.add("acme/shards", {"model.safetensors.index.json": json.dumps(index).encode()})
    refused(filled, "hf:acme/shards", names="'../../../outside.safetensors' is not a file inside acme/shards")
    assert [path for path, _ in empty_hub.downloads()] == ["/acme/shards/resolve/main/model.safetensors.index.json"]


# ------------------------------------------------------------------ safetensors

def _safetensors(header_len: int | None = None, **change) -> bytes:
    """A real small state dict as safetensors, with header fields or its length replaced."""
    real = safetensors_bytes({"blocks.0.weight": torch.randn(8, 1, 3, 3), "bias": torch.randn(4)})
    n = struct.unpack("<Q", real[:8])[0]
    header, body = json.loads(real[8:8 + n]), real[8 + n:]
    for key, value in change.items():
        header["blocks.0.weight"][key] = value
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text) if header_len is None else header_len) + text + body


# What safetensors itself refuses when the file is opened (0.4+ validates the header in full);
# the adapter adds nothing, these pin it.
SAFETENSORS_CASES = {
    "header_longer_than_file": lambda: _safetensors(header_len=10_000),
    "header_absurd": lambda: _safetensors(header_len=2**40),
    "header_over_100MB": lambda: _safetensors(header_len=200_000_000),
    "offsets_beyond_file": lambda: _safetensors(data_offsets=[0, 10**9]),
    "offsets_overlapping": lambda: _safetensors(data_offsets=[0, 288]),     # over 'bias' at [0, 16]
    "shape_not_dtype_x_span": lambda: _safetensors(shape=[8, 1, 3, 4]),
    "shape_overflowing": lambda: _safetensors(shape=[2**40, 2**40, 1, 3]),
    "shape_larger_than_file": lambda: _safetensors(shape=[10**9, 1, 3, 3]),
    "shape_negative": lambda: _safetensors(shape=[-8, 1, 3, 3]),
    "truncated": lambda: _safetensors()[:-10],
}


@pytest.mark.parametrize("case", sorted(SAFETENSORS_CASES))
def test_hostile_safetensors_refused_by_the_state_dict_adapter(filled, tmp_path, case):
    path = tmp_path / f"{case}.safetensors"
    path.write_bytes(SAFETENSORS_CASES[case]())
    line, _ = refused(filled, str(path), names=str(path), peak_bytes=64 << 20)
    assert "safetensors" in line


def test_hostile_safetensors_refused_as_a_timm_checkpoint(filled, tmp_path):
    from .timm_fixtures import save_random_model

    real = tmp_path / "real.safetensors"
    save_random_model("test_convnext", real)
    data = real.read_bytes()
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(struct.pack("<Q", 2**40) + data[8:])
    refused(filled, "test_convnext", "--checkpoint", str(bad), names=str(bad))


def test_hostile_safetensors_refused_from_a_hub_repo(filled, empty_hub):
    empty_hub.add("acme/hostile", {"model.safetensors": _safetensors(shape=[2**40, 2**40, 1, 3])})
    refused(filled, "hf:acme/hostile", names="model.safetensors")


# ------------------------------------------------------------------ TFLite

def _slot(table, slot: int) -> int:
    """Absolute byte position of a scalar field of a flatbuffer table."""
    offset = table._tab.Offset(slot)
    assert offset, "field absent"
    return table._tab.Pos + offset


def _vector(table, slot: int) -> int:
    """Absolute byte position of the first element of a vector field (its length is 4 bytes before)."""
    return table._tab.Vector(table._tab.Offset(slot))


def _tflite(path: Path, storage: str) -> Path:
    """A real small model: float32 filter (tensor 1) as the op's input, or int8 behind DEQUANTIZE
    (then the depthwise op is the second, and its operator code index 1 is stored)."""
    values = np.random.default_rng(1).standard_normal((1, 3, 3, 8))
    if storage == "float32":
        tflite_builder.write_depthwise_model(path, values.astype(np.float32), "float32", in_channels=8)
    else:
        tflite_builder.write_depthwise_model(path, (values * 40).astype(np.int8), "int8", in_channels=8,
                                             scale=np.full(8, 0.02, np.float32), zero_point=np.zeros(8, np.int64))
    return path


def _patched(path: Path, where, fmt: str, value: int) -> None:
    """Overwrite one field, found through the tflite reader on the real file."""
    import tflite

    data = bytearray(path.read_bytes())
    model = tflite.Model.GetRootAsModel(data, 0)
    graph = model.Subgraphs(0)
    op = graph.Operators(graph.OperatorsLength() - 1)          # the DEPTHWISE_CONV_2D
    struct.pack_into(fmt, data, where(model, graph, op), value)
    path.write_bytes(bytes(data))


# Slots: Tensor.shape 4, buffer 8; Operator.opcode_index 4, inputs 6; SubGraph.operators 10.
TFLITE_CASES = {
    "buffer_index_out_of_range": (lambda m, g, op: _slot(g.Tensors(1), 8), "<I", 99, "buffer of tensor"),
    "tensor_index_out_of_range": (lambda m, g, op: _vector(op, 6) + 4, "<i", 1000, "tensor index is 1000"),
    "opcode_index_out_of_range": (lambda m, g, op: _slot(op, 4), "<I", 77, "operator code is 77", "int8"),
    "shape_not_buffer_size": (lambda m, g, op: _vector(g.Tensors(1), 4) + 4, "<i", 5, "needs 480 bytes"),
    "shape_absurd": (lambda m, g, op: _vector(g.Tensors(1), 4) + 12, "<i", 2**31 - 1, "bytes, the file gives 288"),
    "shape_negative": (lambda m, g, op: _vector(g.Tensors(1), 4) + 8, "<i", -3, "has shape [1, 3, -3, 8]"),
    "operators_length_absurd": (lambda m, g, op: _vector(g, 10) - 4, "<I", 2**30, "more than the file can hold"),
}


@pytest.mark.parametrize("case", sorted(TFLITE_CASES))
def test_hostile_tflite_refused(filled, tmp_path, case):
    where, fmt, value, says, *storage = TFLITE_CASES[case]
    path = _tflite(tmp_path / f"{case}.tflite", *(storage or ["float32"]))
    _patched(path, where, fmt, value)
    line, _ = refused(filled, str(path), names=str(path), peak_bytes=64 << 20)
    assert says in line


@pytest.mark.parametrize("offset, size", [(10**12, 288), (None, 10**6)])
def test_tflite_buffer_outside_the_file_refused(filled, tmp_path, monkeypatch, offset, size):
    """A filter kept at an offset (the >2 GB layout) that lies beyond the end of the file."""
    import tflite

    stored = np.random.default_rng(1).standard_normal((1, 3, 3, 8)).astype(np.float32)
    plain = tflite_builder._buffer

    def buffer(b, data):
        if data != stored.tobytes():
            return plain(b, data)
        tflite.BufferStart(b)
        tflite.BufferAddOffset(b, offset if offset is not None else 100)
        tflite.BufferAddSize(b, size)
        return tflite.BufferEnd(b)

    monkeypatch.setattr(tflite_builder, "_buffer", buffer)
    path = tmp_path / "offset.tflite"
    tflite_builder.write_depthwise_model(path, stored, "float32", in_channels=8)
    line, _ = refused(filled, str(path), names=str(path), peak_bytes=64 << 20)
    assert "spans bytes" in line


# ------------------------------------------------------------------ torch pickles

def _evil_pickle(marker: Path) -> bytes:
    """A pickle whose loading runs a shell command (GLOBAL os.system), as a hostile .pth would."""
    return b"cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR."


def test_pickle_that_runs_code_is_refused_in_a_torch_zip(filled, tmp_path):
    real = tmp_path / "real.pth"
    torch.save({"w": torch.randn(8, 1, 3, 3)}, real)
    marker, evil = tmp_path / "pwned", tmp_path / "evil.pth"
    with zipfile.ZipFile(real) as src, zipfile.ZipFile(evil, "w") as out:
        for name in src.namelist():
            out.writestr(name, _evil_pickle(marker) if name.endswith("data.pkl") else src.read(name))
    line, _ = refused(filled, str(evil), names=str(evil))
    assert "holds objects other than tensors" in line and not marker.exists()


def test_pickle_that_runs_code_is_refused_as_a_plain_pickle(filled, tmp_path):
    marker, evil = tmp_path / "pwned", tmp_path / "evil.pt"
    evil.write_bytes(_evil_pickle(marker))
    refused(filled, str(evil), names=str(evil))
    assert not marker.exists()
    pickle.loads(_evil_pickle(tmp_path / "ran"))      # the same bytes do run code without weights_only
    assert (tmp_path / "ran").exists()


def test_legacy_torch_file_stating_a_huge_storage_is_refused_before_allocation(filled, tmp_path):
    real = tmp_path / "legacy.pth"
    torch.save({"w": torch.randn(8, 1, 3, 3)}, real, _use_new_zipfile_serialization=False)
    data = real.read_bytes()
    bad = tmp_path / "legacy_huge.pth"
    # the storage's element count (72, BININT1) in its persistent id becomes 2**31 - 1 (BININT)
    assert data.count(b"K\x48N") == 1
    bad.write_bytes(data.replace(b"K\x48N", b"J" + struct.pack("<i", 2**31 - 1) + b"N"))
    line, _ = refused(filled, str(bad), names=str(bad))
    assert "states a tensor storage of 8589934588 bytes" in line


def test_every_torch_load_is_weights_only():
    sources = [p for folder in ("adapters", "catalog") for p in (REPO / folder).rglob("*.py")]
    calls = [(p, m.group(0)) for p in sources
             for m in re.finditer(r"torch\.load\((?:[^()]|\([^()]*\))*\)", p.read_text())]
    assert calls, "no torch.load found: the pattern is stale"
    assert [c for c in calls if "weights_only=True" not in c[1]] == []


# ------------------------------------------------------------------ kernel banks

def _npy_stating(shape: tuple[int, ...]) -> bytes:
    """A real .npy of 20x3x3 float32 zeros whose header states `shape` instead."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": shape})
    return header.getvalue() + np.zeros((20, 3, 3), np.float32).tobytes()


def test_npz_member_stating_a_huge_shape_is_refused_before_allocation(filled, tmp_path):
    path = tmp_path / "huge.npz"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("weights.npy", _npy_stating((2**27, 3, 3)))       # 4.8 GB stated, 720 bytes held
    line, _ = refused(filled, str(path), names=str(path), peak_bytes=64 << 20)
    assert "its shape needs 4831838208 bytes, the file gives 720" in line


def test_npy_stating_more_than_the_file_holds_is_refused(filled, tmp_path):
    path = tmp_path / "short.npy"
    path.write_bytes(_npy_stating((99, 3, 3)))
    refused(filled, str(path), names=str(path), peak_bytes=64 << 20)


def test_npz_member_claiming_more_than_it_can_decompress_to_is_refused(filled, tmp_path):
    path = tmp_path / "bomb.npz"
    np.savez(path, weights=np.zeros((20, 3, 3), np.float32))      # stored, not compressed
    data = bytearray(path.read_bytes())
    central = data.index(b"PK\x01\x02")
    struct.pack_into("<I", data, central + 24, 2**31)             # uncompressed size, as the directory states it
    path.write_bytes(bytes(data))
    line, _ = refused(filled, str(path), names=str(path), peak_bytes=64 << 20)
    assert "claims 2147483648 bytes" in line


def test_npz_with_two_members_of_one_name_is_refused(filled, tmp_path):
    import warnings

    path = tmp_path / "twice.npz"
    with warnings.catch_warnings(), zipfile.ZipFile(path, "w") as z:
        warnings.simplefilter("ignore")         # zipfile warns about the duplicate it writes
        for fill in (1.0, 2.0):
            z.writestr("weights.npy", _npy_stating((20, 3, 3))[:-720] + np.full((20, 3, 3), fill, np.float32).tobytes())
    line, _ = refused(filled, str(path), names=str(path))
    assert "two members named 'weights.npy'" in line


def test_shard_index_larger_than_an_index_is_refused(filled, empty_hub, monkeypatch):
    from kernel_catalog.adapters import hf

    index = {"metadata": {"padding": "x" * 4096}, "weight_map": {"a.weight": "model-00001-of-00001.safetensors"}}
    empty_hub.add("acme/bigindex", {"model.safetensors.index.json": json.dumps(index).encode()})
    monkeypatch.setattr(hf, "MAX_INDEX_BYTES", 1024)      # the real bound (64 MB) would take long to serve
    refused(filled, "hf:acme/bigindex", names="more than a shard index holds (1024)")
