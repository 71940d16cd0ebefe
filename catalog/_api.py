"""The notebook API: one `Catalog` object whose methods are the CLI's commands, same words.

    import kernel_catalog as kc
    cat = kc.open("kernel-catalog")
    cat.ingest("mixnet_s", random_init=True)
    cat.sql("SELECT model, kh, count(*) FROM kernels GROUP BY ALL")   # a pyarrow.Table

Each method is one call into the stage that does the work (ingest, analysis, report, export);
heavy stages (torch, matplotlib) are imported on first use, so opening a catalog stays cheap.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterable

import pyarrow as pa

from kernel_catalog.adapters.base import IngestOptions
from kernel_catalog.store import Catalog as _StoreCatalog

__all__ = ["Catalog", "open"]


def _options(checkpoint, name, random_init, reparam, include, exclude, seed) -> IngestOptions:
    return IngestOptions(checkpoint=Path(checkpoint) if checkpoint else None, name=name,
                         random_init=random_init, reparam=reparam, include=tuple(include),
                         exclude=tuple(exclude), seed=seed)


class Catalog(_StoreCatalog):
    """A catalog folder with the whole workflow as methods (see the README's Python API)."""

    # -- ingest -----------------------------------------------------------------------------
    def ingest(self, source: str, *, adapter: str | None = None, checkpoint: str | os.PathLike | None = None,
               name: str | None = None, random_init: bool = False, reparam: bool = False,
               include: Iterable[str] = (), exclude: Iterable[str] = (), seed: int = 0,
               force: bool = False, wait: float | None = None):
        """Ingest one source (timm name, file); keywords as `catalog ingest`'s flags. Returns an IngestResult."""
        from kernel_catalog.ingest import ingest

        options = _options(checkpoint, name, random_init, reparam, include, exclude, seed)
        return ingest(self, source, options, adapter=adapter, force=force, wait=wait)

    def ingest_many(self, sources: Iterable[str], *, adapter: str | None = None,
                    checkpoint: str | os.PathLike | None = None, name: str | None = None,
                    random_init: bool = False, reparam: bool = False, include: Iterable[str] = (),
                    exclude: Iterable[str] = (), seed: int = 0, force: bool = False,
                    wait: float | None = None, on_result: Callable | None = None, progress: bool = False,
                    jobs: int = 2, evict: bool = False) -> list:
        """Several sources and fnmatch patterns ('convnext*'); one failure does not stop the others.

        Published weights download on `jobs` threads while earlier models are read; `evict` deletes
        each model's downloaded files from the cache once its kernels are committed."""
        from kernel_catalog.ingest import ingest_many

        options = _options(checkpoint, name, random_init, reparam, include, exclude, seed)
        return ingest_many(self, list(sources), options, adapter, force, wait, on_result=on_result,
                           progress=progress, jobs=jobs, evict=evict)

    # -- looking -----------------------------------------------------------------------------
    def models(self) -> pa.Table:
        from kernel_catalog.store.query import list_models

        return list_models(self)

    def layers(self, model: str) -> pa.Table:
        from kernel_catalog.store.query import list_layers

        return list_layers(self, model)

    def runs(self) -> pa.Table:
        from kernel_catalog.analysis.runs import list_runs

        return list_runs(self)

    # -- the analysis --------------------------------------------------------------------------
    def embed(self, run: str, where: str | None = None, *, replace: bool = False,
              from_model: str | None = None, progress: bool = True, **params):
        """Train the autoencoders and store embeddings; **params are EmbedParams fields (latent_dim, ...)."""
        from kernel_catalog.analysis.embed import embed
        from kernel_catalog.analysis.params import EmbedParams

        return embed(self, run, where, EmbedParams(**params), from_model=from_model, replace=replace,
                     progress=progress)

    def cluster(self, run: str, from_run: str, *, replace: bool = False, **params):
        """Cluster an embed run; **params are ClusterParams fields (k, space, method, seed, ...)."""
        from kernel_catalog.analysis.cluster import cluster_run
        from kernel_catalog.analysis.params import ClusterParams

        return cluster_run(self, run, from_run, ClusterParams(**params), replace=replace)

    def identify(self, run: str, templates: str = "builtin", **kwargs):
        from kernel_catalog.analysis.cluster import identify

        return identify(self, run, templates, **kwargs)

    def analyze(self, preset: str = "default", run: str | None = None, where: str | None = None,
                **kwargs) -> pa.Table:
        """Embed, cluster and name with a preset protocol; returns Table 1."""
        from kernel_catalog.analysis.analyze import analyze

        return self.report(analyze(self, preset, run, where, **kwargs), "model")

    def delete_run(self, run: str) -> int:
        from kernel_catalog.analysis.runs import delete_run

        return delete_run(self, run)

    # -- CNN Filter DB's measures and kernel search ---------------------------------------------
    def drift(self, a: str | None = None, b: str | None = None, *, by: str | None = None,
              where: str | None = None, components: int = 6, bins: int = 32,
              figure: str | os.PathLike | None = None, force: bool = False) -> pa.Table:
        """Drift between selections `a` and `b` (SQL over kernels), or of every pair `by` model/layer
        (with an optional heatmap `figure`); see `kernel_catalog.analysis.drift`."""
        from kernel_catalog.analysis import search as d
        from kernel_catalog.errors import CatalogError

        if by is None:
            if not (a and b) or where or figure:
                raise CatalogError("give --a SQL and --b SQL, or --by model [--where SQL] [--figure FILE]")
            return d.drift_table(self, a, b, components, bins)
        if a or b:
            raise CatalogError("--by compares every pair of a --where selection; leave out --a/--b")
        if figure is not None:
            from kernel_catalog.report.figures import check_output

            check_output(figure, force=force)
        table = d.drift_by(self, by, where, components, bins)
        if figure is not None:
            from kernel_catalog.report.filterdb_figures import figure_drift_heatmap

            figure_drift_heatmap(table.to_pylist(), figure, title=f"Drift between {by}s", force=force)
        return table

    def nearest(self, *, kernel: int | None = None, template: str | None = None,
                npy: str | os.PathLike | None = None, k: int = 10, where: str | None = None,
                signless: bool = False, templates: str = "builtin", size: str | None = None) -> pa.Table:
        """The k kernels most like one query (exactly one of kernel / template / npy), highest cosine first."""
        from kernel_catalog.analysis.search import nearest

        return nearest(self, kernel=kernel, template=template, npy=None if npy is None else str(npy), k=k,
                       where=where, signless=signless, templates=templates, size=size)

    # -- what people look at -------------------------------------------------------------------
    def report(self, run: str, by: str = "model", classified_only: bool = False) -> pa.Table:
        from kernel_catalog.report.report import report

        return report(self, run, by, classified_only)

    def figure(self, kind: str, output: str | os.PathLike, **kwargs):
        """Draw a figure (`kernels`, `clusters`, `layers`, `classified`) to a .png/.pdf/.svg file."""
        from kernel_catalog.report import figures

        return figures.draw_figure(self, kind, output, **kwargs)

    def gallery(self, run: str, output: str | os.PathLike, **kwargs) -> dict:
        from kernel_catalog.report.gallery import write_gallery

        return write_gallery(self, run, output, **kwargs)

    def export(self, output: str | os.PathLike, *, query: str | None = None, where: str | None = None,
               fmt: str | None = None, force: bool = False, **kwargs):
        """Write a selection with its provenance manifest (Parquet, CSV or NPZ by the suffix)."""
        from kernel_catalog.export.export import export

        return export(self, output, query=query, where=where, fmt=fmt, force=force, **kwargs)


    def verify(self, repair: bool = False):
        """fsck: schema, markers, each data file's size and SHA-256, strays; `repair` removes the
        strays the catalog owns. Returns a VerifyReport (`.clean`, `.lines()`)."""
        from kernel_catalog.store.verify import verify

        if repair and self.uri:
            self.refuse_write()
        return verify(self, repair=repair)


def open(path: str | os.PathLike | None = None) -> Catalog:   # noqa: A001 - kc.open reads well
    """The catalog at `path` (default: $KERNEL_CATALOG or ./kernel-catalog); created on first write."""
    return Catalog(path)
