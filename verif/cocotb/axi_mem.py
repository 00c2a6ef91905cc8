"""DRAM models for the benches: cocotbext-axi's AxiRam plus fault injection and pacing."""

import random

from cocotbext.axi import AxiBus, AxiRam

__all__ = ["FaultyAxiRam"]


def _pauses(rng, prob):
    while True:
        yield rng.random() < prob


class FaultyAxiRam(AxiRam):
    """An :class:`AxiRam` of ``size`` bytes that answers ``SLVERR`` outside ``[0, limit)``.

    AxiRam itself wraps addresses modulo its size; here an access at or above ``limit`` fails
    (the burst still completes, with ``SLVERR`` on the failing beats / in ``BRESP``), which is
    how the benches inject bus errors. ``faults`` (a list of byte ranges ``(lo, hi)``, which
    tests may change at any time) fails the accesses that touch them in the same way.
    """

    def __init__(self, dut, prefix, size, limit=None, **kwargs):
        super().__init__(AxiBus.from_prefix(dut, prefix), dut.clk, dut.rst, size=size, **kwargs)
        self.limit = size if limit is None else limit
        self.faults = []
        for iface in (self.read_if, self.write_if):
            self._guard(iface)

    def _guard(self, iface):
        if hasattr(iface, "_read"):
            inner_read = iface._read

            async def _read(address, length):
                self._check(address, length)
                return await inner_read(address, length)
            iface._read = _read
        if hasattr(iface, "_write"):
            inner_write = iface._write

            async def _write(address, data):
                self._check(address, len(data))
                return await inner_write(address, data)
            iface._write = _write

    def _check(self, address, length):
        if address + length > self.limit:
            raise ValueError(f"access at {address:#x} beyond {self.limit:#x}")
        for lo, hi in self.faults:
            if address < hi and lo < address + length:
                raise ValueError(f"access at {address:#x} touches the fault [{lo:#x}, {hi:#x})")

    def set_pacing(self, prob, seed=1):
        """Random pauses with probability ``prob`` on all five channels (0 turns them off)."""
        rng = random.Random(seed)
        for ch in (self.write_if.aw_channel, self.write_if.w_channel, self.write_if.b_channel,
                   self.read_if.ar_channel, self.read_if.r_channel):
            if prob:
                ch.set_pause_generator(_pauses(rng, prob))
            else:
                ch.clear_pause_generator()
