"""kill -9 at every step of a write leaves the catalog as it was (or, after the commit, as after)."""
from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from kernel_catalog.store.faults import CRASH_ENV
from kernel_catalog.ingest import ingest
from kernel_catalog.store.verify import verify

from .conftest import run_cli, run_cli_in_process, snapshot

BEFORE_COMMIT = ["parquet-written", "parquet-renamed", "before-commit"]


def _views(state: dict) -> dict:
    return {k: v for k, v in state.items() if k != "files"}


@pytest.mark.parametrize("point", BEFORE_COMMIT + ["after-commit"])
def test_kill_at_each_step_of_a_replacing_ingest(catalog, cls_onnx, point):
    ingest(catalog, str(cls_onnx))                       # a catalog with one model in it
    before = snapshot(catalog)
    killed = run_cli("--catalog", str(catalog.root), "ingest", str(cls_onnx), "--include", "Conv@2",
                     "--replace", env={CRASH_ENV: point})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    after_crash = snapshot(catalog)
    checked = verify(catalog)                           # consistent; at most the dead writer's own strays
    assert checked.problems == [] and checked.foreign == [], checked.lines()
    if point in BEFORE_COMMIT:
        assert _views(after_crash) == _views(before)
    else:
        assert after_crash["models"] != before["models"]
        assert len(after_crash["kernels"]) == 8
    # the next writer (the command, in this process: only the killed one needs its own) removes
    # whatever the dead one left and works normally
    again = run_cli_in_process("--catalog", str(catalog.root), "ingest", str(cls_onnx), "--replace", check=True)
    assert "replaced" in again.stdout
    final = snapshot(catalog)
    assert _views(final) == _views(before)
    assert len(final["files"]) == 1
    assert verify(catalog).clean


def test_kill_during_first_ingest_leaves_no_model(catalog, cls_onnx):
    for point in BEFORE_COMMIT:
        killed = run_cli("--catalog", str(catalog.root), "ingest", str(cls_onnx), env={CRASH_ENV: point})
        assert killed.returncode == -signal.SIGKILL
        state = snapshot(catalog)
        assert state.get("models", []) == [] and state.get("kernels", []) == []


def test_kill_at_random_moments_never_corrupts(catalog, cls_onnx):
    """Timed kills land inside DuckDB's own commit and checkpoint too; the catalog stays consistent.

    The moments are fractions of a measured uninterrupted run of the same command on this
    machine, so they fall inside the run however fast or busy the machine is; the test fails only
    when a kill corrupts the catalog or loses rows, never because a kill came too late.
    """
    ingest(catalog, str(cls_onnx))
    command = [sys.executable, "-c", "from kernel_catalog.cli import main; main()", "--catalog", str(catalog.root),
               "ingest", str(cls_onnx), "--replace"]
    started = time.monotonic()
    subprocess.run(command, check=True, capture_output=True)
    measured = time.monotonic() - started
    for fraction in (0.5, 0.65, 0.75, 0.82, 0.88, 0.93, 0.97):
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        time.sleep(fraction * measured)
        process.send_signal(signal.SIGKILL)
        process.wait()
        state = snapshot(catalog)
        assert len(state["models"]) == 1 and len(state["kernels"]) == 864
        with catalog.reader() as con:   # every committed file exists and is readable
            n = con.sql("SELECT sum(n_rows) FROM kernel_files").fetchall()[0][0]
            assert n == 864
        checked = verify(catalog)       # sizes and digests of what is committed hold after any kill
        assert checked.problems == [] and checked.foreign == [], checked.lines()
