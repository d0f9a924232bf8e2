"""Noise sites on any ``torch.nn.Module``: where neuron noise acts, and the one way it is injected.

A *site* is a module of the user's model whose output is a layer of noisy neurons (docs/THEORY.md
section 8). By default the sites are the activation modules (``nn.ReLU``, ``nn.Sigmoid``, ``nn.GELU``,
...); they can also be chosen by name, with glob patterns on the names of ``model.named_modules()``
(``"features.*"``, ``"conv1"``), or by type. At a site with noise :class:`~noiseprop.noise.Noise` the
output ``s`` of one presentation becomes::

    y = s (1 + xi_MU + xi_MC) + xi_AU + xi_AC                  (injection "after", the default)
    y = f(x (1 + xi_MU + xi_MC) + xi_AU + xi_AC)               (injection "before": on the input x)

where a "neuron" is one element of the site's output for one presentation (every channel and position
of a convolutional feature map), the uncorrelated kinds are drawn independently for every element, and
the correlated kinds once per site and presentation, shared by all its elements. Intensities are
variances; a tensor intensity is broadcast over the site's per-presentation shape (device-to-device
variation), a correlated draw then being scaled element by element.

:func:`noisy` attaches the noise with forward hooks (``register_forward_hook`` for "after",
``register_forward_pre_hook`` for "before"): the user's code is not copied, and
:meth:`NoisySites.remove` (or leaving the ``with`` block) leaves the model exactly as it was. The draws
are reparameterised (``s + sqrt(D) eta`` with ``eta`` a constant of the graph), so gradients flow
through the noisy forward pass: noise-aware training in the user's own loop. Noise is on while the
site module is in training mode and, when asked for (``in_eval=True``), in eval mode too.

A site module called several times in one forward pass (one ``nn.ReLU`` reused after every layer) is
a site at every call: each call draws its own noise, and the simulator measures each call as its own
entry (``relu#1``, ``relu#2``, ...).
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from noiseprop.network import ActivationModule
from noiseprop.noise import Noise, one_per

__all__ = [
    "ACTIVATION_MODULES",
    "NoisySites",
    "Site",
    "SiteSelector",
    "add_noise",
    "find_sites",
    "noisy",
    "site_noises",
]

ACTIVATION_MODULES: tuple[type[nn.Module], ...] = (
    ActivationModule,
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.RReLU,
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Sigmoid,
    nn.Hardsigmoid,
    nn.Hardswish,
    nn.LogSigmoid,
    nn.Tanh,
    nn.Hardtanh,
    nn.Softplus,
    nn.Softsign,
    nn.Tanhshrink,
    nn.Threshold,
)
"""The module types that are sites by default: elementwise activation functions."""

SiteSelector = str | type | Sequence[str | type] | None
"""Which modules are sites: ``None`` (every activation module), a glob pattern on module names, a
module type, or a sequence of patterns and types (a module matching any of them is a site)."""


@dataclass(frozen=True, eq=False)
class Site:
    """One noise site: a module of the model, its name in ``named_modules()`` and its noise."""

    name: str
    module: nn.Module
    noise: Noise


def find_sites(model: nn.Module, sites: SiteSelector = None) -> tuple[tuple[str, nn.Module], ...]:
    """The ``(name, module)`` pairs of ``model`` that ``sites`` selects, in ``named_modules()`` order.

    Args:
        model: any ``nn.Module``.
        sites: ``None`` for every module of a type in :data:`ACTIVATION_MODULES`; a glob pattern
            matched against the names of ``model.named_modules()`` (``"conv*"``, ``"blocks.*.act"``;
            ``""`` is the model itself); a module type (``nn.Conv2d``); or a sequence of them.

    Raises:
        TypeError: if ``model`` is not an ``nn.Module`` or ``sites`` holds something else.
        ValueError: if a pattern or type matches no module, or nothing is selected (the message
            lists the model's module names).

    Example:
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2))
        >>> [name for name, _ in find_sites(model)]
        ['1']
        >>> [name for name, _ in find_sites(model, nn.Linear)]
        ['0', '2']
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}.")
    named = list(model.named_modules())
    if sites is None:
        chosen = [(name, module) for name, module in named if isinstance(module, ACTIVATION_MODULES)]
        if not chosen:
            raise ValueError(
                "sites: the model holds no activation module, so there is no default site (an "
                "activation written as a function call in forward, such as torch.relu(x), is not a "
                "module). Name the sites with glob patterns or module types; the model's modules "
                f"are: {_listing(named)}."
            )
        return tuple(chosen)
    selectors = [sites] if isinstance(sites, (str, type)) else sites
    if not isinstance(selectors, Sequence) or not selectors:
        raise TypeError(
            "sites must be None, a glob pattern, a module type or a non-empty sequence of them; "
            f"got {type(sites).__name__} {sites!r}."
        )
    selected: dict[int, tuple[str, nn.Module]] = {}
    for selector in selectors:
        if isinstance(selector, str):
            matches = [(n, m) for n, m in named if fnmatch.fnmatchcase(n, selector)]
        elif isinstance(selector, type) and issubclass(selector, nn.Module):
            matches = [(n, m) for n, m in named if isinstance(m, selector)]
        else:
            raise TypeError(
                "sites must hold glob patterns (str) or nn.Module types; got "
                f"{type(selector).__name__} {selector!r}."
            )
        if not matches:
            what = f"pattern {selector!r}" if isinstance(selector, str) else selector.__name__
            raise ValueError(
                f"sites: {what} matches no module of the model; its modules are: {_listing(named)}."
            )
        for name, module in matches:
            selected[id(module)] = (name, module)
    order = {id(module): index for index, (_, module) in enumerate(named)}
    return tuple(sorted(selected.values(), key=lambda item: order[id(item[1])]))


def _listing(named: list[tuple[str, nn.Module]], limit: int = 40) -> str:
    items = [f"{name or '<root>'} ({type(module).__name__})" for name, module in named]
    shown = ", ".join(items[:limit])
    return shown + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")


def site_noises(
    noise: Noise | Sequence[Noise] | Mapping[str, Noise], names: Sequence[str]
) -> tuple[Noise, ...]:
    """One :class:`Noise` per site: ``noise`` for every site, a sequence of one per site (in the
    order of :func:`find_sites`), or a mapping from glob patterns on site names to noise (a site
    matched by several patterns takes the last; unmatched sites are noise-free).

    Example:
        >>> [str(n) for n in site_noises({"conv*": Noise(AU=0.1)}, ["conv1", "relu1", "conv2"])]
        ['AU=0.1', 'none', 'AU=0.1']
    """
    if isinstance(noise, Noise):
        return (noise,) * len(names)
    if isinstance(noise, Mapping):
        resolved = [Noise()] * len(names)
        for pattern, value in noise.items():
            if not isinstance(pattern, str):
                raise TypeError(
                    f"noise mapping keys must be site names or glob patterns (str); got {pattern!r}."
                )
            if not isinstance(value, Noise):
                raise TypeError(f"noise[{pattern!r}] must be a Noise; got {type(value).__name__}.")
            hits = [index for index, name in enumerate(names) if fnmatch.fnmatchcase(name, pattern)]
            if not hits:
                raise ValueError(
                    f"noise mapping key {pattern!r} matches no site; the sites are: {', '.join(names)}."
                )
            for index in hits:
                resolved[index] = value
        return tuple(resolved)
    if isinstance(noise, Sequence) and not isinstance(noise, str):
        return one_per(noise, len(names), f"site ({len(names)}: {', '.join(names)})")
    raise TypeError(
        "noise must be a Noise, a sequence of one Noise per site or a mapping {pattern: Noise}; "
        f"got {type(noise).__name__}."
    )


def add_noise(
    value: Tensor, noise: Noise, generator: torch.Generator | None = None, *, presentation_dims: int = 1
) -> Tensor:
    """``value (1 + xi_MU + xi_MC) + xi_AU + xi_AC`` with fresh draws (docs/THEORY.md section 1).

    The first ``presentation_dims`` dimensions of ``value`` index presentations (repeats, inputs),
    the others the neurons of one presentation; correlated draws have shape
    ``value.shape[:presentation_dims] + (1, ...)``, one per presentation. A tensor intensity
    broadcasts against the trailing (neuron) dimensions. Out of place and differentiable in
    ``value``: the noise is ``sqrt(D) eta`` with ``eta`` drawn as a constant (reparameterisation).
    One standard normal per kind and element, drawn in the order MU, MC, AU, AC from ``generator``
    (the global generator when ``None``).

    Example:
        >>> import torch
        >>> value = torch.ones(3, 2, 4, dtype=torch.float64)
        >>> out = add_noise(value, Noise(AC=0.1), torch.Generator().manual_seed(0))
        >>> bool((out - out[..., :1, :1]).abs().max() < 1e-12)  # one draw per presentation
        True
    """
    if noise.is_zero:
        return value
    if not isinstance(value, Tensor) or not value.is_floating_point():
        raise TypeError(
            f"noise can only be added to a floating-point tensor; got "
            f"{getattr(value, 'dtype', type(value).__name__)}."
        )
    if value.ndim < presentation_dims:
        raise ValueError(
            f"a noisy tensor needs its {presentation_dims} presentation dimension(s) first; got "
            f"shape {tuple(value.shape)}."
        )
    options = {"dtype": value.dtype, "device": value.device, "generator": generator}
    shared = (*value.shape[:presentation_dims], *(1,) * (value.ndim - presentation_dims))
    neurons = value.shape[presentation_dims:]
    result = value
    if noise.has("MU") or noise.has("MC"):
        factor = None
        if noise.has("MU"):
            factor = torch.randn(value.shape, **options).mul_(_std(noise.MU, value, neurons, "MU"))
        if noise.has("MC"):
            draw = torch.randn(shared, **options) * _std(noise.MC, value, neurons, "MC")
            factor = draw if factor is None else factor + draw
        result = torch.addcmul(value, value, factor)
    if noise.has("AU"):
        draw = torch.randn(value.shape, **options).mul_(_std(noise.AU, value, neurons, "AU"))
        result = result + draw
    if noise.has("AC"):
        draw = torch.randn(shared, **options) * _std(noise.AC, value, neurons, "AC")
        result = result + draw
    return result.expand(value.shape)


def _std(variance: float | Tensor, value: Tensor, neurons: torch.Size, kind: str) -> float | Tensor:
    """``sqrt(variance)``: a number, or a tensor on ``value``'s device, checked to broadcast to the
    per-presentation shape ``neurons``."""
    if isinstance(variance, float):
        return math.sqrt(variance)
    try:
        broadcast = torch.broadcast_shapes(variance.shape, neurons)
    except RuntimeError:
        broadcast = None
    if broadcast != neurons:
        raise ValueError(
            f"Noise.{kind} is a tensor of shape {tuple(variance.shape)}, which does not broadcast to "
            f"the site's per-presentation output shape {tuple(neurons)}; give one variance per "
            "element, or a shape that broadcasts (e.g. (channels, 1, 1) per channel)."
        )
    return variance.to(device=value.device, dtype=value.dtype).sqrt()


class NoisySites:
    """Noise attached to the sites of a model by forward hooks (made by :func:`noisy`).

    Attributes:
        model: the model.
        sites: the :class:`Site` objects, in ``named_modules()`` order.
        in_eval: whether the noise also acts while a site module is in eval mode.
        enabled: switch the noise off (``False``) and on again without removing the hooks.
    """

    def __init__(
        self,
        model: nn.Module,
        sites: tuple[Site, ...],
        *,
        in_eval: bool,
        generator: torch.Generator | None,
        seed: int | None,
    ) -> None:
        self.model = model
        self.sites = sites
        self.in_eval = in_eval
        self.enabled = True
        self._generator = generator
        self._seed = seed
        self._generators: dict[str, torch.Generator] = {}
        self._handles: list[Any] = []
        for site in sites:
            if site.noise.injection == "after":
                handle = site.module.register_forward_hook(self._after_hook(site))
            else:
                handle = site.module.register_forward_pre_hook(self._before_hook(site))
            self._handles.append(handle)

    @property
    def names(self) -> tuple[str, ...]:
        """The site names."""
        return tuple(site.name for site in self.sites)

    @property
    def attached(self) -> bool:
        """True until :meth:`remove`."""
        return bool(self._handles)

    def remove(self) -> None:
        """Detach every hook: the model computes exactly what it did before :func:`noisy`."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def __enter__(self) -> NoisySites:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.remove()

    def __repr__(self) -> str:
        listed = ", ".join(f"{site.name}: {site.noise}" for site in self.sites)
        state = "attached" if self.attached else "removed"
        return f"NoisySites({listed}; {state})"

    def _active(self, module: nn.Module) -> bool:
        return self.enabled and (module.training or self.in_eval)

    def _draws(self, device: torch.device) -> torch.Generator | None:
        if self._generator is not None:
            if torch.device(self._generator.device).type != device.type:
                raise ValueError(
                    f"generator is on {self._generator.device} but the model runs on {device}; give "
                    "a generator on the model's device, or a seed."
                )
            return self._generator
        if self._seed is None:
            return None
        generator = self._generators.get(device.type)
        if generator is None:
            generator = torch.Generator(device=device).manual_seed(self._seed)
            self._generators[device.type] = generator
        return generator

    def _noisy(self, site: Site, value: Any, where: str) -> Tensor:
        if not isinstance(value, Tensor) or not value.is_floating_point():
            raise TypeError(
                f"noise site {site.name!r} ({type(site.module).__name__}): its {where} must be a "
                f"floating-point tensor; got {getattr(value, 'dtype', type(value).__name__)}."
            )
        if value.ndim == 0:
            raise ValueError(
                f"noise site {site.name!r}: its {where} is a scalar; a site needs a batch dimension."
            )
        return add_noise(value, site.noise, self._draws(value.device), presentation_dims=1)

    def _after_hook(self, site: Site) -> Callable[..., Any]:
        def hook(module: nn.Module, args: Any, output: Any) -> Any:
            if not self._active(module) or site.noise.is_zero:
                return None
            return self._noisy(site, output, "output")

        return hook

    def _before_hook(self, site: Site) -> Callable[..., Any]:
        def hook(module: nn.Module, args: tuple[Any, ...]) -> Any:
            if not self._active(module) or site.noise.is_zero:
                return None
            if not args:
                raise TypeError(
                    f"noise site {site.name!r} is called without a positional input; injection "
                    "'before' needs one."
                )
            return (self._noisy(site, args[0], "input"), *args[1:])

        return hook


def noisy(
    model: nn.Module,
    noise: Noise | Sequence[Noise] | Mapping[str, Noise],
    *,
    sites: SiteSelector = None,
    in_eval: bool = False,
    seed: int | None = None,
    generator: torch.Generator | None = None,
) -> NoisySites:
    """Make the neurons of ``model`` noisy at its sites, in place, until removed.

    Args:
        model: any ``nn.Module``.
        noise: a :class:`~noiseprop.noise.Noise` for every site, one per site, or a mapping from
            glob patterns on site names to noise (unmatched sites stay noise-free).
        sites: which modules are sites (:func:`find_sites`); default every activation module.
        in_eval: also add the noise while the model is in eval mode (default: only in training).
        seed: seed of the draws (one generator per device type); default the global generator,
            as dropout does.
        generator: a ``torch.Generator`` to draw from instead (not with ``seed``).

    Returns:
        A :class:`NoisySites`; use it as a context manager, or call ``remove()``.

    Example:
        Noise-aware training in your own loop:

        >>> import torch
        >>> from torch import nn
        >>> from noiseprop import Noise
        >>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> with noisy(model, Noise(AU=0.01), seed=0) as noise:
        ...     loss = model(torch.ones(5, 4)).square().mean()
        ...     loss.backward()
        >>> noise
        NoisySites(1: AU=0.01; removed)
        >>> model[0].weight.grad.shape
        torch.Size([8, 4])
    """
    found = find_sites(model, sites)
    names = [name for name, _ in found]
    noises = site_noises(noise, names)
    if not isinstance(in_eval, bool):
        raise TypeError(f"in_eval must be True or False; got {in_eval!r}.")
    if seed is not None and generator is not None:
        raise ValueError("give seed or generator, not both.")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        raise ValueError(f"seed must be an integer >= 0 or None; got {seed!r}.")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator; got {type(generator).__name__}.")
    chosen = tuple(Site(name, module, site_noise) for (name, module), site_noise in zip(found, noises))
    return NoisySites(model, chosen, in_eval=in_eval, generator=generator, seed=seed)
