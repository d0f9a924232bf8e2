"""noiseprop: how neuron noise propagates through deep analog neural networks.

Predict it analytically (:func:`propagate`), simulate it exactly (:func:`simulate`) and compare the
two (:func:`compare`), for the four kinds of neuron noise of :class:`Noise`. See ``docs/THEORY.md`` of
the project for the model.

The public names are loaded lazily, so that ``import noiseprop`` (and ``noiseprop --help``) does not
import torch until something needs it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "Noise": "noiseprop.noise",
    "KINDS": "noiseprop.noise",
    "Activation": "noiseprop.activations",
    "Sigmoid": "noiseprop.activations",
    "Linear": "noiseprop.activations",
    "Tanh": "noiseprop.activations",
    "ReLU": "noiseprop.activations",
    "LeakyReLU": "noiseprop.activations",
    "GELU": "noiseprop.activations",
    "GELUTanh": "noiseprop.activations",
    "Softplus": "noiseprop.activations",
    "ELU": "noiseprop.activations",
    "Hardtanh": "noiseprop.activations",
    "register_activation": "noiseprop.activations",
    "parse_activation": "noiseprop.activations",
    "Layer": "noiseprop.network",
    "Network": "noiseprop.network",
    "propagate": "noiseprop.analytic",
    "simulate": "noiseprop.montecarlo",
    "sample": "noiseprop.montecarlo",
    "LayerStatistics": "noiseprop.results",
    "NoiseStatistics": "noiseprop.results",
    "Comparison": "noiseprop.results",
    "compare": "noiseprop.results",
    "Accuracy": "noiseprop.classification",
    "accuracy": "noiseprop.classification",
    "Design": "noiseprop.criteria",
    "design": "noiseprop.criteria",
    "pool": "noiseprop.mitigation",
    "add_ghosts": "noiseprop.mitigation",
    "TrainConfig": "noiseprop.training",
    "train": "noiseprop.training",
    "sweep": "noiseprop.sweeps",
    "noisy": "noiseprop.sites",
    "NoisySites": "noiseprop.sites",
    "find_sites": "noiseprop.sites",
    "load_model": "noiseprop.model_files",
}

__all__ = sorted(_EXPORTS) + ["__version__"]

if TYPE_CHECKING:  # pragma: no cover
    from noiseprop.activations import (
        ELU,
        GELU,
        Activation,
        GELUTanh,
        Hardtanh,
        LeakyReLU,
        Linear,
        ReLU,
        Sigmoid,
        Softplus,
        Tanh,
        parse_activation,
        register_activation,
    )
    from noiseprop.analytic import propagate
    from noiseprop.classification import Accuracy, accuracy
    from noiseprop.criteria import Design, design
    from noiseprop.mitigation import add_ghosts, pool
    from noiseprop.model_files import load_model
    from noiseprop.montecarlo import sample, simulate
    from noiseprop.network import Layer, Network
    from noiseprop.noise import KINDS, Noise
    from noiseprop.results import Comparison, LayerStatistics, NoiseStatistics, compare
    from noiseprop.sites import NoisySites, find_sites, noisy
    from noiseprop.sweeps import sweep
    from noiseprop.training import TrainConfig, train


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'noiseprop' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
