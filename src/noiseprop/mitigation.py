"""Mitigating neuron noise by transforming the network (docs/THEORY.md section 7).

Each transform returns a new, ordinary :class:`~noiseprop.network.Network` computing the same noise-free
function, so :func:`~noiseprop.propagate`, :func:`~noiseprop.simulate` and
:func:`~noiseprop.accuracy` work on it unchanged; what was done is appended to
``network.metadata["mitigation"]``, a list of steps.

* :func:`pool`: every neuron of a hidden layer becomes ``P`` copies; the next layer averages them, so
  uncorrelated noise falls by ``P`` and correlated noise stays.
* :func:`add_ghosts`: one input-less "ghost" neuron per hidden layer feels the layer's correlated
  noise and subtracts it from the next layer's input: additive correlated noise cancels exactly.
* Noise-aware training, the third mitigation, is :func:`noiseprop.train` with
  ``TrainConfig(train_noise=...)`` (``noiseprop train --train-noise``).

:func:`assess` measures a network under noise (per-layer SNR and accuracy, predicted and simulated),
to put a network beside its mitigated version.

Both transforms rely on the noise model of docs/THEORY.md section 1 with noise injected *after*
the activation (the default). With ``injection="before"`` the shared noise passes through each neuron's
slope before it reaches the next layer, and the statements below hold to first order only (pooling) or
not at all (ghosts, see :func:`add_ghosts`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, Literal

import torch

from noiseprop._validation import check_finite, check_positive_int
from noiseprop.activations import Activation, Linear, ReLU, Sigmoid, Tanh
from noiseprop.analytic import propagate
from noiseprop.classification import Accuracy, accuracy
from noiseprop.montecarlo import simulate
from noiseprop.network import Layer, Network
from noiseprop.noise import NoiseSpec
from noiseprop.results import NoiseStatistics

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["Assessment", "add_ghosts", "assess", "ghost_bias", "pool"]

GHOST_SIGMOID_OUTPUT = 1e-4
"""Noise-free output ``s_g`` of a ghost neuron in a sigmoid layer with the default bias."""

_SEARCH = (-20.0, 20.0, 4001)
"""Grid of biases searched for the smallest ``|f(b)|`` of an activation with no closed form."""


# ------------------------------------------------------------------------------------ pooling
def pool(network: Network, factor: int, *, layers: Iterable[int] | None = None) -> Network:
    """Replace every neuron of the given hidden layers by ``factor`` copies (docs/THEORY.md section 7).

    Neuron ``i`` of layer ``n`` becomes copies ``i P .. i P + P - 1`` (``P = factor``) with the same
    incoming weights ``W^n_i`` and bias ``b^n_i``; every copy is a separate noisy device. The next
    layer's weight from each copy is the original outgoing weight divided by ``P``::

        x^{n+1}_j = sum_i sum_k (W^{n+1}_ji / P) y_ik + b^{n+1}_j

    Without noise ``y_ik = s_i`` and ``x^{n+1}_j`` is unchanged: the noise-free function is the same.
    With noise after the activation the next layer sees the average of the copies,
    ``(1/P) sum_k y_ik = s_i (1 + <xi_MU>_k + xi_MC) + <xi_AU>_k + xi_AC``, and an average of ``P``
    independent draws has ``1/P`` of their variance: in distribution, the pooled layer acts on the
    following layers exactly as the original layer with intensities ``D_AU / P``, ``D_MU / P``,
    ``D_AC``, ``D_MC``. Uncorrelated noise reaching the next layer falls by ``P``; correlated noise
    does not. (The pooled layer's own per-neuron variance is unchanged; with noise before the
    activation the copies average ``f(x + xi_k)`` and the ``1/P`` holds to first order.)

    The output layer is never pooled: its outputs are the result.

    Args:
        network: the network.
        factor: copies per neuron ``P``, an integer >= 1 (1 returns an equal copy).
        layers: 1-based hidden layers to pool, each in ``1..depth-1``; default all hidden layers.

    Returns:
        A new network whose pooled layers are ``P`` times wider; ``metadata["mitigation"]`` gains
        ``{"transform": "pool", "factor": P, "layers": [...]}``.

    Raises:
        ValueError: if ``factor`` is not an integer >= 1, ``layers`` names a layer outside
            ``1..depth-1``, or the network has no hidden layer.

    Example:
        A linear network with uncorrelated noise on its hidden layer: the output variance falls
        fourfold, the noise-free output is the same.

        >>> from noiseprop import Network, Noise, propagate
        >>> net = Network.random([3, 5, 2], "linear", seed=0)
        >>> pooled = pool(net, 4)
        >>> pooled.widths, pooled.metadata["mitigation"]
        ((20, 2), [{'transform': 'pool', 'factor': 4, 'layers': [1]}])
        >>> x = [0.1, 0.2, 0.3]
        >>> before = propagate(net, {1: Noise(AU=1e-2)}, x)[-1].layer_variance
        >>> after = propagate(pooled, {1: Noise(AU=1e-2)}, x)[-1].layer_variance
        >>> round(before / after, 9)
        4.0
    """
    if not isinstance(network, Network):
        raise TypeError(f"network must be a Network; got {type(network).__name__}.")
    factor = check_positive_int("factor", factor)
    chosen = _hidden_layers(network, layers)
    weights = [layer.weight for layer in network.layers]
    biases = [layer.bias for layer in network.layers]
    for number in chosen:
        index = number - 1
        weights[index] = weights[index].repeat_interleave(factor, dim=0)
        biases[index] = biases[index].repeat_interleave(factor)
        weights[index + 1] = weights[index + 1].repeat_interleave(factor, dim=1) / factor
    step = {"transform": "pool", "factor": factor, "layers": list(chosen)}
    return _rebuilt(network, weights, biases, step)


# ------------------------------------------------------------------------------ ghost neurons
def add_ghosts(
    network: Network,
    *,
    layers: Iterable[int] | None = None,
    bias: float | Literal["auto"] | Mapping[int, float] = "auto",
) -> Network:
    """Add one ghost neuron to each given hidden layer against its correlated noise (docs/THEORY.md 7).

    The ghost of layer ``n`` has no input (zero incoming weights) and bias ``b_g``, so its noise-free
    output is the constant ``s_g = f_n(b_g)``. Being a neuron of layer ``n`` it feels the layer's
    shared noise ``xi_AC``, ``xi_MC`` and noise of its own ``xi_AU_g``, ``xi_MU_g``::

        y_g = s_g (1 + xi_MU_g + xi_MC) + xi_AU_g + xi_AC

    It is connected to neuron ``j`` of layer ``n+1`` with weight ``-S_j``, ``S_j = sum_i W^{n+1}_ji``
    over the neurons ``i`` of layer ``n``, and ``j``'s bias gains ``S_j s_g``. Then::

        x^{n+1}_j = sum_i W_ji y_i - S_j y_g + b_j + S_j s_g
                  = sum_i W_ji s_i + b_j                          (noise-free: unchanged)
                    + sum_i W_ji (s_i (xi_MU_i + xi_MC) + xi_AU_i)
                    - S_j (s_g (xi_MU_g + xi_MC) + xi_AU_g)        (xi_AC: sum_i W_ji - S_j = 0)

    Additive correlated noise of layer ``n`` cancels exactly in layer ``n+1``'s input; the ghost adds
    its own uncorrelated noise, of variance ``S_j^2 (D_AU + s_g^2 D_MU)``. Multiplicative correlated
    noise does not cancel: it scales each neuron by its own signal, leaving
    ``(sum_i W_ji s_i - S_j s_g) xi_MC``; a small ``s_g`` keeps it close to the un-ghosted
    ``(sum_i W_ji s_i) xi_MC``. Pooling after adding ghosts (:func:`pool`) copies the ghosts too and so
    divides their own noise by the pooling factor.

    The cancellation needs noise injected after the activation. With ``injection="before"`` the ghost
    passes ``f'(b_g) xi_AC`` and neuron ``i`` passes ``f'(x_i) xi_AC``, which do not cancel (and the
    sigmoid default below has ``f'(b_g) ~ 1e-4``: the ghost then barely acts).

    Default bias (``bias="auto"``), chosen so that ``s_g`` is small, because multiplicative noise
    scales with ``s_g``, and finite: sigmoid ``b_g = centre - ln(1/s - 1)/gain`` with
    ``s = GHOST_SIGMOID_OUTPUT = 1e-4``; tanh and ReLU ``b_g = 0`` (``s_g = 0``); linear
    ``b_g = -offset/slope`` (``s_g = 0``; ``b_g = 0`` when the slope is 0); any other activation the
    ``b`` of smallest ``|f(b)|`` on a grid over ``[-20, 20]`` (see :func:`ghost_bias`).

    Args:
        network: the network.
        layers: 1-based hidden layers that get a ghost, each in ``1..depth-1``; default all hidden
            layers. The output layer has no next layer and gets none.
        bias: the ghost bias ``b_g``: ``"auto"`` (above), one number for every ghost, or
            ``{layer: number}`` for some layers (the others ``"auto"``). ``f_n(b_g)`` must be finite.

    Returns:
        A new network whose ghost layers have one more neuron (the last one);
        ``metadata["mitigation"]`` gains ``{"transform": "ghosts", "layers": [...], "bias": [b_g],
        "output": [s_g]}``.

    Raises:
        ValueError: if ``layers`` names a layer outside ``1..depth-1``, the network has no hidden
            layer, or ``bias`` is not finite or gives a non-finite ``s_g`` (the message names it).

    Example:
        Correlated additive noise on the hidden layer of a linear network no longer reaches the
        output; the noise-free output is the same:

        >>> from noiseprop import Network, Noise, propagate
        >>> net = Network.random([3, 5, 2], "linear", seed=0)
        >>> ghosted = add_ghosts(net)
        >>> ghosted.widths, ghosted.metadata["mitigation"][0]["output"]
        ((6, 2), [0.0])
        >>> x, noise = [0.1, 0.2, 0.3], {1: Noise(AC=1e-2)}
        >>> S = net.layers[1].weight.sum(dim=1)  # without ghost: Var x_j = S_j^2 D_AC
        >>> before = propagate(net, noise, x)[-1].variance[0]
        >>> [round(v, 6) for v in before.tolist()], [round(v, 6) for v in (1e-2 * S**2).tolist()]
        ([0.027877, 0.004849], [0.027877, 0.004849])
        >>> after = propagate(ghosted, noise, x)[-1].variance[0]
        >>> bool(after.abs().max() < 1e-18)
        True
    """
    if not isinstance(network, Network):
        raise TypeError(f"network must be a Network; got {type(network).__name__}.")
    chosen = _hidden_layers(network, layers)
    biases_given = _ghost_biases(bias, chosen)
    weights = [layer.weight for layer in network.layers]
    biases = [layer.bias for layer in network.layers]
    used_bias, outputs = [], []
    for number in chosen:
        index = number - 1
        activation = network.layers[index].activation
        value = biases_given[number]
        name = f"bias[{number}]" if isinstance(bias, Mapping) else "bias"
        b_g = ghost_bias(activation) if value == "auto" else check_finite(name, value)
        s_g = float(activation(torch.tensor(b_g, dtype=torch.float64)))
        if not math.isfinite(s_g):
            raise ValueError(
                f"{name} must give the ghost of layer {number} a finite output f({b_g:g}); got "
                f"{s_g} from {activation}."
            )
        weight, next_weight = weights[index], weights[index + 1]
        weights[index] = torch.cat([weight, weight.new_zeros(1, weight.shape[1])])
        biases[index] = torch.cat([biases[index], biases[index].new_tensor([b_g])])
        total = next_weight.sum(dim=1)  # S_j = sum_i W^{n+1}_ji
        weights[index + 1] = torch.cat([next_weight, -total.unsqueeze(1)], dim=1)
        biases[index + 1] = biases[index + 1] + total * s_g
        used_bias.append(b_g)
        outputs.append(s_g)
    step = {"transform": "ghosts", "layers": list(chosen), "bias": used_bias, "output": outputs}
    return _rebuilt(network, weights, biases, step)


def ghost_bias(activation: Activation) -> float:
    """The default ghost bias ``b_g`` for an activation: ``f(b_g)`` small and finite.

    Sigmoid: ``f(b_g) = GHOST_SIGMOID_OUTPUT`` (``1e-4``); tanh, ReLU and linear (slope != 0):
    ``f(b_g) = 0``; other activations: the first ``b`` of smallest ``|f(b)|`` on 4001 points from
    -20 to 20.

    Example:
        >>> from noiseprop import Linear, Sigmoid
        >>> round(ghost_bias(Sigmoid()), 6), ghost_bias(Linear(slope=2.0, offset=1.0))
        (-9.21024, -0.5)
    """
    if isinstance(activation, Sigmoid):
        return activation.centre - math.log(1 / GHOST_SIGMOID_OUTPUT - 1) / activation.gain
    if isinstance(activation, (Tanh, ReLU)):
        return 0.0
    if isinstance(activation, Linear):
        return -activation.offset / activation.slope if activation.slope else 0.0
    if not isinstance(activation, Activation):
        raise TypeError(f"activation must be an Activation; got {type(activation).__name__}.")
    grid = torch.linspace(*_SEARCH, dtype=torch.float64)
    size = activation(grid).abs()
    size = torch.where(torch.isfinite(size), size, torch.inf)
    if not torch.isfinite(size).any():
        raise ValueError(
            f"activation {activation} has no finite output on [{_SEARCH[0]:g}, {_SEARCH[1]:g}]; "
            "give the ghost bias explicitly (bias=...)."
        )
    return float(grid[int(size.argmin())])


# ---------------------------------------------------------------------------------- assessment
@dataclass(frozen=True, kw_only=True, eq=False)
class Assessment:
    """How one network fares under one noise, predicted and simulated.

    Attributes:
        predicted: per-layer statistics from the covariance method (docs/THEORY.md section 3).
        simulated: per-layer statistics from Monte Carlo.
        predicted_accuracy: accuracy from the Gaussian output (:func:`noiseprop.accuracy`).
        simulated_accuracy: accuracy from Monte Carlo.
    """

    predicted: NoiseStatistics
    simulated: NoiseStatistics
    predicted_accuracy: Accuracy
    simulated_accuracy: Accuracy

    def summary(self) -> pd.DataFrame:
        """One row per layer: ``layer``, ``neurons``, ``predicted_variance``, ``simulated_variance``,
        ``variance_stderr``, ``predicted_snr_db``, ``simulated_snr_db``; SNR = ``<mean^2> /
        <variance>`` over the layer's neurons and the inputs, in dB ``10 log10``."""
        predicted, simulated = self.predicted.summary(), self.simulated.summary()
        return predicted[["layer", "neurons"]].assign(
            predicted_variance=predicted["variance"],
            simulated_variance=simulated["variance"],
            variance_stderr=simulated["variance_stderr"],
            predicted_snr_db=predicted["snr_db"],
            simulated_snr_db=simulated["snr_db"],
        )


def assess(
    network: Network,
    noise: NoiseSpec,
    images: Any,
    labels: Any,
    *,
    repeats: int = 100,
    points: int | None = None,
    seed: int = 0,
    dtype: torch.dtype | str = "float32",
    progress: Callable[[str, int, int], None] | None = None,
) -> Assessment:
    """Per-layer noise and accuracy of a classifier under noise, predicted and simulated.

    Calls :func:`~noiseprop.propagate` (covariance method), :func:`~noiseprop.simulate` and
    :func:`~noiseprop.accuracy` (both methods) with the same noise, images and seed; see them for the
    definitions and standard errors.

    Args:
        network: a classifier (one output per class).
        noise: a noise specification (:mod:`noiseprop.noise`); mitigated networks keep the depth of
            the original, so the same specification serves both.
        images: ``(B, input_size)`` inputs.
        labels: ``(B,)`` integer classes.
        repeats: noise draws per image of both simulations (>= 2).
        points: quasi-random points per image of the accuracy prediction (default: that of
            :func:`~noiseprop.accuracy`).
        seed: seed of the simulations and of the prediction's scramblings.
        dtype: precision of the simulated networks.
        progress: called as ``progress(stage, done, total)`` as each of the three long stages goes
            on: ``"accuracy, montecarlo (images)"``, ``"noise per layer, simulated (repeats)"`` and
            ``"accuracy, predicted (images)"``.
    """

    def stage(name: str) -> Callable[[int, int], None] | None:
        return None if progress is None else partial(progress, name)

    options = {"repeats": repeats, "points": points, "seed": seed, "dtype": dtype}
    # accuracy() checks every argument before its work: errors come before the long computations
    simulated_accuracy = accuracy(
        network, noise, images, labels, method="montecarlo", progress=stage(_STAGES[0]), **options
    )
    simulated = simulate(
        network, noise, images, repeats=repeats, seed=seed, dtype=dtype, progress=stage(_STAGES[1])
    )
    predicted_accuracy = accuracy(
        network, noise, images, labels, method="predicted", progress=stage(_STAGES[2]), **options
    )
    return Assessment(
        predicted=propagate(network, noise, images, method="covariance"),
        simulated=simulated,
        predicted_accuracy=predicted_accuracy,
        simulated_accuracy=simulated_accuracy,
    )


_STAGES = (
    "accuracy, montecarlo (images)",
    "noise per layer, simulated (repeats)",
    "accuracy, predicted (images)",
)


# ------------------------------------------------------------------------------------ helpers
def _hidden_layers(network: Network, layers: Iterable[int] | None) -> tuple[int, ...]:
    """The 1-based hidden layers asked for (default all), sorted, each in ``1..depth-1``."""
    last = network.depth - 1
    if last < 1:
        raise ValueError(
            f"network must have a hidden layer to transform; got {network!r} (depth 1: only the "
            "output layer, whose outputs are the result)."
        )
    if layers is None:
        return tuple(range(1, last + 1))
    if isinstance(layers, (str, bytes)) or not isinstance(layers, Iterable):
        raise TypeError(
            f"layers must be hidden-layer numbers such as [1, 2] or None; got {type(layers).__name__} "
            f"{layers!r}."
        )
    chosen = set()
    for number in layers:
        if isinstance(number, bool) or not isinstance(number, int) or not 1 <= number <= last:
            raise ValueError(
                f"layers must be hidden-layer numbers from 1 to {last} (1-based; layer "
                f"{network.depth} is the output layer); got {number!r}."
            )
        chosen.add(number)
    if not chosen:
        raise ValueError(f"layers must list at least one hidden layer (1 to {last}); got none.")
    return tuple(sorted(chosen))


def _ghost_biases(bias: Any, chosen: tuple[int, ...]) -> dict[int, Any]:
    """``{layer: "auto" | number}`` for the chosen layers; the numbers are checked by the caller."""
    if isinstance(bias, Mapping):
        unknown = sorted(set(bias) - set(chosen), key=repr)
        if unknown:
            raise ValueError(
                f"bias keys must be layers that get a ghost ({list(chosen)}); got {unknown[0]!r}."
            )
        return {number: bias.get(number, "auto") for number in chosen}
    if isinstance(bias, str) and bias != "auto":
        raise ValueError(f"bias must be 'auto', a finite number or {{layer: number}}; got {bias!r}.")
    return dict.fromkeys(chosen, bias)


def _rebuilt(network: Network, weights: list, biases: list, step: dict[str, Any]) -> Network:
    """A new network with these weights and biases, the old activations and the step recorded."""
    metadata = dict(network.metadata)
    steps = metadata.get("mitigation", [])
    if not isinstance(steps, list):
        raise ValueError(
            f"network.metadata['mitigation'] must be a list of steps; got {type(steps).__name__}."
        )
    metadata["mitigation"] = [*steps, step]
    layers = tuple(
        Layer(weight, bias, layer.activation)
        for weight, bias, layer in zip(weights, biases, network.layers)
    )
    return Network(layers, metadata=metadata)
