"""First-order propagation through any torch model by automatic differentiation
(noiseprop.model_analytic): against the dense covariance recursion, hand-computed readouts and
simulation."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from noiseprop import KINDS, Network, Noise, accuracy, design, propagate, simulate
from noiseprop.budget import model_budget
from noiseprop.cnn import default_cnn
from noiseprop.criteria import design_model
from noiseprop.datasets import mnist
from noiseprop.model_analytic import linearised_model


@pytest.fixture(scope="module")
def dense():
    network = Network.random([6, 8, 7, 4], ["sigmoid", "tanh", "linear"], seed=0)
    x = torch.rand(5, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    return network, x


def _first_order_noise(injection: str) -> dict[int, Noise]:
    """Multiplicative noise only where the signal is noise-free (layer 1), additive everywhere:
    there the covariance method has no products of noises and is exactly first order."""
    return {
        1: Noise(AU=1e-3, AC=2e-3, MU=3e-3, MC=4e-3, injection=injection),
        2: Noise(AU=1e-3, AC=2e-3, injection=injection),
        3: Noise(AU=2e-3, AC=1e-3, injection=injection),
    }


@pytest.mark.parametrize("mode", ["forward", "reverse"])
@pytest.mark.parametrize("injection", ["after", "before"])
def test_a_dense_network_equals_the_covariance_method(dense, injection, mode):
    """``Network.to_torch()`` linearised by autodiff: every layer's variance and the output
    covariance equal the covariance recursion to 1e-10, in forward and in reverse mode."""
    network, x = dense
    noise = _first_order_noise(injection)
    reference = propagate(network, noise, x, covariance=True)
    statistics, _, _ = linearised_model(
        network.to_torch(torch.float64), list(noise.values()), x, mode=mode
    )
    assert statistics.names == ("1", "3", "5")  # the activation modules of the Sequential
    for ours, theirs in zip(statistics.layers, reference.layers):
        torch.testing.assert_close(ours.mean, theirs.mean, rtol=0, atol=1e-12)
        torch.testing.assert_close(ours.variance, theirs.variance, rtol=0, atol=1e-10)
    torch.testing.assert_close(statistics[-1].covariance, reference[-1].covariance, rtol=0, atol=1e-10)


def test_the_covariance_methods_products_of_noises_are_second_order(dense):
    """With multiplicative noise on a later layer the covariance method also keeps the product of
    that noise with the noise it scales; the linearisation does not. The difference is second
    order: halving every intensity quarters it (ratio 4 within 5 %)."""
    network, x = dense
    differences = []
    for scale in (1e-3, 5e-4):
        noise = Noise(AU=scale, MU=scale, MC=scale)
        model = propagate(network.to_torch(torch.float64), noise, x)
        recursion = propagate(network, noise, x)
        differences.append(float((recursion[-1].variance - model[-1].variance).abs().mean()))
    assert differences[1] > 0 and differences[0] / differences[1] == pytest.approx(4.0, rel=0.05)


def test_budget_of_a_dense_network_equals_the_design_budget(dense):
    """``model_budget`` of ``Network.to_torch()`` against ``design(...).budget`` (the first-order
    recursion, every kind on every layer): every (layer, kind) part to 1e-12, and the parts add up
    to the output variance."""
    network, x = dense
    noise = Noise(AU=1e-3, AC=2e-3, MU=3e-3, MC=4e-3)
    ours = model_budget(network.to_torch(torch.float64), noise, x)
    theirs = design(network, noise, x, check=False).budget
    assert ours.names == ("1", "3", "5") and ours.to_frame()["site"].tolist()[:4] == ["1"] * 4
    for row, expected in zip(ours.contributions, theirs.contributions):
        assert row == pytest.approx(expected, abs=1e-12)
    assert sum(map(sum, ours.contributions)) == pytest.approx(ours.first_order_total, rel=1e-12)
    assert ours.first_order_total == pytest.approx(theirs.first_order_total, rel=1e-10)


def test_a_conv_site_read_out_by_a_linear_layer():
    """Noise on every element of a conv feature map, read out by ``y = sum_k w_k s_k + b``: the
    output variance is ``sum_k w_k^2 D`` for AU and ``(sum_k w_k)^2 D`` for AC, exactly."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Identity(), nn.Flatten(), nn.Linear(2 * 4 * 4, 1))
    w = model[3].weight.detach().double().flatten()
    x = torch.rand(3, 1, 6, 6)
    for kind, expected in (("AU", float(w.square().sum()) * 0.01), ("AC", float(w.sum()) ** 2 * 0.01)):
        statistics = propagate(model, Noise(**{kind: 0.01}), x, sites=nn.Identity)
        assert statistics.names == ("1", "output")
        assert statistics[0].shape == (2, 4, 4)
        torch.testing.assert_close(
            statistics[-1].variance,
            torch.full((3, 1), expected, dtype=torch.float64),
            rtol=1e-12,
            atol=0,
        )


@pytest.fixture(scope="module")
def images():
    return torch.as_tensor(mnist().scaled("test")[0][:2])


@pytest.mark.parametrize("kind", KINDS)
def test_a_cnn_against_simulation(kind, images):
    """The shipped CNN's mean-pooling twin (trained), each kind alone at 1e-4 on both ReLU sites:
    every site's and the output's variance (average over elements and inputs) within 4 standard
    errors plus 0.3 % of a 4,000-repeat simulation (the ReLU kink costs about 0.1 % at this
    intensity)."""
    model = default_cnn(pooling="mean")
    noise = Noise(**{kind: 1e-4})
    predicted = propagate(model, noise, images)
    simulated = simulate(model, noise, images, repeats=4000, seed=1)
    assert predicted.names == simulated.names == ("relu1", "relu2", "output")
    for ours, truth in zip(predicted.layers, simulated.layers):
        error = abs(float(ours.variance.mean()) - truth.layer_variance)
        assert error <= 4 * truth.layer_variance_stderr + 0.003 * truth.layer_variance


def test_the_shipped_cnn_refuses_uncorrelated_noise_at_tied_max_pooling(images):
    """Its max-pooling windows hold tied values at the noise-free input (zeros of relu1, and the
    equal background values): the maximum of tied noisy values is not linear in the noise, so
    additive or multiplicative uncorrelated noise is refused with a clear error. Correlated noise
    moves tied values together and is linearised; it agrees with simulation at 1e-3."""
    model = default_cnn()
    for kind in ("AU", "MU"):
        with pytest.raises(ValueError, match=r"not differentiable .* max-pooling module 'pool1'"):
            propagate(model, Noise(**{kind: 1e-3}), images)
    for kind in ("AC", "MC"):
        predicted = propagate(model, Noise(**{kind: 1e-3}), images)
        simulated = simulate(model, Noise(**{kind: 1e-3}), images, repeats=4000, seed=2)
        for ours, truth in zip(predicted.layers, simulated.layers):
            error = abs(float(ours.variance.mean()) - truth.layer_variance)
            assert error <= 4 * truth.layer_variance_stderr + 0.003 * truth.layer_variance


def test_predicted_accuracy_of_a_model_equals_that_of_its_network(dense):
    """A dense network as a torch model: the predicted accuracy (first order) is the network's with
    ``predictor="covariance"``, image by image (the same Gaussian and the same points)."""
    network, x = dense
    labels = [0, 1, 2, 3, 0]
    noise = Noise(AU=0.05, AC=0.02)
    model = network.to_torch(torch.float64)
    ours = accuracy(model, noise, x, labels, method="predicted", predictor="covariance")
    theirs = accuracy(network, noise, x, labels, method="predicted", predictor="covariance")
    assert ours.predictor == "covariance"
    torch.testing.assert_close(ours.per_image, theirs.per_image, rtol=0, atol=1e-12)
    assert math.isclose(ours.accuracy, theirs.accuracy, abs_tol=1e-12)


class _Rounded(nn.Module):
    def forward(self, x):
        return torch.round(x * 10) / 10


class _Detached(nn.Module):
    def forward(self, x):
        return x.detach() * 2


@pytest.mark.parametrize("block", [_Rounded(), _Detached()], ids=["round", "detach"])
def test_a_site_the_linearisation_cannot_follow_is_refused(block):
    """Rounding and ``detach`` pass the noise to the output (a draw of it moves the output) while
    their derivative is zero: a linearisation would report no noise at all. It is refused."""
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), block, nn.Linear(4, 2))
    x = torch.rand(5, 3, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="the noise at site '1' changes the model's output, but"):
        propagate(model, Noise(AU=0.01), x)


def test_bad_input(dense):
    network, x = dense
    model = network.to_torch(torch.float64)
    with pytest.raises(ValueError, match="method='moments' needs a dense Network"):
        propagate(model, Noise(AU=1e-3), x, method="moments")
    with pytest.raises(ValueError, match="sites are for a torch model"):
        propagate(network, Noise(AU=1e-3), x, sites="1")
    with pytest.raises(ValueError, match="nodes applies to a dense Network's moments predictor"):
        accuracy(model, Noise(AU=1e-3), x, [0] * 5, method="predicted", nodes=4)
    with pytest.raises(ValueError, match="mode must be one of 'auto', 'forward', 'reverse'"):
        linearised_model(model, Noise(AU=1e-3), x, mode="sideways")


def test_design_of_a_model_against_the_dense_design(dense):
    """``design_model`` of ``Network.to_torch()`` with additive noise (first order is exact):
    the budget equals the dense design's, the gains are the parts per unit intensity, and the
    tolerable intensity of the additive kinds for 20 dB equals the dense design's within the
    bisection's precision (the multiplicative kinds, on every layer, within the 0.3 % of the
    products of noises that the dense method keeps)."""
    network, x = dense
    noise = Noise(AU=1e-3, AC=2e-3)
    ours = design_model(network.to_torch(torch.float64), noise, x, target_snr_db=20, check=False)
    theirs = design(network, noise, x, target_snr_db=20, check=False)
    for row, expected in zip(ours.budget.contributions, theirs.budget.contributions):
        assert row == pytest.approx(expected, abs=1e-12)
    for gains, parts in zip(ours.gains, ours.budget.contributions):
        assert gains[0] * 1e-3 == pytest.approx(parts[0], rel=1e-10)
        assert gains[1] * 2e-3 == pytest.approx(parts[1], rel=1e-10)
    assert ours.refused == {}
    for mine, dense_one in zip(ours.tolerances, theirs.tolerances):
        assert mine.kind == dense_one.kind
        # multiplicative noise on every layer: the dense method keeps its second-order products
        tolerance = 2e-3 if mine.kind in ("AU", "AC") else 1e-2
        assert mine.intensity == pytest.approx(dense_one.intensity, rel=tolerance)


def test_design_of_the_shipped_cnn(images):
    """Uncorrelated kinds refused (tied max pooling), with ``nan`` gains and no tolerance; for the
    correlated ones the tolerable intensity for 20 dB is confirmed by one simulation."""
    result = design_model(default_cnn(), Noise(AC=1e-3), images, target_snr_db=20, repeats=500)
    assert set(result.refused) == {"AU", "MU"}
    assert all(math.isnan(row[0]) and math.isnan(row[2]) for row in result.gains)
    assert [tolerance.kind for tolerance in result.tolerances] == ["AC", "MC"]
    for tolerance in result.tolerances:
        assert tolerance.predicted == pytest.approx(20, abs=1e-6) and tolerance.meets_target
