"""Fixtures for published-weights tests: a local hub server with real random-init timm checkpoints.

Never the real hub: HF_ENDPOINT points at a `HubServer` on 127.0.0.1, HF_HUB_CACHE and TORCH_HOME
at temporary folders, HF_TOKEN and HF_HUB_OFFLINE are unset. huggingface_hub's own client runs.
`hub` / `empty_hub` test whole-file downloads (KERNEL_CATALOG_FULL_DOWNLOAD=1, what
IngestOptions(full_download=True) asks for); `ranged_hub` leaves the default, ranged reads of
safetensors (tests/test_ranged_ingest.py).
"""
from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors.torch import save as save_bytes

from kernel_catalog.adapters.ranged import FORCE_ENV

from .hub_server import HubServer
from .timm_fixtures import build_random_model, plain_state_dict

# (timm name -> architecture) served by the fixture: one > 10 MB (huggingface_hub writes 10 MB chunks,
# so a cut after 12 MB leaves a partial file to resume) and the three of the zoo pattern.
CUT_MODEL = "convnext_atto.d2_in1k"
ZOO_PATTERN = "test_convnext*"


@dataclass(frozen=True)
class Served:
    name: str           # timm name
    repo: str           # hub repo id
    data: bytes         # model.safetensors as served
    state: dict         # its tensors


def _served(name: str, seed: int) -> Served:
    import timm
    from timm.models import get_pretrained_cfg

    model = build_random_model(name.partition(".")[0], seed=seed)
    state = plain_state_dict(model)
    assert name in timm.list_models(name, pretrained=True, include_tags=True)
    return Served(name, get_pretrained_cfg(name).hf_hub_id, save_bytes(state), state)


@pytest.fixture(scope="session")
def timm_releases() -> dict[str, Served]:
    import timm

    names = [CUT_MODEL] + timm.list_models(ZOO_PATTERN, pretrained=True, include_tags=True)
    assert len(names) >= 4
    return {name: _served(name, seed) for seed, name in enumerate(names)}


@pytest.fixture
def hub(empty_hub: HubServer, timm_releases) -> HubServer:
    """The local hub serving the timm releases (model.safetensors + config.json each)."""
    for served in timm_releases.values():
        empty_hub.add(served.repo, {"model.safetensors": served.data, "config.json": b"{}"})
    return empty_hub


@pytest.fixture
def empty_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> HubServer:
    """A running local hub with no repo yet; this process and child processes use it."""
    server = HubServer()
    server.start()
    for var in ("HF_TOKEN", "HF_HUB_OFFLINE", "HF_HOME", "HUGGINGFACE_HUB_CACHE", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setenv("KERNEL_CATALOG_HUB_TIMEOUT", "10")
    monkeypatch.setenv(FORCE_ENV, "1")
    yield server
    server.stop()


@pytest.fixture
def ranged_hub(empty_hub: HubServer, monkeypatch: pytest.MonkeyPatch) -> HubServer:
    """The running local hub, with ingest's default: safetensors not cached are read by byte ranges."""
    monkeypatch.delenv(FORCE_ENV)
    return empty_hub


def cache_listing(root: Path) -> list[str]:
    """Every path under a cache folder, as text (links included, not followed)."""
    if not root.exists():
        return []
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def transformers_convnext_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """timm ConvNeXt keys renamed the way transformers' ConvNextModel names them."""
    out = {}
    for key, value in state.items():
        key = key.replace("stem.0.", "convnext.embeddings.patch_embeddings.")
        key = key.replace("stem.1.", "convnext.embeddings.layernorm.")
        key = key.replace("stages.", "convnext.encoder.stages.").replace(".blocks.", ".layers.")
        key = key.replace("conv_dw", "dwconv").replace("mlp.fc1", "pwconv1").replace("mlp.fc2", "pwconv2")
        key = key.replace("head.fc.", "classifier.").replace("head.norm.", "convnext.layernorm.")
        out[key] = value
    return out


def shard(state: dict[str, torch.Tensor], n: int = 2) -> dict[str, bytes]:
    """A sharded safetensors release: model-0000i-of-0000n.safetensors + model.safetensors.index.json."""
    import json

    keys = list(state)
    files, weight_map = {}, {}
    for i in range(n):
        name = f"model-{i + 1:05d}-of-{n:05d}.safetensors"
        part = {k: state[k] for k in keys[i::n]}
        files[name] = save_bytes(part)
        weight_map.update(dict.fromkeys(part, name))
    files["model.safetensors.index.json"] = json.dumps({"metadata": {}, "weight_map": weight_map}).encode()
    return files


def torch_bytes(state: dict) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def env_without(*names: str) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in names}
