"""Figures of the study, drawn from the sweeps' tidy tables (one function per figure).

Every ``plot_*`` function takes the table and a matplotlib ``Axes`` and returns that ``Axes``, so the
report and a user's notebook draw with the same code. The conventions hold in every figure:

* one colour per kind of noise, :data:`KIND_COLOURS` (a colour-blind-safe palette): blue ``AU``,
  orange ``AC``, green ``MU``, vermilion ``MC``; what is not one kind (mixed noise) is dark grey;
* simulations are points with error bars (± one standard error), predictions are lines (or open
  markers where a prediction exists at the simulated points only), methods differ by marker and line
  style, never by colour;
* layers are numbered 1, 2, ... (1 = first hidden layer), on integer ticks.

Tables have the columns of :mod:`noiseprop.experiments`: the swept parameters, ``layer``, ``method``
(``montecarlo`` or a prediction method), ``variance`` and ``variance_stderr``. The legend entries that
explain the styles (:func:`kind_handles`, :func:`simulation_handle`, :func:`prediction_handle`) are
built separately, so that a figure of several panels gets one legend for all of them.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from matplotlib.ticker import LogFormatterSciNotation

if TYPE_CHECKING:
    from matplotlib.artist import Artist
    from matplotlib.axes import Axes

__all__ = [
    "DPI",
    "KIND_COLOURS",
    "KIND_NAMES",
    "MIXED_COLOUR",
    "PlainLogFormatter",
    "STYLE",
    "activation_title",
    "deep_ratio",
    "kind_handles",
    "kind_title",
    "layer_ticks",
    "percent_axis",
    "log_scale",
    "plain_log_label",
    "plot_accumulation",
    "plot_aware",
    "plot_beyond",
    "plot_cnn_mlp",
    "plot_convolution",
    "plot_injection",
    "plot_layers",
    "plot_mitigation",
    "plot_mitigation_snr",
    "plot_pooling",
    "plot_slope_criterion",
    "plot_trained",
    "plot_width",
    "prediction_handle",
    "recolour_noise_budget",
    "simulation_handle",
    "slope_at_operating_point",
]

KIND_COLOURS = {"AU": "#0072B2", "AC": "#E69F00", "MU": "#009E73", "MC": "#D55E00"}
"""The colour of each kind of noise, in every figure (Okabe-Ito, safe for colour-blind readers)."""
MIXED_COLOUR = "#333333"
"""The colour of what is not one kind of noise: mixed noise, and the style entries of legends."""
KIND_NAMES = {
    "AU": "additive uncorrelated",
    "AC": "additive correlated",
    "MU": "multiplicative uncorrelated",
    "MC": "multiplicative correlated",
}
DPI = 200
"""Resolution of the PNG figures (dots per inch)."""
STYLE: dict[str, Any] = {
    "font.size": 9,
    "axes.titlesize": 9.5,
    "axes.labelsize": 9,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "legend.fontsize": 8,
    "legend.title_fontsize": 8,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "axes.axisbelow": True,
    "grid.color": "0.9",
    "grid.linewidth": 0.6,
    "lines.linewidth": 1.3,
    "lines.markersize": 4.5,
    "errorbar.capsize": 2,
    "savefig.dpi": DPI,
    "pdf.fonttype": 42,
    "ps.fonttype": 42,
    "svg.fonttype": "none",
}
"""Matplotlib settings of the report's figures (``with matplotlib.rc_context(STYLE):``): small
publication fonts, light grid, TrueType fonts in PDF and text kept as text in SVG."""

VARIANCE_LABEL = "noise variance per neuron (a.u.²)"
"""Axis label of a per-neuron output variance; a.u.: the activations' arbitrary units."""


# ------------------------------------------------------------------------------- shared styling
def simulation_handle(
    label: str = "simulation (± 1 standard error)", *, colour: str = MIXED_COLOUR, marker: str = "o",
    filled: bool = True,
) -> Any:  # fmt: skip
    """A legend entry for simulated points with error bars."""
    from matplotlib.collections import LineCollection
    from matplotlib.container import ErrorbarContainer
    from matplotlib.lines import Line2D

    face = colour if filled else "white"
    point = Line2D([], [], ls="none", marker=marker, color=colour, mfc=face)
    bars = LineCollection([], colors=colour, linewidths=1.0)
    return ErrorbarContainer((point, (), (bars,)), has_yerr=True, label=label)


def prediction_handle(
    label: str, *, linestyle: str = "-", marker: str | None = None, colour: str = MIXED_COLOUR,
    filled: bool = True,
) -> Artist:  # fmt: skip
    """A legend entry for a prediction drawn as a line (or as markers, ``linestyle="none"``)."""
    from matplotlib.lines import Line2D

    return Line2D([], [], ls=linestyle, marker=marker, color=colour,
                  mfc=colour if filled else "white", label=label)  # fmt: skip


def kind_handles(kinds: list[str] | tuple[str, ...]) -> list[Artist]:
    """Legend entries naming the colour of each kind of noise."""
    from matplotlib.patches import Patch

    return [Patch(color=KIND_COLOURS[kind], label=f"{kind}: {KIND_NAMES[kind]}") for kind in kinds]


def layer_ticks(ax: Axes, layers: Any, *, output: bool = False) -> None:
    """Integer layer ticks: every layer up to ten, else layer 1 and every fifth (or tenth);
    ``output`` marks the last layer as the output layer."""
    layers = sorted(int(layer) for layer in set(layers))
    if len(layers) <= 10:
        ticks = layers
    else:
        step = 5 if layers[-1] <= 50 else 10
        ticks = [layers[0], *(layer for layer in layers if layer % step == 0 and layer > layers[0])]
    labels = [str(tick) for tick in ticks]
    if output and ticks and ticks[-1] == layers[-1]:
        labels[-1] = f"{ticks[-1]}\n(output)"
    ax.set_xticks(ticks, labels)
    ax.set_xticks([], minor=True)


def kind_title(ax: Axes, kind: str) -> None:
    """Title a panel with its kind of noise, in the kind's colour."""
    ax.set_title(f"{kind}: {KIND_NAMES[kind]}", color=KIND_COLOURS[kind])


_SUPERSCRIPTS = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def plain_log_label(text: str) -> str:
    """A log-axis label of matplotlib's (mathtext) as plain text with Unicode superscripts.

    Example:
        >>> plain_log_label(r"$\\mathdefault{2\\times10^{-4}}$")
        '2×10⁻⁴'
    """
    match = re.fullmatch(r"\$\\mathdefault\{(.*)\}\$", text)
    if not match:
        return text
    body = match.group(1).replace("\\times", "×")
    body = re.sub(r"\^\{([^}]*)\}", lambda power: power.group(1).translate(_SUPERSCRIPTS), body)
    return body.replace("{", "").replace("}", "")


class PlainLogFormatter(LogFormatterSciNotation):
    """Matplotlib's log-axis labels (``10⁻³``, ``2×10⁻⁴``) as plain text instead of mathtext."""

    def __call__(self, x: float, pos: int | None = None) -> str:
        return plain_log_label(super().__call__(x, pos))


def log_scale(ax: Axes, which: str = "y") -> None:
    """A log scale on the ``which`` (``"x"`` or ``"y"``) axis, labelled in plain text
    (:class:`PlainLogFormatter`): no mathtext, so the PDF embeds one font and draws faster."""
    axis = ax.xaxis if which == "x" else ax.yaxis
    (ax.set_xscale if which == "x" else ax.set_yscale)("log")
    axis.set_major_formatter(PlainLogFormatter())
    axis.set_minor_formatter(PlainLogFormatter(labelOnlyBase=False))


def percent_axis(ax: Axes) -> None:
    """Fractions on the y axis shown as percentages, without a sign (the label says %): 0.9 -> 90."""
    from matplotlib.ticker import FuncFormatter

    ax.yaxis.set_major_formatter(FuncFormatter(_percent))


def _percent(value: float, position: int | None = None) -> str:
    return f"{100 * value:g}"


def _plain_log_ticks(ax: Axes, values: Any) -> None:
    """Log x axis ticked at ``values`` written as plain numbers (5, 10, 20, ...)."""
    values = sorted(set(values))
    log_scale(ax, "x")
    ax.set_xticks(values, [f"{value:g}" for value in values])
    ax.set_xticks([], minor=True)


def activation_title(activation: str, slope: float | None = None) -> str:
    """An activation spec in words: ``"linear:slope=0.8,offset=0.1"`` -> ``"linear, slope 0.8"``,
    ``"sigmoid"`` -> ``"logistic sigmoid"``, ``"sigmoid:gain=4,centre=0.5"`` -> ``"sigmoid, gain 4,
    centre 0.5"``; with ``slope`` (nonlinear activations), the slope at the operating point after it.

    Example:
        >>> activation_title("linear:slope=0.8,offset=0.1")
        'linear, slope 0.8'
        >>> activation_title("sigmoid", slope=0.2247)
        'logistic sigmoid (slope 0.225)'
    """
    name, _, rest = activation.partition(":")
    parameters = dict(item.split("=", 1) for item in rest.split(",") if "=" in item)
    if name == "linear":
        return f"linear, slope {float(parameters.get('slope', 1)):g}"
    words = "logistic sigmoid" if name == "sigmoid" and not parameters else name
    words = ", ".join([words, *(f"{key} {float(value):g}" for key, value in parameters.items())])
    return words if slope is None else f"{words} (slope {slope:.3g})"


# ------------------------------------------------------------------------- symmetric networks
def _points(ax: Axes, rows: pd.DataFrame, x: str, colour: str, label: str | None, **style: Any) -> None:
    """Simulated variances as points with error bars (± one standard error)."""
    ax.errorbar(rows[x], rows["variance"], yerr=rows["variance_stderr"], fmt=style.pop("fmt", "o"),
                color=colour, label=label, zorder=3, **style)  # fmt: skip


def plot_layers(table: pd.DataFrame, activation: str, ax: Axes, *, theory: str = "symmetric") -> Axes:
    """Variance per layer for each kind of noise in one symmetric network: simulation as points
    (± one standard error), ``theory`` (a prediction method) as lines, one colour per kind, titled
    with the activation in words."""
    rows = table[table["activation"] == activation]
    for kind, group in rows.groupby("kind", sort=False):
        colour = KIND_COLOURS[kind]
        line = group[group["method"] == theory].sort_values("layer")
        ax.plot(line["layer"], line["variance"], "-", color=colour, label=f"{kind} theory")
        _points(ax, group[group["method"] == "montecarlo"], "layer", colour, f"{kind} simulated")
    log_scale(ax, "y")
    layer_ticks(ax, rows["layer"])
    ax.set_xlabel("layer")
    ax.set_ylabel(VARIANCE_LABEL)
    slope = None
    if not activation.startswith("linear") and "input_value" in rows and len(rows):
        slope = slope_at_operating_point(activation, float(rows["input_value"].iloc[0]))
    ax.set_title(activation_title(activation, slope))
    return ax


def slope_at_operating_point(activation: str, value: float) -> float:
    """``f'(x)`` at the noise-free operating point ``x`` (the fixed point fed as input)."""
    import torch

    from noiseprop.activations import parse_activation

    return float(parse_activation(activation).derivative(torch.tensor(value, dtype=torch.float64)))


def deep_ratio(table: pd.DataFrame) -> pd.DataFrame:
    """Deep-to-first-layer variance ratio per (activation, method), with its standard error for the
    simulation (first-order propagation of the two relative errors) and the slope at the operating
    point. Columns: ``activation, method, slope, ratio, stderr``."""
    rows = []
    for (activation, method), group in table.groupby(["activation", "method"], sort=False):
        group = group.sort_values("layer")
        first, deep = group.iloc[0], group.iloc[-1]
        ratio = deep["variance"] / first["variance"]
        stderr = ratio * np.hypot(
            first["variance_stderr"] / first["variance"], deep["variance_stderr"] / deep["variance"]
        )
        slope = slope_at_operating_point(activation, float(first["input_value"]))
        rows.append(
            {
                "activation": activation,
                "method": method,
                "slope": slope,
                "ratio": ratio,
                "stderr": stderr,
            }
        )
    return pd.DataFrame(rows)


FAMILY_MARKERS = {"linear": "s", "sigmoid": "o", "tanh": "^"}


def plot_slope_criterion(table: pd.DataFrame, ax: Axes) -> Axes:
    """Deep/first-layer noise ratio (correlated additive noise, orange) against the slope at the
    operating point: simulation as filled markers with error bars (one marker per family of
    activations), the finite-depth first-order theory as open black markers, the infinite-depth
    limit ``1 / (1 - slope^2)`` as a black line (it exists below slope 1 only) and slope 1 dotted."""
    ratios = deep_ratio(table)
    ratios["family"] = ratios["activation"].str.split(":").str[0]
    colour = KIND_COLOURS["AC"]
    for family, group in ratios.groupby("family"):
        marker = FAMILY_MARKERS.get(family, "o")
        theory = group[group["method"] == "symmetric"].sort_values("slope")
        simulated = group[group["method"] == "montecarlo"].sort_values("slope")
        ax.errorbar(simulated["slope"], simulated["ratio"], yerr=simulated["stderr"], fmt=marker,
                    color=colour, zorder=3, label=f"{family}: simulation (± 1 s.e.)")  # fmt: skip
        ax.plot(theory["slope"], theory["ratio"], marker, mfc="none", mec="k", ms=8, mew=0.9,
                ls="none", label=f"{family}: first-order theory")  # fmt: skip
    slopes = np.linspace(0.0, 0.97, 200)
    ax.plot(slopes, 1 / (1 - slopes**2), "k-", lw=1, label="limit 1/(1 - slope²)")
    ax.axvline(1.0, color="k", ls=":", lw=1, label="slope 1: bounded below, unbounded above")
    log_scale(ax, "y")
    ax.set_xlabel("slope f′(x*) of the activation at the operating point x*")
    ax.set_ylabel("deep-layer / first-layer noise variance")
    return ax


def _shades(colour: str, count: int) -> list[tuple[float, float, float]]:
    """``count`` shades of ``colour`` from light (mixed with white) to dark (mixed with black)."""
    from matplotlib.colors import to_rgb

    base = np.array(to_rgb(colour))
    shades = []
    for step in np.linspace(-0.35, 0.55, count) if count > 1 else [0.0]:
        mixed = base + (1 - base) * -step if step < 0 else base * (1 - step)
        shades.append(tuple(float(value) for value in mixed))
    return shades


SLOPE_MARKERS = ("o", "s", "^", "D", "v", "P", "X")


def plot_accumulation(table: pd.DataFrame, ax: Axes, *, intensity: float) -> Axes:
    """Per-layer variance against depth for linear activations of several slopes with correlated
    additive noise ``intensity`` (shades of its orange, light to dark with the slope, one marker
    each): simulation as points, theory as solid lines, the predicted deep limit
    ``slope^2 D / (1 - slope^2) + D`` dashed (it exists below slope 1 only)."""
    groups = list(table.groupby("activation", sort=False))
    slopes = {
        activation: slope_at_operating_point(activation, float(group["input_value"].iloc[0]))
        for activation, group in groups
    }
    groups.sort(key=lambda item: slopes[item[0]])
    for (activation, group), colour, marker in zip(groups, _shades(KIND_COLOURS["AC"], len(groups)),
                                                   SLOPE_MARKERS * 3):  # fmt: skip
        slope = slopes[activation]
        line = group[group["method"] == "symmetric"].sort_values("layer")
        ax.plot(line["layer"], line["variance"], "-", color=colour, lw=1)
        _points(ax, group[group["method"] == "montecarlo"], "layer", colour, f"slope {slope:g}",
                fmt=marker)  # fmt: skip
        if slope < 1:
            ax.axhline(slope**2 * intensity / (1 - slope**2) + intensity, color=colour, ls="--", lw=1)
    layer_ticks(ax, table["layer"])
    ax.set_xlabel("layer")
    ax.set_ylabel(VARIANCE_LABEL)
    return ax


def plot_width(table: pd.DataFrame, ax: Axes) -> Axes:
    """Variance of a deep layer's average output (what the next layer receives) against width, one
    colour per kind: simulation as points, theory as lines; uncorrelated noise falls as 1/N,
    correlated noise does not."""
    readout = table[table["layer"] == table["layer"].max()]
    for kind, group in readout.groupby("kind", sort=False):
        colour = KIND_COLOURS[kind]
        line = group[group["method"] == "symmetric"].sort_values("width")
        ax.plot(line["width"], line["variance"], "-", color=colour, label=f"{kind} theory")
        _points(ax, group[group["method"] == "montecarlo"].sort_values("width"), "width", colour,
                f"{kind} simulated")  # fmt: skip
    log_scale(ax, "y")
    _plain_log_ticks(ax, readout["width"])
    ax.set_xlabel("neurons per layer N")
    ax.set_ylabel("variance of the layer average (a.u.²)")
    return ax


# --------------------------------------------------------------------------- trained networks
TRAINED_LINES = {"covariance": "-", "meanfield": "--"}
"""Line style of each prediction method in the trained-network figure."""


def plot_trained(table: pd.DataFrame, kind: str, ax: Axes) -> Axes:
    """Per-layer noise of a trained network for one kind (in its colour): simulation as points
    (± one standard error), the covariance method as a solid line, the mean-field rule dashed."""
    rows = table[table["kind"] == kind]
    colour = KIND_COLOURS[kind]
    for method, style in TRAINED_LINES.items():
        line = rows[rows["method"] == method].sort_values("layer")
        if len(line):
            ax.plot(line["layer"], line["variance"], style, color=colour, label=method)
    _points(ax, rows[rows["method"] == "montecarlo"].sort_values("layer"), "layer", colour, "montecarlo")
    log_scale(ax, "y")
    layer_ticks(ax, rows["layer"], output=True)
    ax.set_xlabel("layer")
    ax.set_ylabel(VARIANCE_LABEL)
    kind_title(ax, kind)
    return ax


TRANSFORM_NAMES = {"none": "as trained", "ghosts": "ghost neurons", "pool": "pooling",
                   "ghosts+pool": "ghosts + pooling"}  # fmt: skip


def _mitigation_rows(table: pd.DataFrame) -> tuple[list[str], pd.DataFrame, pd.DataFrame]:
    order = [t for t in TRANSFORM_NAMES if t in set(table["transform"])]
    simulated = table[table["method"] == "montecarlo"].set_index("transform").loc[order]
    predicted = table[table["method"] == "predicted"].set_index("transform").reindex(order)
    return order, simulated, predicted


def _mitigation_dots(ax: Axes, order: list[str], simulated: pd.Series, predicted: pd.Series,
                     simulated_error: Any, predicted_error: Any) -> None:  # fmt: skip
    """Simulated (filled circles) and predicted (open diamonds) values per variant, side by side."""
    positions = np.arange(len(order))
    ax.errorbar(positions - 0.1, simulated, yerr=simulated_error, fmt="o", color=MIXED_COLOUR,
                zorder=3, label="simulated")  # fmt: skip
    ax.errorbar(positions + 0.1, predicted, yerr=predicted_error, fmt="D", color=MIXED_COLOUR,
                mfc="white", zorder=3, label="predicted")  # fmt: skip
    ax.set_xticks(positions, [TRANSFORM_NAMES[t] for t in order])
    ax.set_xlim(-0.5, len(order) - 0.5)
    ax.grid(False, axis="x")


def plot_mitigation(table: pd.DataFrame, ax: Axes) -> Axes:
    """Test accuracy of a noisy classifier as it is and mitigated (ghost neurons, pooling, both), a
    dot plot: simulated (filled circles) and predicted (open diamonds), each ± one standard error,
    the noise-free accuracy dashed."""
    order, simulated, predicted = _mitigation_rows(table)
    _mitigation_dots(ax, order, simulated["accuracy"], predicted["accuracy"], simulated["stderr"],
                     predicted["stderr"])  # fmt: skip
    ax.axhline(float(simulated["noise_free"].iloc[0]), color="k", ls="--", lw=1, label="noise-free")
    percent_axis(ax)
    ax.set_ylabel("test accuracy (%)")
    return ax


def plot_mitigation_snr(table: pd.DataFrame, ax: Axes) -> Axes:
    """Output signal-to-noise ratio (dB) of the mitigation variants: simulated (filled circles)
    and predicted (open diamonds)."""
    order, simulated, predicted = _mitigation_rows(table)
    _mitigation_dots(ax, order, simulated["output_snr_db"], predicted["output_snr_db"], None, None)
    ax.set_ylabel("output SNR (dB)")
    return ax


CNN_STYLES = {
    "CNN": {"fmt": "o-"},
    "CNN, mean pooling": {"fmt": "^-."},
    "MLP": {"fmt": "s--", "mfc": "white"},
}
"""Marker and line style of each network in the CNN figure."""


def plot_cnn_mlp(cnn: pd.DataFrame, mlp: pd.DataFrame, kind: str, ax: Axes) -> Axes:
    """Simulated accuracy (± one standard error) against the intensity of one kind of noise, in its
    colour: the shipped CNN (noise at its ReLU sites, circles, solid), its mean-pooling twin
    (triangles, dash-dotted) and the shipped MLP (noise at its hidden layers, open squares, dashed);
    noise-free accuracies as thin dotted lines."""
    models = cnn["model"] if "model" in cnn.columns else pd.Series("cnn", index=cnn.index)
    colour = KIND_COLOURS[kind]
    tables = {"CNN": cnn[models == "cnn"], "CNN, mean pooling": cnn[models == "cnn-mean"], "MLP": mlp}
    for label, table in tables.items():
        rows = table[(table["kind"] == kind) & (table["method"] == "montecarlo")]
        if rows.empty:
            continue
        rows = rows.sort_values("intensity")
        ax.errorbar(rows["intensity"], rows["accuracy"], yerr=rows["stderr"], color=colour,
                    label=label, **CNN_STYLES[label])  # fmt: skip
        ax.axhline(float(rows["noise_free"].iloc[0]), ls=":", lw=0.8, color=colour)
    _plain_log_ticks(ax, pd.concat([cnn["intensity"], mlp["intensity"]]))
    percent_axis(ax)
    ax.set_xlabel(f"{kind} intensity D at the hidden neurons (variance)")
    ax.set_ylabel("test accuracy (%)")
    kind_title(ax, kind)
    return ax


CONVOLUTION_MARKERS = {"meanfield": ("D", "layer-wide mean field"),
                       "per_channel": ("o", "per output channel")}  # fmt: skip


def plot_convolution(table: pd.DataFrame, ax: Axes) -> Axes:
    """Prediction over simulation of the noise variance after the shipped CNN's conv2 and fc layers,
    noise of one additive kind (its colour) at the site before: the mean-field rule with the
    layer-wide ``<W>``, ``<W^2>`` (diamonds) and with each output channel's own weights (circles);
    error bars: the simulation's relative standard error; grey band: ±10 %."""
    from noiseprop.noise import KINDS

    order = table["kind"].map(KINDS.index)
    rows = table.assign(order=order).sort_values(["order", "layer"]).reset_index(drop=True)
    positions = np.arange(len(rows))
    relative = rows["stderr"] / rows["simulated"]
    colours = [KIND_COLOURS[kind] for kind in rows["kind"]]
    for offset, (column, (marker, label)) in zip((-0.1, 0.1), CONVOLUTION_MARKERS.items()):
        ratio = rows[column] / rows["simulated"]
        for x, y, error, colour in zip(positions + offset, ratio, relative, colours):
            ax.errorbar(x, y, yerr=error, fmt=marker, color=colour, zorder=3, label=label)
            label = None
    ax.axhspan(0.9, 1.1, color="0.5", alpha=0.15, lw=0)
    ax.axhline(1.0, color="k", lw=1)
    from noiseprop.experiments import CONVOLUTION_LAYERS

    names = [
        f"{row.kind} at {CONVOLUTION_LAYERS[row.layer][0]}\n→ {row.layer}" for row in rows.itertuples()
    ]
    ax.set_xticks(positions, names)
    ax.set_xlim(-0.5, len(rows) - 0.5)
    ax.grid(False, axis="x")
    ax.set_ylabel("predicted / simulated variance")
    return ax


POOLING_SITES = {"relu1": ("o", "noise before pooling (relu1)"),
                 "pool1": ("s", "noise after pooling (pool1)")}  # fmt: skip
BOTH_RELUS = ("D", "noise at both ReLUs")


def plot_pooling(losses: pd.DataFrame, ax: Axes) -> Axes:
    """Mean accuracy loss (± one standard error) of the shipped CNN with max and with mean pooling
    (from :func:`noiseprop.study.pooling_losses`), one colour per kind: an additive kind right before
    the first pooling (at relu1, circles) or right after it (at pool1, squares), and ``MU`` at both
    ReLUs (diamonds)."""
    labels = []
    for position, (_, group) in enumerate(losses.groupby(["model", "kind"], sort=False)):
        for _, row in group.iterrows():
            marker, label = POOLING_SITES.get(row["sites"], BOTH_RELUS)
            offset = {"relu1": -0.12, "pool1": 0.12}.get(row["sites"], 0.0)
            ax.errorbar(position + offset, 100 * row["loss"], yerr=100 * row["stderr"], fmt=marker,
                        color=KIND_COLOURS[row["kind"]], zorder=3, label=label)  # fmt: skip
        first = group.iloc[0]
        labels.append(f"{'max' if first['model'] == 'cnn' else 'mean'} pooling\n{first['kind']}")
    ax.axhline(0.0, color="k", lw=0.8)
    ax.set_xticks(range(len(labels)), labels)
    ax.set_xlim(-0.5, len(labels) - 0.5)
    ax.grid(False, axis="x")
    ax.set_ylabel("mean accuracy loss (percentage points)")
    return ax


BEYOND_STYLES = {"covariance": ("o-", "first order (covariance method)"),
                 "moments": ("s-.", "moments method")}  # fmt: skip


def plot_beyond(errors: pd.DataFrame, kind: str, ax: Axes, *, threshold: float = 0.02) -> Axes:
    """Largest ``|relative error|`` over the layers of the predicted variance against simulation,
    against the intensity of one kind (its colour), first order (circles, solid) and moments method
    (squares, dash-dotted) (from :func:`noiseprop.study.beyond_errors`), the break-down threshold
    dashed; filled markers: broken down, open markers: not (within the threshold or the
    simulation's standard errors)."""
    colour = KIND_COLOURS[kind]
    for method, (style, label) in BEYOND_STYLES.items():
        rows = errors[(errors["method"] == method) & (errors["kind"] == kind)]
        rows = rows.sort_values("intensity")
        if rows.empty:
            continue
        ax.plot(rows["intensity"], rows["error"].clip(lower=1e-5), style, color=colour, label=label)
        settled = rows[~rows["broken"]]
        ax.plot(settled["intensity"], settled["error"].clip(lower=1e-5), style[0], mfc="white",
                color=colour)  # fmt: skip
    ax.axhline(threshold, color="k", ls="--", lw=1, label=f"{100 * threshold:g} %")
    log_scale(ax, "x")
    log_scale(ax, "y")
    ax.set_xlabel(f"{kind} intensity D in every layer (variance)")
    ax.set_ylabel("largest |relative error| over the layers")
    kind_title(ax, kind)
    return ax


INJECTION_MARKERS = {"after": ("o", "noise after the activation"),
                     "before": ("s", "noise before the activation")}  # fmt: skip


def plot_injection(losses: pd.DataFrame, kind: str, ax: Axes) -> Axes:
    """Simulated accuracy loss (± one standard error) of a classifier with one kind of noise (its
    colour) on one hidden layer, injected after the activation (circles) or before it (squares), in
    the network as it is and with every hidden neuron pooled (from
    :func:`noiseprop.study.injection_losses`)."""
    rows = losses[losses["kind"] == kind]
    groups = sorted({(str(row.layer), int(row.pool)) for row in rows.itertuples()})
    colour = KIND_COLOURS[kind]
    for offset, (injection, (marker, label)) in zip((-0.1, 0.1), INJECTION_MARKERS.items()):
        chosen = rows[rows["injection"] == injection].set_index(["layer", "pool"])
        values = [chosen.loc[(layer, pool)] if (layer, pool) in chosen.index else None
                  for layer, pool in groups]  # fmt: skip
        positions = [index + offset for index, value in enumerate(values) if value is not None]
        found = [value for value in values if value is not None]
        ax.errorbar(positions, [100 * value["loss"] for value in found],
                    yerr=[100 * value["stderr"] for value in found], fmt=marker, color=colour,
                    zorder=3, label=label)  # fmt: skip
    names = [f"layer {layer}" + ("" if pool == 1 else f"\npooled ×{pool}") for layer, pool in groups]
    ax.set_xticks(range(len(groups)), names)
    ax.set_xlim(-0.5, len(groups) - 0.5)
    ax.grid(False, axis="x")
    ax.axhline(0.0, color="k", lw=0.8)
    ax.set_ylabel("accuracy loss (percentage points)")
    kind_title(ax, kind)
    return ax


def plot_aware(table: pd.DataFrame, ax: Axes) -> Axes:
    """Simulated test accuracy (± one standard error) under each kind of noise (its colour) of the
    network trained with that kind (filled circles) and of the control trained without noise (open
    circles), with each network's noise-free accuracy (short grey dashes) (the ``aware`` sweep:
    ``trained_with, kind, accuracy, stderr, noise_free``)."""
    from noiseprop.noise import KINDS

    kinds = [kind for kind in KINDS if kind in set(table["kind"])]
    control = table[table["trained_with"] == "none"].set_index("kind")
    for position, kind in enumerate(kinds):
        colour = KIND_COLOURS[kind]
        aware = table[(table["trained_with"] == kind) & (table["kind"] == kind)]
        pairs = [(-0.12, control.loc[kind] if kind in control.index else None, "white", "control"),
                 (0.12, aware.iloc[0] if len(aware) else None, colour, "trained with it")]  # fmt: skip
        for offset, row, face, who in pairs:
            if row is None:
                continue
            # labelled, so that an interactive legend can show and hide each point
            ax.errorbar(position + offset, row["accuracy"], yerr=row["stderr"], fmt="o", mfc=face,
                        color=colour, zorder=3, label=f"{kind}, {who}")  # fmt: skip
            ax.plot(position + offset, row["noise_free"], "_", color="0.45", ms=12, mew=1.5)
    ax.set_xticks(range(len(kinds)), kinds)
    ax.set_xlim(-0.5, len(kinds) - 0.5)
    ax.grid(False, axis="x")
    percent_axis(ax)
    ax.set_xlabel("kind of noise in training and in the test")
    ax.set_ylabel("test accuracy (%)")
    return ax


def recolour_noise_budget(ax: Axes) -> Axes:
    """Restyle the axes drawn by :func:`noiseprop.criteria.plot_noise_budget` to the study's
    conventions: the palette of :data:`KIND_COLOURS`, no title or legend (the figure has them), the
    last layer marked as the output layer."""
    for container in ax.containers:
        kind = container.get_label()
        for patch in container:
            patch.set_facecolor(KIND_COLOURS.get(kind, MIXED_COLOUR))
            patch.set_edgecolor("white")
            patch.set_linewidth(0.5)
    if ax.get_legend() is not None:
        ax.get_legend().remove()
    ax.set_title("")
    ticks = [int(tick) for tick in ax.get_xticks()]
    if ticks:
        layer_ticks(ax, ticks, output=True)
    ax.set_xlabel("source layer (its own noise)")
    ax.set_ylabel("contribution to the output variance (a.u.²)")
    ax.grid(False, axis="x")
    return ax
