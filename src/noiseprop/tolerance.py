"""Tolerable noise and remedies: the largest intensity of each kind that keeps a target output SNR
or accuracy, and what would change the verdict (docs/THEORY.md sections 2, 3 and 7)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from torch import Tensor, nn

from noiseprop._validation import check_choice
from noiseprop.analytic import propagate
from noiseprop.budget import LayerGain, NoiseBudget
from noiseprop.classification import _derived_seed, accuracy
from noiseprop.model_analytic import linearised_model
from noiseprop.montecarlo import simulate
from noiseprop.network import Network
from noiseprop.noise import KINDS, Noise

__all__ = ["Remedies", "Tolerance"]

_LOWEST, _HIGHEST = 1e-30, 1e4
"""Range of intensities searched for the tolerable noise."""
_UNCORRELATED = ("AU", "MU")
_ROUNDING = 1e-9
"""A predicted value this close below the target (dB or accuracy) counts as meeting it."""


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
    """What would change the verdict (closed forms of docs/THEORY.md sections 2, 3 and 7).

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
        pooling: with ``target_snr_db``: the pooling factor ``P`` (docs/THEORY.md section 7: ``P``
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


# ---------------------------------------------------------------------------- tolerable noise
@dataclass(frozen=True)
class _Solver:
    """Bisection for the tolerable noise of a network, or of a torch model (``names``: its site
    modules, ``pattern`` indexing them from 1; ``sites`` its site selector)."""

    network: Network | nn.Module
    noises: tuple[Noise, ...]
    x: Tensor
    labels: Tensor | None
    pattern: tuple[int, ...]
    unit: Tensor
    signal_power: float
    repeats: int
    seed: int
    sigmas: float
    points: int | None
    names: tuple[str, ...] = ()
    sites: Any = None

    def spec(self, kind: str, intensity: float) -> dict[Any, Noise]:
        return {
            (self.names[n - 1] if self.names else n): Noise(
                **{kind: intensity}, injection=self.noises[n - 1].injection
            )
            for n in self.pattern
        }

    @property
    def options(self) -> dict[str, Any]:
        """``sites`` for a model (exact names), nothing for a network."""
        return {"sites": self.sites} if self.names else {}

    def predict(self, kind: str, criterion: str, intensity: float) -> float:
        spec = self.spec(kind, intensity)
        if criterion == "snr_db":
            if self.names:
                statistics = linearised_model(
                    self.network, spec, self.x, sites=self.sites, site_variances=False
                )[0]
                return _db(self.signal_power, statistics[-1].layer_variance)
            return _db(self.signal_power, propagate(self.network, spec, self.x)[-1].layer_variance)
        result = accuracy(
            self.network,
            spec,
            self.x,
            self.labels,
            method="predicted",
            points=self.points,
            seed=self.seed,
            **self.options,
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
                **self.options,
            )
            return result.accuracy, result.stderr
        runs = simulate(self.network, spec, self.x, repeats=self.repeats, seed=seed, **self.options)
        output = runs[-1]
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
        if values["pooling"] <= 1:
            note = (
                f"the target {target_snr_db:g} dB is met without pooling: the output variance may grow "
                f"to {allowed:.4g} (the uncorrelated part could be {1 / values['pooling']:.3g} times "
                "larger), to first order"
            )
        else:
            note = (
                f"pooling factor {values['pooling']:.4g} brings the output variance to the allowed "
                f"{allowed:.4g} ({target_snr_db:g} dB), to first order"
            )
        if "width" in values:
            note += f"; so does the width {values['width']} (weights scaled to keep the function)"
        notes.append(note)
    return Remedies(**values, notes=tuple(notes))


def _db(power: float, variance: float) -> float:
    """SNR in dB of a signal power over a noise variance (``inf`` without noise)."""
    if variance <= 0:
        return math.inf
    return 10 * math.log10(power / variance) if power > 0 else -math.inf
