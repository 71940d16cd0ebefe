"""Ingest of a convnext_base-sized timm checkpoint (random init, safetensors, ~354 MB).

Three measurements in one run, warm page cache, median of N:
  naive   timm.create_model + load_state_dict + iterate modules + write the same rows
          (build_kernel_table + Parquet), what a first script would do;
  floor   architecture on the meta device + reading only the depthwise tensors (no writing);
  ours    `catalog ingest convnext_base --checkpoint FILE --force` through the library
          (extraction, digest, Parquet, DuckDB commit) into an existing catalog.
Plus the SHA-256 of the whole file, the identity hash we chose not to compute.
Targets: ours <= 0.5x naive and <= 1.5x floor.
Usage: python bench/bench_ingest.py [--repeats 7] [--arch convnext_base]
"""
from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pyarrow.parquet as pq  # noqa: E402
import timm  # noqa: E402
import torch  # noqa: E402
from safetensors import safe_open  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402
from torch import nn  # noqa: E402

from kernel_catalog.adapters.base import DepthwiseLayer, IngestOptions  # noqa: E402
from kernel_catalog.ingest import ingest  # noqa: E402
from kernel_catalog.store.kernel_table import build_kernel_table, checkpoint_digest  # noqa: E402
from kernel_catalog.store import Catalog  # noqa: E402


def depthwise(model: nn.Module) -> list[tuple[str, nn.Conv2d]]:
    return [(n, m) for n, m in model.named_modules()
            if isinstance(m, nn.Conv2d) and m.groups == m.in_channels > 1 and m.kernel_size[0] * m.kernel_size[1] > 1]


def naive(arch: str, path: Path, out: Path) -> int:
    model = timm.create_model(arch, pretrained=False)
    model.load_state_dict(load_file(str(path)))
    layers = [DepthwiseLayer(n, m.weight.detach().numpy()[:, 0]) for n, m in depthwise(model)]
    table, _ = build_kernel_table(layers, checkpoint_digest(layers), "naive", True)
    pq.write_table(table, out)
    return table.num_rows


def floor(arch: str, path: Path) -> int:
    with torch.device("meta"):
        model = timm.create_model(arch, pretrained=False)
    names = [f"{n}.weight" for n, _ in depthwise(model)]
    with safe_open(str(path), framework="pt") as f:
        return sum(f.get_tensor(n).shape[0] for n in names)


def ours(catalog: Catalog, arch: str, path: Path) -> int:
    return ingest(catalog, arch, IngestOptions(checkpoint=path), force=True).n_kernels


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--arch", default="convnext_base")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--cache", type=Path, default=Path(".cache/bench"))
    args = parser.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    path = args.cache / f"{args.arch}-random.safetensors"
    if not path.exists():
        torch.manual_seed(0)
        save_file(timm.create_model(args.arch, pretrained=False).state_dict(), str(path))
    print(f"{args.arch}: {path.stat().st_size / 1e6:.0f} MB safetensors")
    with tempfile.TemporaryDirectory() as tmp:
        catalog = Catalog(Path(tmp) / "catalog")
        n = [naive(args.arch, path, Path(tmp) / "naive.parquet"), floor(args.arch, path), ours(catalog, args.arch, path)]
        assert n[0] == n[1] == n[2], n   # warm-up, and all three see the same kernels
        t_naive = median_seconds(lambda: naive(args.arch, path, Path(tmp) / "naive.parquet"), max(3, args.repeats // 2))
        t_floor = median_seconds(lambda: floor(args.arch, path), args.repeats)
        t_ours = median_seconds(lambda: ours(catalog, args.arch, path), args.repeats)
        t_hash = median_seconds(lambda: sha256_file(path), 3)
    print(f"kernels: {n[0]:,}")
    print(f"naive loop        {t_naive:7.3f} s")
    print(f"floor (no write)  {t_floor:7.3f} s")
    print(f"ours (ingest)     {t_ours:7.3f} s   = {t_ours / t_naive:.2f}x naive (target <= 0.5), "
          f"{t_ours / t_floor:.2f}x floor (target <= 1.5)")
    print(f"sha256 whole file {t_hash:7.3f} s   (not computed by ingest: we hash the depthwise bytes)")


if __name__ == "__main__":
    main()
