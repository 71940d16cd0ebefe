"""Catalog data on an S3-compatible server (moto_server on 127.0.0.1): init --data-root, every
command over the URI, the published snapshot read by URI, faults (driver killed mid-commit,
server unreachable)."""
from __future__ import annotations

import signal

import pytest

from kernel_catalog.errors import CatalogError
from kernel_catalog.store import Catalog
from kernel_catalog.store.faults import CRASH_ENV

from .cluster_fixtures import env_for_cli, s3_env, s3_objects, s3_server   # noqa: F401 (fixtures)
from .conftest import assert_one_line_error, run_cli, run_cli_in_process

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _cli(*args, check=False):
    """The command through its entry point in this process (s3_env has set the AWS variables)."""
    return run_cli_in_process(*args, check=check)


def _process(env, *args, extra):
    """The command in a fresh process, for what needs one: a driver killed by SIGKILL, and
    KERNEL_CATALOG_S3_TIMEOUT, which is read once, when the data-root module is imported."""
    return run_cli(*args, env={**env_for_cli(env), **extra})


def _local_data_files(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*.parquet")) + \
        sorted(p.relative_to(root).as_posix() for p in root.rglob("*.pt"))


def _state(uri_or_dir):
    catalog = Catalog(uri_or_dir)
    with catalog.reader() as con:
        return {"models": con.sql("SELECT model, checkpoint_sha256, n_kernels FROM models ORDER BY ALL").fetchall(),
                "kernels": con.sql("SELECT model, kernel_id, hash(weights) FROM kernels ORDER BY ALL").fetchall()}


def test_every_command_on_an_s3_data_root_and_the_published_snapshot(s3_env, tmp_path, cls_onnx):
    bucket, root = s3_env["BUCKET"], tmp_path / "driver"
    uri = f"s3://{bucket}/lab"
    _cli("--catalog", str(root), "init", "--data-root", uri, check=True)
    _cli("--catalog", str(root), "ingest", str(cls_onnx), check=True)
    _cli("--catalog", str(root), "embed", "--run", "e5", "--where", "kh = 5", "--epochs", "2", "--no-null",
         check=True)
    _cli("--catalog", str(root), "cluster", "--run", "c5", "--from", "e5", "--k", "3", check=True)
    assert _local_data_files(root) == []                      # no kernel or result Parquet written locally
    keys = s3_objects(bucket, "lab/")
    assert "lab/catalog.duckdb" in keys
    assert any(k.startswith("lab/kernels/model=") for k in keys)
    assert any(k.startswith("lab/results/run=e5/embeddings-") for k in keys)

    local = _cli("--catalog", str(root), "sql", "SELECT model, kh, count(*) AS n FROM kernels GROUP BY ALL ORDER BY ALL",
                 "--format", "csv", check=True).stdout
    remote = _cli("--catalog", uri, "sql", "SELECT model, kh, count(*) AS n FROM kernels GROUP BY ALL ORDER BY ALL",
                  "--format", "csv", check=True).stdout
    assert local == remote and "800" in remote
    assert _state(uri) == _state(root)
    joined = _cli("--catalog", uri, "sql", "SELECT count(*) AS n FROM labels JOIN kernels USING (kernel_id) "
                  "JOIN embeddings USING (kernel_id, run) WHERE labels.run = 'c5' OR embeddings.run = 'e5'",
                  "--format", "csv", check=True).stdout
    assert joined.split()[-1] == "0"     # labels.run c5 vs embeddings.run e5 never both in one row
    for args in (["models"], ["layers", "ch_ppocr_mobile_v2.0_cls_infer"], ["report", "--run", "c5"],
                 ["report", "--run", "c5", "--by", "kernel_size"],
                 ["export", "--where", "kh = 5", "-o", str(tmp_path / "k5.npz")],
                 ["figure", "clusters", "--run", "c5", "-o", str(tmp_path / "c.svg")],
                 ["gallery", "--run", "c5", "-o", str(tmp_path / "site")],
                 ["drift", "--a", "kh = 5 AND layer_index < 5", "--b", "kh = 5 AND layer_index >= 5"]):
        _cli("--catalog", uri, *args, check=True)
    for catalog in (str(root), uri):   # the nearest-kernel search reads the files on S3 too
        nearest = _cli("--catalog", catalog, "nearest", "--template", "dog-pos", "--size", "5x5",
                       "--limit", "3", "--format", "csv", check=True).stdout
        assert len(nearest.strip().splitlines()) == 4
    assert (tmp_path / "k5.npz").is_file() and (tmp_path / "site" / "index.html").is_file()

    refused = _cli("--catalog", uri, "ingest", str(cls_onnx))
    assert_one_line_error(refused, "read-only", str(root))

    from sqlalchemy import text

    for catalog in (Catalog(root), Catalog(uri)):    # SQLAlchemy's connections see the data on S3 too
        engine = catalog.sqlalchemy_engine()
        try:
            with engine.connect() as connection:
                counts = connection.execute(text("SELECT (SELECT count(*) FROM kernels), "
                                                 "(SELECT count(*) FROM embeddings WHERE run = 'e5')")).fetchone()
        finally:
            engine.dispose()
        assert tuple(counts) == (864, 800)


def test_snapshot_refreshed_by_etag(s3_env, tmp_path, cls_onnx):
    bucket, root = s3_env["BUCKET"], tmp_path / "driver"
    uri = f"s3://{bucket}/p"
    Catalog(root).init(uri)
    assert _state(uri)["models"] == []
    _cli("--catalog", str(root), "ingest", str(cls_onnx), "--include", "Conv@2", check=True)
    assert len(_state(uri)["models"]) == 1                   # a new Catalog instance re-checks the ETag


@pytest.mark.parametrize("point", ["parquet-renamed", "before-commit"])
def test_driver_killed_mid_commit_leaves_catalog_and_next_writer_removes_orphans(s3_env, tmp_path, cls_onnx, point):
    bucket, root = s3_env["BUCKET"], tmp_path / "driver"
    uri = f"s3://{bucket}/lab"
    Catalog(root).init(uri)
    _cli("--catalog", str(root), "ingest", str(cls_onnx), check=True)
    before, keys_before = _state(root), s3_objects(bucket)
    killed = _process(s3_env, "--catalog", str(root), "ingest", str(cls_onnx), "--include", "Conv@2", "--replace",
                      extra={CRASH_ENV: point})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert _state(root) == before and _state(uri) == before
    orphans = sorted(set(s3_objects(bucket)) - set(keys_before))
    assert len(orphans) == 1 and orphans[0].endswith(".parquet")
    with Catalog(root).writer():          # the next writer removes what the dead one left
        pass
    assert s3_objects(bucket) == keys_before


def test_unreachable_server_is_one_line_and_changes_nothing(s3_env, tmp_path, cls_onnx):
    bucket, root = s3_env["BUCKET"], tmp_path / "driver"
    Catalog(root).init(f"s3://{bucket}/lab")
    _cli("--catalog", str(root), "ingest", str(cls_onnx), "--include", "Conv@2", check=True)
    before = _state(root)
    dead = {"AWS_ENDPOINT_URL": "http://127.0.0.1:9", "KERNEL_CATALOG_S3_TIMEOUT": "1"}
    assert_one_line_error(_process(s3_env, "--catalog", str(root), "ingest", str(cls_onnx), "--replace", extra=dead),
                          "object storage", "unchanged")
    assert_one_line_error(_process(s3_env, "--catalog", str(root), "sql", "SELECT count(*) FROM kernels", extra=dead),
                          "Could not connect")
    assert_one_line_error(_process(s3_env, "--catalog", f"s3://{bucket}/lab", "models", extra=dead), "object storage")
    assert_one_line_error(_process(s3_env, "--catalog", str(tmp_path / "new"), "init", "--data-root",
                                   "s3://nobucket/x", extra=dead), "object storage")
    assert not (tmp_path / "new" / "catalog.duckdb").exists()
    assert _state(root) == before


def test_local_init_makes_a_local_catalog(tmp_path):
    result = run_cli_in_process("--catalog", str(tmp_path / "c"), "init", check=True)
    assert "data in" in result.stdout and (tmp_path / "c" / "catalog.duckdb").is_file()
    assert Catalog(tmp_path / "c").data.is_local


def test_without_the_cluster_extra_one_line_says_what_to_install(tmp_path, cls_onnx):
    import subprocess
    import sys

    blocked = "import sys; sys.modules['ray'] = sys.modules['boto3'] = None; from kernel_catalog.cli import main; main()"
    for args in (["--catalog", str(tmp_path / "c"), "ingest", str(cls_onnx), "--ray", "local"],
                 ["--catalog", "s3://bucket/prefix", "models"],
                 ["--catalog", str(tmp_path / "d"), "init", "--data-root", "s3://bucket/prefix"]):
        result = subprocess.run([sys.executable, "-c", blocked, *args], capture_output=True, text=True, timeout=300)
        assert_one_line_error(result, "pip install 'kernel-catalog[cluster]'")
    assert not (tmp_path / "d" / "catalog.duckdb").exists()


def test_a_data_root_is_owned_by_one_catalog(s3_env, tmp_path, cls_onnx):
    """Two catalogs on one prefix would each sweep the other's Parquet as orphans: the second is
    refused, and so is a prefix holding files that are not a catalog's."""
    import boto3

    bucket = s3_env["BUCKET"]
    uri = f"s3://{bucket}/shared"
    first, second = tmp_path / "first", tmp_path / "second"
    _cli("--catalog", str(first), "init", "--data-root", uri, check=True)
    _cli("--catalog", str(first), "ingest", str(cls_onnx), check=True)
    owned = s3_objects(bucket, "shared/")
    assert "shared/.kernel-catalog" in owned
    assert_one_line_error(_cli("--catalog", str(second), "init", "--data-root", uri), "another catalog")
    assert s3_objects(bucket, "shared/") == owned
    boto3.client("s3").put_object(Bucket=bucket, Key="theirs/report.pdf", Body=b"%PDF")
    assert_one_line_error(_cli("--catalog", str(second), "init", "--data-root", f"s3://{bucket}/theirs"),
                          "not empty")
    assert s3_objects(bucket, "theirs/") == ["theirs/report.pdf"]
    assert _cli("--catalog", str(first), "verify").returncode == 0


def test_a_marker_is_claimed_by_one_conditional_write(s3_env, tmp_path):
    """Two catalogs initialising one empty prefix at once: the marker is written only where none
    is (If-None-Match against the real S3 protocol), so the second writer learns it lost and the
    first writer's marker stays."""
    from kernel_catalog.store._owned import MARKER_NAME, marker_text
    from kernel_catalog.store.datafs import DataRoot

    uri = f"s3://{s3_env['BUCKET']}/raced"
    a, b = DataRoot(tmp_path / "a", uri), DataRoot(tmp_path / "b", uri)
    assert a.put_if_absent(MARKER_NAME, marker_text("a" * 32).encode())
    assert not b.put_if_absent(MARKER_NAME, marker_text("b" * 32).encode())
    assert a.read_marker() == b.read_marker() == "a" * 32
    a.claim("a" * 32)                                      # its own: nothing changes
    with pytest.raises(CatalogError, match="another catalog"):
        b.claim("b" * 32)
    assert s3_objects(s3_env["BUCKET"], "raced/") == ["raced/.kernel-catalog"]
