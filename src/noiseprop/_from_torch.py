"""Converting an ``nn.Sequential`` of dense layers into the layers of a
:class:`~noiseprop.network.Network` (what :meth:`Network.from_torch` documents and calls)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from noiseprop.activations import (
    ELU,
    GELU,
    Activation,
    GELUTanh,
    Hardtanh,
    LeakyReLU,
    Linear,
    ReLU,
    Sigmoid,
    Softplus,
    Tanh,
)
from noiseprop.network import ActivationModule, Layer

__all__ = ["convert"]


def convert(
    module: nn.Module, metadata: Mapping[str, Any] | None
) -> tuple[tuple[Layer, ...], dict[str, Any]]:
    """The layers of ``module`` and the metadata of the network (see :meth:`Network.from_torch`)."""
    if not isinstance(module, nn.Sequential):
        raise TypeError(
            f"Network.from_torch expects an nn.Sequential of nn.Linear and activation modules; "
            f"got {type(module).__name__}."
        )
    children = list(module)
    layers: list[Layer] = []
    pending: tuple[Tensor, Tensor] | None = None  # an nn.Linear's weight and bias, not yet closed
    dropped: list[str] = []
    previous: type[nn.Module] | None = None
    for index, child in enumerate(children):
        base = _supported_class(index, child)
        where = f"Network.from_torch: module [{index}] {type(child).__name__}"
        if base is nn.Linear:
            if pending is not None:
                layers.append(Layer(*pending, Linear()))
            pending = _linear_parameters(child)
        elif base is nn.BatchNorm1d:
            if pending is None or previous is not nn.Linear:
                raise TypeError(
                    f"{where} is not directly after an nn.Linear; a BatchNorm1d is folded into "
                    "the nn.Linear just before it, so it must follow one."
                )
            pending = _fold_batchnorm(where, child, *pending)
        elif base in _IDENTITIES:
            pass
        elif base is nn.Flatten:
            if pending is not None or layers:
                raise TypeError(f"{where} is after an nn.Linear; only a leading nn.Flatten is allowed.")
        elif base in (nn.Softmax, nn.LogSoftmax):
            if index != len(children) - 1:
                raise TypeError(
                    f"{where} is not the last module; a Softmax or LogSoftmax is dropped (the "
                    "network's outputs are its logits) only at the end."
                )
            if child.dim not in (None, -1, 1):
                raise TypeError(
                    f"{where} is over dim={child.dim}; only one over the classes (dim=-1, 1 or "
                    "None) cannot change the argmax and can be dropped."
                )
            dropped.append(
                f"[{index}] {type(child).__name__}: monotone, cannot change the argmax; the "
                "network outputs the logits before it"
            )
        elif base is None:
            raise TypeError(f"{where} is unsupported; supported: {_SUPPORTED_TEXT}.")
        else:
            if pending is None:
                place = "is after another activation" if layers else "comes before any nn.Linear"
                raise TypeError(
                    f"{where} {place}; each layer is an nn.Linear followed by at most one activation."
                )
            layers.append(Layer(*pending, _activation_of_module(where, child, base)))
            pending = None
        previous = base
    if pending is not None:
        layers.append(Layer(*pending, Linear()))
    if not layers:
        raise ValueError("Network.from_torch: the module holds no nn.Linear layer.")
    info = dict(metadata or {})
    if dropped:
        note = {"dropped": dropped}
        if "from_torch" in info and info["from_torch"] != note:
            raise ValueError(
                f"Network.from_torch: metadata['from_torch'] is where the conversion notes what "
                f"it dropped ({note!r}); got {info['from_torch']!r}. Rename that key."
            )
        info["from_torch"] = note
    return tuple(layers), info


_ACTIVATIONS: dict[type[nn.Module], Callable[[Any], Activation]] = {
    ActivationModule: lambda module: module.activation,
    nn.Sigmoid: lambda module: Sigmoid(),
    nn.Tanh: lambda module: Tanh(),
    nn.ReLU: lambda module: ReLU(),
    nn.LeakyReLU: lambda module: LeakyReLU(negative_slope=module.negative_slope),
    nn.GELU: lambda module: _gelu(module.approximate),
    nn.Softplus: lambda module: Softplus(beta=module.beta, threshold=module.threshold),
    nn.ELU: lambda module: ELU(alpha=module.alpha),
    nn.Hardtanh: lambda module: Hardtanh(min_val=module.min_val, max_val=module.max_val),
}
"""The activation modules :meth:`Network.from_torch` converts, with the activation of each."""

_IDENTITIES = (nn.Identity, nn.Dropout, nn.Dropout1d, nn.AlphaDropout, nn.FeatureAlphaDropout)
"""Modules that are the identity at inference, skipped by :meth:`Network.from_torch`."""

_SUPPORTED = (
    nn.Linear,
    nn.BatchNorm1d,
    *_ACTIVATIONS,
    *_IDENTITIES,
    nn.Flatten,
    nn.Softmax,
    nn.LogSoftmax,
)

_SUPPORTED_TEXT = (
    "nn.Linear, nn.BatchNorm1d directly after an nn.Linear, the activations nn.Sigmoid, nn.Tanh, "
    "nn.ReLU, nn.LeakyReLU, nn.GELU, nn.Softplus, nn.ELU, nn.Hardtanh (nn.ReLU6) and the "
    "ActivationModule of Network.to_torch, nn.Identity, nn.Dropout, nn.Dropout1d, nn.AlphaDropout, "
    "nn.FeatureAlphaDropout, a leading nn.Flatten, a trailing nn.Softmax or nn.LogSoftmax"
)


def _supported_class(index: int, module: nn.Module) -> type[nn.Module] | None:
    """The supported class ``module`` is an instance of (``None`` if none), refusing a subclass
    that overrides ``forward``: converting it as its base class would be silently wrong."""
    for base in _SUPPORTED:
        if isinstance(module, base):
            if type(module).forward is not base.forward:
                name = f"nn.{base.__name__}" if base.__module__.startswith("torch.") else base.__name__
                raise TypeError(
                    f"Network.from_torch: module [{index}] {type(module).__name__} subclasses {name} "
                    "but overrides forward; noiseprop cannot know what it computes. Use the torch "
                    "module itself, or build the Layer by hand with a registered Activation."
                )
            return base
    return None


def _activation_of_module(where: str, module: nn.Module, base: type[nn.Module]) -> Activation:
    """The activation of a supported activation module, its parameter errors naming the module."""
    try:
        return _ACTIVATIONS[base](module)
    except ValueError as error:
        raise ValueError(f"{where}: {error}") from None


def _gelu(approximate: str) -> Activation:
    if approximate == "none":
        return GELU()
    if approximate == "tanh":
        return GELUTanh()
    raise ValueError(f"nn.GELU.approximate must be 'none' or 'tanh'; got {approximate!r}.")


def _linear_parameters(linear: nn.Linear) -> tuple[Tensor, Tensor]:
    """An ``nn.Linear``'s weight and bias (zeros without one) as float64 CPU tensors."""
    weight = linear.weight.detach().to(device="cpu", dtype=torch.float64)
    if linear.bias is None:
        return weight, torch.zeros(linear.out_features, dtype=torch.float64)
    return weight, linear.bias.detach().to(device="cpu", dtype=torch.float64)


def _fold_batchnorm(
    where: str, norm: nn.BatchNorm1d, weight: Tensor, bias: Tensor
) -> tuple[Tensor, Tensor]:
    """Fold an eval-mode BatchNorm1d into the layer before it (see :meth:`Network.from_torch`).

    With running mean ``mu``, variance ``var``, ``eps`` and affine ``gamma``, ``beta``::

        W' = diag(gamma / sqrt(var + eps)) W,    b' = gamma (b - mu) / sqrt(var + eps) + beta
    """
    if norm.running_mean is None or norm.running_var is None:
        raise TypeError(
            f"{where} has no running statistics (track_running_stats=False): it normalises every "
            "batch by that batch's own statistics, not a fixed function of each input. Build it with "
            "track_running_stats=True."
        )
    if norm.num_features != weight.shape[0]:
        raise ValueError(
            f"{where} has num_features={norm.num_features}; expected {weight.shape[0]}, the "
            "out_features of the nn.Linear before it."
        )

    def as64(tensor: Tensor | None, default: float) -> Tensor:
        if tensor is None:
            return torch.full((norm.num_features,), default, dtype=torch.float64)
        return tensor.detach().to(device="cpu", dtype=torch.float64)

    scale = as64(norm.weight, 1.0) / torch.sqrt(as64(norm.running_var, 0.0) + norm.eps)
    folded_bias = scale * (bias - as64(norm.running_mean, 0.0)) + as64(norm.bias, 0.0)
    return scale.unsqueeze(1) * weight, folded_bias
