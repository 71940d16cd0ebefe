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
    # The kernel's own best match, structured (migration 0005; files written before read NULL):
    ("kernel_family", pa.string()),       # dog, deriv1, deriv2, saddle, impulse, square, cross, or a user template
    ("kernel_polarity", pa.string()),     # pos / neg; NULL for deriv1, saddle, user templates
    ("kernel_orientation", pa.float32()), # degrees CCW from +x, y up; NULL for isotropic shapes
    ("kernel_scale", pa.float32()),       # sigma (px), box half-size or arm length; NULL otherwise
    # How clearly the kernel's own family wins (migration 0008; files written before read NULL):
    ("kernel_margin", pa.float32()),      # its adjusted cosine minus the next family's; NULL: one family
])

# One row per (run, size, cluster) in cluster_records (DuckDB), inserted by name.
CLUSTER_SCHEMA = pa.schema([
    ("kh", pa.int32()), ("kw", pa.int32()), ("cluster", pa.int32()),
    ("label", pa.string()),               # readable name; 'a|b' when the margin is below the ambiguity threshold
    ("template", pa.string()), ("score", pa.float64()), ("n_kernels", pa.int64()),
    ("share", pa.float64()), ("mean_kernel", pa.list_(pa.float32())), ("medoid_kernel_id", pa.int64()),
    ("margin", pa.float64()),             # best family's cosine minus the next family's (migration 0004)
    ("family", pa.string()), ("polarity", pa.string()),          # migration 0005
    ("orientation", pa.float64()), ("scale", pa.float64()),
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


def dataset_view_sql(paths: list[str], schema: pa.Schema, partition: str, columns: list[str],
                     present: set[str] | None = None) -> str:
    """SELECT over exactly these Parquet files (hive partition `partition`), or an empty typed row set.

    present: the columns some file has (None: all); a column no file has yet (files written
    before a schema change) reads as a typed NULL, so old runs stay readable."""
    types = {f.name: duckdb_type(f) for f in schema}
    types[partition] = "VARCHAR"
    if not paths:
        return "SELECT " + ", ".join(f"NULL::{types[c]} AS {c}" for c in columns) + " WHERE false"
    files = "[" + ", ".join(sql_string(p) for p in paths) + "]"
    select = [c if present is None or c in present or c == partition else f"NULL::{types[c]} AS {c}"
              for c in columns]
    return (f"SELECT {', '.join(select)} FROM read_parquet({files}, hive_partitioning = true, "
            f"hive_types = {{'{partition}': VARCHAR}}, union_by_name = true)")
