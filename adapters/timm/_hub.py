"""Where a timm name's published weights are: the Hugging Face cache, the hub, or a plain URL.

`resolve_weights` answers without downloading anything (the cache first, with no network call;
then one metadata request to the hub), so a zoo run can skip a model already in the catalog at
the same revision. `fetch_weights` downloads what is missing and returns the local file.
timm configs that give only a URL (`cfg.url`) use torch.hub's cache and its checksum (the hash
prefix in the file name, when the publisher gave one).

`open_ranged_weights` reads a safetensors release that is not cached by byte ranges instead
(adapters/ranged.py): the header, then the tensors shaped like depthwise kernels; nothing is
written to a cache. Hub releases are read at the listed commit through huggingface_hub's session;
URL-only releases over plain HTTP(S) with no hub token sent (their hash prefix covers the whole
file, so it cannot be checked on a ranged read: the size and ETag of every response are).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from kernel_catalog.adapters import hub
from kernel_catalog.adapters.ranged import FullDownloadNeeded, RemoteSafetensors, SUFFIXES, depthwise_candidates
from kernel_catalog.adapters.hub import RemoteFile, RemoteWeights
from kernel_catalog.errors import CatalogError, error_summary

# timm hub repos hold model.safetensors; older ones pytorch_model.bin (timm tries in this order).
HUB_FILES = ("model.safetensors", "pytorch_model.bin")
_HINT = "pass --checkpoint FILE or --random-init"


def resolve_weights(display: str, cfg: Any | None) -> RemoteWeights:
    """The published weights of `cfg` (cache first, else one metadata request); nothing downloaded."""
    if cfg is None:
        raise CatalogError(f"timm has no pretrained weights for {display}; {_HINT}")
    if not cfg.hf_hub_id:
        if cfg.url:
            return _resolve_url(display, cfg.url, cfg)
        raise CatalogError(f"timm has no published weights for {display}; {_HINT}")
    repo, _, revision = cfg.hf_hub_id.partition("@")
    hub.check_repo_id(repo, display)
    revision = hub.check_revision(revision or None, display)
    candidates = (cfg.hf_hub_filename,) if cfg.hf_hub_filename else HUB_FILES
    for filename in candidates:
        hub.check_filename(filename, repo, display)
    common = dict(model=display, source=display, repo=repo, license=getattr(cfg, "license", None),
                  cache_dir=str(hub.hf_cache_dir()), cache_before=hub.cache_state(hub.hf_roots(repo)))
    for filename in candidates:
        path = hub.cached_file(repo, filename, revision)
        if path is not None:
            return RemoteWeights(revision=path.parent.name, files=(RemoteFile(filename),), cached=True,
                                 **common)
    sha, files, licence = hub.repo_listing(repo, revision, display)
    by_name = {f.name: f for f in files}
    for filename in candidates:
        if filename in by_name:
            return RemoteWeights(revision=sha, files=(by_name[filename],), cached=False,
                                 extra={"requested_revision": revision},
                                 **{**common, "license": common["license"] or licence})
    raise CatalogError(f"{display}: the hub repo {repo} has none of {', '.join(candidates)}; {_HINT}")


def fetch_weights(plan: RemoteWeights) -> Path:
    """The local weights file of a plan, downloading it when missing."""
    if plan.kind == "url":
        return _fetch_url(plan)
    (file,) = plan.files
    path = hub.cached_file(plan.repo, file.name, plan.revision)
    if path is not None:
        return path
    return hub.download(plan.repo, file.name, plan.extra.get("requested_revision"), plan.model)


def open_ranged_weights(plan: RemoteWeights) -> RemoteSafetensors | None:
    """The plan's safetensors file opened for ranged reads, its depthwise-shaped tensors fetched;
    None when it is to be downloaded whole (not ranged, cached, not safetensors, Range ignored)."""
    (file,) = plan.files
    if not plan.extra.get("ranged") or plan.cached or not file.name.endswith(SUFFIXES):
        return None
    try:
        if plan.kind == "url":
            if _url_path(plan.repo).is_file():
                return None
            remote = _open_url(plan)
        else:
            if hub.cached_file(plan.repo, file.name, plan.revision) is not None:
                return None
            remote = hub.open_ranged(plan.repo, file.name, plan.revision, plan.model)
        remote.fetch(depthwise_candidates(remote.tensors))
    except FullDownloadNeeded:
        return None
    return remote


def _open_url(plan: RemoteWeights) -> RemoteSafetensors:
    from huggingface_hub.utils import build_hf_headers

    if hub.offline():
        raise CatalogError(f"{plan.model}: {plan.repo} is not in torch.hub's cache {torch_hub_dir()} and "
                           "HF_HUB_OFFLINE is set; unset it to download, or pass --checkpoint FILE")

    def failed(exc: Exception) -> CatalogError:
        return CatalogError(f"{plan.model}: cannot download {plan.repo} ({type(exc).__name__}: "
                            f"{error_summary(exc).splitlines()[0]}); check the network and run again,"
                            f" or {_HINT}")

    headers = {"user-agent": build_hf_headers(token=False)["user-agent"]}     # no hub token to another host
    return RemoteSafetensors(plan.repo, headers, plan.repo, failed, hub.timeout())


def evict_weights(plan: RemoteWeights) -> None:
    if plan.kind == "url":
        roots = [_url_path(plan.repo)]
    else:
        roots = hub.hf_roots(plan.repo)
    hub.evict(roots, plan.cache_before)


def torch_hub_dir() -> Path:
    """torch.hub's checkpoint folder, from TORCH_HOME at call time."""
    home = os.environ.get("TORCH_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "torch")
    return Path(home).expanduser() / "hub" / "checkpoints"


def _url_path(url: str) -> Path:
    """Where torch.hub keeps a URL's file: its last path part, which must be a plain file name."""
    name = os.path.basename(urlparse(url).path)
    if name in ("", ".", "..") or any(ord(c) < 32 for c in name):
        raise CatalogError(f"{url}: the URL does not end in a file name; timm's config for it is broken")
    return torch_hub_dir() / name


def _resolve_url(display: str, url: str, cfg: Any) -> RemoteWeights:
    path = _url_path(url)
    return RemoteWeights(model=display, source=display, repo=url, revision=_hash_prefix(path.name),
                         files=(RemoteFile(path.name),), cached=path.is_file(),
                         license=getattr(cfg, "license", None), kind="url", cache_dir=str(path.parent),
                         cache_before=hub.cache_state([path]))


def _hash_prefix(filename: str) -> str | None:
    from torch.hub import HASH_REGEX

    match = HASH_REGEX.search(filename)
    return match.group(1) if match else None


def _fetch_url(plan: RemoteWeights) -> Path:
    from torch.hub import download_url_to_file

    path = _url_path(plan.repo)
    if path.is_file():
        return path
    if hub.offline():
        raise CatalogError(f"{plan.model}: {plan.repo} is not in torch.hub's cache {path.parent} and "
                           "HF_HUB_OFFLINE is set; unset it to download, or pass --checkpoint FILE")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        download_url_to_file(plan.repo, str(path), hash_prefix=plan.revision, progress=os.isatty(2))
    except Exception as exc:  # noqa: BLE001 -- network, HTTP or checksum: the download failed
        raise CatalogError(f"{plan.model}: cannot download {plan.repo} ({type(exc).__name__}: "
                           f"{error_summary(exc).splitlines()[0]}); check the network and run again,"
                           f" or {_HINT}") from None
    return path
