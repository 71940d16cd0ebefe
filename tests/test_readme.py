"""The README and docs/*.md cannot rot: every Python block runs, every relative link resolves,
the README stays short and links every page."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
PAGES = [README, *sorted(DOCS.glob("*.md"))]
FIXTURES = ROOT / "tests" / "fixtures"
README_MAX_LINES = 250

FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```[ \t]*$", re.M | re.S)


def _name(page: Path) -> str:
    return page.relative_to(ROOT).as_posix()


def _blocks(page: Path) -> list[tuple[str, str]]:
    """(info string, code) of every fenced block of a page."""
    return [(info.strip(), code) for info, code in FENCE.findall(page.read_text())]


# Every block fenced exactly ```python runs; a block needs no network and no GPU (the test runs
# offline, HF_HUB_OFFLINE=1, in an empty folder holding a copy of tests/fixtures/ as the
# repository root would: write such examples against those files, as README's tour does).
BLOCKS = [(f"{_name(page)}:{i}", code) for page in PAGES
          for i, code in enumerate(code for info, code in _blocks(page) if info == "python")]


def test_the_docs_have_python_blocks():
    names = {name.split(":")[0] for name, _ in BLOCKS}
    assert "README.md" in names and len(names) >= 4, names


def test_no_python_block_escapes_the_runner():
    """A fence like ```py or ```python title=... would be skipped silently: only ```python runs."""
    odd = [(_name(page), info) for page in PAGES for info, _ in _blocks(page)
           if info.lower().startswith("py") and info != "python"]
    assert not odd, f"use a bare ```python fence (every such block must run offline): {odd}"


@pytest.mark.parametrize("name,code", BLOCKS, ids=[name for name, _ in BLOCKS])
def test_python_block_runs(name, code, tmp_path):
    """Each block in a fresh interpreter, in an empty folder (the default catalog lands there) that
    holds tests/fixtures/ as the repository root does."""
    shutil.copytree(FIXTURES, tmp_path / "tests" / "fixtures")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_ENDPOINT": "http://127.0.0.1:9"}
    env.pop("KERNEL_CATALOG", None)
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"{name}:\n{code}\n{result.stderr[-3000:]}"


def test_the_readme_is_short():
    lines = README.read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; move detail to docs/"


def test_each_page_says_what_it_is_for():
    """A title, then one line saying what the page is for."""
    for page in PAGES[1:]:
        lines = page.read_text().splitlines()
        assert lines[0].startswith("# ") and lines[1] == "" and lines[2].strip() and lines[3] == "", (
            f"{_name(page)}: start with '# Title', a blank line, one line saying what the page is for, a blank line")


def test_the_readme_links_every_page():
    linked = {(README.parent / target).resolve() for target, _ in _links(README)}
    missing = [_name(page) for page in PAGES[1:] if page.resolve() not in linked]
    assert not missing, f"README.md does not link {missing}"


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _links(page: Path) -> list[tuple[str, str]]:
    """(path, anchor) of every relative link and image of a page, outside code."""
    text = FENCE.sub("", page.read_text())
    text = re.sub(r"^(?: {4}|\t).*$", "", text, flags=re.M)     # indented code blocks
    text = re.sub(r"`[^`\n]*`", "", text)                       # inline code
    found = []
    for target in re.findall(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)", text):
        if re.match(r"[a-z][a-z0-9+.-]*:", target, re.I):      # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        found.append((path, anchor))
    return found


def test_every_relative_link_resolves():
    broken = []
    for page in PAGES:
        for path, anchor in _links(page):
            target = (page.parent / path).resolve() if path else page
            if not target.exists():
                broken.append(f"{_name(page)}: {path} (no such file)")
            elif anchor and target.suffix == ".md":
                headings = re.findall(r"^#+ (.+)$", FENCE.sub("", target.read_text()), re.M)
                if anchor not in {_slug(h) for h in headings}:
                    broken.append(f"{_name(page)}: {path}#{anchor} (no such heading)")
    assert not broken, "\n".join(broken)
