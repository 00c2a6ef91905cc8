"""Tests of the HBM v1 codec and size measures, :mod:`golden.hbm`.

Expected streams are built by hand (hex written out, or :mod:`struct` in
:func:`ref_encode`, a plain loop that follows ARCHITECTURE.md section 2 word for word);
expected sizes come from hand counts or from :func:`ref_sizes`, a loop that counts the
fields of each format as ``docs/formats.md`` defines them.
"""

import json
import math
import re
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from golden import hbm
from golden.bfp import BFPTensor, quantize
from golden.hbm import (
    decode,
    decode_tensor,
    encode,
    encode_tensor,
    entropy_bound_bits,
    size_bits,
    size_bits_bitmask,
    size_bits_csr,
    size_bits_rle,
)

ROOT = Path(__file__).resolve().parent.parent
SETTINGS = settings(deadline=None, max_examples=60,
                    suppress_health_check=[HealthCheck.too_slow])
SPARSITIES = [0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.97, 0.99]


# --------------------------------------------------------------------------- references

def ref_encode(exps, mants) -> bytes:
    """ARCHITECTURE.md section 2, literally: one superblock of 16 blocks at a time."""
    exps = [int(v) for v in exps]
    mants = np.asarray(mants).reshape(-1, 16).tolist()
    out = bytearray()
    for first in range(0, len(exps), 16):
        blocks = range(first, min(first + 16, len(exps)))
        l1 = sum(1 << (b - first) for b in blocks if any(mants[b]))
        out += struct.pack("<H", l1)
        for b in blocks:
            if any(mants[b]):
                nz = [v for v in mants[b] if v]
                l2 = sum(1 << i for i, v in enumerate(mants[b]) if v)
                out += struct.pack(f"<HB{len(nz)}b", l2, exps[b], *nz)
    return bytes(out)


def ref_sizes(mants, run_bits=4):
    """Field-by-field bit counts of every format, by loops over the values."""
    flat = [int(v) for v in np.asarray(mants).reshape(-1)]
    n = len(flat)
    blocks = [flat[k:k + 16] for k in range(0, n, 16)]
    bnz = sum(1 for b in blocks if any(b))
    nnz = sum(1 for v in flat if v)
    hbm_bits = 0
    for first in range(0, len(blocks), 16):
        hbm_bits += 16  # L1
        for b in blocks[first:first + 16]:
            if any(b):
                hbm_bits += 16 + 8 + 8 * sum(1 for v in b if v)  # L2, E, mantissas
    csr = 0
    for r in range(0, n, 256):
        csr += 9 + sum(8 + 8 for v in flat[r:r + 256] if v)
    csr += 8 * bnz
    # RLE: emit tokens one by one; escapes wait for a nonzero (trailing zeros are implied)
    tokens, pending, run, cap = 0, 0, 0, 1 << run_bits
    for v in flat:
        if v == 0:
            run += 1
            if run == cap:  # an escape token (cap - 1 zeros then a literal 0)
                pending += 1
                run = 0
        else:
            tokens += pending + 1
            pending = run = 0
    rle = (run_bits + 8) * tokens + 8 * bnz
    return {"hbm": hbm_bits, "bitmask": n + 8 * bnz + 8 * nnz, "csr": csr, "rle": rle}


def random_blocks(rng, n_blocks, sparsity, clustered=False):
    """Random canonical (exponents, mantissas): i.i.d. zeros, or also whole zero blocks and
    whole zero superblocks (clustered)."""
    zero = rng.random((n_blocks, 16)) < sparsity
    if clustered:
        zero |= (rng.random(n_blocks) < sparsity / 2)[:, None]
        sb = rng.random(-(-n_blocks // 16)) < sparsity / 3
        zero |= np.repeat(sb, 16)[:n_blocks, None]
    mag = rng.integers(1, 128, (n_blocks, 16))
    m = np.where(zero, 0, np.where(rng.random((n_blocks, 16)) < 0.5, -mag, mag))
    m = m.astype(np.int8)
    e = np.where(m.any(axis=1), rng.integers(1, 256, n_blocks), 0).astype(np.uint8)
    return e, m.reshape(-1)


# --------------------------------------------------------------------------- hand streams

# The worked example of docs/formats.md: a 3 x 16 float tensor, one block per row.
DOC_X = np.zeros((3, 16), np.float32)
DOC_X[0, [1, 4, 15]] = [1.5, -0.25, 3.0]
DOC_X[2, [0, 3, 7, 8, 12]] = [0.3, -0.05, 0.009765625, 0.001, 0.005859375]
# Hand derivation: row 0: max 3.0, e = 1, E = 128 = 0x80, scale 2**5: 48, -8, 96.
# Row 1: all zero, E = 0. Row 2: max 0.3, e = -2, E = 125 = 0x7d, scale 2**8:
# 0.3 -> 76.8 -> 77, -0.05 -> -12.8 -> -13, 2.5 -> 2 (tie, even), 0.256 -> 0, 1.5 -> 2.
DOC_E = [128, 0, 125]
DOC_M = [[0, 48, 0, 0, -8] + [0] * 10 + [96], [0] * 16,
         [77, 0, 0, -13, 0, 0, 0, 2, 0, 0, 0, 0, 2, 0, 0, 0]]
# L1 = blocks 0, 2 = 0x0005; L2(0) = bits 1, 4, 15 = 0x8012; L2(2) = bits 0, 3, 7, 12 = 0x1089
DOC_HEX = "05 00 12 80 80 30 f8 60 89 10 7d 4d f3 02 02"


def test_doc_example_quantizes_and_encodes():
    t = quantize(DOC_X)
    assert t.exponents.reshape(-1).tolist() == DOC_E
    assert t.mantissas.tolist() == DOC_M
    data = encode_tensor(t)
    assert data == bytes.fromhex(DOC_HEX)
    back = decode_tensor(data, (3, 16))
    assert back == t
    assert back.dequantize()[2, [0, 3, 7, 8, 12]].tolist() == \
        [77 / 256, -13 / 256, 2 / 256, 0.0, 2 / 256]


def test_doc_example_matches_docs():
    text = (ROOT / "docs" / "formats.md").read_text()
    found = re.findall(r"HBM v1 stream \((\d+) bytes\): `([0-9a-f ]+)`", text)
    assert found == [("15", DOC_HEX)]


def test_hand_stream_two_superblocks():
    # 18 blocks: superblock 0 has only block 3 nonzero (one value), superblock 1 (short, 2
    # blocks) has block 17 full of 1s and block 16 zero.
    e = np.zeros(18, np.uint8)
    m = np.zeros((18, 16), np.int8)
    m[3, 9] = -127
    e[3] = 200
    m[17, :] = 1
    e[17] = 1
    want = (struct.pack("<H", 1 << 3) + struct.pack("<HBb", 1 << 9, 200, -127)
            + struct.pack("<H", 1 << 1) + struct.pack("<HB", 0xFFFF, 1) + bytes([1] * 16))
    assert want.hex() == "0800" "0002c881" "0200" "ffff01" + "01" * 16
    assert encode(e, m) == want
    assert encode(e, m.reshape(-1)) == want
    e2, m2 = decode(want, 18)
    assert e2.tolist() == e.tolist() and m2.tolist() == m.reshape(-1).tolist()
    assert size_bits(m) == 8 * len(want) == 8 * 27


def test_zero_blocks_and_empty_input():
    assert encode(np.zeros(0, np.uint8), np.zeros(0, np.int8)) == b""
    assert encode(np.zeros(0, np.uint8), np.zeros((0, 16), np.int8)) == b""
    e, m = decode(b"", 0)
    assert e.shape == (0,) and m.shape == (0,) and e.dtype == np.uint8 and m.dtype == np.int8
    # all-zero tensors: two L1 masks of 0 for 17..32 blocks
    assert encode(np.zeros(20, np.uint8), np.zeros(320, np.int8)) == b"\0\0\0\0"
    e, m = decode(b"\0\0\0\0", 20)
    assert not e.any() and not m.any() and m.shape == (320,)


def test_single_block():
    m = np.array([0] * 15 + [5], np.int8)
    data = encode(np.array([7], np.uint8), m)
    assert data == bytes.fromhex("0100" "0080" "07" "05")
    e2, m2 = decode(data, 1)
    assert e2.tolist() == [7] and m2.tolist() == m.tolist()


# --------------------------------------------------------------------------- round trips

@SETTINGS
@given(st.integers(0, 70), st.floats(0.0, 0.99), st.booleans(), st.integers(0, 2 ** 32 - 1))
def test_round_trip_random(n_blocks, sparsity, clustered, seed):
    rng = np.random.default_rng(seed)
    e, m = random_blocks(rng, n_blocks, sparsity, clustered)
    data = encode(e, m)
    assert data == ref_encode(e, m)
    assert len(data) * 8 == size_bits(m) == ref_sizes(m)["hbm"]
    e2, m2 = decode(data, n_blocks)
    assert np.array_equal(e2, e) and np.array_equal(m2, m)
    pad = int(rng.integers(0, 8))
    e3, m3 = decode(data + bytes(pad), n_blocks)
    assert np.array_equal(e3, e) and np.array_equal(m3, m)


@SETTINGS
@given(st.lists(st.integers(0, 5), min_size=1, max_size=3), st.floats(0.0, 0.99),
       st.integers(0, 2 ** 32 - 1))
def test_tensor_round_trip(lead, sparsity, seed):
    rng = np.random.default_rng(seed)
    shape = tuple(lead) + (16 * int(rng.integers(1, 4)),)
    x = rng.standard_normal(shape).astype(np.float32)
    x[rng.random(shape) < sparsity] = 0
    t = quantize(x)
    data = encode_tensor(t)
    assert data == ref_encode(t.exponents.reshape(-1), t.mantissas.reshape(-1))
    assert decode_tensor(data, shape) == t


@SETTINGS
@given(st.integers(1, 40), st.floats(0.0, 0.99), st.integers(0, 2 ** 32 - 1), st.data())
def test_decode_is_canonical_under_corruption(n_blocks, sparsity, seed, data):
    """A corrupted stream is either rejected or decodes to a tensor whose encoding is that
    very stream (no two streams decode to the same tensor)."""
    rng = np.random.default_rng(seed)
    e, m = random_blocks(rng, n_blocks, sparsity, data.draw(st.booleans()))
    stream = bytearray(encode(e, m))
    if stream:
        for _ in range(data.draw(st.integers(1, 3))):
            k = data.draw(st.integers(0, len(stream) - 1))
            stream[k] = data.draw(st.integers(0, 255))
    stream += bytes(data.draw(st.integers(0, 9)))
    try:
        e2, m2 = decode(bytes(stream), n_blocks)
    except ValueError:
        return
    again = encode(e2, m2)
    assert bytes(stream[:len(again)]) == again
    assert len(stream) - len(again) < 8 and not any(stream[len(again):])


@SETTINGS
@given(st.integers(1, 40), st.floats(0.0, 0.99), st.integers(0, 2 ** 32 - 1))
def test_every_prefix_is_truncated(n_blocks, sparsity, seed):
    e, m = random_blocks(np.random.default_rng(seed), n_blocks, sparsity)
    stream = encode(e, m)
    for k in range(len(stream)):
        with pytest.raises(ValueError, match=r"^Truncated HBM stream: "):
            decode(stream[:k], n_blocks)


# --------------------------------------------------------------------------- decode errors

def _err(data, n_blocks, msg):
    with pytest.raises(ValueError, match="^" + re.escape(msg) + "$"):
        decode(data, n_blocks)


def test_decode_truncated():
    _err(b"", 1, "Truncated HBM stream: superblock 0 L1 mask needs 2 byte(s) at offset 0, "
                 "0 left")
    _err(b"\x01", 1, "Truncated HBM stream: superblock 0 L1 mask needs 2 byte(s) at offset 0, "
                     "1 left")
    _err(b"\x01\x00\x03", 1, "Truncated HBM stream: block 0 L2 mask needs 2 byte(s) at "
                             "offset 2, 1 left")
    _err(b"\x01\x00\x03\x00", 1, "Truncated HBM stream: block 0 exponent needs 1 byte(s) at "
                                 "offset 4, 0 left")
    _err(b"\x01\x00\x03\x00\x7f\x05", 1, "Truncated HBM stream: block 0 mantissas needs 2 "
                                         "byte(s) at offset 5, 1 left")
    # the second superblock's L1 mask is missing
    _err(b"\x00\x00", 17, "Truncated HBM stream: superblock 1 L1 mask needs 2 byte(s) at "
                          "offset 2, 0 left")


def test_decode_empty_l2():
    _err(struct.pack("<HHB", 1 << 2, 0, 127), 3,
         "Block 2 has its L1 bit set but an empty L2 mask (offset 2)")


def test_decode_zero_and_minus_128_mantissas():
    _err(struct.pack("<HHBbb", 1, 0b101, 127, 5, 0), 1,
         "Block 0 mantissa 2 is the byte 0x00 (0), not a canonical nonzero (offset 6)")
    _err(struct.pack("<HHBbb", 1, 0b11, 127, -128, 3), 1,
         "Block 0 mantissa 0 is the byte 0x80 (-128), not a canonical nonzero (offset 5)")


def test_decode_zero_exponent():
    _err(struct.pack("<HHBb", 1, 1, 0, 5), 1,
         "Block 0 exponent byte is 0 for a nonzero block (offset 4)")
    # in the second superblock: block index is global
    _err(struct.pack("<HHHBb", 0, 1 << 1, 1, 0, 5), 20,
         "Block 17 exponent byte is 0 for a nonzero block (offset 6)")


def test_decode_l1_bit_beyond_last_block():
    _err(struct.pack("<H", 0b1001), 3,
         "Superblock 0 L1 mask 0x0009 (offset 0) sets bit 3, beyond the last block "
         "(n_blocks = 3)")
    _err(struct.pack("<HH", 0, 0x8000), 18,
         "Superblock 1 L1 mask 0x8000 (offset 2) sets bit 15, beyond the last block "
         "(n_blocks = 18)")


def test_decode_padding():
    stream = encode(np.array([127], np.uint8), np.array([3] + [0] * 15, np.int8))
    assert stream == bytes.fromhex("0100" "0100" "7f" "03")
    for pad in range(8):
        e, m = decode(stream + bytes(pad), 1)
        assert e.tolist() == [127] and m[0] == 3
    _err(stream + bytes(8), 1, "Trailing data after the HBM stream: 8 bytes at offset 6 "
                               "(only zero padding of fewer than 8 bytes is allowed)")
    _err(stream + b"\0\x01", 1, "Trailing bytes after the HBM stream are not zero padding: "
                                "byte 0x01 at offset 7")
    _err(stream + b"\xff", 1, "Trailing bytes after the HBM stream are not zero padding: "
                              "byte 0xff at offset 6")
    # padding is accepted after an empty stream too, and as bytearray / memoryview
    assert decode(bytes(7), 0)[0].shape == (0,)
    assert decode(bytearray(stream), 1)[0].tolist() == [127]
    assert decode(memoryview(stream + bytes(3)), 1)[0].tolist() == [127]


@pytest.mark.parametrize("n, text", [(-1, "-1"), (True, "True"), (1.0, "1.0"), ("1", "'1'")])
def test_decode_bad_n_blocks(n, text):
    _err(b"", n, f"n_blocks must be a non-negative integer, not {text}")


def test_decode_bad_data_type():
    with pytest.raises(TypeError, match=r"^HBM data must be bytes-like, not str$"):
        decode("0100", 1)
    with pytest.raises(TypeError, match=r"^HBM data must be bytes-like, not list$"):
        decode([1, 0], 1)


# --------------------------------------------------------------------------- encode errors

def _eerr(e, m, msg):
    with pytest.raises(ValueError, match="^" + re.escape(msg) + "$"):
        encode(e, m)


def test_encode_rejects_bad_input():
    e1, m1 = np.array([0], np.uint8), np.zeros(16, np.int8)
    _eerr(e1.astype(np.int64), m1, "Exponents must be a uint8 array, not int64")
    _eerr([0], m1, "Exponents must be a uint8 array, not int64")
    _eerr(e1.reshape(1, 1), m1, "Exponents must have shape (n_blocks,), not (1, 1)")
    _eerr(e1, m1.astype(np.int16), "Mantissas must be an int8 array, not int16")
    _eerr(e1, np.zeros(17, np.int8),
          "Mantissas must have shape (n_blocks * 16,) or (n_blocks, 16), not (17,)")
    _eerr(e1, np.zeros((2, 8), np.int8),
          "Mantissas must have shape (n_blocks * 16,) or (n_blocks, 16), not (2, 8)")
    _eerr(e1, np.zeros((1, 1, 16), np.int8),
          "Mantissas must have shape (n_blocks * 16,) or (n_blocks, 16), not (1, 1, 16)")
    _eerr(np.zeros(2, np.uint8), m1, "Got 2 exponent(s) for 1 block(s) of mantissas")
    m = np.zeros(32, np.int8)
    m[20] = -128
    _eerr(np.array([0, 1], np.uint8), m,
          "Mantissa -128 at index 20 (block 1) is not a valid BFP8 value")
    m[20] = 4
    _eerr(np.array([0, 0], np.uint8), m, "Block 1 has nonzero mantissas but exponent 0")
    _eerr(np.array([7, 9], np.uint8), m, "Block 0 is all zero but has exponent 7 (canonical: 0)")


def test_tensor_wrappers_validate():
    with pytest.raises(TypeError, match=r"^Expected a BFPTensor, not ndarray$"):
        encode_tensor(np.zeros(16, np.int8))
    t8 = BFPTensor(np.zeros(2, np.uint8), np.zeros(16, np.int8), 8)
    with pytest.raises(ValueError, match=r"^HBM v1 codes blocks of 16 values, not 8$"):
        encode_tensor(t8)
    with pytest.raises(ValueError, match=r"^HBM v1 codes blocks of 16 values, not 8$"):
        decode_tensor(b"\0\0", (16,), block=8)
    with pytest.raises(ValueError, match=r"^Block size must be a positive power of two, "
                                         r"not 3$"):
        decode_tensor(b"\0\0", (16,), block=3)
    for shape, text in [((), "()"), (5, "5"), ((2, -16), "(2, -16)"), ((1.0, 16), "(1.0, 16)")]:
        with pytest.raises(ValueError, match="^" + re.escape(
                f"Shape must be a tuple of non-negative integers, not {text}") + "$"):
            decode_tensor(b"\0\0", shape)
    with pytest.raises(ValueError, match=r"^Last axis of shape \(3, 20\) is not a multiple of "
                                         r"the block size 16$"):
        decode_tensor(b"\0\0", (3, 20))
    # non-canonical tensors are refused by the encoder
    bad = BFPTensor(np.array([3], np.uint8), np.zeros(16, np.int8))
    with pytest.raises(ValueError, match=r"^Block 0 is all zero but has exponent 3"):
        encode_tensor(bad)
    # shapes with no blocks
    t0 = decode_tensor(b"", (4, 0))
    assert t0.shape == (4, 0) and t0.exponents.shape == (4, 0)


# --------------------------------------------------------------------------- sizes

def test_sizes_hand_counted():
    # 48 values (3 blocks), nonzeros at 0, 20, 21, 47: nnz = 4, 3 nonzero blocks
    m = np.zeros(48, np.int8)
    m[[0, 20, 21, 47]] = [1, -2, 3, 127]
    assert size_bits(m) == 16 + 3 * 24 + 4 * 8 == 120
    assert size_bits_bitmask(m) == 48 + 3 * 8 + 4 * 8 == 104
    assert size_bits_csr(m) == 9 + 4 * 16 + 3 * 8 == 97
    # runs before the nonzeros: 0, 19, 0, 25 -> escapes (16 zeros each): 0 + 1 + 0 + 1
    assert size_bits_rle(m) == 12 * (4 + 2) + 24 == 96
    # 2-bit runs: escapes of 4 zeros: 0 + 4 + 0 + 6; 8-bit runs: no escapes
    assert size_bits_rle(m, 2) == 10 * (4 + 10) + 24 == 164
    assert size_bits_rle(m, 8) == 16 * 4 + 24 == 88
    h = -(1 / 12 * math.log2(1 / 12) + 11 / 12 * math.log2(11 / 12))
    assert entropy_bound_bits(m, "iid") == pytest.approx(48 * h + 32 + 24, rel=1e-12)
    # every block is nonzero: the block model's L1 term vanishes, the rest is the same
    assert entropy_bound_bits(m) == pytest.approx(48 * h + 32 + 24, rel=1e-12)


def test_entropy_models_differ_on_clustered_zeros():
    # 4 blocks, only block 0 nonzero, with 2 nonzeros
    m = np.zeros((4, 16), np.int8)
    m[0, [3, 9]] = 5

    def h2(p):
        return -(p * math.log2(p) + (1 - p) * math.log2(1 - p))

    assert entropy_bound_bits(m, "iid") == pytest.approx(64 * h2(2 / 64) + 16 + 8)
    assert entropy_bound_bits(m, "block") == pytest.approx(4 * h2(1 / 4) + 16 * h2(2 / 16)
                                                           + 16 + 8)
    assert entropy_bound_bits(np.zeros(32, np.int8)) == 0.0
    assert entropy_bound_bits(np.zeros(0, np.int8), "iid") == 0.0
    dense = np.ones(32, np.int8)
    assert entropy_bound_bits(dense) == 32 * 8 + 2 * 8


def test_size_parameters_validated():
    with pytest.raises(ValueError, match=r"^Entropy model must be 'iid' or 'block', not 'x'$"):
        entropy_bound_bits(np.zeros(16, np.int8), "x")
    for bad, text in [(0, "0"), (17, "17"), (True, "True"), (4.0, "4.0")]:
        with pytest.raises(ValueError, match="^" + re.escape(
                f"run_bits must be an integer in [1, 16], not {text}") + "$"):
            size_bits_rle(np.zeros(16, np.int8), bad)
    for f in (size_bits, size_bits_bitmask, size_bits_csr, size_bits_rle, entropy_bound_bits):
        with pytest.raises(ValueError, match=r"^Mantissas must be an int8 array, not int64$"):
            f(np.zeros(16, np.int64))
        with pytest.raises(ValueError, match=r"^Mantissas must have shape"):
            f(np.zeros(15, np.int8))


@SETTINGS
@given(st.integers(0, 40), st.floats(0.0, 0.999), st.booleans(), st.integers(1, 8),
       st.integers(0, 2 ** 32 - 1))
def test_sizes_match_field_counts(n_blocks, sparsity, clustered, run_bits, seed):
    e, m = random_blocks(np.random.default_rng(seed), n_blocks, sparsity, clustered)
    ref = ref_sizes(m, run_bits)
    assert size_bits(m) == ref["hbm"] == 8 * len(encode(e, m))
    assert size_bits_bitmask(m) == ref["bitmask"]
    assert size_bits_csr(m) == ref["csr"]
    assert size_bits_rle(m, run_bits) == ref["rle"]
    # the block-model entropy never exceeds HBM's own fields, the i.i.d. one never the bitmask
    assert entropy_bound_bits(m, "block") <= size_bits(m) + 1e-9
    assert entropy_bound_bits(m, "iid") <= size_bits_bitmask(m) + 1e-9


@pytest.mark.parametrize("s", [0.0, 0.5, 0.8, 0.9, 0.95, 0.99])
def test_architecture_approximation(rng, s):
    """With zeros i.i.d. Bernoulli(s) and a whole number of superblocks, ARCHITECTURE.md's
    ``1/16 + 1.5 (1 - s**16) + 8 (1 - s)`` is the exact expectation of bits per value: 16 L1
    bits per 256 values, 24 bits (L2 + E) per nonzero block (probability 1 - s**16, per 16
    values), 8 bits per nonzero. Blocks are independent, so the tolerance is 5 standard
    deviations of the mean, computed exactly from the binomial law of the nonzero count per
    block (false-failure probability < 1e-6 per case)."""
    n_blocks = 4096
    e, m = random_blocks(rng, n_blocks, s)
    bpv = len(encode(e, m)) * 8 / m.size
    approx = 1 / 16 + 1.5 * (1 - s ** 16) + 8 * (1 - s)
    # X = 24 [c > 0] + 8 c per block, c ~ Binomial(16, 1 - s)
    pmf = [math.comb(16, c) * (1 - s) ** c * s ** (16 - c) for c in range(17)]
    xs = [24 * (c > 0) + 8 * c for c in range(17)]
    mean = sum(p * x for p, x in zip(pmf, xs, strict=True))
    var = sum(p * x * x for p, x in zip(pmf, xs, strict=True)) - mean ** 2
    assert mean / 16 + 1 / 16 == pytest.approx(approx, rel=1e-12)
    tol = 5 * math.sqrt(max(var, 0.0) / n_blocks) / 16 + 1e-12
    assert abs(bpv - approx) <= tol, (bpv, approx, tol)
    if s == 0.9:
        assert round(approx, 1) == 2.1  # the figure quoted in ARCHITECTURE.md


# --------------------------------------------------------------------------- report

ROW_RE = re.compile(r"^\| (iid|clustered) \| (\d\.\d\d) \| (\d\.\d{4}) \|((?: [\d.]+ \|){8})$")


def test_report_cli(tmp_path):
    out_json = tmp_path / "r.json"
    r = subprocess.run([sys.executable, "-m", "golden.hbm", "--report", "--n", "16384",
                        "--seed", "7", "--json", str(out_json)],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "HBM v1 size report: bits per value, n = 16384 values per case, seed = 7"
    assert "| zeros | target s | measured s | hbm | approx | bitmask | csr | rle4 | rle_best" \
           " | h_iid | h_block |" in lines
    rows = [ROW_RE.match(line) for line in lines if line.startswith(("| iid", "| clustered"))]
    assert all(rows) and len(rows) == 16
    for pattern in ("iid", "clustered"):
        got = [float(x.group(2)) for x in rows if x.group(1) == pattern]
        assert got == SPARSITIES
        for x in rows:
            if x.group(1) == pattern:
                assert abs(float(x.group(3)) - float(x.group(2))) < 0.05
    assert "Dense references: BFP8 8.500 bits/value (8 + 8/16), FP16 16.000 bits/value." \
        in lines
    js = json.loads(out_json.read_text())
    assert js["n"] == 16384 and js["seed"] == 7 and len(js["rows"]) == 16
    for x, row in zip(rows, js["rows"], strict=True):
        cols = [float(v) for v in x.group(4).split("|") if v.strip()]
        assert cols[0] == pytest.approx(row["hbm"], abs=5e-4)
        # the rows are consistent with the definitions: HBM never beats its block entropy
        assert row["h_block"] <= row["hbm"] and row["h_iid"] <= row["bitmask"]
        if row["pattern"] == "iid":
            assert abs(row["hbm"] - row["approx"]) < 0.2


def test_report_deterministic_and_errors(capsys, tmp_path):
    assert hbm.main(["--report", "--n", "512", "--seed", "3"]) == 0
    first = capsys.readouterr().out
    assert hbm.main(["--report", "--n", "512", "--seed", "3"]) == 0
    assert capsys.readouterr().out == first
    with pytest.raises(SystemExit) as exc:
        hbm.main([])
    assert exc.value.code == 2
    assert "error: nothing to do: pass --report" in capsys.readouterr().err
    for bad in ("100", "0", "-256"):
        with pytest.raises(SystemExit):
            hbm.main(["--report", "--n", bad])
        assert f"error: --n must be a positive multiple of 256, not {bad}" \
            in capsys.readouterr().err
    assert hbm.main(["--report", "--n", "256", "--json", str(tmp_path / "no" / "x.json")]) == 1
    assert "error: cannot write" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"^n must be a positive multiple of 256, not 100$"):
        hbm.report(100)


def test_docs_table_is_the_report():
    """docs/formats.md pastes the output of ``python -m golden.hbm --report`` (defaults)."""
    text = (ROOT / "docs" / "formats.md").read_text()
    assert "$ python -m golden.hbm --report " in text
    doc_rows = [line for line in text.splitlines()
                if line.startswith(("| zeros |", "| iid |", "| clustered |"))]
    out = hbm.format_report(hbm.report(1 << 20, 1), 1 << 20, 1).splitlines()
    assert doc_rows == [line for line in out
                        if line.startswith(("| zeros |", "| iid |", "| clustered |"))]
    assert len(doc_rows) == 17


def test_decode_huge_n_blocks_fails_fast():
    # a bogus block count (e.g. from a bad descriptor) is a truncation, not a huge allocation
    _err(b"\0\0", 10 ** 15, "Truncated HBM stream: superblock 1 L1 mask needs 2 byte(s) at "
                            "offset 2, 0 left")
