"""Find a timm model's published weights in the local Hugging Face cache, never on the network.

The cache folder is read from the environment at call time (HF_HUB_CACHE, HF_HOME, ...):
huggingface_hub computes its own constants once at import, so a process (or a test) that sets
the variables later would otherwise look in the wrong place.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from kernel_catalog.errors import CatalogError

# timm hub repos hold model.safetensors; older ones pytorch_model.bin (timm tries in this order).
_HUB_FILES = ("model.safetensors", "pytorch_model.bin")


def hf_cache_dir() -> Path:
    """The hub cache folder the environment names now, as huggingface_hub would resolve it."""
    env = os.environ
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if env.get(var):
            return Path(env[var]).expanduser()
    if env.get("HF_HOME"):
        return Path(env["HF_HOME"]).expanduser() / "hub"
    if env.get("XDG_CACHE_HOME"):
        return Path(env["XDG_CACHE_HOME"]).expanduser() / "huggingface" / "hub"
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def cached_weights(display: str, cfg: Any | None) -> tuple[str, Path]:
    """(hub id, local file) of the weights `cfg` points to; CatalogError when not cached.

    `display` is the name the user gave, for messages.
    """
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    hint = "pass --checkpoint FILE or --random-init"
    if cfg is None:
        raise CatalogError(f"timm has no pretrained weights for {display}; {hint}")
    if not cfg.hf_hub_id:
        where = f" (published at {cfg.url}, not on the Hugging Face hub)" if cfg.url else ""
        raise CatalogError(f"timm has no Hugging Face weights for {display}{where}; {hint}")
    repo_id, _, revision = cfg.hf_hub_id.partition("@")
    cache = hf_cache_dir()
    filenames = (cfg.hf_hub_filename,) if cfg.hf_hub_filename else _HUB_FILES
    for filename in filenames:
        try:
            path = hf_hub_download(repo_id, filename, revision=revision or None,
                                   cache_dir=cache, local_files_only=True)
        except (LocalEntryNotFoundError, EntryNotFoundError, FileNotFoundError):
            continue
        return repo_id, Path(path)
    raise CatalogError(
        f"no local weights for {display} ({repo_id} is not in the Hugging Face cache {cache}); {hint}")
