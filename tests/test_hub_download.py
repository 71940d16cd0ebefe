"""Published timm weights through huggingface_hub's real client, against a local hub server.

The CLI runs through its entry point in this process (the hub variables are read at call time);
HF_ENDPOINT points at the fixture's server on 127.0.0.1, so the real hub is never contacted.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from kernel_catalog.store import Catalog

from .conftest import assert_one_line_error, run_cli_in_process as cli, snapshot
from .hub_fixtures import CUT_MODEL, ZOO_PATTERN, cache_listing, empty_hub, hub, timm_releases  # noqa: F401 (fixtures)

CHUNK = 10 * 1024 * 1024      # huggingface_hub writes the body to disk in chunks of this size


def _ingest(catalog: Path, *args: str):
    return cli("--catalog", str(catalog), "ingest", *args)


def _kernels_match(catalog: Path, model: str, state: dict) -> None:
    """Every kernel in the catalog equals the served tensor it came from, bit for bit."""
    rows = Catalog(catalog).sql(
        "SELECT layer, channel, weights FROM kernels WHERE model = ? ORDER BY layer, channel", [model]).to_pylist()
    assert rows
    for row in rows:
        tensor = state[f"{row['layer']}.weight"][row["channel"], 0].numpy()
        got = np.asarray(row["weights"], np.float32)
        assert got.tobytes() == np.ascontiguousarray(tensor, np.float32).ravel().tobytes(), row["layer"]


def _meta(catalog: Path, model: str) -> dict:
    return json.loads(Catalog(catalog).sql("SELECT meta FROM models WHERE model = ?", [model]).column("meta")[0].as_py())


def test_download_into_empty_cache_is_bit_exact(hub, timm_releases, tmp_path):
    served = timm_releases[CUT_MODEL]
    result = _ingest(tmp_path / "cat", CUT_MODEL)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"added {CUT_MODEL}:")
    # the file in huggingface_hub's cache layout, byte for byte what was served
    (cached,) = (Path(os.environ["HF_HUB_CACHE"]) / ("models--" + served.repo.replace("/", "--"))).glob(
        "snapshots/*/model.safetensors")
    assert cached.read_bytes() == served.data
    _kernels_match(tmp_path / "cat", CUT_MODEL, served.state)
    # provenance: repo, commit, file with size and sha256, license; `catalog models` shows the repo
    hub_meta = _meta(tmp_path / "cat", CUT_MODEL)["hub"]
    assert hub_meta["repo"] == served.repo and hub_meta["revision"] == hub.repos[served.repo].sha
    import hashlib
    assert hub_meta["files"] == [{"name": "model.safetensors", "size": len(served.data),
                                  "sha256": hashlib.sha256(served.data).hexdigest()}]
    assert hub_meta["license"]
    models = cli("--catalog", str(tmp_path / "cat"), "models", "--format", "csv", check=True).stdout
    assert served.repo in models


def test_cached_weights_need_no_server(hub, timm_releases, tmp_path):
    assert _ingest(tmp_path / "one", CUT_MODEL).returncode == 0
    hub.stop()
    seen = len(hub.requests)
    result = _ingest(tmp_path / "two", CUT_MODEL)
    assert result.returncode == 0, result.stderr
    assert len(hub.requests) == seen            # not one request: the cache answered
    _kernels_match(tmp_path / "two", CUT_MODEL, timm_releases[CUT_MODEL].state)


def test_offline_and_not_cached_is_one_line(hub, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = _ingest(tmp_path / "cat", CUT_MODEL)
    assert_one_line_error(result, CUT_MODEL, "HF_HUB_OFFLINE")
    assert hub.requests == []
    assert not snapshot(Catalog(tmp_path / "cat"))["exists"]


def test_server_down_and_not_cached_is_one_line(hub, timm_releases, tmp_path):
    hub.stop()
    result = _ingest(tmp_path / "cat", CUT_MODEL)
    assert_one_line_error(result, timm_releases[CUT_MODEL].repo, "cannot be reached")
    assert not snapshot(Catalog(tmp_path / "cat"))["exists"]


def test_download_cut_mid_file_resumes_where_it_stopped(hub, timm_releases, tmp_path):
    """A connection lost mid-file: huggingface_hub asks for the rest (Range), not the whole file."""
    served = timm_releases[CUT_MODEL]
    assert len(served.data) > CHUNK + 2 * 1024 * 1024
    path = f"/{served.repo}/resolve/main/model.safetensors"
    hub.cut(path, CHUNK + 2 * 1024 * 1024, then_fail=False)
    result = _ingest(tmp_path / "cat", CUT_MODEL)
    assert result.returncode == 0, result.stderr
    assert hub.downloads() == [(path, None), (path, f"bytes={CHUNK}-")]   # what was on disk is kept
    _kernels_match(tmp_path / "cat", CUT_MODEL, served.state)


def test_download_cut_mid_file_fails_then_rerun_completes(hub, timm_releases, tmp_path):
    """The server stays broken: one line, no partial file left in the cache; a rerun completes.

    huggingface_hub (>= 1.x) writes each download to a process-unique temporary file and deletes it
    when the run fails, so a rerun downloads the file again from its start (resuming happens within a
    run, above).
    """
    served = timm_releases[CUT_MODEL]
    path = f"/{served.repo}/resolve/main/model.safetensors"
    hub.cut(path, CHUNK + 2 * 1024 * 1024)       # then 500 until healed: the run fails
    first = _ingest(tmp_path / "cat", CUT_MODEL)
    assert_one_line_error(first, served.repo, "run again")
    assert not list(Path(os.environ["HF_HUB_CACHE"]).rglob("*.incomplete"))
    assert not snapshot(Catalog(tmp_path / "cat"))["exists"]
    hub.heal()
    second = _ingest(tmp_path / "cat", CUT_MODEL)
    assert second.returncode == 0, second.stderr
    assert hub.downloads()[-1] == (path, None)
    _kernels_match(tmp_path / "cat", CUT_MODEL, served.state)


def test_evict_leaves_the_cache_as_it_was(hub, timm_releases, tmp_path):
    cache = Path(os.environ["HF_HUB_CACHE"])
    names = [n for n in timm_releases if n != CUT_MODEL]
    assert _ingest(tmp_path / "cat", names[0]).returncode == 0           # something cached before
    before = cache_listing(cache)
    result = _ingest(tmp_path / "cat", names[1], "--evict")
    assert result.returncode == 0, result.stderr
    assert cache_listing(cache) == before
    _kernels_match(tmp_path / "cat", names[1], timm_releases[names[1]].state)


def test_evict_from_an_empty_cache_leaves_nothing(hub, timm_releases, tmp_path):
    cache = Path(os.environ["HF_HUB_CACHE"])
    assert not cache.exists()
    result = _ingest(tmp_path / "cat", CUT_MODEL, "--evict")
    assert result.returncode == 0, result.stderr
    assert not cache.exists()


def test_zoo_pattern_in_parallel_then_resumes_without_downloading(hub, timm_releases, tmp_path):
    zoo = [n for n in timm_releases if n != CUT_MODEL]
    first = _ingest(tmp_path / "cat", ZOO_PATTERN, "--jobs", "2", "--evict")
    assert first.returncode == 0, first.stderr
    assert sorted(line.split(":")[0] for line in first.stdout.splitlines()) == sorted(f"added {n}" for n in zoo)
    assert f"summary: {len(zoo)} added, 0 replaced, 0 unchanged, 0 failed" in first.stderr
    for name in zoo:
        _kernels_match(tmp_path / "cat", name, timm_releases[name].state)
    downloads = len(hub.downloads())
    assert downloads == len(zoo)
    # a second run (cache evicted): one metadata request each, skipped before any download
    second = _ingest(tmp_path / "cat", ZOO_PATTERN, "--jobs", "2")
    assert second.returncode == 0, second.stderr
    assert f"summary: 0 added, 0 replaced, {len(zoo)} unchanged, 0 failed" in second.stderr
    assert len(hub.downloads()) == downloads


def test_zoo_summary_gives_one_reason_per_failure(hub, timm_releases, tmp_path):
    zoo = [n for n in timm_releases if n != CUT_MODEL]
    del hub.repos[timm_releases[zoo[0]].repo]              # one release vanished from the hub
    result = _ingest(tmp_path / "cat", ZOO_PATTERN, "--jobs", "2")
    assert result.returncode == 1
    assert f"summary: {len(zoo) - 1} added, 0 replaced, 0 unchanged, 1 failed" in result.stderr
    failed = [line for line in result.stderr.splitlines() if line.startswith("  failed ")]
    assert len(failed) == 1 and zoo[0] in failed[0] and "does not exist" in failed[0]
    assert "Traceback" not in result.stderr
