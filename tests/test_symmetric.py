"""Symmetric networks (docs/THEORY.md section 2): closed forms derived here, independently of the code.

Every layer has N neurons, every weight 1/N, no bias; the layer average ``s_n`` has mean ``mu_n`` and
variance ``v_n``. For a linear activation ``f(x) = a x + c`` (exact)::

    mu_{n+1} = a mu_n + c,  E_f = (a mu_n + c)^2 + a^2 v_n
    v_{n+1}  = a^2 v_n + E_f (D_MC + D_MU/N) + D_AC + D_AU/N
    per-neuron variance of layer n+1 = a^2 v_n + E_f (D_MU + D_MC) + D_AU + D_AC
"""

from __future__ import annotations

import math

import pytest
import torch
from conftest import assert_within

from noiseprop import Network, Noise, propagate, simulate

METHODS = ["covariance", "meanfield", "symmetric"]


def linear_recursion(slope, offset, noise, width, depth, start):
    """Per-neuron variances of layers 1..depth, straight from the formulas above."""
    mu, v, per_neuron = start, 0.0, []
    for _ in range(depth):
        e_f = (slope * mu + offset) ** 2 + slope**2 * v
        per_neuron.append(slope**2 * v + e_f * (noise.MU + noise.MC) + noise.AU + noise.AC)
        v = slope**2 * v + e_f * (noise.MC + noise.MU / width) + noise.AC + noise.AU / width
        mu = slope * mu + offset
    return per_neuron


@pytest.mark.parametrize("method", METHODS)
def test_slope_one_grows_linearly_without_bound(method):
    width, depth, noise = 10, 12, Noise(AU=1e-3, AC=2e-4)
    net = Network.symmetric(width=width, depth=depth, activation="linear")
    stats = propagate(net, noise, 0.3, method=method)
    step = noise.AC + noise.AU / width  # v_n = n (D_AC + D_AU/N)
    for n, layer in enumerate(stats.layers, start=1):
        expected = (n - 1) * step + noise.AC + noise.AU
        torch.testing.assert_close(layer.variance, torch.full((1, width), expected, dtype=torch.float64))


@pytest.mark.parametrize("method", METHODS)
def test_slope_below_one_converges_to_the_bound(method):
    width, slope, noise = 10, 0.8, Noise(AU=1e-3, AC=2e-4)
    net = Network.symmetric(width=width, depth=80, activation=f"linear:slope={slope}")
    limit = (noise.AC + noise.AU / width) / (1 - slope**2)  # v_inf of the layer average
    deepest = propagate(net, noise, 0.3, method=method)[-1].layer_variance
    assert deepest == pytest.approx(slope**2 * limit + noise.AU + noise.AC, rel=1e-12)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(("slope", "offset"), [(1.0, 0.0), (0.9, 0.1), (1.1, -0.05)])
@pytest.mark.parametrize("kind", ["AU", "AC", "MU", "MC", "all"])
def test_exact_recursion_every_kind(method, slope, offset, kind):
    noise = Noise(AU=1e-3, AC=5e-4, MU=2e-3, MC=1e-3)
    noise = noise if kind == "all" else noise.only(kind)
    width, depth, start = 8, 10, 0.6
    net = Network.symmetric(width=width, depth=depth, activation=f"linear:slope={slope},offset={offset}")
    expected = linear_recursion(slope, offset, noise, width, depth, start)
    got = [layer.layer_variance for layer in propagate(net, noise, start, method=method).layers]
    assert got == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(("slope", "offset"), [(1.0, 0.0), (0.8, 0.1)])
def test_monte_carlo_follows_the_exact_recursion(slope, offset, seed):
    noise = Noise(AU=1e-3, AC=5e-4, MU=2e-3, MC=1e-3)
    width, depth, start = 8, 10, 0.6
    net = Network.symmetric(width=width, depth=depth, activation=f"linear:slope={slope},offset={offset}")
    expected = linear_recursion(slope, offset, noise, width, depth, start)
    stats = simulate(net, noise, start, repeats=40_000, seed=seed, dtype="float64")
    for layer, value in zip(stats.layers, expected):
        assert_within(layer.layer_variance, value, layer.layer_variance_stderr)


def test_injection_before_a_linear_activation(seed):
    """Before the activation: the layer-average input x has Var x = v_prev (weights 1/N) and
    ``v_next = a^2 (Var x + E_x (D_MC + D_MU/N) + D_AC + D_AU/N)``, ``E_x = mu^2 + Var x``."""
    slope, width, depth, start = 0.9, 6, 6, 0.5
    noise = Noise(AU=1e-3, AC=5e-4, MU=2e-3, MC=1e-3, injection="before")
    mu, v, expected = start, 0.0, []
    for _ in range(depth):
        e_x = mu**2 + v
        expected.append(slope**2 * (v + e_x * (noise.MU + noise.MC) + noise.AU + noise.AC))
        v = slope**2 * (v + e_x * (noise.MC + noise.MU / width) + noise.AC + noise.AU / width)
        mu = slope * mu
    net = Network.symmetric(width=width, depth=depth, activation=f"linear:slope={slope}")
    for method in METHODS:
        got = [layer.layer_variance for layer in propagate(net, noise, start, method=method).layers]
        assert got == pytest.approx(expected, rel=1e-12), method
    stats = simulate(net, noise, start, repeats=40_000, seed=seed, dtype="float64")
    for layer, value in zip(stats.layers, expected):
        assert_within(layer.layer_variance, value, layer.layer_variance_stderr)


# ------------------------------------------------------------------------------- sigmoid facts
def _logistic(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def _fixed_point() -> float:
    mu = 0.5
    for _ in range(200):
        mu = _logistic(mu)
    return mu


def test_sigmoid_fixed_point_facts():
    mu = _fixed_point()
    slope = mu * (1 - mu)
    assert round(mu, 6) == 0.659046
    assert round(slope, 6) == 0.224704
    assert round(1 / (1 - slope**2), 6) == 1.053177


@pytest.mark.parametrize("method", ["covariance", "symmetric"])
def test_sigmoid_accumulation_is_bounded_at_1_053177(method):
    mu = _fixed_point()
    net = Network.symmetric(width=20, depth=30)
    stats = propagate(net, Noise(AC=1e-4), mu, method=method)
    ratio = stats[-1].layer_variance / stats[0].layer_variance
    assert ratio == pytest.approx(1.053177, abs=1e-6)
    # every layer sits at the fixed point: the noise-free output does not move
    torch.testing.assert_close(stats[-1].mean, torch.full((1, 20), mu, dtype=torch.float64))


def test_sigmoid_bound_in_simulation(seed):
    mu = _fixed_point()
    net = Network.symmetric(width=10, depth=12)
    stats = simulate(net, Noise(AC=1e-4), mu, repeats=100_000, seed=seed, dtype="float64")
    first, deep = stats[0], stats[-1]
    ratio = deep.layer_variance / first.layer_variance
    stderr = ratio * math.hypot(
        first.layer_variance_stderr / first.layer_variance,
        deep.layer_variance_stderr / deep.layer_variance,
    )
    assert_within(ratio, 1 / (1 - (mu * (1 - mu)) ** 2), stderr)


def test_slope_one_sigmoid_is_where_first_order_theory_fails():
    """Gain 4 centred on 0.5: slope exactly 1 at the fixed point 0.5. The linear theory predicts
    linear growth; saturation of the real sigmoid bends it below (docs/THEORY.md section 2)."""
    net = Network.symmetric(width=1, depth=40, activation="sigmoid:gain=4,centre=0.5")
    noise = Noise(AC=2e-3)
    predicted = propagate(net, noise, 0.5, method="symmetric")
    assert predicted[-1].layer_variance == pytest.approx(40 * noise.AC, rel=1e-9)
    simulated = simulate(net, noise, 0.5, repeats=20_000, seed=1, dtype="float64")
    assert simulated[-1].layer_variance < 0.8 * predicted[-1].layer_variance
