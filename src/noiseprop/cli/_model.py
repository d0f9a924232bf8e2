"""A torch model on the command line: ``--model``, ``--weights`` and ``--sites``.

``--model SPEC`` (:func:`noiseprop.model_files.load_model`) takes the place of a dense network's
``--network`` or ``--width/--depth/--activation``; giving both is refused. Noise acts at the model's
sites (``--sites`` glob patterns on its module names; default every activation module), the same
noise at every site; ``--layers`` selects layers of a dense network and is refused with a model.
``--input`` is read as for a network (numbers, ``.npy``/``.csv``, ``mnist:N``) and handed to the model
as a batch, as it is: a comma list of numbers is one input, a file's array is the batch (batch
first), and a single number is refused (a model's input shape is its own).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from noiseprop.cli._options import fail, reported_as
from noiseprop.cli._setup import Setup, build_setup, parse_noise, read_inputs

if TYPE_CHECKING:
    from torch import Tensor, nn

NETWORK_OPTIONS = "--network/--width/--depth/--activation"


@dataclass(frozen=True)
class LoadedModel:
    """The model of ``--model``/``--weights``, its ``--sites`` patterns and the sites they select."""

    model: nn.Module
    sites: tuple[str, ...] | None
    site_names: tuple[str, ...]
    description: str


def refuse_with_model(given: dict[str, Any], others: str = NETWORK_OPTIONS) -> None:
    """Fail if any of the options ``given`` (name: value, ``None`` when absent) came with --model."""
    named = [name for name, value in given.items() if value is not None]
    if named:
        fail(
            "--model",
            f"give either --model or {others}, not both; got --model with {', '.join(named)}.",
        )


def refuse_without_model(weights: Path | None, sites: list[str] | None) -> None:
    """Fail if --weights or --sites came without --model."""
    if weights is not None:
        fail("--weights", "gives the weights of a --model; got --weights without --model.")
    if sites:
        fail(
            "--sites",
            "chooses the noise sites of a --model; got --sites without --model (for a dense network "
            "choose the noisy layers with --layers).",
        )


def refuse_layers(layers: str | None) -> None:
    if layers is not None:
        fail(
            "--layers",
            "selects layers of a dense network; with --model choose the noise sites with --sites "
            f"PATTERN (glob patterns on its module names); got --layers {layers!r}.",
        )


def load(spec: str, weights: Path | None, sites: list[str] | None) -> LoadedModel:
    """The model of ``--model`` with ``--weights``, and the names of the sites ``--sites`` selects."""
    from noiseprop.model_files import load_model, load_weights
    from noiseprop.sites import find_sites

    with reported_as("--model"):
        model = load_model(spec)
    if weights is not None:
        with reported_as("--weights"):
            load_weights(model, weights)
    patterns = tuple(sites) if sites else None
    try:
        names = tuple(name for name, _ in find_sites(model, patterns))
    except (ValueError, TypeError) as error:
        fail("--sites", str(error).removeprefix("sites: "))
    description = spec if weights is None else f"{spec} with weights {weights}"
    return LoadedModel(model.eval(), patterns, names, description)


def model_inputs(text: str) -> Tensor:
    """``--input`` as a float64 batch for a model (see the module docstring)."""
    import torch

    from noiseprop.model_montecarlo import as_model_inputs

    with reported_as("--input"):
        value = read_inputs(text)
        if isinstance(value, float):
            raise ValueError(
                "a model takes a batch of inputs shaped as it expects them: a comma list of numbers "
                "(one input), a .npy/.csv file (batch first) or mnist:N; got the single number "
                f"{text!r} (the default for a dense network, whose inputs all take it)."
            )
        if isinstance(value, list):
            value = [value]
        return as_model_inputs(value, dtype=torch.float64, device=torch.device("cpu"))


def build_model_setup(
    spec: str,
    weights: Path | None,
    sites: list[str] | None,
    noise_text: str,
    injection: str | None,
    layers_text: str | None,
    input_text: str,
) -> Setup:
    """The :class:`Setup` of a command run with ``--model``."""
    refuse_layers(layers_text)
    noise = parse_noise(noise_text, injection)  # cheap checks first
    loaded = load(spec, weights, sites)
    inputs = model_inputs(input_text)
    return Setup(
        loaded.model, noise, inputs, True, input_text, sites=loaded.sites,
        description=loaded.description,
    )  # fmt: skip


@contextlib.contextmanager
def running(is_model: bool, input_shape: tuple[int, ...]) -> Iterator[None]:
    """Report an error of a model's run (its forward pass, or what the library checks of it) as
    ``--model``, naming the input shape; nothing for a dense network."""
    if not is_model:
        yield
        return
    try:
        yield
    except (ValueError, TypeError) as error:
        fail("--model", str(error))
    except typer.Exit:  # already reported, in one line
        raise
    except RuntimeError as error:  # raised by torch in the model's forward pass
        lines = str(error).strip().splitlines()
        fail(
            "--model",
            f"its forward pass failed on --input of shape {tuple(input_shape)} with RuntimeError: "
            f"{lines[0] if lines else ''} (expected inputs as the model takes them, batch first).",
        )


def check_forward(setup: Setup, dtype: str, device: str) -> None:
    """Run the model once, noise-free, on the first input: a model that cannot take ``--input``
    fails here, in one line, before the simulation starts."""
    if not setup.is_model:
        return
    import torch

    from noiseprop.model_montecarlo import model_outputs

    with running(True, tuple(setup.inputs.shape)):
        model_outputs(
            setup.network, setup.inputs[:1], dtype=getattr(torch, dtype),
            device=torch.device(device), batch_size=1,
        )  # fmt: skip


def describe_site_noise(names: tuple[str, ...], noises: tuple[Any, ...]) -> str:
    """``'AU=0.001 at relu1, relu2; none at output'``: every noise with the entries it acts at.

    Example:
        >>> describe_site_noise(("relu1", "relu2", "output"), ("AU=0.001", "AU=0.001", "none"))
        'AU=0.001 at relu1, relu2; none at output'
    """
    groups: dict[str, list[str]] = {}
    for name, noise in zip(names, noises):
        groups.setdefault(str(noise), []).append(name)
    return "; ".join(f"{noise} at {', '.join(where)}" for noise, where in groups.items())


def network_or_model_setup(
    network: Path | None, width: int | None, depth: int | None, activation: str | None,
    model: str | None, weights: Path | None, sites: list[str] | None, noise: str,
    injection: str | None, layers: str | None, inputs: str,
) -> Setup:  # fmt: skip
    """The setup of a command that takes a dense network or, with ``--model``, any torch model."""
    if model is not None:
        given = {"--network": network, "--width": width, "--depth": depth, "--activation": activation}
        refuse_with_model(given)
        return build_model_setup(model, weights, sites, noise, injection, layers, inputs)
    refuse_without_model(weights, sites)
    return build_setup(network, width, depth, activation, noise, injection, layers or "all", inputs)
