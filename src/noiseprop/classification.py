"""Classification accuracy under noise: simulated, and predicted from the Gaussian output
(docs/THEORY.md section 6).

The network is a classifier: the last layer's ``K`` outputs are class scores and the predicted class is
their argmax. For an image of class ``c`` the prediction is right when ``y_c > y_k`` for every
``k != c``. Two ways to get the probability of that under noise:

* ``method="montecarlo"``: draw the noise, run the noisy network, count (:func:`accuracy`);
* ``method="predicted"``: by default (``predictor="moments"``) take the input of the last nonlinear
  layer as Gaussian, with the moments of docs/THEORY.md section 4, and integrate the rest of the
  network, its noise included, exactly at quasi-random points; with ``predictor="covariance"``
  take the outputs as Gaussian, with the noise-free output as mean and the first-order covariance of
  docs/THEORY.md section 3 (:func:`noiseprop.propagate`), and integrate that Gaussian over the
  region where class ``c`` wins, a ``(K-1)``-dimensional orthant.

:func:`noiseprop.curves.accuracy_curve` sweeps the intensity of each kind of noise.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from noiseprop._inputs import as_device, as_dtype
from noiseprop._recursion import covariance_recursion
from noiseprop._validation import (
    MAX_REPEATS,
    MAX_SEED,
    check_choice,
    check_nonnegative,
    check_positive_int,
)
from noiseprop.model_analytic import GaussianCut, gaussian_cut, linearised_model
from noiseprop.model_montecarlo import (
    as_model_inputs,
    evaluating,
    model_outputs,
    outputs_from_cut,
    runnable,
)
from noiseprop.moments import (
    bytes_per_input,
    conditional_moments,
    quadrature,
    resolve_nodes,
    uses_sobol,
)
from noiseprop.montecarlo import sample
from noiseprop.network import Network
from noiseprop.noise import Noise, NoiseSpec, per_layer
from noiseprop.sites import SiteSelector

__all__ = ["Accuracy", "accuracy"]

METHODS = ("montecarlo", "predicted")
PREDICTORS = ("covariance", "moments")
"""How ``method="predicted"`` integrates: with the first-order Gaussian logits, or beyond first
order (the default of :func:`accuracy`: Gaussian moments up to the last nonlinear layer's input,
exact after it)."""
ORTHANT_POINTS = 4096
"""Quasi-random points per image of a Gaussian orthant integral when none are given."""
SAMPLED_POINTS = 1024
"""Points per image when none are given and the layers after the last nonlinear one are sampled
(``predictor="moments"``): each image's points are its own, so the errors average out over the
images and fewer points reach the precision of the orthant integral's shared points."""
IMAGE_BLOCK = 32
"""Images per random stream of the simulation: the draws of block ``j`` (images ``32 j`` to
``32 j + 31``) come from their own seed, so no batching choice changes them."""
REPEAT_BLOCK = 256
"""Repeats per random stream of the simulation (bounds the memory of one noisy pass)."""
SCRAMBLINGS = 8
"""Independent scramblings of the Sobol points of the prediction (its error estimate)."""
ORTHANT_BLOCK = 2**19
"""Differences per block of the orthant integral (points x classes x images): 2 MiB in float32, a
block that stays in cache (10,000 MNIST images: 2^19 about 10-20 % faster than 2^18 and 2^20, 2^16
twice as slow: more blocks, more Python)."""
MAX_CUT_ELEMENTS = 512
"""Largest input of a model's last nonlinear site call (elements per image) that
``predictor="moments"`` takes as Gaussian: its covariance costs that many vector-Jacobian products
and ``n x n`` entries per image, and beyond a few hundred a simulation is cheaper."""


@dataclass(frozen=True, kw_only=True, eq=False, repr=False)
class Accuracy:
    """Accuracy of a classifier under noise.

    Attributes:
        accuracy: fraction of right predictions, averaged over the images and the noise.
        stderr: standard error of ``accuracy`` given the test images: sampling error of the noise
            draws (``montecarlo``) or numerical integration error (``predicted``); not the error
            from having a finite test set.
        noise_free: fraction of right predictions without noise (float64 pass).
        method: ``"montecarlo"`` or ``"predicted"``.
        repeats: noise draws per image (``None`` for ``predicted``).
        points: quasi-random points per image (``None`` for ``montecarlo``).
        per_image: ``(images,)`` float64 tensor: probability that each image is classified right
            (the fraction of right draws for ``montecarlo``).
        images: number of images.
        predictor: for ``predicted``, what the logits' distribution came from: ``"moments"``
            (beyond first order) or ``"covariance"`` (first order); ``None`` for ``montecarlo``.
    """

    accuracy: float
    stderr: float
    noise_free: float
    method: Literal["montecarlo", "predicted"]
    repeats: int | None
    points: int | None
    per_image: Tensor
    images: int
    predictor: Literal["moments", "covariance"] | None = None

    def __post_init__(self) -> None:
        check_choice("Accuracy.method", self.method, METHODS)
        if self.method == "predicted":
            check_choice("Accuracy.predictor", self.predictor, PREDICTORS)
        elif self.predictor is not None:
            raise ValueError(
                f"Accuracy.predictor must be None for method='montecarlo'; got {self.predictor!r}."
            )
        for name in ("accuracy", "noise_free"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
                raise ValueError(f"Accuracy.{name} must be a fraction in [0, 1]; got {value!r}.")
            object.__setattr__(self, name, float(value))
        object.__setattr__(self, "stderr", check_nonnegative("Accuracy.stderr", self.stderr))
        images = check_positive_int("Accuracy.images", self.images)
        simulated = self.method == "montecarlo"
        for name, wanted in (("repeats", simulated), ("points", not simulated)):
            value = getattr(self, name)
            if wanted:
                check_positive_int(f"Accuracy.{name}", value)
            elif value is not None:
                raise ValueError(
                    f"Accuracy.{name} must be None for method={self.method!r}; got {value!r}."
                )
        if not isinstance(self.per_image, Tensor) or tuple(self.per_image.shape) != (images,):
            raise ValueError(
                f"Accuracy.per_image must be a tensor of shape ({images},), one probability per "
                f"image; got {getattr(self.per_image, 'shape', type(self.per_image).__name__)}."
            )

    def __repr__(self) -> str:
        """One line: the accuracy ± its error, how it was found, over how many images."""
        how = (
            f"montecarlo, {self.repeats} repeats"
            if self.method == "montecarlo"
            else f"predicted ({self.predictor}), {self.points} points"
        )
        return (
            f"Accuracy({self.accuracy:.4%} ± {self.stderr:.2g}, noise-free {self.noise_free:.4%}; "
            f"{how}; {self.images} images)"
        )

    def as_dict(self) -> dict[str, object]:
        """Every field but ``per_image``, as plain Python values (for JSON and tables)."""
        return {
            "accuracy": self.accuracy,
            "stderr": self.stderr,
            "noise_free": self.noise_free,
            "method": self.method,
            "repeats": self.repeats,
            "points": self.points,
            "images": self.images,
            "predictor": self.predictor,
        }


def accuracy(
    network: Network | nn.Module,
    noise: NoiseSpec | Mapping[str, Noise],
    images: Any,
    labels: Any,
    *,
    sites: SiteSelector = None,
    method: Literal["montecarlo", "predicted"] = "montecarlo",
    predictor: Literal["moments", "covariance"] | None = None,
    repeats: int = 100,
    points: int | None = None,
    nodes: int | None = None,
    seed: int = 0,
    dtype: torch.dtype | str = "float32",
    device: str | torch.device = "cpu",
    batch_size: int = 256,
    progress: Callable[[int, int], None] | None = None,
) -> Accuracy:
    """Fraction of images classified right (argmax of the last layer = label) under noise.

    ``method="montecarlo"``: every image is presented ``repeats`` times with fresh noise
    (:func:`noiseprop.sample`); ``p_i = k_i / R`` is the fraction of its ``R`` draws classified right
    and the accuracy is ``A = (1/B) sum_i p_i`` over the ``B`` images. Given the images, the draws are
    independent Bernoulli trials, ``Var p_i = q_i (1 - q_i) / R`` with ``q_i`` the true probability,
    and ``E[p_i (1 - p_i)] = q_i (1 - q_i) (R - 1) / R``, so the unbiased estimate of ``Var A`` is::

        stderr^2 = (1/B^2) sum_i p_i (1 - p_i) / (R - 1)

    The draws depend on ``seed``, ``repeats``, ``dtype``, the device type and the order of the
    images, not on ``batch_size``: the images are simulated in blocks of :data:`IMAGE_BLOCK` and the
    repeats in blocks of :data:`REPEAT_BLOCK`, each block with its own seed
    ``SeedSequence([seed, image block, repeat block])``.

    ``method="predicted"``, ``predictor="moments"`` (the default; docs/THEORY.md section 6): the
    input ``u`` of the last nonlinear layer, a weighted sum over many noisy neurons, is taken as
    Gaussian with the moments of :mod:`noiseprop.moments` (given the correlated draws that something
    nonlinear bends before it, integrated at quadrature nodes); that layer and the affine ones after
    it are applied exactly, noise included, at ``points`` quasi-random points per image (each
    image's own: the shared Sobol points reflected by signs and shifted by a rotation of its own).
    The logits are not taken as Gaussian: behind a saturating layer, or with multiplicative noise of
    their own, they are not. Where every noise reaches ``u`` through affine maps (the shipped
    784-100-100-10 network, any kind or mix) this is exact up to the integration error. Where the
    outputs themselves are exactly Gaussian (every noise reaches them through affine maps and scales
    only noise-free signals) the orthant integral below is used, with the exact moments.

    ``predictor="covariance"`` (first order): the outputs ``y`` of an image are taken as Gaussian,
    mean the noise-free
    output ``m`` and covariance ``C`` the first-order covariance of docs/THEORY.md section 3
    (:func:`noiseprop.propagate`, ``method="covariance"``). For class ``c`` the differences
    ``d_k = y_c - y_k`` (``k != c``) are Gaussian with mean ``m_c - m_k`` and covariance
    ``S_kj = C_cc - C_cj - C_kc + C_kj``, and ``p_i = P(d > 0)``, a ``(K-1)``-dimensional orthant
    probability. It is integrated by randomised quasi-Monte Carlo: :data:`SCRAMBLINGS` independent
    scramblings of ``points / 8`` Sobol points ``u`` (``torch.quasirandom.SobolEngine``, seeds from
    ``seed``), ``z = Phi^-1(u)``, ``d = m_d + V sqrt(max(L, 0)) z`` with ``S = V L V^T`` (``eigh``, so
    singular ``S`` is fine: ``S = 0`` gives the indicator of the noise-free decision), ``p_i`` the
    fraction of points with every ``d_k > 0`` (``d_k >= 0`` for ``k > c``: a tie goes to the first
    class, as in argmax). Either way each scrambling gives an unbiased accuracy ``A_s``;
    the result is their mean and ``stderr`` their standard deviation over ``sqrt(8)``. An image's
    points depend on ``seed`` and its position, not on the batching, so neither does the result.

    Correlated multiplicative noise on the output layer, when it is the only noise there besides
    ``AC`` (injected after the activation), multiplies every output by the same ``1 + xi_MC``: the
    argmax is kept while ``1 + xi_MC > 0`` and becomes the argmin otherwise. That is used exactly:
    ``p_i = Phi(1/sqrt(D_MC)) P(y~_c largest) + Phi(-1/sqrt(D_MC)) P(y~_c smallest)``, ``y~`` the
    Gaussian outputs without it. (Taken as Gaussian, it would add ``D_MC m m^T`` to the covariance
    and predict errors that cannot happen.)

    Where the first-order Gaussian holds: the outputs are exactly Gaussian, with exactly the first-order
    covariance, when every map from the noise to the outputs is affine and multiplicative noise
    scales only noise-free signals, e.g. ``input -> sigmoid layer -> linear output (logits)`` with
    any noise on the hidden layer and additive noise on the output layer. It stays close for small
    noise through smooth activations. Where it breaks: noise that is large compared with the
    curvature of the activations. Saturating sigmoids shift the mean (``E[f(x + e)] != f(x)``) and
    compress the tails, which the first-order covariance ignores: behind a second sigmoid layer the
    prediction is optimistic (measured on a trained MNIST net: +1 % at an accuracy loss of 5 %,
    +14 % at large AU), and correlated noise pushed through saturating output sigmoids is
    overestimated (pessimistic, already -0.5 % at AC = 0.01). Multiplicative uncorrelated noise on
    the output layer multiplies Gaussian signals (skewed, heavy-tailed outputs); ReLU kinks cut
    the distribution. Check a prediction against ``method="montecarlo"`` before relying on it.

    Any classifier model: ``network`` may be any ``torch.nn.Module`` whose output is ``(B, K)``
    class scores, with its noise at ``sites`` (:mod:`noiseprop.sites`), run in eval mode. Its
    ``predictor="moments"`` takes the input of its last nonlinear site call (the cut,
    :func:`noiseprop.model_analytic.gaussian_cut`) as Gaussian with the first-order covariance of
    the noise before it, and runs the model from there on at the points, its noise included
    (:func:`_predicted_model_by_moments`); that is the default where the cut has at most
    :data:`MAX_CUT_ELEMENTS` elements per image. ``predictor="covariance"`` (the default otherwise,
    e.g. the shipped CNN, whose cut ``relu2`` has 1,024) takes the outputs as Gaussian with the
    covariance of the model's linearisation (:mod:`noiseprop.model_analytic`). A model whose
    layers after the cut use a value from before it (a skip connection around the cut) is refused
    by the first.

    Args:
        network: a classifier; its last layer has ``K`` outputs, one per class. Or any
            ``torch.nn.Module`` classifier.
        noise: a :class:`~noiseprop.noise.Noise` for every layer, one per layer, or
            ``{layer: Noise}`` (for a model: per site, or ``{site pattern: Noise}``).
        images: ``(B, input_size)`` inputs (for a model, a batch as the model takes it).
        sites: a model's noise sites (default: its activation modules); not for a network.
        labels: ``(B,)`` integer classes in ``[0, K)``.
        method: ``"montecarlo"`` (default) or ``"predicted"``.
        predictor: for ``"predicted"``: ``"moments"`` (beyond first order) or ``"covariance"``
            (first order), both described above; default ``"moments"``, for a model only where
            its cut is narrow enough (above). Measured on the shipped network
            (1,000 images, each kind alone at 0.01-1; README): moments within a few tenths of a
            point of simulation, first order off by up to 13 points.
        nodes: quadrature nodes over the correlated draws (``predictor="moments"``; default
            :func:`noiseprop.moments.default_nodes`).
        repeats: noise draws per image (``montecarlo``, >= 2).
        points: quasi-random points per image (``predicted``), a power of two >= 64; default
            :data:`SAMPLED_POINTS` where layers are sampled, :data:`ORTHANT_POINTS` for an orthant
            integral.
        seed: seed of the draws or of the scramblings (integer >= 0).
        dtype: ``"float32"`` or ``"float64"`` for the noisy passes (``montecarlo``); the prediction
            and the noise-free accuracy are always float64.
        device: where to compute.
        batch_size: images per call of :func:`noiseprop.propagate` and per noise-free pass; the
            prediction holds ``batch_size x sum_n N_n^2`` covariance entries at once. It does not
            change the result.
        progress: called as ``progress(images_done, images)`` as the work goes on.

    Returns:
        An :class:`Accuracy`.

    Raises:
        ValueError: for images that are not ``(B, input_size)``, labels that are not ``B``
            integers in ``[0, K)``, or a parameter out of range (the message names it).

    Example:
        One linear layer, two classes, ``y_0 = x + xi_0`` and ``y_1 = xi_1`` with ``Var xi = 0.5``:
        class 0 wins with probability ``Phi(x / sqrt(2 x 0.5)) = Phi(x)``:

        >>> from noiseprop import Layer, Network, Noise
        >>> net = Network((Layer([[1.0], [0.0]], [0.0, 0.0], "linear"),))
        >>> images, labels = [[-1.0], [1.0], [2.0]], [0, 0, 0]
        >>> predicted = accuracy(net, Noise(AU=0.5), images, labels, method="predicted")
        >>> [round(p, 2) for p in predicted.per_image.tolist()]  # Phi(-1), Phi(1), Phi(2)
        [0.16, 0.84, 0.98]
        >>> round(predicted.accuracy, 2), round(predicted.noise_free, 4)  # exact: 0.659083
        (0.66, 0.6667)
        >>> simulated = accuracy(net, Noise(AU=0.5), images, labels, repeats=10_000, seed=1)
        >>> abs(simulated.accuracy - 0.659083) < 4 * simulated.stderr
        True
    """
    if not isinstance(network, (Network, nn.Module)):
        raise TypeError(
            f"network must be a Network or a torch.nn.Module classifier; got {type(network).__name__}."
        )
    check_choice("method", method, METHODS)
    repeats = check_positive_int("repeats", repeats, minimum=2, maximum=MAX_REPEATS)
    if predictor is not None:
        check_choice("predictor", predictor, PREDICTORS)
    points = None if points is None else _check_points(points)
    seed = _check_seed(seed)
    dtype = as_dtype(dtype)
    device = as_device(device)
    batch_size = check_positive_int("batch_size", batch_size)
    if isinstance(network, nn.Module):
        if nodes is not None:
            raise ValueError(
                "nodes applies to a dense Network's moments predictor; a model's is not "
                "conditioned on correlated draws (leave nodes out)."
            )
        noises: Any = noise
        x = as_model_inputs(images, dtype=torch.float64, device=torch.device("cpu"))
        scores = model_outputs(network, x, dtype=dtype, device=device, batch_size=batch_size)
        if scores.ndim != 2:
            raise ValueError(
                "a classifier model must output (B, K) class scores; got output shape "
                f"{tuple(scores.shape)}."
            )
        classes = int(scores.shape[1])
        target = _check_labels(labels, len(x), classes)
        x, target = x.to(device), target.to(device)
        noise_free = float((scores.argmax(-1) == target).double().mean())
    else:
        _no_sites(sites)
        noises = per_layer(noise, network.depth)
        x, target = _check_data(network, images, labels)
        x, target = x.to(device), target.to(device)
        chunks = [
            (x[start : start + batch_size], target[start : start + batch_size])
            for start in range(0, len(x), batch_size)
        ]
        right = torch.cat(
            [network.forward(part)[-1][1].argmax(-1) == classes for part, classes in chunks]
        )
        noise_free = float(right.double().mean())
    if method == "montecarlo":
        per_image = _simulated(network, noises, x, target, repeats, seed, dtype, device, sites, progress)
        count = len(x)
        variance = (per_image * (1 - per_image)).sum() / (repeats - 1) / count**2
        return Accuracy(
            accuracy=float(per_image.mean()),
            stderr=math.sqrt(max(float(variance), 0.0)),
            noise_free=noise_free,
            method="montecarlo",
            repeats=repeats,
            points=None,
            per_image=per_image.cpu(),
            images=count,
        )
    nodes = None if nodes is None else check_positive_int("nodes", nodes)
    # (S, B): one row per scrambling
    if isinstance(network, nn.Module):
        cut = None
        if predictor != "covariance":  # beyond first order where the cut's covariance is affordable
            cut = gaussian_cut(network, noises, x[:1], sites=sites, device=device, moments=False)
            predictor = predictor or ("moments" if cut.elements <= MAX_CUT_ELEMENTS else "covariance")
        if predictor == "moments" and cut is not None:
            _check_cut(cut)
            points = points or SAMPLED_POINTS
            by_scrambling = _predicted_model_by_moments(
                network, noises, x, target, points, seed, sites, cut, progress
            )
        else:
            points = points or ORTHANT_POINTS
            by_scrambling = _predicted_model(
                network, noises, x, target, classes, points, seed, batch_size, sites, progress
            )
    elif (predictor or "moments") == "moments" and not _gaussian_logits(network, noises):
        predictor = "moments"
        points = points or SAMPLED_POINTS
        by_scrambling = _predicted_by_moments(network, noises, x, target, points, seed, nodes, progress)
    else:  # first order, or moments where the outputs are exactly Gaussian: the same orthant
        predictor = predictor or "moments"
        points = points or ORTHANT_POINTS
        by_scrambling = _predicted(network, noises, x, target, points, seed, batch_size, progress)
    totals = by_scrambling.mean(1)
    return Accuracy(
        accuracy=float(totals.mean()),
        stderr=float(totals.std()) / math.sqrt(SCRAMBLINGS),
        noise_free=noise_free,
        method="predicted",
        repeats=None,
        points=points,
        per_image=by_scrambling.mean(0).cpu(),
        images=len(x),
        predictor=predictor,
    )


# ------------------------------------------------------------------------------------ checks
def _check_data(network: Network, images: Any, labels: Any) -> tuple[Tensor, Tensor]:
    """``images`` as a float64 ``(B, input_size)`` tensor and ``labels`` as int64 ``(B,)``."""
    size, classes = network.input_size, network.widths[-1]
    try:
        x = torch.as_tensor(images).detach()
    except (TypeError, ValueError, RuntimeError) as error:
        raise TypeError(
            f"images must be an array of shape (B, {size}); got {type(images).__name__}."
        ) from error
    if x.ndim != 2 or x.shape[1] != size or x.shape[0] == 0:
        raise ValueError(
            f"images must have shape (B, {size}) with B >= 1 for this network; got shape "
            f"{tuple(x.shape)}."
        )
    if x.dtype in (torch.bool, torch.complex64, torch.complex128):
        raise TypeError(f"images must hold real numbers; got dtype {x.dtype}.")
    x = x.to(device="cpu", dtype=torch.float64)
    if not torch.isfinite(x).all():
        raise ValueError("images must be finite; got NaN or infinite values.")
    return x.contiguous(), _check_labels(labels, len(x), classes)


def _no_sites(sites: Any) -> None:
    if sites is not None:
        raise ValueError(
            "sites apply to a torch model; a Network's sites are its layers (choose the noisy ones "
            "with a noise mapping {layer: Noise})."
        )


def _check_labels(labels: Any, count: int, classes: int) -> Tensor:
    """``labels`` as int64 ``(count,)`` in ``[0, classes)``."""
    try:
        target = torch.as_tensor(labels).detach()
    except (TypeError, ValueError, RuntimeError) as error:
        raise TypeError(
            f"labels must be an array of {count} integers in [0, {classes}); got "
            f"{type(labels).__name__}."
        ) from error
    if target.ndim != 1 or target.shape[0] != count:
        raise ValueError(
            f"labels must have shape ({count},), one per image; got shape {tuple(target.shape)}."
        )
    if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
        raise TypeError(f"labels must be integers in [0, {classes}); got dtype {target.dtype}.")
    target = target.to(device="cpu", dtype=torch.int64)
    bad = torch.nonzero((target < 0) | (target >= classes)).flatten()
    if len(bad):
        first = int(bad[0])
        raise ValueError(
            f"labels must be integers in [0, {classes}) (one per output of the network); got "
            f"{int(target[first])} at index {first}."
        )
    return target


def _check_points(points: Any) -> int:
    points = check_positive_int("points", points, minimum=8 * SCRAMBLINGS)
    if points & (points - 1):
        raise ValueError(
            f"points must be a power of two >= {8 * SCRAMBLINGS} ({SCRAMBLINGS} scramblings of "
            f"points/{SCRAMBLINGS} Sobol points each); got {points}."
        )
    return points


def _check_seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an integer >= 0; got {type(seed).__name__} {seed!r}.")
    if not 0 <= seed <= MAX_SEED:
        raise ValueError(f"seed must be an integer from 0 to 2^63 - 1; got {seed!r}.")
    return int(seed)


def _advance(progress: Callable[[int, int], None] | None, done: int, total: int) -> None:
    if progress is not None:
        progress(done, total)


def _derived_seed(*entropy: int) -> int:
    """A 63-bit seed from ``SeedSequence(entropy)``: independent streams for distinct entropies."""
    state = np.random.SeedSequence(list(entropy)).generate_state(1, dtype=np.uint64)[0]
    return int(state) >> 1


# -------------------------------------------------------------------------------- simulation
def _simulated(
    network: Network | nn.Module,
    noises: Any,
    x: Tensor,
    target: Tensor,
    repeats: int,
    seed: int,
    dtype: torch.dtype,
    device: torch.device,
    sites: SiteSelector = None,
    progress: Callable[[int, int], None] | None = None,
) -> Tensor:
    """Per-image fraction of right draws, in blocks of ``IMAGE_BLOCK`` images x ``REPEAT_BLOCK``
    repeats, each block with its own seed."""
    right = torch.zeros(len(x), dtype=torch.float64, device=device)
    for block, start in enumerate(range(0, len(x), IMAGE_BLOCK)):
        stop = start + IMAGE_BLOCK
        for part, first in enumerate(range(0, repeats, REPEAT_BLOCK)):
            outputs = sample(
                network,
                noises,
                x[start:stop],
                repeats=min(REPEAT_BLOCK, repeats - first),
                seed=_derived_seed(seed, block, part),
                dtype=dtype,
                device=device,
                sites=sites,
            )
            right[start:stop] += (outputs.argmax(-1) == target[start:stop]).sum(0)
        _advance(progress, min(stop, len(x)), len(x))
    return right / repeats


# -------------------------------------------------------------------------------- prediction
def _predicted(
    network: Network,
    noises: tuple[Noise, ...],
    x: Tensor,
    target: Tensor,
    points: int,
    seed: int,
    batch_size: int,
    progress: Callable[[int, int], None] | None = None,
) -> Tensor:
    """``(SCRAMBLINGS, B)`` probability that each image is classified right, one row per
    scrambling of the Sobol points: the orthant integral of the first-order Gaussian outputs."""
    normals = _orthant_normals(network.widths[-1], points, seed, x.device)
    if normals is None:  # one class: always right
        return torch.ones(SCRAMBLINGS, len(x), dtype=torch.float64, device=x.device)
    last = noises[-1]
    rescaled = last.MC > 0 and last.AU == 0 and last.MU == 0 and last.injection == "after"
    if rescaled:  # y = y~ (1 + xi_MC) + xi_AC: handled exactly, see accuracy()
        noises = (*noises[:-1], replace(last, MC=0.0))
        flipped = 0.5 * math.erfc(1 / math.sqrt(2 * last.MC))  # P(1 + xi_MC < 0)
    parts = []
    last_layer = frozenset({network.depth - 1})  # the outputs' covariance only (no other C formed)
    for start in range(0, len(x), batch_size):
        chunk, labels = x[start : start + batch_size], target[start : start + batch_size]
        output = covariance_recursion(network, noises, chunk, last_layer, max_memory=2**29)[-1]
        right = _orthant(output.mean, output.covariance, labels, normals)
        if rescaled:
            lowest = _orthant(-output.mean, output.covariance, labels, normals)
            right = ((1 - flipped) * right + flipped * lowest).clamp_(0, 1)
        parts.append(right)
        _advance(progress, start + len(chunk), len(x))
    return torch.cat(parts, dim=1)


def _predicted_model(
    model: nn.Module,
    noise: Any,
    x: Tensor,
    target: Tensor,
    classes: int,
    points: int,
    seed: int,
    batch_size: int,
    sites: SiteSelector,
    progress: Callable[[int, int], None] | None = None,
) -> Tensor:
    """A torch model's first-order prediction: its outputs Gaussian with the noise-free output as
    mean and the covariance of its linearisation (:mod:`noiseprop.model_analytic`), integrated over
    the orthant where class ``c`` wins, as for a network."""
    normals = _orthant_normals(classes, points, seed, x.device)
    if normals is None:  # one class: always right
        return torch.ones(SCRAMBLINGS, len(x), dtype=torch.float64, device=x.device)
    model = runnable(model, dtype=torch.float64, device=x.device)  # once, not per chunk
    parts = []
    for start in range(0, len(x), batch_size):
        chunk, labels = x[start : start + batch_size], target[start : start + batch_size]
        statistics = linearised_model(
            model, noise, chunk, sites=sites, site_variances=False, device=x.device
        )[0]
        output = statistics[-1]
        parts.append(_orthant(output.mean, output.covariance, labels, normals))
        _advance(progress, start + len(chunk), len(x))
    return torch.cat(parts, dim=1)


def _check_cut(cut: GaussianCut) -> None:
    if cut.elements > MAX_CUT_ELEMENTS:
        raise ValueError(
            f"predictor='moments' takes the input of the model's last nonlinear site call "
            f"({cut.name!r}) as Gaussian, and that input has {cut.elements:,} elements per image, more "
            f"than {MAX_CUT_ELEMENTS}: its covariance would cost more than a simulation. Use "
            "predictor='covariance' (first order) or method='montecarlo'."
        )


def _predicted_model_by_moments(
    model: nn.Module,
    noise: Any,
    x: Tensor,
    target: Tensor,
    points: int,
    seed: int,
    sites: SiteSelector,
    cut: GaussianCut,
    progress: Callable[[int, int], None] | None = None,
) -> Tensor:
    """A torch model's prediction beyond first order: Gaussian where it holds, exact after it.

    The input ``u`` of the model's last nonlinear site call (the cut, :func:`gaussian_cut`) sums
    the noise of the calls before it; it is taken as Gaussian, ``N(m, C)`` with the noise-free
    ``m`` and the first-order ``C = J Cov(delta) J^T``, and from ``u`` on the model runs as it is,
    the noise of the cut and of every later call drawn afresh, at ``points`` points per image::

        p_i = E[ 1{argmax y = c} ],   u = m + R (s_i * z),   R R^T = C

    with ``z`` scrambled Sobol normals (``points / 8`` per scrambling, each scrambling its own) and
    ``s_i`` signs of image ``i``'s own. Exact up to the integration error where every noise before
    the cut reaches it through affine maps and multiplicative noise scales noise-free signals (a
    model's last hidden layer fed by one noisy layer); first order before the cut otherwise. The
    images go in chunks fixed by the model's shapes and ``points`` (not by ``batch_size``), and the
    draws of chunk ``j`` and scrambling ``s`` come from their own seed, so the result depends on
    ``seed`` and the order of the images only.
    """
    model = runnable(model, dtype=torch.float64, device=x.device)
    count = points // SCRAMBLINGS
    elements = cut.elements
    per_image = 8 * (2 * elements * elements + count * (elements + 2 * cut.tail_elements))
    chunk = max(2, min(256, 2**25 // per_image))
    shape = tuple(cut.mean.shape[1:])
    normals = [
        _sobol_normals(elements, count, _derived_seed(seed, index)).to(x.device)
        for index in range(SCRAMBLINGS)
    ]
    signs = [
        torch.randint(0, 2, (len(x), elements), generator=torch.Generator().manual_seed(
            _derived_seed(seed, 100 + index))).double().mul_(2).sub_(1).to(x.device)
        for index in range(SCRAMBLINGS)
    ]  # fmt: skip
    parts = []
    with evaluating(model), torch.no_grad():
        for start in range(0, len(x), chunk):
            images, labels = x[start : start + chunk], target[start : start + chunk]
            found = gaussian_cut(model, noise, images, sites=sites, device=x.device)
            mean = found.mean.reshape(len(images), 1, elements)
            root = None if found.covariance is None else _root(found.covariance)
            right = torch.zeros(SCRAMBLINGS, len(images), dtype=torch.float64, device=x.device)
            for index in range(SCRAMBLINGS):
                values = mean.expand(-1, count, -1)
                if root is not None:  # u = m + R (s z): (b, P, n)
                    turned = normals[index] * signs[index][start : start + len(images), None, :]
                    values = mean + turned @ root.mT
                generator = torch.Generator(device=x.device).manual_seed(
                    _derived_seed(seed, 200 + index, start)
                )
                outputs = outputs_from_cut(
                    model, noise, images, values.reshape(len(images), count, *shape),
                    calls=found.calls, position=found.position, sites=sites, generator=generator,
                )  # fmt: skip
                scores = outputs.reshape(len(images), count, -1)
                right[index] = (scores.argmax(-1) == labels.unsqueeze(-1)).double().mean(-1)
            parts.append(right)
            _advance(progress, start + len(images), len(x))
    return torch.cat(parts, dim=1)


def _predicted_by_moments(
    network: Network,
    noises: tuple[Noise, ...],
    x: Tensor,
    target: Tensor,
    points: int,
    seed: int,
    nodes: int | None,
    progress: Callable[[int, int], None] | None = None,
) -> Tensor:
    """Gaussian where it holds, exact after it (docs/THEORY.md section 6).

    Let ``t`` be the last layer with a nonlinear activation. Its weighted input ``u = W_t y + b``
    is a weighted sum over many noisy neurons and is taken as Gaussian, with the moments of
    :mod:`noiseprop.moments` (given the head's correlated draws ``z`` at quadrature nodes ``q``);
    from ``u`` on, layer ``t`` and the affine layers after it are applied exactly, noise included,
    at quasi-random points ``(u, noise)``::

        p_i = sum_q w_q  E[ 1{argmax y = c} | u ~ N(mu_q, C_q) ]

    The logits themselves are not taken as Gaussian: behind a saturating layer they are not (large
    uncorrelated noise), nor are outputs with multiplicative noise of their own. ``u`` is exactly
    Gaussian given the conditioned draws when every noise before it reaches it through affine maps
    (e.g. one hidden layer before ``t`` fed by noise-free inputs: then ``p_i`` is exact up to the
    integration error). Correlated draws of the head are conditioned on only where something
    nonlinear acts on them before ``u`` (:func:`_head_pairs`); those of layer ``t`` and later are
    part of the sampled points.

    Each of the :data:`SCRAMBLINGS` rows is an independent estimate (its own scrambled Sobol
    points, ``points / 8`` per image, shared out over the nodes; with Sobol nodes over the head's
    draws, its own node set too), so their spread, the reported ``stderr``, includes every
    integration error.
    """
    nonlinear = [index for index, layer in enumerate(network.layers) if not layer.activation.linear]
    last = nonlinear[-1] if nonlinear else 0
    pairs = [] if nodes == 1 else _head_pairs(network, noises, last)
    nodes = resolve_nodes(noises[:last], len(pairs), nodes)
    independent = uses_sobol(len(pairs), nodes)
    count = len(quadrature(len(pairs), nodes, seed)[1]) if last else 1
    node_sets = (
        [(max(2, count // SCRAMBLINGS), _derived_seed(seed, 1_000 + index))
         for index in range(SCRAMBLINGS)]
        if independent else [(nodes, seed)]
    )  # fmt: skip
    sets = [
        _Points.draw(network.widths[last:], len(x), points // SCRAMBLINGS, _derived_seed(seed, index))
        for index in range(SCRAMBLINGS)
    ]
    head = Network(network.layers[:last]) if last else None
    layer = network.layers[last]
    weight, bias = layer.weight.to(x.device), layer.bias.to(x.device)
    per_input = max(points // SCRAMBLINGS * max(network.widths) * 8 * 4,
                    bytes_per_input(head, noises[:last], count, pairs=pairs) if head else 0)  # fmt: skip
    chunk = max(1, 2**27 // per_input)
    parts = []
    for start in range(0, len(x), chunk):
        images, labels = x[start : start + chunk], target[start : start + chunk]
        right = torch.zeros(SCRAMBLINGS, len(images), dtype=torch.float64, device=x.device)
        for set_index, (set_nodes, set_seed) in enumerate(node_sets):
            rows = [set_index] if independent else list(range(SCRAMBLINGS))
            if head is None:  # u = W_1 x + b_1: noise-free
                weights = torch.ones(1, dtype=torch.float64, device=x.device)
                means, covariances = (images @ weight.T + bias).unsqueeze(0), None
            else:
                given = conditional_moments(
                    head, noises[:last], images, nodes=set_nodes, seed=set_seed, full=False,
                    output_covariance=True, pairs=pairs,
                )  # fmt: skip
                weights = given.weights
                means = given.means[-1] @ weight.T + bias
                below = given.covariances[-1]
                covariances = None if below is None else weight @ below @ weight.T
            # the points are shared out over the nodes (a power-of-two prefix of a scrambled
            # Sobol sequence is itself balanced): the cost stays that of about one node
            share = max(8, 2 ** int(math.log2(max(1, points // SCRAMBLINGS // len(weights)))))
            chosen = {row: sets[row].of(start, start + len(images), share) for row in rows}
            for node, node_weight in enumerate(weights.tolist()):
                # the points in float32, as a simulation runs (the error is that of the points)
                root = None if covariances is None else _root(covariances[node]).float()
                for row in rows:
                    right[row] += node_weight * _wins_after(
                        network, noises, last, means[node].float(), root, labels, *chosen[row]
                    )
        parts.append(right.clamp_(0, 1))
        _advance(progress, start + len(images), len(x))
    return torch.cat(parts, dim=1)


def _gaussian_logits(network: Network, noises: tuple[Noise, ...]) -> bool:
    """Whether the outputs are exactly Gaussian, with the first-order mean and covariance: every
    noise reaches them through affine maps and multiplies only noise-free signals
    (``s (1 + xi_MU + c_MC) + xi_AU + c_AC`` with a noise-free ``s`` is Gaussian). The orthant
    integral of that Gaussian is then the exact answer, in ``K - 1`` dimensions."""
    for index, noise in enumerate(noises):
        if noise.is_zero:
            continue
        layer = network.layers[index]
        if any(not step.activation.linear for step in network.layers[index + 1 :]):
            return False
        if noise.injection == "before" and not layer.activation.linear:
            return False
        noisy_signal = any(not earlier.is_zero for earlier in noises[:index])
        if noisy_signal and (noise.has("MU") or noise.has("MC")):
            return False
    return True


def _head_pairs(network: Network, noises: tuple[Noise, ...], last: int) -> list[tuple[int, str]]:
    """The correlated draws before layer ``last`` that reach its weighted input other than
    through affine maps, so that the input is Gaussian only given them: a draw bent by a nonlinear
    activation before ``last`` (a later layer's, or its own with injection before it), or a
    multiplicative draw that scales a signal already noisy (``(1 + c) (s + e)`` is not Gaussian;
    ``s (1 + c + xi)`` with a noise-free ``s`` is)."""
    pairs = []
    for index, noise in enumerate(noises[:last]):
        layer = network.layers[index]
        bent = any(not step.activation.linear for step in network.layers[index + 1 : last]) or (
            noise.injection == "before" and not layer.activation.linear
        )
        noisy_signal = any(not earlier.is_zero for earlier in noises[:index])
        for kind in ("MC", "AC"):
            if noise.has(kind) and (bent or (kind == "MC" and noisy_signal)):
                pairs.append((index, kind))
    return pairs


def _root(covariance: Tensor) -> Tensor:
    """``R`` with ``R R^T = covariance`` (``(b, N, N)``, positive semi-definite): the Cholesky
    factor, or, where that fails (a singular covariance, e.g. correlated noise alone), the principal
    directions scaled by their standard deviations (``eigh``)."""
    symmetric = (covariance + covariance.mT) / 2
    scale = symmetric.diagonal(dim1=-2, dim2=-1).amax(-1).clamp_min(1e-300)
    jitter = torch.diag_embed((1e-12 * scale).unsqueeze(-1).expand(symmetric.shape[:-1]))
    root, info = torch.linalg.cholesky_ex(symmetric + jitter)  # a variance error of 1e-12 at most
    failed = (info != 0).nonzero().flatten()
    if len(failed):
        eigenvalues, vectors = torch.linalg.eigh(symmetric[failed])
        root[failed] = vectors * eigenvalues.clamp_min(0).sqrt().unsqueeze(-2)
    return root


@dataclass(frozen=True)
class _Points:
    """One scrambling's points for the layers from the last nonlinear one on, and what makes them
    each image's own.

    Every point has, per layer from ``t`` on, two shared coordinates (the ``MC`` and ``AC`` draws),
    first, where Sobol points are best spread; then ``N_t`` for ``u``; then ``N_n`` per layer for the
    uncorrelated noise. Image ``i`` rotates the shared coordinates by a uniform shift of its own
    (``v -> frac(v + r_i)`` before ``Phi^-1``) and multiplies the others by signs of its own
    (``z -> s_i z``): both keep the law and the balance of the points, and make the integration
    errors of different images independent, so that they average out over the images instead of
    adding up (a few shared coordinates would otherwise bias every image alike).
    """

    shared: Tensor  # (P, S) uniforms, float64 (rotated per image before Phi^-1)
    normals: Tensor  # (P, M) standard normals, float32
    shifts: Tensor  # (images, S) uniforms, float64
    signs: Tensor  # (images, M) of +-1, float32

    @classmethod
    def draw(cls, widths: Sequence[int], images: int, count: int, seed: int) -> _Points:
        shared = 2 * len(widths)
        rest = widths[0] + sum(widths)
        engine = torch.quasirandom.SobolEngine(min(shared + rest, 1_000), scramble=True, seed=seed)
        uniform = engine.draw(count, dtype=torch.float64) + 2.0**-31
        generator = torch.Generator().manual_seed(seed)
        if shared + rest > uniform.shape[1]:  # beyond 1,000 coordinates: pseudo-random ones
            more = torch.rand(count, shared + rest - uniform.shape[1], dtype=torch.float64,
                              generator=generator).clamp_(2.0**-53, 1 - 2.0**-53)  # fmt: skip
            uniform = torch.cat([uniform, more], dim=1)
        shifts = torch.rand(images, shared, dtype=torch.float64, generator=generator)
        signs = torch.randint(0, 2, (images, rest), generator=generator).float().mul_(2).sub_(1)
        normals = torch.special.ndtri(uniform[:, shared:]).float()
        return cls(uniform[:, :shared], normals, shifts, signs)

    def of(self, start: int, stop: int, count: int) -> tuple[Tensor, Tensor, Tensor]:
        """Images ``start:stop``, the first ``count`` points: ``(shared (b, P, S) normals, normals
        (P, M), signs (b, M))``, float32."""
        moved = torch.frac(self.shared[:count] + self.shifts[start:stop, None, :])
        shared = torch.special.ndtri(moved.clamp_(2.0**-53, 1 - 2.0**-53))
        return shared.float(), self.normals[:count], self.signs[start:stop]


def _wins_after(
    network: Network,
    noises: tuple[Noise, ...],
    last: int,
    mean: Tensor,
    root: Tensor | None,
    target: Tensor,
    shared: Tensor,
    normals: Tensor,
    signs: Tensor,
) -> Tensor:
    """``(b,)`` fraction of the points (:class:`_Points`) at which class ``target`` wins: the
    weighted input of layer ``last`` drawn as ``u = mean + R z`` (:func:`_root`; ``root=None``:
    ``u`` is noise-free), then the layers from ``last`` on with their noise."""
    width = mean.shape[-1]
    value = mean.unsqueeze(1)  # (b, 1, N): one point while u is noise-free
    if root is not None:
        flipped = root * signs[:, :width].unsqueeze(-2)  # R diag(s): the signs on z
        points = normals[:, :width].expand(len(value), -1, -1)
        value = torch.baddbmm(value, points, flipped.mT)  # (b, P, N)
    column = width
    for step, index in enumerate(range(last, network.depth)):
        layer, noise = network.layers[index], noises[index]
        draws = shared[..., 2 * step], shared[..., 2 * step + 1]  # (b, P) each: c_MC, c_AC
        if index > last:
            value = value @ layer.weight.T.to(value) + layer.bias.to(value)
        if noise.injection == "before":
            value = _noisy(value, noise, normals, signs, column, draws)
            value = layer.activation(value)
        else:
            value = layer.activation(value)
            value = _noisy(value, noise, normals, signs, column, draws)
        column += value.shape[-1]
    wins = value.argmax(-1) == target.unsqueeze(-1)  # (b, P) or (b, 1)
    return wins.double().mean(-1)


def _noisy(
    value: Tensor,
    noise: Noise,
    normals: Tensor,
    signs: Tensor,
    column: int,
    draws: tuple[Tensor, Tensor],
) -> Tensor:
    """``v (1 + xi_MU + c_MC) + xi_AU + c_AC`` (docs/THEORY.md section 1) at the points: the two
    uncorrelated kinds as one Gaussian per neuron, ``sqrt(D_MU v^2 + D_AU) eta`` (the same law),
    ``eta`` from the ``N`` coordinates from ``column`` on (each image's ``signs`` on them); the
    correlated ones from ``draws``."""
    if noise.is_zero:
        return value
    own = slice(column, column + value.shape[-1])
    result = value  # (b, 1, N) while noise-free so far: the noise broadcasts it to (b, P, N)
    if noise.has("MU"):
        spread = value.square().mul_(noise.MU).add_(noise.AU).sqrt_()
        result = result + spread * normals[:, own] * signs[:, None, own]
    elif noise.has("AU"):
        result = torch.addcmul(result, normals[:, own] * math.sqrt(noise.AU), signs[:, None, own])
    gain, offset = draws
    if noise.has("MC"):
        result = torch.addcmul(result, value, gain.unsqueeze(-1), value=math.sqrt(noise.MC))
    if noise.has("AC"):
        result = torch.add(result, offset.unsqueeze(-1), alpha=math.sqrt(noise.AC))
    return result


def _orthant_normals(classes: int, points: int, seed: int, device: torch.device) -> list[Tensor] | None:
    """The normals of the orthant integral, one set of ``points / 8`` per scrambling, over the
    ``classes - 1`` differences; ``None`` for one class (nothing to integrate)."""
    if classes == 1:
        return None
    return [
        _sobol_normals(classes - 1, points // SCRAMBLINGS, _derived_seed(seed, index)).to(device)
        for index in range(SCRAMBLINGS)
    ]


def _sobol_normals(dimension: int, count: int, seed: int) -> Tensor:
    """``count`` scrambled Sobol points mapped to standard normals, ``(count, dimension)``.

    The points are multiples of ``2^-30``; adding ``2^-31`` centres them in their cells, so that
    none is 0 or 1 and ``Phi^-1`` stays finite.
    """
    engine = torch.quasirandom.SobolEngine(dimension, scramble=True, seed=seed)
    uniform = engine.draw(count, dtype=torch.float64) + 2.0**-31
    return torch.special.ndtri(uniform)


def _orthant(mean: Tensor, covariance: Tensor, target: Tensor, normals: Sequence[Tensor]) -> Tensor:
    """``P(y_c > y_k for all k != c)`` for Gaussian ``y ~ N(mean, covariance)``, ``c = target``,
    once per set of ``normals``: ``(len(normals), b)``."""
    batch, classes = mean.shape
    rows = torch.arange(batch, device=mean.device)
    steps = torch.arange(classes - 1, device=mean.device).expand(batch, -1)
    others = steps + (steps >= target.unsqueeze(-1)).long()  # (b, K-1): every class but c
    shift = mean.gather(1, target.unsqueeze(-1)) - mean.gather(1, others)
    c_cc = covariance[rows, target, target]
    c_cj = covariance[rows, target, :]
    c_kc = covariance[rows, :, target]
    full = c_cc[:, None, None] - c_cj[:, None, :] - c_kc[:, :, None] + covariance
    spread = full.gather(1, others.unsqueeze(-1).expand(-1, -1, classes))
    spread = spread.gather(2, others.unsqueeze(1).expand(-1, classes - 1, -1))
    eigenvalues, vectors = torch.linalg.eigh((spread + spread.mT) / 2)
    root = vectors * eigenvalues.clamp_min(0).sqrt().unsqueeze(-2)  # root root^T = spread
    # |d_k - shift_k| = |root_k . z| <= |root_k| |z| = sqrt(S_kk) |z|: where that settles every d_k
    # for every point, the answer (all 1 or all 0) is known without drawing.
    radius = max(float(z.norm(dim=-1).max()) for z in normals)
    reach = root.norm(dim=-1) * radius * (1 + 1e-6)
    results = torch.where((shift > reach).all(-1), 1.0, 0.0).double().expand(len(normals), -1).clone()
    open_ = ((shift.abs() <= reach).any(-1) & (shift >= -reach).all(-1)).nonzero().flatten()
    if len(open_):
        # ties go to the first class: d_k >= 0 suffices for a later class k, d_k > 0 is needed for
        # an earlier one; adding the smallest normal number to a later class's shift makes both
        # "> 0" (it moves no shift of more than 1e-292)
        later = others[open_] > target[open_].unsqueeze(-1)
        shift = shift[open_] + later * torch.finfo(torch.float32).tiny
        # d = [z, 1] [root^T; shift]: the differences of a block of open images at every point in
        # one product of (points, K) by (K, (K - 1) x images), laid out so that the minimum over the
        # K - 1 differences runs along whole rows of images; blocks stay in cache
        root = root[open_]
        block = max(1, ORTHANT_BLOCK // (len(normals[0]) * (classes - 1)))
        lifted = [torch.cat([z, z.new_ones(len(z), 1)], dim=1).float() for z in normals]
        for start in range(0, len(open_), block):
            stop = min(start + block, len(open_))
            factors = (
                torch.cat([root[start:stop].permute(2, 1, 0), shift[start:stop].T.unsqueeze(0)])
                .flatten(1)
                .float()
            )  # (K, (K - 1) x images): column k x images + i
            for index, z in enumerate(lifted):
                differences = (z @ factors).view(len(z), classes - 1, stop - start)
                wins = differences.amin(1) > 0  # (points, images)
                results[index, open_[start:stop]] = wins.sum(0, dtype=torch.float64) / len(z)
    return results
