"""Design criteria: gains, bounded accumulation, noise budget, tolerable noise (SCIENCE.md sections 2-4).

:func:`design` answers the engineer's questions about a network, a noise specification and a set of
inputs; :func:`plot_noise_budget` draws the budget. Definitions used throughout:

* ``g = f'(x-bar)``: the slopes at the noise-free operating point of the given inputs.
* Output variance: the noise variance of the output layer averaged over its neurons and the inputs;
  output SNR ``<mean^2> / <variance>`` (the per-layer SNR of :mod:`noiseprop.results`), in dB
  ``10 log10``.
* First-order (linearised) recursion: SCIENCE.md section 3 without the products of intensities with
  upstream noise (``D_MC C`` and ``D_MU diag(C)``)::

      C^n = diag(g) W C^{n-1} W^T diag(g) + Q^n,
      Q^n = diag(D_AU + m^2 D_MU) + D_AC 11^T + D_MC m m^T

  with ``m = s-bar`` (injection after the activation); before it, ``m = x-bar`` and
  ``diag(g) Q^n diag(g)`` replaces ``Q^n``. It is linear in the intensities, so the output variance is
  a sum of one part per source ``(layer, kind)``; it equals :func:`~noiseprop.propagate` exactly for
  additive noise, and to first order otherwise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import Tensor

from noiseprop._inputs import as_inputs
from noiseprop._validation import check_choice, check_finite, check_positive, check_positive_int
from noiseprop.accuracy import _check_data, _check_points, _check_seed, _derived_seed, accuracy
from noiseprop.activations import Activation
from noiseprop.analytic import propagate
from noiseprop.montecarlo import simulate
from noiseprop.network import Network
from noiseprop.noise import KINDS, Noise, NoiseSpec, per_layer

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes

__all__ = ["Design", "LayerGain", "NoiseBudget", "Remedies", "Tolerance", "design", "plot_noise_budget"]

Growth = Literal["bounded", "linear", "geometric"]
_UNIT = 1e-9
"""``|ratio - 1| <= _UNIT`` counts as ratio one (linear growth): ``(1/N) N`` is not always 1.0."""
_LOWEST, _HIGHEST = 1e-30, 1e4
"""Range of intensities searched for the tolerable noise."""
_MEMORY = 2**28
"""Bytes of ``(inputs, N, N)`` working matrices per chunk of inputs."""
_UNCORRELATED = ("AU", "MU")
_ROUNDING = 1e-9
"""A predicted value this close below the target (dB or accuracy) counts as meeting it."""


# ------------------------------------------------------------------------------------ results
@dataclass(frozen=True, kw_only=True, eq=False)
class LayerGain:
    """Mean-field gains of one layer's incoming transfer (SCIENCE.md section 3).

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
            docstring).
        first_order_total: the output variance of the first-order recursion with every source at
            once, computed separately; the contributions add up to it.
        propagated_total: the output variance of :func:`~noiseprop.propagate` (covariance method,
            with the products of intensities).
    """

    contributions: tuple[tuple[float, float, float, float], ...]
    first_order_total: float
    propagated_total: float

    def __post_init__(self) -> None:
        rows = tuple(tuple(float(value) for value in row) for row in self.contributions)
        if not rows or any(len(row) != len(KINDS) for row in rows):
            raise ValueError(
                f"NoiseBudget.contributions must hold one row of {len(KINDS)} values "
                f"({', '.join(KINDS)}) per layer; got {self.contributions!r}."
            )
        object.__setattr__(self, "contributions", rows)

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
        total."""
        import pandas as pd

        total = self.first_order_total
        return pd.DataFrame(
            [
                {
                    "layer": number,
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
                {"layer": number, **dict(zip(KINDS, row)), "total": sum(row)}
                for number, row in enumerate(self.contributions, start=1)
            ],
            "by_kind": self.by_kind,
            "first_order_total": self.first_order_total,
            "propagated_total": self.propagated_total,
            "difference": self.difference,
            "dominant_layer": self.dominant_layer,
            "dominant_kind": self.dominant_kind,
        }


@dataclass(frozen=True, kw_only=True, eq=False)
class Tolerance:
    """The largest intensity of one kind of noise that keeps a target.

    Attributes:
        kind: ``"AU"``, ``"AC"``, ``"MU"`` or ``"MC"``.
        criterion: ``"snr_db"`` (output SNR in dB) or ``"accuracy"`` (predicted accuracy).
        target: the value to keep (at least).
        layers: the layers that carry the noise, each with the same intensity.
        intensity: the largest variance found (within ``rtol``) that keeps the target on the analytic
            predictor; ``inf`` when even ``1e4`` keeps it, ``0`` when even ``1e-30`` does not.
        status: ``"limited"``, ``"unlimited"`` (``inf``) or ``"unreachable"`` (``0``).
        predicted: the predictor at ``intensity`` (at ``1e4`` when unlimited; ``nan`` or ``-inf``
            when unreachable).
        simulated: the simulated value at ``intensity`` (``None`` without a check or without a finite
            positive intensity).
        simulated_stderr: its standard error.
        meets_target: ``simulated + sigmas * simulated_stderr >= target`` (``None`` without a check).
    """

    kind: str
    criterion: Literal["snr_db", "accuracy"]
    target: float
    layers: tuple[int, ...]
    intensity: float
    status: Literal["limited", "unlimited", "unreachable"]
    predicted: float
    simulated: float | None = None
    simulated_stderr: float | None = None
    meets_target: bool | None = None

    def __post_init__(self) -> None:
        check_choice("Tolerance.kind", self.kind, KINDS)
        check_choice("Tolerance.criterion", self.criterion, ("snr_db", "accuracy"))
        check_choice("Tolerance.status", self.status, ("limited", "unlimited", "unreachable"))

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


@dataclass(frozen=True, kw_only=True, eq=False)
class Remedies:
    """What would change the verdict (closed forms of SCIENCE.md sections 2, 3 and 5).

    Attributes:
        slope_factor: ``1 / sqrt(largest transfer gain)``: multiplying every slope (or every weight of
            the layers after the first) by less than this makes every gain < 1 (``inf`` without a
            transfer layer).
        slope: repeating networks: ``|f'(x*)|`` at the deep operating point ``x*``.
        critical_slope: repeating networks: ``1 / (|w| N_in)``, the slope below which accumulation is
            bounded (1 for weights ``1/N``).
        critical_gain: repeating networks whose activation has a ``gain`` (sigmoid, tanh):
            ``gain * critical_slope / slope``, the gain at which the slope at the same output level
            (``f' = gain phi'(gain (x - centre))`` is proportional to the gain there) reaches the
            critical slope; lower gains bound accumulation.
        pooling: with ``target_snr_db``: the pooling factor ``P`` (SCIENCE.md section 5: ``P``
            copies of every hidden neuron, outgoing weights divided by ``P``) that brings the output
            variance to the allowed ``<mean^2> / 10^(target/10)``: the uncorrelated part from the
            hidden layers is divided by ``P``, the correlated part and the output layer's own noise
            stay, so ``P = U_hidden / (allowed - correlated - U_output)`` (first order). Below 1 the
            target is already met. ``None`` when it cannot work (see ``notes``).
        width: repeating networks of one width ``N``: the smallest width ``N' = ceil(N P)`` that
            meets ``target_snr_db`` (below ``N`` when it is met with room to spare); ``N'`` neurons
            with weights ``w N / N'`` divide the hidden layers' uncorrelated noise at the output by
            ``N' / N``, like pooling, and keep the noise-free function.
        notes: the reasons, in words.
    """

    slope_factor: float
    slope: float | None = None
    critical_slope: float | None = None
    critical_gain: float | None = None
    pooling: float | None = None
    width: int | None = None
    notes: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        values = {name: getattr(self, name) for name in self.__dataclass_fields__}
        values["notes"] = list(self.notes)
        return values


@dataclass(frozen=True, kw_only=True, eq=False)
class Design:
    """Design criteria of a network under noise: see :func:`design`.

    Attributes:
        gains: one :class:`LayerGain` per layer.
        growth: how noise would accumulate over depth: ``"bounded"``, ``"linear"`` (ratio one) or
            ``"geometric"``.
        growth_ratio: repeating networks: the ratio ``r`` of the variance recursion at the deep
            operating point; otherwise the largest transfer gain of layers 2..depth.
        repeating: whether layers 2..depth repeat one symmetric layer (SCIENCE.md section 2).
        limit: repeating networks with the same noise on layers 2..depth: the per-neuron variance deep
            in the network (``inf`` when unbounded); else ``None``.
        limit_ratio: ``limit`` over the fresh noise one such layer adds at that operating point.
        budget: the :class:`NoiseBudget`.
        signal_power: ``<mean^2>`` of the output layer (noise-free).
        accuracy: predicted accuracy at the given noise (with labels; else ``None``).
        noise_free_accuracy: accuracy without noise (with labels; else ``None``).
        tolerances: one :class:`Tolerance` per kind and target given.
        remedies: the :class:`Remedies`.
        noise: the noise of every layer.
    """

    gains: tuple[LayerGain, ...]
    growth: Growth
    growth_ratio: float
    repeating: bool
    limit: float | None
    limit_ratio: float | None
    budget: NoiseBudget
    signal_power: float
    accuracy: float | None
    noise_free_accuracy: float | None
    tolerances: tuple[Tolerance, ...]
    remedies: Remedies
    noise: tuple[Noise, ...]

    @property
    def bounded(self) -> bool:
        return self.growth == "bounded"

    @property
    def snr_db(self) -> float:
        """Predicted output SNR in dB at the given noise (``propagate``)."""
        return _db(self.signal_power, self.budget.propagated_total)

    @property
    def verdict(self) -> str:
        """The verdict in one sentence."""
        r = self.growth_ratio
        if not self.repeating and self.growth != "bounded":
            layer = max(self.gains[1:], key=lambda g: max(g.uncorrelated_gain, g.correlated_gain))
            kind = "correlated" if layer.correlated_gain >= layer.uncorrelated_gain else "uncorrelated"
            return (
                f"not bounded by the slope criterion: layer {layer.layer} passes on the {kind} noise "
                f"reaching it with gain {r:.4g} >= 1 (layers like it, repeated, would grow the noise "
                f"{'linearly' if self.growth == 'linear' else 'geometrically'} with depth)"
            )
        if self.growth == "geometric":
            return (
                f"unbounded: growth ratio {r:.4g} > 1, the noise variance grows geometrically with depth"
            )
        if self.growth == "linear":
            return (
                "unbounded: growth ratio 1, the noise variance grows linearly with depth (first order; "
                "a saturating nonlinearity bends it)"
            )
        text = f"bounded: growth ratio {r:.4g} < 1 (generalised slope criterion)"
        if self.limit is not None:
            text += f"; deep-layer variance tends to {self.limit:.6g}"
            if math.isfinite(self.limit_ratio):
                text += f" = {self.limit_ratio:.6f} x the fresh noise of one layer"
        elif not self.repeating:
            text += "; each layer's noise is damped on its way through the layers after it"
        return text

    def as_dict(self) -> dict[str, Any]:
        """Plain values (for JSON)."""
        return {
            "verdict": self.verdict,
            "growth": self.growth,
            "growth_ratio": self.growth_ratio,
            "bounded": self.bounded,
            "repeating": self.repeating,
            "limit": self.limit,
            "limit_ratio": self.limit_ratio,
            "signal_power": self.signal_power,
            "output_variance": self.budget.propagated_total,
            "snr_db": self.snr_db,
            "accuracy": self.accuracy,
            "noise_free_accuracy": self.noise_free_accuracy,
            "noise": [str(noise) for noise in self.noise],
            "gains": [gain.as_dict() for gain in self.gains],
            "budget": self.budget.as_dict(),
            "tolerances": [tolerance.as_dict() for tolerance in self.tolerances],
            "remedies": self.remedies.as_dict(),
        }


# ----------------------------------------------------------------------------------- design
def design(
    network: Network,
    noise: NoiseSpec,
    inputs: Any,
    *,
    target_snr_db: float | None = None,
    target_accuracy: float | None = None,
    labels: Any = None,
    check: bool = True,
    repeats: int = 1000,
    seed: int = 0,
    sigmas: float = 3.0,
    points: int = 1024,
    rtol: float = 1e-3,
) -> Design:
    """Per-layer gains, bounded accumulation, noise budget, tolerable noise and remedies.

    **Gains and verdict.** :class:`LayerGain` gives the mean-field gains ``<g^2> N_in <W^2>`` and
    ``<g>^2 N_in^2 <W>^2`` of every layer (SCIENCE.md section 3). Accumulation is bounded when the
    gains of layers 2..depth are below one (the generalised slope criterion); ``growth_ratio`` is the
    largest. When layers 2..depth repeat one symmetric layer (weight ``w``, bias ``b``, ``N``
    neurons, fan-in ``N_in``; SCIENCE.md section 2), the verdict is that of the exact recursion of the
    layer average instead, linearised at the deep operating point ``s* = f(w N_in s* + b)`` (the
    noise-free signal iterated to its fixed point), ``x* = w N_in s* + b``, ``g = f'(x*)``::

        r   = g^2 (w N_in)^2 (1 + D_MC + D_MU/N)
        v   = [s*^2 (D_MC + D_MU/N) + D_AC + D_AU/N] / (1 - r)             (layer average)
        limit = g^2 (w N_in)^2 v (1 + D_MU + D_MC) + fresh,   fresh = s*^2 (D_MU + D_MC) + D_AU + D_AC

    (before the activation ``x*`` replaces ``s*`` in the noise terms and ``g^2`` multiplies them).
    ``r < 1``: bounded; ``r = 1``: linear growth; ``r > 1``: geometric. E.g. the logistic sigmoid
    with weights ``1/N``: ``g = 0.224704``, ``limit / fresh = 1 / (1 - g^2) = 1.053177``; linear slope
    ``a < 1``, no offset: ``limit = a^2 (D_AC + D_AU/N) / (1 - a^2) + D_AU + D_AC``. ``limit`` is
    averaged over the inputs and needs one noise on layers 2..depth.

    **Budget** (:class:`NoiseBudget`): each source's part of the output variance, by the first-order
    recursion of the module docstring, computed backwards: ``A^depth = I / N_depth``,
    ``A^{n-1} = W^T diag(g) A^n diag(g) W`` and the part of source ``Q^n`` is ``<A^n, Q^n>``
    (``tr(A Q)``), averaged over the inputs. The first-order total is run forwards separately.

    **Tolerable noise** (:class:`Tolerance`): for each kind, the same intensity ``D`` on every layer
    that is noisy in ``noise`` (every layer when none is), with that layer's injection point, the
    other kinds off. ``D`` is found by bisection in ``log D`` (to ``rtol``) on the analytic
    predictor: the output SNR of :func:`~noiseprop.propagate` (covariance method) against
    ``target_snr_db``, the accuracy of :func:`~noiseprop.accuracy` (``method="predicted"``, seed
    ``seed``) against ``target_accuracy``. With ``check``, one simulation at ``D``
    (:func:`~noiseprop.simulate`, float32, or ``accuracy(method="montecarlo")``, ``repeats`` draws)
    tells whether the target is met within ``sigmas`` standard errors; the SNR's standard error in
    dB is ``10 / ln 10`` times the relative standard error of the simulated variance.

    **Remedies** (:class:`Remedies`): the slope, gain, pooling factor or width that would change the
    verdict or meet ``target_snr_db``.

    Args:
        network: the network.
        noise: a :class:`~noiseprop.noise.Noise` for every layer, one per layer, or ``{layer: Noise}``.
        inputs: ``(batch, input_size)`` noise-free inputs, one input vector, or one number.
        target_snr_db: output SNR to keep, in dB.
        target_accuracy: accuracy to keep, a fraction in ``(0, 1]`` at most the noise-free accuracy;
            needs ``labels``.
        labels: ``(batch,)`` classes of the inputs (the argmax of the output layer).
        check: simulate each tolerable intensity once.
        repeats: noise draws per input of those simulations (>= 2).
        seed: seed of the simulations (kind ``k`` uses ``SeedSequence([seed, k])``) and of the
            quasi-random points of the predicted accuracy.
        sigmas: standard errors within which a simulated value meets the target.
        points: quasi-random points per input of the predicted accuracy (a power of two >= 64).
        rtol: relative precision of the tolerable intensities.

    Returns:
        A :class:`Design`.

    Raises:
        ValueError: for a target out of range, ``target_accuracy`` without labels or above the
            noise-free accuracy, or a parameter out of range (the message names it).

    Example:
        The symmetric sigmoid network of SCIENCE.md section 2 with correlated additive noise:

        >>> from noiseprop import Network, Noise
        >>> net = Network.symmetric(width=10, depth=4)
        >>> result = design(net, Noise(AC=1e-3), 0.659046, target_snr_db=20, check=False)
        >>> result.growth, round(result.growth_ratio, 6), round(result.limit_ratio, 6)
        ('bounded', 0.050492, 1.053177)
        >>> [round(part, 9) for part in result.budget.by_layer]  # 1e-3 g^(2 (4 - n))
        [1.29e-07, 2.549e-06, 5.0492e-05, 0.001]
        >>> tolerance = result.tolerances[1]  # AC: 0.659046^2 / 100 / (1 + g^2 + g^4 + g^6)
        >>> tolerance.kind, round(tolerance.intensity, 5)
        ('AC', 0.00412)
    """
    if not isinstance(network, Network):
        raise TypeError(f"network must be a Network; got {type(network).__name__}.")
    noises = per_layer(noise, network.depth)
    x = as_inputs(inputs, network, dtype=torch.float64, device="cpu")
    if target_snr_db is not None:
        target_snr_db = check_finite("target_snr_db", target_snr_db)
    if target_accuracy is not None:
        target_accuracy = _check_fraction(target_accuracy)
        if labels is None:
            raise ValueError(
                "target_accuracy needs labels: the class of every input (an array of shape "
                f"({x.shape[0]},)); got labels=None."
            )
    if not isinstance(check, bool):
        raise TypeError(f"check must be True or False; got {check!r}.")
    repeats = check_positive_int("repeats", repeats, minimum=2)
    seed = _check_seed(seed)
    sigmas = check_positive("sigmas", sigmas)
    points = _check_points(points)
    rtol = check_positive("rtol", rtol)
    if rtol >= 1:
        raise ValueError(f"rtol must be a relative precision in (0, 1); got {rtol!r}.")
    target = None
    if labels is not None:
        x, target = _check_data(network, x, labels)

    clean = network.forward(x)
    gains = _gains(network, clean)
    unit, fresh = _unit_parts(network, noises, clean)
    intensities = torch.tensor(
        [[getattr(n, kind) for kind in KINDS] for n in noises], dtype=torch.float64
    )
    parts = intensities * unit
    amplification = torch.where(fresh > 0, unit / fresh.where(fresh > 0, 1.0), math.nan)
    gains = tuple(
        LayerGain(**gain, amplification=tuple(amplification[index].tolist()))
        for index, gain in enumerate(gains)
    )
    budget = NoiseBudget(
        contributions=tuple(tuple(row) for row in parts.tolist()),
        first_order_total=_first_order_total(network, noises, clean),
        propagated_total=propagate(network, noises, x)[-1].layer_variance,
    )
    signal_power = float(clean[-1][1].square().mean())

    transfer = [max(g.uncorrelated_gain, g.correlated_gain) for g in gains[1:]]
    ratio = max(transfer, default=0.0)
    deep = _deep_limit(network, noises, clean)
    if deep is not None:
        ratio = deep["ratio"]
    growth: Growth = "bounded" if ratio < 1 - _UNIT else "linear" if ratio <= 1 + _UNIT else "geometric"

    predicted_accuracy = noise_free = None
    if target is not None:
        result = accuracy(network, noises, x, target, method="predicted", points=points, seed=seed)
        predicted_accuracy, noise_free = result.accuracy, result.noise_free
        if target_accuracy is not None and target_accuracy > noise_free:
            raise ValueError(
                f"target_accuracy must be at most the noise-free accuracy of these inputs, "
                f"{noise_free:.6g}; got {target_accuracy!r}. No noise intensity can reach it."
            )

    pattern = tuple(n for n, layer in enumerate(noises, 1) if not layer.is_zero) or tuple(
        range(1, network.depth + 1)
    )
    solver = _Solver(
        network, noises, x, target, pattern, unit, signal_power, repeats, seed, sigmas, points
    )
    tolerances = []
    for criterion, value in (("snr_db", target_snr_db), ("accuracy", target_accuracy)):
        if value is not None:
            tolerances += [solver.solve(kind, criterion, value, rtol, check) for kind in KINDS]
    remedies = _remedies(network, gains, deep, budget, signal_power, target_snr_db)
    return Design(
        gains=gains,
        growth=growth,
        growth_ratio=ratio,
        repeating=deep is not None,
        limit=None if deep is None else deep["limit"],
        limit_ratio=None if deep is None else deep["limit_ratio"],
        budget=budget,
        signal_power=signal_power,
        accuracy=predicted_accuracy,
        noise_free_accuracy=noise_free,
        tolerances=tuple(tolerances),
        remedies=remedies,
        noise=noises,
    )


def _check_fraction(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(
            f"target_accuracy must be a fraction in (0, 1]; got {type(value).__name__} {value!r}."
        )
    if not 0 < value <= 1:
        raise ValueError(f"target_accuracy must be a fraction in (0, 1]; got {value!r}.")
    return float(value)


def _db(power: float, variance: float) -> float:
    if variance <= 0:
        return math.inf
    return 10 * math.log10(power / variance) if power > 0 else -math.inf


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


# ---------------------------------------------------------------------------- tolerable noise
@dataclass(frozen=True)
class _Solver:
    network: Network
    noises: tuple[Noise, ...]
    x: Tensor
    labels: Tensor | None
    pattern: tuple[int, ...]
    unit: Tensor
    signal_power: float
    repeats: int
    seed: int
    sigmas: float
    points: int

    def spec(self, kind: str, intensity: float) -> dict[int, Noise]:
        return {
            n: Noise(**{kind: intensity}, injection=self.noises[n - 1].injection) for n in self.pattern
        }

    def predict(self, kind: str, criterion: str, intensity: float) -> float:
        spec = self.spec(kind, intensity)
        if criterion == "snr_db":
            return _db(self.signal_power, propagate(self.network, spec, self.x)[-1].layer_variance)
        result = accuracy(
            self.network,
            spec,
            self.x,
            self.labels,
            method="predicted",
            points=self.points,
            seed=self.seed,
        )
        return result.accuracy

    def solve(self, kind: str, criterion: str, target: float, rtol: float, check: bool) -> Tolerance:
        """Bracket the largest intensity that keeps ``target``, then bisect in ``log D``."""
        index = KINDS.index(kind)
        per_unit = float(sum(self.unit[n - 1, index] for n in self.pattern))  # first-order variance
        allowed = self.signal_power / 10 ** (target / 10) if criterion == "snr_db" else 0.0
        common = {"kind": kind, "criterion": criterion, "target": target, "layers": self.pattern}
        if criterion == "snr_db" and self.signal_power <= 0:
            return Tolerance(**common, intensity=0.0, status="unreachable", predicted=-math.inf)
        # With an SNR target, start from the first-order answer allowed / per_unit. The full variance
        # is >= the first-order one (the dropped products are positive semidefinite), so no larger
        # intensity keeps the target: search only below it.
        guess = criterion == "snr_db" and per_unit > 0
        if guess:
            start, factor = max(allowed / per_unit, _LOWEST), 2.0
        else:
            given = max(getattr(noise, kind) for noise in self.noises)
            start, factor = (given if given > 0 else 1e-3), 10.0
        values: dict[float, float] = {}

        def meets(intensity: float) -> bool:
            values[intensity] = self.predict(kind, criterion, intensity)
            return values[intensity] >= target - _ROUNDING

        low = high = start
        if meets(start):
            while not guess and meets(high := high * factor):
                low = high
                if high >= _HIGHEST:
                    return Tolerance(
                        **common, intensity=math.inf, status="unlimited", predicted=values[high]
                    )
        else:
            while not meets(low := low / factor):
                high = low
                if low <= _LOWEST:
                    return Tolerance(**common, intensity=0.0, status="unreachable", predicted=math.nan)
        while high / low > 1 + rtol:
            middle = math.sqrt(low * high)
            if meets(middle):
                low = middle
            else:
                high = middle
        simulated = stderr = passed = None
        if check:
            simulated, stderr = self.simulate(kind, criterion, low)
            passed = bool(simulated + self.sigmas * stderr >= target)
        return Tolerance(
            **common,
            intensity=low,
            status="limited",
            predicted=values[low],
            simulated=simulated,
            simulated_stderr=stderr,
            meets_target=passed,
        )

    def simulate(self, kind: str, criterion: str, intensity: float) -> tuple[float, float]:
        spec, seed = self.spec(kind, intensity), _derived_seed(self.seed, KINDS.index(kind))
        if criterion == "accuracy":
            result = accuracy(
                self.network,
                spec,
                self.x,
                self.labels,
                method="montecarlo",
                repeats=self.repeats,
                seed=seed,
            )
            return result.accuracy, result.stderr
        output = simulate(self.network, spec, self.x, repeats=self.repeats, seed=seed)[-1]
        variance = output.layer_variance
        relative = (output.layer_variance_stderr or 0.0) / variance if variance > 0 else math.inf
        return 10 * math.log10(output.layer_snr), 10 / math.log(10) * relative


# -------------------------------------------------------------------------------- remedies
def _remedies(
    network: Network,
    gains: tuple[LayerGain, ...],
    deep: dict[str, Any] | None,
    budget: NoiseBudget,
    signal_power: float,
    target_snr_db: float | None,
) -> Remedies:
    notes = []
    largest = max((max(g.uncorrelated_gain, g.correlated_gain) for g in gains[1:]), default=0.0)
    values: dict[str, Any] = {"slope_factor": 1 / math.sqrt(largest) if largest > 0 else math.inf}
    if deep is not None and deep["scale"] > 0:
        critical = 1 / deep["scale"]
        values["slope"], values["critical_slope"] = deep["slope"], critical
        gain = network.layers[-1].activation.parameters().get("gain")
        if gain is not None and deep["slope"] > 0:
            values["critical_gain"] = gain * critical / deep["slope"]
        note = (
            f"accumulation is bounded for slopes below {critical:.6g} at the operating point "
            f"(now {deep['slope']:.6g})"
        )
        if "critical_gain" in values:
            note += f"; at the same output level, for gains below {values['critical_gain']:.6g}"
        notes.append(note)
    if target_snr_db is None:
        notes.append("pooling and width need target_snr_db")
        return Remedies(**values, notes=tuple(notes))
    allowed = signal_power / 10 ** (target_snr_db / 10)
    rows = budget.contributions
    hidden = sum(row[KINDS.index(kind)] for row in rows[:-1] for kind in _UNCORRELATED)
    own = sum(rows[-1][KINDS.index(kind)] for kind in _UNCORRELATED)
    room = allowed - budget.correlated - own
    if hidden <= 0:
        notes.append("no uncorrelated noise from hidden layers: pooling cannot change the output noise")
    elif room <= 0:
        notes.append(
            f"the correlated noise ({budget.correlated:.4g}) and the output layer's own uncorrelated "
            f"noise ({own:.4g}) already exceed the allowed output variance {allowed:.4g}: no pooling "
            "or width reaches the target"
        )
    else:
        values["pooling"] = hidden / room
        widths = set(network.widths)
        if deep is not None and len(widths) == 1:
            values["width"] = max(1, math.ceil(network.widths[0] * values["pooling"] - 1e-9))
        note = (
            f"pooling factor {values['pooling']:.4g} brings the output variance to the allowed "
            f"{allowed:.4g} ({target_snr_db:g} dB), to first order"
        )
        if "width" in values:
            note += f"; so does the width {values['width']} (weights scaled to keep the function)"
        notes.append(note)
    return Remedies(**values, notes=tuple(notes))


# -------------------------------------------------------------------------------------- plot
def plot_noise_budget(design: Design, ax: Axes | None = None) -> Axes:
    """Stacked bars of the noise budget: one bar per source layer, one colour per kind.

    Kinds ``AU`` C0, ``AC`` C1, ``MU`` C2, ``MC`` C3, drawn for every kind with a non-zero
    intensity on some layer; bar heights are the first-order contributions to the output variance.

    Args:
        design: a :class:`Design`.
        ax: the axes to draw on (default: a new figure).

    Returns:
        The axes.
    """
    if not isinstance(design, Design):
        raise TypeError(
            f"design must be a Design (from noiseprop.design.design); got {type(design).__name__}."
        )
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots()
    rows = design.budget.contributions
    layers = list(range(1, len(rows) + 1))
    bottom = [0.0] * len(rows)
    for k, kind in enumerate(KINDS):
        if all(getattr(noise, kind) == 0 for noise in design.noise):
            continue
        heights = [row[k] for row in rows]
        ax.bar(layers, heights, bottom=bottom, color=f"C{k}", label=kind)
        bottom = [base + height for base, height in zip(bottom, heights)]
    ax.set_xticks(layers)
    ax.set_xlabel("source layer")
    ax.set_ylabel("contribution to output variance")
    ax.set_title("Output noise budget (first order)")
    if ax.containers:
        ax.legend(title="kind")
    return ax
