"""``simulate`` against the floor (:mod:`benchmarks.floor`) on the three shapes, float32 and float64,
and with many inputs and few repeats (10,000 MNIST images, 64 and 16 repeats), float32."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from benchmarks._timing import interleave
from benchmarks.floor import Workload, bare_loop, draws_only, matmuls_only
from benchmarks.workloads import many_inputs, shapes
from noiseprop import simulate

__all__ = ["Row", "measure"]


@dataclass(frozen=True)
class Row:
    work: Workload
    simulate_s: float
    floor_s: float
    tight_s: float
    matmuls_s: float
    draws_s: float
    of_floor: tuple[float, float, float]  # floor time / simulate time: median, lowest, highest
    of_tight: tuple[float, float, float]

    @property
    def roofline_s(self) -> float:
        """Matrix products alone + draws alone (tight count of draws)."""
        return self.matmuls_s + self.draws_s

    @property
    def neuron_updates_per_s(self) -> float:
        return self.work.neuron_updates / self.simulate_s

    @property
    def presentations_per_s(self) -> float:
        return self.work.repeats * self.work.batch / self.simulate_s


def run_simulate(work: Workload) -> None:
    simulate(work.network, work.noise, work.inputs, repeats=work.repeats, seed=0, dtype=work.dtype)


def measure(*, rounds: int, scale: float, dtypes: tuple[torch.dtype, ...]) -> list[Row]:
    rows = []
    for dtype in dtypes:
        many = many_inputs(dtype) if dtype == torch.float32 else []
        for work in [*shapes(dtype, scale=scale), *many]:
            timings = interleave(
                {
                    "simulate": lambda work=work: run_simulate(work),
                    "floor": lambda work=work: bare_loop(work),
                    "tight": lambda work=work: bare_loop(work, merged=True),
                    "matmuls": lambda work=work: matmuls_only(work),
                    "draws": lambda work=work: draws_only(work, merged=True),
                },
                rounds=rounds,
            )
            rows.append(
                Row(
                    work=work,
                    simulate_s=timings.median("simulate"),
                    floor_s=timings.median("floor"),
                    tight_s=timings.median("tight"),
                    matmuls_s=timings.median("matmuls"),
                    draws_s=timings.median("draws"),
                    of_floor=timings.ratio("floor", "simulate"),
                    of_tight=timings.ratio("tight", "simulate"),
                )
            )
            print(f"  {format_row(rows[-1])}", flush=True)
    return rows


def format_row(row: Row) -> str:
    work = row.work
    median, low, high = row.of_floor
    return (
        f"{work.name}, {str(work.dtype).removeprefix('torch.')}: {median:.2f} of the floor "
        f"({low:.2f}-{high:.2f}), {row.of_tight[0]:.2f} of the tight floor, "
        f"{row.neuron_updates_per_s / 1e6:.0f} M neuron-updates/s"
    )


HEADER = (
    "| shape | dtype | repeats x inputs | chunk | simulate | floor | tight floor | roofline | "
    "fraction of the floor | of the tight floor | neuron-updates/s | repeats x inputs /s |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|"
)


def markdown(rows: list[Row]) -> str:
    lines = [HEADER]
    for row in rows:
        work = row.work
        median, low, high = row.of_floor
        lines.append(
            f"| {work.name} | {str(work.dtype).removeprefix('torch.')} | "
            f"{work.repeats} x {work.batch} | {work.chunk} | {row.simulate_s * 1e3:.0f} ms | "
            f"{row.floor_s * 1e3:.0f} ms | {row.tight_s * 1e3:.0f} ms | {row.roofline_s * 1e3:.0f} ms | "
            f"**{median:.2f}** ({low:.2f}-{high:.2f}) | {row.of_tight[0]:.2f} | "
            f"{row.neuron_updates_per_s:.3g} | {row.presentations_per_s:.3g} |"
        )
    return "\n".join(lines)
