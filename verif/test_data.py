"""Training data: the digits split and the MNIST-format IDX loader (golden/data.py).

IDX files are written here byte by byte with ``struct`` (independently of
:func:`golden.data.write_idx`), plain and gzipped, and then broken in every way the loader
must report.
"""

import gzip
import struct

import numpy as np
import pytest

from golden import data

NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
         "t10k-labels-idx1-ubyte")


def idx_bytes(array, code=0x08):
    """An IDX file by hand: 00 00 type ndim, big-endian uint32 dims, big-endian data."""
    fmt = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}[code]
    array = np.asarray(array)
    head = struct.pack(">BBBB", 0, 0, code, array.ndim)
    head += b"".join(struct.pack(">I", d) for d in array.shape)
    return head + array.astype(fmt).tobytes()


def make_dir(tmp_path, rng, n_train=12, n_test=5, h=4, w=3, gz=(False, True, False, True)):
    imgs_tr = rng.integers(0, 256, (n_train, h, w), dtype=np.uint8)
    labs_tr = rng.integers(0, 7, n_train).astype(np.uint8)
    imgs_te = rng.integers(0, 256, (n_test, h, w), dtype=np.uint8)
    labs_te = rng.integers(0, 7, n_test).astype(np.uint8)
    labs_tr[0] = 6  # so the class count is known: 7
    for name, arr, z in zip(NAMES, (imgs_tr, labs_tr, imgs_te, labs_te), gz, strict=True):
        raw = idx_bytes(arr)
        if z:
            (tmp_path / (name + ".gz")).write_bytes(gzip.compress(raw))
        else:
            (tmp_path / name).write_bytes(raw)
    return imgs_tr, labs_tr, imgs_te, labs_te


def test_digits_split_is_fixed_stratified_and_complete():
    from sklearn.datasets import load_digits

    ref = load_digits()
    ds = data.load_digits()
    assert ds.x_train.shape == (1438, 8, 8) and ds.x_test.shape == (359, 8, 8)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int64
    assert ds.n_classes == 10 and ds.image_shape == (8, 8)
    assert ds.x_train.min() >= 0 and ds.x_train.max() <= 1
    # every class held out at 20% (+- rounding), and train + test are exactly the data set
    total = np.bincount(ref.target, minlength=10)
    test = np.bincount(ds.y_test, minlength=10)
    assert np.all(np.abs(test - 0.2 * total) <= 0.5 + 1e-9)
    assert np.array_equal(test + np.bincount(ds.y_train, minlength=10), total)
    both = np.concatenate([ds.x_train, ds.x_test]).reshape(-1, 64) * 16
    key = np.lexsort(both.T)
    key_ref = np.lexsort(ref.data.T)
    assert np.array_equal(both[key], ref.data[key_ref])
    # fixed: the same on every call, independent of anything else
    again = data.load_digits()
    assert np.array_equal(again.x_train, ds.x_train) and np.array_equal(again.y_test, ds.y_test)


def test_digits_limits_take_a_prefix():
    full = data.load_digits()
    ds = data.load("digits", limit_train=100, limit_test=7)
    assert np.array_equal(ds.x_train, full.x_train[:100])
    assert np.array_equal(ds.y_test, full.y_test[:7])
    # a prefix of the interleaved training set holds every class
    assert len(np.unique(ds.y_train)) == 10


def test_read_idx_every_type_plain_and_gzipped(tmp_path, rng):
    cases = [(0x08, rng.integers(0, 256, (3, 4))), (0x09, rng.integers(-128, 128, (5,))),
             (0x0B, rng.integers(-30000, 30000, (2, 3, 2))),
             (0x0C, rng.integers(-2**31, 2**31, (4,))),
             (0x0D, rng.standard_normal((3, 3)).astype(np.float32)),
             (0x0E, rng.standard_normal((2, 5)))]
    for code, arr in cases:
        p = tmp_path / f"t{code}.idx"
        p.write_bytes(idx_bytes(arr, code))
        got = data.read_idx(p)
        assert got.shape == arr.shape and np.array_equal(got, arr)
        pz = tmp_path / f"t{code}.idx.gz"
        pz.write_bytes(gzip.compress(idx_bytes(arr, code)))
        assert np.array_equal(data.read_idx(pz), arr)
        # write_idx produces the same bytes as the hand-made file
        pw = tmp_path / f"w{code}.idx"
        data.write_idx(pw, arr.astype(got.dtype))
        assert pw.read_bytes() == idx_bytes(arr, code)


def test_load_idx_dir(tmp_path, rng):
    imgs_tr, labs_tr, imgs_te, labs_te = make_dir(tmp_path, rng)
    ds = data.load("idx", data_dir=tmp_path)
    assert ds.x_train.shape == (12, 4, 3) and ds.x_test.shape == (5, 4, 3)
    assert ds.x_train.dtype == np.float32
    assert np.array_equal(ds.x_train, imgs_tr.astype(np.float32) / 255)
    assert np.array_equal(ds.y_train, labs_tr) and np.array_equal(ds.y_test, labs_te)
    assert ds.n_classes == 7
    lim = data.load("idx", data_dir=str(tmp_path), limit_train=3, limit_test=2)
    assert np.array_equal(lim.x_train, ds.x_train[:3]) and np.array_equal(lim.y_test, labs_te[:2])


def test_idx_dir_errors(tmp_path, rng):
    with pytest.raises(FileNotFoundError, match="IDX data directory not found"):
        data.load_idx_dir(tmp_path / "nope")
    with pytest.raises(ValueError, match=r"needs a data directory \(--data-dir DIR\)"):
        data.load("idx")
    make_dir(tmp_path, rng)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError,
                       match="neither t10k-labels-idx1-ubyte nor t10k-labels-idx1-ubyte.gz"):
        data.load_idx_dir(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(4, np.uint8)))
    with pytest.raises(ValueError, match="holds 5 images but t10k-labels-idx1-ubyte holds 4"):
        data.load_idx_dir(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros((5, 1), np.uint8)))
    with pytest.raises(ValueError, match=r"labels must be 1-D, not of shape \(5, 1\)"):
        data.load_idx_dir(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(5, np.uint8)))
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(idx_bytes(np.zeros((5, 12), np.uint8)))
    with pytest.raises(ValueError, match=r"images must be 3-D \(N, H, W\), not of shape \(5, 12\)"):
        data.load_idx_dir(tmp_path)
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(idx_bytes(np.zeros((5, 3, 4), np.uint8)))
    with pytest.raises(ValueError, match=r"Training images are \(4, 3\) but test images are "
                                         r"\(3, 4\)"):
        data.load_idx_dir(tmp_path)


def test_malformed_idx_files(tmp_path):
    p = tmp_path / "bad"
    good = idx_bytes(np.arange(6, dtype=np.uint8).reshape(2, 3))
    cases = [
        (b"\x00\x00", "too short for an IDX header"),
        (b"\x01\x00\x08\x01" + good[4:], "bad IDX magic 01000801"),
        (b"\x00\x00\x07\x02" + good[4:], "unknown IDX data type 0x07"),
        (b"\x00\x00\x08\x00", "IDX file with 0 dimensions"),
        (good[:9], r"truncated IDX header \(9 bytes, need 12\)"),
        (good[:-1], r"IDX data size mismatch: header shape \(2, 3\) of uint8 needs 6 bytes, "
                    r"file has 5"),
        (good + b"\x00", "needs 6 bytes, file has 7"),
        (b"\x1f\x8b" + b"garbage", "corrupt gzip data"),
    ]
    for raw, msg in cases:
        p.write_bytes(raw)
        with pytest.raises(ValueError, match=msg):
            data.read_idx(p)
    with pytest.raises(FileNotFoundError, match="IDX file not found"):
        data.read_idx(tmp_path / "missing")
    p.write_bytes(gzip.compress(good)[:-6])  # a truncated gzip member
    with pytest.raises(ValueError, match="corrupt gzip data"):
        data.read_idx(p)


def test_parameter_errors(tmp_path):
    with pytest.raises(ValueError, match="Unknown data set 'mnist': expected 'digits' or 'idx'"):
        data.load("mnist")
    with pytest.raises(ValueError, match="digits data set is bundled: --data-dir is only for idx"):
        data.load("digits", data_dir=tmp_path)
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="limit_train must be a positive integer or None"):
            data.load_digits(limit_train=bad)
    with pytest.raises(ValueError, match="limit_test must be a positive integer or None, not 0"):
        data.load_digits(limit_test=0)
    with pytest.raises(ValueError, match="IDX cannot hold dtype uint16"):
        data.write_idx(tmp_path / "x", np.zeros(3, np.uint16))
