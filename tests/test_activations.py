"""Activations: values and derivatives against independent formulas, parsing, registration."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch
from torch import nn

from noiseprop import Activation, Linear, ReLU, Sigmoid, Tanh, parse_activation, register_activation
from noiseprop.activations import (
    ELU,
    GELU,
    GELUTanh,
    Hardtanh,
    LeakyReLU,
    Softplus,
    activation_from_spec,
)

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


def _softplus(x: float, beta: float, threshold: float) -> float:
    return x if beta * x > threshold else math.log1p(math.exp(beta * x)) / beta


def _gelu_tanh(x: float) -> float:
    return 0.5 * x * (1 + math.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


# (activation, closed form, its kinks, the same function as a torch module)
NEW = [
    (LeakyReLU(), lambda x: x if x > 0 else 0.01 * x, [0.0], nn.LeakyReLU()),
    (LeakyReLU(negative_slope=0.2), lambda x: x if x > 0 else 0.2 * x, [0.0], nn.LeakyReLU(0.2)),
    (GELU(), lambda x: 0.5 * x * (1 + math.erf(x / math.sqrt(2))), [], nn.GELU()),
    (GELUTanh(), _gelu_tanh, [], nn.GELU(approximate="tanh")),
    (Softplus(), lambda x: _softplus(x, 1.0, 20.0), [20.0], nn.Softplus()),
    (
        Softplus(beta=2, threshold=3),
        lambda x: _softplus(x, 2.0, 3.0),
        [1.5],
        nn.Softplus(beta=2, threshold=3),
    ),
    (ELU(), lambda x: x if x > 0 else math.expm1(x), [0.0], nn.ELU()),
    (ELU(alpha=0.5), lambda x: x if x > 0 else 0.5 * math.expm1(x), [0.0], nn.ELU(alpha=0.5)),
    (Hardtanh(), lambda x: min(max(x, -1.0), 1.0), [-1.0, 1.0], nn.Hardtanh()),
    (
        Hardtanh(min_val=0, max_val=6),
        lambda x: min(max(x, 0.0), 6.0),
        [0.0, 6.0],
        nn.ReLU6(),
    ),
]
NEW_IDS = [str(case[0]) for case in NEW]
GRID = torch.cat(
    [
        torch.linspace(-7, 7, 141, dtype=torch.float64),
        torch.tensor([-1.0, 0.0, 1.0, 1.5, 6.0, 20.0, 25.0], dtype=torch.float64),
    ]
)


@pytest.mark.parametrize(("activation", "reference", "kinks", "module"), NEW, ids=NEW_IDS)
def test_new_activations_against_closed_forms(activation, reference, kinks, module):
    """Values against the closed form in plain Python floats; slopes against a central difference
    of it, away from the kinks (and from Softplus's switch to the identity)."""
    expected = torch.tensor([reference(float(x)) for x in GRID], dtype=torch.float64)
    torch.testing.assert_close(activation(GRID), expected, rtol=1e-12, atol=1e-14)
    h = 1e-6
    keep = torch.ones_like(GRID, dtype=torch.bool)
    for kink in kinks:
        keep &= (GRID - kink).abs() > 1e-3
    numeric = torch.tensor(
        [(reference(float(x) + h) - reference(float(x) - h)) / (2 * h) for x in GRID[keep]],
        dtype=torch.float64,
    )
    torch.testing.assert_close(activation.derivative(GRID)[keep], numeric, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize(("activation", "reference", "kinks", "module"), NEW, ids=NEW_IDS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_new_activations_match_torch_and_its_autograd(activation, reference, kinks, module, dtype):
    """``f`` equals the torch module's output, ``f'`` torch autograd's gradient, everywhere on the
    grid, the kinks included: the slope at a kink follows torch autograd's convention."""
    x = GRID.to(dtype).requires_grad_(True)
    value = module(x)
    (gradient,) = torch.autograd.grad(value.sum(), x)
    x = x.detach()
    tolerance = {"rtol": 1e-12, "atol": 1e-14} if dtype == torch.float64 else {}
    assert activation(x).dtype == activation.derivative(x).dtype == dtype
    torch.testing.assert_close(activation(x), value.detach(), **tolerance)
    torch.testing.assert_close(activation.derivative(x), gradient, **tolerance)


def test_slopes_at_the_kinks_are_torch_conventions():
    """The documented conventions, stated as numbers (independently of torch)."""

    def slope(activation, x):
        return activation.derivative(torch.tensor([x], dtype=torch.float64)).item()

    assert slope(ReLU(), 0.0) == 0.0
    assert slope(LeakyReLU(negative_slope=0.2), 0.0) == 0.2  # the left slope
    assert slope(ELU(alpha=0.5), 0.0) == 0.5  # the left slope alpha exp(0)
    assert slope(Hardtanh(), -1.0) == slope(Hardtanh(), 1.0) == 0.0  # flat at both kinks
    assert slope(Hardtanh(), 0.999) == 1.0
    softplus = Softplus(beta=2, threshold=3)  # identity where 2 x > 3
    assert slope(softplus, 1.5) == pytest.approx(1 / (1 + math.exp(-3)), rel=1e-15)
    assert slope(softplus, 1.5 + 1e-9) == 1.0
    assert softplus(torch.tensor(1.6, dtype=torch.float64)).item() == 1.6


def test_sigmoid_slope_at_centre_is_gain_over_four():
    assert float(Sigmoid(gain=4, centre=0.5).derivative(torch.tensor(0.5))) == pytest.approx(1.0)


def test_parse_and_specs_round_trip():
    for activation in (
        Sigmoid(gain=2, centre=-1),
        Linear(slope=0.5),
        Tanh(),
        ReLU(),
        LeakyReLU(),
        LeakyReLU(negative_slope=0.123456789),  # more digits than %g keeps
        GELU(),
        GELUTanh(),
        Softplus(beta=2.5, threshold=7),
        ELU(alpha=1 / 3),
        Hardtanh(min_val=0, max_val=6),
    ):
        assert parse_activation(str(activation)) == activation
        assert activation_from_spec(activation.to_spec()) == activation


@pytest.mark.parametrize(
    ("activation", "text"),
    [
        (LeakyReLU(), "leaky_relu"),
        (LeakyReLU(negative_slope=0.2), "leaky_relu:negative_slope=0.2"),
        (GELU(), "gelu"),
        (GELUTanh(), "gelu_tanh"),
        (Softplus(beta=2), "softplus:beta=2"),
        (ELU(alpha=0.5), "elu:alpha=0.5"),
        (Hardtanh(min_val=0, max_val=6), "hardtanh:min_val=0,max_val=6"),
        (Sigmoid(gain=1 / 3), "sigmoid:gain=0.3333333333333333"),
    ],
)
def test_str_is_the_parsable_form(activation, text):
    assert str(activation) == text
    assert parse_activation(text) == activation


@pytest.mark.parametrize(
    ("text", "error", "message"),
    [
        (
            "softmax",
            ValueError,
            r"activation must be one of elu, gelu, gelu_tanh, hardtanh, leaky_relu, linear, relu, "
            r"sigmoid, softplus, .*tanh",
        ),
        ("sigmoid:slope=2", ValueError, r"activation 'sigmoid' takes parameters \['centre', 'gain'\]"),
        ("sigmoid:gain", ValueError, r"'gain' in 'sigmoid:gain' is malformed"),
        ("sigmoid:gain=abc", ValueError, r"parameter 'gain' .* must be a number; got 'abc'"),
        ("sigmoid:gain=-1", ValueError, r"Sigmoid\.gain must be a finite number > 0; got -1\.0"),
        ("linear:slope=nan", ValueError, r"Linear\.slope must be a finite real number; got nan"),
        ("tanh:gain=0", ValueError, r"Tanh\.gain must be a finite number > 0; got 0\.0"),
        ("leaky_relu:negative_slope=inf", ValueError, r"LeakyReLU\.negative_slope must be a finite"),
        ("gelu:approximate=1", ValueError, r"activation 'gelu' takes parameters none; got unknown"),
        ("softplus:beta=0", ValueError, r"Softplus\.beta must be a finite number > 0; got 0\.0"),
        ("softplus:threshold=nan", ValueError, r"Softplus\.threshold must be a finite real number"),
        ("elu:alpha=-inf", ValueError, r"ELU\.alpha must be a finite real number; got -inf"),
        (
            "hardtanh:min_val=2",
            ValueError,
            r"Hardtanh\.max_val must be a finite number > Hardtanh\.min_val \(2\.0\); got 1\.0",
        ),
        ("hardtanh:max_val=nan", ValueError, r"Hardtanh\.max_val must be a finite real number"),
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
