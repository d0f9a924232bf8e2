"""Turning user inputs (scalars, arrays, tensors) into a ``(batch, features)`` tensor."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from noiseprop.network import Network

__all__ = ["all_finite", "as_device", "as_dtype", "as_inputs"]

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def as_dtype(dtype: Any) -> torch.dtype:
    """``torch.float32`` / ``torch.float64`` from a dtype or its name."""
    if isinstance(dtype, str) and dtype in _DTYPES:
        return _DTYPES[dtype]
    if dtype in (torch.float32, torch.float64):
        return dtype
    raise ValueError(f"dtype must be one of 'float32', 'float64' (or the torch dtypes); got {dtype!r}.")


def as_device(device: Any) -> torch.device:
    """``torch.device(device)``, checked: a ``ValueError`` naming ``device`` for a name torch does not
    know, or for CUDA where this torch build or machine has none (torch would raise an
    ``AssertionError`` later)."""
    try:
        result = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N'; got {device!r}.") from None
    if result.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r}: CUDA is not available in this torch build or machine.")
    return result


def as_inputs(inputs: Any, network: Network, *, dtype: torch.dtype, device: Any) -> Tensor:
    """A ``(batch, network.input_size)`` tensor of ``dtype`` on ``device`` from ``inputs``.

    ``inputs`` may be a ``(batch, input_size)`` or ``(input_size,)`` array or tensor, or a single
    number, which is broadcast to every input feature (one input value fed to every neuron, as in the
    symmetric networks of docs/THEORY.md section 2). A floating-point tensor or array is converted
    straight to ``dtype`` (one copy at most); anything else goes through float64. The values must be
    finite in ``dtype`` (checked once, on the converted tensor: :func:`all_finite`).
    """
    tensor = _as_float_tensor(inputs, network)
    if tensor.ndim == 0:
        tensor = tensor.expand(1, network.input_size)
    elif tensor.ndim == 1:
        tensor = tensor.unsqueeze(0)
    if tensor.ndim != 2 or tensor.shape[1] != network.input_size or tensor.shape[0] == 0:
        raise ValueError(
            f"inputs must have shape (batch, {network.input_size}) or ({network.input_size},) for "
            f"this network, or be a single number; got shape {tuple(tensor.shape)}."
        )
    result = tensor.to(device=as_device(device), dtype=dtype).contiguous()
    if not all_finite(result):
        kind = str(dtype).removeprefix("torch.")
        raise ValueError(f"inputs must be finite (in {kind}); got NaN or infinite values.")
    return result


def all_finite(tensor: Tensor) -> bool:
    """Whether every element of ``tensor`` is finite, in one pass where it is: a NaN or infinite
    element makes the sum NaN or infinite, so a finite sum proves every element finite; only a
    non-finite sum (a NaN or infinity, or finite values whose sum overflows) is checked element by
    element."""
    return bool(torch.isfinite(tensor.sum())) or bool(torch.isfinite(tensor).all())


def _as_float_tensor(inputs: Any, network: Network) -> Tensor:
    """``inputs`` as a floating-point tensor: a floating-point tensor or NumPy array as it is (no
    copy), anything else converted to float64."""
    if isinstance(inputs, Tensor) and inputs.is_floating_point():
        return inputs.detach()
    if isinstance(inputs, np.ndarray) and inputs.dtype in (np.float32, np.float64):
        return torch.as_tensor(inputs)
    try:
        return torch.as_tensor(inputs, dtype=torch.float64).detach()
    except (TypeError, ValueError, RuntimeError) as error:
        raise TypeError(
            f"inputs must be a number or an array of shape (batch, {network.input_size}); "
            f"got {type(inputs).__name__}."
        ) from error
