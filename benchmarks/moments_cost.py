"""The beyond-first-order method against first order on the MNIST shape (issue target: <= 3x).

Two workloads on the shipped 784-100-100-10 network and the first ``IMAGES`` MNIST test images:

* ``propagate``: every layer's per-neuron variance, ``method="moments"`` against
  ``method="covariance"``, each kind alone at 0.1 on every layer and the four together (default
  nodes, then ``nodes=1``: no conditioning on the correlated draws);
* ``accuracy``: the predicted accuracy, ``predictor="moments"`` (1,024 points per image by default)
  against ``predictor="covariance"`` (4,096), and a 200-repeat simulation beside them (float32, the
  default), each kind alone at 0.3.

The ratio is moments time / first-order time within a round, median (lowest-highest) over the rounds;
for uncorrelated noise, also moments time / the time of the matrix products it needs
(:func:`_products_alone`).
"""

from __future__ import annotations

from functools import partial

import torch

from benchmarks._timing import interleave
from benchmarks.workloads import mnist_inputs
from noiseprop import Noise, accuracy, propagate

__all__ = ["markdown", "measure"]

IMAGES = 1000
ALL_FOUR = "AU=0.1,AC=0.1,MU=0.1,MC=0.1"
PROPAGATE = (
    ("AU=0.1", None), ("AC=0.1", None), ("MU=0.1", None), ("MC=0.1", None), (ALL_FOUR, None),
    (ALL_FOUR, 1),
)  # fmt: skip
ACCURACY = ("AU=0.3", "AC=0.3", "MU=0.3", "MC=0.3")


def measure(rounds: int, images: int = IMAGES) -> list[dict[str, object]]:
    from noiseprop.datasets import mnist
    from noiseprop.training import default_network

    network = default_network()
    x = mnist_inputs(images)
    labels = torch.as_tensor(mnist().scaled("test")[1][:images])
    rows: list[dict[str, object]] = []
    for spec, nodes in PROPAGATE:
        noise = Noise.parse(spec)
        cases = {
            "moments": partial(propagate, network, noise, x, method="moments", nodes=nodes),
            "covariance": partial(propagate, network, noise, x, method="covariance"),
        }
        if spec == "AU=0.1":  # the roofline of the moments method's work, uncorrelated noise
            cases["products"] = _products_alone(network, x)
        timings = interleave(cases, rounds=rounds)
        rows.append(_row("propagate", spec + ("" if nodes is None else f", nodes={nodes}"), timings))
        print(f"  propagate {spec}: x{rows[-1]['ratio']:.2f}", flush=True)
    for spec in ACCURACY:
        noise = Noise.parse(spec)
        timings = interleave(
            {
                "moments": partial(accuracy, network, noise, x, labels, method="predicted"),
                "covariance": partial(
                    accuracy, network, noise, x, labels, method="predicted", predictor="covariance"
                ),
                "simulation": partial(accuracy, network, noise, x, labels, repeats=200),
            },
            rounds=rounds,
        )
        rows.append(_row("accuracy", spec, timings))
        print(f"  accuracy {spec}: x{rows[-1]['ratio']:.2f}", flush=True)
    return rows


def _products_alone(network, x: torch.Tensor):
    """The matrix products that the moments method truly needs for uncorrelated noise on a network
    of three dense layers, each one float64 GEMM over the whole batch: the noise-free pass, layer 2's
    ``W2 diag(d1) W2^T`` for every input (``(B N2, N1) x (N1, N2)``; layer 1's covariance is
    diagonal) and layer 3's ``C2 W3^T`` for its diagonal (``(B N2, N2) x (N2, N3)``). The cross term
    ``C_ij^2`` of the activations leaves no cheaper route to layer 2's full covariance."""
    weights = [layer.weight.double() for layer in network.layers]
    hidden = [torch.rand(len(x), w.shape[1], dtype=torch.float64) for w in weights]
    rows = torch.rand(len(x) * weights[1].shape[0], weights[1].shape[1], dtype=torch.float64)

    def run() -> None:
        for w, h in zip(weights, hidden):
            h @ w.T
        rows @ weights[1].T  # W2 diag(d1) W2^T, every input's rows at once
        rows @ weights[2].T  # C2 W3^T

    return run


def _row(workload: str, spec: str, timings) -> dict[str, object]:
    ratio, low, high = timings.ratio("moments", "covariance")
    return {
        "workload": workload,
        "noise": spec,
        "moments_s": timings.median("moments"),
        "covariance_s": timings.median("covariance"),
        "simulation_s": timings.median("simulation") if "simulation" in timings.seconds else None,
        "products": timings.ratio("moments", "products") if "products" in timings.seconds else None,
        "products_s": timings.median("products") if "products" in timings.seconds else None,
        "ratio": ratio,
        "low": low,
        "high": high,
    }


def markdown(rows: list[dict[str, object]], images: int = IMAGES) -> str:
    lines = [
        f"Shipped 784-100-100-10 network, {images} MNIST test images, noise on every layer. Ratio = "
        "moments time / first-order time, per round, median (lowest-highest); target <= 3.",
        "",
        "| workload | noise | moments (s) | first order (s) | ratio | simulation, 200 repeats (s) |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        simulated = "" if row["simulation_s"] is None else f"{row['simulation_s']:.2f}"
        lines.append(
            f"| {row['workload']} | {row['noise']} | {row['moments_s']:.2f} | "
            f"{row['covariance_s']:.2f} | {row['ratio']:.2f} ({row['low']:.2f}-{row['high']:.2f}) "
            f"| {simulated} |"
        )
    for row in rows:
        if row.get("products") is not None:
            ratio, low, high = row["products"]
            lines += [
                "",
                f"Roofline, {row['noise']}: the matrix products that the moments method needs "
                "(noise-free pass, `W2 diag(d1) W2^T` and `C2 W3^T` per image, single float64 GEMMs; "
                f"`benchmarks/moments_cost.py: _products_alone`) take {row['products_s'] * 1e3:.0f} "
                f"ms; moments / products alone **{ratio:.2f}** ({low:.2f}-{high:.2f}).",
            ]
    return "\n".join(lines)
