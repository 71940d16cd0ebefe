"""`catalog publish DEST`: a self-contained read-only catalog of a selection in a folder, on S3
(moto_server) or in a dataset repo of the local hub server; opened by path or URI, every read
works, writes are refused in one line, a second publish with nothing changed uploads nothing, and
a tampered snapshot is refused like any catalog from someone else."""
from __future__ import annotations

import shutil
from pathlib import Path

import duckdb
import numpy as np
import pyarrow.parquet as pq
import pytest

import kernel_catalog as kc
from kernel_catalog.ingest import commit_extraction
from kernel_catalog.store import Catalog

from .cluster_fixtures import s3_env, s3_objects, s3_server   # noqa: F401 (fixtures)
from .conftest import assert_one_line_error, run_cli_in_process as cli, snapshot
from .hub_fixtures import empty_hub   # noqa: F401 (fixture)
from .test_nearest import _bank

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
WHERE = "layer <> 'c3'"          # layers a, b (5x5) and c7 of both models: 760 kernels


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> kc.Catalog:
    """Two models and a small embed + cluster run over their 5x5 kernels."""
    root = tmp_path_factory.mktemp("source") / "catalog"
    store = Catalog(root)
    commit_extraction(store, _bank(0, "m1"), "arrays", "1.0")
    commit_extraction(store, _bank(1, "m2"), "arrays", "1.0")
    cat = kc.open(root)
    cat.embed("e5", where="kh = 5", epochs=2, cross_fit=0)
    cat.cluster("e5-k", "e5", k=3)
    return cat


def _reads(location: str, source: kc.Catalog, out: Path, everything: bool = False) -> None:
    """Every kind of read a user does, on the published catalog, against the source."""
    published = kc.open(location)
    models = published.models().to_pylist()
    assert [(m["model"], m["n_layers"], m["n_kernels"]) for m in models] == [("m1", 3, 380), ("m2", 3, 380)]
    query = "SELECT model, layer, channel, kernel_id, hash(weights) FROM kernels WHERE {} ORDER BY ALL"
    assert published.sql(query.format(WHERE)).to_pylist() == source.sql(query.format(WHERE)).to_pylist()
    one = published.sql("SELECT layer, count(*) AS n FROM kernels WHERE model = 'm2' GROUP BY ALL ORDER BY ALL")
    assert one.to_pylist() == [{"layer": "a", "n": 150}, {"layer": "b", "n": 150}, {"layer": "c7", "n": 80}]
    assert published.report("e5-k").to_pylist() == source.report("e5-k").to_pylist()
    assert published.runs().column("run").to_pylist() == ["e5", "e5-k"]
    kernel = published.sql("SELECT kernel_id FROM kernels WHERE model = 'm1' AND layer = 'c7' AND channel = 3")[0][0]
    assert published.nearest(kernel=kernel.as_py()).to_pylist() == source.nearest(kernel=kernel.as_py()).to_pylist()
    exported = published.export(out / "k7.parquet", where="kh = 7")
    assert exported.row_count == 160
    printed = cli("--catalog", location, "models", "--format", "json", check=True)
    assert '"m1"' in printed.stdout and '"m2"' in printed.stdout
    if not everything:
        return
    drift = published.drift("model = 'm1' AND kh = 5", "model = 'm2' AND kh = 5")
    assert drift.to_pylist() == source.drift("model = 'm1' AND kh = 5", "model = 'm2' AND kh = 5").to_pylist()
    published.figure("clusters", out / "clusters.png", run="e5-k", force=True)
    assert (out / "clusters.png").stat().st_size > 0


def test_publish_to_a_folder(source, tmp_path, monkeypatch):
    monkeypatch.setenv("KERNEL_CATALOG_CACHE", str(tmp_path / "cache"))
    dest = tmp_path / "published"
    result = source.publish(dest, where=WHERE, runs=["e5-k"])
    assert (result.models, result.kernels) == (2, 760) and result.changed and result.bytes > 0
    assert {"catalog.duckdb", "README.md", ".kernel-catalog", "kernel-catalog-publish.json"} <= set(result.uploaded)
    assert sum(p.startswith("results/run=e5/") for p in result.uploaded) == 2      # the parent run came along
    _reads(str(dest), source, tmp_path)
    assert kc.open(dest).verify().clean
    assert not (dest / "cache").exists()       # nearest's search matrix went to the user cache
    # sorted by layer and channel, one row group per layer: a one-layer query reads its own group
    for path in sorted(dest.glob("kernels/model=*/*.parquet")):
        meta = pq.ParquetFile(path).metadata
        assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [150, 150, 80]
        layers = pq.read_table(path, columns=["layer", "channel"]).to_pylist()
        assert layers == sorted(layers, key=lambda r: (r["layer"], r["channel"]))
    card = (dest / "README.md").read_text()
    assert card.startswith("---\nlicense: unknown\n") and "Unveiling the Unseen" in card and "ICLR 2024" in card
    assert "| m1 | 380 | m1 | arrays | yes |" in card and f"catalog --catalog {dest} models" in card
    # nothing changed: nothing uploaded (the CLI says so)
    again = cli("--catalog", str(source.root), "publish", str(dest), "--where", WHERE, "--runs", "e5-k", check=True)
    assert "is up to date" in again.stderr and "nothing uploaded" in again.stderr
    # a smaller selection: the other model's file is removed, the rest stays
    smaller = source.publish(dest, where="model = 'm1'")
    assert all(p.startswith("kernels/model=m1/") or "/" not in p for p in smaller.uploaded)
    assert not list(dest.glob("kernels/model=m2/*")) and not (dest / "results").exists() or \
        not list((dest / "results").rglob("*.p*"))
    assert kc.open(dest).models().column("model").to_pylist() == ["m1"]


def test_published_folder_refuses_writes(source, tmp_path):
    dest = tmp_path / "published"
    source.publish(dest, where="model = 'm1'")
    before = snapshot(Catalog(dest))
    refused = cli("--catalog", str(dest), "runs", "delete", "--run", "e5")
    assert_one_line_error(refused, "published read-only catalog")
    refused = cli("--catalog", str(dest), "verify", "--repair")
    assert_one_line_error(refused, "published read-only catalog")
    assert snapshot(Catalog(dest)) == before


def test_publish_refuses_a_foreign_folder_and_a_bad_selection(source, tmp_path):
    someone = tmp_path / "someone"
    someone.mkdir()
    (someone / "notes.txt").write_text("mine")
    assert_one_line_error(cli("--catalog", str(source.root), "publish", str(someone)), "not empty")
    assert sorted(p.name for p in someone.iterdir()) == ["notes.txt"]
    assert_one_line_error(cli("--catalog", str(source.root), "publish", str(tmp_path / "x"), "--where", "kh = 11"),
                          "selection is empty")
    assert_one_line_error(cli("--catalog", str(source.root), "publish", str(tmp_path / "x"), "--runs", "nope"),
                          "no run 'nope'")
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("tamper, message", [
    ("UPDATE kernel_files SET path = '/etc/passwd'", "not a catalog file name"),
    ("CREATE VIEW evil AS SELECT 42", "did not create"),
])
def test_a_tampered_published_catalog_is_refused(source, tmp_path, tamper, message):
    dest = tmp_path / "published"
    source.publish(dest, where="model = 'm1'")
    con = duckdb.connect(str(dest / "catalog.duckdb"))
    con.execute(tamper)
    con.close()
    assert_one_line_error(cli("--catalog", str(dest), "models"), message)


def test_a_link_out_of_a_published_folder_is_refused(source, tmp_path):
    dest = tmp_path / "published"
    source.publish(dest, where="model = 'm1'")
    outside = tmp_path / "outside"
    shutil.move(str(dest / "kernels" / "model=m1"), outside)
    (dest / "kernels" / "model=m1").symlink_to(outside, target_is_directory=True)
    assert_one_line_error(cli("--catalog", str(dest), "sql", "SELECT count(*) FROM kernels"), "resolves outside")


def test_republishing_removes_nothing_through_a_link(source, tmp_path):
    """A stale file of a previous publish is removed only inside the folder: a `kernels/` that is
    a link to somewhere else makes the publish stop, and the files there stay."""
    dest = tmp_path / "published"
    source.publish(dest, where=WHERE)
    elsewhere = tmp_path / "elsewhere"
    (dest / "kernels").rename(elsewhere)
    (dest / "kernels").symlink_to(elsewhere, target_is_directory=True)
    before = sorted(p.relative_to(elsewhere) for p in elsewhere.rglob("*"))
    with pytest.raises(kc.CatalogError, match="outside the folder"):
        source.publish(dest, where=f"model = 'm1' AND {WHERE}")
    assert sorted(p.relative_to(elsewhere) for p in elsewhere.rglob("*")) == before


def test_publish_to_s3_and_open_by_uri(source, s3_env, tmp_path):
    bucket = s3_env["BUCKET"]
    uri = f"s3://{bucket}/pub"
    result = source.publish(uri, where=WHERE, runs=["e5-k"])
    assert result.changed and "catalog.duckdb" in result.uploaded
    objects = s3_objects(bucket)
    assert "pub/kernel-catalog-publish.json" in objects and sum(o.startswith("pub/kernels/") for o in objects) == 2
    _reads(uri, source, tmp_path)
    assert kc.open(uri).verify().clean, kc.open(uri).verify().lines()
    again = source.publish(uri, where=WHERE, runs=["e5-k"])
    assert not again.changed and again.bytes == 0 and len(again.skipped) == len(result.uploaded) - 1
    before = s3_objects(bucket)
    assert_one_line_error(cli("--catalog", uri, "runs", "delete", "--run", "e5"), "read-only")
    assert s3_objects(bucket) == before


@pytest.fixture
def hub(empty_hub, monkeypatch, tmp_path):
    """The local hub server; uploads take huggingface_hub's LFS path (the server speaks no Xet)."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    monkeypatch.setenv("KERNEL_CATALOG_CACHE", str(tmp_path / "user-cache"))
    return empty_hub


def test_publish_to_the_hub_and_open_by_uri(source, hub, monkeypatch, tmp_path):
    uri = "hf://datasets/me/kernels"
    printed = cli("--catalog", str(source.root), "publish", uri, "--where", WHERE, "--runs", "e5-k", check=True)
    assert "published 2 models, 760 kernels" in printed.stderr and "commit" in printed.stderr
    assert len(hub.commits) == 1
    repo = hub.repos["datasets/me/kernels"]
    assert {"README.md", "catalog.duckdb", "kernel-catalog-publish.json"} <= set(repo.files)
    _reads(uri, source, tmp_path, everything=True)    # (a figure and drift: the hub case only, for time)
    assert kc.open(uri).verify().clean
    # a one-model query reads that model's file only, by ranges
    hub.requests.clear()
    kc.open(uri).sql("SELECT count(*) FROM kernels WHERE model = 'm1' AND layer = 'c7'")
    fetched = {p for m, p, _ in hub.requests if m == "GET" and "/resolve/" in p}
    assert fetched and all("model=m1" in p for p in fetched), fetched
    # nothing changed: no commit, nothing uploaded
    uploads = len(hub.uploads)
    again = kc.open(source.root).publish(uri, where=WHERE, runs=["e5-k"])
    assert not again.changed and again.commit is None and len(hub.commits) == 1 and len(hub.uploads) == uploads
    # writes refused in one line; the repo unchanged
    assert_one_line_error(cli("--catalog", uri, "runs", "delete", "--run", "e5"), "read-only")
    assert len(hub.commits) == 1
    # a revision by name: the commit made
    commit = hub.commits[0][1]
    assert kc.open(f"{uri}@{commit}").sql("SELECT count(*) FROM kernels")[0][0].as_py() == 760
    # a smaller selection: one commit that adds the new snapshot and deletes the other model's file
    smaller = kc.open(source.root).publish(uri, where=f"model = 'm1' AND {WHERE}")
    assert not [p for p in smaller.uploaded if p.startswith("kernels/")]          # m1's file stands
    assert smaller.commit == hub.commits[-1][1] and len(hub.commits) == 2
    assert [p for p in smaller.deleted if p.startswith("kernels/")] == [p for p in repo.files_at(commit)
                                                                        if p.startswith("kernels/model=m2/")]
    assert not [p for p in hub.repos["datasets/me/kernels"].files if p.startswith("kernels/model=m2/")]
    assert kc.open(uri).models().column("model").to_pylist() == ["m1"]
    # the cached revision opens offline
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub.stop()
    assert kc.open(uri).models().column("model").to_pylist() == ["m1"]
    assert kc.open(f"{uri}@{commit}").models().column("model").to_pylist() == ["m1", "m2"]


def test_a_one_layer_query_reads_its_row_groups_and_columns_only(hub, tmp_path):
    """Published Parquet is laid out for range reads: a row group per layer, so a query on one of
    three equal layers fetches about a third of the file, and one small column far less."""
    from kernel_catalog.adapters.base import DepthwiseLayer, Extraction

    rng = np.random.default_rng(0)
    layers = [DepthwiseLayer(f"l{i}", rng.normal(size=(6000, 7, 7)).astype(np.float32)) for i in range(3)]
    commit_extraction(Catalog(tmp_path / "big"), Extraction("big", "big", True, layers), "arrays", "1.0")
    kc.open(tmp_path / "big").publish("hf://datasets/me/big")
    size = sum(len(v) for k, v in hub.repos["datasets/me/big"].files.items() if k.endswith(".parquet"))
    published = kc.open("hf://datasets/me/big")
    hub.served.clear()
    assert published.sql("SELECT count(*) FROM kernels WHERE layer = 'l1'")[0][0].as_py() == 6000
    hub.served.clear()
    published.sql("SELECT sum(list_sum(weights)) FROM kernels WHERE layer = 'l2'")
    weights = hub.served_bytes(".parquet")
    hub.served.clear()
    published.sql("SELECT sum(l2) FROM kernels WHERE layer = 'l2'")
    norms = hub.served_bytes(".parquet")
    assert 0 < norms < 0.15 * size and 0.25 * size < weights < 0.45 * size, (norms, weights, size)


@pytest.mark.parametrize("tamper, message", [
    ("UPDATE kernel_files SET path = '/etc/passwd'", "not a catalog file name"),
    ("CREATE MACRO round(x) AS 42", "did not create"),
])
def test_a_tampered_hub_snapshot_is_refused(source, hub, tmp_path, tamper, message):
    """A repo whose catalog.duckdb someone altered (a later commit): refused in one line, nothing read."""
    uri = "hf://datasets/me/evil"
    source.publish(uri, where="model = 'm1'")
    repo = hub.repos["datasets/me/evil"]
    altered = tmp_path / "catalog.duckdb"
    altered.write_bytes(repo.files["catalog.duckdb"])
    con = duckdb.connect(str(altered))
    con.execute(tamper)
    con.close()
    files = {**repo.files, "catalog.duckdb": altered.read_bytes()}
    repo.history["e" * 40], repo.files, repo.revisions["main"] = files, files, "e" * 40
    assert_one_line_error(cli("--catalog", uri, "models"), message)
    hub.requests.clear()
    assert_one_line_error(cli("--catalog", uri, "sql", "SELECT count(*) FROM kernels"), message)
    assert not [p for m, p, _ in hub.requests if p.endswith(".parquet")]


def test_the_card_states_the_licences_the_models_state(tmp_path):
    from kernel_catalog.adapters.base import DepthwiseLayer, Extraction

    store = Catalog(tmp_path / "catalog")
    rng = np.random.default_rng(1)
    for model, licence in [("a", "apache-2.0"), ("b", "cc-by-nc-4.0"), ("c", None)]:
        meta = {"hub": {"repo": f"org/{model}", "license": licence}} if licence else {}
        commit_extraction(store, Extraction(model, f"hf:org/{model}", True,
                                            [DepthwiseLayer("dw", rng.normal(size=(4, 3, 3)).astype(np.float32))], meta),
                          "arrays", "1.0")
    kc.open(store.root).publish(tmp_path / "published")
    card = (tmp_path / "published" / "README.md").read_text()
    assert card.startswith('---\nlicense:\n- "apache-2.0"\n- "cc-by-nc-4.0"\n'), card[:120]
    assert "| a | 4 | hf:org/a | arrays | yes | apache-2.0 |" in card and "| c | 4 | hf:org/c | arrays | yes | not stated |" in card


def test_a_hub_catalog_out_of_reach_is_one_line(source, hub, monkeypatch):
    uri = "hf://datasets/me/never-published"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert_one_line_error(cli("--catalog", uri, "models"), "not in the Hugging Face cache", "HF_HUB_OFFLINE is set")
    assert_one_line_error(cli("--catalog", str(source.root), "publish", uri), "HF_HUB_OFFLINE is set")
    # (a hub that cannot be reached gives "... cannot be reached" too, after huggingface_hub's own
    # retries with backoff, ~25 s: not timed here)


def test_results_of_a_run_keep_only_the_published_kernels(source, tmp_path):
    """The run covers both models' 5x5 kernels; publishing one model publishes none of the other's
    embeddings or labels, and publishing again with nothing changed uploads nothing."""
    dest = tmp_path / "published"
    source.publish(dest, where="model = 'm1'", runs=["e5-k"])
    published = kc.open(dest)
    m1 = "SELECT kernel_id FROM kernels WHERE model = 'm1' AND kh = 5"
    for view in ("embeddings", "labels"):
        ids = published.sql(f"SELECT kernel_id FROM {view} ORDER BY ALL").column(0).to_pylist()
        assert ids == source.sql(m1 + " ORDER BY ALL").column(0).to_pylist()
        assert source.sql(f"SELECT count(*) FROM {view} WHERE run LIKE 'e5%'")[0][0].as_py() > len(ids)
    assert published.verify().clean
    assert "result rows" in (dest / "README.md").read_text()
    assert not source.publish(dest, where="model = 'm1'", runs=["e5-k"]).changed
