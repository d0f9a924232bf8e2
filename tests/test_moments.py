"""Beyond first order (method="moments"): exact limits, Gaussian moments, and simulation where the
first-order methods break."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from noiseprop import KINDS, Layer, Network, Noise, accuracy, propagate, simulate
from noiseprop.activations import ELU, GELU, Sigmoid, Softplus, Tanh
from noiseprop.datasets import mnist
from noiseprop.moments import gaussian_moments, quadrature
from noiseprop.training import default_network


# ------------------------------------------------------------------------------ exact limits
def test_linear_networks_equal_the_exact_covariance_recursion():
    """Linear activations: every map is affine, the first-order covariance is exact, and so must
    the moments be (every kind at once, after and before, means, variances and covariances)."""
    net = Network.random([5, 7, 6, 4], ["linear", "linear:slope=0.7,offset=0.2", "linear"], seed=4)
    x = torch.linspace(-1, 1, 15, dtype=torch.float64).reshape(3, 5)
    for injection in ("after", "before"):
        noise = Noise(AU=0.03, AC=0.02, MU=0.05, MC=0.04, injection=injection)
        exact = propagate(net, noise, x, covariance=True)
        ours = propagate(net, noise, x, method="moments", covariance=True)
        for a, b in zip(exact.layers, ours.layers):
            torch.testing.assert_close(b.mean, a.mean, rtol=1e-12, atol=1e-12)
            torch.testing.assert_close(b.covariance, a.covariance, rtol=1e-10, atol=1e-12)


def test_correlated_noise_alone_is_integrated_exactly():
    """A single sigmoid neuron after a correlated draw on a linear layer: ``s = sigmoid(x + c)``
    with ``c ~ N(0, D)``; the moments method's mean and variance are the Gaussian integrals,
    computed here with a fine trapezoid rule."""
    net = Network.random([2, 1, 1], ["linear", "sigmoid"], seed=1)
    x = torch.tensor([[0.3, -0.2]], dtype=torch.float64)
    noise = {1: Noise(AC=0.8)}
    stats = propagate(net, noise, x, method="moments")
    level = float(net.forward(x)[1][0])  # the sigmoid's input without noise
    w = float(net.layers[1].weight)
    z = np.linspace(-12, 12, 400_001)
    density = np.exp(-z * z / 2) / math.sqrt(2 * math.pi)
    s = 1 / (1 + np.exp(-(level + w * math.sqrt(0.8) * z)))
    mean = np.trapezoid(s * density, z)
    variance = np.trapezoid((s - mean) ** 2 * density, z)
    assert float(stats[1].mean) == pytest.approx(mean, rel=1e-10)
    assert float(stats[1].variance) == pytest.approx(variance, rel=1e-8)


@pytest.mark.parametrize(
    ("activation", "rtol"),
    [(Sigmoid(gain=2.0), 1e-5), (Tanh(), 1e-5), (GELU(), 1e-5), (Softplus(), 1e-5), (ELU(), 1e-2)],
)
def test_gaussian_moments_against_a_trapezoid_rule(activation, rtol):
    """E f, E f^2 by an independent fine trapezoid rule; E f' and E f'' as the first and second
    derivatives of E f(m + sd z) with respect to m (finite differences). Gauss-Hermite quadrature
    is near exact for smooth activations; at a kink (ELU's second derivative jumps at 0) it
    converges slowly: 0.6 % on E f'' here, inside the method's 2 % budget."""
    mean, sd = torch.tensor([0.3, -1.2], dtype=torch.float64), torch.tensor([0.8, 1.5])
    first, second, slope, curvature = gaussian_moments(
        activation, mean, sd.double().square(), curvature=True
    )
    z = torch.linspace(-12, 12, 200_001, dtype=torch.float64)
    density = torch.exp(-z * z / 2) / math.sqrt(2 * math.pi)

    def expect(m: torch.Tensor, s: torch.Tensor, power: int = 1) -> torch.Tensor:
        values = activation(m.unsqueeze(-1) + s.double().unsqueeze(-1) * z) ** power
        return torch.trapezoid(values * density, z)

    torch.testing.assert_close(first, expect(mean, sd), rtol=rtol, atol=1e-12)
    torch.testing.assert_close(second, expect(mean, sd, 2), rtol=rtol, atol=1e-12)
    h = 1e-4
    up, down = expect(mean + h, sd), expect(mean - h, sd)
    torch.testing.assert_close(slope, (up - down) / (2 * h), rtol=max(rtol, 1e-5), atol=1e-9)
    torch.testing.assert_close(
        curvature, (up - 2 * expect(mean, sd) + down) / h**2, rtol=max(rtol, 1e-4), atol=1e-6
    )


def test_relu_closed_form_and_zero_variance():
    from noiseprop.activations import ReLU

    mean, variance = torch.tensor([0.5, -0.5, 0.0]), torch.tensor([1.0, 0.25, 0.0])
    first, second, slope = gaussian_moments(ReLU(), mean.double(), variance.double())
    # E max(x, 0) for N(0.5, 1): 0.5 Phi(0.5) + phi(0.5)
    phi = math.exp(-0.125) / math.sqrt(2 * math.pi)
    cdf = 0.5 * (1 + math.erf(0.5 / math.sqrt(2)))
    assert float(first[0]) == pytest.approx(0.5 * cdf + phi, rel=1e-12)
    assert float(second[0]) == pytest.approx(1.25 * cdf + 0.5 * phi, rel=1e-12)
    assert float(slope[0]) == pytest.approx(cdf, rel=1e-12)
    assert float(first[2]) == 0.0 and float(second[2]) == 0.0


def test_quadrature_rules_integrate_normal_moments():
    for dimension, nodes in ((1, None), (2, None), (3, None), (2, 16)):
        z, w = quadrature(dimension, nodes, seed=0)
        assert float(w.sum()) == pytest.approx(1.0, rel=1e-12)
        tolerance = 1e-10 if dimension <= 2 else 0.05  # Gauss-Hermite exact; Sobol approximate
        second = (w.unsqueeze(-1) * z.square()).sum(0)
        torch.testing.assert_close(second, torch.ones(dimension, dtype=torch.float64),
                                   atol=tolerance, rtol=0)  # fmt: skip


# -------------------------------------------------------------------- against simulation
@pytest.fixture(scope="module")
def shipped():
    images = mnist().scaled("test")[0][:40]
    return default_network(), torch.as_tensor(images, dtype=torch.float64)


@pytest.mark.parametrize("kind", KINDS)
def test_per_layer_variance_of_the_shipped_network_within_2_percent(kind, shipped):
    """Each kind alone at 0.3 and 1 (where simulated accuracy falls to 33-88 %; first order is off
    by up to +84 % there): every layer's variance within 2 % of simulation, plus 4 standard
    errors."""
    net, images = shipped
    for intensity in (0.3, 1.0):
        noise = Noise(**{kind: intensity})
        predicted = propagate(net, noise, images, method="moments")
        simulated = simulate(net, noise, images, repeats=2000, seed=3, dtype="float64")
        for ours, truth in zip(predicted.layers, simulated.layers):
            error = abs(ours.layer_variance - truth.layer_variance)
            allowed = 0.02 * truth.layer_variance + 4 * truth.layer_variance_stderr
            assert error <= allowed, (kind, intensity, ours.layer_variance, truth.layer_variance)


def test_symmetric_sigmoid_at_slope_one_where_first_order_fails():
    """Width 100, depth 20, gain 4 centred on the fixed point 0.5, AC on every layer: first order
    predicts linear growth, 67 % too high at 1e-3; the moments method integrates the 20 shared
    draws and stays within 2 % (+ 4 standard errors) at 3e-4 and 1e-3, and within 10 % at 1e-2."""
    net = Network.symmetric(width=100, depth=20, activation="sigmoid:gain=4,centre=0.5")
    for intensity, tolerance in ((3e-4, 0.02), (1e-3, 0.02), (1e-2, 0.10)):
        noise = Noise(AC=intensity)
        ours = propagate(net, noise, 0.5, method="moments")[-1]
        truth = simulate(net, noise, 0.5, repeats=8000, seed=5, dtype="float64")[-1]
        error = abs(ours.layer_variance - truth.layer_variance)
        assert error <= tolerance * truth.layer_variance + 4 * truth.layer_variance_stderr


@pytest.mark.parametrize("intensity", [0.3, 1.0])
@pytest.mark.parametrize("kind", KINDS)
def test_predicted_accuracy_within_half_a_point_for_every_kind(kind, intensity, shipped):
    """The default predictor on 300 images, each kind alone on every layer: within half a point
    (plus 4 combined standard errors) of simulation. The issue's targets are 1 point at 0.3 and 2
    at 1; first order is off by 1.6 to 13 points here (README), and a Gaussian with the logits'
    measured moments by up to 7: only the Gaussian input of the last sigmoid layer with the rest
    integrated exactly gets this close. For this network that is exact up to integration error."""
    net, _ = shipped
    images, labels = (array[:300] for array in mnist().scaled("test"))
    noise = Noise(**{kind: intensity})
    predicted = accuracy(net, noise, images, labels, method="predicted")
    simulated = accuracy(net, noise, images, labels, repeats=200, seed=2)
    assert predicted.predictor == "moments" and predicted.points == 1024
    allowed = 0.005 + 4 * math.hypot(simulated.stderr, predicted.stderr)
    assert abs(predicted.accuracy - simulated.accuracy) <= allowed


def test_bad_arguments():
    net = Network.random([2, 2], "sigmoid")
    with pytest.raises(ValueError, match="nodes must be an integer >= 1; got 0"):
        propagate(net, Noise(AC=0.1), 0.5, method="moments", nodes=0)
    with pytest.raises(ValueError, match="predictor must be one of 'covariance', 'moments'"):
        accuracy(net, Noise(), [[0.5, 0.5]], [0], method="predicted", predictor="exact")


def test_default_nodes_with_uncorrelated_noise_match_a_fine_grid(shipped):
    """All four kinds together: the default 6 x 6 grid over the two conditioned draws of layer 1
    (smooth, as uncorrelated noise is present) against 32 x 32 nodes, per-layer variance within
    0.2 % (measured: 0.07 % at 0.1 and at 1 on 100 images)."""
    net, x = shipped
    for intensity in (0.1, 1.0):
        noise = Noise(AU=intensity, AC=intensity, MU=intensity, MC=intensity)
        coarse = propagate(net, noise, x[:10], method="moments")
        fine = propagate(net, noise, x[:10], method="moments", nodes=1024)
        for rough, exact in zip(coarse, fine):
            assert abs(rough.layer_variance / exact.layer_variance - 1) < 2e-3


def test_a_narrow_layer_behind_a_saturating_one_is_flagged(shipped):
    """One neuron per layer: layer 2's sigmoid (gain 8 through its weight) turns the Gaussian noise
    of layer 1 into a two-humped signal, and layer 3 sums it alone (n_eff = 1): its input is far
    from Gaussian. The method says so, and rightly: its variance is 18 % low there (simulation,
    200,000 repeats; the error is 70 standard errors). The shipped network at AU = 1 (100 inputs
    per neuron) is not flagged."""
    net = Network((
        Layer([[1.0]], [0.0], "sigmoid"),
        Layer([[8.0]], [-4.0], "sigmoid"),
        Layer([[6.0]], [-3.0], "sigmoid"),
    ))  # fmt: skip
    noise = {1: Noise(AU=0.1), 2: Noise(AU=0.01)}
    with pytest.warns(UserWarning, match=r"layer 3 sum the noise of as few as 1\.0 effective inputs"):
        predicted = propagate(net, noise, [0.5], method="moments")
    simulated = simulate(net, noise, [0.5], repeats=200_000, seed=1)
    truth, stderr = float(simulated[-1].variance), float(simulated[-1].variance_stderr)
    error = float(predicted[-1].variance) / truth - 1
    assert error < -0.1 and abs(error) * truth > 20 * stderr
    shipped_net, x = shipped
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        propagate(shipped_net, Noise(AU=1.0), x, method="moments")


def test_one_node_carries_correlated_noise_by_its_moments(shipped):
    """All four kinds at 1 on the shipped network (40 images, 16,000 repeats): conditioned on the
    draws of layer 1 (the default 6 x 6 grid) the output variance is within 1 % of simulation;
    with ``nodes=1`` (no conditioning, one pass) it is 1-4 % low, the price of linearising the
    cross-covariances that the shared draws make strong (measured: -0.4 % against -2.4 %)."""
    net, x = shipped
    noise = Noise(AU=1.0, AC=1.0, MU=1.0, MC=1.0)
    simulated = simulate(net, noise, x, repeats=16_000, seed=1)[-1]
    truth, stderr = simulated.layer_variance, simulated.layer_variance_stderr
    conditioned = propagate(net, noise, x, method="moments")[-1].layer_variance
    carried = propagate(net, noise, x, method="moments", nodes=1)[-1].layer_variance
    assert abs(conditioned - truth) <= 0.01 * truth + 4 * stderr
    assert 0.01 * truth + 4 * stderr < truth - carried < 0.04 * truth
