"""UART host bridge: a PC drives the accelerator's CSRs and on-chip memory over a serial line.

On the FPGA boards (no CPU, no DRAM) the host's :class:`runtime.serial_transport.SerialTransport`
talks to :class:`UARTBridge`, which masters the accelerator's AXI4-Lite CSR port (``csr``) and
the on-chip memory (``mem``, an AXI4 port shared with the accelerator through an
:class:`hdl.axi_arbiter.AXI4Arbiter` in front of an :class:`hdl.axi_ram.AXI4RAM`).

Protocol
--------
8N1 at ``clk / divisor`` baud, strictly request/response: the host sends one command and reads
its whole response before sending the next. Multi-byte fields are little-endian. A command is
a command byte, a header of fixed length and, for a memory write, ``len`` payload bytes:

==== ============ ========================= ========================= =====================
byte command      header (+ payload)         response payload          checks
==== ============ ========================= ========================= =====================
0x00 ping         --                        ``0xA5``                  --
0x01 CSR read     addr32                    data32                    addr % 4 == 0,
                                                                      addr < 4096
0x02 CSR write    addr32 data32             --                        as CSR read
0x03 mem read     addr32 len16              ``len`` bytes             addr % 8 == 0,
                                                                      len % 8 == 0,
                                                                      addr + len <= 2**32
0x04 mem write    addr32 len16 + len bytes  --                        as mem read
0x05 status       --                        flags (1 byte)            --
==== ============ ========================= ========================= =====================

**Every response is its payload followed by one status byte**, and the payload length depends
only on the command and its header, never on the outcome, so the host always knows how many
bytes to read. Status bytes:

* ``0x00`` OK;
* ``0x01``-``0x03`` a bus error: the AXI response (``EXOKAY``, ``SLVERR``, ``DECERR``) of the
  first access that did not answer ``OKAY``. A memory command carries on with the remaining
  beats (a read still returns ``len`` bytes: the bus's data for the failed beats);
* ``0x10`` bad command: an unknown command byte. The response is that status byte alone and
  the next byte is taken as a new command;
* ``0x11`` bad argument: the header breaks a check of the table. Nothing is accessed, but the
  command keeps its shape: a read returns its payload as zeros, a memory write's ``len`` bytes
  are received (and dropped) before the status;
* ``0x12`` timeout: a command stopped arriving: no byte for ``timeout_bytes`` byte times (10
  bits each) in the middle of a header or a write payload. The partial command is dropped (a
  memory write keeps the 8-byte beats that had completely arrived) and the response is this
  status byte alone.

The status flags (command 0x05): bit 0 the ``irq`` input's level, bit 1 a UART framing error
was seen, bit 2 a received byte was lost (receive overrun); bits 1 and 2 are sticky and cleared
by this command.

Memory accesses are single-beat 64-bit AXI4 transfers (``xLEN = 0``, ``xSIZE = 3``, ``INCR``,
ID 0, ``WSTRB`` all ones), one after the other; a memory read fetches the next beat only when
the previous one has been handed to the transmitter, so the bridge has no data buffer beyond
one beat, and a write stores a beat when its 8 bytes have arrived. CSR accesses are 32-bit
AXI4-Lite transfers with all byte strobes. The bridge waits for every bus response (it has no
bus timeout: the subordinates must always answer, as :class:`~hdl.axi_ram.AXI4RAM` and
:class:`~hdl.csr.CSRBlock` do).

**Resynchronization.** If the host loses track (a short read, a garbled byte), it stops
sending, discards what it receives until the line is quiet, waits longer than
``timeout_bytes`` byte times (so a partial command ends in a timeout) and sends a ping,
expecting ``A5 00``. Received bytes go through a small FIFO (``rx_fifo_depth``) so that memory
writes keep up while the bus is busy for a while; a lost byte shows in the status flags and
usually as a timeout.
"""

from enum import IntEnum

from amaranth import Cat, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from .axi import AXI4LiteSignature, AXI4Signature, Resp
from .bfp_layouts import reject
from .uart import UARTRx, UARTTx, check_divisor

__all__ = ["UARTBridge", "Cmd", "Status", "Flag", "PING_MAGIC", "CSR_ADDR_WIDTH", "HEADER_LEN"]

CSR_ADDR_WIDTH = 12
PING_MAGIC = 0xA5


class Cmd(IntEnum):
    """Command bytes."""
    PING = 0x00
    CSR_READ = 0x01
    CSR_WRITE = 0x02
    MEM_READ = 0x03
    MEM_WRITE = 0x04
    STATUS = 0x05


#: Header bytes after each command byte.
HEADER_LEN = {Cmd.PING: 0, Cmd.CSR_READ: 4, Cmd.CSR_WRITE: 8, Cmd.MEM_READ: 6,
              Cmd.MEM_WRITE: 6, Cmd.STATUS: 0}


class Status(IntEnum):
    """Status bytes (the last byte of every response)."""
    OK = 0x00
    EXOKAY = 0x01
    SLVERR = 0x02
    DECERR = 0x03
    BAD_COMMAND = 0x10
    BAD_ARGUMENT = 0x11
    TIMEOUT = 0x12


class Flag(IntEnum):
    """Bits of the status command's payload byte."""
    IRQ = 0x01
    FRAME_ERROR = 0x02
    OVERRUN = 0x04


class UARTBridge(wiring.Component):
    """Byte protocol over a UART to an AXI4-Lite CSR manager and an AXI4 memory manager.

    Parameters
    ----------
    divisor : int
        Clock cycles per bit (4 to 2**24; ``clk / baud``).
    timeout_bytes : int
        Byte times (of 10 bits) of silence in the middle of a command before it is dropped
        with the timeout status (1 to 2**16).
    rx_fifo_depth : int
        Bytes buffered between the receiver and the command logic (0, or 2 to 256).

    Attributes
    ----------
    rx : In(1)
        Serial input (from the host; asynchronous).
    tx : Out(1)
        Serial output (to the host; idles high).
    csr : Out(AXI4LiteSignature(12, 32))
        Manager port to the accelerator's CSRs.
    mem : Out(AXI4Signature(32, 64))
        Manager port to the memory.
    irq : In(1)
        Reported by the status command.
    """

    def __init__(self, divisor: int, timeout_bytes: int = 1024, rx_fifo_depth: int = 16):
        try:
            check_divisor(divisor)
            if isinstance(timeout_bytes, bool) or not isinstance(timeout_bytes, int) or \
                    not 1 <= timeout_bytes <= 1 << 16:
                raise ValueError(f"Timeout must be an integer from 1 to 65536 byte times, not "
                                 f"{timeout_bytes!r}")
            if isinstance(rx_fifo_depth, bool) or not isinstance(rx_fifo_depth, int) or \
                    not (rx_fifo_depth == 0 or 2 <= rx_fifo_depth <= 256):
                raise ValueError(f"Receive FIFO depth must be 0 or an integer from 2 to 256, "
                                 f"not {rx_fifo_depth!r}")
        except ValueError as exc:
            reject(self, exc)
        self._divisor = divisor
        self._timeout_bytes = timeout_bytes
        self._rx_fifo_depth = rx_fifo_depth
        super().__init__({
            "rx": In(1, init=1), "tx": Out(1, init=1),
            "csr": Out(AXI4LiteSignature(CSR_ADDR_WIDTH, 32)),
            "mem": Out(AXI4Signature(32, 64)),
            "irq": In(1),
        })

    divisor = property(lambda self: self._divisor)
    timeout_bytes = property(lambda self: self._timeout_bytes)
    rx_fifo_depth = property(lambda self: self._rx_fifo_depth)

    @property
    def timeout_cycles(self):
        """Clock cycles of silence that end a partial command."""
        return self._timeout_bytes * 10 * self._divisor

    def elaborate(self, platform):
        m = Module()
        m.submodules.urx = urx = UARTRx(self._divisor)
        m.submodules.utx = utx = UARTTx(self._divisor)
        m.d.comb += [urx.rx.eq(self.rx), self.tx.eq(utx.tx)]
        if self._rx_fifo_depth:
            m.submodules.rx_fifo = fifo = SyncFIFOBuffered(width=8, depth=self._rx_fifo_depth)
            wiring.connect(m, urx.out, fifo.w_stream)
            rxs = fifo.r_stream
        else:
            rxs = urx.out
        txs = utx.inp
        csr, mem = self.csr, self.mem

        # sticky receive errors for the status command
        frame_seen = Signal()
        overrun_seen = Signal()
        with m.If(urx.frame_error):
            m.d.sync += frame_seen.eq(1)
        with m.If(urx.overrun):
            m.d.sync += overrun_seen.eq(1)

        cmd = Signal(8)
        hdr = Signal(64)
        hidx = Signal(3)
        hlen = Signal(4)
        status = Signal(8)
        buf = Signal(64)
        bidx = Signal(3)
        n = Signal(17)  # payload bytes left to send or receive
        maddr = Signal(32)
        skip = Signal()  # bad argument: no bus access, just keep the command's shape
        aw_done = Signal()
        w_done = Signal()
        timer = Signal(range(self.timeout_cycles + 1))

        addr = hdr[0:32]
        data = hdr[32:64]
        length = hdr[32:48]
        csr_ok = (addr[0:2] == 0) & (addr[CSR_ADDR_WIDTH:] == 0)
        mem_end = Signal(33)
        m.d.comb += mem_end.eq(addr + length)
        mem_ok = (addr[0:3] == 0) & (length[0:3] == 0) & (mem_end <= (1 << 32))

        # fixed fields of the bus requests
        m.d.comb += [
            csr.araddr.eq(addr[:CSR_ADDR_WIDTH]), csr.awaddr.eq(addr[:CSR_ADDR_WIDTH]),
            csr.wdata.eq(data), csr.wstrb.eq(0xF),
            mem.araddr.eq(maddr), mem.awaddr.eq(maddr),
            mem.arsize.eq(3), mem.awsize.eq(3), mem.arburst.eq(1), mem.awburst.eq(1),
            mem.wdata.eq(buf), mem.wstrb.eq(0xFF), mem.wlast.eq(1),
        ]

        def bus_status(resp):
            with m.If((status == Status.OK) & (resp != Resp.OKAY)):
                m.d.sync += status.eq(resp)

        def store_byte(reg, idx, byte):
            with m.Switch(idx):
                for k in range(8):
                    with m.Case(k):
                        m.d.sync += reg[8 * k:8 * k + 8].eq(byte)

        def count_silence():
            """In HDR / RECV: a byte restarts the timer; silence ends the command."""
            with m.If(rxs.valid):
                m.d.sync += timer.eq(self.timeout_cycles)
            with m.Elif(timer == 0):
                m.d.sync += [status.eq(Status.TIMEOUT), n.eq(0)]
                m.next = "STATUS"
            with m.Else():
                m.d.sync += timer.eq(timer - 1)

        def write_beat(bus, next_state):
            m.d.comb += [bus.awvalid.eq(~aw_done), bus.wvalid.eq(~w_done)]
            aw_ok = aw_done | bus.awready
            w_ok = w_done | bus.wready
            m.d.sync += [aw_done.eq(aw_ok), w_done.eq(w_ok)]
            with m.If(aw_ok & w_ok):
                m.d.sync += [aw_done.eq(0), w_done.eq(0)]
                m.next = next_state

        with m.FSM():
            with m.State("CMD"):
                m.d.comb += rxs.ready.eq(1)
                m.d.sync += [status.eq(Status.OK), hidx.eq(0), bidx.eq(0), skip.eq(0),
                             timer.eq(self.timeout_cycles)]
                with m.If(rxs.valid):
                    m.d.sync += cmd.eq(rxs.payload)
                    with m.Switch(rxs.payload):
                        for c in Cmd:
                            with m.Case(c):
                                if HEADER_LEN[c]:
                                    m.d.sync += hlen.eq(HEADER_LEN[c])
                                    m.next = "HDR"
                                else:
                                    m.next = "EXEC"
                        with m.Default():
                            m.d.sync += [status.eq(Status.BAD_COMMAND), n.eq(0)]
                            m.next = "STATUS"
            with m.State("HDR"):
                m.d.comb += rxs.ready.eq(1)
                with m.If(rxs.valid):
                    store_byte(hdr, hidx, rxs.payload)
                    m.d.sync += hidx.eq(hidx + 1)
                    with m.If(hidx == hlen - 1):
                        m.next = "EXEC"
                count_silence()
            with m.State("EXEC"):
                m.d.sync += [buf.eq(0), maddr.eq(addr)]
                with m.Switch(cmd):
                    with m.Case(Cmd.PING):
                        m.d.sync += [buf.eq(PING_MAGIC), n.eq(1)]
                        m.next = "SEND"
                    with m.Case(Cmd.STATUS):
                        m.d.sync += [buf.eq(Cat(self.irq, frame_seen, overrun_seen)), n.eq(1),
                                     frame_seen.eq(urx.frame_error),
                                     overrun_seen.eq(urx.overrun)]
                        m.next = "SEND"
                    with m.Case(Cmd.CSR_READ):
                        m.d.sync += n.eq(4)
                        with m.If(csr_ok):
                            m.next = "CSR_AR"
                        with m.Else():
                            m.d.sync += status.eq(Status.BAD_ARGUMENT)
                            m.next = "SEND"
                    with m.Case(Cmd.CSR_WRITE):
                        m.d.sync += n.eq(0)
                        with m.If(csr_ok):
                            m.next = "CSR_W"
                        with m.Else():
                            m.d.sync += status.eq(Status.BAD_ARGUMENT)
                            m.next = "STATUS"
                    with m.Case(Cmd.MEM_READ, Cmd.MEM_WRITE):
                        m.d.sync += [n.eq(length), skip.eq(~mem_ok)]
                        with m.If(~mem_ok):
                            m.d.sync += status.eq(Status.BAD_ARGUMENT)
                        with m.If(length == 0):
                            m.next = "STATUS"
                        with m.Elif(cmd == Cmd.MEM_WRITE):
                            m.next = "RECV"
                        with m.Elif(mem_ok):
                            m.next = "MEM_AR"
                        with m.Else():
                            m.next = "SEND"
            with m.State("CSR_AR"):
                m.d.comb += csr.arvalid.eq(1)
                with m.If(csr.arready):
                    m.next = "CSR_R"
            with m.State("CSR_R"):
                m.d.comb += csr.rready.eq(1)
                with m.If(csr.rvalid):
                    m.d.sync += buf.eq(csr.rdata)
                    bus_status(csr.rresp)
                    m.next = "SEND"
            with m.State("CSR_W"):
                write_beat(csr, "CSR_B")
            with m.State("CSR_B"):
                m.d.comb += csr.bready.eq(1)
                with m.If(csr.bvalid):
                    bus_status(csr.bresp)
                    m.next = "STATUS"
            with m.State("MEM_AR"):
                m.d.comb += mem.arvalid.eq(1)
                with m.If(mem.arready):
                    m.next = "MEM_R"
            with m.State("MEM_R"):
                m.d.comb += mem.rready.eq(1)
                with m.If(mem.rvalid):
                    m.d.sync += [buf.eq(mem.rdata), maddr.eq(maddr + 8)]
                    bus_status(mem.rresp)
                    m.next = "SEND"
            with m.State("SEND"):
                m.d.comb += [txs.valid.eq(1), txs.payload.eq(buf.word_select(bidx, 8))]
                with m.If(txs.ready):
                    m.d.sync += [n.eq(n - 1), bidx.eq(bidx + 1)]
                    with m.If(n == 1):
                        m.next = "STATUS"
                    with m.Elif((bidx == 7) & (cmd == Cmd.MEM_READ) & ~skip):
                        m.next = "MEM_AR"
            with m.State("RECV"):
                m.d.comb += rxs.ready.eq(1)
                with m.If(rxs.valid):
                    store_byte(buf, bidx, rxs.payload)
                    m.d.sync += [n.eq(n - 1), bidx.eq(bidx + 1)]
                    with m.If((bidx == 7) & ~skip):
                        m.next = "MEM_W"
                    with m.Elif(n == 1):
                        m.next = "STATUS"
                count_silence()
            with m.State("MEM_W"):
                write_beat(mem, "MEM_B")
            with m.State("MEM_B"):
                m.d.comb += mem.bready.eq(1)
                with m.If(mem.bvalid):
                    m.d.sync += [maddr.eq(maddr + 8), timer.eq(self.timeout_cycles)]
                    bus_status(mem.bresp)
                    with m.If(n == 0):
                        m.next = "STATUS"
                    with m.Else():
                        m.next = "RECV"
            with m.State("STATUS"):
                m.d.comb += [txs.valid.eq(1), txs.payload.eq(status)]
                with m.If(txs.ready):
                    m.next = "CMD"
        return m
