"""The fast paths of the Monte Carlo engine: in-place activations, one draw for the two uncorrelated
kinds, reused buffers. Each is checked against the plain definition it replaces."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch
from conftest import assert_within

from noiseprop import Layer, Network, Noise, propagate, sample, simulate
from noiseprop._streaming import chunks as _chunks
from noiseprop.activations import Activation, Linear, ReLU, Sigmoid, Tanh
from noiseprop.montecarlo import _activate_

X = torch.linspace(-1, 1, 12, dtype=torch.float64).reshape(3, 4)


@pytest.mark.parametrize(
    "activation",
    [
        Sigmoid(),
        Sigmoid(gain=4.0, centre=0.5),
        Tanh(),
        Tanh(gain=2.5),
        ReLU(),
        Linear(),
        Linear(slope=0.9, offset=-0.3),
    ],
    ids=str,
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_in_place_activations_give_the_same_numbers(activation, dtype):
    value = torch.randn(5, 3, 7, generator=torch.Generator().manual_seed(0), dtype=dtype) * 3
    expected = activation(value)
    result = _activate_(value.clone(), activation)
    assert torch.equal(result, expected)


@dataclass(frozen=True, kw_only=True)
class _Doubling(Activation):
    """``2 x``, not a built-in class: the engine runs it out of place."""

    name: ClassVar[str] = "doubling-for-tests"

    def __call__(self, x):
        return 2.0 * x

    def derivative(self, x):
        return torch.full_like(x, 2.0)


@pytest.mark.parametrize("injection", ["after", "before"])
def test_other_activations_run_out_of_place_with_the_same_draws(injection):
    """A custom activation computing ``2 x`` gives bit for bit what the built-in ``linear:slope=2``
    gives, with the same seed: only where the activation runs differs."""

    def network(activation):
        generator = torch.Generator().manual_seed(3)
        sizes = [4, 6, 5, 3]
        return Network(
            tuple(
                Layer(
                    torch.randn(sizes[i + 1], sizes[i], generator=generator, dtype=torch.float64),
                    torch.zeros(sizes[i + 1]),
                    activation,
                )
                for i in range(3)
            )
        )

    noise = Noise(AU=1e-3, AC=2e-3, MU=3e-3, MC=4e-3, injection=injection)
    plain = simulate(network(Linear(slope=2.0)), noise, X, repeats=200, seed=5, chunk=30)
    custom = simulate(network(_Doubling()), noise, X, repeats=200, seed=5, chunk=30)
    for p, q in zip(plain.layers, custom.layers):
        assert torch.equal(p.mean, q.mean) and torch.equal(p.variance, q.variance)


@pytest.mark.parametrize("s", [0.7, -1.3, 0.0])
def test_one_draw_for_both_uncorrelated_kinds_has_their_joint_variance(s, seed):
    """``s xi_MU + xi_AU`` drawn as one normal: variance ``s^2 D_MU + D_AU``, mean 0, whatever the sign
    of ``s`` (one linear neuron fed the constant ``s``)."""
    net = Network.symmetric(width=1, depth=1, activation="linear")
    noise = Noise(AU=2e-3, MU=5e-3)
    stats = simulate(net, noise, s, repeats=40_000, seed=seed, dtype="float64")
    assert_within(stats[0].layer_variance, s**2 * noise.MU + noise.AU, stats[0].layer_variance_stderr)
    assert_within(float(stats[0].mean[0, 0]), s, float(stats[0].mean_stderr[0, 0]))


def test_uncorrelated_noise_stays_independent_between_neurons(seed):
    """With one draw per neuron for MU + AU, two neurons fed the same value must stay uncorrelated:
    the variance of their sum is the sum of their variances."""
    net = Network(
        (
            Layer(torch.tensor([[1.0], [1.0]]), torch.zeros(2), "linear"),
            Layer(torch.tensor([[1.0, 1.0]]), torch.zeros(1), "linear"),
        )
    )
    noise = [Noise(AU=1e-3, MU=4e-3), Noise()]
    stats = simulate(net, noise, 0.5, repeats=40_000, seed=seed, dtype="float64")
    single = 0.25 * 4e-3 + 1e-3
    assert_within(stats[1].layer_variance, 2 * single, stats[1].layer_variance_stderr)


def test_noise_free_first_layer_with_injection_before():
    net = Network.random([4, 5, 3], ["sigmoid", "tanh"], seed=2)
    noise = {2: Noise(AU=1e-2, MU=1e-2, injection="before")}
    stats = simulate(net, noise, X, repeats=100, seed=0)
    assert float(stats[0].variance.abs().max()) == 0.0
    assert float(stats[1].variance.min()) > 0.0
    clean = net.forward(X)
    torch.testing.assert_close(stats[0].mean, clean[0][1])


def test_sample_does_not_hold_the_wider_layers_buffers():
    net = Network.random([4, 50, 3], ["tanh", "linear"], seed=0)
    out = sample(net, Noise(AU=1e-3), X, repeats=10, seed=0)
    assert out.shape == (10, 3, 3)
    assert out.untyped_storage().nbytes() == out.numel() * out.element_size()


def test_sample_same_seed_same_numbers():
    net = Network.random([4, 6, 3], ["tanh", "sigmoid"], seed=1)
    noise = Noise(AU=1e-3, AC=1e-3, MU=1e-3, MC=1e-3)
    first = sample(net, noise, X, repeats=50, seed=9)
    assert torch.equal(first, sample(net, noise, X, repeats=50, seed=9))
    assert not torch.equal(first, sample(net, noise, X, repeats=50, seed=10))


@pytest.mark.parametrize(
    ("repeats", "groups", "chunk"),
    [(100, 2, 30), (100, 32, 7), (64, 32, 1000), (1001, 32, 64), (10, 5, 1)],
)
def test_chunks_cover_every_group_once_and_fit_the_chunk(repeats, groups, chunk):
    plan = list(_chunks(repeats, groups, chunk))
    assert sum(count for count, _, _ in plan) == repeats
    assert all(count <= chunk for count, _, _ in plan)
    closed = sum(whole for _, whole, _ in plan) + sum(closes for _, _, closes in plan)
    assert closed == groups
    sizes = {count // whole for count, whole, _ in plan if whole}
    assert sizes <= {repeats // groups, repeats // groups + 1}


def test_small_groups_share_a_chunk():
    """64 repeats in 32 groups of 2 run as one chunk of 64, not 32 chunks of 2."""
    assert list(_chunks(64, 32, 1000)) == [(64, 32, False)]


def test_numbers_do_not_depend_on_the_number_of_threads():
    """Only the speed depends on torch's thread count, never the numbers (one random stream)."""
    net = Network.random([8, 64, 64], ["tanh", "sigmoid"], seed=0)
    x = torch.rand(64, 8, generator=torch.Generator().manual_seed(0))
    noise = Noise(AU=1e-3, AC=1e-3, MU=1e-3, MC=1e-3)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single = simulate(net, noise, x, repeats=256, seed=3, chunk=128)
        torch.set_num_threads(max(2, threads))
        several = simulate(net, noise, x, repeats=256, seed=3, chunk=128)
    finally:
        torch.set_num_threads(threads)
    for p, q in zip(single.layers, several.layers):
        assert torch.equal(p.mean, q.mean) and torch.equal(p.variance, q.variance)


@pytest.mark.parametrize(
    "noise",
    [
        Noise(AU=1e-3, AC=5e-4, injection="before"),
        Noise(AU=1e-3, injection="before"),
        Noise(AC=5e-4, injection="before"),
    ],
    ids=str,
)
def test_additive_noise_before_the_activation_drawn_into_the_matrix_product(noise, seed):
    """Additive noise before the activation is drawn into the buffer that the matrix product then
    adds to (with the bias). On a linear network with biases the covariance method is exact."""
    net = Network.random([3, 5, 4, 4], ["linear:slope=0.8,offset=0.1"] * 3, seed=4)
    x = [0.3, -0.2, 0.5]
    exact = propagate(net, noise, x)
    stats = simulate(net, noise, x, repeats=40_000, seed=seed, dtype="float64")
    for predicted, simulated in zip(exact.layers, stats.layers):
        assert_within(
            simulated.layer_variance, predicted.layer_variance, simulated.layer_variance_stderr
        )
        z = (simulated.mean - predicted.mean) / simulated.mean_stderr
        assert float(z.abs().max()) < 4.5
