"""`catalog ingest hf:ORG/REPO[@REV][/FILE]` against the local hub: file choice, shards, formats,
revisions, gated repos, provenance, and timm configs that only give a URL."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save as save_bytes

from kernel_catalog.adapters.hf import parse_source, pick_weights
from kernel_catalog.errors import CatalogError
from kernel_catalog.store import Catalog

from .conftest import CLS_ONNX, FIXTURES, assert_one_line_error, run_cli_in_process as cli, snapshot
from .hub_fixtures import empty_hub, shard, torch_bytes, transformers_convnext_state  # noqa: F401 (fixture)
from .timm_fixtures import build_random_model, plain_state_dict

SELFIE = FIXTURES / "selfie_segmentation.tflite"


@pytest.fixture(scope="module")
def convnext_hf() -> dict[str, torch.Tensor]:
    """A ConvNeXt state dict in transformers' key layout (random init, real tensors)."""
    return transformers_convnext_state(plain_state_dict(build_random_model("convnext_atto", seed=11)))


def _ingest(catalog: Path, *args: str):
    return cli("--catalog", str(catalog), "ingest", *args)


def _rows(catalog: Path, model: str) -> list[dict]:
    return Catalog(catalog).sql("SELECT layer, channel, weights FROM kernels WHERE model = ? ORDER BY layer, channel",
                                [model]).to_pylist()


def _model(catalog: Path, model: str) -> dict:
    row = Catalog(catalog).sql("SELECT source, meta, adapter FROM models WHERE model = ?", [model]).to_pylist()[0]
    return {**row, "meta": json.loads(row["meta"])}


def test_parse_and_pick():
    assert parse_source("hf:acme/net") == ("acme/net", None, None)
    assert parse_source("hf:acme/net@v1.0") == ("acme/net", "v1.0", None)
    assert parse_source("hf:acme/net/sub/w.onnx") == ("acme/net", None, "sub/w.onnx")
    assert parse_source("hf:acme/net@abc/w.onnx") == ("acme/net", "abc", "w.onnx")
    with pytest.raises(CatalogError, match="hf:ORG/REPO"):
        parse_source("hf:nope")
    files = ["README.md", "a.onnx", "m.tflite", "pytorch_model.bin", "model.safetensors"]
    assert pick_weights(files, "s") == "model.safetensors"
    assert pick_weights(files[:4], "s") == "pytorch_model.bin"
    assert pick_weights(["x.tflite", "a.onnx"], "s") == "a.onnx"
    assert pick_weights(["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
                         "model.safetensors.index.json"], "s") == "model.safetensors.index.json"
    with pytest.raises(CatalogError, match="several weights files"):
        pick_weights(["a.onnx", "b.onnx"], "hf:acme/x")


def test_sharded_transformers_checkpoint_through_the_state_dict_rule(empty_hub, convnext_hf, tmp_path):
    files = shard(convnext_hf, n=3)
    repo = empty_hub.add("acme/convnext-atto-hf", {**files, "config.json": b'{"model_type": "convnext"}',
                                                   "README.md": b"# a model"}, license="mit")
    result = _ingest(tmp_path / "cat", "hf:acme/convnext-atto-hf")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("added acme/convnext-atto-hf:")
    depthwise = {k: v for k, v in convnext_hf.items() if v.ndim == 4 and v.shape[1] == 1}
    rows = _rows(tmp_path / "cat", "acme/convnext-atto-hf")
    assert {r["layer"] for r in rows} == {k.removesuffix(".weight") for k in depthwise}
    for r in rows:
        expected = depthwise[f"{r['layer']}.weight"][r["channel"], 0].numpy().ravel()
        assert np.asarray(r["weights"], np.float32).tobytes() == expected.tobytes()
    model = _model(tmp_path / "cat", "acme/convnext-atto-hf")
    assert model["source"] == f"hf:acme/convnext-atto-hf@{repo.sha}" and model["adapter"] == "hf"
    hub_meta = model["meta"]["hub"]
    assert hub_meta["repo"] == "acme/convnext-atto-hf" and hub_meta["revision"] == repo.sha
    assert hub_meta["license"] == "mit" and model["meta"]["shards"] == 3
    names = [f["name"] for f in hub_meta["files"]]
    assert names[0] == "model.safetensors.index.json" and sorted(names[1:]) == sorted(n for n in files if n.endswith(
        ".safetensors"))
    for entry in hub_meta["files"]:
        assert entry["size"] == len(files[entry["name"]])
        assert entry["sha256"] == hashlib.sha256(files[entry["name"]]).hexdigest()
    # only the weights (each shard once) and the model card were downloaded; `catalog models` shows the repo
    assert sorted(p.rsplit("/", 1)[1] for p, _ in empty_hub.downloads()) == sorted([*files, "README.md"])
    listing = cli("--catalog", str(tmp_path / "cat"), "models", "--format", "csv", check=True).stdout
    assert "hf:acme/convnext-atto-hf@" in listing


def test_formats_files_revisions_and_names(empty_hub, tmp_path):
    cls = CLS_ONNX.read_bytes()
    repo = empty_hub.add("acme/mixed", {"cls.onnx": cls, "selfie.tflite": SELFIE.read_bytes()})
    cat = tmp_path / "cat"
    assert _ingest(cat, "hf:acme/mixed").returncode == 0                     # .onnx before .tflite
    assert _model(cat, "acme/mixed")["meta"]["format_adapter"] == "onnx"
    pinned = _ingest(cat, f"hf:acme/mixed@{repo.sha}/selfie.tflite", "--name", "selfie")
    assert pinned.returncode == 0, pinned.stderr
    assert _model(cat, "selfie")["meta"]["format_adapter"] == "tflite"
    assert _model(cat, "selfie")["meta"]["hub"]["files"][0]["name"] == "selfie.tflite"
    before = snapshot(Catalog(cat))
    assert_one_line_error(_ingest(cat, "hf:acme/mixed@nope"), "acme/mixed@nope", "no revision 'nope'")
    assert_one_line_error(_ingest(cat, "hf:acme/absent"), "acme/absent", "does not exist")
    assert_one_line_error(_ingest(cat, "hf:acme/mixed/none.onnx"), "none.onnx")
    assert snapshot(Catalog(cat)) == before
    # a second run: the repo is in the catalog at this revision -> unchanged, nothing downloaded
    downloads = len(empty_hub.downloads())
    again = _ingest(cat, "hf:acme/mixed")
    assert again.stdout.startswith("unchanged acme/mixed") and len(empty_hub.downloads()) == downloads


def test_pytorch_bin_repo_and_offline_cache(empty_hub, tmp_path, monkeypatch):
    state = {"blocks.0.dw.weight": torch.randn(8, 1, 3, 3), "blocks.0.pw.weight": torch.randn(4, 8, 1, 1)}
    card = b"---\nlicense: bsd-3-clause\ntags: [vision]\n---\n# acme/bin\n"
    empty_hub.add("acme/bin", {"pytorch_model.bin": torch_bytes(state), "README.md": card}, license="bsd-3-clause")
    assert _ingest(tmp_path / "one", "hf:acme/bin").returncode == 0
    assert _model(tmp_path / "one", "acme/bin")["meta"]["hub"]["license"] == "bsd-3-clause"
    empty_hub.stop()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cached = _ingest(tmp_path / "two", "hf:acme/bin")
    assert cached.returncode == 0, cached.stderr                             # from the cache alone
    rows = _rows(tmp_path / "two", "acme/bin")
    assert [np.asarray(r["weights"], np.float32).tobytes() for r in rows] == [
        state["blocks.0.dw.weight"][c, 0].numpy().ravel().tobytes() for c in range(8)]
    # the license still recorded: read from the model card the first ingest cached beside the weights
    assert _model(tmp_path / "two", "acme/bin")["meta"]["hub"]["license"] == "bsd-3-clause"


def test_gated_repo_needs_hf_token(empty_hub, tmp_path, monkeypatch):
    state = {"dw.weight": torch.randn(4, 1, 5, 5)}
    empty_hub.add("acme/gated", {"model.safetensors": save_bytes(state)}, gated_token="hf_secret")
    assert_one_line_error(_ingest(tmp_path / "cat", "hf:acme/gated"), "acme/gated", "HF_TOKEN")
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    ok = _ingest(tmp_path / "cat", "hf:acme/gated")
    assert ok.returncode == 0, ok.stderr


def test_timm_config_with_only_a_url_downloads_into_torch_hub(empty_hub, tmp_path):
    """cfg.url (no hf_hub_id): torch.hub's cache, checked against the hash prefix in the name."""
    from types import SimpleNamespace

    from kernel_catalog.adapters.timm._hub import fetch_weights, resolve_weights

    data = torch_bytes({"w": torch.arange(6.0)})
    good = f"weights-{hashlib.sha256(data).hexdigest()[:8]}.pth"
    empty_hub.urls.update({good: data, "weights-00000000.pth": data})
    cfg = SimpleNamespace(hf_hub_id=None, url=f"{empty_hub.url}/files/{good}", license="apache-2.0")
    plan = resolve_weights("some_net", cfg)
    assert plan.kind == "url" and not plan.cached and plan.revision == good.split("-")[1][:8]
    path = fetch_weights(plan)
    assert path.read_bytes() == data and "torch-home" in str(path)
    assert resolve_weights("some_net", cfg).cached                  # second time: from the cache
    bad = SimpleNamespace(hf_hub_id=None, url=f"{empty_hub.url}/files/weights-00000000.pth", license=None)
    with pytest.raises(CatalogError, match="cannot download") as err:
        fetch_weights(resolve_weights("some_net", bad))
    assert "\n" not in str(err.value)


def test_several_hf_sources_in_one_run(empty_hub, tmp_path):
    for i in range(3):
        empty_hub.add(f"acme/net{i}", {"model.safetensors": save_bytes({"dw.weight": torch.randn(4 + i, 1, 3, 3)})})
    result = _ingest(tmp_path / "cat", "hf:acme/net0", "hf:acme/net1", "hf:acme/net2", "hf:acme/gone", "--jobs", "2")
    assert result.returncode == 1
    assert "summary: 3 added, 0 replaced, 0 unchanged, 1 failed" in result.stderr
    assert [line.split(":")[0] for line in result.stdout.splitlines()] == [f"added acme/net{i}" for i in range(3)]
    counts = Catalog(tmp_path / "cat").sql("SELECT model, n_kernels FROM models ORDER BY model").to_pylist()
    assert counts == [{"model": f"acme/net{i}", "n_kernels": 4 + i} for i in range(3)]
