"""Schema versions: an old catalog upgrades in place without losing a row; a newer one is refused."""
from __future__ import annotations

import duckdb
import numpy as np
import pyarrow.parquet as pq
import pytest

from kernel_catalog.adapters.base import DepthwiseLayer
from kernel_catalog.store import _migrate as migrate
from kernel_catalog.errors import CatalogError
from kernel_catalog.store.kernel_table import build_kernel_table, checkpoint_digest
from kernel_catalog.store import Catalog

from .conftest import assert_one_line_error, run_cli_in_process as cli


def _write_version_1_catalog(root) -> int:
    """A catalog exactly as schema version 1 wrote it: v1 tables, rows, a Parquet file, no log."""
    rng = np.random.default_rng(0)
    layers = [DepthwiseLayer(f"blocks.{i}.dw", rng.normal(size=(6, 5, 5)).astype(np.float32)) for i in range(3)]
    digest = checkpoint_digest(layers)
    table, layer_rows = build_kernel_table(layers, digest, "statedict", True)
    folder = root / "kernels" / "model=old"
    folder.mkdir(parents=True)
    pq.write_table(table, folder / f"{digest[:16]}-0123abcd.parquet")   # the name ingest has always used
    con = duckdb.connect(str(root / "catalog.duckdb"))
    assert migrate.upgrade(con, target=1) == [1]
    con.execute("INSERT INTO model_records VALUES ('old', ?, 'statedict', '0.1', true, 'old.pth', 3, 18, '{}', now()::TIMESTAMP)", [digest])
    for r in layer_rows:
        con.execute("INSERT INTO layer_records VALUES ('old', ?, NULL, ?, ?, 5, 5, 6, 0, 0, '{}')", [r.layer, r.layer_index, r.depth])
    con.execute("INSERT INTO kernel_files VALUES ('old', ?, 18, 1)", [f"kernels/model=old/{digest[:16]}-0123abcd.parquet"])
    con.close()
    return table.num_rows


def test_old_catalog_upgrades_in_place_without_losing_rows(tmp_path, cls_onnx):
    root = tmp_path / "catalog"
    n = _write_version_1_catalog(root)
    catalog = Catalog(root)
    assert catalog.sql("SELECT count(*) AS n FROM kernels").to_pylist() == [{"n": n}]   # reading upgrades
    with catalog.reader() as con:
        assert migrate.current_version(con) == migrate.head_version() >= 2
        assert con.sql("SELECT count(*) FROM layer_records").fetchall() == [(3,)]
        assert con.sql("SELECT count(*) FROM ingest_log").fetchall() == [(0,)]
    # and the upgraded catalog takes new writes beside the old rows
    cli("--catalog", str(root), "ingest", str(cls_onnx), check=True)
    assert catalog.sql("SELECT model, count(*) AS n FROM kernels GROUP BY ALL ORDER BY model").to_pylist() == [
        {"model": "ch_ppocr_mobile_v2.0_cls_infer", "n": 864}, {"model": "old", "n": n}]


def test_newer_catalog_is_refused_with_a_clear_error(tmp_path, cls_onnx):
    root = tmp_path / "catalog"
    _write_version_1_catalog(root)
    con = duckdb.connect(str(root / "catalog.duckdb"))
    con.execute("INSERT INTO schema_version VALUES (99, 'future', now()::TIMESTAMP)")
    con.close()
    with pytest.raises(CatalogError, match="schema version 99, newer than"):
        Catalog(root).sql("SELECT 1")
    assert_one_line_error(cli("--catalog", str(root), "sql", "SELECT 1"), "upgrade kernel-catalog")
    assert_one_line_error(cli("--catalog", str(root), "ingest", str(cls_onnx)), "newer than")


def test_failed_migration_rolls_back(tmp_path, monkeypatch):
    con = duckdb.connect(str(tmp_path / "x.duckdb"))
    broken = migrate.Migration(1, "broken", "CREATE TABLE a (x INTEGER); SELECT * FROM no_such_table;")
    monkeypatch.setattr(migrate, "available_migrations", lambda: [broken])
    with pytest.raises(duckdb.Error):
        migrate.upgrade(con)
    assert con.sql("SELECT count(*) FROM information_schema.tables WHERE table_name IN ('a', 'schema_version')").fetchall() == [(0,)]


def test_labels_written_before_the_structured_names_read_null(tmp_path):
    """Migration 0005: labels files from older runs lack kernel_family ...; the view reads NULL."""
    import pyarrow as pa

    from kernel_catalog.store.results import LABEL_SCHEMA, dataset_view_sql

    old_schema = pa.schema([f for f in LABEL_SCHEMA if not f.name.startswith("kernel_") or f.name == "kernel_id"
                            or f.name == "kernel_label"])
    folder = tmp_path / "results" / "run=old"
    folder.mkdir(parents=True)
    rows = {f.name: [None] for f in old_schema} | {"kernel_id": [1], "label": ["dog-on"]}
    pq.write_table(pa.table(rows, schema=old_schema), folder / "labels-1.parquet")
    con = duckdb.connect()
    con.execute(f"SET file_search_path = '{tmp_path}'")
    files = ["results/run=old/labels-1.parquet"]
    present = {r[0] for r in con.execute("SELECT DISTINCT name FROM parquet_schema(?)", [files]).fetchall()}
    view = dataset_view_sql(files, LABEL_SCHEMA, "run", ["run"] + LABEL_SCHEMA.names, present)
    row = con.execute(f"SELECT * FROM ({view})").fetchall()[0]
    names = ["run"] + LABEL_SCHEMA.names
    got = dict(zip(names, row))
    assert got["run"] == "old" and got["label"] == "dog-on" and got["kernel_family"] is None
    assert got["kernel_orientation"] is None and got["kernel_scale"] is None and got["kernel_margin"] is None


def test_clusters_gain_structured_name_columns(tmp_path):
    con = duckdb.connect(str(tmp_path / "c.duckdb"))
    migrate.upgrade(con)
    columns = {r[0] for r in con.execute("DESCRIBE cluster_records").fetchall()}
    assert {"margin", "family", "polarity", "orientation", "scale"} <= columns
