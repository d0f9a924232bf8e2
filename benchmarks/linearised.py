"""First order for any torch model (``propagate(model)``, automatic differentiation) against a
simulation of the same precision and against a plain forward pass.

Workloads, on ``IMAGES`` MNIST test images:

* the mean-pooling MNIST CNN (``mnist_cnn(pooling="mean")``: the shipped architecture, whose max
  pooling refuses uncorrelated noise at its ties), AU = 1e-3 at both ReLU sites: every site's
  per-neuron variance (forward mode, one pass per noisy element), and the output alone (10
  reverse-mode passes);
* the shipped CNN with AC = 1e-3: correlated noise, one forward-mode pass per site.

The simulation is priced at the repeats that give every neuron's variance a 2 % standard error (the
median over neurons of each entry, the worst entry; from a pilot of ``PILOT`` repeats, as
``benchmarks/analytic_cost.py`` does) and timed at ``PILOT`` repeats, its cost being linear in them.
The forward pass is the model on the same images in float64 (the linearisation's dtype), without
gradients. Ratios are per round, medians (lowest-highest).
"""

from __future__ import annotations

import math
from functools import partial

import torch

from benchmarks._timing import interleave
from noiseprop import Noise, propagate, simulate

__all__ = ["markdown", "measure"]

IMAGES = 10
PILOT = 512
TARGET = 0.02


def _forward(model: torch.nn.Module, images: torch.Tensor) -> None:
    with torch.no_grad():
        model(images)


def measure(rounds: int) -> list[dict[str, object]]:
    from noiseprop.cnn import default_cnn, mnist_cnn
    from noiseprop.datasets import mnist
    from noiseprop.model_analytic import linearised_model

    images = torch.from_numpy(mnist().scaled("test")[0][:IMAGES])
    workloads = [
        ("mean-pool CNN, AU = 1e-3, every site", mnist_cnn(pooling="mean").eval(), Noise(AU=1e-3), True),
        (
            "mean-pool CNN, AU = 1e-3, output only",
            mnist_cnn(pooling="mean").eval(),
            Noise(AU=1e-3),
            False,
        ),
        ("shipped CNN, AC = 1e-3, every site", default_cnn(), Noise(AC=1e-3), True),
    ]
    rows = []
    for label, model, noise, every in workloads:
        pilot = simulate(model, noise, images, repeats=PILOT, seed=1)
        entries = pilot.layers if every else pilot.layers[-1:]
        relative = max(
            float((entry.variance_stderr / entry.variance).nan_to_num(nan=0.0).median())
            for entry in entries
        )
        needed = max(64, math.ceil(PILOT * (relative / TARGET) ** 2))
        model64 = model.double()
        images64 = images.double()
        linearise = (
            partial(propagate, model, noise, images)
            if every
            else partial(linearised_model, model, noise, images, site_variances=False)
        )
        timings = interleave(
            {
                "linearised": linearise,
                "simulation": partial(simulate, model, noise, images, repeats=PILOT, seed=1),
                "forward": partial(_forward, model64, images64),
            },
            rounds=rounds,
        )
        seconds = timings.median("linearised")
        simulated = timings.median("simulation") * needed / PILOT
        passes, low, high = timings.ratio("linearised", "forward")
        rows.append(
            {
                "workload": label,
                "linearised_s": seconds,
                "repeats": needed,
                "simulation_s": simulated,
                "speedup": simulated / seconds,
                "passes": passes,
                "low": low,
                "high": high,
            }
        )
        print(
            f"  {label}: linearised {seconds:.3f} s, simulation to 2 % ({needed} repeats) "
            f"{simulated:.3f} s, x{simulated / seconds:.2f}; {passes:.0f} forward passes",
            flush=True,
        )
        model.float()
    return rows


def markdown(rows: list[dict[str, object]]) -> str:
    lines = [
        f"{IMAGES} MNIST test images. Simulation: repeats for a 2 % standard error on every neuron's "
        f"variance (median over each entry's neurons, worst entry; pilot of {PILOT}), priced from "
        "its time at the pilot's repeats. Passes: linearised time / one float64 forward pass, per "
        "round, median (lowest-highest).",
        "",
        "| workload | linearised (s) | simulation to 2 % (repeats) | simulation (s) "
        "| simulation / linearised | forward passes' worth |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['workload']} | {row['linearised_s']:.3f} | {row['repeats']:,} "
            f"| {row['simulation_s']:.3f} | {row['speedup']:.2f} "
            f"| {row['passes']:.0f} ({row['low']:.0f}-{row['high']:.0f}) |"
        )
    return "\n".join(lines)
