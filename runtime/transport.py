"""Register and memory transports: how the driver reaches the accelerator.

:class:`Transport` is the whole API the driver (:mod:`runtime.driver`) uses; every transport
implements these four coroutines and nothing else:

``await read32(addr) -> int``
    One 32-bit read of the CSR space at byte address ``addr`` (a multiple of 4).
``await write32(addr, value)``
    One 32-bit write of the CSR space (``0 <= value < 2**32``, all byte lanes).
``await read_mem(addr, n) -> bytes``
    ``n`` bytes of the accelerator's DRAM from ``addr``.
``await write_mem(addr, data)``
    Store ``data`` in the accelerator's DRAM at ``addr``.

CSR and DRAM are separate address spaces (an AXI4-Lite subordinate and the AXI4 memory the
accelerator masters). A bus error (SLVERR/DECERR, an address outside the space) raises
:class:`TransportError`; a transport never returns made-up data.

Implementations:

* :class:`GoldenTransport` (here): a ``bytearray`` DRAM and a model of the job registers
  (:data:`runtime.regs.JOB_REGS`) that runs :func:`golden.jobs.execute` when started, so the
  driver and the runtime are testable without RTL;
* to come: a cocotb transport (an AXI4-Lite manager on the CSR port, a
  ``cocotbext.axi.AxiRam`` as the DRAM: ``read_mem`` / ``write_mem`` access the RAM model
  directly) and a UART bridge to an FPGA board. Both must keep the semantics above (no caching,
  accesses in program order).
"""

from __future__ import annotations

import abc

from golden.jobs import execute

from .regs import JOB_REGS

__all__ = ["Transport", "TransportError", "GoldenTransport"]


class TransportError(Exception):
    """A bus access failed (the transport's equivalent of SLVERR/DECERR)."""


class Transport(abc.ABC):
    """Register and memory access (module docstring)."""

    @abc.abstractmethod
    async def read32(self, addr: int) -> int:
        """One 32-bit CSR read."""

    @abc.abstractmethod
    async def write32(self, addr: int, value: int) -> None:
        """One 32-bit CSR write."""

    @abc.abstractmethod
    async def read_mem(self, addr: int, n: int) -> bytes:
        """``n`` bytes of DRAM from ``addr``."""

    @abc.abstractmethod
    async def write_mem(self, addr: int, data) -> None:
        """Store ``data`` in DRAM at ``addr``."""

    async def pause(self) -> None:
        """Called by the driver between two status polls of a running job (nothing by
        default; a simulated transport lets simulated time pass)."""
        return None


def _check_u(name, v, bits):
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < (1 << bits):
        raise ValueError(f"{name} must be an integer in [0, 2**{bits}), not {v!r}")
    return v


class GoldenTransport(Transport):
    """The accelerator as the golden model: DRAM in a ``bytearray``, jobs by
    :func:`golden.jobs.execute`.

    A ``start`` makes the job pending with ``status.busy`` set; it runs when ``status`` has
    been read ``latency`` times (so a driver sees ``busy`` at least ``latency`` times and a
    second ``start`` can meet a busy accelerator). Registers behave as :data:`JOB_REGS`
    declares (``rw`` stored, ``ro`` driven here, ``w1p`` acts, ``w1c`` cleared by a 1).

    Parameters
    ----------
    cfg : EngineConfig
        The engine configuration whose limits the jobs obey.
    dram_size : int
        Bytes of DRAM (also what ``read_mem`` and ``write_mem`` may reach).
    latency : int
        Status reads a job stays busy for (at least 1).
    faults : iterable of (lo, hi)
        DRAM byte ranges where the accelerator's own accesses fail (``BUS_ERROR``).

    Attributes
    ----------
    dram : bytearray
    jobs : list of golden.jobs.JobResult
        Every job run, in order (for tests).
    """

    def __init__(self, cfg, dram_size: int, latency: int = 1, faults=()):
        _check_u("DRAM size", dram_size, 32)
        if isinstance(latency, bool) or not isinstance(latency, int) or latency < 1:
            raise ValueError(f"latency must be a positive integer, not {latency!r}")
        self.cfg = cfg
        self.dram = bytearray(dram_size)
        self.latency = latency
        self.faults = list(faults)
        self.jobs = []
        self._regs = {r.name: r.reset for r in JOB_REGS}
        self._set("config0", max_m=cfg.max_m, max_n=cfg.max_n)
        self._set("config1", max_kblocks=cfg.max_k // 16, rows=getattr(cfg, "rows", 0),
                  lanes=getattr(cfg, "lanes", 0))
        self._pending = None  # (desc_base, count) of a started job
        self._countdown = 0

    # ---- CSR space
    def _reg(self, addr):
        if not isinstance(addr, int) or addr % 4:
            raise TransportError(f"CSR address {addr!r} is not a multiple of 4")
        reg = JOB_REGS.at(addr)
        if reg is None:
            raise TransportError(f"No CSR at {addr:#x} (SLVERR)")
        return reg

    def _get(self, name, fld):
        return JOB_REGS[name].unpack(self._regs[name])[fld]

    def _set(self, name, **fields):
        reg = JOB_REGS[name]
        vals = reg.unpack(self._regs[name])
        vals.update(fields)
        self._regs[name] = reg.pack(**vals)

    async def read32(self, addr: int) -> int:
        reg = self._reg(addr)
        if reg.name == "status" and self._pending is not None:
            self._countdown -= 1
            if self._countdown <= 0:
                value = self._regs["status"]  # this read still sees busy
                self._finish()
                return value
        return self._regs[reg.name]

    async def write32(self, addr: int, value: int) -> None:
        reg = self._reg(addr)
        _check_u("CSR value", value, 32)
        fields = reg.unpack(value)
        old = reg.unpack(self._regs[reg.name])
        for f in reg.fields:
            v = fields[f.name]
            if f.access == "rw":
                old[f.name] = v
            elif f.access == "w1c" and v:
                old[f.name] = 0
        self._regs[reg.name] = reg.pack(**old)
        if reg.name == "ctrl" and fields["start"]:
            self._start()

    def _start(self):
        if self._pending is not None:
            self._set("status", overrun=1)
            return
        self._pending = (self._get("desc_base", "addr"), self._get("desc_count", "count"))
        self._countdown = self.latency
        self._set("status", busy=1)

    def _finish(self):
        base, count = self._pending
        self._pending = None
        size = min(self._get("dram_size", "size"), len(self.dram))
        view = bytearray(self.dram[:size])  # the jobs see DRAM_SIZE bytes
        res = execute(view, base, count, self.cfg, faults=self.faults)
        self.dram[:size] = view
        self.jobs.append(res)
        self._set("err_code", code=int(res.code))
        self._set("err_index", index=res.index)
        self._set("done_count", count=res.completed)
        recs = res.records
        mask = (1 << 32) - 1
        done = sum(r.macs_nonzero for r in recs)
        dense = sum(r.macs_dense for r in recs)
        for name, v in (("macs_done_lo", done & mask), ("macs_done_hi", (done >> 32) & mask),
                        ("macs_dense_lo", dense & mask), ("macs_dense_hi", (dense >> 32) & mask),
                        ("bytes_written", res.bytes_written & mask),
                        ("filt_values", sum(r.values for r in recs) & mask),
                        ("filt_zeros", sum(r.zeros for r in recs) & mask),
                        ("filt_filtered_zeros", sum(r.filtered_zeros for r in recs) & mask)):
            self._set(name, count=v)
        self._set("status", busy=0, done=int(res.ok), error=int(not res.ok))

    # ---- DRAM space
    def _span(self, addr, n):
        if isinstance(addr, bool) or not isinstance(addr, int) or addr < 0 or \
                addr + n > len(self.dram):
            raise TransportError(f"DRAM access [{addr!r}, +{n}) is outside the "
                                 f"{len(self.dram):#x} bytes of memory (DECERR)")

    async def read_mem(self, addr: int, n: int) -> bytes:
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"Read length must be a non-negative integer, not {n!r}")
        self._span(addr, n)
        return bytes(self.dram[addr:addr + n])

    async def write_mem(self, addr: int, data) -> None:
        data = bytes(data)
        self._span(addr, len(data))
        self.dram[addr:addr + len(data)] = data
