# amaranth: UnusedElaboratable=no
"""Transposer (hdl.transposer) in the Amaranth simulator against ``golden.gemm.reblock``."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from golden.bfp import BFPTensor
from golden.gemm import pad_to, reblock
from hdl.transposer import Transposer
from verif.streams import Pacer, bfp_tensor, pack_bfp_block, stream_through, unpack_bfp_block


def run_transposer(dut, tiles, rng, bubbles=0.0, stall=0.0):
    """Feed each ``(exp (n, cb), mant (n, 16 cb))`` tile.

    Returns, per tile, the blocks that came out and the cycles the tile took.
    """
    results = []

    async def tb(ctx):
        in_pacer, out_pacer = Pacer(rng, bubbles), Pacer(rng, stall)
        for exp, mant in tiles:
            rows, cblocks = exp.shape
            ctx.set(dut.rows, rows)
            ctx.set(dut.cblocks, cblocks)
            ctx.set(dut.start, 1)
            await ctx.tick()
            ctx.set(dut.start, 0)
            pending = [pack_bfp_block(exp[n, cb], mant[n, 16 * cb:16 * cb + 16])
                       for n in range(rows) for cb in range(cblocks)]
            want = 16 * cblocks * -(-rows // 16)
            words, _, cycles = await stream_through(ctx, dut.i, dut.o, pending, want, in_pacer,
                                                    out_pacer, idle_limit=200)
            out = [unpack_bfp_block(w) for w in words]
            ctx.set(dut.i.valid, 0)
            ctx.set(dut.o.ready, 1)
            for _ in range(8):
                _, _, busy, o_valid = await ctx.tick().sample(dut.busy, dut.o.valid)
                assert not o_valid, "extra block"
            assert not busy
            results.append((out, cycles))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()
    return results


def golden_reblock(exp, mant):
    t = BFPTensor(exp.astype(np.uint8), mant.astype(np.int8))
    padded = BFPTensor(pad_to(t.exponents, 16, axis=0), pad_to(t.mantissas, 16, axis=0))
    r = reblock(padded)
    return r.exponents.reshape(-1), r.mantissas.reshape(-1, 16)


def _tile(rng, rows, cblocks, sparsity, extremes=False):
    e, m = bfp_tensor(rng, rows * cblocks, sparsity, extremes=extremes)
    return e.reshape(rows, cblocks), m.reshape(rows, 16 * cblocks)


@pytest.mark.parametrize("pacing", [(0.0, 0.0), (0.3, 0.3)])
def test_transposer_matches_reblock(pacing, rng):
    dut = Transposer(max_rows=48, max_cblocks=3)
    tiles = [_tile(rng, 48, 3, 0.5), _tile(rng, 17, 2, 0.9), _tile(rng, 5, 1, 0.0, True),
             _tile(rng, 32, 3, 1.0), _tile(rng, 16, 1, 0.3, True)]
    for (exp, mant), (got, cycles) in zip(tiles, run_transposer(dut, tiles, rng, *pacing),
                                          strict=True):
        want_e, want_m = golden_reblock(exp, mant)
        got_e = np.array([g[0] for g in got])
        got_m = np.array([g[1] for g in got])
        np.testing.assert_array_equal(got_e, want_e)
        np.testing.assert_array_equal(got_m, want_m)
        if pacing == (0.0, 0.0):
            # one block per cycle in and out: fill, drain, 3 cycles of latency
            assert cycles == exp.size + len(want_e) + 3, cycles


def test_transposer_random_shapes_backpressure(rng):
    """Random ``rows`` / ``cblocks`` up to the maximum, heavy back-pressure on ``o``."""
    dut = Transposer(max_rows=64, max_cblocks=4)
    tiles = []
    for k in range(6):
        rows, cblocks = int(rng.integers(1, 65)), int(rng.integers(1, 5))
        tiles.append(_tile(rng, rows, cblocks, float(rng.choice([0.0, 0.5, 0.95])),
                           extremes=bool(k % 2)))
    for (exp, mant), (got, _) in zip(tiles, run_transposer(dut, tiles, rng, 0.2, 0.6),
                                     strict=True):
        want_e, want_m = golden_reblock(exp, mant)
        np.testing.assert_array_equal(np.array([g[0] for g in got]), want_e)
        np.testing.assert_array_equal(np.array([g[1] for g in got]), want_m)


def test_parameters_validated():
    with pytest.raises(ValueError, match=r"^Maximum rows must be a positive multiple of 16, "
                                         r"not 20$"):
        Transposer(20, 2)
    with pytest.raises(ValueError, match=r"^Maximum column blocks must be a positive integer, "
                                         r"not 0$"):
        Transposer(16, 0)


def _requantizer_cases(rng):
    """Column vectors (16 rows: exponents, mantissas, live) and golden's re-blocked column.

    Row 0 is a reference (``|m| >= 64``, exponent ``E_r``), rows 1..15 run through every
    mantissa at exponents ``E_r + d``, ``d`` in -16 .. 7 (clipped to 0 .. 255): every
    shift, flush and saturation case around each ``E_r``. Some rows are not live (beyond
    ``rows``): golden sees them as zero.
    """
    mants = np.array([v for v in range(-127, 128) if v] + [0])  # 255 values, 16 columns x 16
    mants = np.concatenate([mants, rng.integers(-127, 128, 256 - len(mants))])
    exps, mant_cols, lives = [], [], []
    for e_ref in (1, 2, 5, 7, 8, 9, 13, 20, 127, 240, 248, 253, 254, 255):
        for offsets in (np.arange(-16, -1), np.arange(-8, 7), np.arange(-7, 8)):
            e = np.clip(np.concatenate([[e_ref], e_ref + offsets]), 0, 255)
            for col in range(256):
                m = np.empty(16, dtype=np.int64)
                m[0] = rng.choice([64, -64, 65, -100, 127, -127])
                # rows 1..15 see a rotation of every mantissa across the 256 columns
                m[1:] = mants[(col + 17 * np.arange(1, 16)) % 256]
                exps.append(e)
                mant_cols.append(m)
                lives.append(rng.random(16) >= 0.05)
    exps = np.array(exps)
    mant_cols = np.array(mant_cols)
    lives = np.array(lives)
    # golden: each vector is column 0 of a 16 x 16 tile whose rows carry its exponents
    tile_m = np.zeros((len(exps), 16, 16), dtype=np.int8)
    tile_m[:, :, 0] = np.where(lives, mant_cols, 0)
    want_e, want_m = [], []
    for k in range(len(exps)):
        r = reblock(BFPTensor(exps[k][:, None].astype(np.uint8), tile_m[k]))
        want_e.append(int(r.exponents[0, 0]))
        want_m.append(r.mantissas[0])
    return exps, mant_cols, lives, np.array(want_e), np.array(want_m)


def test_requantizer_exhaustive(rng):
    """The transposer's re-quantizer alone (combinational) against ``reblock``."""
    from hdl.transposer import _Requantizer

    exps, mants, lives, want_e, want_m = _requantizer_cases(rng)
    dut = _Requantizer(pipelined=False)
    got_e, got_m = [], []

    async def tb(ctx):
        for e, mt, lv in zip(exps, mants, lives, strict=True):
            ctx.set(dut.exp, [int(x) for x in e])
            ctx.set(dut.mant, [int(x) & 0xFF for x in mt])
            ctx.set(dut.live, sum(int(b) << k for k, b in enumerate(lv)))
            got_e.append(ctx.get(dut.e_out))
            got_m.append([((v + 128) & 0xFF) - 128 for v in ctx.get(dut.out)])

    sim = Simulator(dut)
    sim.add_testbench(tb)
    sim.run()
    np.testing.assert_array_equal(np.array(got_e), want_e)
    np.testing.assert_array_equal(np.array(got_m), want_m)
