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
    how the benches inject bus errors.
    """

    def __init__(self, dut, prefix, size, limit=None, **kwargs):
        super().__init__(AxiBus.from_prefix(dut, prefix), dut.clk, dut.rst, size=size, **kwargs)
        self.limit = size if limit is None else limit
        for iface in (self.read_if, self.write_if):
            self._guard(iface)

    def _guard(self, iface):
        if hasattr(iface, "_read"):
            inner_read = iface._read

            async def _read(address, length):
                if address + length > self.limit:
                    raise ValueError(f"read at {address:#x} beyond {self.limit:#x}")
                return await inner_read(address, length)
            iface._read = _read
        if hasattr(iface, "_write"):
            inner_write = iface._write

            async def _write(address, data):
                if address + len(data) > self.limit:
                    raise ValueError(f"write at {address:#x} beyond {self.limit:#x}")
                return await inner_write(address, data)
            iface._write = _write

    def set_pacing(self, prob, seed=1):
        """Random pauses with probability ``prob`` on all five channels (0 turns them off)."""
        rng = random.Random(seed)
        for ch in (self.write_if.aw_channel, self.write_if.w_channel, self.write_if.b_channel,
                   self.read_if.ar_channel, self.read_if.r_channel):
            if prob:
                ch.set_pause_generator(_pauses(rng, prob))
            else:
                ch.clear_pause_generator()
