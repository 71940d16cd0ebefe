"""The kernel-bank adapter on real .npy/.npz files written here."""
from __future__ import annotations

import numpy as np
import pytest

from kernel_catalog.adapters.base import IngestOptions
from kernel_catalog.adapters.kernelbank import KernelBankAdapter
from kernel_catalog.errors import CatalogError

ADAPTER = KernelBankAdapter()
OPTS = IngestOptions()
RNG = np.random.default_rng(3)


def test_npy_3d_and_4d(tmp_path):
    bank = RNG.standard_normal((50, 5, 5)).astype(np.float32)
    np.save(tmp_path / "bank3.npy", bank)
    np.save(tmp_path / "bank4.npy", bank.reshape(50, 1, 5, 5))
    for stem in ("bank3", "bank4"):
        ext = ADAPTER.read(str(tmp_path / f"{stem}.npy"), OPTS)
        (layer,) = ext.layers
        assert layer.name == stem and ext.model == stem
        assert layer.weights.dtype == np.float32 and layer.weights.flags.writeable
        assert layer.weights.tobytes() == bank.tobytes()
        assert ext.trained is True and ext.meta == {"format": "npy"}
        assert layer.meta["kind"] == "bank" and layer.meta["dtype"] == "float32"


def test_npy_float16_upcast_exactly(tmp_path):
    bank = RNG.standard_normal((10, 3, 3)).astype(np.float16)
    np.save(tmp_path / "half.npy", bank)
    layer = ADAPTER.read(str(tmp_path / "half.npy"), OPTS).layers[0]
    assert np.array_equal(layer.weights, bank.astype(np.float32))
    assert layer.meta["dtype"] == "float16"


def test_npz_several_sizes_index_arrays_and_filters(tmp_path):
    w7 = RNG.standard_normal((30, 7, 7)).astype(np.float32)
    w5 = RNG.standard_normal((20, 1, 5, 5)).astype(np.float32)
    w3 = RNG.standard_normal((10, 3, 3)).astype(np.float32)
    path = tmp_path / "banks.npz"
    np.savez(path, weights_7x7=w7, weights_5x5=w5, weights=w3,
             kernel_id=np.arange(30), model=np.array(["m"] * 30), layer=np.array(["l"] * 30),
             channel=np.arange(30), labels=np.zeros((30, 2)), counts=np.zeros((2, 2, 2), np.int64))
    ext = ADAPTER.read(str(path), OPTS)
    assert [layer.name for layer in ext.layers] == ["weights_7x7", "weights_5x5", "weights"]
    for layer, source in zip(ext.layers, (w7, w5, w3)):
        assert layer.weights.tobytes() == source.tobytes()
    assert ext.layers[1].meta["source_shape"] == [20, 1, 5, 5]
    assert ext.meta == {"format": "npz", "index_arrays": ["kernel_id", "model", "layer", "channel"],
                        "ignored_arrays": ["labels", "counts"]}
    ext = ADAPTER.read(str(path), IngestOptions(exclude=("weights_*",)))
    assert [layer.name for layer in ext.layers] == ["weights"]


@pytest.mark.parametrize("array", [
    np.zeros((10, 2, 3, 3), np.float32),        # not one kernel per channel
    np.zeros((10, 9), np.float32),              # flattened
    np.zeros((10, 1, 1), np.float32),           # 1x1 kernels are scales
    np.zeros((10, 3, 3), np.int32),             # integer
])
def test_bad_shape_or_dtype_is_one_line_error(tmp_path, array):
    np.save(tmp_path / "bad.npy", array)
    with pytest.raises(CatalogError, match="kernel bank holds float arrays") as err:
        ADAPTER.read(str(tmp_path / "bad.npy"), OPTS)
    assert "\n" not in str(err.value) and str(tmp_path / "bad.npy") in str(err.value)


def test_npz_weights_must_be_a_bank(tmp_path):
    np.savez(tmp_path / "bad.npz", weights=np.zeros((10, 9), np.float32))
    with pytest.raises(CatalogError, match="'weights' has shape"):
        ADAPTER.read(str(tmp_path / "bad.npz"), OPTS)


def test_npz_without_kernels(tmp_path):
    np.savez(tmp_path / "none.npz", kernel_id=np.arange(3), table=np.zeros((3, 3)))
    with pytest.raises(CatalogError, match="no kernel array found"):
        ADAPTER.read(str(tmp_path / "none.npz"), OPTS)


@pytest.mark.parametrize("suffix", [".npy", ".npz"])
@pytest.mark.parametrize("damage", ["truncated", "garbage", "pickled", "missing"])
def test_bad_files_are_one_line_errors(tmp_path, suffix, damage):
    good, bad = tmp_path / f"good{suffix}", tmp_path / f"bad{suffix}"
    bank = np.zeros((100, 3, 3), np.float32)
    np.save(good, bank) if suffix == ".npy" else np.savez(good, weights=bank)
    if damage == "truncated":
        bad.write_bytes(good.read_bytes()[:200])
    elif damage == "garbage":
        bad.write_bytes(b"not numpy " * 30)
    elif damage == "pickled":
        objects = np.array([{"a": 1}], dtype=object)
        np.save(bad, objects) if suffix == ".npy" else np.savez(bad, weights=objects)
    with pytest.raises(CatalogError) as err:
        ADAPTER.read(str(bad), OPTS)
    assert str(bad) in str(err.value) and "\n" not in str(err.value)


def test_can_read_by_suffix():
    assert ADAPTER.can_read("a.npy", OPTS) and ADAPTER.can_read("a.NPZ", OPTS)
    assert not ADAPTER.can_read("a.pth", OPTS) and not ADAPTER.can_read("a.onnx", OPTS)
    assert ADAPTER.priority > 0


def test_entry_points_reach_the_three_adapters():
    from importlib.metadata import entry_points

    found = {ep.name: ep.load() for ep in entry_points(group="kernel_catalog.adapters")
             if ep.name in ("onnx", "statedict", "kernelbank")}
    assert set(found) == {"onnx", "statedict", "kernelbank"}
    for name, cls in found.items():
        adapter = cls()
        assert adapter.name == name and isinstance(adapter.version, str)
        assert isinstance(adapter.description, str) and isinstance(adapter.priority, int)
    suffix_owner = {".onnx": "onnx", ".safetensors": "statedict", ".pth": "statedict",
                    ".npy": "kernelbank", ".npz": "kernelbank"}
    for suffix, owner in suffix_owner.items():
        readers = [n for n, cls in found.items() if cls().can_read(f"x{suffix}", OPTS)]
        assert readers == [owner], (suffix, readers)


def test_wrong_suffix_for_content_is_one_line_error(tmp_path):
    with open(tmp_path / "really_npz.npy", "wb") as f:      # a path would get ".npz" appended
        np.savez(f, weights=np.zeros((4, 3, 3), np.float32))
    with pytest.raises(CatalogError, match="rename it to .npz"):
        ADAPTER.read(str(tmp_path / "really_npz.npy"), OPTS)
    np.save(tmp_path / "really_npy.npy", np.zeros((4, 3, 3), np.float32))
    (tmp_path / "really_npy.npy").rename(tmp_path / "really_npy.npz")
    with pytest.raises(CatalogError, match="rename it to .npy"):
        ADAPTER.read(str(tmp_path / "really_npy.npz"), OPTS)
