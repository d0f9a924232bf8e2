"""Loading a user's model from a file or module, with safetensors weights (noiseprop.model_files).

The loaded model is checked against its forward pass written out by hand from the saved tensors
(``W2 tanh(W1 x + b1) + b2``), not against its own output; every error path checks its message.
"""

from __future__ import annotations

import pickle
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from noiseprop.model_files import load_model, load_weights

MODEL_SOURCE = """
import torch
from torch import nn


def build():
    model = nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2), nn.Dropout(0.5))
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.zero_()
    return model


def helper():
    return 1


def needs(width):
    return nn.Linear(width, 1)


def bad():
    return 1 / 0


def not_a_module():
    return [1, 2]


NUMBER = 3
"""


def _write(folder: Path, name: str, source: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(source))
    return path


@pytest.fixture
def model_file(tmp_path: Path) -> Path:
    return _write(tmp_path, "net.py", MODEL_SOURCE)


def _tensors() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(3)
    shapes = {"0.weight": (3, 4), "0.bias": (3,), "2.weight": (2, 3), "2.bias": (2,)}
    return {key: torch.randn(shape, generator=generator) for key, shape in shapes.items()}


@pytest.fixture
def weights(tmp_path: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    tensors = _tensors()
    path = tmp_path / "net.safetensors"
    save_file(tensors, str(path))
    return path, tensors


def test_loads_the_function_and_the_weights(model_file, weights):
    path, tensors = weights
    model = load_model(f"{model_file}:build", path)
    assert not model.training and not model[3].training  # eval mode: dropout off
    x = torch.randn(5, 4, generator=torch.Generator().manual_seed(0))
    hidden = torch.tanh(x @ tensors["0.weight"].T + tensors["0.bias"])
    expected = hidden @ tensors["2.weight"].T + tensors["2.bias"]
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected)
    assert load_model(f"{model_file}:build")(x).abs().max() == 0  # without weights: as built (zeros)


def test_float64_weights_are_converted_to_the_models_dtype(model_file, tmp_path):
    tensors = {key: value.double() for key, value in _tensors().items()}
    path = tmp_path / "double.safetensors"
    save_file(tensors, str(path))
    model = load_model(f"{model_file}:build", path)
    assert model[0].weight.dtype == torch.float32
    torch.testing.assert_close(model[0].weight, tensors["0.weight"].float())


def test_module_spec_and_cnn_alias():
    from noiseprop.cnn import default_cnn

    untrained = load_model("noiseprop.cnn:mnist_cnn")
    assert isinstance(untrained, nn.Sequential) and not untrained.training
    shipped = load_model("cnn")
    assert not shipped.training
    for key, value in default_cnn().state_dict().items():
        assert torch.equal(shipped.state_dict()[key], value)
    assert not torch.equal(untrained.fc.weight, shipped.fc.weight)


def test_a_model_file_can_import_files_beside_it(tmp_path):
    _write(tmp_path, "blocks_for_test.py", "from torch import nn\nWIDTH = 7\n")
    source = "from torch import nn\nimport blocks_for_test\n\ndef build():\n"
    path = _write(tmp_path, "uses.py", source + "    return nn.Linear(blocks_for_test.WIDTH, 1)\n")
    before = list(sys.path)
    assert load_model(f"{path}:build").in_features == 7
    assert sys.path == before
    sys.modules.pop("blocks_for_test", None)


def test_each_load_imports_the_file_afresh(tmp_path):
    path = _write(
        tmp_path, "grows.py", "from torch import nn\n\ndef build():\n    return nn.Linear(2, 1)\n"
    )
    assert load_model(f"{path}:build").in_features == 2
    path.write_text("from torch import nn\n\ndef build():\n    return nn.Linear(5, 1)\n")
    assert load_model(f"{path}:build").in_features == 5


@pytest.mark.parametrize(
    ("spec", "error", "message"),
    [
        ("net.py", ValueError, "model spec must be PATH.py:FUNCTION, package.module:FUNCTION or "
                               "cnn, cnn-mean; got 'net.py'"),
        ("net.py:", ValueError, "model spec must be"),
        ("net.py:1x", ValueError, "model spec must be"),
        ("missing.py:build", FileNotFoundError, "model file .*missing.py' does not exist; expected a "
                                                ".py"),
        ("net.txt:build", ValueError, r"must be a Python file \(.py\) that defines the function; got a "
                                      ".txt file"),
        ("net.py:nope", ValueError, "has no function 'nope'; it has: bad, build, helper, needs, "
                                    "not_a_module."),
        ("net.py:NUMBER", TypeError, "'NUMBER' must be a function that builds the model; got int"),
        ("net.py:needs", ValueError, r"must take no arguments .* it requires width"),
        ("net.py:bad", ValueError, "model function .*net.py:bad raised ZeroDivisionError: division by "
                                   "zero"),
        ("net.py:not_a_module", TypeError, "must return a torch.nn.Module; got list"),
        ("no_such_package_zz.models:build", ValueError, "could not import module "
                                                        "'no_such_package_zz.models': "
                                                        "ModuleNotFoundError"),
        ("noiseprop.cnn:nothing", ValueError, "module 'noiseprop.cnn' has no function 'nothing'; "
                                              "it has: .*default_cnn"),
    ],
)  # fmt: skip
def test_model_spec_errors(model_file, spec, error, message):
    (model_file.parent / "net.txt").write_text("x = 1\n")
    path, colon, function = spec.partition(":")
    if colon and path.endswith((".py", ".txt")):
        spec = f"{model_file.parent / path}:{function}"
    with pytest.raises(error, match=message):
        load_model(spec)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("raise RuntimeError('boom at import')\n", "raised RuntimeError: boom at import while being "
                                                    "imported"),
        ("def build(:\n", "raised SyntaxError: .* while being imported"),
        ("import sys\nsys.exit(3)\n", "raised SystemExit: 3 while being imported"),
    ],
)  # fmt: skip
def test_a_model_file_that_raises_when_imported(tmp_path, source, message):
    path = _write(tmp_path, "broken.py", source)
    modules = set(sys.modules)
    with pytest.raises(ValueError, match=message):
        load_model(f"{path}:build")
    assert not [name for name in set(sys.modules) - modules if "broken" in name]


def _pickle_that_touches(marker: Path) -> bytes:
    """A pickle whose loading creates ``marker`` (the code that unpickling runs)."""

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    return pickle.dumps(Payload())


@pytest.mark.parametrize("name", ["weights.pt", "weights.pth", "weights.bin", "weights.safetensors"])
def test_a_pickle_is_refused_and_never_unpickled(model_file, tmp_path, name):
    proof = tmp_path / "proof"
    pickle.loads(_pickle_that_touches(proof))  # the payload is live: unpickling it runs code
    assert proof.exists()
    marker = tmp_path / "unpickled"
    path = tmp_path / name
    path.write_bytes(_pickle_that_touches(marker))
    message = "not a readable safetensors file" if name.endswith(".safetensors") else "never opens"
    with pytest.raises(ValueError, match=message) as raised:
        load_model(f"{model_file}:build", path)
    assert "safetensors.torch.save_file(model.state_dict()" in str(raised.value)
    assert not marker.exists()


def test_weights_file_missing_or_not_safetensors(model_file, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"weights file .*absent.safetensors' does not exist"):
        load_model(f"{model_file}:build", tmp_path / "absent.safetensors")
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00not json")
    with pytest.raises(ValueError, match="garbage.safetensors' is not a readable safetensors file"):
        load_model(f"{model_file}:build", garbage)


def test_weights_that_do_not_fit_list_keys_and_shapes(model_file, tmp_path):
    tensors = _tensors()
    del tensors["2.bias"]
    tensors["extra.weight"] = torch.zeros(1)
    tensors["0.weight"] = torch.zeros(4, 4)
    path = tmp_path / "wrong.safetensors"
    save_file(tensors, str(path))
    with pytest.raises(ValueError) as raised:
        load_model(f"{model_file}:build", path)
    message = str(raised.value)
    assert "wrong.safetensors' does not fit the model (Sequential); expected its state_dict" in message
    assert "state_dict, 4 tensors;" in message
    assert "missing keys: 2.bias" in message
    assert "unexpected keys: extra.weight" in message
    assert "shapes that differ: 0.weight (4, 4) (model: (3, 4))" in message


def test_many_missing_keys_are_abbreviated(tmp_path):
    model = nn.Sequential(*[nn.Linear(1, 1) for _ in range(4)])
    path = tmp_path / "empty.safetensors"
    save_file({"other": torch.zeros(1)}, str(path))
    with pytest.raises(ValueError, match=r"missing keys: 0.weight, 0.bias, .*\.\.\. \(3 more\)"):
        load_weights(model, path)


def test_spec_must_be_a_string():
    with pytest.raises(TypeError, match="model spec must be a string"):
        load_model(Path("net.py"))  # type: ignore[arg-type]
