"""The register and memory transport of an FPGA board: the UART host bridge over a serial port.

:class:`SerialTransport` speaks the protocol of :class:`hdl.uart_bridge.UARTBridge` (its module
docstring and docs/architecture.md, "Host bridge (UART) and on-chip memory") over pyserial, so
:class:`runtime.driver.Accelerator` drives a board exactly as it drives the golden model. The
coroutines do blocking I/O (there is nothing else to wait for).

* ``read32`` / ``write32``: one CSR command each (address a multiple of 4, below 4096).
* ``read_mem`` / ``write_mem``: any address and length. The bridge moves 8-byte-aligned
  multiples of 8 bytes, so the span is widened to 8-byte words (a partial word at either end
  of a write is read first and merged) and split into commands of at most ``chunk`` bytes.
* Every response's status byte is checked: a bus error (``SLVERR``/``DECERR``), a rejected
  command, a bridge timeout or a response that does not arrive within ``timeout`` seconds
  raises :class:`~runtime.transport.TransportError` naming the command and the status.
* After a failure that may leave the two sides out of step (a short response, a timeout, an
  unknown command), or when bytes are waiting before a command is sent (``in_waiting``), the
  next command first resynchronizes: discard what is pending, wait ``resync_wait`` seconds
  (longer than the bridge's ``timeout_bytes`` byte times) and ping. The protocol has no
  framing or checksums: a byte corrupted (not lost) on the line can go unnoticed.
"""

from __future__ import annotations

import struct
import time

from hdl.uart_bridge import CSR_ADDR_WIDTH, PING_MAGIC, Cmd, Flag, Status

from .transport import Transport, TransportError, _check_u

__all__ = ["SerialTransport"]

_MAX_LEN = 0xFFF8  # largest multiple of 8 that fits the 16-bit length field


class SerialTransport(Transport):
    """:class:`~runtime.transport.Transport` over the UART bridge (module docstring).

    Parameters
    ----------
    port : str or file-like
        A serial port name (opened with pyserial, 8N1) or any object with ``read(n)`` (which
        returns fewer than ``n`` bytes on a timeout, as pyserial does) and ``write(data)``;
        ``reset_input_buffer()`` and ``flush()`` are used when present.
    baudrate : int
        Bits per second (the board's ``clk / divisor``).
    timeout : float
        Seconds a read may wait (only when ``port`` is a name).
    chunk : int
        Largest memory command, bytes (a multiple of 8, 8 to 65528).
    resync_wait : float
        Seconds of silence before the ping of a resynchronization.
    """

    def __init__(self, port, baudrate: int = 115200, timeout: float = 1.0, *,
                 chunk: int = 4096, resync_wait: float = 0.2):
        if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk % 8 or \
                not 8 <= chunk <= _MAX_LEN:
            raise ValueError(f"Chunk must be a multiple of 8 from 8 to {_MAX_LEN}, not {chunk!r}")
        if isinstance(port, str):
            import serial  # pyserial, only needed for a real port

            self.port = serial.Serial(port, baudrate=baudrate, timeout=timeout)
            self._owned = True
        elif callable(getattr(port, "read", None)) and callable(getattr(port, "write", None)):
            self.port = port
            self._owned = False
        else:
            raise TypeError(f"Port must be a serial port name or an object with read and "
                            f"write, not {port!r}")
        self.chunk = chunk
        self.resync_wait = resync_wait
        self._desync = False

    def close(self):
        """Close the port if this transport opened it."""
        if self._owned:
            self.port.close()

    # ---- protocol
    def _drain(self):
        reset = getattr(self.port, "reset_input_buffer", None)
        if reset is not None:
            reset()
        else:
            while self.port.read(4096):
                pass

    def resync(self):
        """Bring the bridge and the host back in step (module docstring); raises if the bridge
        does not answer the ping."""
        self._drain()
        time.sleep(self.resync_wait)
        self._drain()
        self._desync = False
        self.ping()

    def _xfer(self, what, request: bytes, n_payload: int):
        """Send ``request``; return (payload, status) of the response."""
        if getattr(self.port, "in_waiting", 0):
            self._desync = True  # stale bytes: part of an earlier response, or line noise
        if self._desync:
            self.resync()
        self.port.write(request)
        flush = getattr(self.port, "flush", None)
        if flush is not None:
            flush()
        want = n_payload + 1
        resp = bytearray()
        while len(resp) < want:
            got = self.port.read(want - len(resp))
            if not got:
                self._desync = True
                hint = ""
                if len(resp) == 1 and resp[0] in (Status.TIMEOUT, Status.BAD_COMMAND):
                    hint = f" (the bridge answered {Status(resp[0]).name})"
                raise TransportError(f"{what}: timed out after {len(resp)} of {want} response "
                                     f"bytes{hint}")
            resp += got
        status = resp[-1]
        if status != Status.OK:
            try:
                name = Status(status).name
            except ValueError:
                name = f"unknown status {status:#04x}"
            if status in (Status.TIMEOUT, Status.BAD_COMMAND) or name.startswith("unknown"):
                self._desync = True
            raise TransportError(f"{what}: bridge status {name}")
        return bytes(resp[:-1])

    def ping(self):
        """Check that a bridge answers (``TransportError`` otherwise)."""
        payload = self._xfer("ping", bytes([Cmd.PING]), 1)
        if payload != bytes([PING_MAGIC]):
            self._desync = True
            raise TransportError(f"ping: expected {PING_MAGIC:#04x}, got {payload.hex()}")

    def flags(self) -> int:
        """The status command's flag byte (:class:`hdl.uart_bridge.Flag`); clears the sticky
        receive-error bits."""
        return self._xfer("status", bytes([Cmd.STATUS]), 1)[0]

    def irq(self) -> bool:
        """The level of the accelerator's interrupt line."""
        return bool(self.flags() & Flag.IRQ)

    # ---- CSR space
    def _csr_addr(self, addr):
        if isinstance(addr, bool) or not isinstance(addr, int) or addr % 4 or \
                not 0 <= addr < (1 << CSR_ADDR_WIDTH):
            raise TransportError(f"CSR address {addr!r} is not a multiple of 4 below "
                                 f"{1 << CSR_ADDR_WIDTH:#x}")
        return addr

    async def read32(self, addr: int) -> int:
        self._csr_addr(addr)
        data = self._xfer(f"CSR read at {addr:#x}", struct.pack("<BI", Cmd.CSR_READ, addr), 4)
        return int.from_bytes(data, "little")

    async def write32(self, addr: int, value: int) -> None:
        self._csr_addr(addr)
        _check_u("CSR value", value, 32)
        self._xfer(f"CSR write at {addr:#x}", struct.pack("<BII", Cmd.CSR_WRITE, addr, value), 0)

    # ---- memory space
    @staticmethod
    def _span(addr, n):
        if isinstance(addr, bool) or not isinstance(addr, int) or addr < 0 or \
                addr + n > 1 << 32:
            raise TransportError(f"Memory access [{addr!r}, +{n}) is outside the 32-bit "
                                 f"address space")

    def _read_words(self, lo, hi):
        out = bytearray()
        for a in range(lo, hi, self.chunk):
            n = min(self.chunk, hi - a)
            out += self._xfer(f"memory read of {n} bytes at {a:#x}",
                              struct.pack("<BIH", Cmd.MEM_READ, a, n), n)
        return bytes(out)

    async def read_mem(self, addr: int, n: int) -> bytes:
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"Read length must be a non-negative integer, not {n!r}")
        self._span(addr, n)
        if n == 0:
            return b""
        lo, hi = addr & ~7, (addr + n + 7) & ~7
        return self._read_words(lo, hi)[addr - lo:addr - lo + n]

    async def write_mem(self, addr: int, data) -> None:
        data = bytes(data)
        self._span(addr, len(data))
        if not data:
            return
        lo, hi = addr & ~7, (addr + len(data) + 7) & ~7
        if lo != addr or hi != addr + len(data):  # merge the partial words at the ends
            head = self._read_words(lo, lo + 8)
            tail = self._read_words(hi - 8, hi)
            words = bytearray(hi - lo)
            words[:8] = head
            words[-8:] = tail
            words[addr - lo:addr - lo + len(data)] = data
            data = bytes(words)
        for a in range(lo, hi, self.chunk):
            part = data[a - lo:a - lo + self.chunk]
            self._xfer(f"memory write of {len(part)} bytes at {a:#x}",
                       struct.pack("<BIH", Cmd.MEM_WRITE, a, len(part)) + part, 0)
