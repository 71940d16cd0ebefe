"""The export formats: plan a selection, then stream it into Parquet, CSV or NPZ.

Planning (`plan_selection`) runs the cheap queries first: row count, kernel sizes, column types,
string widths for NPZ. Each writer (`WRITERS[fmt]`) then streams the selection in batches into
one file and returns what the manifest records about its layout; `Tracker` counts rows and
shows progress. See `kernel_catalog.export.export` for the atomic file handling around them.
"""
from __future__ import annotations

import json
import re
import shutil
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from kernel_catalog.errors import CatalogError, error_summary
from kernel_catalog.export.manifest import INTEGER_TYPES
from kernel_catalog.store.faults import crash_point

INDEX_COLUMNS = ("kernel_id", "model", "layer", "channel")   # the 1-D arrays of an NPZ export
_FLOAT_LIST = re.compile(r"^(FLOAT|DOUBLE)\[(\d*)\]$")


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


class Tracker:
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

def _write_parquet(con, plan: Plan, path: Path, batch_rows: int, tracker: Tracker) -> dict:
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


def _write_csv(con, plan: Plan, path: Path, batch_rows: int, tracker: Tracker) -> dict:
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


def _write_npz(con, plan: Plan, path: Path, batch_rows: int, tracker: Tracker) -> dict:
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


WRITERS = {"parquet": _write_parquet, "csv": _write_csv, "npz": _write_npz}
