"""``noiseprop design``: gains, bounded accumulation, noise budget, tolerable noise"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from noiseprop.cli._app import app
from noiseprop.cli._model import check_forward, network_or_model_setup, running
from noiseprop.cli._options import (
    SNR_DEFINITION,
    ActivationOption,
    DepthOption,
    InjectionOption,
    InputOption,
    JsonOption,
    ModelLayersOption,
    ModelOption,
    NetworkOption,
    NoiseOption,
    RepeatsOption,
    SeedOption,
    SitesOption,
    WeightsOption,
    WidthOption,
    fail,
    reported_as,
)
from noiseprop.cli._output import describe_noise, number, print_json, print_notes
from noiseprop.cli._setup import Setup, read_mnist

if TYPE_CHECKING:
    from noiseprop.criteria import Design, ModelDesign

TargetSnrOption = Annotated[
    float | None,
    typer.Option(
        "--target-snr-db",
        help="Output SNR to keep, in dB: the largest intensity of each kind that keeps it is reported.",
        show_default=False,
    ),
]
TargetAccuracyOption = Annotated[
    float | None,
    typer.Option(
        "--target-accuracy",
        help="Accuracy to keep, a fraction in (0, 1]; needs --input mnist:N (the labels).",
        show_default=False,
    ),
]
FigureOption = Annotated[
    Path | None,
    typer.Option(
        "--figure",
        help="Write the noise budget as a figure (e.g. budget.png).",
        dir_okay=False,
        show_default=False,
    ),
]
CheckOption = Annotated[
    bool,
    typer.Option(
        "--check/--no-check", help="Check each tolerable intensity with one Monte Carlo simulation."
    ),
]


@app.command()
def design(
    network: NetworkOption = None,
    width: WidthOption = None,
    depth: DepthOption = None,
    activation: ActivationOption = None,
    model: ModelOption = None,
    weights: WeightsOption = None,
    sites: SitesOption = None,
    noise: NoiseOption = "AU=1e-3,AC=1e-3",
    injection: InjectionOption = None,
    layers: ModelLayersOption = None,
    inputs: InputOption = "0.5",
    target_snr_db: TargetSnrOption = None,
    target_accuracy: TargetAccuracyOption = None,
    figure: FigureOption = None,
    check: CheckOption = True,
    repeats: RepeatsOption = 1000,
    seed: SeedOption = 0,
    as_json: JsonOption = False,
) -> None:
    """Design criteria: per-layer gains, whether noise accumulation is bounded, the noise budget,
    the tolerable noise for a target SNR or accuracy, and what would change the verdict.

    With --model, any torch model, on its first-order linearisation: per-site gains, the budget by
    site and kind, and the tolerable noise, each checked by one simulation.
    """
    if target_snr_db is not None and not math.isfinite(target_snr_db):
        fail("--target-snr-db", f"expected a finite number of dB; got {target_snr_db!r}.")
    if target_accuracy is not None and not 0 < target_accuracy <= 1:
        fail("--target-accuracy", f"expected a fraction in (0, 1]; got {target_accuracy!r}.")
    labelled = inputs.strip().lower().startswith(("mnist:", "mnist-train:"))
    if target_accuracy is not None and not labelled:
        fail(
            "--target-accuracy",
            f"needs labelled inputs: --input mnist:N (or mnist-train:N); got --input {inputs!r}.",
        )
    if figure is not None:
        _check_figure(figure)
    setup = network_or_model_setup(network, width, depth, activation, model, weights, sites, noise,
                                   injection, layers, inputs)  # fmt: skip
    check_forward(setup, "float64", "cpu")
    labels = None
    if labelled:
        with reported_as("--input"):
            labels = read_mnist(inputs)[1]

    if setup.is_model:
        _design_model(
            setup, target_snr_db, target_accuracy, labels, check, repeats, seed, as_json, figure
        )
        return
    from noiseprop.criteria import design as run_design

    with reported_as("--target-accuracy"):
        result = run_design(
            setup.network,
            setup.noise,
            setup.inputs,
            target_snr_db=target_snr_db,
            target_accuracy=target_accuracy,
            labels=labels,
            check=check,
            repeats=repeats,
            seed=seed,
        )
    if figure is not None:
        _save_figure(result, figure)
    if as_json:
        print_json(
            {
                "network": repr(setup.network),
                "input": setup.input_text,
                "inputs": int(setup.inputs.shape[0]),
                **result.as_dict(),
                "figure": None if figure is None else str(figure),
            }
        )
        return
    _report(result, setup, figure, repeats, seed)


def _design_model(
    setup: Setup, target_snr_db: float | None, target_accuracy: float | None, labels: Any,
    check: bool, repeats: int, seed: int, as_json: bool, figure: Path | None,
) -> None:  # fmt: skip
    from rich.console import Console
    from rich.table import Table

    from noiseprop.criteria import design_model
    from noiseprop.noise import KINDS

    with running(True, tuple(setup.inputs.shape)):
        result = design_model(
            setup.network, setup.noise, setup.inputs, sites=setup.sites,
            target_snr_db=target_snr_db, target_accuracy=target_accuracy, labels=labels,
            check=check, repeats=repeats, seed=seed,
        )  # fmt: skip
    if figure is not None:
        _save_figure(result, figure)
    if as_json:
        print_json(
            {"model": setup.description, "input": setup.input_text,
             "inputs": int(setup.inputs.shape[0]), **result.as_dict(),
             "figure": None if figure is None else str(figure)}
        )  # fmt: skip
        return
    console = Console()
    gains = Table(title="Per-site gains: output variance per unit intensity (first order)")
    budget = Table(title="Noise budget: output variance by source site and kind (first order)")
    for table in (gains, budget):
        table.add_column("site", justify="right")
        for kind in KINDS:
            table.add_column(kind, justify="right")
    budget.add_column("share", justify="right")
    total = result.budget.first_order_total
    for call, row, parts in zip(result.calls, result.gains, result.budget.contributions):
        gains.add_row(call, *(number(value, ".4g") for value in row))
        share = sum(parts) / total if total > 0 else math.nan
        budget.add_row(call, *(number(value, ".4g") for value in parts), _percent(share))
    console.print(gains)
    console.print(budget)
    line = (
        f"output variance {number(total, '.6g')}; predicted output SNR {number(result.snr_db, '.2f')} dB"
    )
    if result.accuracy is not None:
        line += (
            f"; predicted accuracy {result.accuracy:.2%} (noise-free {result.noise_free_accuracy:.2%})"
        )
    console.print(line, highlight=False)
    if result.tolerances:
        sites = ", ".join(result.names[n - 1] for n in result.tolerances[0].layers)
        _tolerance_table(console, result.tolerances, f"sites {sites}", repeats, seed)
    notes = [f"model: {setup.description}; input: {setup.input_text}"]
    notes += [
        f"{kind}: not linearisable here, no gain or tolerance: "
        + reason.split(": ", 1)[-1].split(" (the maximum")[0]
        for kind, reason in result.refused.items()
    ]
    notes.append("output variance: average over the output elements and the inputs; " + SNR_DEFINITION)
    if figure is not None:
        notes.append(f"figure: {figure}")
    print_notes(console, notes)


def _check_figure(path: Path) -> None:
    if not path.parent.expanduser().is_dir():
        fail("--figure", f"the folder {str(path.parent)!r} does not exist; got {str(path)!r}.")
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    formats = Figure().canvas.get_supported_filetypes()
    if path.suffix.lstrip(".").lower() not in formats:
        suffixes = ", ".join("." + name for name in sorted(formats))
        fail("--figure", f"expected a file name ending in one of {suffixes}; got {str(path)!r}.")


def _save_figure(result: Design | ModelDesign, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from noiseprop.criteria import plot_noise_budget

    figure, ax = plt.subplots(figsize=(6.4, 4.2))
    plot_noise_budget(result, ax)
    figure.tight_layout()
    with reported_as("--figure"):
        figure.savefig(path.expanduser(), dpi=120)
    plt.close(figure)


# ---------------------------------------------------------------------------------- report
def _report(result: Design, setup: Setup, figure: Path | None, repeats: int, seed: int) -> None:
    from rich.console import Console
    from rich.table import Table

    from noiseprop.noise import KINDS

    console = Console()
    gains = Table(title="Per-layer gains (mean field, docs/THEORY.md section 3)")
    for column in ("layer", "neurons", "fan-in", "<g²>", "<g>²", "uncorr. gain", "corr. gain"):
        gains.add_column(column, justify="right")
    amplification = Table(title="Amplification of each layer's own noise to the output (first order)")
    amplification.add_column("layer", justify="right")
    for kind in KINDS:
        amplification.add_column(kind, justify="right")
    for gain, width in zip(result.gains, setup.network.widths):
        gains.add_row(
            str(gain.layer), str(width), str(gain.fan_in), number(gain.mean_square_slope, ".4g"),
            number(gain.squared_mean_slope, ".4g"), number(gain.uncorrelated_gain, ".4g"),
            number(gain.correlated_gain, ".4g"),
        )  # fmt: skip
        amplification.add_row(str(gain.layer), *(number(value, ".4g") for value in gain.amplification))
    console.print(gains)
    print_notes(
        console,
        [
            "uncorr. gain = <g²> N_in <W²>, corr. gain = <g>² N_in² <W>² (g: slopes at the noise-free "
            "operating point; W: the layer's incoming weights; averages over neurons and inputs)"
        ],
    )
    console.print(amplification)
    print_notes(
        console,
        ["output variance per unit of the variance that a source of that kind adds to its own layer"],
    )
    colour = "green" if result.bounded else "red"
    console.print(f"[bold {colour}]{result.verdict}[/bold {colour}]", highlight=False)

    budget = result.budget
    table = Table(title="Noise budget: output variance by source layer and kind (first order)")
    for column in ("layer", *KINDS, "total", "share"):
        table.add_column(column, justify="right")
    total = budget.first_order_total
    for number_, row in enumerate(budget.contributions, start=1):
        share = sum(row) / total if total > 0 else math.nan
        table.add_row(
            str(number_), *(number(value, ".4g") for value in row), number(sum(row), ".4g"),
            _percent(share),
        )  # fmt: skip
    kinds = budget.by_kind
    table.add_row(
        "all", *(number(kinds[kind], ".4g") for kind in KINDS), number(total, ".4g"), _percent(1.0),
        style="bold",
    )  # fmt: skip
    console.print(table)
    lines = [
        f"first-order total {number(total, '.6g')}; propagate (with the products of intensities) "
        f"{number(budget.propagated_total, '.6g')}; difference {number(budget.difference, '.3g')}",
    ]
    if budget.dominant_layer is not None:
        lines.append(f"dominant: layer {budget.dominant_layer}, kind {budget.dominant_kind}")
    output = f"predicted output SNR {number(result.snr_db, '.2f')} dB"
    if result.accuracy is not None:
        output += (
            f"; predicted accuracy {result.accuracy:.2%} (noise-free {result.noise_free_accuracy:.2%})"
        )
    lines.append(output)
    console.print("\n".join(lines), highlight=False)

    if result.tolerances:
        where = f"layers {_ranges(result.tolerances[0].layers)}"
        _tolerance_table(console, result.tolerances, where, repeats, seed)

    remedies = result.remedies
    lines = [f"slope factor that bounds every gain: x{number(remedies.slope_factor, '.4g')}"]
    lines += list(remedies.notes)
    console.print("[bold]What would change it[/bold]")
    console.print("\n".join(f"- {line}" for line in lines), highlight=False, markup=False)
    notes = [
        f"network: {setup.network!r}; input: {setup.input_text}",
        f"noise (variances): {describe_noise(result.noise)}",
        "output variance: average over the output neurons and the inputs; " + SNR_DEFINITION,
    ]
    if figure is not None:
        notes.append(f"figure: {figure}")
    print_notes(console, notes)


def _tolerance_table(console: Any, tolerances: Any, where: str, repeats: int, seed: int) -> None:
    from rich.table import Table

    table = Table(title="Tolerable noise: the largest intensity of each kind that keeps the target")
    for column in ("target", "kind", "intensity", "predicted", "simulated", "stderr", "meets"):
        table.add_column(column, justify="right")
    for tolerance in tolerances:
        dB = tolerance.criterion == "snr_db"
        shown = (lambda v: number(v, ".3f")) if dB else (lambda v: _percent(v, ".2%"))
        target = f"{tolerance.target:g} dB" if dB else f"{tolerance.target:.2%}"
        meets = {True: "[green]yes[/green]", False: "[bold red]no[/bold red]", None: "-"}
        table.add_row(
            target, tolerance.kind, _intensity(tolerance), shown(tolerance.predicted),
            "-" if tolerance.simulated is None else shown(tolerance.simulated),
            "-" if tolerance.simulated_stderr is None else number(
                tolerance.simulated_stderr * (1 if dB else 100), ".2g"
            ) + ("" if dB else "%"),
            meets[tolerance.meets_target],
        )  # fmt: skip
    console.print(table)
    print_notes(
        console,
        [
            f"the same variance of one kind on {where}, the other kinds off; predicted by the "
            "analytic method (bisection in log intensity)",
            f"simulated: one Monte Carlo run at that intensity ({repeats} repeats, seed {seed}); "
            "meets: within 3 standard errors of the target or above",
        ],
    )


def _percent(value: float, spec: str = ".1%") -> str:
    return "-" if value is None or math.isnan(value) else format(value, spec)


def _intensity(tolerance: Any) -> str:
    if tolerance.status == "unlimited":
        return "any"
    if tolerance.status == "unreachable":
        return "none"
    return number(tolerance.intensity, ".4g")


def _ranges(layers: tuple[int, ...]) -> str:
    """``1-3,5`` for ``(1, 2, 3, 5)``."""
    runs: list[list[int]] = []
    for layer in layers:
        if runs and runs[-1][1] == layer - 1:
            runs[-1][1] = layer
        else:
            runs.append([layer, layer])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)
