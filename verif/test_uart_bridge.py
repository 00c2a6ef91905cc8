# amaranth: UnusedElaboratable=no
"""UART (hdl.uart), UART host bridge (hdl.uart_bridge) and the host's SerialTransport.

* UART transmitter and receiver in the Amaranth simulator against bit-level Python models
  (bit timing, mid-bit sampling with a baud mismatch, glitches, framing errors, overrun);
* the bridge with an AXI4RAM and a CSRBlock under Verilator, driven by cocotbext-uart
  (verif/cocotb/uart_bridge_tb.py);
* runtime.serial_transport.SerialTransport against a Python model of the protocol written
  here from the protocol table (a fake serial port).
"""

import asyncio
import random
import struct

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


# ------------------------------------------------- SerialTransport against a protocol model

class BridgeModel:
    """The bridge protocol as the table in docs/architecture.md states it, byte by byte.

    ``csrs`` maps addresses to values (others answer SLVERR); ``mem`` is ``size`` bytes (beats
    at or beyond it answer SLVERR, reads return 0 there). ``silence()`` is the bridge's timeout:
    a partial command is dropped with the timeout status.
    """

    HDR = {0x00: 0, 0x01: 4, 0x02: 8, 0x03: 6, 0x04: 6, 0x05: 0}

    def __init__(self, size, csrs):
        self.mem = bytearray(size)
        self.csrs = dict(csrs)
        self.irq = 0
        self.out = bytearray()
        self.buf = bytearray()  # the command being received
        self.commands = []

    def _need(self):
        """Bytes the pending command needs in total (None: unknown yet)."""
        if not self.buf:
            return None
        c = self.buf[0]
        if c not in self.HDR:
            return 1
        n = 1 + self.HDR[c]
        if c == 0x04 and len(self.buf) >= 7:
            n += struct.unpack_from("<H", self.buf, 5)[0]
        return n

    def feed(self, data):
        for b in data:
            self.buf.append(b)
            if len(self.buf) == self._need() or (self.buf[0] == 0x04 and len(self.buf) == 7
                                                  and self._need() == 7):
                self._run(bytes(self.buf))
                self.buf.clear()

    def silence(self):
        if self.buf:
            self.buf.clear()
            self.out.append(0x12)

    def _beat(self, a):
        return a + 8 <= len(self.mem)

    def _run(self, cmd):
        c = cmd[0]
        self.commands.append(c)
        if c not in self.HDR:
            self.out.append(0x10)
        elif c == 0x00:
            self.out += b"\xa5\x00"
        elif c == 0x05:
            self.out += bytes([self.irq, 0])
        elif c in (0x01, 0x02):
            addr = struct.unpack_from("<I", cmd, 1)[0]
            if addr % 4 or addr >= 4096:
                self.out += (bytes(4) if c == 0x01 else b"") + b"\x11"
            elif addr not in self.csrs:
                self.out += (bytes(4) if c == 0x01 else b"") + b"\x02"
            elif c == 0x01:
                self.out += struct.pack("<IB", self.csrs[addr], 0)
            else:
                self.csrs[addr] = struct.unpack_from("<I", cmd, 5)[0]
                self.out.append(0)
        else:
            addr, n = struct.unpack_from("<IH", cmd, 1)
            bad = addr % 8 or n % 8 or addr + n > 1 << 32
            st = 0x11 if bad else 0
            if c == 0x03:
                data = bytearray(n)
                for a in range(addr, addr + n, 8):
                    if not bad:
                        if self._beat(a):
                            data[a - addr:a - addr + 8] = self.mem[a:a + 8]
                        elif st == 0:
                            st = 0x02
                self.out += data + bytes([st])
            else:
                payload = cmd[7:]
                if not bad:
                    for a in range(addr, addr + n, 8):
                        if self._beat(a):
                            self.mem[a:a + 8] = payload[a - addr:a - addr + 8]
                        elif st == 0:
                            st = 0x02
                self.out.append(st)


class FakeSerial:
    """A serial port wired to a BridgeModel. ``drop_tx`` / ``drop_rx``: indices (counted over
    the whole session) of bytes lost on the way to / from the bridge."""

    def __init__(self, model, drop_tx=(), drop_rx=()):
        self.model = model
        self.drop_tx, self.drop_rx = set(drop_tx), set(drop_rx)
        self.n_tx = self.n_rx = 0
        self.resets = 0

    def write(self, data):
        for b in bytes(data):
            if self.n_tx not in self.drop_tx:
                self.model.feed([b])
            self.n_tx += 1
        return len(data)

    def read(self, n):
        if len(self.model.out) < n:
            self.model.silence()  # the host waits: the line is quiet, the bridge times out
        out = bytearray()
        while self.model.out and len(out) < n:
            b = self.model.out.pop(0)
            if self.n_rx not in self.drop_rx:
                out.append(b)
            self.n_rx += 1
        return bytes(out)

    @property
    def in_waiting(self):
        return len(self.model.out)

    def reset_input_buffer(self):
        self.resets += 1
        self.model.out.clear()


def _run(coro):
    return asyncio.run(coro)


def test_serial_transport_csr_and_memory(seed):
    from runtime.serial_transport import SerialTransport
    from runtime.transport import TransportError

    rng = random.Random(seed)
    model = BridgeModel(1024, {0x0: 7, 0x4: 0, 0x10: 0xFFFF_FFFF})
    t = SerialTransport(FakeSerial(model), chunk=64, resync_wait=0)
    t.ping()
    assert _run(t.read32(0x0)) == 7
    _run(t.write32(0x4, 0x12345678))
    assert model.csrs[0x4] == 0x12345678 and _run(t.read32(0x4)) == 0x12345678
    with pytest.raises(TransportError, match=r"^CSR read at 0x8: bridge status SLVERR$"):
        _run(t.read32(0x8))
    with pytest.raises(TransportError, match=r"^CSR write at 0xc: bridge status SLVERR$"):
        _run(t.write32(0xC, 1))
    with pytest.raises(TransportError, match=r"is not a multiple of 4 below 0x1000"):
        _run(t.read32(0x2))
    with pytest.raises(TransportError, match=r"is not a multiple of 4 below 0x1000"):
        _run(t.write32(0x1000, 1))
    ref = bytearray(1024)
    for _ in range(40):  # any address and length, across chunk boundaries
        n = rng.randrange(0, 200)
        a = rng.randrange(0, 1024 - n + 1)
        data = rng.randbytes(n)
        _run(t.write_mem(a, data))
        ref[a:a + n] = data
        assert model.mem == ref
        n = rng.randrange(0, 200)
        a = rng.randrange(0, 1024 - n + 1)
        assert _run(t.read_mem(a, n)) == bytes(ref[a:a + n])
    assert not model.out
    with pytest.raises(TransportError, match=r"^memory read of 16 bytes at 0x3f8: bridge status "
                                             r"SLVERR$"):
        _run(t.read_mem(1020, 8))
    with pytest.raises(TransportError, match=r"bridge status SLVERR$"):
        _run(t.write_mem(1016, bytes(16)))
    assert model.mem[1016:1024] == bytes(8)  # the beat inside was written
    with pytest.raises(TransportError, match=r"outside the 32-bit address space"):
        _run(t.read_mem(0xFFFF_FFF0, 32))
    model.irq = 1
    assert t.irq() and t.flags() == 1
    assert model.commands.count(0x10) == 0 and model.buf == b""


def test_serial_transport_resynchronizes():
    """A byte lost on the way to the bridge ends in the bridge's timeout status, a byte lost
    on the way back in a host timeout; both raise TransportError, and the next access works
    after a resynchronization (drain, wait, ping)."""
    from runtime.serial_transport import SerialTransport
    from runtime.transport import TransportError

    model = BridgeModel(256, {0x0: 0xAB})
    # byte 3 (inside the CSR read's address) is lost
    port = FakeSerial(model, drop_tx={3})
    t = SerialTransport(port, resync_wait=0)
    with pytest.raises(TransportError, match=r"^CSR read at 0x0: timed out after 1 of 5 response "
                                             r"bytes \(the bridge answered TIMEOUT\)$"):
        _run(t.read32(0x0))
    assert _run(t.read32(0x0)) == 0xAB
    assert port.resets >= 1 and model.commands[-2:] == [0x00, 0x01]  # a ping, then the read
    # a response byte lost: the host sees too few bytes
    port.drop_rx = {port.n_rx + 2}
    with pytest.raises(TransportError, match=r"^memory read of 8 bytes at 0x0: timed out after "
                                             r"8 of 9 response bytes$"):
        _run(t.read_mem(0, 8))
    _run(t.write_mem(8, b"12345678"))
    assert _run(t.read_mem(8, 8)) == b"12345678"
    # garbage on the line: an unknown command byte answers BAD_COMMAND, which is waiting when
    # the next command starts: the transport resynchronizes first
    port.write(b"\x77")
    resets = port.resets
    assert _run(t.read32(0x0)) == 0xAB
    assert port.resets > resets and model.commands[-3:] == [0x77, 0x00, 0x01]


def test_serial_transport_parameters():
    from runtime.serial_transport import SerialTransport

    with pytest.raises(ValueError, match=r"^Chunk must be a multiple of 8 from 8 to 65528, "
                                         r"not 12$"):
        SerialTransport(FakeSerial(BridgeModel(8, {})), chunk=12)
    with pytest.raises(TypeError, match=r"^Port must be a serial port name or an object with "
                                        r"read and write"):
        SerialTransport(42)
