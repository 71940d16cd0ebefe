"""Any Hugging Face hub repo as a source: `hf:ORG/REPO[@REVISION]` or `hf:ORG/REPO[@REVISION]/FILE`.

The repo's file list picks the weights, in this order: a sharded `*.safetensors.index.json` (read
shard by shard), a `.safetensors` file, a sharded `*.bin.index.json`, a `.bin/.pth/.pt` file, an
`.onnx` file, a `.tflite` file (a `model.*` / `pytorch_model.*` name wins among several of one
kind). State dicts (transformers ConvNext / ConvNextV2 / MobileViT / EfficientNet, ...) go through
the state-dict adapter's shape rule; ONNX and TFLite files to the adapter that reads them. The
model is named ORG/REPO (unless --name); models.meta["hub"] records repo, commit, files with their
sizes and sha256/ETag, and the license the repo states.

Safetensors weights (one file or the shards of an index) that are not cached are read by byte
ranges at the listed commit (adapters/ranged.py): each file's header, then only the tensors the
state-dict rule keeps; `bytes_fetched` is recorded beside each file's size. Other formats, a server
that ignores Range, and IngestOptions.full_download download whole files into the cache as before.
"""
from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path, PurePosixPath

from kernel_catalog.adapters import hub
from kernel_catalog.adapters.ranged import FullDownloadNeeded, RemoteSafetensors, depthwise_candidates, ranged_allowed
from kernel_catalog.adapters.base import Extraction, IngestOptions
from kernel_catalog.adapters.hub import RemoteFile, RemoteWeights
from kernel_catalog.errors import CatalogError

PREFIX = "hf:"
_SOURCE = re.compile(r"^hf:([A-Za-z0-9][\w.\-]*)/([\w.\-]+?)(?:@([\w.\-/]+?))?(?:/(.+))?$")
# (kind, suffix) in order of preference; index files list shards.
_KINDS = (("index", ".safetensors.index.json"), ("file", ".safetensors"), ("index", ".bin.index.json"),
          ("file", ".bin"), ("file", ".pth"), ("file", ".pt"), ("file", ".onnx"), ("file", ".tflite"))
_PREFERRED = ("model.", "pytorch_model.")
MAX_INDEX_BYTES = 64 << 20     # a shard index lists tensor names: a few MB for the largest models


def parse_source(source: str) -> tuple[str, str | None, str | None]:
    """(repo, revision, file) of `hf:ORG/REPO[@REV][/FILE]`; CatalogError when malformed."""
    match = _SOURCE.match(source)
    if not match:
        raise CatalogError(f"'{source}': not a hub source; write hf:ORG/REPO, hf:ORG/REPO@REVISION"
                           " or hf:ORG/REPO/FILE")
    org, repo, revision, file = match.groups()
    if file and "@" in PurePosixPath(file).name and revision is None:     # hf:org/repo/file@rev
        file, _, revision = file.rpartition("@")
    repo = hub.check_repo_id(f"{org}/{repo}", source)
    hub.check_revision(revision, source)
    if file is not None:
        hub.check_filename(file, repo, source, typed=True)
    return repo, revision, file


def pick_weights(names: list[str], source: str) -> str:
    """The weights file (or shard index) to read among a repo's files."""
    for _, suffix in _KINDS:
        found = sorted(n for n in names if n.endswith(suffix) and not n.startswith("."))
        if suffix in (".safetensors", ".bin"):      # shards are read through their index
            found = [n for n in found if not re.search(r"-\d{5}-of-\d{5}\.", n)] or found
        if not found:
            continue
        preferred = [n for n in found if PurePosixPath(n).name.startswith(_PREFERRED)]
        if len(preferred) == 1 or len(found) == 1:
            return (preferred or found)[0]
        shown = ", ".join(found[:5]) + (", ..." if len(found) > 5 else "")
        raise CatalogError(f"{source}: several weights files ({shown}); name one: {source}/FILE")
    raise CatalogError(f"{source}: no weights file in the repo (.safetensors, .bin, .pth, .onnx,"
                       " .tflite); name one: hf:ORG/REPO/FILE")


class HfAdapter:
    """Weights files of any Hugging Face hub repo, handed to the adapter of their format."""

    name = "hf"
    version = "1.0.0"
    description = "hf:ORG/REPO[@REV][/FILE]: weights of any Hugging Face hub repo (safetensors, bin, onnx, tflite)"
    priority = 90

    def __init__(self) -> None:
        self._plans: dict[str, RemoteWeights] = {}
        self._ranged: dict[str, dict[str, RemoteSafetensors]] = {}     # plan.source -> files read by ranges
        self._lock = threading.Lock()

    def can_read(self, source: str, options: IngestOptions) -> bool:
        return source.startswith(PREFIX)

    def resolve(self, source: str, options: IngestOptions) -> RemoteWeights:
        """Files to download, at which commit: from the cache when it has them, else one request."""
        repo, revision, file = parse_source(source)
        before = hub.cache_state(hub.hf_roots(repo))
        plan = self._cached_plan(source, repo, revision, file, before)
        if plan is None:
            sha, files, licence = hub.repo_listing(repo, revision, source)
            by_name = {f.name: f for f in files}
            main = file or pick_weights(list(by_name), source)
            if main not in by_name:
                raise CatalogError(f"{source}: the repo has no file '{main}' at {sha[:12]}; see its file list")
            needed = [main] + self._shards(repo, main, revision, source)
            plan = RemoteWeights(model=repo, source=f"{PREFIX}{repo}@{sha}/{main}", repo=repo, revision=sha,
                                 files=tuple(by_name.get(n, RemoteFile(n)) for n in needed), cached=False,
                                 license=licence, cache_dir=str(hub.hf_cache_dir()), cache_before=before,
                                 extra={"requested_revision": revision,
                                        "card": hub.CARD if hub.CARD in by_name else None,
                                        "ranged": ranged_allowed(options.full_download)})
        with self._lock:
            self._plans[plan.source] = plan
        return plan

    def fetch(self, plan: RemoteWeights) -> None:
        ranged = self._open_ranged(plan)
        with self._lock:
            self._ranged[plan.source] = ranged
        for file in plan.files:
            if file.name not in ranged and hub.cached_file(plan.repo, file.name, plan.revision) is None:
                hub.download(plan.repo, file.name, plan.extra.get("requested_revision"), plan.model)
        card = plan.extra.get("card")
        if card and hub.cached_file(plan.repo, card, plan.revision) is None:
            try:   # the model card (a few kB): an ingest from the cache alone reads the license from it
                hub.download(plan.repo, card, plan.revision, plan.model)
            except CatalogError:
                pass   # provenance only: the weights are what the ingest needs

    def _open_ranged(self, plan: RemoteWeights) -> dict[str, RemoteSafetensors]:
        """The plan's safetensors files that are not cached, opened for ranged reads, their depthwise
        candidates fetched; {} when the plan is not ranged or the server ignores Range."""
        weights = plan.files[1:] if plan.files[0].name.endswith(".index.json") else plan.files
        if not plan.extra.get("ranged") or not all(f.name.endswith(".safetensors") for f in weights):
            return {}
        opened = {}
        try:
            for file in weights:
                if hub.cached_file(plan.repo, file.name, plan.revision) is None:
                    remote = hub.open_ranged(plan.repo, file.name, plan.revision, plan.model)
                    remote.fetch(depthwise_candidates(remote.tensors))
                    opened[file.name] = remote
        except FullDownloadNeeded:
            return {}
        return opened

    def evict(self, plan: RemoteWeights) -> None:
        hub.evict(hub.hf_roots(plan.repo), plan.cache_before)

    def read(self, source: str, options: IngestOptions) -> Extraction:
        with self._lock:
            plan = self._plans.get(source)
        if plan is None:
            plan = self.resolve(source, options)
            self.fetch(plan)
        with self._lock:
            ranged = self._ranged.pop(plan.source, {})
        paths = {f.name: self._local(plan, f.name) for f in plan.files if f.name not in ranged}
        main = plan.files[0].name
        if main.endswith(".index.json"):
            inner = _read_shards([_shard_reader(f.name, paths, ranged, options) for f in plan.files[1:]],
                                 f"{PREFIX}{plan.repo}@{plan.revision}")
        elif main in ranged:
            inner = _with_format(_read_ranged(ranged[main], options))
        else:
            inner = _read_with_format_adapter(paths[main], options)
        meta = {**inner.meta, "format_adapter": inner.meta.get("format_adapter"),
                "hub": hub.provenance(plan, paths, ranged)}
        return Extraction(model=plan.repo, source=f"{PREFIX}{plan.repo}@{plan.revision}", trained=inner.trained,
                          layers=inner.layers, meta=meta)

    def _local(self, plan: RemoteWeights, name: str) -> Path:
        path = hub.cached_file(plan.repo, name, plan.revision)
        return path if path is not None else hub.download(plan.repo, name, plan.revision, plan.model)

    def _cached_plan(self, source, repo, revision, file, before) -> RemoteWeights | None:
        """A plan from the cache alone (no network call), when the snapshot holds the weights."""
        sha = hub.cached_commit(repo, revision)
        snapshot = hub.repo_folder(repo) / "snapshots" / (sha or "-")
        if sha is None or not snapshot.is_dir():
            return None
        names = [p.relative_to(snapshot).as_posix() for p in snapshot.rglob("*") if p.is_file()]
        try:
            main = file or pick_weights(names, source)
        except CatalogError:
            return None
        if main not in names:
            return None
        try:
            needed = [main] + self._shards(repo, main, sha, source, local_only=True)
        except _NotCached:
            return None
        if any(n not in names for n in needed):
            return None
        return RemoteWeights(model=repo, source=f"{PREFIX}{repo}@{sha}/{main}", repo=repo, revision=sha,
                             files=tuple(RemoteFile(n) for n in needed), cached=True,
                             license=hub.card_license(snapshot / hub.CARD),
                             cache_dir=str(hub.hf_cache_dir()), cache_before=before)

    def _shards(self, repo: str, main: str, revision: str | None, source: str,
                local_only: bool = False) -> list[str]:
        """The shard files a `*.index.json` names (the index itself is small: fetched now)."""
        if not main.endswith(".index.json"):
            return []
        path = hub.cached_file(repo, main, revision)
        if path is None:
            if local_only:
                raise _NotCached
            path = hub.download(repo, main, revision, source)
        size = path.stat().st_size
        if size > MAX_INDEX_BYTES:
            raise CatalogError(f"{source}: {main} is {size} bytes, more than a shard index holds"
                               f" ({MAX_INDEX_BYTES}); the repo cannot be trusted: do not use it")
        try:
            shards = set(json.loads(path.read_text())["weight_map"].values())
        except (ValueError, KeyError, TypeError, AttributeError):
            raise CatalogError(f"{source}: {main} is not a shard index (no weight_map)") from None
        if not all(isinstance(shard, str) for shard in shards):
            raise CatalogError(f"{source}: {main} maps tensors to names that are not file names; it is not a shard index")
        folder = PurePosixPath(main).parent     # a shard name is checked as a path inside the repo
        return [hub.check_filename(str(folder / shard) if str(folder) != "." else shard, repo, source)
                for shard in sorted(shards)]


class _NotCached(Exception):
    pass


def _shard_reader(name: str, paths: dict[str, Path], ranged: dict[str, RemoteSafetensors],
                  options: IngestOptions) -> Callable[[], Extraction]:
    """Reads one shard: by ranges when it was opened so, else its local file."""
    if name in ranged:
        return lambda: _read_ranged(ranged[name], options)
    from kernel_catalog.adapters.statedict import StateDictAdapter

    return lambda: StateDictAdapter().read(str(paths[name]), options)


def _read_ranged(remote: RemoteSafetensors, options: IngestOptions) -> Extraction:
    from kernel_catalog.adapters.statedict import read_remote_safetensors

    try:
        return read_remote_safetensors(remote, options)
    finally:
        remote.release()


def _read_shards(shards: list[Callable[[], Extraction]], where: str) -> Extraction:
    """Each shard in turn through the state-dict rule; layers in natural order of tensor names."""
    from kernel_catalog.adapters.statedict import natural_key

    layers, formats = [], []
    for read in shards:
        try:
            part = read()
        except CatalogError as error:
            if "no depthwise tensor" in str(error):       # a shard of heads and norms only
                continue
            raise
        layers.extend(part.layers)
        formats.append(part.meta.get("format"))
    if not layers:
        raise CatalogError(f"{where}: no depthwise tensor in any shard (4-D float (C,1,kh,kw))")
    layers.sort(key=lambda layer: natural_key(layer.meta.get("tensor_name", layer.name)))
    return Extraction(model="", source="", trained=True, layers=layers,
                      meta={"format": formats[0], "shards": len(shards), "format_adapter": "statedict",
                            "trained_assumed": True})


def _with_format(inner: Extraction) -> Extraction:
    return replace(inner, meta={**inner.meta, "format_adapter": "statedict"})


def _read_with_format_adapter(path: Path, options: IngestOptions) -> Extraction:
    from kernel_catalog.adapters._registry import find_adapter

    adapter = find_adapter(str(path), options)
    inner = adapter.read(str(path), options)
    return Extraction(inner.model, inner.source, inner.trained, inner.layers,
                      {**inner.meta, "format_adapter": adapter.name})
