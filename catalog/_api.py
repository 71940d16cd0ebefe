"""The notebook API, and the only thing the CLI calls: `open()` -> a `Catalog` whose methods are
the CLI's commands, with the same parameters, the same defaults and the same words.

    import kernel_catalog as kc
    cat = kc.open("kernel-catalog")
    cat.ingest("mixnet_s", random_init=True)
    cat.sql("SELECT model, kh, count(*) FROM kernels GROUP BY ALL")   # a pyarrow.Table
    result = cat.analyze(run="r7", where="kh = 7")                    # result.table, result.warnings

`Catalog` is a facade: it holds the store (`kernel_catalog.store.Catalog`) and does not inherit it,
so its completion shows the catalog's verbs, not its plumbing. Every default is a library
constant (here, in `analysis.params` or in the stage that owns it); the CLI builds its options
from the same constants, and a test walks every command and checks that each option maps to a
parameter here with an equal default. Heavy stages (torch, matplotlib) load on first use.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import pyarrow as pa

from kernel_catalog.adapters.base import IngestOptions
from kernel_catalog.analysis.params import DEFAULT_PRESET, ClusterParams, EmbedParams
from kernel_catalog.analysis.search import (
    DEFAULT_BINS, DEFAULT_COMPONENTS, DEFAULT_K as DEFAULT_NEAREST, DEFAULT_SIZE,
)
from kernel_catalog.errors import CatalogError
from kernel_catalog.export.export import DEFAULT_BATCH_ROWS
from kernel_catalog.ingest import DEFAULT_JOBS
from kernel_catalog.report import GROUPINGS
from kernel_catalog.store import Catalog as _Store

__all__ = ["Catalog", "RunResult", "open"]

READ_WAIT = 10.0           # seconds a reader waits while a writer commits
DEFAULT_SEED = 0           # every seeded step (random init, training, clustering, samples)
DEFAULT_GROUPING = GROUPINGS[0]


def _quiet(line: str) -> None:
    """The default `echo`: a notebook call prints nothing; the CLI passes its own."""


@dataclass
class RunResult:
    """What an analysis call returns: the run, its metrics per kernel size, the warnings a reader
    of its numbers needs (seed stability, sizes too small for a verdict), and for `analyze` the
    report (Table 1)."""

    run: str
    kind: str
    metrics: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    table: pa.Table | None = None


class Catalog:
    """A kernel catalog (a folder, or a published URI read-only) with the whole workflow as methods."""

    def __init__(self, location: str | os.PathLike | None = None):
        self._store = _Store(location)

    def __repr__(self) -> str:
        return f"kc.open({self._store.location!r})"

    @property
    def location(self) -> str:
        """The folder, or the URI of a published catalog."""
        return self._store.location

    @property
    def root(self) -> Path:
        """The local folder of the catalog (for a URI: its cached snapshot)."""
        return self._store.root

    @property
    def store(self) -> _Store:
        """The storage layer under this facade (connections, sessions), for the library's own stages."""
        return self._store

    def _writable(self) -> _Store:
        """The store, refusing at once (before any work) when this is a published read-only catalog."""
        if self._store.published:
            self._store.refuse_write()
        return self._store

    # -- set-up and ingest ------------------------------------------------------------------
    def init(self, data_root: str | None = None) -> str:
        """Create the catalog; `data_root` (s3://BUCKET/PREFIX) keeps its Parquet on object storage.
        Returns where the data lives."""
        return self._writable().init(data_root).location

    def ingest(self, source: str, **options):
        """Ingest one source (keywords as `ingest_many`'s); an IngestResult, or a list of them when
        `source` is a pattern naming several models. Raises CatalogError when a source fails."""
        from kernel_catalog.ingest import IngestFailure

        outcomes = self.ingest_many([source], **options)
        for outcome in outcomes:
            if isinstance(outcome, IngestFailure):
                raise CatalogError(outcome.message)
        return outcomes[0] if len(outcomes) == 1 else outcomes

    def ingest_many(self, sources: Iterable[str], *, adapter: str | None = None,
                    checkpoint: str | os.PathLike | None = None, name: str | None = None,
                    random_init: bool = False, reparam: bool = False, include: Iterable[str] = (),
                    exclude: Iterable[str] = (), seed: int = DEFAULT_SEED, replace: bool = False,
                    jobs: int = DEFAULT_JOBS, evict: bool = False, full_download: bool = False,
                    wait: float | None = None, ray: str | None = None, on_result: Callable | None = None,
                    progress: bool = False) -> list:
        """Sources (timm names, 'convnext*' patterns, hf:ORG/REPO, files); one failure does not stop
        the others; `replace` replaces a model already in the catalog. Published weights download
        on `jobs` threads while earlier models are read: from safetensors only the depthwise
        tensors' byte ranges, unless `full_download`; `evict` deletes each model's downloaded files
        once committed; `ray` (an address, 'auto' or 'local') fans the sources out as Ray tasks. Returns IngestResult / IngestFailure per source."""
        from kernel_catalog.ingest import ingest_many, ingest_ray

        if checkpoint and not Path(checkpoint).is_file():
            raise CatalogError(f"checkpoint {checkpoint}: no such file")
        options = IngestOptions(checkpoint=Path(checkpoint) if checkpoint else None, name=name,
                                random_init=random_init, reparam=reparam, include=tuple(include),
                                exclude=tuple(exclude), seed=seed, full_download=full_download)
        store = self._writable()
        if ray:
            return ingest_ray(store, list(sources), ray, options, adapter, replace, wait, on_result=on_result,
                              evict=evict)
        return ingest_many(store, list(sources), options, adapter, replace, wait, on_result=on_result,
                           progress=progress, jobs=jobs, evict=evict)

    # -- looking ------------------------------------------------------------------------------
    def sql(self, query: str, params: list | None = None, *, allow: Iterable[str] = (),
            wait: float = READ_WAIT) -> pa.Table:
        """A read-only query; it reads the catalog's files and the files or folders in `allow`
        (yours, named by you), nothing else. Returns a pyarrow.Table."""
        return self._store.sql(query, params, allow=tuple(str(path) for path in allow), wait=wait)

    @contextmanager
    def reader(self, wait: float = READ_WAIT) -> Iterator:
        """A read-only DuckDB connection with every view (it reads only the catalog's files)."""
        with self._store.reader(wait=wait) as con:
            yield con

    def sqlalchemy_engine(self):
        """A read-only SQLAlchemy engine (duckdb-engine); `engine.dispose()` when done."""
        return self._store.sqlalchemy_engine()

    def models(self) -> pa.Table:
        """The models in the catalog."""
        from kernel_catalog.store.query import list_models

        return list_models(self._store)

    def layers(self, model: str) -> pa.Table:
        """The depthwise layers of `model` with their metadata."""
        from kernel_catalog.store.query import list_layers

        return list_layers(self._store, model)

    @staticmethod
    def adapters() -> pa.Table:
        """The installed adapter plugins with their versions."""
        from kernel_catalog.adapters import adapters_table

        return pa.Table.from_pylist(adapters_table())

    def runs(self) -> pa.Table:
        """The analysis runs with their parameters and metrics."""
        from kernel_catalog.analysis.runs import list_runs

        return list_runs(self._store)

    def delete_run(self, run: str) -> int:
        """Remove exactly this run's rows and result files; returns how many files."""
        from kernel_catalog.analysis.runs import delete_run

        return delete_run(self._writable(), run)

    def verify(self, repair: bool = False):
        """fsck: schema, markers, each data file's size and SHA-256, strays; `repair` removes the
        strays the catalog owns. Returns a VerifyReport (`.clean`, `.lines()`)."""
        from kernel_catalog.store.verify import verify

        return verify(self._writable() if repair else self._store, repair=repair)

    # -- the analysis -------------------------------------------------------------------------
    def embed(self, run: str, where: str | None = None, *, from_model: str | None = None, replace: bool = False,
              ray: str | None = None, echo: Callable[[str], None] = _quiet, progress: bool = False,
              **params) -> RunResult:
        """Train the autoencoders and store every kernel's embedding; **params are EmbedParams
        fields (latent_dim, device, epochs, batch_size, seed, threads, preprocess, thresholds,
        null_model, threshold_rule, alpha, per_model, cross_fit) with EmbedParams' defaults."""
        from kernel_catalog.analysis.embed import embed

        metrics = embed(self._writable(), run, where, _params(EmbedParams, params), from_model=from_model,
                        replace=replace, echo=echo, ray=ray, progress=progress)
        return RunResult(run, "embed", metrics, self.warnings(run))

    def cluster(self, run: str, from_run: str, *, replace: bool = False, ray: str | None = None,
                echo: Callable[[str], None] = _quiet, **params) -> RunResult:
        """Cluster an embed run per kernel size and name the clusters; **params are ClusterParams
        fields (k, k_max, space, method, seed, templates, name_threshold, threads)."""
        from kernel_catalog.analysis.cluster import cluster_run

        metrics = cluster_run(self._writable(), run, from_run, _params(ClusterParams, params), replace=replace,
                              echo=echo, ray=ray)
        return RunResult(run, "cluster", metrics, self.warnings(run))

    def identify(self, run: str, *, templates: str = ClusterParams.templates,
                 name_threshold: float = ClusterParams.name_threshold,
                 echo: Callable[[str], None] = _quiet) -> RunResult:
        """(Re)name the clusters and kernels of a cluster run against template families."""
        from kernel_catalog.analysis.cluster import identify

        metrics = identify(self._writable(), run, templates, name_threshold, echo=echo)
        return RunResult(run, "cluster", metrics, self.warnings(run))

    def analyze(self, preset: str = DEFAULT_PRESET, run: str | None = None, where: str | None = None, *,
                device: str = EmbedParams.device, epochs: int | None = EmbedParams.epochs,
                seed: int = DEFAULT_SEED, threads: int | None = EmbedParams.threads,
                per_model: bool = EmbedParams.per_model, cross_fit: int | None = EmbedParams.cross_fit,
                replace: bool = False, echo: Callable[[str], None] = _quiet, progress: bool = False) -> RunResult:
        """Embed, cluster and name with a preset protocol (`paper` by default, as `catalog analyze`);
        the result's `table` is Table 1 (classified % against the null), `warnings` what to read
        it with."""
        from kernel_catalog.analysis.analyze import analyze
        from kernel_catalog.analysis.runs import require_run

        name = analyze(self._writable(), preset, run, where, device=device, epochs=epochs, seed=seed,
                       threads=threads, replace=replace, echo=echo, progress=progress, per_model=per_model,
                       cross_fit=cross_fit)
        return RunResult(name, "cluster", require_run(self._store, name).metrics, self.warnings(name),
                         self.report(name))

    def warnings(self, run: str) -> list[str]:
        """What to read a run's numbers with: its seed stability per size (cluster runs), the sizes
        scored held out (cross-fitted) and those whose classified % is no verdict (too few kernels
        in sample, an over-classified null)."""
        from kernel_catalog.analysis.runs import require_run
        from kernel_catalog.report.report import held_out_lines, seed_stability_lines, verdict_warnings

        return (seed_stability_lines(require_run(self._store, run)) + held_out_lines(self._store, run)
                + verdict_warnings(self._store, run))

    # -- CNN Filter DB's measures and kernel search ---------------------------------------------
    def drift(self, a: str | None = None, b: str | None = None, *, by: str | None = None,
              where: str | None = None, components: int = DEFAULT_COMPONENTS, bins: int = DEFAULT_BINS,
              figure: str | os.PathLike | None = None, force: bool = False) -> pa.Table:
        """Drift between selections `a` and `b` (SQL over kernels), or of every pair `by` model or
        layer (with an optional heatmap `figure`, replaced only with `force`)."""
        from kernel_catalog.analysis import search

        if by is None:
            if not (a and b) or where or figure:
                raise CatalogError("drift: give both selections a and b (--a, --b), or by=model|layer (--by) "
                                   "with an optional where and figure")
            return search.drift_table(self._store, a, b, components, bins)
        if a or b:
            raise CatalogError("drift: by (--by) compares every pair of one selection; leave out a and b")
        if figure is not None:
            from kernel_catalog.report.figures import check_output

            check_output(figure, force=force)
        table = search.drift_by(self._store, by, where, components, bins)
        if figure is not None:
            from kernel_catalog.report.filterdb_figures import figure_drift_heatmap

            figure_drift_heatmap(table.to_pylist(), figure, title=f"Drift between {by}s", force=force)
        return table

    def nearest(self, *, kernel: int | None = None, template: str | None = None,
                npy: str | os.PathLike | None = None, limit: int = DEFAULT_NEAREST, where: str | None = None,
                signless: bool = False, templates: str = ClusterParams.templates,
                size: str | None = None) -> pa.Table:
        """The `limit` kernels most like one query (exactly one of kernel / template / npy), highest
        first; a template query is of `size` (default DEFAULT_SIZE, 7x7)."""
        from kernel_catalog.analysis.search import nearest

        return nearest(self._store, kernel=kernel, template=template, npy=None if npy is None else str(npy),
                       k=limit, where=where, signless=signless, templates=templates, size=size)

    # -- what people look at -------------------------------------------------------------------
    def report(self, run: str, by: str = DEFAULT_GROUPING, classified_only: bool = False) -> pa.Table:
        """A run as a table: by model (Table 1), layer, depth, kernel_size or cluster."""
        from kernel_catalog.report.report import report

        return report(self._store, run, by, classified_only)

    def figure(self, kind: str, output: str | os.PathLike, *, force: bool = False, **options):
        """Draw one figure (`kernels`, `clusters`, `layers`, `classified`, `layer-profile`) to a
        .png/.pdf/.svg file (an existing one only with `force`); options as that kind takes them
        (e.g. run=, model=, where=)."""
        from kernel_catalog.report.figures import draw_figure

        return draw_figure(self._store, kind, output, force=force, **options)

    def gallery(self, run: str, output: str | os.PathLike, *, force: bool = False, seed: int = DEFAULT_SEED,
                echo: Callable[[str], None] = _quiet) -> dict:
        """A static HTML gallery of a cluster run; `force` replaces only a gallery this tool wrote."""
        from kernel_catalog.report.gallery import write_gallery

        return write_gallery(self._store, run, output, force=force, seed=seed, echo=echo)

    def export(self, output: str | os.PathLike, *, query: str | None = None, where: str | None = None,
               fmt: str | None = None, force: bool = False, batch_rows: int = DEFAULT_BATCH_ROWS,
               wait: float = READ_WAIT, progress: bool = False):
        """Write a selection with its provenance manifest (Parquet, CSV or NPZ by the suffix or `fmt`)."""
        from kernel_catalog.export.export import export

        return export(self._store, output, query=query, where=where, fmt=fmt, force=force, batch_rows=batch_rows,
                      wait=wait, progress=progress)

    def publish(self, dest: str | os.PathLike, *, where: str | None = None, runs: Iterable[str] = (),
                wait: float = READ_WAIT):
        """Publish the layers with a kernel matching `where` (default: all) and the runs named (with
        the runs they read) as a self-contained read-only catalog at `dest`: a folder, s3://BUCKET/PREFIX
        or hf://datasets/ORG/NAME (one commit). Only what changed is uploaded; returns a PublishResult
        (uploaded, skipped, deleted, bytes, commit)."""
        from kernel_catalog.store.publish import publish

        return publish(self._store, dest, where=where, runs=tuple(runs), wait=wait)

    def demo(self, cache: str | os.PathLike | None = None, figures: str | os.PathLike | None = None,
             echo: Callable[[str], None] = _quiet) -> dict[str, pa.Table]:
        """Real trained kernels (PaddleOCR ONNX models from PyPI wheels) and a timm reference, the
        paper's analysis and its figures (default <catalog>/figures); returns the result tables.
        `cache`: where downloaded files are kept (default: $KERNEL_CATALOG_CACHE or ~/.cache/kernel-catalog)."""
        from kernel_catalog.demo.demo import run_demo
        from kernel_catalog.store.datafs import cache_dir

        return run_demo(self._writable(), Path(cache) if cache else cache_dir(), echo=echo,
                        figures_dir=Path(figures) if figures else None)


def _params(cls, given: dict):
    """EmbedParams / ClusterParams from keywords, naming an unknown one in words for both interfaces."""
    from dataclasses import fields

    known = {f.name for f in fields(cls)}
    unknown = sorted(set(given) - known)
    if unknown:
        raise CatalogError(f"unknown parameter {', '.join(unknown)}; {cls.__name__} takes {', '.join(sorted(known))}")
    return cls(**given)


def open(location: str | os.PathLike | None = None) -> Catalog:   # noqa: A001 - kc.open reads well
    """The catalog at `location` (a folder; s3://... or another URI: a published one, read-only);
    default: $KERNEL_CATALOG or ./kernel-catalog. Nothing is created until the first write."""
    return Catalog(location)
