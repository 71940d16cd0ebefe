"""One kernel size of an embed run: reading it (whole or in blocks) and turning a partition into rows.

A cluster run works per size. `load_size` reads a size whole (kernel_id order); `size_blocks`
streams it in blocks and `fit_sample` reads the seeded sample k-means is fitted on, for sizes too
large to hold (`_blocks`). Every one of them is a `SizeData`: the embed run's rows joined
with their kernels, preprocessed as the embed run did. `label_rows` and `cluster_rows` build the
`labels` and `clusters` rows from a partition and the cluster names; both paths share them.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from kernel_catalog.analysis.cluster.clustering import feature_space, sample_mask
from kernel_catalog.analysis.embed import encode
from kernel_catalog.analysis.naming import AMBIGUOUS_MARGIN, UNMATCHED, ClusterNames, TemplateBank, match
from kernel_catalog.analysis.params import size_key
from kernel_catalog.analysis.preprocess import preprocess
from kernel_catalog.analysis.runs import RunRecord
from kernel_catalog.analysis.selection import weight_rows
from kernel_catalog.store import Catalog
from kernel_catalog.store.results import CLUSTER_SCHEMA, LABEL_SCHEMA

_SIZE_ROWS = ("SELECT e.kernel_id, e.usable, e.recon_cos, k.weights, k.model FROM embeddings e "
              "JOIN kernels k USING (kernel_id) WHERE e.run = ? AND e.kh = ? AND e.kw = ?")


@dataclass(frozen=True)
class SizeData:
    """Kernels of one size of an embed run (all of them, a block or a sample), usable or not."""

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


def _strings(column: pa.ChunkedArray) -> np.ndarray:
    """A string column as an object array, each distinct value converted once (a million kernels
    of a few models: their names, not a million Python strings)."""
    codes = column.combine_chunks().dictionary_encode()
    names = np.asarray(codes.dictionary.to_pylist() + [None], dtype=object)
    return names[codes.indices.fill_null(len(codes.dictionary)).to_numpy()]


def _size_data(table: pa.Table, parent: RunRecord, kh: int, kw: int) -> SizeData:
    x, _ = preprocess(weight_rows(table.column("weights"), kh * kw), parent.preprocess)
    return SizeData(kh, kw, table.column("kernel_id").to_numpy(), table.column("usable").to_numpy(zero_copy_only=False),
                    table.column("recon_cos").to_numpy(zero_copy_only=False).astype(np.float32), x,
                    _strings(table.column("model")),
                    parent.size_metrics(size_key(kh, kw))["threshold"])


def load_size(catalog: Catalog, parent: RunRecord, kh: int, kw: int) -> SizeData:
    """Every kernel of one size, in kernel_id order (k-means seeds from row positions)."""
    # ORDER BY: a join returns rows in no fixed order
    return _size_data(catalog.sql(_SIZE_ROWS + " ORDER BY e.kernel_id", [parent.run, kh, kw]), parent, kh, kw)


def size_counts(catalog: Catalog, run: str) -> dict[tuple[int, int], int]:
    """Usable kernels per size of an embed run."""
    table = catalog.sql("SELECT kh, kw, count(*) FILTER (usable) AS n FROM embeddings WHERE run = ? GROUP BY ALL", [run])
    return {(int(a), int(b)): int(n) for a, b, n in zip(*(table.column(c).to_pylist() for c in ("kh", "kw", "n")))}


def size_blocks(catalog: Catalog, parent: RunRecord, kh: int, kw: int, rows: int) -> Iterator[SizeData]:
    """The size in blocks of at most `rows` kernels, streamed (memory: one block), in no fixed order."""
    with catalog.snapshot() as con:
        reader = con.sql(_SIZE_ROWS, params=[parent.run, kh, kw]).to_arrow_reader(rows)
        for batch in reader:
            if batch.num_rows:
                yield _size_data(pa.Table.from_batches([batch]), parent, kh, kw)


def labelled_blocks(catalog: Catalog, run: str, parent: RunRecord, kh: int, kw: int,
                    rows: int) -> Iterator[tuple[SizeData, np.ndarray]]:
    """A cluster run's labelled kernels of one size in blocks: (block, cluster of each usable kernel)."""
    query = ("SELECT l.kernel_id, l.cluster IS NOT NULL AS usable, l.recon_cos, k.weights, k.model, l.cluster "
             "FROM labels l JOIN kernels k USING (kernel_id) WHERE l.run = ? AND l.kh = ? AND l.kw = ?")
    with catalog.snapshot() as con:
        for batch in con.sql(query, params=[run, kh, kw]).to_arrow_reader(rows):
            if batch.num_rows:
                table = pa.Table.from_batches([batch])
                block = _size_data(table, parent, kh, kw)
                yield block, table.column("cluster").to_numpy(zero_copy_only=False)[block.usable].astype(np.int64)


def fit_sample(catalog: Catalog, parent: RunRecord, kh: int, kw: int, rows: int, seed: int) -> SizeData:
    """The usable kernels a k-means fit sees (`clustering.fit_rows_by_id`): the `rows` ones whose
    kernel_id XOR the seed's mask is smallest (all of them if fewer), in kernel_id order."""
    with catalog.snapshot() as con:
        table = con.sql(f"SELECT * FROM ({_SIZE_ROWS} AND e.usable ORDER BY xor(e.kernel_id, ?) LIMIT {int(rows)}) "
                        "ORDER BY kernel_id", params=[parent.run, kh, kw, sample_mask(seed)]).to_arrow_table()
    return _size_data(table, parent, kh, kw)


def reconstruct(models: dict, size: SizeData) -> tuple[np.ndarray, np.ndarray]:
    """(z, recon) of the usable kernels, each through its autoencoder (pooled or its model's)."""
    xu, owners = size.x[size.usable], size.models[size.usable]
    if list(models) == [None]:
        z, recon, _ = encode(models[None], xu)
        return z, recon
    z = recon = None
    for name, model in models.items():
        rows = owners == name
        if not rows.any():
            continue
        zi, ri, _ = encode(model, xu[rows])
        if z is None:
            z, recon = np.zeros((len(xu), zi.shape[1]), np.float32), np.zeros_like(xu, dtype=np.float32)
        z[rows], recon[rows] = zi, ri
    return z, recon


def size_features(size: SizeData, space: str, models: dict) -> np.ndarray:
    """The clustering features of the usable kernels (`clustering.feature_space`)."""
    xu = size.x[size.usable]
    if space == "kernel" or not len(xu):     # no autoencoder pass needed
        return feature_space("kernel", kernels=xu)
    z, recon = reconstruct(models, size)
    return feature_space(space, z=z, recon=recon, kernels=xu)


def label_rows(size: SizeData, labels: np.ndarray, names: ClusterNames, bank: TemplateBank,
               name_threshold: float) -> pa.Table:
    """The `labels` rows of a size (or block): each usable kernel's cluster and cluster name, and
    its own best match (`kernel_*`, with the margin it wins by); unusable kernels get NULLs."""
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
    kernel_label = np.where(own.score >= name_threshold, own.label, UNMATCHED)
    classified = u & (1.0 - np.nan_to_num(size.recon_cos, nan=2.0) < size.threshold)
    return pa.table([
        pa.array(size.ids, pa.int64()), pa.array(np.full(n, size.kh, np.int16)), pa.array(np.full(n, size.kw, np.int16)),
        pa.array(cluster_col, mask=~u), pa.array(full(np.asarray(names.names, object)[labels], object), pa.string()),
        pa.array(full(kernel_label, object), pa.string()), pa.array(full(own.score, np.float32, np.nan), mask=~u),
        pa.array(size.recon_cos, mask=~u), pa.array(classified),
        pa.array(full(own.family, object), pa.string()), pa.array(full(own.polarity, object), pa.string()),
        masked(own.orientation), masked(own.scale), masked(own.margin),
    ], schema=LABEL_SCHEMA)


def cluster_rows(kh: int, kw: int, names: ClusterNames, means: np.ndarray, counts: np.ndarray,
                 medoid_ids) -> pa.Table:
    """The `clusters` rows of a size: name, best template, score, size, mean kernel, medoid, margin."""
    m = names.matches
    k = len(counts)

    def nullable(a):
        return pa.array([None if not np.isfinite(v) else float(v) for v in a], pa.float64())

    return pa.table([
        pa.array([kh] * k, pa.int32()), pa.array([kw] * k, pa.int32()), pa.array(np.arange(k, dtype=np.int32)),
        pa.array(names.names), pa.array(list(m.template)), pa.array(m.score.astype(np.float64)),
        pa.array(np.asarray(counts).astype(np.int64)), pa.array(np.asarray(counts) / max(int(np.sum(counts)), 1)),
        pa.array([list(map(float, row)) for row in means], pa.list_(pa.float32())),
        pa.array(list(medoid_ids), pa.int64()), nullable(m.margin), pa.array(list(m.family), pa.string()),
        pa.array(list(m.polarity), pa.string()), nullable(m.orientation), nullable(m.scale),
    ], schema=CLUSTER_SCHEMA)


def naming_metrics(names: ClusterNames, counts: np.ndarray, usable: int, bank: TemplateBank) -> dict:
    """A size's naming metrics: share of usable kernels in named clusters, ambiguous clusters."""
    named = float(sum(c for c, name in zip(counts, names.names) if name != UNMATCHED) / max(int(usable), 1))
    return {"named_share": named, "templates": len(bank), "ambiguous_margin": AMBIGUOUS_MARGIN,
            "ambiguous_clusters": int(sum("|" in name for name in names.names))}
