"""Rows out: an Arrow table as an aligned text table, CSV, JSON or Parquet (stdout or a file).

Files are written under a temporary name and renamed, so a failed write never leaves a partial
file under the name the user asked for.
"""
from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import TextIO

import pyarrow as pa
import pyarrow.parquet as pq

from kernel_catalog.store.atomic import staged_file
from kernel_catalog.store.targets import output_file
from kernel_catalog.errors import CatalogError

FORMATS = ("table", "csv", "json", "parquet")
TEXT_FORMATS = FORMATS[:3]   # what can go to a terminal
_SUFFIX_FORMATS = {".csv": "csv", ".json": "json", ".parquet": "parquet", ".txt": "table"}


def format_for(path: str | None, requested: str | None) -> str:
    """The output format: as requested, else from the file suffix, else a text table."""
    if requested:
        if requested not in FORMATS:
            raise CatalogError(f"unknown format '{requested}'; use one of {', '.join(FORMATS)}")
        return requested
    if path:
        suffix = Path(path).suffix.lower()
        if suffix not in _SUFFIX_FORMATS:
            raise CatalogError(f"{path}: cannot tell the format from '{suffix}'; pass --format")
        return _SUFFIX_FORMATS[suffix]
    return "table"


def json_safe(value):
    """JSON-safe Python value: NaN/Inf become null (JSON has no such numbers)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, list):
        return [json_safe(v) for v in value]
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


def json_text(value) -> str:
    """JSON for a metadata column (layer meta, run params): numpy values as lists, keys sorted."""
    return json.dumps(value, default=lambda v: v.tolist() if hasattr(v, "tolist") else str(v), sort_keys=True)


def to_json(table: pa.Table) -> str:
    """One JSON array of row objects."""
    return json.dumps([json_safe(row) for row in table.to_pylist()], default=str)


def to_csv(table: pa.Table) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(table.column_names)
    for row in table.to_pylist():
        writer.writerow([json.dumps(json_safe(v)) if isinstance(v, (list, dict)) else
                         ("" if v is None else v) for v in row.values()])
    return buffer.getvalue()


def _cell(value, width: int = 48) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, float):
        text = f"{value:.6g}"
    elif isinstance(value, list):
        shown = ", ".join(_cell(v, 12) for v in value[:4])
        text = f"[{shown}{', …' if len(value) > 4 else ''}] ({len(value)})" if len(value) > 4 else f"[{shown}]"
    else:
        text = str(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def to_text_table(table: pa.Table, max_rows: int = 200) -> str:
    """Aligned columns for the terminal; long lists and strings are shortened."""
    rows = [[_cell(v) for v in row.values()] for row in table.slice(0, max_rows).to_pylist()]
    header = table.column_names
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(header)]
    numeric = [pa.types.is_integer(f.type) or pa.types.is_floating(f.type) for f in table.schema]

    def line(cells):
        return "  ".join(c.rjust(w) if num else c.ljust(w) for c, w, num in zip(cells, widths, numeric)).rstrip()

    out = [line(header), line(["-" * w for w in widths])] + [line(r) for r in rows]
    if table.num_rows > max_rows:
        out.append(f"… {table.num_rows - max_rows} more rows (use --format csv/json/parquet or -o FILE for all)")
    return "\n".join(out) + "\n"


def write_rows(table: pa.Table, fmt: str, path: str | None, stream: TextIO, force: bool = False) -> None:
    """Write `table` in `fmt` to `path` (atomically; an existing file only with `force`) or to `stream`."""
    if fmt == "parquet" and path is None:
        raise CatalogError("--format parquet needs -o FILE (Parquet is binary)")
    if path is None:
        stream.write({"table": to_text_table, "csv": to_csv, "json": lambda t: to_json(t) + "\n"}[fmt](table))
        return
    target = output_file(path, force)
    try:
        with staged_file(target, durable=False) as temporary:
            if fmt == "parquet":
                pq.write_table(table, temporary, compression="zstd")
            else:
                temporary.write_text({"table": to_text_table, "csv": to_csv, "json": to_json}[fmt](table))
    except OSError as error:
        raise CatalogError(f"{path}: cannot write ({error.strerror}); choose a writable path") from None
