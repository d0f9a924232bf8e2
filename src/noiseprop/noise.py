"""The four kinds of neuron noise and where they act (docs/THEORY.md section 1).

A noisy neuron with noise-free response ``s = f(x)`` outputs::

    y = s * (1 + xi_MU + xi_MC) + xi_AU + xi_AC

where every ``xi`` is zero-mean Gaussian, white (fresh for every presentation of an input), with
**variance** equal to the intensity given here: ``Var(xi_AU) = Noise.AU`` and so on (some papers write
``xi = sqrt(2 D) eta``; this package does not). The uncorrelated kinds (``AU``, ``MU``) are drawn
independently for every neuron, the correlated kinds (``AC``, ``MC``) once per layer and presentation.

With ``injection="before"`` the same noise acts on the weighted input ``x`` instead, and the neuron
outputs ``f(x * (1 + xi_MU + xi_MC) + xi_AU + xi_AC)``.

An intensity is a number, or (for models with noise sites, :mod:`noiseprop.sites`) a tensor of
variances broadcastable to the per-presentation shape of the site's output: device-to-device variation
per neuron or per channel. A correlated kind with a tensor intensity is still one draw per site and
presentation, scaled element by element: ``xi_AC,i = sqrt(D_AC,i) eta``.

Which layers are noisy, and how much, is a *noise specification*: a single :class:`Noise` (every layer
of the network, hidden and output, the default of the research), a sequence of one :class:`Noise` per
layer, or a mapping from layer number (1 = first hidden layer, ``depth`` = output layer) to
:class:`Noise`, in which unlisted layers are noise-free.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING, Any, Literal

from noiseprop._validation import check_choice, check_nonnegative

if TYPE_CHECKING:
    from torch import Tensor

__all__ = ["KINDS", "Noise", "NoiseSpec", "check_representable", "one_per", "per_layer"]

KINDS: tuple[str, ...] = ("AU", "AC", "MU", "MC")
"""The four kinds: additive/multiplicative, uncorrelated/correlated."""

_KIND_NAMES = {
    "AU": "additive uncorrelated",
    "AC": "additive correlated",
    "MU": "multiplicative uncorrelated",
    "MC": "multiplicative correlated",
}
_INJECTIONS = ("after", "before")
_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")


def _intensity(kind: str, value: Any) -> float | Tensor:
    """A validated intensity: a float, or a float64 CPU tensor of variances (a 0-d one becomes a
    float). torch is imported only for a value that is not a plain number."""
    hint = f"It is the variance of the {_KIND_NAMES[kind]} noise."
    numpy_scalar = type(value).__module__ == "numpy" and type(value).__name__ != "ndarray"
    if isinstance(value, (int, float, str)) or value is None or numpy_scalar:
        return check_nonnegative(f"Noise.{kind}", value, what="variance", hint=hint)
    import torch

    try:
        tensor = torch.as_tensor(value).detach()
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(
            f"Noise.{kind} must be a finite variance >= 0 or a tensor of them; got "
            f"{type(value).__name__} {value!r}."
        ) from None
    if not (tensor.is_floating_point() or tensor.dtype in (torch.int32, torch.int64)):
        raise TypeError(f"Noise.{kind} must hold real variances; got dtype {tensor.dtype}.")
    tensor = tensor.to(device="cpu", dtype=torch.float64).clone()
    if tensor.numel() == 0:
        raise ValueError(f"Noise.{kind} must hold at least one variance; got an empty tensor.")
    bad = ~torch.isfinite(tensor) | (tensor < 0)
    if bool(bad.any()):
        raise ValueError(
            f"Noise.{kind} must hold finite variances >= 0; got {int(bad.sum())} negative, NaN or "
            f"infinite entries (first: {float(tensor[bad][0])!r}). {hint}"
        )
    if tensor.ndim == 0:
        return float(tensor)
    return tensor


@dataclass(frozen=True, kw_only=True, eq=False)
class Noise:
    """Noise intensities of one layer (or site), as variances.

    Attributes:
        AU: variance of the additive uncorrelated noise (independent for every neuron).
        AC: variance of the additive correlated noise (one value shared by the layer).
        MU: variance of the multiplicative uncorrelated noise.
        MC: variance of the multiplicative correlated noise.
            Each may also be a tensor of variances broadcastable to a site's per-presentation
            output shape (models with noise sites only; see the module docstring).
        injection: ``"after"`` the activation function (the default, docs/THEORY.md section 1) or
            ``"before"`` it, on the weighted input.

    Example:
        >>> Noise(AU=1e-3, MC=1e-4)
        Noise(AU=0.001, AC=0.0, MU=0.0, MC=0.0001, injection='after')
        >>> Noise.parse("AU=1e-3, MC=1e-4") == Noise(AU=1e-3, MC=1e-4)
        True
        >>> str(Noise(AC=2e-3))
        'AC=0.002'
    """

    AU: float | Tensor = 0.0
    AC: float | Tensor = 0.0
    MU: float | Tensor = 0.0
    MC: float | Tensor = 0.0
    injection: Literal["after", "before"] = "after"

    def __post_init__(self) -> None:
        for kind in KINDS:
            object.__setattr__(self, kind, _intensity(kind, getattr(self, kind)))
        check_choice("Noise.injection", self.injection, _INJECTIONS)

    def _key(self) -> tuple[object, ...]:
        """The fields, with a tensor intensity as ``(shape, values)``: for ``==`` and ``hash``."""
        return tuple(
            (tuple(value.shape), tuple(value.flatten().tolist())) if self._is_tensor(value) else value
            for value in (getattr(self, kind) for kind in KINDS)
        ) + (self.injection,)

    @staticmethod
    def _is_tensor(value: object) -> bool:
        return not isinstance(value, float)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Noise):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    @property
    def is_scalar(self) -> bool:
        """True when every intensity is a number (no tensor of per-element variances)."""
        return all(isinstance(getattr(self, kind), float) for kind in KINDS)

    @classmethod
    def parse(cls, text: str) -> Noise:
        """Read a noise from a string such as ``"AU=1e-3,MC=1e-4"``.

        Items are ``KIND=VARIANCE`` separated by commas, kinds among ``AU, AC, MU, MC`` (any case),
        plus an optional ``injection=after|before``. An empty string or ``"none"`` is no noise.

        Raises:
            ValueError: naming the offending item for an unknown kind, a repeated kind, a malformed
                item or number, or a negative, NaN or infinite variance.
        """
        if not isinstance(text, str):
            raise TypeError(f"Noise.parse expects a string such as 'AU=1e-3,MC=1e-4'; got {text!r}.")
        stripped = text.strip()
        if stripped.lower() in ("", "none", "0"):
            return cls()
        values: dict[str, object] = {}
        for item in stripped.split(","):
            item = item.strip()
            key, sep, raw = item.partition("=")
            key, raw = key.strip(), raw.strip()
            if not sep or not key or not raw:
                raise ValueError(
                    f"Noise string item {item!r} in {text!r} is malformed; expected KIND=VARIANCE "
                    f"such as 'AU=1e-3' (kinds: {', '.join(KINDS)})."
                )
            if key.lower() == "injection":
                name: str = "injection"
                value: object = raw.lower()
            else:
                name = key.upper()
                if name not in KINDS:
                    raise ValueError(
                        f"Noise string item {item!r} names an unknown kind {key!r}; expected one of "
                        f"{', '.join(KINDS)} (or injection=after|before)."
                    )
                if not _NUMBER.match(raw) and raw.lower() not in ("nan", "inf", "-inf", "+inf"):
                    raise ValueError(
                        f"Noise string item {item!r}: {raw!r} is not a number; expected a variance "
                        "such as 1e-3."
                    )
                value = float(raw)
            if name in values:
                raise ValueError(f"Noise string {text!r} gives {name} more than once.")
            values[name] = value
        return cls(**values)  # type: ignore[arg-type]

    def __repr__(self) -> str:
        values = ", ".join(f"{kind}={_show(getattr(self, kind), repr)}" for kind in KINDS)
        return f"Noise({values}, injection={self.injection!r})"

    def __str__(self) -> str:
        items = [f"{kind}={_show(getattr(self, kind), format)}" for kind in KINDS if self.has(kind)]
        if self.injection != "after":
            items.append(f"injection={self.injection}")
        return ",".join(items) if items else "none"

    def has(self, kind: str) -> bool:
        """True when the intensity of ``kind`` is nonzero (anywhere, for a tensor)."""
        value = getattr(self, kind)
        return bool(value > 0) if isinstance(value, float) else bool((value > 0).any())

    @property
    def is_zero(self) -> bool:
        """True when every intensity is zero."""
        return not any(self.has(kind) for kind in KINDS)

    def only(self, kind: str) -> Noise:
        """This noise with every kind but ``kind`` switched off."""
        check_choice("kind", kind, KINDS)
        return replace(self, **{other: 0.0 for other in KINDS if other != kind})

    def scaled(self, factor: float) -> Noise:
        """This noise with every intensity multiplied by ``factor`` (>= 0)."""
        factor = check_nonnegative("factor", factor)
        return replace(self, **{kind: getattr(self, kind) * factor for kind in KINDS})

    def on_layers(self, layers: Iterable[int]) -> dict[int, Noise]:
        """A noise specification with this noise on the given layers only (1-based).

        Example:
            >>> Noise(AU=1e-3).on_layers([1, 2])
            {1: Noise(AU=0.001, AC=0.0, MU=0.0, MC=0.0, injection='after'), 2: Noise(AU=0.001, AC=0.0, MU=0.0, MC=0.0, injection='after')}
        """  # noqa: E501
        return {int(layer): self for layer in layers}

    def as_dict(self) -> dict[str, object]:
        """The fields as a plain dictionary (for JSON; a tensor intensity as nested lists)."""
        return {
            field.name: value.tolist() if self._is_tensor(value) and field.name in KINDS else value
            for field in fields(self)
            for value in (getattr(self, field.name),)
        }


def _show(value: float | Tensor, form: Any) -> str:
    """A number as ``form`` shows it (``repr`` or ``format(x, 'g')``); a tensor by shape and range."""
    if isinstance(value, float):
        return repr(value) if form is repr else format(value, "g")
    low, high = float(value.min()), float(value.max())
    return f"tensor{tuple(value.shape)}[{low:g}..{high:g}]"


NoiseSpec = Noise | Sequence[Noise] | Mapping[int, Noise]
"""A single :class:`Noise` for every layer, one per layer, or ``{layer_number: Noise}``."""


def check_representable(noises: Sequence[Noise], dtype: Any) -> None:
    """Refuse an intensity whose standard deviation ``sqrt(D)`` overflows the run's ``dtype`` (a
    float32 simulation draws ``sqrt(D) eta`` in float32: ``D`` up to about 1.2e77)."""
    import torch

    largest = float(torch.finfo(dtype).max)
    for noise in noises:
        for kind in KINDS:
            value = getattr(noise, kind)
            peak = float(value.max()) if hasattr(value, "max") else float(value)
            if math.sqrt(peak) > largest:
                raise ValueError(
                    f"noise {kind}={peak:g}: its standard deviation overflows {dtype} (the largest "
                    f"variance there is about {largest**2:.2g}); simulate with dtype='float64' or a "
                    "smaller intensity."
                )


def per_layer(noise: NoiseSpec, depth: int) -> tuple[Noise, ...]:
    """Resolve a noise specification into one :class:`Noise` per layer (layers 1..depth).

    Example:
        >>> [str(n) for n in per_layer({2: Noise(AU=1e-3)}, depth=3)]
        ['none', 'AU=0.001', 'none']
    """
    resolved = _per_layer(noise, depth)
    for number, layer_noise in enumerate(resolved, start=1):
        if not layer_noise.is_scalar:
            raise ValueError(
                f"noise of layer {number} has tensor intensities ({layer_noise}); the dense Network "
                "engines take one variance per kind and layer. Per-element intensities act at the "
                "sites of a torch model: use network.to_torch() and simulate that model."
            )
    return resolved


def _per_layer(noise: NoiseSpec, depth: int) -> tuple[Noise, ...]:
    if isinstance(noise, Noise):
        return (noise,) * depth
    if isinstance(noise, Mapping):
        resolved = [Noise()] * depth
        for layer, layer_noise in noise.items():
            if isinstance(layer, bool) or not isinstance(layer, int) or not 1 <= layer <= depth:
                raise ValueError(
                    f"noise mapping keys must be layer numbers 1..{depth} (1 = first hidden layer, "
                    f"{depth} = output layer); got {layer!r}."
                )
            if not isinstance(layer_noise, Noise):
                raise TypeError(f"noise[{layer}] must be a Noise; got {type(layer_noise).__name__}.")
            resolved[layer - 1] = layer_noise
        return tuple(resolved)
    if isinstance(noise, Sequence) and not isinstance(noise, str):
        return one_per(noise, depth, f"layer ({depth} for this network)")
    raise TypeError(
        "noise must be a Noise, a sequence of one Noise per layer or a mapping "
        f"{{layer: Noise}}; got {type(noise).__name__}."
    )


def one_per(noise: Sequence[Noise], count: int, what: str) -> tuple[Noise, ...]:
    """A sequence of one :class:`Noise` per layer or site, checked: ``count`` of them, each a Noise
    (``what`` names the unit in the message, e.g. ``"layer (3 for this network)"``)."""
    if len(noise) != count:
        raise ValueError(f"noise as a sequence must hold one Noise per {what}; got {len(noise)}.")
    for index, value in enumerate(noise):
        if not isinstance(value, Noise):
            raise TypeError(f"noise[{index}] must be a Noise; got {type(value).__name__}.")
    return tuple(noise)
