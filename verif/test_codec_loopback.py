"""HBM v1 encoder output fed to the decoder returns the input: Amaranth simulator and Verilator."""

import numpy as np
import pytest
from amaranth.hdl import Value
from amaranth.sim import Simulator

from hdl.hbm_decoder import DecodeError
from verif.codec_loopback import CodecLoopback
from verif.harness import run_cocotb
from verif.streams import Pacer, bfp_tensor, pack_bfp_block, stream_put, unpack_bfp_block


@pytest.mark.parametrize("bus_width", [32, 64])
def test_loopback_amaranth(rng, bus_width):
    dut = CodecLoopback(bus_width)
    tensors = [bfp_tensor(rng, n, s, clustered=c)
               for n, s, c in ((40, 0.0, False), (1, 0.5, False), (0, 0.0, False),
                               (70, 0.9, True), (33, 0.99, False), (16, 1.0, False))]
    taken, codes = [], []
    in_pacer, out_pacer = Pacer(rng, 0.2), Pacer(rng, 0.3)

    async def drive(ctx):
        ctx.set(dut.loop, 1)
        for exp, mant in tensors:
            await stream_put(ctx, dut.enc_cmd, [len(exp)])
            await stream_put(ctx, dut.dec_cmd, [len(exp)])
            await stream_put(ctx, dut.i, [pack_bfp_block(e, m) for e, m in
                                          zip(exp, mant, strict=True)], in_pacer)
            for _ in range(20 * len(exp) + 100):
                if not (ctx.get(dut.dec_busy) or ctx.get(dut.enc_busy)):
                    break
                await ctx.tick()
            await ctx.tick()
            codes.append(DecodeError(ctx.get(dut.code)))

    async def sink(ctx):
        while True:
            ready = not out_pacer.stall()
            ctx.set(dut.o.ready, int(ready))
            _, _, valid, payload = await ctx.tick().sample(dut.o.valid, Value.cast(dut.o.payload))
            if valid and ready:
                taken.append(unpack_bfp_block(payload))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(drive)
    sim.add_testbench(sink, background=True)
    sim.run()
    assert codes == [DecodeError.NONE] * len(tensors)
    want = [(e, m) for exp, mant in tensors for e, m in zip(exp, mant, strict=True)]
    assert len(taken) == len(want)
    for b, ((e, m), (we, wm)) in enumerate(zip(taken, want, strict=True)):
        assert e == we and np.array_equal(m, wm), f"block {b}"


@pytest.mark.cocotb
def test_loopback_verilator(seed):
    run_cocotb(CodecLoopback(64), name="codec_loopback_64", test_module="verif.cocotb.codec_tb",
               test_id="codec_loopback_64", seed=seed,
               extra_env={"BUS_WIDTH": 64, "BLOCKS": 1500})


@pytest.mark.cocotb
@pytest.mark.slow
@pytest.mark.parametrize("bus_width", [32, 64])
def test_loopback_verilator_long(seed, bus_width):
    run_cocotb(CodecLoopback(bus_width), name=f"codec_loopback_{bus_width}",
               test_module="verif.cocotb.codec_tb", test_id=f"codec_loopback_{bus_width}_long",
               seed=seed, extra_env={"BUS_WIDTH": bus_width, "BLOCKS": 40000})
