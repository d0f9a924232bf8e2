"""The networks, inputs and noise that the benchmarks time (issue 6)."""

from __future__ import annotations

import torch

from benchmarks.floor import Workload
from noiseprop import Network, Noise
from noiseprop.montecarlo import default_chunk

__all__ = ["ALL_FOUR", "many_inputs", "mnist_inputs", "shapes"]

ALL_FOUR = Noise(AU=1e-3, AC=1e-3, MU=1e-3, MC=1e-3)
"""All four kinds of noise on, after the activation (the intensities do not change the cost)."""


def mnist_inputs(count: int) -> torch.Tensor:
    """The first ``count`` MNIST test images, ``pixel / 255``, float64."""
    from noiseprop.datasets import mnist

    images, _ = mnist().scaled("test")
    return torch.as_tensor(images[:count], dtype=torch.float64)


def shapes(dtype: torch.dtype, *, scale: float = 1.0) -> list[Workload]:
    """The three shapes of the issue, with repeats chosen for about half a second of work each
    (``scale`` multiplies the repeats). Each runs with ``simulate``'s default chunk."""
    from noiseprop.training import default_network

    mnist = default_network()
    narrow = Network.symmetric(width=50, depth=50)
    wide = Network.random([2000] * 5, "sigmoid", seed=0)
    cases = [
        ("MNIST 784-100-100-10, 1000 images", mnist, mnist_inputs(1000), 256),
        (
            "symmetric width 50 depth 50, 10 inputs",
            narrow,
            torch.linspace(0.2, 0.8, 10, dtype=torch.float64).unsqueeze(1).expand(10, 50),
            4096,
        ),
        (
            "random width 2000 depth 4, 16 inputs",
            wide,
            torch.randn(16, 2000, generator=torch.Generator().manual_seed(0), dtype=torch.float64),
            256,
        ),
    ]
    if dtype == torch.float64:  # about twice the work per repeat
        cases = [(name, net, x, repeats // 2) for name, net, x, repeats in cases]
    return [
        Workload(
            name=name,
            network=net,
            inputs=x.contiguous(),
            noise=ALL_FOUR,
            repeats=max(64, int(repeats * scale)),
            dtype=dtype,
            chunk=default_chunk(net, int(x.shape[0]), dtype),
        )
        for name, net, x, repeats in cases
    ]


def many_inputs(dtype: torch.dtype = torch.float32) -> list[Workload]:
    """Many inputs, few repeats: the shipped MNIST network on 10,000 test images, 64 repeats (two per
    batch-means group) and 16 repeats (a short run: the per-call cost counts). Fixed repeats whatever
    the scale, since the few repeats are the point. Each runs with ``simulate``'s default chunk."""
    from noiseprop.training import default_network

    mnist, images = default_network(), mnist_inputs(10_000).contiguous()
    return [
        Workload(
            name=f"MNIST 784-100-100-10, 10,000 images, {repeats} repeats",
            network=mnist,
            inputs=images,
            noise=ALL_FOUR,
            repeats=repeats,
            dtype=dtype,
            chunk=default_chunk(mnist, int(images.shape[0]), dtype),
        )
        for repeats in (64, 16)
    ]
