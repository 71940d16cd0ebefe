"""Ray against in-process on this machine: ingest (sources as tasks, one committer) and embedding
(Ray Data map_batches), same inputs, same run, results checked equal.

Sources: --banks synthetic .npy kernel banks of --kernels 7x7 kernels each (smooth DoG-like
kernels plus noise; each bank is one model). Ingest: `ingest_many(jobs=1)` vs `ingest_ray(local)`
into fresh local catalogs, and with --s3 also into an S3 data root on a local moto_server.
Embedding: `embed` (train on the driver, encode) in-process vs `embed(ray="local")`, the same
seed and epochs; the training part is identical, so the encode wall and the end-to-end ratio
show what Ray adds. Cluster: `cluster_run` in-process (the size held whole) vs `ray="local"`
(blocks as Ray tasks that write the labels parts), checked identical. Per-worker throughput (kernels/s per CPU) feeds the 10^9-kernel plan in
bench/RESULTS.md. Ray's fixed overhead dominates on one 2-core machine: it is for clusters.
Usage: python bench/bench_ray.py [--banks 8] [--kernels 50000] [--cpus 2] [--epochs 2] [--s3]
"""
from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def make_banks(folder: Path, banks: int, n: int) -> list[str]:
    rng = np.random.default_rng(0)
    y, x = np.mgrid[-3:4, -3:4].astype(np.float32)
    paths = []
    for b in range(banks):
        s1 = rng.uniform(0.6, 1.2, (n, 1, 1)).astype(np.float32)
        s2 = s1 * rng.uniform(1.5, 2.5, (n, 1, 1)).astype(np.float32)
        r2 = x ** 2 + y ** 2
        dog = np.exp(-r2 / (2 * s1 ** 2)) - 0.5 * np.exp(-r2 / (2 * s2 ** 2))
        bank = (dog * rng.choice([-1, 1], (n, 1, 1)) + rng.normal(0, 0.05, (n, 7, 7))).astype(np.float32)
        path = folder / f"bank{b:02d}.npy"
        np.save(path, bank)
        paths.append(str(path))
    return paths


def timed(fn):
    started = time.perf_counter()
    out = fn()
    return time.perf_counter() - started, out


def start_moto() -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    process = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.2)
    endpoint = f"http://127.0.0.1:{port}"
    os.environ.update({"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
                       "AWS_REGION": "us-east-1"})
    return process, endpoint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--banks", type=int, default=8)
    parser.add_argument("--kernels", type=int, default=50_000)
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--s3", action="store_true", help="also ingest into an S3 data root (local moto_server)")
    args = parser.parse_args()

    moto = None
    if args.s3:
        moto, endpoint = start_moto()     # before ray.init: the workers inherit the AWS variables
    import ray

    from kernel_catalog.analysis.embed import embed
    from kernel_catalog.analysis.params import EmbedParams
    from kernel_catalog.ingest import ingest_many, ingest_ray
    from kernel_catalog.store import Catalog

    t_init, _ = timed(lambda: ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False,
                                       logging_level="ERROR"))
    total = args.banks * args.kernels
    print(f"{args.banks} banks x {args.kernels} 7x7 kernels = {total} kernels; ray.init {t_init:.1f}s "
          f"({args.cpus} CPUs)")
    rows = []
    try:
        with tempfile.TemporaryDirectory(prefix="bench-ray-") as tmp:
            tmp = Path(tmp)
            sources = make_banks(tmp, args.banks, args.kernels)
            local, viaray = Catalog(tmp / "inproc"), Catalog(tmp / "ray")
            t_in, _ = timed(lambda: ingest_many(local, sources, jobs=1))
            t_ray, out = timed(lambda: ingest_ray(viaray, sources, "local"))
            assert all(o.action == "added" for o in out), out
            q = "SELECT model, kernel_id, hash(weights) AS h FROM kernels ORDER BY model, kernel_id"
            assert local.sql(q) == viaray.sql(q)
            rows.append(("ingest (local folder)", t_in, t_ray))
            if args.s3:
                import boto3

                boto3.client("s3").create_bucket(Bucket="bench")
                s3cat = Catalog(tmp / "s3-driver")
                s3cat.init("s3://bench/lab")
                t_s3, out = timed(lambda: ingest_ray(s3cat, sources, "local"))
                assert s3cat.sql(q) == local.sql(q)
                rows.append(("ingest (Ray, S3 data root; in-process column: local)", t_in, t_s3))
            params = EmbedParams(epochs=args.epochs, null_model=False)
            t_ein, _ = timed(lambda: embed(local, "e", None, params, progress=False))
            t_eray, _ = timed(lambda: embed(viaray, "e", None, params, progress=False, ray="local"))
            e = "SELECT kernel_id, z FROM embeddings WHERE run = 'e' ORDER BY kernel_id"
            za = np.array(local.sql(e).column("z").to_pylist(), np.float64)
            zb = np.array(viaray.sql(e).column("z").to_pylist(), np.float64)
            diff = float(np.abs(za - zb).max())
            rows.append(("embed (train on driver + encode)", t_ein, t_eray))
            # encoding alone (the part that grows with the catalog), the trained model reused
            from importlib import import_module

            from kernel_catalog.analysis.embed._ray import ray_encoder
            from kernel_catalog.analysis.embed import load_run_models
            from kernel_catalog.analysis.selection import KernelSelection

            embed_step = import_module("kernel_catalog.analysis.embed._run")
            model = load_run_models(local, "e")["7x7"][None]
            selection = KernelSelection(local)
            try:
                t_cin, _ = timed(lambda: embed_step._encode_chunks(model, selection.batches(7, 7), 7, 7, params))
                ray_paths = KernelSelection(viaray).paths        # (its own file names)
                with viaray.hold():                              # its tasks write parts (removed after)
                    encode = ray_encoder(viaray, ray_paths, selection.where, "local", "encode-only")
                    t_cray, _ = timed(lambda: encode(model, 7, 7, params))
            finally:
                selection.close()
            rows.append(("encode only (read Parquet + preprocess + encode + write)", t_cin, t_cray))
            # cluster: in-process (the size held whole) vs Ray (blocks as tasks), the same partition
            from kernel_catalog.analysis.cluster import cluster_run
            from kernel_catalog.analysis.params import ClusterParams

            t_kin, _ = timed(lambda: cluster_run(local, "c", "e", ClusterParams(k=10)))
            t_kray, _ = timed(lambda: cluster_run(viaray, "c", "e", ClusterParams(k=10), ray="local"))
            c = "SELECT kernel_id, cluster, label FROM labels WHERE run = 'c' ORDER BY kernel_id"
            same_labels = local.sql(c) == viaray.sql(c)
            rows.append(("cluster k=10 (in-process whole vs Ray blocks)", t_kin, t_kray))
    finally:
        ray.shutdown()
        if moto is not None:
            moto.terminate()
            moto.wait(10)
    print(f"{'step':55s} {'in-process s':>12s} {'Ray s':>8s} {'Ray/in-process':>15s} {'Ray kernels/s/CPU':>18s}")
    for name, a, b in rows:
        print(f"{name:55s} {a:12.2f} {b:8.2f} {b / a:15.2f} {total / b / args.cpus:18.0f}")
    print(f"embeddings: max |z_ray - z_inprocess| = {diff:.2e} (same kernel ids); "
          f"cluster labels {'identical' if same_labels else 'DIFFERENT'}")


if __name__ == "__main__":
    main()
