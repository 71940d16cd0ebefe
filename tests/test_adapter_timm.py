"""The timm adapter against real timm models (random init, saved as real checkpoint files).

Every family test checks the three promises of the adapter contract: no depthwise layer
missed (count against an independent count), values bit-exact against the model's own
state_dict tensor, and complete metadata.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from kernel_catalog.adapters.base import Adapter, Extraction, IngestOptions
from kernel_catalog.adapters.timm import TimmAdapter, list_timm_sources
from kernel_catalog.adapters.timm._layers import find_depthwise, kernels_from_tensor, stage_block
from kernel_catalog.errors import CatalogError
from tests.timm_fixtures import (bits, build_random_model, check_extraction_against_model,
                                 count_depthwise_kernels_independently, plain_state_dict,
                                 save_random_model, to_fb_convnext_layout, write_hf_cache)

# (timm name, what it exercises); the smallest variant of each family.
FAMILIES = [
    ("convnext_atto", "ConvNeXt 7x7"),
    ("convnextv2_atto", "ConvNeXt V2"),
    ("tinynet_e", "EfficientNet family, 3x3 and 5x5"),
    ("mobilenetv3_small_050", "MobileNetV3"),
    ("tf_mobilenetv3_small_075", "Conv2dSame (TF 'SAME' padding)"),
    ("mixnet_s", "MixedConv2d: several kernel sizes in one layer"),
    ("efficientnet_cc_b0_4e", "CondConv2d: 4 experts"),
    ("inception_next_atto", "non-square 1x9 / 9x1 band kernels"),
    ("mobileone_s0", "MobileOne, reparameterisable, unfused"),
    ("fastvit_t8", "FastViT, depth multiplier 2"),
    ("repvit_m0_9", "RepViT"),
    ("ghostnet_050", "GhostNet cheap operations"),
    ("lcnet_050", "LCNet"),
    ("mobilenetv4_conv_small_035", "MobileNetV4 UIR blocks"),
    ("edgenext_xx_small", "EdgeNeXt"),
    ("mobilevit_xxs", "MobileViT"),
    ("efficientvit_b0", "EfficientViT (MIT)"),
    ("hgnetv2_b0", "HGNetV2 light convs"),
    ("pit_ti_224", "PiT pooling, depth multiplier 2"),
]


@pytest.fixture(scope="module")
def adapter() -> TimmAdapter:
    return TimmAdapter()


@pytest.mark.parametrize("arch", [a for a, _ in FAMILIES])
def test_family_checkpoint_roundtrip(arch: str, tmp_path: Path, adapter: TimmAdapter) -> None:
    path = tmp_path / f"{arch}.safetensors"
    model = save_random_model(arch, path, seed=1)
    extraction = adapter.read(arch, IngestOptions(checkpoint=path))
    assert extraction.model == arch and extraction.trained
    assert extraction.source == str(path.resolve())
    assert extraction.meta["weights"] == "checkpoint" and extraction.meta["arch"] == arch
    check_extraction_against_model(extraction, model)


def test_family_kinds_and_shapes(adapter: TimmAdapter) -> None:
    def read(arch: str) -> Extraction:
        return adapter.read(arch, IngestOptions(random_init=True))

    mixed = [l for l in read("mixnet_s").layers if l.meta["kind"] == "mixed"]
    assert mixed and all(l.meta["mixed_parent"] == l.name.rpartition(".")[0] for l in mixed)
    assert {l.weights.shape[1] for l in mixed} >= {3, 5, 7, 9}

    cond = [l for l in read("efficientnet_cc_b0_4e").layers if l.meta["kind"] == "condconv"]
    assert cond and {l.expert for l in cond} == {0, 1, 2, 3}
    assert all(l.meta["num_experts"] == 4 for l in cond)

    shapes = {l.weights.shape[1:] for l in read("inception_next_atto").layers}
    assert {(1, 9), (9, 1), (3, 3)} <= shapes      # band kernels are 9 in atto, 11 above

    # timm makes stride-2 TF convs Conv2dSame (padding at run time); stride 1 gets static padding.
    for layer in read("tf_mobilenetv3_small_075").layers:
        dynamic = layer.meta["stride"] == [2, 2]
        assert (layer.meta["padding"] == "same") == dynamic
        assert (layer.meta["conv_class"] == "Conv2dSame") == dynamic

    first = read("convnext_atto").layers[0]
    assert (first.name, first.meta["stage"], first.meta["block"]) == ("stages.0.blocks.0.conv_dw", 0, 0)
    assert first.meta["padding"] == [3, 3] and first.meta["reparam"] is None


def test_depth_multiplier(adapter: TimmAdapter) -> None:
    # FastViT: the downsampling patch embeds (7x7 and 3x3) and the final MobileOne conv
    # (groups=384, out=768) double the channels depthwise.
    model = build_random_model("fastvit_t8", seed=0)
    extraction = adapter.read("fastvit_t8", IngestOptions(random_init=True))
    multi = [l for l in extraction.layers if l.meta["depth_multiplier"] > 1]
    assert len(multi) == 7 and {l.meta["depth_multiplier"] for l in multi} == {2}
    assert sum(".downsample." in l.name for l in multi) == 6
    layer = multi[-1]
    assert layer.name == "final_conv.conv_kxk.0.conv"
    assert layer.meta["in_channels"] == 384 and layer.weights.shape == (768, 3, 3)
    np.testing.assert_array_equal(
        bits(layer.weights), bits(model.state_dict()[layer.meta["param_name"]][:, 0].numpy()))


def test_random_init_is_seeded_and_leaves_rng_alone(adapter: TimmAdapter) -> None:
    torch.manual_seed(1234)
    state_before = torch.get_rng_state()
    first = adapter.read("lcnet_050", IngestOptions(random_init=True, seed=7))
    again = adapter.read("lcnet_050", IngestOptions(random_init=True, seed=7))
    other = adapter.read("lcnet_050", IngestOptions(random_init=True, seed=8))
    assert torch.equal(torch.get_rng_state(), state_before)
    assert not first.trained and first.source == "random-init(seed=7)"
    assert first.meta["weights"] == "random-init" and first.meta["pretrained_cfg"] is None
    for a, b in zip(first.layers, again.layers, strict=True):
        np.testing.assert_array_equal(bits(a.weights), bits(b.weights))
    assert not np.array_equal(first.layers[0].weights, other.layers[0].weights)
    check_extraction_against_model(first, build_random_model("lcnet_050", seed=7))


# --- reparameterisation ---------------------------------------------------------------------

def _fused(model: torch.nn.Module) -> torch.nn.Module:
    from timm.utils import reparameterize_model

    with torch.no_grad():
        return reparameterize_model(model)


@pytest.mark.parametrize("arch", ["mobileone_s0", "fastvit_t8", "repvit_m0_9"])
def test_reparam_fused(arch: str, tmp_path: Path, adapter: TimmAdapter) -> None:
    path = tmp_path / "w.safetensors"
    model = save_random_model(arch, path, seed=2)
    unfused = adapter.read(arch, IngestOptions(checkpoint=path))
    fused = adapter.read(arch, IngestOptions(checkpoint=path, reparam=True))
    assert unfused.meta["reparam"] == "unfused" and fused.meta["reparam"] == "fused"
    assert {l.meta["reparam"] for l in fused.layers} == {"fused"}
    assert any(l.meta["bn_folded"] for l in fused.layers)
    check_extraction_against_model(fused, _fused(model))
    check_extraction_against_model(unfused, model)


def test_reparam_random_init_and_plain_models(adapter: TimmAdapter) -> None:
    fused = adapter.read("mobileone_s0", IngestOptions(random_init=True, reparam=True))
    assert all(l.name.endswith("reparam_conv") and l.meta["bn_folded"] for l in fused.layers)
    check_extraction_against_model(fused, _fused(build_random_model("mobileone_s0", seed=0)))
    plain = adapter.read("convnext_atto", IngestOptions(random_init=True, reparam=True))
    assert plain.meta["reparam"] is None and not any(l.meta["bn_folded"] for l in plain.layers)


# --- checkpoint formats ---------------------------------------------------------------------

def test_pth_wrapped_prefixed_fp16(tmp_path: Path, adapter: TimmAdapter) -> None:
    model = build_random_model("convnext_atto", seed=3)
    half = {f"module.{k}": v.half() for k, v in plain_state_dict(model).items()}
    path = tmp_path / "ckpt.pth"
    torch.save({"state_dict": half, "epoch": 3}, path)
    extraction = adapter.read("convnext_atto", IngestOptions(checkpoint=path))
    assert extraction.meta["state_dict_key"] == "state_dict"
    for layer in extraction.layers:
        assert layer.meta["dtype"] == "float16"
        source = half["module." + layer.meta["param_name"]][:, 0]
        np.testing.assert_array_equal(bits(layer.weights), bits(source.float().numpy()))


def test_bf16_safetensors_and_legacy_pth(tmp_path: Path, adapter: TimmAdapter) -> None:
    state = plain_state_dict(build_random_model("lcnet_050", seed=4))
    bf16 = {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in state.items()}
    save_file(bf16, str(tmp_path / "bf16.safetensors"))
    torch.save({"model": state}, tmp_path / "legacy.pth", _use_new_zipfile_serialization=False)
    got = adapter.read("lcnet_050", IngestOptions(checkpoint=tmp_path / "bf16.safetensors"))
    legacy = adapter.read("lcnet_050", IngestOptions(checkpoint=tmp_path / "legacy.pth"))
    for a, b in zip(got.layers, legacy.layers, strict=True):
        key = a.meta["param_name"]
        np.testing.assert_array_equal(bits(a.weights), bits(bf16[key][:, 0].float().numpy()))
        np.testing.assert_array_equal(bits(b.weights), bits(state[key][:, 0].numpy()))
    assert legacy.meta["state_dict_key"] == "model"


def test_other_head_size_is_fine(tmp_path: Path, adapter: TimmAdapter) -> None:
    import timm

    with torch.random.fork_rng(devices=[]):
        model = timm.create_model("convnext_atto", num_classes=10).eval()
    path = tmp_path / "ft10.safetensors"
    save_file(plain_state_dict(model), str(path))
    check_extraction_against_model(adapter.read("convnext_atto", IngestOptions(checkpoint=path)), model)


def test_original_release_layout_goes_through_timm_filter(tmp_path: Path, adapter: TimmAdapter) -> None:
    model = build_random_model("convnext_atto", seed=5)
    path = tmp_path / "fb.pth"
    torch.save({"model": to_fb_convnext_layout(plain_state_dict(model))}, path)
    extraction = adapter.read("convnext_atto", IngestOptions(checkpoint=path))
    assert extraction.meta["weights_conversion"] == "timm checkpoint filter"
    check_extraction_against_model(extraction, model)


# --- the local Hugging Face cache -----------------------------------------------------------

@pytest.fixture
def hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty hub cache that this process (and huggingface_hub, offline) now points at."""
    import huggingface_hub.constants as hf_constants

    hub = tmp_path / "hf" / "hub"
    hub.mkdir(parents=True)
    for var in ("HF_HOME", "HUGGINGFACE_HUB_CACHE", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # huggingface_hub read both at import; timm's own loader below goes through them.
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(hub))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    return hub


def test_hf_cache_real_layout(hf_cache: Path, adapter: TimmAdapter) -> None:
    import timm
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg("convnext_atto")          # default tag
    model = build_random_model("convnext_atto", seed=6)
    snapshot = write_hf_cache(hf_cache, cfg.hf_hub_id, plain_state_dict(model))

    for name in ("convnext_atto", f"convnext_atto.{cfg.tag}"):
        extraction = adapter.read(name, IngestOptions())
        assert extraction.model == name and extraction.trained
        assert extraction.source == cfg.hf_hub_id
        assert extraction.meta["weights"] == "hf-cache"
        assert extraction.meta["file"] == str(snapshot)
        assert extraction.meta["hf_revision"] == snapshot.parent.name
        info = extraction.meta["pretrained_cfg"]
        assert info["tag"] == cfg.tag and info["hf_hub_id"] == cfg.hf_hub_id
        assert info["num_classes"] == 1000 and info["license"] == cfg.license
        check_extraction_against_model(extraction, model)

    # The layout is real: timm itself loads the same weights from it, offline.
    loaded = timm.create_model(f"convnext_atto.{cfg.tag}", pretrained=True)
    for key, value in model.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key


def test_hf_cache_through_hf_home_and_pytorch_bin(
        hf_cache: Path, monkeypatch: pytest.MonkeyPatch, adapter: TimmAdapter) -> None:
    home = hf_cache.parent / "home"
    monkeypatch.delenv("HF_HUB_CACHE")
    monkeypatch.setenv("HF_HOME", str(home))
    model = build_random_model("mixnet_s", seed=8)
    write_hf_cache(home / "hub", "timm/mixnet_s.ft_in1k", plain_state_dict(model),
                   filename="pytorch_model.bin")
    extraction = adapter.read("mixnet_s", IngestOptions())
    assert extraction.meta["file"].endswith("pytorch_model.bin")
    check_extraction_against_model(extraction, model)


def test_hf_cache_misses(hf_cache: Path, adapter: TimmAdapter) -> None:
    with pytest.raises(CatalogError) as err:
        adapter.read("convnext_atto", IngestOptions())
    message = str(err.value)
    assert message.startswith("convnext_atto: timm/convnext_atto.d2_in1k is not in the Hugging Face cache")
    assert "HF_HUB_OFFLINE is set" in message
    assert str(hf_cache) in message and "--checkpoint FILE or --random-init" in message
    assert "\n" not in message
    # Only an 'untrained' config: no weights anywhere.
    with pytest.raises(CatalogError, match="has no published weights for efficientnet_cc_b0_4e"):
        adapter.read("efficientnet_cc_b0_4e", IngestOptions())


# --- errors a user can cause ----------------------------------------------------------------

def test_unknown_names(adapter: TimmAdapter) -> None:
    suggestion = r"unknown timm model 'convnext_atoo'; did you mean convnext_atto"
    with pytest.raises(CatalogError, match=suggestion):
        adapter.read("convnext_atoo", IngestOptions(random_init=True))
    tags = r"unknown tag 'nope' for timm model convnext_atto \(known tags: d2_in1k\)"
    with pytest.raises(CatalogError, match=tags):
        adapter.read("convnext_atto.nope", IngestOptions(random_init=True))


def test_model_without_depthwise(adapter: TimmAdapter) -> None:
    with pytest.raises(CatalogError, match=r"^model test_resnet has no depthwise convolution \("):
        adapter.read("test_resnet", IngestOptions(random_init=True))


def test_mismatched_checkpoints(tmp_path: Path, adapter: TimmAdapter) -> None:
    path = tmp_path / "atto.safetensors"
    save_random_model("convnext_atto", path)
    # Same keys, other widths.
    with pytest.raises(CatalogError) as err:
        adapter.read("convnext_femto", IngestOptions(checkpoint=path))
    assert str(err.value).startswith(
        f"checkpoint {path.resolve()} does not match architecture convnext_femto: 'stem.0.weight' has shape")
    # Other keys altogether.
    missing = r"does not match architecture mixnet_s: missing '.+' \(and \d+ more\)$"
    with pytest.raises(CatalogError, match=missing):
        adapter.read("mixnet_s", IngestOptions(checkpoint=path))


def test_unreadable_checkpoints(tmp_path: Path, adapter: TimmAdapter) -> None:
    import argparse

    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CatalogError, match="not a safetensors or torch file"):
        adapter.read("lcnet_050", IngestOptions(checkpoint=garbage))
    bad_safe = tmp_path / "garbage.safetensors"
    bad_safe.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{garbage")
    with pytest.raises(CatalogError, match="cannot read checkpoint"):
        adapter.read("lcnet_050", IngestOptions(checkpoint=bad_safe))
    pickled = tmp_path / "train.pth"
    torch.save({"state_dict": {}, "args": argparse.Namespace(lr=0.1)}, pickled)
    with pytest.raises(CatalogError, match="holds objects other than tensors"):
        adapter.read("lcnet_050", IngestOptions(checkpoint=pickled))
    with pytest.raises(CatalogError, match="does not exist"):
        adapter.read("lcnet_050", IngestOptions(checkpoint=tmp_path / "missing.safetensors"))


def test_include_exclude(adapter: TimmAdapter) -> None:
    only = adapter.read("convnext_atto", IngestOptions(random_init=True, include=("stages.3.*",)))
    assert [l.name for l in only.layers] == ["stages.3.blocks.0.conv_dw", "stages.3.blocks.1.conv_dw"]
    rest = adapter.read("convnext_atto", IngestOptions(random_init=True, exclude=("stages.3.*",)))
    assert len(rest.layers) == 10
    with pytest.raises(CatalogError, match="no depthwise layer of convnext_atto matches"):
        adapter.read("convnext_atto", IngestOptions(random_init=True, include=("nothing*",)))


# --- discovery --------------------------------------------------------------------------------

def test_list_timm_sources() -> None:
    assert list_timm_sources(["convnext_atto*"], pretrained=False) == [
        "convnext_atto", "convnext_atto_ols", "convnext_atto_rms"]
    tagged = list_timm_sources(["convnext_atto*", "convnext_atto.*", "mixnet_s"], pretrained=True)
    assert tagged[0] == "convnext_atto.d2_in1k" and tagged.count("convnext_atto.d2_in1k") == 1
    assert tagged[-1] == "mixnet_s" and all("." in n for n in tagged[:-1])
    with pytest.raises(CatalogError, match=r"^no pretrained timm model matches 'zzz\*'$"):
        list_timm_sources(["zzz*"], pretrained=True)
    with pytest.raises(CatalogError, match="unknown timm model 'convnext_atoo'"):
        list_timm_sources(["convnext_atoo"], pretrained=False)


def test_can_read_and_plugin_contract(tmp_path: Path, adapter: TimmAdapter) -> None:
    from importlib.metadata import entry_points

    existing = tmp_path / "convnext_atto"
    existing.write_text("")
    assert adapter.can_read("convnext_atto", IngestOptions())
    assert adapter.can_read("convnext_atto.d2_in1k", IngestOptions())
    assert adapter.can_read("convnext_atoo", IngestOptions())       # read() suggests the name
    assert not adapter.can_read(str(existing), IngestOptions())
    assert not adapter.can_read("model.onnx", IngestOptions())
    assert not adapter.can_read("some/dir/model", IngestOptions())
    assert adapter.can_read("my_arch", IngestOptions(checkpoint=existing))
    assert isinstance(adapter, Adapter)
    assert adapter.name == "timm" and adapter.priority == 10
    assert adapter.version.startswith("0.1.0+timm")
    (timm_ep,) = [ep for ep in entry_points(group="kernel_catalog.adapters") if ep.name == "timm"]
    assert timm_ep.load() is TimmAdapter


@pytest.mark.parametrize(("name", "expected"), [
    ("stages.2.blocks.5.conv_dw", (2, 5)),
    ("stages.0.3.conv_kxk.0.conv", (0, 3)),
    ("stages.1.downsample.conv", (1, None)),
    ("stages_3.blocks.0.conv_dw", (3, 0)),
    ("layer3.1.conv2", (3, 1)),
    ("blocks.4.2.conv_dw", (4, 2)),
    ("features.3.conv_dw.conv", (None, 3)),
    ("stem.1.conv_kxk.0.conv", (None, None)),
    ("final_conv.reparam_conv", (None, None)),
])
def test_stage_block(name: str, expected: tuple[int | None, int | None]) -> None:
    assert stage_block(name) == expected


def test_detection_on_a_hand_made_module() -> None:
    # Depthwise 3x3, depthwise 3x3 with multiplier 3, 1x1 depthwise (a scale: skipped), dense 3x3,
    # single-channel 3x3 (groups == in_channels == 1: not depthwise), CondConv 5x5 with 3 experts.
    from timm.layers import CondConv2d

    model = torch.nn.Sequential(
        torch.nn.Conv2d(8, 8, 3, groups=8), torch.nn.Conv2d(8, 24, 3, groups=8),
        torch.nn.Conv2d(8, 8, 1, groups=8), torch.nn.Conv2d(8, 8, 3), torch.nn.Conv2d(1, 4, 3),
        CondConv2d(8, 8, 5, groups=8, num_experts=3))
    assert count_depthwise_kernels_independently(model) == 8 + 24 + 3 * 8
    specs = find_depthwise(model)
    assert [(s.name, s.meta["kind"], s.meta["depth_multiplier"]) for s in specs] == [
        ("0", "conv2d", 1), ("1", "conv2d", 3), ("5", "condconv", 1)]
    kernels = kernels_from_tensor(specs[2], model[5].weight)
    assert [e for e, _ in kernels] == [0, 1, 2] and kernels[1][1].shape == (8, 5, 5)
    np.testing.assert_array_equal(kernels[1][1], model[5].weight[1].detach().reshape(8, 5, 5).numpy())


def test_plugin_import_is_light() -> None:
    # `catalog adapters` loads every plugin: the timm shell must not drag in torch or timm.
    import subprocess
    import sys

    code = ("import sys, kernel_catalog.adapters.timm._adapter as m; m.TimmAdapter().can_read('convnext_atto', "
            "m.IngestOptions()); print(sorted({'torch', 'timm'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.strip() == "[]"
