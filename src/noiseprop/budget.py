"""Gains, the first-order noise budget and the deep limit of accumulation (docs/THEORY.md section 7).

The parts of :func:`noiseprop.criteria.design` that describe how noise accumulates: the mean-field
gains of every layer (:class:`LayerGain`), the output variance broken down by source layer and kind
(:class:`NoiseBudget`), and the limit of a network whose layers repeat. The first-order recursion is
defined in :mod:`noiseprop.criteria`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from noiseprop.activations import Activation
from noiseprop.model_analytic import linearised_model
from noiseprop.network import Network
from noiseprop.noise import KINDS, Noise
from noiseprop.sites import SiteSelector

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["LayerGain", "NoiseBudget", "model_budget"]

_UNIT = 1e-9
"""``|ratio - 1| <= _UNIT`` counts as ratio one (linear growth): ``(1/N) N`` is not always 1.0."""
_MEMORY = 2**28
"""Bytes of ``(inputs, N, N)`` working matrices per chunk of inputs."""
_UNCORRELATED = ("AU", "MU")


# ------------------------------------------------------------------------------------ results
@dataclass(frozen=True, kw_only=True, eq=False)
class LayerGain:
    """Mean-field gains of one layer's incoming transfer (docs/THEORY.md section 3).

    ``uncorrelated_gain = <g^2> N_in <W^2>`` and ``correlated_gain = <g>^2 N_in^2 <W>^2``, with
    ``<W>``, ``<W^2>`` the mean and mean square of the layer's incoming weights ``W^n``, ``N_in`` its
    fan-in, ``<g^2>`` the mean of ``g^2`` over the layer's neurons and the inputs, and ``<g>^2`` the
    squared mean of ``g`` over the neurons, averaged over the inputs. They are the factors by which
    the previous layer's noise (uncorrelated and correlated) reaches this layer's neurons.

    Attributes:
        layer: layer number (1 = first hidden layer); layer 1's transfer acts on the noise-free
            input and matters only for the ones after it.
        fan_in: ``N_in``.
        mean_square_slope: ``<g^2>``.
        squared_mean_slope: ``<g>^2``.
        mean_weight: ``<W>``.
        mean_square_weight: ``<W^2>``.
        uncorrelated_gain: ``<g^2> N_in <W^2>``.
        correlated_gain: ``<g>^2 N_in^2 <W>^2``.
        amplification: per kind (order of :data:`~noiseprop.noise.KINDS`), the output variance per
            unit of the variance that a source of that kind adds to this layer's own neurons (first
            order, both averaged over neurons and inputs; ``nan`` where the source adds none, e.g.
            multiplicative noise on zero signals). The output layer's own additive noise has 1.
    """

    layer: int
    fan_in: int
    mean_square_slope: float
    squared_mean_slope: float
    mean_weight: float
    mean_square_weight: float
    uncorrelated_gain: float
    correlated_gain: float
    amplification: tuple[float, float, float, float]

    def as_dict(self) -> dict[str, Any]:
        fields = {name: getattr(self, name) for name in self.__dataclass_fields__}
        fields["amplification"] = dict(zip(KINDS, self.amplification))
        return fields


@dataclass(frozen=True, kw_only=True, eq=False)
class NoiseBudget:
    """The output variance broken down by source layer and kind, to first order.

    Attributes:
        contributions: ``contributions[n - 1][k]``: the output variance due to the noise of kind
            ``KINDS[k]`` injected in layer ``n`` alone, through the first-order recursion (module
            docstring); for a torch model, row ``n - 1`` is its ``n``-th site call.
        first_order_total: the output variance of the first-order recursion with every source at
            once, computed separately; the contributions add up to it.
        propagated_total: the output variance of :func:`~noiseprop.propagate` (covariance method,
            with the products of intensities; for a torch model the linearisation itself).
        names: a torch model's site calls, one per row (``None`` for a dense network, whose rows
            are layers ``1..depth``).
    """

    contributions: tuple[tuple[float, float, float, float], ...]
    first_order_total: float
    propagated_total: float
    names: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        rows = tuple(tuple(float(value) for value in row) for row in self.contributions)
        if not rows or any(len(row) != len(KINDS) for row in rows):
            raise ValueError(
                f"NoiseBudget.contributions must hold one row of {len(KINDS)} values "
                f"({', '.join(KINDS)}) per layer; got {self.contributions!r}."
            )
        object.__setattr__(self, "contributions", rows)
        if self.names is not None and len(self.names) != len(rows):
            raise ValueError(f"NoiseBudget.names must name every row ({len(rows)}); got {self.names!r}.")

    @property
    def sources(self) -> tuple[str, ...]:
        """The name of every row: a model's site calls, or ``"1"``... for a dense network."""
        if self.names is not None:
            return self.names
        return tuple(str(number) for number in range(1, len(self.contributions) + 1))

    @property
    def difference(self) -> float:
        """``propagated_total - first_order_total``: the products of intensities (second order)."""
        return self.propagated_total - self.first_order_total

    @property
    def by_layer(self) -> tuple[float, ...]:
        """Output variance due to each layer's noise (all kinds)."""
        return tuple(sum(row) for row in self.contributions)

    @property
    def by_kind(self) -> dict[str, float]:
        """Output variance due to each kind of noise (all layers)."""
        return {kind: sum(row[k] for row in self.contributions) for k, kind in enumerate(KINDS)}

    @property
    def uncorrelated(self) -> float:
        """The part due to uncorrelated sources (``AU``, ``MU``)."""
        return sum(self.by_kind[kind] for kind in _UNCORRELATED)

    @property
    def correlated(self) -> float:
        """The part due to correlated sources (``AC``, ``MC``)."""
        return self.first_order_total - self.uncorrelated

    @property
    def dominant_layer(self) -> int | None:
        """The layer whose noise contributes most (``None`` without noise)."""
        values = self.by_layer
        return None if max(values) <= 0 else 1 + max(range(len(values)), key=values.__getitem__)

    @property
    def dominant_kind(self) -> str | None:
        """The kind of noise that contributes most (``None`` without noise)."""
        values = self.by_kind
        return None if max(values.values()) <= 0 else max(values, key=values.__getitem__)

    def to_frame(self) -> pd.DataFrame:
        """One row per (layer, kind): ``layer``, ``kind``, ``variance``, ``share`` of the first-order
        total (and ``site``, the row's name, for a torch model)."""
        import pandas as pd

        total = self.first_order_total
        named = self.names is not None
        return pd.DataFrame(
            [
                {
                    "layer": number,
                    **({"site": self.sources[number - 1]} if named else {}),
                    "kind": kind,
                    "variance": row[k],
                    "share": row[k] / total if total > 0 else math.nan,
                }
                for number, row in enumerate(self.contributions, start=1)
                for k, kind in enumerate(KINDS)
            ]
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "contributions": [
                {"layer": number, "source": source, **dict(zip(KINDS, row)), "total": sum(row)}
                for number, (source, row) in enumerate(zip(self.sources, self.contributions), start=1)
            ],
            "by_kind": self.by_kind,
            "first_order_total": self.first_order_total,
            "propagated_total": self.propagated_total,
            "difference": self.difference,
            "dominant_layer": self.dominant_layer,
            "dominant_kind": self.dominant_kind,
        }


def model_budget(
    model: nn.Module,
    noise: Noise | Sequence[Noise] | Mapping[str, Noise],
    inputs: Any,
    *,
    sites: SiteSelector = None,
    device: str | torch.device = "cpu",
) -> NoiseBudget:
    """The output variance of ``model`` split by source site call and kind, to first order: the
    design budget of docs/THEORY.md section 7 for any model. Each part is ``J Cov_kind(delta_s) J^T``
    (:mod:`noiseprop.model_analytic`) averaged over the output elements and the inputs; the parts
    add up to the linearised output variance. Costs ``K`` reverse-mode passes (``K`` outputs).

    Example:
        A linear readout of a noisy layer: ``Var y = sum_k w_k^2 D_AU`` and ``(sum_k w_k)^2 D_AC``:

        >>> import torch
        >>> from torch import nn
        >>> from noiseprop import Noise
        >>> model = nn.Sequential(nn.Linear(3, 3), nn.Identity(), nn.Linear(3, 1))
        >>> with torch.no_grad():
        ...     _ = model[2].weight.copy_(torch.tensor([[1.0, 2.0, -0.5]]))
        >>> budget = model_budget(model, Noise(AU=0.1, AC=0.2), torch.ones(2, 3), sites=nn.Identity)
        >>> [round(part, 6) for part in budget.contributions[0]]  # AU, AC, MU, MC
        [0.525, 1.25, 0.0, 0.0]
    """
    statistics, parts, calls = linearised_model(
        model, noise, inputs, sites=sites, site_variances=False, device=device
    )
    rows = [
        tuple(
            float(parts[(name, kind)].diagonal(dim1=-2, dim2=-1).mean())
            if (name, kind) in parts
            else 0.0
            for kind in KINDS
        )
        for name in calls
    ]
    total = float(statistics[-1].variance.mean())
    return NoiseBudget(
        contributions=tuple(rows), first_order_total=total, propagated_total=total, names=tuple(calls)
    )


# ------------------------------------------------------------------------------------ gains
def _gains(network: Network, clean: list[tuple[Tensor, Tensor]]) -> list[dict[str, Any]]:
    rows = []
    for number, (layer, (weighted, _)) in enumerate(zip(network.layers, clean), start=1):
        slope = layer.activation.derivative(weighted)
        mean_square_slope = float(slope.square().mean())
        squared_mean_slope = float(slope.mean(-1).square().mean())
        mean_weight, mean_square_weight = float(layer.weight.mean()), float(layer.weight.square().mean())
        n_in = layer.in_features
        rows.append(
            {
                "layer": number,
                "fan_in": n_in,
                "mean_square_slope": mean_square_slope,
                "squared_mean_slope": squared_mean_slope,
                "mean_weight": mean_weight,
                "mean_square_weight": mean_square_weight,
                "uncorrelated_gain": mean_square_slope * n_in * mean_square_weight,
                "correlated_gain": squared_mean_slope * n_in**2 * mean_weight**2,
            }
        )
    return rows


# ----------------------------------------------------------------------- first-order budget
def _chunks(network: Network, batch: int) -> list[slice]:
    widest = max(network.widths)
    size = max(1, min(batch, _MEMORY // (8 * 4 * widest * widest)))
    return [slice(start, start + size) for start in range(0, batch, size)]


def _unit_parts(
    network: Network, noises: tuple[Noise, ...], clean: list[tuple[Tensor, Tensor]]
) -> tuple[Tensor, Tensor]:
    """``(depth, 4)`` output variance per unit intensity of each source (layer, kind), and the
    variance that source adds to its own layer per unit intensity, both averaged over inputs (and
    neurons): the backward (adjoint) form of the first-order recursion."""
    depth, batch = network.depth, clean[0][0].shape[0]
    unit = torch.zeros(depth, len(KINDS), dtype=torch.float64)
    fresh = torch.zeros_like(unit)
    for part in _chunks(network, batch):
        outputs = network.widths[-1]
        form = (
            torch.eye(outputs, dtype=torch.float64).expand(clean[0][0][part].shape[0], -1, -1) / outputs
        )
        for index in reversed(range(depth)):
            weighted, signal = clean[index][0][part], clean[index][1][part]
            slope = network.layers[index].activation.derivative(weighted)
            outer = slope.unsqueeze(-1) * slope.unsqueeze(-2)
            if noises[index].injection == "after":
                local, level, filtered = form, signal, torch.ones_like(slope)
            else:
                local, level, filtered = form * outer, weighted, slope.square()
            diagonal = local.diagonal(dim1=-2, dim2=-1)
            square = level.square()
            unit[index] += torch.stack(
                [
                    diagonal.sum(-1),  # AU: tr(A)
                    local.sum((-2, -1)),  # AC: 1^T A 1
                    (diagonal * square).sum(-1),  # MU: sum_i A_ii m_i^2
                    torch.einsum("bi,bij,bj->b", level, local, level),  # MC: m^T A m
                ]
            ).sum(-1)
            additive, multiplicative = filtered.mean(-1), (filtered * square).mean(-1)
            fresh[index] += torch.stack([additive, additive, multiplicative, multiplicative]).sum(-1)
            if index:
                weight = network.layers[index].weight
                form = weight.T @ (form * outer) @ weight
    return unit / batch, fresh / batch


def _first_order_total(
    network: Network, noises: tuple[Noise, ...], clean: list[tuple[Tensor, Tensor]]
) -> float:
    """Output variance of the first-order recursion with every source at once (run forwards)."""
    batch = clean[0][0].shape[0]
    total = 0.0
    for part in _chunks(network, batch):
        covariance: Tensor | None = None
        for (weighted, signal), layer, noise in zip(clean, network.layers, noises):
            weighted, signal = weighted[part], signal[part]
            slope = layer.activation.derivative(weighted)
            outer = slope.unsqueeze(-1) * slope.unsqueeze(-2)
            level = signal if noise.injection == "after" else weighted
            source = noise.AC + noise.MC * level.unsqueeze(-1) * level.unsqueeze(-2)
            source = source + torch.diag_embed(noise.AU + noise.MU * level.square())
            transferred = 0.0 if covariance is None else layer.weight @ covariance @ layer.weight.T
            if noise.injection == "after":
                covariance = outer * transferred + source
            else:
                covariance = outer * (transferred + source)
        total += float(covariance.diagonal(dim1=-2, dim2=-1).sum())
    return total / (batch * network.widths[-1])


# ---------------------------------------------------------------------------- deep limit
def _deep_limit(
    network: Network, noises: tuple[Noise, ...], clean: list[tuple[Tensor, Tensor]]
) -> dict[str, Any] | None:
    """Ratio, limit and operating point of a network whose layers 2..depth repeat one symmetric
    layer (see :func:`design`); ``None`` for other networks."""
    constants = network.symmetric_weights()
    unit = network.layers[-1]
    if constants is None or unit.in_features != unit.out_features:
        return None
    repeated = range(1, network.depth) if network.depth > 1 else range(1)
    for index in repeated:
        layer = network.layers[index]
        if constants[index] != constants[-1] or layer.activation != unit.activation:
            return None
        if (layer.in_features, layer.out_features) != (unit.in_features, unit.out_features):
            return None
    weight, bias = constants[-1]
    scale, width, f = weight * unit.in_features, unit.out_features, unit.activation
    level, converged = _fixed_point(clean[-1][1][:, 0], f, scale, bias)
    x = scale * level + bias
    slope = f.derivative(x)
    layer_noises = {noises[index] for index in repeated}
    noise = noises[-1] if len(layer_noises) == 1 else Noise()
    average = noise.MC + noise.MU / width
    ratio = (slope * scale).square() * (1 + average)
    result = {
        "ratio": float(ratio.max()),
        "slope": float(slope.abs().mean()),
        "scale": abs(scale),
        "limit": None,
        "limit_ratio": None,
    }
    if len(layer_noises) != 1:
        return result
    if result["ratio"] >= 1 - _UNIT:
        result["limit"], result["limit_ratio"] = math.inf, math.inf
        return result
    if not converged:
        return result
    both = noise.MU + noise.MC
    if noise.injection == "after":
        v = (f(x).square() * average + noise.AC + noise.AU / width) / (1 - ratio)
        fresh = f(x).square() * both + noise.AU + noise.AC
        limit = (slope * scale).square() * v * (1 + both) + fresh
    else:
        filtered = slope.square()
        v = filtered * (x.square() * average + noise.AC + noise.AU / width) / (1 - ratio)
        fresh = filtered * (x.square() * both + noise.AU + noise.AC)
        limit = filtered * (scale**2 * v * (1 + both)) + fresh
    result["limit"] = float(limit.mean())
    mean_fresh = float(fresh.mean())
    result["limit_ratio"] = result["limit"] / mean_fresh if mean_fresh > 0 else math.nan
    return result


def _fixed_point(start: Tensor, f: Activation, scale: float, bias: float) -> tuple[Tensor, bool]:
    """The fixed point ``s* = f(scale s* + bias)`` that the noise-free signal approaches from
    ``start`` (one per input), and whether it was found.

    2,000 plain iterations lead to the attracting fixed point; Newton's method on
    ``F(s) = f(scale s + bias) - s`` then settles it, also where plain iteration crawls (slope one at
    the fixed point, e.g. ``tanh`` at 0, where ``F`` has a multiple root and Newton still converges
    geometrically). Diverging or oscillating signals give ``False``.
    """
    level = start.clone()
    for _ in range(2000):
        level = f(scale * level + bias)
        if not torch.isfinite(level).all() or level.abs().max() > 1e100:
            return start, False
    for _ in range(200):
        weighted = scale * level + bias
        step = (f(weighted) - level) / (scale * f.derivative(weighted) - 1)
        if not torch.isfinite(step).all():
            return level, False
        level = level - step
        if (step.abs() <= 1e-15 * (1 + level.abs())).all():
            return level, True
    return level, False
