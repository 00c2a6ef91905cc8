"""The accelerator top in a cocotb bench, side by side with the golden job executor.

:class:`System` connects cocotbext-axi's ``AxiRam`` (with fault ranges and random pacing,
:class:`verif.cocotb.axi_mem.FaultyAxiRam`) to the top's ``mem`` port and an
``AxiLiteMaster`` to its ``csr`` port, and wraps both in the host driver
(:class:`runtime.driver.Accelerator` over :class:`runtime.cocotb_transport.CocotbTransport`).
A second driver runs the same jobs on :class:`runtime.transport.GoldenTransport`, and
:meth:`System.run_both` checks after every job that the two agree: status, error index,
descriptors done, every counter the golden model defines, and the whole DRAM image byte for
byte.
"""

from __future__ import annotations

import logging
import time

import cocotb
from cocotb.triggers import ClockCycles, RisingEdge
from cocotbext.axi import AxiLiteBus, AxiLiteMaster

from runtime.cocotb_transport import CocotbTransport
from runtime.driver import Accelerator
from runtime.regs import HW_ONLY, JOB_REGS
from runtime.transport import GoldenTransport
from verif.cocotb.axi_mem import FaultyAxiRam
from verif.cocotb.stream_bfm import reset, start_clock

__all__ = ["System", "COUNTERS"]

#: registers both models define after a job
COUNTERS = tuple(r.name for r in JOB_REGS
                 if r.offset >= JOB_REGS["macs_done_lo"].offset and r.name not in HW_ONLY)


class System:
    """The RTL top and the golden executor on equal DRAM images.

    Parameters
    ----------
    dut : cocotb handle of the Accelerator top
    cfg : EngineConfig
    dram_size : int
        Bytes of DRAM (a multiple of 4096).
    seed : int
        For the memory's random pacing.
    """

    def __init__(self, dut, cfg, dram_size: int, seed: int = 1):
        self.dut = dut
        self.cfg = cfg
        self.size = dram_size
        start_clock(dut)
        self.ram = FaultyAxiRam(dut, "mem_", size=dram_size)
        self.axil = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "csr_"), dut.clk, dut.rst)
        for log in (self.axil.write_if.log, self.axil.read_if.log, self.ram.write_if.log,
                    self.ram.read_if.log):
            log.setLevel(logging.WARNING)  # a line per transaction costs time and log
        self.rtl = Accelerator(CocotbTransport(self.axil, self.ram, dram_size))
        self.gold_tr = GoldenTransport(cfg, dram_size)
        self.gold = Accelerator(self.gold_tr)
        self.seed = seed
        self.jobs = []  # (name, JobStatus, cycles) of every job run

    async def start(self):
        await reset(self.dut)
        await ClockCycles(self.dut.clk, 2)
        for acc in (self.rtl, self.gold):
            await acc.init(self.size)

    def set_pacing(self, prob: float):
        """Random stalls on every AXI channel of the memory with probability ``prob``."""
        self.ram.set_pacing(prob, self.seed)

    def set_faults(self, ranges):
        """Bus-error ranges ``[(lo, hi), ...]`` for both models (``[]``: none)."""
        self.ram.faults = list(ranges)
        self.gold_tr.faults = list(ranges)

    async def load(self, writes):
        for acc in (self.rtl, self.gold):
            await acc.load(writes)

    def poke(self, addr: int, data: bytes):
        """Change DRAM in both models (e.g. corrupt a stream)."""
        self.ram.write(addr, bytes(data))
        self.gold_tr.dram[addr:addr + len(data)] = bytes(data)

    def rtl_image(self) -> bytes:
        return bytes(self.ram.read(0, self.size))

    async def counters(self, acc) -> dict:
        return {name: (await acc.read_reg(name))["count"] for name in COUNTERS}

    async def run_both(self, name: str, desc_base: int, count: int, *, compare_dram=True):
        """Run one job on both models and check that they agree (module docstring).

        With ``compare_dram=False`` (a bus error on a write, where the hardware writes the
        parts of its output regions that do not fail and the golden model stops at the first
        failing write) the golden image is set to the hardware's afterwards.
        Returns the :class:`runtime.driver.JobStatus`.
        """
        job = _Job(desc_base, count)
        t0 = cocotb.utils.get_sim_time("ns")
        w0 = time.perf_counter()
        st = await self.rtl.run(job, check=False)
        cycles = (await self.rtl.read_reg("cycles"))["count"]
        w1 = time.perf_counter()
        gst = await self.gold.run(job, check=False)
        w2 = time.perf_counter()
        self.dut._log.info(f"{name}: RTL {cycles} cycles in {w1 - w0:.1f} s, golden "
                           f"{w2 - w1:.1f} s")
        detail = self.gold_tr.jobs[-1].detail
        assert st == gst, f"{name}: RTL ended {st}, golden {gst} ({detail})"
        if compare_dram:
            img, gimg = self.rtl_image(), bytes(self.gold_tr.dram)
            if img != gimg:
                diff = [i for i in range(self.size) if img[i] != gimg[i]]
                raise AssertionError(f"{name}: {len(diff)} DRAM bytes differ, first at "
                                     f"{diff[0]:#x} (RTL {img[diff[0]]:#04x}, golden "
                                     f"{gimg[diff[0]]:#04x})")
            if st.ok:
                got, want = await self.counters(self.rtl), await self.counters(self.gold)
                assert got == want, f"{name}: counters RTL {got}, golden {want}"
        else:
            self.gold_tr.dram[:] = self.rtl_image()
        self.jobs.append((name, st, cycles, cocotb.utils.get_sim_time("ns") - t0))
        return st

    async def wait_idle(self, limit: int = 1_000_000):
        for _ in range(limit):
            if not (await self.rtl.read_reg("status"))["busy"]:
                return
            await RisingEdge(self.dut.clk)
        raise AssertionError("the accelerator stayed busy")


class _Job:
    def __init__(self, desc_base, count):
        self.desc_base, self.count = desc_base, count
