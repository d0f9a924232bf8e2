"""Named experiments for sweeps: each maps parameters and a seed to a tidy table.

An experiment is a function ``f(*, seed, **parameters) -> pandas.DataFrame``; registering it with
:func:`experiment` makes it available by name to :func:`noiseprop.sweep.sweep` and ``noiseprop
sweep``. Its rows must not depend on anything but its parameters and seed.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import pandas as pd

from noiseprop._validation import check_choice

__all__ = ["EXPERIMENTS", "experiment", "resolve"]

EXPERIMENTS: dict[str, Callable[..., pd.DataFrame]] = {}


def experiment(name: str) -> Callable[[Callable[..., pd.DataFrame]], Callable[..., pd.DataFrame]]:
    """Decorator registering an experiment under ``name``."""

    def register(function: Callable[..., pd.DataFrame]) -> Callable[..., pd.DataFrame]:
        if "seed" not in inspect.signature(function).parameters:
            raise TypeError(f"experiment {name!r} must take a keyword argument 'seed'.")
        EXPERIMENTS[name] = function
        return function

    return register


def resolve(spec: str | Callable[..., pd.DataFrame]) -> tuple[Callable[..., pd.DataFrame], str]:
    """The function and name of an experiment given by name or as a function."""
    if callable(spec):
        return spec, f"{spec.__module__}.{spec.__qualname__}"
    if spec not in EXPERIMENTS:
        raise ValueError(f"experiment must be one of {', '.join(sorted(EXPERIMENTS))}; got {spec!r}.")
    return EXPERIMENTS[spec], spec


def parameters_of(name: str) -> dict[str, Any]:
    """The parameters of a registered experiment with their defaults."""
    function, _ = resolve(name)
    return {
        key: parameter.default
        for key, parameter in inspect.signature(function).parameters.items()
        if key != "seed"
    }


def _statistics_rows(stats: Any, method: str) -> pd.DataFrame:
    summary = stats.summary()
    return pd.DataFrame(
        {
            "layer": summary["layer"],
            "method": method,
            "mean": summary["mean"],
            "variance": summary["variance"],
            "variance_stderr": summary["variance_stderr"],
            "snr_db": summary["snr_db"],
        }
    )


@experiment("symmetric")
def symmetric_layers(
    *,
    seed: int,
    width: int = 100,
    depth: int = 10,
    activation: str = "sigmoid",
    kind: str = "AC",
    intensity: float = 1e-3,
    injection: str = "after",
    input: float = 0.5,  # noqa: A002 - the parameter's name on the command line
    repeats: int = 2000,
    methods: str = "symmetric,covariance,meanfield",
) -> pd.DataFrame:
    """Per-layer noise of a symmetric network (SCIENCE.md section 2) with one kind of noise on every
    layer: one row per layer and method (``montecarlo`` and each prediction method), columns
    ``layer, method, mean, variance, variance_stderr, snr_db``."""
    from noiseprop.analytic import propagate
    from noiseprop.montecarlo import simulate
    from noiseprop.network import Network
    from noiseprop.noise import KINDS, Noise

    check_choice("kind", kind, KINDS)
    network = Network.symmetric(width=width, depth=depth, activation=activation)
    noise = Noise(**{kind: intensity}, injection=injection)
    frames = [
        _statistics_rows(simulate(network, noise, input, repeats=repeats, seed=seed), "montecarlo")
    ]
    for method in filter(None, (item.strip() for item in methods.split(","))):
        frames.append(_statistics_rows(propagate(network, noise, input, method=method), method))
    return pd.concat(frames, ignore_index=True)
