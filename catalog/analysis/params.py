"""The analysis protocol as typed, light parameters (no torch or scikit-learn imported here).

One place for every default and choice the analysis offers: the CLI builds its options from
these, the runs table records them (`RunParams.from_record`), presets are made of them.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, fields

from kernel_catalog.analysis.preprocess import DEFAULT_METHOD, METHODS as PREPROCESS_METHODS

__all__ = ["AUTO_CROSS_FIT_FOLDS", "CLUSTER_METHODS", "DEFAULT_ALPHA", "DEFAULT_NAME_THRESHOLD", "DEVICES", "MIN_VERDICT_KERNELS",
           "PREPROCESS_METHODS", "PRESETS", "SPACES", "THRESHOLD_RULES", "ClusterParams", "EmbedParams",
           "available_cores", "calibrated_threshold", "default_threshold", "from_record", "published_threshold",
           "size_key", "to_record"]

DEVICES = ("auto", "cpu", "cuda")
# The cluster stage's choices (cluster.clustering implements them): the feature space clustered
# and the method; the first of each is the default.
SPACES = ("kernel", "reconstruction", "latent")
CLUSTER_METHODS = ("kmeans", "minibatch", "gmm")
DEFAULT_NAME_THRESHOLD = 0.6   # naming: a best cosine below this is 'unmatched', never forced
# How each size's classified threshold is chosen (docs/analysis.md, "Classified"):
#   published   the paper's threshold where it published one (7x7 0.3, 5x5 0.2), the calibrated
#               one for every other size (3x3, bands, 9x9, 11x11);
#   calibrated  calibrated on the null for every size;
#   fixed       the paper's thresholds extended by tap count (`default_threshold`), no calibration.
THRESHOLD_RULES = ("published", "calibrated", "fixed")
DEFAULT_ALPHA = 0.05          # calibrated: the iid Gaussian null is classified at most this often
MIN_VERDICT_KERNELS = 1000    # fewer usable kernels of a size than this: the report warns
# cross_fit=None (auto): a training set of fewer than MIN_VERDICT_KERNELS usable kernels is scored held
# out in this many folds (bench/bench_memorisation.py: in-sample scores of small selections are memory)
AUTO_CROSS_FIT_FOLDS = 5


def size_key(kh: int, kw: int) -> str:
    """A kernel size as runs key it: per-size metrics, threshold and latent overrides ('7x7')."""
    return f"{kh}x{kw}"


def available_cores() -> int:
    """CPU cores this process may use (its affinity mask where the OS has one, as containers set)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:   # macOS, Windows
        return os.cpu_count() or 1


def default_threshold(kh: int, kw: int) -> float:
    """Cosine-dissimilarity threshold (1 - cos below it = classified) for a kernel size.

    Paper (unconfirmed): 7x7 -> 0.3, 5x5 -> 0.2. We extend by tap count: >= 49 taps -> 0.3
    (never more lenient than the paper's most lenient value), 25..48 -> 0.2, < 25 (3x3, 1x7,
    1x11, ...) -> 0.1. Why stricter for small kernels: a centred kernel has k - 1 free
    dimensions, and a random direction lands close to a fixed 2-D plane far more often when
    k is small. For a plane, cos^2 ~ Beta(1, (k-3)/2), so P(1 - cos < t) = (1 - (1-t)^2)^((k-3)/2):
    7x7 at 0.3 -> 2e-7, 5x5 at 0.2 -> 1e-5, 3x3 at 0.2 -> 0.05 but at 0.1 -> 0.007.
    Small kernels still mean little above latent 1-2 (docs/analysis.md): compare with the control.
    """
    taps = kh * kw
    return 0.3 if taps >= 49 else 0.2 if taps >= 25 else 0.1


def published_threshold(kh: int, kw: int) -> float | None:
    """The paper's own thresholds (Babaiee et al., ICLR 2024; unconfirmed, see docs/analysis.md):
    7x7 0.3, 5x5 0.2; None for other sizes."""
    return {(7, 7): 0.3, (5, 5): 0.2}.get((kh, kw))


def calibrated_threshold(null_dissimilarity, alpha: float = DEFAULT_ALPHA) -> float | None:
    """The largest threshold t at which at most `alpha` of the null is classified (1 - cos < t):
    the floor(alpha * n)-th smallest null dissimilarity. None for an empty null."""
    import numpy as np

    d = np.sort(np.asarray(null_dissimilarity, dtype=np.float64))
    if not len(d):
        return None
    return float(d[min(int(np.floor(alpha * len(d))), len(d) - 1)])


@dataclass(frozen=True)
class EmbedParams:
    latent_dim: int = 2
    epochs: int | None = None            # None: autoencoder.train_autoencoder's auto rule
    batch_size: int = 4096
    lr: float | None = None              # None: the autoencoder module's default
    seed: int = 0
    device: str = "auto"                 # one of DEVICES
    preprocess: str = DEFAULT_METHOD     # one of PREPROCESS_METHODS
    hidden: tuple[int, ...] = (64, 32)
    thresholds: dict[str, float] = field(default_factory=dict)   # "7x7" -> 0.3 overrides
    null_model: bool = True
    threads: int | None = None           # CPU threads for torch; None: every core this process may use
    threshold_rule: str = "published"    # one of THRESHOLD_RULES
    alpha: float = DEFAULT_ALPHA         # calibrated thresholds: null classified at most alpha
    latent_dims: dict[str, int] = field(default_factory=dict)    # "3x3" -> 1 overrides latent_dim
    per_model: bool = False              # one autoencoder (and null) per model and size
    # None (auto): sizes (per model with per_model) of fewer than MIN_VERDICT_KERNELS usable kernels are
    # scored held out in AUTO_CROSS_FIT_FOLDS folds, larger ones in sample; 0: every size in sample;
    # K >= 2: every size held out in K folds (each kernel, and each null kernel)
    cross_fit: int | None = None

    def threshold(self, kh: int, kw: int) -> float:
        """The fixed threshold of a size (an explicit override, else the paper's rule by tap count)."""
        return self.thresholds.get(size_key(kh, kw), default_threshold(kh, kw))

    def threshold_source(self, kh: int, kw: int) -> str:
        """Which threshold a size uses: 'override', 'published', 'fixed' or 'calibrated'."""
        if size_key(kh, kw) in self.thresholds:
            return "override"
        if self.threshold_rule == "fixed" or not self.null_model:
            return "fixed"
        if self.threshold_rule == "published" and published_threshold(kh, kw) is not None:
            return "published"
        return "calibrated"

    def folds(self, usable: int) -> int:
        """The folds a training set of `usable` kernels is scored held out in (0: in sample).
        An explicit cross_fit means what it says; auto (None) cross-fits below MIN_VERDICT_KERNELS,
        in fewer folds where a set has under two kernels a fold for AUTO_CROSS_FIT_FOLDS (none below 4)."""
        if self.cross_fit is not None:
            return self.cross_fit
        if usable >= MIN_VERDICT_KERNELS:
            return 0
        folds = min(AUTO_CROSS_FIT_FOLDS, usable // 2)
        return folds if folds >= 2 else 0

    def latent(self, kh: int, kw: int) -> int:
        return int(self.latent_dims.get(size_key(kh, kw), self.latent_dim))

    def train_kwargs(self, progress: bool, kh: int | None = None, kw: int | None = None) -> dict:
        """Keyword arguments for autoencoder.train_autoencoder (None means its default)."""
        chosen = dict(latent_dim=self.latent(kh, kw) if kh else self.latent_dim, epochs=self.epochs, batch_size=self.batch_size, lr=self.lr,
                      seed=self.seed, device=self.device, progress=progress, hidden=self.hidden,
                      threads=self.threads)
        return {k: v for k, v in chosen.items() if v is not None or k in ("epochs", "threads")}


@dataclass(frozen=True)
class ClusterParams:
    k: int | str = 10                   # an int, or "auto" (best silhouette over k_min..k_max)
    k_min: int = 2
    k_max: int = 15
    space: str = SPACES[0]              # one of SPACES: "kernel", "reconstruction" or "latent"
    method: str = CLUSTER_METHODS[0]    # kmeans (fitted on a 200k-row sample above that) | minibatch | gmm
    seed: int = 0
    templates: str = "builtin"          # builtin | FILE | builtin+FILE
    name_threshold: float = DEFAULT_NAME_THRESHOLD
    threads: int | None = None          # OpenMP/BLAS threads for scikit-learn; None: every core


DEFAULT_PRESET = "paper"   # `analyze` in both interfaces: the paper's protocol
PRESETS: dict[str, tuple[EmbedParams, ClusterParams]] = {
    "paper": (EmbedParams(latent_dim=1), ClusterParams(k=10, space="reconstruction")),
    "default": (EmbedParams(latent_dim=2), ClusterParams(k=10)),
}


def to_record(params) -> dict:
    """Parameters as stored in runs.params (JSON-safe: tuples become lists)."""
    return asdict(params)


def from_record(cls, stored: dict):
    """Rebuild EmbedParams / ClusterParams from runs.params, ignoring keys of other versions."""
    known = {f.name for f in fields(cls)}
    values = {k: v for k, v in stored.items() if k in known}
    if "hidden" in values and values["hidden"] is not None:
        values["hidden"] = tuple(values["hidden"])
    return cls(**values)
