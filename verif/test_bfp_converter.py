# amaranth: UnusedElaboratable=no
"""BFP8 converter against ``golden.gemm.Accumulator.to_bfp``: Amaranth simulator and Verilator.

Every simulator check runs for ``lanes`` 16 (the pipeline), 4 and 1 (the serial form); 8 and 2
run the random check once more in the slow set.
"""

import numpy as np
import pytest
from amaranth import Value
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
    unpack_bfp_block,
)

LANES = (16, 4, 1)


def test_layout_constants_match_golden():
    assert bfp_layouts.ACC_W == golden.gemm.ACC_W
    assert bfp_layouts.GUARD == golden.gemm.GUARD
    assert bfp_layouts.EXP_OFFSET == golden.gemm.EXP_OFFSET
    assert bfp_layouts.BIAS == golden.bfp.BIAS
    assert bfp_layouts.BFP_BLOCK.size == 8 + 16 * 8
    assert bfp_layouts.ACC_BLOCK.size == 16 * (32 + 10)


def run_converter(mant, exp, lanes=16, in_pacer=None, out_pacer=None):
    """Simulate the converter on blocks; return ``(E, m, in_cycles, out_cycles)``.

    ``in_cycles`` are the cycles in which the blocks were accepted, ``out_cycles`` those in which
    they were taken (both counted from the first cycle). A monitor checks the output stream's
    rules on every cycle: once ``o.valid`` is up it stays up, with the same payload, until
    ``o.ready`` takes the block.
    """
    dut = BFPConverter(lanes=lanes)
    words = [pack_acc_block(a, b) for a, b in zip(mant, exp, strict=True)]
    result = {"in": []}

    async def put(ctx):
        cycle = 0
        for word in words:
            while in_pacer is not None and in_pacer.stall():
                ctx.set(dut.i.valid, 0)
                await ctx.tick()
                cycle += 1
            ctx.set(dut.i.valid, 1)
            ctx.set(Value.cast(dut.i.payload), word)
            while True:
                _, _, ready = await ctx.tick().sample(dut.i.ready)
                cycle += 1
                if ready:
                    break
            result["in"].append(cycle - 1)
        ctx.set(dut.i.valid, 0)

    async def get(ctx):
        result["out"] = await stream_get(ctx, dut.o, len(words), out_pacer)

    async def monitor(ctx):
        held = None  # payload offered and not taken at the previous edge
        async for _, _, valid, ready, payload in ctx.tick().sample(
                dut.o.valid, dut.o.ready, Value.cast(dut.o.payload)):
            if held is not None:
                assert valid, "o.valid fell before the block was taken"
                assert payload == held, "o.payload changed while o.valid & ~o.ready"
            held = payload if valid and not ready else None

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(put)
    sim.add_testbench(get)
    sim.add_process(monitor)
    sim.run()
    outs, cycles = result["out"]
    blocks = [unpack_bfp_block(w) for w in outs]
    return (np.array([b[0] for b in blocks], np.uint8), np.stack([b[1] for b in blocks]),
            result["in"], cycles)


def assert_blocks_equal(mant, exp, got_e, got_m):
    want_e, want_m = ref_convert(mant, exp)
    assert len(got_e) == len(mant)
    for n in range(len(mant)):
        assert got_e[n] == want_e[n] and np.array_equal(got_m[n], want_m[n]), (
            f"block {n}: S={mant[n].tolist()} ea={exp[n].tolist()}: got E={got_e[n]} "
            f"m={got_m[n].tolist()}, want E={want_e[n]} m={want_m[n].tolist()}")


@pytest.mark.parametrize("lanes", LANES)
def test_edge_cases_bit_exact(rng, lanes):
    mant, exp = acc_edge_cases(rng)
    got_e, got_m, _, _ = run_converter(mant, exp, lanes)
    assert_blocks_equal(mant, exp, got_e, got_m)


@pytest.mark.parametrize("lanes", LANES)
def test_edge_cases_with_flow_control(rng, lanes):
    # Back-pressure must hold the output block while the next ones are in flight.
    mant, exp = acc_edge_cases(rng)
    got_e, got_m, _, _ = run_converter(mant, exp, lanes, Pacer(rng, 0.2),
                                       Pacer(rng, 0.5, burst=True))
    assert_blocks_equal(mant, exp, got_e, got_m)


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
    assert np.any(mant == -(1 << 31))


def random_blocks(rng, n):
    """Random blocks over sparsity 0..0.99 and narrow/wide exponent spreads, shuffled."""
    parts = [acc_random(rng, n // 4, sparsity=s, exp_spread=d)
             for s, d in ((0.3, 8), (0.0, 40), (0.9, 8), (0.99, 40))]
    mant = np.concatenate([p[0] for p in parts])
    exp = np.concatenate([p[1] for p in parts])
    order = rng.permutation(len(mant))
    return mant[order], exp[order]


@pytest.mark.parametrize("lanes", LANES)
def test_random_with_flow_control(rng, lanes):
    mant, exp = random_blocks(rng, 120)
    got_e, got_m, _, _ = run_converter(mant, exp, lanes, Pacer(rng, 0.3),
                                       Pacer(rng, 0.4, burst=True))
    assert_blocks_equal(mant, exp, got_e, got_m)


@pytest.mark.slow
@pytest.mark.parametrize("lanes", (16, 8, 4, 2, 1))
@pytest.mark.parametrize("idle, stall", [(0.0, 0.0), (0.5, 0.0), (0.0, 0.7), (0.6, 0.6)])
def test_random_long(rng, lanes, idle, stall):
    mant, exp = random_blocks(rng, 600)
    edge_m, edge_e = acc_edge_cases(rng)
    mant, exp = np.concatenate([edge_m, mant]), np.concatenate([edge_e, exp])
    got_e, got_m, _, _ = run_converter(mant, exp, lanes, Pacer(rng, idle),
                                       Pacer(rng, stall, burst=True))
    assert_blocks_equal(mant, exp, got_e, got_m)


@pytest.mark.parametrize("lanes", LANES)
def test_full_rate_throughput_and_latency(rng, lanes):
    mant, exp = acc_random(rng, 40)
    got_e, got_m, ins, outs = run_converter(mant, exp, lanes)
    assert_blocks_equal(mant, exp, got_e, got_m)
    interval = 16 // lanes
    latency = 4 if lanes == 16 else 2 * interval + 1  # the documented numbers
    dut = BFPConverter(lanes=lanes)
    assert (dut.lanes, dut.interval, dut.latency) == (lanes, interval, latency)
    # First input is presented in cycle 0; the sink's cycle 0 is the same clock edge.
    assert ins == list(range(0, 40 * interval, interval))
    assert outs == list(range(latency, latency + 40 * interval, interval))


@pytest.mark.parametrize("lanes", LANES)
def test_latency_with_input_bubbles(rng, lanes):
    # Without back-pressure every block takes exactly `latency` cycles, whatever the gaps.
    mant, exp = acc_random(rng, 60)
    _, _, ins, outs = run_converter(mant, exp, lanes, Pacer(rng, 0.6, burst=True))
    latency = BFPConverter(lanes=lanes).latency
    assert [o - i for i, o in zip(ins, outs, strict=True)] == [latency] * 60
    interval = 16 // lanes
    assert all(b - a >= interval for a, b in zip(ins, ins[1:], strict=False))


def test_class_attributes_are_the_default():
    assert BFPConverter.latency == 4 and BFPConverter.interval == 1
    dut = BFPConverter()
    assert (dut.lanes, dut.interval, dut.latency) == (16, 1, 4)


@pytest.mark.parametrize("lanes", [0, 3, 5, 32, -16, 12])
def test_lanes_value_error(lanes):
    with pytest.raises(ValueError, match=r"Lanes must be 16, 8, 4, 2 or 1, not"):
        BFPConverter(lanes=lanes)


@pytest.mark.parametrize("lanes", [16.0, "16", True, None])
def test_lanes_type_error(lanes):
    with pytest.raises(TypeError, match=r"Lanes must be an integer, not"):
        BFPConverter(lanes=lanes)


@pytest.mark.cocotb
def test_verilator(seed):
    run_cocotb(BFPConverter(), name="bfp_converter", test_module="verif.cocotb.bfp_converter_tb",
               test_id="bfp_converter", seed=seed, extra_env={"BLOCKS": 400})


@pytest.mark.cocotb
@pytest.mark.slow
def test_verilator_long(seed):
    run_cocotb(BFPConverter(), name="bfp_converter", test_module="verif.cocotb.bfp_converter_tb",
               test_id="bfp_converter_long", seed=seed, extra_env={"BLOCKS": 20000})


@pytest.mark.cocotb
@pytest.mark.slow
@pytest.mark.parametrize("lanes", [4, 1])
def test_verilator_lanes(seed, lanes):
    dut = BFPConverter(lanes=lanes)
    run_cocotb(dut, name="bfp_converter", test_module="verif.cocotb.bfp_converter_tb",
               test_id=f"bfp_converter_lanes{lanes}", seed=seed,
               extra_env={"BLOCKS": 400, "INTERVAL": dut.interval, "LATENCY": dut.latency})
