"""Beyond first order: moment propagation, with the correlated draws treated exactly.

The first-order methods linearise every activation at the noise-free signal. Where noise is large
enough to reach the curvature of the activations (where accuracy actually falls) that breaks: the mean
shifts (``E f(x) != f(E x)``), the spread is compressed by saturation, and correlated noise bends the
whole layer together. This method carries the mean and the true variance through the activations.

**Uncorrelated noise averages over many neurons**, so each neuron's weighted input, a sum over many
noisy inputs, is close to Gaussian given the correlated draws. For ``x ~ N(mu, sigma^2)`` the
activation's moments ``E f(x)``, ``E f(x)^2`` and ``E f'(x)`` are taken exactly: closed forms for
linear and ReLU activations, Gauss-Hermite quadrature (:data:`HERMITE_NODES` nodes) otherwise. Between
neurons, statistical linearisation (Stein's lemma to first order in the correlation)::

    Cov(f(x_i), f(x_j)) = E f'(x_i) E f'(x_j) Cov(x_i, x_j)            (i != j)
    Var f(x_i)          = E f(x_i)^2 - (E f(x_i))^2                       (exact)

A layer ``x = W y + b`` maps the moments of ``y`` exactly (``mu_x = W mu_y + b``,
``C_x = W C_y W^T``), and the neuron noise acts on them exactly, given the correlated draws
``c_MC = sqrt(D_MC) z_1`` and ``c_AC = sqrt(D_AC) z_2`` of that layer (docs/THEORY.md section 1)::

    E y   = E s (1 + c_MC) + c_AC
    Cov y = (1 + c_MC)^2 Cov s + diag(D_MU E[s^2] + D_AU)

on the outputs ``s`` (injection after the activation) or on the weighted inputs (before it).

**Correlated noise is one draw per layer and presentation**: it does not average away, and no
Gaussian captures how a saturating layer bends under it. It is low-dimensional (one number per layer
and correlated kind), so it is integrated exactly: the prediction is conditioned on the draws ``z``
at the nodes of a quadrature (:func:`quadrature`: Gauss-Hermite for one or two dimensions, scrambled
Sobol points mapped to normals for more), and the conditional
moments are combined by the laws of total expectation and variance::

    E y   = sum_q w_q mu_q
    Cov y = sum_q w_q (C_q + mu_q mu_q^T) - E y E y^T

With correlated noise only, the network is deterministic given ``z`` and the prediction is exact up
to quadrature error; with uncorrelated noise only it costs one moment pass.

Where it still fails: a neuron whose weighted input is not close to Gaussian given the correlated
draws (few inputs, e.g. a narrow first layer fed by a few noisy neurons, or one noisy neuron
dominating), strong correlations between the weighted inputs of neurons whose activations are far
from linear (the linearised cross-covariance), and many layers of correlated noise with few points.
"""

from __future__ import annotations

import functools
import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from noiseprop.activations import Activation, Linear, ReLU
from noiseprop.network import Network
from noiseprop.noise import Noise
from noiseprop.results import LayerStatistics

__all__ = [
    "HERMITE_NODES",
    "Conditional",
    "conditional_moments",
    "conditioned_pairs",
    "default_nodes",
    "gaussian_moments",
    "moments",
    "quadrature",
    "resolve_nodes",
    "uses_sobol",
]

HERMITE_NODES = 64
"""Gauss-Hermite nodes for the moments of a smooth activation of a Gaussian input."""
_MAX_NODES_PER_DIMENSION = 32
_WORKING_SET = 2**25
"""Bytes of working tensors per chunk of inputs that the moment recursion aims for."""


def gaussian_moments(
    activation: Activation, mean: Tensor, variance: Tensor, *, curvature: bool = False
) -> tuple[Tensor, ...]:
    """``(E f(x), E f(x)^2, E f'(x))`` for ``x ~ N(mean, variance)``, elementwise, and with
    ``curvature`` also ``E f''(x) = E[f'(x) (x - mean)] / variance`` (Stein's lemma; 0 where the
    variance is 0 or ``f`` is affine).

    Closed forms for :class:`~noiseprop.activations.Linear` (``f = a x + c``) and
    :class:`~noiseprop.activations.ReLU` (with ``t = mean / sd``, ``Phi``, ``phi`` the standard normal
    distribution and density: ``E f = mean Phi(t) + sd phi(t)``,
    ``E f^2 = (mean^2 + variance) Phi(t) + mean sd phi(t)``, ``E f' = Phi(t)``); Gauss-Hermite
    quadrature with :data:`HERMITE_NODES` nodes for any other activation. A zero variance gives
    ``f(mean)``, ``f(mean)^2`` and ``f'(mean)``.

    Example:
        >>> import torch
        >>> from noiseprop.activations import Sigmoid
        >>> first, second, slope = gaussian_moments(Sigmoid(), torch.tensor([0.0]), torch.tensor([1.0]))
        >>> round(float(first), 6), round(float(slope), 6)  # 1/2 by symmetry; slope: trapezoid rule
        (0.5, 0.206621)
    """
    variance = variance.clamp_min(0)
    extra: tuple[Tensor, ...] = ()
    if isinstance(activation, Linear):
        slope, offset = activation.slope, activation.offset
        first = slope * mean + offset
        extra = (torch.zeros_like(mean),) if curvature else ()
        return first, first.square() + slope**2 * variance, torch.full_like(mean, slope), *extra
    if not bool((variance > 0).any()):  # no spread: the activation at the mean
        value = activation(mean)
        extra = (torch.zeros_like(mean),) if curvature else ()
        return value, value.square(), activation.derivative(mean), *extra
    if isinstance(activation, ReLU):
        sd = variance.sqrt()
        safe = torch.where(sd > 0, sd, torch.ones_like(sd))
        t = mean / safe
        cdf = torch.special.ndtr(t)
        pdf = torch.exp(-0.5 * t.square()) / math.sqrt(2 * math.pi)
        first = torch.where(sd > 0, mean * cdf + sd * pdf, mean.clamp_min(0))
        second = torch.where(
            sd > 0, (mean.square() + variance) * cdf + mean * sd * pdf, mean.clamp_min(0).square()
        )
        slope = torch.where(sd > 0, cdf, (mean > 0).to(mean.dtype))
        if curvature:  # E delta(x) = phi(t) / sd
            extra = (torch.where(sd > 0, pdf / safe, torch.zeros_like(sd)),)
        return first, second, slope, *extra
    nodes, weights = _hermite(mean.dtype, mean.device)
    sd = variance.sqrt().unsqueeze(-1)
    x = mean.unsqueeze(-1) + sd * nodes  # (..., H)
    values = activation(x)
    first = (values * weights).sum(-1)
    second = (values.square() * weights).sum(-1)
    derivative = activation.derivative(x)
    slope = (derivative * weights).sum(-1)
    if curvature:  # E[f'(x) (x - m)] / v = E[f'(x) z] / sd
        safe = torch.where(sd > 0, sd, torch.ones_like(sd))
        extra = (
            torch.where(sd[..., 0] > 0, (derivative * nodes * weights).sum(-1) / safe[..., 0], 0.0),
        )
    return first, second, slope, *extra


@functools.lru_cache(maxsize=8)
def _hermite(dtype: torch.dtype, device: torch.device) -> tuple[Tensor, Tensor]:
    """Nodes ``z_k`` and weights ``w_k`` with ``E g(z) ~ sum_k w_k g(z_k)`` for standard normal z
    (computed once per dtype and device: NumPy's ``hermgauss`` costs about 1 ms a call)."""
    nodes, weights = np.polynomial.hermite.hermgauss(HERMITE_NODES)
    return (
        torch.as_tensor(nodes * math.sqrt(2), dtype=dtype, device=device),
        torch.as_tensor(weights / math.sqrt(math.pi), dtype=dtype, device=device),
    )


@dataclass(frozen=True)
class Conditional:
    """The moments of every layer given the correlated draws, at each node of the quadrature.

    Attributes:
        weights: ``(Q,)`` quadrature weights (they sum to 1).
        draws: ``(Q, d)`` standard normal draws ``z`` of the ``d`` correlated (layer, kind) pairs.
        means: per layer, ``(Q, batch, N)`` conditional means.
        covariances: per layer, ``(Q, batch, N, N)`` conditional covariances, or ``None`` where only
            the variances were needed.
        variances: per layer, ``(Q, batch, N)`` conditional variances.
    """

    weights: Tensor
    draws: Tensor
    means: list[Tensor]
    covariances: list[Tensor | None]
    variances: list[Tensor]


def _correlated(network: Network, noises: tuple[Noise, ...]) -> list[tuple[int, str]]:
    """The (layer, kind) pairs of correlated noise to condition on: the dimensions of the draws.

    A draw is conditioned on when a nonlinear activation bends it later (a later layer's, or its own
    layer's with injection before it). One that only passes through affine maps stays Gaussian and
    is carried exactly by its moments (``D_AC 11^T``, ``D_MC (C + m m^T)``). Without uncorrelated
    noise, conditioning on every correlated draw but the output layer's leaves a deterministic
    network at each node (means only, no covariance), which is cheaper than carrying the others:
    that is done while it keeps the grid at two dimensions or fewer.
    """
    bent_pairs, other_pairs = [], []
    for index, (layer, noise) in enumerate(zip(network.layers, noises)):
        later = network.layers[index + 1 :]
        bent = any(not step.activation.linear for step in later) or (
            noise.injection == "before" and not layer.activation.linear
        )
        for kind in ("MC", "AC"):
            if noise.has(kind):
                (bent_pairs if bent else other_pairs).append((index, kind))
    uncorrelated = any(noise.has("AU") or noise.has("MU") for noise in noises)
    others = [pair for pair in other_pairs if pair[0] < network.depth - 1]
    if bent_pairs and not uncorrelated and len(bent_pairs) + len(others) <= 2:
        return sorted(bent_pairs + others)
    return bent_pairs


def conditioned_pairs(
    network: Network, noises: tuple[Noise, ...], nodes: int | None
) -> list[tuple[int, str]]:
    """The draws the method conditions on: :func:`_correlated`, or none with ``nodes=1`` (every
    correlated draw then carried by its moments, one pass)."""
    return [] if nodes == 1 else _correlated(network, noises)


def default_nodes(dimension: int, smooth: bool = False) -> int:
    """The quadrature size used when none is given: for ``dimension`` correlated draws, a
    Gauss-Hermite rule of 32 nodes for one, a 12 x 12 grid for two, 1,024 Sobol points for more (a
    product grid of few nodes per dimension converges too slowly through saturating layers).
    ``smooth``: uncorrelated noise of at least a tenth of the correlated intensity smooths the
    conditional moments as functions of the draws (and makes every node cost a covariance pass):
    16 nodes for one, a 6 x 6 grid for two (on the shipped network, with all four kinds at 0.1 or
    at 1, within 0.1 % of 1,024 nodes)."""
    if smooth:
        return {0: 1, 1: 16, 2: 36}.get(dimension, 1024)
    return {0: 1, 1: 32, 2: 144}.get(dimension, 1024)


def resolve_nodes(noises: tuple[Noise, ...], dimension: int, nodes: int | None) -> int:
    """``nodes``, or :func:`default_nodes` for these noises: smooth where the largest
    uncorrelated intensity of a layer (``AU + MU``) is at least a tenth of the largest correlated
    one (``AC + MC``)."""
    if nodes is not None:
        return nodes
    uncorrelated = max((float(noise.AU) + float(noise.MU) for noise in noises), default=0.0)
    correlated = max((float(noise.AC) + float(noise.MC) for noise in noises), default=0.0)
    return default_nodes(dimension, smooth=uncorrelated >= 0.1 * correlated > 0)


def uses_sobol(dimension: int, nodes: int | None) -> bool:
    """Whether :func:`quadrature` takes Sobol points (else a product grid) for these sizes."""
    if dimension == 0:
        return False
    nodes = default_nodes(dimension) if nodes is None else nodes
    per_dimension = min(_MAX_NODES_PER_DIMENSION, int(round(nodes ** (1 / dimension), 9)))
    return not (per_dimension >= 3 and dimension <= 2)


def quadrature(dimension: int, nodes: int | None, seed: int) -> tuple[Tensor, Tensor]:
    """``(z, w)``: ``(Q, dimension)`` standard normal nodes and ``(Q,)`` weights summing to 1.

    ``nodes`` (default :func:`default_nodes`) is the budget. A Gauss-Hermite product grid of
    ``k = floor(nodes^(1/d))`` nodes per dimension (at most 32) when ``k >= 3`` and ``d <= 2``;
    otherwise ``nodes`` scrambled Sobol points (seeded) through ``Phi^-1``, equal weights.
    ``dimension = 0`` is one node ``z = ()`` of weight 1.
    """
    nodes = default_nodes(dimension) if nodes is None else nodes
    if dimension == 0:
        return torch.zeros(1, 0, dtype=torch.float64), torch.ones(1, dtype=torch.float64)
    per_dimension = min(_MAX_NODES_PER_DIMENSION, int(round(nodes ** (1 / dimension), 9)))
    if not uses_sobol(dimension, nodes):
        points, weights = np.polynomial.hermite.hermgauss(per_dimension)
        points, weights = points * math.sqrt(2), weights / math.sqrt(math.pi)
        grids = np.meshgrid(*[points] * dimension, indexing="ij")
        weight_grids = np.meshgrid(*[weights] * dimension, indexing="ij")
        z = np.stack([grid.ravel() for grid in grids], axis=-1)
        w = np.prod(np.stack([grid.ravel() for grid in weight_grids], axis=-1), axis=-1)
        return torch.as_tensor(z), torch.as_tensor(w / w.sum())
    engine = torch.quasirandom.SobolEngine(dimension, scramble=True, seed=seed)
    uniform = engine.draw(nodes, dtype=torch.float64) + 2.0**-31
    return torch.special.ndtri(uniform), torch.full((nodes,), 1 / nodes, dtype=torch.float64)


def bytes_per_input(
    network: Network,
    noises: tuple[Noise, ...],
    nodes: int,
    covariance: bool = True,
    pairs: list[tuple[int, str]] | None = None,
) -> int:
    """Working memory of one input at ``nodes`` quadrature nodes: ``(nodes, N, N)`` covariances
    where some noise is carried by its moments, only ``(nodes, N)`` means where every noise is a
    conditioned correlated draw (``pairs``, default :func:`_correlated`; the network is then
    deterministic at each node). Without ``covariance`` the output layer's own noise needs no
    covariance (only its variance)."""
    conditioned = set(_correlated(network, noises) if pairs is None else pairs)
    feeding = noises if covariance else noises[:-1]
    moments_needed = any(
        noise.has("AU")
        or noise.has("MU")
        or any(noise.has(kind) and (index, kind) not in conditioned for kind in ("AC", "MC"))
        for index, noise in enumerate(feeding)
    )
    widest = max(network.widths)
    return 8 * 6 * nodes * widest * (widest if moments_needed else 1)


def conditional_moments(
    network: Network,
    noises: tuple[Noise, ...],
    x: Tensor,
    *,
    nodes: int | None,
    seed: int,
    full: bool,
    output_covariance: bool = False,
    pairs: list[tuple[int, str]] | None = None,
) -> Conditional:
    """The moment recursion of the module docstring at every node of the correlated draws.

    ``full``: keep every layer's conditional covariance (else only the variances are kept, and the
    last layer's covariance is not formed: ``diag(W C W^T)``). ``output_covariance``: form and keep
    the last layer's covariance all the same (what the accuracy prediction needs). ``pairs``: the
    (layer, kind) draws to condition on, if not those of :func:`conditioned_pairs`.
    """
    pairs = conditioned_pairs(network, noises, nodes) if pairs is None else pairs
    nodes = resolve_nodes(noises, len(pairs), nodes)
    draws, weights = quadrature(len(pairs), nodes, seed)
    draws, weights = draws.to(x.device), weights.to(x.device)
    shift = {pair: draws[:, column] for column, pair in enumerate(pairs)}  # (Q,) per pair
    # (1, B, N_in): the inputs are noise-free, and every node shares the layers before the first
    # conditioned draw; the draw broadcasts the node dimension to Q
    mean = x.unsqueeze(0)
    cov: Tensor | None = None
    diagonal: Tensor | None = None  # C = diag(diagonal): the first noisy layer, no shared noise
    means, covariances, variances = [], [], []
    last = network.depth - 1
    for index, (layer, noise) in enumerate(zip(network.layers, noises)):
        weight = layer.weight.to(x.device)
        bias = layer.bias.to(x.device)
        mean_x = torch.matmul(mean, weight.T) + bias
        keep = full or output_covariance or index < last
        if diagonal is not None:  # W diag(v) W^T: one matrix product over the nodes and inputs
            if keep:
                scaled = weight * diagonal.unsqueeze(-2)  # (.., N, N_in)
                cov_x = (scaled.reshape(-1, weight.shape[1]) @ weight.T).view(*scaled.shape[:-1], -1)
                var_x = cov_x.diagonal(dim1=-2, dim2=-1)
            else:
                cov_x, var_x = None, diagonal @ weight.square().T
        elif cov is None:
            cov_x = None
            var_x = torch.zeros_like(mean_x)
        elif keep:
            cov_x = torch.matmul(torch.matmul(weight, cov), weight.T)
            var_x = cov_x.diagonal(dim1=-2, dim2=-1)
        else:  # diag(W C W^T) = colsum(C W^T * W^T), C W^T as one matrix product
            fan_in = cov.shape[-1]
            right = (cov.reshape(-1, fan_in) @ weight.T).view(*cov.shape[:-1], -1)
            cov_x, var_x = None, (right * weight.T).sum(-2)
        draws_here = _Draws(
            gain=1 + math.sqrt(noise.MC) * shift[(index, "MC")] if (index, "MC") in shift else None,
            offset=math.sqrt(noise.AC) * shift[(index, "AC")] if (index, "AC") in shift else None,
            MC=0.0 if (index, "MC") in shift else noise.MC,
            AC=0.0 if (index, "AC") in shift else noise.AC,
        )
        f = layer.activation
        stored = full or (output_covariance and index == last)
        # noise-free so far and no shared noise here: this layer's covariance is diagonal, carried
        # as its variances (formed only where it is stored)
        diagonal_here = cov_x is None and not draws_here.MC and not draws_here.AC
        formed = keep and (stored or not diagonal_here)
        if noise.injection == "before":
            mean_x, cov_x, var_x = _inject(mean_x, cov_x, var_x, noise, draws_here, formed)
            first, second, slope, curvature = gaussian_moments(f, mean_x, var_x, curvature=True)
            mean, cov, var = _activate(first, second, slope, curvature, cov_x, formed)
        else:
            first, second, slope, curvature = gaussian_moments(f, mean_x, var_x, curvature=True)
            mean, cov, var = _activate(first, second, slope, curvature, cov_x, formed)
            mean, cov, var = _inject(mean, cov, var, noise, draws_here, formed)
        diagonal = var if diagonal_here and bool(noise.AU or noise.MU) else None
        if diagonal is not None and len(diagonal) > 1 and bool((diagonal == diagonal[:1]).all()):
            diagonal = diagonal[:1]  # the same at every node: one matrix product, not one per node
        means.append(mean)
        covariances.append(cov if stored else None)  # None also: no uncorrelated noise yet
        variances.append(var)
    nodes_count = len(weights)
    return Conditional(
        weights,
        draws,
        [mean.expand(nodes_count, *mean.shape[1:]) for mean in means],
        [None if cov is None else cov.expand(nodes_count, *cov.shape[1:]) for cov in covariances],
        [var.expand(nodes_count, *var.shape[1:]) for var in variances],
    )


@dataclass(frozen=True)
class _Draws:
    """A layer's correlated noise: conditioned on (``gain = 1 + c_MC``, ``offset = c_AC``, ``(Q,)``
    each, or ``None``), or carried exactly by its moments (intensities ``MC``, ``AC``; 0 when
    conditioned on)."""

    gain: Tensor | None
    offset: Tensor | None
    MC: float
    AC: float


def _activate(
    first: Tensor, second: Tensor, slope: Tensor, curvature: Tensor, cov_x: Tensor | None, keep: bool
) -> tuple[Tensor, Tensor | None, Tensor]:
    """Moments of ``s = f(x)``: the mean, the exact variance and, between neurons, the first two
    terms of the Hermite expansion of a bivariate Gaussian (Mehler's formula)::

        Cov(f(x_i), f(x_j)) = E f'_i E f'_j C_ij + E f''_i E f''_j C_ij^2 / 2 + ...
    """
    variance = (second - first.square()).clamp_min(0)
    if not keep or cov_x is None:
        return first, None, variance
    # C_ij (g_i g_j + h_i h_j C_ij / 2): two outer products and two passes over C
    half = curvature * math.sqrt(0.5)
    cov = torch.addcmul(
        slope.unsqueeze(-1) * slope.unsqueeze(-2), half.unsqueeze(-1) * half.unsqueeze(-2), cov_x
    ).mul_(cov_x)
    cov.diagonal(dim1=-2, dim2=-1).copy_(variance)
    return first, cov, variance


def _inject(
    mean: Tensor, cov: Tensor | None, var: Tensor, noise: Noise, draws: _Draws, keep: bool
) -> tuple[Tensor, Tensor | None, Tensor]:
    """The neuron noise given the conditioned draws (``c``, per node) and with the others'
    moments (``D``): ``E y = m (1 + c_MC) + c_AC`` and::

        Cov y = (1 + c_MC)^2 [(1 + D_MC) C + D_MC m m^T] + D_AC 11^T + diag(D_MU E[v^2] + D_AU)

    with ``E[v^2] = C_ii + m_i^2`` the second moment of the signal ``v`` before the noise (only one
    of ``c_MC``, ``D_MC`` is nonzero). ``cov`` is consumed: its diagonal may be overwritten."""
    # the uncorrelated kinds, per neuron; without MU the same for every node (leading dim 1)
    own = (
        noise.MU * (var + mean.square()) + noise.AU
        if noise.MU
        else mean.new_full((1, *mean.shape[1:]), float(noise.AU))
    )
    if draws.gain is not None:
        scale = draws.gain.view(-1, *(1,) * (mean.ndim - 1))
        mean = mean * scale
        var = var * scale.square()
        if cov is not None:
            cov = cov * scale.unsqueeze(-1).square()
    if draws.MC:
        var = var * (1 + draws.MC) + draws.MC * mean.square()
    var = var + own + draws.AC
    if draws.offset is not None:
        mean = mean + draws.offset.view(-1, *(1,) * (mean.ndim - 1))
    if not keep:
        return mean, None, var
    shared = draws.MC or draws.AC
    uncorrelated = bool(noise.MU or noise.AU)
    if cov is None and not shared and not uncorrelated:
        return mean, None, var
    if cov is None:  # leading dim 1: the nodes share it until something node-dependent enters
        cov = mean.new_zeros(1, *mean.shape[1:], mean.shape[-1])
    if draws.MC:
        centre = mean if draws.offset is None else mean - draws.offset.view(-1, *(1,) * (mean.ndim - 1))
        cov = cov * (1 + draws.MC) + draws.MC * centre.unsqueeze(-1) * centre.unsqueeze(-2)
    if draws.AC:
        cov = cov + draws.AC
    if uncorrelated:  # diag(own) added in place (``cov`` is the caller's to give up), full shape
        shape = torch.broadcast_shapes(cov.shape[:-1], own.shape)
        if cov.shape[:-1] != shape:
            cov = cov.expand(*shape, cov.shape[-1]).clone()
        cov.diagonal(dim1=-2, dim2=-1).add_(own)
    return mean, cov, var


def moments(
    network: Network,
    noises: tuple[Noise, ...],
    x: Tensor,
    *,
    covariance: bool,
    nodes: int | None,
    seed: int,
    max_memory: int,
) -> list[LayerStatistics]:
    """Every layer's mean, variance (and covariance) by the method of the module docstring, the
    inputs in chunks whose working set fits ``max_memory`` bytes."""
    pairs = conditioned_pairs(network, noises, nodes)
    nodes = resolve_nodes(noises, len(pairs), nodes)
    count = len(quadrature(len(pairs), nodes, seed)[1])
    per_input = bytes_per_input(network, noises, count, covariance, pairs)
    # a working set that stays in cache is faster than one that fills max_memory (measured: 3x)
    chunk = max(1, min(x.shape[0], max_memory // per_input, _WORKING_SET // per_input))
    parts = [
        _combine(conditional_moments(network, noises, x[start : start + chunk], nodes=nodes,
                                     seed=seed, full=covariance, pairs=pairs), covariance)
        for start in range(0, x.shape[0], chunk)
    ]  # fmt: skip
    layers = []
    for index in range(network.depth):
        pieces = [part[index] for part in parts]
        layers.append(
            LayerStatistics(
                mean=torch.cat([piece.mean for piece in pieces]),
                variance=torch.cat([piece.variance for piece in pieces]),
                covariance=torch.cat([piece.covariance for piece in pieces]) if covariance else None,
            )
        )
    _check_gaussian_inputs(network, noises, layers)
    return layers


FEW_INPUTS = 5.0
"""Below this effective number of noisy inputs a weighted input is not taken to be Gaussian."""
WIDE_SPREAD = 0.1
"""Standard deviation of a weighted input from which a sigmoid or tanh of gain 1 bends the noise."""


def _check_gaussian_inputs(
    network: Network, noises: tuple[Noise, ...], layers: list[LayerStatistics]
) -> None:
    """Warn where the method's assumption is doubtful: a nonlinear layer whose inputs carry noise
    bent by the previous activation (not Gaussian) and whose weighted input sums the noise of few
    of them, ``n_eff = (sum_j w_j^2 v_j)^2 / sum_j w_j^4 v_j^2 < FEW_INPUTS`` (``v_j`` the input
    variances), with a spread ``sqrt(sum_j w_j^2 v_j) > WIDE_SPREAD`` that reaches the curvature.
    The prediction is still returned; the warning says to check it by simulation."""
    for index in range(1, network.depth):
        layer, previous = network.layers[index], network.layers[index - 1]
        bent = not previous.activation.linear and (
            any(not noise.is_zero for noise in noises[: index - 1])
            or (noises[index - 1].injection == "before" and not noises[index - 1].is_zero)
        )
        if layer.activation.linear or not bent:
            continue
        variance = layers[index - 1].variance.to(torch.float64)
        weight = layer.weight.to(variance)
        spread = variance @ weight.square().T  # (B, N): sum_j w_j^2 v_j
        fourth = variance.square() @ weight.pow(4).T
        wide = spread > WIDE_SPREAD**2
        ratio = spread.square() / fourth.clamp_min(1e-300)
        effective = torch.where(wide & (fourth > 0), ratio, math.inf)
        fewest = float(effective.min()) if effective.numel() else math.inf
        if fewest < FEW_INPUTS:
            warnings.warn(
                f"moments method: the weighted inputs of layer {index + 1} sum the noise of as few "
                f"as {fewest:.1f} effective inputs, with a spread above {WIDE_SPREAD:g}; they are "
                "not close to Gaussian there, so the prediction may be off: check it with "
                "noiseprop.simulate (docs/THEORY.md section 4).",
                stacklevel=4,
            )


def _combine(conditional: Conditional, covariance: bool) -> list[LayerStatistics]:
    """The laws of total expectation and variance over the quadrature nodes."""
    weights = conditional.weights
    layers = []
    for mean, cov, var in zip(conditional.means, conditional.covariances, conditional.variances):
        w = weights.view(-1, *(1,) * (mean.ndim - 1))
        total_mean = (w * mean).sum(0)
        centred = mean - total_mean
        variance = (w * (var + centred.square())).sum(0)
        matrix = None
        if covariance:
            inner = torch.diag_embed(var) if cov is None else cov
            outer = centred.unsqueeze(-1) * centred.unsqueeze(-2)
            matrix = (w.unsqueeze(-1) * (inner + outer)).sum(0)
        layers.append(LayerStatistics(mean=total_mean, variance=variance, covariance=matrix))
    return layers
