"""Parameter checks with one error template for the whole package.

Every message names the parameter, the accepted range and the value received, e.g.
``Noise.AU must be a finite variance >= 0; got -0.001.``
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

__all__ = [
    "check_choice",
    "check_finite",
    "check_nonnegative",
    "check_positive",
    "check_positive_int",
]


def _fail(name: str, expected: str, value: Any, hint: str = "") -> ValueError:
    message = f"{name} must be {expected}; got {value!r}."
    if hint:
        message += f" {hint}"
    return ValueError(message)


def _as_real(name: str, value: Any, expected: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        try:
            import numpy as np

            if isinstance(value, np.generic) and np.isrealobj(value):
                return float(value)
        except ImportError:  # pragma: no cover - numpy is a dependency
            pass
        raise TypeError(f"{name} must be {expected}; got {type(value).__name__} {value!r}.")
    return float(value)


def check_finite(name: str, value: Any) -> float:
    """Return ``value`` as a float, or raise if it is not a finite real number."""
    number = _as_real(name, value, "a finite real number")
    if not math.isfinite(number):
        raise _fail(name, "a finite real number", value)
    return number


def check_nonnegative(name: str, value: Any, what: str = "number", hint: str = "") -> float:
    """Return ``value`` as a float, or raise if it is not finite and >= 0."""
    expected = f"a finite {what} >= 0"
    number = _as_real(name, value, expected)
    if not math.isfinite(number) or number < 0:
        raise _fail(name, expected, value, hint)
    return number


def check_positive(name: str, value: Any, what: str = "number") -> float:
    """Return ``value`` as a float, or raise if it is not finite and > 0."""
    expected = f"a finite {what} > 0"
    number = _as_real(name, value, expected)
    if not math.isfinite(number) or number <= 0:
        raise _fail(name, expected, value)
    return number


MAX_SEED = 2**63 - 1
"""The largest seed: torch's generators take a signed 64-bit integer."""

MAX_REPEATS = 2**53
"""The most noise draws per input a run accepts: float64 counts them exactly up to here (and a run
of more could not finish: 2^53 passes of even one neuron take years)."""


def check_positive_int(name: str, value: Any, minimum: int = 1, maximum: int | None = None) -> int:
    """Return ``value`` as an int, or raise if it is not an integer >= ``minimum`` (and <=
    ``maximum`` when given)."""
    expected = f"an integer >= {minimum}" + ("" if maximum is None else f" and <= {maximum}")
    if isinstance(value, bool) or not isinstance(value, int):
        try:
            import numpy as np

            if isinstance(value, np.integer):
                value = int(value)
            else:
                raise TypeError
        except TypeError:
            raise TypeError(
                f"{name} must be {expected}; got {type(value).__name__} {value!r}."
            ) from None
    if value < minimum or (maximum is not None and value > maximum):
        raise _fail(name, expected, value)
    return int(value)


def check_choice(name: str, value: Any, choices: Iterable[str]) -> str:
    """Return ``value``, or raise if it is not one of ``choices``."""
    options = tuple(choices)
    if value not in options:
        listed = ", ".join(repr(option) for option in options)
        raise _fail(name, f"one of {listed}", value)
    return value
