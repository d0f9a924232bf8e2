"""The study's report: figures as PNG files and one self-contained HTML page that embeds them."""

from __future__ import annotations

import base64
import datetime
import html
import json
import platform
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from noiseprop.study import Study

__all__ = ["FIGURES", "draw_figures", "write_report"]

TABLES = {"accumulation": "slopes"}
"""Figures drawn from another figure's table."""

FIGURES = {
    "layers": (
        "Noise per layer in symmetric networks",
        "Every weight 1/N, each kind of noise alone (variance {intensity:g}) in every layer, input at "
        "the activation's fixed point. Points: simulation (± one standard error); lines: the closed "
        "form of docs/THEORY.md §2.",
    ),
    "accumulation": (
        "Accumulation against depth",
        "Linear activations, correlated additive noise. At slope 1 the noise grows linearly with "
        "depth; below 1 it converges to the dashed limit slope²·D/(1 − slope²) + D.",
    ),
    "slopes": (
        "The slope criterion",
        "Deep-to-first-layer noise ratio (correlated additive noise) against the slope of the "
        "activation at its operating point, for linear activations and sigmoids centred on their "
        "fixed point. Below slope 1 the ratio approaches 1/(1 − slope²); at and above 1 accumulation "
        "is unbounded, and the sigmoid's saturation bends the first-order prediction.",
    ),
    "width": (
        "Width",
        "Variance of a deep layer's average output (what the next layer receives) in symmetric "
        "sigmoid networks of growing width: uncorrelated noise is divided by N, correlated noise "
        "passes undiminished.",
    ),
    "trained": (
        "A trained MNIST network",
        "Per-layer noise of the 784-100-100-10 sigmoid classifier on real test images, each kind "
        "alone (variance {intensity:g}) in every layer: simulation, covariance method and mean-field "
        "rule.",
    ),
    "mitigation": (
        "Mitigation: ghost neurons and pooling",
        "The trained network with additive noise on its hidden layers, as it is, with one ghost "
        "neuron per hidden layer (cancels correlated additive noise), with every hidden neuron "
        "pooled, and with both (docs/THEORY.md §7). Bars: simulated accuracy; diamonds: predicted; "
        "labels: output SNR.",
    ),
    "beyond": (
        "Beyond first order",
        "The trained network, each kind alone in every layer at growing intensity: the largest "
        "relative error over the layers of the predicted variance against simulation, first order "
        "(covariance method) and the moments method. Above the dashed line and beyond 4 standard "
        "errors a method has broken down (hollow markers: within the simulation's error).",
    ),
    "cnn": (
        "Convolutional against dense",
        "The shipped CNN (noise at its two ReLU sites) and the shipped MLP (noise at its two hidden "
        "layers), each kind of noise alone: simulated test accuracy (± one standard error) against "
        "the intensity, noise-free accuracies dotted. The finding tests the research line's "
        "directions on the mean accuracy loss over the intensities. Equal variance is not equal "
        "signal-to-noise here: the CNN's ReLU outputs and the MLP's sigmoid outputs have different "
        "scales.",
    ),
    "pooling": (
        "Pooling against noise",
        "The shipped CNN with max pooling and its twin with mean pooling (same architecture and "
        "training): mean accuracy loss over the intensities 0.1 to 1 (± one standard error) with one "
        "additive kind right before the first pooling (at relu1) or right after it (at pool1), and "
        "with uncorrelated multiplicative noise at both ReLUs (over the CNN figure's intensities).",
    ),
    "convolution": (
        "The mean-field rule through convolutions",
        "Noise of one additive kind at the shipped CNN's relu1 (or relu2), its variance simulated "
        "before and after the next layer (conv2, or fc). Prediction over simulation for the "
        "mean-field rule: N_in<W²>v (uncorrelated) and N_in²<W>²v (correlated), with the mean over "
        "all the layer's weights (diamonds) or each output channel's own (circles); v the simulated "
        "input variance. Grey band: ±10 %.",
    ),
    "accuracy": (
        "Accuracy under noise",
        "Test accuracy against the intensity of each kind of noise in every layer: simulation "
        "(points ± one standard error), the prediction beyond first order (solid lines: Gaussian "
        "input to the last nonlinear layer, the rest integrated exactly) and the first-order "
        "prediction (dotted: Gaussian logits with the first-order covariance).",
    ),
}


def draw_figures(study: Study) -> dict[str, Figure]:
    """One matplotlib figure per section of the report (only for the tables that exist)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from noiseprop import figures
    from noiseprop.curves import plot_accuracy_curve
    from noiseprop.study import LAYER_ACTIVATIONS, _linear

    tables, config = study.tables, study.config
    drawn: dict[str, Figure] = {}
    if not tables.get("layers", _empty()).empty:
        figure, axes = plt.subplots(1, 3, figsize=(13, 4), sharey=True)
        for ax, activation in zip(axes, LAYER_ACTIVATIONS):
            figures.plot_layers(tables["layers"], activation, ax)
        axes[-1].legend(fontsize=7, ncol=2)
        drawn["layers"] = figure
    if not tables.get("slopes", _empty()).empty:
        slopes = tables["slopes"]
        figure, ax = plt.subplots(figsize=(6.5, 4.2))
        chosen = slopes[slopes["activation"].isin([_linear(s) for s in config.accumulation_slopes])]
        figures.plot_accumulation(chosen, ax, intensity=config.intensity)
        ax.legend(fontsize=8)
        drawn["accumulation"] = figure
        figure, ax = plt.subplots(figsize=(6.5, 4.2))
        figures.plot_slope_criterion(slopes, ax)
        ax.legend(fontsize=7)
        drawn["slopes"] = figure
    if not tables.get("width", _empty()).empty:
        figure, ax = plt.subplots(figsize=(6.5, 4.2))
        figures.plot_width(tables["width"], ax)
        ax.legend(fontsize=8)
        drawn["width"] = figure

    def per_kind(draw: Callable[[str, Axes], object], sharey: bool = False) -> Figure:
        """One panel per kind of noise, 2 x 2, the legend in the first."""
        figure, axes = plt.subplots(2, 2, figsize=(11, 7), sharey=sharey)
        for ax, kind in zip(axes.flat, ("AU", "AC", "MU", "MC")):
            draw(kind, ax)
        if sharey:
            for ax in axes[:, 1]:
                ax.set_ylabel("")
        axes.flat[0].legend(fontsize=8)
        return figure

    if not tables.get("trained", _empty()).empty:
        drawn["trained"] = per_kind(lambda kind, ax: figures.plot_trained(tables["trained"], kind, ax))
    if not tables.get("accuracy", _empty()).empty:
        figure, ax = plt.subplots(figsize=(6.5, 4.2))
        plot_accuracy_curve(tables["accuracy"], ax=ax)
        drawn["accuracy"] = figure
    if not tables.get("beyond", _empty()).empty:
        from noiseprop.study import BREAK, beyond_errors

        errors = beyond_errors(tables["beyond"])
        drawn["beyond"] = per_kind(
            lambda kind, ax: figures.plot_beyond(errors, kind, ax, threshold=BREAK), sharey=True
        )
    if not tables.get("cnn", _empty()).empty and not tables.get("mlp", _empty()).empty:
        drawn["cnn"] = per_kind(
            lambda kind, ax: figures.plot_cnn_mlp(tables["cnn"], tables["mlp"], kind, ax),
            sharey=True,
        )
    if not tables.get("pooling", _empty()).empty and not tables.get("cnn", _empty()).empty:
        from noiseprop.study import pooling_losses

        figure, ax = plt.subplots(figsize=(6.5, 4.2))
        figures.plot_pooling(pooling_losses(tables["pooling"], tables["cnn"]), ax)
        drawn["pooling"] = figure
    if not tables.get("convolution", _empty()).empty:
        figure, ax = plt.subplots(figsize=(6.5, 4.2))
        figures.plot_convolution(tables["convolution"], ax)
        ax.legend(fontsize=8)
        drawn["convolution"] = figure
    if not tables.get("mitigation", _empty()).empty:
        figure, ax = plt.subplots(figsize=(6.5, 4.2))
        figures.plot_mitigation(tables["mitigation"], ax)
        ax.legend(fontsize=8, loc="lower right")
        drawn["mitigation"] = figure
    for figure in drawn.values():
        figure.tight_layout()
    return drawn


def _empty() -> Any:
    import pandas as pd

    return pd.DataFrame()


def write_report(study: Study, *, seed: int) -> Study:
    """Write ``figures/<name>.png`` and ``report.html`` into the study's output folder."""
    import matplotlib.pyplot as plt

    from noiseprop import __version__
    from noiseprop.study import SIGMAS, config_dict

    folder = study.output / "figures"
    folder.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    sections = []
    for name, figure in draw_figures(study).items():
        path = folder / f"{name}.png"
        figure.savefig(path, dpi=110)
        plt.close(figure)
        paths[name] = path
        title, caption = FIGURES[name]
        encoded = base64.b64encode(path.read_bytes()).decode()
        sections.append(
            f'<section id="{name}"><h2>{html.escape(title)}</h2>'
            f'<p class="finding">{html.escape(study.findings.get(name, ""))}</p>'
            f"<p>{html.escape(caption.format(intensity=study.config.intensity))}</p>"
            f'<img alt="{html.escape(title)}" src="data:image/png;base64,{encoded}">'
            f'<p class="tables">Table: <code>tables/{TABLES.get(name, name)}.csv</code></p></section>'
        )
    disagreements = study.disagreements
    if disagreements.empty:
        listed = (
            f"<p>None: every prediction lies within {SIGMAS:g} standard errors of its simulation.</p>"
        )
    else:
        listed = (
            f"<p>{len(disagreements)} (figure, point, layer, method) rows differ by more than "
            f"{SIGMAS:g} standard errors (largest |z| first; also in "
            "<code>tables/disagreements.csv</code>). Each is a place where the first-order theory, "
            "the mean-field rule or the Gaussian assumption stops holding.</p>"
            + disagreements.head(40).to_html(index=False, float_format=lambda v: f"{v:.4g}", border=0)
        )
    failures = (
        ""
        if study.failures.empty
        else (
            "<h2>Failed points</h2>"
            + study.failures.drop(columns="traceback", errors="ignore").to_html(index=False)
        )
    )
    contents = "".join(
        f'<li><a href="#{name}">{html.escape(FIGURES[name][0])}</a>: '
        f"{html.escape(study.findings.get(name, ''))}</li>"
        for name in paths
    )
    settings = json.dumps({"seed": seed, **config_dict(study.config)}, indent=1)
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>noiseprop study</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 70rem; margin: 2rem auto; padding: 0 1rem;
       color: #222; line-height: 1.45; }}
img {{ max-width: 100%; border: 1px solid #ddd; }}
.finding {{ font-weight: 600; background: #f3f7ff; padding: .4rem .6rem; border-left: 4px solid #4a7;
           }}
table {{ border-collapse: collapse; font-size: .8rem; }} td, th {{ padding: .15rem .5rem; }}
tr:nth-child(even) {{ background: #f6f6f6; }} code, pre {{ font-size: .85rem; }}
</style></head><body>
<h1>noiseprop study: how neuron noise propagates through deep networks</h1>
<p>Generated {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC} by noiseprop {__version__}
(Python {platform.python_version()}, {html.escape(platform.platform())}). Noise intensities are
variances; SNR = mean² / variance. Every finding below is computed from the tables in
<code>tables/</code>.</p>
<ul>{contents}</ul>
{"".join(sections)}
<section id="disagreements"><h2>Where theory and simulation disagree</h2>{listed}</section>
{failures}
<h2>Settings</h2><pre>{html.escape(settings)}</pre>
</body></html>
"""
    report = study.output / "report.html"
    report.write_text(page, encoding="utf-8")
    return replace(study, figures=paths, report=report)
