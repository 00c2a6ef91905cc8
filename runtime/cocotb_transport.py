"""The register and memory transport of a simulated accelerator: cocotb + cocotbext-axi.

:class:`CocotbTransport` lets :class:`runtime.driver.Accelerator` drive the RTL top
(:class:`hdl.accelerator.Accelerator`) in a cocotb testbench exactly as it drives the golden
model: CSR reads and writes go over the top's AXI4-Lite port through cocotbext-axi's
``AxiLiteMaster`` (they take simulated time); DRAM loads and reads go straight into the
``AxiRam`` that serves the top's AXI4 port (a backdoor, as a host loads DRAM before a job).
Import it only inside a cocotb test (it needs a running simulator).
"""

from __future__ import annotations

from .transport import Transport, TransportError, _check_u

__all__ = ["CocotbTransport"]


class CocotbTransport(Transport):
    """Registers through an ``AxiLiteMaster``, DRAM through an ``AxiRam`` backdoor.

    Parameters
    ----------
    axil : cocotbext.axi.AxiLiteMaster
        Connected to the top's ``csr`` port.
    ram : cocotbext.axi.AxiRam
        Connected to the top's ``mem`` port.
    size : int
        Bytes of DRAM the host may reach (``read_mem`` / ``write_mem`` beyond raise).
    poll_cycles : int
        Clock cycles :meth:`pause` lets pass between two status polls (0: poll back to back).
        Polling costs Python time on every AXI4-Lite transaction; a job's end is seen up to
        ``poll_cycles`` late (in ``cycles``, the hardware's own counter, not at all).
    """

    def __init__(self, axil, ram, size: int, poll_cycles: int = 64):
        _check_u("DRAM size", size, 32)
        if isinstance(poll_cycles, bool) or not isinstance(poll_cycles, int) or poll_cycles < 0:
            raise ValueError(f"poll_cycles must be a non-negative integer, not {poll_cycles!r}")
        self.axil = axil
        self.ram = ram
        self.size = size
        self.poll_cycles = poll_cycles

    async def pause(self) -> None:
        if self.poll_cycles:
            from cocotb.triggers import ClockCycles

            await ClockCycles(self.axil.write_if.clock, self.poll_cycles)

    async def read32(self, addr: int) -> int:
        _check_u("CSR address", addr, 32)
        resp = await self.axil.read(addr, 4)
        if int(resp.resp) != 0:
            raise TransportError(f"CSR read at {addr:#x} answered {resp.resp!r}")
        return int.from_bytes(resp.data, "little")

    async def write32(self, addr: int, value: int) -> None:
        _check_u("CSR address", addr, 32)
        _check_u("CSR value", value, 32)
        resp = await self.axil.write(addr, value.to_bytes(4, "little"))
        if int(resp.resp) != 0:
            raise TransportError(f"CSR write at {addr:#x} answered {resp.resp!r}")

    def _span(self, addr, n):
        if isinstance(addr, bool) or not isinstance(addr, int) or addr < 0 \
                or addr + n > self.size:
            raise TransportError(f"DRAM access [{addr!r}, +{n}) is outside the {self.size:#x} "
                                 f"bytes of memory")

    async def read_mem(self, addr: int, n: int) -> bytes:
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"Read length must be a non-negative integer, not {n!r}")
        self._span(addr, n)
        return bytes(self.ram.read(addr, n))

    async def write_mem(self, addr: int, data) -> None:
        data = bytes(data)
        self._span(addr, len(data))
        self.ram.write(addr, data)
