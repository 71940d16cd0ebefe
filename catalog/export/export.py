"""Export a selection of the catalog to Parquet, CSV or NPZ: streamed, atomic, with a manifest.

    catalog export --query "SELECT * FROM kernels JOIN labels USING (kernel_id) WHERE run = 'r'" -o dog.parquet
    catalog export --where "model LIKE 'convnext%' AND kh = 7" --format npz -o convnext7.npz

The selection is `--query SQL` over the views, or `--where COND` meaning
`SELECT * FROM kernels WHERE COND`. It is streamed as `SELECT * FROM (<selection>) AS
export_selection` (the wrapper gives duplicate column names of a join unique names, `kh_1`).

What each format holds
* parquet: every selected column. `weights` (a float list) becomes FixedSizeList[kh*kw] when all
  selected kernels have the same number of values. A selection that mixes kernel sizes keeps the
  variable-length list: one fixed-size column cannot hold two sizes, and splitting would turn
  one `-o FILE` into several files; the manifest's `weights_layout` says which was written.
  Export one size per file (`AND kh = 7 AND kw = 7`) for fixed-size lists.
* csv: every selected column; `weights` as columns w0 .. w{n-1} (row-major, w[r * kw + c]) in
  the shortest decimal form that parses back to the same float32 bits. Mixed sizes: as many
  columns as the largest kernel, empty cells beyond a smaller kernel. Other lists, structs and
  maps are JSON text.
* npz: `weights` (N, kh, kw) for a one-size selection, else one `weights_<kh>x<kw>` per size
  (sorted by size); 1-D `kernel_id`, `model`, `layer`, `channel` (those selected) with one entry
  per kernel, in the order of the weights arrays (all rows of the first, then the second, ...).
  Other columns are left out (the manifest lists them). Needs `kh`, `kw` and `weights`.
  `catalog ingest FILE.npz --name NAME` (kernelbank adapter) reads it back bit-identically.

Memory bound. Python holds one Arrow record batch of `batch_rows` rows (default 65,536: about
13 MB of 7x7 float32 weights plus the other columns) and at most two converted copies of it
(CSV: the (rows, kh*kw) value matrix; NPZ: the weights and index arrays of the batch), so under
100 MB for 7x7 kernels whatever the selection's size. The Parquet writer buffers one row group
(one batch). NPZ index arrays are spilled to unlinked temporary files in the target's folder,
not held in memory. DuckDB streams scans, filters, projections and joins' probe side; it decodes
one Parquet row group per thread, and kernel files are written with row groups of up to 2^20
kernels (~200 MB of 7x7 weights), which dominates: exporting 2 M and 6 M 7x7 kernels (0.4 and
1.2 GB of weights, 2 threads) peaked at the same ~1.0 GB RSS, where merely draining the same
query from DuckDB peaks at 0.7-0.9 GB. A query with ORDER BY, DISTINCT, GROUP BY or a large
join build side is materialised inside DuckDB first (spilling to disk above its memory_limit):
that is the query's cost, not the export's.

Passes over the selection: one aggregate pass (row count, sizes, string widths: the bar's total,
the empty check, the fixed-size decision, the NPZ headers), then the streaming pass (NPZ: one per
kernel size), then, when `kernel_id` is selected, a semi-join for the checkpoints involved. A
non-deterministic query (USING SAMPLE without a seed, random()) can return other rows in each
pass; NPZ refuses when a size's row count changed between passes.

Atomicity. The file and its manifest (`FILE.manifest.json`) are written under temporary names in
the target's folder, fsynced, then renamed: the data file first, the manifest last. Any error
(SQL failing on a later row, a full disk, Ctrl-C) removes the temporary files; a SIGKILL can
leave a `.FILE.tmp-<pid>-...` file, which the next export to the same name deletes. The target
name never holds a partial file, and an existing target is kept unless the export succeeds with
--force.
"""
from __future__ import annotations

import hashlib
import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa

from kernel_catalog.store.atomic import fsync_path, remove_dead_temporaries
from kernel_catalog.errors import CatalogError, error_summary
from kernel_catalog.store.targets import output_file
from kernel_catalog.store.faults import crash_point
from kernel_catalog.export._formats import WRITERS, Tracker, plan_selection
from kernel_catalog.export.manifest import build_manifest, write_json
from kernel_catalog.store import Catalog

FORMATS = ("parquet", "csv", "npz")
_SUFFIX_FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".npz": "npz"}
DEFAULT_BATCH_ROWS = 65_536
EMPTY_MESSAGE = "export: the selection matches no rows; nothing written"


@dataclass(frozen=True)
class ExportResult:
    path: Path
    manifest_path: Path
    format: str
    row_count: int
    manifest: dict


def manifest_path_for(path: str | os.PathLike) -> Path:
    path = Path(path)
    return path.with_name(path.name + ".manifest.json")


def export_format(output: str, requested: str | None) -> str:
    """parquet | csv | npz: as requested, else from the suffix of `output`."""
    if requested:
        if requested.lower() not in FORMATS:
            raise CatalogError(f"export: unknown format '{requested}'; use one of {', '.join(FORMATS)}")
        return requested.lower()
    suffix = Path(output).suffix.lower()
    if suffix not in _SUFFIX_FORMATS:
        raise CatalogError(f"export: cannot tell the format of {output} from '{suffix}'; "
                           f"pass --format {'|'.join(FORMATS)}")
    return _SUFFIX_FORMATS[suffix]


def selection_sql(query: str | None, where: str | None) -> str:
    """The user's selection as one SELECT (trailing semicolons dropped)."""
    given = [text for text in (query, where) if text is not None]
    if len(given) != 1 or not given[0].strip():
        raise CatalogError("export: give exactly one of --query SQL or --where CONDITION")
    if query is not None:
        return query.strip().rstrip(";").rstrip()
    return f"SELECT * FROM kernels WHERE (\n{where.strip().rstrip(';')}\n)"




# -- files ------------------------------------------------------------------------------------

def _check_target(output: str, force: bool) -> Path:
    target = Path(output).expanduser().absolute()
    folder = target.parent
    if not folder.exists():
        raise CatalogError(f"export: folder {folder} does not exist; create it first or choose another -o")
    if not folder.is_dir():
        raise CatalogError(f"export: {folder} is not a folder; choose another -o")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise CatalogError(f"export: folder {folder} is not writable; choose another -o")
    if target.is_dir():
        raise CatalogError(f"export: {target} is a folder; give a file name with -o")
    for path in (target, manifest_path_for(target)):   # the -o rule of every output (store.targets)
        try:
            output_file(path, force)
        except CatalogError as error:
            raise CatalogError(f"export: {error}") from None
    return target


def _temporary(target: Path) -> Path:
    return target.with_name(f".{target.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def _remove_stale_temporaries(target: Path) -> None:
    """Delete temporary files of earlier exports to this name whose process is gone (SIGKILL)."""
    for name in (target.name, manifest_path_for(target).name):
        remove_dead_temporaries(target.parent, glob_escape(name))


def glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _empty_message(con: duckdb.DuckDBPyConnection, selection: str) -> str:
    """The empty-selection line, naming a `run = '...'` literal that is no run (a likely typo)."""
    asked = [m.replace("''", "'") for m in re.findall(r"\brun\s*=\s*'((?:[^']|'')*)'", selection, re.IGNORECASE)]
    known = [row[0] for row in con.execute("SELECT run FROM run_records ORDER BY created_at").fetchall()]
    unknown = [name for name in asked if name not in known]
    if unknown:
        return f"{EMPTY_MESSAGE} (no run named '{unknown[0]}'; runs: {', '.join(known) or 'none yet'})"
    return EMPTY_MESSAGE


# -- the export -------------------------------------------------------------------------------

def export(
    catalog: Catalog,
    output: str | os.PathLike | None,
    *,
    query: str | None = None,
    where: str | None = None,
    fmt: str | None = None,
    force: bool = False,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    progress: bool = True,
    wait: float = 10.0,
) -> ExportResult:
    """Write the selection to `output` (+ `output`.manifest.json); see the module docstring."""
    selection = selection_sql(query, where)
    if not output:
        raise CatalogError("export: give the output file with -o FILE")
    fmt = export_format(str(output), fmt)
    target = _check_target(str(output), force)
    if batch_rows < 1:
        raise CatalogError(f"export: --batch-rows {batch_rows}: give a positive number")
    manifest_target = manifest_path_for(target)
    _remove_stale_temporaries(target)
    data_tmp, manifest_tmp = _temporary(target), _temporary(manifest_target)
    with catalog.snapshot(wait=wait) as con:   # writers are not kept waiting by a long export
        try:
            try:
                plan = plan_selection(con, selection, fmt)
            except duckdb.Error as error:
                hint = ("" if not isinstance(error, duckdb.ParserException)
                        else "; --query takes one SELECT statement" if query is not None
                        else "; --where takes one SQL condition")
                raise CatalogError(f"SQL error: {error_summary(error, lines=2)}{hint}") from None
            if plan.row_count == 0:
                raise CatalogError(_empty_message(con, selection))
            tracker = Tracker(plan.row_count, progress)
            try:
                details = WRITERS[fmt](con, plan, data_tmp, batch_rows, tracker)
            finally:
                tracker.close()
            fsync_path(data_tmp)
            manifest = build_manifest(
                con, catalog, fmt=fmt, target=target, plan=plan, query=query, where=where,
                rows=tracker.rows, seen=tracker.seen, details=details,
                file_sha256=_sha256(data_tmp), file_bytes=data_tmp.stat().st_size)
            write_json(manifest_tmp, manifest)
            fsync_path(manifest_tmp)
            crash_point("export-before-rename")
            os.replace(data_tmp, target)
            try:
                os.replace(manifest_tmp, manifest_target)
            except OSError:
                target.unlink(missing_ok=True)      # never a file without its manifest
                raise
            fsync_path(target.parent)
        except duckdb.Error as error:
            raise CatalogError(f"SQL error: {error_summary(error, lines=2)}; nothing written") from None
        except pa.ArrowInvalid as error:
            raise CatalogError(f"export: cannot convert the selection ({error_summary(error, lines=2)}); "
                               "nothing written") from None
        except OSError as error:
            reason = error.strerror or error_summary(error, lines=2)
            raise CatalogError(f"export: cannot write {target} ({reason}); nothing written") from None
        finally:
            data_tmp.unlink(missing_ok=True)
            manifest_tmp.unlink(missing_ok=True)
    return ExportResult(target, manifest_target, fmt, tracker.rows, manifest)
