"""Trust (README "Security"): the catalog touches only what it owns, and a catalog file made by
someone else is data: none of its SQL runs, none of its paths lead outside it."""
from __future__ import annotations

import hashlib
import os

import duckdb
import numpy as np
import pytest

from kernel_catalog.errors import CatalogError
from kernel_catalog.ingest import ingest
from kernel_catalog.ingest import commit_extraction
from kernel_catalog.adapters.base import IngestOptions
from kernel_catalog.store import Catalog
from kernel_catalog.store.targets import OUTPUT_MARKER, output_folder

from .conftest import ArrayAdapter, assert_one_line_error, run_cli_in_process, snapshot

STRAY = "kernels/model=ghost/0123456789abcdef-01234567.parquet"   # a name the catalog itself writes


def _small(catalog: Catalog, model: str = "arrays", seed: int = 0) -> None:
    weights = np.random.default_rng(seed).normal(size=(4, 3, 3)).astype(np.float32)
    commit_extraction(catalog, ArrayAdapter({"dw": weights}, model=model).read(model, IngestOptions()), "arrays", "1.0")


def _cli(catalog: Catalog, *args: str):
    return run_cli_in_process("--catalog", str(catalog.root), *args)


def _tree(folder) -> dict:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- 1. ownership ------------------------------------------------------------------------------

def test_a_folder_that_is_not_a_catalog_is_refused_and_left_alone(tmp_path, cls_onnx):
    thesis = tmp_path / "thesis"
    for name in ("results/table.csv", "kernels/notes.txt", "kernels/model=x/0123456789abcdef-01234567.parquet"):
        (thesis / name).parent.mkdir(parents=True, exist_ok=True)
        (thesis / name).write_text(name)
    before = _tree(thesis)
    result = run_cli_in_process("--catalog", str(thesis), "ingest", str(cls_onnx))
    assert_one_line_error(result, str(thesis), "not a kernel catalog", "new or empty folder")
    assert _tree(thesis) == before and not (thesis / "catalog.duckdb").exists()


def test_sweeps_remove_only_own_names_never_follow_links_never_run_on_a_read(catalog, tmp_path):
    _small(catalog)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "0123456789abcdef-01234567.parquet").write_text("someone else's file with our kind of name")
    (catalog.root / "kernels" / "model=linked").symlink_to(outside, target_is_directory=True)
    (catalog.root / "kernels" / "README.txt").write_text("a user's note")
    (catalog.root / STRAY).parent.mkdir(parents=True)
    (catalog.root / STRAY).write_bytes(b"a dead write's file")
    database = _digest(catalog.db_path)
    snapshot(catalog)                                   # reads: nothing is swept, nothing written
    assert (catalog.root / STRAY).exists() and _digest(catalog.db_path) == database
    _small(catalog, "second")                           # a write sweeps its own stray only
    assert not (catalog.root / STRAY).exists()
    assert (catalog.root / "kernels" / "README.txt").read_text() == "a user's note"
    assert (outside / "0123456789abcdef-01234567.parquet").exists()
    assert (catalog.root / "kernels" / "model=linked").is_symlink()


def test_a_catalog_file_copied_over_another_is_refused(tmp_path):
    a, b = Catalog(tmp_path / "a"), Catalog(tmp_path / "b")
    _small(a)
    _small(b)
    b.db_path.write_bytes(a.db_path.read_bytes())       # b's marker still names b
    before = _tree(b.root)
    with pytest.raises(CatalogError, match="marker names another catalog"):
        _small(b, "third")
    assert _tree(b.root) == before


# -- 2. outputs --------------------------------------------------------------------------------

def test_every_o_needs_force_to_overwrite_and_never_writes_into_a_catalog(catalog, tmp_path):
    _small(catalog)
    out = tmp_path / "rows.csv"
    out.write_text("mine")
    assert_one_line_error(_cli(catalog, "sql", "SELECT 1 AS x", "-o", str(out)), "exists; pass --force")
    assert out.read_text() == "mine"
    assert _cli(catalog, "sql", "SELECT 1 AS x", "-o", str(out), "--force").returncode == 0
    assert out.read_text() == "x\n1\n"
    database = catalog.db_path.read_bytes()
    assert_one_line_error(_cli(catalog, "sql", "SELECT 1", "-o", str(catalog.db_path), "--force", "--format", "csv"),
                          "part of the catalog")
    figure = tmp_path / "k.png"
    assert _cli(catalog, "figure", "kernels", "-o", str(figure)).returncode == 0
    assert_one_line_error(_cli(catalog, "figure", "kernels", "-o", str(figure)), "exists; pass --force")
    assert catalog.db_path.read_bytes() == database


def test_force_replaces_only_a_folder_this_tool_wrote(catalog, tmp_path, monkeypatch):
    _small(catalog)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "paper.tex").write_text("x")
    with pytest.raises(CatalogError, match="not written by kernel-catalog"):
        output_folder(mine, force=True)
    for folder, reason in ((catalog.root, "kernel catalog"), (tmp_path, "working directory"),
                           (os.path.expanduser("~"), "home folder")):
        monkeypatch.chdir(tmp_path)
        with pytest.raises(CatalogError, match=reason):
            output_folder(folder, force=True)
    ours = tmp_path / "site"
    ours.mkdir()
    (ours / OUTPUT_MARKER).write_text("")
    (ours / "index.html").write_text("")
    assert output_folder(ours, force=True) == ours
    (ours / "copy").mkdir()
    (ours / "copy" / ".kernel-catalog").write_text('{"kernel_catalog": "x"}')
    with pytest.raises(CatalogError, match="holding a kernel catalog"):
        output_folder(ours, force=True)


# -- 3. a catalog from someone else runs none of its SQL -----------------------------------------

def _tamper(catalog: Catalog, *statements: str) -> None:
    con = duckdb.connect(str(catalog.db_path))
    for statement in statements:
        con.execute(statement)
    con.close()


SECRET = "this line must never leave the secret file"


@pytest.fixture
def secret(tmp_path):
    path = tmp_path / "secret.txt"
    path.write_text(SECRET)
    return path


@pytest.mark.parametrize("tampering", [
    "CREATE VIEW models AS SELECT content AS model FROM read_text('{secret}')",
    "CREATE MACRO round(x) AS (SELECT content FROM read_text('{secret}'))",
    "CREATE TABLE extra AS SELECT 1 AS x",
    "ALTER TABLE model_records ADD COLUMN leak VARCHAR DEFAULT 'x'",
])
def test_a_catalog_with_foreign_sql_is_refused_before_anything_runs(catalog, secret, tampering):
    _small(catalog)
    _tamper(catalog, tampering.format(secret=secret))
    for args in (("models",), ("sql", "SELECT * FROM models"), ("layers", "arrays")):
        result = _cli(catalog, *args)
        assert_one_line_error(result, "objects this code did not create")
        assert SECRET not in result.stdout + result.stderr
    checked = _cli(catalog, "verify")                     # verify says so too, and exits 1
    assert checked.returncode == 1 and "object not created by this code" in checked.stdout


def test_an_old_catalogs_stored_views_are_never_run(catalog, secret):
    """Catalogs before schema 9 stored their views; the code's own TEMP views stand in front."""
    _small(catalog)
    _tamper(catalog, "DELETE FROM schema_version WHERE version = 9", "DELETE FROM settings WHERE key = 'catalog_id'",
            "ALTER TABLE kernel_files DROP COLUMN sha256", "ALTER TABLE result_files DROP COLUMN sha256",
            f"CREATE VIEW models AS SELECT content AS model FROM read_text('{secret}')")
    result = _cli(catalog, "models")
    assert result.returncode == 0 and "arrays" in result.stdout and SECRET not in result.stdout


@pytest.mark.parametrize("path", ["/etc/hostname", "../../secret.parquet", "kernels/model=a/../../../x.parquet"])
def test_recorded_paths_outside_the_catalog_are_refused(catalog, path):
    _small(catalog)
    _tamper(catalog, f"UPDATE kernel_files SET path = '{path}'")
    assert_one_line_error(_cli(catalog, "sql", "SELECT count(*) FROM kernels"), "nothing was read")


def test_a_recorded_file_that_links_outside_is_refused(catalog, tmp_path):
    _small(catalog)
    (relative,) = [r["path"] for r in catalog.sql("SELECT path FROM kernel_files").to_pylist()]
    outside = tmp_path / "elsewhere.parquet"
    os.replace(catalog.root / relative, outside)
    (catalog.root / relative).symlink_to(outside)
    assert_one_line_error(_cli(catalog, "sql", "SELECT count(*) FROM kernels"), "resolves outside")


def test_queries_read_only_the_catalog_unless_the_user_allows_a_file(catalog, secret):
    _small(catalog)
    query = f"SELECT content FROM read_text('{secret}')"
    refused = _cli(catalog, "sql", query)
    assert_one_line_error(refused, "disabled by configuration")
    assert SECRET not in refused.stdout
    assert_one_line_error(_cli(catalog, "sql", f"COPY (SELECT 1) TO '{secret.parent / 'out.csv'}'"), "SQL error")
    assert_one_line_error(_cli(catalog, "sql", "SET enable_external_access = true"), "SQL error")
    allowed = _cli(catalog, "sql", query, "--allow", str(secret), "--format", "csv")
    assert allowed.returncode == 0 and SECRET in allowed.stdout


def test_a_query_larger_than_memory_spills_outside_the_catalog_and_the_working_directory(catalog, tmp_path,
                                                                                          monkeypatch):
    """DuckDB's own spill folder is `.tmp` in the working directory (an in-memory database) or
    beside the catalog file (which may be someone else's, or read-only): ours is a private folder
    under the system's temporary folder, removed when the connection closes."""
    import tempfile

    _small(catalog)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    before = _tree(catalog.root)
    private = os.path.join(tempfile.gettempdir(), "kernel-catalog-spill-")
    with catalog.reader() as reader:               # a file connection: not beside the catalog file
        assert reader.execute("SELECT current_setting('temp_directory')").fetchone()[0].startswith(private)
    con = catalog.data_connection(config={"memory_limit": "30MB", "threads": 2})
    spill = con.execute("SELECT current_setting('temp_directory')").fetchone()[0]
    assert spill.startswith(private)
    assert con.execute("SELECT count(*) FROM (SELECT hash(i) AS h FROM range(6000000) t(i) ORDER BY h)"
                       ).fetchone()[0] == 6_000_000
    assert os.path.isdir(spill)                    # it did spill, there
    assert list(cwd.iterdir()) == [] and _tree(catalog.root) == before
    con.close()
    assert not os.path.exists(spill)


# -- 6. verify ---------------------------------------------------------------------------------

def test_verify_finds_each_kind_of_damage_and_repairs_only_its_own(catalog, tmp_path):
    _small(catalog)
    assert _cli(catalog, "verify").returncode == 0
    (relative,) = [r["path"] for r in catalog.sql("SELECT path FROM kernel_files").to_pylist()]
    data = bytearray((catalog.root / relative).read_bytes())
    data[len(data) // 2] ^= 0x01                                    # one bit, same size
    (catalog.root / relative).write_bytes(bytes(data))
    (catalog.root / STRAY).parent.mkdir(parents=True)
    (catalog.root / STRAY).write_bytes(b"ours")
    (catalog.root / "results").mkdir()
    (catalog.root / "results" / "notes.txt").write_text("a user's")
    result = _cli(catalog, "verify")
    assert result.returncode == 1
    assert "content differs from the SHA-256" in result.stdout
    assert f"stray (ours, `catalog verify --repair` removes it): {STRAY}" in result.stdout
    assert "foreign file in the data folders (not the catalog's; left alone): results/notes.txt" in result.stdout
    repaired = _cli(catalog, "verify", "--repair")
    assert f"removed: {STRAY}" in repaired.stdout and repaired.returncode == 1   # the damage stays reported
    assert not (catalog.root / STRAY).exists() and (catalog.root / "results" / "notes.txt").exists()
    (catalog.root / relative).unlink()
    assert "recorded, missing" in _cli(catalog, "verify").stdout
