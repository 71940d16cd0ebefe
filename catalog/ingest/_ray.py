"""`catalog ingest --ray ADDRESS`: sources fan out as Ray tasks, one committer.

Each task reads one source (download + adapter), builds the kernel table and writes its Parquet
under a new unique name into the data root, and returns small metadata (model, digest, layer
rows, the file's path). The driver holds the writer lock for the whole run (so no other writer
removes the workers' files as orphans) and commits every result ready at that moment in one
transaction (one view rebuild and one snapshot upload per batch: when commits are the
bottleneck, batches grow by themselves). A worker that dies is retried by Ray; the retry computes the same digest
and the same rows, and the dead attempt's file is an orphan removed at the end of the run. Two
results for one model are committed once (`unchanged` for the second, its file deleted).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from types import SimpleNamespace

from kernel_catalog import adapters as registry
from kernel_catalog.adapters.base import Extraction, IngestOptions, RemoteSource
from kernel_catalog.errors import CatalogError
from kernel_catalog.ingest._ingest import (
    IngestFailure, IngestResult, _log, _replace_model_rows, expand_sources, read_source, validate_model_name,
)
from kernel_catalog.store import Catalog
from kernel_catalog.store.datafs import DataRoot, kernel_file_path
from kernel_catalog.store.faults import crash_once
from kernel_catalog.store.kernel_table import PARQUET_OPTIONS, build_kernel_table, checkpoint_digest
from kernel_catalog.store.ray_runtime import MAX_RETRIES, connect, require_shared_data, task_options



@dataclass(frozen=True)
class StagedModel:
    """What a task returns: everything the commit needs, but no kernel values."""

    result: IngestResult
    extraction: Extraction          # without its layers
    adapter_version: str
    layer_rows: list
    path: str
    n_rows: int
    sha256: str                     # of the Parquet file, as the task wrote it


def extract_and_stage(source: str, options: IngestOptions, adapter_name: str | None,
                      local_root: str, uri: str | None, evict: bool = False) -> StagedModel:
    """The task body: read one source and write its kernel Parquet into the data root; with
    `evict`, published weights this task downloaded then leave the worker's cache (the commit
    needs only the Parquet)."""
    started = time.perf_counter()
    plan = None
    if evict:
        remote = registry.get_adapter(adapter_name) if adapter_name else registry.find_adapter(source, options)
        if isinstance(remote, RemoteSource):
            plan = remote.resolve(source, options)
            if plan is not None:
                remote.fetch(plan)
                source, adapter_name = plan.source, remote.name
    adapter, extraction = read_source(source, options, adapter_name)
    model = validate_model_name(options.name or extraction.model)
    digest = checkpoint_digest(extraction.layers)
    table, layer_rows = build_kernel_table(extraction.layers, digest, adapter.name, extraction.trained)
    path = kernel_file_path(model, digest)
    root = DataRoot(local_root, uri)
    root.write_parquet(path, table, **PARQUET_OPTIONS)
    crash_once("ray-task-written")
    if plan is not None:
        adapter.evict(plan)
    result = IngestResult(model, "added", digest, adapter.name, len({r.layer for r in layer_rows}), table.num_rows,
                          sum(r.n_nonfinite for r in layer_rows), sum(r.n_near_zero for r in layer_rows),
                          0.0, read_seconds=time.perf_counter() - started)
    return StagedModel(result, replace(extraction, layers=[]), adapter.version, layer_rows, path, table.num_rows,
                       root.sha256(path))


def _commit_one(session, staged: StagedModel, force: bool, duplicate: bool) -> tuple[IngestResult, list[str]]:
    """Commit one staged model inside the session's open transaction (same rules as
    commit_extraction); a `duplicate` (the model was committed earlier in this run) with the same
    digest is dropped. Returns the result and the model's old files (to delete after the commit).
    A CatalogError is raised before any row of this model is written."""
    result, model = staged.result, staged.result.model
    rows = session.con.execute("SELECT checkpoint_sha256 FROM model_records WHERE model = ?", [model]).fetchall()
    if rows and (not force or duplicate and rows[0][0] == result.checkpoint_sha256):
        session.data.delete(staged.path)        # a duplicate: dropped, its file removed
        if rows[0][0] != result.checkpoint_sha256:
            raise CatalogError(
                f"model '{model}' is already in the catalog with other weights (sha256 {rows[0][0][:12]}, "
                f"new {result.checkpoint_sha256[:12]}); pass --force to replace it or --name to keep both")
        result = replace(result, action="unchanged")
        _log(session.con, result, staged.extraction, staged.adapter_version)
        return result, []
    if rows:
        result = replace(result, action="replaced")
    session.data.vouch(staged.path, staged.sha256)
    old = _replace_model_rows(session, result, staged.extraction, staged.adapter_version, staged.layer_rows,
                              staged.path, SimpleNamespace(num_rows=staged.n_rows))
    return result, old


def commit_staged(catalog: Catalog, batch: list[StagedModel], force: bool, wait: float | None,
                  committed: set[str]) -> list[IngestResult | IngestFailure]:
    """Commit the staged models that are ready in ONE transaction under the writer lock: views are
    rebuilt, and a URI catalog's snapshot published, once per batch instead of once per model (with
    thousands of models, per-model commits grow quadratically). A model refused (other weights)
    fails alone; `committed` (models committed earlier in this run) marks duplicates."""
    outcomes, old = [], []
    with catalog.writer(wait=wait) as session:
        with session.transaction():
            for staged in batch:
                try:
                    result, files = _commit_one(session, staged, force, duplicate=staged.result.model in committed)
                except CatalogError as error:
                    outcomes.append(IngestFailure(staged.result.model, str(error)))
                    continue
                committed.add(result.model)
                outcomes.append(result)
                old.extend(files)
        for path in old:
            session.data.delete(path)
    return outcomes


def ingest_ray(catalog: Catalog, sources: list[str], address: str, options: IngestOptions = IngestOptions(),
               adapter: str | None = None, force: bool = False, wait: float | None = None,
               on_result=None, evict: bool = False) -> list[IngestResult | IngestFailure]:
    """Ingest sources as Ray tasks; outcomes in the order of the sources (as ingest_many).
    Parallelism is the cluster's (--jobs does not apply); each worker downloads into its own cache
    and with `evict` empties it again of what it downloaded, once the model's Parquet is written."""
    names = expand_sources(sources, options)
    if options.name and len(names) > 1:
        raise CatalogError(f"--name gives one model name, but {len(names)} sources were given")
    require_shared_data(catalog.data, address)
    ray = connect(address)
    with catalog.hold(wait=wait):
        data = catalog.data
        task = ray.remote(max_retries=MAX_RETRIES, num_cpus=1)(extract_and_stage)
        refs = [task.options(**task_options()).remote(s, options, adapter, str(data.local_root), data.uri, evict)
                for s in names]
        index = {ref: i for i, ref in enumerate(refs)}
        outcomes: list[IngestResult | IngestFailure | None] = [None] * len(names)
        committed: set[str] = set()
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            if pending:   # and every other result ready by now: committed together
                more, pending = ray.wait(pending, num_returns=len(pending), timeout=0)
                done += more
            started = time.perf_counter()
            ready: list[tuple[int, StagedModel]] = []
            for ref in done:
                i = index[ref]
                try:
                    ready.append((i, ray.get(ref)))
                except ray.exceptions.RayError as error:     # (a task's CatalogError arrives wrapped)
                    cause = getattr(error, "cause", None)
                    outcomes[i] = IngestFailure(names[i], str(cause) if isinstance(cause, CatalogError) else
                                                f"{names[i]}: {' '.join(str(cause or error).split())[:300]}")
            if ready:
                try:
                    results = commit_staged(catalog, [staged for _, staged in ready], force, wait, committed)
                except CatalogError as error:              # the whole batch (e.g. storage unreachable)
                    results = [IngestFailure(names[i], str(error)) for i, _ in ready]
                seconds = time.perf_counter() - started
                for (i, staged), outcome in zip(ready, results):
                    outcomes[i] = outcome if isinstance(outcome, IngestFailure) else \
                        replace(outcome, seconds=staged.result.read_seconds + seconds)
            for ref in done:
                if on_result:
                    on_result(outcomes[index[ref]])
    return outcomes        # (leaving hold() removed the files of attempts that died and were retried)
