"""Train the default MNIST classifier and write the network shipped with noiseprop.

Usage::

    python scripts/train_default.py [--output PATH] [--threads N]

Trains ``TrainConfig()`` (784-100-100-10, sigmoid hidden layers; see ``noiseprop.training``) on the
packaged MNIST and writes ``src/noiseprop/data/mnist-100-100-sigmoid.safetensors`` (float64 weights,
about 0.7 MB), which :func:`noiseprop.training.default_network` loads. The shipped file was made with
one torch thread (the default here): the float32 sums, hence the last bits of the weights, depend on
the thread count, so pass the same ``--threads`` to reproduce the file bit for bit.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

DEFAULT_OUTPUT = Path(__file__).resolve().parents[1] / "src" / "noiseprop" / "data"


def main() -> None:
    import torch

    from noiseprop.training import DEFAULT_NETWORK_FILE, EpochRecord, TrainConfig, train

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT / DEFAULT_NETWORK_FILE)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    config = TrainConfig()
    print(f"training {config}")

    def report(record: EpochRecord) -> None:
        print(
            f"epoch {record.epoch:3d}  loss {record.loss:.4f}  train {record.train_accuracy:.4f}  "
            f"test {record.test_accuracy:.4f}  {record.seconds:.1f} s",
            flush=True,
        )

    start = time.perf_counter()
    network = train(config, progress=report)
    seconds = time.perf_counter() - start
    path = network.save(args.output)
    print(
        f"{network}: noise-free test accuracy {network.metadata['test_accuracy']:.4f}, "
        f"trained in {seconds:.1f} s with {args.threads} thread(s); wrote {path} "
        f"({path.stat().st_size / 1e6:.2f} MB)"
    )


if __name__ == "__main__":
    main()
