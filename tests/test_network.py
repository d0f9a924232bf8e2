"""Network: construction, validation, torch conversion and the safetensors file format."""

from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import assert_within
from torch import nn

from noiseprop import Layer, Linear, Network, Noise, ReLU, Sigmoid, Tanh, propagate, simulate
from noiseprop.activations import ELU, GELU, GELUTanh, Hardtanh, LeakyReLU, Softplus


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
        (
            nn.Sequential(nn.Linear(3, 2), nn.Conv1d(1, 1, 1)),
            r"module \[1\] Conv1d is unsupported; supported: nn\.Linear, nn\.BatchNorm1d directly "
            r"after an nn\.Linear, the activations nn\.Sigmoid, .*nn\.GELU, nn\.Softplus, nn\.ELU, "
            r"nn\.Hardtanh .*nn\.Dropout, .*a trailing nn\.Softmax or nn\.LogSoftmax",
        ),
        (nn.Sequential(nn.Linear(3, 2), nn.Tanh(), nn.Tanh()), r"module \[2\] Tanh is after another"),
        (nn.Sequential(nn.GELU(), nn.Linear(3, 2)), r"module \[0\] GELU comes before any nn\.Linear"),
        (nn.Linear(3, 2), r"expects an nn\.Sequential .* got Linear"),
        (
            nn.Sequential(nn.Linear(3, 2), nn.Softmax(dim=-1), nn.Linear(2, 2)),
            r"module \[1\] Softmax is not the last module; a Softmax or LogSoftmax is dropped",
        ),
        (
            nn.Sequential(nn.Linear(3, 2), nn.LogSoftmax(dim=0)),
            r"module \[1\] LogSoftmax is over dim=0; only one over the classes \(dim=-1, 1 or None\)",
        ),
        (
            nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2, track_running_stats=False)),
            r"module \[1\] BatchNorm1d has no running statistics \(track_running_stats=False\)",
        ),
        (
            nn.Sequential(nn.Linear(3, 2), nn.ReLU(), nn.BatchNorm1d(2)),
            r"module \[2\] BatchNorm1d is not directly after an nn\.Linear",
        ),
        (
            nn.Sequential(nn.Linear(3, 2), nn.Dropout(), nn.BatchNorm1d(2)),
            r"module \[2\] BatchNorm1d is not directly after an nn\.Linear",
        ),
        (
            nn.Sequential(nn.BatchNorm1d(3), nn.Linear(3, 2)),
            r"module \[0\] BatchNorm1d is not directly after an nn\.Linear",
        ),
        (
            nn.Sequential(nn.Linear(3, 2), nn.Flatten()),
            r"module \[1\] Flatten is after an nn\.Linear; only a leading nn\.Flatten is allowed",
        ),
    ],
)
def test_from_torch_rejects_unsupported_modules(module, message):
    with pytest.raises(TypeError, match=message):
        Network.from_torch(module)


class _SteepSigmoid(nn.Sigmoid):
    def forward(self, x):
        return torch.sigmoid(4 * x)


class _ScaledLinear(nn.Linear):
    def forward(self, x):
        return 2 * super().forward(x)


class _NoisyDropout(nn.Dropout):
    def forward(self, x):
        return x + 1


class _NamedSigmoid(nn.Sigmoid):
    """A subclass that keeps ``forward``: converted as the sigmoid it is."""


@pytest.mark.parametrize(
    ("module", "index", "name", "base"),
    [
        (_SteepSigmoid(), 1, "_SteepSigmoid", "nn.Sigmoid"),
        (_ScaledLinear(2, 2), 1, "_ScaledLinear", "nn.Linear"),
        (_NoisyDropout(), 1, "_NoisyDropout", "nn.Dropout"),
    ],
)
def test_from_torch_refuses_subclasses_that_override_forward(module, index, name, base):
    model = nn.Sequential(nn.Linear(3, 2), module, nn.Linear(2, 2))
    with pytest.raises(
        TypeError,
        match=rf"module \[{index}\] {name} subclasses {base} but overrides forward; noiseprop cannot "
        "know what it computes",
    ):
        Network.from_torch(model)


def test_from_torch_refuses_a_sigmoid_subclass_it_used_to_convert_wrongly():
    """The bug of the issue: converted as a plain sigmoid, this model was 0.68 off."""
    model = nn.Sequential(nn.Linear(3, 2), _SteepSigmoid())
    with pytest.raises(TypeError, match=r"\[1\] _SteepSigmoid subclasses nn\.Sigmoid but overrides"):
        Network.from_torch(model)


def test_from_torch_converts_subclasses_that_keep_forward():
    model = nn.Sequential(nn.Linear(3, 2), _NamedSigmoid(), nn.Linear(2, 2), nn.ReLU6())
    net = Network.from_torch(model)
    assert [layer.activation for layer in net.layers] == [Sigmoid(), Hardtanh(min_val=0, max_val=6)]


@pytest.mark.parametrize(
    ("module", "error", "message"),
    [
        (
            nn.Softplus(beta=-1),
            ValueError,
            r"\[1\] Softplus: Softplus\.beta must be a finite number > 0",
        ),
        (nn.ELU(alpha=math.nan), ValueError, r"\[1\] ELU: ELU\.alpha must be a finite real number"),
        (nn.BatchNorm1d(4), ValueError, r"\[1\] BatchNorm1d has num_features=4; expected 2, the "),
    ],
)
def test_from_torch_parameter_errors_name_the_module(module, error, message):
    with pytest.raises(error, match=message):
        Network.from_torch(nn.Sequential(nn.Linear(3, 2), module))


def test_from_torch_refuses_an_unknown_gelu_approximation():
    gelu = nn.GELU()
    gelu.approximate = "fast"
    with pytest.raises(ValueError, match=r"\[1\] GELU: nn\.GELU\.approximate must be 'none' or 'tanh'"):
        Network.from_torch(nn.Sequential(nn.Linear(3, 2), gelu))


def test_from_torch_folds_batchnorm_by_the_formula():
    """Hand-computed: var + eps = (4, 1), so gamma / sqrt(var + eps) = (1, -1) for gamma = (2, -1);
    W' = diag(1, -1) W and b' = (1 (1 - 0.5) + 0.5, -1 (-1 - 2) + 0) = (1, 3)."""
    linear = nn.Linear(2, 2).double()
    norm = nn.BatchNorm1d(2, eps=0.75).double()
    with torch.no_grad():
        linear.weight.copy_(torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
        linear.bias.copy_(torch.tensor([1.0, -1.0]))
        norm.running_mean.copy_(torch.tensor([0.5, 2.0]))
        norm.running_var.copy_(torch.tensor([3.25, 0.25]))
        norm.weight.copy_(torch.tensor([2.0, -1.0]))
        norm.bias.copy_(torch.tensor([0.5, 0.0]))
    (layer,) = Network.from_torch(nn.Sequential(linear, norm)).layers
    assert torch.equal(layer.weight, torch.tensor([[1.0, 2.0], [-3.0, -4.0]], dtype=torch.float64))
    assert torch.equal(layer.bias, torch.tensor([1.0, 3.0], dtype=torch.float64))
    assert layer.activation == Linear()


def _trained_model(dtype: torch.dtype) -> nn.Sequential:
    """Every supported kind of module, batch norms with running statistics from a few training
    batches (and random affine parameters), in eval mode."""
    torch.manual_seed(3)
    model = nn.Sequential(
        nn.Flatten(),
        nn.Linear(6, 8),
        nn.BatchNorm1d(8),
        nn.LeakyReLU(0.1),
        nn.Dropout(0.3),
        nn.Linear(8, 8),
        nn.GELU(),
        nn.Linear(8, 7),
        nn.BatchNorm1d(7, affine=False, momentum=None),
        nn.GELU(approximate="tanh"),
        nn.AlphaDropout(0.1),
        nn.Linear(7, 7),
        nn.Softplus(beta=2, threshold=1),
        nn.Linear(7, 6, bias=False),
        nn.ELU(alpha=0.5),
        nn.Linear(6, 6),
        nn.Hardtanh(-0.5, 0.8),
        nn.Identity(),
        nn.Linear(6, 3),
        nn.Softmax(dim=-1),
    ).to(dtype)
    with torch.no_grad():
        model[2].weight.uniform_(0.5, 2.0)
        model[2].bias.uniform_(-0.5, 0.5)
        for _ in range(4):
            model(3 * torch.randn(32, 2, 3, dtype=dtype) + 1)
    return model.eval()


@pytest.mark.parametrize(("dtype", "tolerance"), [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_from_torch_every_module_keeps_the_eval_function(dtype, tolerance):
    model = _trained_model(dtype)
    assert model[2].running_var.sub(1).abs().max() > 0.1  # non-trivial statistics
    net = Network.from_torch(model, metadata={"source": "test"})
    assert [layer.activation for layer in net.layers] == [
        LeakyReLU(negative_slope=0.1),
        GELU(),
        GELUTanh(),
        Softplus(beta=2, threshold=1),
        ELU(alpha=0.5),
        Hardtanh(min_val=-0.5, max_val=0.8),
        Linear(),
    ]
    x = torch.randn(50, 2, 3, dtype=dtype, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        logits = model[:-1](x)
        assert torch.equal(model(x).argmax(-1), logits.argmax(-1))
    outputs = net.forward(x.flatten(1).double())[-1][1]
    torch.testing.assert_close(outputs, logits.double(), rtol=tolerance, atol=tolerance)
    assert net.metadata == {
        "source": "test",
        "from_torch": {
            "dropped": [
                "[19] Softmax: monotone, cannot change the argmax; the network outputs the logits "
                "before it"
            ]
        },
    }


def test_from_torch_converts_the_eval_function_of_a_module_in_training_mode():
    model = _trained_model(torch.float64).train()
    net = Network.from_torch(model)
    assert model.training  # left as it was
    x = torch.randn(5, 6, dtype=torch.float64)
    with torch.no_grad():
        expected = model.eval()[:-1](x.view(5, 2, 3))
    torch.testing.assert_close(net.forward(x)[-1][1], expected, rtol=1e-12, atol=1e-12)


def test_from_torch_note_and_user_metadata():
    model = nn.Sequential(nn.Linear(3, 2), nn.ReLU(), nn.LogSoftmax(dim=1))
    net = Network.from_torch(model)
    assert net.metadata["from_torch"]["dropped"][0].startswith("[2] LogSoftmax: monotone")
    assert Network.from_torch(model, metadata=net.metadata).metadata == net.metadata  # same note
    assert "from_torch" not in Network.from_torch(model[:2]).metadata  # nothing dropped
    with pytest.raises(ValueError, match=r"metadata\['from_torch'\] is where the conversion notes"):
        Network.from_torch(model, metadata={"from_torch": "mine"})


def test_save_load_round_trips_the_new_activations(tmp_path):
    activations = [
        LeakyReLU(negative_slope=0.123456789),
        GELU(),
        GELUTanh(),
        Softplus(beta=2, threshold=5),
        ELU(alpha=0.25),
        Hardtanh(min_val=-2, max_val=0.5),
    ]
    net = Network.random([3, 4, 4, 4, 4, 4, 2], activations, seed=6)
    loaded = Network.load(net.save(tmp_path / "net.safetensors"))
    assert [layer.activation for layer in loaded.layers] == activations
    x = torch.randn(4, 3, dtype=torch.float64)
    torch.testing.assert_close(loaded.forward(x)[-1][1], net.forward(x)[-1][1], rtol=0, atol=0)


# one network per new activation, from torch, for the propagation tests
PROPAGATED = [
    nn.LeakyReLU(0.1),
    nn.GELU(),
    nn.GELU(approximate="tanh"),
    nn.Softplus(beta=2, threshold=1),
    nn.ELU(alpha=0.5),
    nn.Hardtanh(-0.4, 0.6),
]


def _one_activation_model(activation: nn.Module) -> nn.Sequential:
    torch.manual_seed(7)
    return nn.Sequential(
        nn.Linear(4, 6), activation, nn.Linear(6, 5), activation, nn.Linear(5, 3), activation
    ).double()


@pytest.mark.parametrize("injection", ["after", "before"])
@pytest.mark.parametrize("activation", PROPAGATED, ids=repr)
def test_propagate_matches_torch_autograd_linearisation(activation, injection):
    """First-order variance, independently: each layer's output as a function of the additive noise
    of every layer up to it, differentiated by torch autograd through the torch model itself;
    ``Var[s^n] = D sum_k (J_nk)^2`` summed over the noise sources ``k <= n`` (for AU noise)."""
    model = _one_activation_model(activation)
    net = Network.from_torch(model)
    x = torch.randn(5, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(8))
    variance = 1e-3
    stats = propagate(net, Noise(AU=variance, injection=injection), x)
    linears = [model[0], model[2], model[4]]

    def outputs(signal, *noises):  # the three layers' outputs for one input, given the noises
        result = []
        for linear, noise in zip(linears, noises):
            if injection == "before":
                signal = activation(linear(signal) + noise)
            else:
                signal = activation(linear(signal)) + noise
            result.append(signal)
        return tuple(result)

    zeros = tuple(torch.zeros(linear.out_features, dtype=torch.float64) for linear in linears)
    for row in range(x.shape[0]):
        jacobians = torch.autograd.functional.jacobian(
            lambda *noises: outputs(x[row], *noises),  # noqa: B023 - called at once
            zeros,
        )
        for layer in range(3):
            expected = variance * sum(jacobians[layer][k].square().sum(-1) for k in range(layer + 1))
            torch.testing.assert_close(stats[layer].variance[row], expected, rtol=1e-10, atol=1e-16)


@pytest.mark.parametrize("activation", PROPAGATED, ids=repr)
def test_propagate_agrees_with_simulation_at_small_noise(activation, seed):
    """Every kind of noise at 1e-6: the first-order error is far below the sampling error, so each
    layer's variance lies within 4 standard errors of the simulated one."""
    net = Network.from_torch(_one_activation_model(activation))
    noise = Noise(AU=1e-6, AC=1e-6, MU=1e-6, MC=1e-6)
    x = torch.randn(8, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    predicted = propagate(net, noise, x)
    simulated = simulate(net, noise, x, repeats=10_000, seed=seed, dtype="float64")
    for expected, measured in zip(predicted.layers, simulated.layers):
        assert_within(measured.layer_variance, expected.layer_variance, measured.layer_variance_stderr)


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


def _rewritten(tmp_path, name: str, *, drop: str | None = None, **header_changes: str):
    """The saved 5-4-3 network with its header changed and, optionally, one tensor dropped."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    path = Network.random([5, 4, 3], ["sigmoid", "linear"], seed=0).save(tmp_path / "ok.safetensors")
    with safe_open(str(path), framework="pt") as handle:
        header = handle.metadata()
    tensors = load_file(str(path))
    if drop:
        del tensors[drop]
    header.update(header_changes)
    target = tmp_path / name
    save_file(tensors, str(target), metadata=header)
    return target


def test_a_file_whose_header_and_tensors_disagree_is_refused(tmp_path):
    """Fewer activations than stored layers must not load as a shorter network (it did, silently);
    a missing tensor, a header nested too deeply and a non-list of activations are errors too."""
    import json

    short = _rewritten(tmp_path, "short.safetensors", activations=json.dumps([{"name": "sigmoid"}]))
    with pytest.raises(ValueError, match=r"1 activations: leftover tensors \['layers.1.bias'"):
        Network.load(short)
    gap = _rewritten(tmp_path, "gap.safetensors", drop="layers.1.bias")
    with pytest.raises(ValueError, match=r"missing tensors \['layers.1.bias'\]"):
        Network.load(gap)
    deep = _rewritten(tmp_path, "deep.safetensors", activations="[" * 50_000 + "]" * 50_000)
    with pytest.raises(ValueError, match="damaged header: nested too deeply"):
        Network.load(deep)
    scalar = _rewritten(tmp_path, "scalar.safetensors", activations="3")
    with pytest.raises(ValueError, match="activations must be a non-empty list"):
        Network.load(scalar)


def test_paths_that_are_not_files_are_clear_errors(tmp_path):
    net = Network.symmetric(width=2, depth=1)
    with pytest.raises(TypeError, match="path must be a file path .*got int 123"):
        Network.load(123)
    with pytest.raises(ValueError, match="is a folder; expected a file name"):
        net.save(tmp_path)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OSError, match="cannot write network file"):
        net.save(blocker / "net.safetensors")  # its folder would be a file


def test_a_network_is_callable_on_its_inputs():
    """``net(x)`` is the noise-free output, computed here by hand: 2-1 linear then sigmoid, and one
    number is fed to every input."""
    net = Network((Layer([[1.0, -2.0]], [0.5], "linear"), Layer([[3.0]], [0.0], "sigmoid")))
    expected = 1 / (1 + math.exp(-3.0 * (1.0 - 2.0 * 2.0 + 0.5)))
    assert net([[1.0, 2.0]]).shape == (1, 1)
    assert net([[1.0, 2.0]]).item() == pytest.approx(expected, rel=1e-15)
    same = 1 / (1 + math.exp(-3.0 * (0.25 - 0.5 + 0.5)))
    assert net(0.25).item() == pytest.approx(same, rel=1e-15)
