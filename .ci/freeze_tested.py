"""Print constraints/tested.txt for the venv this runs in: the exact version of every
distribution that kernel-catalog[test] reaches (pyproject.toml's requirements, theirs, and so
on, extras and markers followed), plus pip and setuptools; kernel-catalog itself and anything
installed by hand (ruff, say) are left out.

Used by `make constraints` (see the header it writes); run it with the venv's own Python:
    .venv/bin/python .ci/freeze_tested.py > constraints/tested.txt
"""
from __future__ import annotations

import importlib.metadata as md
import platform
import sys
from pathlib import Path

from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT, ROOT_EXTRAS = "kernel-catalog", {"test"}
ALWAYS = ("pip", "setuptools")          # the Makefile upgrades pip; setuptools is the build backend

HEADER = """\
# Exact versions `make test` installs (pip install -c constraints/tested.txt -e '.[test]'):
# what the full suite last passed with. Written by .ci/freeze_tested.py; do not edit by hand.
# Made on Python {python}, {system} {machine} (CI's machine kind; pip there caps torch<=2.14.1
# through /etc/xdg/pip). Another Python or platform may need `make test CONSTRAINTS=`.
#
# Refresh (after changing dependencies in pyproject.toml, or to move to newer releases):
#     make constraints
# builds a fresh venv (.venv-refresh) with the newest releases pyproject.toml allows (no
# constraints), runs the full suite there and, only if it passes, rewrites this file from that
# venv; then commit this file together with the dependency change. `make test` reinstalls when
# this file changes. A package not listed here (a new dependency before a refresh) installs
# unpinned.
"""


def root_requirements() -> list[tuple[str, set[str]]]:
    """kernel-catalog[test]'s requirements as pyproject.toml states them now (the installed
    metadata of an editable install can be older), extras followed within the project."""
    try:
        import tomllib
    except ImportError:     # Python 3.10: the installed metadata
        return [(ROOT, set(ROOT_EXTRAS))]
    project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
    lines, extras, done = list(project["dependencies"]), list(ROOT_EXTRAS), set()
    while extras:
        extra = extras.pop()
        done.add(extra)
        for line in project["optional-dependencies"][extra]:
            req = Requirement(line)
            if canonicalize_name(req.name) == ROOT:
                extras += [e for e in req.extras if e not in done]
            else:
                lines.append(line)
    return [(req.name, set(req.extras)) for req in map(Requirement, lines)
            if req.marker is None or req.marker.evaluate({"extra": ""})]


def reached() -> dict[str, md.Distribution]:
    found: dict[str, tuple[md.Distribution, set[str]]] = {}
    todo = root_requirements()
    while todo:
        name, extras = todo.pop()
        key = canonicalize_name(name)
        if key in found and extras <= found[key][1]:
            continue
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            sys.exit(f"freeze_tested: {name} is required but not installed in {sys.prefix}")
        done = found[key][1] if key in found else set()
        found[key] = (dist, done | extras)
        for line in dist.requires or []:
            req = Requirement(line)
            marker: Marker | None = req.marker
            if marker is None or any(marker.evaluate({"extra": e}) for e in extras | {""}):
                todo.append((req.name, set(req.extras)))
    for name in ALWAYS:
        found.setdefault(name, (md.distribution(name), set()))
    found.pop(canonicalize_name(ROOT), None)
    return {key: dist for key, (dist, _) in found.items()}


def main() -> None:
    print(HEADER.format(python=platform.python_version(), system=platform.system(),
                        machine=platform.machine()))
    for key, dist in sorted(reached().items()):
        print(f"{dist.metadata['Name']}=={dist.version}")


if __name__ == "__main__":
    main()
