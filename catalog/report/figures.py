"""Publication figures of the catalog: kernel grids, cluster prototypes, shares per layer, Table 1.

Drawing functions (`draw_*`) take plain numpy / Python data and return a matplotlib Figure;
`figure_*` functions read the catalog through `catalog.figures_data` (SQL over the views), draw
and save. The format comes from the file extension (.png, .pdf, .svg).

Conventions, the same in every figure:
- kernels use the diverging colormap RdBu_r centred at zero with a symmetric scale
  (vmin = -vmax) shared by the whole figure, or per kernel (`scale="per-kernel"`: each kernel
  divided by its own max |w|); pixels are square, so a 1x7 kernel is drawn as a 1x7 band;
- cluster labels have fixed colours (`label_color`), `unmatched` is grey;
- single-column width (3.5 in), 7 pt text;
- deterministic: the same data gives byte-identical files (no dates or version strings in
  the metadata, a fixed SVG hash salt, no randomness but the stated seed).
Files are written under a temporary name and renamed, so a failed write leaves nothing partial.
"""
from __future__ import annotations

import hashlib
import math
import os
import textwrap
from pathlib import Path
from typing import Sequence

import matplotlib
import numpy as np
from matplotlib import colors as mcolors
from matplotlib.figure import Figure   # the object API: no pyplot, no backend switch, no global state

from kernel_catalog.analysis.naming import AMBIGUOUS_MARGIN, UNMATCHED
from kernel_catalog.errors import CatalogError
from kernel_catalog.report import _figures_data as data
from kernel_catalog.store import Catalog
from kernel_catalog.store.atomic import staged_file
from kernel_catalog.store.targets import output_file

FORMATS = {".png": "png", ".pdf": "pdf", ".svg": "svg"}
SCALES = data.SCALES
CMAP = "RdBu_r"
WIDTH = 3.5                                  # inches: one column of a two-column paper
PNG_DPI = 300
GAP_COLOR = "0.72"                           # between and around kernels in a grid
STYLE = {
    "font.family": "DejaVu Sans", "font.size": 7, "axes.titlesize": 7, "axes.labelsize": 7,
    "xtick.labelsize": 6, "ytick.labelsize": 6, "legend.fontsize": 6, "figure.titlesize": 7,
    "axes.linewidth": 0.5, "xtick.major.width": 0.5, "ytick.major.width": 0.5,
    "xtick.major.size": 2, "ytick.major.size": 2, "legend.frameon": False,
    "pdf.fonttype": 42, "svg.fonttype": "path", "svg.hashsalt": "kernel-catalog",
    "image.resample": False, "savefig.dpi": PNG_DPI, "figure.dpi": 100,
}
_METADATA = {
    "png": {"Software": None},
    "pdf": {"Creator": "Kernel Catalog", "Producer": None, "CreationDate": None, "ModDate": None},
    "svg": {"Creator": "Kernel Catalog", "Date": None},
}

# Fixed colours per family and polarity, so a family looks the same in every figure; oriented
# families get lighter with the orientation (0 deg darkest). `a|b` takes the colour of `a`.
FAMILY_COLORS = {
    "dog-pos": "#d62728", "dog-neg": "#1f77b4", "impulse-pos": "#7f0000", "impulse-neg": "#08306b",
    "deriv1": "#2ca02c", "deriv2-pos": "#ff7f0e", "deriv2-neg": "#9467bd", "saddle": "#e377c2",
    "square-pos": "#393b79", "square-neg": "#6b6ecf", "cross-pos": "#637939", "cross-neg": "#b5cf6b",
    UNMATCHED: "#9e9e9e",
}
_EXTRA_COLORS = ("#843c39", "#d6616b", "#7b4173", "#ce6dbd", "#8c6d31", "#e7ba52", "#5254a3", "#9c9ede")
_PERIODS = {"deriv1": 360, "deriv2": 180, "saddle": 180}


def label_color(label: str) -> str:
    """The colour of a cluster label: fixed for the built-in families (lighter with the
    orientation for oriented ones), `unmatched` grey, and a stable hash-picked colour for
    families from a user's template file."""
    label = label.split("|")[0]
    parts = label.split("-")
    family = parts[0]
    base = "-".join([family] + [p for p in parts[1:] if p in ("pos", "neg")])
    if base in FAMILY_COLORS:
        color = FAMILY_COLORS[base]
        angles = [p for p in parts[1:] if p.isdigit()]
        if family in _PERIODS and angles:
            from matplotlib.colors import to_hex, to_rgb
            mix = 0.6 * (int(angles[0]) % _PERIODS[family]) / _PERIODS[family]
            color = to_hex(tuple((1 - mix) * c + mix for c in to_rgb(color)))
        return color
    return _EXTRA_COLORS[int(hashlib.sha1(label.encode()).hexdigest(), 16) % len(_EXTRA_COLORS)]


# ---------------------------------------------------------------- output

def check_output(path: str | os.PathLike, formats: dict[str, str] = FORMATS, force: bool = False) -> tuple[Path, str]:
    """The target path and its format, checked before any work: a known extension, and the rule of
    every -o (store.targets: an existing file only with `force`, never part of a catalog)."""
    target = Path(path)
    fmt = formats.get(target.suffix.lower())
    if fmt is None:
        raise CatalogError(f"{path}: unknown figure format '{target.suffix or '(none)'}'; "
                           f"use {', '.join(formats)}")
    target = output_file(path, force)
    return target, fmt


def save_figure(fig: Figure, path: str | os.PathLike, title: str | None = None, dpi: int = PNG_DPI,
                durable: bool = True, force: bool = False) -> Path:
    """Save `fig` atomically (catalog.atomic: temporary file, then rename) in the format of the
    extension, with metadata free of dates and versions so the same figure gives the same bytes."""
    target, fmt = check_output(path, force=force)
    metadata = dict(_METADATA[fmt])
    if title:
        metadata["Title"] = title
    try:
        with staged_file(target, durable=durable) as temporary, matplotlib.rc_context(STYLE):
            fig.savefig(temporary, format=fmt, metadata=metadata, dpi=dpi,
                        bbox_inches="tight", pad_inches=0.03, facecolor="white")
    except OSError as error:
        raise CatalogError(f"{path}: cannot write ({error.strerror or error}); choose a writable path") from None
    return target


def _new_figure(height: float, width: float = WIDTH) -> Figure:
    with matplotlib.rc_context(STYLE):
        return Figure(figsize=(width, height), layout="constrained")


# ---------------------------------------------------------------- kernels

def symmetric_limit(kernels: Sequence[np.ndarray]) -> float:
    """max |w| over the finite values of all kernels (1.0 when all are zero or missing)."""
    finite = [np.abs(k[np.isfinite(k)]).max() for k in kernels if np.isfinite(k).any()]
    limit = float(max(finite)) if finite else 0.0
    return limit if limit > 0 else 1.0


def scale_kernels(kernels: Sequence[np.ndarray], scale: str) -> tuple[list[np.ndarray], float]:
    """Kernels ready to draw and the symmetric colour limit: shared (max |w| of the figure) or
    per kernel (each divided by its own max |w|, limit 1)."""
    if scale not in SCALES:
        raise CatalogError(f"--scale {scale}: choose one of {', '.join(SCALES)}")
    kernels = [np.asarray(k, np.float32) for k in kernels]
    if scale == "shared":
        return kernels, symmetric_limit(kernels)
    return [k / symmetric_limit([k]) for k in kernels], 1.0


def kernel_mosaic(kernels: Sequence[np.ndarray], ncols: int, groups: Sequence[str | None] | None = None,
                  gap: int = 1) -> tuple[np.ndarray, list[tuple[int, str]]]:
    """Kernels tiled into one image (NaN between and around them), `ncols` per row; a new group
    starts a new row. Returns the image and (pixel row, name) of each group's first row."""
    ch = max(k.shape[0] for k in kernels)
    cw = max(k.shape[1] for k in kernels)
    groups = list(groups) if groups is not None else [None] * len(kernels)
    cells: list[tuple[int, int]] = []
    starts: list[tuple[int, str]] = []
    row, col = 0, 0
    for i, name in enumerate(groups):
        if i > 0 and (col == ncols or name != groups[i - 1]):
            row, col = row + 1, 0
        if name is not None and (i == 0 or name != groups[i - 1]):
            starts.append((row, name))
        cells.append((row, col))
        col += 1
    nrows = row + 1
    image = np.full((nrows * (ch + gap) + gap, ncols * (cw + gap) + gap), np.nan, np.float32)
    for kernel, (r, c) in zip(kernels, cells):
        kh, kw = kernel.shape
        top = gap + r * (ch + gap) + (ch - kh) // 2
        left = gap + c * (cw + gap) + (cw - kw) // 2
        image[top:top + kh, left:left + kw] = kernel
    return image, [(gap + r * (ch + gap) + (ch - 1) / 2, name) for r, name in starts]


def _grid_columns(kernels: Sequence[np.ndarray], max_cols: int = 100) -> int:
    ch = max(k.shape[0] for k in kernels) + 1
    cw = max(k.shape[1] for k in kernels) + 1
    return int(min(len(kernels), max_cols, max(1, round(math.sqrt(len(kernels) * ch / cw)))))


def _cmap():
    return matplotlib.colormaps[CMAP].with_extremes(bad=GAP_COLOR)


def _kernel_colorbar(fig: Figure, image, axes, scale: str, shrink: float = 0.6):
    bar = fig.colorbar(image, ax=axes, orientation="horizontal", fraction=0.05, shrink=shrink, aspect=30, pad=0.02)
    bar.set_label("w / max |w| of each kernel" if scale == "per-kernel" else "weight (shared symmetric scale)")
    bar.outline.set_linewidth(0.4)
    bar.ax.tick_params(labelsize=5.5, width=0.4, length=1.5)
    return bar


def draw_kernel_grid(kernels: Sequence[np.ndarray], groups: Sequence[str | None] | None = None,
                     scale: str = "shared", title: str | None = None, caption: str | None = None,
                     ncols: int | None = None) -> Figure:
    """A grid of kernels of any sizes (non-square included) as one image with square pixels,
    labelled groups on the left, and one symmetric colour bar."""
    if not len(kernels):
        raise CatalogError("no kernels to draw")
    shown, limit = scale_kernels(kernels, scale)
    ncols = ncols or _grid_columns(shown)
    image, starts = kernel_mosaic(shown, ncols, groups)
    height_px, width_px = image.shape
    label_in = 0.045 * max((len(name) for _, name in starts), default=0)
    plot_w = WIDTH - 0.1 - label_in
    plot_h = min(plot_w * height_px / width_px, 8.0)
    fig = _new_figure(plot_h + 0.8 + (0.1 * len(_wrap(caption, 55).splitlines()) if caption else 0))
    with matplotlib.rc_context(STYLE):
        ax = fig.add_subplot()
        shown_image = ax.imshow(image, cmap=_cmap(), norm=mcolors.Normalize(-limit, limit),
                                interpolation="nearest", aspect="equal")
        ax.set_xticks([])
        inch_per_px = min(plot_w / width_px, 8.0 / height_px)
        labelled, last = [], -1e9
        for y, name in starts:                   # skip a group label that would overlap the one above
            if (y - last) * inch_per_px >= 0.085:
                labelled.append((y, name))
                last = y
        ax.set_yticks([y for y, _ in labelled], [name for _, name in labelled], fontsize=5.5)
        ax.tick_params(axis="y", length=0, pad=1.5)
        for side in ax.spines.values():
            side.set_visible(False)
        if caption:
            ax.set_xlabel(_wrap(caption, 55), fontsize=5.5, color="0.25", labelpad=2)
        _title(fig, title)
        _kernel_colorbar(fig, shown_image, ax, scale)
    return fig


def kernels_caption(sample: data.KernelSample) -> str:
    what = f"{len(sample.kernels)} of {sample.n_matched} kernels"
    how = f"random sample, seed {sample.seed}" if sample.sampled else "all matching"
    order = f"sorted by {sample.sort_by}" if sample.sort_by else "catalog order"
    return f"{what} ({how}); {order}"


def figure_kernels(catalog: Catalog, output: str | os.PathLike, where: str | None = None,
                   sort_by: str | None = None, run: str | None = None, limit: int = data.DEFAULT_LIMIT,
                   seed: int = 0, scale: str = "shared", force: bool = False) -> Figure:
    """`catalog figure kernels`: a grid of the kernels matching `where` (sampled to `limit`
    with `seed` beyond it), sorted and grouped by `sort_by`."""
    check_output(output, force=force)
    if scale not in SCALES:
        raise CatalogError(f"--scale {scale}: choose one of {', '.join(SCALES)}")
    sample = data.kernel_sample(catalog, where, sort_by, run, limit, seed)
    title = f"Kernels{f' where {where}' if where else ''}"
    caption = kernels_caption(sample) + (f"; clusters of run {run}" if run and sort_by == "cluster" else "")
    fig = draw_kernel_grid(sample.kernels, sample.groups, scale, title=_shorten(title, 120), caption=caption)
    save_figure(fig, output, title=f"{title}: {caption}", force=force)
    return fig


def _shorten(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _wrap(text: str, width: int = 62) -> str:
    return "\n".join(textwrap.wrap(text, width, break_long_words=True)) if text else text


def _title(fig: Figure, title: str | None) -> None:
    """A left-aligned figure title wrapped to the column width."""
    if title:
        fig.suptitle(_wrap(title), x=0.01, ha="left", fontsize=7)


# ---------------------------------------------------------------- clusters

def prototype_image(mean: np.ndarray, medoid: np.ndarray | None, gap: int = 1) -> np.ndarray:
    """Mean kernel and medoid side by side (NaN gap); the medoid half is NaN when missing."""
    kh, kw = mean.shape
    image = np.full((kh, 2 * kw + gap), np.nan, np.float32)
    image[:, :kw] = mean
    if medoid is not None:
        image[:, kw + gap:] = medoid
    return image


def draw_clusters(clusters: Sequence[dict], scale: str = "shared", title: str | None = None,
                  ncols: int = 5, width: float = WIDTH) -> Figure:
    """Each cluster's prototype (mean kernel, left) and medoid (right), with its name, template
    match score and share of its kernel size; one block of rows per kernel size."""
    if not clusters:
        raise CatalogError("no clusters to draw")
    pairs = [[c["mean"]] + ([c["medoid"]] if c.get("medoid") is not None else []) for c in clusters]
    flat, limit = scale_kernels([k for pair in pairs for k in pair], scale)
    scaled, i = [], 0
    for pair in pairs:
        scaled.append(flat[i:i + len(pair)])
        i += len(pair)
    sizes = list(dict.fromkeys((c["kh"], c["kw"]) for c in clusters))
    layout = []                              # (size, [cluster indices]) per row
    for size in sizes:
        members = [i for i, c in enumerate(clusters) if (c["kh"], c["kw"]) == size]
        layout += [(size, members[j:j + ncols]) for j in range(0, len(members), ncols)]
    cell_ratio = [max(0.25, size[0] / (2 * size[1] + 1)) for size, _ in layout]
    cell_w = width / ncols
    lines = [max((clusters[i]["label"].count("|") for i in members), default=0) for _, members in layout]
    row_heights = [cell_w * r * 0.9 + 0.28 + 0.09 * n for r, n in zip(cell_ratio, lines)]
    fig = _new_figure(sum(row_heights) + 0.6, width)
    with matplotlib.rc_context(STYLE):
        grid = fig.add_gridspec(len(layout), ncols, height_ratios=row_heights)
        norm = mcolors.Normalize(-limit, limit)
        axes, shown = [], None
        for r, (size, members) in enumerate(layout):
            for c in range(ncols):
                ax = fig.add_subplot(grid[r, c])
                ax.set_xticks([])
                ax.set_yticks([])
                for side in ax.spines.values():
                    side.set_visible(False)
                if c >= len(members):
                    ax.set_axis_off()
                    continue
                cluster = clusters[members[c]]
                pair = scaled[members[c]]
                shown = ax.imshow(prototype_image(pair[0], pair[1] if len(pair) > 1 else None),
                                  cmap=_cmap(), norm=norm, interpolation="nearest", aspect="equal")
                margin = cluster.get("margin")
                ax.set_title(cluster["label"].replace("|", "|\n") + f"\ncos {cluster['score']:.2f}"
                             + ("" if margin is None else f" m {margin:.2f}") + f" {100 * cluster['share']:.0f}%",
                             fontsize=4.8, pad=1.5, color=_text_color(cluster["label"]))
                if c == 0:
                    ax.set_ylabel(f"{size[0]}x{size[1]}", fontsize=6, rotation=0, ha="right", va="center")
                axes.append(ax)
        _title(fig, title)
        bar = _kernel_colorbar(fig, shown, axes, scale, shrink=0.5)
        bar.set_label(_wrap("left: mean kernel (prototype), right: medoid; "
                            + ("each scaled to its max |w|" if scale == "per-kernel" else "centred, unit L2, shared scale"),
                            int(width * 19)), fontsize=5.5)
    return fig


def draw_thumbnail(mean: np.ndarray, medoid: np.ndarray | None = None, scale: str = "per-kernel",
                   width: float = 0.9) -> Figure:
    """A bare image of a prototype and its medoid (no text), for tables of clusters."""
    pair, limit = scale_kernels([mean] + ([medoid] if medoid is not None else []), scale)
    image = prototype_image(pair[0], pair[1] if len(pair) > 1 else None)
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(width, width * image.shape[0] / image.shape[1]))
        ax = fig.add_axes((0, 0, 1, 1))
        ax.imshow(image, cmap=_cmap(), norm=mcolors.Normalize(-limit, limit), interpolation="nearest", aspect="auto")
        ax.set_axis_off()
    return fig


def _text_color(label: str) -> str:
    return "0.45" if label == UNMATCHED else "black"


def figure_clusters(catalog: Catalog, run: str, output: str | os.PathLike, scale: str = "shared", force: bool = False) -> Figure:
    """`catalog figure clusters`: prototype and medoid of every cluster of a cluster run."""
    check_output(output, force=force)
    clusters = data.cluster_prototypes(catalog, run)
    title = f"Clusters of run {run}: name (a|b: margin below {AMBIGUOUS_MARGIN}), cos to template, margin m, share of its size"
    fig = draw_clusters(clusters, scale, title=title)
    save_figure(fig, output, title=title, force=force)
    return fig


# ---------------------------------------------------------------- layers

def draw_layer_shares(shares: data.LayerShares, title: str | None = None) -> Figure:
    """Stacked bars: the share of each cluster label among each layer's clustered kernels."""
    n_layers, n_labels = shares.shares.shape
    legend_rows = math.ceil(n_labels / 3)
    fig = _new_figure(2.0 + 0.11 * legend_rows)
    with matplotlib.rc_context(STYLE):
        ax = fig.add_subplot()
        x = np.arange(n_layers)
        bottom = np.zeros(n_layers)
        for j, label in enumerate(shares.labels):
            values = 100 * shares.shares[:, j]
            ax.bar(x, values, bottom=bottom, width=0.8, color=label_color(label), label=label,
                   edgecolor="white", linewidth=0.2)
            bottom += values
        ax.set_xticks(x, [str(i) for i in shares.layer_index])
        if n_layers > 24:
            for k, tick in enumerate(ax.get_xticklabels()):
                tick.set_visible(k % math.ceil(n_layers / 24) == 0)
        ax.set_xlim(-0.6, n_layers - 0.4)
        ax.set_ylim(0, 100)
        ax.set_xlabel("depthwise layer index (input to output)")
        ax.set_ylabel("share of clustered kernels (%)")
        ax.spines[["top", "right"]].set_visible(False)
        sizes = sorted(set(shares.sizes))
        _title(fig, title or f"Cluster shares per layer: {shares.model}, run {shares.run} "
               f"({', '.join(sizes)}, {sum(shares.counts)} kernels)")
        fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncols=3,
                   handlelength=1.0, handleheight=0.8, columnspacing=1.0, fontsize=5.5)
    return fig


def figure_layers(catalog: Catalog, run: str, model: str, output: str | os.PathLike, force: bool = False) -> Figure:
    """`catalog figure layers`: cluster shares per layer of one model (the paper's Figure 8)."""
    check_output(output, force=force)
    shares = data.layer_shares(catalog, run, model)
    fig = draw_layer_shares(shares)
    fig.shares = shares
    save_figure(fig, output, title=f"Cluster shares per layer of {model}, run {run}", force=force)
    return fig


# ---------------------------------------------------------------- classified (Table 1)

def draw_classified(rows: Sequence[dict], title: str | None = None) -> Figure:
    """Grouped horizontal bars per model: classified % of its kernels and of the null model's."""
    n = len(rows)
    fig = _new_figure(0.75 + 0.28 * n)
    with matplotlib.rc_context(STYLE):
        ax = fig.add_subplot()
        y = np.arange(n)[::-1].astype(float)
        height = 0.38
        trained = [r["classified_pct"] for r in rows]
        null = [r["null_classified_pct"] for r in rows]
        for offset, values, color, name in ((height / 2, trained, "#2166ac", "kernels of the model"),
                                             (-height / 2, null, "#bdbdbd", "iid Gaussian null (same protocol)")):
            drawn = [v if v is not None else 0.0 for v in values]
            ax.barh(y + offset, drawn, height=height, color=color, label=name)
            for yy, v in zip(y + offset, values):
                ax.text((v or 0.0) + 1.0, yy, "n/a" if v is None else f"{v:.1f}", va="center", fontsize=5.5)
        ax.set_yticks(y, [f"{r['model']} ({r['usable']})" for r in rows])
        ax.set_xlim(0, 110)
        ax.set_xticks([0, 25, 50, 75, 100])
        ax.set_xlabel("kernels classified (%)")
        ax.spines[["top", "right"]].set_visible(False)
        ax.tick_params(axis="y", length=0)
        _title(fig, title)
        fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncols=2, fontsize=5.5,
                   handlelength=1.0)
    return fig


def figure_classified(catalog: Catalog, run: str, output: str | os.PathLike, force: bool = False) -> Figure:
    """`catalog figure classified`: classified % vs the null model per model (Table 1)."""
    check_output(output, force=force)
    rows = data.classified_table(catalog, run)
    title = f"Classified kernels per model (usable kernels), run {run}"
    fig = draw_classified(rows, title=title)
    save_figure(fig, output, title=title, force=force)
    return fig


# ---------------------------------------------------------------- README / demo

def largest_model(catalog: Catalog, run: str) -> str:
    counts = data.run_kernels_per_model(catalog, run)
    if not counts:
        raise CatalogError(f"run '{run}' has no clustered kernels")
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))[0][0]


def paper_figures(catalog: Catalog, run: str, out_dir: str | os.PathLike, model: str | None = None,
                  fmt: str = "png", limit: int = 200, seed: int = 0, force: bool = False) -> dict[str, Path]:
    """The README's figures for a cluster run: clusters, layers (of `model`, default the one with
    the most clustered kernels), classified, and a kernel grid sorted by cluster (existing files
    of those names are replaced only with `force`)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = model or largest_model(catalog, run)
    paths = {name: out / f"{name}.{fmt}" for name in ("clusters", "layers", "classified", "kernels")}
    figure_clusters(catalog, run, paths["clusters"], scale="per-kernel", force=force)
    shares = figure_layers(catalog, run, model, paths["layers"], force=force).shares
    figure_classified(catalog, run, paths["classified"], force=force)
    kh, kw = max(set(shares.sizes), key=lambda s: (shares.sizes.count(s), s)).split("x")
    where = f"model = '{model.replace(chr(39), chr(39) * 2)}' AND kh = {int(kh)} AND kw = {int(kw)}"
    figure_kernels(catalog, paths["kernels"], where=where, sort_by="cluster", run=run, limit=limit,
                   seed=seed, scale="per-kernel", force=force)
    return paths


FIGURES = {"kernels": figure_kernels, "clusters": figure_clusters, "layers": figure_layers,
           "classified": figure_classified}
KINDS = (*FIGURES, "layer-profile")   # `catalog figure KIND`; layer-profile lives in filterdb_figures


def figure_function(kind: str):
    """The function that draws `kind` (`catalog figure KIND`)."""
    if kind == "layer-profile":
        from kernel_catalog.report.filterdb_figures import figure_layer_profile   # it imports this module

        return figure_layer_profile
    if kind not in FIGURES:
        raise CatalogError(f"figure '{kind}': choose one of {', '.join(KINDS)}")
    return FIGURES[kind]


def draw_figure(catalog: Catalog, kind: str, output: str | os.PathLike, **kwargs) -> Figure:
    """One figure by kind, keywords as that kind's function takes them."""
    return figure_function(kind)(catalog, output=output, **kwargs)
