"""Monte Carlo of any torch model through its noise sites, against the dense engine and exact values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import assert_within
from torch import nn

from noiseprop import KINDS, Network, Noise, sample, simulate

NET = Network.random([6, 8, 7, 4], ["sigmoid", "tanh", "linear"], seed=2)
X = torch.linspace(-1, 1, 18, dtype=torch.float64).reshape(3, 6)


@pytest.mark.parametrize("injection", ["after", "before"])
@pytest.mark.parametrize("kind", KINDS)
def test_an_mlp_through_its_sites_agrees_with_the_dense_engine(kind, injection, seed):
    """The dense network and the same network as a torch model (sites: its activation modules)
    are simulated with independent seeds; every layer's variance agrees within 4 standard errors
    of the difference, and so does every neuron's mean, for each kind, after and before."""
    noise = Noise(**{kind: 0.02}, injection=injection)
    dense = simulate(NET, noise, X, repeats=20_000, seed=seed, dtype="float64")
    model = simulate(NET.to_torch(torch.float64), noise, X, repeats=20_000, seed=seed + 1,
                     dtype="float64")  # fmt: skip
    assert model.names == ("1", "3", "5") and model.noise == (noise,) * 3
    for ours, theirs in zip(model.layers, dense.layers):
        stderr = math.hypot(ours.layer_variance_stderr, theirs.layer_variance_stderr)
        assert_within(ours.layer_variance, theirs.layer_variance, stderr)
        difference = (ours.mean - theirs.mean) / (ours.mean_stderr**2 + theirs.mean_stderr**2).sqrt()
        assert difference.abs().max() < 4.5  # 21-28 neurons x 3 inputs per layer


def _conv_net() -> nn.Sequential:
    torch.manual_seed(5)
    return nn.Sequential(
        nn.Conv2d(2, 3, 3),  # 0
        nn.Sigmoid(),  # 1: the noisy site
        nn.Conv2d(3, 2, 2),  # 2: a linear site, measured, noise-free
        nn.Flatten(),
        nn.Linear(2 * 4 * 4, 4),
    ).double()


def _by_hand(model: nn.Sequential, x: torch.Tensor, noise: Noise) -> np.ndarray:
    """Exact variance of conv 2's output when the sigmoid outputs s carry ``noise``: conv 2 is
    linear, ``z[o,i,j] = sum_{c,u,v} W[o,c,u,v] y[c,i+u,j+v] + b[o]``, so with docs/THEORY.md section 1

        Var z = sum_{c,u,v} W^2 (s^2 D_MU + D_AU) + D_MC (sum W s)^2 + D_AC (sum W)^2

    written with explicit loops over the kernel (no convolution routine)."""
    weight = model[2].weight.detach().numpy()
    with torch.no_grad():
        signal = model[1](model[0](x)).numpy()  # (B, 3, 5, 5)
    batch, outputs, size = signal.shape[0], weight.shape[0], signal.shape[-1] - 1
    variance = np.zeros((batch, outputs, size, size))
    for b in range(batch):
        for o in range(outputs):
            for i in range(size):
                for j in range(size):
                    patch = signal[b, :, i : i + 2, j : j + 2]
                    kernel = weight[o]
                    variance[b, o, i, j] = (
                        (kernel**2 * (patch**2 * noise.MU + noise.AU)).sum()
                        + noise.MC * (kernel * patch).sum() ** 2
                        + noise.AC * kernel.sum() ** 2
                    )
    return variance.reshape(batch, -1)


@pytest.mark.parametrize("kind", KINDS)
def test_a_linear_site_after_a_noisy_conv_site_has_the_exact_variance(kind, seed):
    model = _conv_net()
    x = torch.rand(2, 2, 7, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    noise = Noise(**{kind: 0.01})
    stats = simulate(model, {"1": noise}, x, sites=["1", "2"], repeats=20_000, seed=seed,
                     dtype="float64")  # fmt: skip
    assert stats.names == ("1", "2", "output")
    assert stats.noise == (noise, Noise(), Noise())
    site = stats[1]
    assert site.neuron_shape == (2, 4, 4)
    exact = torch.from_numpy(_by_hand(model, x, noise))
    assert_within(site.layer_variance, float(exact.mean()), site.layer_variance_stderr)
    z = (site.variance - exact) / site.variance_stderr
    assert z.abs().max() < 5  # 64 neurons with batch-means standard errors (t, 31 d.o.f.)
    torch.testing.assert_close(site.mean, model[2](model[1](model[0](x))).detach().flatten(1),
                               atol=5 * float(site.mean_stderr.max()), rtol=0)  # fmt: skip


def test_correlated_noise_at_a_conv_site_is_one_draw_for_every_channel_and_position(seed):
    """AC alone at a conv site: every element moves by the same draw, so the estimated covariance
    of any two elements equals the estimated variance of each (to rounding), and that is D_AC
    within its standard error."""
    model = _conv_net()
    x = torch.rand(1, 2, 7, 7, dtype=torch.float64)
    stats = simulate(model, {"1": Noise(AC=0.04)}, x, repeats=4000, seed=seed, dtype="float64",
                     covariance=True)  # fmt: skip
    site = stats[0]
    covariance = site.covariance[0]  # (75, 75)
    assert covariance.shape == (75, 75)
    torch.testing.assert_close(covariance, torch.full_like(covariance, float(covariance[0, 0])),
                               rtol=1e-9, atol=0)  # fmt: skip
    assert_within(site.layer_variance, 0.04, 0.04 * math.sqrt(2 / (4000 - 1)))


def test_per_channel_intensities_are_measured_per_channel(seed):
    model = _conv_net()
    x = torch.rand(2, 2, 7, 7, dtype=torch.float64)
    variances = torch.tensor([0.001, 0.004, 0.009]).reshape(3, 1, 1)
    stats = simulate(model, {"1": Noise(AU=variances)}, x, repeats=8000, seed=seed,
                     dtype="float64")  # fmt: skip
    site = stats[0]
    per_channel = site.variance.view(2, 3, 25).mean((0, 2))
    for got, expected in zip(per_channel, variances.flatten()):
        stderr = float(expected) * math.sqrt(2 / (8000 - 1) / 50)  # 50 independent neurons
        assert_within(float(got), float(expected), stderr)


class Shared(nn.Module):
    """One ReLU module called twice, the output not a site."""

    def __init__(self) -> None:
        super().__init__()
        self.first, self.second = nn.Linear(3, 4), nn.Linear(4, 2)
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.second(self.relu(self.first(self.relu(x))))


def test_a_site_called_twice_is_measured_at_each_call(seed):
    """AU on a ReLU module used twice: the first call's output (positive inputs) has variance D;
    the output ``W2 (A W1 xi_1 + xi_2)`` (``A`` the second call's active neurons; noise after the
    activation reaches every neuron) has variance ``D (sum_j (W2 A W1)_kj^2 + sum_i W2_ki^2)``."""
    model = Shared().double()
    x = torch.tensor([[0.5, 1.0, 2.0]], dtype=torch.float64)
    stats = simulate(model, Noise(AU=1e-6), x, repeats=20_000, seed=seed, dtype="float64")
    assert stats.names == ("relu#1", "relu#2", "output")
    assert [layer.neuron_shape for layer in stats.layers] == [(3,), (4,), (2,)]
    assert_within(stats[0].layer_variance, 1e-6, stats[0].layer_variance_stderr)
    with torch.no_grad():
        active = (model.first(x) > 0).double()  # tiny noise: the kink is not reached
        through = model.second.weight @ (active.T * model.first.weight)  # from the first call
        expected = 1e-6 * (through.square().sum(1) + model.second.weight.square().sum(1))
    assert_within(stats[2].layer_variance, float(expected.mean()), stats[2].layer_variance_stderr)


def test_reproducible_and_the_model_is_left_as_it_was():
    model = _conv_net().train()
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    x = torch.rand(2, 2, 7, 7, dtype=torch.float64)
    first = simulate(model, Noise(AU=0.01, MC=0.01), x, repeats=300, seed=3, dtype="float64")
    again = simulate(model, Noise(AU=0.01, MC=0.01), x, repeats=300, seed=3, dtype="float64")
    other = simulate(model, Noise(AU=0.01, MC=0.01), x, repeats=300, seed=4, dtype="float64")
    for a, b, c in zip(first.layers, again.layers, other.layers):
        assert torch.equal(a.variance, b.variance) and not torch.equal(a.variance, c.variance)
    assert model.training and all(module.training for module in model.modules())
    assert all(not module._forward_hooks and not module._forward_pre_hooks for module in model.modules())
    assert all(torch.equal(before[name], tensor) for name, tensor in model.state_dict().items())
    float32 = simulate(model, Noise(AU=0.01), x, repeats=300, seed=3)  # runs on a float32 copy
    assert next(model.parameters()).dtype == torch.float64 and float32[0].variance.dtype == torch.float64


def test_eval_mode_switches_dropout_off_and_progress_is_reported():
    model = nn.Sequential(nn.Linear(3, 3), nn.Dropout(0.9), nn.Tanh()).double()
    x = torch.ones(1, 3, dtype=torch.float64)
    calls = []
    stats = simulate(model, Noise(), x, repeats=10, chunk=4, progress=lambda d, t: calls.append((d, t)))
    assert float(stats[0].variance.max()) == 0.0  # no noise, no dropout: every repeat the same
    assert calls[-1] == (10, 10) and len(calls) == 3


def test_sample_of_a_model_has_repeats_first():
    model = _conv_net()
    x = torch.rand(3, 2, 7, 7, dtype=torch.float64)
    out = sample(model, {"1": Noise(AC=0.1)}, x, repeats=5, seed=0, dtype="float64")
    assert out.shape == (5, 3, 4)
    assert out.std(0).min() > 0


@pytest.mark.parametrize(
    ("model", "inputs", "error", "match"),
    [
        (nn.Sequential(nn.ReLU(), nn.Flatten(0)), torch.ones(2, 3), ValueError,
         r"the model outputs a batch of 6 for 2 inputs; its output must be batch first"),
        (nn.Sequential(nn.Linear(3, 2), nn.ReLU(), nn.Softmax(-1)).to(torch.float64),
         "abc", TypeError, r"inputs must be an array or tensor of numbers"),
        (nn.Sequential(nn.ReLU()), 1.0, ValueError, r"inputs of a model must be a batch"),
        (nn.Sequential(nn.ReLU()), torch.tensor([[math.nan]]), ValueError, r"inputs must be finite"),
    ],
)  # fmt: skip
def test_bad_models_and_inputs_are_named(model, inputs, error, match):
    with pytest.raises(error, match=match):
        simulate(model, Noise(AU=1e-3), inputs, repeats=10)


def test_a_model_whose_output_is_not_a_float_tensor_is_refused():
    class Labels(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.act = nn.ReLU()

        def forward(self, x):
            return self.act(x).argmax(-1)

    with pytest.raises(TypeError, match=r"the model's output must be a floating-point tensor"):
        simulate(Labels(), Noise(AU=1e-3), torch.ones(2, 3), repeats=10)
    with pytest.raises(ValueError, match=r"sites apply to a torch model"):
        simulate(NET, Noise(), X, sites="1", repeats=10)
    with pytest.raises(ValueError, match=r"device must be 'cpu', 'cuda' or 'cuda:N'; got 'banana'"):
        simulate(nn.Sequential(nn.ReLU()), Noise(), torch.ones(1, 2), repeats=10, device="banana")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_model_on_cuda_gives_the_statistics_of_the_cpu():  # pragma: no cover - GPU only
    model = _conv_net()
    x = torch.rand(2, 2, 7, 7, dtype=torch.float64)
    cpu = simulate(model, Noise(AU=0.01), x, repeats=20_000, seed=0, dtype="float64")
    gpu = simulate(model, Noise(AU=0.01), x, repeats=20_000, seed=1, dtype="float64", device="cuda")
    for a, b in zip(cpu.layers, gpu.layers):
        assert_within(a.layer_variance, b.layer_variance,
                      math.hypot(a.layer_variance_stderr, b.layer_variance_stderr))  # fmt: skip
