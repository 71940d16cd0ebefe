"""`catalog analyze`: embed -> cluster -> name with a preset protocol (the CLI then prints Table 1).

Presets (docs/analysis.md; unconfirmed choices of the paper are parameters, recorded with every run):
  paper    latent 1 (what summaries of the paper and the follow-up used), k = 10 per size,
           thresholds 7x7 0.3 / 5x5 0.2 (paper), calibrated on the null for other sizes,
           clustering on unit-normalised reconstructions, centre + unit-L2 preprocessing.
  default  latent 2 (classifies more real kernels while the null stays low; at 3x3, with
           calibrated thresholds, latent 1/2/3 classified 62/65/60 % of the PP-OCR kernels
           against 5 % of the null: 2 gives the widest gap), and clusters the preprocessed
           kernels themselves (space "kernel": higher ARI on planted banks than the 2-D
           autoencoder's reconstructions, analysis.cluster.clustering); the rest as paper.
"""
from __future__ import annotations

from kernel_catalog.analysis.cluster import cluster_run
from kernel_catalog.analysis.embed import embed
from kernel_catalog.analysis.params import DEFAULT_PRESET, PRESETS
from kernel_catalog.store import Catalog

def analyze(catalog: Catalog, preset: str = DEFAULT_PRESET, run: str | None = None, where: str | None = None,
            device: str = "auto", epochs: int | None = None, seed: int = 0, threads: int | None = None,
            replace: bool = False, echo=lambda line: None, progress: bool = True, per_model: bool = False,
            cross_fit: int | None = None) -> str:
    """Run the three steps; returns the cluster run's name, `run` (default: the preset name);
    the embed run is `run-ae`. Table 1 is then `report(catalog, run)`. cross_fit: as
    `EmbedParams.cross_fit` (None: sizes below MIN_VERDICT_KERNELS usable kernels scored held out)."""
    from dataclasses import replace as with_changes

    embed_params, cluster_params = PRESETS[preset]
    run = run or preset
    embed_run = f"{run}-ae"
    embed_params = with_changes(embed_params, device=device, epochs=epochs, seed=seed, threads=threads,
                                per_model=per_model, cross_fit=cross_fit)
    cluster_params = with_changes(cluster_params, seed=seed, threads=threads)
    if replace:
        from kernel_catalog.analysis.runs import delete_run, run_record
        for name in (run, embed_run):   # children first: a cluster run builds on its embed run
            if catalog.exists() and run_record(catalog, name) is not None:
                delete_run(catalog, name)
    echo(f"[1/3] embed {embed_run}: latent {embed_params.latent_dim}, device {device}")
    embed(catalog, embed_run, where, embed_params, echo=echo, progress=progress)
    echo(f"[2/3] cluster {run}: k {cluster_params.k}, space {cluster_params.space}; [3/3] naming by templates")
    cluster_run(catalog, run, embed_run, cluster_params, echo=echo)
    return run
