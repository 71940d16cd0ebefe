"""Clustering a size that is not held in memory: a fitted sample, then two passes over blocks.

Above `IN_MEMORY` usable kernels of a size (2 M, where embedding starts streaming too), and for
every size with --ray, a cluster run never holds the size:
  1. k-means is fitted on the seeded sample `_sizes.fit_sample` (at most 200,000 usable
     kernels, chosen by kernel id exactly as `clustering.fit_rows_by_id` chooses them in memory:
     the same rows in the same order, so the same centres as for the size held whole);
  2. pass 1 streams the size in blocks of `BLOCK_ROWS` kernels: each usable kernel goes to its
     nearest centre, and per cluster the count, the sum of preprocessed kernels (the mean kernel
     naming matches), the inertia and the member nearest the centre (the medoid; ties: the
     smaller kernel_id) add up (`BlockStats`);
  3. the clusters are numbered by decreasing size and named from their mean kernels;
  4. pass 2 assigns each block again (the same centres, so the same labels), names each kernel
     and writes the block's `labels` rows as a Parquet part into the data root.
Memory: one block plus the sample. With --ray every block is a Ray task: the driver streams the
join from the Parquet and ships the blocks, workers assign, name and write their parts. Either
way the partition is the one `clustering.cluster(..., ids=...)` gives the size held whole (mean
kernels agree to float rounding of the sums). Other methods than k-means (minibatch, gmm) are
fitted on the sample too, and every kernel goes to its nearest centre. Seed stability
(`_run.seed_stability`) is measured on the fit sample.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from kernel_catalog.analysis.cluster import clustering
from kernel_catalog.analysis.cluster._sizes import (
    SizeData, cluster_rows, fit_sample, label_rows, naming_metrics, size_blocks, size_features,
)
from kernel_catalog.analysis.cluster.clustering import k_for, nearest_centre
from kernel_catalog.analysis.naming import ClusterNames, TemplateBank, name_clusters
from kernel_catalog.analysis.params import ClusterParams
from kernel_catalog.analysis.runs import RunRecord, StagedPart, write_part
from kernel_catalog.store import Catalog

IN_MEMORY = 2_000_000       # above this many usable kernels of a size, a cluster run works in blocks
BLOCK_ROWS = 1 << 18        # kernels per block (and per labels part)


@dataclass(frozen=True)
class BlockStats:
    """Per cluster (in fit order): what pass 1 adds up over blocks."""

    counts: np.ndarray       # (k,) int64
    sums: np.ndarray         # (k, kh*kw) float64: sum of preprocessed kernels
    inertia: float           # sum of squared distances to the nearest centre
    best_d2: np.ndarray      # (k,) float32: the nearest member's squared distance (inf: none yet)
    best_id: np.ndarray      # (k,) int64: its kernel_id (-1: none yet)

    @classmethod
    def empty(cls, k: int, dim: int) -> "BlockStats":
        return cls(np.zeros(k, np.int64), np.zeros((k, dim)), 0.0, np.full(k, np.inf, np.float32), np.full(k, -1, np.int64))

    def __add__(self, other: "BlockStats") -> "BlockStats":
        take = (other.best_d2 < self.best_d2) | ((other.best_d2 == self.best_d2) & (other.best_id >= 0)
                                                 & ((self.best_id < 0) | (other.best_id < self.best_id)))
        return BlockStats(self.counts + other.counts, self.sums + other.sums, self.inertia + other.inertia,
                          np.where(take, other.best_d2, self.best_d2), np.where(take, other.best_id, self.best_id))


def _assign(block: SizeData, centres: np.ndarray, space: str, models: dict) -> tuple[np.ndarray, np.ndarray]:
    features = size_features(block, space, models)
    return features, (nearest_centre(features, centres) if len(features) else np.empty(0, np.int64))


def block_stats(block: SizeData, centres: np.ndarray, space: str, models: dict) -> BlockStats:
    """Pass 1 on one block: nearest centres and the per-cluster sums."""
    features, raw = _assign(block, centres, space, models)
    k, dim = len(centres), block.x.shape[1]
    if not len(raw):
        return BlockStats.empty(k, dim)
    xu, ids = block.x[block.usable].astype(np.float64), block.ids[block.usable]
    counts = np.bincount(raw, minlength=k).astype(np.int64)
    sums = np.stack([np.bincount(raw, weights=xu[:, j], minlength=k) for j in range(dim)], axis=1)
    d2 = ((features - centres[raw]) ** 2).sum(axis=1)            # float32, as clustering.summarise
    best_d2, best_id = np.full(k, np.inf, np.float32), np.full(k, -1, np.int64)
    order = np.lexsort((ids, d2, raw))                           # by cluster, distance, kernel_id
    firsts = np.searchsorted(raw[order], np.arange(k))
    found = counts > 0
    best_d2[found], best_id[found] = d2[order[firsts[found]]], ids[order[firsts[found]]]
    return BlockStats(counts, sums, float(d2.astype(np.float64).sum()), best_d2, best_id)


def write_labels_part(block: SizeData, centres: np.ndarray, remap: np.ndarray, space: str, models: dict,
                      names: ClusterNames, bank: TemplateBank, name_threshold: float, run: str,
                      local_root: str, uri: str | None) -> StagedPart:
    """Pass 2 on one block: its labels rows, written as one part into the data root."""
    from kernel_catalog.store.datafs import DataRoot
    from kernel_catalog.store.faults import crash_once

    _, raw = _assign(block, centres, space, models)
    part = write_part(DataRoot(Path(local_root), uri), run, "labels",
                      label_rows(block, remap[raw], names, bank, name_threshold))
    crash_once("labels-part-written")
    return part


def _map(fn, blocks, shared: dict, ray: str | None) -> list:
    if ray:
        from kernel_catalog.analysis.cluster._ray import ray_map_blocks

        return ray_map_blocks(ray, fn, blocks, shared)
    return [fn(block, **shared) for block in blocks]


@dataclass(frozen=True)
class BlockedSize:
    """A size clustered in blocks: what the cluster run records of it."""

    parts: list[StagedPart]          # labels parts written
    clusters: pa.Table               # its `clusters` rows
    metrics: dict
    names: list[str]
    counts: np.ndarray               # kernels per cluster (cluster order)
    sample_features: np.ndarray      # the fit sample, for seed stability
    sample_labels: np.ndarray


def cluster_in_blocks(catalog: Catalog, run: str, parent: RunRecord, kh: int, kw: int, models: dict,
                      params: ClusterParams, bank: TemplateBank, ray: str | None = None,
                      block_rows: int | None = None) -> BlockedSize:
    """Cluster, name and label one size of `parent` in blocks (see the module docstring). Call it
    while holding the catalog (`Catalog.hold`): the labels parts are written as it goes."""
    sample = fit_sample(catalog, parent, kh, kw, clustering.FIT_SAMPLE, params.seed)
    features = size_features(sample, params.space, models)
    k, silhouettes = k_for(features, params.k, range(params.k_min, params.k_max + 1), params.seed, params.threads)
    # centres in the fit's own order: clusters of equal size are then numbered as for a size held whole
    _, centres, method = clustering.fit(features, k, seed=params.seed, method=params.method, threads=params.threads)
    centres = centres.astype(np.float32)

    def blocks():
        return size_blocks(catalog, parent, kh, kw, block_rows or BLOCK_ROWS)

    shared = {"centres": centres, "space": params.space, "models": models}
    stats = sum(_map(block_stats, blocks(), shared, ray), BlockStats.empty(k, kh * kw))
    order = np.lexsort((np.arange(k), -stats.counts))            # by decreasing size, as summarise
    remap = np.empty(k, np.int64)
    remap[order] = np.arange(k)
    counts = stats.counts[order]
    means = np.zeros((k, kh * kw), np.float64)
    means[counts > 0] = stats.sums[order][counts > 0] / counts[counts > 0, None]
    means = means.astype(np.float32)
    names = name_clusters(means, bank, params.name_threshold)
    data = catalog.data
    parts = _map(write_labels_part, blocks(), {**shared, "remap": remap, "names": names, "bank": bank,
                                               "name_threshold": params.name_threshold, "run": run,
                                               "local_root": str(data.local_root), "uri": data.uri}, ray)
    metrics = {"k": int(k), "inertia": stats.inertia, "method": method, "n": int(counts.sum()),
               **naming_metrics(names, counts, int(counts.sum()), bank), "fit_sample": int(len(features)),
               "blocks": len(parts), **({"silhouette": silhouettes} if silhouettes else {})}
    return BlockedSize(parts, cluster_rows(kh, kw, names, means, counts, stats.best_id[order]), metrics,
                       list(names.names), counts, features, remap[nearest_centre(features, centres)])
