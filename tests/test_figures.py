"""Figures: every kind in PNG/PDF/SVG, byte-identical for the same input, symmetric colour
scales, non-square kernels, seeded sampling beyond --limit, fixed label colours, and one-line
errors (through the CLI) that leave nothing under the target name."""
from __future__ import annotations

import numpy as np
import pytest
from matplotlib import colors as mcolors
from matplotlib.figure import Figure

from kernel_catalog.report import figures as fg
from kernel_catalog.report import _figures_data as data
from kernel_catalog.analysis.cluster import cluster_run
from kernel_catalog.analysis.embed import embed
from kernel_catalog.analysis.params import ClusterParams, EmbedParams
from kernel_catalog.errors import CatalogError
from kernel_catalog.ingest import ingest
from kernel_catalog.analysis.validation.planted import planted_bank
from kernel_catalog.store import Catalog

from .conftest import assert_one_line_error, run_cli_in_process as cli

MAGIC = {"png": b"\x89PNG\r\n\x1a\n", "pdf": b"%PDF-", "svg": b"<?xml"}


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A bank with 5x5 planted kernels (embedded and clustered as run 'r'), 1x7 bands and 9x1 columns."""
    folder = tmp_path_factory.mktemp("figures")
    catalog = Catalog(folder / "catalog")
    kernels, _ = planted_bank(40, 5, 5, snr=2.0, seed=0)
    rng = np.random.default_rng(0)
    np.savez(folder / "bank.npz", square=kernels.reshape(-1, 5, 5),
             band=rng.normal(size=(40, 1, 7)).astype(np.float32),
             column=rng.normal(size=(30, 9, 1)).astype(np.float32))
    ingest(catalog, str(folder / "bank.npz"))
    embed(catalog, "ae", "kh = 5", EmbedParams(batch_size=256, epochs=20), progress=False)
    cluster_run(catalog, "r", "ae", ClusterParams(k=4))
    return catalog, folder


def _draw(kind: str, catalog: Catalog, path) -> Figure:
    return {
        "kernels": lambda: fg.figure_kernels(catalog, path, sort_by="cluster", run="r", limit=100, seed=1),
        "clusters": lambda: fg.figure_clusters(catalog, "r", path),
        "layers": lambda: fg.figure_layers(catalog, "r", "bank", path),
        "classified": lambda: fg.figure_classified(catalog, "r", path),
    }[kind]()


@pytest.mark.parametrize("kind", ["kernels", "clusters", "layers", "classified"])
def test_every_format_by_extension_and_byte_identical(small, tmp_path, kind):
    catalog, _ = small
    for ext in ("png", "pdf", "svg"):
        first, second = tmp_path / f"a.{ext}", tmp_path / f"b.{ext}"
        _draw(kind, catalog, first)
        _draw(kind, catalog, second)
        content = first.read_bytes()
        assert content.startswith(MAGIC[ext]), (kind, ext)
        assert content == second.read_bytes(), f"{kind}.{ext} differs between two identical calls"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"{n}.{e}" for n in "ab" for e in MAGIC)
    svg = (tmp_path / "a.svg").read_text()
    assert "<dc:date>" not in svg and "Matplotlib v" not in svg          # no dates, no versions
    assert b"CreationDate" not in (tmp_path / "a.pdf").read_bytes()


def _images(fig: Figure):
    return [image for ax in fig.axes for image in ax.get_images()]


def test_colour_scale_is_symmetric_and_shared_or_per_kernel(small, tmp_path):
    catalog, _ = small
    sample = data.kernel_sample(catalog, "kh = 5", limit=50, seed=0)
    shared = fg.figure_kernels(catalog, tmp_path / "k.png", where="kh = 5", limit=50, seed=0)
    (image,) = _images(shared)
    assert image.get_cmap().name.startswith("RdBu_r")
    assert image.norm.vmin == -image.norm.vmax
    assert image.norm.vmax == pytest.approx(max(float(np.abs(k).max()) for k in sample.kernels))
    per_kernel = fg.figure_kernels(catalog, tmp_path / "k.png", where="kh = 5", limit=50, seed=0, scale="per-kernel",
                                   force=True)
    (image,) = _images(per_kernel)
    assert (image.norm.vmin, image.norm.vmax) == (-1.0, 1.0)
    values = np.asarray(image.get_array().filled(np.nan))
    assert np.nanmax(np.abs(values)) == pytest.approx(1.0)
    clusters = fg.figure_clusters(catalog, "r", tmp_path / "c.svg")
    norms = {(im.norm.vmin, im.norm.vmax) for im in _images(clusters)}
    assert len(norms) == 1 and all(lo == -hi for lo, hi in norms)       # one scale for the whole figure
    assert len(_images(clusters)) == 4


def _runs(mask: np.ndarray) -> set[int]:
    """Lengths of the runs of True in a 1-D mask."""
    edges = np.diff(np.concatenate([[0], mask.astype(int), [0]]))
    return set((np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)).tolist())


def test_non_square_kernels_keep_their_shape(small, tmp_path):
    band = np.arange(1, 8, dtype=np.float32).reshape(1, 7)
    column = -np.arange(1, 10, dtype=np.float32).reshape(9, 1)
    image, _ = fg.kernel_mosaic([band], ncols=1)
    assert image.shape == (3, 9) and np.array_equal(image[1, 1:8], band[0]) and np.isnan(image[0]).all()
    image, _ = fg.kernel_mosaic([band, column], ncols=2)          # cells 9x7, each kernel centred in its cell
    assert image.shape == (11, 17)
    assert np.array_equal(image[5, 1:8], band[0]) and np.isnan(image[4, 1:8]).all()
    assert np.array_equal(image[1:10, 12], column[:, 0]) and np.isnan(image[1:10, 11]).all()
    catalog, _ = small
    for where, shape in (("kh = 1", (1, 7)), ("kw = 1", (9, 1)), ("kh <> kw", None)):
        fig = fg.figure_kernels(catalog, tmp_path / "n.pdf", where=where, force=True)
        (shown,) = _images(fig)
        ax = shown.axes
        assert ax.get_aspect() == 1.0                                # square pixels: a 1x7 kernel is a band
        if shape:
            finite = np.isfinite(np.asarray(shown.get_array().filled(np.nan)))
            assert _runs(finite.any(axis=1)) == {shape[0]}           # every kernel kh rows high ...
            assert _runs(finite.any(axis=0)) == {shape[1]}           # ... and kw columns wide
    grid = fg.draw_kernel_grid([band, column], scale="per-kernel")
    assert (tmp_path / "n.pdf").exists() and _images(grid)[0].norm.vmax == 1.0


def test_more_rows_than_limit_are_sampled_with_the_stated_seed(small, tmp_path):
    catalog, _ = small
    total = catalog.sql("SELECT count(*) AS n FROM kernels").column("n")[0].as_py()
    a = data.kernel_sample(catalog, limit=25, seed=7)
    b = data.kernel_sample(catalog, limit=25, seed=7)
    c = data.kernel_sample(catalog, limit=25, seed=8)
    assert a.n_matched == total > 25 and len(a.kernels) == 25 and a.sampled
    assert a.ids == b.ids and a.ids != c.ids and len(set(a.ids)) == 25
    everything = data.kernel_sample(catalog, limit=total)
    assert not everything.sampled and len(everything.ids) == total
    fg.figure_kernels(catalog, tmp_path / "s.svg", limit=25, seed=7)
    assert f"25 of {total} kernels (random sample, seed 7)" in (tmp_path / "s.svg").read_text()
    by_cluster = data.kernel_sample(catalog, "kh = 5", sort_by="cluster", run="r", limit=60, seed=3)
    groups = [g for i, g in enumerate(by_cluster.groups) if i == 0 or g != by_cluster.groups[i - 1]]
    assert len(groups) == len(set(groups)) and all(g.startswith("5x5 #") for g in groups)   # contiguous groups


def test_label_colours_are_fixed_and_unmatched_is_grey(small, tmp_path):
    assert fg.label_color("unmatched") == "#9e9e9e"
    assert fg.label_color("dog-pos") == fg.FAMILY_COLORS["dog-pos"] and fg.label_color("mine") == fg.label_color("mine")
    assert fg.label_color("dog-pos|impulse-pos") == fg.label_color("dog-pos")      # 'a|b' takes a's colour
    assert fg.label_color("deriv2-000-pos") == fg.FAMILY_COLORS["deriv2-pos"]       # lighter with the angle
    assert fg.label_color("deriv2-090-pos") not in (fg.label_color("deriv2-000-pos"), fg.label_color("deriv2-090-neg"))
    catalog, _ = small
    fig = fg.figure_layers(catalog, "r", "bank", tmp_path / "l.png")
    ax = fig.axes[0]
    for container in ax.containers:
        label = container.get_label()
        assert mcolors.to_hex(container.patches[0].get_facecolor()) == fg.label_color(label)
    heights = sum(np.array([p.get_height() for p in c.patches]) for c in ax.containers)
    assert np.allclose(heights, 100)                                # shares of each layer add up


def test_paper_figures_for_the_readme(small, tmp_path):
    catalog, _ = small
    paths = fg.paper_figures(catalog, "r", tmp_path / "img")
    assert sorted(paths) == ["classified", "clusters", "kernels", "layers"]
    assert all(p.read_bytes().startswith(MAGIC["png"]) for p in paths.values())


def test_failed_write_leaves_nothing_under_the_target(small, tmp_path, monkeypatch):
    catalog, _ = small
    target = tmp_path / "t.png"
    target.write_bytes(b"old")

    def broken(self, path, **kwargs):
        with open(path, "wb") as handle:
            handle.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Figure, "savefig", broken)
    with pytest.raises(CatalogError, match="cannot write"):
        fg.figure_classified(catalog, "r", target, force=True)
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["t.png"]


def test_bad_input_is_one_line_through_the_cli(small, tmp_path, monkeypatch):
    catalog, _ = small
    monkeypatch.setenv("KERNEL_CATALOG", str(catalog.root))
    out = tmp_path / "out"
    out.mkdir()
    a_file = tmp_path / "file"
    a_file.write_text("x")
    cases = [
        (["figure", "clusters", "--run", "nope", "-o", str(out / "c.png")], "unknown run 'nope'"),
        (["figure", "layers", "--run", "r", "--model", "bnak", "-o", str(out / "l.png")], "did you mean bank?"),
        (["figure", "kernels", "--where", "kh = 99", "-o", str(out / "k.png")], "no kernels match"),
        (["figure", "kernels", "-o", str(out / "k.xyz")], "unknown figure format '.xyz'"),
        (["figure", "classified", "--run", "r", "-o", str(a_file / "t.pdf")], "does not exist"),
    ]
    for args, fragment in cases:
        assert_one_line_error(cli(*args), fragment)
    assert list(out.iterdir()) == []                               # nothing written, nothing partial
    ok = cli("figure", "kernels", "--where", "kh = 1", "--scale", "per-kernel", "-o", str(out / "k.svg"), check=True)
    assert "wrote" in ok.stderr and (out / "k.svg").read_bytes().startswith(MAGIC["svg"])


@pytest.mark.parametrize("call, fragment", [
    (lambda c, o: fg.figure_layers(c, "ae", "bank", o / "l.png"), "needs a cluster run"),
    (lambda c, o: fg.figure_kernels(c, o / "k.png", where="no_such_column = 1"), "--where"),
    (lambda c, o: fg.figure_classified(c, "r", o / "missing" / "t.pdf"), "does not exist"),
    (lambda c, o: fg.figure_classified(c, "r", o), "unknown figure format"),
    (lambda c, o: fg.figure_kernels(c, o / "k.png", sort_by="cluster"), "needs --run"),
    (lambda c, o: fg.figure_kernels(c, o / "k.png", sort_by="colour"), "--sort-by colour"),
    (lambda c, o: fg.figure_kernels(c, o / "k.png", limit=0), "--limit 0"),
    (lambda c, o: fg.figure_kernels(c, o / "k.png", scale="log"), "--scale log"),
    (lambda c, o: fg.figure_layers(c, "r", "bank", o / "k.svg.tmp"), "unknown figure format"),
])
def test_bad_input_is_a_catalog_error(small, tmp_path, call, fragment):
    catalog, _ = small
    with pytest.raises(CatalogError) as caught:
        call(catalog, tmp_path)
    assert fragment in str(caught.value) and "\n" not in str(caught.value)
    assert not list(tmp_path.glob("*.*"))
