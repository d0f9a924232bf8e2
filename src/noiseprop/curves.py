"""Accuracy against noise intensity for each kind of noise, predicted and simulated, and its figure.

:func:`accuracy_curve` runs :func:`noiseprop.classification.accuracy` over a grid of intensities for each
kind of noise; :func:`plot_accuracy_curve` draws the result.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from noiseprop._validation import check_choice, check_nonnegative
from noiseprop.classification import _check_seed, _derived_seed, accuracy
from noiseprop.network import Network
from noiseprop.noise import KINDS, Noise, NoiseSpec

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes

__all__ = ["CURVE_METHODS", "accuracy_curve", "plot_accuracy_curve"]

CURVE_METHODS = {
    "predicted": {"method": "predicted", "predictor": "moments"},
    "first-order": {"method": "predicted", "predictor": "covariance"},
    "montecarlo": {"method": "montecarlo"},
}
"""The curves' methods and the :func:`~noiseprop.accuracy` arguments of each: the prediction beyond
first order (the default predictor), the first-order one, and the simulation."""


def accuracy_curve(
    network: Network,
    kinds: Iterable[str],
    intensities: Iterable[float],
    images: Any,
    labels: Any,
    *,
    methods: Iterable[str] = ("predicted", "montecarlo"),
    repeats: int = 100,
    points: int | None = None,
    seed: int = 0,
    layers: Iterable[int] | None = None,
    dtype: torch.dtype | str = "float32",
    device: str | torch.device = "cpu",
    batch_size: int = 256,
    progress: Callable[[str, int, int], None] | None = None,
) -> pd.DataFrame:
    """Accuracy against the intensity of each kind of noise, predicted and simulated.

    For every ``kind`` and every ``intensity`` the noise is ``Noise(**{kind: intensity})`` on every
    layer, or on ``layers`` only (1 = first hidden layer, ``depth`` = output layer), and
    :func:`accuracy` runs once per method. Point ``j`` of kind ``kind`` gets the seed
    ``SeedSequence([seed, KINDS.index(kind), j])`` (the same for both methods), so points are
    independent and a point's numbers do not depend on which other kinds or methods are swept.

    Args:
        network: a classifier.
        kinds: some of ``"AU"``, ``"AC"``, ``"MU"``, ``"MC"``.
        intensities: noise variances (>= 0).
        images, labels: as for :func:`accuracy`.
        methods: some of :data:`CURVE_METHODS`: ``"predicted"`` (beyond first order),
            ``"first-order"`` and ``"montecarlo"``.
        repeats, points, dtype, device, batch_size: passed to :func:`accuracy`.
        seed: seed of the sweep (integer >= 0).
        layers: the noisy layers (default: all).
        progress: called as ``progress(method, points_done, points)`` after each point of each
            method (a point: one kind at one intensity).

    Returns:
        A tidy ``pandas.DataFrame``, one row per (kind, intensity, method), columns ``kind``,
        ``intensity``, ``method``, ``accuracy``, ``stderr``, ``noise_free``.

    Example:
        >>> from noiseprop import Layer, Network
        >>> net = Network((Layer([[1.0], [0.0]], [0.0, 0.0], "linear"),))
        >>> frame = accuracy_curve(net, ["AU", "AC"], [0.5], [[1.0]], [0], methods=["predicted"])
        >>> frame[["kind", "intensity", "method"]].values.tolist()
        [['AU', 0.5, 'predicted'], ['AC', 0.5, 'predicted']]
        >>> [round(value, 2) for value in frame["accuracy"]]  # Phi(1), and AC cannot act on argmax
        [0.84, 1.0]
    """
    import pandas as pd

    if not isinstance(network, Network):
        raise TypeError(f"network must be a Network; got {type(network).__name__}.")
    kinds = _check_subset("kinds", kinds, KINDS)
    methods = _check_subset("methods", methods, tuple(CURVE_METHODS))
    levels = [
        check_nonnegative(f"intensities[{index}]", value, what="variance")
        for index, value in enumerate(_as_list("intensities", intensities))
    ]
    if not levels:
        raise ValueError("intensities must hold at least one variance >= 0; got none.")
    seed = _check_seed(seed)
    if layers is not None:
        layers = _as_list("layers", layers)
        for index, layer in enumerate(layers):
            if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)):
                raise TypeError(f"layers[{index}] must be a layer number; got {layer!r}.")
            if not 1 <= layer <= network.depth:
                raise ValueError(
                    f"layers[{index}] must be a layer number in 1..{network.depth} (1 = first hidden "
                    f"layer, {network.depth} = output layer); got {layer!r}."
                )
        if not layers:
            raise ValueError("layers must name at least one layer, or be None for all; got none.")
    rows = []
    for kind_index, kind in enumerate(kinds):
        for point, level in enumerate(levels):
            noise = Noise(**{kind: level})
            spec: NoiseSpec = noise if layers is None else noise.on_layers(layers)
            point_seed = _derived_seed(seed, KINDS.index(kind), point)
            for method in methods:
                result = accuracy(
                    network,
                    spec,
                    images,
                    labels,
                    **CURVE_METHODS[method],  # type: ignore[arg-type]
                    repeats=repeats,
                    points=points,
                    seed=point_seed,
                    dtype=dtype,
                    device=device,
                    batch_size=batch_size,
                )
                if progress is not None:  # this method's points so far
                    progress(method, kind_index * len(levels) + point + 1, len(kinds) * len(levels))
                rows.append(
                    {
                        "kind": kind,
                        "intensity": level,
                        "method": method,
                        "accuracy": result.accuracy,
                        "stderr": result.stderr,
                        "noise_free": result.noise_free,
                    }
                )
    return pd.DataFrame(rows, columns=list(_COLUMNS))


_COLUMNS = ("kind", "intensity", "method", "accuracy", "stderr", "noise_free")


def _as_list(name: str, values: Any) -> list[Any]:
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise TypeError(f"{name} must be a list; got {type(values).__name__} {values!r}.")
    return list(values)


def _check_subset(name: str, values: Any, allowed: Sequence[str]) -> list[str]:
    """A non-empty list of distinct members of ``allowed`` (a lone string counts as one)."""
    items = [values] if isinstance(values, str) else _as_list(name, values)
    listed = ", ".join(repr(option) for option in allowed)
    if not items:
        raise ValueError(f"{name} must hold one or more of {listed}; got none.")
    for index, item in enumerate(items):
        check_choice(f"{name}[{index}]", item, allowed)
    if len(set(items)) != len(items):
        raise ValueError(f"{name} must not repeat an entry; got {items!r}.")
    return items


def plot_accuracy_curve(frame: pd.DataFrame, ax: Axes | None = None, *, legend: bool = True) -> Axes:
    """Draw an :func:`accuracy_curve` frame: accuracy (in %) against intensity on a log axis.

    One colour per kind (:data:`noiseprop.figures.KIND_COLOURS`: ``AU`` blue, ``AC`` orange, ``MU``
    green, ``MC`` vermilion); predictions as lines (solid beyond first order, dotted first order),
    simulations as points with error bars of one standard error, and the noise-free accuracy as a
    dashed grey line. Rows with intensity 0 have no place on a log axis and are left out (the
    noise-free line stands for them).

    Args:
        frame: a frame with the columns of :func:`accuracy_curve`.
        ax: the axes to draw on (default: a new figure).
        legend: draw a legend on the axes (off when a figure of several panels has its own).

    Returns:
        The axes.
    """
    from noiseprop.figures import KIND_COLOURS, log_scale, percent_axis

    missing = [column for column in _COLUMNS if column not in getattr(frame, "columns", ())]
    if missing:
        raise ValueError(
            f"frame must have the columns of accuracy_curve ({', '.join(_COLUMNS)}); missing "
            f"{', '.join(missing)}."
        )
    unknown = sorted(set(frame["method"]) - set(CURVE_METHODS))
    if unknown:
        raise ValueError(
            f"frame['method'] must hold 'predicted', 'first-order' or 'montecarlo'; got {unknown}."
        )
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots()
    shown = frame[frame["intensity"] > 0].sort_values("intensity")
    for kind in [kind for kind in KINDS if kind in set(frame["kind"])]:
        _plot_kind(ax, shown[shown["kind"] == kind], kind, KIND_COLOURS[kind])
    for value in sorted(set(frame["noise_free"])):
        ax.axhline(value, color="0.5", linestyle="--", linewidth=1, label="noise-free")
    log_scale(ax, "x")
    percent_axis(ax)
    ax.set_xlabel("noise intensity D (variance)")
    ax.set_ylabel("test accuracy (%)")
    if legend:
        ax.legend()
    return ax


CURVE_LINES = {"predicted": ("-", "predicted"), "first-order": (":", "first order")}
"""Line style and label of each predicted curve."""


def _plot_kind(ax: Axes, rows: pd.DataFrame, kind: str, colour: str) -> None:
    """One kind's curves: each prediction as a line, the simulation as points ± one standard
    error."""
    for method, (style, name) in CURVE_LINES.items():
        line = rows[rows["method"] == method]
        if len(line):
            ax.plot(line["intensity"], line["accuracy"], style, color=colour, label=f"{kind} {name}")
    simulated = rows[rows["method"] == "montecarlo"]
    if len(simulated):
        ax.errorbar(
            simulated["intensity"],
            simulated["accuracy"],
            yerr=simulated["stderr"],
            fmt="o",
            color=colour,
            markersize=4,
            capsize=2,
            zorder=3,
            label=f"{kind} simulated",
        )
