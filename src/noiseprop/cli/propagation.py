"""``noiseprop predict``, ``simulate`` and ``compare``: noise per layer, predicted and simulated."""

from __future__ import annotations

import math

from noiseprop.cli._app import app
from noiseprop.cli._model import (
    check_forward,
    network_or_model_setup,
    running,
)
from noiseprop.cli._options import (
    ActivationOption,
    CompareMethodOption,
    DepthOption,
    DeviceOption,
    DtypeOption,
    InjectionOption,
    InputOption,
    JsonOption,
    ModelLayersOption,
    ModelOption,
    NetworkOption,
    NoiseOption,
    PerInputOption,
    PredictMethodOption,
    ProgressOption,
    RepeatsOption,
    SeedOption,
    SigmasOption,
    SitesOption,
    WeightsOption,
    WidthOption,
    fail,
)
from noiseprop.cli._output import (
    number,
    per_input_table,
    print_json,
    print_notes,
    records,
    statistics_payload,
    statistics_table,
    table_notes,
)
from noiseprop.cli._setup import (
    check_simulation_options,
    methods_from,
    run_prediction,
    run_simulation,
)


# ------------------------------------------------------------------------------- commands
@app.command()
def predict(
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
    method: PredictMethodOption = None,
    per_input: PerInputOption = False,
    as_json: JsonOption = False,
) -> None:
    """Predict every layer's noise analytically (noiseprop.propagate).

    With --model, any torch model, linearised by automatic differentiation (first order, --method
    covariance): one row per site.
    """
    setup = network_or_model_setup(network, width, depth, activation, model, weights, sites, noise,
                                   injection, layers, inputs)  # fmt: skip
    (chosen,) = methods_from([method] if method else None, setup)
    check_forward(setup, "float64", "cpu")
    with running(setup.is_model, tuple(setup.inputs.shape)):
        stats = run_prediction(setup, chosen)
    if as_json:
        print_json(statistics_payload(stats, setup, per_input))
    else:
        statistics_table(stats, setup, f"Predicted noise per layer ({chosen} method)")
        if per_input:
            per_input_table(stats)


@app.command()
def simulate(
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
    repeats: RepeatsOption = 10_000,
    seed: SeedOption = 0,
    dtype: DtypeOption = "float32",
    device: DeviceOption = "cpu",
    progress: ProgressOption = True,
    per_input: PerInputOption = False,
    as_json: JsonOption = False,
) -> None:
    """Measure every layer's noise by Monte Carlo simulation (noiseprop.simulate).

    With --model, any torch model: noise at its sites (--sites), one row per site.
    """
    setup = network_or_model_setup(network, width, depth, activation, model, weights, sites, noise,
                                   injection, layers, inputs)  # fmt: skip
    check_simulation_options(dtype, device)
    check_forward(setup, dtype, device)
    with running(setup.is_model, tuple(setup.inputs.shape)):
        stats = run_simulation(setup, repeats, seed, dtype, device, progress and not as_json)
    if as_json:
        print_json(statistics_payload(stats, setup, per_input))
    else:
        what = "site" if setup.is_model else "layer"
        title = f"Simulated noise per {what} (Monte Carlo, {repeats} repeats, seed {seed}, {dtype})"
        statistics_table(stats, setup, title)
        if per_input:
            per_input_table(stats)


@app.command()
def compare(
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
    method: CompareMethodOption = None,
    repeats: RepeatsOption = 10_000,
    seed: SeedOption = 0,
    dtype: DtypeOption = "float32",
    device: DeviceOption = "cpu",
    sigmas: SigmasOption = 3.0,
    progress: ProgressOption = True,
    per_input: PerInputOption = False,
    as_json: JsonOption = False,
) -> None:
    """Compare predictions with a Monte Carlo simulation, layer by layer.

    With --model, any torch model: its linearisation (first order, --method covariance) against its
    simulation, site by site.
    """
    setup = network_or_model_setup(network, width, depth, activation, model, weights, sites, noise,
                                   injection, layers, inputs)  # fmt: skip
    methods = methods_from(method, setup)
    if not (sigmas > 0 and math.isfinite(sigmas)):
        fail("--sigmas", f"expected a finite number > 0; got {sigmas!r}.")
    check_simulation_options(dtype, device)
    check_forward(setup, dtype, device)
    with running(setup.is_model, tuple(setup.inputs.shape)):
        # fast: fail before simulating
        predictions = {name: run_prediction(setup, name) for name in methods}
        simulation = run_simulation(setup, repeats, seed, dtype, device, progress and not as_json)
    comparisons = {
        name: prediction.compare(simulation, sigmas=sigmas) for name, prediction in predictions.items()
    }
    if as_json:
        print_json(
            {
                "network": repr(setup.network),
                "noise": [str(item) for item in simulation.noise],
                "repeats": simulation.repeats,
                "sigmas": sigmas,
                "methods": {
                    name: {
                        "layers": records(comparison.to_frame()),
                        "all_within": comparison.all_within,
                        **({"per_input": records(comparison.per_input())} if per_input else {}),
                    }
                    for name, comparison in comparisons.items()
                },
            }
        )
        return

    from rich.console import Console
    from rich.table import Table

    console = Console()
    frames = {name: comparison.to_frame() for name, comparison in comparisons.items()}
    first = next(iter(frames.values()))
    table = Table(
        title=f"Predicted vs simulated variance per layer ({repeats} repeats, seed {seed}, {dtype})"
    )
    for column in ("site" if setup.is_model else "layer", "simulated", "stderr"):
        table.add_column(column, justify="right")
    for name in frames:
        table.add_column(name, justify="right")
        table.add_column("z", justify="right")
    names = simulation.site_names
    for index, row in enumerate(first.itertuples(index=False)):
        label = names[index] if setup.is_model else str(row.layer)
        cells = [label, number(row.simulated, ".4g"), number(row.stderr, ".2g")]
        for frame in frames.values():
            point = frame.iloc[index]
            z = number(point.z, "+.2f")
            cells += [
                number(point.predicted, ".4g"),
                f"[green]{z}[/green]" if point.within else f"[bold red]{z}![/bold red]",
            ]
        table.add_row(*cells)
    console.print(table)
    print_notes(
        console,
        table_notes(setup, simulation.noise, simulation.names)[:3]
        + [
            "stderr: standard error of the simulated variance (batch means); z = (predicted - "
            f"simulated) / stderr, marked ! beyond {sigmas:g}; rel. err = (predicted - simulated) / "
            "simulated"
        ],
    )
    for name, frame in frames.items():
        agreeing = int(frame["within"].sum())
        colour = "green" if agreeing == len(frame) else "red"
        console.print(
            f"[{colour}]{name}: {agreeing}/{len(frame)} layers agree within {sigmas:g} standard "
            f"errors; largest |rel. err| {100 * frame['relative_error'].abs().max():.2f} %[/{colour}]",
            highlight=False,
        )
        if per_input:
            rows = comparisons[name].per_input()
            console.print(
                f"  per input: {int(rows['within'].sum())}/{len(rows)} (layer, input) pairs within "
                f"{sigmas:g} standard errors; largest |rel. err| "
                f"{100 * rows['relative_error'].abs().max():.2f} %",
                highlight=False,
            )
