"""Activations: values and derivatives against independent formulas, parsing, registration."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch

from noiseprop import Activation, Linear, ReLU, Sigmoid, Tanh, parse_activation, register_activation
from noiseprop.activations import activation_from_spec

X = torch.linspace(-3, 3, 61, dtype=torch.float64)


@pytest.mark.parametrize(
    ("activation", "reference"),
    [
        (Sigmoid(), lambda x: 1 / (1 + math.exp(-x))),
        (Sigmoid(gain=4, centre=0.5), lambda x: 1 / (1 + math.exp(-4 * (x - 0.5)))),
        (Linear(slope=0.7, offset=0.2), lambda x: 0.7 * x + 0.2),
        (Tanh(gain=2), lambda x: math.tanh(2 * x)),
        (ReLU(), lambda x: max(x, 0.0)),
    ],
    ids=str,
)
def test_values_and_derivatives(activation, reference):
    values = activation(X)
    expected = torch.tensor([reference(float(x)) for x in X], dtype=torch.float64)
    torch.testing.assert_close(values, expected, rtol=1e-12, atol=1e-14)
    # derivative against a central difference of the reference function, away from ReLU's kink
    h = 1e-6
    keep = X.abs() > 1e-3
    numeric = torch.tensor(
        [(reference(float(x) + h) - reference(float(x) - h)) / (2 * h) for x in X[keep]],
        dtype=torch.float64,
    )
    torch.testing.assert_close(activation.derivative(X)[keep], numeric, rtol=1e-6, atol=1e-8)


def test_sigmoid_slope_at_centre_is_gain_over_four():
    assert float(Sigmoid(gain=4, centre=0.5).derivative(torch.tensor(0.5))) == pytest.approx(1.0)


def test_parse_and_specs_round_trip():
    for activation in (Sigmoid(gain=2, centre=-1), Linear(slope=0.5), Tanh(), ReLU()):
        assert parse_activation(str(activation)) == activation
        assert activation_from_spec(activation.to_spec()) == activation


@pytest.mark.parametrize(
    ("text", "error", "message"),
    [
        ("softmax", ValueError, r"activation must be one of linear, relu, sigmoid, tanh"),
        ("sigmoid:slope=2", ValueError, r"activation 'sigmoid' takes parameters \['centre', 'gain'\]"),
        ("sigmoid:gain", ValueError, r"'gain' in 'sigmoid:gain' is malformed"),
        ("sigmoid:gain=abc", ValueError, r"parameter 'gain' .* must be a number; got 'abc'"),
        ("sigmoid:gain=-1", ValueError, r"Sigmoid\.gain must be a finite number > 0; got -1\.0"),
        ("linear:slope=nan", ValueError, r"Linear\.slope must be a finite real number; got nan"),
        ("tanh:gain=0", ValueError, r"Tanh\.gain must be a finite number > 0; got 0\.0"),
    ],
)
def test_parse_errors(text, error, message):
    with pytest.raises(error, match=message):
        parse_activation(text)


def test_user_activation_can_be_registered_and_saved(tmp_path):
    @register_activation
    @dataclass(frozen=True, kw_only=True)
    class Softsign(Activation):
        name: ClassVar[str] = "softsign_test"
        scale: float = 1.0

        def __call__(self, x):
            return self.scale * x / (1 + x.abs())

        def derivative(self, x):
            return self.scale / (1 + x.abs()) ** 2

    from noiseprop import Layer, Network

    layer = Layer(torch.eye(2), torch.zeros(2), Softsign(scale=2.0))
    path = Network((layer,)).save(tmp_path / "net.safetensors")
    loaded = Network.load(path)
    assert loaded.layers[0].activation == Softsign(scale=2.0)
    assert parse_activation("softsign_test:scale=3") == Softsign(scale=3.0)


def test_register_rejects_non_activations():
    with pytest.raises(TypeError, match="register_activation expects an Activation subclass"):
        register_activation(int)  # type: ignore[arg-type]
