"""The manifest written beside every export (`FILE.manifest.json`): enough to reproduce the file.

It records the exact SQL streamed and what the user gave (--query / --where), the rows written
(per kernel size), the columns and types, the catalog (path, schema version) and the package
version, the creation time (UTC), the checksum of the exported file, every checkpoint the rows
come from (model, sha256 of its depthwise weights, adapter, source, trained) and every analysis
run involved with its parameters, metrics and parents (recursively), and a command line that
writes the same file again from the same catalog.
"""
from __future__ import annotations

import json
import re
import shlex
from datetime import datetime, timezone
from pathlib import Path

import duckdb

from kernel_catalog._version import __version__
from kernel_catalog.store import current_version
from kernel_catalog.store.output import json_safe

# DuckDB integer type names (the manifest and the export both ask whether a column is one)
INTEGER_TYPES = ("BIGINT", "INTEGER", "SMALLINT", "TINYINT", "UBIGINT", "UINTEGER", "USMALLINT", "UTINYINT")



def _rows(con: duckdb.DuckDBPyConnection, sql: str, params: list | None = None) -> list[dict]:
    relation = con.execute(sql, params or [])
    names = [d[0] for d in relation.description]
    return [dict(zip(names, row)) for row in relation.fetchall()]


def involved_checkpoints(con: duckdb.DuckDBPyConnection, plan, seen_models: set[str]) -> list[dict] | None:
    """The models the exported rows come from, with their checkpoint digest, adapter and source.

    Through the exported kernel_ids when selected (a semi-join with `kernels`), else through the
    `model` values seen; None when the selection has neither column.
    """
    if "kernel_id" in plan.columns and plan.types[plan.columns.index("kernel_id")] in INTEGER_TYPES:
        models = [r["model"] for r in _rows(
            con, f"SELECT DISTINCT model FROM kernels WHERE kernel_id IN "
                 f"(SELECT kernel_id FROM ({plan.sql}) AS s) ORDER BY model")]
    elif "model" in plan.columns:
        models = sorted(seen_models)
    else:
        return None
    return _rows(con, """
        SELECT model, checkpoint_sha256, adapter, adapter_version, trained, source, n_kernels, ingested_at
        FROM models WHERE list_contains(?, model) ORDER BY model""", [models])


def _literals(sql: str) -> set[str]:
    return {m.replace("''", "'") for m in re.findall(r"'((?:[^']|'')*)'", sql)}


def involved_runs(con: duckdb.DuckDBPyConnection, sql: str, seen_runs: set[str]) -> list[dict]:
    """Runs named in the exported `run` column or as a string literal of the query, plus their
    parents (recursively), each with params, metrics and how it got here (`via`)."""
    records = {r["run"]: r for r in _rows(con, """
        SELECT run, kind, parent, selection, params, metrics, code_version, device, created_at, seconds
        FROM run_records ORDER BY created_at""")}
    queue = [(name, "run column") for name in sorted(seen_runs) if name in records]
    queue += [(name, "query literal") for name in sorted(_literals(sql)) if name in records and name not in seen_runs]
    found: dict[str, dict] = {}
    while queue:
        name, via = queue.pop(0)
        if name in found:
            continue
        record = dict(records[name])
        for key in ("params", "metrics"):
            record[key] = json.loads(record[key]) if record[key] else {}
        record["via"] = via
        found[name] = record
        if record["parent"] in records:
            queue.append((record["parent"], f"parent of {name}"))
    return list(found.values())


def reproduce_command(catalog_root: Path, fmt: str, target: Path, query: str | None, where: str | None) -> str:
    selection = ["--query", query] if query is not None else ["--where", where]
    return shlex.join(["catalog", "--catalog", str(catalog_root), "export", *selection,
                       "--format", fmt, "-o", str(target), "--force"])


def build_manifest(con, catalog, *, fmt, target: Path, plan, query, where, rows: int, seen: dict,
                   details: dict, file_sha256: str, file_bytes: int) -> dict:
    manifest = {
        "format": fmt,
        "file": target.name,
        "file_sha256": file_sha256,
        "file_bytes": file_bytes,
        "row_count": rows,
        "query": plan.sql,
        "user_query": query,
        "where": where,
        "sizes": [{"kh": kh, "kw": kw, "rows": n} for kh, kw, n in plan.sizes],
        "columns": [{"name": name, "type": kind} for name, kind in zip(plan.columns, plan.types)],
        **details,
        "catalog": str(catalog.root),
        "schema_version": current_version(con),
        "package": "kernel-catalog",
        "package_version": __version__,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "checkpoints": involved_checkpoints(con, plan, seen["model"]),
        "runs": involved_runs(con, plan.sql, seen["run"]),
        "reproduce": reproduce_command(catalog.root, fmt, target, query, where),
    }
    return json_safe(manifest)


def write_json(path: Path, manifest: dict) -> None:
    path.write_text(json.dumps(manifest, indent=2, default=str, allow_nan=False) + "\n")


def read_manifest(path) -> dict:
    return json.loads(Path(path).read_text())
