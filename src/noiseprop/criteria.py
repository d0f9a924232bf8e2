"""Design criteria: gains, bounded accumulation, noise budget, tolerable noise (docs/THEORY.md 7).

:func:`design` answers the engineer's questions about a network, a noise specification and a set of
inputs; :func:`plot_noise_budget` draws the budget. Definitions used throughout:

* ``g = f'(x-bar)``: the slopes at the noise-free operating point of the given inputs.
* Output variance: the noise variance of the output layer averaged over its neurons and the inputs;
  output SNR ``<mean^2> / <variance>`` (the per-layer SNR of :mod:`noiseprop.results`), in dB
  ``10 log10``.
* First-order (linearised) recursion: docs/THEORY.md section 3 without the products of intensities
  with upstream noise (``D_MC C`` and ``D_MU diag(C)``)::

      C^n = diag(g) W C^{n-1} W^T diag(g) + Q^n,
      Q^n = diag(D_AU + m^2 D_MU) + D_AC 11^T + D_MC m m^T

  with ``m = s-bar`` (injection after the activation); before it, ``m = x-bar`` and
  ``diag(g) Q^n diag(g)`` replaces ``Q^n``. It is linear in the intensities, so the output variance is
  a sum of one part per source ``(layer, kind)``; it equals :func:`~noiseprop.propagate` exactly for
  additive noise, and to first order otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import nn

from noiseprop._inputs import as_inputs
from noiseprop._validation import MAX_REPEATS, check_finite, check_positive, check_positive_int
from noiseprop.analytic import propagate
from noiseprop.classification import _check_data, _check_points, _check_seed, accuracy
from noiseprop.network import Network
from noiseprop.noise import KINDS, Noise, NoiseSpec, per_layer
from noiseprop.sites import SiteSelector

if TYPE_CHECKING:
    from matplotlib.axes import Axes

from noiseprop.budget import (
    LayerGain,
    NoiseBudget,
    _deep_limit,
    _first_order_total,
    _gains,
    _unit_parts,
)
from noiseprop.tolerance import Remedies, Tolerance, _db, _remedies, _Solver

__all__ = ["Design", "ModelDesign", "design", "design_model", "plot_noise_budget"]

Growth = Literal["bounded", "linear", "geometric"]
_UNIT = 1e-9
"""``|ratio - 1| <= _UNIT`` counts as ratio one (linear growth): ``(1/N) N`` is not always 1.0."""


@dataclass(frozen=True, kw_only=True, eq=False)
class Design:
    """Design criteria of a network under noise: see :func:`design`.

    Attributes:
        gains: one :class:`LayerGain` per layer.
        growth: how noise would accumulate over depth: ``"bounded"``, ``"linear"`` (ratio one) or
            ``"geometric"``.
        growth_ratio: repeating networks: the ratio ``r`` of the variance recursion at the deep
            operating point; otherwise the largest transfer gain of layers 2..depth.
        repeating: whether layers 2..depth repeat one symmetric layer (docs/THEORY.md section 2).
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
    points: int | None = None,
    rtol: float = 1e-3,
) -> Design:
    """Per-layer gains, bounded accumulation, noise budget, tolerable noise and remedies.

    **Gains and verdict.** :class:`LayerGain` gives the mean-field gains ``<g^2> N_in <W^2>`` and
    ``<g>^2 N_in^2 <W>^2`` of every layer (docs/THEORY.md section 3). Accumulation is bounded when
    the gains of layers 2..depth are below one (the generalised slope criterion); ``growth_ratio`` is
    the largest. When layers 2..depth repeat one symmetric layer (weight ``w``, bias ``b``, ``N``
    neurons, fan-in ``N_in``; docs/THEORY.md section 2), the verdict is that of the exact recursion of
    the layer average instead, linearised at the deep operating point ``s* = f(w N_in s* + b)`` (the
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
        points: quasi-random points per input of the predicted accuracy (a power of two >= 64;
            default: that of :func:`~noiseprop.accuracy`).
        rtol: relative precision of the tolerable intensities.

    Returns:
        A :class:`Design`.

    Raises:
        ValueError: for a target out of range, ``target_accuracy`` without labels or above the
            noise-free accuracy, or a parameter out of range (the message names it).

    Example:
        The symmetric sigmoid network of docs/THEORY.md section 2 with correlated additive noise:

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
    options = _Options.checked(
        target_snr_db, target_accuracy, labels, len(x), check, repeats, seed, sigmas, points, rtol
    )
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
        result = accuracy(
            network, noises, x, target, method="predicted", points=options.points, seed=options.seed
        )
        predicted_accuracy, noise_free = result.accuracy, result.noise_free
        options.within_reach(noise_free)

    pattern = tuple(n for n, layer in enumerate(noises, 1) if not layer.is_zero) or tuple(
        range(1, network.depth + 1)
    )
    solver = _Solver(
        network, noises, x, target, pattern, unit, signal_power, options.repeats, options.seed,
        options.sigmas, options.points,
    )  # fmt: skip
    tolerances = options.tolerances(solver)
    remedies = _remedies(network, gains, deep, budget, signal_power, options.target_snr_db)
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
        tolerances=tolerances,
        remedies=remedies,
        noise=noises,
    )


@dataclass(frozen=True, kw_only=True, eq=False)
class ModelDesign:
    """Design criteria of a torch model under noise: see :func:`design_model`.

    Attributes:
        names: the site modules (:func:`noiseprop.find_sites`).
        noise: the noise of every site module.
        calls: the site calls (``name#k`` for the k-th call of a module called several times).
        gains: per site call, per kind (order of :data:`~noiseprop.noise.KINDS`): the output variance
            per unit of that kind's intensity at that call alone, to first order (averaged over the
            output elements and the inputs).
        budget: the :class:`NoiseBudget` by site call and kind at the given noise.
        signal_power: ``<mean^2>`` of the output (noise-free).
        accuracy: predicted accuracy at the given noise (with labels; else ``None``): by
            :func:`~noiseprop.accuracy`'s default predictor for a model (beyond first order where
            the input of its last nonlinear site is narrow enough, first order otherwise).
        noise_free_accuracy: accuracy without noise (with labels; else ``None``).
        tolerances: one :class:`Tolerance` per kind and target given (``layers``: the noisy site
            modules, numbered from 1 in the order of ``names``), for the kinds that can be
            linearised.
        refused: ``{kind: reason}`` for the kinds the model cannot be linearised for (their gains
            are ``nan`` and they have no tolerance): e.g. uncorrelated noise at tied max-pooling
            inputs.
    """

    names: tuple[str, ...]
    noise: tuple[Noise, ...]
    calls: tuple[str, ...]
    gains: tuple[tuple[float, float, float, float], ...]
    budget: NoiseBudget
    signal_power: float
    accuracy: float | None
    noise_free_accuracy: float | None
    tolerances: tuple[Tolerance, ...]
    refused: Mapping[str, str]

    @property
    def snr_db(self) -> float:
        """Predicted output SNR in dB at the given noise (first order)."""
        return _db(self.signal_power, self.budget.first_order_total)

    def as_dict(self) -> dict[str, Any]:
        """Plain values (for JSON)."""
        return {
            "sites": list(self.names),
            "noise": [str(noise) for noise in self.noise],
            "signal_power": self.signal_power,
            "output_variance": self.budget.first_order_total,
            "snr_db": self.snr_db,
            "accuracy": self.accuracy,
            "noise_free_accuracy": self.noise_free_accuracy,
            "gains": [
                {"site": call, **dict(zip(KINDS, row))} for call, row in zip(self.calls, self.gains)
            ],
            "budget": self.budget.as_dict(),
            "tolerances": [tolerance.as_dict() for tolerance in self.tolerances],
            "refused": dict(self.refused),
        }


def design_model(
    model: nn.Module,
    noise: Noise | Sequence[Noise] | Mapping[str, Noise],
    inputs: Any,
    *,
    sites: SiteSelector = None,
    target_snr_db: float | None = None,
    target_accuracy: float | None = None,
    labels: Any = None,
    check: bool = True,
    repeats: int = 1000,
    seed: int = 0,
    sigmas: float = 3.0,
    points: int | None = None,
    rtol: float = 1e-3,
) -> ModelDesign:
    """The design criteria of :func:`design` for any torch model, on its first-order linearisation
    (:mod:`noiseprop.model_analytic`, docs/THEORY.md section 8): per-site gains, the noise budget by
    site call and kind, the predicted accuracy and the tolerable noise of each kind, each confirmed
    by one simulation.

    **Gains**: the output variance per unit intensity of each kind at each site call alone (one
    linearisation per kind at unit intensity; a kind the model is not differentiable for, see
    below, gets ``nan`` gains, no tolerance, and its reason in ``refused``). **Budget**:
    :func:`noiseprop.budget.model_budget`.
    **Tolerable noise**: for each kind, the same intensity on every site module that is noisy in
    ``noise`` (every site when none is), the other kinds off; for ``target_snr_db`` the
    linearisation is linear in the intensity, so ``D = <mean^2> / (10^(SNR/10) sum gains)`` (the
    bisection of :func:`design` confirms it at once); for ``target_accuracy`` bisection on the
    predicted accuracy. With ``check``, one simulation at that intensity (``repeats`` draws) says
    whether the target is met within ``sigmas`` standard errors.

    The arguments are those of :func:`design`, with ``sites`` the model's noise sites and
    ``inputs`` a batch as the model takes it.

    Raises:
        ValueError: as :func:`design`; and where the model is not differentiable at the noise-free
            input in the direction of the noise (tied max-pooling inputs), which a linearisation
            cannot represent.
    """
    from noiseprop.budget import model_budget
    from noiseprop.model_analytic import NotDifferentiableError, linearised_model
    from noiseprop.model_montecarlo import _exact, as_model_inputs, model_outputs
    from noiseprop.sites import find_sites, site_noises

    x = as_model_inputs(inputs, dtype=torch.float64, device=torch.device("cpu"))
    names = tuple(name for name, _ in find_sites(model, sites))
    noises = site_noises(noise, names)
    options = _Options.checked(
        target_snr_db, target_accuracy, labels, len(x), check, repeats, seed, sigmas, points, rtol
    )
    exact = _exact(names)
    budget = model_budget(model, noises, x, sites=exact)
    refused: dict[str, str] = {}
    columns: dict[str, dict[str, float]] = {}
    calls: dict[str, str] = {}
    for kind in KINDS:
        unit_noise = [Noise(**{kind: 1.0}, injection=site.injection) for site in noises]
        try:
            _, parts, calls = linearised_model(model, unit_noise, x, sites=exact, site_variances=False)
        except NotDifferentiableError as error:
            refused[kind] = str(error)
            continue
        columns[kind] = {
            call: float(part.diagonal(dim1=-2, dim2=-1).mean()) for (call, _), part in parts.items()
        }
    if not calls:  # every kind refused: the calls from a noise-free linearisation
        calls = linearised_model(model, Noise(), x, sites=exact, site_variances=False)[2]
    gains = tuple(
        tuple(columns[kind].get(call, 0.0) if kind in columns else math.nan for kind in KINDS)
        for call in calls
    )
    unit = torch.zeros(len(names), len(KINDS), dtype=torch.float64)
    for site, row in zip(calls.values(), gains):
        unit[names.index(site)] += torch.tensor(row, dtype=torch.float64)
    unit = unit.nan_to_num(nan=0.0)
    output = model_outputs(model, x, dtype=torch.float64, device=x.device, batch_size=len(x))
    signal_power = float(output.square().mean())
    predicted_accuracy = noise_free = target = None
    if labels is not None:
        result = accuracy(
            model, noises, x, labels, method="predicted", points=options.points,
            seed=options.seed, sites=exact,
        )  # fmt: skip
        predicted_accuracy, noise_free = result.accuracy, result.noise_free
        target = torch.as_tensor(labels).long()
        options.within_reach(noise_free)
    pattern = tuple(n for n, site in enumerate(noises, 1) if not site.is_zero) or tuple(
        range(1, len(names) + 1)
    )
    solver = _Solver(
        model, noises, x, target, pattern, unit, signal_power, options.repeats, options.seed,
        options.sigmas, options.points, names=names, sites=exact,
    )  # fmt: skip
    tolerances = options.tolerances(solver, [kind for kind in KINDS if kind not in refused])
    return ModelDesign(
        names=names,
        noise=noises,
        calls=tuple(calls),
        gains=gains,
        budget=budget,
        signal_power=signal_power,
        accuracy=predicted_accuracy,
        noise_free_accuracy=noise_free,
        tolerances=tolerances,
        refused=refused,
    )


@dataclass(frozen=True)
class _Options:
    """The checked options of :func:`design` and :func:`design_model`."""

    target_snr_db: float | None
    target_accuracy: float | None
    check: bool
    repeats: int
    seed: int
    sigmas: float
    points: int | None
    rtol: float

    def within_reach(self, noise_free: float) -> None:
        """Refuse an accuracy target above the noise-free accuracy: no intensity reaches it."""
        if self.target_accuracy is not None and self.target_accuracy > noise_free:
            raise ValueError(
                f"target_accuracy must be at most the noise-free accuracy of these inputs, "
                f"{noise_free:.6g}; got {self.target_accuracy!r}. No noise intensity can reach it."
            )

    def tolerances(self, solver: _Solver, kinds: Sequence[str] = KINDS) -> tuple[Tolerance, ...]:
        """One :class:`Tolerance` per kind and target given."""
        found = []
        for criterion, value in (("snr_db", self.target_snr_db), ("accuracy", self.target_accuracy)):
            if value is not None:
                found += [solver.solve(kind, criterion, value, self.rtol, self.check) for kind in kinds]
        return tuple(found)

    @classmethod
    def checked(
        cls, target_snr_db: Any, target_accuracy: Any, labels: Any, count: int, check: Any,
        repeats: Any, seed: Any, sigmas: Any, points: Any, rtol: Any,
    ) -> _Options:  # fmt: skip
        if target_snr_db is not None:
            target_snr_db = check_finite("target_snr_db", target_snr_db)
        if target_accuracy is not None:
            target_accuracy = _check_fraction(target_accuracy)
            if labels is None:
                raise ValueError(
                    "target_accuracy needs labels: the class of every input (an array of shape "
                    f"({count},)); got labels=None."
                )
        if not isinstance(check, bool):
            raise TypeError(f"check must be True or False; got {check!r}.")
        rtol = check_positive("rtol", rtol)
        if rtol >= 1:
            raise ValueError(f"rtol must be a relative precision in (0, 1); got {rtol!r}.")
        return cls(
            target_snr_db=target_snr_db,
            target_accuracy=target_accuracy,
            check=check,
            repeats=check_positive_int("repeats", repeats, minimum=2, maximum=MAX_REPEATS),
            seed=_check_seed(seed),
            sigmas=check_positive("sigmas", sigmas),
            points=None if points is None else _check_points(points),
            rtol=rtol,
        )


def _check_fraction(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(
            f"target_accuracy must be a fraction in (0, 1]; got {type(value).__name__} {value!r}."
        )
    if not 0 < value <= 1:
        raise ValueError(f"target_accuracy must be a fraction in (0, 1]; got {value!r}.")
    return float(value)


# -------------------------------------------------------------------------------------- plot
def plot_noise_budget(design: Design | ModelDesign, ax: Axes | None = None) -> Axes:
    """Stacked bars of the noise budget: one bar per source layer (or site call of a model), one
    colour per kind.

    Kinds ``AU`` C0, ``AC`` C1, ``MU`` C2, ``MC`` C3, drawn for every kind with a non-zero
    intensity on some layer; bar heights are the first-order contributions to the output variance.

    Args:
        design: a :class:`Design` or a :class:`ModelDesign`.
        ax: the axes to draw on (default: a new figure).

    Returns:
        The axes.
    """
    if not isinstance(design, (Design, ModelDesign)):
        raise TypeError(
            "design must be a Design or a ModelDesign (from noiseprop.design or design_model); got "
            f"{type(design).__name__}."
        )
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots()
    rows = design.budget.contributions
    layers = list(range(1, len(rows) + 1))
    model = isinstance(design, ModelDesign)
    bottom = [0.0] * len(rows)
    for k, kind in enumerate(KINDS):
        if all(getattr(noise, kind) == 0 for noise in design.noise):
            continue
        heights = [row[k] for row in rows]
        ax.bar(layers, heights, bottom=bottom, color=f"C{k}", label=kind)
        bottom = [base + height for base, height in zip(bottom, heights)]
    ax.set_xticks(layers, list(design.calls) if model else layers)
    ax.set_xlabel("source site" if model else "source layer")
    ax.set_ylabel("contribution to output variance")
    ax.set_title("Output noise budget (first order)")
    if ax.containers:
        ax.legend(title="kind")
    return ax
