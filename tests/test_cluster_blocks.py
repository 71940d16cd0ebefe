"""A size clustered in blocks (more usable kernels than `cluster_blocks.IN_MEMORY`, or --ray):
the same partition, names and rows as the size held whole, written as labels parts, and nothing
left behind by a run that fails midway. The bounds are lowered so a small planted bank is "large"."""
from __future__ import annotations

import math

import numpy as np
import pytest

from kernel_catalog.analysis.cluster import _blocks as cluster_blocks, clustering
from kernel_catalog.analysis.cluster import cluster_run
from kernel_catalog.analysis.embed import embed
from kernel_catalog.analysis.params import ClusterParams, EmbedParams
from kernel_catalog.analysis.validation.planted import planted_bank, planted_classes
from kernel_catalog.errors import CatalogError
from kernel_catalog.ingest import ingest
from kernel_catalog.store import Catalog

from .conftest import copy_catalog

K = len(planted_classes(7, 7))


@pytest.fixture(scope="module")
def bank_catalog(tmp_path_factory):
    folder = tmp_path_factory.mktemp("blocks")
    bank = planted_bank(40, 7, 7, snr=3.0, seed=3)
    bad = np.zeros((2, 49), np.float32)
    bad[0, 7] = np.nan                                       # two unusable (NaN, all zero): NULL clusters
    np.savez(folder / "bank.npz", weights=np.concatenate([bank.kernels, bad]).reshape(-1, 7, 7))
    catalog = Catalog(folder / "catalog")
    ingest(catalog, str(folder / "bank.npz"))
    embed(catalog, "e", params=EmbedParams(epochs=3, null_model=False), progress=False)
    return catalog


@pytest.fixture
def bank_copy(bank_catalog, tmp_path):
    """The bank catalog copied: each test writes its own runs."""
    return copy_catalog(bank_catalog, tmp_path)


def _labels(catalog, run):
    return catalog.sql("SELECT * EXCLUDE (run) FROM labels WHERE run = ? ORDER BY kernel_id", [run]).to_pylist()


def _clusters(catalog, run):
    return catalog.sql("SELECT * EXCLUDE (run) FROM clusters WHERE run = ? ORDER BY cluster", [run]).to_pylist()


@pytest.mark.parametrize("space", ["kernel", "reconstruction"])
def test_a_size_in_blocks_gets_the_partition_names_and_rows_of_the_size_held_whole(bank_copy, monkeypatch, space):
    catalog = bank_copy
    monkeypatch.setattr(clustering, "FIT_SAMPLE", 300)         # both fit k-means on 300 kernels chosen by id
    params = ClusterParams(k=K, space=space)
    whole = cluster_run(catalog, f"whole-{space}", "e", params)["7x7"]
    monkeypatch.setattr(cluster_blocks, "IN_MEMORY", 100)
    monkeypatch.setattr(cluster_blocks, "BLOCK_ROWS", 128)
    blocks = cluster_run(catalog, f"blocks-{space}", "e", params)["7x7"]
    usable = whole["n"]
    assert blocks["n"] == usable == 40 * K and blocks["fit_sample"] == 300
    assert blocks["blocks"] >= math.ceil((usable + 2) / 128) >= 2 and "blocks" not in whole

    a, b = _labels(catalog, f"whole-{space}"), _labels(catalog, f"blocks-{space}")
    assert [r["kernel_id"] for r in a] == [r["kernel_id"] for r in b] and len(a) == usable + 2
    for ra, rb in zip(a, b):                  # every kernel: same cluster, names, own match, verdict
        assert {k: v for k, v in ra.items() if k != "score"} == {k: v for k, v in rb.items() if k != "score"}
        assert ra["score"] == pytest.approx(rb["score"], abs=1e-6) if ra["score"] is not None else rb["score"] is None
    ca, cb = _clusters(catalog, f"whole-{space}"), _clusters(catalog, f"blocks-{space}")
    for x, y in zip(ca, cb):
        assert (x["label"], x["n_kernels"], x["medoid_kernel_id"], x["family"]) == \
            (y["label"], y["n_kernels"], y["medoid_kernel_id"], y["family"])
        assert np.allclose(x["mean_kernel"], y["mean_kernel"], atol=1e-6)
    assert blocks["inertia"] == pytest.approx(whole["inertia"], rel=1e-5)

    parts = catalog.sql("SELECT path, n_rows FROM result_files WHERE run = ? AND kind = 'labels'", [f"blocks-{space}"])
    on_disk = sorted(p.relative_to(catalog.root).as_posix()
                     for p in (catalog.root / "results" / f"run=blocks-{space}").glob("labels-*"))
    assert sorted(parts.column("path").to_pylist()) == on_disk and len(on_disk) == blocks["blocks"]
    assert max(parts.column("n_rows").to_pylist()) <= 128 and sum(parts.column("n_rows").to_pylist()) == usable + 2


def test_a_run_that_fails_between_blocks_leaves_no_run_and_no_parts(bank_copy, monkeypatch):
    catalog = bank_copy
    monkeypatch.setattr(cluster_blocks, "IN_MEMORY", 100)
    monkeypatch.setattr(cluster_blocks, "BLOCK_ROWS", 128)
    real, calls = cluster_blocks.write_labels_part, []

    def fails_on_the_third_block(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise CatalogError("disk full")
        return real(*args, **kwargs)

    monkeypatch.setattr(cluster_blocks, "write_labels_part", fails_on_the_third_block)
    with pytest.raises(CatalogError, match="disk full"):
        cluster_run(catalog, "broken", "e", ClusterParams(k=K))
    assert len(calls) == 3                                              # two parts were written first
    assert catalog.sql("SELECT count(*) AS n FROM runs WHERE run = 'broken'").column("n")[0].as_py() == 0
    assert not list((catalog.root / "results").glob("run=broken/*"))   # and removed


def test_identify_renames_in_blocks_and_replaces_every_part(bank_copy, monkeypatch):
    from kernel_catalog.analysis.cluster import identify

    from .conftest import MASTER_KEYS

    catalog = bank_copy
    cluster_run(catalog, "named", "e", ClusterParams(k=K))
    before = _labels(catalog, "named")
    monkeypatch.setattr(cluster_blocks, "BLOCK_ROWS", 128)
    identify(catalog, "named", templates=f"builtin+{MASTER_KEYS}")
    after = _labels(catalog, "named")
    assert [r["kernel_id"] for r in after] == [r["kernel_id"] for r in before]
    assert [r["cluster"] for r in after] == [r["cluster"] for r in before]          # the partition stays
    assert any(r["kernel_label"].startswith("master-key") for r in after if r["kernel_label"])   # renamed
    parts = catalog.sql("SELECT path FROM result_files WHERE run = 'named' AND kind = 'labels'").column("path")
    on_disk = sorted(p.relative_to(catalog.root).as_posix() for p in (catalog.root / "results" / "run=named").glob("labels-*"))
    assert sorted(parts.to_pylist()) == on_disk and len(on_disk) >= math.ceil(len(after) / 128)
    identify(catalog, "named")                                                      # back to the builtin names
    assert _labels(catalog, "named") == before
