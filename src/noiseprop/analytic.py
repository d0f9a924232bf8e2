"""Analytic noise propagation: covariance recursion, mean-field rule, symmetric closed forms.

All three methods run in float64 on the device asked for and return a
:class:`~noiseprop.results.NoiseStatistics` whose ``mean`` is the noise-free output (to first order the
noise does not move the mean; exactly so for linear activations).

Injected noise (docs/THEORY.md section 1), applied to the covariance ``C`` of a signal whose
noise-free value is ``m``::

    inject(C, m) = C (1 + D_MC) + diag(diag(C)) D_MU + diag(D_AU + m^2 D_MU) + D_AC 11^T
                   + D_MC m m^T

With injection after the activation it acts on the outputs ``s``, before it on the weighted inputs
``x``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import torch
from torch import Tensor, nn

from noiseprop._inputs import as_inputs
from noiseprop._recursion import covariance_recursion
from noiseprop._validation import check_choice, check_positive_int
from noiseprop.moments import moments
from noiseprop.network import Network
from noiseprop.noise import Noise, NoiseSpec, per_layer
from noiseprop.results import LayerStatistics, NoiseStatistics
from noiseprop.sites import SiteSelector

__all__ = ["propagate"]

METHODS = ("covariance", "moments", "meanfield", "symmetric")


def propagate(
    network: Network | nn.Module,
    noise: NoiseSpec | Mapping[str, Noise],
    inputs: Any,
    *,
    sites: SiteSelector = None,
    method: Literal["covariance", "moments", "meanfield", "symmetric"] = "covariance",
    covariance: bool = False,
    device: str | torch.device = "cpu",
    max_memory: int = 2**29,
    nodes: int | None = None,
    seed: int = 0,
) -> NoiseStatistics:
    """Predict the mean, variance (and covariance) of every layer's noisy outputs.

    Any torch model: ``network`` may be any ``torch.nn.Module`` whose noise acts at its ``sites``
    (:mod:`noiseprop.sites`); ``method="covariance"`` then linearises it at the noise-free input by
    automatic differentiation (:mod:`noiseprop.model_analytic`, docs/THEORY.md section 8): every
    site's and the output's first-order per-element variance, named as :func:`noiseprop.simulate`
    names them, and with ``covariance`` the output's covariance. For a dense network converted with
    ``Network.to_torch()`` it equals the covariance method to rounding wherever multiplicative noise
    scales a noise-free signal; where it scales an already noisy one, the covariance method also
    keeps the product of the two noises (second order), which the linearisation leaves out.

    Args:
        network: the network, or any ``torch.nn.Module``.
        noise: a :class:`~noiseprop.noise.Noise` for every layer, one per layer, or
            ``{layer: Noise}`` (see :mod:`noiseprop.noise`); for a model, per site or
            ``{site pattern: Noise}``.
        inputs: ``(batch, input_size)`` noise-free inputs, one input vector, or one number fed to
            every input feature; for a model, a batch as the model takes it.
        sites: a model's noise sites (:func:`noiseprop.find_sites`; default every activation
            module); not for a network.
        method: ``"covariance"``: the first-order covariance recursion of docs/THEORY.md section 3,
            exact for linear activations; without ``covariance`` it forms no ``N x N`` matrix where
            its factored form is smaller (docs/THEORY.md section 3, "Computing it without ``N x N``
            matrices"). ``"meanfield"``: the scalar rule of docs/THEORY.md section 3,
            in which each layer's noise is a per-neuron variance plus a covariance shared by every pair
            of neurons, propagated with ``<W>`` and ``<W^2>``. ``"symmetric"``: the closed form of
            docs/THEORY.md section 2 for networks whose layers have one weight value and one bias value
            (exact for linear activations, linearised around the noise-free signal otherwise).
        covariance: also return every layer's ``(batch, N, N)`` covariance.
        device: where to compute.
        max_memory: bytes of working memory for the covariance and moments methods; inputs are
            processed in chunks that fit (default 512 MiB; the covariance method's chunks also keep
            their largest tensor within 4 MiB, which stays in cache).
        nodes: quadrature nodes over the correlated draws (``method="moments"``; default
            :func:`noiseprop.moments.default_nodes`, see :func:`noiseprop.moments.quadrature`).
            ``nodes=1`` conditions on no draw: every correlated noise is carried by its moments
            like the uncorrelated kinds, at the cost of one pass (on the shipped network with all
            four kinds at 1, the output variance comes out about 2 % low, against well under 1 %
            conditioned; ``tests/test_moments.py``).
        seed: seed of the Sobol scrambling when the correlated draws have too many dimensions for a
            product grid (``method="moments"``).

    Returns:
        A :class:`~noiseprop.results.NoiseStatistics`.

    Example:
        Linear symmetric network, slope 1, additive noise: variance grows as
        ``n (D_AC + D_AU/N)`` in the layer average, per neuron ``(n - 1)(D_AC + D_AU/N) + D_AC + D_AU``:

        >>> from noiseprop import Network, Noise
        >>> net = Network.symmetric(width=10, depth=3, activation="linear")
        >>> stats = propagate(net, Noise(AU=1e-3, AC=1e-4), 1.0)
        >>> [round(layer.layer_variance, 7) for layer in stats.layers]
        [0.0011, 0.0013, 0.0015]
    """
    check_choice("method", method, METHODS)
    if isinstance(network, nn.Module):
        if method != "covariance":
            raise ValueError(
                f"method={method!r} needs a dense Network; a torch model is linearised by "
                "automatic differentiation: method='covariance'."
            )
        from noiseprop.model_analytic import linearised_model

        return linearised_model(
            network, noise, inputs, sites=sites, device=device, covariance=covariance
        )[0]
    if not isinstance(network, Network):
        raise TypeError(f"network must be a Network or a torch.nn.Module; got {type(network).__name__}.")
    if sites is not None:
        raise ValueError("sites are for a torch model; a Network's noise is given per layer.")
    check_positive_int("max_memory", max_memory)
    noises = per_layer(noise, network.depth)
    x = as_inputs(inputs, network, dtype=torch.float64, device=device)
    if method == "symmetric":
        layers = _symmetric(network, noises, x, covariance)
    elif method == "meanfield":
        layers = _meanfield(network, noises, x, covariance)
    elif method == "moments":
        nodes = None if nodes is None else check_positive_int("nodes", nodes)
        layers = moments(
            network, noises, x, covariance=covariance, nodes=nodes, seed=seed, max_memory=max_memory
        )
    else:
        keep = frozenset(range(network.depth)) if covariance else frozenset()
        layers = covariance_recursion(network, noises, x, keep, max_memory)
    return NoiseStatistics(layers=tuple(layers), method=method, noise=noises)


# --------------------------------------------------------------------------------- mean field
def _meanfield(
    network: Network, noises: tuple[Noise, ...], x: Tensor, covariance: bool
) -> list[LayerStatistics]:
    """Scalar rule (docs/THEORY.md section 3), per input.

    A layer's noise is described by ``u`` (the part independent between neurons) and ``c`` (the
    covariance shared by every pair). Through ``W`` (``N_in`` inputs, mean weight ``<W>``, mean
    square weight ``<W^2>``)::

        var_z = N_in <W^2> u + N_in^2 <W>^2 c
        cov_z = N_in <W>^2 u + N_in^2 <W>^2 c

    so uncorrelated noise has gain ``<g^2> N <W^2>`` and correlated noise ``<g>^2 N^2 <W>^2``. Slopes
    scale the variance by ``<g^2>`` and the covariance by ``<g>^2``, and the injected noise adds
    ``var += v (D_MU + D_MC) + <m^2> (D_MU + D_MC) + D_AU + D_AC`` and
    ``cov += c D_MC + <m>^2 D_MC + D_AC``, with ``<.>`` averages over the layer's neurons.
    """
    layers = []
    batch = x.shape[0]
    var = torch.zeros(batch, dtype=x.dtype, device=x.device)
    cov = torch.zeros_like(var)
    for (weighted, signal), layer, noise in zip(network.forward(x), network.layers, noises):
        n_in = layer.in_features
        mean_w = float(layer.weight.mean())
        mean_w2 = float(layer.weight.square().mean())
        uncorrelated = var - cov
        var_z = n_in * mean_w2 * uncorrelated + n_in**2 * mean_w**2 * cov
        cov_z = n_in * mean_w**2 * uncorrelated + n_in**2 * mean_w**2 * cov
        slope = layer.activation.derivative(weighted)
        slope_sq_mean, slope_mean_sq = slope.square().mean(-1), slope.mean(-1).square()
        level = signal if noise.injection == "after" else weighted
        if noise.injection == "after":
            var_z, cov_z = slope_sq_mean * var_z, slope_mean_sq * cov_z
        multiplicative = noise.MU + noise.MC
        var = (
            var_z * (1 + multiplicative) + level.square().mean(-1) * multiplicative + noise.AU + noise.AC
        )
        cov = cov_z * (1 + noise.MC) + level.mean(-1).square() * noise.MC + noise.AC
        if noise.injection == "before":
            var, cov = slope_sq_mean * var, slope_mean_sq * cov
        layers.append(_scalar_layer(signal, var, cov, covariance))
    return layers


def _scalar_layer(signal: Tensor, var: Tensor, cov: Tensor, covariance: bool) -> LayerStatistics:
    """Per-neuron statistics from one variance and one covariance per input."""
    neurons = signal.shape[-1]
    variance = var.unsqueeze(-1).expand(-1, neurons).clone()
    matrix = None
    if covariance:
        matrix = cov[:, None, None].expand(-1, neurons, neurons).clone()
        matrix.diagonal(dim1=-2, dim2=-1).copy_(variance)
    return LayerStatistics(mean=signal, variance=variance, covariance=matrix)


# ---------------------------------------------------------------------------------- symmetric
def _symmetric(
    network: Network, noises: tuple[Noise, ...], x: Tensor, covariance: bool
) -> list[LayerStatistics]:
    """Closed form for symmetric networks (docs/THEORY.md section 2).

    Every neuron of a layer receives the same weighted input ``x = w N_in s_prev + b`` where
    ``s_prev`` is the previous layer's average (mean ``mu``, variance ``v``), so
    ``Var x = (w N_in)^2 v``. With ``f`` linearised at ``x-bar`` (exact for linear ``f``),
    ``g = f'(x-bar)``, injection after the activation::

        E_f        = f(x-bar)^2 + g^2 Var x
        v_next     = g^2 Var x + E_f (D_MC + D_MU/N) + D_AC + D_AU/N
        per neuron = g^2 Var x + E_f (D_MU + D_MC) + D_AU + D_AC

    and before it, with ``E_x = x-bar^2 + Var x``::

        v_next     = g^2 (Var x + E_x (D_MC + D_MU/N) + D_AC + D_AU/N)
        per neuron = g^2 (Var x + E_x (D_MU + D_MC) + D_AU + D_AC)
    """
    constants = network.symmetric_weights()
    if constants is None:
        raise ValueError(
            "method='symmetric' needs a symmetric network (one weight value and one bias value per "
            "layer, as made by Network.symmetric); use method='covariance' for this network."
        )
    layers = []
    level = x.sum(-1)  # sum of the previous layer's noise-free outputs
    v = torch.zeros_like(level)  # variance of the previous layer's average, times N_in^2 below
    for (weight, bias), layer, noise in zip(constants, network.layers, noises):
        n_in, n = layer.in_features, layer.out_features
        x_bar = weight * level + bias
        var_x = (weight * n_in) ** 2 * v
        f = layer.activation
        value, slope = f(x_bar), f.derivative(x_bar)
        g2 = slope.square()
        if noise.injection == "after":
            second = value.square() + g2 * var_x
            v = g2 * var_x + second * (noise.MC + noise.MU / n) + noise.AC + noise.AU / n
            per_neuron = g2 * var_x + second * (noise.MU + noise.MC) + noise.AU + noise.AC
            pair = g2 * var_x + second * noise.MC + noise.AC
        else:
            second = x_bar.square() + var_x
            v = g2 * (var_x + second * (noise.MC + noise.MU / n) + noise.AC + noise.AU / n)
            per_neuron = g2 * (var_x + second * (noise.MU + noise.MC) + noise.AU + noise.AC)
            pair = g2 * (var_x + second * noise.MC + noise.AC)
        signal = value.unsqueeze(-1).expand(-1, n).clone()
        layers.append(_scalar_layer(signal, per_neuron, pair, covariance))
        level = n * value
    return layers
