"""The static gallery: built from a real catalog (trained ONNX kernels, embedded and clustered),
then every page loaded from file:// in headless Chromium: no console errors, every image
decoded (naturalWidth > 0); one screenshot is kept. Plus: atomic replace, refusals, determinism."""
from __future__ import annotations

import os
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest

from kernel_catalog.analysis.cluster import cluster_run
from kernel_catalog.analysis.embed import embed
from kernel_catalog.analysis.params import ClusterParams, EmbedParams
from kernel_catalog.errors import CatalogError
from kernel_catalog.store.targets import OUTPUT_MARKER
from kernel_catalog.report.gallery import write_gallery
from kernel_catalog.report.report import report
from kernel_catalog.ingest import ingest
from kernel_catalog.store import Catalog

from .conftest import CLS_ONNX, assert_one_line_error, run_cli_in_process as cli, skip_missing_tool

MODEL = "ch_ppocr_mobile_v2.0_cls_infer"
SCREENSHOT_COPY = Path(__file__).parent / "output" / "gallery.png"     # kept for people (gitignored)
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def chromium_path() -> str | None:
    for candidate in (os.environ.get("KERNEL_CATALOG_CHROMIUM"), "chromium", "chromium-browser"):
        found = candidate and shutil.which(candidate)
        if found:
            return found
    return None


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gallery")
    catalog = Catalog(folder / "catalog")
    ingest(catalog, str(CLS_ONNX))
    embed(catalog, "ae", "kh = 5", EmbedParams(batch_size=256, epochs=20), progress=False)
    cluster_run(catalog, "r", "ae", ClusterParams(k=4))
    summary = write_gallery(catalog, "r", folder / "site")
    return catalog, folder / "site", summary


class _Links(HTMLParser):
    """Collects links and images, and checks that non-void elements are closed in order."""

    VOID = {"meta", "link", "img", "br", "hr", "input"}

    def __init__(self):
        super().__init__()
        self.links, self.images, self.stack, self.errors = [], [], [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "a" and "href" in attrs:
            self.links.append(attrs["href"])
        if tag == "img":
            self.images.append(attrs.get("src"))
            if not attrs.get("alt"):
                self.errors.append("img without alt")
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack.pop() != tag:
            self.errors.append(f"unbalanced </{tag}>")


def test_site_layout_and_relative_links(site):
    catalog, root, summary = site
    pages = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.html"))
    assert pages == ["clusters/5x5-c0.html", "clusters/5x5-c1.html", "clusters/5x5-c2.html",
                     "clusters/5x5-c3.html", "index.html", f"models/{MODEL}.html"]
    assert summary["pages"] == len(pages) and summary["images"] == len(list((root / "img").glob("*.png")))
    for page in root.rglob("*.html"):
        text = page.read_text(encoding="utf-8")
        assert text.startswith("<!DOCTYPE html>\n<html lang=\"en\">") and '<meta charset="utf-8">' in text
        parser = _Links()
        parser.feed(text)
        assert not parser.errors and not parser.stack, (page, parser.errors, parser.stack)
        for target in parser.links + parser.images:
            assert "://" not in target and not target.startswith("/"), target       # works from file://
            assert (page.parent / target).resolve().is_file(), f"{page.name} -> {target}"
    index = (root / "index.html").read_text()
    assert MODEL in index and ">ae<" in index and "embed" in index and "cluster" in index   # models and runs
    cluster = (root / "clusters" / "5x5-c0.html").read_text()
    assert all(word in cluster for word in ("template", "score", "share", "medoid", "random sample, seed 0"))
    assert "margin" in cluster and ">margin</th>" in index and "a|b" in index      # ambiguity is said
    shares = {(r["size"], r["cluster"]): r["clear_share"] for r in report(catalog, "r", "cluster").to_pylist()}
    assert f"clear calls (its kernels whose own name wins by 0.05)</td><td>{100 * shares['5x5', 0]:.1f} %" in cluster


def test_every_page_renders_in_headless_chromium(site, tmp_path):
    executable = chromium_path()
    if executable is None:
        skip_missing_tool("Chromium is not installed (Debian: apt-get install -y chromium); the browser check needs it")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is missing: pip install -e '.[test]' (it drives the system Chromium)")
    _, root, _ = site
    pages = sorted(root.rglob("*.html"))
    problems = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            messages = []
            page.on("console", lambda m: messages.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
            page.on("pageerror", lambda e: messages.append(f"page error: {e}"))
            page.on("requestfailed", lambda r: messages.append(f"request failed: {r.url}"))
            for path in pages:
                messages.clear()
                page.goto(path.as_uri(), wait_until="load")
                images = page.evaluate(
                    "Array.from(document.images).map(i => [i.getAttribute('src'), i.complete, i.naturalWidth])")
                broken = [src for src, complete, width in images if not complete or width == 0]
                if messages or broken or not images:
                    problems.append((path.relative_to(root).as_posix(), messages[:], broken, len(images)))
            page.goto((root / "index.html").as_uri(), wait_until="load")
            shot = tmp_path / "gallery.png"
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert not problems, problems
    assert shot.read_bytes().startswith(b"\x89PNG") and shot.stat().st_size > 10_000
    SCREENSHOT_COPY.parent.mkdir(exist_ok=True)
    shutil.copyfile(shot, SCREENSHOT_COPY)
    print(f"\ngallery screenshot: {shot} (copied to {SCREENSHOT_COPY})")


def test_replace_refusals_and_determinism(site, tmp_path, monkeypatch):
    catalog, root, _ = site
    target = tmp_path / "site"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    with pytest.raises(CatalogError, match="not empty; pass --force"):
        write_gallery(catalog, "r", target)
    assert [p.name for p in target.iterdir()] == ["notes.txt"]
    monkeypatch.setenv("KERNEL_CATALOG", str(catalog.root))
    assert_one_line_error(cli("gallery", "--run", "nope", "-o", str(tmp_path / "other")), "unknown run")
    assert_one_line_error(cli("gallery", "--run", "ae", "-o", str(tmp_path / "other")), "cluster run")
    assert_one_line_error(cli("gallery", "--run", "r", "-o", str(target)), "--force")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["site"]           # no staging folder left behind
    # --force replaces only a folder this tool wrote: not the user's, not the working directory, not the catalog
    with pytest.raises(CatalogError, match="not written by kernel-catalog"):
        write_gallery(catalog, "r", target, force=True)
    assert [p.name for p in target.iterdir()] == ["notes.txt"]
    assert_one_line_error(cli("gallery", "--run", "r", "-o", ".", "--force"), "working directory")
    assert_one_line_error(cli("gallery", "--run", "r", "-o", str(catalog.root), "--force"), "catalog")
    (catalog.root.parent / OUTPUT_MARKER).write_text("a marker copied where it does not belong")
    assert_one_line_error(cli("gallery", "--run", "r", "-o", str(catalog.root.parent), "--force"),
                          "holding a kernel catalog")
    assert catalog.sql("SELECT count(*) AS n FROM kernels").to_pylist() == [{"n": 864}]
    (target / "notes.txt").unlink()
    write_gallery(catalog, "r", target)
    (target / "stale.txt").write_text("left by an earlier gallery")
    write_gallery(catalog, "r", target, force=True)        # its own output: replaced whole
    assert not (target / "stale.txt").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["site"]
    first = {p.relative_to(root): p.read_bytes() for p in root.rglob("*") if p.is_file()}
    second = {p.relative_to(target): p.read_bytes() for p in target.rglob("*") if p.is_file()}
    assert first.keys() == second.keys()
    assert [name for name in first if first[name] != second[name]] == []     # same input, same bytes
