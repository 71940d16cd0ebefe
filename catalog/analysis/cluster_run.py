"""`catalog cluster` and `catalog identify`: clusters of an embed run, named by templates.

Clustering runs per kernel size in the feature space chosen knowingly (default: the
unit-normalised reconstructions, which recover planted families where raw latent coordinates
do not; see catalog.clustering). Naming matches each cluster's mean preprocessed kernel, and
each kernel itself, against template families by cosine, sign-aware; below the threshold a
cluster is `unmatched`, never forced.
"""
from __future__ import annotations

import time
from dataclasses import asdict, replace as with_changes
from pathlib import Path

import numpy as np
import pyarrow as pa

from kernel_catalog.analysis import autoencoder as ae
from kernel_catalog.analysis import templates as tpl
from kernel_catalog.analysis.clustering import choose_k, cluster, feature_space
from kernel_catalog.analysis.embed import load_run_models, size_key
from kernel_catalog.errors import CatalogError
from kernel_catalog.analysis.params import ClusterParams, available_cores
from kernel_catalog.analysis.preprocess import preprocess
from kernel_catalog.store.results import LABEL_SCHEMA
from kernel_catalog.analysis.runs import RunRecord, check_new_run, commit_run, require_run
from kernel_catalog.store import Catalog

CLUSTER_COLUMNS = pa.schema([
    ("kh", pa.int32()), ("kw", pa.int32()), ("cluster", pa.int32()), ("label", pa.string()),
    ("template", pa.string()), ("score", pa.float64()), ("n_kernels", pa.int64()),
    ("share", pa.float64()), ("mean_kernel", pa.list_(pa.float32())), ("medoid_kernel_id", pa.int64()),
    ("margin", pa.float64()),   # best family's cosine minus the next family's (migration 0004)
])


def template_bank(spec: str, kh: int, kw: int) -> tpl.TemplateSet:
    """Templates for one size from a spec: 'builtin', a file, or 'builtin+FILE' (extend; a file's
    filters of another size, e.g. the 7x7 master keys, are used for that size only)."""
    parts = spec.split("+") if spec != "builtin" else ["builtin"]
    bank = None
    for part in parts:
        if part == "builtin":
            found = tpl.make_templates(kh, kw)
        else:
            if not Path(part).is_file():
                raise CatalogError(f"--templates {part}: no such file (use builtin, FILE or builtin+FILE)")
            try:
                found = tpl.load_template_file(part, kh, kw)
            except CatalogError:
                if "builtin" not in parts:
                    raise
                continue   # builtin+FILE: a file of another kernel size extends only its own size
        bank = found if bank is None else bank + found
    return bank


def _load_size(catalog: Catalog, embed_run: str, kh: int, kw: int):
    table = catalog.sql(
        "SELECT e.kernel_id, e.usable, e.recon_cos, k.weights FROM embeddings e JOIN kernels k USING (kernel_id) "
        # ORDER BY: a join returns rows in no fixed order, and k-means seeds from row positions
        "WHERE e.run = ? AND e.kh = ? AND e.kw = ? ORDER BY e.kernel_id", [embed_run, kh, kw])
    weights = np.concatenate([c.flatten().to_numpy(zero_copy_only=False) for c in table.column("weights").chunks])
    return (table.column("kernel_id").to_numpy(), table.column("usable").to_numpy(zero_copy_only=False),
            table.column("recon_cos").to_numpy(zero_copy_only=False).astype(np.float32),
            weights.astype(np.float32).reshape(-1, kh * kw))


def _names(mean_kernels: np.ndarray, x: np.ndarray, bank: tpl.TemplateSet, threshold: float):
    """Cluster names (from their mean kernels) and each kernel's own best family and score."""
    names = tpl.name_clusters(mean_kernels, bank, threshold)
    family, _, score = tpl.match(x, bank)
    kernel_label = np.where(score >= threshold, family, tpl.UNMATCHED)
    return names, kernel_label, score


def _size_results(ids, usable, recon_cos, x, labels, names, kernel_label, kernel_score, threshold, kh, kw):
    n = len(ids)
    cluster_col = np.full(n, -1, np.int32)
    cluster_col[usable] = labels
    label_col = np.full(n, None, dtype=object)
    label_col[usable] = np.asarray(names.names, dtype=object)[labels]
    klabel = np.full(n, None, dtype=object)
    klabel[usable] = kernel_label
    kscore = np.full(n, np.nan, np.float32)
    kscore[usable] = kernel_score
    classified = usable & (1.0 - np.nan_to_num(recon_cos, nan=2.0) < threshold)
    return pa.table([
        pa.array(ids, pa.int64()), pa.array(np.full(n, kh, np.int16)), pa.array(np.full(n, kw, np.int16)),
        pa.array(cluster_col, mask=~usable), pa.array(label_col, pa.string()), pa.array(klabel, pa.string()),
        pa.array(kscore, mask=~usable), pa.array(recon_cos, mask=~usable), pa.array(classified),
    ], schema=LABEL_SCHEMA)


def _cluster_rows(kh, kw, names, sizes, means, medoid_ids, bank) -> pa.Table:
    k = len(sizes)
    margins = tpl.family_margin(means, bank).astype(np.float64)
    total = max(int(sizes.sum()), 1)
    return pa.table([
        pa.array([kh] * k, pa.int32()), pa.array([kw] * k, pa.int32()), pa.array(np.arange(k, dtype=np.int32)),
        pa.array(names.names), pa.array([f"{f}/{v}" for f, v in zip(names.best_family, names.best_variant)]),
        pa.array(names.scores.astype(np.float64)), pa.array(sizes.astype(np.int64)),
        pa.array(sizes / total), pa.array([list(map(float, m)) for m in means], pa.list_(pa.float32())),
        pa.array(medoid_ids, pa.int64()), pa.array(margins),
    ], schema=CLUSTER_COLUMNS)


def cluster_run(
    catalog: Catalog,
    run: str,
    from_run: str,
    params: ClusterParams = ClusterParams(),
    replace: bool = False,
    echo=lambda line: None,
) -> dict:
    """Cluster an embed run's kernels per size, name the clusters, store labels; returns metrics."""
    started = time.perf_counter()
    params = with_changes(params, threads=params.threads or available_cores())   # recorded as used
    check_new_run(catalog, run, replace)
    parent = require_run(catalog, from_run, "embed")
    if params.k != "auto" and (not isinstance(params.k, int) or params.k < 1):
        raise CatalogError(f"--k {params.k}: give a positive integer or 'auto'")
    models = load_run_models(catalog, from_run)
    method = parent["params"].get("preprocess", "center-l2")
    label_tables, cluster_tables, metrics = [], [], {}
    for key in sorted(models):
        model = models[key]
        kh, kw = model.config["kh"], model.config["kw"]
        ids, usable, recon_cos, weights = _load_size(catalog, from_run, kh, kw)
        x, _ = preprocess(weights, method)
        xu = x[usable]
        if len(xu) == 0:
            continue
        z, recon, _ = ae.encode(model, xu)
        features = feature_space(params.space, z=z, recon=recon)
        if params.k == "auto":
            k, silhouettes = choose_k(features, range(params.k_min, params.k_max + 1), seed=params.seed,
                                      threads=params.threads)
        else:
            k, silhouettes = min(params.k, len(xu)), None
        result = cluster(features, k, seed=params.seed, method=params.method, kernels=xu, threads=params.threads)
        bank = template_bank(params.templates, kh, kw)
        names, kernel_label, kernel_score = _names(result.mean_kernels, xu, bank, params.name_threshold)
        threshold = parent["metrics"][key]["threshold"]
        label_tables.append(_size_results(ids, usable, recon_cos, x, result.labels, names, kernel_label,
                                          kernel_score, threshold, kh, kw))
        medoid_ids = np.where(result.medoids >= 0, ids[usable][np.maximum(result.medoids, 0)], -1)
        cluster_tables.append(_cluster_rows(kh, kw, names, result.sizes, result.mean_kernels, medoid_ids, bank))
        named = float(sum(s for s, name in zip(result.sizes, names.names) if name != tpl.UNMATCHED) / len(xu))
        metrics[key] = {"k": int(k), "inertia": result.inertia, "method": result.method, "n": int(len(xu)),
                        "named_share": named, "templates": len(bank), **({"silhouette": silhouettes} if silhouettes else {})}
        echo(f"{key}: k={k}, {named:.0%} of kernels in named clusters: "
             + ", ".join(f"{n} {s / len(xu):.0%}" for n, s in zip(names.names, result.sizes)))
    if not label_tables:
        raise CatalogError(f"run '{from_run}' has no usable kernels to cluster")
    record = RunRecord(run, "cluster", {**asdict(params)}, parent=from_run, selection=parent["selection"],
                       metrics=metrics, device="cpu", seconds=time.perf_counter() - started)
    commit_run(catalog, record, {"labels": pa.concat_tables(label_tables)},
               clusters=pa.concat_tables(cluster_tables), replace=replace)
    return metrics


def identify(catalog: Catalog, run: str, templates: str = "builtin",
             name_threshold: float = tpl.DEFAULT_NAME_THRESHOLD, echo=lambda line: None) -> dict:
    """Re-name the clusters and kernels of a cluster run with other templates (in place)."""
    record = require_run(catalog, run, "cluster")
    params = ClusterParams(**{**record["params"], "templates": templates, "name_threshold": name_threshold})
    clusters = catalog.sql("SELECT * FROM cluster_records WHERE run = ? ORDER BY kh, kw, cluster", [run]).to_pylist()
    parent = require_run(catalog, record["parent"], "embed")
    method = parent["params"].get("preprocess", "center-l2")
    label_tables, cluster_tables, metrics = [], [], dict(record["metrics"])
    sizes = sorted({(c["kh"], c["kw"]) for c in clusters})
    for kh, kw in sizes:
        rows = [c for c in clusters if (c["kh"], c["kw"]) == (kh, kw)]
        old = catalog.sql("SELECT kernel_id, cluster FROM labels WHERE run = ? AND kh = ? AND kw = ?", [run, kh, kw])
        cluster_of = dict(zip(old.column("kernel_id").to_pylist(), old.column("cluster").to_pylist()))
        ids, usable, recon_cos, weights = _load_size(catalog, record["parent"], kh, kw)
        x, _ = preprocess(weights, method)
        labels = np.array([cluster_of[i] for i in ids[usable]], np.int32)
        means = np.array([c["mean_kernel"] for c in rows], np.float32)
        bank = template_bank(templates, kh, kw)
        names, kernel_label, kernel_score = _names(means, x[usable], bank, name_threshold)
        threshold = parent["metrics"][size_key(kh, kw)]["threshold"]
        label_tables.append(_size_results(ids, usable, recon_cos, x, labels, names, kernel_label,
                                          kernel_score, threshold, kh, kw))
        cluster_sizes = np.array([c["n_kernels"] for c in rows])
        cluster_tables.append(_cluster_rows(kh, kw, names, cluster_sizes, means,
                                            [c["medoid_kernel_id"] for c in rows], bank))
        named = float(sum(s for s, n in zip(cluster_sizes, names.names) if n != tpl.UNMATCHED) / max(len(labels), 1))
        metrics[size_key(kh, kw)] = {**metrics.get(size_key(kh, kw), {}), "named_share": named, "templates": len(bank)}
        echo(f"{kh}x{kw}: " + ", ".join(f"{n} ({s:.2f})" for n, s in zip(names.names, names.scores)))
    updated = RunRecord(run, "cluster", asdict(params), parent=record["parent"], selection=record["selection"],
                        metrics=metrics, device=record["device"], seconds=record["seconds"])
    commit_run(catalog, updated, {"labels": pa.concat_tables(label_tables)},
               clusters=pa.concat_tables(cluster_tables), replace=True)
    return metrics
