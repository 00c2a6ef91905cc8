"""On-chip AXI4 memory: the DRAM stand-in of the FPGA board tops.

:class:`AXI4RAM` is an AXI4 subordinate (``bus: In(AXI4Signature)``) over a word array of
``data_width`` bits. On boards without DRAM (issue 7) it is what the accelerator's ``mem`` port
and the UART bridge's ``mem`` port reach (through an :class:`hdl.axi_arbiter.AXI4Arbiter`).

**Bursts.** ``INCR`` and ``FIXED`` bursts of 1 to 256 beats, narrow sizes included (the address
advances by ``2**xSIZE`` bytes per beat, aligned after the first beat as the AXI specification
says; read data always carry the whole word, write data are taken per ``WSTRB`` byte). ``WRAP``
bursts, the reserved burst type and an ``xSIZE`` wider than the bus complete with ``SLVERR``
on every beat and change nothing. Each beat whose byte address is ``>= size_bytes`` completes
with ``SLVERR`` (read data 0, the write ignored); other beats are ``OKAY``. A write burst ends
after ``AWLEN + 1`` beats (``WLAST`` is not looked at) and gets one B response: ``SLVERR`` if
any beat failed. The bus never hangs: every request is answered whatever its address.

**Concurrency and throughput.** One read burst and one write burst are in progress at a time
(the next AR is taken the cycle after the previous burst's last address is issued, the next AW
once its B response is accepted). Within a burst one beat per cycle flows in each direction:
the read port's enable doubles as the R channel's stall (``RREADY`` low holds the output), so
back-pressure costs no extra buffer. ``AWREADY`` never waits for ``WVALID``. IDs are returned
unchanged (``RID = ARID``, ``BID = AWID``).

**Storage.**

* ``spram=False`` (default, and what the simulations use): an :class:`amaranth.lib.memory.Memory`
  with one write port (byte granularity) and one synchronous read port, so a read and a write
  beat can both happen in a cycle. Synthesis maps it to block RAM (ECP5 DP16KD, iCE40 EBR).
* ``spram=True``: iCE40 UP5K single-port RAM. Four ``SB_SPRAM256KA`` (16 bits x 16K each) side
  by side make a 64-bit x 16K array (128 KiB); byte strobe ``k`` drives the two ``MASKWREN``
  nibble enables of its byte. SPRAM has one port, so a write beat and a read beat cannot
  happen in the same cycle: a write beat takes the cycle and the read stream waits (a write
  burst therefore delays a concurrent read burst by at most its own length; the W channel never
  waits for R). Needs ``data_width=64`` and ``size_bytes <= 128 KiB``.
* ``spram="model"``: the same single-port organisation (4 x 16-bit words, nibble write masks,
  the ``SB_SPRAM256KA`` timing: data out one cycle after a read, held through writes and idle
  cycles) built from Amaranth memories, so the simulator tests the SPRAM glue.
"""

from amaranth import Cat, ClockSignal, Const, Module, Mux, Signal
from amaranth.hdl import Instance
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In

from .axi import AXI4Signature, Resp
from .bfp_layouts import reject

__all__ = ["AXI4RAM", "SPRAM_BYTES"]

SPRAM_BYTES = 4 * 32 * 1024  # four SB_SPRAM256KA: 4 x 256 Kbit = 128 KiB
_SPRAM_WORDS = 16 * 1024

BURST_FIXED = 0
BURST_INCR = 1


class _WordPorts:
    """The storage seen by the AXI logic: one read request and one write request per cycle.

    ``raddr``/``ren`` in, ``rdata`` out one cycle after ``ren`` (held otherwise); ``waddr``/
    ``wdata``/``wstrb`` (one bit per byte, all zero = no write).
    """

    def __init__(self, abits, data_width):
        self.raddr = Signal(abits)
        self.ren = Signal()
        self.rdata = Signal(data_width)
        self.waddr = Signal(abits)
        self.wdata = Signal(data_width)
        self.wstrb = Signal(data_width // 8)


class AXI4RAM(wiring.Component):
    """AXI4 subordinate over on-chip RAM (module docstring).

    Parameters
    ----------
    size_bytes : int
        Bytes of memory; a positive multiple of ``data_width // 8`` and at most
        ``2**addr_width``. Beats at or above it answer ``SLVERR``.
    data_width : int
        32, 64 or 128 (64 for ``spram``).
    addr_width : int
        Address bits of the port (1 to 64).
    id_width : int
        ID bits (1 to 8).
    spram : bool or "model"
        Storage (module docstring): ``False`` a plain Memory, ``True`` four iCE40
        ``SB_SPRAM256KA``, ``"model"`` their simulation stand-in.

    Attributes
    ----------
    bus : In(AXI4Signature(addr_width, data_width, id_width))
    """

    def __init__(self, size_bytes: int, data_width: int = 64, addr_width: int = 32,
                 id_width: int = 1, spram=False):
        try:
            sig = AXI4Signature(addr_width, data_width, id_width)
            nbytes = data_width // 8
            if isinstance(size_bytes, bool) or not isinstance(size_bytes, int) or \
                    size_bytes <= 0 or size_bytes % nbytes or size_bytes > (1 << addr_width):
                raise ValueError(f"Memory size must be a positive multiple of {nbytes} bytes "
                                 f"and at most 2**{addr_width}, not {size_bytes!r}")
            if not (spram is False or spram is True or spram == "model"):
                raise ValueError(f"spram must be False, True or 'model', not {spram!r}")
            if spram is not False:
                if data_width != 64:
                    raise ValueError(f"The SPRAM array is 64 bits wide, not {data_width}")
                if size_bytes > SPRAM_BYTES:
                    raise ValueError(f"The SPRAM array holds {SPRAM_BYTES} bytes, not "
                                     f"{size_bytes}")
        except ValueError as exc:
            reject(self, exc)
        self._size = size_bytes
        self._data_width = data_width
        self._addr_width = addr_width
        self._id_width = id_width
        self._spram = spram
        super().__init__({"bus": In(sig)})

    size_bytes = property(lambda self: self._size)
    data_width = property(lambda self: self._data_width)
    addr_width = property(lambda self: self._addr_width)
    id_width = property(lambda self: self._id_width)
    spram = property(lambda self: self._spram)

    # ---- storage back ends
    def _plain(self, m, ports, depth):
        mem = Memory(shape=self._data_width, depth=depth, init=[])
        m.submodules.mem = mem
        wp = mem.write_port(granularity=8)
        rp = mem.read_port()
        m.d.comb += [wp.addr.eq(ports.waddr), wp.data.eq(ports.wdata), wp.en.eq(ports.wstrb),
                     rp.addr.eq(ports.raddr), rp.en.eq(ports.ren), ports.rdata.eq(rp.data)]

    def _spram_array(self, m, ports, model):
        # One port: a write beat has priority (the AXI logic never asks for both at once).
        wren = ports.wstrb.any()
        addr = Mux(wren, ports.waddr, ports.raddr)
        cs = wren | ports.ren
        for k in range(4):
            mask = Cat(ports.wstrb[2 * k], ports.wstrb[2 * k],
                       ports.wstrb[2 * k + 1], ports.wstrb[2 * k + 1])
            din = ports.wdata[16 * k:16 * k + 16]
            dout = ports.rdata[16 * k:16 * k + 16]
            if model:
                mem = Memory(shape=16, depth=_SPRAM_WORDS, init=[])
                m.submodules[f"spram{k}"] = mem
                wp = mem.write_port(granularity=4)
                rp = mem.read_port()
                m.d.comb += [wp.addr.eq(addr), wp.data.eq(din),
                             wp.en.eq(Mux(cs & wren, mask, 0)),
                             rp.addr.eq(addr), rp.en.eq(cs & ~wren), dout.eq(rp.data)]
            else:
                m.submodules[f"spram{k}"] = Instance(
                    "SB_SPRAM256KA",
                    i_ADDRESS=addr[:14], i_DATAIN=din, i_MASKWREN=mask, i_WREN=wren,
                    i_CHIPSELECT=cs, i_CLOCK=ClockSignal("sync"), i_STANDBY=Const(0),
                    i_SLEEP=Const(0), i_POWEROFF=Const(1), o_DATAOUT=dout)

    def elaborate(self, platform):
        m = Module()
        bus = self.bus
        aw = self._addr_width
        nbytes = self._data_width // 8
        lsb = (nbytes - 1).bit_length()  # byte-in-word address bits
        max_size = lsb  # xSIZE beyond this is wider than the bus
        if self._spram is False:
            depth = self._size // nbytes
        else:
            depth = _SPRAM_WORDS
        abits = max(1, (depth - 1).bit_length())
        ports = _WordPorts(abits, self._data_width)
        single_port = self._spram is not False
        if single_port:
            self._spram_array(m, ports, self._spram == "model")
        else:
            self._plain(m, ports, depth)

        def beat_error(addr):
            return addr >= self._size

        def next_addr(addr, size, burst):
            """The address of the beat after ``addr`` (INCR: aligned to the size, plus it)."""
            nxt = Signal(aw)
            inc = Signal(max_size + 1)  # 2**size (one adder whatever the size)
            with m.Switch(size):
                for s in range(max_size + 1):
                    with m.Case(s):
                        m.d.comb += inc.eq(1 << s)
            aligned = Signal(aw)
            low = Signal(max_size + 1)
            m.d.comb += [low.eq(addr[:max_size + 1] & ~(inc - 1)),
                         aligned.eq(Cat(low, addr[max_size + 1:]))]
            m.d.comb += nxt.eq(Mux(burst == BURST_INCR, aligned + inc, addr))
            return nxt

        def bad_request(size, burst):
            return ((burst != BURST_INCR) & (burst != BURST_FIXED)) | (size > max_size)

        # ---- write channel
        w_active = Signal()
        w_addr = Signal(aw)
        w_left = Signal(8)
        w_size = Signal(3)
        w_burst = Signal(2)
        w_bad = Signal()  # the whole burst fails (unsupported burst type or size)
        w_err = Signal()  # some beat failed so far
        m.d.comb += [bus.awready.eq(~w_active & ~bus.bvalid), bus.wready.eq(w_active)]
        with m.If(bus.awvalid & bus.awready):
            m.d.sync += [w_active.eq(1), w_addr.eq(bus.awaddr), w_left.eq(bus.awlen),
                         w_size.eq(bus.awsize), w_burst.eq(bus.awburst),
                         w_bad.eq(bad_request(bus.awsize, bus.awburst)), w_err.eq(0),
                         bus.bid.eq(bus.awid)]
        w_fire = Signal()
        w_fail = Signal()
        m.d.comb += [w_fire.eq(bus.wvalid & bus.wready),
                     w_fail.eq(w_bad | beat_error(w_addr)),
                     ports.waddr.eq(w_addr[lsb:lsb + abits]), ports.wdata.eq(bus.wdata)]
        with m.If(w_fire & ~w_fail):
            m.d.comb += ports.wstrb.eq(bus.wstrb)
        w_next = next_addr(w_addr, w_size, w_burst)
        with m.If(w_fire):
            m.d.sync += [w_addr.eq(w_next), w_left.eq(w_left - 1), w_err.eq(w_err | w_fail)]
            with m.If(w_left == 0):
                m.d.sync += [w_active.eq(0), bus.bvalid.eq(1),
                             bus.bresp.eq(Mux(w_err | w_fail, Resp.SLVERR, Resp.OKAY))]
        with m.If(bus.bvalid & bus.bready):
            m.d.sync += bus.bvalid.eq(0)

        # ---- read channel: an issue stage (address) and the output stage (R registers)
        r_active = Signal()
        r_addr = Signal(aw)
        r_left = Signal(8)
        r_size = Signal(3)
        r_burst = Signal(2)
        r_bad = Signal()
        r_id = Signal(self._id_width)
        r_fail = Signal()  # the beat in the output stage failed: its data read as 0
        m.d.comb += bus.arready.eq(~r_active)
        with m.If(bus.arvalid & bus.arready):
            m.d.sync += [r_active.eq(1), r_addr.eq(bus.araddr), r_left.eq(bus.arlen),
                         r_size.eq(bus.arsize), r_burst.eq(bus.arburst),
                         r_bad.eq(bad_request(bus.arsize, bus.arburst)), r_id.eq(bus.arid)]
        advance = Signal()
        issue = Signal()
        m.d.comb += [
            advance.eq(~bus.rvalid | bus.rready),
            issue.eq(r_active & advance),
            ports.raddr.eq(r_addr[lsb:lsb + abits]),
            bus.rdata.eq(Mux(r_fail, 0, ports.rdata)),
        ]
        if single_port:
            m.d.comb += issue.eq(r_active & advance & ~w_fire)
        r_beat_fail = Signal()
        m.d.comb += [r_beat_fail.eq(r_bad | beat_error(r_addr)),
                     ports.ren.eq(issue & ~r_beat_fail)]
        r_next = next_addr(r_addr, r_size, r_burst)
        with m.If(advance):
            m.d.sync += [bus.rvalid.eq(issue), bus.rlast.eq(r_left == 0), r_fail.eq(r_beat_fail),
                         bus.rid.eq(r_id),
                         bus.rresp.eq(Mux(r_beat_fail, Resp.SLVERR, Resp.OKAY))]
        with m.If(issue):
            m.d.sync += [r_addr.eq(r_next), r_left.eq(r_left - 1)]
            with m.If(r_left == 0):
                m.d.sync += r_active.eq(0)
        return m

