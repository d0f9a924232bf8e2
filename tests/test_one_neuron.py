"""The exact one-neuron identities of docs/THEORY.md section 1, for a random noise-free response.

Layer 1 (one linear neuron with additive noise D0) makes the response ``s`` of layer 2 random:
``s_i = w_i y1 + c_i`` with ``E[s_i] = w_i m + c_i``, ``Var[s_i] = w_i^2 D0`` and
``Cov[s_1, s_2] = w_1 w_2 D0``. Layer 2 carries all four kinds of noise; the identities are

    E[y] = E[s]
    Var[y] = Var[s](1 + D_MU + D_MC) + E[s]^2 (D_MU + D_MC) + D_AU + D_AC
    Cov[y_1, y_2] = Cov[s_1, s_2](1 + D_MC) + E[s_1] E[s_2] D_MC + D_AC

A noise-free layer 3 outputs ``y_1 + y_2`` and ``y_1 - y_2``, whose variances
``Var y_1 + Var y_2 +- 2 Cov`` check the covariance identity.
"""

from __future__ import annotations

import pytest
import torch
from conftest import assert_within

from noiseprop import Layer, Network, Noise, propagate, simulate

M, D0 = 0.8, 0.04  # input value and the variance of layer 1's noise
W, C = (1.5, -0.7), (0.2, 0.4)
NOISE = Noise(AU=2e-3, AC=1e-3, MU=5e-3, MC=3e-3)


def _network() -> Network:
    return Network(
        (
            Layer(torch.ones(1, 1), torch.zeros(1), "linear"),
            Layer(
                torch.tensor([[W[0]], [W[1]]], dtype=torch.float64),
                torch.tensor(C, dtype=torch.float64),
                "linear",
            ),
            Layer(torch.tensor([[1.0, 1.0], [1.0, -1.0]]), torch.zeros(2), "linear"),
        )
    )


def _expected() -> tuple[list[float], list[float], float]:
    mean_s = [W[i] * M + C[i] for i in range(2)]
    var_s = [W[i] ** 2 * D0 for i in range(2)]
    cov_s = W[0] * W[1] * D0
    mult = NOISE.MU + NOISE.MC
    var_y = [var_s[i] * (1 + mult) + mean_s[i] ** 2 * mult + NOISE.AU + NOISE.AC for i in range(2)]
    cov_y = cov_s * (1 + NOISE.MC) + mean_s[0] * mean_s[1] * NOISE.MC + NOISE.AC
    return mean_s, var_y, cov_y


NOISES = [Noise(AU=D0), NOISE, Noise()]


def test_covariance_method_reproduces_the_identities_exactly():
    mean_s, var_y, cov_y = _expected()
    stats = propagate(_network(), NOISES, M, covariance=True)
    torch.testing.assert_close(stats[1].mean[0], torch.tensor(mean_s, dtype=torch.float64))
    expected = torch.tensor([[var_y[0], cov_y], [cov_y, var_y[1]]], dtype=torch.float64)
    torch.testing.assert_close(stats[1].covariance[0], expected, rtol=1e-12, atol=1e-15)
    sums = [var_y[0] + var_y[1] + 2 * cov_y, var_y[0] + var_y[1] - 2 * cov_y]
    torch.testing.assert_close(stats[2].variance[0], torch.tensor(sums, dtype=torch.float64))


def test_monte_carlo_reproduces_the_identities(seed):
    mean_s, var_y, cov_y = _expected()
    stats = simulate(_network(), NOISES, M, repeats=200_000, seed=seed, dtype="float64")
    layer = stats[1]
    for i in range(2):
        assert_within(float(layer.mean[0, i]), mean_s[i], float(layer.mean_stderr[0, i]))
        assert_within(float(layer.variance[0, i]), var_y[i], float(layer.variance_stderr[0, i]))
    sums = [var_y[0] + var_y[1] + 2 * cov_y, var_y[0] + var_y[1] - 2 * cov_y]
    for i in range(2):
        assert_within(float(stats[2].variance[0, i]), sums[i], float(stats[2].variance_stderr[0, i]))


@pytest.mark.parametrize("slope", [1.0, 0.5])
def test_noise_before_the_activation_is_scaled_by_the_slope(slope, seed):
    """With injection before a linear activation of slope a, a noise-free input x gives
    ``Var y = a^2 (x^2 (D_MU + D_MC) + D_AU + D_AC)``."""
    noise = Noise(AU=1e-3, AC=2e-3, MU=3e-3, MC=4e-3, injection="before")
    net = Network((Layer(torch.tensor([[1.0]]), torch.zeros(1), f"linear:slope={slope}"),))
    expected = slope**2 * (M**2 * (noise.MU + noise.MC) + noise.AU + noise.AC)
    assert float(propagate(net, noise, M)[0].variance) == pytest.approx(expected, rel=1e-12)
    simulated = simulate(net, noise, M, repeats=100_000, seed=seed, dtype="float64")[0]
    assert_within(float(simulated.variance), expected, float(simulated.variance_stderr))
