"""Ingest runs over many sources: published weights download in parallel while others are read.

For each source: the adapter resolves what it stands for (for published weights: repo, commit,
files; from the cache first, else one metadata request); a model already in the catalog at that
revision is reported `unchanged` before anything is downloaded, so an interrupted zoo run resumes
cheaply. Downloads run on `jobs` worker threads, at most `jobs` models ahead of the one being
read, so disk use stays bounded; reading and committing happen on the calling thread, one model at
a time, each its own atomic write. With `evict`, each model's downloaded files leave the cache
once its kernels are committed (the cache is left as the run found it).
"""
from __future__ import annotations

import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from collections.abc import Callable
from typing import Any

from kernel_catalog import adapters as registry
from kernel_catalog.adapters.base import Adapter, IngestOptions, RemoteSource, RemoteWeights
from kernel_catalog.errors import CatalogError
from kernel_catalog.ingest._ingest import IngestFailure, IngestResult, commit_extraction, expand_sources
from kernel_catalog.store import Catalog

DEFAULT_JOBS = 2


@dataclass(frozen=True)
class _Ready:
    """A source whose files are local: what to read, and how long the download took."""

    source: str
    adapter: Adapter
    plan: RemoteWeights | None
    download_seconds: float


def ingest(catalog: Catalog, source: str, options: IngestOptions = IngestOptions(), adapter: str | None = None,
           force: bool = False, wait: float | None = None, evict: bool = False) -> IngestResult:
    """Ingest one source (file, model name, hf: repo); CatalogError when it cannot be."""
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="catalog") as pool:
        known = pool.submit(_ingested_revisions, catalog)     # the catalog is read while the source resolves
        try:
            prepared = _prepare(source, options, adapter, known.result, force)
        finally:
            known.result()          # a catalog that cannot be read is reported before any write
    if isinstance(prepared, IngestResult):
        return replace(prepared, seconds=time.perf_counter() - started)
    return _finish(catalog, prepared, options, force, wait, evict, started)


def ingest_many(
    catalog: Catalog,
    sources: list[str],
    options: IngestOptions = IngestOptions(),
    adapter: str | None = None,
    force: bool = False,
    wait: float | None = None,
    on_result: Callable[[IngestResult | IngestFailure], None] | None = None,
    progress: bool = False,
    jobs: int = DEFAULT_JOBS,
    evict: bool = False,
) -> list[IngestResult | IngestFailure]:
    """Ingest several sources (patterns expanded); each model is its own atomic write.

    One bad source does not stop the others: it becomes an IngestFailure with its message.
    Outcomes come back (and to `on_result`) in the order of the sources.
    """
    if jobs < 1:
        raise CatalogError(f"--jobs {jobs}: give at least 1")
    names = expand_sources(sources, options)
    if options.name and len(names) > 1:
        raise CatalogError(f"--name gives one model name, but {len(names)} sources were given")
    registry.list_adapters()                # load the plugins once, before the worker threads
    known = _ingested_revisions(catalog)
    outcomes: list[IngestResult | IngestFailure] = []
    bar = _bar(len(names)) if progress and len(names) > 1 else None
    pool = ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="download")
    pending: deque[tuple[str, float, Future]] = deque()
    queue = iter(names)

    def submit_next() -> None:
        name = next(queue, None)
        if name is not None:
            pending.append((name, time.perf_counter(),
                            pool.submit(_prepare_or_fail, name, options, adapter, lambda: known, force)))

    try:
        for _ in range(jobs):
            submit_next()
        while pending:
            name, started, future = pending.popleft()
            prepared = future.result()
            submit_next()                       # the next download starts while this model is read
            if bar is not None:
                bar.set_postfix_str(Path(name).name)
            outcome = _outcome(catalog, prepared, options, force, wait, evict, started)
            outcomes.append(outcome)
            _report(outcome, on_result, bar)
    except BaseException:               # Ctrl-C or a bug: queued downloads are dropped, not awaited
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    finally:
        if bar is not None:
            bar.close()
    pool.shutdown(wait=True)
    return outcomes


def summary(outcomes: list[IngestResult | IngestFailure]) -> dict[str, Any]:
    """Counts per action (added, replaced, unchanged, failed) and each failure with its reason."""
    counts = {"added": 0, "replaced": 0, "unchanged": 0, "failed": 0}
    failures = []
    for outcome in outcomes:
        if isinstance(outcome, IngestFailure):
            counts["failed"] += 1
            failures.append((outcome.source, outcome.message))
        else:
            counts[outcome.action] = counts.get(outcome.action, 0) + 1
    return {**counts, "failures": failures}


def _outcome(catalog, prepared, options, force, wait, evict, started) -> IngestResult | IngestFailure:
    if isinstance(prepared, (IngestResult, IngestFailure)):
        return replace(prepared, seconds=time.perf_counter() - started) if isinstance(prepared, IngestResult) else prepared
    try:
        return _finish(catalog, prepared, options, force, wait, evict, started)
    except CatalogError as error:
        return IngestFailure(prepared.source, str(error))


def _prepare_or_fail(source, options, adapter, known, force) -> _Ready | IngestResult | IngestFailure:
    try:
        return _prepare(source, options, adapter, known, force)
    except CatalogError as error:
        return IngestFailure(source, str(error))


def _prepare(source: str, options: IngestOptions, adapter_name: str | None,
             known: Callable[[], dict[str, dict[str, Any]]], force: bool) -> _Ready | IngestResult:
    """Pick the adapter; for published weights resolve, skip when already ingested (`known()`:
    the catalog's models from published weights), else download."""
    adapter = registry.get_adapter(adapter_name) if adapter_name else registry.find_adapter(source, options)
    if not isinstance(adapter, RemoteSource):
        return _Ready(source, adapter, None, 0.0)
    plan = adapter.resolve(source, options)
    if plan is None:
        return _Ready(source, adapter, None, 0.0)
    model = options.name or plan.model
    row = known().get(model)
    if (not force and row is not None and plan.revision is not None
            and row["repo"] == plan.repo and row["revision"] == plan.revision):
        return IngestResult(model, "unchanged", row["sha256"], row["adapter"], row["n_layers"],
                            row["n_kernels"], row["n_nonfinite"], row["n_near_zero"], 0.0)
    started = time.perf_counter()
    adapter.fetch(plan)
    return _Ready(source, adapter, plan, time.perf_counter() - started)


def _finish(catalog: Catalog, ready: _Ready, options: IngestOptions, force: bool, wait: float | None,
            evict: bool, started: float) -> IngestResult:
    """Read the local files, commit the model, then evict what was downloaded for it."""
    read_started = time.perf_counter()
    extraction = ready.adapter.read(ready.plan.source if ready.plan else ready.source, options)
    if not extraction.layers:
        raise CatalogError(f"{ready.source}: no depthwise convolution found")
    result = commit_extraction(catalog, extraction, ready.adapter.name, ready.adapter.version, options.name,
                               force=force, wait=wait, started=started)
    if evict and ready.plan is not None:
        ready.adapter.evict(ready.plan)
    return replace(result, download_seconds=ready.download_seconds,
                   read_seconds=time.perf_counter() - read_started)


def _ingested_revisions(catalog: Catalog) -> dict[str, dict[str, Any]]:
    """model -> hub repo, revision and counts, for the models that came from published weights."""
    if not catalog.exists():
        return {}
    with catalog.reader(views=False) as con:      # the tables alone: no view needed, none built
        rows = con.execute("""
            SELECT m.model, json_extract_string(m.meta, '$.hub.repo'), json_extract_string(m.meta, '$.hub.revision'),
                   m.checkpoint_sha256, m.adapter, m.n_layers, m.n_kernels,
                   (SELECT sum(l.n_nonfinite) FROM layer_records l WHERE l.model = m.model)::BIGINT,
                   (SELECT sum(l.n_near_zero) FROM layer_records l WHERE l.model = m.model)::BIGINT
            FROM model_records m WHERE json_extract_string(m.meta, '$.hub.revision') IS NOT NULL""").fetchall()
    keys = ("repo", "revision", "sha256", "adapter", "n_layers", "n_kernels", "n_nonfinite", "n_near_zero")
    return {row[0]: dict(zip(keys, row[1:])) for row in rows}


def _bar(total: int):
    from tqdm import tqdm

    return tqdm(total=total, unit="model", desc="ingest", leave=False, disable=None)


def _report(outcome, on_result, bar) -> None:
    if on_result is not None:
        if bar is not None:
            with bar.external_write_mode():   # result lines print above the bar, not through it
                on_result(outcome)
        else:
            on_result(outcome)
    if bar is not None:
        bar.update(1)
