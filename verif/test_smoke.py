# amaranth: UnusedElaboratable=no
"""The harness works end to end: Amaranth -> Verilog -> Verilator -> cocotb, and the simulator."""

import random

import pytest
from amaranth.sim import Simulator

from hdl.smoke import SmokeAccumulator
from verif.harness import pick_seed, run_cocotb


def test_width_is_validated():
    with pytest.raises(TypeError, match=r"^Width must be a positive integer, not 0$"):
        SmokeAccumulator(0)


def test_amaranth_sim_saturates():
    dut = SmokeAccumulator(4)
    seen = []

    async def tb(ctx):
        for word in (7, 7, 7, 1):
            ctx.set(dut.i.valid, 1)
            ctx.set(dut.i.payload, word)
            await ctx.tick()
            seen.append(ctx.get(dut.total))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    assert seen == [7, 14, 15, 15]


@pytest.mark.cocotb
@pytest.mark.parametrize("width", [3, 8])
def test_verilator_smoke(width):
    seed = pick_seed()
    print(f"seed={seed} (replay with SEED={seed})")
    random.seed(seed)
    run_cocotb(SmokeAccumulator(width), name=f"smoke_w{width}",
               test_module="verif.cocotb.smoke_tb", test_id=f"smoke_w{width}",
               seed=seed, extra_env={"WIDTH": width})
