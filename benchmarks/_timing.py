"""Timing on a noisy machine: interleaved rounds, medians, paired ratios.

Every case of a comparison runs once per round, in alternating order (forward, then backward), so that
a slow spell of the machine (another process, a frequency change) falls on every case alike. A ratio is
the median over the rounds of the ratio *within* a round, and its spread is the range of those
per-round ratios: a number measured in the same run, never against a figure from another day.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

__all__ = ["Timings", "interleave"]


@dataclass(frozen=True)
class Timings:
    """Seconds per run of each case, one entry per round (same order for every case)."""

    seconds: Mapping[str, list[float]]

    def median(self, case: str) -> float:
        return statistics.median(self.seconds[case])

    def ratio(self, numerator: str, denominator: str) -> tuple[float, float, float]:
        """``(median, lowest, highest)`` over the rounds of ``time[numerator] / time[denominator]``."""
        ratios = [a / b for a, b in zip(self.seconds[numerator], self.seconds[denominator])]
        return statistics.median(ratios), min(ratios), max(ratios)


def interleave(cases: Mapping[str, Callable[[], object]], *, rounds: int, warmup: int = 1) -> Timings:
    """Run every case ``warmup`` times untimed, then ``rounds`` timed rounds of all the cases."""
    for case in cases.values():
        for _ in range(warmup):
            case()
    seconds: dict[str, list[float]] = {name: [] for name in cases}
    names = list(cases)
    for index in range(rounds):
        for name in names if index % 2 == 0 else reversed(names):
            gc.collect()
            start = time.perf_counter()
            cases[name]()
            seconds[name].append(time.perf_counter() - start)
    return Timings(seconds)
