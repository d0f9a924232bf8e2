"""Invariances of docs/THEORY.md sections 3 and 6, exact in both the prediction and the simulation."""

from __future__ import annotations

import torch

from noiseprop import Layer, Network, Noise, propagate, sample, simulate


def _classifier() -> Network:
    return Network.random([6, 12, 10], ["sigmoid", "linear"], seed=7)


def _inputs() -> torch.Tensor:
    return torch.rand(20, 6, generator=torch.Generator().manual_seed(3), dtype=torch.float64)


def test_correlated_additive_output_noise_cannot_change_the_prediction(seed):
    net, x = _classifier(), _inputs()
    clean = net.forward(x)[-1][1].argmax(-1)
    outputs = sample(net, {2: Noise(AC=1.0)}, x, repeats=200, seed=seed, dtype="float64")
    assert torch.equal(outputs.argmax(-1), clean.expand(200, -1))
    # the noise is real: the outputs themselves move by O(1)
    assert float(outputs.std(0).mean()) > 0.5


def test_correlated_multiplicative_output_noise_cannot_change_the_prediction(seed):
    """While 1 + xi_MC > 0 (here its standard deviation is 0.1, so always)."""
    net, x = _classifier(), _inputs()
    clean = net.forward(x)[-1][1].argmax(-1)
    outputs = sample(net, {2: Noise(MC=0.01)}, x, repeats=200, seed=seed, dtype="float64")
    assert torch.equal(outputs.argmax(-1), clean.expand(200, -1))


def test_correlated_additive_output_noise_leaves_every_difference_unchanged():
    """Predicted: D_AC 11^T drops out of Var(y_i - y_k) = C_ii + C_kk - 2 C_ik."""
    net, x = _classifier(), _inputs()
    base = Noise(AU=1e-3, MU=1e-3)
    without = propagate(net, [base, base], x, covariance=True)[-1].covariance
    with_ac = propagate(net, [base, Noise(AU=1e-3, MU=1e-3, AC=0.5)], x, covariance=True)[-1].covariance

    def differences(c: torch.Tensor) -> torch.Tensor:
        d = c.diagonal(dim1=-2, dim2=-1)
        return d.unsqueeze(-1) + d.unsqueeze(-2) - 2 * c

    torch.testing.assert_close(differences(with_ac), differences(without), rtol=1e-9, atol=1e-12)


def test_zero_sum_rows_block_correlated_additive_noise(seed):
    w1 = torch.randn(5, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    w2 = torch.randn(3, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    w2 = w2 - w2.mean(1, keepdim=True)  # every row sums to zero
    net = Network((Layer(w1, torch.zeros(5), "tanh"), Layer(w2, torch.zeros(3), "sigmoid")))
    noise = {1: Noise(AC=1e-2)}
    x = torch.ones(2, 4, dtype=torch.float64)
    predicted = propagate(net, noise, x)
    assert float(predicted[0].variance.min()) > 0
    assert float(predicted[1].variance.abs().max()) < 1e-18
    simulated = simulate(net, noise, x, repeats=1000, seed=seed, dtype="float64")
    assert float(simulated[0].variance.min()) > 5e-3
    assert float(simulated[1].variance.max()) < 1e-25
