"""`catalog nearest`: equals a brute-force search, own id first, templates and .npy queries, errors."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from kernel_catalog import open as open_catalog
from kernel_catalog.adapters.base import DepthwiseLayer, Extraction
from kernel_catalog.analysis.search import template_rows, top_k
from kernel_catalog.errors import CatalogError
from kernel_catalog.ingest import commit_extraction

from .conftest import assert_one_line_error, run_cli_in_process as cli, snapshot
from .test_templates import _master_key_file


def _bank(seed: int, model: str) -> Extraction:
    rng = np.random.default_rng(seed)
    smooth = rng.normal(size=(300, 5, 5)).cumsum(axis=1).cumsum(axis=2).astype(np.float32)
    smooth[5] = -smooth[4]                           # a negated twin (signless finds it)
    smooth[6] = 3 * smooth[4] + 1                    # same direction after centring: cosine 1
    smooth[7] = 0                                    # near-zero: never returned
    smooth[8, 2, 2] = np.nan                         # NaN: never returned
    layers = [DepthwiseLayer("a", smooth[:150]), DepthwiseLayer("b", smooth[150:]),
              DepthwiseLayer("c7", rng.normal(size=(80, 7, 7)).astype(np.float32)),
              DepthwiseLayer("c3", rng.normal(size=(40, 3, 3)).astype(np.float32))]
    return Extraction(model, model, True, layers)


@pytest.fixture
def cat(catalog):
    commit_extraction(catalog, _bank(0, "m1"), "arrays", "1.0")
    commit_extraction(catalog, _bank(1, "m2"), "arrays", "1.0")
    return open_catalog(catalog.root)


def brute_force(cat, query: np.ndarray, kh: int, kw: int, where: str = "true", signless: bool = False):
    """Independent: every kernel of the size, centred and normalised in float64, sorted by cosine."""
    rows = cat.sql(f"SELECT kernel_id, weights FROM kernels WHERE kh = {kh} AND kw = {kw} AND ({where})").to_pylist()
    q = query.astype(np.float64).ravel() - query.mean()
    q /= np.linalg.norm(q)
    scored = []
    for r in rows:
        w = np.asarray(r["weights"], np.float64)
        c = w - w.mean()
        if not np.isfinite(w).all() or np.abs(w).max() <= 1e-4 or np.linalg.norm(c) == 0:
            continue
        cos = float(c @ q / np.linalg.norm(c))
        scored.append((abs(cos) if signless else cos, r["kernel_id"]))
    scored.sort(key=lambda t: (-t[0], t[1]))
    return scored


def _kernel(cat, model: str, layer: str, channel: int):
    row = cat.sql("SELECT kernel_id, kh, kw, weights FROM kernels WHERE model = ? AND layer = ? AND channel = ?",
                  [model, layer, channel]).to_pylist()[0]
    return row["kernel_id"], np.asarray(row["weights"], np.float64).reshape(row["kh"], row["kw"])


@pytest.mark.parametrize("signless", [False, True])
@pytest.mark.parametrize("where", [None, "model = 'm2' AND layer = 'b'"])
def test_nearest_equals_brute_force(cat, signless, where):
    own, weights = _kernel(cat, "m1", "a", 4)
    got = cat.nearest(kernel=own, limit=12, where=where, signless=signless).to_pylist()
    want = brute_force(cat, weights, 5, 5, where or "true", signless)
    admitted = where is None
    if admitted:
        assert got[0]["kernel_id"] == own and got[0]["cosine"] == 1.0
        want = [w for w in want if w[1] != own]
        got = got[1:]
    # the brute-force order, up to kernels whose cosines tie (a scaled and a negated twin are
    # both 1 in signless mode; float rounding, which varies with threads, orders them either way)
    ids = [g["kernel_id"] for g in got]
    assert len(set(ids)) == len(ids)
    for i, kernel_id in enumerate(ids):
        assert kernel_id in {w[1] for w in want if abs(w[0] - want[i][0]) <= 1e-5}, (i, got, want[:len(got)])
    np.testing.assert_allclose([g["cosine"] for g in got], [w[0] for w in want[:len(got)]], atol=1e-5)
    assert len(got) == (11 if admitted else 12)
    assert all(g["kh"] == 5 and g["kw"] == 5 for g in got)
    cosines = [g["cosine"] for g in got]
    assert cosines == sorted(cosines, reverse=True)


def test_twins_near_zero_and_nan(cat):
    own, _ = _kernel(cat, "m1", "a", 4)
    negated, _ = _kernel(cat, "m1", "a", 5)
    scaled, _ = _kernel(cat, "m1", "a", 6)
    zero, _ = _kernel(cat, "m1", "a", 7)
    nan, _ = _kernel(cat, "m1", "a", 8)
    rows = cat.nearest(kernel=own, limit=3).to_pylist()
    assert [r["kernel_id"] for r in rows[:2]] == [own, scaled] and rows[1]["cosine"] == pytest.approx(1, abs=1e-6)
    assert negated not in [r["kernel_id"] for r in rows]
    signless = cat.nearest(kernel=own, limit=3, signless=True).to_pylist()
    assert {r["kernel_id"] for r in signless} == {own, scaled, negated}
    everything = cat.nearest(kernel=own, limit=10_000, signless=True).column("kernel_id").to_pylist()
    assert zero not in everything and nan not in everything and len(everything) == 2 * 300 - 4
    with pytest.raises(CatalogError, match="no direction"):
        cat.nearest(kernel=zero)


def test_npy_and_template_queries(cat, tmp_path):
    own, weights = _kernel(cat, "m2", "b", 10)
    np.save(tmp_path / "q.npy", weights[None])                  # (1, kh, kw) is accepted too
    by_npy = cat.nearest(npy=tmp_path / "q.npy", limit=5).to_pylist()
    assert by_npy[0]["kernel_id"] == own and by_npy[0]["cosine"] == pytest.approx(1.0, abs=1e-6)
    assert [r["kernel_id"] for r in by_npy] == [r["kernel_id"] for r in cat.nearest(kernel=own, limit=5).to_pylist()]

    master = _master_key_file()
    got = cat.nearest(template="master-key-3", templates=str(master), limit=6).to_pylist()
    text = master.read_text().split("Filter 3:")[1].split("Filter")[0]
    filt = np.array(text.split(), np.float64).reshape(7, 7)
    want = brute_force(cat, filt, 7, 7)[:6]
    assert [g["kernel_id"] for g in got] == [w[1] for w in want]
    np.testing.assert_allclose([g["cosine"] for g in got], [w[0] for w in want], atol=1e-5)
    name, row = next((n, r) for n, r in template_rows("builtin", 3, 3).items() if "/" not in n)
    builtin = cat.nearest(template=name, size="3x3", limit=4).to_pylist()
    assert [g["kernel_id"] for g in builtin] == [w[1] for w in brute_force(cat, row.reshape(3, 3), 3, 3)[:4]]


def test_top_k_ties_and_mask():
    m = np.eye(4, dtype=np.float32)[[0, 1, 0, 2, 0]]
    idx, s = top_k(m, np.array([1, 0, 0, 0], np.float32), 2)
    assert idx.tolist() == [0, 2] and s.tolist() == [1.0, 1.0]
    idx, _ = top_k(m, np.array([1, 0, 0, 0], np.float32), 2, candidates=np.array([False, True, True, True, True]))
    assert idx.tolist() == [2, 4]


def test_cache_follows_the_committed_files(cat):
    own, _ = _kernel(cat, "m1", "a", 4)
    cat.nearest(kernel=own, limit=3)
    first = sorted(p.name for p in (cat.root / "cache" / "nearest").iterdir())
    assert len(first) == 2                           # the matrix and its ids, one size searched
    commit_extraction(cat.store, _bank(2, "m3"), "arrays", "1.0")
    models = set(cat.nearest(kernel=own, limit=10_000).column("model").to_pylist())
    assert models == {"m1", "m2", "m3"}
    second = sorted(p.name for p in (cat.root / "cache" / "nearest").iterdir())
    assert len(second) == 2 and second != first      # rebuilt under a new key, the old one removed


def test_a_killed_build_leaves_nothing_behind_the_next_one(cat):
    """A build killed while writing leaves `.<name>.tmp-<pid>`; the next build removes it (its
    process is gone) and keeps a live writer's."""
    folder = cat.root / "cache" / "nearest"
    folder.mkdir(parents=True)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = folder / f".5x5-0123.npy.tmp-{int(gone.stdout)}"
    live = folder / f".5x5-4567.npy.tmp-{os.getpid()}"
    dead.write_bytes(b"x" * 1024)
    live.write_bytes(b"x")
    own, _ = _kernel(cat, "m1", "a", 4)
    cat.nearest(kernel=own, limit=3)
    assert not dead.exists() and live.exists()
    assert len([p for p in folder.iterdir() if ".tmp-" not in p.name]) == 2


def test_cli_output_and_one_line_errors(cat, tmp_path):
    own, _ = _kernel(cat, "m1", "b", 3)
    root = str(cat.root)
    out = cli("--catalog", root, "nearest", "--kernel", str(own), "--limit", "3", "--format", "json", check=True)
    rows = json.loads(out.stdout)
    assert list(rows[0]) == ["kernel_id", "model", "layer", "channel", "kh", "kw", "cosine"]
    assert rows[0]["kernel_id"] == own and len(rows) == 3
    before = snapshot(cat.store)
    np.save(tmp_path / "bad.npy", np.zeros((2, 3, 3)))
    for args, fragment in [
        (["--kernel", "123"], "no such kernel id"),
        (["--kernel", str(own), "--npy", str(tmp_path / "bad.npy")], "exactly one query"),
        ([], "exactly one query"),
        (["--npy", str(tmp_path / "bad.npy")], "expected one kernel"),
        (["--npy", str(tmp_path / "missing.npy")], "not a readable"),
        (["--kernel", str(own), "--where", "no_such_column = 1"], "--where"),
        (["--template", "no-such-template"], "known:"),
        (["--kernel", str(own), "--limit", "0"], "limit 0"),
    ]:
        assert_one_line_error(cli("--catalog", root, "nearest", *args), fragment)
    assert snapshot(cat.store) == before
