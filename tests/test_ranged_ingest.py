"""Ranged ingest of published safetensors (adapters/ranged.py) against the local hub server.

Reference for bit-exactness: the same source ingested with IngestOptions(full_download=True) into
a second catalog (the whole file downloaded and read by the safetensors library). The server counts
the bytes it sends; the catalog records what the client received (models.meta.hub.files[].bytes_fetched).
"""
from __future__ import annotations

import hashlib
import json
import os
import struct
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from safetensors.torch import save as save_bytes

from kernel_catalog.adapters.base import IngestOptions
from kernel_catalog.adapters.ranged import FIRST_READ
from kernel_catalog.errors import CatalogError
from kernel_catalog.ingest import ingest
from kernel_catalog.store import Catalog

from .hub_fixtures import (CUT_MODEL, _served, empty_hub, ranged_hub, shard,  # noqa: F401 (fixtures)
                           torch_bytes, transformers_convnext_state)

FULL = IngestOptions(full_download=True)


@pytest.fixture(scope="module")
def release():
    """convnext_atto at its real size (~15 MB), random init, as timm's hub repo serves it."""
    return _served(CUT_MODEL, seed=3)


def _kernels(catalog: Path, model: str) -> list[tuple]:
    rows = Catalog(catalog).sql("SELECT layer, channel, expert, weights FROM kernels WHERE model = ?"
                                " ORDER BY layer, channel, expert", [model]).to_pylist()
    assert rows
    return [(r["layer"], r["channel"], r["expert"], np.asarray(r["weights"], np.float32).tobytes()) for r in rows]


def _model(catalog: Path, model: str) -> dict:
    row = Catalog(catalog).sql("SELECT checkpoint_sha256, meta FROM models WHERE model = ?", [model]).to_pylist()[0]
    return {"sha256": row["checkpoint_sha256"], **json.loads(row["meta"])}


def _same_as_full_download(tmp_path: Path, source: str, model: str) -> None:
    """The ranged catalog (tmp_path/'ranged') holds exactly what a full download gives."""
    assert ingest(Catalog(tmp_path / "full"), source, FULL).action == "added"
    assert _kernels(tmp_path / "ranged", model) == _kernels(tmp_path / "full", model)
    assert _model(tmp_path / "ranged", model)["sha256"] == _model(tmp_path / "full", model)["sha256"]


def test_timm_release_is_read_by_ranges_bit_exact(ranged_hub, release, tmp_path):
    repo = ranged_hub.add(release.repo, {"model.safetensors": release.data, "config.json": b"{}"})
    result = ingest(Catalog(tmp_path / "ranged"), CUT_MODEL)
    assert result.action == "added" and result.n_kernels > 0
    served = ranged_hub.served_bytes("model.safetensors")
    # the length and the header in one request, then the depthwise tensors only: a small part of the file
    assert 0 < served < 0.1 * len(release.data)
    gets = ranged_hub.downloads()
    assert gets[0][1] == f"bytes=0-{FIRST_READ - 1}"
    data_start = 8 + struct.unpack("<Q", release.data[:8])[0]
    assert data_start <= FIRST_READ and all(int(r[6:].split("-")[0]) >= data_start for _, r in gets[1:])
    assert all(path == f"/{release.repo}/resolve/{repo.sha}/model.safetensors" for path, _ in gets)   # pinned
    hub_meta = _model(tmp_path / "ranged", CUT_MODEL)["hub"]
    assert hub_meta["revision"] == repo.sha
    assert hub_meta["files"] == [{"name": "model.safetensors", "size": len(release.data),
                                  "sha256": hashlib.sha256(release.data).hexdigest(), "bytes_fetched": served}]
    assert not list(Path(os.environ["HF_HUB_CACHE"]).rglob("model.safetensors"))    # nothing cached
    # bit-exact: the same kernels as the tensors served, and as a full download gives
    for layer, channel, _, weights in _kernels(tmp_path / "ranged", CUT_MODEL):
        assert weights == release.state[f"{layer}.weight"][channel, 0].numpy().tobytes()
    _same_as_full_download(tmp_path, CUT_MODEL, CUT_MODEL)
    assert ranged_hub.served_bytes("model.safetensors") >= served + len(release.data)


def test_sharded_repo_with_prefixed_keys(ranged_hub, release, tmp_path):
    """transformers' layout: keys under 'convnext.', three shards and an index."""
    state = transformers_convnext_state(release.state)
    files = shard(state, n=3)
    ranged_hub.add("acme/convnext-hf", {**files, "config.json": b"{}"})
    assert ingest(Catalog(tmp_path / "ranged"), "hf:acme/convnext-hf").action == "added"
    shards = [n for n in files if n.endswith(".safetensors")]
    served = {n: ranged_hub.served_bytes(n) for n in shards}
    assert sum(served.values()) < 0.1 * sum(len(files[n]) for n in shards)
    entries = {f["name"]: f for f in _model(tmp_path / "ranged", "acme/convnext-hf")["hub"]["files"]}
    for name in shards:
        assert entries[name]["bytes_fetched"] == served[name] and entries[name]["size"] == len(files[name])
    layers = {layer for layer, *_ in _kernels(tmp_path / "ranged", "acme/convnext-hf")}
    assert layers == {k.removesuffix(".weight") for k, v in state.items() if v.ndim == 4 and v.shape[1] == 1}
    assert all(layer.startswith("convnext.") for layer in layers)
    _same_as_full_download(tmp_path, "hf:acme/convnext-hf", "acme/convnext-hf")


def test_dropped_connection_mid_range_asks_for_the_rest(ranged_hub, release, tmp_path):
    repo = ranged_hub.add(release.repo, {"model.safetensors": release.data, "config.json": b"{}"})
    path = f"/{release.repo}/resolve/{repo.sha}/model.safetensors"
    data_start = 8 + struct.unpack("<Q", release.data[:8])[0]
    ranged_hub.cut(path, 1000, then_fail=False, from_byte=data_start)     # the first tensor range: 1000 bytes, then gone
    assert ingest(Catalog(tmp_path / "ranged"), CUT_MODEL).action == "added"
    starts = [int(r.removeprefix("bytes=").split("-")[0]) for p, r in ranged_hub.downloads()]
    assert any(s - 1000 in starts for s in starts if s >= data_start + 1000)     # the rest, not the whole range
    _same_as_full_download(tmp_path, CUT_MODEL, CUT_MODEL)


def test_server_ignoring_range_falls_back_to_the_full_download(ranged_hub, release, tmp_path):
    ranged_hub.add(release.repo, {"model.safetensors": release.data, "config.json": b"{}"})
    ranged_hub.ignore_ranges = True
    assert ingest(Catalog(tmp_path / "ranged"), CUT_MODEL).action == "added"
    (cached,) = Path(os.environ["HF_HUB_CACHE"]).rglob("model.safetensors")       # downloaded whole
    assert cached.read_bytes() == release.data
    assert "bytes_fetched" not in _model(tmp_path / "ranged", CUT_MODEL)["hub"]["files"][0]
    ranged_hub.ignore_ranges = False
    _same_as_full_download(tmp_path, CUT_MODEL, CUT_MODEL)


def test_cached_weights_and_other_formats_are_not_ranged(ranged_hub, release, tmp_path):
    ranged_hub.add(release.repo, {"model.safetensors": release.data, "config.json": b"{}"})
    assert ingest(Catalog(tmp_path / "full"), CUT_MODEL, FULL).action == "added"      # into the cache
    ranged_hub.stop()
    assert ingest(Catalog(tmp_path / "ranged"), CUT_MODEL).action == "added"          # no server needed
    assert _kernels(tmp_path / "ranged", CUT_MODEL) == _kernels(tmp_path / "full", CUT_MODEL)
    ranged_hub.start()
    state = {"blocks.0.dw.weight": torch.randn(8, 1, 3, 3), "blocks.0.pw.weight": torch.randn(4, 8, 1, 1)}
    ranged_hub.add("acme/bin", {"pytorch_model.bin": torch_bytes(state)})
    assert ingest(Catalog(tmp_path / "ranged"), "hf:acme/bin").action == "added"
    assert [r for p, r in ranged_hub.downloads() if p.endswith(".bin")] == [None]    # one whole download


def _hostile(header: dict, data: bytes = b"") -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


@pytest.mark.parametrize("data, names", [
    (_hostile({"dw.weight": {"dtype": "F32", "shape": [2**40, 1, 3, 3], "data_offsets": [0, 72]}}, bytes(72)),
     "need"),
    (_hostile({"dw.weight": {"dtype": "F32", "shape": [2, 1, 3, 3], "data_offsets": [0, 2**50]}}, bytes(72)),
     "beyond"),
    (struct.pack("<Q", 2**40) + b"{}", "beyond"),
    (_hostile({"dw.weight": {"dtype": "F32", "shape": [2, 1, 3, 3], "data_offsets": [0, 72]}}, bytes(70)),
     "beyond"),
], ids=["absurd-shape", "offset-beyond-the-file", "header-longer-than-the-file", "data-cut-short"])
def test_hostile_header_is_refused_before_any_tensor_request(ranged_hub, tmp_path, data, names):
    ranged_hub.add("acme/hostile", {"model.safetensors": data})
    with pytest.raises(CatalogError) as refused:
        ingest(Catalog(tmp_path / "cat"), "hf:acme/hostile")
    message = str(refused.value)
    assert "\n" not in message and "acme/hostile/model.safetensors" in message and names in message, message
    assert len(ranged_hub.downloads()) <= 2                 # the length and the header, nothing more
    assert not Catalog(tmp_path / "cat").exists()


def test_a_header_longer_than_the_first_read_takes_a_second_request(ranged_hub, tmp_path):
    from kernel_catalog.adapters import hub

    state = {f"blocks.{i}.{'x' * 200}.dw.weight": torch.randn(2, 1, 3, 3) for i in range(400)}
    data = save_bytes(state)
    data_start = 8 + struct.unpack("<Q", data[:8])[0]
    assert data_start > FIRST_READ
    repo = ranged_hub.add("acme/long-header", {"model.safetensors": data})
    remote = hub.open_ranged("acme/long-header", "model.safetensors", repo.sha, "acme/long-header")
    assert [r for _, r in ranged_hub.downloads()] == [f"bytes=0-{FIRST_READ - 1}",
                                                      f"bytes={FIRST_READ}-{data_start - 1}"]
    assert set(remote.tensors) == set(state) and remote.fetched == data_start
    name = next(iter(state))
    assert torch.equal(remote.get(name), state[name])


def test_a_file_shorter_than_the_first_read(ranged_hub, tmp_path):
    from kernel_catalog.adapters import hub

    state = {"dw.weight": torch.randn(4, 1, 3, 3)}
    data = save_bytes(state)
    assert len(data) < FIRST_READ
    repo = ranged_hub.add("acme/small", {"model.safetensors": data, "tiny.safetensors": b"\x01\x00"})
    remote = hub.open_ranged("acme/small", "model.safetensors", repo.sha, "acme/small")
    assert remote.size == len(data) and len(ranged_hub.downloads()) == 1
    assert torch.equal(remote.get("dw.weight"), state["dw.weight"])
    with pytest.raises(CatalogError, match="shorter than the 8 bytes"):
        hub.open_ranged("acme/small", "tiny.safetensors", repo.sha, "acme/small")


def test_url_only_release_is_read_by_ranges(ranged_hub, tmp_path):
    """A timm config with only a URL: plain HTTP ranges for .safetensors, the whole file otherwise."""
    from kernel_catalog.adapters.timm._hub import open_ranged_weights, resolve_weights

    state = {"a.dw.weight": torch.randn(16, 1, 5, 5), "a.pw.weight": torch.randn(512, 512), "b.dw.weight":
             torch.randn(32, 1, 3, 3).to(torch.bfloat16)}
    data = save_bytes(state)
    ranged_hub.urls.update({"net.safetensors": data, "net.pth": torch_bytes(state)})
    cfg = SimpleNamespace(hf_hub_id=None, url=f"{ranged_hub.url}/files/net.safetensors", license=None)
    plan = resolve_weights("some_net", cfg)
    remote = open_ranged_weights(replace(plan, extra={"ranged": True}))
    assert remote is not None and remote.fetched == ranged_hub.served_bytes("net.safetensors") < len(data) / 10
    for name in ("a.dw.weight", "b.dw.weight"):
        assert torch.equal(remote.get(name), state[name]) and remote.get(name).dtype == state[name].dtype
    assert not list(Path(os.environ["TORCH_HOME"]).rglob("*.safetensors"))          # nothing cached
    assert all("authorization" not in str(h).lower() for h in ranged_hub.requests)
    pth = resolve_weights("some_net", SimpleNamespace(hf_hub_id=None, url=f"{ranged_hub.url}/files/net.pth",
                                                     license=None))
    assert open_ranged_weights(replace(pth, extra={"ranged": True})) is None
    assert open_ranged_weights(plan) is None                   # not asked for (full_download)


def test_gated_repo_is_read_by_ranges_with_hf_token(ranged_hub, tmp_path, monkeypatch):
    state = {"dw.weight": torch.randn(4, 1, 5, 5), "fc.weight": torch.randn(1024, 1024)}
    data = save_bytes(state)
    ranged_hub.add("acme/gated", {"model.safetensors": data}, gated_token="hf_secret")
    with pytest.raises(CatalogError, match="HF_TOKEN"):
        ingest(Catalog(tmp_path / "cat"), "hf:acme/gated")
    monkeypatch.setenv("HF_TOKEN", "hf_secret")                 # read when the requests are made
    assert ingest(Catalog(tmp_path / "cat"), "hf:acme/gated").action == "added"
    assert all(r is not None for _, r in ranged_hub.downloads())   # every body request a range
    assert ranged_hub.served_bytes("model.safetensors") < len(data) / 10
    (row,) = Catalog(tmp_path / "cat").sql("SELECT weights FROM kernels WHERE channel = 3").to_pylist()
    assert np.asarray(row["weights"], np.float32).tobytes() == state["dw.weight"][3, 0].numpy().tobytes()
