"""From an adapter's Extraction to catalog rows: ids, digests, per-kernel stats (pure functions).

The Arrow schema here is the Parquet schema of every kernel file and, with the hive partition
column `model`, the column list of the `kernels` view.
"""
from __future__ import annotations

import contextlib
import hashlib
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from kernel_catalog.adapters.base import DepthwiseLayer

NEAR_ZERO = 1e-4   # all |w| <= this: flagged near-zero (the authors' later loader drops them)
SPARSE_FRACTION = 0.01   # CNN Filter DB: a kernel is sparse when max |w| < 1 % of its layer's max |w|

KERNEL_SCHEMA = pa.schema([
    ("kernel_id", pa.int64()),
    ("checkpoint_sha256", pa.string()),
    ("adapter", pa.string()),
    ("trained", pa.bool_()),
    ("layer", pa.string()),
    ("layer_index", pa.int32()),
    ("depth", pa.float64()),
    ("expert", pa.int32()),
    ("channel", pa.int32()),
    ("kh", pa.int16()),
    ("kw", pa.int16()),
    ("weights", pa.list_(pa.float32())),
    ("l2", pa.float32()),
    ("max_abs", pa.float32()),
    ("mean", pa.float32()),
    ("nonfinite", pa.bool_()),
    ("near_zero", pa.bool_()),
])


# Dictionary pages and min/max statistics pay off for the small columns; on the weight lists
# they cost 60 % of the write time and make the file larger, so they are off there.
PARQUET_OPTIONS = dict(
    # 64 k kernels per row group: DuckDB decodes one row group per thread, so this bounds the
    # memory of every scan (a 1 M-kernel group of 7x7 weights is ~200 MB per thread).
    row_group_size=65_536,
    compression="zstd",
    compression_level=1,
    use_dictionary=["checkpoint_sha256", "adapter", "layer"],
    write_statistics=[name for name in KERNEL_SCHEMA.names if name != "weights"],
)


def checkpoint_digest(layers: list[DepthwiseLayer]) -> str:
    """SHA-256 over the depthwise weights (names, shapes, raw float32 bytes) in name order.

    Deliberately not the hash of the whole file: that costs more than the whole extraction of a
    convnext_base checkpoint, and it would differ between two files holding the same kernels
    (.pth vs .safetensors). What identifies a catalog entry is exactly the kernels it holds.
    """
    digest = hashlib.sha256()
    for layer in sorted(layers, key=lambda l: (l.name, -1 if l.expert is None else l.expert)):
        weights = np.ascontiguousarray(layer.weights, dtype=np.float32)
        digest.update(f"{layer.name}\0{layer.expert}\0{weights.shape}\0".encode())
        digest.update(weights.tobytes())
    return digest.hexdigest()


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """A bijective 64-bit mixer (Steele et al.), vectorised: spreads nearby keys over the range."""
    with np.errstate(over="ignore"):
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def kernel_ids(checkpoint_sha256: str, layer: str, expert: int | None, n_channels: int) -> np.ndarray:
    """Stable int64 ids: the same checkpoint, layer, expert and channel always give the same id."""
    key = f"{checkpoint_sha256}\0{layer}\0{expert}".encode()
    base = np.frombuffer(hashlib.blake2b(key, digest_size=8).digest(), dtype=np.uint64)[0]
    return _splitmix64(base ^ np.arange(n_channels, dtype=np.uint64)).view(np.int64)


def kernel_stats(flat: np.ndarray) -> dict[str, np.ndarray]:
    """Per-kernel L2 norm, max |w|, mean and flags for an (N, kh*kw) float32 array."""
    wide = flat.astype(np.float64)
    finite = np.isfinite(wide).all(axis=1)
    with np.errstate(invalid="ignore", over="ignore"):
        max_abs = np.abs(wide).max(axis=1)
        return {
            "l2": np.sqrt((wide * wide).sum(axis=1)).astype(np.float32),
            "max_abs": max_abs.astype(np.float32),
            "mean": wide.mean(axis=1).astype(np.float32),
            "nonfinite": ~finite,
            "near_zero": finite & (max_abs <= NEAR_ZERO),
        }


def layer_metrics(flat: np.ndarray) -> tuple[float | None, float | None]:
    """CNN Filter DB's per-layer metrics (Gavrikov and Keuper, CVPR 2022) of one layer's raw
    kernels, an (N, kh*kw) array; returns (sparsity, variance_entropy), None where undefined.

    Kernels with a NaN/Inf are left out (they are flagged in the catalog); N below counts the rest.
    - sparsity: the share of kernels whose max |w| is below SPARSE_FRACTION (0.01) x the max |w|
      over the whole layer; a layer whose weights are all zero has sparsity 1. None when N = 0.
    - variance_entropy: X = the kernels centred by subtracting the mean kernel (column means);
      p_i = s_i^2 / sum_j s_j^2 over the singular values s of X; -sum_{p_i > 0} p_i ln p_i divided
      by ln(kh*kw): 0 when all variance lies along one structure, 1 when no direction is preferred.
      None when N < 2, when kh*kw < 2, or when the centred kernels are all zero (no variance).
    The squared singular values are the eigenvalues of X^T X (kh*kw x kh*kw), computed in float64.
    """
    flat = np.asarray(flat)
    finite = np.isfinite(flat).all(axis=1)
    if not finite.all():
        flat = flat[finite]
    n, k = flat.shape
    if n == 0:
        return None, None
    max_abs = np.abs(flat).max(axis=1).astype(np.float64)   # exact in the input's precision
    top = max_abs.max()
    sparsity = float(np.count_nonzero(max_abs < SPARSE_FRACTION * top) / n) if top > 0 else 1.0
    if n < 2 or k < 2:
        return sparsity, None
    wide = flat.astype(np.float64)
    centred = wide - wide.mean(axis=0)
    power = np.clip(np.linalg.eigvalsh(centred.T @ centred), 0.0, None)
    total = power.sum()
    if not total > 0:
        return sparsity, None
    p = power[power > 0] / total
    return sparsity, float(-(p * np.log(p)).sum() / np.log(k))


def _one_blas_thread():
    """BLAS on one thread for the metrics' small products: on a busy machine, threads that spin
    after each tiny call slow the Parquet write that follows (measured: 3x the whole ingest)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:   # pragma: no cover - threadpoolctl comes with scikit-learn
        return contextlib.nullcontext()
    return threadpool_limits(1, user_api="blas")


@dataclass(frozen=True)
class LayerRow:
    """One row of layer_records, before it is inserted."""

    layer: str
    expert: int | None
    layer_index: int
    depth: float
    kh: int
    kw: int
    n_kernels: int
    n_nonfinite: int
    n_near_zero: int
    meta: dict
    sparsity: float | None = None           # layer_metrics (migration 0006)
    variance_entropy: float | None = None


def layer_positions(layers: list[DepthwiseLayer]) -> dict[str, int]:
    """0-based order of distinct layer names (CondConv experts share their layer's index)."""
    positions: dict[str, int] = {}
    for layer in layers:
        positions.setdefault(layer.name, len(positions))
    return positions


def build_kernel_table(
    layers: list[DepthwiseLayer], checkpoint_sha256: str, adapter: str, trained: bool
) -> tuple[pa.Table, list[LayerRow]]:
    """The kernel rows (one per channel of every layer) and the matching layer rows."""
    positions = layer_positions(layers)
    last = max(len(positions) - 1, 1)
    with _one_blas_thread():
        metrics = [layer_metrics(np.asarray(l.weights, np.float32).reshape(len(l.weights), -1)) for l in layers]
    columns: dict[str, list[np.ndarray]] = {name: [] for name in KERNEL_SCHEMA.names}
    flat_weights, lengths, layer_rows = [], [], []
    for layer, layer_metric in zip(layers, metrics):
        n, kh, kw = layer.weights.shape
        flat = np.ascontiguousarray(layer.weights, dtype=np.float32).reshape(n, kh * kw)
        stats = kernel_stats(flat)
        index = positions[layer.name]
        depth = index / last if len(positions) > 1 else 0.0
        columns["kernel_id"].append(kernel_ids(checkpoint_sha256, layer.name, layer.expert, n))
        columns["layer_index"].append(np.full(n, index, np.int32))
        columns["depth"].append(np.full(n, depth))
        columns["expert"].append(np.full(n, -1 if layer.expert is None else layer.expert, np.int32))
        columns["channel"].append(np.arange(n, dtype=np.int32))
        columns["kh"].append(np.full(n, kh, np.int16))
        columns["kw"].append(np.full(n, kw, np.int16))
        columns["layer"].append(np.full(n, layer.name, dtype=object))
        for name, values in stats.items():
            columns[name].append(values)
        flat_weights.append(flat.reshape(-1))
        lengths.append(np.full(n, kh * kw, np.int32))
        layer_rows.append(LayerRow(
            layer.name, layer.expert, index, depth, kh, kw, n,
            int(stats["nonfinite"].sum()), int(stats["near_zero"].sum()), layer.meta,
            *layer_metric,
        ))
    offsets = np.concatenate([[0], np.cumsum(np.concatenate(lengths))]).astype(np.int32)
    arrays = {
        name: pa.array(np.concatenate(parts)) for name, parts in columns.items() if parts
    }
    expert = np.concatenate(columns["expert"])
    arrays["expert"] = pa.array(expert, mask=expert < 0)
    arrays["weights"] = pa.ListArray.from_arrays(pa.array(offsets), pa.array(np.concatenate(flat_weights)))
    n_rows = len(expert)
    arrays["checkpoint_sha256"] = pa.array([checkpoint_sha256] * n_rows)
    arrays["adapter"] = pa.array([adapter] * n_rows)
    arrays["trained"] = pa.array(np.full(n_rows, trained))
    arrays["layer"] = pa.array(np.concatenate(columns["layer"]))
    table = pa.table([arrays[name] for name in KERNEL_SCHEMA.names], schema=KERNEL_SCHEMA)
    return table, layer_rows
