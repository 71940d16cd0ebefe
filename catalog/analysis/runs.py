"""Analysis runs in the catalog: names, records, result files, replace and delete.

A run's results land like kernels do: files under a temporary name, renamed into
results/run=<name>/, then one transaction records them (and drops a replaced run's rows).
"""
from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Callable, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from kernel_catalog._version import __version__
from kernel_catalog.store.atomic import staged_file
from kernel_catalog.store.output import json_text
from kernel_catalog.analysis.params import ClusterParams, EmbedParams, from_record
from kernel_catalog.errors import CatalogError
from kernel_catalog.store.faults import crash_point
from kernel_catalog.store import Catalog, WriteSession
from kernel_catalog.store.datafs import DataRoot

_RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


@dataclass(frozen=True)
class RunRecord:
    """One analysis run, as written (`commit_run`) and as read back (`run_record`): params and
    metrics are decoded once, here; the typed parameters come from `embed_params` /
    `cluster_params`, per-size metrics from `size_metrics`."""

    run: str
    kind: str                      # embed | cluster
    params: dict
    parent: str | None = None
    selection: str | None = None
    metrics: dict = field(default_factory=dict)
    device: str | None = None
    seconds: float | None = None
    code_version: str | None = None       # set when read back
    created_at: datetime | None = None    # set when read back

    def embed_params(self) -> EmbedParams:
        return from_record(EmbedParams, self.params)

    def cluster_params(self) -> ClusterParams:
        return from_record(ClusterParams, self.params)

    def size_metrics(self, key: str) -> dict:
        """Metrics of one kernel size ('7x7'); {} if the run has none for it."""
        return self.metrics.get(key, {})

    @property
    def preprocess(self) -> str:
        return self.params.get("preprocess", "center-l2")


def validate_run_name(name: str) -> str:
    if not _RUN_NAME.match(name or ""):
        raise CatalogError(f"run name '{name}' is not usable (letters, digits and . _ + - only)")
    return name


def run_record(catalog: Catalog, run: str) -> RunRecord | None:
    """The run named `run` (params and metrics decoded), or None."""
    rows = catalog.sql("SELECT * FROM run_records WHERE run = ?", [run]).to_pylist()
    if not rows:
        return None
    row = rows[0]
    return RunRecord(row["run"], row["kind"], json.loads(row["params"]) if row["params"] else {},
                     parent=row["parent"], selection=row["selection"],
                     metrics=json.loads(row["metrics"]) if row["metrics"] else {}, device=row["device"],
                     seconds=row["seconds"], code_version=row["code_version"], created_at=row["created_at"])


def list_runs(catalog: Catalog) -> pa.Table:
    """Every run with its kind, parameters, parent, selection and metrics (`catalog runs`)."""
    return catalog.sql("SELECT * FROM runs")


def require_run(catalog: Catalog, run: str, kind: str | None = None) -> RunRecord:
    row = run_record(catalog, run) if catalog.exists() else None
    if row is None:
        known = catalog.sql("SELECT run FROM run_records ORDER BY created_at").column("run").to_pylist() \
            if catalog.exists() else []
        raise CatalogError(f"unknown run '{run}' (runs: {', '.join(known) or 'none yet'}); see `catalog runs`")
    if kind and row.kind != kind:
        raise CatalogError(f"run '{run}' is a {row.kind} run; this needs a {kind} run")
    return row


def check_new_run(catalog: Catalog, run: str, replace: bool) -> None:
    """Refuse to overwrite an existing run unless --replace (checked before any work is done)."""
    validate_run_name(run)
    if not replace and catalog.exists() and run_record(catalog, run) is not None:
        raise CatalogError(f"run '{run}' already exists; pass --replace to overwrite it or choose another --run name")


@dataclass(frozen=True)
class StagedPart:
    """A result file already written into the data root (by a Ray worker), recorded as is at commit."""

    kind: str            # embeddings | labels
    path: str            # relative to the data root (`result_file_path`)
    rows: int
    size: int            # bytes
    sha256: str | None = None   # as its writer computed it (None: read back at commit)


def result_file_path(run: str, kind: str) -> str:
    """A new unique relative path for one result file of a run (hive partition run=<name>)."""
    suffix = ".parquet" if kind in ("embeddings", "labels") else ".pt"
    return f"results/run={run}/{kind}-{uuid.uuid4().hex[:16]}{suffix}"


def write_part(data: DataRoot, run: str, kind: str, table: pa.Table) -> StagedPart:
    """Write one result part (a block's rows) under a new unique path into the data root; it is
    recorded by `commit_run(parts=...)`, and removed as an orphan if the run never commits."""
    path = result_file_path(run, kind)
    size = data.write_parquet(path, table, compression="zstd")
    return StagedPart(kind, path, table.num_rows, size, data.sha256(path))


def stage_file(session: WriteSession, run: str, kind: str, write) -> str:
    """Write one result file atomically via `write(temporary_path)`; returns its relative path."""
    path = result_file_path(run, kind)
    if not session.data.is_local:   # object storage: written locally, uploaded under a new unique key
        session.data.write_with(path, write)
        return path
    final = session.root / path
    final.parent.mkdir(parents=True, exist_ok=True)
    with staged_file(final) as temporary:
        write(temporary)
    return path


def commit_run(
    catalog: Catalog,
    record: RunRecord,
    tables: dict[str, pa.Table],
    blobs: dict[str, Callable[[Path], None]] | None = None,
    clusters: pa.Table | None = None,
    replace: bool = False,
    wait: float | None = None,
    parts: Sequence[StagedPart] = (),
) -> None:
    """Write a run's result tables (and model files via `blobs` writers) and record it, with the
    `parts` workers already wrote, all or nothing."""
    validate_run_name(record.run)
    with catalog.writer(wait=wait) as session:
        exists = session.con.execute("SELECT count(*) FROM run_records WHERE run = ?", [record.run]).fetchall()[0][0]
        if exists and not replace:
            raise CatalogError(f"run '{record.run}' already exists; pass --replace to overwrite it")
        staged: list[tuple[str, str, int | None, int | None]] = [(p.kind, p.path, p.rows, p.size) for p in parts]
        for p in parts:
            if p.sha256:
                session.data.vouch(p.path, p.sha256)
        for kind, table in tables.items():
            path = stage_file(session, record.run, kind, lambda p, t=table: pq.write_table(t, p, compression="zstd"))
            staged.append((kind, path, table.num_rows, None))
        for key, write in (blobs or {}).items():   # key "autoencoder:7x7": kind before the colon
            kind = key.split(":")[0]
            path = stage_file(session, record.run, kind, write)
            staged.append((kind, path, None, None))
        crash_point("run-files-written")
        with session.transaction() as con:
            old = _delete_run_rows(con, record.run)
            con.execute(
                "INSERT INTO run_records VALUES (?, ?, ?, ?, ?, ?, ?, ?, current_timestamp::TIMESTAMP, ?)",
                [record.run, record.kind, record.parent, record.selection, json_text(record.params),
                 json_text(record.metrics), __version__, record.device, record.seconds])
            for kind, path, n_rows, size in staged:
                size = session.data.size(path) if size is None else size
                con.execute("INSERT INTO result_files BY NAME SELECT ? AS run, ? AS kind, ? AS path, ? AS n_rows, "
                            "? AS bytes, ? AS sha256", [record.run, kind, path, n_rows, size, session.data.sha256(path)])
            if clusters is not None and clusters.num_rows:
                con.register("new_clusters", clusters)
                con.execute("INSERT INTO cluster_records BY NAME SELECT ? AS run, * FROM new_clusters", [record.run])
                con.unregister("new_clusters")
        for path in old:
            session.data.delete(path)


def _delete_run_rows(con, run: str) -> list[str]:
    old = [r[0] for r in con.execute("SELECT path FROM result_files WHERE run = ?", [run]).fetchall()]
    for table in ("run_records", "result_files", "cluster_records"):
        con.execute(f"DELETE FROM {table} WHERE run = ?", [run])
    return old


def delete_run(catalog: Catalog, run: str, wait: float | None = None) -> int:
    """Remove exactly this run's rows and files; refuses while another run builds on it."""
    require_run(catalog, run)
    with catalog.writer(wait=wait) as session:
        children = [r[0] for r in session.con.execute(
            "SELECT run FROM run_records WHERE parent = ?", [run]).fetchall()]
        if children:
            raise CatalogError(f"run '{run}' is the parent of {', '.join(children)}; delete those first")
        with session.transaction() as con:
            old = _delete_run_rows(con, run)
        for path in old:
            session.data.delete(path)
    return len(old)


def result_paths(catalog: Catalog, run: str, kind: str) -> list[Path]:
    rows = catalog.sql("SELECT path FROM result_files WHERE run = ? AND kind = ? ORDER BY path", [run, kind])
    return [catalog.data.local_path(p) for p in rows.column("path").to_pylist()]

