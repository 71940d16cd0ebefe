"""The validation sweep as a figure: per kernel size, ARI and family accuracy against SNR, beside
the Bayes ceiling and the issue-9 target (0.95).

Reads the markdown table `bench/bench_validation.py` prints (its rows for `--features kernel`, what
`catalog analyze` clusters by default), so the figure is drawn from exactly the published numbers.

Usage: python bench/plot_validation.py TABLE.md -o docs/img/validation.png
"""
from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.ticker import NullLocator

COLUMNS = ("features", "size", "snr", "ari", "family", "polarity", "orientation_median", "within_22",
           "family_by_cluster", "polarity_by_cluster", "ceiling_ari", "ceiling_family", "seconds")


def read_table(path: Path, features: str = "kernel") -> dict[str, list[dict[str, float]]]:
    """Rows of one feature space, by size, in SNR order."""
    by_size: dict[str, list[dict[str, float]]] = defaultdict(list)
    for line in path.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != len(COLUMNS) or cells[0] != features:
            continue
        row = dict(zip(COLUMNS, cells))
        by_size[row["size"]].append({k: float(v) if v not in ("-", "nan") else float("nan")
                                     for k, v in row.items() if k not in ("features", "size")})
    return {size: sorted(rows, key=lambda r: r["snr"]) for size, rows in by_size.items()}


def draw(by_size: dict[str, list[dict[str, float]]]) -> Figure:
    sizes = list(by_size)
    fig = Figure(figsize=(7.0, 1.9 * ((len(sizes) + 3) // 4)), layout="constrained")
    axes = fig.subplots((len(sizes) + 3) // 4, 4, squeeze=False, sharey=True)
    for ax, size in zip(axes.flat, sizes):
        rows = by_size[size]
        snr = [r["snr"] for r in rows]
        for key, label, colour, style in (
                ("ari", "cluster ARI", "tab:blue", "-"), ("ceiling_ari", "ARI ceiling", "tab:blue", ":"),
                ("family", "family (own match)", "tab:orange", "-"),
                ("family_by_cluster", "family (by cluster)", "tab:green", "-"),
                ("ceiling_family", "family ceiling", "tab:orange", ":")):
            ax.plot(snr, [r[key] for r in rows], style, color=colour, marker="o" if style == "-" else None,
                    markersize=3, linewidth=1.2, label=label)
        ax.axhline(0.95, color="0.5", linewidth=0.6, linestyle="--")
        ax.axvspan(2, 3, color="0.92", zorder=0)
        ax.set_title(size, fontsize=9)
        ax.set_xscale("log")
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xticks([1, 2, 3, 5, 8], labels=["1", "2", "3", "5", "8"], fontsize=7)
        ax.tick_params(axis="y", labelsize=7)
        ax.set_ylim(0.3, 1.01)
    for ax in list(axes.flat)[len(sizes):]:
        ax.axis("off")
    for ax in axes[-1]:
        ax.set_xlabel("SNR", fontsize=8)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=5, fontsize=7, frameon=False)
    fig.suptitle("Planted banks: recovery against SNR (grey band: SNR 2-3; dashed: target 0.95)", fontsize=9)
    return fig


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("table", type=Path)
    ap.add_argument("-o", "--output", type=Path, required=True)
    args = ap.parse_args()
    draw(read_table(args.table)).savefig(args.output, dpi=150, metadata={"Software": None})
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
