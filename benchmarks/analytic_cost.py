"""The covariance method against its roofline, and against a simulation precise enough to answer the
same question.

:func:`engine` times the variances of the MNIST shape (factored, no ``N x N`` matrix) at three batch
sizes, every layer's covariance, and the matrix products that the variances truly need alone
(:func:`needed_flops`, as single float64 GEMMs); :func:`accuracy_cost` times the first-order accuracy
prediction of the MNIST test set and its outputs' moments.

Against a simulation (:func:`mnist`, :func:`crossover`), two questions, because "2 % relative precision on every layer's variance" reads two ways:

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
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from benchmarks._timing import interleave
from benchmarks.workloads import ALL_FOUR, mnist_inputs
from noiseprop import Network, Noise, propagate, simulate

__all__ = ["accuracy_cost", "crossover", "engine", "engine_markdown", "mnist"]

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


def needed_flops(network: Network) -> int:
    """Floating-point operations per input that the variance of every layer truly needs, for a
    network of three dense layers with uncorrelated noise on every layer: the noise-free pass
    (``2 N_out N_in`` per layer), the one product per input that the last layer's variance depends
    on entry by entry, ``W3 diag(g2) W2`` (``2 N3 N2 N1``: ``var_3 = g3^2 (W3 G2 W2)^2 d1 + ...``),
    and the variances of the diagonals seen through one layer (``2 N_out N_in`` each, layers 2
    and 3). Elementwise work (``O(N N_in)`` per input at most) is not counted."""
    widths = network.widths
    forward = sum(2 * layer.out_features * layer.in_features for layer in network.layers)
    through = sum(2 * layer.out_features * layer.in_features for layer in network.layers[1:])
    return forward + 2 * widths[2] * widths[1] * widths[0] + through


def _products_alone(network: Network, x: torch.Tensor) -> float:
    """Seconds of the products of :func:`needed_flops` alone, each one matrix product over the whole
    batch in float64 (the roofline of the work: what the best GEMM of this machine does with it)."""
    weights = [layer.weight.double() for layer in network.layers]
    rows = torch.rand(len(x) * weights[2].shape[0], weights[1].shape[0], dtype=torch.float64)
    hidden = [torch.rand(len(x), w.shape[1], dtype=torch.float64) for w in weights]

    def run() -> None:
        for w, h in zip(weights, hidden):
            h @ w.T  # the noise-free pass
        for w, h in zip(weights[1:], hidden[1:]):
            h @ w.square().T  # diagonals seen through one layer
        rows @ weights[1]  # W3 diag(g2) W2, every input's rows at once

    run()
    return _seconds(run, rounds=5)


def engine(*, images: tuple[int, ...], rounds: int) -> dict[str, object]:
    """The covariance method on the MNIST shape: variances only (factored, no N x N matrix) and
    every layer's covariance, cost per input against the batch, against its FLOP roofline."""
    from torch.utils.flop_counter import FlopCounterMode

    from noiseprop.training import default_network

    network, noise = default_network(), ALL_FOUR
    largest = mnist_inputs(max(images))
    cases = {}
    for count in images:
        inputs = largest[:count]
        cases[f"variances {count}"] = lambda inputs=inputs: propagate(network, noise, inputs)
    cases["covariances"] = lambda: propagate(network, noise, largest, covariance=True)
    cases["meanfield"] = lambda: propagate(network, noise, largest, method="meanfield")
    timings = interleave(cases, rounds=rounds)
    counter = FlopCounterMode(display=False)
    with counter:
        propagate(network, noise, largest)
    products = _products_alone(network, largest)
    result = {
        "images": images,
        "per_input_s": {count: timings.median(f"variances {count}") / count for count in images},
        "variances_s": timings.median(f"variances {max(images)}"),
        "covariances_s": timings.median("covariances"),
        "meanfield_s": timings.median("meanfield"),
        "speedup": timings.ratio("covariances", f"variances {max(images)}"),
        "needed_flops": needed_flops(network) * max(images),
        "executed_flops": counter.get_total_flops(),
        "products_s": products,
        "peak_mib": _peak_memory(max(images)),
    }
    print(
        f"  covariance method, {max(images)} images: variances {result['variances_s'] * 1e3:.0f} ms, "
        f"every covariance {result['covariances_s'] * 1e3:.0f} ms, products alone "
        f"{products * 1e3:.0f} ms",
        flush=True,
    )
    return result


def _peak_memory(images: int) -> float:
    """MiB by which the resident set grows, at its peak, while ``propagate`` (variances) runs on
    ``images`` MNIST images, in a fresh process: ``/proc/self/statm`` sampled every millisecond
    from a second thread, against its value just before the call."""
    script = (
        "import os, threading, time\n"
        "from benchmarks.workloads import ALL_FOUR, mnist_inputs\n"
        "from noiseprop import propagate\n"
        "from noiseprop.training import default_network\n"
        "page = os.sysconf('SC_PAGE_SIZE')\n"
        "def rss():\n"
        "    with open('/proc/self/statm') as f: return int(f.read().split()[1]) * page\n"
        f"network, inputs = default_network(), mnist_inputs({images})\n"
        "propagate(network, ALL_FOUR, inputs[:10])\n"
        "before, peak, done = rss(), [0], threading.Event()\n"
        "def watch():\n"
        "    while not done.is_set(): peak[0] = max(peak[0], rss()); time.sleep(0.001)\n"
        "watcher = threading.Thread(target=watch); watcher.start()\n"
        "propagate(network, ALL_FOUR, inputs)\n"
        "done.set(); watcher.join()\n"
        "print((max(peak[0], rss()) - before) / 2**20)\n"
    )
    root = Path(__file__).resolve().parent.parent
    output = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=root
    )
    return float(output.stdout.strip().splitlines()[-1])


def accuracy_cost(*, images: int, rounds: int) -> dict[str, float]:
    """The first-order accuracy prediction of the MNIST test set: its two parts, the outputs'
    mean and covariance (no other covariance formed) and the orthant integral."""
    from noiseprop import accuracy
    from noiseprop._recursion import covariance_recursion
    from noiseprop.datasets import mnist as load
    from noiseprop.noise import per_layer
    from noiseprop.training import default_network

    network = default_network()
    pictures, labels = load().scaled("test")
    pictures, labels = pictures[:images], labels[:images]
    noise = Noise(AU=0.1)
    inputs = torch.as_tensor(pictures, dtype=torch.float64)
    last = frozenset({network.depth - 1})
    timings = interleave(
        {
            "accuracy": lambda: accuracy(
                network, noise, pictures, labels, method="predicted", predictor="covariance"
            ),
            "outputs": lambda: covariance_recursion(
                network, per_layer(noise, network.depth), inputs, last, max_memory=2**29
            ),
        },
        rounds=rounds,
    )
    result = {
        "images": images,
        "accuracy_s": timings.median("accuracy"),
        "outputs_s": timings.median("outputs"),
    }
    print(
        f"  accuracy prediction, {images} images: {result['accuracy_s'] * 1e3:.0f} ms, of which the "
        f"outputs' moments {result['outputs_s'] * 1e3:.0f} ms",
        flush=True,
    )
    return result


def engine_markdown(result: dict[str, object], accuracy: dict[str, float]) -> str:
    images = result["images"]
    largest = max(images)
    gflop = result["needed_flops"] / 1e9
    rate = gflop / result["products_s"]
    median, low, high = result["speedup"]
    lines = [
        "Shipped 784-100-100-10 network, MNIST test images, all four kinds at 1e-3, float64. "
        'Variances: `propagate(method="covariance")`, factored (no N x N matrix formed); '
        "covariances: the same with `covariance=True` (every layer's matrix formed, as the method "
        "did before issue 14 for the variances of every layer but the last).",
        "",
        "| images | variances | per image |",
        "|---:|---:|---:|",
    ]
    for count in images:
        per_input = result["per_input_s"][count]
        lines.append(f"| {count:,} | {per_input * count * 1e3:.1f} ms | {per_input * 1e6:.1f} us |")
    lines += [
        "",
        f"| {largest:,} images | time |",
        "|---|---:|",
        f"| variances (factored) | {result['variances_s'] * 1e3:.0f} ms |",
        f"| every layer's covariance | {result['covariances_s'] * 1e3:.0f} ms "
        f"(**{median:.1f}x** the variances, {low:.1f}-{high:.1f}) |",
        f"| mean-field | {result['meanfield_s'] * 1e3:.1f} ms |",
        f"| the needed products alone ({gflop:.2f} GFLOP, {rate:.1f} GFLOP/s) | "
        f"{result['products_s'] * 1e3:.0f} ms |",
        f"| variances / products alone | **{result['variances_s'] / result['products_s']:.2f}** |",
        "",
        f"Needed work: the noise-free pass, the product `W3 diag(g2) W2` per image and the two "
        f"diagonals seen through one layer, {result['needed_flops'] / largest / 1e3:.0f} kFLOP per "
        f"image (`benchmarks/analytic_cost.py: needed_flops`); the code executes "
        f"{result['executed_flops'] / largest / 1e3:.0f} kFLOP per image in matrix products "
        "(torch's FLOP counter). While the variances of "
        f"{largest:,} images are computed, the resident set grows by at most "
        f"{result['peak_mib']:.0f} MiB (inputs and results included; the largest working tensor is "
        "4 MiB).",
        "",
        f'Accuracy prediction (first order, `predictor="covariance"`, AU = 0.1, '
        f"{accuracy['images']:,} test images, 4,096 points per image): "
        f"**{accuracy['accuracy_s'] * 1e3:.0f} ms**, of which the outputs' mean and covariance "
        f"(no other covariance formed) {accuracy['outputs_s'] * 1e3:.0f} ms; the rest is the "
        "orthant integral.",
    ]
    return "\n".join(lines)


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
