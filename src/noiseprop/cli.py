"""The ``noiseprop`` command line: a thin adapter over the library (STYLE.md habit 13).

``noiseprop predict`` calls :func:`noiseprop.propagate`, ``noiseprop simulate`` calls
:func:`noiseprop.simulate`, ``noiseprop compare`` calls both and
:meth:`noiseprop.NoiseStatistics.compare`. Each command parses its options, builds the network, the
noise specification and the inputs, calls the library and prints a rich table, or JSON with ``--json``.

Heavy imports (torch, numpy, pandas, rich and the noiseprop modules that import torch) happen inside
the command bodies, so ``noiseprop --help`` is instant.

A bad option value prints one line ``Error: --OPTION: what was expected; got ...`` on stderr and exits
with code 2, the exit code of click's own usage errors.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

if TYPE_CHECKING:
    import pandas as pd
    from torch import Tensor

    from noiseprop.network import Network
    from noiseprop.noise import Noise, NoiseSpec
    from noiseprop.results import NoiseStatistics

__all__ = ["app", "main"]

METHODS = ("covariance", "meanfield", "symmetric")
INJECTIONS = ("after", "before")
DTYPES = ("float32", "float64")
DEFAULT_WIDTH = 100
DEFAULT_DEPTH = 20
DEFAULT_ACTIVATION = "sigmoid"
SNR_DEFINITION = (
    "SNR = <mean^2> / <variance> (signal power over noise power; averages over the layer's neurons "
    "and the inputs), in dB 10 log10(SNR)"
)
EXIT_USAGE = 2

app = typer.Typer(
    name="noiseprop",
    help="Noise propagation in deep analog neural networks: predict it, simulate it, compare the two.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)


# --------------------------------------------------------------------------------- errors
def _fail(option: str, message: str) -> NoReturn:
    """Print ``Error: OPTION: message`` on stderr (one line, no traceback) and exit with code 2."""
    typer.echo(f"Error: {option}: {message}", err=True)
    raise typer.Exit(code=EXIT_USAGE)


@contextmanager
def _option(option: str) -> Iterator[None]:
    """Report a library error (ValueError, TypeError, OSError) raised inside as a bad ``option``."""
    try:
        yield
    except (ValueError, TypeError, OSError) as error:
        _fail(option, str(error))


def _choice(option: str, value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        _fail(option, f"expected one of {', '.join(choices)}; got {value!r}.")
    return value


# ------------------------------------------------------------------------------- options
NetworkOption = Annotated[
    Path | None,
    typer.Option(
        "--network",
        help="Network file written by Network.save. Not together with --width/--depth/--activation.",
        dir_okay=False,
        show_default=False,
    ),
]
WidthOption = Annotated[
    int | None,
    typer.Option(help="Neurons per layer of the symmetric network.", show_default=str(DEFAULT_WIDTH)),
]
DepthOption = Annotated[
    int | None,
    typer.Option(
        help="Layers (hidden + output) of the symmetric network.", show_default=str(DEFAULT_DEPTH)
    ),
]
ActivationOption = Annotated[
    str | None,
    typer.Option(
        help="Activation of the symmetric network, e.g. 'sigmoid:gain=4,centre=0.5', "
        "'linear:slope=0.9'.",
        show_default=DEFAULT_ACTIVATION,
    ),
]
NoiseOption = Annotated[
    str,
    typer.Option(
        help="Noise variances KIND=VARIANCE with kinds AU, AC, MU, MC (additive/multiplicative, "
        "uncorrelated/correlated), e.g. 'AU=1e-3,MC=1e-4'; 'none' for no noise."
    ),
]
InjectionOption = Annotated[
    str | None,
    typer.Option(help="Where noise enters: after or before the activation.", show_default="after"),
]
LayersOption = Annotated[
    str,
    typer.Option(
        help="Noisy layers: 'all', 'hidden' (all but the output layer), 'output', or 1-based layer "
        "numbers and ranges such as '1-5,8'. The other layers are noise-free."
    ),
]
InputOption = Annotated[
    str,
    typer.Option(
        "--input",
        help="One number fed to every input feature, a comma list of one number per input feature, "
        "or a .npy (1-D or 2-D, shape batch x inputs) or .csv (one input per row, no header) file.",
    ),
]
JsonOption = Annotated[
    bool, typer.Option("--json", help="Print machine-readable JSON on stdout instead of a table.")
]
PredictMethodOption = Annotated[
    str | None,
    typer.Option(
        "--method",
        help="Prediction method: covariance, meanfield or symmetric.",
        show_default="symmetric for --width/--depth networks, covariance for --network files",
    ),
]
CompareMethodOption = Annotated[
    list[str] | None,
    typer.Option(
        "--method",
        help="Prediction method (covariance, meanfield, symmetric); repeat to compare several.",
        show_default="as for predict",
    ),
]
RepeatsOption = Annotated[int, typer.Option(help="Noise draws per input (>= 2).")]
SeedOption = Annotated[int, typer.Option(help="Seed of the noise draws.")]
DtypeOption = Annotated[
    str, typer.Option(help="Precision of the simulated network: float32 or float64.")
]
DeviceOption = Annotated[str, typer.Option(help="Torch device of the simulation, e.g. cpu, cuda.")]
ProgressOption = Annotated[
    bool, typer.Option("--progress/--no-progress", help="Progress bar on stderr (off with --json).")
]
SigmasOption = Annotated[
    float, typer.Option(help="Standard errors within which prediction and simulation agree.")
]


def _version(value: bool) -> None:
    if value:
        from noiseprop import __version__

        typer.echo(f"noiseprop {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit."),
    ] = False,
) -> None:
    """Noise propagation in deep analog neural networks (see SCIENCE.md of the project).

    predict: analytic prediction; simulate: Monte Carlo; compare: both, layer by layer.
    """


# --------------------------------------------------------------------------------- set-up
@dataclass(frozen=True)
class _Setup:
    """What every command needs: the network, the noise specification and the inputs."""

    network: Network
    noise: NoiseSpec
    inputs: Tensor
    from_file: bool
    input_text: str


def _build_network(
    path: Path | None, width: int | None, depth: int | None, activation: str | None
) -> tuple[Network, bool]:
    """The network of ``--network`` or of ``--width/--depth/--activation``; True if from a file."""
    if path is not None:
        given = [
            name
            for name, value in (("--width", width), ("--depth", depth), ("--activation", activation))
            if value is not None
        ]
        if given:
            _fail(
                "--network",
                "give either --network or --width/--depth/--activation, not both; got --network "
                f"with {', '.join(given)}.",
            )
        from noiseprop import Network

        with _option("--network"):
            return Network.load(path), True

    from noiseprop import parse_activation
    from noiseprop._validation import check_positive_int

    with _option("--activation"):
        act = parse_activation(DEFAULT_ACTIVATION if activation is None else activation)
    with _option("--width"):
        width = check_positive_int("width", DEFAULT_WIDTH if width is None else width)
    with _option("--depth"):
        depth = check_positive_int("depth", DEFAULT_DEPTH if depth is None else depth)

    from noiseprop import Network

    return Network.symmetric(width, depth, activation=act), False


def _parse_noise(text: str, injection: str | None) -> Noise:
    """``--noise`` with ``--injection`` applied (``injection=`` inside ``--noise`` must agree)."""
    from dataclasses import replace

    from noiseprop import Noise

    with _option("--noise"):
        noise = Noise.parse(text)
    if injection is not None:
        _choice("--injection", injection, INJECTIONS)
        if noise.injection != "after" and noise.injection != injection:
            _fail(
                "--injection",
                f"conflicts with injection={noise.injection} in --noise {text!r}; give it once.",
            )
        noise = replace(noise, injection=injection)
    return noise


def _parse_layers(text: str, depth: int) -> tuple[int, ...] | None:
    """The 1-based noisy layers of ``--layers``; ``None`` for all of them.

    Example:
        >>> _parse_layers("1-3,5", 6), _parse_layers("hidden", 3), _parse_layers("all", 3)
        ((1, 2, 3, 5), (1, 2), None)
    """
    key = text.strip().lower()
    if key == "all":
        return None
    if key == "hidden":
        return tuple(range(1, depth))
    if key == "output":
        return (depth,)
    expected = (
        f"'all', 'hidden', 'output' or layer numbers from 1 to {depth} (this network's depth) and "
        "ranges low-high such as '1-5,8'"
    )
    chosen: set[int] = set()
    for item in key.split(","):
        first, dash, last = item.strip().partition("-")
        try:
            start = int(first)
            stop = int(last) if dash else start
        except ValueError:
            raise ValueError(f"expected {expected}; got {text!r}.") from None
        if not 1 <= start <= stop <= depth:
            where = "" if item.strip() == text.strip() else f" in {text!r}"
            raise ValueError(f"expected {expected}; got {item.strip()!r}{where}.")
        chosen.update(range(start, stop + 1))
    return tuple(sorted(chosen))


def _read_inputs(text: str) -> Any:
    """``--input``: a number, a list of numbers, or the array in a ``.npy`` / ``.csv`` file."""
    stripped = text.strip()
    suffix = Path(stripped).suffix.lower()
    if suffix in (".npy", ".csv"):
        import numpy as np

        path = Path(stripped).expanduser()
        if not path.is_file():
            raise FileNotFoundError(
                f"input file {str(path)!r} does not exist; expected a {suffix} file of inputs."
            )
        try:
            if suffix == ".npy":
                return np.load(path, allow_pickle=False)
            return np.loadtxt(path, delimiter=",", ndmin=2, dtype=np.float64)
        except (ValueError, OSError) as error:
            raise ValueError(
                f"could not read {str(path)!r} as {suffix} numbers ({error}); expected "
                + (
                    "a 1-D or 2-D numeric array."
                    if suffix == ".npy"
                    else "comma-separated numbers, one input per row, no header."
                )
            ) from None
    try:
        numbers = [float(item) for item in stripped.split(",")]
    except ValueError:
        raise ValueError(
            "expected a number, a comma list of numbers (one per input feature) or a .npy/.csv "
            f"file; got {text!r}."
        ) from None
    return numbers[0] if len(numbers) == 1 else numbers


def _setup(
    network_path: Path | None,
    width: int | None,
    depth: int | None,
    activation: str | None,
    noise_text: str,
    injection: str | None,
    layers_text: str,
    input_text: str,
) -> _Setup:
    noise = _parse_noise(noise_text, injection)  # cheap checks first: no torch needed
    network, from_file = _build_network(network_path, width, depth, activation)
    with _option("--layers"):
        layers = _parse_layers(layers_text, network.depth)
    spec: NoiseSpec = noise if layers is None else noise.on_layers(layers)

    import torch

    from noiseprop._inputs import as_inputs

    with _option("--input"):
        inputs = as_inputs(_read_inputs(input_text), network, dtype=torch.float64, device="cpu")
    return _Setup(network, spec, inputs, from_file, input_text)


def _methods(given: list[str] | None, setup: _Setup) -> list[str]:
    if not given:
        return ["covariance" if setup.from_file else "symmetric"]
    methods: list[str] = []
    for method in given:
        _choice("--method", method, METHODS)
        if method not in methods:
            methods.append(method)
    return methods


def _check_simulation_options(repeats: int, dtype: str, device: str) -> None:
    """Reject bad simulation options before any long computation."""
    if repeats < 2:
        _fail("--repeats", f"expected an integer >= 2; got {repeats}.")
    _choice("--dtype", dtype, DTYPES)
    import torch

    try:
        torch.zeros(1, device=torch.device(device))
    except (RuntimeError, AssertionError, ValueError, TypeError) as error:
        _fail(
            "--device",
            f"expected a usable torch device such as cpu or cuda; got {device!r} "
            f"({str(error).splitlines()[0] if str(error) else type(error).__name__}).",
        )


# ------------------------------------------------------------------------- library calls
def _predict(setup: _Setup, method: str) -> NoiseStatistics:
    from noiseprop import propagate

    with _option("--method"):
        return propagate(setup.network, setup.noise, setup.inputs, method=method)


def _simulate(
    setup: _Setup, repeats: int, seed: int, dtype: str, device: str, show_progress: bool
) -> NoiseStatistics:
    from noiseprop import simulate

    callback: Callable[[int, int], None] | None = None
    bar: Any = nullcontext()
    if show_progress:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        bar = Progress(
            TextColumn("simulating"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("repeats"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
        )
        task = bar.add_task("simulating", total=repeats)

        def callback(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

    with bar:
        return simulate(
            setup.network,
            setup.noise,
            setup.inputs,
            repeats=repeats,
            seed=seed,
            dtype=dtype,
            device=device,
            progress=callback,
        )


# --------------------------------------------------------------------------------- output
def _jsonable(value: Any) -> Any:
    """Plain JSON values: numpy scalars unboxed, NaN and infinities as ``None``."""
    if isinstance(value, dict):
        return {str(key): _jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(item) for item in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return [_jsonable(row) for row in frame.to_dict(orient="records")]


def _print_json(payload: dict[str, Any]) -> None:
    typer.echo(json.dumps(_jsonable(payload), indent=2, allow_nan=False))


def _number(value: float, spec: str = ".6g") -> str:
    if value is None or math.isnan(value):
        return "-"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return format(value, spec)


def _describe_noise(noises: tuple[Noise, ...]) -> str:
    """``'AU=0.001 on every layer'`` or ``'layer 1: none; layers 2-3: AU=0.001'``."""
    if all(noise == noises[0] for noise in noises):
        return f"{noises[0]} on every layer"
    runs: list[list[Any]] = []  # [first, last, noise]
    for number, noise in enumerate(noises, start=1):
        if runs and runs[-1][2] == noise:
            runs[-1][1] = number
        else:
            runs.append([number, number, noise])
    return "; ".join(
        f"layer {first}: {noise}" if first == last else f"layers {first}-{last}: {noise}"
        for first, last, noise in runs
    )


def _notes(setup: _Setup, noises: tuple[Noise, ...]) -> list[str]:
    """The lines printed under a table: network, input, noise and the definitions."""
    return [
        f"network: {setup.network!r}; input: {setup.input_text}",
        f"noise (variances): {_describe_noise(noises)}",
        "variance: average over the layer's neurons and inputs",
        SNR_DEFINITION,
    ]


def _print_notes(console: Any, lines: list[str]) -> None:
    for line in lines:
        console.print(line, style="dim", highlight=False, markup=False)


def _statistics_table(stats: NoiseStatistics, setup: _Setup, title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    summary = stats.summary()
    table = Table(title=title)
    for name in ("layer", "neurons", "mean", "variance"):
        table.add_column(name, justify="right")
    if stats.is_simulation:
        table.add_column("stderr", justify="right")
    table.add_column("SNR", justify="right")
    table.add_column("SNR (dB)", justify="right")
    for row in summary.itertuples(index=False):
        cells = [str(row.layer), str(row.neurons), _number(row.mean), _number(row.variance)]
        if stats.is_simulation:
            cells.append(_number(row.variance_stderr, ".2g"))
        cells += [_number(row.snr, ".4g"), _number(row.snr_db, ".2f")]
        table.add_row(*cells)
    console = Console()
    console.print(table)
    notes = _notes(setup, stats.noise)
    if stats.is_simulation:
        notes.insert(3, "stderr: standard error of the simulated variance (batch means)")
    _print_notes(console, notes)


def _statistics_payload(stats: NoiseStatistics, setup: _Setup) -> dict[str, Any]:
    return {
        "network": repr(setup.network),
        "noise": [str(noise) for noise in stats.noise],
        "method": stats.method,
        "repeats": stats.repeats,
        "layers": _records(stats.summary()),
    }


# ------------------------------------------------------------------------------- commands
@app.command()
def predict(
    network: NetworkOption = None,
    width: WidthOption = None,
    depth: DepthOption = None,
    activation: ActivationOption = None,
    noise: NoiseOption = "AU=1e-3,AC=1e-3",
    injection: InjectionOption = None,
    layers: LayersOption = "all",
    inputs: InputOption = "0.5",
    method: PredictMethodOption = None,
    as_json: JsonOption = False,
) -> None:
    """Predict every layer's noise analytically (noiseprop.propagate)."""
    setup = _setup(network, width, depth, activation, noise, injection, layers, inputs)
    (chosen,) = _methods([method] if method else None, setup)
    stats = _predict(setup, chosen)
    if as_json:
        _print_json(_statistics_payload(stats, setup))
    else:
        _statistics_table(stats, setup, f"Predicted noise per layer ({chosen} method)")


@app.command()
def simulate(
    network: NetworkOption = None,
    width: WidthOption = None,
    depth: DepthOption = None,
    activation: ActivationOption = None,
    noise: NoiseOption = "AU=1e-3,AC=1e-3",
    injection: InjectionOption = None,
    layers: LayersOption = "all",
    inputs: InputOption = "0.5",
    repeats: RepeatsOption = 10_000,
    seed: SeedOption = 0,
    dtype: DtypeOption = "float32",
    device: DeviceOption = "cpu",
    progress: ProgressOption = True,
    as_json: JsonOption = False,
) -> None:
    """Measure every layer's noise by Monte Carlo simulation (noiseprop.simulate)."""
    setup = _setup(network, width, depth, activation, noise, injection, layers, inputs)
    _check_simulation_options(repeats, dtype, device)
    stats = _simulate(setup, repeats, seed, dtype, device, progress and not as_json)
    if as_json:
        _print_json(_statistics_payload(stats, setup))
    else:
        title = f"Simulated noise per layer (Monte Carlo, {repeats} repeats, seed {seed}, {dtype})"
        _statistics_table(stats, setup, title)


@app.command()
def compare(
    network: NetworkOption = None,
    width: WidthOption = None,
    depth: DepthOption = None,
    activation: ActivationOption = None,
    noise: NoiseOption = "AU=1e-3,AC=1e-3",
    injection: InjectionOption = None,
    layers: LayersOption = "all",
    inputs: InputOption = "0.5",
    method: CompareMethodOption = None,
    repeats: RepeatsOption = 10_000,
    seed: SeedOption = 0,
    dtype: DtypeOption = "float32",
    device: DeviceOption = "cpu",
    sigmas: SigmasOption = 3.0,
    progress: ProgressOption = True,
    as_json: JsonOption = False,
) -> None:
    """Compare predictions with a Monte Carlo simulation, layer by layer."""
    setup = _setup(network, width, depth, activation, noise, injection, layers, inputs)
    methods = _methods(method, setup)
    if not (sigmas > 0 and math.isfinite(sigmas)):
        _fail("--sigmas", f"expected a finite number > 0; got {sigmas!r}.")
    _check_simulation_options(repeats, dtype, device)
    predictions = {name: _predict(setup, name) for name in methods}  # fast: fail before simulating
    simulation = _simulate(setup, repeats, seed, dtype, device, progress and not as_json)
    comparisons = {
        name: prediction.compare(simulation, sigmas=sigmas) for name, prediction in predictions.items()
    }
    if as_json:
        _print_json(
            {
                "network": repr(setup.network),
                "noise": [str(item) for item in simulation.noise],
                "repeats": simulation.repeats,
                "sigmas": sigmas,
                "methods": {
                    name: {
                        "layers": _records(comparison.to_frame()),
                        "all_within": comparison.all_within,
                    }
                    for name, comparison in comparisons.items()
                },
            }
        )
        return

    from rich.console import Console
    from rich.table import Table

    console = Console()
    for name, comparison in comparisons.items():
        frame = comparison.to_frame()
        table = Table(
            title=f"Predicted ({name}) vs simulated variance ({repeats} repeats, seed {seed}, {dtype})"
        )
        for column in ("layer", "predicted", "simulated", "stderr", "rel. error", "z", "within"):
            table.add_column(column, justify="right")
        for row in frame.itertuples(index=False):
            table.add_row(
                str(row.layer),
                _number(row.predicted),
                _number(row.simulated),
                _number(row.stderr, ".2g"),
                _number(100 * row.relative_error, "+.2f") + " %",
                _number(row.z, "+.2f"),
                "[green]yes[/green]" if row.within else "[red]no[/red]",
            )
        console.print(table)
        _print_notes(
            console,
            _notes(setup, simulation.noise)[:3]
            + [
                "stderr: standard error of the simulated variance; rel. error = "
                "(predicted - simulated) / simulated; z = (predicted - simulated) / stderr; "
                f"within: |z| <= {sigmas:g}"
            ],
        )
        agreeing = int(frame["within"].sum())
        colour = "green" if agreeing == len(frame) else "red"
        console.print(
            f"[{colour}]{agreeing}/{len(frame)} layers agree within {sigmas:g} standard errors "
            f"({name})[/{colour}]",
            highlight=False,
        )


def main() -> None:
    """Entry point of the ``noiseprop`` command."""
    app(prog_name="noiseprop")


if __name__ == "__main__":  # pragma: no cover
    main()
