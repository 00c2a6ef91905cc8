"""Unit and property tests of the BFP8 quantizer, :mod:`golden.bfp`.

Expected values come from hand derivations written next to each case, or from
:func:`ref_quantize_block`, an independent exact reimplementation of the rule with
:class:`fractions.Fraction` (no NumPy in the arithmetic):

1. x is float32 (the tests only feed values that float32 holds exactly, unless the case is about
   the float32 cast); ``|x| < 2**-126`` flushes to 0;
2. ``e = floor(log2 max|x|)`` over the nonzero values of the block;
3. ``m = clamp(round_half_even(x * 2**(6 - e)), -127, 127)``, ``E = e + 127``; an all-zero
   block has ``E = 0``.

Error bound (``test_error_bound``): for every element, with ``u = 2**(e - 6)`` the block's unit,
``|x - deq| <= u / 2``, except (a) where ``|x| / u > 127.5`` (only possible for the block's
largest values, ``|x| / u < 128``): ``deq = +-127 u`` and ``|x - deq| < u``; and (b) flushed
subnormals: ``deq = 0`` and ``|x| < 2**-126``.
"""

import math
import re
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from golden.bfp import BFPTensor, check_block, quantize, quantize_exact

SETTINGS = settings(deadline=None, max_examples=150,
                    suppress_health_check=[HealthCheck.too_slow])
F32_MAX = float(np.finfo(np.float32).max)  # (2 - 2**-23) * 2**127
TINY = Fraction(1, 2 ** 126)


# --------------------------------------------------------------------------- reference

def floor_log2(q: Fraction) -> int:
    """floor(log2 q) for a positive Fraction, exactly."""
    k = q.numerator.bit_length() - q.denominator.bit_length()
    # 2**k is within a factor 2 of q; fix up exactly.
    while Fraction(2) ** k > q:
        k -= 1
    while Fraction(2) ** (k + 1) <= q:
        k += 1
    return k


def ref_quantize_block(vals):
    """(E, [m]) for one block of float values, with exact rational arithmetic."""
    xs = [Fraction(v) for v in vals]
    xs = [Fraction(0) if abs(x) < TINY else x for x in xs]
    nonzero = [abs(x) for x in xs if x != 0]
    if not nonzero:
        return 0, [0] * len(xs)
    e = floor_log2(max(nonzero))
    scale = Fraction(2) ** (6 - e)
    # round(Fraction) rounds half to even
    ms = [max(-127, min(127, round(x * scale))) for x in xs]
    if not any(ms):  # cannot happen: the max element gives |m| >= 64
        raise AssertionError("reference produced an all-zero block")
    return e + 127, ms


def ref_check(x, t: BFPTensor, block: int):
    """Compare ``t`` with the reference quantization of float32-exact array ``x``."""
    x = np.asarray(x, np.float64)
    blocks = x.reshape(-1, block)
    exps = t.exponents.reshape(-1)
    mants = t.mantissas.reshape(-1, block)
    for k, vals in enumerate(blocks):
        e, m = ref_quantize_block(vals.tolist())
        assert int(exps[k]) == e, f"block {k}: E {int(exps[k])} != {e}"
        assert mants[k].tolist() == m, f"block {k}: mantissas {mants[k].tolist()} != {m}"


# --------------------------------------------------------------------------- strategies

f32 = st.floats(width=32, allow_nan=False, allow_infinity=False)


@st.composite
def f32_blocks(draw, n_blocks=None, block=16):
    """float32-exact values: blocks mixing arbitrary floats, zeros and same-scale values."""
    nb = draw(st.integers(1, 4) if n_blocks is None else n_blocks)
    out = []
    for _ in range(nb):
        kind = draw(st.sampled_from(["any", "scale", "zero"]))
        if kind == "zero":
            out += [0.0] * block
        elif kind == "any":
            out += draw(st.lists(st.one_of(st.just(0.0), f32), min_size=block,
                                 max_size=block))
        else:
            # k * 2**p with |k| < 2**24 is exact in float32 (maybe subnormal) when p <= 104
            p = draw(st.integers(-149, 104))
            ks = draw(st.lists(st.integers(-(2 ** 24) + 1, 2 ** 24 - 1), min_size=block,
                               max_size=block))
            out += [math.ldexp(k, p) for k in ks]
    return np.array(out, np.float32)


@st.composite
def canonical_tensors(draw):
    """BFPTensors in the image of :func:`quantize` (see ``test_round_trip``)."""
    nb = draw(st.integers(1, 6))
    exps, mants = [], []
    for _ in range(nb):
        if draw(st.booleans()) and draw(st.booleans()):
            exps.append(0)
            mants += [0] * 16
            continue
        E = draw(st.integers(1, 254))
        m = draw(st.lists(st.integers(-127, 127), min_size=16, max_size=16))
        lead = draw(st.integers(0, 15))
        m[lead] = draw(st.sampled_from([-1, 1])) * draw(st.integers(64, 127))
        # every nonzero value must be a float32 normal: |m| * 2**(E - 133) >= 2**-126
        floor = 2 ** (7 - E) if E < 7 else 1
        m = [v if abs(v) >= floor else 0 for v in m]
        exps.append(E)
        mants += m
    return BFPTensor(np.array(exps, np.uint8), np.array(mants, np.int8), 16)


# --------------------------------------------------------------------------- properties

@SETTINGS
@given(f32_blocks())
def test_matches_reference(x):
    ref_check(x, quantize(x), 16)


@SETTINGS
@given(f32_blocks(block=16), st.sampled_from([1, 2, 4, 8, 16]))
def test_matches_reference_other_block_sizes(x, block):
    ref_check(x, quantize(x, block), block)


@SETTINGS
@given(canonical_tensors())
def test_round_trip(t):
    """quantize(dequantize(t)) == t for every t in quantize's image: nonzero blocks with
    E in [1, 254], max |m| in [64, 127] and every nonzero value >= 2**-126; zero blocks E = 0."""
    back = quantize(t.dequantize())
    assert back == t
    # and the dequantized values are exactly m * 2**(E - 133)
    d = t.dequantize()
    for k in range(t.exponents.size):
        for i in range(16):
            want = Fraction(int(t.mantissas[16 * k + i])) * Fraction(2) ** (
                int(t.exponents[k]) - 133)
            assert Fraction(float(d[16 * k + i])) == want


@SETTINGS
@given(f32_blocks())
def test_error_bound(x):
    t = quantize(x)
    deq = t.dequantize()
    for k, vals in enumerate(x.reshape(-1, 16).astype(np.float64)):
        xs = [Fraction(float(v)) for v in vals]
        normal = [abs(v) for v in xs if abs(v) >= TINY]
        for i, v in enumerate(xs):
            d = Fraction(float(deq[16 * k + i]))
            if abs(v) < TINY:  # (b) flushed
                assert d == 0
                continue
            u = Fraction(2) ** (floor_log2(max(normal)) - 6)
            if abs(v) / u > Fraction(255, 2):  # (a) clamped
                assert abs(d) == 127 * u and abs(v - d) < u
            else:
                assert abs(v - d) <= u / 2


@SETTINGS
@given(f32_blocks(n_blocks=st.just(6)))
def test_multidimensional_blocks_along_last_axis(x):
    x3 = x.reshape(3, 2, 16)
    t = quantize(x3)
    assert t.shape == (3, 2, 16) and t.exponents.shape == (3, 2, 1)
    x2 = x.reshape(2, 3, 16).transpose(1, 0, 2)  # non-contiguous input
    t2 = quantize(x2)
    assert t2.exponents.shape == (3, 2, 1)
    ref_check(np.ascontiguousarray(x2), t2, 16)
    t4 = quantize(x.reshape(3, 32), 16)
    assert t4.exponents.shape == (3, 2)
    ref_check(x, t4, 16)


# --------------------------------------------------------------------------- hand cases

def block16(*vals):
    return np.array(list(vals) + [0.0] * (16 - len(vals)), np.float32)


def test_hand_block():
    # max 3.0 -> e = 1, E = 128, scale 2**5 = 32: 1.5 -> 48, -0.25 -> -8, 3 -> 96
    t = quantize(block16(1.5, -0.25, 3.0))
    assert t.exponents.tolist() == [128]
    assert t.mantissas.tolist() == [48, -8, 96] + [0] * 13


def test_ties_round_half_to_even():
    # max 64 -> e = 6, scale 1: the values are the scaled values themselves
    t = quantize(block16(64, 2.5, 3.5, -2.5, -3.5, 0.5, 1.5, -0.5, 126.5 - 64, 125.5 - 64))
    assert t.exponents.tolist() == [133]
    assert t.mantissas[:10].tolist() == [64, 2, 4, -2, -4, 0, 2, 0, 62, 62]
    # the same ties at another scale (e = -3, scale 2**9)
    s = 2.0 ** -9
    t = quantize(block16(64 * s, 2.5 * s, 3.5 * s, -2.5 * s, 0.5 * s))
    assert t.exponents.tolist() == [124]
    assert t.mantissas[:5].tolist() == [64, 2, 4, -2, 0]


def test_ties_near_the_top():
    # e = 6 (max in [64, 128)): 126.5 -> 126, 125.5 -> 126, 127.5 -> 128 -> clamp 127
    t = quantize(block16(126.5, 125.5, -126.5, -125.5))
    assert t.mantissas[:4].tolist() == [126, 126, -126, -126]
    t = quantize(block16(127.5, -127.5, 127.25, -127.25))
    assert t.exponents.tolist() == [133]
    assert t.mantissas[:4].tolist() == [127, -127, 127, -127]


def test_saturation_at_127():
    # 127.75 rounds to 128, which clamps to 127 (no renormalization); -128 never appears
    t = quantize(block16(127.75, -127.75, 1.0))
    assert t.mantissas[:3].tolist() == [127, -127, 1]
    # a single value just below 2: 1.999 (float32 1.99899995...) * 64 = 127.936 -> 127
    t = quantize(block16(1.999))
    assert t.exponents.tolist() == [127] and t.mantissas[0] == 127


def test_single_nonzero_blocks():
    # a power of two gives mantissa 64 exactly
    for x, E in [(1.0, 127), (-1.0, 127), (0.5, 126), (2.0 ** 20, 147)]:
        t = quantize(np.roll(block16(x), 5))
        assert t.exponents.tolist() == [E]
        assert t.mantissas.tolist() == [0] * 5 + [64 if x > 0 else -64] + [0] * 10
    # 1.75 -> e = 0, 1.75 * 64 = 112; 1.2 (float32 1.2000000477) * 64 = 76.8 -> 77
    assert quantize(block16(1.75)).mantissas[0] == 112
    assert quantize(block16(1.2)).mantissas[0] == 77


def test_all_zero_block_has_exponent_zero():
    t = quantize(np.zeros((2, 32), np.float32))
    assert t.exponents.tolist() == [[0, 0], [0, 0]]
    assert not t.mantissas.any()
    # -0.0 is zero too
    t = quantize(np.full(16, -0.0, np.float32))
    assert t.exponents.tolist() == [0] and t.mantissas.tolist() == [0] * 16


def test_exponent_extremes():
    # float32 max = (2 - 2**-23) * 2**127: e = 127, E = 254, 127.99999 -> 128 -> 127
    t = quantize(block16(F32_MAX, -F32_MAX, 2.0 ** 127, 2.0 ** 121, 2.0 ** 120))
    assert t.exponents.tolist() == [254]
    # 2**120 * 2**(6 - 127) = 0.5 -> 0 (tie to even)
    assert t.mantissas[:5].tolist() == [127, -127, 64, 1, 0]
    assert t.dequantize()[0] == 127 * 2.0 ** 121
    # smallest normal 2**-126: e = -126, E = 1
    t = quantize(block16(2.0 ** -126, -(2.0 ** -126), 1.5 * 2.0 ** -126))
    assert t.exponents.tolist() == [1]
    assert t.mantissas[:3].tolist() == [64, -64, 96]


def test_subnormals_flush_to_zero():
    # all subnormal: the block is zero
    t = quantize(block16(2.0 ** -127, 2.0 ** -149, -(2.0 ** -130), 1.9 * 2.0 ** -127))
    assert t.exponents.tolist() == [0] and not t.mantissas.any()
    # flushed before the exponent is taken: 2**-127 would be 32 at e = -126, but is 0
    t = quantize(block16(2.0 ** -126, 2.0 ** -127))
    assert t.exponents.tolist() == [1] and t.mantissas[:2].tolist() == [64, 0]


def test_input_is_taken_as_float32():
    # 64.5 + 2**-30 in float64 would round to 65; as float32 it is 64.5, a tie -> 64
    t = quantize(np.array([64.5 + 2.0 ** -30] + [0.0] * 15))
    assert t.exponents.tolist() == [133] and t.mantissas[0] == 64
    # integer inputs are accepted
    t = quantize(np.arange(16, dtype=np.int64))
    assert t.exponents.tolist() == [130]  # max 15: e = 3
    assert t.mantissas.tolist() == [8 * k for k in range(16)]


def test_quantize_exact_saturates_and_flushes():
    # float64 2**128 is beyond float32: quantize_exact saturates at e = 127, 2**128 -> 128 -> 127
    t = quantize_exact(np.array([2.0 ** 128, 2.0 ** 122] + [0.0] * 14))
    assert t.exponents.tolist() == [254]
    assert t.mantissas[:2].tolist() == [127, 2]
    t = quantize_exact(np.array([2.0 ** -127] + [0.0] * 15))
    assert t.exponents.tolist() == [0]


def test_not_a_round_trip_outside_the_image():
    # E = 130 with max |m| = 10 is not normalized: 10 * 2**-3 = 1.25 requantizes to e = 0, 80
    t = BFPTensor(np.array([130], np.uint8), np.array([10] + [0] * 15, np.int8))
    back = quantize(t.dequantize())
    assert back.exponents.tolist() == [127] and back.mantissas[0] == 80
    # E = 1 with a mantissa 1: 2**-132 is subnormal in float32 and flushes
    t = BFPTensor(np.array([1], np.uint8), np.array([64, 1] + [0] * 14, np.int8))
    assert quantize(t.dequantize()).mantissas[:2].tolist() == [64, 0]


# --------------------------------------------------------------------------- parameters

@pytest.mark.parametrize("block", [1, 2, 4, 8, 16, 32, np.int64(8)])
def test_valid_block_sizes(block):
    assert check_block(block) == int(block)
    x = np.linspace(-3, 5, 64, dtype=np.float32)
    t = quantize(x, block)
    assert t.block == int(block) and t.exponents.shape == (64 // int(block),)
    ref_check(x, t, int(block))


@pytest.mark.parametrize("block, text", [
    (0, "0"), (3, "3"), (-16, "-16"), (16.0, "16.0"), (True, "True"), ("16", "'16'"),
    (None, "None"), (12, "12")])
def test_invalid_block_sizes(block, text):
    msg = "^" + re.escape(f"Block size must be a positive power of two, not {text}") + "$"
    with pytest.raises(ValueError, match=msg):
        quantize(np.zeros(32, np.float32), block)
    with pytest.raises(ValueError, match=msg):
        quantize_exact(np.zeros(32), block)
    with pytest.raises(ValueError, match=msg):
        BFPTensor(np.zeros(2, np.uint8), np.zeros(32, np.int8), block)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, 1e39])
def test_nan_inf_and_out_of_range(bad):
    x = np.zeros(16)
    x[3] = bad
    with pytest.raises(ValueError, match=r"^Cannot quantize NaN or Inf \(or a value out of "
                                         r"float32 range\)$"):
        quantize(x)


def test_quantize_exact_nan():
    with pytest.raises(ValueError, match=r"^Cannot quantize NaN or Inf$"):
        quantize_exact(np.array([np.nan] * 16))


def test_last_axis_not_a_multiple_of_block():
    with pytest.raises(ValueError, match=r"^Last axis has length 20, which is not a multiple "
                                         r"of the block size 16$"):
        quantize(np.zeros((2, 20), np.float32))
    with pytest.raises(ValueError, match=r"^Last axis has length 12, which is not a multiple "
                                         r"of the block size 8$"):
        quantize(np.zeros(12, np.float32), 8)


def test_bad_inputs():
    with pytest.raises(ValueError, match=r"^Cannot quantize a scalar: need at least one axis$"):
        quantize(np.float32(1.0))
    with pytest.raises(ValueError, match=r"^Cannot quantize an array of dtype complex128$"):
        quantize(np.zeros(16, complex))
    with pytest.raises(ValueError, match=r"^Cannot quantize an array of dtype bool$"):
        quantize(np.zeros(16, bool))
    with pytest.raises(ValueError, match=r"^Cannot quantize an array of dtype <U1$"):
        quantize(np.array(["a"] * 16))


def test_bfptensor_validation_and_canonical():
    e, m = np.zeros(1, np.uint8), np.zeros(16, np.int8)
    with pytest.raises(ValueError, match=r"^Exponents must be uint8, not int64$"):
        BFPTensor(e.astype(np.int64), m)
    with pytest.raises(ValueError, match=r"^Mantissas must be int8, not int16$"):
        BFPTensor(e, m.astype(np.int16))
    with pytest.raises(ValueError, match=r"^Mantissa -128 is not a valid BFP8 value$"):
        BFPTensor(np.array([1], np.uint8), np.array([-128] + [0] * 15, np.int8))
    with pytest.raises(ValueError, match=r"^Exponents have shape \(2,\), expected \(1,\)$"):
        BFPTensor(np.zeros(2, np.uint8), m)
    assert BFPTensor(e, m).is_canonical()
    assert not BFPTensor(np.array([5], np.uint8), m).is_canonical()  # zero block, E != 0
    assert not BFPTensor(e, np.array([1] + [0] * 15, np.int8)).is_canonical()  # E = 0
    assert quantize(np.linspace(-1, 1, 64, dtype=np.float32)).is_canonical()
