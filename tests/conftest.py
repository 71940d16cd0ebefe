"""Shared fixtures: real catalogs in temporary folders, real files, the CLI as users run it."""
from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
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


# A skip because a tool or server is missing (Chromium, Ray, moto, boto3, a PyPI download) says
# nothing about the code: under CI=true (.ci/run installs every tool) it is a failure, so CI never
# passes by skipping a check. Skips for other reasons (a CUDA device present, no saddle on 1x7) stay.
MISSING_TOOL = "missing tool: "


def skip_missing_tool(reason: str):
    """Skip (a failure under CI=true): the test needs a tool or server this machine lacks."""
    __tracebackhide__ = True        # the skip is reported at the test's line
    pytest.skip(MISSING_TOOL + reason)


def _missing_tool_reason(report) -> str | None:
    if not report.skipped or hasattr(report, "wasxfail") or not isinstance(report.longrepr, tuple):
        return None
    reason = str(report.longrepr[2])
    return reason if MISSING_TOOL in reason or "could not import" in reason else None   # importorskip's words


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    reason = _missing_tool_reason(report)
    if reason and os.environ.get("CI") == "true":
        report.outcome = "failed"
        report.longrepr = f"CI=true: a missing tool fails the test instead of skipping it ({reason})"


@pytest.fixture(autouse=True)
def _no_real_hub(monkeypatch):
    """No test reaches the real Hugging Face hub: offline, and a dead endpoint, unless a test starts
    the local hub server (tests/hub_fixtures.py), which points HF_ENDPOINT at it."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")


@pytest.fixture
def catalog(tmp_path) -> Catalog:
    return Catalog(tmp_path / "catalog")


@contextlib.contextmanager
def download_cache():
    """The folder downloaded model files are cached in (KERNEL_CATALOG_CACHE, else .cache), held
    by this process alone meanwhile: pytest-xdist's workers share it, so one fetches at a time and
    the next finds the files there."""
    cache = Path(os.environ.get("KERNEL_CATALOG_CACHE") or Path(__file__).resolve().parents[1] / ".cache")
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".tests.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)          # released when the file is closed
        yield cache


@pytest.fixture(scope="session")
def rapidocr_models() -> dict[str, Path]:
    """The five trained PaddleOCR ONNX models, fetched once from PyPI into the cache folder."""
    from kernel_catalog.demo.rapidocr import DownloadError, fetch_rapidocr_models

    try:
        with download_cache() as cache:
            return fetch_rapidocr_models(cache)
    except DownloadError as exc:
        skip_missing_tool(f"RapidOCR wheels not downloadable here (pip download failed): {exc}")


@pytest.fixture
def cls_onnx() -> Path:
    return CLS_ONNX


def copy_catalog(catalog: Catalog, folder: Path) -> Catalog:
    """A test's own copy of a catalog trained once for its module or session, for a test that
    writes (runs, models): the other tests read the catalog as it was built."""
    shutil.copytree(catalog.root, folder / "catalog-copy", symlinks=True)
    return Catalog(folder / "catalog-copy")


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


def run_cli_in_process(*args: str, check: bool = False) -> subprocess.CompletedProcess:
    """Run `catalog ...` in this process, through the same entry point (`main`) as the command,
    seconds faster than `run_cli`; the environment is this process's (set it with monkeypatch).
    stdout and stderr get what a fresh process's pipes would: Python's output, warnings under a
    fresh interpreter's filters, log records no handler took, and what C code writes to file
    descriptors 1 and 2. An unexpected exception propagates (a traceback fails the test)."""
    import contextlib
    import io
    import logging
    import warnings

    from kernel_catalog.cli import main

    out, err = io.StringIO(), io.StringIO()
    saved_argv, root = sys.argv, logging.getLogger()
    saved_handlers = root.handlers[:]
    sys.argv = ["catalog", *args]
    code = 0
    try:
        with _fd_output(out, err), warnings.catch_warnings(), \
                contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            _fresh_interpreter_warning_filters()
            root.handlers = []      # pytest's capture handlers: records reach logging's last resort (stderr)
            try:
                main()
            finally:
                root.handlers = saved_handlers
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    finally:
        sys.argv = saved_argv
    result = subprocess.CompletedProcess(["catalog", *args], code, out.getvalue(), err.getvalue())
    if check and code != 0:
        raise AssertionError(f"catalog {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def _fresh_interpreter_warning_filters() -> None:
    """The warning filters Python starts with (no -W, no dev mode), in place of pytest's."""
    import warnings

    warnings.resetwarnings()
    for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
        warnings.simplefilter("ignore", category, append=True)


@contextlib.contextmanager
def _fd_output(out, err):
    """Append what is written to file descriptors 1 and 2 meanwhile (by C code) to out and err."""
    import tempfile

    sys.stdout.flush()
    sys.stderr.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    files = {fd: tempfile.TemporaryFile() for fd in (1, 2)}
    try:
        for fd, file in files.items():
            os.dup2(file.fileno(), fd)
        yield
    finally:
        for fd, copy in saved.items():
            os.dup2(copy, fd)
            os.close(copy)
        for fd, buffer in ((1, out), (2, err)):
            files[fd].seek(0)
            buffer.write(files[fd].read().decode(errors="replace"))
            files[fd].close()
