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
            # one block per cycle in and out: fill, drain, 1 + 4 cycles of latency
            assert cycles == exp.size + len(want_e) + 5, cycles


def test_parameters_validated():
    with pytest.raises(ValueError, match=r"^Maximum rows must be a positive multiple of 16, "
                                         r"not 20$"):
        Transposer(20, 2)
    with pytest.raises(ValueError, match=r"^Maximum column blocks must be a positive integer, "
                                         r"not 0$"):
        Transposer(16, 0)
