"""The study's report: publication figures and one self-contained HTML page that embeds them.

:func:`draw_figures` draws one matplotlib figure per finding with :mod:`noiseprop.figures` (and the
design noise budget of the study's network with :func:`noiseprop.criteria.plot_noise_budget`);
:func:`write_report` saves each as ``figures/<name>.png`` (:data:`~noiseprop.figures.DPI` dpi),
``.svg`` and ``.pdf`` and writes ``report.html``: numbered figures with standalone captions, the
computed findings, a methods section, every table as CSV and Parquet, the full table of
disagreements between theory and simulation (sortable), the settings and the provenance (versions,
git commit, machine, wall time).

The page's structure is regular for tools that read it: each figure is a
``<figure id="fig-NAME" class="study-figure">`` holding the PNG (``<img>``, base64) and a
``<figcaption>``, inside ``<section id="NAME">``; every table is a ``<table class="sortable">``.
"""

from __future__ import annotations

import base64
import datetime
import html
import os
import platform
import subprocess
from collections.abc import Callable, Iterable, Iterator
from dataclasses import fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from noiseprop.criteria import Design
    from noiseprop.study import Study, StudyConfig

__all__ = [
    "FIGURES",
    "design_finding",
    "draw_figures",
    "git_commit",
    "noise_budget",
    "provenance",
    "write_report",
]

FORMATS = ("png", "svg", "pdf")
"""The files written for each figure: ``figures/<name>.<format>``."""

DESIGN_INTENSITY = 1e-3
"""Variance of every kind of noise on every layer in the design noise budget."""
DESIGN_IMAGES = 100
"""MNIST test images over which the design noise budget is averaged."""

TABLES = {
    "accumulation": ("slopes",),
    "cnn": ("cnn", "mlp"),
    "pooling": ("pooling", "cnn"),
    "design": ("design",),
}
"""The tables a figure is drawn from, where they are not just the figure's own (``tables/<name>``)."""

FIGURES = {
    "layers": (
        "Noise per layer in symmetric networks",
        "Noise variance per neuron against layer in three symmetric networks ({width} neurons per "
        "layer, {depth} layers, every weight 1/N, input at the activation's fixed point): linear of "
        "slope 1, linear of slope 0.8 and the logistic sigmoid. Each kind of noise alone, variance "
        "{intensity:g}, in every layer. Points: simulation, {repeats} Monte Carlo repeats, ± one "
        "standard error (mostly smaller than the markers); lines: the closed-form recursion of "
        "docs/THEORY.md §2 (exact for linear activations, first order for the sigmoid). Study seed "
        "{seed}.",
    ),
    "accumulation": (
        "Accumulation against depth",
        "Noise variance per neuron against layer for linear activations of slope "
        "{accumulation_slopes} (offset chosen so that the fixed point is 0.5) in a symmetric network "
        "of {width} neurons per layer and {depth} layers, correlated additive noise (AC) of variance "
        "{intensity:g} in every layer. Points: simulation ({repeats} repeats, ± one standard error); "
        "solid lines: the exact recursion of docs/THEORY.md §2; dashed lines: its deep limit "
        "slope²·D/(1 − slope²) + D, which exists below slope 1 only. At slope 1 the noise grows "
        "linearly with depth. Study seed {seed}.",
    ),
    "slopes": (
        "The slope criterion",
        "Deep-to-first-layer noise variance ratio (layer {depth} over layer 1) against the slope of "
        "the activation at its operating point, in symmetric networks of {width} neurons per layer and "
        "{depth} layers with correlated additive noise (AC) of variance {intensity:g} in every layer: "
        "linear activations (squares) and sigmoids centred on their fixed point (circles) of slopes "
        "{slopes}, and the standard logistic sigmoid. Filled markers: simulation ({repeats} repeats, "
        "± one standard error); open black markers: first-order theory at this depth; black line: the "
        "infinite-depth limit 1/(1 − slope²), which exists below slope 1 only (dotted line). At and "
        "above slope 1 accumulation is unbounded, and the sigmoid's saturation bends it below the "
        "first-order prediction. Study seed {seed}.",
    ),
    "width": (
        "Width",
        "Variance of the average of the last layer (what the next layer of a symmetric network "
        "receives: a noise-free readout neuron with weights 1/N after layer {width_depth}) in "
        "symmetric logistic-sigmoid networks of width N = {widths}, uncorrelated (AU) or correlated "
        "(AC) additive noise alone, variance {intensity:g}, in every layer. Points: simulation "
        "({repeats} repeats, ± one standard error); lines: the closed form of docs/THEORY.md §2. "
        "Uncorrelated noise is divided by N, correlated noise passes undiminished. Study seed {seed}.",
    ),
    "trained": (
        "A trained MNIST network",
        "Noise variance per neuron in each layer of {network} on the first {trained_images} MNIST test "
        "images, each kind alone (variance {intensity:g}) in every layer. Points: simulation "
        "({trained_repeats} repeats per image, ± one standard error); solid lines: the covariance "
        "method (first order, docs/THEORY.md §3); dashed lines: the mean-field rule (§3). Study seed "
        "{seed}.",
    ),
    "beyond": (
        "Beyond first order",
        "{network_capital}, first {beyond_images} MNIST test images, each kind alone in every layer at "
        "variance {beyond_range}: the largest relative error over the layers of the predicted "
        "per-neuron variance against simulation ({beyond_repeats} repeats per image), for first order "
        "(covariance method, circles) and the moments method (docs/THEORY.md §4, squares). Filled "
        "markers: broken down, the error beyond {break_percent:g} % (dashed line) and beyond {sigmas:g} "
        "standard errors of the simulation; open markers: not broken down. Study seed {seed}.",
    ),
    "accuracy": (
        "Accuracy under noise",
        "Test accuracy of {network} on the first {accuracy_images} MNIST test images against the "
        "intensity of each kind of noise alone in every layer, variance {accuracy_range}. Points: "
        "simulation ({accuracy_repeats} noise draws per image, ± one standard error of the draws); "
        "solid lines: the prediction beyond first order (moments up to the input of the last "
        "nonlinear layer, exact integration after it; docs/THEORY.md §6); dotted lines: first order "
        "(Gaussian logits with the first-order covariance); dashed grey line: noise-free accuracy. "
        "Study seed {seed}.",
    ),
    "injection": (
        "Noise before or after the activation",
        "{network_capital} with one kind of noise at variance {injection_intensity:g} on one hidden "
        "layer (layer 1 or 2), injected after the activation (circles) or before it, on the weighted "
        "input (squares; docs/THEORY.md §1), in the network as trained and with every hidden neuron "
        "pooled ×{injection_pool} (§7): simulated accuracy loss (noise-free minus noisy accuracy) on "
        "the first {injection_images} MNIST test images ({injection_repeats} noise draws per image, "
        "± one standard error). Study seed {seed}.",
    ),
    "mitigation": (
        "Mitigation: ghost neurons and pooling",
        "{network_capital} with additive noise AU = {mitigation_AU:g} and AC = {mitigation_AC:g} on its "
        "hidden layers, as trained, with one ghost neuron per hidden layer (cancels correlated "
        "additive noise), with every hidden neuron pooled ×{mitigation_factor}, and with both "
        "(docs/THEORY.md §7). Left: test accuracy on the first {mitigation_images} MNIST test images; "
        "right: output signal-to-noise ratio. Filled circles: simulation ({mitigation_repeats} noise "
        "draws per image, ± one standard error); open diamonds: prediction (± its integration error); "
        "dashed line: noise-free accuracy. Study seed {seed}.",
    ),
    "aware": (
        "Noise-aware training",
        "784-100-100-10 sigmoid classifiers trained for {aware_epochs} epochs on the first "
        "{aware_train_size} MNIST training images with one kind of noise at variance "
        "{aware_intensity:g} on every layer (filled circles), or without noise (the control, open "
        "circles), then tested under that kind at the same variance on every layer (docs/THEORY.md "
        "§7): simulated accuracy on the first {aware_images} test images ({aware_repeats} noise draws "
        "per image, ± one standard error of the draws, given the trained networks); grey dashes: each "
        "network's noise-free accuracy. Study seed {seed} (training and test seeds derive from it).",
    ),
    "design": (
        "Design: the noise budget",
        "First-order noise budget of {network}: the part of the output variance (per output neuron, "
        "averaged over the first {design_images} MNIST test images) due to each layer's own noise, by "
        "kind, with every kind at variance {design_intensity:g} on every layer, as "
        "<code>noiseprop design --figure</code> draws it (docs/THEORY.md §7). Computed analytically: "
        "no simulation, so no repeats or seed. Stacked bars from zero.",
    ),
    "cnn": (
        "Convolutional against dense",
        "The shipped CNN (noise at its two ReLU sites; circles), its twin with mean pooling "
        "(triangles) and {network} (noise at its hidden layers; open squares), each kind of noise "
        "alone at variance {cnn_range}: simulated test accuracy on the first {cnn_images} MNIST test "
        "images ({cnn_repeats} noise draws per image, ± one standard error); dotted lines: each "
        "network's noise-free accuracy. The finding tests the research line's directions on the mean "
        "accuracy loss over the intensities. Equal variance is not equal signal-to-noise here: the "
        "CNN's ReLU outputs and the MLP's sigmoid outputs have different scales. Study seed {seed}.",
    ),
    "pooling": (
        "Pooling against noise",
        "The shipped CNN with max pooling and its twin with mean pooling (same architecture and "
        "training): mean accuracy loss over the intensities {pooling_range} (± one standard error; "
        "first {cnn_images} MNIST test images, {cnn_repeats} noise draws per image) with one additive "
        "kind right before the first pooling (at relu1; circles) or right after it (at pool1; "
        "squares), and with uncorrelated multiplicative noise at both ReLUs (over {cnn_range}; "
        "diamonds). Study seed {seed}.",
    ),
    "convolution": (
        "The mean-field rule through convolutions",
        "Noise of one additive kind (variance {intensity:g}) at the shipped CNN's relu1 (or relu2), its "
        "variance simulated before and after the next layer (conv2, or fc) on the first "
        "{beyond_images} MNIST test images ({beyond_repeats} repeats per image). Prediction over "
        "simulation for the mean-field rule N_in⟨W²⟩v (uncorrelated) and N_in²⟨W⟩²v (correlated), "
        "with the mean over all the layer's weights (diamonds) or each output channel's own "
        "(circles); v the simulated input variance. Error bars: the simulation's relative standard "
        "error; grey band: ±10 %. Study seed {seed}.",
    ),
}
"""Figure name -> (title, caption), in the order of the report. Captions are HTML with
``str.format`` placeholders (:func:`caption_values`)."""


# ------------------------------------------------------------------------------------ figures
def draw_figures(study: Study) -> dict[str, Figure]:
    """One matplotlib figure per section of the report (only for the tables that exist), and the
    design noise budget of the study's network."""
    return dict(_figures(study, noise_budget(study.config)))


def noise_budget(config: StudyConfig) -> Design:
    """The design criteria of the study's network (:func:`noiseprop.criteria.design`, no check by
    simulation) with every kind at :data:`DESIGN_INTENSITY` on every layer, on the first
    :data:`DESIGN_IMAGES` MNIST test images."""
    from noiseprop.criteria import design
    from noiseprop.experiments import _classifier, _test_images
    from noiseprop.noise import Noise

    images, _ = _test_images(DESIGN_IMAGES)
    noise = Noise(AU=DESIGN_INTENSITY, AC=DESIGN_INTENSITY, MU=DESIGN_INTENSITY, MC=DESIGN_INTENSITY)
    return design(_classifier(config.network), noise, images, check=False)


def _figures(study: Study, design: Design | None) -> Iterator[tuple[str, Figure]]:
    """``(name, figure)`` for every figure whose tables exist (and the noise budget, given
    ``design``), in report order, drawn one at a time in the report's style (it holds while the
    caller saves each)."""
    import matplotlib

    matplotlib.use("Agg")
    from noiseprop.figures import STYLE

    with matplotlib.rc_context(STYLE):
        for name in FIGURES:
            if name == "design":
                if design is not None:
                    yield name, _draw_design(design)
            elif _has(study.tables, *TABLES.get(name, (name,))):
                yield name, DRAWERS[name](study.tables, study.config)


def _has(tables: dict[str, pd.DataFrame], *names: str) -> bool:
    return all(name in tables and not tables[name].empty for name in names)


def _closed_form_handles(table: pd.DataFrame) -> list[Any]:
    """Legend entries of a figure of simulations against the closed forms: the kinds in ``table``,
    then the two markings."""
    from noiseprop import figures

    kinds = [kind for kind in figures.KIND_COLOURS if kind in set(table["kind"])]
    return figures.kind_handles(kinds) + [
        figures.simulation_handle(),
        figures.prediction_handle("closed form (docs/THEORY.md §2)"),
    ]


def _figure(width: float, height: float, rows: int = 1, columns: int = 1, **shared: Any) -> Any:
    """A figure with constrained layout (room for a legend outside the axes) and its axes."""
    import matplotlib.pyplot as plt

    figure = plt.figure(figsize=(width, height), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False, **shared)
    return figure, axes


def _legend_below(figure: Figure, handles: list[Any], columns: int) -> None:
    """One legend for the whole figure, below its axes (never over the data)."""
    figure.legend(handles=handles, labels=[h.get_label() for h in handles], loc="outside lower center",
                  ncols=columns, frameon=False)  # fmt: skip


def _inner_labels_off(axes: Any) -> None:
    """Shared axes: the y label on the left column only, the x label on the bottom row only."""
    for ax in axes[:, 1:].flat:
        ax.set_ylabel("")
    for ax in axes[:-1, :].flat:
        ax.set_xlabel("")


def _draw_per_kind(draw: Callable[[str, Axes], object], kinds: Iterable[str], **shared: Any) -> Figure:
    """One panel per kind of noise, 2 x 2 (each titled with the kind in its colour)."""
    figure, axes = _figure(7.0, 6.0, 2, 2, **shared)
    for ax, kind in zip(axes.flat, kinds):
        draw(kind, ax)
    _inner_labels_off(axes)
    return figure


def _draw_layers(tables: dict[str, pd.DataFrame], config: StudyConfig) -> Figure:
    """Three panels (linear slope 1, linear slope 0.8, sigmoid), variance per layer per kind."""
    from noiseprop import figures
    from noiseprop.study import LAYER_ACTIVATIONS

    table = tables["layers"]
    figure, axes = _figure(7.2, 3.5, 1, 3, sharey=True)
    for ax, activation in zip(axes.flat, LAYER_ACTIVATIONS):
        figures.plot_layers(table, activation, ax)
    _inner_labels_off(axes)
    _legend_below(figure, _closed_form_handles(table), 3)
    return figure


def _draw_accumulation(tables: dict[str, pd.DataFrame], config: StudyConfig) -> Figure:
    """Variance against depth for the accumulation slopes, with the predicted limits."""
    from noiseprop import figures
    from noiseprop.study import _linear

    slopes = tables["slopes"]
    chosen = slopes[slopes["activation"].isin([_linear(s) for s in config.accumulation_slopes])]
    figure, axes = _figure(5.2, 4.0)
    ax = axes[0, 0]
    figures.plot_accumulation(chosen, ax, intensity=config.intensity)
    handles = ax.get_legend_handles_labels()[0] + [
        figures.prediction_handle("exact theory"),
        figures.prediction_handle("deep limit (slope < 1)", linestyle="--"),
    ]
    _legend_below(figure, handles, 3)
    return figure


def _draw_slopes(tables: dict[str, pd.DataFrame], config: StudyConfig) -> Figure:
    """The deep/first ratio against the slope at the operating point."""
    from noiseprop import figures

    figure, axes = _figure(5.2, 4.2)
    ax = axes[0, 0]
    figures.plot_slope_criterion(tables["slopes"], ax)
    _legend_below(figure, ax.get_legend_handles_labels()[0], 2)
    return figure


def _draw_width(tables: dict[str, pd.DataFrame], config: StudyConfig) -> Figure:
    """The variance of the layer average against width, AU and AC."""
    from noiseprop import figures

    figure, axes = _figure(5.2, 4.0)
    figures.plot_width(tables["width"], axes[0, 0])
    _legend_below(figure, _closed_form_handles(tables["width"]), 2)
    return figure


def _draw_trained(tables: dict[str, pd.DataFrame], config: StudyConfig) -> Figure:
    """Per-layer noise of the trained network, one panel per kind."""
    from noiseprop import figures
    from noiseprop.noise import KINDS

    table = tables["trained"]
    figure = _draw_per_kind(lambda kind, ax: figures.plot_trained(table, kind, ax), KINDS, sharex=True)
    handles = [
        figures.simulation_handle(),
        figures.prediction_handle("covariance method (first order)"),
        figures.prediction_handle("mean-field rule", linestyle="--"),
    ]
    _legend_below(figure, handles, 3)
    return figure


def _draw_beyond(tables: dict[str, pd.DataFrame], config: StudyConfig) -> Figure:
    """The largest relative error of first order and moments against intensity, per kind."""
    from noiseprop import figures
    from noiseprop.noise import KINDS
    from noiseprop.study import BREAK, SIGMAS, beyond_errors

    errors = beyond_errors(tables["beyond"])
    figure = _draw_per_kind(
        lambda kind, ax: figures.plot_beyond(errors, kind, ax, threshold=BREAK), KINDS,
        sharex=True, sharey=True,
    )  # fmt: skip
    handles = [
        figures.prediction_handle("first order (covariance method)", marker="o"),
        figures.prediction_handle("moments method", marker="s", linestyle="-."),
        figures.prediction_handle(f"{100 * BREAK:g} % threshold", linestyle="--", colour="k"),
        figures.prediction_handle(
            f"filled: broken down (> {100 * BREAK:g} % and > {SIGMAS:g} s.e.)", marker="o",
            linestyle="none",
        ),
        figures.prediction_handle("open: not broken down", marker="o", linestyle="none", filled=False),
    ]  # fmt: skip
    _legend_below(figure, handles, 2)
    return figure


def _draw_accuracy(tables: dict[str, pd.DataFrame], config: StudyConfig) -> Figure:
    """Accuracy against intensity, one panel per kind: simulation and both predictions."""
    from noiseprop import figures
    from noiseprop.curves import plot_accuracy_curve
    from noiseprop.noise import KINDS

    table = tables["accuracy"]

    def draw(kind: str, ax: Axes) -> None:
        plot_accuracy_curve(table[table["kind"] == kind], ax, legend=False)
        ax.set_xlabel(f"{kind} intensity D in every layer (variance)")
        figures.kind_title(ax, kind)

    figure = _draw_per_kind(draw, [k for k in KINDS if k in set(table["kind"])], sharex=True,
                               sharey=True)  # fmt: skip
    handles = [
        figures.simulation_handle(),
        figures.prediction_handle("predicted beyond first order"),
        figures.prediction_handle("predicted to first order", linestyle=":"),
        figures.prediction_handle("noise-free accuracy", linestyle="--", colour="0.5"),
    ]
    _legend_below(figure, handles, 2)
    return figure


def _draw_mitigation(tables: dict[str, pd.DataFrame], config: StudyConfig) -> Figure:
    """Accuracy and output SNR of the mitigation variants, simulated and predicted."""
    from noiseprop import figures

    table = tables["mitigation"]
    figure, axes = _figure(7.2, 3.6, 1, 2)
    figures.plot_mitigation(table, axes[0, 0])
    figures.plot_mitigation_snr(table, axes[0, 1])
    au, ac = config.mitigation_noise
    figure.suptitle(
        f"AU = {au:g}, AC = {ac:g} on the hidden layers; pooling ×{config.mitigation_factor}; "
        f"{config.mitigation_images} images × {config.mitigation_repeats} noise draws",
        fontsize=9,
    )
    handles = [
        figures.simulation_handle(),
        figures.simulation_handle("prediction (± integration error)", marker="D", filled=False),
        figures.prediction_handle("noise-free accuracy", linestyle="--", colour="k"),
    ]
    _legend_below(figure, handles, 3)
    return figure


def _draw_injection(tables: dict[str, pd.DataFrame], config: StudyConfig) -> Figure:
    """Accuracy loss with the noise before or after the activation, per kind and hidden layer."""
    from noiseprop import figures
    from noiseprop.noise import KINDS
    from noiseprop.study import injection_losses

    losses = injection_losses(tables["injection"])
    kinds = [kind for kind in KINDS if kind in set(losses["kind"])]
    figure = _draw_per_kind(lambda kind, ax: figures.plot_injection(losses, kind, ax), kinds,
                               sharex=True)  # fmt: skip
    handles = [
        figures.simulation_handle(f"{label} (simulated, ± 1 s.e.)", marker=marker)
        for marker, label in figures.INJECTION_MARKERS.values()
    ]
    _legend_below(figure, handles, 2)
    return figure


def _draw_aware(tables: dict[str, pd.DataFrame], config: StudyConfig) -> Figure:
    """Accuracy under each kind of noise of the network trained with it and of the control."""
    from noiseprop import figures

    figure, axes = _figure(6.0, 4.2)
    figures.plot_aware(tables["aware"], axes[0, 0])
    kinds = [kind for kind in figures.KIND_COLOURS if kind in set(tables["aware"]["kind"])]
    handles = figures.kind_handles(kinds) + [
        figures.simulation_handle("trained with that noise (simulated, ± 1 s.e.)"),
        figures.simulation_handle("trained without noise (control)", filled=False),
        figures.prediction_handle("noise-free accuracy of the network", linestyle="none", marker="_",
                                  colour="0.45"),
    ]  # fmt: skip
    _legend_below(figure, handles, 2)
    return figure


def _draw_design(design: Design) -> Figure:
    """The design noise budget, drawn by :func:`noiseprop.criteria.plot_noise_budget`."""
    from noiseprop import figures
    from noiseprop.criteria import plot_noise_budget

    figure, axes = _figure(5.2, 3.8)
    ax = axes[0, 0]
    plot_noise_budget(design, ax)
    figures.recolour_noise_budget(ax)
    kinds = [container.get_label() for container in ax.containers]
    _legend_below(figure, figures.kind_handles(kinds), 2)
    return figure


def _draw_cnn(tables: dict[str, pd.DataFrame], config: StudyConfig) -> Figure:
    """Accuracy of the CNN, its mean-pooling twin and the MLP against intensity, per kind."""
    from noiseprop import figures
    from noiseprop.noise import KINDS

    figure = _draw_per_kind(
        lambda kind, ax: figures.plot_cnn_mlp(tables["cnn"], tables["mlp"], kind, ax), KINDS,
        sharex=True, sharey=True,
    )  # fmt: skip
    handles = [
        figures.simulation_handle(f"{label} (simulated, ± 1 s.e.)", marker=style["fmt"][0],
                                  filled="mfc" not in style)
        for label, style in figures.CNN_STYLES.items()
    ] + [figures.prediction_handle("noise-free accuracy", linestyle=":")]  # fmt: skip
    _legend_below(figure, handles, 2)
    return figure


def _draw_pooling(tables: dict[str, pd.DataFrame], config: StudyConfig) -> Figure:
    """Mean accuracy loss with the noise before or after the first pooling."""
    from noiseprop import figures
    from noiseprop.study import pooling_losses

    losses = pooling_losses(tables["pooling"], tables["cnn"])
    figure, axes = _figure(6.4, 4.0)
    figures.plot_pooling(losses, axes[0, 0])
    sites = [*figures.POOLING_SITES.values(), figures.BOTH_RELUS]
    handles = [figures.simulation_handle(label, marker=marker) for marker, label in sites]
    kinds = [kind for kind in figures.KIND_COLOURS if kind in set(losses["kind"])]
    _legend_below(figure, handles + figures.kind_handles(kinds), 3)
    return figure


def _draw_convolution(tables: dict[str, pd.DataFrame], config: StudyConfig) -> Figure:
    """The mean-field rule over simulation after conv2 and fc."""
    from matplotlib.patches import Patch

    from noiseprop import figures

    table = tables["convolution"]
    figure, axes = _figure(5.2, 4.0)
    figures.plot_convolution(table, axes[0, 0])
    handles = [
        figures.simulation_handle(label, marker=marker)
        for marker, label in figures.CONVOLUTION_MARKERS.values()
    ]
    kinds = [kind for kind in figures.KIND_COLOURS if kind in set(table["kind"])]
    handles += figures.kind_handles(kinds) + [Patch(color="0.5", alpha=0.3, label="±10 %")]
    _legend_below(figure, handles, 3)
    return figure


DRAWERS: dict[str, Callable[[dict[str, pd.DataFrame], StudyConfig], Figure]] = {
    "layers": _draw_layers,
    "accumulation": _draw_accumulation,
    "slopes": _draw_slopes,
    "width": _draw_width,
    "trained": _draw_trained,
    "beyond": _draw_beyond,
    "accuracy": _draw_accuracy,
    "injection": _draw_injection,
    "mitigation": _draw_mitigation,
    "aware": _draw_aware,
    "cnn": _draw_cnn,
    "pooling": _draw_pooling,
    "convolution": _draw_convolution,
}
"""Figure name -> the function that draws it from the tables; :func:`_figures` calls it only where
the tables it is drawn from (:data:`TABLES`) are there and not empty."""


def design_finding(design: Design) -> str:
    """One sentence on the noise budget: the layer and the kind that dominate the output noise,
    and the largest single source, with their shares of the first-order output variance."""
    from noiseprop.noise import KINDS

    budget = design.budget
    total = budget.first_order_total
    if total <= 0:
        return "no noise reaches the output."
    layer, kind = budget.dominant_layer, budget.dominant_kind
    share = budget.by_layer[layer - 1] / total
    kind_share = budget.by_kind[kind] / total
    sources = [
        (value, number, KINDS[k])
        for number, row in enumerate(budget.contributions, start=1)
        for k, value in enumerate(row)
    ]
    value, number, largest = max(sources)
    output = " (the output layer)" if layer == len(budget.contributions) else ""
    return (
        f"layer {layer}{output} dominates the output noise with {share:.1%} of the first-order output "
        f"variance (in all {total:.4g}) and {kind} is the largest kind with {kind_share:.1%}; the "
        f"largest single source is {largest} at layer {number} ({value / total:.1%})"
    )


# --------------------------------------------------------------------------------- the report
def write_report(study: Study, *, seed: int, wall_seconds: float | None = None) -> Study:
    """Write ``figures/<name>.png|svg|pdf``, ``tables/disagreements.csv|parquet``,
    ``tables/design.csv|parquet`` (the noise budget) and ``report.html`` into the study's output
    folder.

    Args:
        study: what the study produced.
        seed: the study's seed (shown in the captions and the settings).
        wall_seconds: the study's wall time, shown in the provenance when given.

    Returns:
        The study with ``figures`` (name -> PNG path), ``report`` and the design noise budget's
        finding (``findings["design"]``).
    """
    import matplotlib.pyplot as plt

    from noiseprop.interactive import figure_html

    design = noise_budget(study.config)
    findings = {**study.findings, "design": design_finding(design)}
    tables_folder = study.output / "tables"
    tables_folder.mkdir(parents=True, exist_ok=True)
    _write_table(study.disagreements, tables_folder / "disagreements")
    _write_table(design.budget.to_frame(), tables_folder / "design")
    folder = study.output / "figures"
    folder.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    interactive: dict[str, str] = {}
    for name, figure in _figures(study, design):
        paths[name] = _save_figure(figure, folder / name, FIGURES[name][0])
        interactive[name] = figure_html(figure, f"plot-{name}")
        plt.close(figure)
    values = caption_values(study.config, seed)
    sections = [
        _figure_section(number, name, paths[name], findings.get(name, ""), values, interactive[name])
        for number, name in enumerate(paths, start=1)
    ]
    page = _page(study, findings, sections, list(paths), seed, wall_seconds)
    report = study.output / "report.html"
    report.write_text(page, encoding="utf-8")
    return replace(study, findings=findings, figures=paths, report=report)


def _write_table(table: pd.DataFrame, stem: Path) -> None:
    """``stem.csv`` and ``stem.parquet``."""
    table.to_csv(stem.with_suffix(".csv"), index=False)
    table.to_parquet(stem.with_suffix(".parquet"), index=False)


def _save_figure(figure: Figure, stem: Path, title: str) -> Path:
    """Save ``figure`` as ``stem.png`` (:data:`~noiseprop.figures.DPI` dpi), ``.svg`` and ``.pdf``
    (vector, without a creation date, so that the same figure gives the same file), its layout
    computed once and then frozen; return the PNG's path."""
    from noiseprop.figures import DPI

    metadata = {
        "png": {"Title": title},
        "svg": {"Title": title, "Date": None},
        "pdf": {"Title": title, "CreationDate": None},
    }
    figure.draw_without_rendering()  # the constrained layout, once
    figure.set_layout_engine(None)  # kept as it is: one draw per file
    for suffix in FORMATS:
        figure.savefig(stem.with_suffix(f".{suffix}"), dpi=DPI, metadata=metadata[suffix])
    return stem.with_suffix(".png")


def _words(values: Iterable[Any]) -> str:
    """``[0.6, 0.8, 1]`` -> ``"0.6, 0.8 and 1"``."""
    texts = [f"{value:g}" for value in values]
    return texts[0] if len(texts) == 1 else ", ".join(texts[:-1]) + " and " + texts[-1]


def _span(values: Iterable[float]) -> str:
    """``"0.003 to 3 (10 values)"``, or the one value."""
    values = sorted(values)
    if len(values) == 1:
        return f"{values[0]:g}"
    return f"{values[0]:g} to {values[-1]:g} ({len(values)} values)"


def _thousands(value: Any) -> Any:
    """Integers as text with thousands separators (``10,000``); anything else as it is."""
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else value


def caption_values(config: StudyConfig, seed: int) -> dict[str, Any]:
    """The placeholders of the captions in :data:`FIGURES`: every field of ``config``, the seed,
    and the network and grids in words."""
    from noiseprop.study import BREAK, SIGMAS

    network = (
        "the shipped 784-100-100-10 sigmoid MNIST classifier"
        if config.network == "default"
        else f"the network in {config.network}"
    )
    values = {field.name: _thousands(getattr(config, field.name)) for field in fields(config)}
    return {
        **values,
        "seed": seed,
        "network": html.escape(network),
        "network_capital": html.escape(network[:1].upper() + network[1:]),
        "accumulation_slopes": _words(config.accumulation_slopes),
        "slopes": _words(config.slopes),
        "widths": _words(config.widths),
        "accuracy_range": _span(config.accuracy_intensities),
        "beyond_range": _span(config.beyond_intensities),
        "cnn_range": _span(config.cnn_intensities),
        "pooling_range": _span(config.pooling_intensities),
        "mitigation_AU": config.mitigation_noise[0],
        "mitigation_AC": config.mitigation_noise[1],
        "design_intensity": DESIGN_INTENSITY,
        "design_images": DESIGN_IMAGES,
        "sigmas": SIGMAS,
        "break_percent": 100 * BREAK,
    }


def escape_text(text: str) -> str:
    """``text`` for an HTML text node: ``&``, ``<`` and quotes escaped; ``>`` kept as it is (valid
    there), so that a finding's ``->`` reads the same in the page's source."""
    return html.escape(text).replace("&gt;", ">")


def _figure_section(
    number: int, name: str, path: Path, finding: str, values: dict[str, Any], interactive: str
) -> str:
    """A figure's section: its finding, the figure (PNG embedded, and its interactive version,
    :func:`noiseprop.interactive.figure_html`, which replaces the PNG where JavaScript runs) with its
    numbered caption, and links to its files and tables."""
    title, caption = FIGURES[name]
    label = f"Figure {number}."
    encoded = base64.b64encode(path.read_bytes()).decode()
    return (
        f'<section id="{name}">\n<h2>{label} {html.escape(title)}</h2>\n'
        f'<p class="finding"><strong>Finding.</strong> {escape_text(finding)}</p>\n'
        f'<figure id="fig-{name}" class="study-figure">\n'
        f'<img alt="{label} {html.escape(title)}" src="data:image/png;base64,{encoded}">\n'
        f"{interactive}"
        f'<figcaption><span class="figure-number">{label}</span> <strong>{html.escape(title)}.</strong> '
        f"{caption.format(**values)}</figcaption>\n</figure>\n"
        f'<p class="downloads">{_downloads(name)}</p>\n</section>'
    )


def _downloads(name: str) -> str:
    """Relative links to a figure's files and to its tables."""
    files = " · ".join(f'<a href="figures/{name}.{suffix}">{suffix.upper()}</a>' for suffix in FORMATS)
    tables = "; ".join(
        f'<code>{table}</code> <a href="tables/{table}.csv">CSV</a> · '
        f'<a href="tables/{table}.parquet">Parquet</a>'
        for table in TABLES.get(name, (name,))
    )
    return f"Figure: {files}. Data: {tables}."


# ----------------------------------------------------------------------------------- tables
COLUMN_NAMES = {
    "figure": "figure",
    "activation": "activation",
    "kind": "kind of noise",
    "intensity": "intensity (variance)",
    "width": "width (neurons)",
    "depth": "depth (layers)",
    "layer": "layer",
    "method": "method",
    "predicted": "predicted",
    "simulated": "simulated",
    "stderr": "standard error (simulation)",
    "z": "z (standard errors)",
    "relative_error": "relative error",
}
"""Table headers in words (other columns: the name with spaces)."""

METHOD_NAMES = {
    "montecarlo": "simulation",
    "symmetric": "closed form (symmetric)",
    "covariance": "covariance method (first order)",
    "meanfield": "mean-field rule",
    "moments": "moments method",
    "predicted": "accuracy beyond first order",
    "first-order": "accuracy to first order",
}


def _cell(column: str, value: Any, numbers: dict[str, int]) -> str:
    """One table cell: numbers to 4 significant digits (with the exact value to sort by), missing
    values as an empty cell with a dash, names in words."""
    import numbers as kinds_of_number

    import pandas as pd

    from noiseprop.figures import activation_title

    if pd.api.types.is_scalar(value) and pd.isna(value):
        return '<td data-value="">—</td>'
    if isinstance(value, kinds_of_number.Number) and not isinstance(value, bool):
        number = float(value)
        text = str(int(number)) if number.is_integer() and abs(number) < 1e12 else f"{number:.4g}"
        exact = repr(number).replace("inf", "Infinity")  # as JavaScript's parseFloat reads it
        return f'<td class="number" data-value="{exact}">{text}</td>'
    text = str(value)
    if column == "figure" and text in numbers:
        return (
            f'<td data-value="{numbers[text]}"><a href="#{html.escape(text)}">Figure {numbers[text]}</a>'
            f" ({html.escape(text)})</td>"
        )
    if column == "method":
        text = METHOD_NAMES.get(text, text)
    elif column == "activation":
        text = activation_title(text) + (
            f", offset {text.split('offset=')[1]}" if "offset=" in text else ""
        )
    return f"<td>{html.escape(text)}</td>"


def html_table(frame: pd.DataFrame, *, numbers: dict[str, int] | None = None, table_id: str = "") -> str:
    """``frame`` as a ``<table class="sortable">``: headers in words, every row, numbers to 4
    significant digits, missing values as a dash; ``numbers`` (figure name -> number) links the
    ``figure`` column to the figures."""
    numbers = numbers or {}
    header = "".join(
        f'<th scope="col">{html.escape(COLUMN_NAMES.get(column, str(column).replace("_", " ")))}</th>'
        for column in frame.columns
    )
    rows = "\n".join(
        "<tr>" + "".join(_cell(str(column), value, numbers) for column, value in zip(frame.columns, row))
        + "</tr>"
        for row in frame.itertuples(index=False, name=None)
    )  # fmt: skip
    identifier = f' id="{table_id}"' if table_id else ""
    return (
        f'<div class="table-scroll"><table class="sortable"{identifier}>\n'
        f"<thead><tr>{header}</tr></thead>\n<tbody>\n{rows}\n</tbody>\n</table></div>"
    )


def _pairs_table(pairs: Iterable[tuple[str, Any]], table_id: str) -> str:
    """Two columns, name and value, as a ``<table class="sortable">``."""
    rows = "\n".join(
        f'<tr><th scope="row">{html.escape(name)}</th><td>{html.escape(str(value))}</td></tr>'
        for name, value in pairs
    )
    return (
        f'<table class="sortable" id="{table_id}">\n<thead><tr><th scope="col">name</th>'
        f'<th scope="col">value</th></tr></thead>\n<tbody>\n{rows}\n</tbody>\n</table>'
    )


def settings(config: StudyConfig, seed: int) -> list[tuple[str, str]]:
    """The seed and every field of ``config``, as (name, value) in words (tuples comma-separated)."""
    pairs = [("seed", str(seed))]
    for field in fields(config):
        value = getattr(config, field.name)
        if isinstance(value, tuple):
            text = ", ".join(f"{item:g}" if isinstance(item, float) else str(item) for item in value)
        elif isinstance(value, float):
            text = f"{value:g}"
        else:
            text = str(value)
        pairs.append((field.name, text))
    return pairs


# ------------------------------------------------------------------------------- provenance
def git_commit() -> str:
    """The commit of the git checkout noiseprop runs from (``-dirty`` with uncommitted changes to
    tracked files), or ``"unknown"`` when it is not a git checkout or git is missing."""
    package = Path(__file__).resolve().parent

    def git(*arguments: str) -> str:
        result = subprocess.run(
            ["git", "-C", str(package), *arguments], capture_output=True, text=True, timeout=20,
            check=True,
        )  # fmt: skip
        return result.stdout.strip()

    try:
        git("ls-files", "--error-unmatch", Path(__file__).name)  # the package is tracked here
        commit = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + ("-dirty" if dirty else "") if commit else "unknown"


def _version(module: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(module)
    except PackageNotFoundError:
        return "not installed"


def _duration(seconds: float) -> str:
    """``"3 min 25 s"``, ``"1 h 02 min"``, ``"12.3 s"``."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {rest:02d} s"
    return f"{minutes // 60} h {minutes % 60:02d} min"


def provenance(wall_seconds: float | None = None) -> list[tuple[str, str]]:
    """What produced the report, as (name, value): noiseprop version and git commit, the versions
    of Python, torch, numpy, pandas, matplotlib and dask, the machine, the time and the study's wall
    time (when given)."""
    import matplotlib
    import numpy
    import pandas
    import torch

    from noiseprop import __version__

    now = datetime.datetime.now(datetime.timezone.utc)
    return [
        ("noiseprop", __version__),
        ("git commit", git_commit()),
        ("Python", f"{platform.python_version()} ({platform.python_implementation()})"),
        ("torch", torch.__version__),
        ("numpy", numpy.__version__),
        ("pandas", pandas.__version__),
        ("matplotlib", matplotlib.__version__),
        ("dask", _version("dask")),
        ("platform", platform.platform()),
        (
            "processor",
            platform.machine() + (f", {platform.processor()}" if platform.processor() else ""),
        ),
        ("CPU count", str(os.cpu_count())),
        ("report written", f"{now:%Y-%m-%d %H:%M:%S} UTC"),
        ("study wall time", "not recorded" if wall_seconds is None else _duration(wall_seconds)),
    ]


# ---------------------------------------------------------------------------------- the page
METHODS = """<section id="methods"><h2>Methods</h2>
<p><strong>Noise model.</strong> Every neuron of a hidden or output layer is a noisy device: with
<i>s</i> = <i>f</i>(<i>x</i>) its noise-free response to its weighted input <i>x</i>, its output is
<i>y</i> = <i>s</i> (1 + ξ<sub>MU</sub> + ξ<sub>MC</sub>) + ξ<sub>AU</sub> + ξ<sub>AC</sub>. Each ξ is a
zero-mean Gaussian drawn afresh at every presentation of an input, independent of the signal and of
the others: the uncorrelated kinds (AU additive, MU multiplicative) independently for every neuron, the
correlated kinds (AC, MC) once per layer and presentation, shared by its neurons. Intensities are
variances (Var ξ<sub>AU</sub> = D<sub>AU</sub>, …). Activations are dimensionless, so variances of
outputs are in squared activation units (a.u.²); SNR = mean² / variance, in dB 10 log<sub>10</sub> SNR.
The input layer is noise-free. (Section 1 of {theory}.)</p>
<p><strong>Predictions.</strong> For symmetric networks (every weight 1/N, one input value) the
variance of the layer average follows a closed-form recursion, exact for linear activations and first
order otherwise (§2): it gives the deep limit 1/(1 − slope²) of a layer's own correlated noise below
slope 1 and unbounded growth at and above it. For any dense network the <em>covariance method</em>
propagates the full covariance matrix to first order around the noise-free operating point (§3), and
the <em>mean-field rule</em> describes each layer by its per-neuron variance and one shared covariance,
with the weights replaced by their mean and mean square (§3). The <em>moments method</em> carries the
true mean and variance through the activations as Gaussian integrals, and integrates the correlated
draws exactly by quadrature (§4). Accuracy is predicted beyond first order by carrying the moments up to
the input of the last nonlinear layer and integrating the rest exactly at quasi-random points, or to
first order as the Gaussian orthant probability of the logits (§6). The design noise budget splits the
first-order output variance into one part per source layer and kind (§7).</p>
<p><strong>Simulation and standard errors.</strong> Every prediction is set against a Monte Carlo
simulation of the noisy network with fresh draws at every repeat (float32, statistics accumulated in
float64; §5). The standard error of a simulated variance is from batch means over 32 independent
groups of repeats, which needs no distributional assumption; that of a simulated accuracy is the
spread of the noise draws for the given images, not that of a finite test set; a predicted accuracy's
error is the spread of 8 independent quasi-random integrations (§6). Error bars are ± one standard
error throughout. A prediction and a simulation disagree when
z = (predicted − simulated) / standard error exceeds {sigmas:g} in magnitude; every such row is listed
below. Each sweep point's seed derives from the study seed and the point's parameters, so a point's
numbers do not depend on the others, and the study resumes after an interruption with the same
results.</p>
</section>"""
"""The methods section (HTML, with ``{theory}`` the link to docs/THEORY.md and ``{sigmas}``)."""

SORT_SCRIPT = """<script>
// Sort a table.sortable by the clicked column (again: the other way); numbers by data-value.
document.querySelectorAll("table.sortable").forEach(function (table) {
  table.querySelectorAll("thead th").forEach(function (header, column) {
    header.tabIndex = 0;
    header.title = "Sort by this column";
    var sort = function () {
      var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
      var ascending = header.getAttribute("aria-sort") !== "ascending";
      table.querySelectorAll("thead th").forEach(function (th) { th.removeAttribute("aria-sort"); });
      header.setAttribute("aria-sort", ascending ? "ascending" : "descending");
      var key = function (row) {
        var cell = row.cells[column], value = cell.getAttribute("data-value");
        if (value === null) { return cell.textContent.trim(); }
        return value === "" ? null : parseFloat(value);
      };
      rows.sort(function (a, b) {
        var x = key(a), y = key(b);
        if (x === y) { return 0; }
        if (x === null) { return 1; }
        if (y === null) { return -1; }
        var numeric = typeof x === "number" && typeof y === "number";
        var order = numeric ? x - y : String(x).localeCompare(String(y));
        return ascending ? order : -order;
      });
      rows.forEach(function (row) { body.appendChild(row); });
    };
    header.addEventListener("click", sort);
    header.addEventListener("keydown", function (event) { if (event.key === "Enter") { sort(); } });
  });
});
</script>"""
"""A few lines of JavaScript that make every ``table.sortable`` sortable by clicking a header; the
page shows every table without it."""

STYLESHEET = """<style>
body { font-family: system-ui, sans-serif; max-width: 72rem; margin: 2rem auto; padding: 0 1rem;
       color: #222; line-height: 1.45; }
figure.study-figure { margin: 1rem 0; }
figure.study-figure img { max-width: 100%; height: auto; border: 1px solid #ddd; }
figcaption { font-size: .9rem; color: #333; margin-top: .4rem; }
.figure-number { font-weight: 700; }
.finding { background: #f3f7ff; padding: .4rem .6rem; border-left: 4px solid #4a7; }
.downloads { font-size: .85rem; color: #555; }
table { border-collapse: collapse; font-size: .8rem; margin: .5rem 0; }
td, th { padding: .15rem .5rem; text-align: left; vertical-align: top; }
td.number { text-align: right; font-variant-numeric: tabular-nums; }
thead th { border-bottom: 1px solid #999; cursor: pointer; vertical-align: bottom; }
.table-scroll { overflow-x: auto; max-width: 100%; }
thead th[aria-sort="ascending"]::after { content: " ▲"; }
thead th[aria-sort="descending"]::after { content: " ▼"; }
tbody tr:nth-child(even) { background: #f6f6f6; }
code { font-size: .85rem; }
</style>"""


def _theory_link(output: Path) -> str:
    """docs/THEORY.md as a link relative to the report when the package runs from a checkout that
    has it, else its path as text."""
    theory = Path(__file__).resolve().parents[2] / "docs" / "THEORY.md"
    if not theory.is_file():
        return "<code>docs/THEORY.md</code> of the noiseprop repository"
    relative = os.path.relpath(theory, output.resolve())
    return f'<a href="{html.escape(Path(relative).as_posix())}"><code>docs/THEORY.md</code></a>'


def _disagreement_section(study: Study, numbers: dict[str, int]) -> str:
    """Every row where theory and simulation differ by more than SIGMAS standard errors."""
    from noiseprop.study import SIGMAS

    table = study.disagreements
    links = (
        'Download: <a href="tables/disagreements.csv">CSV</a> · '
        '<a href="tables/disagreements.parquet">Parquet</a>.'
    )
    if table.empty:
        listed = (
            f"<p>None: every prediction lies within {SIGMAS:g} standard errors of its simulation. "
            f"{links}</p>"
        )
    else:
        listed = (
            f"<p>{len(table)} (figure, point, layer, method) rows differ by more than {SIGMAS:g} "
            "standard errors; all are listed, largest |z| first (click a column header to sort). "
            "Each is a place where the first-order theory, the mean-field rule or the Gaussian "
            f"assumption stops holding. Relative error = (predicted − simulated) / simulated. {links}"
            "</p>\n" + html_table(table, numbers=numbers, table_id="disagreement-table")
        )
    return (
        '<section id="disagreements"><h2>Where theory and simulation disagree</h2>\n'
        f"{listed}\n</section>"
    )


def _failures_section(study: Study) -> str:
    if study.failures.empty:
        return ""
    table = study.failures.drop(columns="traceback", errors="ignore")
    return f'<section id="failures"><h2>Failed points</h2>\n{html_table(table)}\n</section>'


def _page(study: Study, findings: dict[str, str], sections: list[str], names: list[str], seed: int,
          wall_seconds: float | None) -> str:  # fmt: skip
    """The whole HTML page: the interactive figures' library (plotly.js) goes last, embedded, so
    that the text and the static figures show first and nothing is fetched."""
    from noiseprop.interactive import INTERACTIVE_CSS, plotly_javascript, toggle_script
    from noiseprop.study import SIGMAS

    numbers = {name: number for number, name in enumerate(names, start=1)}
    contents = "\n".join(
        f'<li><a href="#{name}">Figure {numbers[name]}. {html.escape(FIGURES[name][0])}</a>: '
        f"{escape_text(findings.get(name, ''))}</li>"
        for name in names
    )
    methods = METHODS.format(theory=_theory_link(study.output), sigmas=SIGMAS)
    body = "\n".join(sections)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>noiseprop study</title>
{STYLESHEET}
<style>{INTERACTIVE_CSS}</style>
</head><body>
<h1>noiseprop study: how neuron noise propagates through deep networks</h1>
<p>Every finding below is a sentence computed from the tables in <code>tables/</code> (CSV and
Parquet, linked under each figure), never typed in. Noise intensities are variances; error bars are
± one standard error. See <a href="#methods">Methods</a>, <a href="#disagreements">where theory and
simulation disagree</a>, <a href="#settings">Settings</a> (seed {seed}) and
<a href="#provenance">Provenance</a>.</p>
<ol class="contents">
{contents}
</ol>
{methods}
{body}
{_disagreement_section(study, numbers)}
{_failures_section(study)}
<section id="settings"><h2>Settings</h2>
<p>The study's seed and sizes (<code>noiseprop.study.StudyConfig</code>).</p>
{_pairs_table(settings(study.config, seed), "settings-table")}
</section>
<section id="provenance"><h2>Provenance</h2>
{_pairs_table(provenance(wall_seconds), "provenance-table")}
</section>
{SORT_SCRIPT}
{toggle_script()}
<script>{plotly_javascript()}</script>
</body></html>
"""
