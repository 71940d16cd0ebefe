"""Where a published catalog goes: a local folder, object storage (pyarrow filesystems: s3://...),
or a Hugging Face dataset repo (hf://datasets/ORG/NAME, through huggingface_hub's commit API).

Every target reads the manifest already there, uploads only files whose digest differs, writes
the manifest last and removes only files the previous manifest listed. A destination that holds
files but no manifest is someone else's: refused, nothing written.
"""
from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from kernel_catalog.errors import CatalogError
from kernel_catalog.store._catalog import Catalog
from kernel_catalog.store.publish import MANIFEST, SNAPSHOT, PublishResult

# Written first (data), then these (what readers open), then the manifest.
_LAST = ("README.md", ".kernel-catalog", SNAPSHOT)


def target_for(dest: str, store: Catalog):
    if dest.startswith("hf://"):
        return HubTarget(dest)
    if "://" in dest:
        return StorageTarget(dest)
    return FolderTarget(Path(dest), store)


class _Target:
    dest: str

    def read_manifest(self) -> dict | None:
        raise NotImplementedError

    def sync(self, folder: Path, files: dict[str, dict], content: str) -> PublishResult:
        old = self.read_manifest()
        old_files = (old or {}).get("files", {})
        files = dict(files)
        if old and old.get("snapshot_content") == content and SNAPSHOT in old_files:
            files[SNAPSHOT] = old_files[SNAPSHOT]      # same rows: the snapshot there stands
        manifest = {"kernel_catalog_publish": 1, "snapshot_content": content, "files": files}
        changed = [p for p in files if old_files.get(p, {}).get("sha256") != files[p]["sha256"]]
        changed.sort(key=lambda p: (p in _LAST, _LAST.index(p) if p in _LAST else 0, p))
        stale = [_checked(p) for p in sorted(set(old_files) - set(files))]
        result = PublishResult(self.dest, skipped=sorted(set(files) - set(changed)))
        if not changed and not stale and old == manifest:
            return result
        text = json.dumps(manifest, indent=1, sort_keys=True) + "\n"
        manifest_path = folder / MANIFEST
        manifest_path.write_text(text)
        uploads = changed + [MANIFEST]
        result.commit = self.write(folder, uploads, stale)
        result.uploaded = uploads
        result.deleted = stale
        result.bytes = sum((folder / p).stat().st_size for p in uploads)
        return result

    def write(self, folder: Path, uploads: list[str], stale: list[str]) -> str | None:
        raise NotImplementedError


class FolderTarget(_Target):
    def __init__(self, path: Path, store: Catalog):
        self.path, self.dest = path, str(path)
        source = Path(store.root).resolve()
        here = path.resolve()
        if here == source or source in here.parents or here in source.parents:
            raise CatalogError(f"publish {path}: choose a folder outside the catalog {source} (and not holding it)")
        if path.is_symlink() or (path.exists() and not path.is_dir()):
            raise CatalogError(f"publish {path}: not a folder; choose a new or empty folder")
        if path.is_dir() and any(path.iterdir()) and not (path / MANIFEST).is_file():
            raise CatalogError(f"publish {path}: the folder is not empty and holds no published catalog; "
                               "choose a new or empty folder (nothing was written)")

    def read_manifest(self) -> dict | None:
        return _parse(self.path / MANIFEST)

    def write(self, folder: Path, uploads: list[str], stale: list[str]) -> None:
        from kernel_catalog.store.atomic import staged_file

        for relative in uploads:
            final = self.path / relative
            final.parent.mkdir(parents=True, exist_ok=True)
            with staged_file(final) as temporary:
                temporary.write_bytes((folder / relative).read_bytes())
        root = self.path.resolve()
        for relative in stale:
            _checked(relative)
            target = self.path / relative
            if root not in target.resolve().parents:   # a linked folder inside: not the published folder's file
                raise CatalogError(f"publish {self.path}: {relative} resolves outside the folder (a link); "
                                   "nothing more was removed")
            target.unlink(missing_ok=True)


class StorageTarget(_Target):
    def __init__(self, uri: str):
        from kernel_catalog.store.datafs import filesystem

        self.dest = uri
        self.fs, self.base = filesystem(uri)

    def _guard(self, action):
        from kernel_catalog.store.datafs import storage_error

        try:
            return action()
        except CatalogError:
            raise
        except Exception as error:   # pyarrow / botocore: one line
            raise storage_error(self.dest, error) from None

    def read_manifest(self) -> dict | None:
        import pyarrow.fs as pafs

        def read():
            try:
                with self.fs.open_input_stream(f"{self.base}/{MANIFEST}") as source:
                    return _loads(source.read(1 << 24).decode(errors="replace"))
            except FileNotFoundError:
                infos = self.fs.get_file_info(pafs.FileSelector(self.base, recursive=True, allow_not_found=True))
                if any(i.type == pafs.FileType.File for i in infos):
                    raise CatalogError(f"publish {self.dest}: the prefix holds files and no published catalog; "
                                       "choose an empty prefix (nothing was written)") from None
                return None
        return self._guard(read)

    def write(self, folder: Path, uploads: list[str], stale: list[str]) -> None:
        import pyarrow.fs as pafs

        def write():
            for relative in uploads:
                pafs.copy_files(str(folder / relative), f"{self.base}/{relative}",
                                source_filesystem=pafs.LocalFileSystem(), destination_filesystem=self.fs)
            for relative in stale:
                _checked(relative)
                try:
                    self.fs.delete_file(f"{self.base}/{relative}")
                except FileNotFoundError:
                    pass
        self._guard(write)


class HubTarget(_Target):
    """A dataset repo: the whole publish is one commit (created if missing); none when unchanged."""

    def __init__(self, uri: str):
        from kernel_catalog.store._published import parse_hf

        self.dest = uri
        self.repo, self.revision = parse_hf(uri)

    def _api(self):
        from huggingface_hub import HfApi

        from kernel_catalog.adapters.hub import endpoint, offline, require_online

        if offline():
            raise CatalogError(f"publish {self.dest}: HF_HUB_OFFLINE is set; unset it to publish to the hub")
        require_online(self.repo, f"publish {self.dest}")
        if not sys.stderr.isatty():
            from huggingface_hub.utils import disable_progress_bars

            disable_progress_bars()
        logging.getLogger("huggingface_hub").setLevel(logging.ERROR)
        return HfApi(endpoint=endpoint())

    def read_manifest(self) -> dict | None:
        from huggingface_hub import errors, hf_hub_download

        from kernel_catalog.adapters.hub import endpoint, hf_cache_dir, timeout

        api = self._api()
        try:
            api.create_repo(self.repo, repo_type="dataset", exist_ok=True)
            path = hf_hub_download(self.repo, MANIFEST, repo_type="dataset", revision=self.revision,
                                   cache_dir=hf_cache_dir(), endpoint=endpoint(), etag_timeout=timeout())
        except (errors.EntryNotFoundError, errors.RevisionNotFoundError):
            return None
        except Exception as error:  # noqa: BLE001
            raise _hub_error(self.dest, error) from None
        return _parse(Path(path))

    def write(self, folder: Path, uploads: list[str], stale: list[str]) -> str:
        from huggingface_hub import CommitOperationAdd, CommitOperationDelete

        operations = [CommitOperationAdd(path_in_repo=p, path_or_fileobj=str(folder / p)) for p in uploads]
        operations += [CommitOperationDelete(path_in_repo=_checked(p)) for p in stale]
        try:
            info = self._api().create_commit(self.repo, operations, repo_type="dataset", revision=self.revision,
                                             commit_message=f"kernel-catalog publish ({len(uploads)} files)")
        except Exception as error:  # noqa: BLE001
            raise _hub_error(self.dest, error) from None
        return info.oid


def _hub_error(dest: str, error: Exception) -> CatalogError:
    from kernel_catalog.errors import error_summary

    return CatalogError(f"publish {dest}: the hub refused or could not be reached "
                        f"({error_summary(error).splitlines()[0][:200]}); check HF_TOKEN and HF_ENDPOINT")


def _checked(relative: str) -> str:
    """A stale path from a manifest found at the destination: only a published catalog's own names."""
    from kernel_catalog.store._owned import is_own_data_file

    if not (is_own_data_file(relative) or relative in _LAST):
        raise CatalogError(f"publish: the manifest at the destination lists '{relative[:120]}', which is not a "
                           "published catalog's file; nothing was removed")
    return relative


def _parse(path: Path) -> dict | None:
    return _loads(path.read_text()) if path.is_file() else None


def _loads(text: str) -> dict | None:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) and isinstance(value.get("files"), dict) else None
