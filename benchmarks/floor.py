"""The floor: a bare PyTorch loop that does only the unavoidable work of a simulation.

For the network, inputs, noise, repeats, dtype and chunk of a :class:`Workload`, :func:`bare_loop` does,
chunk after chunk of repeats, vectorised over ``(repeats, inputs, neurons)``:

* the first layer's weighted input once per run (the inputs are noise-free, so it is the same for
  every repeat), and every later layer's ``addmm`` (bias + matrix product);
* the activation, in place (``sigmoid_``, ``tanh_``, ...);
* the random draws: ``torch.randn`` of shape ``(repeats, inputs, neurons)`` for each uncorrelated kind
  that is on and ``(repeats, inputs, 1)`` for each correlated kind (one value per layer and
  presentation), combined with in-place arithmetic into ``y = s (1 + xi_MU + xi_MC) + xi_AU + xi_AC``
  (or the same on the weighted input for ``injection="before"``);
* the minimal statistics: per layer and chunk, ``y.sum(0)`` and ``y.square().sum(0)`` in the run
  dtype, added into float64 accumulators (enough for the mean and the variance; no centring, no
  batch means, no standard errors).

Nothing else: no validation, no noise-free float64 reference pass, no Python objects per chunk.
``merged=True`` gives the *tight* floor, which draws one Gaussian per neuron for the two uncorrelated
kinds together (``s xi_MU + xi_AU`` is Gaussian with variance ``s^2 D_MU + D_AU`` given ``s``), as the
engine does. :func:`matmuls_only` and :func:`draws_only` are the two halves of the roofline.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from noiseprop import Network, Noise

__all__ = ["Workload", "bare_loop", "draws_only", "matmuls_only"]


@dataclass(frozen=True)
class Workload:
    """One simulation to time: ``repeats`` noisy passes of ``inputs`` through ``network``."""

    name: str
    network: Network
    inputs: Tensor  # (batch, input_size), float64
    noise: Noise
    repeats: int
    dtype: torch.dtype
    chunk: int

    @property
    def batch(self) -> int:
        return int(self.inputs.shape[0])

    @property
    def neuron_updates(self) -> int:
        """Noisy neuron outputs computed: repeats x inputs x neurons."""
        return self.repeats * self.batch * sum(self.network.widths)

    def chunks(self) -> list[int]:
        return [min(self.chunk, self.repeats - start) for start in range(0, self.repeats, self.chunk)]


def _layers(work: Workload) -> list[tuple[Tensor, Tensor]]:
    return [(layer.weight.to(work.dtype), layer.bias.to(work.dtype)) for layer in work.network.layers]


def _activate_(x: Tensor, activation: object) -> Tensor:
    name = getattr(activation, "name", "")
    if name == "sigmoid" and activation.gain == 1 and activation.centre == 0:  # type: ignore[attr-defined]
        return x.sigmoid_()
    if name == "tanh" and activation.gain == 1:  # type: ignore[attr-defined]
        return x.tanh_()
    if name == "relu":
        return x.relu_()
    if name == "linear" and activation.slope == 1 and activation.offset == 0:  # type: ignore[attr-defined]
        return x
    return activation(x)  # type: ignore[operator]


def _noisy_(value: Tensor, noise: Noise, generator: torch.Generator, *, merged: bool) -> Tensor:
    """``value (1 + xi_MU + xi_MC) + xi_AU + xi_AC``, in place when ``value`` owns its memory."""
    count, batch, width = value.shape
    options = {"dtype": value.dtype, "generator": generator}
    owned = value.stride(0) != 0
    y = value if owned else value.contiguous()
    if merged and noise.MU and noise.AU:
        spread = torch.addcmul(torch.tensor(noise.AU, dtype=value.dtype), y, y, value=noise.MU).sqrt_()
        draw = torch.randn(count, batch, width, **options).mul_(spread)
        if noise.MC:
            y.mul_(torch.randn(count, batch, 1, **options).mul_(math.sqrt(noise.MC)).add_(1))
        y.add_(draw)
    else:
        if noise.MU or noise.MC:
            factor = torch.randn(count, batch, width, **options).mul_(math.sqrt(noise.MU))
            if noise.MC:
                factor.add_(torch.randn(count, batch, 1, **options), alpha=math.sqrt(noise.MC))
            y.addcmul_(y, factor)
        if noise.AU:
            y.add_(torch.randn(count, batch, width, **options), alpha=math.sqrt(noise.AU))
    if noise.AC:
        y.add_(torch.randn(count, batch, 1, **options), alpha=math.sqrt(noise.AC))
    return y


def bare_loop(work: Workload, *, merged: bool = False, seed: int = 0) -> list[tuple[Tensor, Tensor]]:
    """The floor (module docstring): per layer, float64 sums of ``y`` and ``y^2`` over the repeats."""
    generator = torch.Generator().manual_seed(seed)
    layers = _layers(work)
    network, noise = work.network, work.noise
    first_weight, first_bias = layers[0]
    first = torch.addmm(first_bias, work.inputs.to(work.dtype), first_weight.T)
    if noise.injection == "after":
        first = _activate_(first, network.layers[0].activation)
    zeros = [torch.zeros(2, work.batch, width, dtype=torch.float64) for width in network.widths]
    sums = [(pair[0], pair[1]) for pair in zeros]
    for count in work.chunks():
        signal = first.expand(count, *first.shape)
        for index, (layer, (weight, bias)) in enumerate(zip(network.layers, layers)):
            if index:
                flat = signal.reshape(count * work.batch, -1)
                signal = torch.addmm(bias, flat, weight.T).view(count, work.batch, -1)
                if noise.injection == "after":
                    signal = _activate_(signal, layer.activation)
            signal = _noisy_(signal, noise, generator, merged=merged)
            if noise.injection == "before":
                signal = _activate_(signal, layer.activation)
            total, total_sq = sums[index]
            total += signal.sum(0)
            total_sq += signal.square().sum(0)
    return sums


def matmuls_only(work: Workload) -> None:
    """The matrix products of :func:`bare_loop` alone (first half of the roofline)."""
    layers = _layers(work)
    first_weight, first_bias = layers[0]
    first = torch.addmm(first_bias, work.inputs.to(work.dtype), first_weight.T)
    for count in work.chunks():
        signal = first.expand(count, *first.shape)
        for weight, bias in layers[1:]:
            signal = torch.addmm(bias, signal.reshape(count * work.batch, -1), weight.T)


def draws_only(work: Workload, *, merged: bool = False, seed: int = 0) -> None:
    """The ``torch.randn`` calls of :func:`bare_loop` alone (second half of the roofline)."""
    generator = torch.Generator().manual_seed(seed)
    noise = work.noise
    wide = (noise.MU > 0) + (noise.AU > 0)
    if merged:
        wide = min(wide, 1)
    narrow = (noise.MC > 0) + (noise.AC > 0)
    for count in work.chunks():
        for width in work.network.widths:
            for _ in range(wide):
                torch.randn(count, work.batch, width, dtype=work.dtype, generator=generator)
            for _ in range(narrow):
                torch.randn(count, work.batch, 1, dtype=work.dtype, generator=generator)
