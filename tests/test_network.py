"""Network: construction, validation, torch conversion and the safetensors file format."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from noiseprop import Layer, Linear, Network, ReLU, Sigmoid, Tanh


def test_symmetric_network_matches_the_definition():
    net = Network.symmetric(width=4, depth=3, activation="linear:slope=0.5")
    assert net.depth == 3 and net.widths == (4, 4, 4) and net.input_size == 4
    for layer in net.layers:
        assert torch.equal(layer.weight, torch.full((4, 4), 0.25, dtype=torch.float64))
        assert torch.equal(layer.bias, torch.zeros(4, dtype=torch.float64))
        assert layer.activation == Linear(slope=0.5)
    assert net.symmetric_weights() == [(0.25, 0.0)] * 3


def test_forward_is_the_plain_network_function():
    net = Network.random([3, 5, 2], ["tanh", "sigmoid"], seed=1)
    x = torch.tensor([[0.1, -0.2, 0.3]], dtype=torch.float64)
    (x1, s1), (x2, s2) = net.forward(x)
    w1, b1, w2, b2 = (net.layers[0].weight, net.layers[0].bias, net.layers[1].weight, net.layers[1].bias)
    torch.testing.assert_close(s1, torch.tanh(x @ w1.T + b1))
    torch.testing.assert_close(s2, torch.sigmoid(s1 @ w2.T + b2))


def test_layer_validation_errors():
    with pytest.raises(ValueError, match=r"Layer\.weight must be 2-D; got shape \(3,\)"):
        Layer(torch.ones(3), torch.zeros(3), "linear")
    with pytest.raises(ValueError, match=r"Layer\.bias must have one entry per output neuron \(2"):
        Layer(torch.ones(2, 3), torch.zeros(3), "linear")
    with pytest.raises(ValueError, match=r"Layer\.weight must be finite; got 1 NaN or infinite"):
        Layer(torch.tensor([[1.0, float("nan")]]), torch.zeros(1), "linear")
    with pytest.raises(ValueError, match=r"Layer\.bias must be finite"):
        Layer(torch.ones(1, 2), torch.tensor([float("inf")]), "linear")
    with pytest.raises(ValueError, match=r"activation must be one of"):
        Layer(torch.ones(1, 2), torch.zeros(1), "swish")
    with pytest.raises(TypeError, match=r"Layer\.activation must be an Activation"):
        Layer(torch.ones(1, 2), torch.zeros(1), 3)  # type: ignore[arg-type]


def test_network_shape_mismatch_names_the_layer():
    first = Layer(torch.ones(4, 3), torch.zeros(4), "tanh")
    second = Layer(torch.ones(2, 5), torch.zeros(2), "tanh")
    with pytest.raises(
        ValueError, match=r"layers\[1\]\.weight has 5 input columns but layer 1 .* 4 neurons"
    ):
        Network((first, second))
    with pytest.raises(ValueError, match="at least one Layer"):
        Network(())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"width": 0, "depth": 2}, r"width must be an integer >= 1; got 0"),
        ({"width": 3, "depth": -1}, r"depth must be an integer >= 1; got -1"),
        ({"width": 3, "depth": 2, "weight": float("nan")}, r"weight must be a finite real number"),
    ],
)
def test_symmetric_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Network.symmetric(**kwargs)


def test_from_torch_converts_and_keeps_the_function():
    torch.manual_seed(0)
    module = nn.Sequential(
        nn.Flatten(),
        nn.Linear(6, 5),
        nn.Sigmoid(),
        nn.Linear(5, 4),
        nn.Tanh(),
        nn.Linear(4, 4),
        nn.ReLU(),
        nn.Linear(4, 3),
    ).double()
    net = Network.from_torch(module, metadata={"source": "test"})
    assert [type(layer.activation) for layer in net.layers] == [Sigmoid, Tanh, ReLU, Linear]
    x = torch.randn(7, 6, dtype=torch.float64)
    torch.testing.assert_close(net.forward(x)[-1][1], module(x))
    torch.testing.assert_close(net.to_torch(torch.float64)(x), module(x))
    assert net.metadata == {"source": "test"}


@pytest.mark.parametrize(
    ("module", "message"),
    [
        (nn.Sequential(nn.Linear(3, 2), nn.Softmax(dim=-1)), r"module \[1\] Softmax is unsupported"),
        (nn.Sequential(nn.Linear(3, 2), nn.Conv1d(1, 1, 1)), r"module \[1\] Conv1d is unsupported"),
        (nn.Sequential(nn.Linear(3, 2), nn.Tanh(), nn.Tanh()), r"module \[2\] Tanh is after another"),
        (nn.Linear(3, 2), r"expects an nn\.Sequential .* got Linear"),
    ],
)
def test_from_torch_rejects_unsupported_modules(module, message):
    with pytest.raises(TypeError, match=message):
        Network.from_torch(module)


def test_save_load_round_trip(tmp_path):
    net = Network.random([5, 4, 3], ["sigmoid:gain=2,centre=0.1", "linear:slope=0.5,offset=1"], seed=2)
    net = Network(net.layers, metadata={"epochs": 3, "accuracy": 0.97})
    path = net.save(tmp_path / "sub" / "net.safetensors")
    loaded = Network.load(path)
    assert loaded.metadata == {"epochs": 3, "accuracy": 0.97}
    for original, copy in zip(net.layers, loaded.layers):
        assert torch.equal(original.weight, copy.weight) and torch.equal(original.bias, copy.bias)
        assert original.activation == copy.activation
    # the documented format: plain safetensors with a JSON header, readable without noiseprop
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        header = handle.metadata()
        assert sorted(handle.keys()) == [  # noqa: SIM118
            "layers.0.bias",
            "layers.0.weight",
            "layers.1.bias",
            "layers.1.weight",
        ]
    assert header["format"] == "noiseprop.network" and header["version"] == "1"
    assert json.loads(header["activations"])[0] == {"name": "sigmoid", "gain": 2.0, "centre": 0.1}


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"network file '.*missing\.safetensors' does not exist"):
        Network.load(tmp_path / "missing.safetensors")
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a safetensors file at all")
    with pytest.raises(ValueError, match="is not a readable safetensors file"):
        Network.load(garbage)
    from safetensors.torch import save_file

    other = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(other), metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"is not a noiseprop network \(header format 'pt'"):
        Network.load(other)
    truncated = tmp_path / "truncated.safetensors"
    data = Network.symmetric(width=3, depth=2).save(tmp_path / "ok.safetensors").read_bytes()
    truncated.write_bytes(data[: len(data) - 10])
    with pytest.raises(ValueError, match="is not a readable safetensors file"):
        Network.load(truncated)


def test_metadata_must_be_json():
    with pytest.raises(TypeError, match="Network.metadata must be JSON-serialisable"):
        Network.symmetric(width=2, depth=1).__class__(
            Network.symmetric(width=2, depth=1).layers, metadata={"bad": object()}
        )


def test_load_a_directory_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match=r"network file '.*' is not a file; expected a \.safetensors"):
        Network.load(tmp_path)
