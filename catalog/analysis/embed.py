"""`catalog embed`: train one autoencoder per kernel size on a selection, store embeddings.

Per size: preprocess (one pure function), train (or reuse a run's model with --from-model),
encode every kernel, mark classified by the size's threshold, and run the same protocol on an
iid Gaussian control of the same shape and count (the null model every report shows).
Results are appended as a run: embeddings Parquet + the autoencoder files + a runs row.
"""
from __future__ import annotations

import time
from dataclasses import asdict, replace as with_changes

import numpy as np
import pyarrow as pa

from kernel_catalog.analysis import autoencoder as ae
from kernel_catalog.errors import CatalogError
from kernel_catalog.analysis.null_model import run_control
from kernel_catalog.analysis.params import EmbedParams, available_cores
from kernel_catalog.analysis.preprocess import preprocess
from kernel_catalog.store.results import EMBEDDING_SCHEMA
from kernel_catalog.analysis.runs import RunRecord, check_new_run, commit_run, require_run, result_paths
from kernel_catalog.analysis.selection import KernelSelection
from kernel_catalog.store import Catalog

# Above this many kernels of one size, training streams batches from Parquet instead of
# holding the selection in memory (memory bound: the autoencoder's shuffle buffer, 2^19 rows).
STREAM_ABOVE = 2_000_000


def size_key(kh: int, kw: int) -> str:
    return f"{kh}x{kw}"


def _stream_factory(selection: KernelSelection, kh: int, kw: int, method: str):
    def factory():
        for _, weights in selection.batches(kh, kw):
            x, usable = preprocess(weights, method)
            if usable.any():
                yield x[usable]
    return factory


def load_run_models(catalog: Catalog, run: str, device: str = "cpu") -> dict[str, ae.TrainedAutoencoder]:
    """The autoencoders an embed run saved, by size key ('7x7')."""
    models = {}
    for path in result_paths(catalog, run, "autoencoder"):
        model = ae.load(path, device=device)
        models[size_key(model.config["kh"], model.config["kw"])] = model
    return models


def _null_metrics(n: int, kh: int, kw: int, params: EmbedParams, progress: bool) -> dict:
    """Same protocol on iid Gaussian kernels of the same shape and count: own model, same seed."""
    kwargs = params.train_kwargs(progress)
    kwargs.pop("seed")
    control = run_control(n, kh, kw, seed=params.seed, threshold=params.threshold(kh, kw),
                          method=params.preprocess, **kwargs)
    return {"null_classified": control.classified_fraction, "null_final_loss": control.model.final_loss,
            "null_n": n}


def embed(
    catalog: Catalog,
    run: str,
    where: str | None = None,
    params: EmbedParams = EmbedParams(),
    from_model: str | None = None,
    replace: bool = False,
    progress: bool = True,
    echo=lambda line: None,
) -> dict:
    """Run the embedding step; returns the run's metrics (per kernel size)."""
    started = time.perf_counter()
    params = with_changes(params, threads=params.threads or available_cores())   # recorded as used
    check_new_run(catalog, run, replace)
    ae.resolve_device(params.device)     # --device cuda without CUDA fails before any work
    parent = require_run(catalog, from_model, "embed") if from_model else None
    reused = load_run_models(catalog, from_model, params.device) if from_model else {}
    selection = KernelSelection(catalog, where)
    try:
        sizes = selection.sizes()
        if not sizes:
            raise CatalogError(f"the selection --where {where!r} matches no kernels; check it with `catalog sql`")
        missing = [size_key(kh, kw) for kh, kw, _ in sizes if from_model and size_key(kh, kw) not in reused]
        if missing:
            raise CatalogError(f"run '{from_model}' has no autoencoder for {', '.join(missing)}; "
                               "narrow --where to its kernel sizes or train a new run")
        tables, blobs, metrics, device = [], {}, {}, None
        for kh, kw, n in sizes:
            key = size_key(kh, kw)
            echo(f"{key}: {n} kernels")
            ids, weights = selection.load(kh, kw) if n <= STREAM_ABOVE else (None, None)
            if key in reused:
                model = reused[key]
            else:
                if weights is not None:
                    x, usable = preprocess(weights, params.preprocess)
                    data = x[usable]
                else:
                    data = _stream_factory(selection, kh, kw, params.preprocess)
                model = ae.train_autoencoder(data, kh, kw, **params.train_kwargs(progress))
                blobs[f"autoencoder:{key}"] = lambda path, m=model: ae.save(m, path)
            device = model.device
            chunks = [(ids, weights)] if weights is not None else selection.batches(kh, kw)
            size_table, stats = _encode_chunks(model, chunks, kh, kw, params)
            tables.append(size_table)
            metrics[key] = {"n": n, **stats, "threshold": params.threshold(kh, kw),
                            "final_loss": model.final_loss, "epochs": model.config["epochs"]}
            if params.null_model and not from_model and stats["usable"]:
                echo(f"{key}: null model: the same protocol on {stats['usable']} iid Gaussian kernels")
                metrics[key].update(_null_metrics(stats["usable"], kh, kw, params, progress))
            elif parent is not None:   # reused models: the parent run's null model applies
                parent_metrics = parent["metrics"].get(key, {})
                metrics[key].update({k: v for k, v in parent_metrics.items() if k.startswith("null_")})
            echo(f"{key}: classified {metrics[key]['classified']:.1%}"
                 + (f" vs null {metrics[key]['null_classified']:.1%}" if "null_classified" in metrics[key] else ""))
    finally:
        selection.close()
    record = RunRecord(run, "embed", {**asdict(params), "hidden": list(params.hidden)}, parent=from_model,
                       selection=where, metrics=metrics, device=device, seconds=time.perf_counter() - started)
    commit_run(catalog, record, {"embeddings": pa.concat_tables(tables)}, blobs, replace=replace)
    return metrics


def _encode_chunks(model, chunks, kh: int, kw: int, params: EmbedParams) -> tuple[pa.Table, dict]:
    """Embed every kernel (usable or not) of one size; unusable rows get NULL z."""
    parts, usable_total, classified_total, n_total = [], 0, 0, 0
    threshold = params.threshold(kh, kw)
    for ids, weights in chunks:
        x, usable = preprocess(weights, params.preprocess)
        z, _, recon_cos = ae.encode(model, x, threads=params.threads)
        recon_cos = np.where(usable, recon_cos, np.nan).astype(np.float32)
        d = z.shape[1]
        offsets = np.arange(0, (len(z) + 1) * d, d, dtype=np.int32)
        z_column = pa.ListArray.from_arrays(pa.array(offsets), pa.array(z.reshape(-1)), mask=pa.array(~usable))
        parts.append(pa.table([
            pa.array(ids, pa.int64()), pa.array(np.full(len(ids), kh, np.int16)),
            pa.array(np.full(len(ids), kw, np.int16)), z_column,
            pa.array(recon_cos, mask=~usable), pa.array(usable),
        ], schema=EMBEDDING_SCHEMA))
        usable_total += int(usable.sum())
        classified_total += int(ae.classified(recon_cos[usable], threshold).sum())
        n_total += len(ids)
    stats = {"usable": usable_total, "classified": classified_total / max(usable_total, 1)}
    return pa.concat_tables(parts), stats
