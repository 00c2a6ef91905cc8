"""BFP8 converter against ``golden.gemm.Accumulator.to_bfp``: Amaranth simulator and Verilator."""

import numpy as np
import pytest
from amaranth.sim import Simulator

import golden.bfp
import golden.gemm
from hdl import bfp_layouts
from hdl.bfp_converter import BFPConverter
from verif.harness import run_cocotb
from verif.streams import (
    Pacer,
    acc_edge_cases,
    acc_random,
    pack_acc_block,
    ref_convert,
    stream_get,
    stream_put,
    unpack_bfp_block,
)


def test_layout_constants_match_golden():
    assert bfp_layouts.ACC_W == golden.gemm.ACC_W
    assert bfp_layouts.GUARD == golden.gemm.GUARD
    assert bfp_layouts.EXP_OFFSET == golden.gemm.EXP_OFFSET
    assert bfp_layouts.BIAS == golden.bfp.BIAS
    assert bfp_layouts.BFP_BLOCK.size == 8 + 16 * 8
    assert bfp_layouts.ACC_BLOCK.size == 16 * (32 + 10)


def run_converter(mant, exp, in_pacer=None, out_pacer=None):
    """Simulate the converter on blocks; return ``(E, m, out_cycles)``."""
    dut = BFPConverter()
    words = [pack_acc_block(a, b) for a, b in zip(mant, exp, strict=True)]
    result = {}

    async def put(ctx):
        await stream_put(ctx, dut.i, words, in_pacer)

    async def get(ctx):
        result["out"] = await stream_get(ctx, dut.o, len(words), out_pacer)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(put)
    sim.add_testbench(get)
    sim.run()
    outs, cycles = result["out"]
    blocks = [unpack_bfp_block(w) for w in outs]
    return (np.array([b[0] for b in blocks], np.uint8), np.stack([b[1] for b in blocks]),
            cycles)


def test_edge_cases_bit_exact(rng):
    mant, exp = acc_edge_cases(rng)
    want_e, want_m = ref_convert(mant, exp)
    got_e, got_m, _ = run_converter(mant, exp)
    for n in range(len(mant)):
        assert got_e[n] == want_e[n] and np.array_equal(got_m[n], want_m[n]), (
            f"block {n}: S={mant[n].tolist()} ea={exp[n].tolist()}: got E={got_e[n]} "
            f"m={got_m[n].tolist()}, want E={want_e[n]} m={want_m[n].tolist()}")


def test_edge_cases_cover_what_they_claim(rng):
    # The hand-made cases must reach saturation, flush, all-zero and rounding to 128.
    mant, exp = acc_edge_cases(rng)
    e, m = ref_convert(mant, exp)
    assert np.any(e == 0) and np.any(e == 254) and np.any(e == 1)
    assert np.any(np.abs(m) == 127) and np.any(m == -127)
    values = golden.gemm.Accumulator(mant, exp).value()
    flushed = (values != 0) & (np.abs(values) < 2.0 ** -126)
    assert flushed.any()
    assert np.any(flushed.all(axis=1) | ~(values != 0).any(axis=1))


def test_random_with_flow_control(rng):
    mant, exp = acc_random(rng, 120, sparsity=0.3)
    want_e, want_m = ref_convert(mant, exp)
    got_e, got_m, _ = run_converter(mant, exp, Pacer(rng, 0.3), Pacer(rng, 0.4, burst=True))
    assert np.array_equal(got_e, want_e)
    assert np.array_equal(got_m, want_m)


def test_one_block_per_cycle_and_latency(rng):
    mant, exp = acc_random(rng, 40)
    _, _, cycles = run_converter(mant, exp)
    # First input is presented in cycle 0; the sink's cycle 0 is the same clock edge.
    assert cycles[0] == BFPConverter.latency
    assert cycles == list(range(cycles[0], cycles[0] + 40))


@pytest.mark.cocotb
def test_verilator(seed):
    run_cocotb(BFPConverter(), name="bfp_converter", test_module="verif.cocotb.bfp_converter_tb",
               test_id="bfp_converter", seed=seed, extra_env={"BLOCKS": 400})


@pytest.mark.cocotb
@pytest.mark.slow
def test_verilator_long(seed):
    run_cocotb(BFPConverter(), name="bfp_converter", test_module="verif.cocotb.bfp_converter_tb",
               test_id="bfp_converter_long", seed=seed, extra_env={"BLOCKS": 20000})
