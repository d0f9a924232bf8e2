"""Named experiments for sweeps: each maps parameters and a seed to a tidy table.

An experiment is a function ``f(*, seed, **parameters) -> pandas.DataFrame``; registering it with
:func:`experiment` makes it available by name to :func:`noiseprop.sweeps.sweep` and ``noiseprop
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


def _statistics_rows(stats: Any, method: str, *, site: bool = False) -> pd.DataFrame:
    summary = stats.summary()
    return pd.DataFrame(
        {
            "layer": summary["layer"],
            **({"site": summary["site"]} if site else {}),
            "method": method,
            "mean": summary["mean"],
            "variance": summary["variance"],
            "variance_stderr": summary["variance_stderr"],
            "snr_db": summary["snr_db"],
        }
    )


def fixed_point(activation: str, *, start: float = 0.5, steps: int = 10_000) -> float:
    """The fixed point ``mu* = f(mu*)`` reached by iterating ``f`` from ``start`` (docs/THEORY.md
    section 2: a symmetric network with weights 1/N maps its layer average ``mu`` to ``f(mu)``).

    Example:
        >>> round(fixed_point("sigmoid"), 6)
        0.659046

    Raises:
        ValueError: if the iteration does not settle (slope above 1 at every point, say).
    """
    import torch

    from noiseprop.activations import parse_activation

    f = parse_activation(activation)
    value = torch.tensor(start, dtype=torch.float64)
    for _ in range(steps):
        following = f(value)
        if abs(float(following - value)) < 1e-15:
            return float(following)
        value = following
    raise ValueError(
        f"input='fixed': iterating {activation!r} from {start} does not settle on a fixed point; "
        "give the input value instead."
    )


def _symmetric_network(width: int, depth: int, activation: str, readout: bool) -> Any:
    import torch

    from noiseprop.network import Layer, Network

    network = Network.symmetric(width=width, depth=depth, activation=activation)
    if not readout:
        return network
    average = Layer(torch.full((1, width), 1.0 / width, dtype=torch.float64), torch.zeros(1), "linear")
    return Network((*network.layers, average))


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
    input: float | str = "fixed",  # noqa: A002 - the parameter's name on the command line
    readout: bool = False,
    repeats: int = 2000,
    methods: str = "symmetric,covariance,meanfield",
) -> pd.DataFrame:
    """Per-layer noise of a symmetric network (docs/THEORY.md section 2) with one kind of noise on
    every layer: one row per layer and method (``montecarlo`` and each prediction method), columns
    ``input_value, layer, method, mean, variance, variance_stderr, snr_db``.

    ``input="fixed"`` feeds the activation's fixed point (:func:`fixed_point`), so every layer works
    at the same operating point. ``readout=True`` appends a noise-free linear neuron that averages the
    last layer (weights 1/N): its variance, in the row ``layer = depth + 1``, is the variance of the
    layer average, which is what the next layer of a symmetric network receives.
    """
    from noiseprop.analytic import propagate
    from noiseprop.montecarlo import simulate
    from noiseprop.noise import KINDS, Noise

    check_choice("kind", kind, KINDS)
    network = _symmetric_network(width, depth, activation, readout)
    value = fixed_point(activation) if input == "fixed" else float(input)
    noise: Any = Noise(**{kind: intensity}, injection=injection)
    if readout:
        noise = noise.on_layers(range(1, depth + 1))
    frames = [
        _statistics_rows(simulate(network, noise, value, repeats=repeats, seed=seed), "montecarlo")
    ]
    for method in filter(None, (item.strip() for item in methods.split(","))):
        frames.append(_statistics_rows(propagate(network, noise, value, method=method), method))
    frame = pd.concat(frames, ignore_index=True)
    frame.insert(0, "input_value", value)
    return frame


def _classifier(network: str, model: str | None = None, weights: str | None = None) -> Any:
    """The classifier of an experiment: a dense network (``network``: ``"default"`` or a file) or a
    torch model (``model``: a spec of :func:`noiseprop.model_files.load_model`, with ``weights``)."""
    if model is not None:
        if network != "default":
            raise ValueError(
                f"give network or model, not both; got network={network!r} and model={model!r}."
            )
        from noiseprop.model_files import load_model

        return load_model(model, weights)
    if weights is not None:
        raise ValueError(
            f"weights are those of a model (give model=...); got weights={weights!r} without model."
        )
    if network == "default":
        from noiseprop.training import default_network

        return default_network()
    from noiseprop.network import Network

    return Network.load(network)


def _test_images(images: int) -> tuple[Any, Any]:
    from noiseprop.datasets import mnist

    pixels, labels = mnist().scaled("test")
    return pixels[:images], labels[:images]


@experiment("trained")
def trained_layers(
    *,
    seed: int,
    network: str = "default",
    model: str | None = None,
    weights: str | None = None,
    kind: str = "AU",
    intensity: float = 1e-3,
    injection: str = "after",
    images: int = 100,
    repeats: int = 2000,
    methods: str | None = None,
) -> pd.DataFrame:
    """Per-layer noise of a trained MNIST classifier on the first ``images`` test images, one kind of
    noise on every layer: rows per layer and method as in ``symmetric``, with a ``site`` column
    (the layer number of a dense network, the site name of a model).

    ``network`` is a file written by ``noiseprop train`` or ``"default"`` (the shipped 784-100-100-10
    sigmoid network). Or ``model``, a torch model taking flat ``(batch, 784)`` images
    (:func:`noiseprop.model_files.load_model`: ``PATH.py:FUNCTION``, ``package.module:FUNCTION`` or
    ``"cnn"``) with its ``weights`` file, noise at every activation module: rows per site and
    ``"output"``, Monte Carlo only. ``methods``: the prediction methods, default
    ``"covariance,meanfield"`` for a network and none for a model (they need a dense network)."""
    from noiseprop.analytic import propagate
    from noiseprop.montecarlo import simulate
    from noiseprop.noise import KINDS, Noise

    check_choice("kind", kind, KINDS)
    if model is not None and methods:
        raise ValueError(
            f"methods {methods!r} are predictions, which need a dense network; for model={model!r} "
            "leave methods unset (Monte Carlo only)."
        )
    classifier = _classifier(network, model, weights)
    pixels, _ = _test_images(images)
    noise = Noise(**{kind: intensity}, injection=injection)
    stats = simulate(classifier, noise, pixels, repeats=repeats, seed=seed)
    frames = [_statistics_rows(stats, "montecarlo", site=True)]
    for method in _methods(methods, "" if model is not None else "covariance,meanfield"):
        predicted = propagate(classifier, noise, pixels, method=method)
        frames.append(_statistics_rows(predicted, method, site=True))
    return pd.concat(frames, ignore_index=True)


def _methods(methods: str | None, default: str) -> list[str]:
    return [
        item.strip() for item in (default if methods is None else methods).split(",") if item.strip()
    ]


@experiment("accuracy")
def accuracy_under_noise(
    *,
    seed: int,
    network: str = "default",
    model: str | None = None,
    weights: str | None = None,
    kind: str = "AU",
    intensity: float = 1e-2,
    images: int = 1000,
    repeats: int = 100,
    points: int | None = None,
    methods: str | None = None,
    layers: str = "all",
    sites: str | None = None,
) -> pd.DataFrame:
    """Accuracy of a trained MNIST classifier under one kind of noise on every layer (``layers``:
    ``"all"``, or ``"hidden"`` for a network's hidden layers only): one row per
    method with ``method, accuracy, stderr, noise_free`` (:func:`noiseprop.classification.accuracy`).

    ``network`` or ``model`` and ``weights`` as in ``trained`` (a model's noise acts at every
    activation module, or at ``sites``: comma-separated glob patterns). ``methods``
    (:data:`noiseprop.curves.CURVE_METHODS`): default
    ``"predicted,first-order,montecarlo"`` for a network and ``"montecarlo"`` for a model (its
    predictions, :func:`noiseprop.accuracy` with ``method="predicted"``, on request)."""
    from noiseprop.classification import accuracy
    from noiseprop.curves import CURVE_METHODS
    from noiseprop.noise import KINDS, Noise

    check_choice("kind", kind, KINDS)
    check_choice("layers", layers, ("all", "hidden"))
    classifier = _classifier(network, model, weights)
    if layers == "hidden" and model is not None:
        raise ValueError("layers='hidden' selects a network's layers; a model's noise is at its sites.")
    if sites is not None and model is None:
        raise ValueError(f"sites are a model's (give model=...); got sites={sites!r} for a network.")
    chosen = None if sites is None else [pattern.strip() for pattern in sites.split(",")]
    where = {} if model is None else {"sites": chosen}
    pixels, labels = _test_images(images)
    noise = Noise(**{kind: intensity})
    spec: Any = noise if layers == "all" else noise.on_layers(range(1, classifier.depth))
    rows = []
    default = "montecarlo" if model is not None else "predicted,first-order,montecarlo"
    for method in _methods(methods, default):
        check_choice("methods", method, tuple(CURVE_METHODS))
        result = accuracy(
            classifier, spec, pixels, labels, **CURVE_METHODS[method],
            repeats=repeats, points=points, seed=seed, **where,
        )  # fmt: skip
        rows.append(
            {"method": method, "accuracy": result.accuracy, "stderr": result.stderr,
             "noise_free": result.noise_free}
        )  # fmt: skip
    return pd.DataFrame(rows)


TRANSFORMS = ("none", "ghosts", "pool", "ghosts+pool")


@experiment("mitigation")
def mitigated_accuracy(
    *,
    seed: int,
    network: str = "default",
    transform: str = "ghosts+pool",
    factor: int = 4,
    AU: float = 0.0225,  # noqa: N803 - the kind's name
    AC: float = 0.0225,  # noqa: N803
    images: int = 500,
    repeats: int = 100,
    points: int | None = None,
) -> pd.DataFrame:
    """A classifier under additive noise on its hidden layers, as it is or mitigated
    (:mod:`noiseprop.mitigation`): ``transform`` is ``none``, ``ghosts`` (one ghost neuron per hidden
    layer), ``pool`` (every hidden neuron becomes ``factor`` copies) or ``ghosts+pool``. One row per
    method (``predicted``, ``montecarlo``): ``accuracy, stderr, noise_free, output_snr_db, neurons``."""
    from noiseprop.mitigation import add_ghosts, assess, pool
    from noiseprop.noise import Noise

    check_choice("transform", transform, TRANSFORMS)
    classifier = _classifier(network)
    if "ghosts" in transform:
        classifier = add_ghosts(classifier)
    if "pool" in transform:
        classifier = pool(classifier, factor)
    pixels, labels = _test_images(images)
    noise = Noise(AU=AU, AC=AC).on_layers(range(1, classifier.depth))
    result = assess(classifier, noise, pixels, labels, repeats=repeats, points=points, seed=seed)
    output = result.summary().iloc[-1]
    rows = []
    for method, measured, snr_db in (
        ("predicted", result.predicted_accuracy, output["predicted_snr_db"]),
        ("montecarlo", result.simulated_accuracy, output["simulated_snr_db"]),
    ):
        rows.append(
            {"method": method, "accuracy": measured.accuracy, "stderr": measured.stderr,
             "noise_free": measured.noise_free, "output_snr_db": snr_db,
             "neurons": sum(classifier.widths[:-1])}
        )  # fmt: skip
    return pd.DataFrame(rows)


CONVOLUTION_LAYERS = {"conv2": ("relu1", "pool1"), "fc": ("relu2", "flatten")}
"""The shipped CNN's layers after a noisy site: layer -> (noisy site, the layer's input)."""


@experiment("convolution")
def convolution_mean_field(
    *,
    seed: int,
    kind: str = "AC",
    intensity: float = 1e-3,
    layer: str = "conv2",
    images: int = 20,
    repeats: int = 2000,
) -> pd.DataFrame:
    """The mean-field rule through one layer of the shipped CNN (docs/THEORY.md section 3, per
    convolutional layer): noise of one additive kind at the site before ``layer`` only, simulated at
    that layer's input and output (``conv2``: after ``relu1`` and ``pool1``; ``fc``: after ``relu2``,
    ``pool2`` and ``flatten``). With ``v`` the simulated variance at the input (averaged over its
    elements and the images), ``N_in`` the fan-in (input channels x kernel height x width, or the
    features) and ``<W>``, ``<W^2>`` the mean and mean square of all the layer's weights::

        mean field:  Var = N_in <W^2> v      (uncorrelated, AU)
                     Var = N_in^2 <W>^2 v    (correlated, AC)
        per channel: Var = mean_o sum w_o^2 v   and   mean_o (sum w_o)^2 v

    (the per-channel form uses each output channel's own weights; both take the input noise as
    uniform). One row: ``layer, input_variance, simulated, stderr, meanfield, per_channel``.
    """
    import torch

    from noiseprop.model_files import load_model
    from noiseprop.montecarlo import simulate
    from noiseprop.noise import Noise

    check_choice("kind", kind, ("AU", "AC"))
    check_choice("layer", layer, tuple(CONVOLUTION_LAYERS))
    source, before = CONVOLUTION_LAYERS[layer]
    model = load_model("cnn")
    pixels, _ = _test_images(images)
    statistics = simulate(
        model, {source: Noise(**{kind: intensity})}, torch.as_tensor(pixels),
        sites=[source, before, layer], repeats=repeats, seed=seed, dtype="float64",
    )  # fmt: skip
    entries = dict(zip(statistics.site_names, statistics.layers))
    weight = getattr(model, layer).weight.detach().double()
    rows = weight.reshape(weight.shape[0], -1)  # (output channels, fan-in)
    fan_in = rows.shape[1]
    incoming = entries[before].layer_variance
    if kind == "AU":
        meanfield = fan_in * float(weight.square().mean()) * incoming
        per_channel = float(rows.square().sum(1).mean()) * incoming
    else:
        meanfield = fan_in**2 * float(weight.mean()) ** 2 * incoming
        per_channel = float(rows.sum(1).square().mean()) * incoming
    output = entries[layer]
    return pd.DataFrame([{
        "layer": layer, "fan_in": fan_in, "input_variance": incoming,
        "simulated": output.layer_variance, "stderr": output.layer_variance_stderr,
        "meanfield": meanfield, "per_channel": per_channel,
    }])  # fmt: skip


INJECTION_LAYERS = ("1", "2", "hidden")
"""Where the ``injection`` experiment puts its noise: the first or the second hidden layer of the
shipped 784-100-100-10 network, or both."""


@experiment("injection")
def injection_accuracy(
    *,
    seed: int,
    network: str = "default",
    kind: str = "AU",
    intensity: float = 0.3,
    injection: str = "after",
    layer: str = "hidden",
    pool: int = 1,
    images: int = 300,
    repeats: int = 40,
) -> pd.DataFrame:
    """Simulated accuracy of a classifier with one kind of noise on one of its hidden layers
    (``layer``: ``"1"``, ``"2"``, ... or ``"hidden"`` for all of them), injected ``"before"`` or
    ``"after"`` the activation (docs/THEORY.md section 1), in the network as it is (``pool=1``) or
    with every hidden neuron pooled ``pool`` times (:func:`noiseprop.pool`: the same noise-free
    function, each copy with noise of its own). One row: ``accuracy, stderr, noise_free`` of
    :func:`noiseprop.accuracy` (``method="montecarlo"``)."""
    from noiseprop.classification import accuracy
    from noiseprop.mitigation import pool as pooled
    from noiseprop.noise import KINDS, Noise

    check_choice("kind", kind, KINDS)
    check_choice("injection", injection, ("after", "before"))
    classifier = _classifier(network)
    hidden = tuple(str(index) for index in range(1, classifier.depth))
    check_choice("layer", layer, (*hidden, "hidden"))
    if pool > 1:
        classifier = pooled(classifier, pool)
    noise = Noise(**{kind: intensity}, injection=injection)
    chosen = range(1, classifier.depth) if layer == "hidden" else [int(layer)]
    pixels, labels = _test_images(images)
    result = accuracy(classifier, noise.on_layers(chosen), pixels, labels, repeats=repeats, seed=seed)
    return pd.DataFrame(
        [{"accuracy": result.accuracy, "stderr": result.stderr, "noise_free": result.noise_free}]
    )


@experiment("aware")
def noise_aware_accuracy(
    *,
    seed: int,
    trained_with: str = "none",
    intensity: float = 0.3,
    epochs: int = 3,
    train_size: int = 20_000,
    images: int = 500,
    repeats: int = 50,
) -> pd.DataFrame:
    """Noise-aware training (docs/THEORY.md section 7): a 784-100-100-10 sigmoid classifier trained
    (:func:`noiseprop.train`, ``epochs`` over the first ``train_size`` training images, seed
    ``seed``) with noise of kind ``trained_with`` at ``intensity`` on every layer, or without
    (``"none"``: the control, trained alike), then its simulated accuracy under each kind of noise
    at that intensity on every layer. One row per kind tested: ``kind, accuracy, stderr,
    noise_free``."""
    from noiseprop.classification import accuracy
    from noiseprop.noise import KINDS, Noise
    from noiseprop.training import TrainConfig, train

    check_choice("trained_with", trained_with, ("none", *KINDS))
    training_noise = None if trained_with == "none" else Noise(**{trained_with: intensity})
    config = TrainConfig(epochs=epochs, train_size=train_size, seed=seed, train_noise=training_noise)
    network = train(config)
    pixels, labels = _test_images(images)
    rows = []
    for kind in KINDS:
        result = accuracy(network, Noise(**{kind: intensity}), pixels, labels, repeats=repeats,
                          seed=seed)  # fmt: skip
        rows.append({"kind": kind, "accuracy": result.accuracy, "stderr": result.stderr,
                     "noise_free": result.noise_free})  # fmt: skip
    return pd.DataFrame(rows)
