"""The shipped MNIST CNN: architecture, initialisation, the packaged file and its accuracy."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from noiseprop import cnn
from noiseprop.cnn import CNN_FORMAT, cnn_metadata, default_cnn, mnist_cnn
from noiseprop.datasets import mnist

NAMES = ["unflatten", "conv1", "relu1", "pool1", "conv2", "relu2", "pool2", "flatten", "fc"]
SHIPPED = Path(cnn.__file__).parent / "data" / cnn.CNN_FILE


@pytest.fixture(scope="module")
def shipped() -> nn.Sequential:
    return default_cnn()


def _write(path: Path, model: nn.Sequential, header: dict[str, str]) -> Path:
    save_file({key: value.contiguous() for key, value in model.state_dict().items()}, str(path), header)
    return path


# ------------------------------------------------------------------------------- architecture
def test_children_are_named_and_in_order():
    model = mnist_cnn()
    assert [name for name, _ in model.named_children()] == NAMES
    kinds = [
        nn.Unflatten,
        nn.Conv2d,
        nn.ReLU,
        nn.MaxPool2d,
        nn.Conv2d,
        nn.ReLU,
        nn.MaxPool2d,
        nn.Flatten,
    ]
    assert [type(module) for module in model.children()] == [*kinds, nn.Linear]


def test_shapes_follow_from_valid_5x5_convolutions_and_2x2_pooling():
    # side s -> s - 4 (5x5, no padding) -> s // 2 (2x2 pooling, stride 2): 28, 24, 12, 8, 4.
    expected = {
        "unflatten": (1, 28, 28),
        "conv1": (8, 24, 24),
        "pool1": (8, 12, 12),
        "conv2": (16, 8, 8),
        "pool2": (16, 4, 4),
        "flatten": (16 * 4 * 4,),
        "fc": (10,),
    }
    model = mnist_cnn()
    signal = torch.zeros(3, 784)
    for name, module in model.named_children():
        signal = module(signal)
        if name in expected:
            assert tuple(signal.shape) == (3, *expected[name]), name
    assert sum(p.numel() for p in model.parameters()) == 8 * 25 + 8 + 16 * 8 * 25 + 16 + 256 * 10 + 10


@pytest.mark.parametrize(("pooling", "kind"), [("max", nn.MaxPool2d), ("mean", nn.AvgPool2d)])
def test_pooling_picks_the_pool_module(pooling, kind):
    model = mnist_cnn(pooling=pooling)
    for pool in (model.pool1, model.pool2):
        assert type(pool) is kind
        assert (pool.kernel_size, pool.stride) in {(2, 2), ((2, 2), (2, 2))}


def test_mean_pooling_averages_each_2x2_block():
    pool = mnist_cnn(pooling="mean").pool1
    block = torch.tensor([[[[1.0, 2.0], [3.0, 6.0]]]])
    assert pool(block).item() == 3.0


@pytest.mark.parametrize("pooling", ["min", "MAX", "avg", None])
def test_bad_pooling_is_a_value_error_naming_the_parameter(pooling):
    with pytest.raises(ValueError, match=r"^pooling must be one of 'max', 'mean'; got .*\.$"):
        mnist_cnn(pooling=pooling)


def test_bad_seed_is_an_error_naming_the_parameter():
    with pytest.raises(ValueError, match=r"^seed must be an integer >= 0; got -1\.$"):
        mnist_cnn(seed=-1)
    with pytest.raises(TypeError, match=r"^seed must be an integer >= 0; got float 1\.5\.$"):
        mnist_cnn(seed=1.5)


# ----------------------------------------------------------------------------- initialisation
def test_initial_weights_lie_in_the_default_uniform_range():
    model = mnist_cnn(seed=3)
    for layer, fan_in in ((model.conv1, 1 * 5 * 5), (model.conv2, 8 * 5 * 5), (model.fc, 256)):
        bound = 1 / math.sqrt(fan_in)
        for parameter in (layer.weight, layer.bias):
            assert parameter.dtype == torch.float32
            assert parameter.abs().max().item() <= bound
            # 1 - (fraction of the range the values span) is about 2 / (count + 1) for a uniform draw.
            span = (parameter.max() - parameter.min()).item() / (2 * bound)
            assert span > 1 - 8 / (parameter.numel() + 1)


def test_initialisation_is_seeded_and_leaves_the_global_rng_alone():
    before = torch.random.get_rng_state()
    first, again, other = mnist_cnn(seed=7), mnist_cnn(seed=7), mnist_cnn(seed=8)
    assert torch.equal(torch.random.get_rng_state(), before)
    for key, value in first.state_dict().items():
        assert torch.equal(value, again.state_dict()[key])
    assert not torch.equal(first.fc.weight, other.fc.weight)


# ------------------------------------------------------------------------------ shipped model
def test_shipped_model_has_the_architecture_in_eval_mode(shipped):
    assert [name for name, _ in shipped.named_children()] == NAMES
    assert not any(module.training for module in shipped.modules())
    fresh = mnist_cnn().state_dict()
    state = shipped.state_dict()
    assert list(state) == list(fresh)
    for key, value in state.items():
        assert value.shape == fresh[key].shape, key
        assert value.dtype == torch.float32, key


def test_shipped_file_is_safetensors_with_exactly_the_state_dict_keys():
    raw = SHIPPED.read_bytes()
    (header_length,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + header_length])
    assert header["__metadata__"]["format"] == CNN_FORMAT
    with safe_open(str(SHIPPED), framework="pt") as handle:
        keys = set(handle.keys())  # noqa: SIM118
        tensors = {key: handle.get_tensor(key) for key in keys}
    assert keys == set(mnist_cnn().state_dict())
    mnist_cnn().load_state_dict(tensors, strict=True)


def test_loading_never_unpickles(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("default_cnn must not call torch.load / pickle")

    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setattr("pickle.load", refuse)
    monkeypatch.setattr("pickle.loads", refuse)
    assert isinstance(default_cnn(), nn.Sequential)


def test_shipped_accuracy_on_the_10000_test_images(shipped):
    images, labels = mnist().scaled("test")
    images, labels = torch.from_numpy(images), torch.from_numpy(labels)
    assert images.shape == (10_000, 784)
    correct = 0
    with torch.no_grad():
        for first in range(0, len(labels), 2000):
            logits = shipped(images[first : first + 2000])
            correct += int((logits.argmax(1) == labels[first : first + 2000]).sum())
    accuracy = correct / len(labels)
    assert accuracy >= 0.985
    # The header reports what the model does (two images of slack for another CPU's float sums).
    assert abs(accuracy - cnn_metadata()["test_accuracy"]) <= 2e-4


def test_metadata_says_how_the_model_was_trained():
    metadata = cnn_metadata()
    assert {"config", "seed", "epochs", "test_accuracy", "noiseprop_version"} <= set(metadata)
    assert metadata["config"]["pooling"] == "max"
    assert metadata["epochs"] == metadata["config"]["epochs"] == len(metadata["history"])
    assert metadata["test_accuracy"] == metadata["history"][-1]["test_accuracy"]
    metadata["seed"] = -1  # a new dict each call
    assert cnn_metadata()["seed"] != -1


# ---------------------------------------------------------------------------------- file errors
def test_missing_file_is_a_file_not_found_error(monkeypatch, tmp_path):
    missing = tmp_path / "mnist-cnn.safetensors"
    monkeypatch.setattr(cnn, "_packaged_file", lambda pooling="max": missing)
    for load in (default_cnn, cnn_metadata):
        with pytest.raises(
            FileNotFoundError, match=r"packaged CNN .*mnist-cnn\.safetensors is missing.*"
        ):
            load()


def test_a_file_of_another_format_is_a_value_error(monkeypatch, tmp_path):
    path = _write(tmp_path / "other.safetensors", mnist_cnn(), {"format": "noiseprop.network"})
    monkeypatch.setattr(cnn, "_packaged_file", lambda pooling="max": path)
    with pytest.raises(ValueError, match=r"is not a noiseprop CNN file .*'noiseprop\.network'"):
        default_cnn()


def test_a_file_that_is_not_safetensors_is_a_value_error(monkeypatch, tmp_path):
    path = tmp_path / "junk.safetensors"
    path.write_bytes(b"not a safetensors file")
    monkeypatch.setattr(cnn, "_packaged_file", lambda pooling="max": path)
    with pytest.raises(ValueError, match="is not a readable safetensors file"):
        cnn_metadata()


def test_the_loader_checks_the_pooling_named_in_the_header(monkeypatch, tmp_path):
    model = mnist_cnn(pooling="mean", seed=5)
    metadata = json.dumps({"config": {"pooling": "mean"}})
    path = _write(
        tmp_path / "mean.safetensors",
        model,
        {"format": CNN_FORMAT, "version": "1", "metadata": metadata},
    )
    monkeypatch.setattr(cnn, "_packaged_file", lambda pooling="max": path)
    loaded = default_cnn(pooling="mean")
    assert type(loaded.pool1) is nn.AvgPool2d and type(loaded.pool2) is nn.AvgPool2d
    assert torch.equal(loaded.fc.weight, model.fc.weight)
    with pytest.raises(ValueError, match="holds a CNN with mean pooling; expected max"):
        default_cnn()


def test_the_mean_pooling_twin_is_shipped_and_quoted_right():
    """``default_cnn(pooling="mean")``: mean pooling, trained the same way; its measured accuracy on
    the 10,000 test images is the header's and the one the README quotes."""
    model = default_cnn(pooling="mean")
    assert isinstance(model.pool1, nn.AvgPool2d) and not model.training
    metadata = cnn_metadata(pooling="mean")
    assert metadata["config"]["pooling"] == "mean"
    images, labels = (torch.from_numpy(array) for array in mnist().scaled("test"))
    with torch.no_grad():
        accuracy = float((model(images).argmax(1) == labels).double().mean())
    assert abs(accuracy - metadata["test_accuracy"]) <= 2e-4
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert f"{100 * metadata['test_accuracy']:.2f} % noise-free" in " ".join(readme.split())
    with pytest.raises(ValueError, match="pooling must be one of 'max', 'mean'; got 'min'"):
        default_cnn(pooling="min")
