"""The kernel autoencoder: one small MLP per kernel size, cosine-similarity loss.

Babaiee et al. (ICLR 2024), step 3: the paper's layers, optimiser and epochs are unknown (unconfirmed), so they
are parameters here with these defaults:
  architecture  k -> 64 -> 32 -> latent -> 32 -> 64 -> k, ReLU between layers, linear latent
                and output (`hidden=(64, 32)`, `activation="relu"`: GELU recovered planted
                families equally well and trains ~25 % slower on CPU); latent_dim = 2 (summaries
                say 1; 2 classifies more real kernels while an iid control stays low, and
                recovered planted banks more reliably here: latent 1 fell to ARI 0.73 once)
  loss          1 - cos(x, x_hat), mean over the batch (the reconstruction's scale is free)
  optimiser     Adam, lr 1e-2 (3e-3 got stuck with two families merged for some seeds),
                cosine decay to 0 over all steps, batch 4096
  epochs        auto: enough epochs for >= 3000 optimiser steps, between 10 and 2000
Inputs are preprocessed kernels (`analysis.preprocess`, usable rows only).
"""
from __future__ import annotations

import contextlib
import math
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import numpy as np
import torch
from torch import nn

from kernel_catalog.errors import CatalogError

FORMAT = "kernel-catalog-autoencoder/1"
BatchFactory = Callable[[], Iterable[np.ndarray]]
Data = Union[np.ndarray, BatchFactory]


ACTIVATIONS: dict[str, type[nn.Module]] = {"gelu": nn.GELU, "relu": nn.ReLU, "tanh": nn.Tanh}


class KernelAutoencoder(nn.Module):
    """MLP encoder/decoder, mirrored: k -> hidden... -> latent -> ...hidden -> k."""

    def __init__(self, k: int, latent_dim: int = 2, hidden: tuple[int, ...] = (64, 32),
                 activation: str = "relu"):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; choose one of {sorted(ACTIVATIONS)}")
        act = ACTIVATIONS[activation]
        enc: list[nn.Module] = []
        dims = [k, *hidden]
        for a, b in zip(dims, dims[1:]):
            enc += [nn.Linear(a, b), act()]
        self.encoder = nn.Sequential(*enc, nn.Linear(dims[-1], latent_dim))
        dec: list[nn.Module] = []
        rdims = [latent_dim, *reversed(hidden)]
        for a, b in zip(rdims, rdims[1:]):
            dec += [nn.Linear(a, b), act()]
        self.decoder = nn.Sequential(*dec, nn.Linear(rdims[-1], k))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.encoder(x)
        return z, self.decoder(z)


@dataclass
class TrainedAutoencoder:
    """A trained model with everything needed to record the run and to reload it."""

    module: KernelAutoencoder
    config: dict[str, Any]
    final_loss: float
    history: list[float] = field(default_factory=list)   # mean loss per epoch
    device: str = "cpu"


def resolve_device(device: str = "auto") -> torch.device:
    """'auto' -> CUDA when available, else CPU; 'cuda' without CUDA is a user error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cpu":
        return torch.device("cpu")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise CatalogError(f"--device {device}: no CUDA device is available to torch "
                               f"(torch {torch.__version__}); use --device cpu or --device auto")
        return torch.device(device)
    raise CatalogError(f"--device {device}: unknown device; use auto, cpu or cuda")


def classified(recon_cos: np.ndarray, threshold: float) -> np.ndarray:
    """True where the reconstruction is close enough: 1 - cos < threshold."""
    return (1.0 - np.asarray(recon_cos)) < threshold


def _as_factory(data: Data) -> BatchFactory:
    if callable(data):
        return data
    arr = np.asarray(data, dtype=np.float32)
    return lambda: iter((arr,))


def _minibatches(factory: BatchFactory, k: int, batch_size: int, buffer_rows: int,
                 gen: torch.Generator) -> Iterator[np.ndarray]:
    """Re-batch a stream of chunks: fill a buffer of up to `buffer_rows` rows, shuffle it with
    `gen`, cut it into batches; the leftover rows join the next buffer (a buffer is flushed
    once it holds more than `buffer_rows` rows, or at the end of the stream). One in-memory array is
    one chunk, so it takes exactly the same path (same batches for the same seed)."""
    pending: list[np.ndarray] = []
    rows = 0

    def flush(final: bool) -> Iterator[np.ndarray]:
        buf = np.concatenate(pending) if len(pending) > 1 else pending[0]
        pending.clear()
        buf = buf[torch.randperm(len(buf), generator=gen).numpy()]
        cut = len(buf) if final else len(buf) - len(buf) % batch_size
        for lo in range(0, cut, batch_size):
            yield buf[lo:lo + batch_size]
        if cut < len(buf):
            pending.append(buf[cut:])

    for chunk in factory():
        chunk = np.asarray(chunk, dtype=np.float32)
        if chunk.ndim != 2 or chunk.shape[1] != k:
            raise ValueError(f"training batch of shape {chunk.shape}, expected (m, {k})")
        if not np.isfinite(chunk).all():
            raise ValueError("training batch has NaN/Inf: pass preprocessed usable rows only")
        if len(chunk):
            pending.append(chunk)
            rows += len(chunk)
        if rows > buffer_rows:
            yield from flush(final=False)
            rows = sum(len(p) for p in pending)
    if pending:
        yield from flush(final=True)


@contextlib.contextmanager
def _deterministic(threads: int | None, device: torch.device | str = "cpu") -> Iterator[None]:
    """A thread count (optionally) while training or encoding and, on a GPU, deterministic kernels,
    restoring the caller's global settings after.

    On CPU the operations used here (linear layers, batched products, activations, cosine, sums,
    gathers without gradient) are deterministic for a thread count as they are: torch's
    deterministic mode changes none of them (its CPU cases are accumulating index writes), and
    turning it on imports torch's compiler stack, about a second of every process that trains
    (0.94 s of a first ensemble call, bench/RESULTS.md). On a GPU it
    is on, without filling new tensors with NaN (what deterministic mode does by default to expose
    reads of uninitialised memory: it changes no result, and cost a third of a small ensemble
    step)."""
    import torch.utils.deterministic as det

    cuda = torch.device(device).type == "cuda"
    before, warn = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    fill_before = det.fill_uninitialized_memory
    n_before = torch.get_num_threads()
    if cuda:
        torch.use_deterministic_algorithms(True, warn_only=True)
        det.fill_uninitialized_memory = False
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        if cuda:
            torch.use_deterministic_algorithms(before, warn_only=warn)
            det.fill_uninitialized_memory = fill_before
        torch.set_num_threads(n_before)


def cosine_loss(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    return 1.0 - nn.functional.cosine_similarity(x, x_hat, dim=1, eps=1e-8).mean()


def auto_epochs(steps_per_epoch: int, min_steps: int, max_epochs: int) -> int:
    """Epochs when none are given: enough for `min_steps` optimiser steps, between 10 and `max_epochs`."""
    return min(max(math.ceil(min_steps / steps_per_epoch), 10), max_epochs)


def train_autoencoder(
    data: Data,
    kh: int,
    kw: int,
    latent_dim: int = 2,
    epochs: int | None = None,
    batch_size: int = 4096,
    lr: float = 1e-2,
    seed: int = 0,
    device: str = "auto",
    progress: bool = True,
    hidden: tuple[int, ...] = (64, 32),
    activation: str = "relu",
    min_steps: int = 3000,
    max_epochs: int = 2000,
    shuffle_buffer: int = 1 << 19,
    threads: int | None = None,
    desc: str | None = None,
) -> TrainedAutoencoder:
    """Train one autoencoder for (kh, kw) kernels on preprocessed rows.

    data: an (N, kh*kw) float32 array, or a zero-argument callable returning an iterator of
      (m, kh*kw) float32 arrays (one full pass per call; e.g. Parquet batches through
      `analysis.preprocess.preprocess_stream`). Chunks of any size are re-batched.
    Memory bound when streaming: the shuffle buffer, `shuffle_buffer` rows (default 2^19:
      100 MB for 7x7 float32, about twice that while shuffling) plus one incoming chunk; the
      shuffle is exact within a buffer, so a stream of N <= shuffle_buffer rows gives exactly
      the batches (and weights) of the same rows in memory.
    epochs: None = auto, ceil(min_steps / steps per epoch) clipped to [10, max_epochs], decided
      after the first epoch (small sets get enough optimiser steps, large ones 10 epochs).
    seed: fixes initial weights (under a forked RNG: the global torch RNG is left alone) and the
      shuffling generator; on CPU the same seed and thread count give identical weights.
    device: "auto" (CUDA if available), "cpu" or "cuda"; "cuda" without CUDA raises CatalogError.
    threads: CPU threads for torch while training (None: torch's setting, every core), restored
      after. `catalog embed` passes every core this process may use unless --threads caps it;
      bench/RESULTS.md compares that with one thread. On a machine shared with other busy
      processes, OpenMP threads waiting for a busy core can make training much slower: cap
      them there (--threads 1).
    desc: what progress bars and lines call this training (default "autoencoder KHxKW").
    """
    k = kh * kw
    dev = resolve_device(device)
    factory = _as_factory(data)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = KernelAutoencoder(k, latent_dim, tuple(hidden), activation).to(dev)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(module.parameters(), lr=lr)
    total_epochs, total_steps, step = epochs, None, 0
    history: list[float] = []
    from tqdm.auto import tqdm

    desc = desc or f"autoencoder {kh}x{kw}"     # what progress lines call this training
    bar = tqdm(total=epochs, desc=desc, unit="epoch", file=sys.stderr,
               disable=None if progress else True, leave=False)   # None: off when not a terminal
    with _deterministic(threads, dev):
        module.train()
        epoch = 0
        while total_epochs is None or epoch < total_epochs:
            # summed on the device and read once per epoch: a read per step waits for the GPU
            # every step (no effect on CPU).
            loss_sum, seen = torch.zeros((), dtype=torch.float64, device=dev), 0
            for batch in _minibatches(factory, k, batch_size, shuffle_buffer, gen):
                if total_steps is not None:    # cosine decay once the length is known
                    for g in opt.param_groups:
                        g["lr"] = lr * 0.5 * (1.0 + math.cos(math.pi * min(step / total_steps, 1.0)))
                xb = torch.from_numpy(batch).to(dev, non_blocking=True)
                loss = cosine_loss(xb, module(xb)[1])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                loss_sum += loss.detach().double() * len(batch)
                seen += len(batch)
                step += 1
            if seen == 0:
                raise CatalogError(f"no usable {kh}x{kw} kernels to train the autoencoder on")
            history.append(float(loss_sum) / seen)
            if total_epochs is None:
                total_epochs = auto_epochs(step, min_steps, max_epochs)
                bar.total = total_epochs
            if total_steps is None:
                total_steps = total_epochs * step
            bar.update(1)
            bar.set_postfix(loss=f"{history[-1]:.4f}")
            epoch += 1
            if progress and bar.disable and epoch % max(total_epochs // 4, 1) == 0:
                # off a terminal (logs, batch jobs): a plain line at each quarter instead of a bar
                print(f"{desc}: epoch {epoch}/{total_epochs}, loss {history[-1]:.4f}",
                      file=sys.stderr, flush=True)
    bar.close()
    module.eval()
    config = {
        "format": FORMAT, "kh": kh, "kw": kw, "k": k, "latent_dim": latent_dim,
        "hidden": list(hidden), "activation": activation, "loss": "1-cos", "optimizer": "adam",
        "lr": lr, "schedule": "cosine", "batch_size": batch_size, "epochs": total_epochs,
        "steps": step, "seed": seed, "shuffle_buffer": shuffle_buffer,
        "device": str(dev), "threads": threads or torch.get_num_threads(),
        "torch": str(torch.__version__),
    }
    return TrainedAutoencoder(module, config, history[-1], history, str(dev))


def encode(model: TrainedAutoencoder, x: np.ndarray, batch_size: int = 65536,
           threads: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Embed preprocessed kernels: (z (N, d), recon (N, k), recon_cos (N,)), float32.

    recon is the raw decoder output (its scale is meaningless: the loss ignores it);
    recon_cos is cos(x, recon). All-zero rows (unusable kernels) get recon_cos 0.
    threads: torch CPU threads while encoding (None: torch's setting; see `train_autoencoder`).
    """
    x = np.asarray(x, dtype=np.float32)
    k, d = model.config["k"], model.config["latent_dim"]
    if x.ndim != 2 or x.shape[1] != k:
        raise ValueError(f"kernels of shape {x.shape} do not fit a {model.config['kh']}x{model.config['kw']} model")
    z = np.empty((len(x), d), np.float32)
    recon = np.empty((len(x), k), np.float32)
    rcos = np.empty(len(x), np.float32)
    dev = torch.device(model.device)
    module = model.module.eval()
    with _deterministic(threads, dev), torch.inference_mode():
        for lo in range(0, len(x), batch_size):
            xb = torch.from_numpy(x[lo:lo + batch_size]).to(dev)
            zb, rb = module(xb)
            z[lo:lo + len(xb)] = zb.cpu().numpy()
            recon[lo:lo + len(xb)] = rb.cpu().numpy()
            rcos[lo:lo + len(xb)] = nn.functional.cosine_similarity(xb, rb, dim=1, eps=1e-8).cpu().numpy()
    return z, recon, rcos


def save(model: TrainedAutoencoder, path: str | Path) -> None:
    """Write the state dict, config and loss history with torch.save (loadable weights-only)."""
    state = {k: v.detach().cpu() for k, v in model.module.state_dict().items()}
    torch.save({"format": FORMAT, "state_dict": state, "config": dict(model.config),
                "final_loss": float(model.final_loss), "history": [float(h) for h in model.history]},
               Path(path))


def load(path: str | Path, device: str = "cpu") -> TrainedAutoencoder:
    """Read a model written by `save` (torch.load with weights_only=True)."""
    p = Path(path)
    try:
        blob = torch.load(p, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CatalogError(f"no autoencoder model at {p}") from None
    except Exception as e:  # noqa: BLE001 - any unpickling failure means "not our file"
        raise CatalogError(f"{p} is not a readable autoencoder model: {e}") from None
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise CatalogError(f"{p} is not a kernel-catalog autoencoder model (format {FORMAT})")
    cfg, state = blob.get("config"), blob.get("state_dict")
    try:     # the architecture its config names, built on the meta device (no memory), must be
        # exactly its weights' (a config naming huge layers beside small weights is refused)
        architecture = (int(cfg["k"]), int(cfg["latent_dim"]), tuple(int(h) for h in cfg["hidden"]), str(cfg["activation"]))
        with torch.device("meta"):
            shapes = {name: tuple(t.shape) for name, t in KernelAutoencoder(*architecture).state_dict().items()}
        matches = isinstance(state, dict) and shapes == {name: tuple(getattr(t, "shape", ())) for name, t in state.items()}
        history, final_loss = [float(h) for h in blob["history"]], float(blob["final_loss"])
    except Exception:  # noqa: BLE001 - any malformed field means "not our file"
        matches = False
    if not matches:
        raise CatalogError(f"{p} is not a readable autoencoder model: its config and weights do not agree")
    dev = resolve_device(device)
    module = KernelAutoencoder(*architecture)
    module.load_state_dict(state)
    module.to(dev).eval()
    return TrainedAutoencoder(module, cfg, final_loss, history, str(dev))
