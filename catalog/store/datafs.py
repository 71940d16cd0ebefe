"""Where a catalog's Parquet lives: its own folder (the default) or an object-storage URI.

`DataRoot` is the one place data files are written, sized, listed, deleted and opened. A local
root is the catalog folder and keeps the original code path (staged_file: temporary name,
fsync, rename). A URI root (`s3://BUCKET/PREFIX`, any pyarrow filesystem URI) is reached through
`pyarrow.fs`; credentials and endpoint come from the standard AWS variables (AWS_ENDPOINT_URL,
AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION), which pyarrow's S3FileSystem honours.

On object storage every data file is written once under a new unique key (`<digest>-<uuid>`):
a PUT (or a completed multipart upload) makes the object appear whole or not at all, so the
final key never holds a partial file, and a key no committed row names is an orphan that the
next writer deletes, exactly as on a local disk.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
import uuid
from pathlib import Path
from typing import Callable

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from kernel_catalog.errors import CatalogError

INSTALL_HINT = "pip install 'kernel-catalog[cluster]'"
HUB_BLOCK_SIZE = 1 << 18   # HfFileSystem reads ahead 5 MB by default: far more than a row group's column
_TIMEOUT = float(os.environ.get("KERNEL_CATALOG_S3_TIMEOUT", "5"))


def is_uri(location: str | os.PathLike | None) -> bool:
    return location is not None and "://" in str(location)


def require_cluster_extra(what: str, module: str = "boto3") -> None:
    """One line naming the extra to install when `what` needs a package that is not there."""
    try:
        __import__(module)
    except ImportError:
        raise CatalogError(f"{what} needs the optional cluster packages (Ray, boto3); {INSTALL_HINT}") from None


def filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """(pyarrow filesystem, base path inside it) for a data-root URI; S3 with short timeouts so
    that an unreachable server is a prompt one-line error rather than minutes of retries."""
    uri = uri.rstrip("/")
    if uri.startswith("s3://"):
        require_cluster_extra(f"data root {uri}")
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        scheme, _, host = (endpoint or "").partition("://")
        return pafs.S3FileSystem(
            endpoint_override=host.rstrip("/") or None, scheme=scheme or None,
            region=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
            connect_timeout=_TIMEOUT, request_timeout=max(_TIMEOUT, 30.0),
            retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=2),
        ), uri[len("s3://"):]
    if uri.startswith("hf://"):     # a dataset repo: HTTP range reads through huggingface_hub
        from huggingface_hub import HfFileSystem, constants

        from kernel_catalog.adapters.hub import endpoint, offline

        constants.HF_HUB_OFFLINE = offline()
        hub = HfFileSystem(endpoint=endpoint(), block_size=HUB_BLOCK_SIZE)   # (instances cached: pinned to a commit)
        return pafs.PyFileSystem(pafs.FSSpecHandler(hub)), uri[len("hf://"):]
    try:
        return pafs.FileSystem.from_uri(uri)
    except (pa.ArrowInvalid, OSError) as error:
        raise CatalogError(f"data root {uri}: {error}") from None


def s3_client():
    """boto3's S3 client with the data roots' short timeouts; endpoint and credentials from the
    standard AWS variables, as for pyarrow's."""
    import boto3
    from botocore.config import Config

    return boto3.client("s3", config=Config(connect_timeout=_TIMEOUT, read_timeout=max(_TIMEOUT, 30.0),
                                            retries={"max_attempts": 2, "mode": "standard"}))


def s3_key(uri: str, name: str) -> tuple[str, str]:
    """(bucket, key) of the object `name` under an s3:// prefix."""
    bucket, _, prefix = uri[len("s3://"):].partition("/")
    return bucket, f"{prefix.strip('/')}/{name}" if prefix.strip("/") else name


def storage_error(uri: str, error: BaseException) -> CatalogError:
    text = " ".join(str(error).split())
    return CatalogError(f"object storage at {uri} failed ({text[:200]}); check AWS_ENDPOINT_URL and credentials "
                        "(the catalog is unchanged)")


class DataRoot:
    """The data files of one catalog, addressed by paths relative to the root ('kernels/model=m/x.parquet')."""

    def __init__(self, local_root: Path, uri: str | None = None):
        self.local_root = Path(local_root)
        self.uri = uri.rstrip("/") if uri else None
        self._fs: pafs.FileSystem | None = None
        self._base = ""
        self._digests: dict[str, str] = {}   # SHA-256 of the files this instance wrote

    def __repr__(self) -> str:
        return f"DataRoot({self.uri or str(self.local_root)!r})"

    @property
    def is_local(self) -> bool:
        return self.uri is None

    @property
    def location(self) -> str:
        return self.uri or str(self.local_root)

    @property
    def fs(self) -> pafs.FileSystem:
        if self._fs is None:
            if self.is_local:
                self._fs, self._base = pafs.LocalFileSystem(), str(self.local_root)
            else:
                self._fs, self._base = filesystem(self.uri)
        return self._fs

    def full(self, relative: str) -> str:
        """The path of a relative data path inside `fs`."""
        self.fs
        return f"{self._base}/{relative}" if relative else self._base

    def _guard(self, action: Callable):
        try:
            return action()
        except CatalogError:
            raise
        except (OSError, pa.ArrowException) as error:
            if self.is_local:
                raise
            raise storage_error(self.uri, error) from None

    def check(self) -> None:
        """Reach the storage once (list the root): a prompt one-line error if it cannot be."""
        if not self.is_local:
            self._guard(lambda: self.fs.get_file_info(pafs.FileSelector(self.full(""), allow_not_found=True)))

    def write_parquet(self, relative: str, table: pa.Table, **options) -> int:
        """Write a table under `relative` (a new unique key); returns its size in bytes."""
        if self.is_local:     # temporary name, fsync, rename (store.atomic)
            from kernel_catalog.store.atomic import staged_file

            final = self.local_root / relative
            final.parent.mkdir(parents=True, exist_ok=True)
            with staged_file(final) as temporary:
                pq.write_table(table, temporary, **options)
                self._digests[relative] = file_sha256(temporary)
            return final.stat().st_size

        def write():
            buffer = pa.BufferOutputStream()
            pq.write_table(table, buffer, **options)
            data = buffer.getvalue()
            self._digests[relative] = hashlib.sha256(data).hexdigest()
            with self.fs.open_output_stream(self.full(relative)) as sink:
                sink.write(data)
            return data.size
        return self._guard(write)

    def write_with(self, relative: str, write: Callable[[Path], None]) -> int:
        """Write via `write(local_path)` (e.g. torch.save), then upload the file under `relative`."""
        with tempfile.TemporaryDirectory(prefix="kc-upload-") as folder:
            local = Path(folder) / Path(relative).name
            write(local)
            self._digests[relative] = file_sha256(local)
            self.upload(local, relative)
        return self.size(relative)

    def upload(self, local: Path, relative: str) -> None:
        self._guard(lambda: pafs.copy_files(str(local), self.full(relative),
                                            source_filesystem=pafs.LocalFileSystem(), destination_filesystem=self.fs))

    def size(self, relative: str) -> int:
        if self.is_local:
            return (self.local_root / relative).stat().st_size
        return self._guard(lambda: self.fs.get_file_info(self.full(relative)).size)

    def delete(self, relative: str) -> None:
        if self.is_local:
            (self.local_root / relative).unlink(missing_ok=True)
            return
        def delete():
            try:
                self.fs.delete_file(self.full(relative))
            except FileNotFoundError:
                pass
        self._guard(delete)

    def list(self, folder: str) -> list[str]:
        """Every file under `folder`, as relative paths, sorted; locally links are listed as entries
        (a link to a folder too) and never followed."""
        if self.is_local:
            if os.path.islink(self.local_root / folder):
                return [folder]          # the data folder itself is a link: one foreign entry, not entered
            found = []
            for top, dirs, files in os.walk(self.local_root / folder, followlinks=False):
                base = Path(top).relative_to(self.local_root).as_posix()
                links = [d for d in dirs if os.path.islink(os.path.join(top, d))]
                found += [f"{base}/{name}" for name in files + links]
            return sorted(found)

        def listing():
            infos = self.fs.get_file_info(pafs.FileSelector(self.full(folder), recursive=True, allow_not_found=True))
            prefix = len(self._base) + 1
            return sorted(i.path[prefix:] for i in infos if i.type == pafs.FileType.File)
        return self._guard(listing)

    def absolute(self, paths: list[str]) -> list[str]:
        """Local data files as absolute paths (what a locked-down DuckDB connection may open)."""
        return [str(self.local_root / p) for p in paths]

    def is_link(self, relative: str) -> bool:
        return self.is_local and os.path.islink(self.local_root / relative)

    def remove_empty_partitions(self) -> None:
        """Remove empty partition folders (`kernels/model=...`, `results/run=...`) left after deletes."""
        if not self.is_local:
            return                       # object storage has no folders
        for folder in ("kernels", "results"):
            top = self.local_root / folder
            if top.is_dir() and not top.is_symlink():
                for path in top.iterdir():
                    if path.name.startswith(("model=", "run=")) and path.is_dir() and not path.is_symlink() \
                            and not any(path.iterdir()):
                        path.rmdir()

    def vouch(self, relative: str, sha256: str) -> None:
        """Take the SHA-256 of a file that a task of this run wrote (a Ray worker's own DataRoot
        computed it from the bytes it wrote), so that the commit need not stream the file back;
        `verify` still reads every file afresh."""
        self._digests[relative] = sha256

    def sha256(self, relative: str, fresh: bool = False) -> str:
        """SHA-256 of a data file: as computed when this instance wrote it (or a task that wrote
        it vouched), else streamed (`fresh`: always streamed, as `verify` does)."""
        if not fresh and relative in self._digests:
            return self._digests[relative]
        return self._streamed_sha256(relative)

    def _streamed_sha256(self, relative: str) -> str:
        if self.is_local:
            return file_sha256(self.local_root / relative)
        digest = hashlib.sha256()

        def stream():
            with self.fs.open_input_stream(self.full(relative)) as source:
                for chunk in iter(lambda: source.read(1 << 20), b""):
                    digest.update(chunk)
            return digest.hexdigest()
        return self._guard(stream)

    def read_marker(self) -> str | None:
        """The catalog id in the marker at this data root (None: none there)."""
        from kernel_catalog.store._owned import MARKER_NAME, marker_id, read_marker

        if self.is_local:
            return read_marker(self.local_root)

        def read():
            try:
                with self.fs.open_input_stream(self.full(MARKER_NAME)) as source:
                    return marker_id(source.read(1 << 16).decode(errors="replace"))
            except FileNotFoundError:
                return None
        return self._guard(read)

    def claim(self, catalog_id: str) -> None:
        """Mark this (object-storage) data root as the catalog's; refuse one marked by another
        catalog, or holding files that are not a catalog's, so that no sweep ever removes them."""
        from kernel_catalog.store._owned import MARKER_NAME, is_own_data_file, marker_text

        found = self.read_marker()
        if found == catalog_id:
            return
        if found is not None:
            raise CatalogError(f"data root {self.location} belongs to another catalog ({found[:8]}); "
                               "give each catalog its own prefix")
        foreign = [p for folder in ("kernels", "results") for p in self.list(folder) if not is_own_data_file(p)]
        if foreign or self._guard(lambda: [i for i in self.fs.get_file_info(
                pafs.FileSelector(self.full(""), allow_not_found=True)) if i.base_name not in ("kernels", "results", "catalog.duckdb")]):
            raise CatalogError(f"data root {self.location} is not empty and is not a catalog's; "
                               "choose an empty prefix")
        text = marker_text(catalog_id).encode()
        if self.uri.startswith("s3://"):    # two catalogs claiming one empty prefix at once: one wins
            if not self.put_if_absent(MARKER_NAME, text) and self.read_marker() != catalog_id:
                raise CatalogError(f"data root {self.location} was just claimed by another catalog; "
                                   "give each catalog its own prefix")
            return
        self._guard(lambda: self._write_bytes(MARKER_NAME, text))

    def put_if_absent(self, relative: str, data: bytes) -> bool:
        """Write an object only where none is (S3's conditional PUT, If-None-Match: *): False if
        one already was, which is left as it was. A server without conditional writes (501)
        gets a plain write."""
        from botocore.exceptions import BotoCoreError, ClientError

        bucket, key = s3_key(self.uri, relative)
        try:
            s3_client().put_object(Bucket=bucket, Key=key, Body=data, IfNoneMatch="*")
            return True
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code")
            status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in ("PreconditionFailed", "ConditionalRequestConflict") or status in (409, 412):
                return False
            if code == "NotImplemented" or status == 501:
                self._guard(lambda: self._write_bytes(relative, data))
                return True
            raise storage_error(self.uri, error) from None
        except BotoCoreError as error:
            raise storage_error(self.uri, error) from None

    def _write_bytes(self, relative: str, data: bytes) -> None:
        with self.fs.open_output_stream(self.full(relative)) as sink:
            sink.write(data)

    def local_path(self, relative: str) -> Path:
        """A local file with the content of `relative` (downloaded once into the user cache for URI roots)."""
        if self.is_local:
            return self.local_root / relative
        key = hashlib.sha256(f"{self.uri}/{relative}".encode()).hexdigest()[:24]
        target = cache_dir() / "files" / f"{key}-{Path(relative).name}"
        if not target.is_file():   # data files are never rewritten under the same key
            target.parent.mkdir(parents=True, exist_ok=True)
            part = target.with_name(target.name + f".part-{os.getpid()}")
            self._guard(lambda: pafs.copy_files(self.full(relative), str(part), source_filesystem=self.fs,
                                                destination_filesystem=pafs.LocalFileSystem()))
            os.replace(part, target)
        return target

    def dataset(self, paths: list[str], schema: pa.Schema, partition: str) -> ds.Dataset:
        """A pyarrow dataset over exactly these files, hive partition `partition` as a string column."""
        full = pa.schema(list(schema) + [pa.field(partition, pa.string())])
        partitioning = ds.partitioning(pa.schema([(partition, pa.string())]), flavor="hive")
        return self._guard(lambda: ds.dataset([self.full(p) for p in paths], schema=full, format="parquet",
                                              filesystem=self.fs, partitioning=partitioning,
                                              partition_base_dir=self.full(paths[0].split("/")[0])))


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def kernel_file_path(model: str, digest: str) -> str:
    """A new unique relative path for one model's kernel file (hive partition model=<m>)."""
    from urllib.parse import quote

    return f"kernels/model={quote(model, safe='._+-')}/{digest[:16]}-{uuid.uuid4().hex[:8]}.parquet"


def cache_dir() -> Path:
    """The user cache folder for published snapshots and downloaded run files."""
    base = os.environ.get("KERNEL_CATALOG_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "kernel-catalog")
    return Path(base)
