"""The convolutional MNIST classifier shipped with noiseprop.

:func:`mnist_cnn` builds the architecture, untrained; :func:`default_cnn` loads the trained copy
shipped in ``data/mnist-cnn.safetensors`` (made by ``scripts/train_cnn.py``), and :func:`cnn_metadata`
says how it was trained. The model takes flat images, ``(batch, 784)`` pixels in ``[0, 1]`` as
:meth:`noiseprop.datasets.MNIST.scaled` gives them, like the fully connected networks, and returns the
``(batch, 10)`` logits. Its children, by name (shapes for one image):

    =========  ====================================  ==============
    name       module                                output
    =========  ====================================  ==============
    unflatten  ``Unflatten(1, (1, 28, 28))``          1 x 28 x 28
    conv1      ``Conv2d(1, 8, 5)``                    8 x 24 x 24
    relu1      ``ReLU()``                             8 x 24 x 24
    pool1      ``MaxPool2d(2)`` or ``AvgPool2d(2)``   8 x 12 x 12
    conv2      ``Conv2d(8, 16, 5)``                   16 x 8 x 8
    relu2      ``ReLU()``                             16 x 8 x 8
    pool2      ``MaxPool2d(2)`` or ``AvgPool2d(2)``   16 x 4 x 4
    flatten    ``Flatten()``                          256
    fc         ``Linear(256, 10)``                    10 (logits)
    =========  ====================================  ==============

A 5x5 convolution without padding takes a side ``s`` to ``s - 4`` and a 2x2 pooling of stride 2 to
``s // 2``: 28 -> 24 -> 12 -> 8 -> 4, hence ``16 * 4 * 4 = 256`` inputs to ``fc``. There are
``8 * 25 + 8 + 16 * 8 * 25 + 16 + 256 * 10 + 10 = 5,994`` parameters.

File format: a safetensors file (no pickle) holding the ``state_dict`` of :func:`mnist_cnn` in
float32 (keys ``conv1.weight``, ``conv1.bias``, ``conv2.weight``, ``conv2.bias``, ``fc.weight``,
``fc.bias``); its header holds ``format = "noiseprop.cnn"``, ``version = "1"`` and ``metadata``, a JSON
object with at least ``config`` (whose ``pooling`` rebuilds the architecture), ``seed``, ``epochs``,
``test_accuracy`` and ``noiseprop_version``.
"""

from __future__ import annotations

import json
import math
from collections import OrderedDict
from importlib import resources
from importlib.abc import Traversable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from noiseprop._validation import check_choice, check_positive_int

__all__ = [
    "CNN_FILE",
    "CNN_FILES",
    "CNN_FORMAT",
    "POOLINGS",
    "cnn_metadata",
    "default_cnn",
    "mean_pooling_cnn",
    "mnist_cnn",
]

CNN_FILE = "mnist-cnn.safetensors"
"""File name, in the package's ``data`` folder, of the model that :func:`default_cnn` loads."""
CNN_FILES = {"max": CNN_FILE, "mean": "mnist-cnn-mean.safetensors"}
"""The shipped CNN of each pooling: the same architecture and training, max or mean pooling."""

CNN_FORMAT = "noiseprop.cnn"
"""The ``format`` entry of the safetensors header of a CNN file."""

POOLINGS = ("max", "mean")
"""The poolings :func:`mnist_cnn` accepts: ``MaxPool2d(2)`` or ``AvgPool2d(2)``."""

_VERSION = "1"
_POOL_MODULES = {"max": nn.MaxPool2d, "mean": nn.AvgPool2d}


def mnist_cnn(*, pooling: Literal["max", "mean"] = "max", seed: int = 0) -> nn.Sequential:
    """A fresh, untrained MNIST CNN: conv 5x5 x8, pool, conv 5x5 x16, pool, dense to 10.

    Every weight and bias of a layer with ``fan_in`` inputs (``in_channels * 5 * 5`` for a
    convolution, 256 for ``fc``) is drawn uniformly from ``[-1/sqrt(fan_in), 1/sqrt(fan_in)]``, the
    range of PyTorch's default initialisation, from a ``torch.Generator`` seeded through
    ``numpy.random.SeedSequence(seed)``; the global random state is left as it was. The children and
    their shapes are in the module docstring.

    Args:
        pooling: ``"max"`` (``nn.MaxPool2d(2)``) or ``"mean"`` (``nn.AvgPool2d(2)``) for both
            pooling layers.
        seed: seed of the initial weights (integer >= 0).

    Returns:
        A float32 ``nn.Sequential`` in training mode mapping ``(batch, 784)`` images to
        ``(batch, 10)`` logits.

    Raises:
        ValueError: if ``pooling`` is not ``"max"`` or ``"mean"``, or ``seed`` is negative.

    Example:
        >>> model = mnist_cnn(pooling="mean")
        >>> [name for name, _ in model.named_children()]
        ['unflatten', 'conv1', 'relu1', 'pool1', 'conv2', 'relu2', 'pool2', 'flatten', 'fc']
        >>> model.pool2, sum(p.numel() for p in model.parameters())
        (AvgPool2d(kernel_size=2, stride=2, padding=0), 5994)
        >>> model(torch.zeros(3, 784)).shape
        torch.Size([3, 10])
        >>> mnist_cnn(pooling="min")
        Traceback (most recent call last):
        ...
        ValueError: pooling must be one of 'max', 'mean'; got 'min'.
    """
    pooling = check_choice("pooling", pooling, POOLINGS)
    seed = check_positive_int("seed", seed, minimum=0)
    pool = _POOL_MODULES[pooling]
    with torch.random.fork_rng(devices=[]):  # the constructors draw (discarded) weights globally
        model = nn.Sequential(
            OrderedDict(
                [
                    ("unflatten", nn.Unflatten(1, (1, 28, 28))),
                    ("conv1", nn.Conv2d(1, 8, 5)),
                    ("relu1", nn.ReLU()),
                    ("pool1", pool(2)),
                    ("conv2", nn.Conv2d(8, 16, 5)),
                    ("relu2", nn.ReLU()),
                    ("pool2", pool(2)),
                    ("flatten", nn.Flatten()),
                    ("fc", nn.Linear(256, 10)),
                ]
            )
        )
    state = np.random.SeedSequence(seed).generate_state(1, dtype=np.uint64)[0]
    generator = torch.Generator().manual_seed(int(state))
    with torch.no_grad():
        for layer in (model.conv1, model.conv2, model.fc):
            bound = 1 / math.sqrt(layer.weight[0].numel())
            for parameter in (layer.weight, layer.bias):
                parameter.uniform_(-bound, bound, generator=generator)
    return model


def default_cnn(pooling: Literal["max", "mean"] = "max") -> nn.Sequential:
    """The trained CNN shipped with the package, float32, in eval mode (``pooling="mean"``: its
    twin with mean pooling, trained the same way: :data:`CNN_FILES`).

    Trained by ``scripts/train_cnn.py``; :func:`cnn_metadata` says how, and gives its noise-free
    accuracy on the 10,000 test images (0.9903). The tensors are read with
    ``safetensors.torch.load_file`` (no pickle) and loaded with ``strict=True``.

    Raises:
        FileNotFoundError: if the packaged file is missing.
        ValueError: if the file is not a noiseprop CNN file.

    Example:
        Noise-free accuracy on the first 1000 test images (990 of them are right when shipped):

        >>> from noiseprop.datasets import mnist
        >>> model = default_cnn()
        >>> model.training, model.pool1
        (False, MaxPool2d(kernel_size=2, stride=2, padding=0, dilation=1, ceil_mode=False))
        >>> images, labels = mnist().scaled("test")
        >>> with torch.no_grad():
        ...     logits = model(torch.from_numpy(images[:1000]))
        >>> accuracy = (logits.argmax(1) == torch.from_numpy(labels[:1000])).double().mean().item()
        >>> accuracy >= 0.985
        True
    """
    from safetensors.torch import load_file

    pooling = check_choice("pooling", pooling, POOLINGS)
    with resources.as_file(_packaged_file(pooling)) as path:
        metadata = _read_metadata(path)
        tensors = load_file(str(path))
    trained = metadata.get("config", {}).get("pooling", "max")
    if trained != pooling:
        raise ValueError(f"{str(path)!r} holds a CNN with {trained} pooling; expected {pooling}.")
    model = mnist_cnn(pooling=pooling)
    model.load_state_dict({key: value.float() for key, value in tensors.items()}, strict=True)
    return model.eval()


def mean_pooling_cnn() -> nn.Sequential:
    """``default_cnn(pooling="mean")``: the shipped CNN's twin with mean pooling (model ``cnn-mean``
    on the command line)."""
    return default_cnn(pooling="mean")


def cnn_metadata(pooling: Literal["max", "mean"] = "max") -> dict[str, Any]:
    """How the shipped CNN was trained: the JSON ``metadata`` of its file header.

    Returns:
        A new dict with ``config`` (the training settings), ``seed``, ``epochs``,
        ``test_accuracy`` (noise-free, the 10,000 test images), ``history`` (loss and test accuracy
        per epoch), ``noiseprop_version`` and the torch version and thread count used.

    Raises:
        FileNotFoundError: if the packaged file is missing.

    Example:
        >>> metadata = cnn_metadata()
        >>> metadata["config"]["pooling"], metadata["test_accuracy"] >= 0.985
        ('max', True)
    """
    with resources.as_file(_packaged_file(check_choice("pooling", pooling, POOLINGS))) as path:
        return _read_metadata(path)


def _packaged_file(pooling: str = "max") -> Traversable:
    """Where the shipped CNN file of a pooling lives (:data:`CNN_FILES`, in the package's data)."""
    return resources.files("noiseprop") / "data" / CNN_FILES[pooling]


def _read_metadata(path: Path) -> dict[str, Any]:
    """The header ``metadata`` of a CNN file, after checking the file exists and its format."""
    from safetensors import SafetensorError, safe_open

    if not path.is_file():
        raise FileNotFoundError(
            f"the packaged CNN {path} is missing; reinstall noiseprop or rebuild it with "
            "scripts/train_cnn.py."
        )
    try:
        with safe_open(str(path), framework="pt") as handle:
            header = handle.metadata() or {}
    except (SafetensorError, OSError, ValueError) as error:
        raise ValueError(f"{str(path)!r} is not a readable safetensors file: {error}") from None
    if header.get("format") != CNN_FORMAT or header.get("version") != _VERSION:
        raise ValueError(
            f"{str(path)!r} is not a noiseprop CNN file of version {_VERSION} (header format "
            f"{header.get('format')!r}, version {header.get('version')!r}; expected {CNN_FORMAT!r})."
        )
    try:
        metadata = json.loads(header.get("metadata", "{}"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{str(path)!r} has a damaged header: {error}") from None
    if not isinstance(metadata, dict):
        raise ValueError(f"{str(path)!r} has a damaged header: metadata is not a JSON object.")
    return metadata
