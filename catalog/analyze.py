"""`catalog analyze`: embed -> cluster -> name with a preset protocol, then Table 1.

Presets (SCIENCE.md; unconfirmed choices are parameters, recorded with every run):
  paper    latent 1 (what summaries of the paper and the follow-up used), k = 10 per size,
           thresholds 7x7 0.3 / 5x5 0.2 (paper) and the stated defaults for other sizes,
           clustering on unit-normalised reconstructions, centre + unit-L2 preprocessing.
  default  the same with latent 2 (classifies more real kernels while the null stays low).
"""
from __future__ import annotations

import pyarrow as pa

from .cluster_run import ClusterParams, cluster_run
from .embed import EmbedParams, embed
from .report import report
from .store import Catalog

PRESETS: dict[str, tuple[EmbedParams, ClusterParams]] = {
    "paper": (EmbedParams(latent_dim=1), ClusterParams(k=10)),
    "default": (EmbedParams(latent_dim=2), ClusterParams(k=10)),
}


def analyze(catalog: Catalog, preset: str = "paper", run: str | None = None, where: str | None = None,
            device: str = "auto", epochs: int | None = None, seed: int = 0, replace: bool = False,
            echo=lambda line: None, progress: bool = True) -> pa.Table:
    """Run the three steps; the cluster run is `run` (default: the preset name), the embed run `run-ae`."""
    from dataclasses import replace as with_changes

    embed_params, cluster_params = PRESETS[preset]
    run = run or preset
    embed_run = f"{run}-ae"
    embed_params = with_changes(embed_params, device=device, epochs=epochs, seed=seed)
    cluster_params = with_changes(cluster_params, seed=seed)
    if replace:
        from .runs import delete_run, run_record
        for name in (run, embed_run):   # children first: a cluster run builds on its embed run
            if catalog.exists() and run_record(catalog, name) is not None:
                delete_run(catalog, name)
    echo(f"[1/3] embed {embed_run}: latent {embed_params.latent_dim}, device {device}")
    embed(catalog, embed_run, where, embed_params, echo=echo, progress=progress)
    echo(f"[2/3] cluster {run}: k {cluster_params.k}, space {cluster_params.space}; [3/3] naming by templates")
    cluster_run(catalog, run, embed_run, cluster_params, echo=echo)
    return report(catalog, run, "model")
