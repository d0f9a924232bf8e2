"""Predicted against simulated accuracy of the shipped MNIST network, first order and beyond.

For each kind of noise alone on every layer, at intensities 0.01, 0.1, 0.3 and 1, on the first 1,000
test images: the simulated accuracy (200 repeats per image) and the error of the two predictors,
``predictor="covariance"`` (first order) and ``predictor="moments"`` (:mod:`noiseprop.moments`), in
percentage points, with the time of the moments prediction. The README quotes this table.

    python scripts/moments_accuracy.py          # about 3 minutes on 2 cores
"""

from __future__ import annotations

import time

from noiseprop import KINDS, Noise, accuracy
from noiseprop.datasets import mnist
from noiseprop.training import default_network

INTENSITIES = (0.01, 0.1, 0.3, 1.0)
IMAGES = 1000


def main() -> None:
    network = default_network()
    images, labels = (array[:IMAGES] for array in mnist().scaled("test"))
    print("| kind | intensity | simulated | first order | moments | moments time (s) |")
    print("|---|---:|---:|---:|---:|---:|")
    for kind in KINDS:
        for intensity in INTENSITIES:
            noise = Noise(**{kind: intensity})
            simulated = accuracy(network, noise, images, labels, repeats=200, seed=1)
            first = accuracy(network, noise, images, labels, method="predicted")
            start = time.perf_counter()
            moments = accuracy(network, noise, images, labels, method="predicted", predictor="moments")
            seconds = time.perf_counter() - start
            measured = f"{100 * simulated.accuracy:.2f} ± {100 * simulated.stderr:.2f}"
            print(
                f"| {kind} | {intensity:g} | {measured} "
                f"| {100 * (first.accuracy - simulated.accuracy):+.2f} "
                f"| {100 * (moments.accuracy - simulated.accuracy):+.2f} | {seconds:.1f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
