"""Bad input: one clear line on stderr, a non-zero exit, no traceback, the catalog unchanged."""
from __future__ import annotations

import pytest

from kernel_catalog.ingest import ingest

from .conftest import assert_one_line_error, run_cli_in_process as cli, snapshot


@pytest.fixture
def filled(catalog, cls_onnx):
    ingest(catalog, str(cls_onnx))
    return catalog


def _cli(catalog, *args):
    return cli("--catalog", str(catalog.root), *args)


def test_corrupt_onnx_file(filled, tmp_path):
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"\x08\x07this is not a protobuf" * 50)
    before = snapshot(filled)
    assert_one_line_error(_cli(filled, "ingest", str(bad)), "broken.onnx")
    assert snapshot(filled) == before


def test_truncated_onnx_file(filled, cls_onnx, tmp_path):
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(cls_onnx.read_bytes()[: cls_onnx.stat().st_size // 2])
    before = snapshot(filled)
    assert_one_line_error(_cli(filled, "ingest", str(cut)), "cut.onnx")
    assert snapshot(filled) == before


def test_missing_file(filled, tmp_path):
    before = snapshot(filled)
    assert_one_line_error(_cli(filled, "ingest", str(tmp_path / "nowhere.onnx")), "nowhere.onnx")
    assert_one_line_error(_cli(filled, "ingest", "x", "--checkpoint", str(tmp_path / "w.safetensors")), "no such file")
    assert snapshot(filled) == before


def test_sql_error_and_missing_catalog(filled, tmp_path):
    assert_one_line_error(_cli(filled, "sql", "SELECT nope FROM kernels"), "SQL error", "nope")
    assert_one_line_error(_cli(filled, "sql", "DELETE FROM model_records"), "SQL error")   # readers are read-only
    assert filled.sql("SELECT count(*) AS n FROM models").to_pylist() == [{"n": 1}]
    missing = cli("--catalog", str(tmp_path / "absent"), "sql", "SELECT 1")
    assert_one_line_error(missing, "no catalog at", "catalog ingest")
    assert not (tmp_path / "absent").exists()


def test_bad_options(filled, cls_onnx, tmp_path):
    before = snapshot(filled)
    assert_one_line_error(_cli(filled, "ingest", str(cls_onnx), "--adapter", "nosuch"), "unknown adapter 'nosuch'")
    assert_one_line_error(_cli(filled, "ingest", str(cls_onnx), "--name", "bad name!"), "--name")
    assert_one_line_error(_cli(filled, "sql", "SELECT 1", "--format", "parquet"), "-o FILE")
    assert_one_line_error(_cli(filled, "sql", "SELECT 1", "-o", str(tmp_path / "no" / "dir.csv")), "does not exist")
    assert_one_line_error(_cli(filled, "sql", "SELECT 1", "-o", str(tmp_path / "out.xyz")), "--format")
    assert_one_line_error(_cli(filled, "layers", "ch_ppocr_mobile_v2.0_cls"), "did you mean ch_ppocr_mobile_v2.0_cls_infer")
    assert snapshot(filled) == before


def test_outputs(filled, tmp_path):
    import json

    import pyarrow.parquet as pq

    as_json = _cli(filled, "sql", "SELECT model, kh, count(*) AS n FROM kernels GROUP BY ALL ORDER BY kh", "--format", "json")
    assert json.loads(as_json.stdout) == [{"model": "ch_ppocr_mobile_v2.0_cls_infer", "kh": 3, "n": 64},
                                          {"model": "ch_ppocr_mobile_v2.0_cls_infer", "kh": 5, "n": 800}]
    as_csv = _cli(filled, "sql", "SELECT kh, count(*) AS n FROM kernels GROUP BY ALL ORDER BY kh", "--format", "csv")
    assert as_csv.stdout == "kh,n\n3,64\n5,800\n"
    subset = tmp_path / "subset.parquet"
    written = _cli(filled, "sql", "SELECT * FROM kernels WHERE depth > 0.8", "-o", str(subset))
    assert written.returncode == 0 and "wrote" in written.stderr
    table = pq.read_table(subset)
    assert table.num_rows == filled.sql("SELECT count(*) n FROM kernels WHERE depth > 0.8").to_pylist()[0]["n"] > 0
    assert "weights" in table.column_names


def test_unknown_timm_model_and_model_without_depthwise(filled):
    before = snapshot(filled)
    assert_one_line_error(_cli(filled, "ingest", "convnxt_tiny", "--random-init"),
                          "unknown timm model 'convnxt_tiny'", "did you mean convnext_tiny")
    assert_one_line_error(_cli(filled, "ingest", "resnet18", "--random-init"), "resnet18 has no depthwise convolution")
    assert_one_line_error(_cli(filled, "ingest", "convnext_atto.d2_in1k"),       # tests run offline (conftest)
                          "is not in the Hugging Face cache", "--random-init")
    assert_one_line_error(_cli(filled, "ingest", "no_such_arch_*", "--random-init"), "no_such_arch_*")
    assert snapshot(filled) == before


def test_nan_weights_are_ingested_and_flagged_through_the_cli(filled, tmp_path):
    import numpy as np

    bank = np.random.default_rng(0).normal(size=(6, 5, 5)).astype(np.float32)
    bank[2, 0, 0] = np.nan
    path = tmp_path / "odd.npy"
    np.save(path, bank)
    done = _cli(filled, "ingest", str(path))
    assert done.returncode == 0 and "1 with NaN/Inf (flagged)" in done.stdout
    rows = filled.sql("SELECT channel, nonfinite FROM kernels WHERE model = 'odd' ORDER BY channel").to_pylist()
    assert [r["nonfinite"] for r in rows] == [False, False, True, False, False, False]


def test_usage_errors_are_one_line_too(filled):
    assert_one_line_error(_cli(filled, "embed"), "Missing option '--run'", "--help")
    assert_one_line_error(_cli(filled, "sql", "SELECT 1", "--format", "xml"), "--format")
    assert_one_line_error(_cli(filled, "nosuchcommand"), "No such command")
