"""`catalog cluster` and `catalog identify`: clusters of an embed run, named by templates.

Clustering runs per kernel size in the feature space chosen knowingly (default: the
preprocessed kernels, which recover planted families better than the 2-D autoencoder's
reconstructions, and those better than raw latent coordinates; see `clustering`). Naming (`analysis.naming`) matches each cluster's mean
preprocessed kernel, and each kernel itself, against template families by cosine, sign-aware,
at any orientation; below the threshold a cluster is `unmatched`, never forced, and a cluster
whose margin to the next family is small is named `a|b`.

A size is read whole (`_sizes.load_size`) up to `_blocks.IN_MEMORY` usable kernels
and clustered in blocks above (and with --ray); both build their rows with the same functions
(`_sizes.label_rows`, `cluster_rows`). A cluster run also measures how stable its
partition is across seeds (`seed_ari`, see `seed_stability`).
"""
from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import asdict, replace as with_changes

import numpy as np
import pyarrow as pa

from kernel_catalog.analysis.cluster import _blocks
from kernel_catalog.analysis.cluster._sizes import (
    cluster_rows, label_rows, labelled_blocks, load_size, naming_metrics, size_counts, size_features,
)
from kernel_catalog.analysis.cluster.clustering import cluster, k_for
from kernel_catalog.analysis.embed import load_run_models
from kernel_catalog.analysis.naming import name_clusters, template_bank
from kernel_catalog.analysis.params import DEFAULT_NAME_THRESHOLD, ClusterParams, available_cores, size_key
from kernel_catalog.analysis.runs import RunRecord, check_new_run, commit_run, require_run, write_part
from kernel_catalog.errors import CatalogError
from kernel_catalog.store import Catalog

SEED_SAMPLE = 5000                      # seed_ari: at most this many kernels per size (fixed-seed sample)
SEED_REPEATS = 2                        # seed_ari: this many further seeds


def seed_stability(features: np.ndarray, labels: np.ndarray, k: int, params: ClusterParams,
                   sample: int = SEED_SAMPLE, repeats: int = SEED_REPEATS) -> tuple[float, int]:
    """Mean ARI between the run's partition and the partitions from `repeats` further seeds
    (seed+1, seed+2, ...), all on one fixed-seed sample of at most `sample` kernels.
    Returns (seed_ari, sample size)."""
    from sklearn.metrics import adjusted_rand_score

    rng = np.random.default_rng(params.seed)
    rows = np.sort(rng.choice(len(features), sample, replace=False)) if len(features) > sample else np.arange(len(features))
    k = min(k, len(rows))
    scores = []
    for r in range(1, repeats + 1):
        other = cluster(features[rows], k, seed=params.seed + r, method=params.method, threads=params.threads)
        scores.append(adjusted_rand_score(labels[rows], other.labels))
    return float(np.mean(scores)), int(len(rows))


def cluster_run(
    catalog: Catalog,
    run: str,
    from_run: str,
    params: ClusterParams = ClusterParams(),
    replace: bool = False,
    echo=lambda line: None,
    ray: str | None = None,
) -> dict:
    """Cluster an embed run's kernels per size, name the clusters, store labels; returns metrics.
    A size with more than `_blocks.IN_MEMORY` usable kernels is clustered in blocks (fit on
    a seeded sample, then assigned, named and written block by block), and with `ray` (a Ray
    address) every size is, each block a Ray task: the same partition either way."""
    started = time.perf_counter()
    params = with_changes(params, threads=params.threads or available_cores())   # recorded as used
    check_new_run(catalog, run, replace)
    if ray:      # its tasks write the labels parts into the data root
        from kernel_catalog.store.ray_runtime import require_shared_data

        require_shared_data(catalog.data, ray)
    parent = require_run(catalog, from_run, "embed")
    if params.k != "auto" and (not isinstance(params.k, int) or params.k < 1):
        raise CatalogError(f"--k {params.k}: give a positive integer or 'auto'")
    models = load_run_models(catalog, from_run)
    usable = size_counts(catalog, from_run)
    sizes = [(key, next(iter(models[key].values())).config) for key in sorted(models)]
    sizes = [(key, c["kh"], c["kw"]) for key, c in sizes if usable.get((c["kh"], c["kw"]), 0)]
    if not sizes:
        raise CatalogError(f"run '{from_run}' has no usable kernels to cluster")
    blocked = {key for key, kh, kw in sizes if ray or usable[(kh, kw)] > _blocks.IN_MEMORY}
    label_tables, parts, cluster_tables, metrics = [], [], [], {}
    with catalog.hold() if blocked else nullcontext():   # labels parts are written as blocks go
        for key, kh, kw in sizes:
            bank = template_bank(params.templates, kh, kw)
            if key in blocked:
                done = _blocks.cluster_in_blocks(catalog, run, parent, kh, kw, models[key], params, bank, ray)
                parts.extend(done.parts)
                clusters, size_metrics, names, counts = done.clusters, done.metrics, done.names, done.counts
                features, labels = done.sample_features, done.sample_labels
            else:
                size = load_size(catalog, parent, kh, kw)
                features = size_features(size, params.space, models[key])
                k, silhouettes = k_for(features, params.k, range(params.k_min, params.k_max + 1), params.seed,
                                       params.threads)
                xu, ids = size.x[size.usable], size.ids[size.usable]
                result = cluster(features, k, seed=params.seed, method=params.method, kernels=xu,
                                 threads=params.threads, ids=ids)
                medoid_ids = np.where(result.medoids >= 0, ids[np.maximum(result.medoids, 0)], -1)
                found = name_clusters(result.mean_kernels, bank, params.name_threshold)
                label_tables.append(label_rows(size, result.labels, found, bank, params.name_threshold))
                clusters = cluster_rows(kh, kw, found, result.mean_kernels, result.sizes, medoid_ids)
                names, counts, labels = list(found.names), result.sizes, result.labels
                size_metrics = {"k": int(k), "inertia": result.inertia, "method": result.method, "n": int(len(xu)),
                                **naming_metrics(found, result.sizes, len(xu), bank),
                                **({"silhouette": silhouettes} if silhouettes else {})}
            seed_ari, seed_n = seed_stability(features, labels, size_metrics["k"], params)
            cluster_tables.append(clusters)
            metrics[key] = {**size_metrics, "seed_ari": seed_ari, "seed_ari_n": seed_n}
            n = max(int(np.sum(counts)), 1)
            echo(f"{key}: k={size_metrics['k']}, {size_metrics['named_share']:.0%} of kernels in named clusters, "
                 f"seed ARI {seed_ari:.2f}: " + ", ".join(f"{name} {c / n:.0%}" for name, c in zip(names, counts)))
        record = RunRecord(run, "cluster", {**asdict(params)}, parent=from_run, selection=parent.selection,
                           metrics=metrics, device="cpu", seconds=time.perf_counter() - started)
        commit_run(catalog, record, {"labels": pa.concat_tables(label_tables)} if label_tables else {},
                   clusters=pa.concat_tables(cluster_tables), replace=replace, parts=parts)
    return metrics


def identify(catalog: Catalog, run: str, templates: str = "builtin",
             name_threshold: float = DEFAULT_NAME_THRESHOLD, echo=lambda line: None) -> dict:
    """Re-name the clusters and kernels of a cluster run with other templates (in place). The
    kernels go through in blocks (`_blocks.BLOCK_ROWS`), whatever their number."""
    record = require_run(catalog, run, "cluster")
    params = with_changes(record.cluster_params(), templates=templates, name_threshold=name_threshold)
    clusters = catalog.sql("SELECT * FROM cluster_records WHERE run = ? ORDER BY kh, kw, cluster", [run]).to_pylist()
    parent = require_run(catalog, record.parent, "embed")
    parts, cluster_tables, metrics = [], [], dict(record.metrics)
    with catalog.hold():                                  # labels parts are written as blocks go
        for kh, kw in sorted({(c["kh"], c["kw"]) for c in clusters}):
            rows = [c for c in clusters if (c["kh"], c["kw"]) == (kh, kw)]
            means = np.array([c["mean_kernel"] for c in rows], np.float32)
            counts = np.array([c["n_kernels"] for c in rows])
            bank = template_bank(templates, kh, kw)
            found = name_clusters(means, bank, name_threshold)
            for block, labels in labelled_blocks(catalog, run, parent, kh, kw, _blocks.BLOCK_ROWS):
                parts.append(write_part(catalog.data, run, "labels", label_rows(block, labels, found, bank, name_threshold)))
            cluster_table = cluster_rows(kh, kw, found, means, counts, [c["medoid_kernel_id"] for c in rows])
            cluster_tables.append(cluster_table)
            key = size_key(kh, kw)
            metrics[key] = {**metrics.get(key, {}), **naming_metrics(found, counts, int(counts.sum()), bank)}
            echo(f"{key}: " + ", ".join(f"{n} ({s:.2f})" for n, s in zip(found.names, cluster_table.column("score").to_pylist())))
        updated = RunRecord(run, "cluster", asdict(params), parent=record.parent, selection=record.selection,
                            metrics=metrics, device=record.device, seconds=record.seconds)
        commit_run(catalog, updated, {}, clusters=pa.concat_tables(cluster_tables), replace=True, parts=parts)
    return metrics
