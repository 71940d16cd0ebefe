"""Lowest supported versions: does kernel-catalog work with every dependency at the floor that
pyproject.toml declares? Not part of `make test` (it builds its own venv, ~6 GB with the CUDA
build of torch); run it after changing a floor, or before a release:

    make floors                        # = python3 .ci/check_floors.py
    python3 .ci/check_floors.py --python python3.10     # the oldest Python requires-python allows
    python3 .ci/check_floors.py --skip torch            # leave a package to the resolver

What it does:
1. Writes constraints/lowest.txt from pyproject.toml: `name==floor` for every requirement of
   [project] dependencies and of the `cluster` and `test` extras (the `>=` bound, or the lowest
   release above it where the floor was never released for the venv's Python: `pip index
   versions` tells; a requirement with no lower bound is reported and left to the resolver).
   Dependencies of dependencies are not pinned: the resolver picks what fits the floors (pip has
   no --resolution=lowest; this is uv's "lowest-direct"). Floors must agree with each other: one
   below what another floor requires (click 8.2 beside huggingface_hub 1.20, which needs click
   >= 8.4) fails the install step, with the resolver's explanation. `git diff
   constraints/lowest.txt` shows when floors moved.
2. Builds a fresh venv (a temporary folder, or --venv) and runs
   `pip install '.[test]' -c constraints/lowest.txt` (a regular install from this checkout,
   not editable), then lists the versions it got.
3. Smoke, from an empty folder: imports every kernel_catalog module and every declared
   dependency; the CLI on a random-init timm model and a kernel bank (adapters, ingest, models,
   sql, embed, cluster, report, figure, export, verify); the Python API (sql, the SQLAlchemy
   engine).
4. A part of the suite that exercises every floor against that install (--tests, default below,
   ~7 min on 2 cores; --tests '' for none).

Exit status 0 when every step passed; otherwise 1, naming the step. On a failure, raise the
floor in pyproject.toml to the lowest release that passes and run it again.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

try:
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name
    from packaging.version import Version
except ImportError:     # pip's own copy (every Python with pip has one)
    from pip._vendor.packaging.requirements import Requirement
    from pip._vendor.packaging.utils import canonicalize_name
    from pip._vendor.packaging.version import Version

try:
    import tomllib
except ImportError:     # Python 3.10 on the host: pass the old Python with --python instead
    sys.exit("check_floors: run this script with Python >= 3.11 (tomllib); test an older Python "
             "with --python, e.g. python3 .ci/check_floors.py --python python3.10")

REPO = Path(__file__).resolve().parents[1]
LOWEST = REPO / "constraints" / "lowest.txt"
EXTRAS = ("cluster", "test")
SELF = "kernel-catalog"
DEFAULT_TESTS = ("tests/test_store.py tests/test_package.py tests/test_readme.py tests/test_migrations.py "
                 "tests/test_adapter_kernelbank.py tests/test_adapter_onnx.py tests/test_adapter_statedict.py "
                 "tests/test_adapter_tflite.py tests/test_adapter_timm.py tests/test_untrusted_models.py "
                 "tests/test_hub_download.py tests/test_autoencoder.py tests/test_clustering.py "
                 "tests/test_object_storage.py tests/test_ray.py tests/test_hub_repos.py tests/test_conformance.py "
                 "tests/test_gallery.py "     # skips without Debian's chromium, as in make test
                 # asserts the bundled curl's wording "Could not connect"; pyarrow < 22 says "Couldn't
                 # connect" (same one-line error, catalog unchanged)
                 "--deselect tests/test_object_storage.py::test_unreachable_server_is_one_line_and_changes_nothing")
# import name of each distribution whose module is named differently
IMPORT_NAMES = {"scikit-learn": "sklearn", "duckdb-engine": "duckdb_engine", "huggingface-hub": "huggingface_hub",
                "import-linter": "importlinter", "ai-edge-litert": "ai_edge_litert", "ray": "ray.data",
                "moto": "moto.server", "playwright": "playwright.sync_api"}
HEADER = """\
# Lowest supported versions: every requirement of pyproject.toml (dependencies, extras
# {extras}) at its declared floor, or at the lowest release above it where the floor itself
# has none for this Python (written for Python {python}). Written by .ci/check_floors.py from
# pyproject.toml; do not edit by hand (change the floor in pyproject.toml, run `make floors`).
# Not used by `make test`.
"""


def canonical(name: str) -> str:
    return canonicalize_name(name)


def requirements(pyproject: dict) -> list[Requirement]:
    project = pyproject["project"]
    lines = list(project["dependencies"])
    for extra in EXTRAS:
        lines += project["optional-dependencies"][extra]
    return [req for req in map(Requirement, lines) if canonical(req.name) != SELF]


def declared_floors(reqs: list[Requirement], skip: set[str]) -> tuple[dict[str, Requirement], list[str]]:
    """{distribution: requirement with a lower bound} and notes on those left to the resolver."""
    kept: dict[str, Requirement] = {}
    notes: list[str] = []
    for req in reqs:
        name = canonical(req.name)
        if name in skip:
            notes.append(f"{name}: skipped (--skip), left to the resolver")
        elif not any(spec.operator in (">=", "==", "~=") for spec in req.specifier):
            notes.append(f"{name}: no lower bound declared ({req}), left to the resolver")
        elif name in kept:      # named twice (a runtime dependency and an extra): both ranges apply
            kept[name].specifier &= req.specifier
        else:
            kept[name] = req
    return kept, notes


def floor_of(req: Requirement) -> Version:
    return max(Version(spec.version) for spec in req.specifier if spec.operator in (">=", "==", "~="))


def lowest_release(py: Path, req: Requirement, env: dict) -> Version | None:
    """The lowest release on the index (for the venv's Python and platform) in the declared range
    at or above the floor: `>=1.0` means 1.0.1 when 1.0 was never released for this Python."""
    out = subprocess.run([str(py), "-m", "pip", "index", "versions", req.name], capture_output=True,
                         text=True, env=env, check=False).stdout
    match = re.search(r"Available versions: (.*)", out)
    versions = [Version(v.strip()) for v in match.group(1).split(",")] if match else []
    fits = [v for v in versions if v in req.specifier and v >= floor_of(req)]
    return min(fits) if fits else None


SMOKE_IMPORTS = textwrap.dedent("""\
    import importlib, pkgutil, sys
    import kernel_catalog as kc
    for mod in pkgutil.walk_packages(kc.__path__, "kernel_catalog."):
        importlib.import_module(mod.name)
    for name in sys.argv[1:]:
        importlib.import_module(name)
    print("imports: every kernel_catalog module and", len(sys.argv) - 1, "dependencies")
    import numpy as np
    rng = np.random.default_rng(0)
    np.savez("bank.npz", weights=rng.standard_normal((64, 5, 5)).astype("float32"))
    """)
SMOKE_CLI = [
    ["--version"],
    ["adapters"],
    ["ingest", "mixnet_s", "--random-init"],                 # timm + torch, no download
    ["ingest", "bank.npz", "--name", "smoke-bank"],          # numpy
    ["models"],
    ["sql", "SELECT model, kh, count(*) AS n FROM kernels GROUP BY ALL ORDER BY model, kh"],
    ["embed", "--run", "ae3", "--where", "kh = 3 AND kw = 3", "--epochs", "2"],     # torch
    ["cluster", "--run", "ae3-k4", "--from", "ae3", "--k", "4"],                    # scikit-learn
    ["report", "--run", "ae3-k4"],
    ["figure", "clusters", "--run", "ae3-k4", "-o", "clusters.png"],                 # matplotlib
    ["export", "--where", "kh = 5 AND kw = 5", "-o", "k5.npz"],
    ["sql", "SELECT count(*) AS n FROM kernels", "-o", "n.parquet"],                # pyarrow
    ["verify"],
]
SMOKE_API = textwrap.dedent("""\
    import numpy as np, sqlalchemy
    import kernel_catalog as kc
    assert np.load("k5.npz")["weights"].shape[1:] == (5, 5)
    cat = kc.open("smoke-catalog")
    print(cat.sql("SELECT kh, count(*) AS n FROM kernels GROUP BY ALL ORDER BY kh").to_pylist())
    engine = cat.sqlalchemy_engine()                          # sqlalchemy + duckdb-engine
    try:
        with engine.connect() as con:
            print("sqlalchemy engine: kernels =", con.execute(sqlalchemy.text("SELECT count(*) FROM kernels")).scalar())
    finally:
        engine.dispose()
    """)


class Failed(Exception):
    pass


def run(step: str, cmd: list[str], *, cwd: Path, env: dict | None = None, timeout: float = 1800) -> str:
    start = time.monotonic()
    print(f"--- {step}: {' '.join(cmd)}", flush=True)
    proc = subprocess.run(cmd, check=False, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    out = "".join(line for line in (proc.stdout + proc.stderr).splitlines(keepends=True)
                  if "is ignored: it is neither a file nor a directory" not in line)   # pip: local mirror
    print(textwrap.indent(out[-4000:].rstrip(), "    ") if out.strip() else "    (no output)")
    print(f"    [{step}: exit {proc.returncode}, {time.monotonic() - start:.0f} s]", flush=True)
    if proc.returncode != 0:
        raise Failed(step)
    return proc.stdout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--python", default=sys.executable, help="interpreter for the venv (default: this one)")
    parser.add_argument("--venv", type=Path, help="build the venv here and keep it (default: a temporary folder)")
    parser.add_argument("--skip", action="append", default=[], metavar="DIST",
                        help="leave DIST unpinned (e.g. torch where its floor cannot be installed)")
    parser.add_argument("--tests", default=DEFAULT_TESTS, help="pytest arguments ('' for none)")
    args = parser.parse_args()

    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    reqs, notes = declared_floors(requirements(pyproject), {canonical(n) for n in args.skip})
    print(f"pyproject.toml: {len(reqs)} requirements with a floor; requires-python "
          f"{pyproject['project']['requires-python']}")

    work = Path(tempfile.mkdtemp(prefix="kc-floors-"))
    venv = args.venv or work / "venv"
    py = venv / "bin" / "python"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(work / "hf"), "TORCH_HOME": str(work / "torch"),
           "PIP_DISABLE_PIP_VERSION_CHECK": "1", "MPLBACKEND": "Agg"}
    started = time.monotonic()
    try:
        if not py.exists():
            run("venv", [args.python, "-m", "venv", str(venv)], cwd=work)
            run("pip", [str(py), "-m", "pip", "install", "-q", "--upgrade", "pip"], cwd=work, env=env)
        python_version = subprocess.run([str(py), "-c", "import platform; print(platform.python_version())"],
                                        capture_output=True, text=True, check=True).stdout.strip()
        pins: dict[str, Version] = {}
        for name, req in sorted(reqs.items()):
            low = lowest_release(py, req, env)
            if low is None:
                print(f"  {name}: no release in {req.specifier} on the index for Python {python_version}")
                raise Failed("floors")
            if low != floor_of(req):
                notes.append(f"{name}: declared floor {floor_of(req)} has no release for Python "
                             f"{python_version} here; its lowest is {low}")
            pins[name] = low
        LOWEST.parent.mkdir(exist_ok=True)
        LOWEST.write_text(HEADER.format(extras=", ".join(EXTRAS), python=python_version)
                          + "".join(f"{n}=={v}\n" for n, v in sorted(pins.items())))
        print(f"{LOWEST.relative_to(REPO)}: {len(pins)} pins")
        for note in notes:
            print("  note:", note)
        if args.venv is not None and (venv / "bin" / "catalog").exists():     # reused: this checkout again
            run("uninstall", [str(py), "-m", "pip", "uninstall", "-q", "-y", SELF], cwd=work, env=env)
        t0 = time.monotonic()
        install = [str(py), "-m", "pip", "install", f"{REPO}[test]", "-c", str(LOWEST)]
        try:
            run("install", [*install[:4], "-q", *install[4:]], cwd=work, env=env)
        except Failed:      # -q hides why: the resolver's explanation (floors that contradict each other)
            why = subprocess.run([*install, "--dry-run"], cwd=work, env=env, capture_output=True, text=True,
                                 check=False).stdout
            print("\n".join("    " + line for line in why.splitlines() if "depends on" in line or "conflict" in line))
            raise
        print(f"    install took {time.monotonic() - t0:.0f} s")
        frozen = run("freeze", [str(py), "-m", "pip", "freeze", "--all"], cwd=work, env=env)
        (work / "floors-freeze.txt").write_text(frozen)
        got = {canonical(line.split("==")[0]): Version(line.split("==")[1])
               for line in frozen.splitlines() if "==" in line}
        wrong = {n: str(got.get(n)) for n, v in pins.items() if got.get(n) != v}
        if wrong:
            print("    not at the floor:", wrong)
            raise Failed("install")
        print("    at the floor:", ", ".join(f"{n}=={v}" for n, v in sorted(pins.items())))
        print(f"    chosen by the resolver: torchvision {got.get('torchvision')}, protobuf {got.get('protobuf')}; "
              f"Python {python_version}; full list: {work / 'floors-freeze.txt'}")
        smoke = work / "smoke"
        smoke.mkdir()
        modules = [IMPORT_NAMES.get(n, n.replace("-", "_")) for n in sorted(pins)]
        run("smoke: imports", [str(py), "-c", SMOKE_IMPORTS, *modules], cwd=smoke, env=env)
        catalog = venv / "bin" / "catalog"
        for cli_args in SMOKE_CLI:
            run(f"smoke: catalog {cli_args[0]}", [str(catalog), "--catalog", "smoke-catalog", *cli_args], cwd=smoke, env=env)
        run("smoke: Python API", [str(py), "-c", SMOKE_API], cwd=smoke, env=env)
        if args.tests.strip():
            run("tests", [str(py), "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *args.tests.split()],
                cwd=REPO, env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}, timeout=3600)
    except Failed as failure:
        print(f"FLOORS FAIL at step '{failure}' after {time.monotonic() - started:.0f} s "
              f"(venv: {venv}, kept)", flush=True)
        return 1
    except subprocess.TimeoutExpired as timeout:
        print(f"FLOORS FAIL: timed out: {timeout.cmd}", flush=True)
        return 1
    print(f"FLOORS OK: {len(pins)} floors from pyproject.toml installed and passed the smoke"
          f"{' and tests' if args.tests.strip() else ''} in {time.monotonic() - started:.0f} s")
    if args.venv is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
