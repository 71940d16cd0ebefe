"""The `catalog` command: parses arguments and calls the public API (`kernel_catalog.open()` ->
`Catalog` methods), nothing more, so both interfaces have the same defaults and the same words.

Conventions (docs/cli.md): options several commands share are built once below from library
constants; an option name means one thing everywhere (`--run` names a run, `--replace` replaces
something in the catalog, `--force` overwrites an -o output, `--limit` caps rows, `--k` is a
cluster count); every option is named like the API parameter it sets (tests/test_cli_api.py).
Parsing options imports neither torch nor matplotlib.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from kernel_catalog._api import DEFAULT_SEED, READ_WAIT, Catalog
from kernel_catalog.analysis.params import (
    AUTO_CROSS_FIT_FOLDS, MIN_VERDICT_KERNELS, CLUSTER_METHODS, DEFAULT_PRESET, DEVICES, PREPROCESS_METHODS, PRESETS, SPACES, THRESHOLD_RULES, ClusterParams,
    EmbedParams,
)
from kernel_catalog.analysis.search import BY as DRIFT_BY, DEFAULT_BINS, DEFAULT_COMPONENTS, DEFAULT_K, DEFAULT_SIZE
from kernel_catalog.errors import CatalogError
from kernel_catalog.export.export import DEFAULT_BATCH_ROWS, FORMATS as EXPORT_FORMATS
from kernel_catalog.ingest import DEFAULT_JOBS
from kernel_catalog.report import DEFAULT_LIMIT, GROUPINGS, SCALES, SORT_KEYS
from kernel_catalog.store import DEFAULT_ROOT, ROOT_ENV
from kernel_catalog.store.output import FORMATS as OUTPUT_FORMATS, TEXT_FORMATS


# -- options several commands share ----------------------------------------------------------
def _remember_force(ctx: click.Context, param, value: bool) -> bool:
    ctx.meta["force_output"] = value
    return value


def force_output_option(command):
    """--force for a printed table's -o FILE (the one -o rule, store.targets); read by `show`."""
    return click.option("--force", "force", is_flag=True, expose_value=False, callback=_remember_force,
                        help="Overwrite -o FILE if it exists.")(command)


def output_options(command):
    """--format / -o / --force for every command that prints rows (as sqlite-utils does)."""
    command = force_output_option(command)
    command = click.option("-o", "--output", "output", type=click.Path(dir_okay=False),
                           help="Write to FILE (format from its suffix unless --format); an existing FILE "
                                "needs --force.")(command)
    return click.option("--format", "fmt", type=click.Choice(OUTPUT_FORMATS),
                        help="Output format (default: table on the terminal).")(command)


def force_option(what: str):
    return click.option("--force", is_flag=True, help=f"Overwrite {what} if it exists.")


def where_option(help: str = "SQL condition over the kernels view (default: all kernels)."):
    return click.option("--where", default=None, help=help)


def run_option(help: str, required: bool = True):
    # no explicit default: click (>= 8.3) treats `default=None` as given and skips `required`
    return click.option("--run", "run", required=required, help=help)


def seed_option(help: str = "Seed (every seeded step is recorded with the run)."):
    return click.option("--seed", type=int, default=DEFAULT_SEED, show_default=True, help=help)


def wait_option(default: float | None = READ_WAIT, help: str = "Seconds to wait while a writer commits."):
    return click.option("--wait", type=float, default=default, show_default=default is not None, help=help)


def replace_option(what: str = "a run of the same name"):
    return click.option("--replace", is_flag=True, help=f"Replace {what}.")


templates_option = click.option("--templates", default=ClusterParams.templates, show_default=True,
                                help="Template families: builtin, a template FILE, or builtin+FILE.")
name_threshold_option = click.option("--name-threshold", type=float, default=ClusterParams.name_threshold,
                                     show_default=True,
                                     help="Minimum cosine of a cluster mean to its best template; below it: 'unmatched'.")
device_option = click.option("--device", type=click.Choice(DEVICES), default=EmbedParams.device, show_default=True,
                             help="auto: CUDA when torch sees a GPU, else CPU.")
epochs_option = click.option("--epochs", type=int, default=EmbedParams.epochs,
                             help="Training epochs (default: enough for 3000 steps, 10..2000).")
threads_option = click.option("--threads", type=int, default=EmbedParams.threads,
                              help="Cap CPU threads (default: every core this process may use).")
cross_fit_option = click.option(
    "--cross-fit", type=int, default=EmbedParams.cross_fit, metavar="FOLDS",
    help="Score each kernel (and null kernel) by an autoencoder trained on the other folds: held-out classified % "
         f"for small selections, which are otherwise memorised. Default: {AUTO_CROSS_FIT_FOLDS} folds for sizes "
         f"below {MIN_VERDICT_KERNELS} usable kernels, in sample above; 0: never.")
per_model_option = click.option("--per-model", is_flag=True, default=EmbedParams.per_model,
                                help="One autoencoder (and null model) per model and kernel size instead of one per size.")
ray_option = click.option("--ray", default=None, metavar="ADDRESS",
                          help="Run on Ray: 'local' starts a local instance, 'auto' or ray://HOST:PORT joins a cluster "
                               "(needs kernel-catalog[cluster]; docs/beyond-one-machine.md).")
figure_output_option = click.option("-o", "--output", required=True,
                                    help="Figure file: .png, .pdf or .svg (an existing one needs --force).")


def show(table, fmt: str | None, output: str | None) -> None:
    from kernel_catalog.store.output import format_for, write_rows

    force = click.get_current_context().meta.get("force_output", False)
    write_rows(table, format_for(output, fmt), output, sys.stdout, force=force)
    if output:
        click.echo(f"wrote {table.num_rows} rows to {output}", err=True)


def _echo(line: str) -> None:
    click.echo(line, err=True)


def _warn(result) -> None:
    """A run's warnings (seed stability, no verdict) on stderr: the table on stdout stays parseable."""
    for line in result.warnings:
        _echo(line)


def _wrote(path) -> None:
    click.echo(f"wrote {path}", err=True)


def catalog_of(ctx: click.Context) -> Catalog:
    from kernel_catalog import open as open_catalog

    return open_catalog(ctx.find_root().obj["catalog"])


# -- commands ----------------------------------------------------------------------------------
@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--catalog", "catalog_dir", envvar=ROOT_ENV, default=DEFAULT_ROOT,
              show_default=True, type=click.Path(file_okay=False),
              help="Catalog folder (env KERNEL_CATALOG); created on first write. s3://BUCKET/PREFIX or "
                   "hf://datasets/ORG/NAME[@REV]: a published catalog, read-only.")
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
    location = catalog_of(ctx).init(data_root)
    click.echo(f"catalog {ctx.obj['catalog']}: data in {location}")


@cli.command()
@click.argument("sources", nargs=-1, required=True)
@click.option("--adapter", help="Use this adapter instead of choosing by source (see `catalog adapters`).")
@click.option("--checkpoint", type=click.Path(dir_okay=False), help="Weights file for an architecture name (timm).")
@click.option("--name", help="Model name to record (default: the timm name, or the file name without extension).")
@click.option("--random-init", is_flag=True, help="Build the architecture with random weights (recorded as trained=false).")
@click.option("--reparam", is_flag=True, help="Fuse reparameterisable blocks (MobileOne, FastViT, ...) before extraction.")
@click.option("--include", multiple=True, help="Keep only layers/tensors matching this fnmatch pattern (repeatable).")
@click.option("--exclude", multiple=True, help="Drop layers/tensors matching this fnmatch pattern (repeatable).")
@seed_option("Seed for --random-init.")
@replace_option("a model already in the catalog")
@click.option("--jobs", type=click.IntRange(min=1), default=DEFAULT_JOBS, show_default=True,
              help="Published weights downloaded in parallel (while earlier models are read).")
@click.option("--evict", is_flag=True, help="Delete downloaded weights from the cache once their kernels are committed.")
@click.option("--full-download", is_flag=True,
              help="Download whole weight files (default: from safetensors on the hub, only the depthwise "
                   "tensors' byte ranges).")
@wait_option(None, "Wait up to SECONDS for another writer to finish.")
@ray_option
@click.pass_context
def ingest(ctx, sources, **options):
    """Ingest depthwise kernels from timm names (published weights), patterns ('convnext*'), hf:ORG/REPO,
    checkpoints, ONNX or TFLite files."""
    from kernel_catalog.ingest import IngestFailure, summary

    def report(outcome):
        if isinstance(outcome, IngestFailure):
            click.echo(f"Error: {outcome.message}", err=True)
            return
        sizes = f", {outcome.n_nonfinite} with NaN/Inf (flagged)" if outcome.n_nonfinite else ""
        click.echo(f"{outcome.action} {outcome.model}: {outcome.n_layers} layers, {outcome.n_kernels} kernels"
                   f"{sizes} [{outcome.adapter}, sha256 {outcome.checkpoint_sha256[:12]}, {outcome.seconds:.2f}s"
                   + (f", download {outcome.download_seconds:.2f}s" if outcome.download_seconds else "") + "]")

    outcomes = catalog_of(ctx).ingest_many(sources, on_result=report, progress=True, **options)
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
@wait_option()
@output_options
@click.pass_context
def sql(ctx, query, allow, wait, fmt, output):
    """Run a read-only SQL QUERY over the views (kernels, models, layers, ...)."""
    show(catalog_of(ctx).sql(query, allow=allow, wait=wait), fmt, output)


@cli.command()
@output_options
@click.pass_context
def models(ctx, fmt, output):
    """List the models in the catalog."""
    show(catalog_of(ctx).models(), fmt, output)


@cli.command()
@click.argument("model")
@output_options
@click.pass_context
def layers(ctx, model, fmt, output):
    """List the depthwise layers of MODEL with their metadata."""
    show(catalog_of(ctx).layers(model), fmt, output)


@cli.command()
@output_options
def adapters(fmt, output):
    """List the installed adapter plugins with their versions."""
    show(Catalog.adapters(), fmt, output)


@cli.command()
@click.option("--query", default=None, help="SQL over the views selecting the rows to export.")
@where_option("Condition over the kernels view (SELECT * FROM kernels WHERE ...).")
@click.option("--format", "fmt", type=click.Choice(EXPORT_FORMATS), default=None,
              help="Default: from the -o suffix.")
@click.option("-o", "--output", "output", default=None,
              help="File to write; a FILE.manifest.json is written beside it.")
@force_option("FILE (and its manifest)")
@click.option("--batch-rows", type=int, default=DEFAULT_BATCH_ROWS, show_default=True,
              help="Rows per streamed batch (bounds memory).")
@wait_option()
@click.pass_context
def export(ctx, output, **options):
    """Export a selection to Parquet, CSV or NPZ (streamed, atomic) with a reproducibility manifest."""
    result = catalog_of(ctx).export(output, progress=True, **options)
    click.echo(f"wrote {result.row_count} rows to {result.path} ({result.format}); manifest {result.manifest_path}",
               err=True)


def _names(ctx, param, value: str | None) -> tuple[str, ...]:
    """A comma-separated option as a tuple of names (empty: none)."""
    return tuple(name.strip() for name in (value or "").split(",") if name.strip())


@cli.command()
@click.argument("dest")
@where_option("Publish every layer with a kernel matching this condition (default: every layer).")
@click.option("--runs", default="", callback=_names, metavar="R,...",
              help="Analysis runs to publish with it (comma-separated; the runs they read come along).")
@wait_option()
@click.pass_context
def publish(ctx, dest, **options):
    """Publish a read-only catalog of a selection: a folder, s3://BUCKET/PREFIX or hf://datasets/ORG/NAME."""
    result = catalog_of(ctx).publish(dest, **options)
    if result.changed:
        commit = f" (commit {result.commit[:12]})" if result.commit else ""
        click.echo(f"published {result.models} models, {result.kernels} kernels to {result.dest}: "
                   f"{len(result.uploaded)} files uploaded ({result.bytes:,} bytes), {len(result.skipped)} unchanged, "
                   f"{len(result.deleted)} removed{commit}", err=True)
    else:
        click.echo(f"{result.dest} is up to date ({len(result.skipped)} files unchanged); nothing uploaded", err=True)


def _thresholds(ctx, param, values: tuple[str, ...]) -> dict[str, float]:
    """--threshold 7x7=0.3 (repeatable) -> {"7x7": 0.3}."""
    parsed = {}
    for value in values:
        size, _, number = value.partition("=")
        try:
            parsed[size.strip()] = float(number)
        except ValueError:
            raise click.BadParameter(f"{value}: expected SIZE=VALUE, e.g. 3x3=0.1") from None
    return parsed


@cli.command()
@run_option("Name of the new embedding run.")
@where_option()
@click.option("--latent-dim", type=int, default=EmbedParams.latent_dim, show_default=True,
              help="Autoencoder latent size (the follow-up work used 1).")
@device_option
@epochs_option
@click.option("--batch-size", type=int, default=EmbedParams.batch_size, show_default=True)
@seed_option()
@threads_option
@click.option("--preprocess", type=click.Choice(PREPROCESS_METHODS), default=EmbedParams.preprocess, show_default=True)
@click.option("--threshold", "thresholds", multiple=True, callback=_thresholds,
              help="Classified threshold per size, e.g. 3x3=0.1 (repeatable).")
@click.option("--null-model/--no-null", default=EmbedParams.null_model, show_default=True,
              help="Train the same protocol on iid Gaussian kernels (the control every % is read against).")
@click.option("--threshold-rule", type=click.Choice(THRESHOLD_RULES), default=EmbedParams.threshold_rule,
              show_default=True, help="published: the paper's 7x7/5x5 thresholds, calibrated on the null elsewhere.")
@click.option("--alpha", type=float, default=EmbedParams.alpha, show_default=True,
              help="Calibrated thresholds: the null is classified at most this often.")
@per_model_option
@cross_fit_option
@click.option("--from-model", default=None, help="Reuse the autoencoders of this embed run (no training).")
@replace_option()
@ray_option
@click.pass_context
def embed(ctx, run, where, **options):
    """Train an autoencoder per kernel size and store every kernel's embedding."""
    result = catalog_of(ctx).embed(run, where, echo=_echo, progress=True, **options)
    _warn(result)
    click.echo(f"embed run {run} stored; see `catalog report --run {run}`")


def _cluster_count(ctx, param, value: str):
    if value == "auto":
        return value
    try:
        return int(value)
    except ValueError:
        raise click.BadParameter(f"{value}: give a positive integer or 'auto'") from None


@cli.command()
@run_option("Name of the new cluster run.")
@click.option("--from", "from_run", required=True, help="The embed run to cluster.")
@click.option("--k", default=str(ClusterParams.k), show_default=True, callback=_cluster_count,
              help="Clusters per kernel size, or 'auto' (best silhouette over 2..--k-max on a 5000-row sample).")
@click.option("--k-max", type=int, default=ClusterParams.k_max, show_default=True)
@click.option("--space", type=click.Choice(SPACES), default=ClusterParams.space, show_default=True,
              help="Cluster the preprocessed kernels (default: best on planted banks), the autoencoder's "
                   "unit-normalised reconstructions (the paper preset) or raw latent z.")
@click.option("--method", type=click.Choice(CLUSTER_METHODS), default=ClusterParams.method, show_default=True)
@seed_option()
@templates_option
@name_threshold_option
@threads_option
@replace_option()
@ray_option
@click.pass_context
def cluster(ctx, run, from_run, **options):
    """Cluster an embed run per kernel size and name the clusters by template matching."""
    result = catalog_of(ctx).cluster(run, from_run, echo=_echo, **options)
    _warn(result)
    click.echo(f"cluster run {run} stored; see `catalog report --run {run} --by layer`")


@cli.command()
@run_option("The cluster run to (re)name.")
@templates_option
@name_threshold_option
@click.pass_context
def identify(ctx, run, templates, name_threshold):
    """Name the clusters and kernels of a cluster run against template families."""
    result = catalog_of(ctx).identify(run, templates=templates, name_threshold=name_threshold, echo=_echo)
    _warn(result)
    click.echo(f"cluster run {run} renamed with templates {templates}")


@cli.command()
@click.option("--preset", type=click.Choice(tuple(PRESETS)), default=DEFAULT_PRESET, show_default=True,
              help="paper: latent 1, k 10, thresholds 7x7 0.3 / 5x5 0.2; default: latent 2, k 10.")
@run_option("Cluster run name (default: the preset's name); the embed run gets '<run>-ae'.", required=False)
@where_option()
@device_option
@epochs_option
@seed_option()
@threads_option
@per_model_option
@cross_fit_option
@replace_option()
@output_options
@click.pass_context
def analyze(ctx, fmt, output, **options):
    """Embed, cluster and name in one go with a preset protocol, then print Table 1."""
    result = catalog_of(ctx).analyze(echo=_echo, progress=True, **options)
    show(result.table, fmt, output)
    _warn(result)


@cli.command()
@run_option("The run to report.")
@click.option("--by", type=click.Choice(GROUPINGS), default=GROUPINGS[0],
              show_default=True, help="model: Table 1 (classified % vs null); layer/depth: Figure 8 as a table; "
              "kernel_size: per size, with seed ARI and the share of clear calls; cluster: names, score, margin.")
@click.option("--classified-only", is_flag=True, help="Cluster shares among classified kernels only.")
@output_options
@click.pass_context
def report(ctx, run, by, classified_only, fmt, output):
    """Report a run: classified % against the null model, cluster shares per layer, ..."""
    catalog = catalog_of(ctx)
    show(catalog.report(run, by, classified_only), fmt, output)
    for line in catalog.warnings(run):
        _echo(line)


@cli.group(invoke_without_command=True)
@output_options
@click.pass_context
def runs(ctx, fmt, output):
    """List analysis runs with their parameters and metrics (`runs delete --run NAME` removes one)."""
    if ctx.invoked_subcommand is None:
        show(catalog_of(ctx).runs(), fmt, output)


@runs.command("delete")
@run_option("The run to delete.")
@click.pass_context
def runs_delete(ctx, run):
    """Delete a run: exactly its rows and result files."""
    removed = catalog_of(ctx).delete_run(run)
    click.echo(f"deleted run {run} ({removed} result files)")


@cli.command()
@click.option("--repair", is_flag=True,
              help="Remove the stray files the catalog owns (a dead write's) and upgrade an older schema; "
                   "foreign files are only reported.")
@click.pass_context
def verify(ctx, repair):
    """Check the catalog like fsck: schema, markers, every data file's size and SHA-256, strays.
    Exit status 0: clean; 1: not clean (each problem on a line)."""
    result = catalog_of(ctx).verify(repair=repair)
    for line in result.lines():
        click.echo(line)
    if not result.clean:
        sys.exit(1)


@cli.command()
@click.option("--cache", type=click.Path(file_okay=False), default=None,
              help="Where downloaded model files are kept (default: $KERNEL_CATALOG_CACHE or ~/.cache/kernel-catalog).")
@click.option("--figures", type=click.Path(file_okay=False), default=None,
              help="Folder for the demo's figures (default: <catalog>/figures).")
@click.option("--format", "fmt", type=click.Choice(TEXT_FORMATS), default=TEXT_FORMATS[0], show_default=True)
@click.pass_context
def demo(ctx, cache, figures, fmt):
    """Ingest real trained kernels (PaddleOCR ONNX models) and a timm reference, then summarise."""
    tables = catalog_of(ctx).demo(cache, figures, echo=_echo)
    for title, table in tables.items():
        click.echo(f"\n## {title}")
        show(table, fmt, None)


@cli.group()
def figure():
    """Publication figures (PNG, PDF or SVG by the extension of -o): kernels, clusters, layers, classified,
    layer-profile."""


scale_option = click.option("--scale", type=click.Choice(SCALES), default=SCALES[0], show_default=True,
                            help="shared: one symmetric scale per figure; per-kernel: each kernel by its max |w|.")


def _figure(ctx, kind: str, output: str, **options) -> None:
    catalog_of(ctx).figure(kind, output, **options)
    _wrote(output)


@figure.command("kernels")
@where_option()
@click.option("--sort-by", "sort_by", type=click.Choice(SORT_KEYS), default=None,
              help="Group rows by this (cluster needs --run).")
@run_option("Cluster run whose labels --sort-by cluster uses.", required=False)
@click.option("--limit", type=int, default=DEFAULT_LIMIT, show_default=True,
              help="At most this many kernels; a seeded sample beyond.")
@seed_option("Seed of the sample (stated in the figure).")
@scale_option
@figure_output_option
@force_option("the figure file")
@click.pass_context
def figure_kernels(ctx, **options):
    """A grid of kernels (any size, non-square included) on a diverging scale centred at zero."""
    _figure(ctx, "kernels", **options)


@figure.command("clusters")
@run_option("A cluster run.")
@scale_option
@figure_output_option
@force_option("the figure file")
@click.pass_context
def figure_clusters(ctx, **options):
    """Prototype (mean kernel) and medoid of every cluster, with name, score and share."""
    _figure(ctx, "clusters", **options)


@figure.command("layers")
@run_option("A cluster run.")
@click.option("--model", required=True, help="The model whose layers to show.")
@figure_output_option
@force_option("the figure file")
@click.pass_context
def figure_layers(ctx, **options):
    """Stacked bars: the share of each named cluster per layer of one model."""
    _figure(ctx, "layers", **options)


@figure.command("classified")
@run_option("An embed or cluster run.")
@figure_output_option
@force_option("the figure file")
@click.pass_context
def figure_classified(ctx, **options):
    """Classified % per model next to the null model's (Table 1 as a figure)."""
    _figure(ctx, "classified", **options)


@figure.command("layer-profile")
@click.option("--model", "models", multiple=True, help="A model to draw (repeatable; default: every model).")
@where_option("SQL condition over the layers view (e.g. \"kh = 7\").")
@figure_output_option
@force_option("the figure file")
@click.pass_context
def figure_layer_profile(ctx, **options):
    """Per-layer sparsity and variance entropy against depth, several models overlaid."""
    _figure(ctx, "layer-profile", **options)


@cli.command()
@run_option("The cluster run to show.")
@click.option("-o", "--output", required=True, help="Folder to write the site into (index.html inside).")
@click.option("--force", is_flag=True, help="Replace a gallery folder this tool wrote (never another folder).")
@seed_option("Seed of the member samples per cluster.")
@click.pass_context
def gallery(ctx, run, output, **options):
    """A static HTML gallery of a cluster run (models, layers, clusters); opens from disk."""
    summary = catalog_of(ctx).gallery(run, output, echo=_echo, **options)
    click.echo(f"wrote {summary['pages']} pages and {summary['images']} images to {summary['path']} "
               f"(open {Path(summary['path']) / 'index.html'})", err=True)


@cli.command()
@click.option("--a", "a", default=None, help="The first selection (one kernel size): a SQL condition over kernels, "
              "or a SELECT whose rows have kh, kw, weights.")
@click.option("--b", "b", default=None, help="The second selection (same size), as --a.")
@click.option("--by", type=click.Choice(DRIFT_BY), default=None, help="Every pair of models (or layers) instead of --a/--b.")
@where_option("With --by: SQL condition over kernels choosing what to compare (one kernel size).")
@click.option("--components", type=int, default=DEFAULT_COMPONENTS, show_default=True, help="Principal components compared.")
@click.option("--bins", type=int, default=DEFAULT_BINS, show_default=True, help="Histogram bins per component.")
@click.option("--figure", default=None, help="With --by: a heatmap of every pair (.png/.pdf/.svg; an existing one "
              "needs --force).")
@output_options
@click.pass_context
def drift(ctx, fmt, output, **options):
    """Distribution drift (CNN Filter DB): symmetric KL of PCA-coefficient histograms, weighted by variance."""
    force = ctx.meta.get("force_output", False)
    show(catalog_of(ctx).drift(force=force, **options), fmt, output)
    if options["figure"]:
        _wrote(options["figure"])


@cli.command()
@click.option("--kernel", type=int, default=None, help="Query: a catalog kernel id.")
@click.option("--template", default=None, help="Query: a template by name (built-in family, or a filter of --templates FILE).")
@click.option("--npy", type=click.Path(dir_okay=False), default=None, help="Query: a .npy file holding one (kh, kw) kernel.")
@click.option("--limit", type=int, default=DEFAULT_K, show_default=True, help="How many kernels.")
@where_option("SQL condition over kernels narrowing the candidates.")
@click.option("--signless", is_flag=True, help="Rank by |cosine| (a kernel and its negation are equally near).")
@templates_option
@click.option("--size", default=None, help=f"Kernel size of a --template query (default {DEFAULT_SIZE}).")
@output_options
@click.pass_context
def nearest(ctx, fmt, output, **options):
    """The --limit kernels most like a query (cosine after centring and unit L2, sign-aware), highest first."""
    show(catalog_of(ctx).nearest(**options), fmt, output)


def main() -> None:
    """Entry point: user errors become one line on stderr and exit status 1 (usage errors 2)."""
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
