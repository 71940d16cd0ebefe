"""A published catalog queried without downloading it (issue 19, point 5): bytes fetched.

Builds a catalog of --models x --layers x --channels 7x7 kernels (default 20 x 5 x 10,000 = 1 M,
random weights), publishes it to the tests' hub-protocol server (`hf://datasets/bench/kernels`,
huggingface_hub's real upload and download client), then opens it by URI in a fresh cache and
counts the bytes the server sends for each read:
  open + `models`          the snapshot (catalog.duckdb) and nothing else;
  one-model count          `SELECT count(*) ... WHERE model = M`: that model's file footer / row groups;
  one-model weights        `SELECT sum(list_sum(weights)) ... WHERE model = M`: its weights only;
  one-layer norms          `SELECT avg(l2) ... WHERE model = M AND layer = L`: one row group, one column.
Each as a share of the published bytes (Parquet + snapshot). Target: `models` and a one-model
query <= 5 %.
Usage: python bench/bench_published.py [--models 20] [--layers 5] [--channels 10000]
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from tests.hub_server import HubServer  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=int, default=20)
    parser.add_argument("--layers", type=int, default=5)
    parser.add_argument("--channels", type=int, default=10_000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-published-"))
    server = HubServer().start()
    for var in ("HF_TOKEN", "HF_HUB_OFFLINE", "HF_HOME"):
        os.environ.pop(var, None)
    os.environ.update({"HF_ENDPOINT": server.url, "HF_HUB_CACHE": str(work / "hf-cache"),
                       "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_XET": "1",
                       "KERNEL_CATALOG_CACHE": str(work / "user-cache")})
    from huggingface_hub import constants

    constants.HF_HUB_DISABLE_XET = True   # the test server speaks the LFS upload path, not Xet
    import kernel_catalog as kc
    from kernel_catalog.adapters.base import DepthwiseLayer, Extraction
    from kernel_catalog.ingest import commit_extraction
    from kernel_catalog.store import Catalog

    rng = np.random.default_rng(0)
    started = time.perf_counter()
    source = Catalog(work / "source")
    for m in range(args.models):
        layers = [DepthwiseLayer(f"l{i}", rng.standard_normal((args.channels, 7, 7), dtype=np.float32))
                  for i in range(args.layers)]
        commit_extraction(source, Extraction(f"m{m:02d}", f"m{m:02d}", True, layers), "arrays", "1.0")
    built = time.perf_counter() - started
    uri = "hf://datasets/bench/kernels"
    started = time.perf_counter()
    result = kc.open(work / "source").publish(uri)
    published_s = time.perf_counter() - started
    files = server.repos["datasets/bench/kernels"].files
    total = sum(len(data) for name, data in files.items() if name.endswith((".parquet", ".duckdb")))
    n = args.models * args.layers * args.channels
    print(f"# {n:,} 7x7 kernels in {args.models} models; built in {built:.1f} s, published in {published_s:.1f} s "
          f"({result.kernels:,} kernels, {total / 1e6:.1f} MB of Parquet + snapshot)")
    print(f"# {time.strftime('%Y-%m-%d')}, {platform.machine()}, {os.cpu_count()} CPUs")

    def fetched(label: str, read) -> None:
        server.served.clear()
        started = time.perf_counter()
        value = read()
        seconds = time.perf_counter() - started
        sent = sum(server.served.values())
        print(f"| {label} | {value} | {sent / 1e6:.3f} MB | {sent / total:.2%} | {seconds:.2f} s |")

    model = f"m{args.models // 2:02d}"
    print("| read | answer | fetched | share of published bytes | wall |")
    print("|---|---|---|---|---|")
    published = kc.open(uri)
    fetched("open + `models`", lambda: published.models().num_rows)
    fetched(f"one-model count (`model = '{model}'`)",
            lambda: published.sql(f"SELECT count(*) FROM kernels WHERE model = '{model}'")[0][0].as_py())
    fetched("one-model weights (`sum(list_sum(weights))`)",
            lambda: round(published.sql(f"SELECT sum(list_sum(weights)) FROM kernels WHERE model = '{model}'")
                          [0][0].as_py(), 1))
    fetched("one-layer norms (`avg(l2)`, one layer)",
            lambda: round(published.sql(f"SELECT avg(l2) FROM kernels WHERE model = '{model}' AND layer = 'l1'")
                          [0][0].as_py(), 4))
    server.stop()


if __name__ == "__main__":
    main()
