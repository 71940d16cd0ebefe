"""A size's classified share, from its reconstruction cosines, at its fixed and calibrated thresholds.

`classification_metrics` gives one group's thresholds (fixed, calibrated on the null, the one used)
and the share of data and null classified at each; `size_metrics` a size's metrics as the embed run
records them: pooled over its groups (one per model with `per_model`), a reused run's null
inherited from its parent run, the in-sample share beside a cross-fitted one (`cross_fit`: its
folds; `cross_fit_rule`: 'auto', chosen by the group's size, or 'explicit').
"""
from __future__ import annotations

import numpy as np

from kernel_catalog.analysis.params import EmbedParams, calibrated_threshold, size_key
from kernel_catalog.analysis.runs import RunRecord

POOLED = None     # the model key of an autoencoder trained on every model's kernels of a size


def classification_metrics(recon_cos: np.ndarray, null_d: np.ndarray | None, kh: int, kw: int,
                           params: EmbedParams) -> dict:
    """Thresholds (fixed, calibrated, used) and the classified share of data and null at each."""
    d = 1.0 - np.asarray(recon_cos, np.float64)
    fixed = params.threshold(kh, kw)
    out: dict = {"threshold_fixed": fixed, "classified_fixed": float((d < fixed).mean()) if len(d) else 0.0}
    source = params.threshold_source(kh, kw)
    if null_d is not None and len(null_d):
        cal = calibrated_threshold(null_d, params.alpha)
        out.update({"alpha": params.alpha, "threshold_calibrated": cal,
                    "classified_calibrated": float((d < cal).mean()) if len(d) else 0.0,
                    "null_classified_fixed": float((null_d < fixed).mean()),
                    "null_classified_calibrated": float((null_d < cal).mean())})
    elif source == "calibrated":
        source = "fixed"
    used = out["threshold_calibrated"] if source == "calibrated" else fixed
    out.update({"threshold": used, "threshold_source": source,
                "classified": out["classified_calibrated" if source == "calibrated" else "classified_fixed"]})
    if null_d is not None and len(null_d):
        out["null_classified"] = float((null_d < used).mean())
    return out


def size_metrics(per_group: dict, kh: int, kw: int, params: EmbedParams, parent: RunRecord | None) -> dict:
    """A size's metrics: pooled over its groups, plus one entry per model for per-model runs."""
    key = size_key(kh, kw)

    def one(recon_cos, null_d, model, n, in_sample, folds, inherited: dict) -> dict:
        if null_d is None and inherited.get("threshold_calibrated") is not None:   # reused: the parent's null
            m = classification_metrics(recon_cos, None, kh, kw, params)
            cal = inherited["threshold_calibrated"]
            d = 1.0 - recon_cos
            m.update({k: v for k, v in inherited.items() if k.startswith("null_") or k in ("alpha", "threshold_calibrated")})
            m["classified_calibrated"] = float((d < cal).mean()) if len(d) else 0.0
            if inherited.get("threshold_source") == "calibrated" and params.threshold_source(kh, kw) == "calibrated":
                m.update({"threshold": cal, "threshold_source": "calibrated", "classified": m["classified_calibrated"]})
        else:
            m = classification_metrics(recon_cos, null_d, kh, kw, params)
        m.update({"n": n, "usable": int(len(recon_cos)), "final_loss": model.final_loss,
                  "epochs": model.config["epochs"], "latent_dim": model.config["latent_dim"]})
        if null_d is not None:
            m["null_n"] = int(len(null_d))
        if in_sample is not None:   # cross-fitted: what the in-sample score would have said
            m["cross_fit"] = folds
            m["cross_fit_rule"] = "auto" if params.cross_fit is None else "explicit"
            m["classified_in_sample"] = float((1.0 - in_sample < m["threshold"]).mean()) if len(in_sample) else 0.0
        return m

    inherited = parent.size_metrics(key) if parent is not None else {}
    if list(per_group) == [POOLED]:
        return one(*per_group[POOLED], inherited)
    models = {name: one(*g, inherited.get("models", {}).get(name, {})) for name, g in per_group.items()}
    usable = sum(m["usable"] for m in models.values())
    weight = {name: m["usable"] / max(usable, 1) for name, m in models.items()}
    pooled = {"n": sum(m["n"] for m in models.values()), "usable": usable, "per_model": True, "models": models,
              "threshold_source": next(iter(models.values()))["threshold_source"]}
    for field in ("classified", "classified_fixed", "classified_calibrated", "null_classified",
                  "null_classified_fixed", "null_classified_calibrated", "threshold", "threshold_fixed",
                  "threshold_calibrated", "classified_in_sample"):
        if all(field in m for m in models.values()):
            pooled[field] = float(sum(weight[name] * m[field] for name, m in models.items()))
    if all("cross_fit" in m for m in models.values()):
        pooled["cross_fit"] = max(m["cross_fit"] for m in models.values())
        pooled["cross_fit_rule"] = "auto" if params.cross_fit is None else "explicit"
    return pooled
