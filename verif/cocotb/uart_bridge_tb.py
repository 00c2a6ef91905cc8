"""cocotb testbench: hdl.uart_bridge.UARTBridge + AXI4RAM + CSRBlock, driven through a UART.

cocotbext-uart's UartSource/UartSink play the host. The expected responses are written out
from the protocol table (docs/architecture.md, "Host bridge (UART) and on-chip memory"): byte
values here are literals, not the RTL module's constants.

Environment: ``DIV`` (clock cycles per bit), ``MEM`` (bytes of AXI4RAM), ``TIMEOUT_BYTES``,
``FIFO`` (receive FIFO depth), ``SEED``.
"""

import os
import random
import struct

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge, Timer, with_timeout
from cocotbext.uart import UartSink, UartSource

CLK_NS = 10
DIV = int(os.environ["DIV"])
MEM = int(os.environ["MEM"])
TIMEOUT_BYTES = int(os.environ["TIMEOUT_BYTES"])
FIFO = int(os.environ["FIFO"])
BIT_NS = CLK_NS * DIV
BAUD = 1e9 / BIT_NS

# the small register map of the bench (verif/test_uart_bridge.py BENCH_MAP)
SCRATCH, IDREG, CTRL = 0x0, 0x4, 0x8
ID_VALUE = 0x1234ABCD

OK, SLVERR, BAD_COMMAND, BAD_ARGUMENT, TIMEOUT = 0x00, 0x02, 0x10, 0x11, 0x12


class TB:
    def __init__(self, dut):
        self.dut = dut
        cocotb.start_soon(Clock(dut.clk, CLK_NS, unit="ns").start())
        self.src = UartSource(dut.rx, baud=BAUD)
        self.sink = UartSink(dut.tx, baud=BAUD)
        self.rng = random.Random(int(os.environ.get("SEED", "1")))

    async def reset(self):
        self.dut.rst.value = 1
        await ClockCycles(self.dut.clk, 4)
        self.dut.rst.value = 0
        await ClockCycles(self.dut.clk, 4)

    async def recv(self, n, timeout_bits=None):
        """Exactly ``n`` bytes from the bridge (fails if they do not come in time)."""
        out = bytearray()
        budget = (timeout_bits or (n + 2) * 12 + 200 + 20 * TIMEOUT_BYTES) * BIT_NS

        async def collect():
            while len(out) < n:
                if self.sink.empty():
                    await self.sink.wait()
                out.extend(self.sink.read_nowait(min(n - len(out), self.sink.count())))
        await with_timeout(collect(), budget, "ns")
        return bytes(out)

    async def quiet(self, bits):
        """Nothing more arrives for ``bits`` bit times (returns what did arrive)."""
        got = bytearray()
        while True:
            await Timer(bits * BIT_NS, "ns")
            more = self.sink.read_nowait()
            if not more and not self.sink.active:
                return bytes(got)
            got.extend(more)

    async def cmd(self, data, n):
        await self.src.write(bytes(data))
        await self.src.wait()
        return await self.recv(n)

    async def ping(self):
        assert await self.cmd([0x00], 2) == b"\xa5\x00"

    async def csr_read(self, addr):
        r = await self.cmd(struct.pack("<BI", 0x01, addr), 5)
        return int.from_bytes(r[:4], "little"), r[4]

    async def csr_write(self, addr, value):
        return (await self.cmd(struct.pack("<BII", 0x02, addr, value), 1))[0]

    async def mem_read(self, addr, n):
        r = await self.cmd(struct.pack("<BIH", 0x03, addr, n), n + 1)
        return r[:n], r[n]

    async def mem_write(self, addr, data):
        return (await self.cmd(struct.pack("<BIH", 0x04, addr, len(data)) + bytes(data), 1))[0]

    async def flags(self):
        r = await self.cmd([0x05], 2)
        assert r[1] == OK
        return r[0]


@cocotb.test()
async def csr_access(dut):
    tb = TB(dut)
    await tb.reset()
    await tb.ping()
    assert await tb.csr_read(SCRATCH) == (0xDEADBEEF, OK)  # reset value
    assert await tb.csr_read(IDREG) == (ID_VALUE, OK)
    for _ in range(5):
        v = tb.rng.getrandbits(32)
        assert await tb.csr_write(SCRATCH, v) == OK
        assert await tb.csr_read(SCRATCH) == (v, OK)
    # an unmapped register: the CSR block answers SLVERR, the read returns its data (0)
    assert await tb.csr_read(0x40) == (0, SLVERR)
    assert await tb.csr_write(0x40, 1) == SLVERR
    # arguments the bridge rejects without a bus access: payload zeros
    assert await tb.csr_read(SCRATCH + 2) == (0, BAD_ARGUMENT)
    assert await tb.csr_read(0x1000) == (0, BAD_ARGUMENT)
    assert await tb.csr_write(0x1000 | SCRATCH, 5) == BAD_ARGUMENT
    assert await tb.csr_write(SCRATCH + 1, 5) == BAD_ARGUMENT
    assert await tb.csr_read(SCRATCH) == (v, OK)  # none of them wrote
    # the irq input and the status command
    assert await tb.flags() == 0
    assert await tb.csr_write(CTRL, 1) == OK
    assert await tb.flags() == 0x01
    assert await tb.csr_write(CTRL, 0) == OK
    assert await tb.flags() == 0


@cocotb.test()
async def memory_access(dut):
    tb = TB(dut)
    await tb.reset()
    rng = tb.rng
    model = bytearray(MEM)
    for _ in range(12):
        n = 8 * rng.randrange(0, 17)
        addr = 8 * rng.randrange(0, (MEM - n) // 8 + 1)
        data = rng.randbytes(n)
        assert await tb.mem_write(addr, data) == OK
        model[addr:addr + n] = data
        n = 8 * rng.randrange(0, 17)
        addr = 8 * rng.randrange(0, (MEM - n) // 8 + 1)
        assert await tb.mem_read(addr, n) == (bytes(model[addr:addr + n]), OK)
    assert await tb.mem_read(0, MEM) == (bytes(model), OK)


@cocotb.test()
async def error_statuses_and_resync(dut):
    tb = TB(dut)
    await tb.reset()
    rng = tb.rng
    base = rng.randbytes(64)
    assert await tb.mem_write(0x100, base) == OK
    # bad command: the status byte alone, the next byte is a new command
    for c in (0x06, 0x77, 0xFF):
        assert await tb.cmd([c], 1) == bytes([BAD_COMMAND])
        await tb.ping()
    # unaligned address or length: the write's payload is swallowed, the read returns zeros
    assert await tb.mem_write(0x104, rng.randbytes(16)) == BAD_ARGUMENT
    assert await tb.mem_write(0x100, rng.randbytes(12)) == BAD_ARGUMENT
    assert await tb.mem_read(0x100, 12) == (bytes(12), BAD_ARGUMENT)
    assert await tb.mem_read(0x101, 8) == (bytes(8), BAD_ARGUMENT)
    assert await tb.mem_read(0xFFFF_FFF8, 16) == (bytes(16), BAD_ARGUMENT)  # wraps 2**32
    assert await tb.mem_read(0x100, 64) == (base, OK)  # nothing was written
    assert await tb.mem_read(0x100, 0) == (b"", OK)
    assert await tb.mem_write(0x100, b"") == OK
    # SLVERR beyond the memory: the beats inside still happen
    tail = rng.randbytes(16)
    assert await tb.mem_write(MEM - 8, tail) == SLVERR
    assert await tb.mem_read(MEM - 8, 16) == (tail[:8] + bytes(8), SLVERR)
    assert await tb.mem_read(MEM, 8) == (bytes(8), SLVERR)
    assert await tb.mem_read(MEM - 8, 8) == (tail[:8], OK)
    # timeout in a header, then in a write payload (the complete beat is kept)
    await tb.src.write(struct.pack("<BI", 0x01, SCRATCH)[:3])
    assert await tb.recv(1) == bytes([TIMEOUT])
    await tb.ping()
    part = rng.randbytes(12)
    before, st = await tb.mem_read(0x200, 16)  # (the RAM keeps earlier tests' data)
    assert st == OK
    await tb.src.write(struct.pack("<BIH", 0x04, 0x200, 16) + part)
    assert await tb.recv(1) == bytes([TIMEOUT])
    await tb.ping()
    assert await tb.mem_read(0x200, 16) == (part[:8] + before[8:], OK)

    # a framing error (stop bit 0) is reported once by the status command, then cleared
    await tb.src.wait()
    await ClockCycles(dut.clk, 4 * DIV)
    for bit in [0] + [1, 0] * 4 + [0, 0]:  # start, 0x55, a low stop bit
        dut.rx.value = bit
        await Timer(BIT_NS, "ns")
    dut.rx.value = 1
    await Timer(4 * BIT_NS, "ns")
    assert await tb.flags() == 0x02
    assert await tb.flags() == 0x00

    # garbage (no memory-read command byte, whose response could be 64 KiB long), then the
    # documented resynchronization: drain until quiet, wait out the timeout, ping
    garbage = bytes(b for b in rng.randbytes(200) if b != 0x03)
    await tb.src.write(garbage)
    await tb.src.wait()
    await tb.quiet(10 * TIMEOUT_BYTES + 40)
    await tb.ping()
    assert await tb.csr_write(SCRATCH, 0x600DF00D) == OK
    assert await tb.csr_read(SCRATCH) == (0x600DF00D, OK)

    # receive overrun: pings sent while the bridge streams a long read are partly lost
    await tb.flags()  # clears what the garbage may have set
    await tb.src.write(struct.pack("<BIH", 0x03, 0, 128) + bytes(40))
    resp = await tb.recv(129)
    assert resp[128] == OK
    extra = await tb.quiet(40)
    kept = len(extra) // 2
    assert extra == b"\xa5\x00" * kept and FIFO < kept < 40, (FIFO, extra.hex())
    assert await tb.flags() == 0x04
    await tb.ping()


@cocotb.test()
async def back_to_back_throughput(dut):
    """A long memory read streams without gaps between bytes beyond a few clock cycles."""
    tb = TB(dut)
    await tb.reset()
    n = 256
    data = tb.rng.randbytes(n)
    assert await tb.mem_write(0, data) == OK
    await tb.src.write(struct.pack("<BIH", 0x03, 0, n))
    await tb.src.wait()
    while dut.tx.value == 1:  # first start bit
        await RisingEdge(dut.clk)
    t0 = cocotb.utils.get_sim_time("ns")
    resp = await tb.recv(n + 1)
    assert resp == data + b"\x00"
    # the sink returns a byte at the middle of its stop bit; the whole response took
    elapsed = cocotb.utils.get_sim_time("ns") - t0
    ideal = (n + 1) * 10 * BIT_NS
    assert elapsed < ideal * 1.05, (elapsed, ideal)
