"""``propagate`` against a simulation precise enough to answer the same question.

Two questions, because "2 % relative precision on every layer's variance" reads two ways:

* **per layer**: the per-layer variance (average over the layer's neurons and the inputs) of every
  layer with a standard error <= 2 % of its value;
* **per neuron**: every neuron's variance, for every input, with a standard error <= 2 % of its value
  (the median over the layer's neurons and inputs, for every layer): what ``propagate`` returns.

The repeats each needs come from a pilot simulation of ``PILOT`` repeats: a standard error falls as
``1 / sqrt(repeats)``, so ``repeats = PILOT * (relative stderr / 0.02)^2`` (at least 64: two repeats
per group of the batch-means error). Simulations run in float32 (the default), ``propagate`` in
float64 (its only dtype). The per-layer simulation is run and its precision checked; the per-neuron one
is priced at the measured seconds per repeat (the cost is linear in the repeats).
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass

import torch

from benchmarks._timing import interleave
from benchmarks.workloads import ALL_FOUR, mnist_inputs
from noiseprop import Network, Noise, propagate, simulate

__all__ = ["crossover", "mnist"]

PILOT = 256
TARGET = 0.02


@dataclass(frozen=True)
class Needed:
    per_layer: int
    per_neuron: int


def repeats_needed(network: Network, noise: Noise, inputs: torch.Tensor) -> Needed:
    pilot = simulate(network, noise, inputs, repeats=PILOT, seed=1)
    layer = max(stats.layer_variance_stderr / stats.layer_variance for stats in pilot.layers)
    neuron = max(float((stats.variance_stderr / stats.variance).median()) for stats in pilot.layers)
    return Needed(
        per_layer=max(64, math.ceil(PILOT * (layer / TARGET) ** 2)),
        per_neuron=max(64, math.ceil(PILOT * (neuron / TARGET) ** 2)),
    )


def _seconds(function, rounds: int = 3) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def mnist(*, images: int, rounds: int) -> dict[str, float]:
    """The MNIST shape: covariance and mean-field against the two simulations."""
    from noiseprop.training import default_network

    network, inputs, noise = default_network(), mnist_inputs(images), ALL_FOUR
    needed = repeats_needed(network, noise, inputs)
    probe = max(64, min(needed.per_neuron, 512))
    timings = interleave(
        {
            "covariance": lambda: propagate(network, noise, inputs, method="covariance"),
            "meanfield": lambda: propagate(network, noise, inputs, method="meanfield"),
            "per layer": lambda: simulate(network, noise, inputs, repeats=needed.per_layer, seed=2),
            "probe": lambda: simulate(network, noise, inputs, repeats=probe, seed=3),
        },
        rounds=rounds,
    )
    check = simulate(network, noise, inputs, repeats=needed.per_layer, seed=4)
    achieved = max(stats.layer_variance_stderr / stats.layer_variance for stats in check.layers)
    per_neuron_s = timings.median("probe") / probe * needed.per_neuron
    result = {
        "images": images,
        "covariance_s": timings.median("covariance"),
        "meanfield_s": timings.median("meanfield"),
        "per_layer_repeats": needed.per_layer,
        "per_layer_s": timings.median("per layer"),
        "per_layer_achieved": achieved,
        "per_neuron_repeats": needed.per_neuron,
        "per_neuron_s": per_neuron_s,
    }
    print(
        f"  MNIST, {images} images: covariance {result['covariance_s'] * 1e3:.0f} ms, mean-field "
        f"{result['meanfield_s'] * 1e3:.1f} ms; per layer {needed.per_layer} repeats "
        f"{result['per_layer_s'] * 1e3:.0f} ms; per neuron {needed.per_neuron} repeats "
        f"{per_neuron_s * 1e3:.0f} ms",
        flush=True,
    )
    return result


def crossover(*, widths: tuple[int, ...], depth: int, batch: int) -> list[dict[str, float]]:
    """Random sigmoid networks ``width`` wide and ``depth`` deep: where covariance stops paying."""
    rows = []
    for width in widths:
        network = Network.random([width] * (depth + 1), "sigmoid", seed=0)
        inputs = torch.rand(batch, width, generator=torch.Generator().manual_seed(0)) * 2 - 1
        needed = repeats_needed(network, ALL_FOUR, inputs)
        probe = max(64, min(needed.per_neuron, 256))
        covariance = _seconds(lambda: propagate(network, ALL_FOUR, inputs, method="covariance"))  # noqa: B023
        meanfield = _seconds(lambda: propagate(network, ALL_FOUR, inputs, method="meanfield"))  # noqa: B023
        per_repeat = (
            _seconds(
                lambda: simulate(network, ALL_FOUR, inputs, repeats=probe, seed=2)  # noqa: B023
            )
            / probe
        )
        rows.append(
            {
                "width": width,
                "covariance_s": covariance,
                "meanfield_s": meanfield,
                "per_layer_repeats": needed.per_layer,
                "per_layer_s": per_repeat * needed.per_layer,
                "per_neuron_repeats": needed.per_neuron,
                "per_neuron_s": per_repeat * needed.per_neuron,
            }
        )
        row = rows[-1]
        print(
            f"  width {width}: covariance {covariance * 1e3:.1f} ms, per-neuron simulation "
            f"{row['per_neuron_s'] * 1e3:.1f} ms ({needed.per_neuron} repeats), per-layer "
            f"{row['per_layer_s'] * 1e3:.1f} ms ({needed.per_layer} repeats)",
            flush=True,
        )
    return rows


def crossing(rows: list[dict[str, float]], key: str) -> float | None:
    """Width where ``key`` (a simulation's seconds) equals the covariance method's, interpolated in
    log-log between the two measured widths around it; extrapolated with the last two otherwise."""
    logs = [
        (math.log(row["width"]), math.log(row[key] / row["covariance_s"]))
        for row in rows
        if row[key] > 0 and row["covariance_s"] > 0
    ]
    for (w0, r0), (w1, r1) in zip(logs, logs[1:]):
        if r0 >= 0 >= r1 and r0 != r1:
            return math.exp(w0 + (w1 - w0) * r0 / (r0 - r1))
    if len(logs) >= 2 and logs[-1][1] > 0:
        (w0, r0), (w1, r1) = logs[-2], logs[-1]
        if r1 < r0:
            return math.exp(w1 + (w1 - w0) * r1 / (r0 - r1))
    return None


def markdown(result: dict[str, float], rows: list[dict[str, float]], depth: int, batch: int) -> str:
    cov = result["covariance_s"]
    lines = [
        f"MNIST shape (shipped 784-100-100-10 network, {result['images']} test images, all four kinds "
        "at 1e-3):",
        "",
        "| method | repeats | time | simulation time / covariance time |",
        "|---|---|---|---|",
        f"| `propagate`, covariance | - | {cov * 1e3:.0f} ms | 1 |",
        f"| `propagate`, mean-field | - | {result['meanfield_s'] * 1e3:.1f} ms | - |",
        f"| `simulate`, 2 % on every per-layer variance | {result['per_layer_repeats']} | "
        f"{result['per_layer_s'] * 1e3:.0f} ms | **{result['per_layer_s'] / cov:.2g}** |",
        f"| `simulate`, 2 % on every neuron's variance (median) | {result['per_neuron_repeats']} | "
        f"{result['per_neuron_s'] * 1e3:.0f} ms | **{result['per_neuron_s'] / cov:.3g}** |",
        "",
        f"The per-layer simulation reached {100 * result['per_layer_achieved']:.2f} % (largest relative "
        "standard error over the layers).",
        "",
        f"Crossover: random sigmoid networks of {depth} layers, {batch} inputs, all four kinds at 1e-3 "
        "(simulation priced at its measured time per repeat).",
        "",
        "| width | covariance | mean-field | simulate, per neuron (repeats) | per neuron / covariance | "
        "simulate, per layer (repeats) | per layer / covariance |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['width']} | {row['covariance_s'] * 1e3:.1f} ms | "
            f"{row['meanfield_s'] * 1e3:.2f} ms | "
            f"{row['per_neuron_s'] * 1e3:.1f} ms ({row['per_neuron_repeats']}) | "
            f"{row['per_neuron_s'] / row['covariance_s']:.3g} | "
            f"{row['per_layer_s'] * 1e3:.2f} ms ({row['per_layer_repeats']}) | "
            f"{row['per_layer_s'] / row['covariance_s']:.3g} |"
        )
    neuron, layer = crossing(rows, "per_neuron_s"), crossing(rows, "per_layer_s")
    if layer is None and rows and rows[0]["per_layer_s"] < rows[0]["covariance_s"]:
        layer_text = "below the narrowest width measured"
    else:
        layer_text = f"~{layer:.0f}" if layer else "not reached"
    neuron_text = f"~{neuron:.0f}" if neuron else "not reached"
    lines.append("")
    lines.append(
        "Crossover width (simulation as cheap as the covariance method): "
        f"per neuron {neuron_text}, per layer {layer_text}."
    )
    return "\n".join(lines)
