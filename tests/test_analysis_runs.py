"""The analysis through the catalog: embed -> cluster -> identify -> report, stored as runs."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sklearn.metrics import adjusted_rand_score

import kernel_catalog as kc
from kernel_catalog.analysis.embed import _run as embed_module
from kernel_catalog.analysis.cluster import cluster_run, identify
from kernel_catalog.analysis.embed import embed
from kernel_catalog.analysis.params import PRESETS, ClusterParams, EmbedParams
from kernel_catalog.errors import CatalogError
from kernel_catalog.ingest import ingest
from kernel_catalog.analysis.validation.planted import planted_bank, planted_classes
from kernel_catalog.report.report import report
from kernel_catalog.analysis.runs import delete_run
from kernel_catalog.store import Catalog

from .conftest import MASTER_KEYS, assert_one_line_error, copy_catalog, run_cli, run_cli_in_process as cli, snapshot

FAST = EmbedParams(batch_size=256, epochs=120)     # ~600 optimiser steps on 1,200 kernels
K = len(planted_classes(7, 7))                      # 14 planted classes: every family, random orientations
N_PER_CLASS = 86
N = K * N_PER_CLASS + 3


def _bank_file(folder, name, seed):
    bank = planted_bank(N_PER_CLASS, 7, 7, snr=2.0, seed=seed, classes=planted_classes(7, 7, 0))
    # truth per kernel: "class label/family|polarity" (the class for ARI, family and polarity for names)
    kernels = bank.kernels
    labels = np.array([f"{c}/{f}|{p}" for c, f, p in zip(bank.labels, bank.family, bank.polarity)])
    bad = np.zeros((3, 49), np.float32)
    bad[0, 5] = np.nan                                      # kept in the catalog, excluded from training
    path = folder / f"{name}.npz"
    np.savez(path, weights=np.concatenate([kernels, bad]).reshape(-1, 7, 7))
    return path, np.concatenate([labels, ["bad"] * 3])


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    folder = tmp_path_factory.mktemp("planted")
    catalog = Catalog(folder / "catalog")
    path, truth = _bank_file(folder, "bank", seed=0)
    ingest(catalog, str(path))
    embed(catalog, "ae", "model = 'bank'", params=FAST, progress=False)
    cluster_run(catalog, "ae-k8", "ae", ClusterParams(k=K))
    return catalog, truth, folder


@pytest.fixture
def planted_copy(planted, tmp_path):
    """The planted catalog copied, for a test that writes (runs, models); its bank files go to tmp_path."""
    catalog, truth, _ = planted
    return copy_catalog(catalog, tmp_path), truth, tmp_path


def _labels(catalog, run):
    return catalog.sql("SELECT k.channel, l.* FROM labels l JOIN kernels k USING (kernel_id) "
                       "WHERE l.run = ? ORDER BY k.channel", [run]).to_pylist()


def test_embeddings_stored_for_every_kernel(planted):
    catalog, truth, _ = planted
    rows = catalog.sql("SELECT e.*, k.nonfinite FROM embeddings e JOIN kernels k USING (kernel_id) WHERE run = 'ae'").to_pylist()
    assert len(rows) == len(truth) == N
    assert sum(not r["usable"] for r in rows) == 3      # the NaN row and two all-zero rows, kept and flagged
    usable = [r for r in rows if r["usable"]]
    assert all(len(r["z"]) == 2 and -1 <= r["recon_cos"] <= 1 for r in usable)
    assert all(r["z"] is None for r in rows if not r["usable"])
    record = catalog.sql("SELECT * FROM runs WHERE run = 'ae'").to_pylist()[0]
    metrics = json.loads(record["metrics"])["7x7"]
    assert record["kind"] == "embed" and record["device"] == "cpu" and record["code_version"]
    assert metrics["classified"] > 0.9 and metrics["null_classified"] < 0.05     # planted vs iid control
    assert json.loads(record["params"])["latent_dim"] == 2


def test_the_paper_presets_reconstruction_space_clusters_through_the_autoencoder(planted_copy):
    """--space reconstruction (what the paper preset keeps) reads every kernel's reconstruction;
    both spaces recover the planted classes, and each run records the space it used."""
    catalog, truth, _ = planted_copy
    assert PRESETS["paper"][1].space == "reconstruction" and PRESETS["default"][1].space == "kernel"
    cluster_run(catalog, "ae-recon", "ae", ClusterParams(k=K, space="reconstruction"))
    scores = {}
    for run in ("ae-k8", "ae-recon"):
        rows = [r for r in _labels(catalog, run) if r["cluster"] is not None]
        scores[run] = adjusted_rand_score(truth[[r["channel"] for r in rows]], [r["cluster"] for r in rows])
        params = json.loads(catalog.sql("SELECT params FROM runs WHERE run = ?", [run]).to_pylist()[0]["params"])
        assert params["space"] == ("kernel" if run == "ae-k8" else "reconstruction")
    assert min(scores.values()) >= 0.9, scores


def test_clusters_recover_and_name_the_planted_families(planted):
    catalog, truth, _ = planted
    rows = _labels(catalog, "ae-k8")
    usable = [r for r in rows if r["cluster"] is not None]
    classes = truth[[r["channel"] for r in usable]]
    assert adjusted_rand_score(classes, [r["cluster"] for r in usable]) >= 0.9
    planted_truth = [t.split("/")[1] for t in classes]
    clusters = catalog.sql("SELECT * FROM clusters WHERE run = 'ae-k8'").to_pylist()
    by_cluster = {c["cluster"]: f"{c['family']}|{c['polarity']}" for c in clusters}
    named_right = np.mean([by_cluster[r["cluster"]] == t for r, t in zip(usable, planted_truth)])
    assert named_right >= 0.9
    own_right = np.mean([f"{r['kernel_family']}|{r['kernel_polarity']}" == t for r, t in zip(usable, planted_truth)])
    assert own_right >= 0.9
    assert len(clusters) == K and {c["family"] for c in clusters} == {t.split("/")[1].split("|")[0] for t in truth if t != "bad"}
    assert all(len(c["mean_kernel"]) == 49 and c["score"] > 0.6 and c["margin"] is not None for c in clusters)
    assert all((c["orientation"] is None) == (c["family"] in ("dog", "impulse", "square", "cross")) for c in clusters)
    metrics = json.loads(catalog.sql("SELECT metrics FROM runs WHERE run = 'ae-k8'").to_pylist()[0]["metrics"])["7x7"]
    assert 0.8 <= metrics["seed_ari"] <= 1 and metrics["seed_ari_n"] == N - 3


def test_same_seed_same_labels(planted_copy):
    catalog, _, _ = planted_copy
    cluster_run(catalog, "ae-k8-again", "ae", ClusterParams(k=K))
    assert [r["cluster"] for r in _labels(catalog, "ae-k8")] == [r["cluster"] for r in _labels(catalog, "ae-k8-again")]
    delete_run(catalog, "ae-k8-again")


def test_reports_in_every_grouping_and_format(planted, monkeypatch):
    catalog, _, _ = planted
    table1 = report(catalog, "ae-k8", "model").to_pylist()
    assert table1[0]["model"] == "bank" and table1[0]["kernels"] == N and table1[0]["usable"] == N - 3
    assert table1[0]["classified_pct"] > 90 and table1[0]["null_classified_pct"] < 5
    by_layer = report(catalog, "ae-k8", "layer")
    names = {c["label"] for c in catalog.sql("SELECT label FROM clusters WHERE run = 'ae-k8'").to_pylist()}
    assert names <= set(by_layer.column_names)
    assert abs(sum(by_layer.to_pylist()[0][f] or 0 for f in names) - 1) < 0.01
    monkeypatch.setenv("KERNEL_CATALOG", str(catalog.root))
    as_json = json.loads(cli("report", "--run", "ae-k8", "--by", "kernel_size", "--format", "json", check=True).stdout)
    clear = catalog.sql("SELECT avg((coalesce(kernel_margin, 1) >= 0.05)::INT) AS c FROM labels "
                        "WHERE run = 'ae-k8' AND cluster IS NOT NULL").to_pylist()[0]["c"]
    assert as_json[0]["size"] == "7x7" and as_json[0]["clear_pct"] == round(100 * clear, 1) and 0.5 < clear <= 1
    as_csv = cli("report", "--run", "ae-k8", "--by", "cluster", "--format", "csv", check=True).stdout
    assert as_csv.splitlines()[0] == ("size,cluster,label,family,polarity,orientation,scale,template,score,margin,"
                                      "n_kernels,share,clear_share") and len(as_csv.splitlines()) == K + 1
    per_cluster = report(catalog, "ae-k8", "cluster").to_pylist()
    assert abs(sum(r["clear_share"] * r["n_kernels"] for r in per_cluster) / (N - 3) - clear) < 0.01
    assert report(catalog, "ae", "kernel_size").to_pylist()[0]["clear_pct"] is None      # an embed run names nothing
    table = cli("report", "--run", "ae-k8", "--by", "depth", check=True).stdout
    assert "depth_from" in table and "dog-pos" in table


def test_report_says_no_clear_share_for_labels_written_before_kernel_margin(planted_copy):
    """Label files from before migration 0008 have no kernel_margin: the view reads NULL, and the
    report says NULL rather than counting every kernel as a clear call."""
    import pyarrow.parquet as pq

    catalog, _, _ = planted_copy
    cluster_run(catalog, "pre-margin", "ae", ClusterParams(k=4))
    paths = [r["path"] for r in catalog.sql("SELECT path FROM result_files WHERE run = 'pre-margin' AND kind = 'labels'")
             .to_pylist()]
    for path in paths:                                  # as an older version wrote them
        full = catalog.data.full(path)
        pq.write_table(pq.read_table(full).drop_columns(["kernel_margin"]), full)
    assert report(catalog, "pre-margin", "kernel_size").to_pylist()[0]["clear_pct"] is None
    assert {r["clear_share"] for r in report(catalog, "pre-margin", "cluster").to_pylist()} == {None}
    delete_run(catalog, "pre-margin")


def test_run_names_replace_and_delete(planted_copy):
    catalog, _, _ = planted_copy
    with pytest.raises(CatalogError, match="already exists; pass --replace"):
        cluster_run(catalog, "ae-k8", "ae", ClusterParams(k=8))
    cluster_run(catalog, "extra", "ae", ClusterParams(k=3))
    before = snapshot(catalog)
    counts = catalog.sql("SELECT run, count(*) AS n FROM labels GROUP BY run ORDER BY run").to_pylist()
    cluster_run(catalog, "extra", "ae", ClusterParams(k=4), replace=True)
    assert catalog.sql("SELECT count(DISTINCT cluster) AS n FROM labels WHERE run = 'extra'").to_pylist() == [{"n": 4}]
    with pytest.raises(CatalogError, match="parent of"):
        delete_run(catalog, "ae")
    delete_run(catalog, "extra")
    assert catalog.sql("SELECT run, count(*) AS n FROM labels GROUP BY run ORDER BY run").to_pylist() == \
        [c for c in counts if c["run"] != "extra"]
    assert catalog.sql("SELECT count(*) AS n FROM clusters WHERE run = 'extra'").to_pylist() == [{"n": 0}]
    assert not list((catalog.root / "results").glob("run=extra*/*"))
    assert snapshot(catalog) == before                       # kernels untouched throughout
    assert_one_line_error(cli("--catalog", str(catalog.root), "report", "--run", "nope"), "unknown run 'nope'")


def test_identify_with_the_master_key_templates(planted_copy):
    catalog, _, _ = planted_copy
    master_keys = MASTER_KEYS
    cluster_run(catalog, "mk", "ae", ClusterParams(k=K))
    identify(catalog, "mk", templates=f"builtin+{master_keys}")
    record = catalog.sql("SELECT params FROM runs WHERE run = 'mk'").to_pylist()[0]
    assert json.loads(record["params"])["templates"].endswith("master_key_filters_8x7x7.txt")
    assert len(_labels(catalog, "mk")) == N
    identify(catalog, "mk", templates=str(master_keys))              # replace the builtin families
    labels = {c["label"] for c in catalog.sql("SELECT label FROM clusters WHERE run = 'mk'").to_pylist()}
    parts = {part for label in labels for part in label.split("|")}       # 'a|b': an ambiguous cluster
    assert parts <= {f"master-key-{i}" for i in range(1, 9)} | {"unmatched"}
    delete_run(catalog, "mk")


def test_from_model_embeds_new_kernels_without_training(planted_copy):
    catalog, _, folder = planted_copy
    path, _ = _bank_file(folder, "bank2", seed=5)
    ingest(catalog, str(path))
    embed(catalog, "ae-bank2", "model = 'bank2'", FAST, from_model="ae", progress=False)
    files = catalog.sql("SELECT kind, count(*) AS n FROM result_files WHERE run = 'ae-bank2' GROUP BY kind").to_pylist()
    assert files == [{"kind": "embeddings", "n": 1}]                 # no autoencoder trained or saved
    record = catalog.sql("SELECT parent, metrics FROM runs WHERE run = 'ae-bank2'").to_pylist()[0]
    assert record["parent"] == "ae" and json.loads(record["metrics"])["7x7"]["classified"] > 0.9
    delete_run(catalog, "ae-bank2")


def test_streaming_gives_the_same_embeddings(planted_copy, monkeypatch):
    catalog, _, _ = planted_copy
    monkeypatch.setattr(embed_module, "STREAM_ABOVE", 10)          # force the Parquet-streaming path
    monkeypatch.setattr(embed_module, "PART_ROWS", 500)            # written as parts of 500 kernels
    embed(catalog, "ae-streamed", "model = 'bank'", params=FAST, progress=False)
    same = catalog.sql("SELECT count(*) AS n FROM embeddings a JOIN embeddings b USING (kernel_id) "
                       "WHERE a.run = 'ae' AND b.run = 'ae-streamed' AND a.z IS NOT DISTINCT FROM b.z").to_pylist()
    assert same == [{"n": N}]
    parts = catalog.sql("SELECT path, n_rows FROM result_files WHERE run = 'ae-streamed' AND kind = 'embeddings'")
    rows = parts.column("n_rows").to_pylist()
    assert len(rows) >= 3 and max(rows) <= 500 and sum(rows) == N
    on_disk = sorted(p.relative_to(catalog.root).as_posix()
                     for p in (catalog.root / "results" / "run=ae-streamed").glob("embeddings-*"))
    assert on_disk == sorted(parts.column("path").to_pylist())
    delete_run(catalog, "ae-streamed")


def test_device_cuda_without_cuda_is_one_clear_line(planted):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    catalog, _, _ = planted
    result = cli("--catalog", str(catalog.root), "embed", "--run", "gpu", "--device", "cuda")
    assert_one_line_error(result, "--device cuda", "no CUDA")
    assert_one_line_error(cli("--catalog", str(catalog.root), "embed", "--run", "x", "--where", "kh = 99"),
                          "matches no kernels")
    assert_one_line_error(cli("--catalog", str(catalog.root), "embed", "--run", "x", "--where", "nonsense ="),
                          "--where")


def test_real_trained_kernels_beat_their_null_model(tmp_path, rapidocr_models):
    """The honest check: trained 5x5 kernels are classified far more often than an iid
    Gaussian control of the same shape and count, same protocol (default latent 2)."""
    catalog = Catalog(tmp_path / "catalog")
    ingest(catalog, str(rapidocr_models["ch_PP-OCRv4_det_infer"]))
    metrics = embed(catalog, "real5", "kh = 5 AND kw = 5", EmbedParams(), progress=False)["5x5"]
    assert metrics["n"] == 2112
    assert metrics["classified"] - metrics["null_classified"] >= 0.5, metrics


def test_same_seed_same_labels_across_processes(planted_copy):
    """`catalog cluster` in two processes (this one and a fresh one): identical partitions (rows
    are read in kernel_id order; a join's row order is not fixed and k-means seeds from row positions)."""
    catalog, _, _ = planted_copy
    for name, run in (("proc-a", cli), ("proc-b", run_cli)):
        run("--catalog", str(catalog.root), "cluster", "--run", name, "--from", "ae", "--k", str(K), check=True)
    differ = catalog.sql("SELECT count(*) FILTER (WHERE a.cluster IS DISTINCT FROM b.cluster) AS n FROM labels a "
                         "JOIN labels b USING (kernel_id) WHERE a.run = 'proc-a' AND b.run = 'proc-b'").to_pylist()
    assert differ == [{"n": 0}]
    for name in ("proc-a", "proc-b"):
        delete_run(catalog, name)


def test_template_file_of_another_size_extends_only_its_size():
    from kernel_catalog.analysis.naming.templates import template_bank
    from kernel_catalog.analysis.naming.templates import make_templates

    master_keys = MASTER_KEYS
    assert len(template_bank(f"builtin+{master_keys}", 7, 7)) == len(make_templates(7, 7)) + 8
    assert len(template_bank(f"builtin+{master_keys}", 5, 5)) == len(make_templates(5, 5))
    with pytest.raises(CatalogError, match="expected 5x5"):
        template_bank(str(master_keys), 5, 5)


def test_thresholds_are_recorded_fixed_and_calibrated(planted):
    catalog, _, _ = planted
    from kernel_catalog.analysis.runs import run_record

    record = run_record(catalog, "ae")
    m = record.size_metrics("7x7")
    assert m["threshold_source"] == "published" and m["threshold"] == m["threshold_fixed"] == 0.3
    assert m["null_classified_calibrated"] <= 0.05 + 1 / m["null_n"] and m["threshold_calibrated"] > 0
    assert record.embed_params().threshold_rule == "published" and record.embed_params().latent_dim == 2
    table1 = report(catalog, "ae-k8", "model").to_pylist()[0]
    assert {"paper_pct", "paper_null_pct", "calibrated_pct", "calibrated_null_pct"} <= set(table1)
    assert table1["calibrated_null_pct"] <= 5.1 and table1["calibrated_pct"] > 90
    from kernel_catalog.report.report import seed_stability_lines, verdict_warnings

    assert verdict_warnings(catalog, "ae-k8") == []
    assert seed_stability_lines(run_record(catalog, "ae-k8"))[0].startswith("7x7: seed ARI ")


def test_per_model_autoencoders_and_small_selection_warning(planted_copy):
    from dataclasses import replace as with_changes

    catalog, _, folder = planted_copy
    path, _ = _bank_file(folder, "bank3", seed=7)
    ingest(catalog, str(path))
    small = with_changes(FAST, per_model=True, epochs=60, cross_fit=0)   # in sample: what the warning is about
    metrics = embed(catalog, "pm", "model IN ('bank', 'bank3') AND channel < 400", small, progress=False)["7x7"]
    assert metrics["per_model"] and set(metrics["models"]) == {"bank", "bank3"}
    assert all(m["usable"] == 400 for m in metrics["models"].values())
    files = catalog.sql("SELECT count(*) AS n FROM result_files WHERE run = 'pm' AND kind = 'autoencoder'").to_pylist()
    assert files == [{"n": 2}]
    result = kc.open(catalog.root).cluster("pm-k", "pm", k=K)     # the API returns the warnings ...
    rows = report(catalog, "pm", "model").to_pylist()
    assert [r["model"] for r in rows] == ["bank", "bank3"] and all(r["usable"] == 400 for r in rows)
    warnings = [line for line in result.warnings if "usable kernels" in line]
    assert len(warnings) == 1 and "800 usable kernels (fewer than 1000;" in warnings[0] and "--cross-fit" in warnings[0]
    printed = cli("--catalog", str(catalog.root), "report", "--run", "pm-k", check=True)   # ... the CLI prints them
    assert warnings[0] in printed.stderr and warnings[0] not in printed.stdout
    cli("--catalog", str(catalog.root), "runs", "delete", "--run", "pm-k", check=True)
    assert "pm-k" not in kc.open(catalog.root).runs().column("run").to_pylist()
    delete_run(catalog, "pm")
