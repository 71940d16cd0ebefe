"""The README's first command: real trained kernels into the default catalog, then a summary.

Real trained depthwise kernels come from the PaddleOCR ONNX models shipped inside two PyPI
wheels and one MediaPipe LiteRT model from the mediapipe wheel (no model hub needed); a random-init
timm ConvNeXt sits beside them as the untrained reference. Everything goes through the same public
API a notebook would use.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import pyarrow as pa

from kernel_catalog.adapters.base import IngestOptions

from kernel_catalog.analysis.analyze import analyze
from kernel_catalog.report.figures import paper_figures
from kernel_catalog.ingest import IngestFailure, ingest_many
from kernel_catalog.store.query import run_query
from kernel_catalog.report.report import held_out_lines, report, seed_stability_lines, verdict_warnings
from kernel_catalog.analysis.runs import run_record
from kernel_catalog.demo.rapidocr import RAPIDOCR_MODELS, fetch_rapidocr_models
from kernel_catalog.demo.mediapipe import fetch_mediapipe_models
from kernel_catalog.store import Catalog

TIMM_REFERENCE = "convnext_tiny"
# One LiteRT model (mediapipe wheel, Apache-2.0): float16 filters behind DEQUANTIZE, 1,552 kernels,
# all 3x3: trained, so they join the 3x3 part of the analysis below (ANALYSIS_WHERE), nothing else.
LITERT_MODEL = "face_landmark"

SUMMARY_SQL = """
SELECT model, trained, kh || 'x' || kw AS size, count(*) AS kernels,
       round(avg(l2), 3) AS mean_l2,
       -- share of a kernel's energy in its centre tap: 1/(kh*kw) for white noise
       round(avg(list_extract(weights, (kh * kw + 1) // 2) ^ 2 / nullif(l2 ^ 2, 0)), 3) AS centre_energy,
       round(1.0 / any_value(kh * kw), 3) AS uniform_energy,
       count(*) FILTER (WHERE near_zero OR nonfinite) AS flagged
FROM kernels GROUP BY ALL ORDER BY trained DESC, model, size
"""


def demo_sources(cache_dir: Path) -> list[Path]:
    """The distinct trained ONNX files (one file ships in both wheels under two names)."""
    paths = fetch_rapidocr_models(cache_dir)
    seen, sources = set(), []
    for model in RAPIDOCR_MODELS:
        if model.sha256 not in seen:
            seen.add(model.sha256)
            sources.append(paths[Path(model.file).stem])
    return sources


ANALYSIS_RUN = "demo"
ANALYSIS_WHERE = "trained"   # every trained kernel: 3x3, 5x5, 7x7 and the 1x7 bands


def run_demo(catalog: Catalog, cache_dir: Path, echo: Callable[[str], None] = print,
             figures_dir: Path | None = None) -> dict[str, pa.Table]:
    """Ingest the demo sources, run the analysis once (both idempotent), draw the figures
    (default: <catalog>/figures), return the result tables."""
    echo(f"catalog: {catalog.root}")
    echo(f"fetching trained PaddleOCR ONNX models (pip download --no-deps) into {cache_dir}")
    sources = [str(p) for p in demo_sources(cache_dir)]

    def print_outcome(outcome):
        if isinstance(outcome, IngestFailure):
            echo(f"failed {outcome.source}: {outcome.message}")
        else:
            echo(f"{outcome.action:9s} {outcome.model}: {outcome.n_kernels} kernels in {outcome.n_layers} layers")

    echo(f"fetching a trained LiteRT model ({LITERT_MODEL}, pip download --no-deps mediapipe) into {cache_dir}")
    sources += [str(p) for p in fetch_mediapipe_models(cache_dir, [LITERT_MODEL]).values()]
    ingest_many(catalog, sources, on_result=print_outcome, progress=True)
    ingest_many(catalog, [TIMM_REFERENCE], IngestOptions(random_init=True), on_result=print_outcome)
    if run_record(catalog, ANALYSIS_RUN) is None:
        echo(f"analysis of {ANALYSIS_WHERE!r}: autoencoder per size (latent 2) + iid Gaussian null model "
             "(calibrated thresholds where the paper published none), k-means k=10, naming by templates")
        analyze(catalog, "default", ANALYSIS_RUN, ANALYSIS_WHERE, echo=echo)
    else:
        echo(f"analysis run '{ANALYSIS_RUN}' already in the catalog (`catalog runs delete --run {ANALYSIS_RUN}` "
             f"and `catalog runs delete --run {ANALYSIS_RUN}-ae` to redo it)")
    # the demo's own figures: a rerun redraws them (force)
    figures = paper_figures(catalog, ANALYSIS_RUN, figures_dir or catalog.root / "figures", force=True)
    echo("figures: " + ", ".join(str(path) for path in figures.values()))
    for line in (seed_stability_lines(run_record(catalog, ANALYSIS_RUN)) + held_out_lines(catalog, ANALYSIS_RUN)
                 + verdict_warnings(catalog, ANALYSIS_RUN)):
        echo(line)
    return {
        "kernels per model and size": run_query(catalog, SUMMARY_SQL),
        "Table 1: classified % vs the iid Gaussian null (same protocol)": report(catalog, ANALYSIS_RUN, "model"),
        "clusters, named by template matching": report(catalog, ANALYSIS_RUN, "cluster"),
        "Figure 8 as a table: cluster shares by depth": report(catalog, ANALYSIS_RUN, "depth"),
    }
