"""Training: config checks, determinism, learning, files, the shipped network, noise-aware training."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import SIGMAS
from hypothesis import given, settings
from hypothesis import strategies as st

import noiseprop
from noiseprop import Network, Noise
from noiseprop import training as training_module
from noiseprop.activations import Linear, Sigmoid, Tanh
from noiseprop.datasets import MNIST, mnist
from noiseprop.montecarlo import sample
from noiseprop.training import EpochRecord, TrainConfig, default_network, evaluate, train


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """One torch thread for this module: with two cores shared by other work, two spinning threads
    can stall for minutes. Restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data() -> MNIST:
    return mnist()


@pytest.fixture(scope="module")
def test_split(data):
    images, labels = data.scaled("test")
    return torch.from_numpy(images), torch.from_numpy(labels)


def _same_weights(first: Network, second: Network) -> bool:
    return all(
        torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)
        for a, b in zip(first.layers, second.layers, strict=True)
    )


# ------------------------------------------------------------------------------------- config
_LR = r"TrainConfig\.learning_rate must be a finite learning rate > 0"
_BAD_FIELDS = [
    ({"hidden": "100"}, TypeError, r"TrainConfig\.hidden must be a tuple of hidden-layer widths"),
    ({"hidden": 100}, TypeError, r"TrainConfig\.hidden must be a tuple"),
    ({"hidden": (100, 0)}, ValueError, r"TrainConfig\.hidden\[1\] must be an integer >= 1; got 0\."),
    ({"hidden": (10.0,)}, TypeError, r"TrainConfig\.hidden\[0\] must be an integer >= 1; got float"),
    (
        {"activation": "no-such-activation"},
        ValueError,
        r"TrainConfig\.activation must be an activation such",
    ),
    ({"activation": "sigmoid:gain=-1"}, ValueError, r"TrainConfig\.activation .*Sigmoid\.gain"),
    ({"activation": "sigmoid:gain"}, ValueError, r"TrainConfig\.activation .*malformed"),
    ({"activation": 3}, TypeError, r"TrainConfig\.activation must be a string .*; got int 3\."),
    ({"epochs": 0}, ValueError, r"TrainConfig\.epochs must be an integer >= 1; got 0\."),
    ({"epochs": 2.0}, TypeError, r"TrainConfig\.epochs must be an integer >= 1; got float 2\.0\."),
    ({"epochs": True}, TypeError, r"TrainConfig\.epochs must be an integer >= 1; got bool True\."),
    ({"batch_size": -4}, ValueError, r"TrainConfig\.batch_size must be an integer >= 1; got -4\."),
    ({"learning_rate": 0}, ValueError, _LR + r"; got 0\."),
    ({"learning_rate": math.inf}, ValueError, _LR + r"; got inf\."),
    ({"learning_rate": "0.1"}, TypeError, _LR + r"; got str '0\.1'\."),
    ({"schedule": "step"}, ValueError, r"\.schedule must be one of 'cosine', 'constant'; got 'step'\."),
    ({"optimizer": "rmsprop"}, ValueError, r"\.optimizer must be one of 'adam', 'sgd'; got 'rmsprop'\."),
    ({"seed": -1}, ValueError, r"TrainConfig\.seed must be an integer >= 0; got -1\."),
    ({"seed": 1.5}, TypeError, r"TrainConfig\.seed must be an integer >= 0; got float 1\.5\."),
    ({"train_noise": "AU=-1"}, ValueError, r"TrainConfig\.train_noise: Noise\.AU must be a finite"),
    ({"train_noise": "XX=1"}, ValueError, r"TrainConfig\.train_noise: .*unknown kind 'XX'"),
    ({"train_noise": 0.1}, TypeError, r"TrainConfig\.train_noise must be a Noise, a noise string"),
    ({"train_size": 0}, ValueError, r"TrainConfig\.train_size must be an integer >= 1; got 0\."),
    ({"train_size": "all"}, TypeError, r"TrainConfig\.train_size must be an integer >= 1; got str"),
]


@pytest.mark.parametrize(("kwargs", "error", "match"), _BAD_FIELDS)
def test_config_rejects_bad_fields(kwargs, error, match):
    with pytest.raises(error, match=match):
        TrainConfig(**kwargs)


def test_config_normalises_and_round_trips():
    config = TrainConfig(
        hidden=[30, 20], activation=Sigmoid(gain=2.0), learning_rate=1, train_noise="AU=0.1"
    )
    assert config.hidden == (30, 20)
    assert config.activation == "sigmoid:gain=2"
    assert config.learning_rate == 1.0 and isinstance(config.learning_rate, float)
    assert config.train_noise == Noise(AU=0.1)
    assert config.sizes == (784, 30, 20, 10)
    assert TrainConfig.from_dict(config.to_dict()) == config
    assert TrainConfig.from_dict(TrainConfig().to_dict()) == TrainConfig()
    with pytest.raises(
        ValueError, match=r"TrainConfig\.from_dict takes keys .*; got unknown \['momentum'\]"
    ):
        TrainConfig.from_dict({"momentum": 0.9})
    with pytest.raises(AttributeError):
        config.epochs = 3  # type: ignore[misc]


# (value, valid): valid is True / False where the answer is known independently, None for open text.
_INTS_FROM_1 = st.one_of(
    st.integers(-3, 40).map(lambda v: (v, v >= 1)),
    st.sampled_from([(2.0, False), (True, False), ("3", False), (None, False)]),
)
_FIELDS = {
    "hidden": st.one_of(
        st.lists(st.integers(-2, 50), max_size=3).map(lambda v: (tuple(v), all(w >= 1 for w in v))),
        st.sampled_from([("100", False), (100, False), ((10.0,), False), ([5, 6], True)]),
    ),
    "activation": st.one_of(
        st.sampled_from(["sigmoid", "sigmoid:gain=2", "linear:slope=0.9", "tanh", "relu", " ReLU "]).map(
            lambda v: (v, True)
        ),
        st.sampled_from(
            ["no-such-activation", "sigmoid:gain=-1", "tanh:gain=0", "linear:slope", "relu:x=1", 3]
        ).map(lambda v: (v, False)),
        st.text(max_size=12).map(lambda v: (v, None)),
    ),
    "epochs": _INTS_FROM_1,
    "batch_size": _INTS_FROM_1,
    "learning_rate": st.one_of(
        st.floats(allow_nan=True, allow_infinity=True).map(lambda v: (v, math.isfinite(v) and v > 0)),
        st.integers(-2, 2).map(lambda v: (v, v > 0)),
        st.sampled_from([("0.1", False), (None, False), (False, False)]),
    ),
    "schedule": st.sampled_from([("cosine", True), ("constant", True), ("Cosine", False), (1, False)]),
    "optimizer": st.sampled_from([("adam", True), ("sgd", True), ("Adam", False), (None, False)]),
    "seed": st.one_of(
        st.integers(-5, 2**70).map(lambda v: (v, v >= 0)),
        st.sampled_from([(0.0, False), ("1", False)]),
    ),
    "train_noise": st.one_of(
        st.sampled_from(
            [None, Noise(), Noise(AU=0.1, injection="before"), "AU=1e-3,MC=1e-4", "none"]
        ).map(lambda v: (v, True)),
        st.sampled_from(["AU=-1", "AU=nan", "QQ=1", "AU", 0.1, {"AU": 0.1}]).map(lambda v: (v, False)),
        st.text(max_size=12).map(lambda v: (v, None)),
    ),
    "train_size": st.one_of(
        st.integers(-3, 70_000).map(lambda v: (v, v >= 1)),
        st.sampled_from([(None, True), (10.0, False), ("100", False)]),
    ),
}


@settings(max_examples=300, deadline=None)
@given(st.fixed_dictionaries({name: strategy for name, strategy in _FIELDS.items()}))
def test_config_property_valid_constructs_invalid_raises(drawn):
    """Any mix of fields either constructs or raises ValueError/TypeError (nothing else); a config
    whose fields are all known-valid constructs, one with a known-invalid field raises."""
    kwargs = {name: value for name, (value, _) in drawn.items()}
    validity = [valid for _, valid in drawn.values()]
    try:
        config = TrainConfig(**kwargs)
    except (ValueError, TypeError) as error:
        assert "TrainConfig." in str(error), str(error)
        assert not all(valid is True for valid in validity), f"valid fields rejected: {error}"
        return
    assert False not in validity, f"invalid fields accepted: {kwargs}"
    assert TrainConfig.from_dict(config.to_dict()) == config


# ----------------------------------------------------------------------------------- training
def test_train_rejects_bad_arguments(data):
    with pytest.raises(TypeError, match=r"config must be a TrainConfig; got dict\."):
        train({"epochs": 1}, data=data)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"data must be an MNIST .*; got str\."):
        train(TrainConfig(), data="mnist")  # type: ignore[arg-type]
    with pytest.raises(
        ValueError,
        match=r"TrainConfig\.train_size must be <= the number of training images "
        r"\(60000\); got 60001\.",
    ):
        train(TrainConfig(train_size=60_001), data=data)


def test_training_is_deterministic_and_leaves_the_global_rng_alone(data):
    config = TrainConfig(
        hidden=(12, 8), activation="tanh", epochs=1, train_size=1500, train_noise="MU=0.01,AU=0.01"
    )
    state = torch.get_rng_state()
    first = train(config, data=data)
    assert torch.equal(torch.get_rng_state(), state)
    second = train(config, data=data)
    assert _same_weights(first, second)
    other_seed = train(TrainConfig.from_dict({**config.to_dict(), "seed": 1}), data=data)
    assert not _same_weights(first, other_seed)
    other_noise_draws = train(
        TrainConfig.from_dict({**config.to_dict(), "train_noise": None}), data=data
    )
    assert not _same_weights(first, other_noise_draws)
    assert [type(layer.activation) for layer in first.layers] == [Tanh, Tanh, Linear]
    assert first.layers[-1].activation == Linear(slope=1.0, offset=0.0)


def test_a_quick_run_clearly_learns(data, test_split):
    """784-32-10 on 5000 images for 2 epochs: chance is 10 %; this reaches about 90 %."""
    records: list[EpochRecord] = []
    config = TrainConfig(hidden=(32,), epochs=2, learning_rate=1e-2, train_size=5000)
    network = train(config, data=data, progress=records.append)
    accuracy = network.metadata["test_accuracy"]
    assert accuracy > 0.85
    assert [record.epoch for record in records] == [1, 2]
    assert records[-1].loss < records[0].loss
    assert all(record.seconds > 0 and 0 <= record.train_accuracy <= 1 for record in records)
    assert abs(records[-1].test_accuracy - accuracy) <= 2e-4  # float32 pass vs float64 pass
    assert evaluate(network, *test_split) == accuracy
    assert abs(evaluate(network, *test_split, dtype="float32", batch_size=999) - accuracy) <= 2e-4


def test_sgd_with_a_constant_rate_learns(data):
    config = TrainConfig(
        hidden=(16,), epochs=1, optimizer="sgd", schedule="constant", learning_rate=0.5, train_size=3000
    )
    assert train(config, data=data).metadata["test_accuracy"] > 0.6


@pytest.mark.parametrize(
    "noise",
    [
        Noise(AU=0.02, AC=0.01, MU=0.03, MC=0.04),
        Noise(AU=0.02, AC=0.01, MU=0.03, MC=0.04, injection="before"),
    ],
)
def test_the_noisy_training_pass_is_the_monte_carlo_noisy_pass(noise, test_split):
    """With the same seed, the training pass (noise sites on the torch model) draws exactly the
    noise that :func:`noiseprop.montecarlo.sample` draws for one repeat, in every layer and at the
    same point (before/after the activation), so the two outputs agree to float64 rounding."""
    network = Network.random([784, 20, 15, 10], ["sigmoid", "tanh", "linear"], seed=3)
    images = test_split[0][:50].to(torch.float64)
    with torch.random.fork_rng(devices=[]):
        model = network.to_torch(dtype=torch.float64)
    generator = torch.Generator().manual_seed(11)
    with noiseprop.noisy(model, noise, generator=generator):  # what train() does
        noisy = model(images)
    reference = sample(network, noise, images, repeats=1, seed=11, dtype="float64")[0]
    torch.testing.assert_close(noisy, reference, rtol=1e-12, atol=1e-12)
    clean = model(images)  # the hooks are gone
    assert (noisy - clean).abs().max() > 1e-2  # the noise is there
    torch.testing.assert_close(clean, network.forward(images)[-1][1], rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------------------ metadata, files
def test_metadata_and_save_load_round_trip(data, tmp_path):
    config = TrainConfig(hidden=(10,), activation="sigmoid:gain=2", epochs=2, train_size=1000)
    network = train(config, data=data)
    metadata = network.metadata
    assert set(metadata) == {
        "data",
        "train_images",
        "config",
        "test_accuracy",
        "history",
        "noiseprop_version",
    }
    assert metadata["data"] == "mnist" and metadata["train_images"] == 1000
    assert TrainConfig.from_dict(metadata["config"]) == config
    assert metadata["noiseprop_version"] == __import__("noiseprop").__version__
    assert [entry["epoch"] for entry in metadata["history"]] == [1, 2]
    assert set(metadata["history"][0]) == {"epoch", "loss", "train_accuracy", "test_accuracy", "seconds"}
    assert network.widths == (10, 10) and network.input_size == 784
    assert network.layers[0].activation == Sigmoid(gain=2.0)
    assert all(layer.weight.dtype == torch.float64 for layer in network.layers)

    loaded = Network.load(network.save(tmp_path / "net.safetensors"))
    assert _same_weights(network, loaded)
    assert loaded.metadata == metadata
    assert [layer.activation for layer in loaded.layers] == [
        layer.activation for layer in network.layers
    ]


def test_the_shipped_network_loads_and_reaches_97_5_percent(test_split):
    network = default_network()
    assert network.widths == (100, 100, 10) and network.input_size == 784
    assert [str(layer.activation) for layer in network.layers] == ["sigmoid", "sigmoid", "linear"]
    assert network.metadata["config"] == TrainConfig().to_dict()
    accuracy = evaluate(network, *test_split)
    assert accuracy >= 0.975
    assert abs(accuracy - network.metadata["test_accuracy"]) <= 2e-4


def test_default_network_reports_a_missing_file(monkeypatch):
    monkeypatch.setattr(training_module, "DEFAULT_NETWORK_FILE", "no-such-network.safetensors")
    with pytest.raises(
        FileNotFoundError, match=r"no-such-network\.safetensors is missing; .*train_default"
    ):
        default_network()


def test_evaluate_checks_its_arguments():
    network = Network.random([4, 3], "linear", seed=0)
    with pytest.raises(TypeError, match=r"network must be a Network; got str\."):
        evaluate("net", np.zeros((2, 4)), [0, 1])  # type: ignore[arg-type]
    with pytest.raises(
        ValueError, match=r"images must have shape \(n, 4\) for this network; got \(2, 5\)\."
    ):
        evaluate(network, np.zeros((2, 5)), [0, 1])
    with pytest.raises(ValueError, match=r"labels must be 2 integer class labels, one per image; got"):
        evaluate(network, np.zeros((2, 4)), [0.0, 1.0])
    with pytest.raises(ValueError, match=r"labels must be 2 integer class labels"):
        evaluate(network, np.zeros((2, 4)), [0, 1, 2])
    with pytest.raises(ValueError, match=r"images must hold at least one image"):
        evaluate(network, np.zeros((0, 4)), np.zeros(0, dtype=np.int64))
    with pytest.raises(ValueError, match=r"dtype must be one of"):
        evaluate(network, np.zeros((2, 4)), [0, 1], dtype="float16")


# ------------------------------------------------------------------------- noise-aware training
def _noisy_accuracy(network: Network, noise: Noise, images, labels, *, repeats: int, seed: int):
    """Accuracy under noise and its standard error.

    ``p_i`` is the fraction of the ``repeats`` noisy passes that classify image ``i`` correctly (an
    estimate of that image's probability of being classified correctly under the noise); the
    accuracy is ``A = mean_i p_i`` and its standard error ``std_i(p_i) / sqrt(n)``. By the law of
    total variance, ``Var(p_i)`` across images is the spread of the images' true probabilities plus
    the mean binomial sampling variance ``p(1 - p) / repeats``, so this standard error covers both
    the choice of the ``n`` test images and the finite number of noise draws.
    """
    outputs = sample(network, noise, images, repeats=repeats, seed=seed)
    correct = (outputs.argmax(-1) == labels).to(torch.float64).mean(0)
    return float(correct.mean()), float(correct.std() / math.sqrt(len(correct)))


def test_noise_aware_training_improves_accuracy_under_that_noise(data, test_split, seed):
    """Additive uncorrelated noise of variance D = 0.5 in every layer (std 0.71, against sigmoid
    outputs in [0, 1]) takes a plain 784-32-10 net (93 % noise-free) down to about 66 %; the same
    net trained with that noise keeps about 75 % under it (about 91 % noise-free).

    Both accuracies are measured with 20 noise draws on each of 2000 test images, with the standard
    error of :func:`_noisy_accuracy` (about 0.005 to 0.006 each). The two estimates use independent
    draws (different seeds), so the standard error of the difference is
    ``sqrt(se_plain^2 + se_aware^2)``, about 0.008; since both nets see the same images, whose
    difficulties are positively correlated between the nets, this overstates the true error of the
    paired difference (conservative). The gain (0.079 to 0.092) was 10.1 to 11.9 such errors for
    seeds 0-9 and 20261130 (and 28 to 33 errors of the noise draws alone, images held fixed); the
    test asks for more than SIGMAS = 4, so it fails only if noise-aware training stops helping.
    """
    noise = Noise(AU=0.5)
    settings_ = {"hidden": (32,), "epochs": 8, "learning_rate": 1e-2, "train_size": 10_000, "seed": seed}
    plain = train(TrainConfig(**settings_), data=data)
    aware = train(TrainConfig(**settings_, train_noise=noise), data=data)
    images, labels = test_split[0][:2000], test_split[1][:2000]
    plain_accuracy, plain_se = _noisy_accuracy(plain, noise, images, labels, repeats=20, seed=2 * seed)
    aware_accuracy, aware_se = _noisy_accuracy(
        aware, noise, images, labels, repeats=20, seed=2 * seed + 1
    )
    hurt = plain.metadata["test_accuracy"] - plain_accuracy
    assert hurt > 0.15, f"the noise should clearly hurt the plain net; it costs {hurt:.3f}"
    combined = math.hypot(plain_se, aware_se)
    z = (aware_accuracy - plain_accuracy) / combined
    assert z > SIGMAS, (
        f"noise-aware {aware_accuracy:.4f} +- {aware_se:.4f} vs plain {plain_accuracy:.4f} +- "
        f"{plain_se:.4f}: {z:.1f} standard errors"
    )
