"""Ensemble training: autoencoders trained together as one batched model equal each trained alone."""
import numpy as np
import pytest
import torch

from kernel_catalog.analysis.embed.autoencoder import _minibatches, encode, train_autoencoder
from kernel_catalog.analysis.embed.cross_fit import fold_of, held_out_cos
from kernel_catalog.analysis.embed.ensemble import Member, epoch_batches, train_ensemble
from kernel_catalog.analysis.preprocess import preprocess
from kernel_catalog.errors import CatalogError

# few optimiser steps: training at lr 1e-2 amplifies last-bit differences (batched vs lone kernels
# sum in another order) by about 10x every few dozen steps, so equality is checked early on
FAST = dict(epochs=3, batch_size=64, progress=False, threads=1)
ATOL = 1e-4


@pytest.fixture(scope="module")
def x():
    return preprocess(np.random.default_rng(0).normal(size=(300, 25)).astype(np.float32))[0]


def _alone(member: Member, **kwargs):
    data = member.data if member.rows is None else member.data[member.rows]
    return train_autoencoder(data, 5, 5, seed=member.seed, **kwargs)


def _assert_same(alone, together, atol=ATOL):
    a, b = alone.module.state_dict(), together.module.state_dict()
    for name in a:
        torch.testing.assert_close(b[name], a[name], atol=atol, rtol=0, msg=name)
    np.testing.assert_allclose(together.history, alone.history, atol=atol, rtol=0)
    for field in ("epochs", "steps", "seed", "latent_dim", "hidden", "batch_size", "lr"):
        assert together.config[field] == alone.config[field], field


@pytest.mark.parametrize("n, buffer_rows", [(300, 1 << 19), (300, 100), (256, 100), (40, 100)])
def test_epoch_batches_are_the_lone_trainers_batches(x, n, buffer_rows):
    """Same generator state, same rows in the same batches, for one in-memory array (including the
    buffered path: full batches of one permutation, then the leftover permuted again)."""
    data = x[:n]
    lone = list(_minibatches(lambda: iter((data,)), 25, 64, buffer_rows, torch.Generator().manual_seed(7)))
    gen = torch.Generator().manual_seed(7)
    ours = [data[b] for b in epoch_batches(n, 64, buffer_rows, gen)]
    assert [len(b) for b in ours] == [len(b) for b in lone]
    for a, b in zip(lone, ours):
        np.testing.assert_array_equal(a, b)


def test_each_member_equals_the_member_trained_alone(x):
    """Own seed, own rows (shared array, a subset, a short set padded in every step), own steps."""
    members = [Member(x, seed=3), Member(x, np.arange(0, 300, 2), seed=4), Member(x[:40], seed=5),
               Member(x, np.arange(100, 137), seed=3)]
    together = train_ensemble(members, 5, 5, **FAST)
    assert [m.config["steps"] for m in together] == [15, 9, 3, 3]
    for member, model in zip(members, together):
        _assert_same(_alone(member, **FAST), model)
        assert model.config["ensemble"] == 4


def test_each_member_decides_its_own_epochs_and_schedule(x):
    """Auto epochs (enough for min_steps) per member, and the buffered batching, as alone."""
    kwargs = dict(FAST, epochs=None, min_steps=20, shuffle_buffer=100, batch_size=128)
    members = [Member(x, seed=1), Member(x[:90], seed=2)]
    together = train_ensemble(members, 5, 5, **kwargs)
    assert [(m.config["epochs"], m.config["steps"]) for m in together] == [(10, 30), (20, 20)]
    for member, model in zip(members, together):
        _assert_same(_alone(member, **kwargs), model)


def test_same_members_same_weights_and_global_state_untouched(x):
    state, threads = torch.get_rng_state(), torch.get_num_threads()
    det = torch.are_deterministic_algorithms_enabled()
    a = train_ensemble([Member(x, seed=1), Member(x[:50], seed=2)], 5, 5, **FAST)
    b = train_ensemble([Member(x, seed=1), Member(x[:50], seed=2)], 5, 5, **FAST)
    for ma, mb in zip(a, b):
        for name, v in ma.module.state_dict().items():
            assert torch.equal(v, mb.module.state_dict()[name]), name
        assert ma.history == mb.history
    assert torch.equal(state, torch.get_rng_state()) and torch.get_num_threads() == threads
    assert torch.are_deterministic_algorithms_enabled() == det


def test_held_out_scores_equal_fold_models_trained_alone(x):
    """cross_fit.held_out_cos trains its folds together; each fold's model as if trained alone."""
    scores = held_out_cos(x, 5, 5, folds=3, seed=2, **FAST)
    fold = fold_of(len(x), 3, seed=2)
    for f in range(3):
        model = train_autoencoder(x[fold != f], 5, 5, seed=2, **FAST)
        np.testing.assert_allclose(scores[fold == f], encode(model, x[fold == f])[2], atol=ATOL)


def test_bad_members(x):
    with pytest.raises(CatalogError, match="no usable 5x5 kernels"):
        train_ensemble([Member(x), Member(x, np.arange(0))], 5, 5, **FAST)
    bad = x.copy()
    bad[3, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        train_ensemble([Member(bad)], 5, 5, **FAST)
    with pytest.raises(ValueError, match="expected"):
        train_ensemble([Member(x)], 3, 3, **FAST)
    assert train_ensemble([], 5, 5, **FAST) == []


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")
def test_cuda_without_cuda_is_a_user_error(x):
    with pytest.raises(CatalogError, match="no CUDA device"):
        train_ensemble([Member(x)], 5, 5, **dict(FAST, device="cuda"))


def test_members_of_very_different_batch_widths_train_in_separate_stacks(x):
    """Padding 20- and 30-row members to 300 would cost more than a second stack does: two stacks, each
    member still as alone; stacks are chosen by padded rows plus a fixed cost a stack."""
    from kernel_catalog.analysis.embed.ensemble import _stacks

    assert _stacks([120] + [96] * 10, 400) == [list(range(11))]                 # cross-fit of 120 kernels
    assert _stacks([1000] + [800] * 10, 400) == [[0], list(range(1, 11))]      # 2,000 padded rows: split
    assert _stacks([20, 4096, 4096, 25], 400) == [[1, 2], [3, 0]]
    kwargs = dict(FAST, batch_size=512)
    members = [Member(x, seed=1), Member(x[:20], seed=2), Member(x, np.arange(1, 300), seed=3), Member(x[:30], seed=4)]
    together = train_ensemble(members, 5, 5, **kwargs)
    assert [m.config["ensemble"] for m in together] == [2, 2, 2, 2]       # 550 padded rows: two stacks
    for member, model in zip(members, together):
        _assert_same(_alone(member, **kwargs), model)


def test_lanes_train_at_once_each_member_as_alone(x):
    """Lanes (threads of one torch thread each) give every member the weights it gets alone, the
    same run after run (initial weights are drawn before the lanes start: the global RNG is
    shared), and leave the global settings as they were."""
    state, threads = torch.get_rng_state(), torch.get_num_threads()
    members = [Member(x, seed=1), Member(x, np.arange(0, 300, 2), seed=2), Member(x[:90], seed=3),
               Member(x, np.arange(50, 290), seed=4)]
    kwargs = dict(FAST, threads=3, lanes=3)
    a = train_ensemble(members, 5, 5, **kwargs)
    b = train_ensemble(members, 5, 5, **kwargs)
    assert [m.config["threads"] for m in a] == [1] * 4
    for member, ma, mb in zip(members, a, b):
        _assert_same(_alone(member, **FAST), ma)
        for name, v in ma.module.state_dict().items():
            assert torch.equal(v, mb.module.state_dict()[name]), name
    assert torch.equal(state, torch.get_rng_state()) and torch.get_num_threads() == threads


def test_lanes_are_chosen_by_threads_and_balanced_by_work():
    from kernel_catalog.analysis.embed.ensemble import _lanes

    def lanes(widths, threads, rows=None):
        return _lanes(rows or [2000 * w for w in widths], widths, [2000] * len(widths), threads, None)

    cross_fit = [1000] + [800] * 6                  # 5 folds of 1,000 kernels, the null
    assert lanes(cross_fit, 1) == [list(range(7))]
    assert sorted(map(len, lanes(cross_fit, 2))) == [3, 4]
    assert len(lanes(cross_fit, 16)) == 4           # a step's Python would keep more lanes waiting
    assert len(lanes([4096] * 7, 16)) == 7          # full batches: a lane a member
    assert len(lanes([120, 96], 2)) == 2            # two members, two threads: two lanes
    assert lanes([50], 8) == [[0]]
    # longest first onto the least loaded lane: the big member alone, the rest together
    assert lanes([4096, 4096, 1000, 1000], 2, rows=[40_000_000, 10_000_000, 10_000_000, 10_000_000]) == [[0], [1, 2, 3]]


def test_progress_counts_every_lanes_steps_to_the_planned_total(x, capsys):
    """Without a terminal: a line a quarter, counting the steps of all lanes against a total known
    before training (each member's auto epochs follow from its batch count)."""
    from kernel_catalog.analysis.embed.ensemble import planned_steps

    kwargs = dict(FAST, epochs=None, min_steps=20, batch_size=128, threads=2, lanes=2, progress=True)
    members = [Member(x, seed=1), Member(x[:90], seed=2), Member(x[:200], seed=3)]
    models = train_ensemble(members, 5, 5, desc="probe", **kwargs)
    planned = [planned_steps(mb.n, 128, None, 20, 2000) for mb in members]
    assert planned == [m.config["steps"] for m in models] == [30, 20, 20]
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("probe: step")]
    assert lines[-1] == "probe: step 50/50, 0 of 3 training"     # lanes: [0] and [1, 2] (one stack of 20)


def test_data_resident_on_the_device_gives_the_same_models(x):
    """The GPU's path (the members' arrays copied once, each batch gathered there, padding from a
    zero row), run on the CPU: every member as alone, shared arrays held once."""
    members = [Member(x, seed=1), Member(x, np.arange(0, 300, 3), seed=2), Member(x[:40].copy(), seed=3)]
    together = train_ensemble(members, 5, 5, resident=True, **FAST)
    for member, model in zip(members, together):
        _assert_same(_alone(member, **FAST), model)
    from kernel_catalog.analysis.embed.ensemble import _resident

    pool, starts = _resident(members, 25, torch.device("cpu"))
    assert pool.shape == (341, 25) and starts == [0, 0, 300] and not pool[-1].any()
    np.testing.assert_array_equal(pool[300:340].numpy(), x[:40])


class _Rows(np.ndarray):
    """Member rows that count the batches drawn through them and can fail or wait at a given one."""

    def __getitem__(self, item):
        if isinstance(item, np.ndarray):
            self.hooks["calls"] += 1
            self.hooks["at"](self.hooks["calls"])
        return np.asarray(self)[item]


def _rows(n, at):
    rows = np.arange(n).view(_Rows)
    rows.hooks = {"calls": 0, "at": at}
    return rows


def test_a_failing_lane_stops_the_others_and_its_error_is_raised(x, monkeypatch):
    """The slow lane waits (events, no timers) until the failure is seen and the stop is raised,
    then ends at its next step: the result does not depend on how fast or busy the machine is."""
    import threading

    from kernel_catalog.analysis.embed import ensemble

    tickers, failed = [], threading.Event()

    class Recorded(ensemble._Progress):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            tickers.append(self)

    monkeypatch.setattr(ensemble, "_Progress", Recorded)

    def fail(call):
        if call == 3:
            failed.set()
            raise RuntimeError("lane failed on purpose")

    def wait_for_the_stop(call):
        if call == 5:
            assert failed.wait(60) and tickers[0].stop.wait(60)

    slow = Member(x, _rows(300, wait_for_the_stop), seed=2)         # 5 steps an epoch, 10,000 planned
    kwargs = dict(FAST, epochs=2000, threads=2, lanes=2)
    with pytest.raises(RuntimeError, match="on purpose"):
        train_ensemble([Member(x[:64], _rows(64, fail), seed=1), slow], 5, 5, **kwargs)
    assert slow.rows.hooks["calls"] <= 5          # never past its 5th batch: it waited there for the stop


def test_lanes_are_balanced_by_the_rows_each_member_trains(x, monkeypatch):
    """A member's work is its epochs times its rows (not its steps times its rows: a large member
    takes several steps an epoch)."""
    from kernel_catalog.analysis.embed import ensemble

    seen = []
    real = ensemble._lanes
    monkeypatch.setattr(ensemble, "_lanes", lambda rows, *args: seen.append(rows) or real(rows, *args))
    train_ensemble([Member(x, seed=1), Member(x[:64], seed=2)], 5, 5, **dict(FAST, threads=2))
    assert seen == [[3 * 300, 3 * 64]]        # 3 epochs: 5 steps of 300 rows, 1 step of 64
