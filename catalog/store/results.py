"""Schemas of the analysis result datasets and how their views read them.

Results are Parquet files under results/run=<name>/, one row per (run, kernel_id); the `run`
column comes from the hive partition. Like `kernels`, each view lists exactly the committed files.
"""
from __future__ import annotations

import pyarrow as pa

EMBEDDING_SCHEMA = pa.schema([
    ("kernel_id", pa.int64()),
    ("kh", pa.int16()),
    ("kw", pa.int16()),
    ("z", pa.list_(pa.float32())),        # latent coordinates; NULL for kernels not usable
    ("recon_cos", pa.float32()),          # cosine(preprocessed kernel, its reconstruction)
    ("usable", pa.bool_()),               # false: NaN/Inf or near-zero, excluded from training
])

LABEL_SCHEMA = pa.schema([
    ("kernel_id", pa.int64()),
    ("kh", pa.int16()),
    ("kw", pa.int16()),
    ("cluster", pa.int32()),              # NULL for kernels not usable
    ("label", pa.string()),               # the cluster's name (template family or 'unmatched')
    ("kernel_label", pa.string()),        # the kernel's own best template family
    ("score", pa.float32()),              # cosine of the kernel with its own best template
    ("recon_cos", pa.float32()),
    ("classified", pa.bool_()),           # 1 - recon_cos below the size's threshold
])

DATASETS = {"embeddings": EMBEDDING_SCHEMA, "labels": LABEL_SCHEMA}

_DUCKDB_TYPES = {
    "int64": "BIGINT", "int32": "INTEGER", "int16": "SMALLINT", "string": "VARCHAR",
    "bool": "BOOLEAN", "double": "DOUBLE", "float": "FLOAT", "list<item: float>": "FLOAT[]",
}


def duckdb_type(field: pa.Field) -> str:
    return _DUCKDB_TYPES[str(field.type)]


def sql_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def dataset_view_sql(paths: list[str], schema: pa.Schema, partition: str, columns: list[str]) -> str:
    """SELECT over exactly these Parquet files (hive partition `partition`), or an empty typed row set."""
    if not paths:
        types = {f.name: duckdb_type(f) for f in schema}
        types[partition] = "VARCHAR"
        return "SELECT " + ", ".join(f"NULL::{types[c]} AS {c}" for c in columns) + " WHERE false"
    files = "[" + ", ".join(sql_string(p) for p in paths) + "]"
    return (f"SELECT {', '.join(columns)} FROM read_parquet({files}, hive_partitioning = true, "
            f"hive_types = {{'{partition}': VARCHAR}}, union_by_name = true)")
