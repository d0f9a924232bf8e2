"""The first-order covariance recursion (docs/THEORY.md section 3), carried in factored form.

A layer's first-order noise covariance ``C`` is never formed unless it is asked for (or would be
smaller than its factors). It is held as three parts whose sum it is::

    C = diag(d) + sum_k diag(s_k) F_k^T diag(w_k) F_k diag(s_k) + diag(g) W diag(e) W^T diag(g)
        (diagonal)  (shared sources)                            (pending diagonal)

* ``d`` ``(b, N)``: the noise injected independently in each neuron (``D_AU``, and ``D_MU`` times
  the neuron's second moment);
* the shared sources (:class:`_Shared`): ``F_k`` ``(b, r_k, N)``, one row per source of noise that the
  neurons share (``sqrt(D_AC) 1`` and ``sqrt(D_MC) m``, and the pending diagonals of earlier layers
  once they are seen through two layers), each seen through every later layer; its weights ``w_k``
  ``(b, r_k)`` and neuron scales ``s_k`` ``(b, N)`` are kept apart from the rows, so that slopes and
  ``1 + D_MC`` cost ``O(N)`` per input, not a pass over the rows;
* the pending part: the previous layer's diagonal ``e`` seen through this layer's weights ``W``
  ``(N, N_in)`` and slopes ``g`` ``(b, N)``, held as those three factors. Its variance is
  ``g^2 (W^2 e)``, one matrix product over the whole batch; only the next layer turns it into the
  rows ``W diag(g) W'^T`` (weights ``e``), a product of ``N' x N x N_in`` per input.

Through a layer ``W'`` with slopes ``g'`` (injection after the activation)::

    d -> pending (W', e = d)      F_k -> F_k diag(s_k) W'^T      pending -> rows      then g'

and the injection ``inject(C, m)`` (docs/THEORY.md section 1) scales every part by ``1 + D_MC``,
sets the new diagonal ``d = D_MU (v + m^2) + D_AU`` (``v`` the variance before injection) and adds
the sources ``sqrt(D_AC) 1`` and ``sqrt(D_MC) m``. Every layer's variance is the sum of the parts'
diagonals, ``d + g^2 (W^2 e) + sum_k s_k^2 (w_k^T F_k^2)``: ``O(N N_in)`` per input and source row
where the full recursion spends ``O(N N_in^2)`` on ``W C W^T``.

The rows grow by one layer's width at each step; when they would outnumber the layer's neurons (the
factors then hold more numbers than ``C`` itself), and whenever a layer's covariance is asked for,
``C`` is formed and the recursion goes on in full, ``C' = diag(g') inject(W' C W'^T) diag(g')``. The
last layer then needs only ``diag(W' C W'^T)``. On a 784-100-100-10 network the full matrix is never
formed: the only products per input are ``W3 diag(g2)`` times ``W2`` (``10 x 100 x 100``) and a few
rows through ``W2`` and ``W3``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor

from noiseprop.network import Network
from noiseprop.noise import Noise
from noiseprop.results import LayerStatistics

__all__ = ["covariance_recursion", "inject"]

CACHE_BYTES = 2**22
"""Working set of one chunk of inputs: the largest per-chunk tensor of the recursion fits 4 MiB
(BENCHMARKS.md: chunks that fill ``max_memory`` are slower per input)."""


def inject(cov: Tensor, level: Tensor, noise: Noise) -> Tensor:
    """``inject(C, m) = C (1 + D_MC) + diag(diag(C)) D_MU + diag(D_AU + m^2 D_MU) + D_AC 11^T
    + D_MC m m^T`` for a batch ``C: (b, N, N)``, ``m: (b, N)`` (docs/THEORY.md section 1)."""
    out = cov * (1 + noise.MC) if noise.MC else cov.clone()
    diagonal = out.diagonal(dim1=-2, dim2=-1)
    if noise.MU:
        diagonal += noise.MU * (cov.diagonal(dim1=-2, dim2=-1) + level.square())
    if noise.AU:
        diagonal += noise.AU
    if noise.AC:
        out += noise.AC
    if noise.MC:
        out += noise.MC * level.unsqueeze(-1) * level.unsqueeze(-2)
    return out


def inject_variance(variance: Tensor, level: Tensor, noise: Noise) -> Tensor:
    """The diagonal of ``inject``: ``v (1 + D_MU + D_MC) + m^2 (D_MU + D_MC) + D_AU + D_AC``."""
    multiplicative = noise.MU + noise.MC
    return variance * (1 + multiplicative) + level.square() * multiplicative + noise.AU + noise.AC


# ------------------------------------------------------------------------------------- the plan
@dataclass(frozen=True)
class _Step:
    """How one layer is propagated: in factored form, or in full (``densify``: form the previous
    layer's ``C`` first); ``keep``: form and return this layer's ``C``."""

    full: bool
    densify: bool
    keep: bool
    elements: int  # numbers per input of the largest tensor of the step


def plan(network: Network, noises: tuple[Noise, ...], keep: frozenset[int]) -> list[_Step]:
    """The steps of the recursion: a function of the widths, the kinds of noise and ``keep`` only
    (never of the inputs), so that every chunk of inputs takes the same route."""
    steps = []
    rows, pending, diagonal, full = 0, 0, False, False  # the factors' sizes after each layer
    last = network.depth - 1
    for index, (layer, noise) in enumerate(zip(network.layers, noises)):
        width, fan_in = layer.out_features, layer.in_features
        densify = not full and index < last and rows + pending > width  # factors outnumber C
        if full or densify:
            elements = max(fan_in * fan_in, fan_in * width, width * width)
            if densify:
                elements = max(elements, fan_in * pending)
        else:
            rows += pending
            elements = max(rows * width, (width * fan_in + width * pending) if pending else 0)
            rows += (noise.AC > 0) + (noise.MC > 0)
            pending = fan_in if diagonal else 0
            diagonal = noise.AU > 0 or noise.MU > 0
            if index in keep:
                elements = max(elements, width * width + width * fan_in)
        steps.append(_Step(full=full or densify, densify=densify, keep=index in keep, elements=elements))
        full = full or densify or index in keep
    return steps


# -------------------------------------------------------------------------------- factored state
@dataclass(frozen=True)
class _Shared:
    """Noise sources shared by the neurons: ``diag(s) F^T diag(w) F diag(s)``, ``F`` ``(b, r, N)``
    (one row per source, in any memory layout), ``w`` ``(b, r)`` and ``s`` ``(b, N)``; ``None``
    stands for ones. The weights and scales are kept apart from ``F`` so that scaling a layer's
    neurons costs ``O(N)`` per input, not a pass over ``F``."""

    rows: Tensor
    weights: Tensor | None = None
    scale: Tensor | None = None

    def through(self, weight: Tensor) -> _Shared:
        """``F diag(s) W'^T``: the sources seen by the next layer's weighted inputs."""
        rows = self.rows if self.scale is None else self.rows * self.scale.unsqueeze(1)
        return _Shared(torch.matmul(rows, weight.T), self.weights)

    def variance(self) -> Tensor:
        """``s^2 (w^T F^2)``."""
        square = self.rows.square()
        if self.weights is None:
            variance = square.sum(1)
        else:
            variance = torch.bmm(self.weights.unsqueeze(1), square).squeeze(1)
        return variance if self.scale is None else variance * self.scale.square()

    def scaled(self, factor: Tensor | float) -> _Shared:
        """``diag(a) shared diag(a)`` for ``a`` ``(b, N)``, or ``a^2 shared`` for a number ``a``."""
        if isinstance(factor, float):
            if self.weights is None:
                weights = self.rows.new_full(self.rows.shape[:2], factor * factor)
            else:
                weights = self.weights * (factor * factor)
            return replace(self, weights=weights)
        return replace(self, scale=factor if self.scale is None else self.scale * factor)

    def dense(self) -> Tensor:
        """``diag(s) F^T diag(w) F diag(s)`` itself, ``(b, N, N)``."""
        rows = self.rows if self.weights is None else self.rows * self.weights.sqrt().unsqueeze(-1)
        if self.scale is not None:
            rows = rows * self.scale.unsqueeze(1)
        return torch.bmm(rows.transpose(1, 2), rows)


@dataclass(frozen=True)
class _Factors:
    """``C = diag(d) + sum_k shared_k + diag(g) W diag(e) W^T diag(g)``; a part that is zero is
    ``None`` (or absent, for the shared parts)."""

    diagonal: Tensor | None = None  # d (b, N)
    shared: tuple[_Shared, ...] = ()
    weight: Tensor | None = None  # W (N, N_in) of the pending part
    spread: Tensor | None = None  # e (b, N_in)
    slope: Tensor | None = None  # g (b, N); None: ones

    def through(self, weight: Tensor) -> _Factors:
        """The weighted input's covariance ``W' C W'^T``: the shared sources through ``W'``, the
        pending part turned into sources ``W diag(g) W'^T`` of weights ``e``, the diagonal
        pending."""
        shared = [part.through(weight) for part in self.shared]
        if self.spread is not None:
            if self.slope is None:
                product = (weight @ self.weight).unsqueeze(0).expand(len(self.spread), -1, -1)
            else:
                seen = weight.unsqueeze(0) * self.slope.unsqueeze(1)  # W' diag(g), (b, N', N)
                product = (seen.reshape(-1, seen.shape[-1]) @ self.weight).view(
                    len(seen), weight.shape[0], -1
                )
            shared.append(_Shared(product.transpose(1, 2), self.spread))
        return _Factors(
            shared=tuple(shared),
            weight=None if self.diagonal is None else weight,
            spread=self.diagonal,
        )

    def variance(self) -> Tensor | None:
        """``diag(C) = d + g^2 (W^2 e) + sum_k diag(shared_k)``; ``None`` when ``C`` is zero."""
        parts = [] if self.diagonal is None else [self.diagonal]
        if self.spread is not None:
            pending = self.spread @ self.weight.square().T
            parts.append(pending if self.slope is None else pending * self.slope.square())
        parts.extend(part.variance() for part in self.shared)
        return sum(parts[1:], parts[0]) if parts else None

    def scaled(self, factor: Tensor | float) -> _Factors:
        """``diag(a) C diag(a)`` for ``a`` ``(b, N)``, or ``a^2 C`` for a number ``a``."""
        slope, spread = self.slope, self.spread
        if isinstance(factor, float):
            square = factor * factor
            if spread is not None:
                spread = spread * square
        else:
            square = factor.square()
            slope = factor if slope is None else slope * factor
        return replace(
            self,
            diagonal=None if self.diagonal is None else self.diagonal * square,
            shared=tuple(part.scaled(factor) for part in self.shared),
            spread=spread,
            slope=slope,
        )

    def injected(self, variance: Tensor | None, level: Tensor, noise: Noise) -> _Factors:
        """``inject(C, m)`` given ``variance = diag(C)``: ``C (1 + D_MC)``, the diagonal
        ``D_MU (v + m^2) + D_AU`` and the sources ``sqrt(D_AC) 1`` and ``sqrt(D_MC) m``."""
        state = self.scaled(float(1 + noise.MC) ** 0.5) if noise.MC else self
        diagonal = state.diagonal
        if noise.MU or noise.AU:
            second = level.square() if variance is None else variance + level.square()
            added = noise.MU * second + noise.AU
            diagonal = added if diagonal is None else diagonal + added
        sources = []
        if noise.AC:
            sources.append(torch.full_like(level, noise.AC**0.5))
        if noise.MC:
            sources.append(level * noise.MC**0.5)
        shared = state.shared + ((_Shared(torch.stack(sources, dim=1)),) if sources else ())
        return replace(state, diagonal=diagonal, shared=shared)

    def dense(self, batch: int, width: int, dtype: torch.dtype, device: torch.device) -> Tensor:
        """``C`` itself, ``(b, N, N)``."""
        cov = torch.zeros(batch, width, width, dtype=dtype, device=device)
        if self.spread is not None:
            weighted = self.weight.unsqueeze(0) * self.spread.unsqueeze(1)  # W diag(e), (b, N, N_in)
            cov += (weighted.reshape(-1, self.weight.shape[1]) @ self.weight.T).view(batch, width, width)
            if self.slope is not None:
                cov *= self.slope.unsqueeze(-1) * self.slope.unsqueeze(-2)
        for part in self.shared:
            cov += part.dense()
        if self.diagonal is not None:
            cov.diagonal(dim1=-2, dim2=-1).add_(self.diagonal)
        return cov


# ---------------------------------------------------------------------------------- recursion
def covariance_recursion(
    network: Network, noises: tuple[Noise, ...], x: Tensor, keep: frozenset[int], max_memory: int
) -> list[LayerStatistics]:
    """Every layer's first-order variance, and the covariance of the layers in ``keep``, for the
    noise-free inputs ``x`` ``(batch, input_size)`` (float64), in chunks of inputs whose largest
    tensor fits :data:`CACHE_BYTES` (and ``max_memory``)."""
    steps = plan(network, noises, keep)
    per_input = 8 * max(1, max(step.elements for step in steps))
    chunk = max(1, min(len(x), min(CACHE_BYTES, max_memory) // per_input))
    if chunk >= len(x):
        return _recursion(network, noises, x, steps)
    # the results written in place, chunk by chunk (no second copy of them at the end)
    results = [
        LayerStatistics(
            mean=x.new_empty(len(x), width),
            variance=x.new_empty(len(x), width),
            covariance=x.new_empty(len(x), width, width) if step.keep else None,
        )
        for width, step in zip(network.widths, steps)
    ]
    for start in range(0, len(x), chunk):
        part = _recursion(network, noises, x[start : start + chunk], steps)
        for result, piece in zip(results, part):
            result.mean[start : start + chunk] = piece.mean
            result.variance[start : start + chunk] = piece.variance
            if result.covariance is not None:
                result.covariance[start : start + chunk] = piece.covariance
    return results


def _recursion(
    network: Network, noises: tuple[Noise, ...], x: Tensor, steps: list[_Step]
) -> list[LayerStatistics]:
    layers = []
    factors = _Factors()
    cov: Tensor | None = None  # the full C once the recursion has turned full; None while zero
    last = network.depth - 1
    for index, ((weighted, signal), layer, noise, step) in enumerate(
        zip(network.forward(x), network.layers, noises, steps)
    ):
        weight = layer.weight.to(x.device)
        slope = layer.activation.derivative(weighted)
        level = signal if noise.injection == "after" else weighted
        kept = None
        if step.full:
            if step.densify:
                cov = factors.dense(len(x), layer.in_features, x.dtype, x.device)
            variance, cov = _full_step(cov, weight, slope, level, noise, index == last and not step.keep)
            kept = cov if step.keep else None
        else:
            through = factors.through(weight)
            if noise.injection == "after":
                through = through.scaled(slope)
                before = through.variance()
                factors = through.injected(before, level, noise)
                variance = inject_variance(_or_zero(before, level), level, noise)
            else:
                before = through.variance()
                factors = through.injected(before, level, noise).scaled(slope)
                variance = slope.square() * inject_variance(_or_zero(before, level), level, noise)
            if step.keep:
                cov = kept = factors.dense(len(x), layer.out_features, x.dtype, x.device)
        layers.append(LayerStatistics(mean=signal, variance=variance, covariance=kept))
    return layers


def _or_zero(variance: Tensor | None, like: Tensor) -> Tensor:
    return torch.zeros_like(like) if variance is None else variance


def _full_step(
    cov: Tensor | None, weight: Tensor, slope: Tensor, level: Tensor, noise: Noise, diagonal_only: bool
) -> tuple[Tensor, Tensor | None]:
    """``C' = diag(g) inject(W C W^T) diag(g)`` (injection before the activation) or
    ``inject(diag(g) W C W^T diag(g))`` (after); with ``diagonal_only``, only ``diag(C')``, from
    ``diag(W C W^T) = colsum(C W^T * W^T)``. ``cov=None``: ``C = 0``."""
    batch, width = level.shape
    right = None
    if cov is not None:
        fan_in = cov.shape[-1]
        right = (cov.reshape(-1, fan_in) @ weight.T).view(batch, fan_in, width)  # C W^T
    if diagonal_only:
        variance_z = torch.zeros_like(level) if right is None else (right * weight.T).sum(-2)
        if noise.injection == "after":
            return inject_variance(slope.square() * variance_z, level, noise), None
        return slope.square() * inject_variance(variance_z, level, noise), None
    if right is None:
        seen = level.new_zeros(batch, width, width)
    else:  # W C W^T = (C W^T)^T W^T, C being symmetric
        seen = (right.transpose(1, 2).reshape(-1, right.shape[1]) @ weight.T).view(batch, width, width)
    pair = slope.unsqueeze(-1) * slope.unsqueeze(-2)
    if noise.injection == "after":
        current = inject(pair * seen, level, noise)
    else:
        current = pair * inject(seen, level, noise)
    return current.diagonal(dim1=-2, dim2=-1).clone(), current
