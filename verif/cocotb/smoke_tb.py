"""cocotb testbench for hdl.smoke.SmokeAccumulator: a random stream against a Python model."""

import os
import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import RisingEdge


@cocotb.test()
async def saturating_sum(dut):
    width = int(os.environ["WIDTH"])
    rng = random.Random(int(os.environ.get("SEED", "1")))
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.rst.value = 1
    dut.i__valid.value = 0
    dut.i__payload.value = 0
    for _ in range(2):
        await RisingEdge(dut.clk)
    dut.rst.value = 0
    top = (1 << width) - 1
    model = 0
    for _ in range(200):
        valid = rng.random() < 0.7
        word = rng.randrange(1 << width) if rng.random() < 0.2 else rng.randrange(4)
        dut.i__valid.value = int(valid)
        dut.i__payload.value = word
        await RisingEdge(dut.clk)
        if valid:
            model = min(top, model + word)
    dut.i__valid.value = 0
    await RisingEdge(dut.clk)
    assert int(dut.i__ready.value) == 1
    assert dut.total.value.to_unsigned() == model, (dut.total.value.to_unsigned(), model)
