"""The installed package: one import name, the data flow enforced, no global state on import."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel `pip wheel --no-deps .` builds from this checkout."""
    out = tmp_path_factory.mktemp("wheel")
    # --no-build-isolation: the build backend (setuptools>=77) comes with the test extra, no index needed
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(out), str(REPO)], check=True, capture_output=True, text=True,
                   cwd=tmp_path_factory.mktemp("build-cwd"))
    (path,) = out.glob("kernel_catalog-*.whl")
    return path


def test_wheel_holds_only_the_kernel_catalog_namespace(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/")[0] for name in names}
    dist_info = [t for t in top if t.endswith(".dist-info")]
    assert top - set(dist_info) == {"kernel_catalog"}, top
    assert len(dist_info) == 1
    # the migrations ship as data, the CLI and the adapters inside the namespace
    sql = [n for n in names if n.startswith("kernel_catalog/migrations/") and n.endswith(".sql")]
    assert len(sql) == len(list((REPO / "migrations").glob("*.sql"))) >= 4
    for module in ("kernel_catalog/cli.py", "kernel_catalog/adapters/base.py",
                   "kernel_catalog/adapters/timm/__init__.py", "kernel_catalog/store/__init__.py"):
        assert module in names
    entry_points = zipfile.ZipFile(wheel).read(f"{dist_info[0]}/entry_points.txt").decode()
    assert "[kernel_catalog.adapters]" in entry_points and "[catalog.adapters]" not in entry_points
    assert "catalog = kernel_catalog.cli:main" in entry_points


def test_data_flows_one_way(wheel, tmp_path):
    """import-linter's layers contract (pyproject.toml) over the wheel's modules: no layer imports a
    higher one, hence no cycles between subpackages (the editable install maps three folders into
    the namespace, which import-linter's file walk does not follow, so it reads the unpacked wheel)."""
    zipfile.ZipFile(wheel).extractall(tmp_path / "site")
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
    result = subprocess.run([sys.executable, "-c", "from importlinter.cli import lint_imports_command; "
                             "lint_imports_command()"], cwd=REPO, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "kept, 0 broken" in result.stdout and " 0 kept" not in result.stdout


def test_private_modules_are_not_reached_across_subpackages():
    """timm's discipline: a `_module` is used inside its own subpackage (tests may look inside)."""
    import re

    offenders = []
    for path in list((REPO / "catalog").rglob("*.py")) + list((REPO / "adapters").rglob("*.py")) + [REPO / "cli.py"]:
        if path.is_symlink():
            continue
        own = _package_of(path)
        text = path.read_text()
        found = [m for m in re.finditer(r"^\s*from (kernel_catalog[\w.]*)\._(\w+) import", text, re.M)]
        found += [m for m in re.finditer(r"^\s*from (kernel_catalog[\w.]*) import _(?!_)(\w+)", text, re.M)]
        for match in found:
            if match.group(1) != own and match.group(2) != "version":
                offenders.append(f"{path.relative_to(REPO)}: {match.group(0).strip()}")
    assert not offenders, offenders


def _package_of(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts[:-1])
    head = {"catalog": ["kernel_catalog"], "adapters": ["kernel_catalog", "adapters"]}.get(parts[0] if parts else "", [])
    return ".".join(head + parts[1:]) if parts else "kernel_catalog"


IMPORT_EVERYTHING = """
import json, sys, warnings
import matplotlib, torch
state = lambda: {"backend": matplotlib.get_backend(), "threads": torch.get_num_threads(),
                 "interop": torch.get_num_interop_threads(), "filters": len(warnings.filters),
                 "deterministic": torch.are_deterministic_algorithms_enabled(),
                 "default_dtype": str(torch.get_default_dtype())}
before = state()
import pkgutil, importlib, kernel_catalog, kernel_catalog.adapters
for package in (kernel_catalog, kernel_catalog.adapters):   # adapters/ is mapped from its own folder
    for m in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        importlib.import_module(m.name)
kernel_catalog.open("unused")
print(json.dumps([before, state()]))
"""


def test_importing_the_library_changes_no_global_state(tmp_path):
    env = {**os.environ, "MPLBACKEND": "svg"}   # as a notebook would have set its own backend
    result = subprocess.run([sys.executable, "-c", IMPORT_EVERYTHING], capture_output=True, text=True,
                            env=env, cwd=tmp_path, check=True)
    before, after = json.loads(result.stdout.strip().splitlines()[-1])
    assert after == before
    assert before["backend"] == "svg"


def test_import_is_light_and_the_api_is_listed():
    code = ("import sys, kernel_catalog as kc; print(sorted(set(sys.modules) & {'torch', 'matplotlib', 'timm', "
            "'sklearn'})); print(kc.__all__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.splitlines()
    assert out[0] == "[]"   # `import kernel_catalog` loads no heavy stage
    public = eval(out[1])
    for name in ("open", "Catalog", "IngestOptions", "CatalogError", "EmbedParams", "ClusterParams"):
        assert name in public
    import kernel_catalog as kc

    for name in kc.__all__:
        assert getattr(kc, name) is not None
