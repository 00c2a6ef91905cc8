"""The job-level reference executor (golden.jobs) against direct golden calls."""

import re

import numpy as np
import pytest

from golden import gemm, hbm, sparsity
from golden.bfp import BFPTensor, quantize, quantize_exact
from golden.jobs import (
    RAW_RECORD_BYTES,
    STATS_BYTES,
    ErrorCode,
    JobError,
    StatsRecord,
    execute,
    hbm_capacity,
    parse_raw,
    raw_bytes,
    read_stream,
)
from hdl.config import get_config
from hdl.descriptor import DESC_BYTES, Flag, Op, Phase, pack

CFG = get_config("small")  # max_m 32, max_n 32, max_k 128


def rand_bfp(rng, rows, cols, density=0.5, scale=1.0):
    x = rng.standard_normal((rows, cols)) * scale * (rng.random((rows, cols)) < density)
    return quantize(x.astype(np.float32), 16)


def pad_rows(t: BFPTensor, rows):
    e = np.zeros((rows,) + t.exponents.shape[1:], np.uint8)
    m = np.zeros((rows,) + t.mantissas.shape[1:], np.int8)
    e[:t.shape[0]], m[:t.shape[0]] = t.exponents, t.mantissas
    return BFPTensor(e, m)


class Mem:
    """A DRAM image: descriptors from 0, data from 0x1000, a bump allocator."""

    def __init__(self, size=1 << 17):
        self.dram = bytearray(size)
        self.top = 0x1000
        self.descs = []

    def alloc(self, n):
        addr = self.top
        self.top += -(-max(n, 1) // 8) * 8
        return addr

    def put(self, data):
        addr = self.alloc(len(data))
        self.dram[addr:addr + len(data)] = data
        return addr, len(data)

    def tensor(self, t):
        return self.put(hbm.encode_tensor(t))

    def desc(self, **f):
        self.descs.append(dict(f))

    def run(self, base=0, **kw):
        start = base
        for i, d in enumerate(self.descs):
            self.dram[start + i * DESC_BYTES:start + (i + 1) * DESC_BYTES] = pack(**d)
        n = len(self.descs)
        self.descs = []
        return execute(self.dram, base, n, kw.pop("cfg", CFG), **kw)

    def read(self, addr, n):
        return bytes(self.dram[addr:addr + n])


def gemm_desc(mem, a, b, m, n, kb, flags=0, phase=Phase.FP, **extra):
    aa, al = mem.tensor(a)
    ba, bl = mem.tensor(b)
    return dict(op=Op.GEMM, phase=phase, flags=int(flags), m=m, n=n, kblocks=kb, a_addr=aa,
                a_len=al, b_addr=ba, b_len=bl, **extra)


# --------------------------------------------------------------------------- gemm init

def test_matmul_init_chains_segments(rng):
    a, b = rand_bfp(rng, 9, 7 * 16), rand_bfp(rng, 11, 7 * 16)
    whole = gemm.matmul(a, b)
    acc = None
    for lo, hi in ((0, 3), (3, 5), (5, 7)):
        sa = BFPTensor(a.exponents[:, lo:hi], a.mantissas[:, lo * 16:hi * 16])
        sb = BFPTensor(b.exponents[:, lo:hi], b.mantissas[:, lo * 16:hi * 16])
        acc = gemm.matmul(sa, sb, init=acc)
    assert np.array_equal(acc.mant, whole.mant) and np.array_equal(acc.exp, whole.exp)
    zero = gemm.Accumulator(np.zeros((9, 11), np.int64), np.zeros((9, 11), np.int64))
    again = gemm.matmul(a, b, init=zero)
    assert np.array_equal(again.mant, whole.mant) and np.array_equal(again.exp, whole.exp)


def test_matmul_init_errors(rng):
    a, b = rand_bfp(rng, 2, 16), rand_bfp(rng, 3, 16)
    with pytest.raises(TypeError, match="init must be an Accumulator, not ndarray"):
        gemm.matmul(a, b, init=np.zeros((2, 3)))
    bad = gemm.Accumulator(np.zeros((3, 2), np.int64), np.zeros((3, 2), np.int64))
    with pytest.raises(ValueError, match=r"init has shape \(3, 2\), expected \(2, 3\)"):
        gemm.matmul(a, b, init=bad)


# --------------------------------------------------------------------------- phases

def test_fp_relu_filter_both_copies_and_stats(rng):
    mem = Mem()
    m, n, kb = 5, 20, 3
    a, b = rand_bfp(rng, m, kb * 16), rand_bfp(rng, n, kb * 16, 0.8)
    thr = sparsity.Threshold.from_float(0.5)
    out, filt, st = mem.alloc(4096), mem.alloc(4096), mem.alloc(STATS_BYTES)
    mem.desc(**gemm_desc(mem, a, b, m, n, kb, Flag.RELU | Flag.FILTER, out_addr=out,
                         out_cap=4096, filt_addr=filt, filt_cap=4096, stats_addr=st,
                         tau_te=thr.te, tau_tm=thr.tm, hist_base=100))
    res = mem.run()
    assert res.ok and res.index == 1
    # by hand: B padded with zero rows to 32 columns of output, ReLU, converter
    acc = gemm.matmul(a, pad_rows(b, 32)).relu()
    want = gemm.Accumulator(acc.mant, acc.exp).to_bfp(16)
    fwd, fil = hbm.encode_tensor(want), hbm.encode_tensor(sparsity.filter(want, thr))
    assert mem.read(out, len(fwd)) == fwd and mem.read(filt, len(fil)) == fil
    assert not any(mem.read(out + len(fwd), 4096 - len(fwd)))
    rec = StatsRecord.unpack(mem.read(st, STATS_BYTES))
    assert rec == res.records[0]
    s = sparsity.stats(want, threshold=thr, base=100)
    assert rec.filter_stats() == s
    assert (rec.out_bytes, rec.filt_bytes, rec.valid) == (len(fwd), len(fil), True)
    assert rec.macs_dense == m * n * kb * 16
    nz = int(np.einsum("ik,jk->", (a.mantissas != 0).astype(np.int64),
                       (b.mantissas != 0).astype(np.int64)))
    assert rec.macs_nonzero == nz
    assert thr.tm and s.filtered_zeros > s.zeros  # the filter did something


def test_bp_with_mask(rng):
    mem = Mem()
    m, n, kb = 7, 24, 2
    a, b = rand_bfp(rng, m, kb * 16, 0.4), rand_bfp(rng, n, kb * 16)
    saved = rand_bfp(rng, m, 32, 0.5)  # the forward copy: ceil(24 / 16) blocks a row
    ma, ml = mem.tensor(saved)
    filt, st = mem.alloc(4096), mem.alloc(STATS_BYTES)
    mem.desc(**gemm_desc(mem, a, b, m, n, kb, Flag.MASK, phase=Phase.BP, mask_addr=ma,
                         mask_len=ml, filt_addr=filt, filt_cap=4096, stats_addr=st,
                         tau_te=200, tau_tm=200))  # FILTER clear: the threshold is not used
    res = mem.run()
    assert res.ok
    mask = saved.mantissas[:, :n] != 0
    acc = gemm.matmul(a, b, out_mask=mask)
    vals = np.zeros((m, 32))
    vals[:, :n] = acc.value()
    q = quantize_exact(vals, 16)
    assert mem.read(filt, res.records[0].filt_bytes) == hbm.encode_tensor(q)
    assert np.all(q.mantissas[:, :n][~mask] == 0)
    rec = res.records[0]
    assert (rec.te, rec.tm) == (0, 0) and rec.filtered_zeros == rec.zeros
    both = (a.mantissas != 0).astype(np.int64) @ (b.mantissas != 0).astype(np.int64).T
    assert rec.macs_nonzero == int(both[mask].sum()) < int(both.sum())


def test_wg_reblock_raw(rng):
    mem = Mem()
    co, k, rows = 10, 20, 32
    dy = rand_bfp(rng, rows, 16, 0.5, 0.01)  # N x pad16(Co)
    x = rand_bfp(rng, rows, 32, 0.6)  # N x pad16(K)
    out, st = mem.alloc(co * k * 8), mem.alloc(STATS_BYTES)
    mem.desc(**gemm_desc(mem, dy, x, co, k, rows // 16, Flag.A_REBLOCK | Flag.B_REBLOCK |
                         Flag.RAW, phase=Phase.WG, out_addr=out, out_cap=co * k * 8,
                         stats_addr=st))
    res = mem.run()
    assert res.ok
    want = gemm.wg(dy, x)
    got = parse_raw(mem.read(out, co * k * 8), co, k)
    assert np.array_equal(got.mant, want.mant[:co, :k])
    assert np.array_equal(got.exp, want.exp[:co, :k])
    rec = res.records[0]
    assert rec.out_bytes == co * k * RAW_RECORD_BYTES and not rec.valid and rec.values == 0
    ra, rb = gemm.reblock(dy), gemm.reblock(x)
    # rows of the re-blocked tiles beyond m and n are not computed
    assert rec.macs_nonzero == int(np.einsum("ik,jk->",
                                             (ra.mantissas[:co] != 0).astype(np.int64),
                                             (rb.mantissas[:k] != 0).astype(np.int64)))


@pytest.mark.parametrize("co,k", [(10, 20), (32, 16)])
def test_wg_update(rng, co, k):
    """Flag.UPDATE: dW never leaves the chip; state, W and W^T as golden.update computes."""
    from golden import update

    mem = Mem()
    rows = 32
    dy = rand_bfp(rng, rows, 16 * -(-co // 16), 0.5, 0.01)  # N x pad16(Co)
    x = rand_bfp(rng, rows, 16 * -(-k // 16), 0.6)  # N x pad16(K)
    w0 = update.to_fixed(rng.standard_normal((co, k)) * 0.3, update.W_FRAC)
    v0 = update.to_fixed(rng.standard_normal((co, k)) * 0.01, update.V_FRAC)
    w0[0, 0] = -(1 << 31)  # reads as -SAT
    state, size = mem.put(np.stack([w0, v0], -1).astype("<i4").tobytes())
    cap_w, cap_wt = hbm_capacity(co * -(-k // 16)), hbm_capacity(k * -(-co // 16))
    wa, wta, st = mem.alloc(cap_w), mem.alloc(cap_wt), mem.alloc(STATS_BYTES)
    lr, mom, wd = (update.Hyper.from_float(v) for v in (0.05, 0.9, 5e-4))
    mem.desc(**gemm_desc(mem, dy, x, co, k, rows // 16, Flag.A_REBLOCK | Flag.B_REBLOCK |
                         Flag.UPDATE, phase=Phase.WG, mask_addr=state, mask_len=size,
                         out_addr=wa, out_cap=cap_w, filt_addr=wta, filt_cap=cap_wt,
                         stats_addr=st, lr=lr.word, momentum=mom.word, weight_decay=wd.word))
    res = mem.run()
    assert res.ok, res.detail
    dw = gemm.wg(dy, x)
    w0c = np.maximum(w0, -update.SAT)
    g = update.grad_to_fixed(dw.mant[:co, :k], dw.exp[:co, :k])
    w1, v1 = update.update(w0c, v0, g, lr, mom, wd)
    got = np.frombuffer(mem.read(state, size), "<i4").reshape(co, k, 2)
    assert np.array_equal(got[..., 0], w1) and np.array_equal(got[..., 1], v1)
    assert not np.array_equal(w1, w0c)  # the update did something
    want_w, want_wt = update.requantize(w1)
    e, m, _ = read_stream(mem.read(wa, cap_w), co * -(-k // 16))
    assert np.array_equal(m.reshape(co, -1), want_w.mantissas[:co])
    assert np.array_equal(e.reshape(co, -1), want_w.exponents[:co])
    e, m, _ = read_stream(mem.read(wta, cap_wt), k * -(-co // 16))
    assert np.array_equal(m.reshape(k, -1), want_wt.mantissas[:k])
    assert np.array_equal(e.reshape(k, -1), want_wt.exponents[:k])
    rec = res.records[0]
    assert not rec.valid and rec.values == 0 and rec.out_bytes > 0 and rec.filt_bytes > 0
    assert rec.macs_dense == co * k * rows
    assert res.bytes_written == size + rec.out_bytes + rec.filt_bytes + STATS_BYTES


def test_update_shape_limit(rng):
    mem = Mem()
    cfg = get_config("tiny")  # max_m = max_n = 16: W^T of a 16 x 16 tile fits, nothing larger
    dy, x = rand_bfp(rng, 16, 16), rand_bfp(rng, 16, 16)
    mem.desc(**gemm_desc(mem, dy, x, 16, 16, 1, Flag.A_REBLOCK | Flag.B_REBLOCK | Flag.UPDATE,
                         phase=Phase.WG, mask_addr=0x1000, mask_len=16 * 16 * 8))
    assert mem.run(cfg=cfg).ok


def _segments(t, bounds):
    return [BFPTensor(t.exponents[:, lo:hi], t.mantissas[:, lo * 16:hi * 16]) for lo, hi in bounds]


@pytest.mark.parametrize("bounds", [((0, 4), (4, 7)), ((0, 3), (3, 5), (5, 7))])
def test_k_split_carry_keep_equals_one_matmul(rng, bounds):
    mem = Mem()
    m, n = 6, 13
    a, b = rand_bfp(rng, m, 7 * 16, 0.5, 4.0), rand_bfp(rng, n, 7 * 16, 0.7)
    out, hb = mem.alloc(m * n * 8), mem.alloc(4096)
    last = len(bounds) - 1
    for mode in ("raw", "hbm"):
        for s, (sa, sb) in enumerate(zip(_segments(a, bounds), _segments(b, bounds),
                                         strict=True)):
            f = (Flag.CARRY if s else 0) | (Flag.KEEP if s < last else 0)
            extra = dict(out_addr=out, out_cap=m * n * 8) if mode == "raw" else \
                dict(out_addr=hb, out_cap=4096)
            f |= Flag.RAW if mode == "raw" else Flag.RELU
            lo, hi = bounds[s]
            mem.desc(**gemm_desc(mem, sa, sb, m, n, hi - lo, f, **extra))
            if s == 0:
                mem.desc(op=Op.NOP)  # a NOP inside a chain leaves the accumulators alone
        res = mem.run()
        assert res.ok and len(res.records) == len(bounds)
        whole = gemm.matmul(a, b)
        if mode == "raw":
            got = parse_raw(mem.read(out, m * n * 8), m, n)
            assert np.array_equal(got.mant, whole.mant) and np.array_equal(got.exp, whole.exp)
        else:
            want = hbm.encode_tensor(gemm.matmul(a, pad_rows(b, 16)).relu().to_bfp(16))
            assert mem.read(hb, len(want)) == want
        assert sum(r.macs_dense for r in res.records) == m * n * 7 * 16
        assert all(r.values == 0 for r in res.records[:-1])


def test_wg_split_over_samples(rng):
    mem = Mem()
    dy, x = rand_bfp(rng, 64, 32, 0.5), rand_bfp(rng, 64, 16, 0.5)
    out = mem.alloc(32 * 16 * 8)
    for s in range(2):
        f = Flag.A_REBLOCK | Flag.B_REBLOCK | Flag.RAW | (Flag.CARRY if s else Flag.KEEP)
        rows = slice(32 * s, 32 * s + 32)
        mem.desc(**gemm_desc(mem, BFPTensor(dy.exponents[rows], dy.mantissas[rows]),
                             BFPTensor(x.exponents[rows], x.mantissas[rows]), 32, 16, 2, f,
                             phase=Phase.WG, out_addr=out, out_cap=32 * 16 * 8))
    assert mem.run().ok
    want = gemm.wg(dy, x)
    got = parse_raw(mem.read(out, 32 * 16 * 8), 32, 16)
    assert np.array_equal(got.mant, want.mant) and np.array_equal(got.exp, want.exp)


def test_budget_ignores_bytes_after_the_stream(rng):
    mem = Mem()
    a, b = rand_bfp(rng, 3, 32), rand_bfp(rng, 4, 32)
    sa = hbm.encode_tensor(a)
    aa, _ = mem.put(sa + bytes([0x5A]) * 40)  # garbage after the stream, inside the budget
    out = mem.alloc(96)
    d = gemm_desc(mem, a, b, 3, 4, 2, Flag.RAW, out_addr=out, out_cap=96)
    d.update(a_addr=aa, a_len=len(sa) + 40)
    mem.desc(**d)
    assert mem.run().ok
    want = gemm.matmul(a, b)
    assert np.array_equal(parse_raw(mem.read(out, 96), 3, 4).mant, want.mant)
    e, m, end = read_stream(sa + b"\xff" * 9, 6)
    assert end == len(sa) and np.array_equal(e, a.exponents.reshape(-1))


def test_raw_records_by_hand():
    acc = gemm.Accumulator(np.array([[-2, 0x12345678]]), np.array([[0x1FF, 3]]))
    assert raw_bytes(acc) == bytes([0xFE, 0xFF, 0xFF, 0xFF, 0xFF, 0x01, 0, 0,
                                    0x78, 0x56, 0x34, 0x12, 0x03, 0x00, 0, 0])
    back = parse_raw(raw_bytes(acc), 1, 2)
    assert back.mant.tolist() == [[-2, 0x12345678]] and back.exp.tolist() == [[0x1FF, 3]]
    with pytest.raises(ValueError, match="RAW data of 8 bytes, expected 16 for 1 x 2 records"):
        parse_raw(bytes(8), 1, 2)


def test_stats_record_layout_by_hand():
    rec = StatsRecord(values=1, zeros=2, filtered_zeros=3, hist_base=4, te=5, tm=6, valid=True,
                      hist=tuple(range(100, 132)), out_bytes=7, filt_bytes=8,
                      macs_dense=(1 << 40) + 9, macs_nonzero=10, index=11)
    raw = rec.pack()
    assert len(raw) == STATS_BYTES == 176
    assert raw[:16] == bytes([1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4, 5, 6, 1])
    assert raw[16:20] == (100).to_bytes(4, "little") and raw[140:144] == (131).to_bytes(4,
                                                                                      "little")
    assert raw[144:152] == bytes([7, 0, 0, 0, 8, 0, 0, 0])
    assert raw[152:160] == ((1 << 40) + 9).to_bytes(8, "little")
    assert raw[160:176] == (10).to_bytes(8, "little") + (11).to_bytes(4, "little") + bytes(4)
    assert StatsRecord.unpack(raw) == rec
    with pytest.raises(ValueError, match="A statistics record is 176 bytes, not 3"):
        StatsRecord.unpack(b"abc")


def test_capacity_is_the_dense_size(rng):
    t = quantize(rng.standard_normal((5, 48)).astype(np.float32) + 3)  # no zero at all
    assert len(hbm.encode_tensor(t)) <= hbm_capacity(15) < len(hbm.encode_tensor(t)) + 8


# --------------------------------------------------------------------------- errors

def _good(mem, rng):
    a, b = rand_bfp(rng, 2, 16), rand_bfp(rng, 3, 16)
    out = mem.alloc(48)
    return gemm_desc(mem, a, b, 2, 3, 1, Flag.RAW, out_addr=out, out_cap=48), (a, b, out)


def _check_good(mem, ctx):
    a, b, out = ctx
    assert np.array_equal(parse_raw(mem.read(out, 48), 2, 3).mant, gemm.matmul(a, b).mant)


ERRORS = [
    # (name, code, descriptor mutation or list builder, detail)
    ("op", ErrorCode.BAD_OP, dict(op=3), "unknown op 3"),
    ("phase", ErrorCode.BAD_OP, dict(phase=3), "unknown phase 3"),
    ("flags", ErrorCode.BAD_OP, dict(flags=Flag.RAW | 1 << 9), "undefined flag bits 0x200"),
    ("reserved", ErrorCode.BAD_OP, dict(reserved1=1), "reserved field reserved1 is 0x1, not 0"),
    ("update", ErrorCode.UNSUPPORTED, dict(op=Op.UPDATE), "UPDATE is not supported yet"),
    ("m0", ErrorCode.BAD_SHAPE, dict(m=0), "m = 0 is outside 1..32"),
    ("n", ErrorCode.BAD_SHAPE, dict(n=33), "n = 33 is outside 1..32"),
    ("kb", ErrorCode.BAD_SHAPE, dict(kblocks=9), "kblocks = 9 is outside 1..8"),
    ("carry", ErrorCode.BAD_CHAIN, dict(flags=Flag.RAW | Flag.CARRY),
     "CARRY without a pending KEEP"),
    ("nout", ErrorCode.NO_OUTPUT, dict(flags=0, out_cap=0), "neither out_cap nor filt_cap"),
    ("rawcap", ErrorCode.NO_OUTPUT, dict(out_cap=0), "RAW without out_cap"),
    ("align", ErrorCode.BAD_ADDRESS, dict(a_addr=0x1004), "A address 0x1004 is not aligned"),
    ("range", ErrorCode.BAD_ADDRESS, dict(b_addr=(1 << 17) - 8, b_len=16),
     r"B \[0x1fff8, 0x20008\) is outside the DRAM of 0x20000 bytes"),
    ("len0", ErrorCode.BAD_ADDRESS, dict(a_len=0), "A length is 0"),
    ("cap", ErrorCode.BAD_ADDRESS, dict(out_cap=44), "forward copy capacity 44 is not a "
                                                     "multiple of 8"),
    ("stats", ErrorCode.BAD_ADDRESS, dict(stats_addr=(1 << 17) - 64), "statistics"),
    ("mask", ErrorCode.BAD_ADDRESS, dict(flags=Flag.RAW | Flag.MASK), "mask address|mask length"),
    ("trunc", ErrorCode.BAD_STREAM, "trunc", "A: Truncated HBM stream"),
    ("corrupt", ErrorCode.BAD_STREAM, "corrupt", "B: Block 0 mantissa"),
    ("overflow", ErrorCode.OVERFLOW, dict(out_cap=40),
     "RAW output of 48 bytes exceeds its capacity of 40 bytes"),
    ("keepend", ErrorCode.BAD_CHAIN, "keepend", "the job ends with descriptor 1's KEEP pending"),
    ("keepthen", ErrorCode.BAD_CHAIN, "keepthen", "GEMM without CARRY while descriptor 1's KEEP"),
    ("carryshape", ErrorCode.BAD_CHAIN, "carryshape", "CARRY into a 2 x 2 tile, the pending KEEP "
                                                      "tile is 2 x 3"),
    ("bus", ErrorCode.BUS_ERROR, "bus", "bus error in B"),
    ("descrange", ErrorCode.BAD_ADDRESS, "descrange", "descriptor"),
    ("updraw", ErrorCode.BAD_OP, dict(flags=Flag.RAW | Flag.UPDATE), "UPDATE combines only"),
    ("updlen", ErrorCode.BAD_ADDRESS, dict(flags=Flag.UPDATE, mask_addr=0x1000, mask_len=40),
     r"state length 40 is not m \* n \* 8 = 48"),
]


@pytest.mark.parametrize("name,code,mutation,detail", ERRORS, ids=[e[0] for e in ERRORS])
def test_error_codes_then_a_good_job(rng, name, code, mutation, detail):
    mem = Mem()
    first, ctx0 = _good(mem, rng)
    bad, _ = _good(mem, rng)
    kw = {}
    descs = [first, bad]
    bad_index = 1
    if isinstance(mutation, dict):
        bad.update(mutation)
    elif mutation == "trunc":
        bad["a_len"] -= 1
    elif mutation == "corrupt":
        mem.dram[bad["b_addr"] + 5] = 0  # first mantissa byte of block 0
    elif mutation == "keepend":
        bad["flags"] |= Flag.KEEP
    elif mutation == "keepthen":
        bad["flags"] |= Flag.KEEP
        third, _ = _good(mem, rng)
        descs.append(third)
    elif mutation == "carryshape":
        bad["flags"] |= Flag.KEEP
        third, _ = _good(mem, rng)
        third.update(flags=Flag.RAW | Flag.CARRY, n=2)
        descs.append(third)
        bad_index = 2
    elif mutation == "bus":
        kw["faults"] = [(bad["b_addr"] + 2, bad["b_addr"] + 3)]
    if mutation == "keepthen":
        bad_index = 2
    mem.descs = descs
    if mutation == "descrange":
        mem.run()  # writes the descriptors; now start so that descriptor 1 crosses the end
        base = len(mem.dram) - DESC_BYTES - 8
        mem.dram[base:base + DESC_BYTES] = pack(**first)
        res = execute(mem.dram, base, 2, CFG)
    else:
        res = mem.run(**kw)
    assert (res.code, res.index) == (code, bad_index), res.detail
    # a KEEP descriptor completes (its record exists) before its chain fails
    assert len(res.records) == (2 if name.startswith(("keep", "carryshape")) else 1)
    assert re.search(detail, res.detail), res.detail
    _check_good(mem, ctx0)  # the descriptor before the failing one completed
    with pytest.raises(JobError, match=code.name):
        res.check()
    # the next job on the same memory runs normally
    good, ctx = _good(mem, rng)
    mem.descs = [good]
    res = mem.run()
    assert res.ok and res.index == 1
    _check_good(mem, ctx)


def test_overflow_writes_what_fits(rng):
    mem = Mem()
    a, b = rand_bfp(rng, 4, 32, 1.0), rand_bfp(rng, 16, 32, 1.0)
    fwd_len = len(hbm.encode_tensor(gemm.matmul(a, b).to_bfp(16)))
    out, filt = mem.alloc(64 + 8), mem.alloc(4096)
    mem.dram[out:out + 72] = b"\xaa" * 72
    mem.desc(**gemm_desc(mem, a, b, 4, 16, 2, 0, out_addr=out, out_cap=64, filt_addr=filt,
                         filt_cap=4096))
    res = mem.run()
    assert res.code == ErrorCode.OVERFLOW and fwd_len > 64
    want = hbm.encode_tensor(gemm.matmul(a, b).to_bfp(16))
    assert mem.read(out, 64) == want[:64] and mem.read(out + 64, 8) == b"\xaa" * 8
    assert mem.read(filt, len(want)) == want  # the filtered copy (threshold 0) was written
    assert res.records == []


def test_execute_parameter_errors():
    with pytest.raises(TypeError, match="DRAM must be a bytearray, not bytes"):
        execute(b"", 0, 0, CFG)
    with pytest.raises(ValueError, match="count must be a non-negative integer, not -1"):
        execute(bytearray(64), 0, -1, CFG)
    with pytest.raises(TypeError, match="Engine configuration needs a positive integer max_m"):
        execute(bytearray(64), 0, 0, object())
    res = execute(bytearray(64), 0, 0, CFG)
    assert res.ok and res.index == 0
