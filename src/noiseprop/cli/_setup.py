"""Building what the commands need from their options: network, noise, inputs; library calls."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import Tensor, nn

    from noiseprop.network import Network
    from noiseprop.noise import Noise, NoiseSpec
    from noiseprop.results import NoiseStatistics

from noiseprop.cli._options import (
    DEFAULT_ACTIVATION,
    DEFAULT_DEPTH,
    DEFAULT_WIDTH,
    DTYPES,
    INJECTIONS,
    METHODS,
    choice,
    fail,
    reported_as,
)


# --------------------------------------------------------------------------------- set-up
@dataclass(frozen=True)
class Setup:
    """What every command needs: the network, the noise specification and the inputs.

    For a ``--model`` (:mod:`noiseprop.cli._model`), ``network`` is the torch model, ``sites`` its
    ``--sites`` patterns (``None``: every activation module) and ``description`` says which model it is.
    """

    network: Network | nn.Module
    noise: NoiseSpec
    inputs: Tensor
    from_file: bool
    input_text: str
    sites: tuple[str, ...] | None = None
    description: str | None = None

    @property
    def is_model(self) -> bool:
        return self.description is not None


def build_network(
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
            fail(
                "--network",
                "give either --network or --width/--depth/--activation, not both; got --network "
                f"with {', '.join(given)}.",
            )
        return load_network(path), True

    from noiseprop import parse_activation
    from noiseprop._validation import check_positive_int

    with reported_as("--activation"):
        act = parse_activation(DEFAULT_ACTIVATION if activation is None else activation)
    with reported_as("--width"):
        width = check_positive_int("width", DEFAULT_WIDTH if width is None else width)
    with reported_as("--depth"):
        depth = check_positive_int("depth", DEFAULT_DEPTH if depth is None else depth)

    from noiseprop import Network

    try:
        return Network.symmetric(width, depth, activation=act), False
    except (RuntimeError, MemoryError) as error:  # the weights do not fit in memory
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        fail("--width", f"a {width}-wide network of depth {depth} does not fit in memory ({first}).")


def load_network(path: Path) -> Network:
    """``--network``: a network file, or ``default`` for the shipped trained MNIST network (when no
    file of that name exists)."""
    from noiseprop import Network

    if str(path) == "default" and not path.exists():
        from noiseprop.training import default_network

        return default_network()
    with reported_as("--network"):
        return Network.load(path)


def parse_noise(text: str, injection: str | None) -> Noise:
    """``--noise`` with ``--injection`` applied (``injection=`` inside ``--noise`` must agree)."""
    from dataclasses import replace

    from noiseprop import Noise

    with reported_as("--noise"):
        noise = Noise.parse(text)
    if injection is not None:
        choice("--injection", injection, INJECTIONS)
        if noise.injection != "after" and noise.injection != injection:
            fail(
                "--injection",
                f"conflicts with injection={noise.injection} in --noise {text!r}; give it once.",
            )
        noise = replace(noise, injection=injection)
    return noise


def parse_layers(text: str, depth: int) -> tuple[int, ...] | None:
    """The 1-based noisy layers of ``--layers``; ``None`` for all of them.

    Example:
        >>> parse_layers("1-3,5", 6), parse_layers("hidden", 3), parse_layers("all", 3)
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


def read_mnist(text: str) -> tuple[Any, Any]:
    """``mnist:N`` / ``mnist-train:N``: the first N test (or training) images scaled to [0, 1],
    with their labels."""
    name, _, count = text.strip().partition(":")
    split = "train" if name.lower() == "mnist-train" else "test"
    try:
        number = int(count) if count else None
    except ValueError:
        number = -1
    if number is not None and number < 1:
        raise ValueError(f"expected mnist:N or mnist-train:N with N >= 1 images; got {text!r}.")
    from noiseprop.datasets import mnist

    images, labels = mnist().scaled(split)
    if number is not None and number > len(images):
        raise ValueError(
            f"the MNIST {split} set has {len(images):,} images; got {text!r} (give N <= "
            f"{len(images)}, or 'mnist-train:N' for up to 60,000 training images)."
            if split == "test"
            else f"the MNIST {split} set has {len(images):,} images; got {text!r}."
        )
    return images[:number], labels[:number]


def read_inputs(text: str) -> Any:
    """``--input``: a number, a list of numbers, the array in a ``.npy`` / ``.csv`` file, or
    MNIST images (``mnist:N``, ``mnist-train:N``)."""
    stripped = text.strip()
    if stripped.lower().startswith(("mnist:", "mnist-train:")) or stripped.lower() in (
        "mnist",
        "mnist-train",
    ):
        return read_mnist(stripped)[0]
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


def build_setup(
    network_path: Path | None,
    width: int | None,
    depth: int | None,
    activation: str | None,
    noise_text: str,
    injection: str | None,
    layers_text: str,
    input_text: str,
) -> Setup:
    noise = parse_noise(noise_text, injection)  # cheap checks first: no torch needed
    network, from_file = build_network(network_path, width, depth, activation)
    with reported_as("--layers"):
        layers = parse_layers(layers_text, network.depth)
    spec: NoiseSpec = noise if layers is None else noise.on_layers(layers)

    import torch

    from noiseprop._inputs import as_inputs

    with reported_as("--input"):
        inputs = as_inputs(read_inputs(input_text), network, dtype=torch.float64, device="cpu")
    return Setup(network, spec, inputs, from_file, input_text)


def methods_from(given: list[str] | None, setup: Setup) -> list[str]:
    if not given:
        return ["covariance" if setup.from_file else "symmetric"]
    methods: list[str] = []
    for method in given:
        choice("--method", method, METHODS)
        if setup.is_model and method != "covariance":
            fail(
                "--method",
                f"{method} needs a dense network; a --model is linearised by automatic "
                "differentiation: --method covariance (the default with --model).",
            )
        if method not in methods:
            methods.append(method)
    return methods


def check_simulation_options(dtype: str, device: str) -> None:
    """Reject bad simulation options before any long computation (``--repeats`` is checked when it
    is parsed: :func:`noiseprop.cli._options.checked_repeats`)."""
    choice("--dtype", dtype, DTYPES)
    import torch

    try:
        torch.zeros(1, device=torch.device(device))
    except (RuntimeError, AssertionError, ValueError, TypeError) as error:
        fail(
            "--device",
            f"expected a usable torch device such as cpu or cuda; got {device!r} "
            f"({str(error).splitlines()[0] if str(error) else type(error).__name__}).",
        )


# ------------------------------------------------------------------------- library calls
def run_prediction(setup: Setup, method: str) -> NoiseStatistics:
    from noiseprop import propagate

    with reported_as("--model" if setup.is_model else "--method"):
        return propagate(setup.network, setup.noise, setup.inputs, method=method, sites=setup.sites)


def run_simulation(
    setup: Setup, repeats: int, seed: int, dtype: str, device: str, show_progress: bool
) -> NoiseStatistics:
    from noiseprop import simulate
    from noiseprop.cli._progress import progress_rows

    with (
        progress_rows(show_progress, "repeats") as update,
        reported_as("--model" if setup.is_model else "--noise"),
    ):
        return simulate(
            setup.network,
            setup.noise,
            setup.inputs,
            sites=setup.sites,
            repeats=repeats,
            seed=seed,
            dtype=dtype,
            device=device,
            progress=lambda done, total: update("simulating", done, total),
        )
