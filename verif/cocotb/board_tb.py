"""cocotb bench of a board top's logic (fpga.boards.BoardSystem) driven through its UART.

The host is the real host code: :class:`runtime.driver.Accelerator` over
:class:`runtime.serial_transport.SerialTransport`, whose serial port is cocotbext-uart's
``UartSource`` (to the board's ``rx``) and ``UartSink`` (from ``tx``). SerialTransport is a
blocking API (it calls ``port.read`` / ``port.write``); it runs in a cocotb ``bridge`` thread
and the port's methods ``resume`` into the simulator (:class:`UartPort`). So the bytes on the
simulated line are exactly the bytes a PC sends to an iCEBreaker or ULX3S.

The same steps run on :class:`runtime.transport.GoldenTransport` (``golden.jobs.execute``) and
everything the host sees must agree bit for bit: the logits, the weight gradients, the
statistics records, every job counter, the job status of an error case, and the irq flag of
the bridge's status command.

Environment: ``CONFIG``, ``DIV`` (clock cycles per UART bit), ``MEM`` (bytes of memory),
``SIZES`` (MLP layer sizes), ``BATCH``, ``SEED``.
"""

from __future__ import annotations

import os

import cocotb
import numpy as np
from cocotb.triggers import ClockCycles
from cocotbext.uart import UartSink, UartSource

from golden.jobs import ErrorCode
from hdl.config import get_config
from hdl.descriptor import DESC_BYTES, Op, pack
from runtime.driver import Accelerator, train_step
from runtime.image import MLPStep
from runtime.serial_transport import SerialTransport
from runtime.transport import GoldenTransport, Transport
from verif.cocotb.stream_bfm import reset, start_clock
from verif.cocotb.system import COUNTERS

try:  # cocotb 2: the bridge/resume pair (formerly external/function)
    from cocotb import bridge, resume
except ImportError:  # pragma: no cover - exported lazily in some versions
    from cocotb._bridge import bridge, resume

CFG = get_config(os.environ.get("CONFIG", "tiny"))
DIV = int(os.environ.get("DIV", "8"))
MEM = int(os.environ.get("MEM", "16384"))
SIZES = tuple(int(v) for v in os.environ.get("SIZES", "16,16,10").split(","))
BATCH = int(os.environ.get("BATCH", "16"))
SEED = int(os.environ.get("SEED", "1"))
CLK_NS = 10  # verif.cocotb.stream_bfm.start_clock
BIT_NS = CLK_NS * DIV


class UartPort:
    """A pyserial-like port (``read``, ``write``, ``in_waiting``, ``reset_input_buffer``) on
    cocotbext-uart, for a :class:`SerialTransport` running in a ``bridge`` thread.

    ``read(n)`` returns once ``n`` bytes have arrived or when no byte has come for
    ``timeout_bits`` bit times (simulated), with what did arrive, as pyserial does on its
    timeout.
    """

    def __init__(self, dut, timeout_bits: int):
        baud = 1e9 / BIT_NS
        self.src = UartSource(dut.rx, baud=baud)
        self.sink = UartSink(dut.tx, baud=baud)
        self.timeout_ns = timeout_bits * BIT_NS
        self.bytes_out = 0
        self.bytes_in = 0

    @property
    def in_waiting(self) -> int:
        return self.sink.count()

    def reset_input_buffer(self):
        self.sink.clear()

    def write(self, data):
        resume(self._write)(bytes(data))
        return len(data)

    def read(self, n: int) -> bytes:
        return resume(self._read)(n)

    async def _write(self, data):
        await self.src.write(data)
        await self.src.wait()
        self.bytes_out += len(data)

    async def _read(self, n):
        out = bytearray()
        while len(out) < n:
            if self.sink.empty():
                await self.sink.wait(self.timeout_ns, "ns")  # clears its event first
                if self.sink.empty():
                    break  # timed out
                continue
            out += self.sink.read_nowait(min(n - len(out), self.sink.count()))
        self.bytes_in += len(out)
        return bytes(out)


class SimSerialTransport(Transport):
    """The host's :class:`SerialTransport` (unchanged) called from cocotb coroutines."""

    def __init__(self, port: UartPort):
        self.port = port
        self.serial = SerialTransport(port, chunk=1024)

    @staticmethod
    def _blocking(coro_fn, *args):
        coro = coro_fn(*args)  # SerialTransport's coroutines never suspend: run to the end
        try:
            coro.send(None)
        except StopIteration as stop:
            return stop.value
        raise RuntimeError("SerialTransport coroutine suspended")

    async def _call(self, fn, *args):
        return await bridge(self._blocking)(fn, *args)

    async def read32(self, addr):
        return await self._call(self.serial.read32, addr)

    async def write32(self, addr, value):
        return await self._call(self.serial.write32, addr, value)

    async def read_mem(self, addr, n):
        return await self._call(self.serial.read_mem, addr, n)

    async def write_mem(self, addr, data):
        return await self._call(self.serial.write_mem, addr, data)

    async def irq(self) -> bool:
        return await bridge(self.serial.irq)()

    async def ping(self):
        return await bridge(self.serial.ping)()


async def counters(acc) -> dict:
    return {name: (await acc.read_reg(name))["count"] for name in COUNTERS}


def make_problem(rng):
    weights = [(rng.standard_normal((co, k)) * np.sqrt(2.0 / k)).astype(np.float32)
               for k, co in zip(SIZES[:-1], SIZES[1:], strict=True)]
    x = rng.standard_normal((BATCH, SIZES[0])).astype(np.float32)
    labels = rng.integers(0, SIZES[-1], BATCH)
    return weights, x, labels


@cocotb.test()
async def train_step_over_uart(dut):
    """Ping, an error job, one MLP training step and the irq flag, all through the UART."""
    start_clock(dut)
    dut.rx.value = 1
    await reset(dut)
    await ClockCycles(dut.clk, 10)
    port = UartPort(dut, timeout_bits=20_000)
    tr = SimSerialTransport(port)
    rtl = Accelerator(tr)
    gold_tr = GoldenTransport(CFG, MEM)
    gold = Accelerator(gold_tr)
    step = MLPStep(SIZES, BATCH, CFG)
    assert step.dram_size <= MEM - 4096, (step.dram_size, MEM)
    t0 = cocotb.utils.get_sim_time("ns")

    await tr.ping()
    for acc in (rtl, gold):
        await acc.init(MEM)
        await acc.write_reg("irq_enable", enable=1)
    assert not await tr.irq()

    # an error job: a descriptor with an unknown op after the step's image
    bad = MEM - 4096
    desc = pack(op=max(Op) + 1)
    for acc in (rtl, gold):
        await acc.load([(bad, bytes(desc))])
    st_rtl = await rtl.run(_Job(bad, 1), check=False)
    st_gold = await gold.run(_Job(bad, 1), check=False)
    assert st_rtl == st_gold, (st_rtl, st_gold)
    assert st_rtl.code == ErrorCode.BAD_OP and st_rtl.index == 0
    assert await tr.irq()  # status.error with irq_enable
    assert len(desc) == DESC_BYTES

    # one training step, as a board user runs it
    rng = np.random.default_rng(SEED)
    weights, x, labels = make_problem(rng)
    res = await train_step(rtl, step, weights, x, labels)
    want = await train_step(gold, step, weights, x, labels)
    assert np.array_equal(res.logits, want.logits), "logits differ"
    for layer, (g, w) in enumerate(zip(res.grads, want.grads, strict=True)):
        assert np.array_equal(g, w), f"dW{layer} differs"
    assert res.records == want.records, "statistics records differ"
    assert res.loss == want.loss and res.correct == want.correct
    got, exp = await counters(rtl), await counters(gold)
    assert got == exp, f"counters: RTL {got}, golden {exp}"
    assert got["macs_done_lo"] > 0
    assert await tr.irq()  # status.done with irq_enable
    await rtl.write_reg("irq_enable", enable=0)
    assert not await tr.irq()
    flags = await bridge(tr.serial.flags)()
    assert flags == 0, f"receive errors on the line: {flags:#x}"

    us = (cocotb.utils.get_sim_time("ns") - t0) / 1000
    dut._log.info("loss %.4f, %d/%d correct; %d bytes to the board, %d back; %.0f us "
                  "simulated (%d cycles)", res.loss, res.correct, BATCH, port.bytes_out,
                  port.bytes_in, us, us * 1000 / CLK_NS)


class _Job:
    def __init__(self, desc_base, count):
        self.desc_base, self.count = desc_base, count
