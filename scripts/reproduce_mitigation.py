"""Reproduce the direction of the published mitigation result (docs/THEORY.md sections 7 and 9).

Usage::

    python scripts/reproduce_mitigation.py [--images 2000] [--factor 4] [--noise AU=0.0225,AC=0.0225]
                                           [--repeats 100] [--seed 0] [--threads 2]

Published: ghost neurons plus pooling lift the MNIST accuracy of a noisy network from 92.07 % to 97.49 %
(essentially the noise-free level), with a fourfold gain of the output SNR. Here: the network shipped
with noiseprop (784-100-100-10, sigmoid hidden layers, 97.92 % noise-free on the 10,000 test images),
the first ``--images`` test images, additive noise (default ``AU = AC = 0.0225``) on both hidden layers
and none on the output layer. The output layer is left noise-free because neither transform can act
on it: its correlated additive noise cannot change a decision anyway, and its uncorrelated noise is
not pooled (its outputs are the result).

Each row is a network under the same noise: accuracy simulated (Monte Carlo, ``--repeats`` draws per
image, ± one standard error given the images) and predicted (Gaussian output, covariance method), and
the output SNR ``<mean^2> / <variance>`` over the 10 outputs and the images, predicted and simulated,
with its gain over the noisy network. Rows marked "network" run the transformed network itself; rows
marked "equivalent" run the original network under the noise that the transform is equivalent to,
exactly in distribution for additive noise after the activation (see ``noiseprop.mitigation``):

* pooling by P: the next layer averages P copies, so ``AU -> AU/P``, ``AC`` unchanged;
* ghosts: ``AC`` cancels, the ghost's own ``AU`` reaches neuron j with weight ``-S_j``, exactly as
  the layer's ``AC`` did, so ``AC -> AU`` (no change at all when ``AU = AC``);
* ghosts then pooling by P: ``AU -> AU/P`` and ``AC -> AU/P``, every hidden noise divided by P.

The "equivalent" rows cost what the original network costs, which makes large factors affordable
(the covariance method on a network pooled by 16, 1616 neurons per layer, would take an hour here).
About a minute on 2 cores with the defaults.
"""

from __future__ import annotations

import argparse
import math
import time


def main() -> None:
    import torch

    from noiseprop import Noise
    from noiseprop.datasets import mnist
    from noiseprop.mitigation import add_ghosts, assess, pool
    from noiseprop.training import default_network

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000, help="first N MNIST test images")
    parser.add_argument("--factor", type=int, default=4, help="pooling factor of the network rows")
    parser.add_argument("--large-factor", type=int, default=16, help="pooling factor, equivalent rows")
    parser.add_argument("--noise", default="AU=0.0225,AC=0.0225", help="noise on the hidden layers")
    parser.add_argument("--repeats", type=int, default=100, help="noise draws per image")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()

    noise = Noise.parse(args.noise)
    if noise.MU or noise.MC or noise.injection != "after":
        parser.error("--noise: the equivalent rows hold for additive noise after the activation only")
    net = default_network()
    images, labels = mnist().scaled("test")
    x, y = torch.from_numpy(images[: args.images]).double(), torch.from_numpy(labels[: args.images])
    hidden = range(1, net.depth)

    def on_hidden(au: float, ac: float) -> dict[int, Noise]:
        return Noise(AU=au, AC=ac).on_layers(hidden)

    P, Q = args.factor, args.large_factor
    au, ac = noise.AU, noise.AC
    variants = [
        ("noisy", "network", net, on_hidden(au, ac)),
        ("ghosts", "network", add_ghosts(net), on_hidden(au, ac)),
        ("ghosts", "equivalent", net, on_hidden(au, au)),
        (f"pool x{P}", "equivalent", net, on_hidden(au / P, ac)),
        (f"ghosts + pool x{P}", "network", pool(add_ghosts(net), P), on_hidden(au, ac)),
        (f"ghosts + pool x{P}", "equivalent", net, on_hidden(au / P, au / P)),
        (f"ghosts + pool x{Q}", "equivalent", net, on_hidden(au / Q, au / Q)),
    ]
    header = (
        f"{'variant':<20} {'evaluated':<10} {'hidden':>9} {'simulated':>16} {'predicted':>9} "
        f"{'SNR pred':>8} {'SNR sim':>8} {'gain pred':>9} {'gain sim':>8}"
    )
    print(
        f"shipped network {net!r}, first {len(y)} MNIST test images, noise {noise} on hidden layers "
        f"{list(hidden)} (output layer noise-free), {args.repeats} draws per image, seed {args.seed}"
    )
    print(header)
    print("-" * len(header))
    reference: tuple[float, float] | None = None
    for name, evaluated, network, spec in variants:
        result = assess(network, spec, x, y, repeats=args.repeats, seed=args.seed)
        snr = (result.predicted[-1].layer_snr, result.simulated[-1].layer_snr)
        simulated, predicted = result.simulated_accuracy, result.predicted_accuracy
        if reference is None:
            reference = snr
            print(f"{'noise-free':<20} {'network':<10} {'':>9} {simulated.noise_free:>16.2%}")
        widths = "-".join(str(width) for width in network.widths[:-1])
        print(
            f"{name:<20} {evaluated:<10} {widths:>9} "
            f"{simulated.accuracy:>9.2%} ± {simulated.stderr:.2%} {predicted.accuracy:>9.2%} "
            f"{_db(snr[0]):>8.2f} {_db(snr[1]):>8.2f} {snr[0] / reference[0]:>8.2f}x "
            f"{snr[1] / reference[1]:>7.2f}x",
            flush=True,
        )
    print(
        "SNR: <mean^2>/<variance> of the output layer over its neurons and the images, in dB; gain over "
        "the noisy network"
    )
    print(f"{time.perf_counter() - start:.0f} s")


def _db(ratio: float) -> float:
    return 10 * math.log10(ratio) if ratio > 0 else -math.inf


if __name__ == "__main__":
    main()
