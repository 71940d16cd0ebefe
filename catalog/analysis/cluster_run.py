"""`catalog cluster` and `catalog identify`: clusters of an embed run, named by templates.

Clustering runs per kernel size in the feature space chosen knowingly (default: the
preprocessed kernels, which recover planted families better than the 2-D autoencoder's
reconstructions, and those better than raw latent coordinates; see catalog.analysis.clustering). Naming (catalog.analysis.naming) matches each cluster's mean
preprocessed kernel, and each kernel itself, against template families by cosine, sign-aware,
at any orientation; below the threshold a cluster is `unmatched`, never forced, and a cluster
whose margin to the next family is small is named `a|b`.

Both commands end in one per-size assembly (`_assemble`): names, the labels rows, the clusters
rows and the size's metrics. A cluster run also measures how stable its partition is across
seeds (`seed_ari`, see `seed_stability`).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace as with_changes
from pathlib import Path

import numpy as np
import pyarrow as pa

from kernel_catalog.analysis import autoencoder as ae
from kernel_catalog.analysis import templates as tpl
from kernel_catalog.analysis.clustering import choose_k, cluster, feature_space
from kernel_catalog.analysis.embed import load_run_models, size_key
from kernel_catalog.analysis.naming import AMBIGUOUS_MARGIN, match, name_clusters
from kernel_catalog.errors import CatalogError
from kernel_catalog.analysis.params import ClusterParams, available_cores
from kernel_catalog.analysis.preprocess import preprocess
from kernel_catalog.store.results import CLUSTER_SCHEMA, LABEL_SCHEMA
from kernel_catalog.analysis.runs import RunRecord, check_new_run, commit_run, require_run
from kernel_catalog.store import Catalog

SEED_SAMPLE = 5000                      # seed_ari: at most this many kernels per size (fixed-seed sample)
SEED_REPEATS = 2                        # seed_ari: this many further seeds


def template_bank(spec: str, kh: int, kw: int) -> tpl.TemplateBank:
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


@dataclass(frozen=True)
class SizeData:
    """One kernel size of an embed run: every kernel (usable or not) in kernel_id order."""

    kh: int
    kw: int
    ids: np.ndarray           # (N,) int64
    usable: np.ndarray        # (N,) bool
    recon_cos: np.ndarray     # (N,) float32
    x: np.ndarray             # (N, kh*kw) preprocessed
    models: np.ndarray        # (N,) object: each kernel's model name
    threshold: float          # the embed run's classified threshold for this size

    @property
    def key(self) -> str:
        return size_key(self.kh, self.kw)


def _load_size(catalog: Catalog, parent: RunRecord, kh: int, kw: int) -> SizeData:
    table = catalog.sql(
        "SELECT e.kernel_id, e.usable, e.recon_cos, k.weights, k.model FROM embeddings e JOIN kernels k USING (kernel_id) "
        # ORDER BY: a join returns rows in no fixed order, and k-means seeds from row positions
        "WHERE e.run = ? AND e.kh = ? AND e.kw = ? ORDER BY e.kernel_id", [parent.run, kh, kw])
    weights = np.concatenate([c.flatten().to_numpy(zero_copy_only=False) for c in table.column("weights").chunks])
    x, _ = preprocess(weights.astype(np.float32).reshape(-1, kh * kw), parent.preprocess)
    return SizeData(kh, kw, table.column("kernel_id").to_numpy(), table.column("usable").to_numpy(zero_copy_only=False),
                    table.column("recon_cos").to_numpy(zero_copy_only=False).astype(np.float32), x,
                    np.asarray(table.column("model").to_pylist(), dtype=object),
                    parent.size_metrics(size_key(kh, kw))["threshold"])


def _assemble(size: SizeData, labels: np.ndarray, means: np.ndarray, counts: np.ndarray, medoid_ids,
              bank: tpl.TemplateBank, name_threshold: float) -> tuple[pa.Table, pa.Table, dict, list[str]]:
    """One size's results from its partition: (labels rows, clusters rows, metrics, cluster names)."""
    names = name_clusters(means, bank, name_threshold)
    own = match(size.x[size.usable], bank)
    n, u = len(size.ids), size.usable

    def full(values, dtype, fill=None):
        out = np.full(n, fill, dtype=dtype)
        out[u] = values
        return out

    def masked(values):   # NaN (no orientation / scale) and unusable kernels read NULL
        out = full(values, np.float32, np.nan)
        return pa.array(out, mask=~np.isfinite(out))

    cluster_col = full(labels, np.int32, -1)
    kernel_label = np.where(own.score >= name_threshold, own.label, tpl.UNMATCHED)
    classified = u & (1.0 - np.nan_to_num(size.recon_cos, nan=2.0) < size.threshold)
    label_rows = pa.table([
        pa.array(size.ids, pa.int64()), pa.array(np.full(n, size.kh, np.int16)), pa.array(np.full(n, size.kw, np.int16)),
        pa.array(cluster_col, mask=~u), pa.array(full(np.asarray(names.names, object)[labels], object), pa.string()),
        pa.array(full(kernel_label, object), pa.string()), pa.array(full(own.score, np.float32, np.nan), mask=~u),
        pa.array(size.recon_cos, mask=~u), pa.array(classified),
        pa.array(full(own.family, object), pa.string()), pa.array(full(own.polarity, object), pa.string()),
        masked(own.orientation), masked(own.scale),
    ], schema=LABEL_SCHEMA)
    m = names.matches
    k = len(counts)

    def nullable(a):
        return pa.array([None if not np.isfinite(v) else float(v) for v in a], pa.float64())

    cluster_rows = pa.table([
        pa.array([size.kh] * k, pa.int32()), pa.array([size.kw] * k, pa.int32()), pa.array(np.arange(k, dtype=np.int32)),
        pa.array(names.names), pa.array(list(m.template)), pa.array(m.score.astype(np.float64)),
        pa.array(np.asarray(counts).astype(np.int64)), pa.array(np.asarray(counts) / max(int(np.sum(counts)), 1)),
        pa.array([list(map(float, row)) for row in means], pa.list_(pa.float32())),
        pa.array(list(medoid_ids), pa.int64()), nullable(m.margin), pa.array(list(m.family), pa.string()),
        pa.array(list(m.polarity), pa.string()), nullable(m.orientation), nullable(m.scale),
    ], schema=CLUSTER_SCHEMA)
    named = float(sum(c for c, name in zip(counts, names.names) if name != tpl.UNMATCHED) / max(int(u.sum()), 1))
    metrics = {"named_share": named, "templates": len(bank), "ambiguous_margin": AMBIGUOUS_MARGIN,
               "ambiguous_clusters": int(sum("|" in name for name in names.names))}
    return label_rows, cluster_rows, metrics, names.names


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


def _reconstruct(models: dict, size: SizeData) -> tuple[np.ndarray, np.ndarray]:
    """(z, recon) of the usable kernels, each through its autoencoder (pooled or its model's)."""
    xu, owners = size.x[size.usable], size.models[size.usable]
    if list(models) == [None]:
        z, recon, _ = ae.encode(models[None], xu)
        return z, recon
    z = recon = None
    for name, model in models.items():
        rows = owners == name
        if not rows.any():
            continue
        zi, ri, _ = ae.encode(model, xu[rows])
        if z is None:
            z, recon = np.zeros((len(xu), zi.shape[1]), np.float32), np.zeros_like(xu, dtype=np.float32)
        z[rows], recon[rows] = zi, ri
    return z, recon


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
    ray: a Ray address; the reconstructions are then computed per block as Ray tasks, and k-means
    is fitted on a bounded seeded sample with every kernel assigned per block (analysis._ray)."""
    started = time.perf_counter()
    params = with_changes(params, threads=params.threads or available_cores())   # recorded as used
    check_new_run(catalog, run, replace)
    parent = require_run(catalog, from_run, "embed")
    if params.k != "auto" and (not isinstance(params.k, int) or params.k < 1):
        raise CatalogError(f"--k {params.k}: give a positive integer or 'auto'")
    models = load_run_models(catalog, from_run)
    label_tables, cluster_tables, metrics = [], [], {}
    for key in sorted(models):
        first = next(iter(models[key].values()))
        size = _load_size(catalog, parent, first.config["kh"], first.config["kw"])
        xu = size.x[size.usable]
        if len(xu) == 0:
            continue
        if params.space == "kernel":      # no autoencoder pass needed
            z = recon = None
        elif ray:
            from kernel_catalog.analysis._ray import ray_reconstruct

            z, recon = ray_reconstruct(ray, models[key], xu, size.models[size.usable])
        else:
            z, recon = _reconstruct(models[key], size)
        features = feature_space(params.space, z=z, recon=recon, kernels=xu)
        if params.k == "auto":
            k, silhouettes = choose_k(features, range(params.k_min, params.k_max + 1), seed=params.seed,
                                      threads=params.threads)
        else:
            k, silhouettes = min(params.k, len(xu)), None
        if ray:   # fitted on a bounded sample, every row assigned per block as Ray tasks
            from kernel_catalog.analysis._ray import ray_cluster

            result = ray_cluster(ray, features, k, params.seed, params.method, xu, params.threads)
        else:
            result = cluster(features, k, seed=params.seed, method=params.method, kernels=xu, threads=params.threads)
        medoid_ids = np.where(result.medoids >= 0, size.ids[size.usable][np.maximum(result.medoids, 0)], -1)
        bank = template_bank(params.templates, size.kh, size.kw)
        rows, clusters, size_metrics, names = _assemble(size, result.labels, result.mean_kernels, result.sizes,
                                                        medoid_ids, bank, params.name_threshold)
        seed_ari, seed_n = seed_stability(features, result.labels, k, params)
        label_tables.append(rows)
        cluster_tables.append(clusters)
        metrics[key] = {"k": int(k), "inertia": result.inertia, "method": result.method, "n": int(len(xu)),
                        **size_metrics, "seed_ari": seed_ari, "seed_ari_n": seed_n,
                        **({"silhouette": silhouettes} if silhouettes else {})}
        echo(f"{key}: k={k}, {size_metrics['named_share']:.0%} of kernels in named clusters, seed ARI {seed_ari:.2f}: "
             + ", ".join(f"{n} {s / len(xu):.0%}" for n, s in zip(names, result.sizes)))
    if not label_tables:
        raise CatalogError(f"run '{from_run}' has no usable kernels to cluster")
    record = RunRecord(run, "cluster", {**asdict(params)}, parent=from_run, selection=parent.selection,
                       metrics=metrics, device="cpu", seconds=time.perf_counter() - started)
    commit_run(catalog, record, {"labels": pa.concat_tables(label_tables)},
               clusters=pa.concat_tables(cluster_tables), replace=replace)
    return metrics


def identify(catalog: Catalog, run: str, templates: str = "builtin",
             name_threshold: float = tpl.DEFAULT_NAME_THRESHOLD, echo=lambda line: None) -> dict:
    """Re-name the clusters and kernels of a cluster run with other templates (in place)."""
    record = require_run(catalog, run, "cluster")
    params = with_changes(record.cluster_params(), templates=templates, name_threshold=name_threshold)
    clusters = catalog.sql("SELECT * FROM cluster_records WHERE run = ? ORDER BY kh, kw, cluster", [run]).to_pylist()
    parent = require_run(catalog, record.parent, "embed")
    label_tables, cluster_tables, metrics = [], [], dict(record.metrics)
    for kh, kw in sorted({(c["kh"], c["kw"]) for c in clusters}):
        rows = [c for c in clusters if (c["kh"], c["kw"]) == (kh, kw)]
        old = catalog.sql("SELECT kernel_id, cluster FROM labels WHERE run = ? AND kh = ? AND kw = ?", [run, kh, kw])
        cluster_of = dict(zip(old.column("kernel_id").to_pylist(), old.column("cluster").to_pylist()))
        size = _load_size(catalog, parent, kh, kw)
        labels = np.array([cluster_of[i] for i in size.ids[size.usable]], np.int32)
        means = np.array([c["mean_kernel"] for c in rows], np.float32)
        bank = template_bank(templates, kh, kw)
        table, cluster_table, size_metrics, names = _assemble(
            size, labels, means, np.array([c["n_kernels"] for c in rows]), [c["medoid_kernel_id"] for c in rows],
            bank, name_threshold)
        label_tables.append(table)
        cluster_tables.append(cluster_table)
        metrics[size.key] = {**metrics.get(size.key, {}), **size_metrics}
        echo(f"{size.key}: " + ", ".join(f"{n} ({s:.2f})" for n, s in zip(names, cluster_table.column("score").to_pylist())))
    updated = RunRecord(run, "cluster", asdict(params), parent=record.parent, selection=record.selection,
                        metrics=metrics, device=record.device, seconds=record.seconds)
    commit_run(catalog, updated, {"labels": pa.concat_tables(label_tables)},
               clusters=pa.concat_tables(cluster_tables), replace=True)
    return metrics
