"""Figures of the study, drawn from the sweeps' tidy tables (one function per figure).

Every function takes the table and a matplotlib ``Axes`` and returns that ``Axes``, so the report and
a user's notebook draw with the same code. Simulations are points with error bars (one standard
error), theory is lines. Tables have the columns of :mod:`noiseprop.experiments`: the swept
parameters, ``layer``, ``method`` (``montecarlo`` or a prediction method), ``variance`` and
``variance_stderr``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = [
    "KIND_COLOURS",
    "deep_ratio",
    "plot_accumulation",
    "plot_layers",
    "plot_mitigation",
    "plot_slope_criterion",
    "plot_trained",
    "plot_width",
    "slope_at_operating_point",
]

KIND_COLOURS = {"AU": "tab:blue", "AC": "tab:orange", "MU": "tab:green", "MC": "tab:red"}
KIND_NAMES = {
    "AU": "additive uncorrelated",
    "AC": "additive correlated",
    "MU": "multiplicative uncorrelated",
    "MC": "multiplicative correlated",
}


def _points(ax: Axes, rows: pd.DataFrame, x: str, colour: str, label: str | None) -> None:
    ax.errorbar(
        rows[x], rows["variance"], yerr=rows["variance_stderr"], fmt="o", ms=3.5, color=colour,
        capsize=2, label=label,
    )  # fmt: skip


def plot_layers(table: pd.DataFrame, activation: str, ax: Axes, *, theory: str = "symmetric") -> Axes:
    """Variance per layer for each kind of noise in one symmetric network: simulation as points,
    ``theory`` (a prediction method) as lines."""
    rows = table[table["activation"] == activation]
    for kind, group in rows.groupby("kind", sort=False):
        colour = KIND_COLOURS[kind]
        _points(ax, group[group["method"] == "montecarlo"], "layer", colour, f"{kind} simulated")
        line = group[group["method"] == theory].sort_values("layer")
        ax.plot(line["layer"], line["variance"], "-", color=colour, lw=1.2, label=f"{kind} theory")
    ax.set_yscale("log")
    ax.set_xlabel("layer")
    ax.set_ylabel("noise variance per neuron")
    ax.set_title(activation, fontsize=10)
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


def plot_slope_criterion(table: pd.DataFrame, ax: Axes) -> Axes:
    """Deep/first-layer noise ratio against the slope at the operating point: simulation (points, one
    marker per family of activations), the finite-depth first-order theory (open markers) and the
    infinite-depth limit ``1 / (1 - slope^2)`` (line), which exists only below slope 1."""
    ratios = deep_ratio(table)
    ratios["family"] = ratios["activation"].str.split(":").str[0]
    markers = {"linear": "s", "sigmoid": "o", "tanh": "^"}
    for family, group in ratios.groupby("family"):
        simulated = group[group["method"] == "montecarlo"].sort_values("slope")
        ax.errorbar(
            simulated["slope"], simulated["ratio"], yerr=simulated["stderr"],
            fmt=markers.get(family, "o"), ms=4, capsize=2, label=f"{family}: simulated",
        )  # fmt: skip
        theory = group[group["method"] == "symmetric"].sort_values("slope")
        ax.plot(theory["slope"], theory["ratio"], markers.get(family, "o"), mfc="none", ms=7,
                color="grey", label=f"{family}: first-order theory")  # fmt: skip
    slopes = np.linspace(0.0, 0.97, 200)
    ax.plot(slopes, 1 / (1 - slopes**2), "k-", lw=1, label="limit 1/(1 - slope²)")
    ax.axvline(1.0, color="k", ls=":", lw=1)
    ax.set_yscale("log")
    ax.set_xlabel("slope f'(x) at the operating point")
    ax.set_ylabel("deep / first-layer noise variance")
    return ax


def plot_accumulation(table: pd.DataFrame, ax: Axes, *, intensity: float) -> Axes:
    """Per-layer variance against depth for linear activations of several slopes with correlated
    additive noise ``intensity``: simulation as points, theory as lines, the predicted limit
    ``slope^2 D / (1 - slope^2) + D`` dashed (bounded below slope 1)."""
    colours = iter(["tab:purple", "tab:blue", "tab:green", "tab:orange", "tab:red", "tab:brown"])
    for activation, group in table.groupby("activation", sort=False):
        slope = slope_at_operating_point(activation, float(group["input_value"].iloc[0]))
        colour = next(colours)
        _points(ax, group[group["method"] == "montecarlo"], "layer", colour, f"slope {slope:g}")
        line = group[group["method"] == "symmetric"].sort_values("layer")
        ax.plot(line["layer"], line["variance"], "-", color=colour, lw=1)
        if slope < 1:
            ax.axhline(slope**2 * intensity / (1 - slope**2) + intensity, color=colour, ls="--", lw=0.8)
    ax.set_xlabel("layer")
    ax.set_ylabel("noise variance per neuron")
    return ax


def plot_width(table: pd.DataFrame, ax: Axes) -> Axes:
    """Variance of a deep layer's average output (what the next layer receives) against width:
    uncorrelated noise falls as 1/N, correlated noise does not."""
    readout = table[table["layer"] == table["layer"].max()]
    for kind, group in readout.groupby("kind", sort=False):
        colour = KIND_COLOURS[kind]
        _points(ax, group[group["method"] == "montecarlo"].sort_values("width"), "width", colour,
                f"{kind} simulated")  # fmt: skip
        line = group[group["method"] == "symmetric"].sort_values("width")
        ax.plot(line["width"], line["variance"], "-", color=colour, lw=1.2, label=f"{kind} theory")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("neurons per layer N")
    ax.set_ylabel("variance of the layer average")
    return ax


def plot_trained(table: pd.DataFrame, kind: str, ax: Axes) -> Axes:
    """Per-layer noise of a trained network for one kind: simulation, covariance method and
    mean-field rule side by side."""
    rows = table[table["kind"] == kind]
    methods = [m for m in ("montecarlo", "covariance", "meanfield") if m in set(rows["method"])]
    layers = sorted(rows["layer"].unique())
    width = 0.8 / len(methods)
    styles = {"montecarlo": "tab:grey", "covariance": KIND_COLOURS[kind], "meanfield": "white"}
    for index, method in enumerate(methods):
        values = rows[rows["method"] == method].set_index("layer").loc[layers]
        positions = np.arange(len(layers)) + (index - (len(methods) - 1) / 2) * width
        ax.bar(
            positions, values["variance"], width, color=styles[method], edgecolor="k", lw=0.6,
            yerr=values["variance_stderr"] if method == "montecarlo" else None, capsize=2, label=method,
        )  # fmt: skip
    ax.set_xticks(np.arange(len(layers)), [f"layer {layer}" for layer in layers])
    ax.set_yscale("log")
    ax.set_ylabel("noise variance per neuron")
    ax.set_title(f"{kind}: {KIND_NAMES[kind]}", fontsize=10)
    return ax


def plot_mitigation(table: pd.DataFrame, ax: Axes) -> Axes:
    """Accuracy of a noisy classifier as it is and mitigated (ghost neurons, pooling, both):
    simulated (bars ± one standard error) and predicted (diamonds), with the noise-free accuracy and
    each variant's output SNR in dB."""
    order = [t for t in ("none", "ghosts", "pool", "ghosts+pool") if t in set(table["transform"])]
    simulated = table[table["method"] == "montecarlo"].set_index("transform").loc[order]
    predicted = table[table["method"] == "predicted"].set_index("transform").loc[order]
    positions = np.arange(len(order))
    ax.bar(positions, simulated["accuracy"], 0.6, yerr=simulated["stderr"], capsize=3,
           color="tab:grey", edgecolor="k", lw=0.6, label="simulated")  # fmt: skip
    ax.plot(positions, predicted["accuracy"], "D", color="tab:blue", label="predicted")
    ax.axhline(float(simulated["noise_free"].iloc[0]), color="k", ls="--", lw=1, label="noise-free")
    for x, (_, row) in zip(positions, simulated.iterrows()):
        ax.annotate(f"SNR {row['output_snr_db']:.1f} dB", (x, row["accuracy"]), ha="center",
                    va="bottom", xytext=(0, 6), textcoords="offset points", fontsize=8)  # fmt: skip
    low = float(min(simulated["accuracy"].min(), predicted["accuracy"].min()))
    ax.set_ylim(max(0.0, low - 0.03), 1.0)
    ax.set_xticks(positions, ["noisy" if t == "none" else t for t in order])
    ax.set_ylabel("test accuracy")
    return ax


def plot_cnn_mlp(cnn: pd.DataFrame, mlp: pd.DataFrame, kind: str, ax: Axes) -> Axes:
    """Simulated accuracy (± one standard error) against the intensity of one kind of noise: the
    shipped CNN (noise at its ReLU sites, filled circles; its mean-pooling twin, triangles) and the
    shipped MLP (noise at its hidden layers, open squares), noise-free accuracies dotted."""
    models = cnn["model"] if "model" in cnn.columns else pd.Series("cnn", index=cnn.index)
    for table, style, label in ((cnn[models == "cnn"], "o-", "CNN"),
                                (cnn[models == "cnn-mean"], "^-.", "CNN, mean pooling"),
                                (mlp, "s--", "MLP")):  # fmt: skip
        rows = table[(table["kind"] == kind) & (table["method"] == "montecarlo")]
        if rows.empty:
            continue
        rows = rows.sort_values("intensity")
        face = "white" if label == "MLP" else None
        line = ax.errorbar(rows["intensity"], rows["accuracy"], yerr=rows["stderr"], fmt=style,
                           capsize=2, ms=4, label=label, mfc=face)  # fmt: skip
        ax.axhline(float(rows["noise_free"].iloc[0]), ls=":", lw=1, color=line[0].get_color())
    ax.set_xscale("log")
    ax.set_xlabel(f"{kind} variance at the hidden neurons")
    ax.set_ylabel("test accuracy (simulated)")
    ax.set_title(f"{kind}: {KIND_NAMES[kind]}", fontsize=10)
    return ax


def plot_convolution(table: pd.DataFrame, ax: Axes) -> Axes:
    """Prediction over simulation of the noise variance after the shipped CNN's conv2 and fc layers,
    noise of one additive kind at the site before: the mean-field rule with the layer-wide ``<W>``,
    ``<W^2>`` and with each output channel's own weights; error bars: the simulation's relative
    standard error; the band: 10 %."""
    rows = table.sort_values(["kind", "layer"]).reset_index(drop=True)
    positions = np.arange(len(rows))
    relative = rows["stderr"] / rows["simulated"]
    for column, style, label in (("meanfield", "D", "layer-wide mean field"),
                                 ("per_channel", "o", "per output channel")):  # fmt: skip
        ax.errorbar(positions, rows[column] / rows["simulated"], yerr=relative, fmt=style,
                    capsize=3, label=label)  # fmt: skip
    ax.axhspan(0.9, 1.1, color="tab:grey", alpha=0.15, lw=0)
    ax.axhline(1.0, color="k", lw=1)
    ax.set_xticks(positions, [f"{row.kind} → {row.layer}" for row in rows.itertuples()])
    ax.set_ylabel("predicted / simulated variance")
    return ax


def plot_pooling(losses: pd.DataFrame, ax: Axes) -> Axes:
    """Mean accuracy loss (± one standard error) of the shipped CNN with max and with mean pooling
    (from :func:`noiseprop.study.pooling_losses`): one additive kind right before the first pooling
    (at relu1) or right after it (at pool1), and ``MU`` at both ReLUs."""
    labels = []
    for position, (_, group) in enumerate(losses.groupby(["model", "kind"], sort=False)):
        for _, row in group.iterrows():
            style = {"relu1": ("o", "before pooling"), "pool1": ("s", "after pooling")}.get(
                row["sites"], ("D", "both ReLUs")
            )
            offset = {"relu1": -0.12, "pool1": 0.12}.get(row["sites"], 0.0)
            ax.errorbar(position + offset, 100 * row["loss"], yerr=100 * row["stderr"], fmt=style[0],
                        color={"o": "tab:blue", "s": "tab:orange", "D": "tab:green"}[style[0]],
                        capsize=3, label=style[1])  # fmt: skip
        first = group.iloc[0]
        labels.append(f"{'max' if first['model'] == 'cnn' else 'mean'}\n{first['kind']}")
    handles, names = ax.get_legend_handles_labels()
    unique = dict(zip(names, handles))
    ax.legend(unique.values(), unique.keys(), fontsize=8)
    ax.set_xticks(range(len(labels)), labels)
    ax.set_ylabel("mean accuracy loss (points)")
    return ax


def plot_beyond(errors: pd.DataFrame, kind: str, ax: Axes, *, threshold: float = 0.02) -> Axes:
    """Largest ``|relative error|`` over the layers of the predicted variance against simulation,
    against the intensity of one kind, first order and moments methods (from
    :func:`noiseprop.study.beyond_errors`), with the break-down threshold dashed; hollow markers
    are within the simulation's standard errors."""
    styles = {"covariance": ("o-", "first order"), "moments": ("s-", "moments")}
    for method, (style, label) in styles.items():
        rows = errors[(errors["method"] == method) & (errors["kind"] == kind)]
        rows = rows.sort_values("intensity")
        if rows.empty:
            continue
        line = ax.plot(rows["intensity"], rows["error"].clip(lower=1e-5), style, label=label)[0]
        settled = rows[~rows["broken"]]
        ax.plot(settled["intensity"], settled["error"].clip(lower=1e-5), "o", mfc="white",
                color=line.get_color(), ms=4)  # fmt: skip
    ax.axhline(threshold, color="k", ls="--", lw=1, label=f"{100 * threshold:g} %")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(f"{kind} variance in every layer")
    ax.set_ylabel("largest |relative error| of a layer's variance")
    ax.set_title(f"{kind}: {KIND_NAMES[kind]}", fontsize=10)
    return ax
