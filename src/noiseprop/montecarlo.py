"""Monte Carlo simulation of noisy networks: the ground truth for the predictions.

Every repeat presents every input once and draws fresh noise (SCIENCE.md section 1): uncorrelated kinds
independently for every neuron, correlated kinds once per layer, repeat and input. Repeats run in
chunks, vectorised over ``(repeats, inputs, neurons)``, in buffers allocated once per call and reused
for every chunk, so memory is bounded by the chunk whatever the number of repeats.

Draws. Given the noise-free response ``s`` of a neuron (or its weighted input, for injection before the
activation), the two uncorrelated kinds together add ``s xi_MU + xi_AU``, a Gaussian of variance
``s^2 D_MU + D_AU``, independent of everything else; the simulator draws it as one standard normal
times ``sqrt(s^2 D_MU + D_AU)``. This is the same distribution as two separate draws, exactly, for
half the random numbers. The correlated kinds take one draw each per layer and presentation.

Statistics. Each chunk is reduced over its repeats in the run dtype (pairwise summation) into sums of
``d = y - s-bar`` (the deviation from the noise-free output ``s-bar``, computed in the run dtype too,
which keeps the sums well conditioned) and ``d^2``, and the chunk sums are accumulated in float64;
they give the sample mean and the unbiased sample variance. Standard errors: ``sqrt(variance /
repeats)`` for the mean; for the variance, batch means: the repeats are split into ``groups``
independent groups, each group's variance estimate is kept, and the standard error is the standard
deviation of the group estimates over ``sqrt(groups)``. The same is done for the per-layer average
variance, whose neurons are correlated. A chunk is either part of one group or several whole groups.

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
from noiseprop.activations import Activation, Linear, ReLU, Sigmoid, Tanh
from noiseprop.network import Network
from noiseprop.noise import Noise, NoiseSpec, per_layer
from noiseprop.results import LayerStatistics, NoiseStatistics

__all__ = ["add_noise", "sample", "simulate"]

_CHUNK_BYTES = 2**22  # one chunk's widest (repeats, batch, width) tensor: 4 MiB (BENCHMARKS.md)
_CHUNK_REPEATS, _CHUNK_BYTES_MAX = 8, 2**25  # ... but 8 repeats while that stays within 32 MiB


def default_chunk(network: Network, batch: int, dtype: torch.dtype) -> int:
    """Repeats per chunk: the widest ``(repeats, batch, width)`` tensor fits ``_CHUNK_BYTES``, but a
    chunk holds at least ``_CHUNK_REPEATS`` repeats while that tensor fits ``_CHUNK_BYTES_MAX``
    (with many inputs, one-repeat chunks spend more on the float64 sums than on the network)."""
    itemsize = torch.finfo(dtype).bits // 8
    per_repeat = itemsize * batch * max(network.widths)
    return max(1, _CHUNK_BYTES // per_repeat, min(_CHUNK_REPEATS, _CHUNK_BYTES_MAX // per_repeat))


def _chunks(repeats: int, groups: int, chunk: int) -> Iterator[tuple[int, int, bool]]:
    """The chunks of a simulation, as ``(repeats, whole_groups, closes_a_group)``.

    The repeats form ``groups`` consecutive groups whose sizes differ by at most one. A group larger
    than ``chunk`` runs as several chunks (``whole_groups = 0``; the last one closes it); smaller
    groups of equal size run together, as many as fit in ``chunk`` (``whole_groups = k``), so that
    small groups do not make small chunks.
    """
    small, extra = divmod(repeats, groups)
    for size, number in ((small + 1, extra), (small, groups - extra)):
        if number == 0:
            continue
        if size <= chunk:
            together = chunk // size
            for first in range(0, number, together):
                count = min(together, number - first)
                yield count * size, count, False
        else:
            for _ in range(number):
                for start in range(0, size, chunk):
                    count = min(chunk, size - start)
                    yield count, 0, start + count == size


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
        dtype: ``float32`` (default) or ``float64`` for the network pass; each chunk's sums are
            taken in this dtype and accumulated in float64, and the statistics returned are float64.
        device: ``"cpu"`` or a CUDA device.
        covariance: also estimate every layer's ``(batch, N, N)`` covariance.
        chunk: repeats per chunk (default: about 4 MiB for the widest layer's tensor, a few of
            which make a chunk's working set).
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
    work = run.workspace(min(chunk, repeats))
    for count, whole_groups, closes in _chunks(repeats, groups, chunk):
        for index, signal in enumerate(run.noisy_pass(count, work)):
            stats[index].add(signal, run.reference[index][1], work, whole_groups)
        if closes:
            for accumulator in stats:
                accumulator.end_group()
        done += count
        if progress is not None:
            progress(done, repeats)

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

    The outputs have the distribution that :func:`simulate` measures, but the draws are those of
    :func:`add_noise`, one per kind (the draws of noise-aware training, so that a training pass and
    ``sample`` with the same seed give the same numbers); mind the memory (``repeats x batch x
    width`` values per layer).

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
    signal: Tensor | None = None
    for layer, noise_, (weight, bias), (weighted_clean, signal_clean) in zip(
        network.layers, run.noises, run.weights, run.reference
    ):
        shape = (repeats, *signal_clean.shape)
        if signal is None:  # the first layer's weighted input is noise-free: the same every repeat
            weighted = weighted_clean.expand(shape)
        else:
            weighted = torch.addmm(bias, signal.reshape(-1, signal.shape[-1]), weight.T).view(shape)
        if noise_.injection == "before":
            signal = layer.activation(add_noise(weighted, noise_, run.generator))
        elif signal is None:
            signal = add_noise(signal_clean.expand(shape), noise_, run.generator)
        else:
            signal = add_noise(layer.activation(weighted), noise_, run.generator)
    assert signal is not None
    return signal


@dataclass(frozen=True)
class _Setup:
    """What a simulation needs: the resolved noise, the noise-free pass in the run dtype
    (``reference``) and as float64 (``clean``, the base of the reported means), the weights in the
    run dtype, and the random generator."""

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
        weights = [
            (layer.weight.to(device, dtype), layer.bias.to(device, dtype)) for layer in network.layers
        ]
        # the noise-free pass, in the run dtype: the deviations are measured from it
        signal = as_inputs(inputs, network, dtype=dtype, device=device)
        reference = []
        for layer, (weight, bias) in zip(network.layers, weights):
            weighted = torch.addmm(bias, signal, weight.T)
            signal = layer.activation(weighted)
            reference.append((weighted, signal))
        return cls(
            network=network,
            noises=noises,
            clean=[(weighted.double(), signal.double()) for weighted, signal in reference],
            reference=reference,
            weights=weights,
            generator=torch.Generator(device=device).manual_seed(seed),
            dtype=dtype,
            device=device,
        )

    @property
    def batch(self) -> int:
        return int(self.clean[0][1].shape[0])

    def workspace(self, repeats: int) -> _Workspace:
        """Buffers for chunks of up to ``repeats`` repeats."""
        return _Workspace(repeats * self.batch * max(self.network.widths), self.dtype, self.device)

    def noisy_pass(self, count: int, work: _Workspace) -> Iterator[Tensor]:
        return _noisy_pass(
            self.network, self.noises, self.reference, self.weights, count, self.generator, work
        )


class _Workspace:
    """Named flat buffers of ``size`` elements, allocated on first use and reused for every chunk
    (fresh tensors per operation would cost an allocation and its page faults each time)."""

    def __init__(self, size: int, dtype: torch.dtype, device: torch.device) -> None:
        self.size, self.dtype, self.device = size, dtype, device
        self._buffers: dict[str, Tensor] = {}

    def take(self, name: str, shape: tuple[int, ...]) -> Tensor:
        """A contiguous ``shape`` view of buffer ``name`` (its previous content is overwritten)."""
        buffer = self._buffers.get(name)
        if buffer is None:
            buffer = torch.empty(self.size, dtype=self.dtype, device=self.device)
            self._buffers[name] = buffer
        return buffer[: math.prod(shape)].view(shape)


def _noisy_pass(
    network: Network,
    noises: tuple[Noise, ...],
    reference: list[tuple[Tensor, Tensor]],
    weights: list[tuple[Tensor, Tensor]],
    count: int,
    generator: torch.Generator,
    work: _Workspace,
) -> Iterator[Tensor]:
    """``count`` noisy repeats of every input, vectorised over ``(count, batch, width)``: yields
    each layer's noisy output in turn, so that a caller can use it before the next layer runs.

    The layers' outputs alternate between two buffers of ``work``: a yielded tensor is overwritten
    two layers later."""
    signal: Tensor | None = None
    for index, (layer, noise, (weight, bias)) in enumerate(zip(network.layers, noises, weights)):
        weighted_clean, signal_clean = reference[index]
        batch, width = signal_clean.shape
        shape = (count, batch, width)
        out = work.take(f"signal{index % 2}", shape)
        if signal is None:  # the first layer's weighted input is noise-free: the same every repeat
            clean = weighted_clean if noise.injection == "before" else signal_clean
            signal = _noisy(clean.expand(shape), noise, generator, out, work)
        elif noise.injection == "before" and not (noise.MU or noise.MC or noise.is_zero):
            # additive noise on the weighted input: drawn into the output buffer, to which the
            # matrix product then adds itself (one pass over the buffer fewer)
            _additive(out, noise, bias, generator)
            out.view(count * batch, width).addmm_(signal.reshape(count * batch, -1), weight.T)
            signal = out
        else:
            flat = out.view(count * batch, width)
            torch.addmm(bias, signal.reshape(count * batch, -1), weight.T, out=flat)
            if noise.injection == "after":
                out = _activate_(out, layer.activation)
            signal = _noisy(out, noise, generator, out, work)
        if noise.injection == "before":  # in place only in a buffer of our own
            signal = _activate_(signal, layer.activation) if signal is out else layer.activation(signal)
        yield signal


def _activate_(value: Tensor, activation: Activation) -> Tensor:
    """``activation(value)``, in place for the built-in activations (the same floating-point
    operations in the same order, so the same numbers); other activations run out of place."""
    kind = type(activation)
    if kind is Sigmoid:
        if activation.centre:
            value.sub_(activation.centre)
        if activation.gain != 1:
            value.mul_(activation.gain)
        return value.sigmoid_()
    if kind is Tanh:
        if activation.gain != 1:
            value.mul_(activation.gain)
        return value.tanh_()
    if kind is ReLU:
        return value.relu_()
    if kind is Linear:
        if activation.slope != 1:
            value.mul_(activation.slope)
        if activation.offset:
            value.add_(activation.offset)
        return value
    return activation(value)


def _additive(out: Tensor, noise: Noise, bias: Tensor, generator: torch.Generator) -> None:
    """``out = bias + xi_AU + xi_AC``, the additive kinds alone, drawn in the order of :func:`_noisy`
    (the per-neuron normals first, then the per-layer one)."""
    count, batch, _ = out.shape
    if noise.AU:
        out.normal_(generator=generator)
        torch.add(bias, out, alpha=math.sqrt(noise.AU), out=out)
    if noise.AC:
        shared = torch.randn(count, batch, 1, dtype=out.dtype, device=out.device, generator=generator)
        if noise.AU:
            out.add_(shared, alpha=math.sqrt(noise.AC))
        else:
            torch.add(bias, shared, alpha=math.sqrt(noise.AC), out=out)


def _noisy(
    value: Tensor, noise: Noise, generator: torch.Generator, out: Tensor, work: _Workspace
) -> Tensor:
    """``value (1 + xi_MU + xi_MC) + xi_AU + xi_AC`` (SCIENCE.md section 1) written into ``out``,
    which may be ``value`` itself; ``value`` may also be a broadcast ``(batch, width)`` tensor.

    Draws (module docstring): one standard normal per neuron for ``s xi_MU + xi_AU``, scaled by
    ``sqrt(s^2 D_MU + D_AU)``, then one ``(repeats, batch, k)`` draw for the ``k`` correlated kinds.
    The result is ``out = value * (1 + xi_MC) + xi_AC + spread * normal``.
    """
    if noise.is_zero:
        return value
    count, batch, width = out.shape
    uncorrelated = None  # (normal, spread or None for a constant spread)
    if noise.MU or noise.AU:
        # spread from the noise-free value; for a broadcast value, once for all repeats
        source = value[0] if value.stride(0) == 0 else value
        spread = None
        if noise.MU and noise.AU:
            variance = torch.full((), noise.AU, dtype=source.dtype, device=source.device)
            spread = work.take("spread", source.shape)
            torch.addcmul(variance, source, source, value=noise.MU, out=spread).sqrt_()
        elif noise.MU:
            spread = torch.mul(source, math.sqrt(noise.MU), out=work.take("spread", source.shape))
        normal = work.take("normal", out.shape).normal_(generator=generator)
        uncorrelated = (normal, spread)
    kinds = (noise.MC > 0) + (noise.AC > 0)
    if kinds:
        shared = torch.randn(
            count, batch, kinds, dtype=out.dtype, device=out.device, generator=generator
        )
        gain = shared[..., :1].mul_(math.sqrt(noise.MC)).add_(1) if noise.MC else None
        offset = shared[..., -1:].mul_(math.sqrt(noise.AC)) if noise.AC else None
        if gain is not None and offset is not None:
            torch.addcmul(offset, value, gain, out=out)
        elif gain is not None:
            torch.mul(value, gain, out=out)
        else:
            torch.add(value, offset, out=out)
        value = out
    if uncorrelated is not None:
        normal, spread = uncorrelated
        if spread is None:
            torch.add(value, normal, alpha=math.sqrt(noise.AU), out=out)
        else:
            torch.addcmul(value, normal, spread, out=out)
    return out


def add_noise(value: Tensor, noise: Noise, generator: torch.Generator) -> Tensor:
    """``value (1 + xi_MU + xi_MC) + xi_AU + xi_AC`` with fresh draws (SCIENCE.md section 1).

    ``value`` has shape ``(repeats, batch, width)`` (or broadcasts to it); correlated draws have
    shape ``(repeats, batch, 1)``, one per layer and presentation. Out of place and differentiable
    in ``value`` (noise-aware training uses it), one draw per kind; :func:`simulate` draws the same
    distribution in place, with one draw for the two uncorrelated kinds together.
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

    def add(self, signal: Tensor, reference: Tensor, work: _Workspace, whole_groups: int) -> None:
        """Add a chunk ``(count, batch, width)`` of noisy outputs whose noise-free value is
        ``reference``: part of the current group (``whole_groups = 0``), or ``whole_groups`` whole
        groups of equal size. Sums over the chunk are taken in the run dtype, then added in float64."""
        deviation = torch.sub(signal, reference, out=work.take("deviation", signal.shape))
        if self.comoment is not None:
            wide = deviation.to(torch.float64).permute(1, 0, 2)
            self.comoment += torch.matmul(wide.transpose(1, 2), wide)
        if whole_groups == 0:
            self.group_count += deviation.shape[0]
            self.group += deviation.sum(0)
            self.group_sq += deviation.square_().sum(0)
            return
        size = deviation.shape[0] // whole_groups
        by_group = deviation.view(whole_groups, size, *deviation.shape[1:])
        sums = by_group.sum(1)
        self._close(sums, by_group.square_().sum(1), size)

    def end_group(self) -> None:
        """Close the group whose chunks :meth:`add` received one by one."""
        self._close(self.group.unsqueeze(0), self.group_sq.unsqueeze(0), self.group_count)
        self.group_count = 0
        self.group.zero_()
        self.group_sq.zero_()

    def _close(self, sums: Tensor, squares: Tensor, n: int) -> None:
        """Record ``k`` finished groups of ``n`` repeats each, given their ``(k, batch, width)`` sums
        of deviations and of squared deviations (converted to float64 here)."""
        sums, squares = sums.double(), squares.double()
        variance = torch.addcmul(squares, sums, sums, value=-1.0 / n).div_(n - 1)
        self.input_variances.extend(variance.mean(-1).unbind(0))
        self.count += n * sums.shape[0]
        if sums.shape[0] == 1:  # the common case: one group, no reductions needed
            sums, squares, variance = sums[0], squares[0], variance[0]
            self.group_variance_sq.addcmul_(variance, variance)
        else:
            self.group_variance_sq += variance.square().sum(0)
            sums, squares, variance = sums.sum(0), squares.sum(0), variance.sum(0)
        self.group_variance_sum += variance
        self.total += sums
        self.total_sq += squares

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
