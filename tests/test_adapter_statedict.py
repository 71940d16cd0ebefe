"""The state-dict adapter on real .safetensors/.pth files written from small torch modules."""
from __future__ import annotations

import json
import struct
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from kernel_catalog.adapters.base import IngestOptions
from kernel_catalog.adapters.statedict import StateDictAdapter, natural_key
from kernel_catalog.errors import CatalogError

REPO = Path(__file__).resolve().parents[1]
ADAPTER = StateDictAdapter()
OPTS = IngestOptions()


def small_net() -> nn.Module:
    """A grey-scale stem (looks depthwise!), 11 depthwise blocks, a multiplier conv, others."""
    torch.manual_seed(0)
    blocks = [nn.Conv2d(16, 16, 7 if i % 2 else 3, padding="same", groups=16, bias=False)
              for i in range(11)]
    return nn.Sequential(OrderedDict(
        stem=nn.Conv2d(1, 16, 3),                       # (16, 1, 3, 3): same shape as depthwise
        bn=nn.BatchNorm2d(16),
        blocks=nn.Sequential(*blocks),                  # blocks.0 ... blocks.10
        mult=nn.Conv2d(16, 32, 5, groups=16),           # depth multiplier 2: (32, 1, 5, 5)
        pw=nn.Conv2d(32, 8, 1),                         # pointwise: not depthwise
        dense=nn.Conv2d(8, 8, 3),                       # normal conv: not depthwise
        point_dw=nn.Conv2d(8, 8, 1, groups=8),          # 1x1 depthwise: a scale, not a kernel
    ))


STATE = small_net().state_dict()
DEPTHWISE = ["stem"] + [f"blocks.{i}" for i in range(11)] + ["mult"]


def test_pth_dict_order_values_and_meta(tmp_path):
    path = tmp_path / "net.pth"
    torch.save(STATE, path)
    ext = ADAPTER.read(str(path), OPTS)
    assert [layer.name for layer in ext.layers] == DEPTHWISE
    for layer in ext.layers:
        source = STATE[layer.name + ".weight"].numpy()
        assert layer.weights.dtype == np.float32
        assert layer.weights.tobytes() == source.reshape(layer.weights.shape).tobytes()
        assert layer.meta == {"kind": "tensor", "tensor_name": layer.name + ".weight",
                              "dtype": "float32", "out_channels": source.shape[0]}
    assert ext.layers[-1].weights.shape == (32, 5, 5)
    assert ext.model == "net" and ext.source == str(path.resolve()) and ext.trained is True
    assert ext.meta == {"format": "pytorch", "wrapper": None, "trained_assumed": True}


def test_exclude_fixes_the_grey_scale_stem(tmp_path):
    path = tmp_path / "net.pth"
    torch.save(STATE, path)
    assert ADAPTER.read(str(path), OPTS).layers[0].name == "stem"      # the ambiguity
    ext = ADAPTER.read(str(path), IngestOptions(exclude=("stem.*",)))
    assert [layer.name for layer in ext.layers] == DEPTHWISE[1:]
    ext = ADAPTER.read(str(path), IngestOptions(include=("blocks.1*",)))
    assert [layer.name for layer in ext.layers] == ["blocks.1", "blocks.10"]


def test_safetensors_natural_order_and_bit_exact(tmp_path):
    path = tmp_path / "net.safetensors"
    save_file(dict(STATE), path, metadata={"arch": "small_net"})
    ext = ADAPTER.read(str(path), OPTS)
    # the header is name-sorted (blocks.10 before blocks.2); natural sort puts 10 after 9
    names = [layer.name for layer in ext.layers]
    assert names == [f"blocks.{i}" for i in range(11)] + ["mult", "stem"]
    for layer in ext.layers:
        expected = STATE[layer.name + ".weight"].numpy().reshape(layer.weights.shape)
        assert layer.weights.tobytes() == expected.tobytes()
    assert ext.meta == {"format": "safetensors", "metadata": {"arch": "small_net"},
                        "trained_assumed": True}


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_becomes_float32_exactly(tmp_path, dtype):
    half = {k: v.to(dtype) for k, v in STATE.items() if v.is_floating_point()}
    save_file(half, tmp_path / "half.safetensors")
    torch.save(half, tmp_path / "half.pt")
    for path in (tmp_path / "half.safetensors", tmp_path / "half.pt"):
        ext = ADAPTER.read(str(path), IngestOptions(include=("blocks.3.weight",)))
        (layer,) = ext.layers
        expected = half["blocks.3.weight"].to(torch.float32).numpy().reshape(16, 7, 7)
        assert layer.weights.dtype == np.float32 and layer.weights.tobytes() == expected.tobytes()
        assert layer.meta["dtype"] == str(dtype).removeprefix("torch.")


def test_natural_key():
    names = ["blocks.10.dw", "blocks.9.dw", "blocks.1.dw", "stem", "blocks.2.dw"]
    assert sorted(names, key=natural_key) == [
        "blocks.1.dw", "blocks.2.dw", "blocks.9.dw", "blocks.10.dw", "stem"]


@pytest.mark.parametrize("wrapper", ["state_dict", "model", "model_state_dict"])
def test_common_checkpoint_wrappers(tmp_path, wrapper):
    path = tmp_path / "ckpt.pt"
    torch.save({"epoch": 7, wrapper: STATE, "optimizer": {"state": {}, "lr": 0.1}}, path)
    ext = ADAPTER.read(str(path), OPTS)
    assert [layer.name for layer in ext.layers] == DEPTHWISE
    assert ext.meta["wrapper"] == wrapper


def test_pickled_module_is_refused_with_advice(tmp_path):
    path = tmp_path / "whole_model.pt"
    torch.save(small_net(), path)
    with pytest.raises(CatalogError, match="state_dict") as err:
        ADAPTER.read(str(path), OPTS)
    assert "\n" not in str(err.value)


def test_legacy_torch_format_without_mmap(tmp_path):
    path = tmp_path / "legacy.pth"
    torch.save(STATE, path, _use_new_zipfile_serialization=False)
    assert [layer.name for layer in ADAPTER.read(str(path), OPTS).layers] == DEPTHWISE


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "missing"])
def test_bad_files_are_one_line_errors(tmp_path, suffix, damage):
    good, bad = tmp_path / f"good{suffix}", tmp_path / f"bad{suffix}"
    save_file(dict(STATE), good) if suffix == ".safetensors" else torch.save(STATE, good)
    data = good.read_bytes()
    if damage == "truncated":
        bad.write_bytes(data[: len(data) * 2 // 3])
    elif damage == "garbage":
        bad.write_bytes(b"certainly not a checkpoint " * 40)
    elif damage == "empty":
        bad.write_bytes(b"")
    with pytest.raises(CatalogError) as err:
        ADAPTER.read(str(bad), OPTS)
    assert str(bad) in str(err.value) and "\n" not in str(err.value)


def test_no_depthwise_tensor_suggests_include_or_other_adapter(tmp_path):
    path = tmp_path / "dense.safetensors"
    save_file({"conv.weight": torch.zeros(8, 4, 3, 3), "fc.weight": torch.zeros(10, 8),
               "ints": torch.zeros(8, 1, 3, 3, dtype=torch.int32)}, path)
    with pytest.raises(CatalogError, match="no depthwise tensor found.*--include") as err:
        ADAPTER.read(str(path), OPTS)
    assert "\n" not in str(err.value)


def test_can_read_by_suffix():
    for name in ("a.safetensors", "a.pth", "a.PT", "pytorch_model.bin"):
        assert ADAPTER.can_read(name, OPTS)
    for name in ("a.onnx", "a.npz", "resnet50"):
        assert not ADAPTER.can_read(name, OPTS)


# ---------------------------------------------------------------- laziness

def write_sparse_safetensors(path: Path, dw: np.ndarray, big_bytes: int) -> None:
    """A valid safetensors file whose first tensor (big_bytes, not depthwise) is a sparse hole."""
    header = {
        "big.weight": {"dtype": "F32", "shape": [big_bytes // 4096, 1024],
                       "data_offsets": [0, big_bytes]},
        "dw.weight": {"dtype": "F32", "shape": list(dw.shape),
                      "data_offsets": [big_bytes, big_bytes + dw.nbytes]},
    }
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        f.seek(8 + len(raw) + big_bytes)        # leave a hole: no disk used, reads give zeros
        f.write(dw.astype("<f4").tobytes())


LAZY_PROBE = """
import json, resource, sys
import numpy as np, safetensors, torch
from kernel_catalog.adapters.base import IngestOptions
from kernel_catalog.adapters.statedict import StateDictAdapter
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
ext = StateDictAdapter().read(sys.argv[1], IngestOptions())
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"names": [l.name for l in ext.layers], "peak_growth_kib": after - before,
                  "weights": ext.layers[0].weights.tolist()}))
"""


def test_safetensors_reads_only_depthwise_tensors(tmp_path):
    """A 2 GiB non-depthwise tensor (a sparse hole) sits before the kernel. Any read of its bytes
    (a copy, a numpy load, a sum over an mmap view) raises the peak RSS of a fresh process by
    ~2 GiB, as checked by hand; the adapter must leave it untouched."""
    dw = np.random.default_rng(1).standard_normal((16, 1, 3, 3)).astype(np.float32)
    path = tmp_path / "big.safetensors"
    write_sparse_safetensors(path, dw, 2 << 30)
    done = subprocess.run([sys.executable, "-c", LAZY_PROBE, str(path)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    probe = json.loads(done.stdout)
    assert probe["names"] == ["dw"]
    assert np.array(probe["weights"], dtype=np.float32).tobytes() == dw.reshape(16, 3, 3).tobytes()
    assert probe["peak_growth_kib"] < 256 * 1024, "the 2 GiB tensor was read"
