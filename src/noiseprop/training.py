"""Training fully connected MNIST classifiers, plain or noise-aware (docs/THEORY.md section 7).

:func:`train` fits a network ``784 -> hidden... -> 10`` by back-propagation and returns a new
:class:`~noiseprop.network.Network` (float64 weights) whose ``metadata`` says how it was trained;
:func:`evaluate` gives its noise-free accuracy; :func:`default_network` loads the network shipped with
the package (``data/mnist-100-100-sigmoid.safetensors``, made by ``scripts/train_default.py`` from the
default :class:`TrainConfig`).

Model: hidden layers use the configured activation, the output layer is linear (its outputs are the
logits ``z``) and the loss of a mini-batch ``B`` is the softmax cross-entropy

    L = -(1/|B|) sum_{b in B} log( exp(z_{b, label_b}) / sum_k exp(z_{b, k}) )

Noise-aware training (docs/THEORY.md section 7): with ``TrainConfig.train_noise`` set, every layer
(hidden and output; the input layer is noise-free) of the *training* forward pass is noisy exactly as in
docs/THEORY.md section 1, with fresh draws for every presentation:

    y^n = f(W^n y^{n-1} + b^n) (1 + xi_MU + xi_MC) + xi_AU + xi_AC      (injection "after")
    y^n = f((W^n y^{n-1} + b^n) (1 + xi_MU + xi_MC) + xi_AU + xi_AC)    (injection "before")

The noise is put in by :func:`noiseprop.sites.noisy` on the activation modules of the torch model
being trained, the same mechanism a user puts into their own training loop; the draws are constants of
the graph, so the gradients flow through the noisy pass (the reparametrisation of the noise).
Evaluation (eval mode) is noise-free.

Reproducibility: every random number (initial weights, the shuffle of each epoch, the training noise)
comes from a ``torch.Generator`` of its own, seeded from ``TrainConfig.seed`` through
``numpy.random.SeedSequence(seed).spawn(3)``; the global random state is left as it was. The same
config then gives bitwise identical weights with the same torch build, CPU and number of torch threads
(the float32 matrix products may sum in another order with another thread count). Training runs on the
CPU in float32; no ``torch.use_deterministic_algorithms`` is needed, since every CPU kernel used here
(dense products, indexing, cross-entropy, Adam/SGD updates) is deterministic.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from importlib import resources
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from noiseprop import __version__
from noiseprop._inputs import as_dtype
from noiseprop._validation import check_choice, check_positive, check_positive_int
from noiseprop.activations import Activation, Linear, parse_activation
from noiseprop.datasets import MNIST, mnist
from noiseprop.network import Layer, Network
from noiseprop.noise import Noise
from noiseprop.sites import noisy

__all__ = ["DEFAULT_NETWORK_FILE", "EpochRecord", "TrainConfig", "default_network", "evaluate", "train"]

DEFAULT_NETWORK_FILE = "mnist-100-100-sigmoid.safetensors"
"""File name, in the package's ``data`` folder, of the network that :func:`default_network` loads."""

_INPUTS = 28 * 28
_CLASSES = 10
_EVAL_CHUNK = 10_000


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """How to train an MNIST classifier ``784 -> hidden... -> 10``.

    The defaults reach about 98 % noise-free test accuracy with hidden layers of 100 sigmoid neurons,
    in about 1.5 s per epoch (15 epochs, about 25 s) on one CPU core.

    Attributes:
        hidden: widths of the hidden layers, in order (``()`` is softmax regression).
        activation: activation of the hidden layers, as :func:`~noiseprop.activations.parse_activation`
            reads it: ``"sigmoid"``, ``"sigmoid:gain=2"``, ``"linear:slope=0.9"``, ``"tanh"``,
            ``"relu"``. The output layer is always linear.
        epochs: passes over the training images.
        batch_size: images per gradient step.
        learning_rate: the initial step size ``lr_0``.
        schedule: ``"cosine"``: step ``t`` of ``T`` uses ``lr_0 (1 + cos(pi t / T)) / 2``;
            ``"constant"``: always ``lr_0``.
        optimizer: ``"adam"`` (``torch.optim.Adam``, default betas) or ``"sgd"`` (plain stochastic
            gradient descent, no momentum; it wants a learning rate near 0.1).
        seed: seed of the initial weights, the shuffles and the training noise (integer >= 0).
        train_noise: noise injected in every layer during training (noise-aware training), or
            ``None``. A string is read with :meth:`Noise.parse`, e.g. ``"AU=0.05"``.
        train_size: train on the first ``train_size`` training images only (quick runs), or
            ``None`` for all of them.

    Example:
        >>> TrainConfig(hidden=(32,), train_noise="AU=0.01").train_noise
        Noise(AU=0.01, AC=0.0, MU=0.0, MC=0.0, injection='after')
        >>> TrainConfig(epochs=0)
        Traceback (most recent call last):
        ...
        ValueError: TrainConfig.epochs must be an integer >= 1; got 0.
    """

    hidden: tuple[int, ...] = (100, 100)
    activation: str = "sigmoid"
    epochs: int = 15
    batch_size: int = 64
    learning_rate: float = 2e-3
    schedule: Literal["cosine", "constant"] = "cosine"
    optimizer: Literal["adam", "sgd"] = "adam"
    seed: int = 0
    train_noise: Noise | None = None
    train_size: int | None = None

    def __post_init__(self) -> None:
        hidden = self.hidden
        if isinstance(hidden, (str, bytes)) or not isinstance(hidden, Sequence):
            raise TypeError(
                "TrainConfig.hidden must be a tuple of hidden-layer widths such as (100, 100); got "
                f"{type(hidden).__name__} {hidden!r}."
            )
        hidden = tuple(
            check_positive_int(f"TrainConfig.hidden[{index}]", width)
            for index, width in enumerate(hidden)
        )
        activation = self.activation
        if isinstance(activation, Activation):
            activation = str(activation)
        if not isinstance(activation, str):
            raise TypeError(
                "TrainConfig.activation must be a string such as 'sigmoid' or 'sigmoid:gain=2'; got "
                f"{type(activation).__name__} {activation!r}."
            )
        try:
            parse_activation(activation)
        except (TypeError, ValueError) as error:
            raise ValueError(
                "TrainConfig.activation must be an activation such as 'sigmoid', 'sigmoid:gain=2', "
                f"'linear:slope=0.9', 'tanh' or 'relu'; got {activation!r} ({error})"
            ) from None
        noise = self.train_noise
        if isinstance(noise, str):
            try:
                noise = Noise.parse(noise)
            except ValueError as error:
                raise ValueError(f"TrainConfig.train_noise: {error}") from None
        if noise is not None and not isinstance(noise, Noise):
            raise TypeError(
                "TrainConfig.train_noise must be a Noise, a noise string such as 'AU=0.05', or None; "
                f"got {type(noise).__name__} {noise!r}."
            )
        train_size = self.train_size
        if train_size is not None:
            train_size = check_positive_int("TrainConfig.train_size", train_size)
        values = {
            "hidden": hidden,
            "activation": activation,
            "epochs": check_positive_int("TrainConfig.epochs", self.epochs),
            "batch_size": check_positive_int("TrainConfig.batch_size", self.batch_size),
            "learning_rate": check_positive(
                "TrainConfig.learning_rate", self.learning_rate, what="learning rate"
            ),
            "schedule": check_choice("TrainConfig.schedule", self.schedule, ("cosine", "constant")),
            "optimizer": check_choice("TrainConfig.optimizer", self.optimizer, ("adam", "sgd")),
            "seed": check_positive_int("TrainConfig.seed", self.seed, minimum=0),
            "train_noise": noise,
            "train_size": train_size,
        }
        for name, value in values.items():
            object.__setattr__(self, name, value)

    @property
    def sizes(self) -> tuple[int, ...]:
        """``(784, *hidden, 10)``: the input size and every layer's width."""
        return (_INPUTS, *self.hidden, _CLASSES)

    def to_dict(self) -> dict[str, Any]:
        """The config as JSON-able values (``train_noise`` as :meth:`Noise.as_dict`)."""
        data = {field.name: getattr(self, field.name) for field in fields(self)}
        data["hidden"] = list(self.hidden)
        data["train_noise"] = None if self.train_noise is None else self.train_noise.as_dict()
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict`.

        Example:
            >>> config = TrainConfig(hidden=(64,), train_noise="MU=0.01")
            >>> TrainConfig.from_dict(config.to_dict()) == config
            True
        """
        known = {field.name for field in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"TrainConfig.from_dict takes keys {sorted(known)}; got unknown {unknown}.")
        values = dict(data)
        if isinstance(values.get("hidden"), list):
            values["hidden"] = tuple(values["hidden"])
        if isinstance(values.get("train_noise"), Mapping):
            values["train_noise"] = Noise(**values["train_noise"])
        return cls(**values)


@dataclass(frozen=True, kw_only=True)
class EpochRecord:
    """What one epoch of :func:`train` did.

    Attributes:
        epoch: the epoch number, from 1.
        loss: mean cross-entropy of the epoch's mini-batches (of the noisy pass when training is
            noise-aware), in nats.
        train_accuracy: noise-free accuracy on the training images used, after the epoch.
        test_accuracy: noise-free accuracy on the test images, after the epoch.
        seconds: wall-clock time of the epoch, evaluations included.
    """

    epoch: int
    loss: float
    train_accuracy: float
    test_accuracy: float
    seconds: float


def train(
    config: TrainConfig,
    *,
    data: MNIST | None = None,
    progress: Callable[[EpochRecord], None] | None = None,
) -> Network:
    """Train an MNIST classifier and return it as a new :class:`~noiseprop.network.Network`.

    Initial weights and biases of a layer with ``fan_in`` inputs are drawn uniformly from
    ``[-1/sqrt(fan_in), 1/sqrt(fan_in)]`` (the ``nn.Linear`` default, here from a seeded generator);
    each epoch visits the training images in a fresh random order, in mini-batches of
    ``config.batch_size`` (the last one may be smaller). The loss, the noisy pass of noise-aware
    training and the reproducibility guarantees are in the module docstring.

    Args:
        config: the settings.
        data: the MNIST data (default: :func:`noiseprop.datasets.mnist`); images are scaled to
            ``[0, 1]`` with :meth:`MNIST.scaled`.
        progress: called with an :class:`EpochRecord` after every epoch.

    Returns:
        The trained network, float64 weights, whose ``metadata`` holds ``data`` (``"mnist"``),
        ``train_images`` (how many were used), ``config`` (:meth:`TrainConfig.to_dict`),
        ``test_accuracy`` (noise-free, the whole test set, float64), ``history`` (the epoch records
        as dicts) and ``noiseprop_version``.

    Raises:
        TypeError: if ``config`` is not a :class:`TrainConfig` or ``data`` not an ``MNIST``.
        ValueError: if ``config.train_size`` exceeds the number of training images.

    Example:
        >>> config = TrainConfig(hidden=(16,), epochs=2, learning_rate=1e-2, train_size=5000)
        >>> net = train(config)
        >>> net
        Network(784-16-10; sigmoid, linear)
        >>> net.metadata["test_accuracy"] > 0.8
        True
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig; got {type(config).__name__}.")
    if data is None:
        data = mnist()
    if not isinstance(data, MNIST):
        raise TypeError(
            f"data must be an MNIST (from noiseprop.datasets.mnist); got {type(data).__name__}."
        )
    train_images, train_labels = (torch.from_numpy(array) for array in data.scaled("train"))
    test_images, test_labels = (torch.from_numpy(array) for array in data.scaled("test"))
    if config.train_size is not None:
        if config.train_size > len(train_labels):
            raise ValueError(
                f"TrainConfig.train_size must be <= the number of training images "
                f"({len(train_labels)}); got {config.train_size}."
            )
        train_images = train_images[: config.train_size]
        train_labels = train_labels[: config.train_size]

    init_generator, shuffle_generator, noise_generator = _generators(config.seed)
    with torch.random.fork_rng(devices=[]):  # nn.Linear() draws (discarded) weights from the global RNG
        model = _initial_network(config, init_generator).to_torch(dtype=torch.float32)
    parameters = list(model.parameters())
    if config.optimizer == "adam":
        optimizer: torch.optim.Optimizer = torch.optim.Adam(parameters, lr=config.learning_rate)
    else:
        optimizer = torch.optim.SGD(parameters, lr=config.learning_rate)
    noise = config.train_noise
    # noise on every layer's activation module while training; eval mode (the evaluations) is clean
    sites = None if noise is None or noise.is_zero else noisy(model, noise, generator=noise_generator)
    count = len(train_labels)
    steps = config.epochs * math.ceil(count / config.batch_size)
    step = 0
    history: list[EpochRecord] = []
    for epoch in range(1, config.epochs + 1):
        start = time.perf_counter()
        model.train()
        order = torch.randperm(count, generator=shuffle_generator)
        total_loss = 0.0
        for first in range(0, count, config.batch_size):
            if config.schedule == "cosine":
                rate = config.learning_rate * (1 + math.cos(math.pi * step / steps)) / 2
                for group in optimizer.param_groups:
                    group["lr"] = rate
            batch = order[first : first + config.batch_size]
            logits = model(train_images[batch])
            loss = nn.functional.cross_entropy(logits, train_labels[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total_loss += loss.item() * len(batch)
            step += 1
        record = EpochRecord(
            epoch=epoch,
            loss=total_loss / count,
            train_accuracy=_model_accuracy(model, train_images, train_labels),
            test_accuracy=_model_accuracy(model, test_images, test_labels),
            seconds=time.perf_counter() - start,
        )
        history.append(record)
        if progress is not None:
            progress(record)

    if sites is not None:
        sites.remove()
    trained = Network.from_torch(model)
    metadata = {
        "data": "mnist",
        "train_images": count,
        "config": config.to_dict(),
        "test_accuracy": evaluate(trained, test_images, test_labels),
        "history": [asdict(record) for record in history],
        "noiseprop_version": __version__,
    }
    return Network(trained.layers, metadata=metadata)


def evaluate(
    network: Network,
    images: Any,
    labels: Any,
    *,
    dtype: torch.dtype | str = torch.float64,
    batch_size: int = _EVAL_CHUNK,
) -> float:
    """Noise-free accuracy: the fraction of images whose largest output is their label's.

    ``accuracy = (1/n) sum_i [argmax_k s^L_k(image_i) == label_i]`` with ``s^L`` the noise-free output
    layer (ties go to the lowest class index, as in ``torch.argmax``).

    Args:
        network: the classifier (one output per class).
        images: ``(n, network.input_size)`` array or tensor.
        labels: ``(n,)`` integer class labels.
        dtype: ``float64`` (default) or ``float32`` for the pass.
        batch_size: images per pass (bounds the memory).

    Example:
        A two-class "network" that copies its input: the first image is class 0, the second class 1.

        >>> net = Network((Layer(torch.eye(2), torch.zeros(2), "linear"),))
        >>> evaluate(net, [[1.0, 0.0], [0.0, 1.0], [0.2, 0.7]], [0, 1, 0])
        0.6666666666666666
    """
    if not isinstance(network, Network):
        raise TypeError(f"network must be a Network; got {type(network).__name__}.")
    dtype = as_dtype(dtype)
    batch_size = check_positive_int("batch_size", batch_size)
    images = torch.as_tensor(images).detach()
    labels = torch.as_tensor(labels).detach()
    if images.ndim != 2 or images.shape[1] != network.input_size:
        raise ValueError(
            f"images must have shape (n, {network.input_size}) for this network; got "
            f"{tuple(images.shape)}."
        )
    if labels.shape != (images.shape[0],) or labels.is_floating_point() or labels.is_complex():
        raise ValueError(
            f"labels must be {images.shape[0]} integer class labels, one per image; got "
            f"{labels.dtype} of shape {tuple(labels.shape)}."
        )
    if images.shape[0] == 0:
        raise ValueError("images must hold at least one image; got none.")
    correct = 0
    with torch.no_grad():
        for first in range(0, images.shape[0], batch_size):
            outputs = network.forward(images[first : first + batch_size].to(dtype))[-1][1]
            correct += int((outputs.argmax(1) == labels[first : first + batch_size]).sum())
    return correct / images.shape[0]


def default_network() -> Network:
    """The classifier shipped with the package: 784-100-100-10, sigmoid hidden layers.

    Trained by ``scripts/train_default.py`` with the default :class:`TrainConfig`; its
    ``metadata`` says how, and its noise-free test accuracy.

    Raises:
        FileNotFoundError: if the packaged file is missing.

    Example:
        >>> net = default_network()
        >>> net.widths, net.metadata["config"] == TrainConfig().to_dict()
        ((100, 100, 10), True)
        >>> images, labels = mnist().scaled("test")
        >>> evaluate(net, images, labels) >= 0.975
        True
    """
    resource = resources.files("noiseprop") / "data" / DEFAULT_NETWORK_FILE
    with resources.as_file(resource) as path:
        if not path.is_file():
            raise FileNotFoundError(
                f"the packaged network {path} is missing; reinstall noiseprop or rebuild it with "
                "scripts/train_default.py."
            )
        return Network.load(path)


def _generators(seed: int) -> tuple[torch.Generator, torch.Generator, torch.Generator]:
    """Independent generators for the initial weights, the shuffles and the training noise."""
    children = np.random.SeedSequence(seed).spawn(3)
    return tuple(  # type: ignore[return-value]
        torch.Generator().manual_seed(int(child.generate_state(1, dtype=np.uint64)[0]))
        for child in children
    )


def _initial_network(config: TrainConfig, generator: torch.Generator) -> Network:
    """``nn.Linear``-style uniform initial weights, drawn from ``generator``."""
    hidden = parse_activation(config.activation)
    sizes = config.sizes
    layers = []
    for index, (fan_in, fan_out) in enumerate(zip(sizes, sizes[1:])):
        bound = 1 / math.sqrt(fan_in)
        weight = torch.rand(fan_out, fan_in, generator=generator, dtype=torch.float64) * 2 - 1
        bias = torch.rand(fan_out, generator=generator, dtype=torch.float64) * 2 - 1
        activation = Linear() if index == len(sizes) - 2 else hidden
        layers.append(Layer(weight * bound, bias * bound, activation))
    return Network(tuple(layers))


def _model_accuracy(model: nn.Sequential, images: Tensor, labels: Tensor) -> float:
    """Noise-free accuracy of the torch model being trained (in eval mode, so without its noise)."""
    correct = 0
    model.eval()
    with torch.no_grad():
        for first in range(0, len(labels), _EVAL_CHUNK):
            outputs = model(images[first : first + _EVAL_CHUNK])
            correct += int((outputs.argmax(1) == labels[first : first + _EVAL_CHUNK]).sum())
    return correct / len(labels)
