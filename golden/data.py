"""Training data for the golden model: scikit-learn's 8x8 digits, and MNIST-format IDX files.

Two sources, both offline:

- ``digits``: the 1797 8x8 images bundled with scikit-learn (values 0..16), split once and for
  all into 1438 training and 359 test samples (20% of each class held out), with a fixed
  generator (seed :data:`SPLIT_SEED`) that does not depend on the training seed;
- ``idx``: the four MNIST files in one directory (``train-images-idx3-ubyte``,
  ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``), each
  optionally gzipped (``.gz``), so MNIST or Fashion-MNIST work when a user has them.

The IDX format (http://yann.lecun.com/exdb/mnist/): two zero bytes, a type byte (``0x08``
uint8, ``0x09`` int8, ``0x0B`` int16, ``0x0C`` int32, ``0x0D`` float32, ``0x0E`` float64), the
number of dimensions, one big-endian uint32 per dimension, then the data in big-endian C order.

Images come out as float32 in [0, 1], shape (N, H, W); labels as int64, shape (N,).
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "SPLIT_SEED",
    "IDX_FILES",
    "Dataset",
    "load",
    "load_digits",
    "load_idx_dir",
    "read_idx",
    "write_idx",
]

SPLIT_SEED = 20240607  #: the digits split is fixed by this seed, independent of training seeds
TEST_FRACTION = 0.2  #: share of each digits class held out for test
#: The four files of an IDX data set directory (each may also be gzipped, name + ".gz").
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
_IDX_TYPES = {
    0x08: np.dtype("u1"), 0x09: np.dtype("i1"), 0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8"),
}


@dataclass(frozen=True)
class Dataset:
    """A classification data set split into training and test parts.

    Attributes
    ----------
    name : str
        ``"digits"`` or ``"idx:<directory>"``.
    x_train, x_test : numpy.ndarray of float32
        Images, shape (N, H, W), values in [0, 1].
    y_train, y_test : numpy.ndarray of int64
        Class labels in ``[0, n_classes)``.
    n_classes : int
        Number of classes.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    n_classes: int

    @property
    def image_shape(self) -> tuple[int, int]:
        return tuple(self.x_train.shape[1:])


def _check_limit(name: str, value) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer or None, not {value!r}")
    return int(value)


def _limited(ds: Dataset, limit_train, limit_test) -> Dataset:
    lt = _check_limit("limit_train", limit_train)
    le = _check_limit("limit_test", limit_test)
    return Dataset(ds.name, ds.x_train[:lt], ds.y_train[:lt], ds.x_test[:le], ds.y_test[:le],
                   ds.n_classes)


def load_digits(limit_train=None, limit_test=None) -> Dataset:
    """scikit-learn's 8x8 digits with the fixed stratified split (module docstring).

    ``limit_train`` / ``limit_test`` keep the first N samples of each part.
    """
    from sklearn.datasets import load_digits as _sk_digits

    d = _sk_digits()
    x = (d.images / 16.0).astype(np.float32)
    y = d.target.astype(np.int64)
    rng = np.random.default_rng(SPLIT_SEED)
    train_idx, test_idx = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        n_test = int(round(TEST_FRACTION * idx.size))
        test_idx.append(idx[:n_test])
        train_idx.append(idx[n_test:])
    # Interleave the classes in a fixed random order (so a --limit-train prefix is balanced).
    train_idx = rng.permutation(np.concatenate(train_idx))
    test_idx = rng.permutation(np.concatenate(test_idx))
    ds = Dataset("digits", x[train_idx], y[train_idx], x[test_idx], y[test_idx], 10)
    return _limited(ds, limit_train, limit_test)


def read_idx(path) -> np.ndarray:
    """Read one IDX file (gzipped if its content starts with the gzip magic).

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file is not a well-formed IDX file (the message says what is wrong).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"IDX file not found: {path}")
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise ValueError(f"{path}: corrupt gzip data ({e})") from None
    if len(raw) < 4:
        raise ValueError(f"{path}: too short for an IDX header ({len(raw)} bytes)")
    if raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{path}: bad IDX magic {raw[:4].hex()} (must start with 0000)")
    code, ndim = raw[2], raw[3]
    if code not in _IDX_TYPES:
        raise ValueError(f"{path}: unknown IDX data type 0x{code:02x}")
    if ndim == 0:
        raise ValueError(f"{path}: IDX file with 0 dimensions")
    head = 4 + 4 * ndim
    if len(raw) < head:
        raise ValueError(f"{path}: truncated IDX header ({len(raw)} bytes, need {head})")
    shape = tuple(int(v) for v in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = _IDX_TYPES[code]
    want = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    have = len(raw) - head
    if have != want:
        raise ValueError(
            f"{path}: IDX data size mismatch: header shape {shape} of {dtype.name} needs "
            f"{want} bytes, file has {have}")
    out = np.frombuffer(raw, dtype=dtype, offset=head).reshape(shape)
    return out.astype(dtype.newbyteorder("="))


def write_idx(path, array, compress: bool = False) -> None:
    """Write ``array`` (uint8, int8, int16, int32, float32 or float64) as an IDX file."""
    array = np.asarray(array)
    code = {("u", 1): 0x08, ("i", 1): 0x09, ("i", 2): 0x0B, ("i", 4): 0x0C, ("f", 4): 0x0D,
            ("f", 8): 0x0E}.get((array.dtype.kind, array.dtype.itemsize))
    if code is None:
        raise ValueError(f"IDX cannot hold dtype {array.dtype}")
    if array.ndim == 0 or array.ndim > 255:
        raise ValueError(f"IDX needs 1 to 255 dimensions, not {array.ndim}")
    head = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    data = head + np.ascontiguousarray(array, dtype=_IDX_TYPES[code]).tobytes()
    Path(path).write_bytes(gzip.compress(data, mtime=0) if compress else data)


def _find(directory: Path, base: str) -> Path:
    for name in (base, base + ".gz"):
        if (directory / name).is_file():
            return directory / name
    raise FileNotFoundError(
        f"IDX data set file missing: neither {base} nor {base}.gz in {directory} (need "
        f"{', '.join(IDX_FILES.values())}, each optionally gzipped)")


def _images_labels(directory: Path, part: str):
    img_path = _find(directory, IDX_FILES[f"{part}_images"])
    lab_path = _find(directory, IDX_FILES[f"{part}_labels"])
    images = read_idx(img_path)
    labels = read_idx(lab_path)
    if images.ndim != 3:
        raise ValueError(f"{img_path}: images must be 3-D (N, H, W), not of shape {images.shape}")
    if labels.ndim != 1:
        raise ValueError(f"{lab_path}: labels must be 1-D, not of shape {labels.shape}")
    if labels.shape[0] != images.shape[0]:
        raise ValueError(
            f"{img_path.name} holds {images.shape[0]} images but {lab_path.name} holds "
            f"{labels.shape[0]} labels")
    if images.shape[0] == 0:
        raise ValueError(f"{img_path}: no images")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{lab_path}: labels must be integers, not {labels.dtype}")
    if labels.min() < 0:
        raise ValueError(f"{lab_path}: negative label {int(labels.min())}")
    if images.dtype == np.uint8:
        x = images.astype(np.float32) / 255.0
    else:
        x = images.astype(np.float32)
        if not np.all(np.isfinite(x)) or x.min() < 0 or x.max() > 1:
            raise ValueError(f"{img_path}: non-uint8 images must hold values in [0, 1]")
    return x, labels.astype(np.int64)


def load_idx_dir(data_dir, limit_train=None, limit_test=None) -> Dataset:
    """Load the four MNIST-format files from ``data_dir`` (module docstring).

    Raises
    ------
    FileNotFoundError
        If the directory or one of the four files (plain or ``.gz``) is missing.
    ValueError
        If a file is malformed or the parts do not agree (shapes, counts).
    """
    lt = _check_limit("limit_train", limit_train)
    le = _check_limit("limit_test", limit_test)
    if data_dir is None:
        raise ValueError("The idx data set needs a data directory (--data-dir DIR)")
    directory = Path(data_dir)
    if not directory.is_dir():
        raise FileNotFoundError(f"IDX data directory not found: {directory}")
    x_tr, y_tr = _images_labels(directory, "train")
    x_te, y_te = _images_labels(directory, "test")
    if x_tr.shape[1:] != x_te.shape[1:]:
        raise ValueError(
            f"Training images are {x_tr.shape[1:]} but test images are {x_te.shape[1:]}")
    n_classes = int(max(y_tr.max(), y_te.max())) + 1
    ds = Dataset(f"idx:{directory}", x_tr, y_tr, x_te, y_te, n_classes)
    return _limited(ds, lt, le)


def load(name: str, data_dir=None, limit_train=None, limit_test=None) -> Dataset:
    """Load data set ``name`` (``"digits"`` or ``"idx"``)."""
    if name == "digits":
        if data_dir is not None:
            raise ValueError("The digits data set is bundled: --data-dir is only for idx")
        return load_digits(limit_train, limit_test)
    if name == "idx":
        return load_idx_dir(data_dir, limit_train, limit_test)
    raise ValueError(f"Unknown data set {name!r}: expected 'digits' or 'idx'")
