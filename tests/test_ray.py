"""Ingest, embed and cluster on a local Ray instance (2 CPUs, shared by this module's few tests):
the same rows and values as the in-process path; a worker killed mid-task is retried with no
duplicate rows and no orphan file; data on the S3-compatible server."""
from __future__ import annotations

import numpy as np
import pytest

from kernel_catalog.adapters.base import IngestOptions
from kernel_catalog.analysis.cluster import cluster_run
from kernel_catalog.analysis.embed import embed
from kernel_catalog.analysis.params import ClusterParams, EmbedParams
from kernel_catalog.errors import CatalogError
from kernel_catalog.ingest import IngestFailure, ingest_ray, ingest_many
from kernel_catalog.store import Catalog
from kernel_catalog.store.faults import CRASH_ENV, ONCE_ENV
from kernel_catalog.store.verify import verify

from .cluster_fixtures import ray_hub, ray_local, s3_env, s3_objects, s3_server   # noqa: F401 (fixtures)

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

KERNEL_ROWS = "SELECT model, kernel_id, layer, channel, kh, kw, weights FROM kernels ORDER BY model, kernel_id"
PARAMS = EmbedParams(epochs=3, null_model=False, cross_fit=0)   # in sample: Ray scores in sample


def _sources(cls_onnx):
    return [str(cls_onnx)]


def test_ray_ingest_embed_cluster_equal_in_process_on_s3(ray_local, s3_env, tmp_path, cls_onnx, monkeypatch):
    local = Catalog(tmp_path / "local")
    ingest_many(local, [str(cls_onnx)])
    embed(local, "e", "kh = 5", PARAMS, progress=False)
    cluster_run(local, "c", "e", ClusterParams(k=3))

    remote = Catalog(tmp_path / "driver")
    remote.init(f"s3://{s3_env['BUCKET']}/lab")
    # the driver records each file's SHA-256 as the task that wrote it computed it: no file the
    # workers wrote is streamed back to the driver to be hashed (`verify` below reads them all)
    from kernel_catalog.store.datafs import DataRoot

    streamed, stream = [], DataRoot._streamed_sha256
    monkeypatch.setattr(DataRoot, "_streamed_sha256", lambda self, path: streamed.append(path) or stream(self, path))
    # a worker killed right after writing its Parquet: Ray retries the task, the dead attempt's
    # file is an orphan removed at the end of the run, the model is committed once
    monkeypatch.setenv(CRASH_ENV, "ray-task-written")
    monkeypatch.setenv(ONCE_ENV, str(tmp_path / "killed-once"))
    outcomes = ingest_ray(remote, [str(cls_onnx)], "local")
    monkeypatch.delenv(CRASH_ENV)
    assert (tmp_path / "killed-once").exists()                      # the kill did happen
    assert [o.action for o in outcomes] == ["added"], outcomes
    assert remote.sql(KERNEL_ROWS) == local.sql(KERNEL_ROWS)        # same ids and weights, no duplicates
    kernel_keys = [k for k in s3_objects(s3_env["BUCKET"]) if "/kernels/" in k]
    assert len(kernel_keys) == 1                                    # the retried task's orphan is gone
    again = ingest_ray(remote, [str(cls_onnx)], "local")            # idempotent: same digest, unchanged
    assert [o.action for o in again] == ["unchanged"] and remote.sql("SELECT count(*) FROM kernels") == \
        local.sql("SELECT count(*) FROM kernels")

    # embeddings: each task writes its part into the data root; a worker killed right after writing
    # one is retried, and the dead attempt's part is removed at the end of the run
    from kernel_catalog.analysis.embed import _ray as ray_step

    monkeypatch.setattr(ray_step, "PART_ROWS", 300)                 # 800 5x5 kernels: several parts
    monkeypatch.setenv(CRASH_ENV, "ray-embed-part-written")
    monkeypatch.setenv(ONCE_ENV, str(tmp_path / "killed-embedding"))
    embed(remote, "e", "kh = 5", PARAMS, progress=False, ray="local")
    monkeypatch.delenv(CRASH_ENV)
    assert (tmp_path / "killed-embedding").exists()
    parts = remote.sql("SELECT path FROM result_files WHERE run = 'e' AND kind = 'embeddings'").column("path")
    assert len(parts) >= 2
    part_keys = [k.removeprefix("lab/") for k in s3_objects(s3_env["BUCKET"]) if "/embeddings-" in k]
    assert sorted(part_keys) == sorted(parts.to_pylist())          # no orphan part left
    # cluster: every block a Ray task that writes its labels part; a worker killed after writing
    # one is retried, the partition is the in-process one and no orphan part is left
    from kernel_catalog.analysis.cluster import _blocks as cluster_blocks

    monkeypatch.setattr(cluster_blocks, "BLOCK_ROWS", 300)
    monkeypatch.setenv(CRASH_ENV, "labels-part-written")
    monkeypatch.setenv(ONCE_ENV, str(tmp_path / "killed-labels"))
    metrics = cluster_run(remote, "c", "e", ClusterParams(k=3), ray="local")
    monkeypatch.delenv(CRASH_ENV)
    assert (tmp_path / "killed-labels").exists() and metrics["5x5"]["blocks"] >= 3      # 800 kernels, 300 a block
    label_parts = remote.sql("SELECT path FROM result_files WHERE run = 'c' AND kind = 'labels'").column("path")
    assert sorted(k.removeprefix("lab/") for k in s3_objects(s3_env["BUCKET"]) if "/labels-" in k) == \
        sorted(label_parts.to_pylist())
    query = "SELECT kernel_id, z, recon_cos, usable FROM embeddings WHERE run = 'e' ORDER BY kernel_id"
    a, b = local.sql(query), remote.sql(query)
    assert a.column("kernel_id") == b.column("kernel_id") and a.column("usable") == b.column("usable")
    za, zb = np.array(a.column("z").to_pylist(), float), np.array(b.column("z").to_pylist(), float)
    assert np.abs(za - zb).max() <= 1e-5
    ra, rb = (t.column("recon_cos").to_numpy(zero_copy_only=False) for t in (a, b))
    assert np.nanmax(np.abs(ra - rb)) <= 1e-5
    labels = "SELECT * EXCLUDE (run, score, recon_cos) FROM labels WHERE run = 'c' ORDER BY kernel_id"
    assert local.sql(labels) == remote.sql(labels)
    clusters = "SELECT label, n_kernels, medoid_kernel_id FROM clusters WHERE run = 'c' ORDER BY cluster"
    assert local.sql(clusters) == remote.sql(clusters)
    assert streamed == []
    report = verify(remote)
    assert report.clean, report.lines()
    assert any(p.startswith("kernels/") for p in streamed) and any("/labels-" in p for p in streamed)


def test_ray_failure_is_reported_per_source(ray_local, tmp_path, cls_onnx):
    catalog = Catalog(tmp_path / "c")
    outcomes = ingest_ray(catalog, [str(cls_onnx), str(tmp_path / "missing.onnx")], "local",
                          IngestOptions(include=("Conv@2",)))
    assert outcomes[0].action == "added"
    assert "missing.onnx" in outcomes[1].message and "\n" not in outcomes[1].message
    outcomes = ingest_ray(catalog, [str(cls_onnx)], "local", IngestOptions(name="local-file"), evict=True)
    assert [o.action for o in outcomes] == ["added"]                    # a local file: nothing to evict
    for step in (lambda: ingest_ray(catalog, [str(cls_onnx)], "ray://head:10001"),
                 lambda: embed(catalog, "x", params=PARAMS, progress=False, ray="ray://head:10001"),
                 lambda: cluster_run(catalog, "y", "x", ClusterParams(k=3), ray="ray://head:10001")):
        with pytest.raises(CatalogError, match="workers on other machines cannot read or write the local catalog"):
            step()                                                     # before any work or connection


def test_ray_workers_download_published_weights_and_evict_them(ray_local, ray_hub, tmp_path):
    """Each task downloads its source from the hub into its worker's cache; with evict the cache is
    left as the task found it once the model's Parquet is written; without, the weights stay."""
    import timm

    from .hub_fixtures import ZOO_PATTERN, _served, cache_listing

    server, cache = ray_hub
    name = timm.list_models(ZOO_PATTERN, pretrained=True, include_tags=True)[0]
    served = _served(name, seed=0)
    server.add(served.repo, {"model.safetensors": served.data, "config.json": b"{}"})
    catalog = Catalog(tmp_path / "c")
    before = cache_listing(cache)
    whole = IngestOptions(full_download=True)                           # into the cache (a ranged read caches nothing)
    outcomes = ingest_ray(catalog, [name], "local", whole, evict=True)
    assert [o.action for o in outcomes] == ["added"], outcomes
    assert any(path.endswith("/model.safetensors") for path, _ in server.downloads())   # from the hub
    assert cache_listing(cache) == before                               # evicted on the worker
    kept = ingest_ray(catalog, [name], "local", IngestOptions(name="kept", full_download=True))
    assert [o.action for o in kept] == ["added"] and any(p.endswith("model.safetensors") for p in cache_listing(cache))
    counts = catalog.sql("SELECT model, count(*) AS n FROM kernels GROUP BY ALL ORDER BY ALL").to_pylist()
    assert len(counts) == 2 and counts[0]["n"] == counts[1]["n"] > 0  # the same weights, twice


def test_ray_workers_get_only_the_variables_the_driver_forwards(ray_local, ray_hub, tmp_path, monkeypatch):
    """HF_TOKEN set on the driver after Ray started: a worker does not see it (a gated repo is
    refused, the catalog unchanged) until KERNEL_CATALOG_RAY_ENV names it; a malformed list is one
    line before any task."""
    import torch
    from safetensors.torch import save as save_bytes

    from kernel_catalog.store.ray_runtime import FORWARD_ENV

    server, _ = ray_hub
    server.add("acme/gated-ray", {"model.safetensors": save_bytes({"dw.weight": torch.randn(4, 1, 5, 5)})},
               gated_token="hf_ray_secret")
    catalog = Catalog(tmp_path / "c")
    monkeypatch.setenv("HF_TOKEN", "hf_ray_secret")                   # the driver's, not the workers'
    monkeypatch.delenv(FORWARD_ENV, raising=False)
    refused = ingest_ray(catalog, ["hf:acme/gated-ray"], "local")
    assert isinstance(refused[0], IngestFailure) and "HF_TOKEN" in refused[0].message, refused
    assert catalog.sql("SELECT count(*) AS n FROM kernels").to_pylist() == [{"n": 0}]
    monkeypatch.setenv(FORWARD_ENV, "HF_TOKEN, NOT_SET_ANYWHERE")       # unset names are skipped
    added = ingest_ray(catalog, ["hf:acme/gated-ray"], "local")
    assert [o.action for o in added] == ["added"], added
    assert catalog.sql("SELECT count(*) AS n FROM kernels").to_pylist() == [{"n": 4}]
    monkeypatch.setenv(FORWARD_ENV, "HF_TOKEN,not a name")
    with pytest.raises(CatalogError, match="'not a name' is not an environment variable name"):
        ingest_ray(catalog, ["hf:acme/gated-ray"], "local", IngestOptions(name="again"))


def test_ray_embed_of_a_large_selection_trains_on_a_seeded_sample(ray_local, tmp_path, cls_onnx, monkeypatch):
    from kernel_catalog.analysis.embed import _run as embed_step

    catalog = Catalog(tmp_path / "c")
    ingest_many(catalog, [str(cls_onnx)])
    monkeypatch.setattr(embed_step, "STREAM_ABOVE", 300)       # "large": more than 300 kernels of a size
    monkeypatch.setattr(embed_step, "NULL_SAMPLE", 300)        # and a null bounded the same way
    params = EmbedParams(epochs=3)                            # with its null model
    metrics = [embed(catalog, run, "kh = 5", params, progress=False, ray="local")["5x5"] for run in ("s1", "s2")]
    assert metrics[0]["n"] == 800 and metrics[0] == metrics[1]            # seeded: the same sample twice
    assert metrics[0]["null_n"] == 300 and metrics[0]["null_classified"] <= 1
    rows = catalog.sql("SELECT run, count(*) AS n, count(z) AS z FROM embeddings GROUP BY run ORDER BY run")
    assert rows.column("n").to_pylist() == [800, 800] and rows.column("z").to_pylist() == [800, 800]


def test_the_training_sample_is_drawn_from_the_selection_not_from_every_kernel(tmp_path, cls_onnx):
    """DuckDB applies USING SAMPLE before a WHERE at the same level: the sample must come from
    the selected kernels (a subquery), or a narrow selection trains on a fraction of its bound."""
    from kernel_catalog.analysis.embed._ray import training_sample

    catalog = Catalog(tmp_path / "c")
    ingest_many(catalog, [str(cls_onnx)])
    paths = catalog.sql("SELECT path FROM kernel_files").column("path").to_pylist()
    where = "channel % 2 = 0"                                       # half of the 5x5 kernels
    chosen = set(catalog.sql(f"SELECT kernel_id FROM kernels WHERE kh = 5 AND {where}").column("kernel_id").to_pylist())
    assert 300 < len(chosen) < 600
    ids, weights = training_sample(catalog, paths, where, 5, 5, 300, seed=0)
    assert len(ids) == 300 and weights.shape == (300, 25) and set(ids.tolist()) <= chosen
    again, _ = training_sample(catalog, paths, where, 5, 5, 300, seed=0)
    assert np.array_equal(ids, again)                                # seeded: the same sample


def test_staged_models_ready_together_commit_in_one_transaction(tmp_path, cls_onnx):
    """What `ingest --ray` does with every result ready at once (here the task body runs in this
    process): one transaction for all, a refused model fails alone and leaves no file."""
    from kernel_catalog.ingest._ray import commit_staged, extract_and_stage

    catalog = Catalog(tmp_path / "c")
    ingest_many(catalog, [str(cls_onnx)], IngestOptions(name="taken", include=("Conv@2",)))
    root = str(catalog.root)
    with catalog.hold():                                          # as ingest_ray: no writer removes staged files
        staged = [extract_and_stage(str(cls_onnx), IngestOptions(name=name), None, root, None)
                  for name in ("first", "second", "taken")]      # "taken" holds other weights
        outcomes = commit_staged(catalog, staged, force=False, wait=None, committed=set())
    assert [getattr(o, "action", None) for o in outcomes] == ["added", "added", None]
    assert "already in the catalog with other weights" in outcomes[2].message
    models = catalog.sql("SELECT model, ingested_at FROM models ORDER BY model").to_pylist()
    assert [m["model"] for m in models] == ["first", "second", "taken"]
    assert models[0]["ingested_at"] == models[1]["ingested_at"]       # one transaction (its start time)
    assert not (catalog.root / staged[2].path).exists()              # the refused model's file is gone
    assert catalog.sql("SELECT count(*) AS n FROM kernels WHERE model = 'first'").column("n")[0].as_py() == \
        staged[0].n_rows
