"""The four kinds of neuron noise and where they act (SCIENCE.md section 1).

A noisy neuron with noise-free response ``s = f(x)`` outputs::

    y = s * (1 + xi_MU + xi_MC) + xi_AU + xi_AC

where every ``xi`` is zero-mean Gaussian, white (fresh for every presentation of an input), with
**variance** equal to the intensity given here: ``Var(xi_AU) = Noise.AU`` and so on (some papers write
``xi = sqrt(2 D) eta``; this package does not). The uncorrelated kinds (``AU``, ``MU``) are drawn
independently for every neuron, the correlated kinds (``AC``, ``MC``) once per layer and presentation.

With ``injection="before"`` the same noise acts on the weighted input ``x`` instead, and the neuron
outputs ``f(x * (1 + xi_MU + xi_MC) + xi_AU + xi_AC)``.

Which layers are noisy, and how much, is a *noise specification*: a single :class:`Noise` (every layer
of the network, hidden and output, the default of the research), a sequence of one :class:`Noise` per
layer, or a mapping from layer number (1 = first hidden layer, ``depth`` = output layer) to
:class:`Noise`, in which unlisted layers are noise-free.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Literal

from noiseprop._validation import check_choice, check_nonnegative

__all__ = ["KINDS", "Noise", "NoiseSpec", "per_layer"]

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


@dataclass(frozen=True, kw_only=True)
class Noise:
    """Noise intensities of one layer, as variances.

    Attributes:
        AU: variance of the additive uncorrelated noise (independent for every neuron).
        AC: variance of the additive correlated noise (one value shared by the layer).
        MU: variance of the multiplicative uncorrelated noise.
        MC: variance of the multiplicative correlated noise.
        injection: ``"after"`` the activation function (the default, SCIENCE.md section 1) or
            ``"before"`` it, on the weighted input.

    Example:
        >>> Noise(AU=1e-3, MC=1e-4)
        Noise(AU=0.001, AC=0.0, MU=0.0, MC=0.0001, injection='after')
        >>> Noise.parse("AU=1e-3, MC=1e-4") == Noise(AU=1e-3, MC=1e-4)
        True
        >>> str(Noise(AC=2e-3))
        'AC=0.002'
    """

    AU: float = 0.0
    AC: float = 0.0
    MU: float = 0.0
    MC: float = 0.0
    injection: Literal["after", "before"] = "after"

    def __post_init__(self) -> None:
        for kind in KINDS:
            value = check_nonnegative(
                f"Noise.{kind}",
                getattr(self, kind),
                what="variance",
                hint=f"It is the variance of the {_KIND_NAMES[kind]} noise.",
            )
            object.__setattr__(self, kind, value)
        check_choice("Noise.injection", self.injection, _INJECTIONS)

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

    def __str__(self) -> str:
        items = [f"{kind}={getattr(self, kind):g}" for kind in KINDS if getattr(self, kind) > 0]
        if self.injection != "after":
            items.append(f"injection={self.injection}")
        return ",".join(items) if items else "none"

    @property
    def is_zero(self) -> bool:
        """True when every intensity is zero."""
        return all(getattr(self, kind) == 0 for kind in KINDS)

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
        """The fields as a plain dictionary (for JSON)."""
        return {field.name: getattr(self, field.name) for field in fields(self)}


NoiseSpec = Noise | Sequence[Noise] | Mapping[int, Noise]
"""A single :class:`Noise` for every layer, one per layer, or ``{layer_number: Noise}``."""


def per_layer(noise: NoiseSpec, depth: int) -> tuple[Noise, ...]:
    """Resolve a noise specification into one :class:`Noise` per layer (layers 1..depth).

    Example:
        >>> [str(n) for n in per_layer({2: Noise(AU=1e-3)}, depth=3)]
        ['none', 'AU=0.001', 'none']
    """
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
        if len(noise) != depth:
            raise ValueError(
                f"noise as a sequence must hold one Noise per layer ({depth} for this network); "
                f"got {len(noise)}."
            )
        for index, layer_noise in enumerate(noise):
            if not isinstance(layer_noise, Noise):
                raise TypeError(f"noise[{index}] must be a Noise; got {type(layer_noise).__name__}.")
        return tuple(noise)
    raise TypeError(
        "noise must be a Noise, a sequence of one Noise per layer or a mapping "
        f"{{layer: Noise}}; got {type(noise).__name__}."
    )
