"""Many autoencoders of one kernel size trained together: one batched model over a member dimension.

A run trains several autoencoders per size: the run's own, one per cross-fit fold, the null
model's, one set per model with `per_model`. Each is a ~10 k-weight MLP; on a
small selection (a batch of hundreds of kernels) a step is mostly fixed cost (Python, optimiser,
small kernels), which M members then share; on full batches (4,096) the arithmetic dominates and
training together saves little more than that fixed cost (bench/bench_ensemble.py, RESULTS.md:
the 7 members of a 5-fold cross-fit together cost 0.21-0.34x their sum at 120-400 kernels a batch,
0.5-0.9x at 1,000-4,000, on 2 threads). Here M members share each optimiser step: their weights are stacked over a
leading member dimension (Linear weights as (M, out, in)), one `torch.baddbmm` per layer runs
every member's batch, and a hand-written Adam updates every member at once (the weights of
all members are one flat (M, P) tensor: a handful of tensor operations a step, whatever M).

Each member keeps its own seed (initial weights: the same `KernelAutoencoder` the lone trainer
builds from that seed; shuffling: its own generator), its own rows, its own epoch and step
count, its own auto-epoch decision and cosine schedule, and stops when its own epochs are done
(it is then taken out of the stack). Batches are exactly those `autoencoder.train_autoencoder`
draws for the same rows and seed (same permutations, same cuts); members whose batch is shorter
in a step are padded, and their loss is the mean over their own rows (zero gradient for the
padding: each member's rows weighted 1/size, its padding 0, in one product). The batched products per member are the lone trainer's bit for bit (weights kept as
nn.Linear's (out, in), multiplied through the transposed view as F.linear does) and Adam is
torch.optim.Adam's single-tensor update: on CPU, members whose batches are never padded come out
identical to the member trained alone; a padded step sums the weight gradient over a longer batch
of zero rows, which can differ in the last bit, and training at lr 1e-2 amplifies such bits over
thousands of steps. So: equal within float tolerance (tests/test_ensemble.py).

There is no early stopping in the protocol: a member stops after its epochs (auto: enough for
`min_steps` optimiser steps, decided after its first epoch), whatever the others do.

On CPU the members are also split into lanes (`_lanes`) trained at once in threads, each lane
its stacks one after the other on its share of the threads (one each on a machine with fewer
threads than members). One batched product a step parallelises poorly over threads for an MLP
this small, and OpenMP threads that wait at its barriers lose a core whenever another process
holds it; lanes of one thread have no barriers. A member's weights do not depend on its lane or
on the other lanes (initial weights are drawn before the lanes start; each lane owns its
generators), only on its thread count, which is recorded.
"""
from __future__ import annotations

import math
import sys
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from kernel_catalog.analysis.embed.autoencoder import (
    FORMAT, KernelAutoencoder, TrainedAutoencoder, _deterministic, auto_epochs, resolve_device,
)
from kernel_catalog.errors import CatalogError

_ACT = {"relu": torch.relu, "gelu": nn.functional.gelu, "tanh": torch.tanh}
# What a step costs beyond its arithmetic, in padded rows: how many rows of padding one more
# stack (one more step a step) is worth. CPU: ~0.8 ms a step against ~2 us a row
# (bench/bench_ensemble.py); on a GPU the arithmetic of a padded row is nearly free.
STEP_ROWS = {"cpu": 400, "cuda": 20_000}


def _stacks(widths: list[int], step_rows: int) -> list[list[int]]:
    """Members (by index) grouped into stacks trained one after the other, minimising padded rows
    plus `step_rows` a stack: widths sorted, cut into runs by dynamic programming."""
    order = sorted(range(len(widths)), key=lambda j: -widths[j])
    w = [widths[j] for j in order]
    best, cut = [0.0] + [math.inf] * len(w), [0] * (len(w) + 1)
    for end in range(1, len(w) + 1):          # best[end]: the first `end` members, stacked
        for start in range(end):              # the last stack: start..end-1, padded to w[start]
            cost = best[start] + step_rows + sum(w[start] - x for x in w[start:end])
            if cost < best[end]:
                best[end], cut[end] = cost, start
    stacks, end = [], len(w)
    while end:
        stacks.append(order[cut[end]:end])
        end = cut[end]
    return stacks[::-1]
# torch.optim.Adam's defaults, which the lone trainer uses
BETA1, BETA2, EPS = 0.9, 0.999, 1e-8


@dataclass
class Member:
    """One autoencoder to train: the rows `data[rows]` (every row of `data` when rows is None) of
    preprocessed usable kernels, its seed, and what its progress lines call it. Members may share
    one `data` array (cross-fit folds do): nothing is copied."""

    data: np.ndarray
    rows: np.ndarray | None = None
    seed: int = 0
    desc: str | None = None

    @property
    def n(self) -> int:
        return len(self.data) if self.rows is None else len(self.rows)


def epoch_batches(n: int, batch_size: int, buffer_rows: int, gen: torch.Generator) -> list[np.ndarray]:
    """One epoch's batches as positions 0..n-1: what `autoencoder._minibatches` yields for one
    in-memory array of n rows (one permutation when n <= buffer_rows; above, full batches of one
    permutation, then the leftover rows permuted again as a last, short batch)."""
    perm = torch.randperm(n, generator=gen).numpy()
    if n <= buffer_rows:
        return [perm[lo:lo + batch_size] for lo in range(0, n, batch_size)]
    cut = n - n % batch_size
    batches = [perm[lo:lo + batch_size] for lo in range(0, cut, batch_size)]
    if cut < n:
        rest = perm[cut:]
        batches.append(rest[torch.randperm(len(rest), generator=gen).numpy()])
    return batches


class _State:
    """A member's own training state: epoch, steps, schedule, this epoch's batches, loss history."""

    def __init__(self, member: Member, gen: torch.Generator):
        self.member, self.gen = member, gen
        self.epoch, self.step, self.total_epochs, self.total_steps = 0, 0, None, None
        self.batches: list[np.ndarray] = []
        self.pos, self.seen = 0, 0
        self.history: list[torch.Tensor] = []   # 0-d tensors, read once at the end (no sync per epoch)


def _layers(module: KernelAutoencoder) -> list[nn.Linear]:
    return [m for m in (*module.encoder, *module.decoder) if isinstance(m, nn.Linear)]


def train_ensemble(
    members: Sequence[Member],
    kh: int,
    kw: int,
    latent_dim: int = 2,
    epochs: int | None = None,
    batch_size: int = 4096,
    lr: float = 1e-2,
    device: str = "auto",
    progress: bool = True,
    hidden: tuple[int, ...] = (64, 32),
    activation: str = "relu",
    min_steps: int = 3000,
    max_epochs: int = 2000,
    shuffle_buffer: int = 1 << 19,
    threads: int | None = None,
    desc: str | None = None,
    lanes: int | None = None,
    resident: bool | None = None,
) -> list[TrainedAutoencoder]:
    """Train every member as `train_autoencoder(member.data[member.rows], kh, kw, seed=member.seed,
    **the same settings)` would, all at once; returns their models in member order.

    Settings are shared (one architecture: the members stack); data, seed and stopping are each
    member's own. Members whose batches differ much in size (per-model groups of very different
    sizes) would pad the small ones to the large: they train in separate stacks, one after the
    other, where the padding would cost more than another step (`_stacks`, STEP_ROWS). On CPU,
    lanes of stacks train at once in threads (`_lanes`), `threads` (None: torch's setting) shared
    among them; each model records the threads its lane had. `lanes`: a lane count to force (None:
    chosen). `resident` (None: on a GPU): the data held on the device, batches gathered there.
    Memory: the members' data (shared arrays are held once), a (M, batch, k) batch a lane, and M
    copies of the weights and of Adam's two moments.
    """
    if not members:
        return []
    k = kh * kw
    for mb in members:
        if mb.data.ndim != 2 or mb.data.shape[1] != k:
            raise ValueError(f"training data of shape {mb.data.shape}, expected (m, {k})")
        if mb.n == 0:
            raise CatalogError(f"no usable {kh}x{kw} kernels to train the autoencoder on")
        if not np.isfinite(mb.data if mb.rows is None else mb.data[mb.rows]).all():
            raise ValueError("training batch has NaN/Inf: pass preprocessed usable rows only")
    dev = resolve_device(device)
    threads = threads or torch.get_num_threads()
    modules = [_initial(mb.seed, k, latent_dim, hidden, activation) for mb in members]   # here: the RNG is global
    steps = [planned_steps(mb.n, batch_size, epochs, min_steps, max_epochs) for mb in members]
    widths = [min(batch_size, mb.n) for mb in members]
    if dev.type == "cuda":
        groups = [list(range(len(members)))]
    else:
        trained = [s // -(-mb.n // batch_size) * mb.n for s, mb in zip(steps, members)]   # epochs x rows
        groups = _lanes(trained, widths, steps, threads, lanes)
    step_rows = STEP_ROWS["cuda" if dev.type == "cuda" else "cpu"]
    plan = [[[group[j] for j in stack] for stack in _stacks([widths[i] for i in group], step_rows)]
            for group in groups]
    intra = max(1, threads // len(groups))
    settings = dict(latent_dim=latent_dim, epochs=epochs, batch_size=batch_size, lr=lr, dev=dev,
                    hidden=hidden, activation=activation, min_steps=min_steps, max_epochs=max_epochs,
                    shuffle_buffer=shuffle_buffer, threads=intra, resident=resident)
    out: list[TrainedAutoencoder | None] = [None] * len(members)
    ticker = _Progress(desc or f"autoencoders {kh}x{kw}", len(members),
                       sum(max(steps[j] for j in stack) for lane in plan for stack in lane), progress)

    def train_lane(lane: list[list[int]]) -> None:
        for stack in lane:
            trained = _train_stack([members[j] for j in stack], [modules[j] for j in stack], kh, kw,
                                   ticker=ticker, **settings)
            for j, model in zip(stack, trained):
                out[j] = model

    try:
        with _deterministic(intra, dev):
            if len(plan) == 1:
                train_lane(plan[0])
            else:   # lanes in threads: torch releases the GIL in its kernels; each lane's OpenMP
                    # team is its own, of `intra` threads (they inherit the count set here)
                with ThreadPoolExecutor(len(plan), thread_name_prefix="kc-lane") as pool:
                    try:     # in the order they end: a failed lane is seen while others still train
                        for future in as_completed([pool.submit(train_lane, lane) for lane in plan]):
                            future.result()
                    except BaseException:
                        ticker.stop.set()       # the other lanes end at their next step
                        raise
    finally:
        ticker.close()
    return out   # type: ignore[return-value]


def planned_steps(n: int, batch_size: int, epochs: int | None, min_steps: int, max_epochs: int) -> int:
    """The optimiser steps a member of n rows takes: `epoch_batches` cuts ceil(n / batch_size)
    batches an epoch, whatever the shuffle buffer, and auto epochs are decided from that count."""
    per_epoch = -(-n // batch_size)
    return (auto_epochs(per_epoch, min_steps, max_epochs) if epochs is None else epochs) * per_epoch


def _lanes(rows: list[int], widths: list[int], steps: list[int], threads: int, lanes: int | None) -> list[list[int]]:
    """Members (by index) split into lanes trained at once in threads, balanced by their work
    (rows trained plus each step's fixed cost; longest first onto the least loaded lane).

    A lane runs its own Python loop with its own OpenMP team (`threads` // lanes threads): lanes
    of one thread never wait at OpenMP barriers (busy cores, a passive wait policy) and keep the
    cores busy where one batched product a step parallelises poorly (a ~10 k-weight MLP): on 2
    cores the 7 members of a cross-fit train 1.0-1.7x as fast as one stack on 2 threads with
    spinning OpenMP threads, 1.3-3x with passive ones (bench/bench_ensemble.py). A step's Python runs under
    the GIL, so lanes are added while each lane's arithmetic a step (its share of the widths)
    still covers the other lanes' fixed cost (STEP_ROWS each); two lanes always where two
    members and two threads are. `lanes`: a count to force (tests, benches); None: chosen here."""
    if lanes is None:
        lanes = 1
        while lanes < min(threads, len(rows)) and \
                (lanes < 2 or lanes * STEP_ROWS["cpu"] <= sum(widths) / (lanes + 1)):
            lanes += 1
    lanes = max(1, min(lanes, len(rows)))
    work = [r + s * STEP_ROWS["cpu"] for r, s in zip(rows, steps)]
    load, groups = [0.0] * lanes, [[] for _ in range(lanes)]
    for j in sorted(range(len(rows)), key=lambda j: (-work[j], j)):
        lane = min(range(lanes), key=load.__getitem__)
        groups[lane].append(j)
        load[lane] += work[j]
    return [sorted(g) for g in groups if g]


def _initial(seed: int, k: int, latent_dim: int, hidden, activation: str) -> KernelAutoencoder:
    """The lone trainer's initial weights for `seed`, under a forked global RNG (so built in one
    thread: lanes seeding the global RNG at once would draw each other's weights)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return KernelAutoencoder(k, latent_dim, tuple(hidden), activation)


def _resident(members: Sequence[Member], k: int, dev: torch.device) -> tuple[torch.Tensor, list[int]]:
    """Every distinct data array of the members (shared ones once) in one device tensor, a zero
    row last (padding), and where each member's array starts in it."""
    where: dict[int, int] = {}
    arrays, at = [], 0
    for mb in members:
        if id(mb.data) not in where:
            where[id(mb.data)] = at
            arrays.append(mb.data)
            at += len(mb.data)
    pool = torch.zeros((at + 1, k), dtype=torch.float32, device=dev)
    for array, start in zip(arrays, sorted(where.values())):
        pool[start:start + len(array)].copy_(torch.from_numpy(np.ascontiguousarray(array, np.float32)))
    return pool, [where[id(mb.data)] for mb in members]


class _Progress:
    """One progress bar (or, without a terminal, a line a quarter) for every lane's steps, and the
    flag that stops the other lanes when one fails."""

    def __init__(self, desc: str, members: int, total: int, progress: bool):
        from tqdm.auto import tqdm

        self.desc, self.members, self.training = desc, members, members
        self.total, self.done, self.progress = total, 0, progress
        self.lock, self.stop = threading.Lock(), threading.Event()
        self.bar = tqdm(total=total, desc=f"{desc} ({members} together)", unit="step", file=sys.stderr,
                        disable=None if progress else True, leave=False)
        self.quarter = max(total // 4, 1)

    def step(self, finished: int = 0) -> None:
        """One step of one stack; `finished`: its members that ended with it."""
        if self.stop.is_set():
            raise CatalogError("training stopped: another lane failed")
        with self.lock:
            self.done += 1
            self.training -= finished
            self.bar.update(1)
            if self.progress and self.bar.disable and (self.done % self.quarter == 0 or self.done == self.total):
                print(f"{self.desc}: step {self.done}/{self.total}, {self.training} of {self.members} training",
                      file=sys.stderr, flush=True)

    def close(self) -> None:
        self.bar.close()


def _train_stack(members: Sequence[Member], modules: list[KernelAutoencoder], kh: int, kw: int,
                 latent_dim: int, epochs: int | None, batch_size: int, lr: float, dev: torch.device,
                 hidden: tuple[int, ...], activation: str, min_steps: int, max_epochs: int,
                 shuffle_buffer: int, threads: int, ticker: _Progress,
                 resident: bool | None = None) -> list[TrainedAutoencoder]:
    """`train_ensemble` for members of similar batch widths: one stack, one step for all, from the
    members' initial `modules` (trained in place). `resident` (None: on a GPU): the members' data
    copied to the device once, each step's batch gathered there, instead of a host batch copied
    over every step."""
    resident = dev.type == "cuda" if resident is None else resident
    k = kh * kw
    layer_lists = [_layers(m) for m in modules]
    n_layers = len(layer_lists[0])
    linear_out = {len(hidden), n_layers - 1}        # the latent and the output layer: no activation
    act = _ACT[activation]
    # every member's weights in one row of a flat (M, P) tensor: layer i's weight (out, in) as
    # nn.Linear keeps it, then its bias; Adam then updates the whole ensemble in a few tensor ops
    shapes = [tuple(layer.weight.shape) for layer in layer_lists[0]]
    offsets, at = [], 0
    for out_dim, in_dim in shapes:
        offsets.append((at, at + out_dim * in_dim))
        at += out_dim * in_dim + out_dim
    with torch.no_grad():
        flat = torch.stack([torch.cat([t for layer in ls for t in (layer.weight.reshape(-1), layer.bias)])
                            for ls in layer_lists]).to(dev)
    m1, m2 = torch.zeros_like(flat), torch.zeros_like(flat)
    states = [_State(mb, torch.Generator().manual_seed(mb.seed)) for mb in members]
    active = list(range(len(members)))          # member index of each slot (row) of the stack
    finished: dict[int, torch.Tensor] = {}
    loss_acc = torch.zeros(len(members), dtype=torch.float64, device=dev)   # by slot
    buffers: dict[int, np.ndarray] = {}
    pool, starts = _resident(members, k, dev) if resident else (None, [])
    row_weights: dict[tuple, torch.Tensor] = {}     # padded steps: each member's row weights
    global_step = 0

    def leaves(flat: torch.Tensor) -> list[torch.Tensor]:
        """Each layer's weight (M, out, in) and bias (M, 1, out) as leaves viewing `flat` (Adam's
        updates of `flat` are theirs): autograd gives each its own gradient, where views taken of
        one leaf would each cost a zero-filled gradient of the whole flat tensor."""
        rows, out = flat.shape[0], []
        for (out_dim, in_dim), (w_at, b_at) in zip(shapes, offsets):
            out.append(flat[:, w_at:b_at].view(rows, out_dim, in_dim).requires_grad_(True))
            out.append(flat[:, b_at:b_at + out_dim].view(rows, 1, out_dim).requires_grad_(True))
        return out

    params = leaves(flat)

    def forward(x: torch.Tensor) -> torch.Tensor:
        h = x
        for i in range(len(shapes)):
            # the transposed view, as F.linear multiplies: per member the same products, bit for bit
            h = torch.baddbmm(params[2 * i + 1], h, params[2 * i].transpose(1, 2))
            if i not in linear_out:
                h = act(h)
        return h

    for st in states:
        st.batches = epoch_batches(st.member.n, batch_size, shuffle_buffer, st.gen)
    while active:
        # this step's batch of every active member, padded to the longest
        picks = [states[j].batches[states[j].pos] for j in active]
        sizes = [len(p) for p in picks]
        width = max(sizes)
        if pool is None:
            buf = buffers.get(width)
            if buf is None:
                buf = buffers[width] = np.zeros((len(active), width, k), np.float32)
            for slot, (j, p) in enumerate(zip(active, picks)):
                mb = states[j].member
                np.take(mb.data, p if mb.rows is None else mb.rows[p], axis=0, out=buf[slot, :len(p)])
            xb = torch.from_numpy(buf).to(dev, non_blocking=True)
        else:       # one gather on the device: the batch's positions in the pool, padding its zero row
            at = np.full((len(active), width), len(pool) - 1, np.int64)
            for slot, (j, p) in enumerate(zip(active, picks)):
                mb = states[j].member
                at[slot, :len(p)] = starts[j] + (p if mb.rows is None else mb.rows[p])
            xb = pool.index_select(0, torch.from_numpy(at).to(dev).view(-1)).view(len(active), width, k)
        for p in params:
            p.grad = None
        cos = nn.functional.cosine_similarity(xb, forward(xb), dim=2, eps=1e-8)   # (M, width)
        if min(sizes) == width:
            per_member = 1.0 - cos.mean(dim=1)
        else:       # each member's mean over its own rows (as alone): padded rows get zero gradient
            key = (width, tuple(sizes))
            weights = row_weights.get(key)
            if weights is None:     # 1/size on a member's rows, 0 on its padding: mean's gradient
                weights = row_weights[key] = torch.zeros(len(sizes), width, device=dev)
                for slot, size in enumerate(sizes):
                    weights[slot, :size] = 1.0 / size
            per_member = 1.0 - (cos * weights).sum(dim=1)
        per_member.sum().backward()
        # Adam (torch.optim.Adam's single-tensor update, element by element the same), each
        # member at its own learning rate (its own cosine schedule)
        t = global_step + 1                  # every active member has taken exactly this many steps
        bc1, bc2_sqrt = 1.0 - BETA1 ** t, math.sqrt(1.0 - BETA2 ** t)
        step_size = []
        for j in active:
            st = states[j]
            rate = lr if st.total_steps is None else \
                lr * 0.5 * (1.0 + math.cos(math.pi * min(st.step / st.total_steps, 1.0)))
            step_size.append(rate / bc1)
        with torch.no_grad():
            g = torch.cat([p.grad.reshape(len(active), -1) for p in params], dim=1)   # flat's layout
            m1.lerp_(g, 1.0 - BETA1)
            m2.mul_(BETA2).addcmul_(g, g, value=1.0 - BETA2)
            denom = (m2.sqrt() / bc2_sqrt).add_(EPS)
            flat.sub_(m1 * torch.tensor(step_size, dtype=flat.dtype, device=dev)[:, None] / denom)
            loss_acc += per_member.detach().double() * torch.tensor(sizes, dtype=torch.float64, device=dev)
        global_step += 1
        # each member's bookkeeping: end of its epoch, its auto epochs, its end
        done, ended = [], []
        for slot, (j, size) in enumerate(zip(active, sizes)):
            st = states[j]
            st.step += 1
            st.pos += 1
            st.seen += size
            if st.pos < len(st.batches):
                continue
            ended.append(slot)
            st.epoch += 1
            if st.total_epochs is None:
                st.total_epochs = epochs if epochs is not None else auto_epochs(st.step, min_steps, max_epochs)
            if st.total_steps is None:
                st.total_steps = st.total_epochs * st.step
            if st.epoch >= st.total_epochs:
                done.append(slot)
            else:
                st.batches, st.pos = epoch_batches(st.member.n, batch_size, shuffle_buffer, st.gen), 0
        if ended:
            idx = torch.tensor(ended, device=dev)
            seen = torch.tensor([states[active[slot]].seen for slot in ended], dtype=torch.float64, device=dev)
            means = loss_acc[idx] / seen
            loss_acc[idx] = 0.0
            for slot, value in zip(ended, means):
                states[active[slot]].history.append(value)
                states[active[slot]].seen = 0
        ticker.step(len(done))
        if done:                             # out of the stack: keep its weights, drop its row
            keep = [slot for slot in range(len(active)) if slot not in done]
            for slot in done:
                finished[active[slot]] = flat[slot].detach().clone()
            if keep:
                keep_t = torch.tensor(keep, dtype=torch.long, device=dev)
                with torch.no_grad():
                    flat = flat.index_select(0, keep_t)
                    m1, m2, loss_acc = m1.index_select(0, keep_t), m2.index_select(0, keep_t), loss_acc[keep_t]
                params = leaves(flat)
            active = [active[slot] for slot in keep]
            buffers.clear()
            row_weights.clear()
    out = []
    for j, (mb, module) in enumerate(zip(members, modules)):
        st, weights = states[j], finished[j].cpu()
        with torch.no_grad():
            for layer, (w_at, b_at) in zip(_layers(module), offsets):
                layer.weight.copy_(weights[w_at:b_at].view_as(layer.weight))
                layer.bias.copy_(weights[b_at:b_at + layer.bias.numel()])
        module.to(dev).eval()
        history = [float(h) for h in torch.stack(st.history).cpu()]
        config = {
            "format": FORMAT, "kh": kh, "kw": kw, "k": k, "latent_dim": latent_dim,
            "hidden": list(hidden), "activation": activation, "loss": "1-cos", "optimizer": "adam",
            "lr": lr, "schedule": "cosine", "batch_size": batch_size, "epochs": st.total_epochs,
            "steps": st.step, "seed": mb.seed, "shuffle_buffer": shuffle_buffer,
            "device": str(dev), "threads": threads,
            "torch": str(torch.__version__), "ensemble": len(members),   # members in its stack
        }
        out.append(TrainedAutoencoder(module, config, history[-1], history, str(dev)))
    return out
