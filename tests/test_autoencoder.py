"""Autoencoder: determinism, streaming, devices, save/load, thresholds."""
import numpy as np
import pytest
import torch

from kernel_catalog.analysis.embed.autoencoder import (
    _minibatches, classified, encode, load, save, train_autoencoder,
)
from kernel_catalog.errors import CatalogError
from kernel_catalog.analysis.params import default_threshold
from kernel_catalog.analysis.preprocess import preprocess

FAST = dict(epochs=4, batch_size=64, progress=False, threads=1)


@pytest.fixture(scope="module")
def x():
    rng = np.random.default_rng(0)
    return preprocess(rng.normal(size=(600, 25)).astype(np.float32))[0]


def _weights(model):
    return {k: v.clone() for k, v in model.module.state_dict().items()}


def test_same_seed_gives_identical_weights_and_embeddings(x):
    a = train_autoencoder(x, 5, 5, seed=3, **FAST)
    b = train_autoencoder(x, 5, 5, seed=3, **FAST)
    for k, v in _weights(a).items():
        assert torch.equal(v, _weights(b)[k]), k
    za, ra, ca = encode(a, x)
    zb, rb, cb = encode(b, x)
    np.testing.assert_array_equal(za, zb)
    np.testing.assert_array_equal(ca, cb)
    assert a.history == b.history and len(a.history) == 4
    c = train_autoencoder(x, 5, 5, seed=4, **FAST)
    assert not torch.equal(_weights(a)["encoder.0.weight"], _weights(c)["encoder.0.weight"])


def test_training_leaves_global_torch_state_alone(x):
    state = torch.get_rng_state()
    threads, det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    train_autoencoder(x, 5, 5, seed=1, **FAST)
    assert torch.equal(state, torch.get_rng_state())
    assert torch.get_num_threads() == threads
    assert torch.are_deterministic_algorithms_enabled() == det


def test_streaming_equals_in_memory_when_the_buffer_holds_the_stream(x):
    chunks = lambda: (x[i:i + 97] for i in range(0, len(x), 97))  # noqa: E731
    mem = train_autoencoder(x, 5, 5, seed=2, **FAST)
    stream = train_autoencoder(chunks, 5, 5, seed=2, shuffle_buffer=len(x), **FAST)
    for k, v in _weights(mem).items():
        assert torch.equal(v, _weights(stream)[k]), k


def test_bounded_buffer_sees_every_row_once_per_epoch(x):
    chunks = lambda: (x[i:i + 50] for i in range(0, len(x), 50))  # noqa: E731
    gen = torch.Generator().manual_seed(0)
    batches = list(_minibatches(chunks, 25, 64, 128, gen))
    assert all(len(b) <= 64 for b in batches)
    seen = np.concatenate(batches)
    assert len(seen) == len(x)
    order = np.lexsort(seen.T[::-1])
    np.testing.assert_array_equal(seen[order], x[np.lexsort(x.T[::-1])])
    model = train_autoencoder(chunks, 5, 5, seed=0, shuffle_buffer=128, **FAST)
    assert np.isfinite(model.final_loss)


def test_auto_epochs_give_enough_steps(x):
    m = train_autoencoder(x, 5, 5, batch_size=300, min_steps=40, progress=False, threads=1)
    assert m.config["epochs"] == 20 and m.config["steps"] == 40    # 2 steps/epoch
    m = train_autoencoder(x, 5, 5, batch_size=64, min_steps=1, progress=False, threads=1)
    assert m.config["epochs"] == 10                                # lower bound


def test_loss_goes_down_on_structured_data():
    rng = np.random.default_rng(0)
    basis = rng.normal(size=(2, 49))
    w = rng.normal(size=(800, 2)) @ basis + 0.05 * rng.normal(size=(800, 49))
    xs = preprocess(w.astype(np.float32))[0]
    m = train_autoencoder(xs, 7, 7, epochs=15, batch_size=128, progress=False, threads=1)
    assert m.history[-1] < 0.5 * m.history[0]
    z, recon, rcos = encode(m, xs)
    assert z.shape == (800, 2) and recon.shape == (800, 49) and rcos.shape == (800,)
    assert classified(rcos, 0.3).mean() > 0.9


def test_cuda_without_cuda_is_a_user_error(x):
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    with pytest.raises(CatalogError, match="--device cuda: no CUDA device"):
        train_autoencoder(x, 5, 5, device="cuda", **FAST)
    with pytest.raises(CatalogError, match="unknown device"):
        train_autoencoder(x, 5, 5, device="tpu", **FAST)
    assert train_autoencoder(x[:100], 5, 5, device="auto", **FAST).device == "cpu"


def test_empty_or_bad_data(x):
    with pytest.raises(CatalogError, match="no usable 5x5"):
        train_autoencoder(lambda: iter([]), 5, 5, **FAST)
    with pytest.raises(ValueError):
        train_autoencoder(x[:, :9], 5, 5, **FAST)


def test_save_load_round_trip(x, tmp_path):
    m = train_autoencoder(x, 5, 5, seed=0, **FAST)
    save(m, tmp_path / "ae.pt")
    back = load(tmp_path / "ae.pt")
    assert back.config == m.config and back.history == m.history
    for got, want in zip(encode(back, x), encode(m, x)):
        np.testing.assert_array_equal(got, want)
    (tmp_path / "junk.pt").write_bytes(b"not a model")
    with pytest.raises(CatalogError):
        load(tmp_path / "junk.pt")
    with pytest.raises(CatalogError, match="no autoencoder model"):
        load(tmp_path / "missing.pt")


@pytest.mark.parametrize("change", [
    {"hidden": [1 << 40, 1 << 40]},            # would allocate petabytes before loading its weights
    {"k": 49}, {"latent_dim": 3}, {"activation": "os.system"}, {"hidden": "64"}, {"k": None},
])
def test_a_model_file_whose_config_and_weights_disagree_is_refused_without_building_it(x, tmp_path, change):
    """A catalog's model file may be someone else's: its config is checked against its weights'
    shapes on the meta device before any layer is built."""
    import torch

    m = train_autoencoder(x, 5, 5, seed=0, **FAST)
    save(m, tmp_path / "ae.pt")
    blob = torch.load(tmp_path / "ae.pt", weights_only=True)
    blob["config"] = {**blob["config"], **change}
    torch.save(blob, tmp_path / "bad.pt")
    with pytest.raises(CatalogError, match="config and weights do not agree"):
        load(tmp_path / "bad.pt")


def test_default_thresholds():
    assert default_threshold(7, 7) == 0.3 and default_threshold(5, 5) == 0.2
    assert default_threshold(9, 9) == 0.3 and default_threshold(3, 3) == 0.1
    assert default_threshold(1, 7) == 0.1 and default_threshold(5, 7) == 0.2
