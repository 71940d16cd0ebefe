"""A catalog published next to its data: the driver uploads catalog.duckdb after each commit,
and any machine opens `--catalog s3://BUCKET/PREFIX` read-only from a cached copy. A catalog
published with `catalog publish` opens the same way, also from a Hugging Face dataset repo
(`hf://datasets/ORG/NAME[@REV]`): its snapshot is fetched once per commit through huggingface_hub
(its cache: a cached revision opens with HF_HUB_OFFLINE=1), and its data is read at that commit.

One PUT replaces an object atomically on S3, so a reader downloads either the previous or the
new snapshot, never a mix; the cached copy is refreshed only when the object's ETag changed.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

from kernel_catalog.errors import CatalogError
from kernel_catalog.store.datafs import cache_dir, filesystem, require_cluster_extra, s3_client, s3_key, storage_error

SNAPSHOT_NAME = "catalog.duckdb"
PUBLISH_MANIFEST = "kernel-catalog-publish.json"   # at the root of a catalog `catalog publish` wrote


def parse_hf(uri: str) -> tuple[str, str | None]:
    """(repo id, revision or None) of `hf://datasets/ORG/NAME[@REV]`; names checked as for hub sources."""
    from kernel_catalog.adapters.hub import check_repo_id, check_revision

    rest = uri[len("hf://"):].rstrip("/")
    if not rest.startswith("datasets/"):
        raise CatalogError(f"{uri}: a published catalog on the hub is a dataset repo, hf://datasets/ORG/NAME[@REV]")
    repo, _, revision = rest[len("datasets/"):].partition("@")
    check_repo_id(repo, uri)
    check_revision(revision or None, uri)
    return repo, revision or None


def data_uri(uri: str) -> str:
    """Where the data of the catalog published at `uri` is read: for a hub repo, pinned to the
    commit its cached snapshot came from (metadata and data of one revision)."""
    if not uri.startswith("hf://"):
        return uri
    repo, _ = parse_hf(uri)
    commit = _read(cache_folder(uri) / "etag")
    return f"hf://datasets/{repo}@{commit}" if commit else uri


def cache_folder(uri: str) -> Path:
    """The local folder holding the cached snapshot of the catalog published at `uri`."""
    digest = hashlib.sha256(uri.rstrip("/").encode()).hexdigest()[:16]
    return cache_dir() / "snapshots" / digest


def _s3(uri: str):
    require_cluster_extra(f"catalog {uri}")
    return (s3_client(), *s3_key(uri, SNAPSHOT_NAME))


def publish(db_path: Path, uri: str) -> None:
    """Upload the (closed, checkpointed) catalog database as `<uri>/catalog.duckdb`."""
    try:
        if uri.startswith("s3://"):
            client, bucket, key = _s3(uri)
            with open(db_path, "rb") as body:
                client.put_object(Bucket=bucket, Key=key, Body=body)   # one PUT: replaces atomically
            return
        import pyarrow.fs as pafs

        fs, base = filesystem(uri)
        pafs.copy_files(str(db_path), f"{base}/{SNAPSHOT_NAME}", source_filesystem=pafs.LocalFileSystem(),
                        destination_filesystem=fs)
    except CatalogError:
        raise
    except Exception as error:   # botocore / pyarrow errors: one line
        raise storage_error(uri, error) from None


def fetch(uri: str) -> Path | None:
    """The local copy of the snapshot published at `uri` (downloaded when its ETag changed);
    None when nothing is published there."""
    folder = cache_folder(uri)
    folder.mkdir(parents=True, exist_ok=True)
    target, tag_file = folder / SNAPSHOT_NAME, folder / "etag"
    if uri.startswith("hf://"):
        return _fetch_hub(uri, target, tag_file)
    try:
        if not uri.startswith("s3://"):
            import pyarrow.fs as pafs

            fs, base = filesystem(uri)
            info = fs.get_file_info(f"{base}/{SNAPSHOT_NAME}")
            if info.type != pafs.FileType.File:
                return None
            etag = f"{info.mtime_ns}-{info.size}"
            if not target.is_file() or _read(tag_file) != etag:
                part = folder / f".{SNAPSHOT_NAME}.part-{os.getpid()}"
                pafs.copy_files(f"{base}/{SNAPSHOT_NAME}", str(part), source_filesystem=fs,
                                destination_filesystem=pafs.LocalFileSystem())
                os.replace(part, target)
                tag_file.write_text(etag)
            return target
        client, bucket, key = _s3(uri)
        from botocore.exceptions import ClientError

        try:
            head = client.head_object(Bucket=bucket, Key=key)
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        etag = head["ETag"]
        if target.is_file() and _read(tag_file) == etag:
            return target
        part = folder / f".{SNAPSHOT_NAME}.part-{os.getpid()}"
        response = client.get_object(Bucket=bucket, Key=key, IfMatch=etag)
        with open(part, "wb") as out:
            for chunk in response["Body"].iter_chunks(1 << 20):
                out.write(chunk)
        os.replace(part, target)
        tag_file.write_text(etag)
        return target
    except CatalogError:
        raise
    except Exception as error:
        raise storage_error(uri, error) from None


def _fetch_hub(uri: str, target: Path, tag_file: Path) -> Path | None:
    import logging

    from huggingface_hub import constants, errors, hf_hub_download

    from kernel_catalog.adapters.hub import endpoint, hf_cache_dir, hub_error, offline, timeout

    repo, revision = parse_hf(uri)
    constants.HF_HUB_OFFLINE = offline()      # read at import by huggingface_hub; the environment now
    logging.getLogger("huggingface_hub").setLevel(logging.ERROR)
    try:
        path = Path(hf_hub_download(repo, SNAPSHOT_NAME, repo_type="dataset", revision=revision,
                                    cache_dir=hf_cache_dir(), endpoint=endpoint(), etag_timeout=timeout()))
    except errors.LocalEntryNotFoundError:     # (an EntryNotFoundError too): not cached, and no hub to ask
        why = ("HF_HUB_OFFLINE is set; unset it to fetch it" if offline() else
               f"the hub at {endpoint()} cannot be reached; check the network (HF_ENDPOINT for a mirror)")
        raise CatalogError(f"catalog {uri}: its snapshot is not in the Hugging Face cache {hf_cache_dir()} and {why}") from None
    except errors.EntryNotFoundError:
        return None
    except Exception as error:  # noqa: BLE001
        raise hub_error(repo, revision, f"catalog {uri}", error, SNAPSHOT_NAME) from None
    commit = path.parent.name          # <cache>/datasets--ORG--NAME/snapshots/<commit>/catalog.duckdb
    if len(commit) != 40 or any(c not in "0123456789abcdef" for c in commit):
        raise CatalogError(f"catalog {uri}: the hub cache gave no commit for {SNAPSHOT_NAME}")
    if not target.is_file() or _read(tag_file) != commit:
        part = target.with_name(f".{SNAPSHOT_NAME}.part-{os.getpid()}")
        import shutil

        shutil.copyfile(path, part)
        os.replace(part, target)
        tag_file.write_text(commit)
    return target


def _read(path: Path) -> str | None:
    return path.read_text() if path.is_file() else None
