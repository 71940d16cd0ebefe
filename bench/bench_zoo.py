"""A zoo run from a local hub with throttled bandwidth: is extraction hidden behind the downloads?

N published timm releases (real random-init checkpoints, safetensors) are served by the tests'
hub-protocol server through one shared link of --mbps MB/s. Three measurements, each into a fresh
cache (and catalog):
  download   resolve + fetch of every release on --jobs threads, nothing read (the floor);
  serial     `ingest_many(..., jobs=1)`: one download at a time, each read while the next downloads;
  zoo        `ingest_many(..., jobs=--jobs)`: the real zoo run (what `catalog ingest PATTERN` does).
Also the sums of per-model download and extraction (read + commit) times from the zoo run.
Target: zoo wall <= 1.1 x download wall (extraction hidden behind downloads).
Whole-file downloads (KERNEL_CATALOG_FULL_DOWNLOAD=1), as measured before ranged reads; --ranged
measures the default instead (bench/bench_ranged_zoo.py compares the two per model).
Usage: python bench/bench_zoo.py [--mbps 8] [--jobs 2] [--pattern 'mobilenetv3_small*' ...] [--ranged]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.hub_server import HubServer  # noqa: E402
from tests.timm_fixtures import build_random_model, plain_state_dict  # noqa: E402

DEFAULT_PATTERNS = ["mobilenetv3_small*", "lcnet_0[57]*", "test_convnext*"]


def serve(server: HubServer, patterns: list[str]) -> list[str]:
    import timm
    from safetensors.torch import save as save_bytes
    from timm.models import get_pretrained_cfg

    names = []
    for pattern in patterns:
        names += timm.list_models(pattern, pretrained=True, include_tags=True)
    for seed, name in enumerate(names):
        data = save_bytes(plain_state_dict(build_random_model(name.partition(".")[0], seed)))
        server.add(get_pretrained_cfg(name).hf_hub_id, {"model.safetensors": data})
    return names


def fresh_cache(tmp: Path, label: str) -> None:
    os.environ["HF_HUB_CACHE"] = str(tmp / f"cache-{label}")


def download_only(names: list[str], jobs: int) -> float:
    from kernel_catalog.adapters import IngestOptions, get_adapter

    timm = get_adapter("timm")

    def fetch(name: str) -> None:
        timm.fetch(timm.resolve(name, IngestOptions()))

    started = time.perf_counter()
    with ThreadPoolExecutor(jobs) as pool:
        list(pool.map(fetch, names))
    return time.perf_counter() - started


def zoo(names: list[str], jobs: int, root: Path) -> tuple[float, list]:
    from kernel_catalog.ingest import IngestFailure, ingest_many
    from kernel_catalog.store import Catalog

    started = time.perf_counter()
    outcomes = ingest_many(Catalog(root), names, jobs=jobs)
    wall = time.perf_counter() - started
    failed = [o for o in outcomes if isinstance(o, IngestFailure)]
    assert not failed, failed
    return wall, outcomes


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mbps", type=float, default=8.0, help="shared link bandwidth, MB/s")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--pattern", action="append", default=None)
    parser.add_argument("--ranged", action="store_true", help="ranged reads of safetensors (the default)")
    args = parser.parse_args()
    if args.ranged:
        os.environ.pop("KERNEL_CATALOG_FULL_DOWNLOAD", None)
    else:
        os.environ["KERNEL_CATALOG_FULL_DOWNLOAD"] = "1"

    server = HubServer()
    names = serve(server, args.pattern or DEFAULT_PATTERNS)
    total = sum(len(r.files["model.safetensors"]) for r in server.repos.values())
    server.bytes_per_second = args.mbps * 1e6
    server.start()
    os.environ.update(HF_ENDPOINT=server.url, HF_HUB_DISABLE_PROGRESS_BARS="1")
    os.environ.pop("HF_HUB_OFFLINE", None)
    print(f"{len(names)} releases, {total / 1e6:.1f} MB, link {args.mbps} MB/s "
          f"(transfer floor {total / (args.mbps * 1e6):.1f} s), jobs {args.jobs}")

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # warm-up outside the timings: imports, timm's registry, one meta build and read
        fresh_cache(tmp, "warm")
        server.bytes_per_second = None
        zoo(names[:1], 1, tmp / "warm")
        server.bytes_per_second = args.mbps * 1e6

        fresh_cache(tmp, "download")
        download = download_only(names, args.jobs)
        fresh_cache(tmp, "serial")
        serial, _ = zoo(names, 1, tmp / "serial")
        fresh_cache(tmp, "zoo")
        wall, outcomes = zoo(names, args.jobs, tmp / "zoo")
    server.stop()

    dl_sum = sum(o.download_seconds for o in outcomes)
    read_sum = sum(o.read_seconds for o in outcomes)
    print(f"download only ({args.jobs} jobs): {download:6.2f} s")
    print(f"zoo, jobs=1:                  {serial:6.2f} s")
    print(f"zoo, jobs={args.jobs}:                  {wall:6.2f} s  = {wall / download:.2f} x download "
          f"(target <= 1.10)")
    print(f"  sum of per-model downloads {dl_sum:.2f} s (overlapping), of extractions {read_sum:.2f} s; "
          f"serial download + extraction would be ~{download + read_sum:.2f} s")


if __name__ == "__main__":
    main()
