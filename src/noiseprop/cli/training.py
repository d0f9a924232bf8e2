"""``noiseprop train``, ``accuracy`` and ``accuracy-curve``: trained MNIST networks under noise."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from noiseprop.cli._app import app
from noiseprop.cli._model import (
    load,
    refuse_layers,
    refuse_with_model,
    refuse_without_model,
    running,
)
from noiseprop.cli._options import (
    ImagesOption,
    InjectionOption,
    JsonOption,
    LayersOption,
    ModelLayersOption,
    ModelOption,
    NoiseOption,
    ProgressOption,
    SeedOption,
    SitesOption,
    WeightsOption,
    check_output_file,
    checked_repeats,
    checked_seed,
    choice,
    fail,
    reported_as,
)
from noiseprop.cli._output import describe_noise, number, print_json, print_notes, records
from noiseprop.cli._progress import progress_rows
from noiseprop.cli._setup import parse_layers, parse_noise, read_mnist

if TYPE_CHECKING:
    from noiseprop.network import Network

ClassifierOption = Annotated[
    Path | None,
    typer.Option(
        "--network",
        help="A classifier written by noiseprop train (default: the 784-100-100-10 sigmoid network "
        "shipped with noiseprop, 98 % noise-free test accuracy).",
        dir_okay=False,
        show_default=False,
    ),
]
AccuracyMethodOption = Annotated[
    list[str] | None,
    typer.Option(
        "--method",
        help="montecarlo and/or predicted (accuracy-curve: also first-order); repeatable.",
        show_default="montecarlo and predicted; montecarlo with --model",
    ),
]
RepeatsOption = Annotated[
    int, typer.Option(help="Noise draws per image (Monte Carlo).", callback=checked_repeats)
]
PointsOption = Annotated[
    int | None,
    typer.Option(
        help="Quasi-random points per image (predicted).",
        show_default="1024 where layers are sampled, 4096 for a Gaussian orthant",
    ),
]
PredictorOption = Annotated[
    str | None,
    typer.Option(
        help="How --method predicted integrates: moments (beyond first order: Gaussian input to "
        "the last nonlinear layer, the rest exact) or covariance (first order: Gaussian outputs).",
        show_default="moments; for a --model only where its last nonlinear site takes <= 512 elements",
    ),
]
METHODS = ("predicted", "montecarlo")
PREDICTORS = ("covariance", "moments")


def _classifier(path: Path | None) -> Network:
    if path is None:
        from noiseprop.training import default_network

        return default_network()
    from noiseprop.cli._setup import load_network

    return load_network(path)


def _images(text: str) -> tuple[Any, Any]:
    if not text.strip().lower().startswith(("mnist:", "mnist-train:")):
        fail("--images", f"expected 'mnist:N' (the first N test images); got {text!r}.")
    with reported_as("--images"):
        return read_mnist(text)


def _methods(given: list[str] | None, allowed: tuple[str, ...] = METHODS) -> list[str]:
    methods = list(dict.fromkeys(given or METHODS))
    for method in methods:
        choice("--method", method, allowed)
    return methods


@app.command()
def train(
    output: Annotated[Path, typer.Option(help="Where to write the trained network (safetensors).")],
    hidden: Annotated[str, typer.Option(help="Hidden-layer widths, e.g. 100,100.")] = "100,100",
    activation: Annotated[
        str, typer.Option(help="Hidden activation, e.g. sigmoid, 'sigmoid:gain=2', 'linear:slope=0.9'.")
    ] = "sigmoid",
    epochs: Annotated[int, typer.Option(help="Passes over the training set.")] = 15,
    batch_size: Annotated[int, typer.Option(help="Images per gradient step.")] = 64,
    learning_rate: Annotated[float, typer.Option(help="Initial learning rate.")] = 2e-3,
    schedule: Annotated[str, typer.Option(help="cosine or constant learning rate.")] = "cosine",
    optimizer: Annotated[str, typer.Option(help="adam or sgd.")] = "adam",
    seed: Annotated[
        int,
        typer.Option(
            help="Seed of the initial weights, the shuffling and the training noise.",
            callback=checked_seed,
        ),
    ] = 0,
    train_noise: Annotated[
        str | None,
        typer.Option(help="Noise-aware training: noise in every layer's forward pass, e.g. AU=0.05."),
    ] = None,
    train_size: Annotated[
        int | None, typer.Option(help="Train on the first N training images only (quick runs).")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Train an MNIST classifier 784 -> hidden -> 10 (softmax cross-entropy) and save it."""
    from noiseprop.training import TrainConfig

    try:
        widths = tuple(int(item) for item in hidden.split(",") if item.strip())
    except ValueError:
        fail("--hidden", f"expected comma-separated widths such as 100,100; got {hidden!r}.")
    with reported_as("--train-noise" if train_noise else "options"):
        config = TrainConfig(
            hidden=widths, activation=activation, epochs=epochs, batch_size=batch_size,
            learning_rate=learning_rate, schedule=schedule, optimizer=optimizer, seed=seed,
            train_noise=train_noise, train_size=train_size,
        )  # fmt: skip
    check_output_file("--output", output)

    from rich.console import Console

    from noiseprop.training import train as run_training

    console = Console(stderr=True, quiet=as_json)

    def report(record: Any) -> None:
        console.print(
            f"epoch {record.epoch:>3}/{epochs}  loss {record.loss:.4f}  "
            f"train {record.train_accuracy:.2%}  test {record.test_accuracy:.2%}  "
            f"({record.seconds:.1f} s)",
            highlight=False,
        )

    console.print(f"training 784-{'-'.join(map(str, widths))}-10 {activation} on MNIST", highlight=False)
    network = run_training(config, progress=report)
    network.save(output)
    accuracy = network.metadata["test_accuracy"]
    if as_json:
        print_json({"output": str(output), "test_accuracy": accuracy, "metadata": network.metadata})
    else:
        Console().print(f"test accuracy {accuracy:.2%} (noise-free); saved {output}", highlight=False)


@app.command()
def accuracy(
    network: ClassifierOption = None,
    model: ModelOption = None,
    weights: WeightsOption = None,
    sites: SitesOption = None,
    noise: NoiseOption = "AU=1e-2",
    injection: InjectionOption = None,
    layers: ModelLayersOption = None,
    images: ImagesOption = "mnist:1000",
    method: AccuracyMethodOption = None,
    repeats: RepeatsOption = 100,
    points: PointsOption = None,
    predictor: PredictorOption = None,
    seed: SeedOption = 0,
    progress: ProgressOption = True,
    as_json: JsonOption = False,
) -> None:
    """Classification accuracy under noise: simulated (noise draws) and predicted (docs/THEORY.md 6).

    With --model, any torch classifier taking flat (batch, 784) images: noise at its sites
    (--sites), simulated by default; --method predicted takes the input of its last nonlinear site
    as Gaussian and runs the rest (--predictor moments, where that input has at most 512 elements
    per image) or linearises it (first order, --predictor covariance, otherwise).
    """
    parsed = parse_noise(noise, injection)
    methods = _methods(method)
    if predictor is not None:
        choice("--predictor", predictor, PREDICTORS)
    if model is not None:
        refuse_with_model({"--network": network}, "--network")
        refuse_layers(layers)
        methods = methods if method else ["montecarlo"]
        loaded = load(model, weights, sites)
        classifier: Any = loaded.model
        described = {"model": loaded.description, "sites": list(loaded.site_names)}
        spec: Any = parsed
        noise_note = f"{parsed} at every site ({', '.join(loaded.site_names)})"
    else:
        refuse_without_model(weights, sites)
        classifier = _classifier(network)
        with reported_as("--layers"):
            chosen = parse_layers(layers or "all", classifier.depth)
        spec = parsed if chosen is None else parsed.on_layers(chosen)
        described = {"network": repr(classifier)}
        from noiseprop.noise import per_layer

        noise_note = describe_noise(per_layer(spec, classifier.depth))
    pixels, labels = _images(images)

    from noiseprop.classification import accuracy as measure

    extra: dict[str, Any] = {"sites": loaded.sites} if model is not None else {}
    if model is not None and "predicted" in methods and predictor == "moments":
        _check_cut(classifier, spec, pixels[:1], loaded.sites)
    results = {}
    with progress_rows(progress and not as_json, "images") as update:
        for name in methods:
            chosen_predictor = {"predictor": predictor} if name == "predicted" else {}
            with reported_as("--method"), running(model is not None, tuple(pixels.shape)):
                results[name] = measure(
                    classifier, spec, pixels, labels, method=name, repeats=repeats, points=points,
                    seed=seed, progress=partial(update, name), **extra, **chosen_predictor,
                )  # fmt: skip
    if as_json:
        print_json(
            {
                **described,
                "images": len(labels),
                "noise": str(parsed),
                **({} if model is not None else {"layers": layers or "all"}),
                "methods": {name: _summary(result) for name, result in results.items()},
            }
        )
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Accuracy under noise on {len(labels)} MNIST test images")
    for column in ("method", "accuracy", "stderr", "noise-free", "change"):
        table.add_column(column, justify="right")
    for name, result in results.items():
        table.add_row(
            name, f"{result.accuracy:.2%}", f"{result.stderr:.3%}", f"{result.noise_free:.2%}",
            f"{result.accuracy - result.noise_free:+.2%}",
        )  # fmt: skip
    console = Console()
    console.print(table)
    notes = [
        f"model: {loaded.description}" if model is not None else f"network: {classifier!r}",
        f"noise (variances): {noise_note}",
        f"montecarlo: {repeats} draws per image; stderr conditional on the images",
    ]
    if "predicted" in results:
        used, how = results["predicted"].points, results["predicted"].predictor
        notes.append(
            f"predicted (moments): Gaussian input to the last nonlinear "
            f"{'site' if model is not None else 'layer'}, the rest integrated at {used} "
            "quasi-random points per image"
            if how == "moments"
            else f"predicted (covariance): Gaussian outputs, first order, {used} quasi-random points"
        )
    print_notes(console, notes)


def _check_cut(model: Any, noise: Any, image: Any, sites: Any) -> None:
    """Refuse --predictor moments, before any work, where the model's cut is too wide."""
    from noiseprop.classification import MAX_CUT_ELEMENTS
    from noiseprop.model_analytic import gaussian_cut

    with running(True, tuple(image.shape)):
        cut = gaussian_cut(model, noise, image, sites=sites, moments=False)
    if cut.elements > MAX_CUT_ELEMENTS:
        fail(
            "--predictor",
            f"moments takes the input of the model's last nonlinear site ({cut.name!r}) as "
            f"Gaussian, and that input has {cut.elements:,} elements per image, more than "
            f"{MAX_CUT_ELEMENTS}: a simulation is cheaper. Use --predictor covariance (first "
            "order) or --method montecarlo.",
        )


def _summary(result: Any) -> dict[str, Any]:
    return {key: value for key, value in result.as_dict().items() if key != "per_image"}


@app.command("accuracy-curve")
def accuracy_curve(
    output: Annotated[
        Path, typer.Option(help="PNG file of the figure; the table goes beside it (.csv).")
    ],
    network: ClassifierOption = None,
    kinds: Annotated[str, typer.Option(help="Kinds of noise, e.g. AU,AC,MU,MC.")] = "AU,AC,MU,MC",
    intensities: Annotated[
        str, typer.Option(help="Noise variances, comma-separated.")
    ] = "0.001,0.01,0.1,1",
    layers: LayersOption = "all",
    images: ImagesOption = "mnist:1000",
    method: AccuracyMethodOption = None,
    repeats: RepeatsOption = 100,
    points: PointsOption = None,
    seed: SeedOption = 0,
    progress: ProgressOption = True,
    as_json: JsonOption = False,
) -> None:
    """Accuracy against the intensity of each kind of noise, predicted and simulated, as a figure.

    --method first-order draws the first-order prediction; give --method predicted --method first-order
    --method montecarlo to see it beside the defaults.
    """
    from noiseprop.curves import CURVE_METHODS

    methods = _methods(method, tuple(CURVE_METHODS))
    check_output_file("--output", output, "curve.png")
    try:
        levels = [float(item) for item in intensities.split(",")]
    except ValueError:
        fail(
            "--intensities", f"expected comma-separated variances such as 0.01,0.1; got {intensities!r}."
        )
    kind_list = [item.strip().upper() for item in kinds.split(",") if item.strip()]
    classifier = _classifier(network)
    with reported_as("--layers"):
        chosen = parse_layers(layers, classifier.depth)
    pixels, labels = _images(images)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from noiseprop.curves import accuracy_curve as curve
    from noiseprop.curves import plot_accuracy_curve

    with (
        reported_as("--kinds/--intensities"),
        progress_rows(progress and not as_json, "points") as update,
    ):
        frame = curve(
            classifier, kind_list, levels, pixels, labels, methods=methods, repeats=repeats,
            points=points, seed=seed, layers=chosen, progress=update,
        )  # fmt: skip
    figure, ax = plt.subplots(figsize=(6.4, 4.2))
    plot_accuracy_curve(frame, ax=ax)
    figure.tight_layout()
    figure.savefig(output, dpi=120)
    plt.close(figure)
    table_path = output.with_suffix(".csv")
    frame.to_csv(table_path, index=False)
    if as_json:
        print_json({"figure": str(output), "table": str(table_path), "points": records(frame)})
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Accuracy against noise intensity ({len(labels)} MNIST test images)")
    for column in ("kind", "intensity", *methods):
        table.add_column(column, justify="right")
    wide = frame.pivot_table(index=["kind", "intensity"], columns="method", values="accuracy")
    for (kind, level), row in wide.iterrows():
        table.add_row(kind, number(level, "g"), *(f"{row[name]:.2%}" for name in methods))
    console = Console()
    console.print(table)
    print_notes(console, [f"figure: {output}", f"table: {table_path}"])
