"""Figures for CNN Filter DB's measures: per-layer profiles against depth, and a drift heatmap.

Same conventions as report.figures (single column, 7 pt, object API, deterministic bytes,
atomic writes): `draw_*` take plain rows and return a Figure; `figure_*` read and save.
"""
from __future__ import annotations

import os
from typing import Sequence

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from kernel_catalog.analysis.selection import where_error
from kernel_catalog.errors import CatalogError
from kernel_catalog.report.figures import STYLE, WIDTH, check_output, save_figure
from kernel_catalog.store import Catalog

METRICS = (("sparsity", "sparsity"), ("variance_entropy", "variance entropy"))
_MARKERS = "osD^v<>ph*"


def _figure(height: float, width: float = WIDTH) -> Figure:
    with matplotlib.rc_context(STYLE):
        return Figure(figsize=(width, height), layout="constrained")


def layer_profile_rows(catalog: Catalog, models: Sequence[str] = (), where: str | None = None) -> list[dict]:
    """Per model and layer (CondConv experts averaged): depth, sparsity, variance entropy."""
    conditions = [f"({where})"] if where and where.strip() else []
    params: list = []
    if models:
        conditions.append("model IN (SELECT unnest(?::VARCHAR[]))")
        params.append(list(models))
    clause = f"WHERE {' AND '.join(conditions)}" if conditions else ""
    try:
        rows = catalog.sql(f"""
            SELECT model, layer_index, any_value(depth) AS depth, avg(sparsity) AS sparsity,
                   avg(variance_entropy) AS variance_entropy
            FROM layers {clause} GROUP BY model, layer_index ORDER BY model, layer_index""", params).to_pylist()
    except CatalogError as error:
        raise where_error(where, error) from None
    missing = sorted(set(models) - {r["model"] for r in rows})
    if missing:
        raise CatalogError(f"model {', '.join(missing)} is not in catalog {catalog.root} (or has no layer "
                           "matching --where); see `catalog models`")
    if not rows:
        raise CatalogError("no layer matches; see `catalog models`")
    return rows


def draw_layer_profile(rows: Sequence[dict], title: str | None = None) -> Figure:
    """Two panels against relative depth (0 = first depthwise layer, 1 = last): sparsity and
    variance entropy, one line per model."""
    fig = _figure(3.2)
    with matplotlib.rc_context(STYLE):
        axes = fig.subplots(2, 1, sharex=True)
        models = list(dict.fromkeys(r["model"] for r in rows))
        for i, model in enumerate(models):
            mine = [r for r in rows if r["model"] == model]
            depth = [r["depth"] for r in mine]
            for ax, (key, _) in zip(axes, METRICS):
                values = [np.nan if r[key] is None else r[key] for r in mine]
                ax.plot(depth, values, marker=_MARKERS[i % len(_MARKERS)], markersize=2.5, linewidth=0.8,
                        label=model, color=f"C{i % 10}")
        for ax, (_, label) in zip(axes, METRICS):
            ax.set_ylabel(label)
            ax.grid(True, linewidth=0.3, alpha=0.5)
        axes[0].set_ylim(-0.03, 1.03)
        axes[1].set_ylim(0, 1.03)
        axes[1].set_xlabel("depth (layer index / (layers - 1))")
        axes[0].legend(loc="upper left", ncols=1 if len(models) < 4 else 2)
        if title:
            fig.suptitle(title)
    return fig


def figure_layer_profile(catalog: Catalog, output: str | os.PathLike, models: Sequence[str] = (),
                         where: str | None = None, force: bool = False) -> Figure:
    """`catalog figure layer-profile`: sparsity and variance entropy per layer against depth."""
    check_output(output, force=force)
    fig = draw_layer_profile(layer_profile_rows(catalog, models, where))
    save_figure(fig, output, title="Per-layer sparsity and variance entropy", force=force)
    return fig


def drift_matrix(rows: Sequence[dict]) -> tuple[list[str], np.ndarray]:
    """Names and the symmetric drift matrix of `drift --by` rows (a, b, drift); the diagonal holds
    each group's split-half noise (`noise_a` / `noise_b`) when the rows have it, else 0."""
    names = sorted({r["a"] for r in rows} | {r["b"] for r in rows})
    index = {n: i for i, n in enumerate(names)}
    matrix = np.zeros((len(names), len(names)))
    for r in rows:
        i, j = index[r["a"]], index[r["b"]]
        matrix[i, j] = matrix[j, i] = r["drift"]
        for k, key in ((i, "noise_a"), (j, "noise_b")):
            if r.get(key) is not None:
                matrix[k, k] = r[key]
    return names, matrix


def draw_drift_heatmap(rows: Sequence[dict], title: str | None = None) -> Figure:
    """Every pair's drift as a symmetric matrix (sequential colours, value in each cell); the
    diagonal is each group against itself split in two random halves: the noise level."""
    names, matrix = drift_matrix(rows)
    n = len(names)
    side = min(max(1.6, 0.32 * n + 1.4), 7.0)
    fig = _figure(side, max(WIDTH, side))
    with matplotlib.rc_context(STYLE):
        ax = fig.subplots()
        image = ax.imshow(matrix, cmap="viridis", vmin=0, vmax=max(matrix.max(), 1e-12))
        ax.set_xticks(range(n), names, rotation=60, ha="right")
        ax.set_yticks(range(n), names)
        if n <= 12:
            top = matrix.max() or 1.0
            for i in range(n):
                for j in range(n):
                    ax.text(j, i, f"{matrix[i, j]:.2g}", ha="center", va="center", fontsize=5,
                            color="black" if matrix[i, j] > 0.6 * top else "white")
        fig.colorbar(image, ax=ax, shrink=0.8, label="drift (nats, weighted symmetric KL)")
        ax.set_xlabel("diagonal: two random halves of one group (sampling noise)")
        if title:
            ax.set_title(title)
    return fig


def figure_drift_heatmap(rows: Sequence[dict], output: str | os.PathLike, title: str | None = None,
                         force: bool = False) -> Figure:
    fig = draw_drift_heatmap(rows, title)
    save_figure(fig, output, title=title or "Drift between every pair", force=force)
    return fig
