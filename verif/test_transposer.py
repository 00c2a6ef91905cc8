# amaranth: UnusedElaboratable=no
"""Transposer (hdl.transposer) in the Amaranth simulator against ``golden.gemm.reblock``."""

import re

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


def _spread_tile(rng, rows, cblocks):
    """Rows whose exponents spread around a reference (``E_ref - 16 .. E_ref + 7``, clipped to
    0 .. 255, ``E_ref`` from tiny to 255): flushes to zero, every shift and, with ``E = 255``
    rows, saturation. Any mantissa, about a third of them zero."""
    e_ref = int(rng.choice([1, 6, 9, 20, 130, 247, 253, 255]))
    exp = np.clip(e_ref + rng.integers(-16, 8, (rows, cblocks)), 0, 255)
    mant = rng.integers(-127, 128, (rows, 16 * cblocks))
    mant = np.where(rng.random(mant.shape) < 0.3, 0, mant)
    return exp, mant


def _check(tiles, results):
    for (exp, mant), (got, _) in zip(tiles, results, strict=True):
        want_e, want_m = golden_reblock(exp, mant)
        np.testing.assert_array_equal(np.array([g[0] for g in got]), want_e)
        np.testing.assert_array_equal(np.array([g[1] for g in got]), want_m)


@pytest.mark.parametrize("lanes", [16, 4, 1])
@pytest.mark.parametrize("pacing", [(0.0, 0.0), (0.3, 0.3)])
def test_transposer_matches_reblock(pacing, lanes, rng):
    dut = Transposer(max_rows=48, max_cblocks=3, lanes=lanes)
    tiles = [_tile(rng, 48, 3, 0.5), _tile(rng, 17, 2, 0.9), _tile(rng, 5, 1, 0.0, True),
             _tile(rng, 32, 3, 1.0), _tile(rng, 16, 1, 0.3, True)]
    results = run_transposer(dut, tiles, rng, *pacing)
    _check(tiles, results)
    if pacing == (0.0, 0.0):
        # a block every P = 16 / lanes cycles in and out: fill, drain, P + 2 cycles of latency
        p = 16 // lanes
        for (exp, _), (got, cycles) in zip(tiles, results, strict=True):
            assert cycles == p * (exp.size + len(got)) + p + 2, cycles


@pytest.mark.parametrize("lanes", [16, 8, 4, 2, 1])
def test_transposer_random_shapes_backpressure(lanes, rng):
    """Random ``rows`` / ``cblocks`` up to the maximum, heavy back-pressure on ``o``."""
    dut = Transposer(max_rows=64, max_cblocks=4, lanes=lanes)
    tiles = []
    for k in range(6):
        rows, cblocks = int(rng.integers(1, 65)), int(rng.integers(1, 5))
        tiles.append(_tile(rng, rows, cblocks, float(rng.choice([0.0, 0.5, 0.95])),
                           extremes=bool(k % 2)))
    _check(tiles, run_transposer(dut, tiles, rng, 0.2, 0.6))


@pytest.mark.parametrize("lanes", [16, 4, 1])
def test_transposer_spread_exponents(lanes, rng):
    """Ragged tiles with spread row exponents (flush to zero, saturation), input bubbles and
    output back-pressure."""
    dut = Transposer(max_rows=48, max_cblocks=2, lanes=lanes)
    shapes = [(48, 2), (23, 1), (33, 2), (7, 2), (16, 1), (41, 1)]
    tiles = [_spread_tile(rng, rows, cblocks) for rows, cblocks in shapes]
    tiles[0][0][:, :] = np.clip(tiles[0][0], 245, 255)  # saturating rows for sure
    tiles[0][0][::5, :] = 255
    results = run_transposer(dut, tiles, rng, 0.25, 0.4)
    _check(tiles, results)
    # the cases this test is about did occur (golden's view)
    want = [golden_reblock(exp, mant) for exp, mant in tiles]
    assert any(((e == 254)[:, None] & (np.abs(m) == 127)).any() for e, m in want)
    flushed = sum(int(np.count_nonzero(mt)) - int(np.count_nonzero(m)) for (_, mt), (_, m)
                  in zip(tiles, want, strict=True))
    assert flushed > 0


def test_parameters_validated():
    with pytest.raises(ValueError, match=r"^Maximum rows must be a positive multiple of 16, "
                                         r"not 20$"):
        Transposer(20, 2)
    with pytest.raises(ValueError, match=r"^Maximum column blocks must be a positive integer, "
                                         r"not 0$"):
        Transposer(16, 0)
    for bad in (3, 0, 32, -4, True, 4.0, "4"):
        with pytest.raises(ValueError, match=rf"^Lanes must be one of 16, 8, 4, 2, 1, not "
                                             rf"{re.escape(repr(bad))}$"):
            Transposer(16, 1, lanes=bad)
    assert Transposer(16, 1, lanes=4).lanes == 4
    assert Transposer(16, 1).lanes == 16


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
