"""cocotb testbench: hdl.csr.CSRBlock over verif.csr_maps.TEST_MAP, driven by cocotbext-axi."""

import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import RisingEdge
from cocotbext.axi import AxiLiteBus, AxiLiteMaster
from cocotbext.axi.constants import AxiResp

from verif.csr_maps import TEST_MAP


class TB:
    def __init__(self, dut):
        self.dut = dut
        cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
        self.axil = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "bus_"), dut.clk, dut.rst)
        self.pulses = 0
        cocotb.start_soon(self._count_pulses())

    async def _count_pulses(self):
        while True:
            await RisingEdge(self.dut.clk)
            if self.dut.ctrl_start.value == 1:
                self.pulses += 1

    async def reset(self):
        self.dut.rst.value = 1
        self.dut.status_busy.value = 0
        self.dut.status_code.value = 0
        self.dut.irq_done_set.value = 0
        self.dut.irq_err_set.value = 0
        self.dut.counter_value.value = 0
        for _ in range(3):
            await RisingEdge(self.dut.clk)
        self.dut.rst.value = 0
        await RisingEdge(self.dut.clk)

    async def read(self, offset):
        resp = await self.axil.read(offset, 4)
        return int.from_bytes(resp.data, "little"), resp.resp

    async def write(self, offset, value, strb_bytes=None):
        data = value.to_bytes(4, "little")
        if strb_bytes is None:
            return (await self.axil.write(offset, data)).resp
        # a partial write: only the given byte lanes
        lo, hi = strb_bytes[0], strb_bytes[-1] + 1
        return (await self.axil.write(offset + lo, data[lo:hi])).resp


@cocotb.test()
async def reset_values_and_rw(dut):
    tb = TB(dut)
    await tb.reset()
    assert await tb.read(TEST_MAP["ctrl"].offset) == (TEST_MAP["ctrl"].reset, AxiResp.OKAY)
    assert await tb.read(TEST_MAP["scratch"].offset) == (0xDEADBEEF, AxiResp.OKAY)
    rng = random.Random(1)
    for _ in range(20):
        v = rng.randrange(1 << 32)
        assert await tb.write(TEST_MAP["scratch"].offset, v) == AxiResp.OKAY
        assert dut.scratch_value.value.to_unsigned() == v
        assert await tb.read(TEST_MAP["scratch"].offset) == (v, AxiResp.OKAY)
    # byte strobes: write only byte 2
    assert await tb.write(TEST_MAP["scratch"].offset, 0xAABBCCDD, strb_bytes=[2]) == AxiResp.OKAY
    assert (await tb.read(TEST_MAP["scratch"].offset))[0] == (v & ~0x00FF0000) | 0x00BB0000


@cocotb.test()
async def ro_w1p_w1c(dut):
    tb = TB(dut)
    await tb.reset()
    dut.status_busy.value = 1
    dut.status_code.value = 9
    dut.counter_value.value = 0x12345678
    await RisingEdge(dut.clk)
    assert await tb.read(TEST_MAP["status"].offset) == (1 | 9 << 1, AxiResp.OKAY)
    assert await tb.read(TEST_MAP["counter"].offset) == (0x12345678, AxiResp.OKAY)
    # writing a read-only register changes nothing
    assert await tb.write(TEST_MAP["counter"].offset, 0) == AxiResp.OKAY
    assert (await tb.read(TEST_MAP["counter"].offset))[0] == 0x12345678
    # w1p: one pulse per write of 1, reads as 0, keeps rw fields of the same register
    before = tb.pulses
    word = TEST_MAP["ctrl"].pack(start=1, irq_en=1, mode=3)
    await tb.write(TEST_MAP["ctrl"].offset, word)
    await tb.write(TEST_MAP["ctrl"].offset, TEST_MAP["ctrl"].pack(start=0, irq_en=1, mode=3))
    for _ in range(3):
        await RisingEdge(dut.clk)
    assert tb.pulses - before == 1
    assert (await tb.read(TEST_MAP["ctrl"].offset))[0] == TEST_MAP["ctrl"].pack(irq_en=1, mode=3)
    # w1c: set by hardware, sticky, cleared by writing 1, independent bits
    dut.irq_done_set.value = 1
    await RisingEdge(dut.clk)
    dut.irq_done_set.value = 0
    for _ in range(3):
        await RisingEdge(dut.clk)
    assert (await tb.read(TEST_MAP["irq"].offset))[0] == 0b01
    dut.irq_err_set.value = 1
    await RisingEdge(dut.clk)
    dut.irq_err_set.value = 0
    await tb.write(TEST_MAP["irq"].offset, 0b01)
    assert (await tb.read(TEST_MAP["irq"].offset))[0] == 0b10
    await tb.write(TEST_MAP["irq"].offset, 0b10)
    assert (await tb.read(TEST_MAP["irq"].offset))[0] == 0


@cocotb.test()
async def unmapped_is_slverr(dut):
    tb = TB(dut)
    await tb.reset()
    for off in (0x10, 0x18, 0x1C):
        assert await tb.read(off) == (0, AxiResp.SLVERR)
        assert await tb.write(off, 0xFFFFFFFF) == AxiResp.SLVERR
    # the bus still works after errors
    assert await tb.read(TEST_MAP["scratch"].offset) == (0xDEADBEEF, AxiResp.OKAY)
