"""Activation functions with their derivatives (SCIENCE.md sections 1-3).

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

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, ClassVar

from noiseprop._validation import check_finite, check_positive

if TYPE_CHECKING:
    from torch import Tensor

__all__ = [
    "Activation",
    "Linear",
    "ReLU",
    "Sigmoid",
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
            f"{key}={value:g}" for key, value in self.parameters().items() if value != defaults[key]
        )
        return f"{self.name}:{params}" if params else self.name


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

        return torch.sigmoid(self.gain * (x - self.centre))

    def derivative(self, x: Tensor) -> Tensor:
        value = self(x)
        return self.gain * value * (1 - value)


@register_activation
@dataclass(frozen=True, kw_only=True)
class Linear(Activation):
    """Affine activation ``f(x) = slope x + offset``, ``f'(x) = slope`` (SCIENCE.md section 2)."""

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
