"""The one result type of predictions and simulations, and their comparison (docs/THEORY.md 1, 5).

Definitions used everywhere in the package:

* per-neuron SNR: ``snr = mean^2 / variance`` of that neuron's output for one input, and
  ``snr_db = 10 log10(snr)``;
* per-layer SNR: ``<mean^2> / <variance>``, averages over the layer's neurons and the inputs (signal
  power over noise power);
* per-layer variance: ``<variance>``, the average over the layer's neurons and the inputs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import torch
from torch import Tensor

from noiseprop.noise import Noise

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["Comparison", "LayerStatistics", "NoiseStatistics", "compare"]

Method = Literal["covariance", "moments", "meanfield", "symmetric", "montecarlo"]


def _snr(mean: Tensor, variance: Tensor) -> Tensor:
    return mean.square() / variance


@dataclass(frozen=True, eq=False, repr=False)
class LayerStatistics:
    """Noise statistics of one layer's outputs, for every input and neuron.

    Attributes:
        mean: ``(inputs, neurons)``: the noise-free output for a prediction, the sample mean of the
            noisy output for a simulation.
        variance: ``(inputs, neurons)`` noise variance of every neuron's output.
        covariance: ``(inputs, neurons, neurons)`` when asked for, else ``None``.
        mean_stderr: standard error of ``mean`` (simulations; ``None`` for predictions).
        variance_stderr: standard error of ``variance`` (simulations, by batch means over
            independent groups of repeats; ``None`` for predictions).
        input_variance_stderr: ``(inputs,)`` standard error of each input's layer variance
            ``variance.mean(-1)`` (simulations, batch means; ``None`` for predictions).
        layer_variance_stderr: standard error of the per-layer variance ``variance.mean()``
            (simulations, batch means; ``None`` for predictions).
        shape: the per-presentation shape of the layer's (or site's) output, e.g. ``(8, 24, 24)``
            for a convolutional feature map whose neurons are flattened in ``mean`` and ``variance``;
            ``None`` for a dense layer, ``(neurons,)``.
    """

    mean: Tensor
    variance: Tensor
    covariance: Tensor | None = None
    mean_stderr: Tensor | None = None
    variance_stderr: Tensor | None = None
    input_variance_stderr: Tensor | None = None
    layer_variance_stderr: float | None = None
    shape: tuple[int, ...] | None = None

    @property
    def neuron_shape(self) -> tuple[int, ...]:
        """The per-presentation shape of the output: ``shape``, or ``(neurons,)``."""
        return self.shape if self.shape is not None else (int(self.mean.shape[-1]),)

    @property
    def snr(self) -> Tensor:
        """Per-neuron SNR ``mean^2 / variance`` (``inf`` where the variance is 0)."""
        return _snr(self.mean, self.variance)

    @property
    def snr_db(self) -> Tensor:
        """Per-neuron SNR in decibels, ``10 log10(mean^2 / variance)``."""
        return 10 * torch.log10(self.snr)

    def __repr__(self) -> str:
        """One line: the shape and the mean variance, not every tensor."""
        inputs, neurons = (int(size) for size in self.variance.shape[:2])
        shape = "" if self.shape is None else f", shape {self.shape}"
        extra = ", with covariance" if self.covariance is not None else ""
        return (
            f"LayerStatistics({inputs} inputs x {neurons} neurons{shape}; variance "
            f"{self.layer_variance:.4g}{extra})"
        )

    @property
    def layer_variance(self) -> float:
        """Average variance over neurons and inputs."""
        return float(self.variance.mean())

    @property
    def input_variance(self) -> Tensor:
        """``(inputs,)`` variance averaged over the layer's neurons, for every input."""
        return self.variance.mean(-1)

    @property
    def layer_snr(self) -> float:
        """Per-layer SNR ``<mean^2> / <variance>``."""
        variance = self.layer_variance
        power = float(self.mean.square().mean())
        return power / variance if variance > 0 else math.inf


@dataclass(frozen=True, eq=False, repr=False)
class NoiseStatistics:
    """Per-layer noise statistics of a network for a batch of inputs, predicted or simulated.

    For a torch model with noise sites (:mod:`noiseprop.sites`) the "layers" are its sites, in the
    order the forward pass reaches them, each named by its module path (``name#k`` for the k-th call
    of a module called several times), followed by the model's output (``"output"``) when that is not
    a site's output.

    Attributes:
        layers: one :class:`LayerStatistics` per layer (first hidden layer first) or site.
        method: ``"covariance"``, ``"meanfield"`` or ``"symmetric"`` (predictions) or
            ``"montecarlo"`` (simulations).
        noise: the noise of every layer or site.
        repeats: noise draws per input (simulations; ``None`` for predictions).
        names: the site names of a model; ``None`` for a dense network (its layers are named by
            number, ``"1"`` to ``"depth"``).
    """

    layers: tuple[LayerStatistics, ...]
    method: Method
    noise: tuple[Noise, ...]
    repeats: int | None = None
    names: tuple[str, ...] | None = None

    @property
    def site_names(self) -> tuple[str, ...]:
        """The name of every layer: a model's site names, or ``"1"``... for a dense network."""
        if self.names is not None:
            return self.names
        return tuple(str(number) for number in range(1, len(self.layers) + 1))

    @property
    def is_simulation(self) -> bool:
        return self.method == "montecarlo"

    def __len__(self) -> int:
        return len(self.layers)

    def __getitem__(self, index: int) -> LayerStatistics:
        return self.layers[index]

    def to_frame(self) -> pd.DataFrame:
        """Tidy table, one row per (layer, neuron, input).

        Columns: ``layer`` (1-based), ``site`` (:attr:`site_names`), ``neuron`` (the flat index
        into the layer's :attr:`LayerStatistics.neuron_shape`), ``input``, ``mean``, ``variance``,
        ``snr``, ``snr_db``, ``mean_stderr``, ``variance_stderr`` (NaN for predictions),
        ``method``.
        """
        import numpy as np
        import pandas as pd

        frames = []
        for number, (name, stats) in enumerate(zip(self.site_names, self.layers), start=1):
            inputs, neurons = stats.mean.shape
            mean = stats.mean.double().cpu().numpy()
            variance = stats.variance.double().cpu().numpy()
            nan = np.full_like(mean, np.nan)

            def _column(tensor: Tensor | None, fallback: np.ndarray = nan) -> np.ndarray:
                return fallback if tensor is None else tensor.double().cpu().numpy()

            with np.errstate(divide="ignore", invalid="ignore"):
                snr = mean**2 / variance
                snr_db = 10 * np.log10(snr)
            frames.append(
                pd.DataFrame(
                    {
                        "layer": number,
                        "site": name,
                        "neuron": np.tile(np.arange(neurons), inputs),
                        "input": np.repeat(np.arange(inputs), neurons),
                        "mean": mean.ravel(),
                        "variance": variance.ravel(),
                        "snr": snr.ravel(),
                        "snr_db": snr_db.ravel(),
                        "mean_stderr": _column(stats.mean_stderr).ravel(),
                        "variance_stderr": _column(stats.variance_stderr).ravel(),
                    }
                )
            )
        frame = pd.concat(frames, ignore_index=True)
        frame["method"] = self.method
        return frame

    def __repr__(self) -> str:
        """One line: method, inputs, and every layer's (or site's) mean variance."""
        inputs = int(self.layers[0].variance.shape[0]) if self.layers else 0
        layers = ", ".join(
            f"{name}: {stats.layer_variance:.4g}" for name, stats in zip(self.site_names, self.layers)
        )
        drawn = "" if self.repeats is None else f", {self.repeats} repeats"
        return f"NoiseStatistics({self.method}{drawn}, {inputs} inputs; variance {layers})"

    def _repr_html_(self) -> str:
        """A table in notebooks: :meth:`summary`."""
        return f"<p><code>{self!r}</code></p>" + self.summary().to_html(index=False)

    def summary(self) -> pd.DataFrame:
        """One row per layer: ``layer``, ``site``, ``neurons``, ``mean`` (average output),
        ``variance`` (average over neurons and inputs), ``variance_stderr`` (NaN for predictions),
        ``snr`` (``<mean^2>/<variance>``) and ``snr_db``."""
        import pandas as pd

        rows = []
        for number, (name, stats) in enumerate(zip(self.site_names, self.layers), start=1):
            snr = stats.layer_snr
            rows.append(
                {
                    "layer": number,
                    "site": name,
                    "neurons": int(stats.mean.shape[1]),
                    "mean": float(stats.mean.mean()),
                    "variance": stats.layer_variance,
                    "variance_stderr": (
                        math.nan if stats.layer_variance_stderr is None else stats.layer_variance_stderr
                    ),
                    "snr": snr,
                    "snr_db": 10 * math.log10(snr) if snr > 0 else -math.inf,
                }
            )
        return pd.DataFrame(rows)

    def per_input(self) -> pd.DataFrame:
        """One row per (layer, input): ``layer``, ``site``, ``input``, ``mean`` and ``variance``
        averaged over the layer's neurons, ``variance_stderr`` (NaN for predictions) and ``snr``
        (``<mean^2> / <variance>`` over the layer's neurons for that input)."""
        import numpy as np
        import pandas as pd

        frames = []
        for number, (name, stats) in enumerate(zip(self.site_names, self.layers), start=1):
            variance = stats.input_variance.double().cpu().numpy()
            power = stats.mean.double().square().mean(-1).cpu().numpy()
            stderr = stats.input_variance_stderr
            with np.errstate(divide="ignore", invalid="ignore"):
                snr = power / variance
            frames.append(
                pd.DataFrame(
                    {
                        "layer": number,
                        "site": name,
                        "input": np.arange(len(variance)),
                        "mean": stats.mean.double().mean(-1).cpu().numpy(),
                        "variance": variance,
                        "variance_stderr": (
                            np.full_like(variance, np.nan)
                            if stderr is None
                            else stderr.double().cpu().numpy()
                        ),
                        "snr": snr,
                    }
                )
            )
        return pd.concat(frames, ignore_index=True)

    def compare(self, simulation: NoiseStatistics, *, sigmas: float = 3.0) -> Comparison:
        """Compare this prediction with a simulation: see :func:`compare`."""
        return compare(self, simulation, sigmas=sigmas)


@dataclass(frozen=True, eq=False)
class Comparison:
    """A prediction beside a simulation, layer by layer.

    Attributes:
        prediction: the analytic result.
        simulation: the Monte Carlo result.
        sigmas: how many standard errors count as agreement.
    """

    prediction: NoiseStatistics
    simulation: NoiseStatistics
    sigmas: float = 3.0

    def to_frame(self) -> pd.DataFrame:
        """One row per layer.

        Columns: ``layer``; ``predicted`` and ``simulated`` per-layer variance (average over neurons
        and inputs); ``stderr`` of the simulated one; ``relative_error`` =
        ``(predicted - simulated) / simulated``; ``z`` = ``(predicted - simulated) / stderr``;
        ``within`` = ``|z| <= sigmas``; the per-layer SNR in dB of both.
        """
        import pandas as pd

        rows = []
        for number, (predicted, simulated) in enumerate(
            zip(self.prediction.layers, self.simulation.layers), start=1
        ):
            expected = predicted.layer_variance
            measured = simulated.layer_variance
            stderr = simulated.layer_variance_stderr
            stderr = math.nan if stderr is None else stderr
            difference = expected - measured
            if stderr > 0:
                z = difference / stderr
            else:
                z = 0.0 if difference == 0 else math.copysign(math.inf, difference)
            rows.append(
                {
                    "layer": number,
                    "predicted": expected,
                    "simulated": measured,
                    "stderr": stderr,
                    "relative_error": difference / measured if measured else math.nan,
                    "z": z,
                    "within": bool(abs(z) <= self.sigmas),
                    "predicted_snr_db": _db(predicted.layer_snr),
                    "simulated_snr_db": _db(simulated.layer_snr),
                }
            )
        return pd.DataFrame(rows)

    def per_input(self) -> pd.DataFrame:
        """One row per (layer, input): the columns of :meth:`to_frame` (without the SNRs) for the
        variance averaged over the layer's neurons for that input."""
        import pandas as pd

        frames = []
        for number, (predicted, simulated) in enumerate(
            zip(self.prediction.layers, self.simulation.layers), start=1
        ):
            expected = predicted.input_variance.double().cpu()
            measured = simulated.input_variance.double().cpu()
            stderr = simulated.input_variance_stderr
            stderr = torch.full_like(measured, math.nan) if stderr is None else stderr.double().cpu()
            difference = expected - measured
            z = torch.where(stderr > 0, difference / stderr, torch.where(difference == 0, 0.0, math.inf))
            frames.append(
                pd.DataFrame(
                    {
                        "layer": number,
                        "input": range(len(expected)),
                        "predicted": expected.numpy(),
                        "simulated": measured.numpy(),
                        "stderr": stderr.numpy(),
                        "relative_error": (difference / measured).numpy(),
                        "z": z.numpy(),
                        "within": (z.abs() <= self.sigmas).numpy(),
                    }
                )
            )
        return pd.concat(frames, ignore_index=True)

    @property
    def all_within(self) -> bool:
        """True when every layer agrees within ``sigmas`` standard errors."""
        return bool(self.to_frame()["within"].all())

    @property
    def max_relative_error(self) -> float:
        """The largest ``|relative_error|`` over the layers."""
        return float(self.to_frame()["relative_error"].abs().max())


def _db(ratio: float) -> float:
    return 10 * math.log10(ratio) if ratio > 0 else -math.inf


def compare(
    prediction: NoiseStatistics, simulation: NoiseStatistics, *, sigmas: float = 3.0
) -> Comparison:
    """Put a prediction beside a simulation of the same network, noise and inputs.

    Raises:
        ValueError: if ``simulation`` is not a Monte Carlo result, or the shapes differ.
    """
    if not simulation.is_simulation:
        raise ValueError(
            f"compare: simulation must be a Monte Carlo result; got method {simulation.method!r}."
        )
    if prediction.is_simulation:
        raise ValueError("compare: prediction must be an analytic result; got a simulation.")
    shapes = [tuple(layer.mean.shape) for layer in prediction.layers]
    other = [tuple(layer.mean.shape) for layer in simulation.layers]
    if shapes != other:
        raise ValueError(
            f"compare: prediction and simulation differ in shape ({shapes} vs {other}); "
            "they must come from the same network and inputs."
        )
    if not (sigmas > 0 and math.isfinite(sigmas)):
        raise ValueError(f"sigmas must be a finite number > 0; got {sigmas!r}.")
    return Comparison(prediction, simulation, sigmas)
