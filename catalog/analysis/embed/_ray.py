"""`catalog embed --ray ADDRESS`: encoding with Ray Data `map_batches`.

The autoencoder is trained on the driver exactly as in-process (in memory up to 2 M kernels of a
size, streamed from Parquet above), so its weights are the same; encoding, the part that grows
with the catalog, reads the committed Parquet (local or on the data root URI) as a Ray dataset
and runs in tasks (fractional CPUs, never an actor pool that takes every CPU: those can starve
the read tasks). Each batch applies the selection's WHERE with DuckDB over the Arrow batch and
goes through the same encoding function as the in-process path, so embeddings agree to float
rounding (within 1e-5 on CPU). Each task writes its batch's embeddings as one Parquet part under
a new unique name into the data root and returns only the part's path, row count and the
usable kernels' recon_cos (4 bytes a kernel, for the classified shares): the driver records the
parts at commit and never holds the embeddings (at 10^9 kernels, ~40 GB). The driver holds the
writer lock meanwhile, so no other writer removes the parts as orphans; a retried task's dead
attempt leaves an orphan part, removed at the end of the run.

Cluster runs with --ray go through `analysis.cluster` (its own `_ray`: blocks as Ray tasks).
"""
from __future__ import annotations

from urllib.parse import unquote

import duckdb
import numpy as np
import pyarrow as pa

from kernel_catalog.analysis.selection import weight_rows
from kernel_catalog.store import Catalog
from kernel_catalog.store.ray_runtime import MAX_RETRIES, connect, require_shared_data
from kernel_catalog.store.results import EMBEDDING_SCHEMA

PART_ROWS = 1 << 18     # kernels per embeddings part a task writes (~8 MB of Parquet at a 2-D latent)
PART_SCHEMA = pa.schema([("path", pa.string()), ("rows", pa.int64()), ("size", pa.int64()),
                         ("sha256", pa.string()), ("recon_cos", pa.list_(pa.float32()))])


def training_sample(catalog: Catalog, paths: list[str], where: str, kh: int, kw: int, rows: int,
                    seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A bounded, seeded sample (reservoir, `rows` kernels, one thread: repeatable) of one size of
    the selection, to train on when the selection is too large to hold; (kernel_ids, weights)."""
    con = catalog.data_connection(config={"threads": 1})
    try:
        catalog.kernels_view(con, paths)
        # (a subquery: DuckDB applies USING SAMPLE before a WHERE at the same level)
        table = con.sql(f"SELECT * FROM (SELECT kernel_id, weights FROM kernels WHERE ({where}) AND kh = {int(kh)} "
                        f"AND kw = {int(kw)}) USING SAMPLE reservoir({int(rows)} ROWS) REPEATABLE ({int(seed)})"
                        ).to_arrow_table()
    finally:
        con.close()
    table = table.sort_by("kernel_id")
    return table.column("kernel_id").to_numpy(), weight_rows(table.column("weights"), kh * kw)


def _encode_batch(batch: pa.Table, model, kh: int, kw: int, where: str, params, gpu: bool = False) -> pa.Table:
    if gpu:
        import dataclasses

        import torch

        if torch.cuda.is_available():
            model = dataclasses.replace(model, module=model.module.to("cuda"), device="cuda")
    # the in-process path's own encoding and weight reading, so both give the same values
    from kernel_catalog.analysis.embed import _run

    if "model" in batch.column_names:      # the hive partition value, as DuckDB decodes it
        batch = batch.set_column(batch.column_names.index("model"), "model",
                                 pa.array([unquote(m) for m in batch.column("model").to_pylist()], pa.string()))
    con = duckdb.connect()
    try:
        con.register("kernels", batch)
        rows = con.sql(f"SELECT kernel_id, weights FROM kernels WHERE ({where}) "
                       f"AND kh = {int(kh)} AND kw = {int(kw)}").to_arrow_table()
    finally:
        con.close()
    if rows.num_rows == 0:
        return EMBEDDING_SCHEMA.empty_table()
    ids = rows.column("kernel_id").to_numpy()
    weights = weight_rows(rows.column("weights"), kh * kw)
    table, _ = _run._encode_chunks(model, [(ids, weights)], kh, kw, params)
    return table


def _encode_part(batch: pa.Table, model, kh: int, kw: int, where: str, params, gpu: bool,
                 run: str, local_root: str, uri: str | None) -> pa.Table:
    """The task body: encode one batch, write it as an embeddings part, return its PART_SCHEMA row."""
    from pathlib import Path

    from kernel_catalog.analysis.runs import write_part
    from kernel_catalog.store.datafs import DataRoot
    from kernel_catalog.store.faults import crash_once

    table = _encode_batch(batch, model, kh, kw, where, params, gpu)
    if table.num_rows == 0:
        return PART_SCHEMA.empty_table()
    part = write_part(DataRoot(Path(local_root), uri), run, "embeddings", table)
    crash_once("ray-embed-part-written")
    recon_cos = table.column("recon_cos").drop_null().cast(pa.float32()).combine_chunks()
    one_list = pa.ListArray.from_arrays(pa.array([0, len(recon_cos)], pa.int32()), recon_cos)
    return pa.table([[part.path], [part.rows], [part.size], [part.sha256], one_list], schema=PART_SCHEMA)


def ray_encoder(catalog: Catalog, paths: list[str], where: str, address: str, run: str):
    """A function (model, kh, kw, params) -> (embeddings parts written, usable recon_cos) that
    encodes on Ray; call it while holding the catalog (`Catalog.hold`)."""
    from kernel_catalog.analysis.runs import StagedPart
    from kernel_catalog.store.ray_runtime import task_options

    data = catalog.data
    require_shared_data(data, address)
    ray = connect(address)
    files = [data.full(p) for p in paths]

    def encode(model, kh: int, kw: int, params) -> tuple[list[StagedPart], np.ndarray]:
        from dataclasses import replace

        ray.data.DataContext.get_current().enable_progress_bars = False
        dataset = ray.data.read_parquet(files, filesystem=data.fs, file_extensions=None)
        # GPU tasks when the cluster has GPUs (the model moves to the task's GPU), else half a CPU
        # each: never an actor pool that takes every CPU (it can starve the read tasks)
        gpus = ray.cluster_resources().get("GPU", 0) > 0
        written = dataset.map_batches(
            _encode_part, batch_format="pyarrow", batch_size=PART_ROWS, max_retries=MAX_RETRIES,
            **({"num_gpus": 1} if gpus else {"num_cpus": 0.5}), **task_options(),
            fn_kwargs={"model": model, "kh": kh, "kw": kw, "where": where, "gpu": gpus,
                       "params": replace(params, threads=1), "run": run,
                       "local_root": str(data.local_root), "uri": data.uri})
        rows = pa.concat_tables([PART_SCHEMA.empty_table()] + ray.get(written.to_arrow_refs())).to_pylist()
        parts = [StagedPart("embeddings", r["path"], r["rows"], r["size"], r["sha256"]) for r in rows]
        recon_cos = np.concatenate([np.asarray(r["recon_cos"], np.float64) for r in rows] or [np.empty(0)])
        return parts, recon_cos

    return encode
