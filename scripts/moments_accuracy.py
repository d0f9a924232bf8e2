"""Predicted against simulated accuracy of the shipped MNIST network, first order and beyond.

For each kind of noise alone on every layer, at intensities 0.01, 0.1, 0.3 and 1, on the first 1,000
test images: the simulated accuracy (200 repeats per image) and the error of the two predictors,
``predictor="covariance"`` (first order) and ``predictor="moments"`` (the default), in percentage
points (their cost: ``python -m benchmarks --only moments``). One more column shows why the moments
predictor does not take the logits as Gaussian: the orthant probability of a Gaussian with the
logits' mean and covariance *measured* by the simulation (2,000 noisy outputs per image). The README
quotes this table.

    python scripts/moments_accuracy.py          # about 4 minutes on 2 cores
"""

from __future__ import annotations

import torch

from noiseprop import KINDS, Noise, accuracy, sample
from noiseprop.classification import SCRAMBLINGS, _orthant, _sobol_normals
from noiseprop.datasets import mnist
from noiseprop.training import default_network

INTENSITIES = (0.01, 0.1, 0.3, 1.0)
IMAGES = 1000
SAMPLES = 2000


def gaussian_logits(network, noise, images, labels) -> float:
    """Accuracy if the logits were Gaussian with their simulated mean and covariance."""
    outputs = sample(network, noise, images, repeats=SAMPLES, seed=7, dtype="float64")
    mean = outputs.mean(0)
    centred = outputs - mean
    covariance = torch.einsum("rbi,rbj->bij", centred, centred) / (SAMPLES - 1)
    normals = [_sobol_normals(mean.shape[-1] - 1, 512, seed) for seed in range(SCRAMBLINGS)]
    return float(_orthant(mean, covariance, torch.as_tensor(labels).long(), normals).mean())


def main() -> None:
    network = default_network()
    images, labels = (array[:IMAGES] for array in mnist().scaled("test"))
    print("| kind | intensity | simulated | first order | moments | Gaussian logits, measured moments |")
    print("|---|---:|---:|---:|---:|---:|")
    for kind in KINDS:
        for intensity in INTENSITIES:
            noise = Noise(**{kind: intensity})
            simulated = accuracy(network, noise, images, labels, repeats=200, seed=1)
            first = accuracy(network, noise, images, labels, method="predicted", predictor="covariance")
            moments = accuracy(network, noise, images, labels, method="predicted", predictor="moments")
            measured = gaussian_logits(network, noise, images, labels)
            errors = (
                f"{100 * (value - simulated.accuracy):+.2f}"
                for value in (first.accuracy, moments.accuracy, measured)
            )
            print(
                f"| {kind} | {intensity:g} "
                f"| {100 * simulated.accuracy:.2f} ± {100 * simulated.stderr:.2f} | "
                + " | ".join(errors)
                + " |",
                flush=True,
            )


if __name__ == "__main__":
    main()
