"""Per-layer sparsity and variance entropy (CNN Filter DB): definitions, ingest, view, backfill."""
from __future__ import annotations

import json
import math

import duckdb
import numpy as np
import pytest

from kernel_catalog.adapters.base import DepthwiseLayer, Extraction
from kernel_catalog.ingest import commit_extraction
from kernel_catalog.store import Catalog, _migrate as migrate
from kernel_catalog.store.kernel_table import layer_metrics

from .conftest import assert_one_line_error, run_cli_in_process as cli
from .test_migrations import _write_version_1_catalog


def reference_metrics(kernels: np.ndarray) -> tuple[float | None, float | None]:
    """The issue's definitions, written independently: a loop for sparsity, a full SVD for entropy."""
    n, kh, kw = kernels.shape
    ks = [k.astype(np.float64) for k in kernels if np.isfinite(k).all()]
    layer_max = max(float(np.max(np.abs(k))) for k in ks)
    sparse = sum(1 for k in ks if float(np.max(np.abs(k))) < 0.01 * layer_max)
    sparsity = sparse / len(ks) if layer_max > 0 else 1.0
    if len(ks) < 2:
        return sparsity, None
    x = np.stack([k.ravel() for k in ks])
    x = x - x.mean(axis=0, keepdims=True)
    s = np.linalg.svd(x, compute_uv=False)
    if not np.sum(s ** 2) > 0:
        return sparsity, None
    p = s ** 2 / np.sum(s ** 2)
    entropy = -sum(pi * math.log(pi) for pi in p if pi > 0) / math.log(kh * kw)
    return sparsity, entropy


def _layers(rng) -> dict[str, np.ndarray]:
    spiky = rng.normal(size=(40, 7, 7)).astype(np.float32)
    spiky[:10] *= 1e-3                                  # 10 of 40 degenerate kernels
    one_structure = (rng.normal(size=(30, 1, 1)) * rng.normal(size=(1, 5, 5))).astype(np.float32)
    with_nan = rng.normal(size=(12, 3, 3)).astype(np.float32)
    with_nan[3, 1, 1] = np.nan
    return {
        "iid": rng.normal(size=(64, 3, 3)).astype(np.float32),       # no preferred structure
        "spiky": spiky,
        "rank1": one_structure,                                       # entropy 0: one structure
        "band": rng.normal(size=(16, 1, 7)).astype(np.float32),
        "nan": with_nan,
        "single": rng.normal(size=(1, 3, 3)).astype(np.float32),     # N < 2: entropy NULL
        "zeros": np.zeros((4, 3, 3), np.float32),                     # no variance: NULL; sparsity 1
    }


@pytest.mark.parametrize("name", list(_layers(np.random.default_rng(0))))
def test_definitions_match_an_independent_numpy_computation(name):
    kernels = _layers(np.random.default_rng(0))[name]
    sparsity, entropy = layer_metrics(kernels.reshape(len(kernels), -1))
    want_sparsity, want_entropy = reference_metrics(kernels)
    assert sparsity == pytest.approx(want_sparsity, abs=1e-12)
    if name == "zeros":
        assert entropy is None and sparsity == 1.0
    elif want_entropy is None:
        assert entropy is None
    else:
        assert entropy == pytest.approx(want_entropy, abs=1e-9)


def test_metrics_read_as_described():
    layers = _layers(np.random.default_rng(1))
    assert layer_metrics(layers["spiky"].reshape(40, -1))[0] == pytest.approx(0.25)
    assert layer_metrics(layers["rank1"].reshape(30, -1))[1] == pytest.approx(0.0, abs=1e-6)
    iid = np.random.default_rng(2).normal(size=(20000, 9))
    assert layer_metrics(iid)[1] > 0.99                # no preferred structure: close to 1


def _extraction(layers: dict[str, np.ndarray], experts: dict[str, int] | None = None) -> Extraction:
    experts = experts or {}
    return Extraction("arrays", "arrays", True, [
        DepthwiseLayer(name.split("#")[0], w, {"kind": "condconv" if name in experts else "conv2d"},
                       experts.get(name)) for name, w in layers.items()])


def _view_rows(catalog: Catalog) -> dict:
    rows = catalog.sql("SELECT layer, expert, sparsity, variance_entropy FROM layers").to_pylist()
    return {(r["layer"], r["expert"]): (r["sparsity"], r["variance_entropy"]) for r in rows}


def test_ingest_fills_the_layers_view_per_layer_and_per_expert(catalog):
    rng = np.random.default_rng(3)
    layers = _layers(rng)
    experts = {"cond#0": rng.normal(size=(8, 3, 3)).astype(np.float32),
               "cond#1": (rng.normal(size=(8, 3, 3)) * 1e-3).astype(np.float32)}
    experts["cond#1"][:4] *= 1e-4
    commit_extraction(catalog, _extraction({**layers, **experts}, {"cond#0": 0, "cond#1": 1}), "arrays", "1.0")
    got = _view_rows(catalog)
    for name, kernels in {**layers, **experts}.items():
        layer, _, expert = name.partition("#")
        sparsity, entropy = got[(layer, int(expert) if expert else None)]
        want_sparsity, want_entropy = reference_metrics(kernels)
        assert sparsity == pytest.approx(want_sparsity, abs=1e-12), name
        assert (entropy is None) == (want_entropy is None or name == "zeros"), name
        if entropy is not None:
            assert entropy == pytest.approx(want_entropy, abs=1e-9), name
    assert got[("cond", 1)][0] == pytest.approx(0.5)       # the expert's own max, not the layer's


def test_catalog_layers_shows_the_metrics(catalog, cls_onnx):
    cli("--catalog", str(catalog.root), "ingest", str(cls_onnx), check=True)
    out = cli("--catalog", str(catalog.root), "layers", "ch_ppocr_mobile_v2.0_cls_infer",
                  "--format", "json", check=True)
    rows = json.loads(out.stdout)
    assert rows and {"sparsity", "variance_entropy"} <= set(rows[0])
    assert all(0 <= r["sparsity"] <= 1 and 0 < r["variance_entropy"] <= 1 for r in rows)
    # the view holds the unrounded values, equal to an independent computation from the kernels
    first = catalog.sql("SELECT layer, variance_entropy FROM layers ORDER BY layer_index LIMIT 1").to_pylist()[0]
    weights = catalog.sql("SELECT kh, kw, weights FROM kernels WHERE layer = ? ORDER BY channel",
                          [first["layer"]]).to_pylist()
    kernels = np.array([r["weights"] for r in weights], np.float32).reshape(len(weights), weights[0]["kh"], -1)
    assert first["variance_entropy"] == pytest.approx(reference_metrics(kernels)[1], abs=1e-9)


def _downgrade_to_before_0006(root) -> None:
    """Make a current catalog look as the version before 0006 wrote it: no metric columns."""
    version = next(m.version for m in migrate.available_migrations() if m.name == "layer_metrics")
    con = duckdb.connect(str(root / "catalog.duckdb"))
    for table in ("kernel_files", "result_files"):          # 0009
        con.execute(f"ALTER TABLE {table} DROP COLUMN sha256")
    con.execute("DROP TABLE settings")                      # 0007
    con.execute("CREATE VIEW layers AS SELECT * FROM layer_records")   # catalogs then stored their views
    con.execute("ALTER TABLE layer_records DROP COLUMN sparsity")
    con.execute("ALTER TABLE layer_records DROP COLUMN variance_entropy")
    con.execute("DELETE FROM schema_version WHERE version >= ?", [version])
    con.close()


def test_a_catalog_made_before_the_metrics_is_backfilled_on_open(catalog, cls_onnx):
    rng = np.random.default_rng(4)
    layers = _layers(rng)
    experts = {"cond#0": rng.normal(size=(8, 5, 5)).astype(np.float32),
               "cond#1": rng.normal(size=(8, 5, 5)).astype(np.float32)}
    commit_extraction(catalog, _extraction({**layers, **experts}, {"cond#0": 0, "cond#1": 1}), "arrays", "1.0")
    cli("--catalog", str(catalog.root), "ingest", str(cls_onnx), check=True)
    before = catalog.sql("SELECT * EXCLUDE (meta) FROM layers ORDER BY ALL").to_pylist()
    _downgrade_to_before_0006(catalog.root)
    old = Catalog(catalog.root)
    after = old.sql("SELECT * EXCLUDE (meta) FROM layers ORDER BY ALL").to_pylist()   # opening upgrades
    assert len(after) == len(before)
    for b, a in zip(before, after):
        assert a == pytest.approx(b) if a["variance_entropy"] is not None else a == b


def test_version_1_catalog_upgrades_with_the_metrics(tmp_path):
    root = tmp_path / "catalog"
    _write_version_1_catalog(root)
    rows = Catalog(root).sql("SELECT layer, sparsity, variance_entropy FROM layers ORDER BY layer").to_pylist()
    kernels = Catalog(root).sql("SELECT layer, weights FROM kernels ORDER BY layer, channel").to_pylist()
    assert len(rows) == 3
    for row in rows:
        mine = np.array([k["weights"] for k in kernels if k["layer"] == row["layer"]], np.float32).reshape(-1, 5, 5)
        sparsity, entropy = reference_metrics(mine)
        assert row["sparsity"] == pytest.approx(sparsity) and row["variance_entropy"] == pytest.approx(entropy, abs=1e-9)


def test_a_failing_backfill_leaves_the_old_catalog_as_it_was(catalog):
    commit_extraction(catalog, _extraction(_layers(np.random.default_rng(5))), "arrays", "1.0")
    _downgrade_to_before_0006(catalog.root)
    con = duckdb.connect(str(catalog.root / "catalog.duckdb"))
    version = migrate.current_version(con)
    con.close()
    for path in (catalog.root / "kernels").rglob("*.parquet"):
        path.rename(path.with_suffix(".moved"))            # the kernels cannot be read
    result = cli("--catalog", str(catalog.root), "layers", "arrays")
    assert_one_line_error(result, "cannot read the kernels of model 'arrays'")
    con = duckdb.connect(str(catalog.root / "catalog.duckdb"), read_only=True)
    assert migrate.current_version(con) == version       # the upgrade rolled back whole
    assert "sparsity" not in [r[0] for r in con.execute("DESCRIBE layer_records").fetchall()]
    con.close()
