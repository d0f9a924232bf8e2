"""The shipped trained MNIST network (784-100-100-10 sigmoid): the covariance method against Monte
Carlo on real test images, per layer and per image (issue: trained networks on real data)."""

from __future__ import annotations

import pytest
from conftest import assert_within

from noiseprop import Noise, propagate, simulate
from noiseprop.datasets import mnist
from noiseprop.training import default_network


@pytest.fixture(scope="module")
def network_and_images():
    images, _ = mnist().scaled("test")
    return default_network(), images[:50]


def test_covariance_method_agrees_in_every_layer(network_and_images, seed):
    network, images = network_and_images
    noise = Noise(AU=1e-3, AC=1e-3, MU=1e-3, MC=1e-3)
    predicted = propagate(network, noise, images)
    simulated = simulate(network, noise, images, repeats=4000, seed=seed)
    for expected, measured in zip(predicted.layers, simulated.layers):
        assert_within(measured.layer_variance, expected.layer_variance, measured.layer_variance_stderr)
    assert predicted.compare(simulated).max_relative_error < 0.01


def test_covariance_method_agrees_image_by_image(network_and_images, seed):
    """150 (layer, image) pairs: at 3 standard errors 99.7 % should agree if the prediction is
    right; we ask for 95 %, which a wrong prediction (a bias of a few standard errors) fails."""
    network, images = network_and_images
    noise = Noise(AU=1e-3, MU=1e-3)
    comparison = propagate(network, noise, images).compare(
        simulate(network, noise, images, repeats=4000, seed=seed)
    )
    rows = comparison.per_input()
    assert len(rows) == 3 * 50
    assert rows["within"].mean() >= 0.95, rows.sort_values("z").iloc[[0, -1]]
    assert rows["relative_error"].abs().max() < 0.03
