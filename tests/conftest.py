"""Shared test settings.

Statistical tests take a ``seed`` fixture. By default each runs with one fixed seed; set
``NOISEPROP_TEST_SEEDS`` to rerun them over many seeds, e.g. ``NOISEPROP_TEST_SEEDS=0-49 pytest``
(a range) or ``NOISEPROP_TEST_SEEDS=3,7,11`` (a list). With 4 standard errors as the tolerance, a
correct implementation fails about once in 16,000 comparisons when the standard error is known
exactly, and about once in 3,000 when it is a batch-means estimate from 32 groups (Student's t with
31 degrees of freedom); tests that rerun many comparisons use more groups.
"""

from __future__ import annotations

import os

import pytest

SIGMAS = 4.0
"""Standard errors allowed between a Monte Carlo estimate and its exact value."""


def _seeds() -> list[int]:
    text = os.environ.get("NOISEPROP_TEST_SEEDS", "").strip()
    if not text:
        return [20261130]
    seeds: list[int] = []
    for part in text.split(","):
        low, sep, high = part.partition("-")
        seeds.extend(range(int(low), int(high) + 1) if sep else [int(low)])
    return seeds


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "seed" in metafunc.fixturenames:
        metafunc.parametrize("seed", _seeds())


def assert_within(estimate: float, expected: float, stderr: float, sigmas: float = SIGMAS) -> None:
    """Assert that a Monte Carlo estimate lies within ``sigmas`` standard errors of its exact value."""
    assert stderr > 0, f"standard error must be > 0, got {stderr}"
    z = (estimate - expected) / stderr
    assert abs(z) <= sigmas, (
        f"estimate {estimate:.6g} vs exact {expected:.6g}: {z:+.2f} standard errors "
        f"(stderr {stderr:.3g}, relative error {(estimate - expected) / expected:+.3%})"
    )
