"""The README's first command: real trained kernels into the default catalog, then a summary.

Real trained depthwise kernels come from the PaddleOCR ONNX models shipped inside two PyPI
wheels (no model hub needed); a random-init timm ConvNeXt sits beside them as the untrained
reference. Everything goes through the same public API a notebook would use.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import pyarrow as pa

from adapters.base import IngestOptions

from .ingest import IngestFailure, ingest_many
from .query import run_query
from .rapidocr import RAPIDOCR_MODELS, fetch_rapidocr_models
from .store import Catalog

TIMM_REFERENCE = "convnext_tiny"

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


def run_demo(catalog: Catalog, cache_dir: Path, echo: Callable[[str], None] = print) -> pa.Table:
    """Ingest the demo sources (idempotent: a second run re-ingests nothing) and summarise."""
    echo(f"catalog: {catalog.root}")
    echo(f"fetching trained PaddleOCR ONNX models (pip download --no-deps) into {cache_dir}")
    sources = [str(p) for p in demo_sources(cache_dir)]

    def report(outcome):
        if isinstance(outcome, IngestFailure):
            echo(f"failed {outcome.source}: {outcome.message}")
        else:
            echo(f"{outcome.action:9s} {outcome.model}: {outcome.n_kernels} kernels in {outcome.n_layers} layers")

    ingest_many(catalog, sources, on_result=report, progress=True)
    ingest_many(catalog, [TIMM_REFERENCE], IngestOptions(random_init=True), on_result=report)
    return run_query(catalog, SUMMARY_SQL)
