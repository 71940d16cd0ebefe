"""`catalog export`: formats, manifest, re-import bit-identical, streaming, atomicity, bad input.

One real catalog per module: the trained MobileNetV3 classifier (64 3x3 + 800 5x5 kernels, ONNX
fixture) with a short embed run and a 4-cluster run on top, so labels can be joined to kernels.
"""
from __future__ import annotations

import csv
import json
import hashlib
import os
from datetime import datetime, timezone

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import kernel_catalog
from kernel_catalog.adapters.base import IngestOptions
from kernel_catalog.export import _formats as formats_module
from kernel_catalog.store import _migrate as migrate
from kernel_catalog.analysis.cluster import cluster_run
from kernel_catalog.analysis.embed import embed
from kernel_catalog.analysis.params import ClusterParams, EmbedParams
from kernel_catalog.errors import CatalogError
from kernel_catalog.export.export import EMPTY_MESSAGE, export, manifest_path_for
from kernel_catalog.ingest import ingest
from kernel_catalog.store import Catalog

from .conftest import CLS_ONNX, assert_one_line_error, run_cli, run_cli_in_process

MODEL = "ch_ppocr_mobile_v2.0_cls_infer"


@pytest.fixture(scope="module")
def analysed(tmp_path_factory) -> Catalog:
    cat = Catalog(tmp_path_factory.mktemp("export") / "catalog")
    ingest(cat, str(CLS_ONNX))
    embed(cat, "ae", None, EmbedParams(batch_size=256, epochs=20), progress=False)
    cluster_run(cat, "ae-k4", "ae", ClusterParams(k=4))
    return cat


@pytest.fixture
def out(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    return folder


def _catalog_weights(cat: Catalog, where: str = "true") -> dict[int, np.ndarray]:
    rows = cat.sql(f"SELECT kernel_id, weights FROM kernels WHERE {where}").to_pylist()
    return {r["kernel_id"]: np.asarray(r["weights"], np.float32) for r in rows}


def _bits(values) -> np.ndarray:
    return np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)


def _cli(cat: Catalog, *args: str):
    return run_cli_in_process("--catalog", str(cat.root), "export", *args)


def _listing(folder) -> list[str]:
    return sorted(os.listdir(folder))


# -- formats ----------------------------------------------------------------------------------

def test_parquet_one_size_is_fixed_size_list_bit_identical(analysed, out):
    result = export(analysed, out / "k5.parquet", where="kh = 5 AND kw = 5", progress=False)
    table = pq.read_table(result.path)
    assert result.row_count == table.num_rows == 800
    weights_type = table.schema.field("weights").type
    assert pa.types.is_fixed_size_list(weights_type) and weights_type.list_size == 25
    assert weights_type.value_type == pa.float32()
    assert table.column_names == analysed.sql("SELECT * FROM kernels LIMIT 0").column_names
    expected = _catalog_weights(analysed, "kh = 5")
    got = table.column("weights").combine_chunks().flatten().to_numpy().reshape(-1, 25)
    for kernel_id, values in zip(table.column("kernel_id").to_pylist(), got):
        assert np.array_equal(_bits(values), _bits(expected[kernel_id]))
    assert result.manifest["weights_layout"] == {"type": "fixed_size_list", "length": 25}


def test_parquet_mixed_sizes_keep_a_variable_list(analysed, out):
    result = export(analysed, out / "all.parquet", query="SELECT * FROM kernels", progress=False)
    table = pq.read_table(result.path)
    assert table.num_rows == 864 and pa.types.is_list(table.schema.field("weights").type)
    layout = result.manifest["weights_layout"]
    assert layout["type"] == "list" and layout["lengths"] == [9, 25] and "mixed" in layout["note"]
    assert [(s["kh"], s["rows"]) for s in result.manifest["sizes"]] == [(3, 64), (5, 800)]


def test_csv_weights_as_columns_round_trip_bits(analysed, out):
    result = export(analysed, out / "all.csv", where="true", progress=False)
    with open(result.path, newline="") as f:
        rows = list(csv.DictReader(f))
    header = list(rows[0])
    assert "weights" not in header
    assert header[header.index("w0"):header.index("w24") + 1] == [f"w{i}" for i in range(25)]
    assert len(rows) == 864
    expected = _catalog_weights(analysed)
    for row in rows:
        n = int(row["kh"]) * int(row["kw"])
        values = np.array([np.float32(row[f"w{i}"]) for i in range(n)], np.float32)
        assert np.array_equal(_bits(values), _bits(expected[int(row["kernel_id"])]))
        assert all(row[f"w{i}"] == "" for i in range(n, 25))      # a 3x3 kernel leaves w9..w24 empty
    layout = result.manifest["weights_layout"]
    assert layout["type"] == "columns" and layout["mixed_sizes"] is True


def test_npz_arrays_shapes_and_index(analysed, out):
    result = export(analysed, out / "all.npz", query="SELECT * FROM kernels", progress=False)
    with np.load(result.path, allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files}
    assert list(arrays) == ["weights_3x3", "weights_5x5", "kernel_id", "model", "layer", "channel"]
    assert arrays["weights_3x3"].shape == (64, 3, 3) and arrays["weights_5x5"].shape == (800, 5, 5)
    assert arrays["weights_5x5"].dtype == np.float32
    assert all(arrays[name].shape == (864,) for name in ("kernel_id", "model", "layer", "channel"))
    assert set(arrays["model"]) == {MODEL}
    # index arrays follow the weights arrays: rows of weights_3x3, then of weights_5x5
    expected = _catalog_weights(analysed)
    flat = [w.ravel() for w in arrays["weights_3x3"]] + [w.ravel() for w in arrays["weights_5x5"]]
    for kernel_id, values in zip(arrays["kernel_id"], flat):
        assert np.array_equal(_bits(values), _bits(expected[int(kernel_id)]))
    layers = analysed.sql("SELECT kernel_id, layer, channel FROM kernels").to_pylist()
    where = {r["kernel_id"]: (r["layer"], r["channel"]) for r in layers}
    assert [where[int(k)] for k in arrays["kernel_id"]] == list(zip(arrays["layer"], arrays["channel"].tolist()))
    npz = result.manifest["npz"]
    assert [a["name"] for a in npz["arrays"]][:2] == ["weights_3x3", "weights_5x5"]
    assert "depth" in npz["left_out_columns"] and "weights" not in npz["left_out_columns"]


# -- re-import --------------------------------------------------------------------------------

def test_npz_reingested_through_kernelbank_is_bit_identical(analysed, out, tmp_path):
    one = export(analysed, out / "k5.npz", where="kh = 5", progress=False)
    both = export(analysed, out / "both.npz", where="true", progress=False)
    with np.load(one.path) as archive:
        assert archive.files[0] == "weights"           # one size: the plain name the adapter knows
        exported = archive["weights"]
    fresh = Catalog(tmp_path / "fresh")
    done = run_cli_in_process("--catalog", str(fresh.root), "ingest", str(one.path), "--name", "reimported", check=True)
    assert "added reimported" in done.stdout
    back = fresh.sql("SELECT weights FROM kernels WHERE model = 'reimported' AND layer = 'weights' "
                     "ORDER BY channel").column("weights").to_pylist()
    assert np.array_equal(_bits(np.asarray(back, np.float32)), _bits(exported.reshape(800, 25)))
    ingest(fresh, str(both.path), IngestOptions(name="both"))
    with np.load(both.path) as archive:
        for name in ("weights_3x3", "weights_5x5"):
            back = fresh.sql(f"SELECT weights FROM kernels WHERE model = 'both' AND layer = '{name}' "
                             "ORDER BY channel").column("weights").to_pylist()
            n = archive[name].shape[0]
            assert np.array_equal(_bits(np.asarray(back, np.float32)), _bits(archive[name].reshape(n, -1)))


def test_parquet_reingested_through_statedict_is_bit_identical(analysed, out, tmp_path):
    from safetensors.numpy import save_file

    result = export(analysed, out / "k5.parquet", where="kh = 5", progress=False)
    table = pq.read_table(result.path)
    weights = table.column("weights").combine_chunks().flatten().to_numpy().reshape(-1, 1, 5, 5)
    state = tmp_path / "exported.safetensors"
    save_file({"bank.weight": np.ascontiguousarray(weights)}, str(state))
    fresh = Catalog(tmp_path / "fresh")
    ingest(fresh, str(state))
    back = fresh.sql("SELECT weights FROM kernels ORDER BY channel").column("weights").to_pylist()
    assert np.array_equal(_bits(np.asarray(back, np.float32)), _bits(weights.reshape(-1, 25)))


# -- manifest ---------------------------------------------------------------------------------

def test_manifest_reproduces_the_file(analysed, out):
    result = export(analysed, out / "k5.parquet", where="kh = 5 AND kw = 5", progress=False)
    manifest = json.loads(manifest_path_for(result.path).read_text())
    assert manifest == result.manifest
    assert manifest["format"] == "parquet" and manifest["file"] == "k5.parquet"
    assert manifest["where"] == "kh = 5 AND kw = 5" and manifest["user_query"] is None
    assert manifest["row_count"] == 800 and manifest["sizes"] == [{"kh": 5, "kw": 5, "rows": 800}]
    assert manifest["schema_version"] == migrate.head_version()
    assert manifest["package_version"] == kernel_catalog.__version__
    assert manifest["catalog"] == str(analysed.root)
    created = datetime.fromisoformat(manifest["created_at"].replace("Z", "+00:00"))
    assert created.tzinfo is not None and abs((datetime.now(timezone.utc) - created).total_seconds()) < 600
    assert manifest["file_sha256"] == hashlib.sha256(result.path.read_bytes()).hexdigest()
    assert manifest["file_bytes"] == result.path.stat().st_size
    assert [c["name"] for c in manifest["columns"]][:3] == ["kernel_id", "model", "checkpoint_sha256"]
    assert {"name": "weights", "type": "FLOAT[]"} in manifest["columns"]
    model = analysed.sql("SELECT * FROM models").to_pylist()[0]
    [checkpoint] = manifest["checkpoints"]
    assert checkpoint["model"] == MODEL and checkpoint["checkpoint_sha256"] == model["checkpoint_sha256"]
    assert checkpoint["source"] == model["source"] and checkpoint["adapter"] == "onnx" and checkpoint["trained"] is True
    assert manifest["runs"] == []
    # the exact SQL in the manifest gives the same rows; the command line rewrites the same file
    again = analysed.sql(manifest["query"])
    assert again.num_rows == 800 and again.column("kernel_id").to_pylist() == \
        pq.read_table(result.path).column("kernel_id").to_pylist()
    assert "--where 'kh = 5 AND kw = 5'" in manifest["reproduce"] and "--format parquet" in manifest["reproduce"]


def test_labels_join_records_runs_and_parents(analysed, out):
    label = analysed.sql("SELECT label, count(*) n FROM labels WHERE run = 'ae-k4' AND kh = 5 "
                         "GROUP BY ALL ORDER BY n DESC, label LIMIT 1").to_pylist()[0]
    query = (f"SELECT * FROM kernels JOIN labels USING (kernel_id) "
             f"WHERE run = 'ae-k4' AND label = '{label['label']}' AND kernels.kh = 5")
    result = export(analysed, out / "label.parquet", query=query, progress=False)
    table = pq.read_table(result.path)
    assert table.num_rows == label["n"] and set(table.column("label").to_pylist()) == {label["label"]}
    assert "kh_1" in table.column_names           # the join's second kh, renamed rather than duplicated
    manifest = result.manifest
    assert manifest["user_query"] == query and manifest["where"] is None
    runs = {r["run"]: r for r in manifest["runs"]}
    assert list(runs) == ["ae-k4", "ae"]
    assert runs["ae-k4"]["via"] == "run column" and runs["ae"]["via"] == "parent of ae-k4"
    assert runs["ae-k4"]["params"]["k"] == 4 and runs["ae"]["params"]["epochs"] == 20
    assert runs["ae-k4"]["parent"] == "ae" and runs["ae"]["metrics"]["5x5"]["n"] == 800
    assert [c["model"] for c in manifest["checkpoints"]] == [MODEL]


def test_run_named_only_in_the_query_is_recorded(analysed, out):
    query = "SELECT k.* FROM kernels k JOIN labels l USING (kernel_id) WHERE l.run = 'ae-k4' AND k.kh = 3"
    result = export(analysed, out / "k3.npz", query=query, progress=False)
    runs = [(r["run"], r["via"]) for r in result.manifest["runs"]]
    assert runs == [("ae-k4", "query literal"), ("ae", "parent of ae-k4")]


# -- streaming and atomicity ------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["parquet", "csv", "npz"])
def test_tiny_batches_give_the_same_file(analysed, out, fmt):
    big = export(analysed, out / f"big.{fmt}", where="true", progress=False)
    small = export(analysed, out / f"small.{fmt}", where="true", batch_rows=7, progress=False)
    if fmt == "parquet":
        assert pq.read_table(small.path).equals(pq.read_table(big.path))
        assert pq.ParquetFile(small.path).metadata.num_row_groups > 10      # written batch by batch
    elif fmt == "csv":
        assert small.path.read_bytes() == big.path.read_bytes()
    else:
        with np.load(small.path) as a, np.load(big.path) as b:
            assert a.files == b.files and all(np.array_equal(a[k], b[k]) for k in a.files)


@pytest.mark.parametrize("fmt", ["parquet", "csv", "npz"])
def test_failure_midway_leaves_nothing_and_keeps_the_old_file(analysed, out, monkeypatch, fmt):
    target = out / f"x.{fmt}"
    export(analysed, target, where="true", progress=False)
    before = (target.read_bytes(), manifest_path_for(target).read_bytes())
    calls = []
    original = formats_module.Tracker.update

    def failing(self, batch):
        original(self, batch)
        calls.append(batch.num_rows)
        if len(calls) == 3:
            assert any(p.name.startswith(f".x.{fmt}.tmp-") for p in out.iterdir())   # mid-write
            raise RuntimeError("disk on fire")

    monkeypatch.setattr(formats_module.Tracker, "update", failing)
    with pytest.raises(RuntimeError, match="disk on fire"):
        export(analysed, target, where="true", batch_rows=16, force=True, progress=False)
    assert len(calls) == 3
    assert _listing(out) == [f"x.{fmt}", f"x.{fmt}.manifest.json"]     # no temporary, no spill left
    assert (target.read_bytes(), manifest_path_for(target).read_bytes()) == before


def test_sql_failing_on_a_later_size_leaves_nothing(analysed, out, monkeypatch):
    """NPZ streams one size after another: weights_3x3 is written, then the 5x5 pass fails."""
    written = []
    original = formats_module.Tracker.update
    monkeypatch.setattr(formats_module.Tracker, "update",
                        lambda self, batch: (written.append(batch.num_rows), original(self, batch)))
    query = "SELECT *, CAST(CASE WHEN kh = 5 THEN 'x' ELSE '1' END AS INTEGER) AS bad FROM kernels"
    with pytest.raises(CatalogError, match="SQL error: Conversion Error.*nothing written"):
        export(analysed, out / "bad.npz", query=query, batch_rows=16, progress=False)
    assert sum(written) == 64 and _listing(out) == []
    for fmt in ("parquet", "csv"):     # when the failing row arrives depends on DuckDB's threads
        with pytest.raises(CatalogError, match="SQL error"):
            export(analysed, out / f"bad.{fmt}", query=query, batch_rows=16, progress=False)
        assert _listing(out) == []


def test_killed_midway_leaves_no_file_under_the_target(analysed, out):
    target = out / "killed.parquet"
    killed = run_cli("--catalog", str(analysed.root), "export", "--where", "true", "-o", str(target),   # a process:
                     "--batch-rows", "16", env={"KERNEL_CATALOG_CRASH_AT": "export-batch-written"})  # it is killed
    assert killed.returncode == -9
    assert not target.exists() and not manifest_path_for(target).exists()
    assert [p for p in _listing(out) if p.startswith(".killed.parquet.tmp-")]     # the dead writer's temporary
    export(analysed, target, where="true", progress=False)                          # deletes it
    assert _listing(out) == ["killed.parquet", "killed.parquet.manifest.json"]


# -- the CLI and bad input --------------------------------------------------------------------

def test_cli_examples_from_the_issue(analysed, out):
    label = analysed.sql("SELECT label FROM labels WHERE run = 'ae-k4' LIMIT 1").to_pylist()[0]["label"]
    prefix = label.split("-")[0]
    target = out / "dog.parquet"
    done = _cli(analysed, "--query", "SELECT * FROM kernels JOIN labels USING (kernel_id) "
                f"WHERE run='ae-k4' AND label LIKE '{prefix}%'", "-o", str(target))
    assert done.returncode == 0, done.stderr
    expected = analysed.sql(f"SELECT count(*) n FROM labels WHERE run = 'ae-k4' AND label LIKE '{prefix}%'")
    assert f"wrote {expected.to_pylist()[0]['n']} rows" in done.stderr and target.exists()
    target = out / "cls5.npz"
    done = _cli(analysed, "--where", "model LIKE 'ch_ppocr%' AND kh = 5", "--format", "npz", "-o", str(target))
    assert done.returncode == 0, done.stderr
    with np.load(target) as archive:
        assert archive["weights"].shape == (800, 5, 5)
    assert json.loads(manifest_path_for(target).read_text())["format"] == "npz"


def test_cli_bad_input_is_one_line_and_writes_nothing(analysed, out, tmp_path):
    def refused(*args, fragments):
        assert_one_line_error(_cli(analysed, *args), *fragments)
        assert _listing(out) == []

    refused("--where", "kh = 99", "-o", str(out / "e.parquet"), fragments=[EMPTY_MESSAGE])
    refused("--query", "SELECT * FROM labels WHERE run = 'nope'", "-o", str(out / "e.csv"),
            fragments=["matches no rows", "no run named 'nope'", "ae-k4"])
    refused("--where", "true", "-o", str(out / "e.xlsx"), fragments=["cannot tell the format", "--format"])
    refused("--where", "true", "--format", "xlsx", "-o", str(out / "e.parquet"), fragments=["'xlsx' is not one of 'parquet', 'csv', 'npz'"])
    refused("--where", "true", "-o", str(out / "missing" / "e.parquet"), fragments=["does not exist"])
    refused("--where", "true", "-o", "/proc/e.parquet", fragments=["/proc"])   # not writable, root or not
    refused("--where", "nope > 1", "-o", str(out / "e.parquet"), fragments=["SQL error", "nope"])
    refused("--where", "true", "--query", "SELECT 1", "-o", str(out / "e.parquet"), fragments=["exactly one of"])
    refused("--where", "true", fragments=["-o FILE"])
    refused("--query", "SELECT kernel_id, weights FROM kernels", "-o", str(out / "e.npz"),
            fragments=["needs the columns weights, kh and kw", "missing: kh, kw"])


def test_force_is_needed_to_overwrite(analysed, out):
    target = out / "k3.csv"
    assert _cli(analysed, "--where", "kh = 3", "-o", str(target)).returncode == 0
    first = target.read_bytes()
    assert_one_line_error(_cli(analysed, "--where", "kh = 5", "-o", str(target)), "exists; pass --force")
    assert target.read_bytes() == first
    export(analysed, target, where="kh = 5", force=True, progress=False)
    assert target.read_bytes() != first
    assert json.loads(manifest_path_for(target).read_text())["row_count"] == 800


def test_python_api_errors(analysed, out):
    with pytest.raises(CatalogError, match="exactly one of"):
        export(analysed, out / "x.parquet")
    with pytest.raises(CatalogError, match="is a folder"):
        export(analysed, out, where="true", fmt="csv")
    with pytest.raises(CatalogError, match="NULL weights"):
        export(analysed, out / "x.npz", query="SELECT kernel_id, kh, kw, NULL::FLOAT[] AS weights FROM kernels")
    with pytest.raises(CatalogError, match="--batch-rows"):
        export(analysed, out / "x.parquet", where="true", batch_rows=0)
    assert _listing(out) == []


def test_progress_is_quiet_off_a_terminal(analysed, out):
    result = _cli(analysed, "--where", "true", "-o", str(out / "q.parquet"))
    assert result.returncode == 0 and result.stderr.count("\n") == 1 and "wrote 864 rows" in result.stderr
