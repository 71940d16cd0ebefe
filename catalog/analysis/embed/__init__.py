"""The embedding stage (`catalog embed`): one autoencoder per kernel size (`autoencoder`), the same
protocol on an iid Gaussian control (`null_model`), held-out scores (`cross_fit`) and the classified
share at each threshold (`thresholds`); `embed` runs them over a selection and records the run,
training a size's autoencoders together as one batched model (`ensemble`).

Public names are imported on first use (`kernel_catalog.analysis.lazy_exports`): the package itself
loads no torch.
"""
from kernel_catalog.analysis import lazy_exports

_EXPORTS = {
    "embed": "._run", "load_run_models": "._run",
    **dict.fromkeys(["KernelAutoencoder", "TrainedAutoencoder", "classified", "encode", "resolve_device",
                     "train_autoencoder"], ".autoencoder"),
    **dict.fromkeys(["ControlResult", "gaussian_control", "run_control"], ".null_model"),
    **dict.fromkeys(["fold_of", "held_out_cos"], ".cross_fit"),
    **dict.fromkeys(["Member", "train_ensemble"], ".ensemble"),
    **dict.fromkeys(["classification_metrics", "size_metrics"], ".thresholds"),
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
