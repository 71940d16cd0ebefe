"""Ranged reads against full downloads, over a zoo of real architectures at their real sizes.

Each release is a timm architecture built with random weights (so the file has the published
size and tensor layout) saved as model.safetensors and served by the tests' hub-protocol server
through one shared link of --mbps MB/s (plus --rtt-ms before each response). Each model is
ingested twice, each time into a fresh HF cache and catalog:
  full     IngestOptions(full_download=True): the whole file downloaded, then read from the cache;
  ranged   the default: the header (and its length) by one Range request, then only the depthwise
           tensors, in parallel.
Two walls: `ingest()` whole (metadata request, transfer, meta-device build, read, and the
catalog's commit, a fixed cost per model whatever the transfer), and `extract` (the adapter's
resolve + fetch + read, what the ranged read changes; run again with a fresh cache). Bytes are what
the server sent for the weights file. The kernels of the two catalogs are compared bit for bit.
Target (issue 19): ConvNeXt-class, ranged wall <= 0.1x full, bytes <= 5 %.
Usage: python bench/bench_ranged_zoo.py [--mbps 50] [--rtt-ms 0] [--models NAME ...]
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

from tests.hub_server import HubServer  # noqa: E402
from tests.timm_fixtures import build_random_model, plain_state_dict  # noqa: E402

ZOO = ["convnext_tiny.fb_in1k", "convnext_small.fb_in1k", "convnext_nano.in12k_ft_in1k",
       "convnextv2_tiny.fcmae_ft_in1k", "efficientnet_b0.ra_in1k", "efficientnet_b2.ra_in1k",
       "mobilenetv3_large_100.ra_in1k", "mobilenetv2_100.ra_in1k"]


def serve(server: HubServer, names: list[str]) -> dict[str, int]:
    """Each release on the server; its file size."""
    from safetensors.torch import save as save_bytes
    from timm.models import get_pretrained_cfg

    sizes = {}
    for seed, name in enumerate(names):
        data = save_bytes(plain_state_dict(build_random_model(name.partition(".")[0], seed)))
        server.add(get_pretrained_cfg(name).hf_hub_id, {"model.safetensors": data})
        sizes[name] = len(data)
    return sizes


def run(server: HubServer, name: str, tmp: Path, mode: str) -> tuple[float, float, int, list]:
    """(wall seconds, transfer seconds, bytes served, kernels) of one ingest into the catalog of
    `mode` (full | ranged | warm), each ingest with a fresh HF cache."""
    from kernel_catalog.adapters.base import IngestOptions
    from kernel_catalog.ingest import ingest
    from kernel_catalog.store import Catalog

    catalog = Catalog(tmp / f"cat-{mode}")
    if not catalog.exists():
        catalog.init()
    os.environ["HF_HUB_CACHE"] = str(tmp / f"cache-{name}-{mode}")
    before = server.served_bytes("model.safetensors")
    started = time.perf_counter()
    result = ingest(catalog, name, IngestOptions(full_download=mode == "full"))
    wall = time.perf_counter() - started
    assert result.action == "added", result
    kernels = catalog.sql("SELECT layer, channel, weights FROM kernels WHERE model = ? ORDER BY layer, channel",
                          [name]).to_pylist()
    return wall, result.download_seconds, server.served_bytes("model.safetensors") - before, kernels


def extract(name: str, tmp: Path, mode: str) -> float:
    """Wall seconds of the timm adapter's resolve + fetch + read alone, with a fresh cache."""
    from kernel_catalog.adapters import get_adapter
    from kernel_catalog.adapters.base import IngestOptions

    os.environ["HF_HUB_CACHE"] = str(tmp / f"cache-{name}-{mode}-extract")
    options = IngestOptions(full_download=mode == "full")
    adapter = get_adapter("timm")
    started = time.perf_counter()
    plan = adapter.resolve(name, options)
    adapter.fetch(plan)
    assert adapter.read(plan.source, options).layers
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mbps", type=float, default=50.0, help="link bandwidth, MB/s (10^6 bytes)")
    parser.add_argument("--rtt-ms", type=float, default=0.0, help="delay before each response, ms")
    parser.add_argument("--models", nargs="*", default=ZOO)
    args = parser.parse_args()
    os.environ.update(HF_HUB_DISABLE_PROGRESS_BARS="1", HF_HUB_DISABLE_TELEMETRY="1")
    for var in ("HF_TOKEN", "HF_HUB_OFFLINE", "KERNEL_CATALOG_FULL_DOWNLOAD"):
        os.environ.pop(var, None)
    server = HubServer().start()
    server.latency = args.rtt_ms / 1000
    os.environ["HF_ENDPOINT"] = server.url
    import torch

    print(f"# {time.strftime('%Y-%m-%d')}, {platform.node()}: {os.cpu_count()} cores, Python"
          f" {platform.python_version()}, torch {torch.__version__}; link {args.mbps:g} MB/s,"
          f" rtt {args.rtt_ms:g} ms")
    started = time.perf_counter()
    sizes = serve(server, args.models)
    print(f"# built and serialised {len(sizes)} releases in {time.perf_counter() - started:.0f} s\n")
    print("| model | file MB | ingest full s | ingest ranged s | ratio | extract full s | extract ranged s |"
          " ratio | ranged bytes | bytes ratio | bit-exact |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|:-:|")
    totals = [0.0] * 6
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        for name in args.models:
            server.bytes_per_second = None
            run(server, name, tmp, "warm")          # imports, timm registry, first build of the architecture
            server.bytes_per_second = args.mbps * 1e6
            full_wall, _, full_bytes, full_kernels = run(server, name, tmp, "full")
            wall, _, fetched, kernels = run(server, name, tmp, "ranged")
            full_extract, ranged_extract = extract(name, tmp, "full"), extract(name, tmp, "ranged")
            same = kernels == full_kernels
            row = [full_wall, wall, full_extract, ranged_extract, full_bytes, fetched]
            totals = [a + b for a, b in zip(totals, row)]
            print(f"| {name} | {sizes[name] / 1e6:.1f} | {full_wall:.2f} | {wall:.2f} | {wall / full_wall:.3f} |"
                  f" {full_extract:.2f} | {ranged_extract:.2f} | {ranged_extract / full_extract:.3f} |"
                  f" {fetched / 1e6:.2f} MB | {fetched / sizes[name]:.2%} | {'yes' if same else 'NO'} |", flush=True)
    full_wall, wall, full_extract, ranged_extract, full_bytes, fetched = totals
    print(f"| all | {sum(sizes.values()) / 1e6:.1f} | {full_wall:.2f} | {wall:.2f} | {wall / full_wall:.3f} |"
          f" {full_extract:.2f} | {ranged_extract:.2f} | {ranged_extract / full_extract:.3f} |"
          f" {fetched / 1e6:.2f} MB | {fetched / full_bytes:.2%} | |")
    server.stop()


if __name__ == "__main__":
    main()
