"""Ingest into a real catalog folder: idempotence, replacement, flags, locking, readers."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import duckdb
import numpy as np
import pytest

from kernel_catalog import adapters as registry
from kernel_catalog.adapters.base import IngestOptions
from kernel_catalog.errors import CatalogError
from kernel_catalog.ingest import commit_extraction, ingest
from kernel_catalog.store._lock import exclusive_lock
from kernel_catalog.store import Catalog

from .conftest import ArrayAdapter, assert_one_line_error, run_cli, snapshot


def test_ingest_onnx_then_query(catalog, cls_onnx):
    result = ingest(catalog, str(cls_onnx))
    assert (result.action, result.n_kernels, result.adapter) == ("added", 864, "onnx")
    rows = catalog.sql("SELECT kh, count(*) AS n FROM kernels GROUP BY kh ORDER BY kh").to_pylist()
    assert rows == [{"kh": 3, "n": 64}, {"kh": 5, "n": 800}]
    model = catalog.sql("SELECT * FROM models").to_pylist()[0]
    assert model["model"] == cls_onnx.stem and model["trained"] and model["n_kernels"] == 864
    assert model["checkpoint_sha256"] == result.checkpoint_sha256
    depth = catalog.sql("SELECT min(depth) lo, max(depth) hi, count(DISTINCT layer) n FROM kernels").to_pylist()[0]
    assert depth == {"lo": 0.0, "hi": 1.0, "n": 11}


def test_reingest_is_a_noop_and_force_replaces(catalog, cls_onnx):
    first = ingest(catalog, str(cls_onnx))
    before = snapshot(catalog)
    again = ingest(catalog, str(cls_onnx))
    assert again.action == "unchanged"
    assert snapshot(catalog) == before
    forced = ingest(catalog, str(cls_onnx), force=True)
    assert forced.action == "replaced"
    after = snapshot(catalog)
    assert after["kernels"] == before["kernels"]          # same ids, same values
    assert after["files"] != before["files"] and len(after["files"]) == 1   # old file removed
    log = catalog.sql("SELECT action FROM ingest_log ORDER BY logged_at").column("action").to_pylist()
    assert log == ["added", "unchanged", "replaced"]
    assert first.checkpoint_sha256 == forced.checkpoint_sha256


def test_other_weights_under_same_name_refused_without_force(catalog, cls_onnx):
    ingest(catalog, str(cls_onnx))
    before = snapshot(catalog)
    subset = IngestOptions(include=("Conv@2",))
    with pytest.raises(CatalogError, match="already in the catalog with other weights"):
        ingest(catalog, str(cls_onnx), subset)
    assert snapshot(catalog) == before
    replaced = ingest(catalog, str(cls_onnx), subset, force=True)
    assert replaced.action == "replaced" and replaced.n_kernels == 8
    assert catalog.sql("SELECT count(*) n FROM kernels").to_pylist() == [{"n": 8}]


def test_kernel_ids_are_stable_across_catalogs(tmp_path, cls_onnx):
    ids = []
    for name in ("a", "b"):
        c = Catalog(tmp_path / name)
        ingest(c, str(cls_onnx))
        ids.append(c.sql("SELECT kernel_id, layer, channel FROM kernels ORDER BY ALL").to_pylist())
    assert ids[0] == ids[1]
    assert len({row["kernel_id"] for row in ids[0]}) == 864


def test_nonfinite_and_near_zero_kernels_are_kept_and_flagged(catalog):
    weights = np.random.default_rng(0).normal(size=(4, 3, 3)).astype(np.float32)
    weights[1, 0, 0] = np.nan
    weights[2, 1, 1] = np.inf
    weights[3] = 1e-5
    adapter = ArrayAdapter({"dw": weights})
    result = commit_extraction(catalog, adapter.read("arrays", IngestOptions()), "arrays", "1.0")
    assert (result.n_kernels, result.n_nonfinite, result.n_near_zero) == (4, 2, 1)
    rows = catalog.sql("SELECT channel, nonfinite, near_zero, weights FROM kernels ORDER BY channel").to_pylist()
    assert [(r["nonfinite"], r["near_zero"]) for r in rows] == [(False, False), (True, False), (True, False), (False, True)]
    assert np.isnan(rows[1]["weights"][0]) and np.isinf(rows[2]["weights"][4])
    layer = catalog.sql("SELECT n_nonfinite, n_near_zero FROM layers").to_pylist()
    assert layer == [{"n_nonfinite": 2, "n_near_zero": 1}]


def test_weights_bit_identical_after_roundtrip(catalog):
    rng = np.random.default_rng(1)
    layers = {"a": rng.normal(size=(5, 7, 7)).astype(np.float32),
              "b": rng.normal(size=(3, 1, 11)).astype(np.float32)}
    layers["a"][0, 0, 0] = np.float32(1e-45)   # a subnormal survives too
    commit_extraction(catalog, ArrayAdapter(layers).read("arrays", IngestOptions()), "arrays", "1.0")
    for name, expected in layers.items():
        got = catalog.sql("SELECT kh, kw, weights FROM kernels WHERE layer = ? ORDER BY channel", [name]).to_pylist()
        values = np.array([r["weights"] for r in got], dtype=np.float32).reshape(expected.shape)
        assert values.tobytes() == expected.tobytes()
        assert (got[0]["kh"], got[0]["kw"]) == expected.shape[1:]


def test_second_writer_gets_a_clear_message_or_waits(catalog, cls_onnx):
    catalog.root.mkdir(parents=True)
    env = {"KERNEL_CATALOG": str(catalog.root)}
    with exclusive_lock(catalog.root / ".lock"):
        busy = run_cli("ingest", str(cls_onnx), env=env)
    assert_one_line_error(busy, "being written by another process", "--wait")
    assert not catalog.exists()

    # The lock is released only once the second writer is seen waiting for it (its process holds
    # the lock file open): no sleeps, so this holds however fast or busy the machine is.
    lock_path = str((catalog.root / ".lock").resolve())
    with exclusive_lock(catalog.root / ".lock"):
        process = subprocess.Popen([sys.executable, "-c", "from kernel_catalog.cli import main; main()",
                                    "ingest", str(cls_onnx), "--wait", "600"], env={**os.environ, **env},
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        while process.poll() is None and not _has_open(process.pid, lock_path):
            time.sleep(0.05)
        assert process.poll() is None, process.communicate()   # still waiting, not failed
    stdout, stderr = process.communicate(timeout=600)
    waited = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    assert "added" in waited.stdout


def _has_open(pid: int, path: str) -> bool:
    try:
        return any(os.path.realpath(f"/proc/{pid}/fd/{fd}") == path for fd in os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return False


def test_readers_share_and_never_take_the_writer_lock(catalog, cls_onnx):
    ingest(catalog, str(cls_onnx))
    with exclusive_lock(catalog.root / ".lock"):   # a writer busy reading its source
        first = run_cli("--catalog", str(catalog.root), "sql", "SELECT count(*) AS n FROM kernels", "--format", "csv")
        with catalog.reader() as con:   # two readers at once
            second = run_cli("--catalog", str(catalog.root), "sql", "SELECT 1 AS one", "--format", "csv")
            assert con.sql("SELECT count(*) FROM kernels").fetchall() == [(864,)]
    assert first.stdout == "n\n864\n" and second.returncode == 0


def test_reader_blocked_by_committing_writer_gets_a_clear_message(catalog, cls_onnx):
    ingest(catalog, str(cls_onnx))
    con = duckdb.connect(str(catalog.db_path))   # as a writer does during its commit
    try:
        result = run_cli("--catalog", str(catalog.root), "sql", "SELECT 1", "--wait", "0.3")
    finally:
        con.close()
    assert_one_line_error(result, "being written by another process")


def test_catalog_folder_can_be_moved(tmp_path, cls_onnx):
    original = Catalog(tmp_path / "here")
    ingest(original, str(cls_onnx))
    shutil.move(str(original.root), str(tmp_path / "there"))
    moved = Catalog(tmp_path / "there")
    assert moved.sql("SELECT count(*) AS n FROM kernels").to_pylist() == [{"n": 864}]


def test_sqlalchemy_engine_reads_the_views(catalog, cls_onnx):
    from sqlalchemy import text

    ingest(catalog, str(cls_onnx))
    engine = catalog.sqlalchemy_engine()
    try:
        with engine.connect() as connection:
            rows = connection.execute(text("SELECT kh, count(*) FROM kernels GROUP BY kh ORDER BY kh")).fetchall()
    finally:
        engine.dispose()
    assert [tuple(r) for r in rows] == [(3, 64), (5, 800)]


def test_runtime_registered_adapter_is_used_by_name(catalog):
    adapter = ArrayAdapter({"dw": np.ones((2, 3, 3), np.float32)}, model="tiny-bank")
    registry.register(adapter)
    try:
        result = ingest(catalog, "tiny-bank")
    finally:
        registry.reset()
    assert (result.adapter, result.n_kernels) == ("arrays", 2)


def test_snapshot_keeps_reading_while_a_writer_commits(catalog, cls_onnx, tmp_path):
    """Long reads (exports) use a snapshot: the writer is not kept waiting, the reader sees one state."""
    ingest(catalog, str(cls_onnx))
    bank = tmp_path / "bank.npy"
    np.save(bank, np.ones((3, 5, 5), np.float32))
    with catalog.snapshot() as con:
        done = run_cli("--catalog", str(catalog.root), "ingest", str(bank))   # would fail on a held reader
        assert done.returncode == 0, done.stderr
        assert con.sql("SELECT count(*) FROM kernels").fetchall() == [(864,)]
        assert con.sql("SELECT count(*) FROM models").fetchall() == [(1,)]
    assert catalog.sql("SELECT count(*) AS n FROM kernels").to_pylist() == [{"n": 867}]


def test_the_schema_check_runs_once_per_state_of_the_file(tmp_path, monkeypatch):
    """A file this process checked, or committed to itself, is not checked again while unchanged;
    any other change (here one that keeps the size and the modification time) is checked in full."""
    from kernel_catalog.store import _sandbox

    cat = Catalog(tmp_path / "c")
    cat.init()
    calls = []
    real = _sandbox.schema_differences
    monkeypatch.setattr(_sandbox, "schema_differences", lambda *a: calls.append(1) or real(*a))
    for _ in range(3):
        with cat.reader():
            pass
    with cat.writer():
        pass
    with cat.reader():
        pass
    assert calls == []                      # init's writer left the file in a state it vouches for
    st = os.stat(cat.db_path)
    con = duckdb.connect(str(cat.db_path))
    con.execute("CREATE MACRO round(x) AS 1")
    con.close()
    os.utime(cat.db_path, ns=(st.st_atime_ns, st.st_mtime_ns))
    for opened in (cat.reader, cat.writer):
        with pytest.raises(CatalogError, match="did not create"):
            with opened():
                pass
    assert len(calls) == 2
