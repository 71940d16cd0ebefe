"""Ingest: source -> adapter -> kernel rows -> Parquet (atomic) -> metadata commit.

Order of a write, and why each step is safe to die in:
1. read the source and build rows (nothing on disk yet);
2. take the writer lock; if the same weights are already there, log `unchanged` and stop;
3. write Parquet under a temporary name, fsync, rename into kernels/model=<m>/ (a file no
   committed row names is invisible to the views and removed by the next writer);
4. one transaction: replace the model's rows, rebuild views, commit (all or nothing);
5. delete the files of a replaced version (leftovers are orphans, removed next time).
"""
from __future__ import annotations

import os
import re
import time
import uuid
from urllib.parse import quote
from dataclasses import dataclass, replace

import pyarrow as pa
import pyarrow.parquet as pq

from kernel_catalog import adapters as registry
from kernel_catalog.adapters.base import Extraction, IngestOptions

from kernel_catalog._version import __version__
from kernel_catalog.store.atomic import staged_file
from kernel_catalog.store.output import json_text
from kernel_catalog.errors import CatalogError
from kernel_catalog.store.faults import crash_point
from kernel_catalog.store.kernel_table import PARQUET_OPTIONS, build_kernel_table, checkpoint_digest
from kernel_catalog.store import Catalog, WriteSession
from kernel_catalog.store.datafs import kernel_file_path

# One optional "/" for hub repos (ORG/REPO); the partition folder escapes it (DuckDB decodes %2F).
_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*(/[A-Za-z0-9][A-Za-z0-9._+-]*)?$")
_PATTERN_CHARS = set("*?[")


@dataclass(frozen=True)
class IngestResult:
    model: str
    action: str              # added | replaced | unchanged
    checkpoint_sha256: str
    adapter: str
    n_layers: int
    n_kernels: int
    n_nonfinite: int
    n_near_zero: int
    seconds: float
    download_seconds: float = 0.0    # published weights: time to fetch them (0 when cached)
    read_seconds: float = 0.0        # adapter read + commit


@dataclass(frozen=True)
class IngestFailure:
    source: str
    message: str


def validate_model_name(name: str) -> str:
    if not _MODEL_NAME.match(name):
        raise CatalogError(
            f"model name '{name}' is not usable as a catalog key (letters, digits and . _ + - only, "
            "at most one / as in ORG/REPO, not starting with a symbol); pass --name NAME"
        )
    return name


def is_pattern(source: str) -> bool:
    return bool(_PATTERN_CHARS & set(source)) and not os.path.exists(source)


def expand_sources(sources: list[str], options: IngestOptions) -> list[str]:
    """Replace fnmatch patterns (e.g. 'convnext*') by the model names they match, in order."""
    expanded: list[str] = []
    for source in sources:
        for name in registry.expand_pattern(source, options) if is_pattern(source) else [source]:
            if name not in expanded:
                expanded.append(name)
    return expanded


def read_source(source: str, options: IngestOptions, adapter_name: str | None = None):
    """Run the adapter for one source (published weights downloaded as needed); (adapter, extraction)."""
    adapter = registry.get_adapter(adapter_name) if adapter_name else registry.find_adapter(source, options)
    extraction = adapter.read(source, options)
    if not extraction.layers:
        raise CatalogError(f"{source}: no depthwise convolution found")
    return adapter, extraction


def commit_extraction(
    catalog: Catalog,
    extraction: Extraction,
    adapter: str,
    adapter_version: str,
    name: str | None = None,
    force: bool = False,
    wait: float | None = None,
    started: float | None = None,
) -> IngestResult:
    """Write an adapter's extraction as one model; idempotent on the weights' digest."""
    started = time.perf_counter() if started is None else started
    model = validate_model_name(name or extraction.model)
    digest = checkpoint_digest(extraction.layers)
    table, layer_rows = build_kernel_table(extraction.layers, digest, adapter, extraction.trained)
    result = IngestResult(
        model, "added", digest, adapter, len({r.layer for r in layer_rows}), table.num_rows,
        sum(r.n_nonfinite for r in layer_rows), sum(r.n_near_zero for r in layer_rows), 0.0,
    )
    with catalog.writer(wait=wait) as session:
        rows = session.con.execute(
            "SELECT checkpoint_sha256 FROM model_records WHERE model = ?", [model]
        ).fetchall()
        existing = rows[0] if rows else None
        if existing and not force:
            if existing[0] != digest:
                raise CatalogError(
                    f"model '{model}' is already in the catalog with other weights "
                    f"(sha256 {existing[0][:12]}, new {digest[:12]}); pass --force to replace it "
                    "or --name to keep both"
                )
            result = replace(result, action="unchanged")
            with session.transaction() as con:
                _log(con, result, extraction, adapter_version)
            return replace(result, seconds=time.perf_counter() - started)
        if existing:
            result = replace(result, action="replaced")
        path = _write_parquet(session, model, digest, table)
        old_files = _replace_model_rows(session, result, extraction, adapter_version, layer_rows, path, table)
        crash_point("after-commit")
        for old in old_files:
            session.data.delete(old)
    return replace(result, seconds=time.perf_counter() - started)


def _write_parquet(session: WriteSession, model: str, digest: str, table: pa.Table) -> str:
    """Write under a temporary name, fsync, rename: the final name never holds a partial file."""
    if not session.data.is_local:   # object storage: one upload under a new unique key (store.datafs)
        path = kernel_file_path(model, digest)
        session.data.write_parquet(path, table, **PARQUET_OPTIONS)
        crash_point("parquet-renamed")
        return path
    folder = session.root / "kernels" / f"model={quote(model, safe='._+-')}"
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"{digest[:16]}-{uuid.uuid4().hex[:8]}.parquet"
    with staged_file(final) as temporary:
        pq.write_table(table, temporary, **PARQUET_OPTIONS)
        crash_point("parquet-written")
    crash_point("parquet-renamed")
    return final.relative_to(session.root).as_posix()


def _replace_model_rows(session, result, extraction, adapter_version, layer_rows, path, table) -> list[str]:
    """One transaction: drop the model's old rows, insert the new ones; returns old file paths."""
    layers = pa.table({
        "layer": [r.layer for r in layer_rows],
        "expert": pa.array([r.expert for r in layer_rows], pa.int32()),
        "layer_index": pa.array([r.layer_index for r in layer_rows], pa.int32()),
        "depth": [r.depth for r in layer_rows],
        "kh": pa.array([r.kh for r in layer_rows], pa.int32()),
        "kw": pa.array([r.kw for r in layer_rows], pa.int32()),
        "n_kernels": pa.array([r.n_kernels for r in layer_rows], pa.int32()),
        "n_nonfinite": pa.array([r.n_nonfinite for r in layer_rows], pa.int32()),
        "n_near_zero": pa.array([r.n_near_zero for r in layer_rows], pa.int32()),
        "meta": [json_text(r.meta) for r in layer_rows],
        **{m: pa.array([getattr(r, m) for r in layer_rows], pa.float64()) for m in ("sparsity", "variance_entropy")},
    })
    model = result.model
    with session.transaction() as con:
        old_files = [row[0] for row in con.execute(
            "SELECT path FROM kernel_files WHERE model = ?", [model]).fetchall()]
        for tbl in ("model_records", "layer_records", "kernel_files"):
            con.execute(f"DELETE FROM {tbl} WHERE model = ?", [model])
        con.execute(
            "INSERT INTO model_records VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, current_timestamp::TIMESTAMP)",
            [model, result.checkpoint_sha256, result.adapter, adapter_version, extraction.trained,
             extraction.source, result.n_layers, result.n_kernels, json_text(extraction.meta)],
        )
        con.register("new_layers", layers)
        con.execute(
            "INSERT INTO layer_records BY NAME SELECT ? AS model, layer, expert, layer_index, depth, kh, kw, "
            "n_kernels, n_nonfinite, n_near_zero, meta::JSON AS meta, sparsity, variance_entropy FROM new_layers", [model])
        con.unregister("new_layers")
        con.execute("INSERT INTO kernel_files BY NAME SELECT ? AS model, ? AS path, ? AS n_rows, ? AS bytes, ? AS sha256",
                    [model, path, table.num_rows, session.data.size(path), session.data.sha256(path)])
        _log(con, result, extraction, adapter_version)
    return old_files


def _log(con, result: IngestResult, extraction: Extraction, adapter_version: str) -> None:
    con.execute(
        "INSERT INTO ingest_log VALUES (?, ?, ?, ?, ?, ?, ?, current_timestamp::TIMESTAMP)",
        [result.model, result.checkpoint_sha256, result.action, extraction.source, result.adapter,
         adapter_version, __version__],
    )
