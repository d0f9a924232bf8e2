"""Tests for noiseprop.datasets: the packaged MNIST, the IDX and .npz loaders, and their errors.

Reference facts (class counts, first labels, mean pixel values) are the published properties of
MNIST, not output of this code. The IDX files are written by a small ``struct``-based writer here,
independent of the parser under test.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import re
import shutil
import struct
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from noiseprop.datasets import _SHA256, MNIST, _parse_idx, mnist

TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
TRAIN_FIRST = [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
TEST_FIRST = [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
# Commonly quoted mean pixel value / 255 (e.g. the torchvision normalisation constants).
TRAIN_MEAN = 0.1306604762738429
TEST_MEAN = 0.13251460584233693

IDX_NAMES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
IDX_CODES = {"u1": 0x08, "i1": 0x09, "i2": 0x0B, "i4": 0x0C, "f4": 0x0D, "f8": 0x0E}


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode an array as IDX: 00 00 type ndim, big-endian uint32 dims, big-endian data."""
    code = IDX_CODES[f"{array.dtype.kind}{array.dtype.itemsize}"]
    header = struct.pack(">BBBB", 0, 0, code, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_idx_dir(
    directory: Path, data: dict[str, np.ndarray], *, compress: bool = False
) -> dict[str, Path]:
    """Write MNIST arrays (images flat (n, 784)) as the four standard IDX files."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, array in data.items():
        if name.endswith("_images"):
            array = array.reshape(len(array), 28, 28)
        payload = idx_bytes(array)
        path = directory / IDX_NAMES[name]
        if compress:
            path = path.with_name(path.name + ".gz")
            payload = gzip.compress(payload, compresslevel=1)
        path.write_bytes(payload)
        paths[name] = path
    return paths


@pytest.fixture(scope="module")
def data() -> MNIST:
    return mnist()


@pytest.fixture
def small(data: MNIST) -> dict[str, np.ndarray]:
    """A small, valid MNIST-format subset (not the official data, so load it with verify=False)."""
    return {
        "train_images": data.train_images[:30],
        "train_labels": data.train_labels[:30],
        "test_images": data.test_images[:20],
        "test_labels": data.test_labels[:20],
    }


# --- The packaged data -------------------------------------------------------------------------


def test_shapes_and_dtypes(data: MNIST) -> None:
    assert data.train_images.shape == (60000, 784)
    assert data.train_labels.shape == (60000,)
    assert data.test_images.shape == (10000, 784)
    assert data.test_labels.shape == (10000,)
    for name in IDX_NAMES:
        assert getattr(data, name).dtype == np.uint8
    assert repr(data) == "MNIST(train=60000, test=10000)"


def test_label_counts_and_first_labels(data: MNIST) -> None:
    assert np.bincount(data.train_labels, minlength=10).tolist() == TRAIN_COUNTS
    assert np.bincount(data.test_labels, minlength=10).tolist() == TEST_COUNTS
    assert data.train_labels[:10].tolist() == TRAIN_FIRST
    assert data.test_labels[:10].tolist() == TEST_FIRST


def test_mean_pixel_values_match_published_constants(data: MNIST) -> None:
    # Integer pixel sums: the means are exact to double precision.
    train_mean = data.train_images.sum(dtype=np.int64) / (255 * data.train_images.size)
    test_mean = data.test_images.sum(dtype=np.int64) / (255 * data.test_images.size)
    assert train_mean == pytest.approx(TRAIN_MEAN, rel=1e-12)
    assert test_mean == pytest.approx(TEST_MEAN, rel=1e-12)


def test_checksums_match_data_and_licence_file(data: MNIST) -> None:
    licence = (resources.files("noiseprop") / "data" / "MNIST-LICENSE.md").read_text()
    for name, expected in _SHA256.items():
        assert hashlib.sha256(getattr(data, name).tobytes()).hexdigest() == expected
        assert f"{expected}  {name}" in licence


def test_arrays_are_read_only_and_dataclass_frozen(data: MNIST) -> None:
    with pytest.raises(ValueError, match="read-only"):
        data.train_images[0, 0] = 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        data.train_labels = data.test_labels  # type: ignore[misc]


def test_scaled(data: MNIST) -> None:
    images, labels = data.scaled("test")
    assert images.dtype == np.float32 and images.shape == (10000, 784)
    assert labels.dtype == np.int64 and labels.tolist() == data.test_labels.tolist()
    assert images.min() == 0.0 and images.max() == 1.0
    # float32 rounding of each pixel / 255 is below 3e-8 relative.
    assert images.mean(dtype=np.float64) == pytest.approx(TEST_MEAN, rel=1e-7)
    images[0, 0] = 0.5  # a fresh, writable copy
    assert data.test_images[0, 0] == 0


def test_scaled_rejects_unknown_split(data: MNIST) -> None:
    with pytest.raises(ValueError, match=r"MNIST.scaled split must be 'train' or 'test'; got 'val'"):
        data.scaled("val")  # type: ignore[arg-type]


# --- MNIST validation ------------------------------------------------------------------------


def test_mnist_rejects_bad_arrays(small: dict[str, np.ndarray]) -> None:
    with pytest.raises(
        ValueError,
        match=r"MNIST.train_images: images must be a uint8 array .*"
        r"got float64 array of shape \(30, 784\)",
    ):
        MNIST(**{**small, "train_images": small["train_images"].astype(np.float64)})
    with pytest.raises(ValueError, match=r"MNIST.test_labels: labels must be in 0..9; got 10"):
        MNIST(**{**small, "test_labels": np.full(20, 10, dtype=np.uint8)})
    with pytest.raises(ValueError, match=r"holds 29 labels but MNIST.train_images holds 30"):
        MNIST(**{**small, "train_labels": small["train_labels"][:29]})
    with pytest.raises(ValueError, match=r"labels must be a uint8 array of shape \(n,\); got list"):
        MNIST(**{**small, "test_labels": [1, 2]})


# --- IDX and .npz round trips ----------------------------------------------------------------


def test_idx_writer_matches_official_header(data: MNIST) -> None:
    header = idx_bytes(data.train_images.reshape(60000, 28, 28))[:16]
    assert header == bytes.fromhex("000008030000ea600000001c0000001c")


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gz"])
def test_idx_round_trip(tmp_path: Path, data: MNIST, compress: bool) -> None:
    write_idx_dir(tmp_path, {name: getattr(data, name) for name in IDX_NAMES}, compress=compress)
    loaded = mnist(tmp_path)  # verify=True: the checksums must hold after the round trip
    for name in IDX_NAMES:
        np.testing.assert_array_equal(getattr(loaded, name), getattr(data, name))


def test_npz_round_trip_and_verify(tmp_path: Path, small: dict[str, np.ndarray]) -> None:
    np.savez(tmp_path / "small.npz", **small)
    loaded = mnist(tmp_path / "small.npz", verify=False)
    np.testing.assert_array_equal(loaded.test_images, small["test_images"])
    with pytest.raises(ValueError, match=r"small.npz: array train_images has SHA-256 .*verify=False"):
        mnist(tmp_path / "small.npz")


# --- Errors ----------------------------------------------------------------------------------


def test_missing_path_and_files(tmp_path: Path, small: dict[str, np.ndarray]) -> None:
    with pytest.raises(
        FileNotFoundError,
        match=r"mnist path .*nowhere does not exist; "
        r"expected a directory holding train-images-idx3-ubyte",
    ):
        mnist(tmp_path / "nowhere")
    paths = write_idx_dir(tmp_path / "idx", small)
    paths["test_labels"].unlink()
    with pytest.raises(
        FileNotFoundError,
        match=r"has no t10k-labels-idx1-ubyte or t10k-labels-idx1-ubyte.gz",
    ):
        mnist(tmp_path / "idx", verify=False)
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(ValueError, match=r"directory of IDX files or an .npz file; got .*notes"):
        mnist(tmp_path / "notes.txt")


def test_subset_fails_verification_naming_file(tmp_path: Path, small: dict[str, np.ndarray]) -> None:
    write_idx_dir(tmp_path, small)
    assert len(mnist(tmp_path, verify=False).train_labels) == 30
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte: array train_images has SHA-256"):
        mnist(tmp_path)


def _corrupt_bad_magic(raw: bytes) -> bytes:
    return b"\x00\x00\x07" + raw[3:]


@pytest.mark.parametrize(
    ("name", "corrupt", "message"),
    [
        (
            "train_images",
            lambda raw: raw[:-1],
            r"train-images-idx3-ubyte: wrong IDX file size \(truncated\)",
        ),
        (
            "test_labels",
            lambda raw: raw + b"\x00",
            r"t10k-labels-idx1-ubyte: wrong IDX file size \(trailing bytes\)",
        ),
        (
            "train_labels",
            _corrupt_bad_magic,
            r"train-labels-idx1-ubyte: bad IDX magic number 00000701",
        ),
        ("test_images", lambda raw: raw[:10], r"t10k-images-idx3-ubyte: truncated IDX header"),
        ("test_images", lambda raw: raw[:2], r"must start with a 4-byte magic number; got 2"),
        (
            "train_labels",
            lambda raw: raw[:3] + b"\x00",
            r"number of dimensions must be >= 1; got 0",
        ),
    ],
    ids=["truncated", "trailing", "bad-magic", "short-header", "tiny", "zero-dims"],
)
def test_corrupt_idx_files(tmp_path, small, name, corrupt, message) -> None:
    path = write_idx_dir(tmp_path, small)[name]
    path.write_bytes(corrupt(path.read_bytes()))
    with pytest.raises(ValueError, match=message):
        mnist(tmp_path, verify=False)


def test_wrong_idx_content(tmp_path: Path, small: dict[str, np.ndarray]) -> None:
    paths = write_idx_dir(tmp_path, small)
    good = paths["train_images"].read_bytes()
    paths["train_images"].write_bytes(idx_bytes(small["train_images"].reshape(30, 28, 28)[:, :, :27]))
    with pytest.raises(
        ValueError,
        match=r"images must have IDX dimensions \(n, 28, 28\); got \(30, 28, 27\)",
    ):
        mnist(tmp_path, verify=False)
    paths["train_images"].write_bytes(
        idx_bytes(small["train_images"].reshape(30, 28, 28).astype(np.int32))
    )
    with pytest.raises(
        ValueError,
        match=r"train-images-idx3-ubyte \(train_images\): images must be a uint8 array .*got int32",
    ):
        mnist(tmp_path, verify=False)
    paths["train_images"].write_bytes(good)
    labels = small["test_labels"].copy()
    labels[7] = 12
    paths["test_labels"].write_bytes(idx_bytes(labels))
    with pytest.raises(
        ValueError,
        match=r"t10k-labels-idx1-ubyte \(test_labels\): labels must be in 0..9; got 12 at index 7",
    ):
        mnist(tmp_path, verify=False)
    paths["test_labels"].write_bytes(idx_bytes(small["test_labels"][:19]))
    with pytest.raises(
        ValueError,
        match=r"t10k-labels-idx1-ubyte holds 19 labels but "
        r".*t10k-images-idx3-ubyte holds 20 images",
    ):
        mnist(tmp_path, verify=False)


def test_corrupt_gzip(tmp_path: Path, small: dict[str, np.ndarray]) -> None:
    paths = write_idx_dir(tmp_path, small, compress=True)
    raw = paths["train_labels"].read_bytes()
    paths["train_labels"].write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match=r"train-labels-idx1-ubyte.gz is not a valid gzip file"):
        mnist(tmp_path, verify=False)
    paths["train_labels"].write_bytes(b"not gzip at all")
    with pytest.raises(ValueError, match=r"train-labels-idx1-ubyte.gz is not a valid gzip file"):
        mnist(tmp_path, verify=False)


def test_corrupt_npz(tmp_path: Path, small: dict[str, np.ndarray]) -> None:
    packaged = resources.files("noiseprop") / "data" / "mnist.npz"
    with resources.as_file(packaged) as source:
        raw = source.read_bytes()
    broken = tmp_path / "broken.npz"
    middle = len(raw) // 2  # inside train_images' compressed stream
    broken.write_bytes(
        raw[:middle] + bytes(b ^ 0xFF for b in raw[middle : middle + 64]) + raw[middle + 64 :]
    )
    with pytest.raises(ValueError, match=r"broken.npz is not a readable .npz file"):
        mnist(broken)
    broken.write_bytes(raw[:middle])
    with pytest.raises(ValueError, match=r"broken.npz is not a readable .npz file"):
        mnist(broken)
    np.save(tmp_path / "single.npy", small["test_labels"])
    shutil.move(tmp_path / "single.npy", tmp_path / "single.npz")
    with pytest.raises(ValueError, match=r"single.npz is not a readable .npz file: found a single"):
        mnist(tmp_path / "single.npz")
    np.savez(tmp_path / "partial.npz", train_images=small["train_images"])
    with pytest.raises(
        ValueError,
        match=r"partial.npz has no array train_labels, test_images, test_labels",
    ):
        mnist(tmp_path / "partial.npz")
    np.savez(tmp_path / "flat.npz", **{**small, "test_images": small["test_images"].reshape(-1)})
    with pytest.raises(
        ValueError,
        match=re.escape(
            "flat.npz (test_images): images must be a uint8 array of shape (n, 784); "
            "got uint8 array of shape (15680,)"
        ),
    ):
        mnist(tmp_path / "flat.npz", verify=False)


# --- Properties of the IDX parser ------------------------------------------------------------

idx_arrays = hnp.arrays(
    dtype=st.sampled_from([np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64]),
    shape=hnp.array_shapes(min_dims=1, max_dims=4, min_side=0, max_side=6),
)


@settings(max_examples=60, deadline=None)
@given(array=idx_arrays)
def test_idx_round_trip_property(array: np.ndarray) -> None:
    parsed = _parse_idx(idx_bytes(array), "x")
    assert parsed.dtype == array.dtype and parsed.shape == array.shape
    np.testing.assert_array_equal(parsed, array)


@settings(max_examples=60, deadline=None)
@given(array=idx_arrays, data=st.data())
def test_idx_truncation_or_extension_always_raises(array: np.ndarray, data) -> None:
    raw = idx_bytes(array)
    cut = data.draw(st.integers(0, len(raw) - 1), label="cut")
    with pytest.raises(ValueError, match=r"^x: "):
        _parse_idx(raw[:cut], "x")
    extra = data.draw(st.binary(min_size=1, max_size=9), label="extra")
    with pytest.raises(ValueError, match=r"x: wrong IDX file size \(trailing bytes\)"):
        _parse_idx(raw + extra, "x")
