"""A property test of the whole write path: seeded random sequences of ingest, replace, run
commit, run delete and writers killed at every step; after each step `catalog verify` finds the
catalog consistent (a killed writer may leave only its own strays, which the next write removes)
and the views hold exactly what an oracle says was committed."""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest

from kernel_catalog.adapters.base import IngestOptions
from kernel_catalog.analysis.runs import RunRecord, commit_run, delete_run
from kernel_catalog.ingest import commit_extraction
from kernel_catalog.store.faults import CRASH_ENV
from kernel_catalog.store.results import EMBEDDING_SCHEMA
from kernel_catalog.store.verify import verify

from .conftest import CLS_ONNX, ArrayAdapter, run_cli

KILL_POINTS = ["parquet-written", "parquet-renamed", "before-commit", "after-commit"]
RUN_KILL_POINTS = ["run-files-written", "before-commit"]
MODELS = ["m0", "m1", "m2"]


def _ingest(catalog, model: str, rng: np.random.Generator) -> None:
    weights = rng.normal(size=(int(rng.integers(2, 6)), 3, 3)).astype(np.float32)
    commit_extraction(catalog, ArrayAdapter({"dw": weights}, model=model).read(model, IngestOptions()),
                      "arrays", "1.0", force=True)


def _commit_run(catalog, run: str) -> None:
    ids = catalog.sql("SELECT kernel_id FROM kernels ORDER BY kernel_id").column("kernel_id").to_pylist()
    n = len(ids)
    table = pa.table({"kernel_id": pa.array(ids, pa.int64()), "kh": pa.array([3] * n, pa.int16()),
                      "kw": pa.array([3] * n, pa.int16()), "z": pa.array([[0.5]] * n, pa.list_(pa.float32())),
                      "recon_cos": pa.array([0.9] * n, pa.float32()), "usable": [True] * n}, schema=EMBEDDING_SCHEMA)
    commit_run(catalog, RunRecord(run, "embed", {}), {"embeddings": table}, replace=True)


def _state(catalog) -> tuple[set, set]:
    models = set(catalog.sql("SELECT model FROM models").column("model").to_pylist())
    runs = set(catalog.sql("SELECT run FROM runs").column("run").to_pylist())
    return models, runs


def _killed_ingest(catalog, model: str, point: str):
    return run_cli("--catalog", str(catalog.root), "ingest", str(CLS_ONNX), "--name", model, "--replace",
                   "--include", "Conv@2", env={CRASH_ENV: point})


@pytest.mark.parametrize("seed", [0, 1])
def test_random_write_sequences_keep_the_catalog_verified(catalog, seed):
    rng = np.random.default_rng(seed)
    models, runs = set(), set()
    _ingest(catalog, "m0", rng)
    models.add("m0")
    kills, dirty = 0, False          # dirty: a writer died and no write has run since
    for step in range(10):
        action = rng.choice(["ingest", "run", "delete-run", "kill"], p=[0.35, 0.25, 0.15, 0.25])
        wrote = action in ("ingest", "run") or action == "delete-run" and bool(runs)
        if action == "ingest":                      # a new model, or other weights for one (replace)
            model = str(rng.choice(MODELS))
            _ingest(catalog, model, rng)
            models.add(model)
        elif action == "run":
            run = f"r{int(rng.integers(0, 3))}"
            _commit_run(catalog, run)
            runs.add(run)
        elif action == "delete-run" and runs:
            run = sorted(runs)[int(rng.integers(0, len(runs)))]
            delete_run(catalog, run)
            runs.discard(run)
        elif action == "kill" and kills < 3:       # bounded: each kill is a fresh process
            kills += 1
            model, point = str(rng.choice(MODELS)), str(rng.choice(KILL_POINTS))
            result = _killed_ingest(catalog, model, point)
            assert result.returncode == -signal.SIGKILL, result.stderr
            dirty = True
            if point == "after-commit":
                models.add(model)
        dirty = dirty and not wrote
        report = verify(catalog)
        assert report.problems == [] and report.foreign == [], (step, action, report.lines())
        assert dirty or report.own_strays == [], (step, action, report.lines())
        assert _state(catalog) == (models, runs), (step, action)
    assert kills >= 1
    _ingest(catalog, "m0", rng)                     # any write removes a dead writer's strays
    assert verify(catalog).clean


def test_a_run_writer_killed_before_its_commit_leaves_only_its_own_strays(catalog):
    rng = np.random.default_rng(0)
    _ingest(catalog, "m0", rng)
    for point in RUN_KILL_POINTS:
        code = ("import sys; sys.path.insert(0, '.');"
                "from kernel_catalog.store import Catalog; from tests.test_catalog_sequences import _commit_run;"
                f"_commit_run(Catalog({str(catalog.root)!r}), 'killed')")
        done = subprocess.run([sys.executable, "-c", code], env={**os.environ, CRASH_ENV: point},
                              capture_output=True, text=True, cwd=str(CLS_ONNX.parents[2]), timeout=300)
        assert done.returncode == -signal.SIGKILL, done.stderr
        report = verify(catalog)
        assert report.problems == [] and report.foreign == []
        assert _state(catalog) == ({"m0"}, set())
    report = verify(catalog, repair=True)
    assert report.clean and report.repaired
