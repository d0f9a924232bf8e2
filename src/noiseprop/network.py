"""Feed-forward networks of dense noisy layers (docs/THEORY.md sections 1-3).

A :class:`Network` is an immutable sequence of :class:`Layer` (weight ``W^n`` of shape
``(N_n, N_{n-1})``, bias ``b^n``, activation ``f_n``). The input layer only distributes the data and is
not a layer here: layer 1 is the first hidden layer, layer ``depth`` the output layer. Weights are held
as float64 CPU tensors; the engines move them to the device and dtype they run in.

File format (``Network.save`` / ``Network.load``): a safetensors file, no pickle. Tensors
``layers.{i}.weight`` (``N_i x N_{i-1}``) and ``layers.{i}.bias`` (``N_i``), float64, ``i`` from 0; the
header metadata holds ``format = "noiseprop.network"``, ``version = "1"``, ``activations`` (a JSON list
of ``{"name": ..., **parameters}``, one per layer) and ``metadata`` (a JSON object, e.g. how the network
was trained).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from noiseprop._validation import check_finite, check_positive_int
from noiseprop.activations import (
    Activation,
    activation_from_spec,
    parse_activation,
)

__all__ = ["Layer", "Network"]

_FORMAT = "noiseprop.network"
_VERSION = "1"


def _as_float64(name: str, value: Any, ndim: int) -> Tensor:
    try:
        tensor = torch.as_tensor(value).detach()
    except (TypeError, ValueError, RuntimeError) as error:
        raise TypeError(
            f"{name} must be a {ndim}-D array of numbers; got {type(value).__name__}."
        ) from error
    if tensor.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D; got shape {tuple(tensor.shape)}.")
    if tensor.dtype in (torch.bool, torch.complex64, torch.complex128):
        raise TypeError(f"{name} must hold real numbers; got dtype {tensor.dtype}.")
    tensor = tensor.to(device="cpu", dtype=torch.float64).clone()
    if not torch.isfinite(tensor).all():
        bad = int((~torch.isfinite(tensor)).sum())
        raise ValueError(f"{name} must be finite; got {bad} NaN or infinite entries.")
    return tensor


@dataclass(frozen=True, eq=False)
class Layer:
    """One dense layer: ``s = f(W y + b)``.

    Attributes:
        weight: ``(out_features, in_features)`` weights (converted to float64).
        bias: ``(out_features,)`` biases (converted to float64).
        activation: an :class:`~noiseprop.activations.Activation` or its string form (``"sigmoid"``).
    """

    weight: Tensor
    bias: Tensor
    activation: Activation

    def __post_init__(self) -> None:
        weight = _as_float64("Layer.weight", self.weight, 2)
        bias = _as_float64("Layer.bias", self.bias, 1)
        if bias.shape[0] != weight.shape[0]:
            raise ValueError(
                f"Layer.bias must have one entry per output neuron ({weight.shape[0]}, from "
                f"weight shape {tuple(weight.shape)}); got {bias.shape[0]}."
            )
        activation = self.activation
        if isinstance(activation, str):
            activation = parse_activation(activation)
        if not isinstance(activation, Activation):
            raise TypeError(
                f"Layer.activation must be an Activation or a name such as 'sigmoid'; got "
                f"{type(activation).__name__}."
            )
        object.__setattr__(self, "weight", weight)
        object.__setattr__(self, "bias", bias)
        object.__setattr__(self, "activation", activation)

    @property
    def in_features(self) -> int:
        return int(self.weight.shape[1])

    @property
    def out_features(self) -> int:
        return int(self.weight.shape[0])


@dataclass(frozen=True, eq=False)
class Network:
    """A feed-forward network of dense layers.

    Attributes:
        layers: the layers, first hidden layer first, output layer last.
        metadata: free-form JSON-able information saved with the network (e.g. training settings).

    Example:
        >>> net = Network.symmetric(width=10, depth=3)
        >>> net.widths, net.input_size
        ((10, 10, 10), 10)
        >>> net
        Network(10x4; sigmoid x3)
    """

    layers: tuple[Layer, ...]
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        layers = tuple(self.layers)
        if not layers:
            raise ValueError("Network.layers must hold at least one Layer; got none.")
        for index, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise TypeError(f"Network.layers[{index}] must be a Layer; got {type(layer).__name__}.")
            if index and layer.in_features != layers[index - 1].out_features:
                raise ValueError(
                    f"Network.layers[{index}].weight has {layer.in_features} input columns but "
                    f"layer {index} before it has {layers[index - 1].out_features} neurons; expected "
                    f"shape ({layer.out_features}, {layers[index - 1].out_features})."
                )
        try:
            metadata = json.loads(json.dumps(dict(self.metadata)))
        except (TypeError, ValueError) as error:
            raise TypeError(f"Network.metadata must be JSON-serialisable: {error}") from None
        object.__setattr__(self, "layers", layers)
        object.__setattr__(self, "metadata", metadata)

    # ----------------------------------------------------------------------------------- shape
    @property
    def depth(self) -> int:
        """Number of layers (hidden + output)."""
        return len(self.layers)

    @property
    def input_size(self) -> int:
        return self.layers[0].in_features

    @property
    def widths(self) -> tuple[int, ...]:
        """Number of neurons of each layer."""
        return tuple(layer.out_features for layer in self.layers)

    def __repr__(self) -> str:
        runs: list[list[int]] = []  # [width, count], consecutive equal widths collapsed
        for size in (self.input_size, *self.widths):
            if runs and runs[-1][0] == size:
                runs[-1][1] += 1
            else:
                runs.append([size, 1])
        shape = "-".join(f"{size}x{count}" if count > 1 else str(size) for size, count in runs)
        names: list[list[Any]] = []  # [activation, count], consecutive equal ones collapsed
        for layer in self.layers:
            if names and names[-1][0] == str(layer.activation):
                names[-1][1] += 1
            else:
                names.append([str(layer.activation), 1])
        activations = ", ".join(f"{name} x{count}" if count > 1 else name for name, count in names)
        return f"Network({shape}; {activations})"

    # ---------------------------------------------------------------------------- evaluation
    def __call__(self, inputs: Any) -> Tensor:
        """The noise-free outputs ``y = s^L`` (float64, ``(batch, K)``) for ``inputs``: a
        ``(batch, input_size)`` or ``(input_size,)`` array or tensor, or one number fed to every
        input (as :func:`noiseprop.propagate` reads them). :meth:`forward` gives every layer.

        Example:
            >>> net = Network((Layer([[2.0]], [1.0], "linear"),))
            >>> net([[3.0], [0.5]]).tolist()
            [[7.0], [2.0]]
        """
        from noiseprop._inputs import as_inputs

        x = as_inputs(inputs, self, dtype=torch.float64, device=self.layers[0].weight.device)
        return self.forward(x)[-1][1]

    def forward(self, inputs: Tensor) -> list[tuple[Tensor, Tensor]]:
        """Noise-free pass: ``[(x^n, s^n) for each layer]`` with ``x = W y + b`` and ``s = f(x)``.

        ``inputs`` is a ``(batch, input_size)`` tensor; the layers are cast to its dtype and device.
        """
        outputs = []
        signal = inputs
        for layer in self.layers:
            weight = layer.weight.to(device=inputs.device, dtype=inputs.dtype)
            bias = layer.bias.to(device=inputs.device, dtype=inputs.dtype)
            weighted = torch.addmm(bias, signal, weight.T)
            signal = layer.activation(weighted)
            outputs.append((weighted, signal))
        return outputs

    def symmetric_weights(self) -> list[tuple[float, float]] | None:
        """``[(weight, bias)]`` per layer when every weight of a layer is one value and every bias
        another (the symmetric networks of docs/THEORY.md section 2); ``None`` otherwise."""
        result = []
        for layer in self.layers:
            weight, bias = layer.weight, layer.bias
            if not (torch.all(weight == weight.flatten()[0]) and torch.all(bias == bias[0])):
                return None
            result.append((float(weight.flatten()[0]), float(bias[0])))
        return result

    # -------------------------------------------------------------------------- constructors
    @classmethod
    def symmetric(
        cls,
        width: int,
        depth: int,
        *,
        activation: Activation | str = "sigmoid",
        weight: float | None = None,
        input_size: int | None = None,
    ) -> Network:
        """The symmetric network of docs/THEORY.md section 2: every weight ``1/width``, no bias.

        Args:
            width: neurons per layer ``N``, the output layer included.
            depth: number of layers (hidden + output).
            activation: the same activation in every layer.
            weight: every weight (default ``1 / width``).
            input_size: input features (default ``width``); with the default weight the first layer
                then receives the average of the inputs, i.e. one input value fed to all neurons.
        """
        width = check_positive_int("width", width)
        depth = check_positive_int("depth", depth)
        input_size = width if input_size is None else check_positive_int("input_size", input_size)
        value = 1.0 / width if weight is None else check_finite("weight", weight)
        act = parse_activation(activation) if isinstance(activation, str) else activation
        layers = []
        for index in range(depth):
            columns = input_size if index == 0 else width
            layers.append(
                Layer(
                    torch.full((width, columns), value, dtype=torch.float64),
                    torch.zeros(width),
                    act,
                )
            )
        return cls(tuple(layers))

    @classmethod
    def random(
        cls,
        sizes: Sequence[int],
        activations: Sequence[Activation | str] | Activation | str = "sigmoid",
        *,
        seed: int = 0,
        weight_scale: float = 1.0,
    ) -> Network:
        """A network with Gaussian weights ``N(0, weight_scale^2 / in_features)`` and biases
        ``N(0, 0.1^2)``, for tests and experiments.

        Args:
            sizes: ``(input_size, width_1, ..., width_depth)``.
            activations: one per layer, or one for all.
            seed: seed of the weights.
            weight_scale: standard deviation times ``sqrt(in_features)``.
        """
        sizes = [check_positive_int(f"sizes[{i}]", size) for i, size in enumerate(sizes)]
        if len(sizes) < 2:
            raise ValueError(f"sizes must list the input size and >= 1 layer width; got {sizes}.")
        depth = len(sizes) - 1
        if isinstance(activations, (str, Activation)):
            activations = [activations] * depth
        if len(activations) != depth:
            raise ValueError(f"activations must hold one per layer ({depth}); got {len(activations)}.")
        generator = torch.Generator().manual_seed(seed)
        layers = []
        for index, act in enumerate(activations):
            fan_in, fan_out = sizes[index], sizes[index + 1]
            weight = torch.randn(fan_out, fan_in, generator=generator, dtype=torch.float64)
            bias = 0.1 * torch.randn(fan_out, generator=generator, dtype=torch.float64)
            layers.append(Layer(weight * weight_scale / math.sqrt(fan_in), bias, act))
        return cls(tuple(layers))

    @classmethod
    def from_torch(cls, module: nn.Module, *, metadata: Mapping[str, Any] | None = None) -> Network:
        """Convert an ``nn.Sequential`` into the network that computes its eval-mode function.

        A layer is an ``nn.Linear``, optionally followed directly by an ``nn.BatchNorm1d``, then by
        at most one activation module (none: the layer is linear). Supported modules:

        - ``nn.Linear``;
        - ``nn.BatchNorm1d`` directly after an ``nn.Linear``, folded into it with its running mean
          ``mu`` and variance ``var``, ``eps`` and affine parameters ``gamma``, ``beta`` (1 and 0
          without ``affine``), which is what it computes in eval mode::

              W' = diag(gamma / sqrt(var + eps)) W,    b' = gamma (b - mu) / sqrt(var + eps) + beta

        - the activations ``nn.Sigmoid``, ``nn.Tanh``, ``nn.ReLU``, ``nn.LeakyReLU``, ``nn.GELU``
          (exact: :class:`~noiseprop.activations.GELU`; ``approximate="tanh"``:
          :class:`~noiseprop.activations.GELUTanh`), ``nn.Softplus``, ``nn.ELU``, ``nn.Hardtanh``
          (and so ``nn.ReLU6``), with their parameters, and the modules made by :meth:`to_torch`;
        - ``nn.Identity``, ``nn.Dropout``, ``nn.Dropout1d``, ``nn.AlphaDropout`` and
          ``nn.FeatureAlphaDropout``, anywhere: the identity at inference, skipped;
        - a leading ``nn.Flatten``;
        - a trailing ``nn.Softmax`` or ``nn.LogSoftmax`` over the classes (``dim`` -1, 1 or None),
          dropped: it is monotone, so it cannot change the argmax (the predicted class). The
          network's outputs, and the noise the engines compute for them, are then the logits before
          it, and ``metadata["from_torch"]["dropped"]`` says so (added to the ``metadata`` given).

        The network computes what ``module.eval()`` computes, whatever mode ``module`` is in; the
        module itself is left unchanged. A subclass of a supported module that overrides ``forward``
        is refused: what it computes is unknown.

        Args:
            module: the ``nn.Sequential``.
            metadata: JSON-able information saved with the network.

        Raises:
            TypeError: if ``module`` is not an ``nn.Sequential``, or a module in it is unsupported
                (naming its index and class, and listing the supported modules), overrides
                ``forward``, is out of place (an activation not after an ``nn.Linear``, a
                BatchNorm1d not directly after one, a Softmax not at the end) or cannot be folded
                (a BatchNorm1d without running statistics, a Softmax over another dim).
            ValueError: if ``module`` holds no ``nn.Linear``, a module's parameters are invalid, or
                ``metadata["from_torch"]`` differs from the note the conversion writes there.

        Example:
            >>> from torch import nn
            >>> model = nn.Sequential(
            ...     nn.Linear(4, 8), nn.BatchNorm1d(8), nn.GELU(), nn.Dropout(0.1),
            ...     nn.Linear(8, 3), nn.Softmax(dim=-1),
            ... )
            >>> net = Network.from_torch(model, metadata={"source": "example"})
            >>> net
            Network(4-8-3; gelu, linear)
            >>> net.metadata["source"]
            'example'
            >>> print(*net.metadata["from_torch"]["dropped"])
            [5] Softmax: monotone, cannot change the argmax; the network outputs the logits before it
        """
        from noiseprop._from_torch import convert

        layers, info = convert(module, metadata)
        return cls(layers, metadata=info)

    def to_torch(self, dtype: torch.dtype = torch.float32) -> nn.Sequential:
        """An ``nn.Sequential`` computing the same noise-free function (for training)."""
        modules: list[nn.Module] = []
        for layer in self.layers:
            linear = nn.Linear(layer.in_features, layer.out_features, dtype=dtype)
            with torch.no_grad():
                linear.weight.copy_(layer.weight)
                linear.bias.copy_(layer.bias)
            modules += [linear, ActivationModule(layer.activation)]
        return nn.Sequential(*modules)

    # --------------------------------------------------------------------------------- files
    def save(self, path: str | Path) -> Path:
        """Write the network as safetensors (format in the module docstring); returns the path.

        Raises:
            TypeError: if ``path`` is not a path.
            ValueError: if ``path`` is a folder.
            OSError: if the file cannot be written (the message names it).
        """
        from safetensors import SafetensorError
        from safetensors.torch import save_file

        path = _as_path("path", path)
        if path.is_dir():
            raise ValueError(
                f"path {str(path)!r} is a folder; expected a file name such as net.safetensors."
            )
        tensors = {}
        for index, layer in enumerate(self.layers):
            tensors[f"layers.{index}.weight"] = layer.weight.contiguous()
            tensors[f"layers.{index}.bias"] = layer.bias.contiguous()
        header = {
            "format": _FORMAT,
            "version": _VERSION,
            "activations": json.dumps([layer.activation.to_spec() for layer in self.layers]),
            "metadata": json.dumps(self.metadata),
        }
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            save_file(tensors, str(path), metadata=header)
        except (OSError, RuntimeError, SafetensorError) as error:  # safetensors has its own I/O errors
            raise OSError(f"cannot write network file {str(path)!r}: {error}") from None
        return path

    @classmethod
    def load(cls, path: str | Path) -> Network:
        """Read a network written by :meth:`save`.

        Raises:
            FileNotFoundError: if ``path`` does not exist.
            ValueError: if the file is not a noiseprop network (naming what is wrong).
        """
        from safetensors import SafetensorError, safe_open

        path = _as_path("path", path)
        if not path.exists():
            raise FileNotFoundError(f"network file {str(path)!r} does not exist.")
        if not path.is_file():
            raise ValueError(f"network file {str(path)!r} is not a file; expected a .safetensors file.")
        try:
            with safe_open(str(path), framework="pt") as handle:
                header = handle.metadata() or {}
                tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
        except (SafetensorError, OSError, ValueError) as error:
            raise ValueError(f"{str(path)!r} is not a readable safetensors file: {error}") from None
        if header.get("format") != _FORMAT:
            raise ValueError(
                f"{str(path)!r} is not a noiseprop network (header format {header.get('format')!r}, "
                f"expected {_FORMAT!r})."
            )
        if header.get("version") != _VERSION:
            raise ValueError(
                f"{str(path)!r} has network format version {header.get('version')!r}; this noiseprop "
                f"reads version {_VERSION}."
            )
        try:
            specs = json.loads(header["activations"])
            metadata = json.loads(header.get("metadata", "{}"))
        except (KeyError, json.JSONDecodeError, RecursionError) as error:
            reason = "nested too deeply" if isinstance(error, RecursionError) else error
            raise ValueError(f"{str(path)!r} has a damaged header: {reason}") from None
        if not isinstance(specs, list) or not specs:
            raise ValueError(
                f"{str(path)!r} has a damaged header: activations must be a non-empty list, one "
                f"per layer; got {type(specs).__name__}."
            )
        if not isinstance(metadata, dict):
            raise ValueError(f"{str(path)!r} has a damaged header: metadata must be a JSON object.")
        expected = {
            f"layers.{index}.{part}" for index in range(len(specs)) for part in ("weight", "bias")
        }
        missing, leftover = sorted(expected - set(tensors)), sorted(set(tensors) - expected)
        if missing or leftover:
            raise ValueError(
                f"{str(path)!r} does not match its header's {len(specs)} activations: "
                + "; ".join(
                    part for part in (
                        f"missing tensors {missing}" if missing else "",
                        f"leftover tensors {leftover}" if leftover else "",
                    ) if part
                )
                + "."
            )  # fmt: skip
        layers = []
        for index, spec in enumerate(specs):
            try:
                activation = activation_from_spec(spec)
            except (TypeError, ValueError, RecursionError) as error:
                raise ValueError(f"{str(path)!r}: activation {index + 1}: {error}") from None
            weight, bias = tensors[f"layers.{index}.weight"], tensors[f"layers.{index}.bias"]
            layers.append(Layer(weight, bias, activation))
        return cls(tuple(layers), metadata=metadata)


def _as_path(name: str, value: object) -> Path:
    """``value`` as a ``Path``; a ``TypeError`` naming ``name`` for anything but a string or a path."""
    if isinstance(value, (str, os.PathLike)):
        return Path(value)
    raise TypeError(
        f"{name} must be a file path (str or os.PathLike); got {type(value).__name__} {value!r}."
    )


class ActivationModule(nn.Module):
    """An ``nn.Module`` wrapping a noiseprop :class:`Activation` (made by :meth:`Network.to_torch`)."""

    def __init__(self, activation: Activation) -> None:
        super().__init__()
        self.activation = activation

    def forward(self, x: Tensor) -> Tensor:
        return self.activation(x)

    def extra_repr(self) -> str:
        return str(self.activation)
