"""Activation functions with their derivatives (docs/THEORY.md sections 1-3).

Each activation is a small frozen dataclass that maps a tensor to a tensor (``f``) and gives the slope
``f'`` that the first-order theory needs. They are registered by name so that networks can be saved and
loaded without pickle; a user adds one by subclassing :class:`Activation` and decorating the class
with :func:`register_activation`::

    @register_activation
    @dataclass(frozen=True, kw_only=True)
    class Softsign(Activation):
        name: ClassVar[str] = "softsign"
        def __call__(self, x): return x / (1 + x.abs())
        def derivative(self, x): return 1 / (1 + x.abs()) ** 2
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, ClassVar

from noiseprop._validation import check_finite, check_positive

if TYPE_CHECKING:
    from torch import Tensor

__all__ = [
    "Activation",
    "ELU",
    "GELU",
    "GELUTanh",
    "Hardtanh",
    "LeakyReLU",
    "Linear",
    "ReLU",
    "Sigmoid",
    "Softplus",
    "Tanh",
    "activation_from_spec",
    "parse_activation",
    "register_activation",
]

_REGISTRY: dict[str, type[Activation]] = {}


@dataclass(frozen=True, kw_only=True)
class Activation:
    """Base class: an elementwise function ``f`` with its derivative ``f'``.

    Subclasses set the class attribute ``name`` and implement :meth:`__call__` and
    :meth:`derivative`; their dataclass fields are the parameters, all real numbers.
    """

    name: ClassVar[str] = ""
    linear: ClassVar[bool] = False
    """True when ``f`` is affine, so that first-order propagation is exact."""

    def __call__(self, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def derivative(self, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def parameters(self) -> dict[str, float]:
        """The parameters by name."""
        return {field.name: getattr(self, field.name) for field in fields(self)}

    def to_spec(self) -> dict[str, object]:
        """A JSON-able description: ``{"name": ..., **parameters}``."""
        return {"name": self.name, **self.parameters()}

    def __str__(self) -> str:
        """``name`` or ``name:key=value,...`` listing the parameters that differ from the defaults
        (the form :func:`parse_activation` reads)."""
        defaults = {field.name: field.default for field in fields(self)}
        params = ",".join(
            f"{key}={_number(value)}"
            for key, value in self.parameters().items()
            if value != defaults[key]
        )
        return f"{self.name}:{params}" if params else self.name


def _number(value: float) -> str:
    """``value`` in the short ``%g`` form when that reads back exactly, else in full (``repr``)."""
    short = f"{value:g}"
    return short if float(short) == value else repr(float(value))


def register_activation(cls: type[Activation]) -> type[Activation]:
    """Class decorator that makes an :class:`Activation` subclass loadable by its ``name``."""
    if not (isinstance(cls, type) and issubclass(cls, Activation)) or not cls.name:
        raise TypeError("register_activation expects an Activation subclass with a non-empty name.")
    _REGISTRY[cls.name] = cls
    return cls


def _known() -> str:
    return ", ".join(sorted(_REGISTRY))


def activation_from_spec(spec: dict[str, object]) -> Activation:
    """Build an activation from :meth:`Activation.to_spec` output.

    Raises:
        ValueError: for an unknown name (listing the known ones) or unknown parameters.
    """
    if not isinstance(spec, dict) or "name" not in spec:
        raise ValueError(f"activation spec must be a dict with a 'name'; got {spec!r}.")
    params = dict(spec)
    name = params.pop("name")
    cls = _REGISTRY.get(name)  # type: ignore[arg-type]
    if cls is None:
        raise ValueError(
            f"activation must be one of {_known()} (or a class registered with "
            f"register_activation); got {name!r}."
        )
    allowed = {field.name for field in fields(cls)}
    unknown = set(params) - allowed
    if unknown:
        raise ValueError(
            f"activation {name!r} takes parameters {sorted(allowed) or 'none'}; got unknown "
            f"{sorted(unknown)}."
        )
    return cls(**params)


def parse_activation(text: str) -> Activation:
    """Read an activation from ``"name"`` or ``"name:key=value,key=value"``.

    Example:
        >>> parse_activation("sigmoid:gain=4,centre=0.5")
        Sigmoid(gain=4.0, centre=0.5)
        >>> parse_activation("linear:slope=0.9")
        Linear(slope=0.9, offset=0.0)
    """
    if isinstance(text, Activation):
        return text
    if not isinstance(text, str):
        raise TypeError(f"activation must be a string such as 'sigmoid:gain=4'; got {text!r}.")
    name, _, rest = text.strip().partition(":")
    spec: dict[str, object] = {"name": name.strip().lower()}
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, sep, raw = item.partition("=")
        if not sep:
            raise ValueError(
                f"activation parameter {item!r} in {text!r} is malformed; expected key=value."
            )
        try:
            spec[key.strip()] = float(raw)
        except ValueError:
            raise ValueError(
                f"activation parameter {key.strip()!r} in {text!r} must be a number; got {raw!r}."
            ) from None
    return activation_from_spec(spec)


@register_activation
@dataclass(frozen=True, kw_only=True)
class Sigmoid(Activation):
    """Logistic sigmoid with gain and centre.

    ``f(x) = 1 / (1 + exp(-gain (x - centre)))``, ``f'(x) = gain f(x) (1 - f(x))``; the slope at the
    centre is ``gain / 4``.

    Example:
        >>> import torch
        >>> f = Sigmoid()
        >>> round(float(f(torch.tensor(0.659046, dtype=torch.float64))), 6)  # fixed point
        0.659046
        >>> round(float(f.derivative(torch.tensor(0.659046, dtype=torch.float64))), 6)
        0.224704
    """

    name: ClassVar[str] = "sigmoid"
    gain: float = 1.0
    centre: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "gain", check_positive("Sigmoid.gain", self.gain))
        object.__setattr__(self, "centre", check_finite("Sigmoid.centre", self.centre))

    def __call__(self, x: Tensor) -> Tensor:
        import torch

        if self.gain == 1 and self.centre == 0:
            return torch.sigmoid(x)
        return torch.sigmoid(self.gain * (x - self.centre))

    def derivative(self, x: Tensor) -> Tensor:
        value = self(x)
        return self.gain * value * (1 - value)


@register_activation
@dataclass(frozen=True, kw_only=True)
class Linear(Activation):
    """Affine activation ``f(x) = slope x + offset``, ``f'(x) = slope`` (docs/THEORY.md section 2)."""

    name: ClassVar[str] = "linear"
    linear: ClassVar[bool] = True
    slope: float = 1.0
    offset: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "slope", check_finite("Linear.slope", self.slope))
        object.__setattr__(self, "offset", check_finite("Linear.offset", self.offset))

    def __call__(self, x: Tensor) -> Tensor:
        return self.slope * x + self.offset

    def derivative(self, x: Tensor) -> Tensor:
        import torch

        return torch.full_like(x, self.slope)


@register_activation
@dataclass(frozen=True, kw_only=True)
class Tanh(Activation):
    """Hyperbolic tangent ``f(x) = tanh(gain x)``, ``f'(x) = gain (1 - f(x)^2)``."""

    name: ClassVar[str] = "tanh"
    gain: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "gain", check_positive("Tanh.gain", self.gain))

    def __call__(self, x: Tensor) -> Tensor:
        import torch

        return torch.tanh(self.gain * x)

    def derivative(self, x: Tensor) -> Tensor:
        value = self(x)
        return self.gain * (1 - value * value)


@register_activation
@dataclass(frozen=True, kw_only=True)
class ReLU(Activation):
    """Rectifier ``f(x) = max(x, 0)``, ``f'(x) = 1 if x > 0 else 0``."""

    name: ClassVar[str] = "relu"

    def __call__(self, x: Tensor) -> Tensor:
        import torch

        return torch.relu(x)

    def derivative(self, x: Tensor) -> Tensor:
        return (x > 0).to(x.dtype)


@register_activation
@dataclass(frozen=True, kw_only=True)
class LeakyReLU(Activation):
    """Leaky rectifier, as ``torch.nn.LeakyReLU``.

    ``f(x) = x`` for ``x > 0``, ``negative_slope x`` otherwise; ``f'(x) = 1`` for ``x > 0``,
    ``negative_slope`` for ``x <= 0`` (at the kink ``x = 0`` the slope on the left, as torch autograd).

    Example:
        >>> import torch
        >>> f = LeakyReLU(negative_slope=0.1)
        >>> f(torch.tensor([-2.0, 3.0], dtype=torch.float64)).tolist()
        [-0.2, 3.0]
        >>> f.derivative(torch.tensor([-2.0, 0.0, 3.0], dtype=torch.float64)).tolist()
        [0.1, 0.1, 1.0]
    """

    name: ClassVar[str] = "leaky_relu"
    negative_slope: float = 0.01

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "negative_slope", check_finite("LeakyReLU.negative_slope", self.negative_slope)
        )

    def __call__(self, x: Tensor) -> Tensor:
        import torch

        return torch.nn.functional.leaky_relu(x, self.negative_slope)

    def derivative(self, x: Tensor) -> Tensor:
        import torch

        return torch.where(x > 0, torch.ones_like(x), torch.full_like(x, self.negative_slope))


@register_activation
@dataclass(frozen=True, kw_only=True)
class GELU(Activation):
    """Gaussian error linear unit, exact form, as ``torch.nn.GELU()`` (``approximate="none"``).

    ``f(x) = x Phi(x) = x (1 + erf(x / sqrt 2)) / 2`` with ``Phi`` the standard normal distribution
    function; ``f'(x) = Phi(x) + x phi(x)``, ``phi(x) = exp(-x^2 / 2) / sqrt(2 pi)``. Smooth: no kink.
    :class:`GELUTanh` is torch's tanh approximation.

    Example:
        >>> import torch
        >>> one = torch.tensor(1.0, dtype=torch.float64)
        >>> round(float(GELU()(one)), 6), round(float(GELU().derivative(one)), 6)  # Phi(1), +phi(1)
        (0.841345, 1.083315)
    """

    name: ClassVar[str] = "gelu"

    def __call__(self, x: Tensor) -> Tensor:
        import torch

        return torch.nn.functional.gelu(x)

    def derivative(self, x: Tensor) -> Tensor:
        import torch

        cdf = 0.5 * (1 + torch.erf(x * math.sqrt(0.5)))
        pdf = torch.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)
        return cdf + x * pdf


@register_activation
@dataclass(frozen=True, kw_only=True)
class GELUTanh(Activation):
    """GELU in its tanh approximation, as ``torch.nn.GELU(approximate="tanh")``.

    ``f(x) = x (1 + tanh(u)) / 2`` with ``u = sqrt(2/pi) (x + 0.044715 x^3)``;
    ``f'(x) = (1 + tanh(u)) / 2 + x (1 - tanh(u)^2) sqrt(2/pi) (1 + 3 * 0.044715 x^2) / 2``.

    A class of its own rather than a flag on :class:`GELU`, because activation parameters are numbers
    (the ``name:key=value`` form): saved and parsed as ``"gelu_tanh"``.

    Example:
        >>> import torch
        >>> one = torch.tensor(1.0, dtype=torch.float64)
        >>> f = GELUTanh()
        >>> round(float(f(one)), 6), round(float(f.derivative(one)), 6)
        (0.841192, 1.082964)
    """

    name: ClassVar[str] = "gelu_tanh"

    def __call__(self, x: Tensor) -> Tensor:
        import torch

        return torch.nn.functional.gelu(x, approximate="tanh")

    def derivative(self, x: Tensor) -> Tensor:
        import torch

        scale = math.sqrt(2 / math.pi)
        value = torch.tanh(scale * (x + _GELU_CUBIC * x**3))
        inner = scale * (1 + 3 * _GELU_CUBIC * x * x)
        return 0.5 * (1 + value) + 0.5 * x * (1 - value * value) * inner


_GELU_CUBIC = 0.044715
"""The cubic coefficient of the tanh approximation of GELU (Hendrycks and Gimpel 2016; torch's)."""


@register_activation
@dataclass(frozen=True, kw_only=True)
class Softplus(Activation):
    """Smooth rectifier, as ``torch.nn.Softplus`` (the identity above ``threshold`` included).

    ``f(x) = log(1 + exp(beta x)) / beta`` where ``beta x <= threshold``, ``f(x) = x`` where
    ``beta x > threshold`` (torch's switch for numerical stability, a jump of at most
    ``log(1 + exp(-threshold)) / beta`` there); ``f'(x) = sigmoid(beta x)`` where
    ``beta x <= threshold``, ``1`` above it, as torch autograd.

    Example:
        >>> import torch
        >>> zero = torch.tensor(0.0, dtype=torch.float64)
        >>> f = Softplus(beta=2)
        >>> round(float(f(zero)), 6), float(f.derivative(zero))  # log(2) / 2, sigmoid(0)
        (0.346574, 0.5)
    """

    name: ClassVar[str] = "softplus"
    beta: float = 1.0
    threshold: float = 20.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "beta", check_positive("Softplus.beta", self.beta))
        object.__setattr__(self, "threshold", check_finite("Softplus.threshold", self.threshold))

    def __call__(self, x: Tensor) -> Tensor:
        import torch

        return torch.nn.functional.softplus(x, beta=self.beta, threshold=self.threshold)

    def derivative(self, x: Tensor) -> Tensor:
        import torch

        scaled = x * self.beta
        return torch.where(scaled > self.threshold, torch.ones_like(x), torch.sigmoid(scaled))


@register_activation
@dataclass(frozen=True, kw_only=True)
class ELU(Activation):
    """Exponential linear unit, as ``torch.nn.ELU``.

    ``f(x) = x`` for ``x > 0``, ``alpha (exp(x) - 1)`` otherwise; ``f'(x) = 1`` for ``x > 0``,
    ``alpha exp(x)`` for ``x <= 0`` (at ``x = 0``: ``alpha``, the slope on the left, as torch
    autograd; no kink when ``alpha = 1``).

    Example:
        >>> import torch
        >>> x = torch.tensor([-1.0, 0.0, 2.0], dtype=torch.float64)
        >>> [round(v, 6) for v in ELU()(x).tolist()]  # exp(-1) - 1
        [-0.632121, 0.0, 2.0]
        >>> [round(v, 6) for v in ELU(alpha=0.5).derivative(x).tolist()]
        [0.18394, 0.5, 1.0]
    """

    name: ClassVar[str] = "elu"
    alpha: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "alpha", check_finite("ELU.alpha", self.alpha))

    def __call__(self, x: Tensor) -> Tensor:
        import torch

        return torch.nn.functional.elu(x, alpha=self.alpha)

    def derivative(self, x: Tensor) -> Tensor:
        import torch

        return torch.where(x > 0, torch.ones_like(x), self.alpha * torch.exp(x))


@register_activation
@dataclass(frozen=True, kw_only=True)
class Hardtanh(Activation):
    """Clipped identity, as ``torch.nn.Hardtanh`` (``torch.nn.ReLU6`` is ``min_val=0, max_val=6``).

    ``f(x) = min(max(x, min_val), max_val)``; ``f'(x) = 1`` for ``min_val < x < max_val``, ``0``
    elsewhere (at both kinks ``0``, as torch autograd).

    Example:
        >>> import torch
        >>> x = torch.tensor([-3.0, -1.0, 0.5, 1.0, 3.0], dtype=torch.float64)
        >>> Hardtanh()(x).tolist(), Hardtanh().derivative(x).tolist()
        ([-1.0, -1.0, 0.5, 1.0, 1.0], [0.0, 0.0, 1.0, 0.0, 0.0])
    """

    name: ClassVar[str] = "hardtanh"
    min_val: float = -1.0
    max_val: float = 1.0

    def __post_init__(self) -> None:
        low = check_finite("Hardtanh.min_val", self.min_val)
        high = check_finite("Hardtanh.max_val", self.max_val)
        if not high > low:
            raise ValueError(
                f"Hardtanh.max_val must be a finite number > Hardtanh.min_val ({low!r}); got "
                f"{self.max_val!r}."
            )
        object.__setattr__(self, "min_val", low)
        object.__setattr__(self, "max_val", high)

    def __call__(self, x: Tensor) -> Tensor:
        import torch

        return torch.nn.functional.hardtanh(x, self.min_val, self.max_val)

    def derivative(self, x: Tensor) -> Tensor:
        return ((x > self.min_val) & (x < self.max_val)).to(x.dtype)
