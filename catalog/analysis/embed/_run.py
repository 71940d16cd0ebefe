"""`catalog embed`: train one autoencoder per kernel size on a selection, store embeddings.

Per size (and per model with `per_model`): preprocess (one pure function), train (or reuse a
run's model with --from-model), encode every kernel, score small groups held out (`cross_fit`; by
default those below MIN_VERDICT_KERNELS usable kernels, `EmbedParams.folds`), and run the same protocol on an iid
Gaussian control of the same shape and count, at most `NULL_SAMPLE` (2 M) kernels (the null model
every report shows; its size is `null_n` in the run's metrics). A held-out group's null is held out
too, without folds (its kernels are iid): one model trained on (K-1)/K of that count, scored on as
many fresh draws as the group has kernels (`null_model.held_out_null`). The null
also calibrates a threshold: the largest at which it is classified at most alpha of the time
(`params.calibrated_threshold`). Each size records its fixed (paper) and calibrated thresholds,
the classified share of the data and of the null at both, and which one it uses
(`EmbedParams.threshold_source`; `thresholds`). Results are appended as a run: embeddings Parquet + the
autoencoder files + a runs row.

The autoencoders of a size held in memory (its own, per model with `per_model`, each fold's, the
null's) train together (`ensemble.train_ensemble`: batched stacks, on CPU in lanes of threads; each
equals the model trained alone within float tolerance); a size streamed from Parquet, or encoded by
Ray, trains alone.
"""
from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, replace as with_changes

import numpy as np
import pyarrow as pa

from kernel_catalog.analysis.embed import autoencoder as ae, cross_fit, ensemble as ens
from kernel_catalog.analysis.embed.null_model import control_data, held_out_null, run_control
from kernel_catalog.analysis.embed.thresholds import POOLED, size_metrics
from kernel_catalog.analysis.params import MIN_VERDICT_KERNELS, EmbedParams, available_cores, size_key
from kernel_catalog.analysis.preprocess import preprocess
from kernel_catalog.analysis.runs import RunRecord, check_new_run, commit_run, require_run, result_paths, write_part
from kernel_catalog.analysis.selection import KernelSelection
from kernel_catalog.errors import CatalogError
from kernel_catalog.store import Catalog
from kernel_catalog.store.results import EMBEDDING_SCHEMA

# Above this many kernels of one size, training streams batches from Parquet instead of
# holding the selection in memory (memory bound: the autoencoder's shuffle buffer, 2^19 rows),
# and the embeddings are written as parts of PART_ROWS kernels while they are encoded.
STREAM_ABOVE = 2_000_000
# The null model is drawn in memory: at most this many iid Gaussian kernels per size (and model).
# Its job is a classified share and a calibrated quantile, which 2 M draws pin down to ~1e-3;
# a null of the selection's full count would not fit in memory at 10^8-10^9 kernels.
NULL_SAMPLE = 2_000_000
PART_ROWS = 1 << 18   # kernels per embeddings part when a size is streamed


def _stream_factory(selection: KernelSelection, kh: int, kw: int, method: str):
    def factory():
        for _, weights in selection.batches(kh, kw):
            x, usable = preprocess(weights, method)
            if usable.any():
                yield x[usable]
    return factory


def load_run_models(catalog: Catalog, run: str, device: str = "cpu") -> dict[str, dict[str | None, ae.TrainedAutoencoder]]:
    """The autoencoders an embed run saved: {size key: {model name (None: pooled): autoencoder}}."""
    models: dict[str, dict] = {}
    for path in result_paths(catalog, run, "autoencoder"):
        model = ae.load(path, device=device)
        models.setdefault(size_key(model.config["kh"], model.config["kw"]), {})[model.config.get("model")] = model
    return models


def _null(n: int, kh: int, kw: int, params: EmbedParams, progress: bool) -> np.ndarray:
    """Same protocol on iid Gaussian kernels of the same shape and count: own model, same seed,
    in sample (a group trained alone; `_plan` draws the null of groups trained together).
    Returns the null's dissimilarities (1 - cos)."""
    control = run_control(n, kh, kw, threshold=params.threshold(kh, kw), method=params.preprocess,
                          **params.train_kwargs(progress, kh, kw))
    return 1.0 - control.recon_cos.astype(np.float64)


def embed(
    catalog: Catalog,
    run: str,
    where: str | None = None,
    params: EmbedParams = EmbedParams(),
    from_model: str | None = None,
    replace: bool = False,
    progress: bool = True,
    echo=lambda line: None,
    ray: str | None = None,
) -> dict:
    """Run the embedding step; returns the run's metrics (per kernel size). ray: a Ray address
    ('local', 'auto', 'ray://host:port') to encode with Ray Data (`_ray`)."""
    started = time.perf_counter()
    params = with_changes(params, threads=params.threads or available_cores())   # recorded as used
    check_new_run(catalog, run, replace)
    ae.resolve_device(params.device)     # --device cuda without CUDA fails before any work
    parent = require_run(catalog, from_model, "embed") if from_model else None
    reused = load_run_models(catalog, from_model, params.device) if from_model else {}
    if parent is not None:
        params = with_changes(params, per_model=parent.embed_params().per_model)
    _check_cross_fit(params, from_model, ray)
    selection = KernelSelection(catalog, where)
    try:
        # Ray workers, and sizes streamed from Parquet, write their embeddings as parts into the
        # data root while the run goes on (memory: one part, never the size)
        streamed = any(n > STREAM_ABOVE for *_, n in selection.sizes()) and not params.per_model
        with catalog.hold() if ray or streamed else nullcontext():
            metrics, tables, parts, blobs, device = _embed_sizes(selection, run, where, params, from_model, parent,
                                                                 reused, progress, echo, ray)
            record = RunRecord(run, "embed", {**asdict(params), "hidden": list(params.hidden)}, parent=from_model,
                               selection=where, metrics=metrics, device=device,
                               seconds=time.perf_counter() - started)
            commit_run(catalog, record, {"embeddings": pa.concat_tables(tables)} if tables else {}, blobs,
                       replace=replace, parts=parts)
    finally:
        selection.close()
    return metrics


def _check_cross_fit(params: EmbedParams, from_model: str | None, ray: str | None) -> None:
    """An explicit --cross-fit K must be possible; auto (None) cross-fits what it can (never a
    reused run's models, never under Ray: those sizes are scored in sample and the report says so)."""
    if not params.cross_fit:
        return
    if params.cross_fit < 2:
        raise CatalogError(f"--cross-fit {params.cross_fit}: give 0 (off) or a number of folds, at least 2 (e.g. 5)")
    if from_model:
        raise CatalogError("--cross-fit trains new autoencoders on folds of the selection; "
                           "it cannot reuse a run's (--from-model): drop one of the two")
    if ray:
        raise CatalogError("--cross-fit runs in this process (it matters for small selections, "
                           "which need no cluster): drop --ray, or --cross-fit")


def _too_few_for_folds(which: str, folds: int) -> CatalogError:
    return CatalogError(f"too few kernels for --cross-fit {folds} (2 a fold): {which}; "
                        "use fewer folds or a wider --where")


def _embed_sizes(selection, run, where, params, from_model, parent, reused, progress, echo, ray):
    """Train and encode every size of the selection: (metrics, embeddings tables, parts written
    (by Ray workers, or per streamed batch), model file writers, device)."""
    catalog = selection.catalog
    encode = None
    if ray:
        from kernel_catalog.analysis.embed._ray import ray_encoder

        encode = ray_encoder(catalog, selection.paths, selection.where, ray, run)
    sizes = selection.sizes()
    if not sizes:
        raise CatalogError(f"the selection --where {where!r} matches no kernels; check it with `catalog sql`")
    missing = [size_key(kh, kw) for kh, kw, _ in sizes if from_model and size_key(kh, kw) not in reused]
    if missing:
        raise CatalogError(f"run '{from_model}' has no autoencoder for {', '.join(missing)}; "
                           "narrow --where to its kernel sizes or train a new run")
    few = [f"{size_key(kh, kw)} has only {n}" for kh, kw, n in sizes if params.cross_fit and n < 2 * params.cross_fit]
    if few:     # said before any work; a group short of usable kernels is caught in _plan
        raise _too_few_for_folds(", ".join(few), params.cross_fit)
    if params.per_model and any(n > STREAM_ABOVE for *_, n in sizes):
        raise CatalogError(f"--per-model holds each size in memory: more than {STREAM_ABOVE} kernels of one size")
    tables, parts, blobs, metrics, device = [], [], {}, {}, None
    for kh, kw, n in sizes:
        key = size_key(kh, kw)
        echo(f"{key}: {n} kernels" + (", one autoencoder per model" if params.per_model else ""))
        if params.per_model:
            ids, weights, names = selection.load(kh, kw, with_model=True)
            groups = [(m, names == m) for m in sorted(set(names))]
        else:
            if n <= STREAM_ABOVE:
                ids, weights = selection.load(kh, kw)
            elif encode is not None:   # Ray: train on a bounded seeded sample, encode every kernel
                from kernel_catalog.analysis.embed._ray import training_sample

                ids, weights = training_sample(catalog, selection.paths, selection.where, kh, kw,
                                               STREAM_ABOVE, params.seed)
            else:
                ids, weights = None, None
            groups = [(POOLED, None)]
        results, plans, group_n = {}, [], {}
        for name, rows in groups:
            part = (ids, weights) if rows is None else (ids[rows], weights[rows])
            group_n[name] = n if rows is None else len(part[0])
            if not from_model and part[1] is not None and (rows is not None or encode is None):
                plans.append(_plan(part, kh, kw, name, params, echo))     # in memory: trained together
            else:
                results[name] = _embed_alone(selection, part, kh, kw, name, params, reused.get(key, {}), blobs,
                                             progress, encode if rows is None else None, run, from_model, echo)
        if plans:
            trained = _train_together(plans, kh, kw, params, progress, blobs)
            echo(f"{key}: {len(trained)} autoencoder{'s' * (len(trained) > 1)} trained"
                 + (" together" if len(trained) > 1 else "") + f" ({max(m.config['steps'] for m in trained)} steps)")
        for plan in plans:
            results[plan.name] = _finish(plan, kh, kw, params)
        per_group = {}
        for name, _ in groups:
            model, table, recon_cos, in_sample, null_d, folds = results[name]
            device = model.device
            if isinstance(table, list):      # parts Ray workers wrote
                parts.extend(table)
            else:
                tables.append(table)
            per_group[name] = (recon_cos, null_d, model, group_n[name], in_sample, folds)
        metrics[key] = size_metrics(per_group, kh, kw, params, parent)
        m = metrics[key]
        echo(f"{key}: classified {m['classified']:.1%} at {m['threshold']:.3f} ({m['threshold_source']})"
             + (f" vs null {m['null_classified']:.1%}" if "null_classified" in m else "")
             + (f"; held out in {m['cross_fit']} folds (in sample: {m['classified_in_sample']:.1%})"
                if "cross_fit" in m else ""))
        if "cross_fit" in m and m.get("cross_fit_rule") == "auto":
            echo(f"{key}: scored held out by default: fewer than {MIN_VERDICT_KERNELS} usable kernels, whose "
                 "in-sample scores are memory (--cross-fit 0 scores them in sample)")
    return metrics, tables, parts, blobs, device


@dataclass
class _Plan:
    """One group of a size (every kernel, or one model's) trained in memory with the size's other
    groups as one ensemble (`ensemble`): its own model, its fold models, its null's."""

    name: str | None
    ids: np.ndarray
    weights: np.ndarray
    data: np.ndarray                    # the usable kernels, preprocessed, in the table's order
    x: np.ndarray                       # every kernel preprocessed (unusable ones zero), and which are usable:
    usable: np.ndarray                  # what encoding them needs, preprocessed once
    folds: int                          # 0: scored in sample
    fold: np.ndarray | None = None
    null_x: np.ndarray | None = None    # the kernels the null model trains on, preprocessed
    null_scored: np.ndarray | None = None   # held out: the fresh null kernels it is scored on
    model: ae.TrainedAutoencoder | None = None
    fold_models: list = field(default_factory=list)
    null_model: ae.TrainedAutoencoder | None = None


def _plan(part, kh: int, kw: int, name, params: EmbedParams, echo) -> _Plan:
    """Preprocess a group, choose its folds (`EmbedParams.folds`), draw its null."""
    ids, weights = part
    key = size_key(kh, kw)
    x, usable = preprocess(weights, params.preprocess)
    data = x[usable]
    folds = params.folds(len(data))
    if folds and len(data) < 2 * folds:     # before any training
        raise _too_few_for_folds(f"{key}{'' if name is None else f' of model {name}'} has only "
                                 f"{len(data)} usable", folds)
    plan = _Plan(name, ids, weights, data, x, usable, folds,
                 fold=cross_fit.fold_of(len(data), folds, params.seed) if folds else None)
    if params.null_model and len(data):
        null_n = min(len(data), NULL_SAMPLE)
        echo(f"{key}{'' if name is None else ' ' + name}: null model: the same protocol on "
             f"{null_n} iid Gaussian kernels" + ("" if null_n == len(data) else
                                                f" (a bounded null for {len(data)} kernels)"))
        if folds:       # iid: one model on (K-1)/K of the count, scored on fresh draws
            plan.null_x, plan.null_scored = held_out_null(null_n, kh, kw, folds, params.seed, params.preprocess)
        else:
            plan.null_x = control_data(null_n, kh, kw, params.seed, params.preprocess)
    return plan


def _train_together(plans: list[_Plan], kh: int, kw: int, params: EmbedParams, progress: bool,
                    blobs: dict) -> list[ae.TrainedAutoencoder]:
    """Every autoencoder the plans of one size need, trained as one ensemble: each group's own
    model, its fold models, its null's (one, in sample or held out: `_plan`)."""
    if not plans:
        return []
    key = size_key(kh, kw)
    members, slots = [], []
    for plan in plans:
        label = key + ("" if plan.name is None else f" {plan.name}")
        members.append(ens.Member(plan.data, None, params.seed, label))
        slots.append(lambda m, plan=plan: setattr(plan, "model", m))
        for f in range(plan.folds):
            members.append(ens.Member(plan.data, np.flatnonzero(plan.fold != f), params.seed,
                                      f"{label} fold {f + 1}"))
            slots.append(plan.fold_models.append)
        if plan.null_x is not None:
            members.append(ens.Member(plan.null_x, None, params.seed, f"{label} null"))
            slots.append(lambda m, plan=plan: setattr(plan, "null_model", m))
    kwargs = params.train_kwargs(progress, kh, kw)
    kwargs.pop("seed")
    trained = ens.train_ensemble(members, kh, kw, desc=f"autoencoders {key}", **kwargs)
    for slot, model in zip(slots, trained):
        slot(model)
    for plan in plans:
        if plan.name is not None:
            plan.model.config["model"] = plan.name
        blobs[f"autoencoder:{key}" + ("" if plan.name is None else f":{plan.name}")] = \
            lambda path, m=plan.model: ae.save(m, path)
    return trained


def _finish(plan: _Plan, kh: int, kw: int, params: EmbedParams):
    """Encode a trained plan's kernels: (model, embeddings table, usable recon_cos (held out when
    cross-fitted), in-sample recon_cos when cross-fitted else None, null dissimilarities, folds).
    Cross-fitted, recon_cos (returned and stored) is each kernel's held-out score; z comes from the
    model trained on every kernel; the null model scores fresh null kernels it never saw."""
    table, recon_cos = _encode_chunks(plan.model, [(plan.ids, plan.weights)], kh, kw, params,
                                      prepared=(plan.x, plan.usable))
    in_sample = None
    if plan.folds:
        held_out = cross_fit.score_held_out(plan.fold_models, plan.data, plan.fold, params.threads)
        table, in_sample, recon_cos = _with_held_out(table, held_out), recon_cos, held_out.astype(np.float64)
    null_d = None
    if plan.null_x is not None:
        scored = plan.null_x if plan.null_scored is None else plan.null_scored
        null_d = 1.0 - ae.encode(plan.null_model, scored, threads=params.threads)[2].astype(np.float64)
    return plan.model, table, recon_cos, in_sample, null_d, plan.folds


def _embed_alone(selection, part, kh, kw, name, params, reused, blobs, progress, encode, run, from_model, echo):
    """A group trained on its own (streamed from Parquet, or a sample for Ray) or reused
    (--from-model), scored in sample: (model, embeddings table or the parts written, usable
    recon_cos, None, null dissimilarities or None, 0 folds)."""
    ids, weights = part
    key = size_key(kh, kw)
    if name in reused:
        model = reused[name]
    elif reused:
        raise CatalogError(f"the reused run has no autoencoder for {key} of model {name!r}")
    else:
        if weights is not None:
            x, usable = preprocess(weights, params.preprocess)
            data = x[usable]
        else:
            data = _stream_factory(selection, kh, kw, params.preprocess)
        model = ae.train_autoencoder(data, kh, kw, **params.train_kwargs(progress, kh, kw))
        if name is not None:
            model.config["model"] = name
        blobs[f"autoencoder:{key}" + ("" if name is None else f":{name}")] = lambda path, m=model: ae.save(m, path)
    if encode is not None:      # Ray Data over the Parquet (pooled groups)
        table, recon_cos = encode(model, kh, kw, params)
    elif weights is not None:
        table, recon_cos = _encode_chunks(model, [(ids, weights)], kh, kw, params)
    else:
        table, kept = [], []       # streamed: each batch's embeddings written as a part at once
        for chunk in selection.batches(kh, kw, rows=PART_ROWS):
            part_table, part_cos = _encode_chunks(model, [chunk], kh, kw, params)
            table.append(write_part(selection.catalog.data, run, "embeddings", part_table))
            kept.append(part_cos)
        recon_cos = np.concatenate(kept)
    null_d = None
    if params.null_model and not from_model and len(recon_cos):
        null_n = min(len(recon_cos), NULL_SAMPLE)
        echo(f"{key}{'' if name is None else ' ' + name}: null model: the same protocol on "
             f"{null_n} iid Gaussian kernels" + ("" if null_n == len(recon_cos) else
                                                f" (a bounded null for {len(recon_cos)} kernels)"))
        null_d = _null(null_n, kh, kw, params, progress)
    return model, table, recon_cos, None, null_d, 0


def _with_held_out(table: pa.Table, held_out: np.ndarray) -> pa.Table:
    """The embeddings table with each usable kernel's recon_cos replaced by its held-out score
    (`held_out`: the usable kernels' scores, in the table's order)."""
    usable = table.column("usable").to_numpy(zero_copy_only=False)
    column = np.full(len(usable), np.nan, np.float32)
    column[usable] = held_out
    index = table.schema.get_field_index("recon_cos")
    return table.set_column(index, table.schema.field(index), pa.array(column, mask=~usable))


def _encode_chunks(model, chunks, kh: int, kw: int, params: EmbedParams,
                   prepared: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[pa.Table, np.ndarray]:
    """Embed every kernel (usable or not) of one size; unusable rows get NULL z. Also returns the
    usable kernels' recon_cos. prepared: one chunk's `preprocess` output, when the caller has it."""
    parts, kept = [], []
    for ids, weights in chunks:
        x, usable = prepared if prepared is not None else preprocess(weights, params.preprocess)
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
        kept.append(recon_cos[usable])
    return pa.concat_tables(parts), np.concatenate(kept).astype(np.float64)
