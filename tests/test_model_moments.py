"""The accuracy of any torch classifier predicted beyond first order (``predictor="moments"``): the
input of its last nonlinear site call taken as Gaussian, the rest of the model run at quasi-random
points, against the dense predictor and against simulation."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from noiseprop import KINDS, Noise, accuracy
from noiseprop.classification import MAX_CUT_ELEMENTS
from noiseprop.cnn import default_cnn
from noiseprop.datasets import mnist
from noiseprop.model_analytic import gaussian_cut
from noiseprop.training import default_network


@pytest.fixture(scope="module")
def test_set():
    images, labels = mnist().scaled("test")
    return torch.as_tensor(images[:300], dtype=torch.float64), torch.as_tensor(labels[:300])


@pytest.mark.parametrize("kind", KINDS)
def test_the_shipped_network_as_a_model_equals_its_dense_prediction(kind, test_set):
    """The shipped 784-100-100-10 network as ``nn.Sequential`` (``Network.to_torch``), each kind at
    1 on every layer, 300 images: the cut is the input of the second sigmoid, exactly Gaussian
    here, so the model's prediction agrees with the dense moments predictor and with a 200-repeat
    simulation within 4 combined standard errors plus 0.5 point, where first order is off by 8 to
    14 points (measured; asserted: more than 5)."""
    images, labels = test_set
    network = default_network()
    model = network.to_torch(torch.float64)
    noise = Noise(**{kind: 1.0})
    ours = accuracy(model, noise, images, labels, method="predicted")
    dense = accuracy(network, noise, images, labels, method="predicted")
    simulated = accuracy(model, noise, images, labels, repeats=200, seed=2)
    first = accuracy(model, noise, images, labels, method="predicted", predictor="covariance")
    assert ours.predictor == "moments" and ours.points == 1024
    for truth in (dense, simulated):
        allowed = 0.005 + 4 * math.hypot(ours.stderr, truth.stderr)
        assert abs(ours.accuracy - truth.accuracy) <= allowed, (kind, ours, truth)
    assert abs(first.accuracy - simulated.accuracy) > 0.05


def _cnn_with_a_dense_head() -> nn.Sequential:
    """Conv 5x5 x4, ReLU, mean pool, conv 5x5 x8, ReLU, mean pool, dense 128 -> 32 sigmoid -> 10:
    seeded random weights, scaled up so that the sigmoid layer bends."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Unflatten(1, (1, 28, 28)), nn.Conv2d(1, 4, 5), nn.ReLU(), nn.AvgPool2d(2),
        nn.Conv2d(4, 8, 5), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(),
        nn.Linear(128, 32), nn.Sigmoid(), nn.Linear(32, 10),
    )  # fmt: skip
    with torch.no_grad():
        for module in model:
            if isinstance(module, (nn.Linear, nn.Conv2d)):
                module.weight.mul_(3)
    return model.double()


def test_a_cnn_with_a_dense_head_against_simulation(test_set):
    """Noise on the second ReLU (MU = 1) and on the hidden sigmoid (MC = 0.5): the sigmoid's input
    is an affine map of the ReLU's noisy output, so it is exactly Gaussian, and the prediction
    (conv, pooling and all before the cut, the sigmoid and readout sampled) is within 0.5 point plus
    4 standard errors of a 400-repeat simulation, where first order misses by 2 points. Labels: the
    noise-free classes, so that every loss is the noise's."""
    images, _ = test_set
    model = _cnn_with_a_dense_head()
    images = images[:200]
    labels = model(images).argmax(-1)
    noise = {"5": Noise(MU=1.0), "9": Noise(MC=0.5)}
    ours = accuracy(model, noise, images, labels, method="predicted")
    simulated = accuracy(model, noise, images, labels, repeats=400, seed=2)
    first = accuracy(model, noise, images, labels, method="predicted", predictor="covariance")
    cut = gaussian_cut(model, noise, images[:2], moments=False)
    assert (cut.name, cut.elements, ours.predictor) == ("9", 32, "moments")
    assert abs(ours.accuracy - simulated.accuracy) <= 0.005 + 4 * math.hypot(
        ours.stderr, simulated.stderr
    )
    assert abs(first.accuracy - simulated.accuracy) > 0.01


def test_the_result_depends_on_the_seed_only(test_set):
    """Same seed, same numbers, whatever ``batch_size``; another seed, other points (the
    difference within the standard errors)."""
    images, labels = test_set
    model = default_network().to_torch(torch.float64)
    noise = Noise(AU=0.5)
    first = accuracy(model, noise, images[:50], labels[:50], method="predicted", seed=4)
    again = accuracy(model, noise, images[:50], labels[:50], method="predicted", seed=4,
                     batch_size=7)  # fmt: skip
    other = accuracy(model, noise, images[:50], labels[:50], method="predicted", seed=5)
    torch.testing.assert_close(first.per_image, again.per_image, rtol=0, atol=0)
    assert first.accuracy != other.accuracy
    assert abs(first.accuracy - other.accuracy) <= 4 * math.hypot(first.stderr, other.stderr)


def test_a_wide_cut_falls_back_to_first_order(test_set):
    """The shipped CNN's last nonlinear site, relu2, takes 16 x 8 x 8 = 1,024 elements per image,
    more than MAX_CUT_ELEMENTS: the default predictor is first order, and asking for moments is a
    clear error that names the site and the size."""
    images, labels = test_set
    model = default_cnn(pooling="mean")
    noise = Noise(AC=1e-2)
    assert MAX_CUT_ELEMENTS < 1024
    default = accuracy(model, noise, images[:5], labels[:5], method="predicted")
    assert default.predictor == "covariance"
    with pytest.raises(ValueError, match=r"\('relu2'\) as Gaussian, and that input has 1,024 elements"):
        accuracy(model, noise, images[:5], labels[:5], method="predicted", predictor="moments")


class _Residual(nn.Module):
    """``x + head(tanh(x))`` with a second tanh after the sum: the skip carries ``x`` around the
    first tanh site."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.first, self.act, self.second = nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 6)
        self.out = nn.Linear(6, 3)

    def forward(self, x):
        hidden = self.first(x)
        return self.out(hidden + self.second(self.act(hidden)))


@pytest.mark.parametrize("images", [1, 3])
def test_a_skip_connection_around_the_cut_is_refused(images):
    """The rest of the model after the cut uses a value from before it: the model's input at the cut
    does not determine the output, so sampling it alone would be wrong. A clear error, also for a
    single image (where the skipped value would otherwise broadcast silently)."""
    model = _Residual().double()
    x = torch.rand(images, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="a skip connection around it"):
        accuracy(model, Noise(AU=0.1), x, [0] * images, method="predicted", predictor="moments")
