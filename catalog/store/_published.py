"""A catalog published next to its data: the driver uploads catalog.duckdb after each commit,
and any machine opens `--catalog s3://BUCKET/PREFIX` read-only from a cached copy.

One PUT replaces an object atomically on S3, so a reader downloads either the previous or the
new snapshot, never a mix; the cached copy is refreshed only when the object's ETag changed.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

from kernel_catalog.errors import CatalogError
from kernel_catalog.store.datafs import cache_dir, filesystem, require_cluster_extra, storage_error

SNAPSHOT_NAME = "catalog.duckdb"


def cache_folder(uri: str) -> Path:
    """The local folder holding the cached snapshot of the catalog published at `uri`."""
    digest = hashlib.sha256(uri.rstrip("/").encode()).hexdigest()[:16]
    return cache_dir() / "snapshots" / digest


def _s3(uri: str):
    require_cluster_extra(f"catalog {uri}")
    import boto3
    from botocore.config import Config

    bucket, _, prefix = uri[len("s3://"):].partition("/")
    timeout = float(os.environ.get("KERNEL_CATALOG_S3_TIMEOUT", "5"))
    client = boto3.client("s3", config=Config(connect_timeout=timeout, read_timeout=max(timeout, 30),
                                              retries={"max_attempts": 2, "mode": "standard"}))
    key = f"{prefix.strip('/')}/{SNAPSHOT_NAME}" if prefix.strip("/") else SNAPSHOT_NAME
    return client, bucket, key


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


def _read(path: Path) -> str | None:
    return path.read_text() if path.is_file() else None
