"""Monte Carlo of a torch model (the shipped MNIST CNN) against a bare PyTorch loop, and its memory.

The bare loop does only the unavoidable work of the same simulation, chunk after chunk of the same
number of repeats as ``simulate``'s default chunk: the CNN's forward pass written out with
``torch.nn.functional`` on ``repeats x images`` presentations, the random draws of the four kinds at
its two ReLU sites (``randn`` of the site's shape for each uncorrelated kind, of shape
``(presentations, 1, 1, 1)`` for each correlated kind, combined in place), and the minimal statistics
at each site and at the output: ``y.sum(0)`` and ``y.square().sum(0)`` in the run dtype, added into
float64 accumulators. No hooks, no validation, no noise-free reference pass, no batch means.

Memory: ``python -m benchmarks.models REPEATS`` runs the same simulation of the shipped CNN three times
in a fresh interpreter and prints its peak resident set size (``VmHWM``) after the set-up and after the
runs, and the resident set (``VmRSS``) left after each run.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from torch import Tensor
from torch.nn import functional

from benchmarks._timing import interleave
from benchmarks.memory import _peak_mib

__all__ = ["bare_cnn_loop", "markdown", "measure", "measure_memory"]

ROOT = Path(__file__).resolve().parent.parent
IMAGES = 100
NOISE = {"AU": 1e-3, "AC": 1e-3, "MU": 1e-3, "MC": 1e-3}


def _noisy_(value: Tensor, generator: torch.Generator) -> Tensor:
    """``value (1 + xi_MU + xi_MC) + xi_AU + xi_AC`` in place, one draw per kind."""
    shared = (value.shape[0], *(1,) * (value.ndim - 1))
    factor = torch.randn(value.shape, generator=generator, dtype=value.dtype).mul_(NOISE["MU"] ** 0.5)
    factor.add_(torch.randn(shared, generator=generator, dtype=value.dtype), alpha=NOISE["MC"] ** 0.5)
    value.addcmul_(value, factor)
    value.add_(
        torch.randn(value.shape, generator=generator, dtype=value.dtype), alpha=NOISE["AU"] ** 0.5
    )
    return value.add_(
        torch.randn(shared, generator=generator, dtype=value.dtype), alpha=NOISE["AC"] ** 0.5
    )


def bare_cnn_loop(
    model: torch.nn.Module, inputs: Tensor, repeats: int, chunk: int, seed: int = 0
) -> None:
    """The floor (module docstring) for the shipped CNN's architecture."""
    generator = torch.Generator().manual_seed(seed)
    weights = {name: tensor.detach() for name, tensor in model.state_dict().items()}
    pooling = functional.max_pool2d
    batch = inputs.shape[0]
    sums: dict[str, list[Tensor]] = {}

    def reduce(name: str, value: Tensor, count: int) -> None:
        flat = value.reshape(count, batch, -1)
        total, square = sums.setdefault(name, [torch.zeros(flat.shape[1:], dtype=torch.float64)] * 2)
        sums[name] = [total + flat.sum(0), square + flat.square().sum(0)]

    with torch.no_grad():
        for start in range(0, repeats, chunk):
            count = min(chunk, repeats - start)
            x = inputs.unsqueeze(0).expand(count, *inputs.shape).reshape(-1, 1, 28, 28)
            x = functional.conv2d(x, weights["conv1.weight"], weights["conv1.bias"]).relu_()
            reduce("relu1", _noisy_(x, generator), count)
            x = functional.conv2d(pooling(x, 2), weights["conv2.weight"], weights["conv2.bias"]).relu_()
            reduce("relu2", _noisy_(x, generator), count)
            x = functional.linear(pooling(x, 2).flatten(1), weights["fc.weight"], weights["fc.bias"])
            reduce("output", x, count)


def measure(*, rounds: int, scale: float) -> list[dict[str, object]]:
    """``simulate`` of the shipped CNN against :func:`bare_cnn_loop`, interleaved rounds."""
    from noiseprop import Noise, simulate
    from noiseprop._streaming import chunk_repeats
    from noiseprop.cnn import default_cnn
    from noiseprop.datasets import mnist

    model = default_cnn()
    images = torch.from_numpy(mnist().scaled("test")[0][:IMAGES])
    noise = Noise(**NOISE)
    rows = []
    for repeats in (max(64, int(200 * scale)), max(256, int(1000 * scale))):
        chunk = chunk_repeats(IMAGES * 8 * 24 * 24, torch.float32)  # the widest site, relu1
        timings = interleave(
            {
                "simulate": lambda r=repeats: simulate(model, noise, images, repeats=r, seed=0),
                "bare": lambda r=repeats, c=chunk: bare_cnn_loop(model, images, r, c),
            },
            rounds=rounds,
        )
        fraction, low, high = timings.ratio("bare", "simulate")
        row = {
            "repeats": repeats,
            "chunk": chunk,
            "simulate_s": timings.median("simulate"),
            "bare_s": timings.median("bare"),
            "fraction": fraction,
            "low": low,
            "high": high,
        }
        print(
            f"  CNN, {IMAGES} images x {repeats} repeats: simulate {row['simulate_s']:.3f} s, bare "
            f"{row['bare_s']:.3f} s, fraction {fraction:.2f} ({low:.2f}-{high:.2f})",
            flush=True,
        )
        rows.append(row)
    return rows


def _child(repeats: int) -> dict[str, float]:
    from noiseprop import Noise, simulate
    from noiseprop.cnn import default_cnn
    from noiseprop.datasets import mnist

    model = default_cnn()
    images = torch.from_numpy(mnist().scaled("test")[0][:IMAGES])
    simulate(model, Noise(**NOISE), images, repeats=64, seed=0)  # imports, pools, allocator warm
    before = _peak_mib()
    resident = []
    for seed in range(3):  # the same run three times: what is left after each must not grow
        simulate(model, Noise(**NOISE), images, repeats=repeats, seed=seed)
        gc.collect()
        resident.append(_resident_mib())
    return {"repeats": repeats, "baseline_mib": before, "peak_mib": _peak_mib(), "resident": resident}


def _resident_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def measure_memory(repeat_counts: tuple[int, ...]) -> list[dict[str, float]]:
    """Peak memory of a CNN simulation for each repeat count, each in a fresh interpreter."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    results = []
    for repeats in repeat_counts:
        completed = subprocess.run(
            [sys.executable, "-m", "benchmarks.models", str(repeats)],
            capture_output=True, text=True, check=True, cwd=ROOT, env=env,
        )  # fmt: skip
        results.append(json.loads(completed.stdout.strip().splitlines()[-1]))
        row = results[-1]
        print(
            f"  CNN, {repeats:>7,} repeats: peak RSS {row['peak_mib']:.0f} MiB "
            f"(after set-up {row['baseline_mib']:.0f} MiB); resident after each of 3 runs "
            f"{', '.join(f'{value:.0f}' for value in row['resident'])} MiB",
            flush=True,
        )
    return results


def markdown(rows: list[dict[str, object]], memory: list[dict[str, float]]) -> str:
    lines = [
        f"Shipped MNIST CNN, {IMAGES} test images, all four kinds (1e-3 each) at its two ReLU sites, "
        "float32. Fraction = bare loop time / simulate time, per round, median (lowest-highest); "
        "target >= 0.7.",
        "",
        "| repeats | chunk | simulate (s) | bare loop (s) | fraction |",
        "|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['repeats']:,} | {row['chunk']} | {row['simulate_s']:.3f} | {row['bare_s']:.3f} | "
            f"{row['fraction']:.2f} ({row['low']:.2f}-{row['high']:.2f}) |"
        )
    lines += [
        "",
        "| repeats | peak RSS after set-up (MiB) | peak RSS after 3 runs (MiB) "
        "| RSS left after each run (MiB) |",
        "|---:|---:|---:|---:|",
    ]
    for row in memory:
        left = ", ".join(f"{value:.0f}" for value in row["resident"])
        lines.append(
            f"| {row['repeats']:,} | {row['baseline_mib']:.0f} | {row['peak_mib']:.0f} | {left} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    print(json.dumps(_child(int(sys.argv[1]))))
