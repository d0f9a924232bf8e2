"""Monte Carlo simulation of noisy networks: the ground truth for the predictions.

Every repeat presents every input once and draws fresh noise (SCIENCE.md section 1): uncorrelated kinds
independently for every neuron, correlated kinds once per layer, repeat and input. Repeats run in
chunks, vectorised over ``(repeats, inputs, neurons)``; statistics stream into float64 accumulators, so
memory is bounded by the chunk whatever the number of repeats.

Statistics. Sums of ``d = y - s-bar`` (the deviation from the noise-free output, which keeps the sums
well conditioned) and ``d^2`` give the sample mean and the unbiased sample variance. Standard errors:
``sqrt(variance / repeats)`` for the mean; for the variance, batch means: the repeats are split into
``groups`` independent groups, each group's variance estimate is kept, and the standard error is the
standard deviation of the group estimates over ``sqrt(groups)``. The same is done for the per-layer
average variance, whose neurons are correlated.

Reproducibility: the numbers depend on ``seed``, ``repeats``, ``groups``, ``chunk``, ``dtype`` and the
device type, and on nothing else (the default chunk is a function of the network and batch shape only).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from noiseprop._inputs import as_dtype, as_inputs
from noiseprop._validation import check_positive_int
from noiseprop.network import Network
from noiseprop.noise import Noise, NoiseSpec, per_layer
from noiseprop.results import LayerStatistics, NoiseStatistics

__all__ = ["add_noise", "sample", "simulate"]

_CHUNK_BYTES = 2**25  # working set of one chunk's widest activation tensor (32 MiB)


def default_chunk(network: Network, batch: int, dtype: torch.dtype) -> int:
    """Repeats per chunk: the widest ``(repeats, batch, width)`` tensor fits ``_CHUNK_BYTES``."""
    itemsize = torch.finfo(dtype).bits // 8
    widest = max(network.widths)
    return max(1, _CHUNK_BYTES // (itemsize * batch * widest))


def simulate(
    network: Network,
    noise: NoiseSpec,
    inputs: Any,
    *,
    repeats: int = 10_000,
    seed: int = 0,
    dtype: torch.dtype | str = torch.float32,
    device: str | torch.device = "cpu",
    covariance: bool = False,
    chunk: int | None = None,
    groups: int = 32,
    progress: Callable[[int, int], None] | None = None,
) -> NoiseStatistics:
    """Run the noisy network ``repeats`` times on every input and measure each layer's noise.

    Args:
        network: the network.
        noise: a :class:`~noiseprop.noise.Noise` for every layer, one per layer, or
            ``{layer: Noise}`` (see :mod:`noiseprop.noise`).
        inputs: ``(batch, input_size)`` inputs, one input vector, or one number fed to every input.
        repeats: noise draws per input (>= 2).
        seed: seed of the random draws.
        dtype: ``float32`` (default) or ``float64`` for the network pass; statistics are always
            accumulated in float64.
        device: ``"cpu"`` or a CUDA device.
        covariance: also estimate every layer's ``(batch, N, N)`` covariance.
        chunk: repeats per chunk (default: a working set of about 32 MiB).
        groups: independent groups of repeats for the standard errors of the variances (at most
            ``repeats // 2``).
        progress: called as ``progress(done, repeats)`` after every chunk.

    Returns:
        A :class:`~noiseprop.results.NoiseStatistics` with ``method="montecarlo"``.

    Example:
        One noisy linear neuron: ``Var[y] = D_AU`` for a noise-free input.

        >>> from noiseprop import Network, Noise
        >>> net = Network.symmetric(width=1, depth=1, activation="linear")
        >>> stats = simulate(net, Noise(AU=0.01), 1.0, repeats=100_000, seed=1)
        >>> abs(stats[0].layer_variance - 0.01) < 5 * stats[0].layer_variance_stderr
        True
    """
    repeats = check_positive_int("repeats", repeats, minimum=2)
    groups = check_positive_int("groups", groups, minimum=2)
    chunk = None if chunk is None else check_positive_int("chunk", chunk)
    run = _Setup.build(network, noise, inputs, seed=seed, dtype=dtype, device=device)
    batch = run.batch
    chunk = default_chunk(network, batch, run.dtype) if chunk is None else chunk
    groups = min(groups, repeats // 2)
    stats = [_Accumulator(batch, width, covariance, run.device) for width in network.widths]

    done = 0
    sizes = [repeats // groups + (1 if g < repeats % groups else 0) for g in range(groups)]
    for group_size in sizes:
        for start in range(0, group_size, chunk):
            count = min(chunk, group_size - start)
            for index, signal in enumerate(run.noisy_pass(count)):
                stats[index].add(signal - run.reference[index][1])
            done += count
            if progress is not None:
                progress(done, repeats)
        for accumulator in stats:
            accumulator.end_group()

    layers = tuple(accumulator.result(signal) for accumulator, (_, signal) in zip(stats, run.clean))
    return NoiseStatistics(layers=layers, method="montecarlo", noise=run.noises, repeats=repeats)


def sample(
    network: Network,
    noise: NoiseSpec,
    inputs: Any,
    *,
    repeats: int,
    seed: int = 0,
    dtype: torch.dtype | str = torch.float32,
    device: str | torch.device = "cpu",
) -> Tensor:
    """Noisy outputs of the last layer: a ``(repeats, batch, out_features)`` tensor.

    The draws are those of :func:`simulate` with one chunk of ``repeats``; mind the memory
    (``repeats x batch x width`` values per layer).

    Example:
        Correlated additive noise on the output layer moves every output by the same amount:

        >>> from noiseprop import Network, Noise
        >>> net = Network.random([4, 6, 3], ["tanh", "linear"], seed=0)
        >>> out = sample(net, {2: Noise(AC=0.1)}, [0.1, 0.2, 0.3, 0.4], repeats=5, dtype="float64")
        >>> bool(((out - out[..., :1]).std(0) < 1e-12).all())
        True
    """
    repeats = check_positive_int("repeats", repeats)
    run = _Setup.build(network, noise, inputs, seed=seed, dtype=dtype, device=device)
    *_, output = run.noisy_pass(repeats)
    return output


@dataclass(frozen=True)
class _Setup:
    """What a simulation needs: the resolved noise, the noise-free pass (float64 and run dtype),
    the weights in the run dtype, and the random generator."""

    network: Network
    noises: tuple[Noise, ...]
    clean: list[tuple[Tensor, Tensor]]
    reference: list[tuple[Tensor, Tensor]]
    weights: list[tuple[Tensor, Tensor]]
    generator: torch.Generator
    dtype: torch.dtype
    device: torch.device

    @classmethod
    def build(
        cls, network: Network, noise: NoiseSpec, inputs: Any, *, seed: int, dtype: Any, device: Any
    ) -> _Setup:
        if not isinstance(network, Network):
            raise TypeError(f"network must be a Network; got {type(network).__name__}.")
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise TypeError(f"seed must be an integer; got {type(seed).__name__} {seed!r}.")
        dtype = as_dtype(dtype)
        device = torch.device(device)
        noises = per_layer(noise, network.depth)
        x = as_inputs(inputs, network, dtype=torch.float64, device=device)
        clean = network.forward(x)
        return cls(
            network=network,
            noises=noises,
            clean=clean,
            reference=[(weighted.to(dtype), signal.to(dtype)) for weighted, signal in clean],
            weights=[
                (layer.weight.to(device, dtype), layer.bias.to(device, dtype))
                for layer in network.layers
            ],
            generator=torch.Generator(device=device).manual_seed(seed),
            dtype=dtype,
            device=device,
        )

    @property
    def batch(self) -> int:
        return int(self.clean[0][1].shape[0])

    def noisy_pass(self, count: int) -> Iterator[Tensor]:
        return _noisy_pass(
            self.network, self.noises, self.reference, self.weights, count, self.generator
        )


def _noisy_pass(
    network: Network,
    noises: tuple[Noise, ...],
    reference: list[tuple[Tensor, Tensor]],
    weights: list[tuple[Tensor, Tensor]],
    count: int,
    generator: torch.Generator,
) -> Iterator[Tensor]:
    """``count`` noisy repeats of every input, vectorised over ``(count, batch, width)``: yields
    each layer's noisy output in turn, so that a caller can use it before the next layer runs."""
    signal: Tensor | None = None
    for index, (layer, noise, (weight, bias)) in enumerate(zip(network.layers, noises, weights)):
        weighted_clean, signal_clean = reference[index]
        batch, width = signal_clean.shape
        shape = (count, batch, width)
        if signal is None:  # the first layer's weighted input is noise-free: the same every repeat
            if noise.injection == "before":
                signal = layer.activation(add_noise(weighted_clean.expand(shape), noise, generator))
            else:
                signal = add_noise(signal_clean.expand(shape), noise, generator)
        else:
            weighted = torch.addmm(bias, signal.reshape(count * batch, -1), weight.T).view(shape)
            if noise.injection == "before":
                signal = layer.activation(add_noise(weighted, noise, generator))
            else:
                signal = add_noise(layer.activation(weighted), noise, generator)
        yield signal


def add_noise(value: Tensor, noise: Noise, generator: torch.Generator) -> Tensor:
    """``value (1 + xi_MU + xi_MC) + xi_AU + xi_AC`` with fresh draws (SCIENCE.md section 1).

    ``value`` has shape ``(repeats, batch, width)`` (or broadcasts to it); correlated draws have
    shape ``(repeats, batch, 1)``, one per layer and presentation.
    """
    if noise.is_zero:
        return value
    count, batch, width = value.shape
    options = {"dtype": value.dtype, "device": value.device, "generator": generator}
    result = value
    if noise.MU or noise.MC:
        factor = None
        if noise.MU:
            factor = torch.randn(count, batch, width, **options).mul_(math.sqrt(noise.MU))
        if noise.MC:
            shared = torch.randn(count, batch, 1, **options).mul_(math.sqrt(noise.MC))
            factor = shared if factor is None else factor.add_(shared)
        result = torch.addcmul(value, value, factor)
    if noise.AU:
        draw = torch.randn(count, batch, width, **options)
        result = torch.add(result, draw, alpha=math.sqrt(noise.AU))
    if noise.AC:
        shared = torch.randn(count, batch, 1, **options)
        result = torch.add(result, shared, alpha=math.sqrt(noise.AC))
    return result.expand(count, batch, width)


class _Accumulator:
    """Streaming float64 sums of one layer's deviations, with batch-means standard errors."""

    def __init__(self, batch: int, width: int, covariance: bool, device: torch.device) -> None:
        zeros = lambda *shape: torch.zeros(*shape, dtype=torch.float64, device=device)  # noqa: E731
        self.count = 0
        self.total = zeros(batch, width)
        self.total_sq = zeros(batch, width)
        self.group_count = 0
        self.group = zeros(batch, width)
        self.group_sq = zeros(batch, width)
        self.group_variance_sum = zeros(batch, width)
        self.group_variance_sq = zeros(batch, width)
        self.input_variances: list[Tensor] = []  # per group: (batch,) averages over the neurons
        self.comoment = zeros(batch, width, width) if covariance else None

    def add(self, deviation: Tensor) -> None:
        self.group_count += deviation.shape[0]
        self.group += deviation.sum(0, dtype=torch.float64)
        self.group_sq += deviation.square().sum(0, dtype=torch.float64)
        if self.comoment is not None:
            wide = deviation.to(torch.float64).permute(1, 0, 2)
            self.comoment += torch.matmul(wide.transpose(1, 2), wide)

    def end_group(self) -> None:
        n = self.group_count
        variance = (self.group_sq - self.group.square() / n) / (n - 1)
        self.group_variance_sum += variance
        self.group_variance_sq += variance.square()
        self.input_variances.append(variance.mean(-1))
        self.count += n
        self.total += self.group
        self.total_sq += self.group_sq
        self.group_count = 0
        self.group.zero_()
        self.group_sq.zero_()

    def result(self, signal: Tensor) -> LayerStatistics:
        n = self.count
        mean_deviation = self.total / n
        variance = ((self.total_sq - self.total * mean_deviation) / (n - 1)).clamp_min_(0)
        groups = len(self.input_variances)
        group_mean = self.group_variance_sum / groups
        spread = (self.group_variance_sq - groups * group_mean.square()).clamp_min_(0) / (groups - 1)
        per_input = torch.stack(self.input_variances)  # (groups, batch)
        covariance = None
        if self.comoment is not None:
            covariance = self.comoment - n * mean_deviation.unsqueeze(-1) * mean_deviation.unsqueeze(-2)
            covariance /= n - 1
        return LayerStatistics(
            mean=signal + mean_deviation,
            variance=variance,
            covariance=covariance,
            mean_stderr=(variance / n).sqrt(),
            variance_stderr=(spread / groups).sqrt(),
            input_variance_stderr=per_input.std(0) / math.sqrt(groups),
            layer_variance_stderr=float(per_input.mean(1).std() / math.sqrt(groups)),
        )
