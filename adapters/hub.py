"""Published weights on the Hugging Face hub (or a mirror): resolve, download, describe, evict.

Shared by the timm adapter (timm names -> their hub repos) and the `hf:` adapter (any repo).
huggingface_hub does the transfer: its cache layout, revision pinning, resumable downloads
(`.incomplete` files continue with a Range request), HF_TOKEN for gated repos. The environment is
read at call time (HF_ENDPOINT, HF_HUB_CACHE, HF_HUB_OFFLINE): huggingface_hub reads its own
constants once at import, and a process (or a test) may set them later.

Cached files are used without any network call; a file that is neither cached nor reachable is a
one-line CatalogError after at most HUB_TIMEOUT seconds per request (KERNEL_CATALOG_HUB_TIMEOUT).
A safetensors file that is not cached can be read by byte ranges instead (`open_ranged`, see
adapters/ranged.py): nothing enters the cache, and provenance records the bytes fetched.
"""
from __future__ import annotations

import logging
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Any

from kernel_catalog.adapters.ranged import RemoteSafetensors
from kernel_catalog.adapters.base import RemoteFile, RemoteWeights
from kernel_catalog.errors import CatalogError, error_summary


DEFAULT_ENDPOINT = "https://huggingface.co"
TIMEOUT_ENV = "KERNEL_CATALOG_HUB_TIMEOUT"
_TRUE = {"1", "on", "yes", "true"}
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "").rstrip("/") or DEFAULT_ENDPOINT


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE


def timeout() -> float:
    return float(os.environ.get(TIMEOUT_ENV) or 10)


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
    return Path("~/.cache/huggingface/hub").expanduser()


# Names a hub (or a mirror at HF_ENDPOINT) gives us are data: every one that becomes a cache path
# or a URL is checked first (repo ids by huggingface_hub's own rule, plus ASCII ORG/NAME).
_REPO = re.compile(r"^[A-Za-z0-9._-]+/[A-Za-z0-9._-]+$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_REVISION = re.compile(r"^[A-Za-z0-9._/-]+$")


def check_repo_id(repo: str, display: str) -> str:
    """`repo` when it is a hub repo id ORG/NAME (huggingface_hub's rules: no '..', '--', leading or
    trailing '.'/'-', at most 96 characters); else CatalogError."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo)
        ok = isinstance(repo, str) and bool(_REPO.match(repo))
    except HFValidationError:
        ok = False
    if not ok:
        raise CatalogError(f"{display}: {repo!r} is not a hub repo id (ORG/NAME of letters, digits, '.', '_', '-';"
                           " no '..' or '--'); check the name")
    return repo


def check_revision(revision: str | None, display: str) -> str | None:
    """`revision` when it is None, a 40-hex commit, or a branch/tag name git allows; else CatalogError."""
    if revision is None or (isinstance(revision, str) and _COMMIT.match(revision)):
        return revision
    parts = revision.split("/") if isinstance(revision, str) else [""]
    if (any(not p or p.startswith(".") or p.endswith(".lock") for p in parts) or not _REVISION.match(revision)
            or revision.endswith(".")):
        raise CatalogError(f"{display}: {revision!r} is not a branch, tag or commit name (no '..', no leading"
                           " '/' or '.'); check the revision")
    return revision


def check_filename(name: str, repo: str, display: str, typed: bool = False) -> str:
    """`name` when it is a relative path inside a repo (no '..', '.' or empty parts, not absolute,
    no backslash or control characters); else CatalogError. `typed`: the user wrote it."""
    parts = name.split("/") if isinstance(name, str) else [""]
    if (any(p in ("", ".", "..") for p in parts) or "\\" in name or re.match(r"^[A-Za-z]:", name)
            or any(ord(c) < 32 for c in name)):
        todo = ("check the file name" if typed else
                "the repo (or the mirror at HF_ENDPOINT) cannot be trusted: do not use it")
        raise CatalogError(f"{display}: {name!r} is not a file inside {repo} (a relative path without '..',"
                           f" '.', empty parts or backslashes); {todo}")
    return name


def repo_folder(repo: str) -> Path:
    return hf_cache_dir() / ("models--" + check_repo_id(repo, repo).replace("/", "--"))


def cached_file(repo: str, filename: str, revision: str | None) -> Path | None:
    """The local copy of repo/filename at revision (a branch, tag or sha), or None: no network."""
    from huggingface_hub import try_to_load_from_cache

    check_repo_id(repo, repo)
    check_filename(filename, repo, repo)
    check_revision(revision, repo)
    found = try_to_load_from_cache(repo, filename, cache_dir=hf_cache_dir(), revision=revision)
    return Path(found) if isinstance(found, str) else None


def cached_commit(repo: str, revision: str | None) -> str | None:
    """The commit a cached branch/tag points to (refs/<rev>), or the sha itself."""
    rev = check_revision(revision, repo) or "main"
    if _COMMIT.match(rev):
        return rev
    ref = repo_folder(repo) / "refs" / rev
    sha = ref.read_text().strip() if ref.is_file() else None
    return sha if sha and _COMMIT.match(sha) else None


def repo_listing(repo: str, revision: str | None, display: str) -> tuple[str, list[RemoteFile], str | None]:
    """(commit sha, files with sizes and digests, license) of a hub repo: one metadata request.

    What the hub answers is checked: the commit is 40 hex digits, every file name a relative path
    inside the repo (one that is not refuses the whole listing)."""
    from huggingface_hub import HfApi

    check_repo_id(repo, display)
    check_revision(revision, display)
    require_online(repo, display)
    try:
        info = HfApi(endpoint=endpoint()).model_info(repo, revision=revision, files_metadata=True,
                                                     timeout=timeout())
    except Exception as exc:  # noqa: BLE001 -- every failure here is about the hub or the network
        raise hub_error(repo, revision, display, exc) from None
    if not isinstance(info.sha, str) or not _COMMIT.match(info.sha):
        raise CatalogError(f"{display}: the hub at {endpoint()} gives {repo} the commit {info.sha!r}, not 40 hex"
                           " digits; the hub (or the mirror at HF_ENDPOINT) cannot be trusted: do not use it")
    files = []
    for sibling in info.siblings or []:
        lfs = getattr(sibling, "lfs", None)
        sha = getattr(lfs, "sha256", None) if lfs else None
        name = check_filename(sibling.rfilename, repo, display)
        files.append(RemoteFile(name, getattr(sibling, "size", None), sha, sha))
    return info.sha, files, _license(info)


CARD = "README.md"     # a hub repo's model card; its YAML header states the license


def card_license(path: Path) -> str | None:
    """The license a cached model card's metadata header states, or None (no card, no header)."""
    from huggingface_hub.repocard import metadata_load

    try:
        found = (metadata_load(path) or {}).get("license") if path.is_file() else None
    except Exception:  # noqa: BLE001 -- a malformed card header is no provenance, not an error
        return None
    return str(found) if found else None


def _license(info: Any) -> str | None:
    card = getattr(info, "card_data", None)
    if card is not None and getattr(card, "license", None):
        return str(card.license)
    for tag in getattr(info, "tags", None) or []:
        if tag.startswith("license:"):
            return tag.partition(":")[2]
    return None


def require_online(repo: str, display: str) -> None:
    """CatalogError when HF_HUB_OFFLINE is set now; else make huggingface_hub agree (it read the
    variable once, at import, and refuses every request while its copy says offline)."""
    from huggingface_hub import constants

    constants.HF_HUB_OFFLINE = offline()
    if offline():
        raise CatalogError(
            f"{display}: {repo} is not in the Hugging Face cache {hf_cache_dir()} and HF_HUB_OFFLINE is set;"
            " unset HF_HUB_OFFLINE to download it, or pass --checkpoint FILE or --random-init")


def download(repo: str, filename: str, revision: str | None, display: str) -> Path:
    """hf_hub_download into the cache (resumes a partial file); progress bar on a terminal only."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.utils import disable_progress_bars

    check_repo_id(repo, display)
    check_filename(filename, repo, display)
    check_revision(revision, display)
    require_online(repo, display)
    if not sys.stderr.isatty():
        disable_progress_bars()
    # its retry warnings ("Trying to resume download...") would break the one-line error
    logging.getLogger("huggingface_hub").setLevel(logging.ERROR)
    try:
        return Path(hf_hub_download(repo, filename, revision=revision, cache_dir=hf_cache_dir(),
                                    endpoint=endpoint(), etag_timeout=timeout()))
    except Exception as exc:  # noqa: BLE001
        raise hub_error(repo, revision, display, exc, filename) from None


def open_ranged(repo: str, filename: str, revision: str, display: str) -> RemoteSafetensors:
    """A hub safetensors file at commit `revision`, its header read by two Range requests.

    huggingface_hub builds the URL (HF_ENDPOINT) and the headers (HF_TOKEN), and its session sends
    the requests. FullDownloadNeeded when the server ignores Range (the caller downloads the file)."""
    from huggingface_hub import hf_hub_url
    from huggingface_hub.utils import build_hf_headers

    check_repo_id(repo, display)
    check_filename(filename, repo, display)
    check_revision(revision, display)
    require_online(repo, display)
    logging.getLogger("huggingface_hub").setLevel(logging.ERROR)
    url = hf_hub_url(repo, filename, revision=revision, endpoint=endpoint())
    try:
        headers = build_hf_headers()
    except Exception as exc:  # noqa: BLE001 -- a token that cannot be read
        raise hub_error(repo, revision, display, exc, filename) from None
    return RemoteSafetensors(url, headers, f"{repo}/{filename}@{revision[:12]}",
                             lambda exc: hub_error(repo, revision, display, exc, filename), timeout())


def hub_error(repo: str, revision: str | None, display: str, exc: Exception,
              filename: str | None = None) -> CatalogError:
    """One line: which repo, what went wrong, what to do."""
    from huggingface_hub import errors

    what = f"{repo}/{filename}" if filename else repo
    at = f"@{revision}" if revision else ""
    if isinstance(exc, errors.GatedRepoError):
        why = "is gated: accept its terms on the hub, then set HF_TOKEN to a token of that account"
    elif isinstance(exc, errors.RepositoryNotFoundError):
        why = "does not exist on the hub (or is private: set HF_TOKEN); check the name"
    elif isinstance(exc, errors.RevisionNotFoundError):
        why = f"has no revision '{revision}'; check the branch, tag or commit"
    elif isinstance(exc, errors.EntryNotFoundError):
        why = "has no such file; see the repo's file list"
    elif isinstance(exc, errors.HfHubHTTPError):
        why = f"could not be downloaded ({error_summary(exc).splitlines()[0]}); run again to resume"
    else:
        why = (f"is not cached and the hub at {endpoint()} cannot be reached ({type(exc).__name__}); "
               "check the network (HF_ENDPOINT for a mirror) and run again, or pass --checkpoint FILE")
    return CatalogError(f"{display}: {what}{at} {why}")


def describe_local(path: Path, name: str | None = None) -> dict[str, Any]:
    """Provenance of one cached file: name, size, sha256 (from the blob name when it is one)."""
    blob = Path(os.path.realpath(path))
    entry: dict[str, Any] = {"name": name or path.name, "size": blob.stat().st_size}
    if _SHA256.match(blob.name):
        entry["sha256"] = blob.name
    else:
        entry["etag"] = blob.name
    return entry


def provenance(plan: RemoteWeights, paths: dict[str, Path],
               ranged: dict[str, RemoteSafetensors] | None = None) -> dict[str, Any]:
    """The `hub` entry of models.meta: repo, revision, files (name, size, sha256/etag), license.

    `ranged`: the files read by byte ranges (not in `paths`); each gets `bytes_fetched` beside its
    size (and the sha256 the hub lists for it at that commit)."""
    ranged = ranged or {}
    files = []
    for f in plan.files:
        entry = describe_local(paths[f.name], f.name) if f.name in paths else {"name": f.name}
        if f.name in ranged:
            entry.update({"size": ranged[f.name].size, **({"sha256": f.sha256} if f.sha256 else {}),
                          "bytes_fetched": ranged[f.name].fetched})
        if f.size is not None and "size" not in entry:
            entry["size"] = f.size
        if f.etag and "sha256" not in entry and "etag" not in entry:
            entry["etag"] = f.etag
        files.append(entry)
    hub = {"repo": plan.repo, "revision": plan.revision, "files": files, "license": plan.license,
           "kind": plan.kind}
    if plan.kind == "hf":
        hub["endpoint"] = endpoint()
    return hub


def cache_state(roots: list[Path]) -> frozenset[str]:
    """Every path under these cache folders and the folders above them, for evict() to compare with."""
    state: set[str] = set()
    for root in roots:
        state.update(str(p) for p in [root, *root.parents] if p.exists())
        if root.is_dir():
            state.update(str(p) for p in root.rglob("*"))
    return frozenset(state)


def hf_roots(repo: str) -> list[Path]:
    """Where huggingface_hub writes for a repo: the cache's tag file, the repo's folder, its locks."""
    folder = repo_folder(repo)
    return [folder.parent / "CACHEDIR.TAG", folder, folder.parent / ".locks" / folder.name]


def evict(roots: list[Path], before: frozenset[str]) -> None:
    """Delete what this run added under `roots` (blobs, snapshot links, refs, locks); keep the rest."""
    for root in roots:
        if not root.exists():
            continue
        added = [p for p in [root, *root.rglob("*")] if str(p) not in before]
        for path in sorted(added, key=lambda p: -len(p.parts)):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        for parent in root.parents:       # folders this run created above the root, when empty
            if str(parent) in before or not parent.exists() or any(parent.iterdir()):
                break
            parent.rmdir()
