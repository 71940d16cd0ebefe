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
import json
import os
import re
import shutil
import sys
import tempfile
import uuid
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from kernel_catalog.store.atomic import fsync_path
from kernel_catalog.errors import CatalogError, error_summary
from kernel_catalog.store.faults import crash_point
from kernel_catalog.export.manifest import INTEGER_TYPES, build_manifest, write_json
from kernel_catalog.store import Catalog

FORMATS = ("parquet", "csv", "npz")
_SUFFIX_FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".npz": "npz"}
DEFAULT_BATCH_ROWS = 65_536
INDEX_COLUMNS = ("kernel_id", "model", "layer", "channel")   # the 1-D arrays of an NPZ export
EMPTY_MESSAGE = "export: the selection matches no rows; nothing written"
_FLOAT_LIST = re.compile(r"^(FLOAT|DOUBLE)\[(\d*)\]$")


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


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@dataclass
class Plan:
    """What the aggregate pass learned about the selection."""

    sql: str                              # the statement that is streamed
    columns: list[str]
    types: list[str]                      # DuckDB types, as text
    row_count: int = 0
    sizes: list[tuple[int, int, int]] = field(default_factory=list)   # (kh, kw, rows), sorted
    lengths: dict[int | None, int] = field(default_factory=dict)       # values per kernel -> rows
    bad_sizes: int = 0                    # rows whose weights do not hold kh*kw values
    null_sizes: int = 0                   # rows with NULL kh or kw
    widths: dict[str, int] = field(default_factory=dict)              # max UTF-8 bytes (npz strings)

    @property
    def has_weights(self) -> bool:
        """Is there a `weights` column holding float lists?"""
        return "weights" in self.columns and bool(_FLOAT_LIST.match(self.types[self.columns.index("weights")]))

    @property
    def fixed_length(self) -> int | None:
        """kh*kw when every non-NULL kernel has the same number of values, else None."""
        lengths = [n for n in self.lengths if n is not None]
        return lengths[0] if self.has_weights and len(lengths) == 1 else None


def plan_selection(con: duckdb.DuckDBPyConnection, selection: str, fmt: str) -> Plan:
    """Bind the selection (SQL errors surface here) and run the aggregate pass."""
    sql = f"SELECT * FROM (\n{selection}\n) AS export_selection"
    relation = con.sql(sql)
    plan = Plan(sql, list(relation.columns), [str(t) for t in relation.types])
    keys = []
    if all(c in plan.columns and plan.types[plan.columns.index(c)] in INTEGER_TYPES for c in ("kh", "kw")):
        keys += ["kh", "kw"]
    if plan.has_weights:
        keys.append("len(weights) AS n_values")
    aggregates = ["count(*) AS n"]
    strings = [c for c in ("model", "layer") if fmt == "npz" and c in plan.columns
               and plan.types[plan.columns.index(c)] == "VARCHAR"]
    aggregates += [f"max(strlen({_quote(c)})) AS {_quote('width_' + c)}" for c in strings]
    group = " GROUP BY ALL" if keys else ""
    rows = con.sql(f"SELECT {', '.join(keys + aggregates)} FROM ({sql}) AS s{group}").fetchall()
    for row in rows:
        values = dict(zip([k.split(" AS ")[-1] for k in keys] + ["n"] + [f"width_{c}" for c in strings], row))
        n = int(values["n"])
        plan.row_count += n
        for column in strings:
            plan.widths[column] = max(plan.widths.get(column, 1), int(values[f"width_{column}"] or 1))
        if plan.has_weights:
            length = values["n_values"]
            plan.lengths[length] = plan.lengths.get(length, 0) + n
        if keys[:2] == ["kh", "kw"] and n:
            kh, kw = values["kh"], values["kw"]
            if kh is None or kw is None:
                plan.null_sizes += n
                continue
            if plan.has_weights and values["n_values"] is not None and values["n_values"] != kh * kw:
                plan.bad_sizes += n
            plan.sizes.append((int(kh), int(kw), n))
    merged: dict[tuple[int, int], int] = {}
    for kh, kw, n in plan.sizes:
        merged[(kh, kw)] = merged.get((kh, kw), 0) + n
    plan.sizes = sorted((kh, kw, n) for (kh, kw), n in merged.items())
    return plan


class _Tracker:
    """Rows written, the models and runs seen, and the progress bar (stderr, quiet off a TTY)."""

    def __init__(self, total: int, progress: bool):
        from tqdm import tqdm

        self.rows = 0
        self.seen: dict[str, set] = {"model": set(), "run": set()}
        self.bar = tqdm(total=total, unit="row", unit_scale=True, desc="export", leave=False,
                        file=sys.stderr, disable=None if progress else True)

    def update(self, batch: pa.RecordBatch) -> None:
        self.rows += batch.num_rows
        for name, values in self.seen.items():
            index = batch.schema.get_field_index(name)
            if index >= 0 and pa.types.is_string(batch.schema.field(index).type):
                values.update(v for v in pc.unique(batch.column(index)).to_pylist() if v is not None)
        crash_point("export-batch-written")
        self.bar.update(batch.num_rows)

    def close(self) -> None:
        self.bar.close()


def _stream(con: duckdb.DuckDBPyConnection, sql: str, batch_rows: int) -> pa.RecordBatchReader:
    return con.sql(sql).to_arrow_reader(batch_rows)


def _batches(reader: pa.RecordBatchReader):
    """The non-empty batches of a stream; a query failing on a later row is an SQL error."""
    while True:
        try:
            batch = reader.read_next_batch()
        except StopIteration:
            return
        except (duckdb.Error, pa.ArrowException, OSError) as error:   # DuckDB's error, through Arrow
            raise CatalogError(f"SQL error: {error_summary(error, lines=2)}; nothing written") from None
        if batch.num_rows:
            yield batch


# -- Parquet ----------------------------------------------------------------------------------

def _write_parquet(con, plan: Plan, path: Path, batch_rows: int, tracker: _Tracker) -> dict:
    import pyarrow.parquet as pq

    reader = _stream(con, plan.sql, batch_rows)
    try:
        schema = reader.schema
        length = plan.fixed_length
        if length is not None:
            index = schema.get_field_index("weights")
            value_type = schema.field(index).type.value_type
            schema = schema.set(index, pa.field("weights", pa.list_(value_type, length)))
        strings = [f.name for f in schema if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)]
        stats = [f.name for f in schema if f.name != "weights"]
        with pq.ParquetWriter(path, schema, compression="zstd", compression_level=1,
                              use_dictionary=strings, write_statistics=stats) as writer:
            for batch in _batches(reader):
                writer.write_table(pa.Table.from_batches([batch]).cast(schema))
                tracker.update(batch)
    finally:
        reader.close()
    if not plan.has_weights:
        layout = {"type": "none", "note": "no float-list `weights` column in the selection"}
    elif length is not None:
        layout = {"type": "fixed_size_list", "length": length}
    else:
        layout = {"type": "list", "lengths": sorted(n for n in plan.lengths if n is not None),
                  "note": "mixed kernel sizes: variable-length lists (use kh, kw); export one size "
                          "per file for FixedSizeList"}
    return {"weights_layout": layout, "columns_written": [{"name": f.name, "arrow_type": str(f.type)} for f in schema]}


# -- CSV --------------------------------------------------------------------------------------

_CSV_NATIVE = (pa.types.is_integer, pa.types.is_floating, pa.types.is_boolean, pa.types.is_string,
               pa.types.is_large_string, pa.types.is_timestamp, pa.types.is_date, pa.types.is_time,
               pa.types.is_decimal, pa.types.is_null)


def _json_cell(value):
    from kernel_catalog.store.output import json_safe

    return None if value is None else json.dumps(json_safe(value), default=str)


def _value_matrix(column: pa.Array, width: int, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """(rows, width) values of a list column and a mask of cells past each list's end (or NULL)."""
    lengths = pc.list_value_length(column).fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
    flat = column.flatten().to_numpy(zero_copy_only=False).astype(dtype, copy=False)
    n = len(column)
    matrix = np.zeros((n, width), dtype)
    if n and width and lengths.min() == lengths.max() == width:
        matrix[:] = flat.reshape(n, width)
    elif flat.size:
        rows = np.repeat(np.arange(n), lengths)
        starts = np.cumsum(lengths) - lengths
        matrix[rows, np.arange(flat.size) - np.repeat(starts, lengths)] = flat
    return matrix, np.arange(width)[None, :] >= lengths[:, None]


def _write_csv(con, plan: Plan, path: Path, batch_rows: int, tracker: _Tracker) -> dict:
    import pyarrow.csv as pacsv

    reader = _stream(con, plan.sql, batch_rows)
    try:
        source = reader.schema
        width = max((n for n in plan.lengths if n is not None), default=0) if plan.has_weights else 0
        fields, json_columns = [], []
        for f in source:
            if plan.has_weights and f.name == "weights":
                value_type = f.type.value_type
                fields += [pa.field(f"w{i}", value_type) for i in range(width)]
            elif any(test(f.type) for test in _CSV_NATIVE):
                fields.append(f)
            else:
                fields.append(pa.field(f.name, pa.string()))
                json_columns.append(f.name)
        names = [f.name for f in fields]
        clash = sorted({n for n in names if names.count(n) > 1})
        if clash:
            raise CatalogError(f"export: column {clash[0]} clashes with the weight columns w0..w{width - 1}"
                               " of a CSV export; rename it in the query")
        schema = pa.schema(fields)
        options = pacsv.WriteOptions(include_header=True, quoting_style="needed")
        with pacsv.CSVWriter(path, schema, write_options=options) as writer:
            for batch in _batches(reader):
                columns = []
                for f in source:
                    column = batch.column(f.name)
                    if plan.has_weights and f.name == "weights":
                        dtype = np.dtype(f.type.value_type.to_pandas_dtype())
                        matrix, mask = _value_matrix(column, width, dtype)
                        columns += [pa.array(matrix[:, i], mask=mask[:, i]) for i in range(width)]
                    elif f.name in json_columns:
                        columns.append(pa.array([_json_cell(v) for v in column.to_pylist()], pa.string()))
                    else:
                        columns.append(column)
                writer.write_batch(pa.RecordBatch.from_arrays(columns, schema=schema))
                tracker.update(batch)
    finally:
        reader.close()
    return {"weights_layout": {"type": "columns", "columns": f"w0..w{width - 1}", "row_major": True,
                               "mixed_sizes": len([n for n in plan.lengths if n is not None]) > 1}
            if width else {"type": "none"},
            "json_columns": json_columns,
            "columns_written": [{"name": f.name, "arrow_type": str(f.type)} for f in schema]}


# -- NPZ --------------------------------------------------------------------------------------

def _npy_header(stream, dtype: np.dtype, shape: tuple[int, ...]) -> None:
    header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_1_0(stream, header)


def _check_npz(plan: Plan) -> None:
    missing = [c for c in ("weights", "kh", "kw") if c not in plan.columns]
    if missing or not plan.has_weights or not plan.sizes:
        what = ", ".join(missing) if missing else "weights as FLOAT[]/DOUBLE[], kh and kw as integers"
        raise CatalogError(f"export: --format npz needs the columns weights, kh and kw in the selection "
                           f"(missing: {what}); select them or use --format parquet")
    if plan.lengths.get(None):
        raise CatalogError(f"export: {plan.lengths[None]} selected rows have NULL weights, which an NPZ "
                           "cannot hold; add `weights IS NOT NULL` or use --format parquet")
    if plan.null_sizes or plan.bad_sizes:
        raise CatalogError(f"export: {plan.null_sizes + plan.bad_sizes} selected rows have NULL kh/kw or "
                           "weights that do not hold kh*kw values; an NPZ cannot hold them: use --format parquet")


def _index_arrays(plan: Plan) -> list[str]:
    kept = []
    for name in INDEX_COLUMNS:
        if name in plan.columns:
            kind = plan.types[plan.columns.index(name)]
            if kind == "VARCHAR" or kind in INTEGER_TYPES:
                kept.append(name)
    return kept


def _index_bytes(column: pa.Array, name: str, dtype: np.dtype) -> bytes:
    if column.null_count:
        raise CatalogError(f"export: column {name} has NULL values, which an NPZ index array cannot hold; "
                           f"filter them out or use --format parquet")
    values = column.to_numpy(zero_copy_only=False)
    return np.asarray(values, dtype=dtype).tobytes()


def _write_npz(con, plan: Plan, path: Path, batch_rows: int, tracker: _Tracker) -> dict:
    _check_npz(plan)
    single = len(plan.sizes) == 1
    index = _index_arrays(plan)
    index_dtypes: dict[str, np.dtype] = {}
    spills = {name: tempfile.TemporaryFile(dir=path.parent, prefix=f".{path.name}.spill-") for name in index}
    arrays = []
    try:
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
            for kh, kw, n in plan.sizes:
                name = "weights" if single else f"weights_{kh}x{kw}"
                reader = _stream(con, f"SELECT * FROM ({plan.sql}) AS export_size WHERE kh = {kh} AND kw = {kw}",
                                 batch_rows)
                try:
                    schema = reader.schema
                    dtype = np.dtype(schema.field("weights").type.value_type.to_pandas_dtype())
                    for column in index:
                        if column not in index_dtypes:
                            kind = schema.field(column).type
                            index_dtypes[column] = (np.dtype(f"<U{plan.widths.get(column, 1)}")
                                                    if pa.types.is_string(kind) else np.dtype(kind.to_pandas_dtype()))
                    written = 0
                    with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                        _npy_header(member, dtype, (n, kh, kw))
                        for batch in _batches(reader):
                            column = batch.column("weights")
                            flat = column.flatten().to_numpy(zero_copy_only=False).astype(dtype, copy=False)
                            if column.null_count or flat.size != batch.num_rows * kh * kw:
                                raise CatalogError("export: the selection changed between passes (a "
                                                   "non-deterministic query?); nothing written")
                            written += batch.num_rows
                            if written > n:
                                break
                            member.write(flat.tobytes())
                            for column_name in index:
                                spills[column_name].write(_index_bytes(batch.column(column_name), column_name,
                                                                       index_dtypes[column_name]))
                            tracker.update(batch)
                        if written != n:
                            raise CatalogError(
                                f"export: the selection returned {written} {kh}x{kw} rows, {n} a moment before "
                                "(a non-deterministic query, e.g. USING SAMPLE without REPEATABLE?); nothing written")
                finally:
                    reader.close()
                arrays.append({"name": name, "shape": [n, kh, kw], "dtype": dtype.str, "kh": kh, "kw": kw})
            total = sum(n for _, _, n in plan.sizes)
            for column_name in index:
                spill = spills[column_name]
                spill.seek(0)
                with archive.open(f"{column_name}.npy", "w", force_zip64=True) as member:
                    _npy_header(member, index_dtypes[column_name], (total,))
                    shutil.copyfileobj(spill, member, 1 << 20)
                arrays.append({"name": column_name, "shape": [total], "dtype": index_dtypes[column_name].str})
    finally:
        for spill in spills.values():
            spill.close()
    left_out = [c for c in plan.columns if c not in ("weights", "kh", "kw", *index)]
    return {"weights_layout": {"type": "npz", "arrays": [a["name"] for a in arrays if a["name"].startswith("weights")],
                               "order": "index arrays follow the weights arrays in the order listed"},
            "npz": {"arrays": arrays, "left_out_columns": left_out}}


_WRITERS = {"parquet": _write_parquet, "csv": _write_csv, "npz": _write_npz}


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
    manifest = manifest_path_for(target)
    for existing in (target, manifest):
        if existing.exists() and not force:
            raise CatalogError(f"export: {existing} already exists; pass --force to overwrite it")
    return target


def _temporary(target: Path) -> Path:
    return target.with_name(f".{target.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def _remove_stale_temporaries(target: Path) -> None:
    """Delete temporary files of earlier exports to this name whose process is gone (SIGKILL)."""
    for name in (target.name, manifest_path_for(target).name):
        for path in target.parent.glob(f".{glob_escape(name)}.tmp-*"):
            pid = path.name.rsplit(".tmp-", 1)[-1].split("-")[0]
            if pid.isdigit() and not _alive(int(pid)):
                path.unlink(missing_ok=True)


def glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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
        con.execute("SET enable_progress_bar = false")   # one bar: ours, counting rows written
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
            tracker = _Tracker(plan.row_count, progress)
            try:
                details = _WRITERS[fmt](con, plan, data_tmp, batch_rows, tracker)
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
