"""golden.gemm: the BFP8 GEMM accumulation rule, checked against independent references.

- a pure-Python scalar model of the rule written from the module docstring (Python ints,
  unbounded shifts), compared bit-exactly with :func:`golden.gemm.matmul`;
- the exact value of the product (Python ints), for the tight one-sided bound of
  ``docs/numerics.md``: ``0 <= exact - value <= (P - 1) * 2**(ea - 274)`` with ``P`` the nonzero
  partials of the output;
- float64 of the dequantized operands, within :func:`golden.gemm.error_bound`. The float64
  reference is the correctly rounded exact product (``math.fsum`` of the exact elementwise
  products): a plain float64 ``@`` loses small terms next to large partials that cancel (seen:
  exact 1.23, plain ``@`` 0.0, with exponents 1..254 and saturated mantissas).
"""

import math

import numpy as np
import pytest

from golden.bfp import BFPTensor, quantize, quantize_exact
from golden.gemm import (
    ACC_W,
    GUARD,
    Accumulator,
    bp,
    error_bound,
    fp,
    matmul,
    pad_to,
    reblock,
    wg,
)

# The rule's constants as the docstring states them (not imported: the reference is independent).
REF_ACC_W = 32
REF_GUARD = 8
REF_OFFSET = 266  # a partial p with exponent sum s is worth p * 2**(s - 266)


def test_constants_are_the_documented_ones():
    assert (ACC_W, GUARD) == (REF_ACC_W, REF_GUARD)


# --------------------------------------------------------------------------- references

def ref_output(ea_row, ma_row, eb_row, mb_row, live=True):
    """One output by the docstring's rule, in Python ints.

    Returns ``(S, ea, exact_terms)`` where ``exact_terms`` lists ``(q, s)`` of every nonzero
    partial that joined the accumulator (``q * 2**(s - 274)`` exactly).
    """
    s_acc, ea, terms = 0, 0, []
    if not live:
        return s_acc, ea, terms
    lo, hi = -(1 << (REF_ACC_W - 1)), (1 << (REF_ACC_W - 1)) - 1
    for kb in range(len(ea_row)):
        p = sum(int(x) * int(y) for x, y in zip(ma_row[16 * kb:16 * kb + 16],
                                                  mb_row[16 * kb:16 * kb + 16], strict=True))
        if p == 0:
            continue
        s = int(ea_row[kb]) + int(eb_row[kb])
        q = p << REF_GUARD
        terms.append((q, s))
        if s > ea:
            t = (s_acc >> (s - ea)) + q  # Python >> is an arithmetic (flooring) shift
            ea = s
        else:
            t = s_acc + (q >> (ea - s))
        if not lo <= t <= hi:
            t >>= 1
            ea += 1
        s_acc = t
    return s_acc, ea, terms


def ref_matmul(a: BFPTensor, b: BFPTensor, mask=None):
    m, n = a.shape[0], b.shape[0]
    mant = np.zeros((m, n), dtype=np.int64)
    exp = np.zeros((m, n), dtype=np.int64)
    terms = {}
    for i in range(m):
        for j in range(n):
            live = True if mask is None else bool(mask[i, j])
            s_acc, ea, t = ref_output(a.exponents[i], a.mantissas[i], b.exponents[j],
                                      b.mantissas[j], live)
            mant[i, j], exp[i, j], terms[i, j] = s_acc, ea, t
    return mant, exp, terms


def check_tight_bound(out: Accumulator, terms):
    """``0 <= exact - value <= (P - 1) LSB`` in exact integer arithmetic, per output."""
    for (i, j), t in terms.items():
        s_acc, ea = int(out.mant[i, j]), int(out.exp[i, j])
        if not t:
            assert (s_acc, ea) == (0, 0)
            continue
        smin = min(s for _, s in t)
        exact = sum(q << (s - smin) for q, s in t)
        got = s_acc << (ea - smin)
        diff = exact - got
        assert 0 <= diff <= (len(t) - 1) << (ea - smin), (i, j, diff, len(t), ea - smin)


def float_ref(x, y) -> np.ndarray:
    """``x @ y.T`` correctly rounded to float64 (every elementwise product is exact)."""
    out = np.empty((x.shape[0], y.shape[0]))
    for i in range(x.shape[0]):
        prod = x[i][None, :] * y  # exact: 14-bit mantissa products, exponents in range
        for j in range(y.shape[0]):
            out[i, j] = math.fsum(prod[j])
    return out


def rand_bfp(rng, rows, nb, sparsity=0.0, elo=1, ehi=254, sat=False, block_sparsity=0.0):
    """Random canonical-zero BFP tensor (mantissas need not be normalized)."""
    if sat:
        m = rng.choice(np.array([-127, 127]), size=(rows, nb * 16))
    else:
        m = rng.integers(-127, 128, size=(rows, nb * 16))
    m[rng.random(m.shape) < sparsity] = 0
    blk = m.reshape(rows, nb, 16)
    blk[rng.random((rows, nb)) < block_sparsity] = 0
    e = rng.integers(elo, ehi + 1, size=(rows, nb))
    e[~np.any(blk != 0, axis=-1)] = 0
    return BFPTensor(e.astype(np.uint8), m.astype(np.int8))


def assert_bit_exact(a, b, mask=None):
    got = matmul(a, b, out_mask=mask)
    mant, exp, terms = ref_matmul(a, b, mask)
    np.testing.assert_array_equal(got.mant, mant)
    np.testing.assert_array_equal(got.exp, exp)
    check_tight_bound(got, terms)
    return got, terms


# --------------------------------------------------------------------------- bit-exact rule

def test_matches_scalar_reference_random(rng):
    for _ in range(25):
        m, n, nb = (int(v) for v in rng.integers(1, 5, size=3))
        sp = float(rng.choice([0.0, 0.5, 0.9]))
        elo, ehi = sorted(int(v) for v in rng.integers(1, 255, size=2))
        a = rand_bfp(rng, m, nb, sp, elo, ehi, block_sparsity=0.2)
        b = rand_bfp(rng, n, nb, sp, elo, ehi, block_sparsity=0.2)
        mask = rng.random((m, n)) < 0.7 if rng.random() < 0.5 else None
        assert_bit_exact(a, b, mask)


def test_renormalization_many_large_partials(rng):
    # 80 blocks of +-127 * +-127 at one exponent: |p| = 16 * 127**2 each, q = p << 8 ~ 2**26,
    # so the 32-bit accumulator must renormalize several times.
    nb = 80
    a = BFPTensor(np.full((2, nb), 120, np.uint8), np.full((2, 16 * nb), 127, np.int8))
    mb = np.full((3, 16 * nb), 127, np.int8)
    mb[1] = -127
    mb[2] = rng.choice(np.array([-127, 127], dtype=np.int8), size=16 * nb)
    b = BFPTensor(np.full((3, nb), 130, np.uint8), mb)
    got, _ = assert_bit_exact(a, b)
    # renormalized: the exponent grew above the partials' s = 250 and S is near full scale
    assert got.exp[0, 0] > 250 and got.exp[0, 1] > 250
    assert got.mant[0, 0] >= 1 << (ACC_W - 2)
    assert got.mant[0, 1] <= -(1 << (ACC_W - 2))
    # hand-derived: 80 partials of q = 258064 << 8 sum to 80 * 66064384 = 5285150720, which
    # needs 34 bits: the accumulator ends with ea = 250 + 2 and S close to sum / 4.
    assert got.exp[0, 0] == 252
    assert abs(int(got.mant[0, 0]) - 5285150720 // 4) <= 80
    # random signs and magnitudes, still large
    for _ in range(5):
        a = rand_bfp(rng, 2, 48, sat=True, elo=100, ehi=103)
        b = rand_bfp(rng, 2, 48, sat=True, elo=100, ehi=103)
        assert_bit_exact(a, b)


def _two_blocks(ea_pair, eb_pair, p_first, p_second):
    """1 x 32 operands whose block partials are exactly ``p_first`` and ``p_second``."""
    ma = np.zeros((1, 32), np.int8)
    mb = np.zeros((1, 32), np.int8)
    ma[0, 0], mb[0, 0] = p_first, 1
    ma[0, 16], mb[0, 16] = p_second, 1
    return (BFPTensor(np.array([ea_pair], np.uint8), ma),
            BFPTensor(np.array([eb_pair], np.uint8), mb))


def test_large_exponent_gaps():
    # exponent sums s = 2 (E = 1 + 1) and s = 508 (E = 254 + 254), in both orders.
    # Small negative first: S = (-5 << 8) >> 506 = -1 (floor), then + (100 << 8), ea = 508.
    got, _ = assert_bit_exact(*_two_blocks((1, 254), (1, 254), -5, 100))
    assert (got.mant[0, 0], got.exp[0, 0]) == ((100 << 8) - 1, 508)
    # small positive first: the floor gives 0
    got, _ = assert_bit_exact(*_two_blocks((1, 254), (1, 254), 5, 100))
    assert (got.mant[0, 0], got.exp[0, 0]) == (100 << 8, 508)
    # huge first, small later: q >> 506 is -1 for a negative q, 0 for a positive one
    got, _ = assert_bit_exact(*_two_blocks((254, 1), (254, 1), 100, -5))
    assert (got.mant[0, 0], got.exp[0, 0]) == ((100 << 8) - 1, 508)
    got, _ = assert_bit_exact(*_two_blocks((254, 1), (254, 1), 100, 5))
    assert (got.mant[0, 0], got.exp[0, 0]) == (100 << 8, 508)
    # gaps around ACC_W - 1 = 31 (and the 26 bits of q), both orders, both signs
    for gap in (24, 25, 26, 27, 30, 31, 32, 40, 63, 64, 200):
        for pa, pb in ((-127, 3), (127, -3), (-1, 1)):
            assert_bit_exact(*_two_blocks((100, 100), (1, 1 + gap), pa, pb))
            assert_bit_exact(*_two_blocks((100, 100), (1 + gap, 1), pb, pa))


def test_zero_partials_change_nothing(rng):
    # a block pair whose partial cancels to 0 at a huge exponent sum is skipped
    base_a = rand_bfp(rng, 3, 4, elo=60, ehi=70)
    base_b = rand_bfp(rng, 2, 4, elo=60, ehi=70)
    ma, mb = base_a.mantissas.copy(), base_b.mantissas.copy()
    ea, eb = base_a.exponents.copy(), base_b.exponents.copy()
    ma[:, 16:32], mb[:, 16:32] = 0, 0
    ea[:, 1], eb[:, 1] = 0, 0
    without = matmul(BFPTensor(ea, ma), BFPTensor(eb, mb))
    ma[:, 16], ma[:, 17] = 3, 3
    mb[:, 16], mb[:, 17] = 7, -7  # p = 3 * 7 - 3 * 7 = 0
    ea[:, 1], eb[:, 1] = 254, 254
    cancel = matmul(BFPTensor(ea, ma), BFPTensor(eb, mb))
    np.testing.assert_array_equal(cancel.mant, without.mant)
    np.testing.assert_array_equal(cancel.exp, without.exp)
    # zero blocks in one operand only, with a (non-canonical) large E: also nothing
    ea[:, 1] = 250
    ma[:, 16:32] = 0
    skewed = matmul(BFPTensor(ea, ma), BFPTensor(eb, mb))
    np.testing.assert_array_equal(skewed.mant, without.mant)
    np.testing.assert_array_equal(skewed.exp, without.exp)


def test_order_is_ascending_block_index():
    # the rule is not associative; matmul follows ascending kb like the scalar reference.
    # Partials q = -256 at s = 200 (A), -256 at s = 210 (B), +256 at s = 220 (C):
    #   A, B, C: -256 -> (-256 >> 10) - 256 = -257 -> (-257 >> 10) + 256 = 255 at 220
    #   C, B, A: 256 -> 256 + (-256 >> 10) = 255 -> 255 + (-256 >> 20) = 254 at 220
    parts = {"A": (100, -1), "B": (110, -1), "C": (120, 1)}  # E of the A operand, partial

    def make(order):
        ma = np.zeros((1, 48), np.int8)
        mb = np.zeros((1, 48), np.int8)
        ex_a = np.zeros((1, 3), np.uint8)
        ex_b = np.full((1, 3), 100, np.uint8)
        for slot, name in enumerate(order):
            e, p = parts[name]
            ma[0, 16 * slot], mb[0, 16 * slot] = p, 1
            ex_a[0, slot] = e
        return BFPTensor(ex_a, ma), BFPTensor(ex_b, mb)

    results = {}
    for order in ("ABC", "ACB", "BAC", "BCA", "CAB", "CBA"):
        got, _ = assert_bit_exact(*make(order))
        results[order] = (int(got.mant[0, 0]), int(got.exp[0, 0]))
    assert results["ABC"] == (255, 220)
    assert results["CBA"] == (254, 220)


# --------------------------------------------------------------------------- against float64

def _float_case(rng, a, b, mask=None):
    out = matmul(a, b, out_mask=mask)
    ref = float_ref(a.dequantize(), b.dequantize())
    if mask is not None:
        ref = np.where(mask, ref, 0.0)
    bound = error_bound(a, b, out)
    assert np.all(np.abs(out.value() - ref) <= bound)
    return out


@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.9, 0.99])
def test_random_shapes_within_error_bound(rng, sparsity):
    for _ in range(6):
        m = int(rng.choice([1, 2, 7, 33]))
        n = int(rng.choice([1, 3, 16, 40]))
        k = int(rng.integers(1, 200))  # K not a multiple of 16: zero-padded
        scale_a = np.exp2(rng.integers(-20, 20, size=(m, 1)))
        xa = rng.standard_normal((m, k)) * scale_a
        xb = rng.standard_normal((n, k)) * np.exp2(rng.integers(-20, 20))
        xa[rng.random(xa.shape) < sparsity] = 0
        xb[rng.random(xb.shape) < sparsity] = 0
        a, b = quantize(pad_to(xa, 16)), quantize(pad_to(xb, 16))
        assert a.shape == (m, -(-k // 16) * 16)
        _float_case(rng, a, b)


def test_doc_bound_on_float_cases(rng):
    # the tight bound of docs/numerics.md, exactly, on cases that lose bits
    for _ in range(4):
        a = rand_bfp(rng, 5, 12, sparsity=0.3, elo=90, ehi=140)
        b = rand_bfp(rng, 6, 12, sparsity=0.3, elo=90, ehi=140)
        assert_bit_exact(a, b)


@pytest.mark.parametrize("elo,ehi", [(1, 1), (254, 254), (1, 254), (1, 3), (252, 254)])
def test_exponent_extremes(rng, elo, ehi):
    # SEED=1336033498 drew a case where plain float64 `@` is wrong (see module docstring)
    for sat in (False, True):
        a = rand_bfp(rng, 4, 5, elo=elo, ehi=ehi, sat=sat)
        b = rand_bfp(rng, 3, 5, elo=elo, ehi=ehi, sat=sat)
        out = _float_case(rng, a, b)
        assert np.all(np.isfinite(out.value()))
        assert_bit_exact(a, b)


def test_saturated_mantissas(rng):
    a = rand_bfp(rng, 8, 10, sat=True, elo=127, ehi=127)
    b = rand_bfp(rng, 9, 10, sat=True, elo=127, ehi=127)
    _float_case(rng, a, b)
    assert_bit_exact(a, b)


def test_all_zero_operands_give_exact_zero(rng):
    z = BFPTensor(np.zeros((3, 2), np.uint8), np.zeros((3, 32), np.int8))
    x = rand_bfp(rng, 4, 2)
    for a, b in ((z, x), (x, z), (z, z)):
        out = matmul(a, b)
        assert np.all(out.mant == 0) and np.all(out.exp == 0)
        assert np.all(out.value() == 0.0)
        q = out.to_bfp(1)
        assert np.all(q.exponents == 0) and np.all(q.mantissas == 0)


def test_out_mask(rng):
    a = rand_bfp(rng, 5, 3, sparsity=0.2)
    b = rand_bfp(rng, 7, 3, sparsity=0.2)
    full = matmul(a, b)
    none = matmul(a, b, out_mask=np.zeros((5, 7), bool))
    assert np.all(none.mant == 0) and np.all(none.exp == 0)
    ones = matmul(a, b, out_mask=np.ones((5, 7), bool))
    np.testing.assert_array_equal(ones.mant, full.mant)
    np.testing.assert_array_equal(ones.exp, full.exp)
    mask = rng.random((5, 7)) < 0.5
    part = matmul(a, b, out_mask=mask)
    np.testing.assert_array_equal(part.mant, np.where(mask, full.mant, 0))
    np.testing.assert_array_equal(part.exp, np.where(mask, full.exp, 0))
    assert_bit_exact(a, b, mask)


# --------------------------------------------------------------------------- phases

def _ref_quantize_block(values):
    """Independent scalar BFP8 quantizer for exact values (docstring of golden.bfp)."""
    vals = [0.0 if abs(v) < 2.0 ** -126 else float(v) for v in values]
    nz = [v for v in vals if v != 0]
    if not nz:
        return 0, [0] * len(vals)
    e = max(math.frexp(v)[1] - 1 for v in nz)
    e = min(max(e, -126), 127)
    m = [min(max(round(math.ldexp(v, 6 - e)), -127), 127) for v in vals]
    return e + 127, m


def _ref_blocks(x, block=16):
    x = np.asarray(x, dtype=np.float64)
    e_out = np.zeros(x.shape[:-1] + (x.shape[-1] // block,), np.int64)
    m_out = np.zeros(x.shape, np.int64)
    for idx in np.ndindex(*x.shape[:-1]):
        for kb in range(x.shape[-1] // block):
            e, m = _ref_quantize_block(x[idx][kb * block:(kb + 1) * block])
            e_out[idx + (kb,)] = e
            m_out[idx][kb * block:(kb + 1) * block] = m
    return e_out, m_out


def test_reblock_against_scalar_quantizer(rng):
    x = rng.standard_normal((32, 20)) * np.exp2(rng.integers(-8, 8, size=(32, 1)))
    x[rng.random(x.shape) < 0.4] = 0
    x[:, 3] = 0  # a dead channel: all-zero blocks after re-blocking
    t = quantize(pad_to(x, 16))
    r = reblock(t)
    assert r.shape == (32, 32) and r.block == 16
    assert r.exponents.shape == (32, 2)
    e, m = _ref_blocks(t.dequantize().T)
    np.testing.assert_array_equal(r.exponents, e)
    np.testing.assert_array_equal(r.mantissas, m)
    assert np.all(r.exponents[3] == 0)
    assert r.is_canonical()


def test_reblock_lossless_when_grid_allows():
    # every value m * 2**-6 with |m| in [64, 127] at one exponent: both blockings are exact
    rng = np.random.default_rng(1)
    m = rng.integers(64, 128, size=(16, 32)) * rng.choice([-1, 1], size=(16, 32))
    x = m * 2.0 ** -6
    t = quantize(x)
    r = reblock(t)
    np.testing.assert_array_equal(r.dequantize(), x.T)
    np.testing.assert_array_equal(reblock(r).dequantize(), x)


def test_fp_bp_wg_agree_with_float_references(rng):
    n, k, co = 32, 48, 16
    x = np.maximum(rng.standard_normal((n, k)), 0)
    w = rng.standard_normal((co, k)) * 0.1
    dy = rng.standard_normal((n, co)) * 2.0 ** -7
    dy[rng.random(n) < 0.3] = 0  # whole-sample zeros
    xq, wq, wtq, dyq = quantize(x), quantize(w), quantize(w.T), quantize(dy)
    # FP
    y = fp(xq, wq)
    assert y.shape == (n, co)
    assert np.all(np.abs(y.value() - float_ref(xq.dequantize(), wq.dequantize()))
                  <= error_bound(xq, wq, y))
    # BP: only where relu'
    mask = rng.random((n, k)) < 0.5
    dx = bp(dyq, wtq, out_mask=mask)
    assert dx.shape == (n, k)
    ref = float_ref(dyq.dequantize(), wtq.dequantize())
    assert np.all(np.abs(dx.value() - np.where(mask, ref, 0)) <= error_bound(dyq, wtq, dx))
    assert np.all(dx.mant[~mask] == 0) and np.all(dx.exp[~mask] == 0)
    # WG: the GEMM of the re-blocked operands, exactly
    dw = wg(dyq, xq)
    rdy, rx = reblock(dyq), reblock(xq)
    direct = matmul(rdy, rx)
    np.testing.assert_array_equal(dw.mant, direct.mant)
    np.testing.assert_array_equal(dw.exp, direct.exp)
    assert dw.shape == (co, k)
    assert np.all(np.abs(dw.value() - float_ref(rdy.dequantize(), rx.dequantize()))
                  <= error_bound(rdy, rx, dw))
    # ... and the float product of the stored operands within the re-blocking rounding:
    # each re-blocked value is within half a mantissa LSB (2**(e - 7)) of the stored one
    def half_lsb(t):
        e = t.exponents.astype(np.int64) - 127
        return np.repeat(np.ldexp(1.0, e - 7), t.block, axis=-1)

    hdy, hx = half_lsb(rdy), half_lsb(rx)  # (co x n), (k x n)
    assert np.all(np.abs(rdy.dequantize() - dyq.dequantize().T) <= hdy)
    assert np.all(np.abs(rx.dequantize() - xq.dequantize().T) <= hx)
    slack = hdy @ np.abs(xq.dequantize()) + np.abs(rdy.dequantize()) @ hx.T
    stored = float_ref(dyq.dequantize().T, xq.dequantize().T)
    assert np.all(np.abs(dw.value() - stored) <= slack + error_bound(rdy, rx, dw))


def test_accumulator_to_bfp(rng):
    a = rand_bfp(rng, 4, 3, elo=100, ehi=140)
    b = rand_bfp(rng, 32, 3, elo=100, ehi=140)
    out = matmul(a, b)
    q = out.to_bfp()
    assert q == quantize_exact(out.value(), 16)
    e, m = _ref_blocks(out.value())
    np.testing.assert_array_equal(q.exponents, e)
    np.testing.assert_array_equal(q.mantissas, m)
    q8 = out.to_bfp(8)
    assert q8.block == 8 and q8 == quantize_exact(out.value(), 8)


def test_accumulator_relu(rng):
    a = rand_bfp(rng, 3, 2)
    b = rand_bfp(rng, 5, 2)
    out = matmul(a, b)
    r = out.relu()
    np.testing.assert_array_equal(r.value(), np.maximum(out.value(), 0))
    assert np.all(r.exp[out.mant < 0] == 0)


def test_pad_to():
    x = np.ones((2, 37))
    p = pad_to(x, 16)
    assert p.shape == (2, 48) and np.all(p[:, 37:] == 0) and np.all(p[:, :37] == 1)
    assert pad_to(x, 16, axis=0).shape == (16, 37)
    assert pad_to(np.ones((2, 32)), 16).shape == (2, 32)


# --------------------------------------------------------------------------- validation

def test_validation_messages():
    a = BFPTensor(np.zeros((2, 2), np.uint8), np.zeros((2, 32), np.int8))
    b = BFPTensor(np.zeros((3, 2), np.uint8), np.zeros((3, 32), np.int8))
    with pytest.raises(TypeError, match=r"^Operand A must be a BFPTensor, not ndarray$"):
        matmul(np.zeros((2, 32)), b)
    with pytest.raises(TypeError, match=r"^Operand B must be a BFPTensor, not list$"):
        matmul(a, [])
    flat = BFPTensor(np.zeros(2, np.uint8), np.zeros(32, np.int8))
    with pytest.raises(ValueError, match=r"^Operand B must be 2-D, not of shape \(32,\)$"):
        matmul(a, flat)
    b8 = BFPTensor(np.zeros((3, 4), np.uint8), np.zeros((3, 32), np.int8), 8)
    with pytest.raises(ValueError,
                       match=r"^Operands have different block sizes: 16 and 8$"):
        matmul(a, b8)
    b16 = BFPTensor(np.zeros((3, 1), np.uint8), np.zeros((3, 16), np.int8))
    with pytest.raises(ValueError, match=r"^Reduction axes differ: A is \(2, 32\), B is "
                                         r"\(3, 16\) \(C = A @ B.T needs the same K\)$"):
        matmul(a, b16)
    with pytest.raises(ValueError, match=r"^Output mask has shape \(1, 1\), expected \(2, 3\)$"):
        matmul(a, b, out_mask=np.ones((1, 1), bool))
    with pytest.raises(ValueError, match=r"^reblock needs a 2-D BFPTensor$"):
        reblock(flat)
    with pytest.raises(ValueError, match=r"^reblock needs a 2-D BFPTensor$"):
        reblock(np.zeros((16, 16)))
    with pytest.raises(ValueError, match=r"^Cannot re-block along an axis of length 3: not a "
                                         r"multiple of the block size 16 \(pad it first\)$"):
        reblock(b)
