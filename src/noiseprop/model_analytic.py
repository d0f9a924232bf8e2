"""First-order noise propagation through any ``torch.nn.Module``, by automatic differentiation.

The noise of every site (:mod:`noiseprop.sites`) is small and enters the model as a perturbation
``delta_s`` of the site's output (injection "after") or input ("before"), docs/THEORY.md section 8.
Linearised at the noise-free input, every measured entry ``y_t`` (a site's output at one call, or the
model's output) moves by ``J_ts delta_s`` summed over the sites ``s`` before it, with ``J_ts`` the
Jacobian of the model from ``delta_s`` to ``y_t``. The four kinds of noise of a site are independent,
and to first order (``v_s`` the noise-free value the noise acts on, ``D`` the intensities, numbers or
tensors broadcast over the site's shape)::

    Cov(delta_s) = diag(D_AU + D_MU v_s^2) + sqrt(D_AC) sqrt(D_AC)^T + (sqrt(D_MC) v_s)(sqrt(D_MC) v_s)^T

so that ``Cov(y_t) = sum_s J_ts Cov(delta_s) J_ts^T``, the sum of one term per site and kind: the
noise budget. For a dense :class:`~noiseprop.network.Network` (as ``Network.to_torch()``) this is the
covariance method of docs/THEORY.md section 3 without its second-order products: where multiplicative
noise scales a signal that is already noisy, that method keeps ``D_MU Var(u)`` and ``D_MC Cov(u)`` of
the upstream noise ``u``, which a linearisation at the noise-free input leaves out.

How the Jacobians are taken (every input's at once; the inputs of a batch are independent, the model
running in eval mode):

* the output's covariance, ``K x K`` per input, from ``K`` vector-Jacobian products (reverse mode:
  one noise-free pass, the cotangents ``e_k`` batched by ``vmap``), which give ``J_out,s`` for every
  site ``s`` at once;
* every entry's per-element variance (``site_variances=True``): the correlated kinds by two
  Jacobian-vector products per site (forward mode, tangents ``sqrt(D_AC)`` and ``sqrt(D_MC) v_s``),
  the uncorrelated kinds by one forward-mode product per element of every noisy site (tangent
  ``e_j sqrt(D_AU + D_MU v_j^2)``) or one reverse-mode product per element of every entry, whichever
  count is smaller: that count of products, batched by ``vmap`` in chunks, is the cost.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn
from torch.autograd import forward_ad
from torch.nn import functional

from noiseprop._inputs import as_device
from noiseprop._validation import check_choice, check_positive_int
from noiseprop.model_montecarlo import (
    as_model_inputs,
    entries,
    evaluating,
    noise_free_calls,
    runnable,
)
from noiseprop.network import ActivationModule
from noiseprop.noise import Noise
from noiseprop.results import LayerStatistics, NoiseStatistics
from noiseprop.sites import ACTIVATION_MODULES, SiteSelector, add_noise, find_sites, site_noises

__all__ = ["GaussianCut", "NotDifferentiableError", "gaussian_cut", "linearised_model"]


class NotDifferentiableError(ValueError):
    """The model is not differentiable at the noise-free input in the direction of the noise."""


class _Cut(Exception):  # noqa: N818 (control flow, not an error)
    """Stops a pass at the cut: carries the input of the cut's site call."""

    def __init__(self, value: Tensor) -> None:
        super().__init__()
        self.value = value


class _Linearisation:
    """The model as a function of the perturbations ``delta`` of its site calls (one tensor per
    call, the shape of what the noise acts on), returning every entry's value."""

    def __init__(self, model: nn.Module, noise: Any, inputs: Tensor, sites: SiteSelector) -> None:
        self.model = model
        self.inputs = inputs
        self.cut: int | None = None  # a call whose input ends the passes (see truncate)
        found = find_sites(model, sites)
        self.modules = [module for _, module in found]
        site_names = tuple(name for name, _ in found)
        noises = site_noises(noise, site_names)
        site_inputs: list[Tensor] = []
        calls, output = noise_free_calls(model, found, inputs, site_names, site_inputs)
        names, entry_noises, references, self.output_entry = entries(calls, output, site_names, noises)
        self.names, self.noises, self.references = tuple(names), tuple(entry_noises), references
        self.calls = [(index, call) for index, call, _ in calls]
        self.call_sites = {name: site_names[index] for name, (index, _) in zip(names, self.calls)}
        self.befores = [noises[index].injection == "before" for index, _ in self.calls]
        for (index, _), value, before in zip(self.calls, site_inputs, self.befores):
            if before and not (isinstance(value, Tensor) and value.is_floating_point()):
                raise TypeError(
                    f"noise site {site_names[index]!r}: injection 'before' needs a floating-point "
                    "tensor as its first positional input."
                )
        # what each call's noise acts on: its output ("after") or its input ("before")
        self.values = [
            (site_input if before else value).detach()
            for site_input, (_, _, value), before in zip(site_inputs, calls, self.befores)
        ]
        self.site_inputs = [
            value.detach() if isinstance(value, Tensor) else value for value in site_inputs
        ]

    def nonlinear(self, position: int) -> bool:
        """Whether call ``position``'s site module is a nonlinear activation."""
        module = self.modules[self.calls[position][0]]
        if isinstance(module, ActivationModule):
            return not module.activation.linear
        return isinstance(module, ACTIVATION_MODULES)

    def truncate(self, cut: int) -> None:
        """Make the passes end at call ``cut``'s input: the entries become the calls before it and
        that input (``"<name> input"``); the noise of the cut and later calls is left out."""
        value = self.site_inputs[cut]
        if not (isinstance(value, Tensor) and value.is_floating_point()):
            raise TypeError(
                f"noise site {self.names[cut]!r}: its first positional input must be a "
                "floating-point tensor to be taken as Gaussian."
            )
        self.cut = cut
        self.names = (*self.names[:cut], f"{self.names[cut]} input")
        quiet = (Noise(),) * (len(self.values) - cut)
        self.noises = (*self.noises[:cut], *quiet, Noise())
        self.references = [*self.references[:cut], value]
        self.output_entry = True

    def __call__(self, deltas: Sequence[Tensor]) -> list[Tensor]:
        """Every entry's value with ``deltas`` added to the site calls."""
        entry_of = {call: position for position, call in enumerate(self.calls)}
        counts = [0] * len(self.modules)
        recorded: list[Tensor] = []
        handles = []
        for site, module in enumerate(self.modules):

            def before(module: nn.Module, args: tuple[Any, ...], site: int = site) -> Any:
                position = entry_of.get((site, counts[site] + 1))
                if position is not None and position == self.cut:
                    raise _Cut(args[0])
                if position is None or not self.befores[position]:
                    return None
                return (args[0] + deltas[position], *args[1:])

            def after(module: nn.Module, args: Any, output: Tensor, site: int = site) -> Tensor:
                counts[site] += 1
                position = entry_of.get((site, counts[site]))
                if position is None:
                    raise RuntimeError(
                        "a site was called more often than in the noise-free pass; a model whose "
                        "forward pass changes with its input values cannot be linearised site by site."
                    )
                if not self.befores[position]:
                    output = output + deltas[position]
                recorded.append(output)
                return output

            handles.append(module.register_forward_pre_hook(before))
            handles.append(module.register_forward_hook(after))
        try:
            output = self.model(self.inputs)
        except _Cut as cut:
            output = cut.value
        finally:
            for handle in handles:
                handle.remove()
        return [*recorded, output] if self.output_entry else recorded

    def zeros(self) -> list[Tensor]:
        return [torch.zeros_like(value) for value in self.values]

    def check_differentiable(self, seed: int = 0) -> None:
        """Refuse a model that is not differentiable at the noise-free input in the direction of the
        noise: a max-pooling window (``nn.MaxPool1d``/``nn.MaxPool2d``) whose largest inputs are
        tied while the noise moves them differently (e.g. zeros of a ReLU site with additive noise
        of its own: the maximum of tied noisy values is not linear in the noise, whatever its
        size). Found by one forward-mode pass with a random tangent at every noisy site; ReLU at
        exactly 0 is fine (PyTorch's derivative there, 0, is used)."""
        pools = [
            (name, module)
            for name, module in self.model.named_modules()
            if isinstance(module, (nn.MaxPool1d, nn.MaxPool2d))
        ]
        if not pools or all(noise.is_zero for noise in self.noises):
            return
        generator = torch.Generator(device=self.inputs.device).manual_seed(seed)
        tangents = [
            _random_tangent(value, noise, generator) for value, noise in zip(self.values, self.noises)
        ]
        seen: list[tuple[str, nn.Module, Tensor, Tensor]] = []
        handles = [
            module.register_forward_pre_hook(
                lambda module, args, name=name: seen.append(
                    (name, module, *_primal_and_tangent(args[0]))
                )
            )
            for name, module in pools
        ]
        try:
            with forward_ad.dual_level():
                deltas = [forward_ad.make_dual(torch.zeros_like(t), t) for t in tangents]
                self(deltas)
        finally:
            for handle in handles:
                handle.remove()
        for name, module, primal, tangent in seen:
            tied, windows = _tied_windows(module, primal, tangent)
            if tied:
                raise NotDifferentiableError(
                    f"the model is not differentiable at the noise-free input: max-pooling module "
                    f"{name!r} has {tied} of {windows} windows whose largest inputs are tied while "
                    "the noise moves them apart (the maximum of tied noisy values is not linear in "
                    "the noise, at any intensity), so a linearisation would give a wrong number. "
                    "Use noiseprop.simulate for this model and noise, or mean pooling."
                )

    def check_reachable(self, seed: int = 0) -> None:
        """Refuse a site whose noise changes the output while the linearisation sees no effect: a
        path that automatic differentiation cannot follow (``detach``, rounding, integer or boolean
        steps). For each noisy site call, one random draw of the noise (one standard deviation) is
        pushed by forward mode and by a central difference of the model itself; a zero derivative
        where the difference moves the output is an error."""
        generator = torch.Generator(device=self.inputs.device).manual_seed(seed)
        zeros = self.zeros()
        for position, (value, noise) in enumerate(zip(self.values, self.noises)):
            if noise.is_zero:
                continue
            tangent = _random_tangent(value, noise, generator)
            if not bool(tangent.any()):
                continue
            with forward_ad.dual_level():
                deltas = [
                    forward_ad.make_dual(zero, tangent if index == position else torch.zeros_like(zero))
                    for index, zero in enumerate(zeros)
                ]
                moved = forward_ad.unpack_dual(self(deltas)[-1]).tangent
            outputs = [
                self([tangent * sign if index == position else zero
                      for index, zero in enumerate(zeros)])[-1]
                for sign in (1.0, -1.0)
            ]  # fmt: skip
            difference = float((outputs[0] - outputs[1]).abs().max()) / 2
            seen = 0.0 if moved is None else float(moved.abs().max())
            if seen == 0.0 and difference > 1e-9 * (1 + float(outputs[0].abs().max())):
                raise NotDifferentiableError(
                    f"the noise at site {self.names[position]!r} changes the model's output, but the "
                    "linearisation sees no effect: the path from that site to the output is not "
                    "differentiable (a detach, rounding, or an integer or boolean step), so it "
                    "cannot be linearised. Use noiseprop.simulate for this model."
                )


def _random_tangent(value: Tensor, noise: Noise, generator: torch.Generator) -> Tensor:
    """One random draw of the noise on ``value`` (:func:`noiseprop.sites.add_noise`, the draws of
    the simulation): uncorrelated kinds per element, correlated ones one draw per presentation."""
    return add_noise(value, noise, generator) - value


def _primal_and_tangent(value: Tensor) -> tuple[Tensor, Tensor]:
    primal, tangent = forward_ad.unpack_dual(value)
    return primal.detach(), (torch.zeros_like(primal) if tangent is None else tangent.detach())


def _tied_windows(module: nn.Module, primal: Tensor, tangent: Tensor) -> tuple[int, int]:
    """``(windows whose maximum is tied between inputs with different tangents, windows)``."""
    two_d = isinstance(module, nn.MaxPool2d)
    if not two_d:  # (B, C, L) as (B, C, 1, L)
        primal, tangent = primal.unsqueeze(-2), tangent.unsqueeze(-2)

    def pair(value: Any) -> tuple[int, int]:
        return (value, value) if isinstance(value, int) else tuple(value)  # type: ignore[return-value]

    kernel = pair(module.kernel_size) if two_d else (1, module.kernel_size)
    stride = (
        pair(module.stride or module.kernel_size) if two_d else (1, module.stride or module.kernel_size)
    )
    padding = pair(module.padding) if two_d else (0, module.padding)
    dilation = pair(module.dilation) if two_d else (1, module.dilation)
    if primal.ndim == 3:  # unbatched (C, H, W)
        primal, tangent = primal.unsqueeze(0), tangent.unsqueeze(0)
    pads = (padding[1], padding[1], padding[0], padding[0])
    primal = functional.pad(primal, pads, value=-math.inf)
    tangent = functional.pad(tangent, pads, value=0.0)
    batch, channels = primal.shape[:2]
    windows = functional.unfold(primal, kernel, dilation=dilation, stride=stride)
    moves = functional.unfold(tangent, kernel, dilation=dilation, stride=stride)
    windows = windows.reshape(batch, channels, kernel[0] * kernel[1], -1)
    moves = moves.reshape(batch, channels, kernel[0] * kernel[1], -1)
    top = windows == windows.amax(2, keepdim=True)
    spread = torch.where(top, moves, -math.inf).amax(2) - torch.where(top, moves, math.inf).amin(2)
    tied = (top.sum(2) > 1) & (spread.abs() > 1e-12 * (1 + moves.abs().amax()))
    return int(tied.sum()), int(top[:, :, 0].numel())


def linearised_model(
    model: nn.Module,
    noise: Noise | Sequence[Noise] | Mapping[str, Noise],
    inputs: Any,
    *,
    sites: SiteSelector = None,
    site_variances: bool = True,
    covariance: bool = True,
    mode: str = "auto",
    device: str | torch.device = "cpu",
    max_elements: int = 2**24,
) -> tuple[NoiseStatistics, dict[tuple[str, str], Tensor], dict[str, str]]:
    """First-order statistics of every site and of the output of ``model`` (module docstring), and
    the output covariance split by source site and kind.

    Returns ``(statistics, budget, calls)``: a :class:`~noiseprop.results.NoiseStatistics` (method
    ``"covariance"``, entries named as :func:`noiseprop.simulate` names them; means are the
    noise-free values, the last entry carries the ``(B, K, K)`` output covariance; the sites'
    variances are ``nan`` without ``site_variances``), ``{(call, kind): (B, K, K)}`` (keyed by the
    site calls' entry names, ``relu#2``) whose sum is the output covariance (returned in the
    statistics only with ``covariance``), and ``{call: site}``, the
    site calls (the entries but a separate output) in order, each with its site module's name.
    ``max_elements`` bounds the elements of a batch of tangents or cotangents (the perturbations of
    every call and the changes of every entry, per tangent). ``mode``: how the sites' variances
    take the uncorrelated kinds, ``"forward"``, ``"reverse"`` or ``"auto"`` (fewer passes).
    """
    check_choice("mode", mode, ("auto", "forward", "reverse"))
    model, x, max_elements = _prepared(model, inputs, device, max_elements)
    device = x.device
    with evaluating(model), torch.no_grad():
        linear = _Linearisation(model, noise, x, sites)
        linear.check_differentiable()
        linear.check_reachable()
        budget = _output_budget(linear, max_elements)
        variances = (
            _entry_variances(linear, max_elements, mode)
            if site_variances
            else [torch.full_like(value.flatten(1), math.nan) for value in linear.references]
        )
    batch = x.shape[0]
    output = linear.references[-1].reshape(batch, -1)
    output_covariance = (
        sum(budget.values())
        if budget
        else torch.zeros(batch, output.shape[1], output.shape[1], dtype=torch.float64, device=device)
    )
    layers = []
    for position, (reference, variance) in enumerate(zip(linear.references, variances)):
        last = position == len(linear.references) - 1
        if last:
            variance = output_covariance.diagonal(dim1=-2, dim2=-1).clone()
        layers.append(
            LayerStatistics(
                mean=reference.reshape(batch, -1).double(),
                variance=variance.reshape(batch, -1),
                covariance=output_covariance if last and covariance else None,
                shape=tuple(reference.shape[1:]) if reference.ndim > 2 else None,
            )
        )
    stats = NoiseStatistics(
        layers=tuple(layers), method="covariance", noise=linear.noises, names=linear.names
    )
    return stats, budget, linear.call_sites


def _prepared(
    model: nn.Module, inputs: Any, device: str | torch.device, max_elements: int
) -> tuple[nn.Module, Tensor, int]:
    """The model in float64 on ``device`` (a copy where it is not already), the inputs there as a
    batch, and ``max_elements`` checked."""
    device = as_device(device)
    max_elements = check_positive_int("max_elements", max_elements)
    model = runnable(model, dtype=torch.float64, device=device)
    return model, as_model_inputs(inputs, dtype=torch.float64, device=device), max_elements


@dataclass(frozen=True)
class GaussianCut:
    """The input ``u`` of a model's last nonlinear site call (the *cut*), to first order: the
    noise-free ``mean`` and the covariance ``J Cov(delta) J^T`` of the noise of the calls before it.

    Attributes:
        position: the cut's position among the site calls (the entries of :func:`linearised_model`).
        name: the cut call's entry name (``relu2``, ``act#3``).
        mean: ``(B, *shape)`` noise-free input of the cut call.
        covariance: ``(B, n, n)`` over its ``n`` elements per input; ``None`` where no noise comes
            before the cut (``u`` is noise-free).
        calls: ``(site, call)`` of every site call in the noise-free pass's order: the index of
            the site (in :func:`~noiseprop.sites.find_sites` order) and which of its calls it is
            (from 1); ``calls[position]`` is the cut.
        tail_elements: elements per input of the site calls from the cut on and of the output: the
            size of one presentation of the rest of the model.
    """

    position: int
    name: str
    mean: Tensor
    covariance: Tensor | None
    calls: tuple[tuple[int, int], ...]
    tail_elements: int

    @property
    def elements(self) -> int:
        """``n``: the elements of ``u`` per input."""
        return self.mean[0].numel()


def gaussian_cut(
    model: nn.Module,
    noise: Noise | Sequence[Noise] | Mapping[str, Noise],
    inputs: Any,
    *,
    sites: SiteSelector = None,
    device: str | torch.device = "cpu",
    max_elements: int = 2**24,
    moments: bool = True,
) -> GaussianCut:
    """The cut of ``model`` for ``inputs`` (:class:`GaussianCut`): the input of its last site call
    whose module is a nonlinear activation (an :data:`~noiseprop.sites.ACTIVATION_MODULES` type,
    not a linear :class:`~noiseprop.network.ActivationModule`), or of its first site call where
    there is none. Its covariance comes from ``n`` vector-Jacobian products per input through the
    model up to the cut (the passes stop there), in chunks of at most ``max_elements``; with
    ``moments=False`` only the position and the noise-free ``mean`` are found (one pass).

    ``u`` is exactly Gaussian with these moments where every noise before the cut reaches it
    through affine maps and multiplicative noise scales only noise-free signals (e.g. a dense
    network's last hidden layer fed by one noisy layer); otherwise it is the first-order Gaussian.
    """
    model, x, max_elements = _prepared(model, inputs, device, max_elements)
    with evaluating(model), torch.no_grad():
        linear = _Linearisation(model, noise, x, sites)
        nonlinear = [position for position in range(len(linear.calls)) if linear.nonlinear(position)]
        position = nonlinear[-1] if nonlinear else 0
        name = linear.names[position]
        tail = sum(reference[0].numel() for reference in linear.references[position:])
        linear.truncate(position)
        mean = linear.references[-1].double()
        found = partial(GaussianCut, position, name, mean, calls=tuple(linear.calls), tail_elements=tail)
        if not moments or all(noise.is_zero for noise in linear.noises):
            return found(covariance=None)
        linear.check_differentiable()
        linear.check_reachable()
        return found(covariance=sum(_output_budget(linear, max_elements).values()))


# ---------------------------------------------------------------------------------- the output
def _output_budget(linear: _Linearisation, max_elements: int) -> dict[tuple[str, str], Tensor]:
    """``{(call, kind): J Cov_kind(delta_s) J^T}`` for the output, from ``K`` vector-Jacobian
    products (:func:`_reverse`, in chunks that fit ``max_elements``)."""
    target = len(linear.references) - 1
    classes = linear.references[-1][0].numel()
    step = max(1, min(classes, max_elements // max(1, _elements(linear))))
    pieces = [_reverse(linear, target, start, min(step, classes - start))
              for start in range(0, classes, step)]  # fmt: skip
    budget: dict[tuple[str, str], Tensor] = {}
    for position, value in enumerate(linear.values):
        noise = linear.noises[position]
        if noise.is_zero:  # (every call from a cut on: see _Linearisation.truncate)
            continue
        name = linear.names[position]
        jacobian = torch.cat([piece[position] for piece in pieces])  # (K, B, n)
        parts = _parts(jacobian, value.flatten(1), noise, tuple(value.shape[1:]))
        for kind, part in parts.items():
            key = (name, kind)
            budget[key] = budget[key] + part if key in budget else part
    return budget


def _elements(linear: _Linearisation) -> int:
    """Elements of one perturbation of every call and of every entry: the memory of one tangent."""
    return sum(value.numel() for value in linear.values) + sum(
        reference.numel() for reference in linear.references
    )


def _parts(jacobian: Tensor, value: Tensor, noise: Noise, shape: tuple[int, ...]) -> dict[str, Tensor]:
    """Each kind's ``J Cov(delta) J^T``, ``(B, K, K)``, for ``J: (K, B, n)`` and the noise-free
    ``value`` ``(B, n)`` (per-presentation ``shape``) the noise acts on."""
    parts = {}
    for kind in ("AU", "MU"):
        if noise.has(kind):
            weight = _intensity(noise, kind, value, shape) * (value.square() if kind == "MU" else 1.0)
            weight = weight.expand_as(value)
            parts[kind] = torch.einsum("kbj,bj,lbj->bkl", jacobian, weight, jacobian)
    for kind in ("AC", "MC"):
        if noise.has(kind):
            scale = _intensity(noise, kind, value, shape).sqrt() * (value if kind == "MC" else 1.0)
            scale = scale.expand_as(value)
            column = torch.einsum("kbj,bj->bk", jacobian, scale)
            parts[kind] = column.unsqueeze(-1) * column.unsqueeze(-2)
    return parts


def _intensity(noise: Noise, kind: str, value: Tensor, shape: tuple[int, ...]) -> Tensor:
    """A kind's intensity per element, ``(n,)`` or a number, to multiply a ``(B, n)`` tensor (a
    tensor intensity broadcast over the per-presentation ``shape``, then flattened)."""
    raw = torch.as_tensor(getattr(noise, kind), dtype=torch.float64, device=value.device)
    return raw.expand(shape).reshape(-1) if raw.ndim else raw


# -------------------------------------------------------------------------------- every entry
def _entry_variances(linear: _Linearisation, max_elements: int, mode: str) -> list[Tensor]:
    """Every entry's first-order per-element variance (module docstring)."""
    variances = [torch.zeros_like(value.flatten(1)) for value in linear.references]
    batch = linear.inputs.shape[0]
    for position, noise in enumerate(linear.noises[: len(linear.values)]):
        shape = tuple(linear.values[position].shape[1:])
        value = linear.values[position].flatten(1)
        for kind in ("AC", "MC"):
            if noise.has(kind):
                scale = _intensity(noise, kind, value, shape).sqrt()
                tangent = (scale * (value if kind == "MC" else 1.0)).expand_as(value)
                moved = _forward(linear, position, tangent.unsqueeze(0))
                for target, change in enumerate(moved):
                    variances[target] += change[0].square()
    sources = [
        position for position, noise in enumerate(linear.noises) if noise.has("AU") or noise.has("MU")
    ]
    forward_passes = sum(linear.values[position][0].numel() for position in sources)
    reverse_passes = sum(reference[0].numel() for reference in linear.references)
    step = max(1, max_elements // max(1, _elements(linear)))
    if mode == "forward" or (mode == "auto" and forward_passes <= reverse_passes):
        for position in sources:
            spread = _uncorrelated(linear, position).sqrt()
            size = spread.shape[1]
            for start in range(0, size, step):
                count = min(step, size - start)
                tangent = torch.zeros(count, batch, size, dtype=torch.float64, device=spread.device)
                columns = start + torch.arange(count, device=spread.device)
                tangent[torch.arange(count), :, columns] = spread[:, columns].T
                for target, change in enumerate(_forward(linear, position, tangent)):
                    variances[target] += change.square().sum(0)
    else:
        weights = {position: _uncorrelated(linear, position) for position in sources}
        for target, reference in enumerate(linear.references):
            size = reference[0].numel()
            for start in range(0, size, step):
                count = min(step, size - start)
                rows = _reverse(linear, target, start, count)
                for position, weight in weights.items():
                    contribution = (rows[position].square() * weight).sum(-1)  # (count, B)
                    variances[target][:, start : start + count] += contribution.T
    return variances


def _uncorrelated(linear: _Linearisation, position: int) -> Tensor:
    """``D_AU + D_MU v^2`` per element, ``(B, n)``: the variance of a call's uncorrelated noise."""
    noise, value = linear.noises[position], linear.values[position]
    shape, flat = tuple(value.shape[1:]), value.flatten(1)
    total = _intensity(noise, "AU", flat, shape) + _intensity(noise, "MU", flat, shape) * flat.square()
    return total.expand_as(flat)


def _forward(linear: _Linearisation, position: int, tangent: Tensor) -> list[Tensor]:
    """Forward mode: every entry's change ``(count, B, n_t)`` for the ``count`` perturbations
    ``tangent`` ``(count, B, n_s)`` of call ``position``: one noise-free pass, the tangents batched
    (``vmap`` of ``jvp``)."""
    batch = linear.inputs.shape[0]
    primals = tuple(linear.zeros())

    def run(*deltas: Tensor) -> tuple[Tensor, ...]:
        return tuple(linear(list(deltas)))

    def push(direction: Tensor) -> tuple[Tensor, ...]:
        tangents = [torch.zeros_like(primal) for primal in primals]
        tangents[position] = direction.reshape(primals[position].shape)
        return torch.func.jvp(run, primals, tuple(tangents))[1]

    changes = torch.func.vmap(push)(tangent)
    return [change.reshape(tangent.shape[0], batch, -1) for change in changes]


def _reverse(linear: _Linearisation, target: int, start: int, count: int) -> list[Tensor]:
    """Reverse mode: for elements ``start .. start + count`` of entry ``target``, the Jacobian rows
    ``(count, B, n_s)`` with respect to every call's perturbation: one noise-free pass, the
    cotangents batched (``vmap`` of ``vjp``)."""
    batch = linear.inputs.shape[0]

    def run(*deltas: Tensor) -> tuple[Tensor, ...]:
        return tuple(linear(list(deltas)))

    outputs, pull = torch.func.vjp(run, *linear.zeros())
    chosen = outputs[target].reshape(batch, -1)

    def pull_one(cotangent: Tensor) -> tuple[Tensor, ...]:
        cotangents = [torch.zeros_like(output) for output in outputs]
        cotangents[target] = cotangent.reshape(outputs[target].shape)
        return pull(tuple(cotangents))

    cotangent = torch.zeros(count, *chosen.shape, dtype=chosen.dtype, device=chosen.device)
    cotangent[torch.arange(count), :, start + torch.arange(count)] = 1.0
    rows = torch.func.vmap(pull_one)(cotangent)
    return [row.reshape(count, batch, -1) for row in rows]
