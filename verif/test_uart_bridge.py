# amaranth: UnusedElaboratable=no
"""UART (hdl.uart), UART host bridge (hdl.uart_bridge) and the host's SerialTransport.

* UART transmitter and receiver in the Amaranth simulator against bit-level Python models
  (bit timing, mid-bit sampling with a baud mismatch, glitches, framing errors, overrun);
* the bridge with an AXI4RAM and a CSRBlock under Verilator, driven by cocotbext-uart
  (verif/cocotb/uart_bridge_tb.py);
* runtime.serial_transport.SerialTransport against a Python model of the protocol written
  here from the protocol table (a fake serial port).
"""

import random

import pytest
from amaranth import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator

from hdl.axi import AXI4LiteSignature, AXI4Signature
from hdl.axi_ram import AXI4RAM
from hdl.csr import CSRBlock
from hdl.regmap import Field, Register, RegisterMap
from hdl.uart import UARTRx, UARTTx
from hdl.uart_bridge import UARTBridge
from verif.harness import run_cocotb

# ------------------------------------------------------------------------- parameters / ports


def test_parameters_validated():
    for cls in (UARTRx, UARTTx, UARTBridge):
        for bad in (3, 0, 4.0, True, 1 << 25):
            with pytest.raises(ValueError, match=r"^Divisor \(clock cycles per bit\) must be an "
                                                 r"integer from 4 to 16777216, not "):
                cls(bad)
    with pytest.raises(ValueError, match=r"^Timeout must be an integer from 1 to 65536 byte "
                                         r"times, not 0$"):
        UARTBridge(8, timeout_bytes=0)
    with pytest.raises(ValueError, match=r"^Receive FIFO depth must be 0 or an integer from 2 "
                                         r"to 256, not 1$"):
        UARTBridge(8, rx_fifo_depth=1)


def test_ports():
    b = UARTBridge(16, timeout_bytes=7, rx_fifo_depth=0)
    assert (b.divisor, b.timeout_bytes, b.rx_fifo_depth, b.timeout_cycles) == (16, 7, 0, 1120)
    sig = b.signature.members
    assert sig["rx"].flow == In and sig["rx"].shape == 1
    assert sig["tx"].flow == Out and sig["irq"].flow == In
    assert sig["csr"].flow == Out and \
        sig["csr"].signature.members == AXI4LiteSignature(12, 32).members
    assert sig["mem"].flow == Out and sig["mem"].signature.members == AXI4Signature(32, 64).members
    assert set(sig.keys()) == {"rx", "tx", "csr", "mem", "irq"}
    tx, rx = UARTTx(4), UARTRx(5)
    assert tx.divisor == 4 and rx.divisor == 5
    assert set(tx.signature.members.keys()) == {"inp", "tx", "busy"}
    assert set(rx.signature.members.keys()) == {"rx", "out", "frame_error", "overrun"}


# ------------------------------------------------------------------ UART in the Amaranth sim

def _sim(dut, *tbs, processes=()):
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    for tb in tbs:
        sim.add_testbench(tb)
    for p in processes:
        sim.add_process(p)
    sim.run()


@pytest.mark.parametrize("div", [4, 7, 16])
def test_tx_waveform(div, seed):
    """Each byte: start 0, 8 data bits LSB first, stop 1, every bit exactly ``div`` cycles;
    bytes offered back to back follow each other without idle time."""
    dut = UARTTx(div)
    rng = random.Random(seed)
    data = [rng.getrandbits(8) for _ in range(6)]
    line = []

    async def feed(ctx):
        for b in data:
            ctx.set(dut.inp.valid, 1)
            ctx.set(dut.inp.payload, b)
            await ctx.tick().until(dut.inp.ready)
        ctx.set(dut.inp.valid, 0)

    async def watch(ctx):
        await ctx.tick()  # the first byte is taken at the first edge
        for _ in range(len(data) * 10 * div + 5 * div):
            line.append(ctx.get(dut.tx))
            await ctx.tick()

    _sim(dut, feed, watch)
    want = []
    for b in data:
        for bit in [0] + [(b >> k) & 1 for k in range(8)] + [1]:
            want += [bit] * div
    assert line[:len(want)] == want
    assert all(v == 1 for v in line[len(want):])


def _bits(byte, stop=1):
    return [0] + [(byte >> k) & 1 for k in range(8)] + [stop]


@pytest.mark.parametrize("div,skew", [(4, 1.0), (8, 1.03), (8, 0.97), (16, 1.04), (16, 0.96),
                                      (13, 1.0)])
def test_rx_bytes_with_baud_mismatch(div, skew, seed):
    """Random bytes sent at ``div * skew`` cycles per bit (random idle gaps, a glitch shorter
    than half a bit now and then) are all received, in order, without errors."""
    dut = UARTRx(div)
    rng = random.Random(seed)
    data = [rng.getrandbits(8) for _ in range(40)]
    got, errors = [], []

    async def drive(ctx):
        t = 0.0  # time in cycles (fractional: the sender's clock)
        now = 0
        ctx.set(dut.rx, 1)

        async def hold(level, until):
            nonlocal now
            ctx.set(dut.rx, level)
            while now < round(until):
                await ctx.tick()
                now += 1
        await hold(1, 5)
        t = 5
        for b in data:
            gap = rng.choice([0, 0, rng.randrange(1, 3 * div)])
            if gap > div and rng.random() < 0.5:  # a glitch in the idle time
                await hold(1, t + 1)
                await hold(0, t + 1 + max(1, div // 2 - 2))
                t += 1 + max(1, div // 2 - 2)
            await hold(1, t + gap)
            t += gap
            for bit in _bits(b):
                await hold(bit, t + div * skew)
                t += div * skew
        await hold(1, t + 3 * div)

    async def collect(ctx):
        ctx.set(dut.out.ready, 1)
        while True:
            await ctx.tick()
            if ctx.get(dut.out.valid):
                got.append(ctx.get(dut.out.payload))
            if ctx.get(dut.frame_error) or ctx.get(dut.overrun):
                errors.append(1)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(drive)
    sim.add_testbench(collect, background=True)
    sim.run()
    assert errors == []
    assert got == data


def test_rx_framing_error_and_overrun():
    """A byte with a low stop bit is dropped with one frame_error pulse (and a break held low
    gives one); a byte completed while ``out`` is full is dropped with one overrun pulse."""
    div = 8
    dut = UARTRx(div)
    events = {"fe": 0, "ov": 0}
    got = []

    async def send(ctx, bits):
        for bit in bits:
            ctx.set(dut.rx, bit)
            await ctx.tick().repeat(div)

    async def drive(ctx):
        ctx.set(dut.rx, 1)
        await ctx.tick().repeat(10)
        await send(ctx, _bits(0x3C, stop=0))
        await send(ctx, [1] * 3)
        await send(ctx, [0] * 40)  # break
        await send(ctx, [1] * 3)
        await send(ctx, _bits(0x81))  # received
        assert events == {"fe": 2, "ov": 0}
        await send(ctx, _bits(0x42))  # still waiting in out: overrun (out.ready is 0)
        await send(ctx, [1] * 3)
        assert events == {"fe": 2, "ov": 1}
        assert ctx.get(dut.out.valid) and ctx.get(dut.out.payload) == 0x81
        ctx.set(dut.out.ready, 1)
        await ctx.tick()
        ctx.set(dut.out.ready, 0)
        got.append(0x81)
        await send(ctx, _bits(0x99) + [1])
        assert ctx.get(dut.out.valid) and ctx.get(dut.out.payload) == 0x99

    async def count(ctx):
        while True:
            await ctx.tick()
            events["fe"] += ctx.get(dut.frame_error)
            events["ov"] += ctx.get(dut.overrun)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(drive)
    sim.add_testbench(count, background=True)
    sim.run()
    assert got == [0x81]


# ------------------------------------------------------------------- bridge under Verilator

BENCH_MAP = RegisterMap("UART bridge bench", [
    Register("scratch", 0x0, [Field("value", 32, "rw", reset=0xDEADBEEF)]),
    Register("ident", 0x4, [Field("value", 32, "ro")]),
    Register("ctrl", 0x8, [Field("irq", 1, "rw")]),
])
ID_VALUE = 0x1234ABCD


class BridgeBench(wiring.Component):
    """UARTBridge with its ``mem`` on an AXI4RAM and its ``csr`` on a CSRBlock of BENCH_MAP
    (``ident`` reads ID_VALUE, ``ctrl.irq`` drives the bridge's ``irq``)."""

    def __init__(self, divisor, mem_bytes, timeout_bytes, rx_fifo_depth):
        self.bridge = UARTBridge(divisor, timeout_bytes=timeout_bytes,
                                 rx_fifo_depth=rx_fifo_depth)
        self.ram = AXI4RAM(mem_bytes)
        self.csrs = CSRBlock(BENCH_MAP, addr_width=12)
        super().__init__({"rx": In(1, init=1), "tx": Out(1, init=1)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.bridge = br = self.bridge
        m.submodules.ram = self.ram
        m.submodules.csrs = csrs = self.csrs
        wiring.connect(m, br.mem, self.ram.bus)
        wiring.connect(m, br.csr, csrs.bus)
        m.d.comb += [br.rx.eq(self.rx), self.tx.eq(br.tx), br.irq.eq(csrs.ctrl_irq),
                     csrs.ident_value.eq(ID_VALUE)]
        return m


@pytest.mark.cocotb
def test_bridge_verilator(seed):
    div, mem, tmo, fifo = 8, 4096, 4, 16
    run_cocotb(BridgeBench(div, mem, tmo, fifo), name="uart_bridge_bench",
               test_module="verif.cocotb.uart_bridge_tb", test_id="uart_bridge", seed=seed,
               extra_env={"DIV": div, "MEM": mem, "TIMEOUT_BYTES": tmo, "FIFO": fifo})
