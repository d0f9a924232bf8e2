"""Monte Carlo simulation of noisy networks: the ground truth for the predictions.

Every repeat presents every input once and draws fresh noise (docs/THEORY.md section 1): uncorrelated
kinds independently for every neuron, correlated kinds once per layer, repeat and input. Repeats run in
chunks, vectorised over ``(repeats, inputs, neurons)``, in buffers allocated once per call and reused
for every chunk, so memory is bounded by the chunk whatever the number of repeats.

Draws. Given the noise-free response ``s`` of a neuron (or its weighted input, for injection before the
activation), the two uncorrelated kinds together add ``s xi_MU + xi_AU``, a Gaussian of variance
``s^2 D_MU + D_AU``, independent of everything else; the simulator draws it as one standard normal
times ``sqrt(s^2 D_MU + D_AU)``. This is the same distribution as two separate draws, exactly, for
half the random numbers. The correlated kinds take one draw each per layer and presentation.

Statistics. Each chunk is reduced over its repeats in the run dtype (pairwise summation) into sums of
``d = y - s-bar`` (the deviation from the noise-free output ``s-bar``, computed in the run dtype too,
which keeps the sums well conditioned) and ``d^2``, and the chunk sums are accumulated in float64; they
give the sample mean and the unbiased sample variance. Standard errors: ``sqrt(variance / repeats)``
for the mean; for the variance, batch means: the repeats are split into ``groups`` independent groups,
each group's unbiased variance ``v_g`` is estimated, and the standard error is the standard deviation
of the ``v_g`` over ``sqrt(groups)``. The same is done for each input's average of ``v_g`` over the
neurons and for the layer's average (the neurons are correlated, so these need batch means too). A
chunk is either part of one group or several whole groups. Groups that share a chunk get their ``v_g``
in the run dtype, and only the chunk's ``sum_g v_g``, ``sum_g v_g^2`` and per-input averages are added
in float64 (float64 work per chunk, not per group); a group spread over several chunks is summed in
float64 and closed once. The reported means are ``s-bar + mean(d)``, in float64.

Reproducibility: the numbers depend on ``seed``, ``repeats``, ``groups``, ``chunk``, ``dtype`` and the
device type, and on nothing else (the default chunk is a function of the network and batch shape only).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from noiseprop._inputs import as_device, as_dtype, as_inputs
from noiseprop._streaming import Accumulator, Workspace, chunk_repeats, chunks
from noiseprop._validation import MAX_REPEATS, MAX_SEED, check_positive_int
from noiseprop.activations import Activation, Linear, ReLU, Sigmoid, Tanh
from noiseprop.model_montecarlo import sample_model, simulate_model
from noiseprop.network import Network
from noiseprop.noise import Noise, NoiseSpec, check_representable, per_layer
from noiseprop.results import NoiseStatistics
from noiseprop.sites import SiteSelector, add_noise

__all__ = ["sample", "simulate"]


def default_chunk(network: Network, batch: int, dtype: torch.dtype) -> int:
    """Repeats per chunk for a dense network: :func:`noiseprop._streaming.chunk_repeats` for its
    widest layer."""
    return chunk_repeats(batch * max(network.widths), dtype)


def simulate(
    network: Network | nn.Module,
    noise: NoiseSpec | Mapping[str, Noise],
    inputs: Any,
    *,
    sites: SiteSelector = None,
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

    ``network`` may be a dense :class:`~noiseprop.network.Network` (the fast engine of this module)
    or any ``torch.nn.Module``, whose noise acts at its *sites* (:mod:`noiseprop.sites`) and which
    runs in eval mode with the noise attached by :func:`noiseprop.noisy`
    (:mod:`noiseprop.model_montecarlo`); the statistics are then those of every site, named by its
    module path, and of the model's output. One result type either way.

    Args:
        network: a :class:`~noiseprop.network.Network`, or any ``torch.nn.Module``.
        noise: a :class:`~noiseprop.noise.Noise` for every layer (site), one per layer (site), or
            a mapping: ``{layer: Noise}`` for a network, ``{site pattern: Noise}`` for a model
            (see :mod:`noiseprop.noise` and :func:`noiseprop.sites.site_noises`).
        inputs: for a network, ``(batch, input_size)`` inputs, one input vector, or one number fed
            to every input; for a model, a batch ``(batch, ...)`` as the model takes it.
        sites: a model's noise sites (:func:`noiseprop.find_sites`; default every activation
            module). Not for a network, whose sites are its layers.
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

        Any torch model: a convolution whose every output element gets ``D_AU = 0.01``.

        >>> import torch
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU())
        >>> stats = simulate(model, Noise(AU=0.01), torch.rand(4, 1, 5, 5), repeats=2000)
        >>> stats.names, stats[0].neuron_shape
        (('1',), (2, 3, 3))
    """
    repeats = check_positive_int("repeats", repeats, minimum=2, maximum=MAX_REPEATS)
    groups = check_positive_int("groups", groups, minimum=2)
    chunk = None if chunk is None else check_positive_int("chunk", chunk)
    if isinstance(network, nn.Module):
        return simulate_model(
            network,
            noise,
            inputs,
            sites=sites,
            repeats=repeats,
            seed=seed,
            dtype=dtype,
            device=device,
            covariance=covariance,
            chunk=chunk,
            groups=groups,
            progress=progress,
        )
    _no_sites(network, sites)
    run = _Setup.build(network, noise, inputs, seed=seed, dtype=dtype, device=device)
    batch = run.batch
    chunk = default_chunk(network, batch, run.dtype) if chunk is None else chunk
    groups = min(groups, repeats // 2)
    stats = [Accumulator(batch, width, covariance, run.device) for width in network.widths]

    done = 0
    work = run.workspace(min(chunk, repeats))
    for count, whole_groups, closes in chunks(repeats, groups, chunk):
        for index, signal in enumerate(run.noisy_pass(count, work)):
            stats[index].add(signal, run.reference[index][1], work, whole_groups)
        if closes:
            for accumulator in stats:
                accumulator.end_group()
        done += count
        if progress is not None:
            progress(done, repeats)

    layers = tuple(accumulator.result(signal) for accumulator, (_, signal) in zip(stats, run.reference))
    return NoiseStatistics(layers=layers, method="montecarlo", noise=run.noises, repeats=repeats)


def sample(
    network: Network | nn.Module,
    noise: NoiseSpec | Mapping[str, Noise],
    inputs: Any,
    *,
    sites: SiteSelector = None,
    repeats: int,
    seed: int = 0,
    dtype: torch.dtype | str = torch.float32,
    device: str | torch.device = "cpu",
) -> Tensor:
    """Noisy outputs of the last layer: a ``(repeats, batch, out_features)`` tensor.

    For a ``torch.nn.Module`` (noise at its ``sites``): the model's noisy outputs, shape
    ``(repeats, batch, *output_shape)``, in eval mode (:mod:`noiseprop.model_montecarlo`).

    The outputs have the distribution that :func:`simulate` measures, but the draws are those of
    :func:`noiseprop.sites.add_noise`, one per kind (the draws of noise-aware training, so that a
    training pass and ``sample`` with the same seed give the same numbers); mind the memory
    (``repeats x batch x width`` values per layer).

    Example:
        Correlated additive noise on the output layer moves every output by the same amount:

        >>> from noiseprop import Network, Noise
        >>> net = Network.random([4, 6, 3], ["tanh", "linear"], seed=0)
        >>> out = sample(net, {2: Noise(AC=0.1)}, [0.1, 0.2, 0.3, 0.4], repeats=5, dtype="float64")
        >>> bool(((out - out[..., :1]).std(0) < 1e-12).all())
        True
    """
    repeats = check_positive_int("repeats", repeats, maximum=MAX_REPEATS)
    if isinstance(network, nn.Module):
        return sample_model(
            network, noise, inputs, sites=sites, repeats=repeats, seed=seed, dtype=dtype, device=device
        )
    _no_sites(network, sites)
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
            signal = layer.activation(add_noise(weighted, noise_, run.generator, presentation_dims=2))
        elif signal is None:
            signal = add_noise(signal_clean.expand(shape), noise_, run.generator, presentation_dims=2)
        else:
            signal = add_noise(layer.activation(weighted), noise_, run.generator, presentation_dims=2)
    assert signal is not None
    return signal


def _no_sites(network: Any, sites: SiteSelector) -> None:
    if sites is not None and isinstance(network, Network):
        raise ValueError(
            "sites apply to a torch model; a Network's sites are its layers (choose the noisy ones "
            "with a noise mapping {layer: Noise}), or simulate network.to_torch() with sites."
        )


@dataclass(frozen=True)
class _Setup:
    """What a simulation needs: the resolved noise, the noise-free pass in the run dtype
    (``reference``: the deviations are measured from it, and the reported means are it plus the
    mean deviation, in float64), the weights in the run dtype, and the random generator."""

    network: Network
    noises: tuple[Noise, ...]
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
        if not -MAX_SEED <= seed <= MAX_SEED:
            raise ValueError(f"seed must be an integer of at most 2^63 - 1 in size; got {seed!r}.")
        dtype = as_dtype(dtype)
        device = as_device(device)
        noises = per_layer(noise, network.depth)
        check_representable(noises, dtype)
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
            reference=reference,
            weights=weights,
            generator=torch.Generator(device=device).manual_seed(seed),
            dtype=dtype,
            device=device,
        )

    @property
    def batch(self) -> int:
        return int(self.reference[0][1].shape[0])

    def workspace(self, repeats: int) -> Workspace:
        """Buffers for chunks of up to ``repeats`` repeats."""
        return Workspace(repeats * self.batch * max(self.network.widths), self.dtype, self.device)

    def noisy_pass(self, count: int, work: Workspace) -> Iterator[Tensor]:
        return _noisy_pass(
            self.network, self.noises, self.reference, self.weights, count, self.generator, work
        )


def _noisy_pass(
    network: Network,
    noises: tuple[Noise, ...],
    reference: list[tuple[Tensor, Tensor]],
    weights: list[tuple[Tensor, Tensor]],
    count: int,
    generator: torch.Generator,
    work: Workspace,
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
    value: Tensor, noise: Noise, generator: torch.Generator, out: Tensor, work: Workspace
) -> Tensor:
    """``value (1 + xi_MU + xi_MC) + xi_AU + xi_AC`` (docs/THEORY.md section 1) written into
    ``out``, which may be ``value`` itself; ``value`` may also be a broadcast ``(batch, width)`` tensor.

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
