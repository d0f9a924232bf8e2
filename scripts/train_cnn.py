"""Train the MNIST CNN shipped with noiseprop and write its safetensors file.

Usage::

    python scripts/train_cnn.py [--output PATH] [--threads N] [--epochs E] [--seed S] [--pooling P]

Trains :func:`noiseprop.cnn.mnist_cnn` (conv 5x5 x8, pool, conv 5x5 x16, pool, dense to 10) on the
60,000 packaged MNIST training images (scaled to ``[0, 1]``) with Adam and a cosine learning-rate
schedule (step ``t`` of ``T`` uses ``lr_0 (1 + cos(pi t / T)) / 2``), minimising the softmax
cross-entropy of mini-batches, on the CPU in float32. After every epoch it prints the mean training loss
and the noise-free accuracy on the 10,000 test images. It writes
``src/noiseprop/data/mnist-cnn.safetensors`` (the ``state_dict``, float32, about 26 kB), which
:func:`noiseprop.cnn.default_cnn` loads, with the settings, per-epoch history and final test accuracy
in the header (format in the ``noiseprop.cnn`` docstring).

Reproducibility: the initial weights and the shuffle of each epoch come from ``torch.Generator``s
seeded through ``numpy.random.SeedSequence(seed).spawn(2)``; the global random state is not used.
The same settings give bitwise identical weights with the same torch build, CPU and ``--threads``
(the float32 convolution sums may be ordered differently with another thread count). The shipped file
was made with the defaults below.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

DEFAULT_OUTPUT = Path(__file__).resolve().parents[1] / "src" / "noiseprop" / "data"
DEFAULTS = {"epochs": 10, "batch_size": 64, "learning_rate": 2e-3, "pooling": "max", "seed": 0}


def main() -> None:
    import numpy as np
    import torch
    from safetensors.torch import save_file

    from noiseprop import __version__
    from noiseprop.cnn import CNN_FILE, CNN_FORMAT, POOLINGS, mnist_cnn
    from noiseprop.datasets import mnist

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT / CNN_FILE)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--epochs", type=int, default=DEFAULTS["epochs"])
    parser.add_argument("--batch-size", type=int, default=DEFAULTS["batch_size"])
    parser.add_argument("--learning-rate", type=float, default=DEFAULTS["learning_rate"])
    parser.add_argument("--pooling", choices=POOLINGS, default=DEFAULTS["pooling"])
    parser.add_argument("--seed", type=int, default=DEFAULTS["seed"])
    args = parser.parse_args()
    for name in ("threads", "epochs", "batch_size"):
        if getattr(args, name) < 1:
            parser.error(
                f"--{name.replace('_', '-')} must be an integer >= 1; got {getattr(args, name)}."
            )
    if not (math.isfinite(args.learning_rate) and args.learning_rate > 0):
        parser.error(f"--learning-rate must be a finite number > 0; got {args.learning_rate}.")
    if args.seed < 0:
        parser.error(f"--seed must be an integer >= 0; got {args.seed}.")
    torch.set_num_threads(args.threads)
    config = {
        "optimizer": "adam",
        "schedule": "cosine",
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "learning_rate": args.learning_rate,
        "pooling": args.pooling,
        "seed": args.seed,
    }
    print(f"training mnist_cnn with {json.dumps(config)} on {args.threads} thread(s)")

    data = mnist()
    train_images, train_labels = (torch.from_numpy(array) for array in data.scaled("train"))
    test_images, test_labels = (torch.from_numpy(array) for array in data.scaled("test"))
    init_sequence, shuffle_sequence = np.random.SeedSequence(args.seed).spawn(2)
    model = mnist_cnn(
        pooling=args.pooling, seed=int(init_sequence.generate_state(1, dtype=np.uint64)[0])
    )
    shuffle_generator = torch.Generator().manual_seed(
        int(shuffle_sequence.generate_state(1, dtype=np.uint64)[0])
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=args.learning_rate)
    count = len(train_labels)
    steps = args.epochs * math.ceil(count / args.batch_size)
    step = 0
    history = []
    start = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        epoch_start = time.perf_counter()
        model.train()
        order = torch.randperm(count, generator=shuffle_generator)
        total_loss = 0.0
        for first in range(0, count, args.batch_size):
            rate = args.learning_rate * (1 + math.cos(math.pi * step / steps)) / 2
            for group in optimizer.param_groups:
                group["lr"] = rate
            batch = order[first : first + args.batch_size]
            loss = torch.nn.functional.cross_entropy(model(train_images[batch]), train_labels[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total_loss += loss.item() * len(batch)
            step += 1
        record = {
            "epoch": epoch,
            "loss": total_loss / count,
            "test_accuracy": _accuracy(model, test_images, test_labels),
            "seconds": time.perf_counter() - epoch_start,
        }
        history.append(record)
        print(
            f"epoch {epoch:3d}  loss {record['loss']:.4f}  test {record['test_accuracy']:.4f}  "
            f"{record['seconds']:.1f} s",
            flush=True,
        )
    seconds = time.perf_counter() - start

    model.eval()
    metadata = {
        "data": "mnist",
        "train_images": count,
        "config": config,
        "seed": args.seed,
        "epochs": args.epochs,
        "test_accuracy": history[-1]["test_accuracy"],
        "history": history,
        "train_seconds": seconds,
        "threads": args.threads,
        "torch_version": torch.__version__,
        "noiseprop_version": __version__,
    }
    header = {"format": CNN_FORMAT, "version": "1", "metadata": json.dumps(metadata)}
    tensors = {key: value.detach().contiguous() for key, value in model.state_dict().items()}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(args.output), metadata=header)
    print(
        f"noise-free test accuracy {metadata['test_accuracy']:.4f}, trained in {seconds:.1f} s; "
        f"wrote {args.output} ({args.output.stat().st_size / 1e3:.1f} kB)"
    )


def _accuracy(model, images, labels, chunk: int = 2000) -> float:
    """Noise-free accuracy of ``model`` in eval mode (it is left in eval mode)."""
    import torch

    model.eval()
    correct = 0
    with torch.no_grad():
        for first in range(0, len(labels), chunk):
            logits = model(images[first : first + chunk])
            correct += int((logits.argmax(1) == labels[first : first + chunk]).sum())
    return correct / len(labels)


if __name__ == "__main__":
    main()
