"""Options, constants and error reporting shared by the commands.

A bad option value prints one line ``Error: --OPTION: what was expected; got ...`` on stderr and exits
with code 2, the exit code of click's own usage errors.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, NoReturn

import typer

METHODS = ("covariance", "moments", "meanfield", "symmetric")
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


# --------------------------------------------------------------------------------- errors
def fail(option: str, message: str) -> NoReturn:
    """Print ``Error: OPTION: message`` on stderr (one line, no traceback) and exit with code 2."""
    typer.echo(f"Error: {option}: {message}", err=True)
    raise typer.Exit(code=EXIT_USAGE)


@contextmanager
def reported_as(option: str) -> Iterator[None]:
    """Report a library error (ValueError, TypeError, OSError) raised inside as a bad ``option``."""
    try:
        yield
    except (ValueError, TypeError, OSError) as error:
        fail(option, str(error))


def choice(option: str, value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        fail(option, f"expected one of {', '.join(choices)}; got {value!r}.")
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
        "a .npy (1-D or 2-D, shape batch x inputs) or .csv (one input per row, no header) file, or "
        "'mnist:N' for the first N MNIST test images ('mnist-train:N' for training images).",
    ),
]
PerInputOption = Annotated[
    bool,
    typer.Option(
        "--per-input", help="Also report every input's variance (e.g. per image), not only averages."
    ),
]
JsonOption = Annotated[
    bool, typer.Option("--json", help="Print machine-readable JSON on stdout instead of a table.")
]
PredictMethodOption = Annotated[
    str | None,
    typer.Option(
        "--method",
        help="Prediction method: covariance (first order), moments (beyond first order), meanfield "
        "or symmetric; with --model, covariance.",
        show_default="symmetric for --width/--depth networks, covariance for --network files",
    ),
]
CompareMethodOption = Annotated[
    list[str] | None,
    typer.Option(
        "--method",
        help="Prediction method (covariance, moments, meanfield, symmetric); repeat to compare several.",
        show_default="as for predict",
    ),
]


def checked_repeats(value: int) -> int:
    """Parse-time check of every ``--repeats``: from 2 to 2^53 (more cannot be counted exactly in
    float64, nor finish)."""
    from noiseprop._validation import MAX_REPEATS

    if not 2 <= value <= MAX_REPEATS:
        fail(
            "--repeats",
            f"expected an integer from 2 to 2^53 = {MAX_REPEATS} (more could not finish); got {value}.",
        )
    return value


RepeatsOption = Annotated[
    int, typer.Option(help="Noise draws per input (>= 2).", callback=checked_repeats)
]


def check_output_file(option: str, path: Path, example: str = "net.safetensors") -> None:
    """Before any work: ``path`` must be a file name (not a folder) in a folder that exists or can
    be made, and that can be written to."""
    import tempfile

    if path.exists() and path.is_dir():
        fail(option, f"{str(path)!r} is a folder; expected a file path such as {example}.")
    folder = path.expanduser().parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        fail(option, f"cannot make the folder {str(folder)!r} for {str(path)!r}: {error.strerror}.")
    try:  # the only sure test of writing there: write a file, and remove it
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".noiseprop-check-"):
            pass
    except OSError as error:
        reason = error.strerror or error
        fail(option, f"cannot write in the folder {str(folder)!r} ({reason}); got {str(path)!r}.")


def checked_seed(value: int) -> int:
    """Parse-time check of every ``--seed``: from 0 to 2^63 - 1 (torch's generators are signed
    64-bit)."""
    from noiseprop._validation import MAX_SEED

    if not 0 <= value <= MAX_SEED:
        fail("--seed", f"expected an integer from 0 to 2^63 - 1; got {value}.")
    return value


SeedOption = Annotated[int, typer.Option(help="Seed of the noise draws.", callback=checked_seed)]
ImagesOption = Annotated[
    str,
    typer.Option(
        "--images",
        "--input",
        help="Test images: 'mnist:N' for the first N MNIST test images (--input is the same option, "
        "as in predict, simulate and compare).",
    ),
]
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


def checked_workers(value: int | None) -> int | None:
    """Parse-time check of ``--workers``: a local cluster needs at least one worker."""
    if value is not None and value < 1:
        fail("--workers", f"expected an integer >= 1 (worker processes); got {value}.")
    return value


def checked_scheduler(value: str | None) -> str | None:
    """Parse-time check of ``--scheduler``: an address such as tcp://HOST:PORT."""
    if value is not None and ("://" not in value or value.endswith("://")):
        fail("--scheduler", f"expected an address such as tcp://HOST:8786; got {value!r}.")
    return value


WorkersOption = Annotated[
    int | None,
    typer.Option(
        help="Run on a local Dask cluster of this many worker processes.", callback=checked_workers
    ),
]
SchedulerOption = Annotated[
    str | None,
    typer.Option(
        help="Address of an existing Dask scheduler, e.g. tcp://HOST:8786 (HOST: yours).",
        callback=checked_scheduler,
    ),
]
EXIT_FAILED_POINTS = 1
"""Exit code of a sweep or study that finished with failed points."""
ModelOption = Annotated[
    str | None,
    typer.Option(
        "--model",
        help="A torch model instead of a dense network: PATH.py:FUNCTION or package.module:FUNCTION "
        "(FUNCTION() returns the nn.Module; the file's code runs, so trust it), or 'cnn' for the "
        "trained MNIST CNN shipped with noiseprop. Noise acts at its --sites.",
        show_default=False,
    ),
]
WeightsOption = Annotated[
    Path | None,
    typer.Option(
        "--weights",
        help="The --model's state_dict as a .safetensors file (never a pickle: .pt/.pth are refused).",
        dir_okay=False,
        show_default=False,
    ),
]
SitesOption = Annotated[
    list[str] | None,
    typer.Option(
        "--sites",
        help="Noise sites of a --model: a glob pattern on its module names (as in "
        "model.named_modules()), e.g. 'relu*'; repeatable. Noise acts at (and is measured after) "
        "every site.",
        show_default="every activation module",
    ),
]
ModelLayersOption = Annotated[
    str | None,
    typer.Option(
        "--layers",
        help="Noisy layers of a dense network: 'all', 'hidden' (all but the output layer), 'output', "
        "or 1-based layer numbers and ranges such as '1-5,8'. The other layers are noise-free. Not "
        "with --model (choose its noisy sites with --sites).",
        show_default="all",
    ),
]
