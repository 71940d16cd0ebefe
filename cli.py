"""The `catalog` command: parses arguments and calls the library (catalog.*), nothing more."""
from __future__ import annotations

import sys
from functools import wraps
from pathlib import Path

import click

from catalog.errors import CatalogError


def output_options(command):
    """Shared --format / -o options for every command that prints rows (as sqlite-utils does)."""
    command = click.option("-o", "--output", "output", type=click.Path(dir_okay=False),
                           help="Write to FILE (format from its suffix unless --format).")(command)
    command = click.option("--format", "fmt", type=click.Choice(["table", "csv", "json", "parquet"]),
                           help="Output format (default: table on the terminal).")(command)
    return command


def show(table, fmt: str | None, output: str | None) -> None:
    from catalog.output import format_for, write_rows

    write_rows(table, format_for(output, fmt), output, sys.stdout)
    if output:
        click.echo(f"wrote {table.num_rows} rows to {output}", err=True)


def open_catalog(ctx: click.Context):
    from catalog.store import Catalog

    return Catalog(ctx.obj["catalog"])


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--catalog", "catalog_dir", envvar="KERNEL_CATALOG", default="kernel-catalog",
              show_default=True, type=click.Path(file_okay=False),
              help="Catalog folder (env KERNEL_CATALOG); created on first write.")
@click.version_option(package_name="kernel-catalog")
@click.pass_context
def cli(ctx: click.Context, catalog_dir: str) -> None:
    """A catalog of trained depthwise convolution kernels: ingest, query with SQL, analyse."""
    ctx.obj = {"catalog": catalog_dir}


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
@click.option("--wait", type=float, default=None, help="Wait up to SECONDS for another writer to finish.")
@click.pass_context
def ingest(ctx, sources, adapter, checkpoint, name, random_init, reparam, include, exclude, seed, force, wait):
    """Ingest depthwise kernels from timm names, patterns ('convnext*'), checkpoints or ONNX files."""
    from adapters.base import IngestOptions
    from catalog.ingest import IngestFailure, ingest_many

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
                   f"{sizes} [{outcome.adapter}, sha256 {outcome.checkpoint_sha256[:12]}, {outcome.seconds:.2f}s]")

    outcomes = ingest_many(open_catalog(ctx), list(sources), options, adapter, force, wait,
                           on_result=report, progress=True)
    failures = [o for o in outcomes if isinstance(o, IngestFailure)]
    if failures:
        if len(outcomes) > 1:
            click.echo(f"{len(outcomes) - len(failures)} ingested, {len(failures)} failed", err=True)
        sys.exit(1)


@cli.command()
@click.argument("query")
@output_options
@click.option("--wait", type=float, default=10.0, show_default=True, help="Seconds to wait while a writer commits.")
@click.pass_context
def sql(ctx, query, fmt, output, wait):
    """Run a read-only SQL QUERY over the views (kernels, models, layers, ...)."""
    from catalog.query import run_query

    show(run_query(open_catalog(ctx), query, wait=wait), fmt, output)


@cli.command()
@output_options
@click.pass_context
def models(ctx, fmt, output):
    """List the models in the catalog."""
    from catalog.query import list_models

    show(list_models(open_catalog(ctx)), fmt, output)


@cli.command()
@click.argument("model")
@output_options
@click.pass_context
def layers(ctx, model, fmt, output):
    """List the depthwise layers of MODEL with their metadata."""
    from catalog.query import list_layers

    show(list_layers(open_catalog(ctx), model), fmt, output)


@cli.command()
@output_options
def adapters(fmt, output):
    """List the installed adapter plugins with their versions."""
    import pyarrow as pa

    from adapters.registry import broken_adapters, list_adapters

    rows = [{"adapter": i.name, "version": i.version, "package": i.package, "priority": i.priority,
             "description": i.description} for i in list_adapters()]
    rows += [{"adapter": name, "version": None, "package": None, "priority": None,
              "description": f"failed to load: {why}"} for name, why in broken_adapters().items()]
    show(pa.Table.from_pylist(rows), fmt, output)


@cli.command()
@click.option("--cache", type=click.Path(file_okay=False), envvar="KERNEL_CATALOG_CACHE",
              default=str(Path.home() / ".cache" / "kernel-catalog"), show_default=True,
              help="Where downloaded model files are kept (env KERNEL_CATALOG_CACHE).")
@output_options
@click.pass_context
def demo(ctx, cache, fmt, output):
    """Ingest real trained kernels (PaddleOCR ONNX models) and a timm reference, then summarise."""
    from catalog.demo import run_demo

    summary = run_demo(open_catalog(ctx), Path(cache), echo=lambda line: click.echo(line, err=True))
    show(summary, fmt, output)


def main() -> None:
    """Entry point: user errors become one line on stderr and exit status 1."""
    try:
        cli.main(standalone_mode=False)
    except CatalogError as error:
        click.echo(f"Error: {error}", err=True)
        sys.exit(1)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.ClickException as error:
        error.show()
        sys.exit(error.exit_code)


if __name__ == "__main__":
    main()
