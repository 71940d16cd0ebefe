"""Shared fixtures: real catalogs in temporary folders, real files, the CLI as users run it."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

# As the `catalog` command does (cli.main): OpenMP threads wait passively, so analysis tests on
# every core do not crawl while other processes (the CLI subprocesses of other tests) run.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from kernel_catalog.adapters.base import DepthwiseLayer, Extraction, IngestOptions
from kernel_catalog.store import Catalog

FIXTURES = Path(__file__).parent / "fixtures"
CLS_ONNX = FIXTURES / "ch_ppocr_mobile_v2.0_cls_infer.onnx"   # trained MobileNetV3-small, Apache-2.0
# The eight master-key filters (CC BY 4.0, credit and source in fixtures/README.md)
MASTER_KEYS = FIXTURES / "master_key_filters_8x7x7.txt"


@pytest.fixture(autouse=True)
def _no_real_hub(monkeypatch):
    """No test reaches the real Hugging Face hub: offline, and a dead endpoint, unless a test starts
    the local hub server (tests/hub_fixtures.py), which points HF_ENDPOINT at it."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")


@pytest.fixture
def catalog(tmp_path) -> Catalog:
    return Catalog(tmp_path / "catalog")


@pytest.fixture(scope="session")
def rapidocr_models() -> dict[str, Path]:
    """The five trained PaddleOCR ONNX models, fetched once from PyPI into the cache folder."""
    from kernel_catalog.demo.rapidocr import DownloadError, fetch_rapidocr_models

    cache = Path(os.environ.get("KERNEL_CATALOG_CACHE") or Path(__file__).resolve().parents[1] / ".cache")
    try:
        return fetch_rapidocr_models(cache)
    except DownloadError as exc:
        pytest.skip(f"RapidOCR wheels not downloadable here (pip download failed): {exc}")


@pytest.fixture
def cls_onnx() -> Path:
    return CLS_ONNX


def run_cli(*args: str, env: dict | None = None, check: bool = False) -> subprocess.CompletedProcess:
    """Run `catalog ...` in a fresh process, exactly as a user would."""
    full_env = {**os.environ, **(env or {})}
    result = subprocess.run(
        [sys.executable, "-c", "from kernel_catalog.cli import main; main()", *args],
        capture_output=True, text=True, env=full_env, timeout=600,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"catalog {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    """A user error: non-zero exit, one line on stderr starting 'Error:', no traceback."""
    assert result.returncode != 0, result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ") and "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


class ArrayAdapter:
    """A real, minimal adapter plugin over in-memory arrays: lets core tests choose exact values."""

    name = "arrays"
    version = "1.0"
    description = "in-memory arrays (tests)"
    priority = 100   # asked before the timm adapter, which takes any name-like string

    def __init__(self, layers: dict[str, np.ndarray], model: str = "arrays", trained: bool = True):
        self.layers, self.model, self.trained = layers, model, trained

    def can_read(self, source: str, options: IngestOptions) -> bool:
        return source == self.model

    def read(self, source: str, options: IngestOptions) -> Extraction:
        return Extraction(self.model, source, self.trained,
                          [DepthwiseLayer(name, w, {"kind": "conv2d"}) for name, w in self.layers.items()])


def snapshot(catalog: Catalog) -> dict:
    """Everything a user can observe of a catalog: view contents and the data files on disk."""
    if not catalog.exists():
        return {"exists": False, "files": sorted(_data_files(catalog))}
    with catalog.reader() as con:
        return {
            "exists": True,
            "models": con.sql("SELECT model, checkpoint_sha256, n_kernels FROM models ORDER BY ALL").fetchall(),
            "layers": con.sql("SELECT model, layer, n_kernels FROM layers ORDER BY ALL").fetchall(),
            "kernels": con.sql("SELECT model, kernel_id, hash(weights) FROM kernels ORDER BY ALL").fetchall(),
            "files": sorted(_data_files(catalog)),
        }


def _data_files(catalog: Catalog) -> list[str]:
    folder = catalog.root / "kernels"
    return [p.relative_to(catalog.root).as_posix() for p in folder.rglob("*") if p.is_file()] if folder.exists() else []


def run_cli_in_process(*args: str) -> subprocess.CompletedProcess:
    """Run `catalog ...` in this process, through the same entry point (`main`) as the command:
    for many cases (fuzzing) where a fresh interpreter per case would cost seconds each. An
    unexpected exception propagates (a traceback fails the test)."""
    import contextlib
    import io

    from kernel_catalog.cli import main

    out, err = io.StringIO(), io.StringIO()
    saved = sys.argv
    sys.argv = ["catalog", *args]
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            main()
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    finally:
        sys.argv = saved
    return subprocess.CompletedProcess(["catalog", *args], code, out.getvalue(), err.getvalue())
