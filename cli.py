"""The `catalog` command: parses arguments and calls the library (kernel_catalog.*), nothing more.

Choices and defaults come from the library's own constants (light modules: parsing options
imports neither torch nor matplotlib); options several commands share are defined once below.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from kernel_catalog.analysis.params import (
    CLUSTER_METHODS, DEVICES, PREPROCESS_METHODS, PRESETS, SPACES, THRESHOLD_RULES, ClusterParams, EmbedParams,
)
from kernel_catalog.analysis.search import BY as DRIFT_BY, DEFAULT_BINS as DRIFT_BINS, DEFAULT_COMPONENTS as DRIFT_COMPONENTS
from kernel_catalog.analysis.search import DEFAULT_K as NEAREST_K, DEFAULT_SIZE as NEAREST_SIZE
from kernel_catalog.errors import CatalogError
from kernel_catalog.export.export import DEFAULT_BATCH_ROWS, FORMATS as EXPORT_FORMATS
from kernel_catalog.report import DEFAULT_LIMIT, GROUPINGS, SCALES, SORT_KEYS
from kernel_catalog.store import DEFAULT_ROOT, ROOT_ENV
from kernel_catalog.store.output import FORMATS as OUTPUT_FORMATS

READ_WAIT = 10.0   # seconds a reader waits while a writer commits


def _remember_force(ctx: click.Context, param, value: bool) -> bool:
    ctx.meta["force_output"] = value
    return value


def force_output_option(command):
    """--force: overwrite an existing -o FILE (the one -o rule, store.targets); read by `_force()`."""
    return click.option("--force", "force_output", is_flag=True, expose_value=False, callback=_remember_force,
                        help="Overwrite -o FILE if it exists.")(command)


def _force() -> bool:
    return click.get_current_context().meta.get("force_output", False)


def output_options(command):
    """Shared --format / -o / --force options for every command that prints rows (as sqlite-utils does)."""
    command = force_output_option(command)
    command = click.option("-o", "--output", "output", type=click.Path(dir_okay=False),
                           help="Write to FILE (format from its suffix unless --format); an existing FILE "
                                "needs --force.")(command)
    command = click.option("--format", "fmt", type=click.Choice(OUTPUT_FORMATS),
                           help="Output format (default: table on the terminal).")(command)
    return command


def where_option(help: str = "SQL condition over the kernels view (default: all kernels)."):
    return click.option("--where", default=None, help=help)


def run_option(help: str, required: bool = True):
    # no explicit default: click (>= 8.3) treats `default=None` as given and skips `required`
    return click.option("--run", "run", required=required, help=help)


def wait_option(default: float | None = READ_WAIT, help: str = "Seconds to wait while a writer commits."):
    return click.option("--wait", type=float, default=default, show_default=default is not None, help=help)


def figure_output_option(command):
    command = force_output_option(command)
    return click.option("-o", "--output", required=True,
                        help="Figure file: .png, .pdf or .svg (an existing one needs --force).")(command)


def replace_option(command):
    return click.option("--replace", is_flag=True, help="Overwrite a run of the same name.")(command)


def device_option(command):
    return click.option("--device", type=click.Choice(DEVICES), default=EmbedParams.device, show_default=True,
                        help="auto: CUDA when torch sees a GPU, else CPU.")(command)


def threads_option(command):
    return click.option("--threads", type=int, default=None,
                        help="Cap CPU threads (default: every core this process may use).")(command)


def cross_fit_option(command):
    return click.option("--cross-fit", type=int, default=EmbedParams.cross_fit, show_default=True, metavar="FOLDS",
                        help="Score each kernel (and null kernel) by an autoencoder trained on the other folds: "
                             "held-out classified % for small selections, which are otherwise memorised (0: off)."
                        )(command)


def per_model_option(command):
    return click.option("--per-model", is_flag=True,
                        help="One autoencoder (and null model) per model and kernel size instead of one per size.")(command)


def ray_option(command):
    """--ray ADDRESS: run the heavy part on Ray (README, "Beyond one machine")."""
    return click.option("--ray", "ray_address", default=None, metavar="ADDRESS",
                        help="Run on Ray: 'local' starts a local instance, 'auto' or ray://HOST:PORT joins a cluster "
                             "(needs kernel-catalog[cluster]).")(command)


def show(table, fmt: str | None, output: str | None) -> None:
    from kernel_catalog.store.output import format_for, write_rows

    write_rows(table, format_for(output, fmt), output, sys.stdout, force=_force())
    if output:
        click.echo(f"wrote {table.num_rows} rows to {output}", err=True)


# Commands that write: on a published catalog (--catalog s3://...) they stop before any work.
WRITE_COMMANDS = {"init", "ingest", "embed", "cluster", "identify", "analyze", "demo", "delete"}   # (verify --repair: in verify)


def open_catalog(ctx: click.Context):
    from kernel_catalog import open as open_kc

    catalog = open_kc(ctx.obj["catalog"])
    if catalog.uri and ctx.command.name in WRITE_COMMANDS:
        catalog.refuse_write()
    return catalog


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--catalog", "catalog_dir", envvar=ROOT_ENV, default=DEFAULT_ROOT,
              show_default=True, type=click.Path(file_okay=False),
              help="Catalog folder (env KERNEL_CATALOG); created on first write. s3://BUCKET/PREFIX: a published "
                   "catalog, read-only.")
@click.version_option(package_name="kernel-catalog")
@click.pass_context
def cli(ctx: click.Context, catalog_dir: str) -> None:
    """A catalog of trained depthwise convolution kernels: ingest, query with SQL, analyse."""
    ctx.obj = {"catalog": catalog_dir}


@cli.command()
@click.option("--data-root", default=None, metavar="URI",
              help="Keep the kernel and result Parquet under this URI (s3://BUCKET/PREFIX); default: the catalog folder.")
@click.pass_context
def init(ctx, data_root):
    """Create the catalog (a local one, as the first write does, or one whose data lives on object storage)."""
    data = open_catalog(ctx).init(data_root)
    click.echo(f"catalog {ctx.obj['catalog']}: data in {data.location}")


@cli.command()
@click.argument("sources", nargs=-1, required=True)
@click.option("--adapter", help="Use this adapter instead of choosing by source (see `catalog adapters`).")
@click.option("--checkpoint", type=click.Path(dir_okay=False), help="Weights file for an architecture name (timm).")
@click.option("--name", help="Model name to record (default: the timm name, or the file name without extension).")
@click.option("--random-init", is_flag=True, help="Build the architecture with random weights (recorded as trained=false).")
@click.option("--reparam", is_flag=True, help="Fuse reparameterisable blocks (MobileOne, FastViT, ...) before extraction.")
@click.option("--include", multiple=True, help="Keep only layers/tensors matching this fnmatch pattern (repeatable).")
@click.option("--exclude", multiple=True, help="Drop layers/tensors matching this fnmatch pattern (repeatable).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for --random-init.")
@click.option("--force", is_flag=True, help="Replace a model already in the catalog.")
@click.option("--jobs", type=click.IntRange(min=1), default=2, show_default=True,
              help="Published weights downloaded in parallel (while earlier models are read).")
@click.option("--evict", is_flag=True, help="Delete downloaded weights from the cache once their kernels are committed.")
@wait_option(None, "Wait up to SECONDS for another writer to finish.")
@ray_option
@click.pass_context
def ingest(ctx, sources, adapter, checkpoint, name, random_init, reparam, include, exclude, seed, force, jobs, evict,
           wait, ray_address):
    """Ingest depthwise kernels from timm names (published weights), patterns ('convnext*'), hf:ORG/REPO,
    checkpoints, ONNX or TFLite files."""
    from kernel_catalog.adapters.base import IngestOptions
    from kernel_catalog.ingest import IngestFailure, ingest_many, summary

    if checkpoint and not Path(checkpoint).is_file():
        raise CatalogError(f"--checkpoint {checkpoint}: no such file")
    options = IngestOptions(checkpoint=Path(checkpoint) if checkpoint else None, name=name,
                            random_init=random_init, include=include, exclude=exclude,
                            reparam=reparam, seed=seed)

    def report(outcome):
        if isinstance(outcome, IngestFailure):
            click.echo(f"Error: {outcome.message}", err=True)
            return
        sizes = f", {outcome.n_nonfinite} with NaN/Inf (flagged)" if outcome.n_nonfinite else ""
        click.echo(f"{outcome.action} {outcome.model}: {outcome.n_layers} layers, {outcome.n_kernels} kernels"
                   f"{sizes} [{outcome.adapter}, sha256 {outcome.checkpoint_sha256[:12]}, {outcome.seconds:.2f}s"
                   + (f", download {outcome.download_seconds:.2f}s" if outcome.download_seconds else "") + "]")

    if ray_address:
        from kernel_catalog.ingest import ingest_ray

        outcomes = ingest_ray(open_catalog(ctx), list(sources), ray_address, options, adapter, force, wait,
                              on_result=report, evict=evict)
    else:
        outcomes = ingest_many(open_catalog(ctx), list(sources), options, adapter, force, wait,
                               on_result=report, progress=True, jobs=jobs, evict=evict)
    counts = summary(outcomes)
    if len(outcomes) > 1:
        click.echo("summary: " + ", ".join(f"{counts[k]} {k}" for k in ("added", "replaced", "unchanged", "failed")),
                   err=True)
        for source, message in counts["failures"]:
            click.echo(f"  failed {source}: {message}", err=True)
    if counts["failed"]:
        sys.exit(1)


@cli.command()
@click.argument("query")
@click.option("--allow", multiple=True, type=click.Path(exists=True), metavar="PATH",
              help="A file or folder of yours that QUERY may read (repeatable); by default it reads only the catalog.")
@output_options
@wait_option()
@click.pass_context
def sql(ctx, query, allow, fmt, output, wait):
    """Run a read-only SQL QUERY over the views (kernels, models, layers, ...)."""
    show(open_catalog(ctx).sql(query, allow=allow, wait=wait), fmt, output)


@cli.command()
@output_options
@click.pass_context
def models(ctx, fmt, output):
    """List the models in the catalog."""
    from kernel_catalog.store.query import list_models

    show(list_models(open_catalog(ctx)), fmt, output)


@cli.command()
@click.argument("model")
@output_options
@click.pass_context
def layers(ctx, model, fmt, output):
    """List the depthwise layers of MODEL with their metadata."""
    from kernel_catalog.store.query import list_layers

    show(list_layers(open_catalog(ctx), model), fmt, output)


@cli.command()
@output_options
def adapters(fmt, output):
    """List the installed adapter plugins with their versions."""
    import pyarrow as pa

    from kernel_catalog.adapters import adapters_table

    show(pa.Table.from_pylist(adapters_table()), fmt, output)


@cli.command()
@click.option("--query", default=None, help="SQL over the views selecting the rows to export.")
@where_option("Condition over the kernels view (SELECT * FROM kernels WHERE ...).")
@click.option("--format", "fmt", type=click.Choice(EXPORT_FORMATS), default=None,
              help="Default: from the -o suffix.")
@click.option("-o", "--output", "output", default=None, help="File to write; a FILE.manifest.json is written beside it.")
@click.option("--force", is_flag=True, help="Overwrite FILE (and its manifest) if it exists.")
@click.option("--batch-rows", type=int, default=DEFAULT_BATCH_ROWS, show_default=True,
              help="Rows per streamed batch (bounds memory).")
@wait_option()
@click.pass_context
def export(ctx, query, where, fmt, output, force, batch_rows, wait):
    """Export a selection to Parquet, CSV or NPZ (streamed, atomic) with a reproducibility manifest."""
    from kernel_catalog.export.export import export as run_export

    result = run_export(open_catalog(ctx), output, query=query, where=where, fmt=fmt, force=force,
                        batch_rows=batch_rows, wait=wait)
    click.echo(f"wrote {result.row_count} rows to {result.path} ({result.format}); manifest {result.manifest_path}",
               err=True)


def _thresholds(values: tuple[str, ...]) -> dict[str, float]:
    """--threshold 7x7=0.3 (repeatable) -> {"7x7": 0.3}."""
    parsed = {}
    for value in values:
        size, _, number = value.partition("=")
        try:
            parsed[size.strip()] = float(number)
        except ValueError:
            raise CatalogError(f"--threshold {value}: expected SIZE=VALUE, e.g. 3x3=0.1") from None
    return parsed


def _echo(line: str) -> None:
    click.echo(line, err=True)


@cli.command()
@run_option("Name of the new embedding run.")
@where_option()
@click.option("--latent-dim", type=int, default=EmbedParams.latent_dim, show_default=True,
              help="Autoencoder latent size (the follow-up work used 1).")
@device_option
@click.option("--epochs", type=int, default=None, help="Training epochs (default: enough for 3000 steps, 10..2000).")
@click.option("--batch-size", type=int, default=EmbedParams.batch_size, show_default=True)
@click.option("--seed", type=int, default=EmbedParams.seed, show_default=True)
@threads_option
@click.option("--preprocess", type=click.Choice(PREPROCESS_METHODS), default=EmbedParams.preprocess, show_default=True)
@click.option("--threshold", "thresholds", multiple=True, help="Classified threshold per size, e.g. 3x3=0.1 (repeatable).")
@click.option("--no-null", is_flag=True, help="Skip the iid Gaussian control (reports then show no null %).")
@click.option("--threshold-rule", type=click.Choice(THRESHOLD_RULES), default=EmbedParams.threshold_rule,
              show_default=True, help="published: the paper's 7x7/5x5 thresholds, calibrated on the null elsewhere.")
@click.option("--alpha", type=float, default=EmbedParams.alpha, show_default=True,
              help="Calibrated thresholds: the null is classified at most this often.")
@per_model_option
@cross_fit_option
@click.option("--from-model", default=None, help="Reuse the autoencoders of this embed run (no training).")
@replace_option
@ray_option
@click.pass_context
def embed(ctx, run, where, latent_dim, device, epochs, batch_size, seed, threads, preprocess, thresholds, no_null,
          threshold_rule, alpha, per_model, cross_fit, from_model, replace, ray_address):
    """Train an autoencoder per kernel size and store every kernel's embedding."""
    from kernel_catalog.analysis.embed import embed as run_embed

    params = EmbedParams(latent_dim=latent_dim, epochs=epochs, batch_size=batch_size, seed=seed, device=device, threads=threads,
                         preprocess=preprocess, thresholds=_thresholds(thresholds), null_model=not no_null,
                         threshold_rule=threshold_rule, alpha=alpha, per_model=per_model, cross_fit=cross_fit)
    run_embed(open_catalog(ctx), run, where, params, from_model=from_model, replace=replace, echo=_echo,
              ray=ray_address)
    click.echo(f"embed run {run} stored; see `catalog report {run}`")


def _cluster_params(k, k_max, space, method, seed, templates, name_threshold, threads):
    if k != "auto":
        try:
            k = int(k)
        except ValueError:
            raise CatalogError(f"--k {k}: give a positive integer or 'auto'") from None
    return ClusterParams(k=k, k_max=k_max, space=space, method=method, seed=seed, templates=templates,
                         name_threshold=name_threshold, threads=threads)


templates_option = click.option("--templates", default=ClusterParams.templates, show_default=True,
                                help="builtin, a template FILE, or builtin+FILE.")
name_threshold_option = click.option("--name-threshold", type=float, default=ClusterParams.name_threshold,
                                     show_default=True,
                                     help="Minimum cosine of a cluster mean to its best template; below it: 'unmatched'.")


def cluster_options(command):
    for option in reversed([
        click.option("--k", default=str(ClusterParams.k), show_default=True,
                     help="Clusters per kernel size, or 'auto' (best silhouette over 2..--k-max on a 5000-row sample)."),
        click.option("--k-max", type=int, default=ClusterParams.k_max, show_default=True),
        click.option("--space", type=click.Choice(SPACES), default=ClusterParams.space, show_default=True,
                     help="Cluster the preprocessed kernels (default: best on planted banks), the autoencoder's "
                          "unit-normalised reconstructions (the paper preset) or raw latent z."),
        click.option("--method", type=click.Choice(CLUSTER_METHODS), default=ClusterParams.method, show_default=True),
        click.option("--seed", type=int, default=ClusterParams.seed, show_default=True),
        templates_option,
        name_threshold_option,
        threads_option,
    ]):
        command = option(command)
    return command


@cli.command()
@run_option("Name of the new cluster run.")
@click.option("--from", "from_run", required=True, help="The embed run to cluster.")
@cluster_options
@replace_option
@ray_option
@click.pass_context
def cluster(ctx, run, from_run, k, k_max, space, method, seed, templates, name_threshold, threads, replace,
            ray_address):
    """Cluster an embed run per kernel size and name the clusters by template matching."""
    from kernel_catalog.analysis.cluster import cluster_run

    params = _cluster_params(k, k_max, space, method, seed, templates, name_threshold, threads)
    cluster_run(open_catalog(ctx), run, from_run, params, replace=replace, echo=_echo, ray=ray_address)
    click.echo(f"cluster run {run} stored; see `catalog report {run} --by layer`")


@cli.command()
@run_option("The cluster run to (re)name.")
@templates_option
@name_threshold_option
@click.pass_context
def identify(ctx, run, templates, name_threshold):
    """Name the clusters and kernels of a cluster run against template families."""
    from kernel_catalog.analysis.cluster import identify as run_identify

    run_identify(open_catalog(ctx), run, templates, name_threshold, echo=_echo)
    click.echo(f"cluster run {run} renamed with templates {templates}")


@cli.command()
@click.option("--preset", type=click.Choice(tuple(PRESETS)), default="paper", show_default=True,
              help="paper: latent 1, k 10, thresholds 7x7 0.3 / 5x5 0.2; default: latent 2, k 10.")
@run_option("Cluster run name (default: the preset's name); the embed run gets '<run>-ae'.", required=False)
@where_option()
@device_option
@click.option("--epochs", type=int, default=None)
@click.option("--seed", type=int, default=0, show_default=True)
@threads_option
@per_model_option
@cross_fit_option
@replace_option
@output_options
@click.pass_context
def analyze(ctx, preset, run, where, device, epochs, seed, threads, per_model, cross_fit, replace, fmt, output):
    """Embed, cluster and name in one go with a preset protocol, then print Table 1."""
    from kernel_catalog.analysis.analyze import analyze as run_analyze
    from kernel_catalog.report.report import report as run_report

    catalog = open_catalog(ctx)
    run = run_analyze(catalog, preset, run, where, device=device, epochs=epochs, seed=seed, threads=threads,
                      replace=replace, echo=_echo, per_model=per_model, cross_fit=cross_fit)
    show(run_report(catalog, run, "model"), fmt, output)
    _report_notes(catalog, run)


@cli.command()
@click.argument("run")
@click.option("--by", type=click.Choice(GROUPINGS), default=GROUPINGS[0],
              show_default=True, help="model: Table 1 (classified % vs null); layer/depth: Figure 8 as a table; "
              "kernel_size: per size, with seed ARI and the share of clear calls; cluster: names, score, margin.")
@click.option("--classified-only", is_flag=True, help="Cluster shares among classified kernels only.")
@output_options
@click.pass_context
def report(ctx, run, by, classified_only, fmt, output):
    """Report a run: classified % against the null model, cluster shares per layer, ..."""
    from kernel_catalog.report.report import report as run_report

    catalog = open_catalog(ctx)
    show(run_report(catalog, run, by, classified_only), fmt, output)
    _report_notes(catalog, run)


def _report_notes(catalog, run: str) -> None:
    """Seed stability and too-small-selection warnings, on stderr (the table stays parseable)."""
    from kernel_catalog.analysis.runs import require_run
    from kernel_catalog.report.report import seed_stability_lines, verdict_warnings

    for line in seed_stability_lines(require_run(catalog, run)) + verdict_warnings(catalog, run):
        _echo(line)


@cli.group(invoke_without_command=True)
@output_options
@click.pass_context
def runs(ctx, fmt, output):
    """List analysis runs with their parameters and metrics (`runs delete NAME` removes one)."""
    if ctx.invoked_subcommand is None:
        show(open_catalog(ctx).runs(), fmt, output)


@runs.command("delete")
@click.argument("run")
@click.pass_context
def runs_delete(ctx, run):
    """Delete RUN: exactly its rows and result files."""
    from kernel_catalog.analysis.runs import delete_run

    removed = delete_run(open_catalog(ctx), run)
    click.echo(f"deleted run {run} ({removed} result files)")


@cli.command()
@click.option("--repair", is_flag=True,
              help="Remove the stray files the catalog owns (a dead write's) and upgrade an older schema; "
                   "foreign files are only reported.")
@click.pass_context
def verify(ctx, repair):
    """Check the catalog like fsck: schema, markers, every data file's size and SHA-256, strays.
    Exit status 0: clean; 1: not clean (each problem on a line)."""
    report = open_catalog(ctx).verify(repair=repair)
    for line in report.lines():
        click.echo(line)
    if not report.clean:
        sys.exit(1)


@cli.command()
@click.option("--cache", type=click.Path(file_okay=False), envvar="KERNEL_CATALOG_CACHE",
              default=str(Path.home() / ".cache" / "kernel-catalog"), show_default=True,
              help="Where downloaded model files are kept (env KERNEL_CATALOG_CACHE).")
@click.option("--figures", type=click.Path(file_okay=False), default=None,
              help="Folder for the demo's figures (default: <catalog>/figures).")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True)
@click.pass_context
def demo(ctx, cache, figures, fmt):
    """Ingest real trained kernels (PaddleOCR ONNX models) and a timm reference, then summarise."""
    from kernel_catalog.demo.demo import run_demo

    tables = run_demo(open_catalog(ctx), Path(cache), echo=_echo, figures_dir=Path(figures) if figures else None)
    for title, table in tables.items():
        click.echo(f"\n## {title}")
        show(table, fmt, None)


@cli.group()
def figure():
    """Publication figures (PNG, PDF or SVG by the extension of -o): kernels, clusters, layers, classified."""


scale_option = click.option("--scale", type=click.Choice(SCALES), default=SCALES[0], show_default=True,
                            help="shared: one symmetric scale per figure; per-kernel: each kernel by its max |w|.")


def _wrote(path) -> None:
    click.echo(f"wrote {path}", err=True)


@figure.command("kernels")
@where_option()
@click.option("--sort-by", "sort_by", type=click.Choice(SORT_KEYS), default=None,
              help="Group rows by this (cluster needs --run).")
@run_option("Cluster run whose labels --sort-by cluster uses.", required=False)
@click.option("--limit", type=int, default=DEFAULT_LIMIT, show_default=True, help="At most this many kernels; a seeded sample beyond.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the sample (stated in the figure).")
@scale_option
@figure_output_option
@click.pass_context
def figure_kernels(ctx, where, sort_by, run, limit, seed, scale, output):
    """A grid of kernels (any size, non-square included) on a diverging scale centred at zero."""
    from kernel_catalog.report.figures import figure_kernels as draw

    draw(open_catalog(ctx), output, where=where, sort_by=sort_by, run=run, limit=limit, seed=seed, scale=scale, force=_force())
    _wrote(output)


@figure.command("clusters")
@run_option("A cluster run.")
@scale_option
@figure_output_option
@click.pass_context
def figure_clusters(ctx, run, scale, output):
    """Prototype (mean kernel) and medoid of every cluster, with name, score and share."""
    from kernel_catalog.report.figures import figure_clusters as draw

    draw(open_catalog(ctx), run, output, scale=scale, force=_force())
    _wrote(output)


@figure.command("layers")
@run_option("A cluster run.")
@click.option("--model", required=True, help="The model whose layers to show.")
@figure_output_option
@click.pass_context
def figure_layers(ctx, run, model, output):
    """Stacked bars: the share of each named cluster per layer of one model."""
    from kernel_catalog.report.figures import figure_layers as draw

    draw(open_catalog(ctx), run, model, output, force=_force())
    _wrote(output)


@figure.command("classified")
@run_option("An embed or cluster run.")
@figure_output_option
@click.pass_context
def figure_classified(ctx, run, output):
    """Classified % per model next to the null model's (Table 1 as a figure)."""
    from kernel_catalog.report.figures import figure_classified as draw

    draw(open_catalog(ctx), run, output, force=_force())
    _wrote(output)


@cli.command()
@run_option("The cluster run to show.")
@click.option("-o", "--output", required=True, help="Folder to write the site into (index.html inside).")
@click.option("--force", is_flag=True, help="Replace an existing non-empty folder.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the member samples per cluster.")
@click.pass_context
def gallery(ctx, run, output, force, seed):
    """A static HTML gallery of a cluster run (models, layers, clusters); opens from disk."""
    from kernel_catalog.report.gallery import write_gallery

    summary = write_gallery(open_catalog(ctx), run, output, force=force, seed=seed, echo=_echo)
    click.echo(f"wrote {summary['pages']} pages and {summary['images']} images to {summary['path']} "
               f"(open {Path(summary['path']) / 'index.html'})", err=True)


@figure.command("layer-profile")
@click.option("--model", "models", multiple=True, help="A model to draw (repeatable; default: every model).")
@where_option("SQL condition over the layers view (e.g. \"kh = 7\").")
@figure_output_option
@click.pass_context
def figure_layer_profile(ctx, models, where, output):
    """Per-layer sparsity and variance entropy against depth, several models overlaid."""
    from kernel_catalog.report.filterdb_figures import figure_layer_profile as draw

    draw(open_catalog(ctx), output, models=models, where=where, force=_force())
    _wrote(output)


@cli.command()
@click.option("--a", "a", default=None, help="The first selection (one kernel size): a SQL condition over kernels, "
              "or a SELECT whose rows have kh, kw, weights.")
@click.option("--b", "b", default=None, help="The second selection (same size), as --a.")
@click.option("--by", type=click.Choice(DRIFT_BY), default=None, help="Every pair of models (or layers) instead of --a/--b.")
@where_option("With --by: SQL condition over kernels choosing what to compare (one kernel size).")
@click.option("--components", type=int, default=DRIFT_COMPONENTS, show_default=True, help="Principal components compared.")
@click.option("--bins", type=int, default=DRIFT_BINS, show_default=True, help="Histogram bins per component.")
@click.option("--figure", "figure_path", default=None, help="With --by: a heatmap of every pair (.png/.pdf/.svg).")
@output_options
@click.pass_context
def drift(ctx, a, b, by, where, components, bins, figure_path, fmt, output):
    """Distribution drift (CNN Filter DB): symmetric KL of PCA-coefficient histograms, weighted by variance."""
    show(open_catalog(ctx).drift(a=a, b=b, by=by, where=where, components=components, bins=bins,
                                 figure=figure_path, force=_force()), fmt, output)
    if figure_path:
        _wrote(figure_path)


@cli.command()
@click.option("--kernel", type=int, default=None, help="Query: a catalog kernel id.")
@click.option("--template", default=None, help="Query: a template by name (built-in family, or a filter of --templates FILE).")
@click.option("--npy", type=click.Path(dir_okay=False), default=None, help="Query: a .npy file holding one (kh, kw) kernel.")
@click.option("--k", "k", type=int, default=NEAREST_K, show_default=True, help="How many kernels.")
@where_option("SQL condition over kernels narrowing the candidates.")
@click.option("--signless", is_flag=True, help="Rank by |cosine| (a kernel and its negation are equally near).")
@click.option("--templates", default="builtin", show_default=True, help="Where --template names come from: builtin, FILE or builtin+FILE.")
@click.option("--size", default=None, help=f"Kernel size of a --template query (default {NEAREST_SIZE}).")
@output_options
@click.pass_context
def nearest(ctx, kernel, template, npy, k, where, signless, templates, size, fmt, output):
    """The k kernels most like a query (cosine after centring and unit L2, sign-aware), highest first."""
    show(open_catalog(ctx).nearest(kernel=kernel, template=template, npy=npy, k=k, where=where,
                                   signless=signless, templates=templates, size=size), fmt, output)


def main() -> None:
    """Entry point: user errors become one line on stderr and exit status 1."""
    # OpenMP threads (torch, scikit-learn) that spin while waiting made training 5-15x slower
    # as soon as another process used a core (bench/RESULTS.md); waiting passively costs little
    # on an idle machine. Set for this process only, before torch loads; a user's value wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        cli.main(standalone_mode=False, prog_name="catalog")
    except CatalogError as error:
        click.echo(f"Error: {error}", err=True)
        sys.exit(1)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.exceptions.NoArgsIsHelpError as error:   # bare `catalog`: the help text
        click.echo(error.ctx.get_help() if error.ctx else str(error))
        sys.exit(0)
    except click.UsageError as error:   # one line, like every other user error
        command = error.ctx.command_path if error.ctx else "catalog"
        click.echo(f"Error: {error.format_message()} (see `{command} --help`)", err=True)
        sys.exit(error.exit_code)
    except click.ClickException as error:
        click.echo(f"Error: {error.format_message()}", err=True)
        sys.exit(error.exit_code)


if __name__ == "__main__":
    main()
