"""AXI4 burst DMA: a reader (memory -> byte stream) and a writer (byte stream -> memory).

Both move the byte streams of :func:`hdl.bfp_layouts.bus_beat` (``data``, ``keep``, ``last``)
between an AXI4 manager port and the streaming units (HBM decoder and encoder, weight loaders).

**Reader.** A command ``(addr, length)`` asks for ``length`` bytes from ``addr``. The reader
splits it into INCR bursts of at most ``max_burst`` beats that never cross a 4 KiB boundary,
keeps up to ``max_outstanding`` bursts in flight, and forwards the R beats as they come:
``keep`` is all ones except on the final beat, which carries ``last``. The R channel is passed
straight through (``rready`` is the consumer's ``ready``), so the reader sustains one beat per
cycle when the memory does.

**Stopping a read.** ``stop`` (a level; an operand stream read inside a byte budget ends before
the budget does: :class:`hdl.hbm_decoder.HBMDecoder` ``tail``) is looked at while a command runs.
From the first cycle it is high no further AR burst is issued (``arvalid`` is blocked in that
same cycle; an address already on the bus, ``arvalid`` high without ``arready`` the cycle
before, stays until taken, as AXI requires). The beats of bursts already issued are still
delivered, and the stream still ends with ``last``: the natural final beat if it was requested
already; else the beat that empties the bursts in flight carries ``last`` (``keep`` all ones) if
``stop`` is high when it is presented; else (``stop`` rose while that beat was waiting, or after
it) one extra beat with ``keep = 0`` and ``last = 1`` follows. Then ``done`` as usual, with
``BUS`` if any delivered beat had an error response. A ``stop`` that stays low changes nothing.
``stop`` may depend on ``out`` only through registers (``tail`` does). ``beats_read`` counts
the R handshakes since reset (modulo 2**32), so a top can measure what a command read.

**Writer.** A command ``(addr, length)`` gives a destination and its capacity in bytes; the
writer then takes beats until ``last`` (the producer does not know the length in advance: an HBM
stream's size depends on the data). Beats gather in a FIFO of ``2 * max_burst``; a burst is
issued when a full burst (to the 4 KiB boundary at most) is waiting or the final beat has
arrived, so input keeps flowing while the previous burst drains. ``written`` reports the bytes
stored (the sum of ``keep``).

**Errors** never hang either side. A command with ``length == 0``, an address not aligned
to the bus width, or (writer) a capacity that is not a whole number of beats is refused
(:class:`DMAError` ``BAD_COMMAND``) without a bus access; a writer still drains its input to
``last``. An ``SLVERR``/``DECERR`` response is recorded (``BUS``, with the response in
``bus_resp``) and the transfer runs to its end (a reader still delivers every beat, so the
consumer sees ``last``). A writer whose input exceeds the capacity stores what fits, drops the
rest up to ``last`` and reports ``OVERFLOW``. Each command ends with one ``done`` pulse and
its ``error`` code, valid in that cycle.
"""

from amaranth import Module, Mux, Signal, unsigned
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from .axi import AXI4Signature, Resp
from .bfp_layouts import bus_beat, check_bus_width

__all__ = ["DMAError", "DMAReader", "DMAWriter", "dma_command"]

LEN_W = 24  #: byte-length field: commands up to 16 MiB - 1


class DMAError(enum.Enum, shape=2):
    """Completion status of a DMA command."""
    OK = 0
    BAD_COMMAND = 1  #: zero length or misaligned address; nothing was accessed
    BUS = 2  #: an SLVERR or DECERR response (``bus_resp`` tells which)
    OVERFLOW = 3  #: writer only: the input was longer than the capacity


def dma_command(addr_width: int) -> data.StructLayout:
    """Command payload: byte address and byte length (reader) or capacity (writer)."""
    return data.StructLayout({"addr": unsigned(addr_width), "length": unsigned(LEN_W)})


def _check(owner, addr_width, data_width, max_burst, max_outstanding=1):
    """Validate the parameters; on an error ``owner`` (the unit being constructed) is marked
    as never to be elaborated, so that no "created but never used" warning follows."""
    try:
        _check_values(addr_width, data_width, max_burst, max_outstanding)
    except (TypeError, ValueError):
        owner._MustUse__silence = True
        raise


def _check_values(addr_width, data_width, max_burst, max_outstanding):
    if not isinstance(addr_width, int) or not 12 <= addr_width <= 64:
        raise ValueError(f"Address width must be an integer from 12 to 64, not {addr_width!r}")
    check_bus_width(data_width)
    if not isinstance(max_burst, int) or max_burst not in (2, 4, 8, 16, 32, 64, 128, 256):
        raise ValueError(f"Maximum burst must be a power of two from 2 to 256 beats, not "
                         f"{max_burst!r}")
    if not isinstance(max_outstanding, int) or not 1 <= max_outstanding <= 16:
        raise ValueError(f"Outstanding bursts must be an integer from 1 to 16, not "
                         f"{max_outstanding!r}")


class _DMABase(wiring.Component):
    def __init__(self, members, addr_width, data_width, max_burst):
        self._addr_width = addr_width
        self._data_width = data_width
        self._max_burst = max_burst
        super().__init__(members)

    @property
    def addr_width(self):
        return self._addr_width

    @property
    def data_width(self):
        return self._data_width

    @property
    def max_burst(self):
        return self._max_burst

    def _burst_beats(self, m, addr, beats_left, name):
        """Beats of the next burst: min(max_burst, beats_left, beats to the 4 KiB boundary)."""
        shift = (self._data_width // 8).bit_length() - 1
        to_4k = Signal(range(4096 // (self._data_width // 8) + 1), name=f"{name}_to_4k")
        m.d.comb += to_4k.eq((4096 - addr[:12]) >> shift)
        n = Signal(range(self._max_burst + 1), name=f"{name}_beats")
        lim = Signal.like(to_4k, name=f"{name}_lim")
        with m.If(to_4k > self._max_burst):
            m.d.comb += lim.eq(self._max_burst)
        with m.Else():
            m.d.comb += lim.eq(to_4k)
        with m.If(beats_left < lim):
            m.d.comb += n.eq(beats_left)
        with m.Else():
            m.d.comb += n.eq(lim)
        return n, lim


class DMAReader(_DMABase):
    """Reads ``length`` bytes from ``addr`` into a byte stream.

    Parameters
    ----------
    addr_width : int
        AXI address bits (12 to 64).
    data_width : int
        AXI data and stream width: 32 or 64.
    max_burst : int
        Beats per burst, a power of two from 2 to 256.
    max_outstanding : int
        Bursts in flight (1 to 16).

    Attributes
    ----------
    cmd : In(stream.Signature(dma_command(addr_width)))
    out : Out(stream.Signature(bus_beat(data_width)))
    done : Out(1)
        One-cycle pulse when a command has finished.
    error : Out(DMAError)
        Valid with ``done``.
    bus_resp : Out(2)
        The first non-OKAY response of the command (valid with ``done``).
    busy : Out(1)
    stop : In(1)
        End the running command early (module docstring, "Stopping a read").
    beats_read : Out(32)
        R handshakes since reset, modulo 2**32.
    axi : Out(AXI4Signature(addr_width, data_width))
        Only the read channels are driven; the write channels are idle.
    """

    def __init__(self, addr_width=32, data_width=64, max_burst=16, max_outstanding=4):
        _check(self, addr_width, data_width, max_burst, max_outstanding)
        self._max_outstanding = max_outstanding
        super().__init__({
            "cmd": In(stream.Signature(dma_command(addr_width))),
            "out": Out(stream.Signature(bus_beat(data_width))),
            "done": Out(1),
            "error": Out(DMAError),
            "bus_resp": Out(2),
            "busy": Out(1),
            "stop": In(1),
            "beats_read": Out(32),
            "axi": Out(AXI4Signature(addr_width, data_width)),
        }, addr_width, data_width, max_burst)

    @property
    def max_outstanding(self):
        return self._max_outstanding

    def elaborate(self, platform):
        m = Module()
        axi = self.axi
        bpb = self._data_width // 8
        shift = bpb.bit_length() - 1
        max_beats = (1 << LEN_W) // bpb + 1

        ar_addr = Signal(self._addr_width)
        ar_left = Signal(range(max_beats + 1))  # beats still to request
        r_left = Signal(range(max_beats + 1))  # beats still to deliver (natural end)
        last_keep = Signal(bpb)
        inflight = Signal(range(self._max_outstanding + 1))
        pending = Signal(range(self._max_outstanding * self._max_burst + 1))  # beats requested,
        # not yet delivered
        active = Signal()  # a command runs
        stopped = Signal()  # stop was seen during this command
        ar_wait = Signal()  # arvalid was high without arready last cycle: keep it
        held = Signal()  # out.valid was high without out.ready last cycle: keep last
        held_last = Signal()
        err = Signal(DMAError)
        resp = Signal(2)
        beats_read = Signal(32)

        m.d.comb += [
            self.busy.eq(active),
            self.cmd.ready.eq(~active),
            self.error.eq(err),
            self.bus_resp.eq(resp),
            self.beats_read.eq(beats_read),
        ]
        m.d.sync += self.done.eq(0)

        halt = Signal()  # no new burst from this cycle on
        m.d.comb += halt.eq(active & (stopped | self.stop))
        with m.If(active & self.stop):
            m.d.sync += stopped.eq(1)

        unused = Signal(range(bpb))  # bytes of the final beat past the end
        m.d.comb += unused.eq(-self.cmd.payload.length[:shift])
        with m.If(self.cmd.valid & self.cmd.ready):
            length = self.cmd.payload.length
            addr = self.cmd.payload.addr
            beats = (length + bpb - 1) >> shift
            m.d.sync += [err.eq(DMAError.OK), resp.eq(Resp.OKAY), stopped.eq(0)]
            with m.If((length == 0) | (addr[:shift] != 0)):
                m.d.sync += [self.done.eq(1), err.eq(DMAError.BAD_COMMAND)]
            with m.Else():
                m.d.sync += [ar_addr.eq(addr), ar_left.eq(beats), r_left.eq(beats),
                             active.eq(1), last_keep.eq(((1 << bpb) - 1) >> unused)]

        # AR: issue bursts while requests remain, the in-flight limit allows and no stop.
        n, _ = self._burst_beats(m, ar_addr, ar_left, "ar")
        m.d.comb += [
            axi.arid.eq(0), axi.araddr.eq(ar_addr), axi.arlen.eq(n - 1),
            axi.arsize.eq(shift), axi.arburst.eq(1),  # INCR
            axi.arvalid.eq((ar_left != 0) & (inflight < self._max_outstanding)
                           & (~halt | ar_wait)),
        ]
        ar_fire = axi.arvalid & axi.arready
        m.d.sync += ar_wait.eq(axi.arvalid & ~axi.arready)
        r_fire = axi.rvalid & axi.rready
        r_end = r_fire & axi.rlast
        with m.If(ar_fire):
            m.d.sync += [ar_addr.eq(ar_addr + (n << shift)), ar_left.eq(ar_left - n)]
        with m.If(ar_fire & ~r_end):
            m.d.sync += inflight.eq(inflight + 1)
        with m.Elif(~ar_fire & r_end):
            m.d.sync += inflight.eq(inflight - 1)
        m.d.sync += pending.eq(pending + ar_fire * n - r_fire)

        # R: pass beats through to the stream. Stopped with nothing more to come, the beat
        # that empties the bursts in flight ends the stream, or else an empty extra beat.
        natural = r_left == 1
        drained = halt & ~axi.arvalid
        extra = Signal()
        m.d.comb += extra.eq(drained & (pending == 0))
        last_now = natural | (drained & (pending <= 1))
        last = Signal()
        m.d.comb += last.eq(held & held_last | ~held & last_now)
        m.d.comb += [
            self.out.valid.eq(active & (axi.rvalid | extra)),
            self.out.payload.data.eq(Mux(extra, 0, axi.rdata)),
            self.out.payload.keep.eq(Mux(extra, 0, Mux(natural, last_keep, (1 << bpb) - 1))),
            self.out.payload.last.eq(last),
            axi.rready.eq(self.out.ready & active & ~extra),
        ]
        m.d.sync += [held.eq(self.out.valid & ~self.out.ready), held_last.eq(last)]
        with m.If(r_fire):
            m.d.sync += [r_left.eq(r_left - 1), beats_read.eq(beats_read + 1)]
            with m.If((axi.rresp != Resp.OKAY) & (err == DMAError.OK)):
                m.d.sync += [err.eq(DMAError.BUS), resp.eq(axi.rresp)]
        with m.If(self.out.valid & self.out.ready & last):
            m.d.sync += [self.done.eq(1), active.eq(0), r_left.eq(0), ar_left.eq(0)]

        # Write channels idle.
        m.d.comb += [axi.awvalid.eq(0), axi.wvalid.eq(0), axi.bready.eq(1)]
        return m


class DMAWriter(_DMABase):
    """Writes a byte stream (up to ``last``) to memory from ``addr``, at most ``length`` bytes.

    Parameters
    ----------
    addr_width : int
        AXI address bits (12 to 64).
    data_width : int
        AXI data and stream width: 32 or 64.
    max_burst : int
        Beats per burst, a power of two from 2 to 256.

    Attributes
    ----------
    cmd : In(stream.Signature(dma_command(addr_width)))
        ``length`` is the capacity in bytes.
    inp : In(stream.Signature(bus_beat(data_width)))
        ``keep`` must be contiguous from byte 0; only the final beat may be partial.
    done, error, bus_resp, busy :
        As for :class:`DMAReader`.
    written : Out(LEN_W)
        Bytes stored by the last command (valid with ``done``).
    axi : Out(AXI4Signature(addr_width, data_width))
        Only the write channels are driven; the read channels are idle.
    """

    def __init__(self, addr_width=32, data_width=64, max_burst=16):
        _check(self, addr_width, data_width, max_burst)
        super().__init__({
            "cmd": In(stream.Signature(dma_command(addr_width))),
            "inp": In(stream.Signature(bus_beat(data_width))),
            "done": Out(1),
            "error": Out(DMAError),
            "bus_resp": Out(2),
            "written": Out(LEN_W),
            "busy": Out(1),
            "axi": Out(AXI4Signature(addr_width, data_width)),
        }, addr_width, data_width, max_burst)

    def elaborate(self, platform):
        m = Module()
        axi = self.axi
        bpb = self._data_width // 8
        shift = bpb.bit_length() - 1
        depth = 2 * self._max_burst
        max_beats = (1 << LEN_W) // bpb + 1

        m.submodules.fifo = fifo = SyncFIFOBuffered(width=self._data_width + bpb, depth=depth)

        active = Signal()  # a command is running
        draining = Signal()  # input refused or past capacity: drop beats up to last
        in_done = Signal()  # last input beat seen
        cap_left = Signal(range(max_beats + 1))  # beats that still fit
        aw_addr = Signal(self._addr_width)
        queued = Signal(range(depth + 1))  # beats in the FIFO not yet given to a burst
        w_left = Signal(range(self._max_burst + 1))  # beats of the current W burst
        b_pending = Signal(range(max_beats + 1))
        err = Signal(DMAError)
        resp = Signal(2)
        count = Signal(LEN_W)

        m.d.comb += [
            self.busy.eq(active),
            self.cmd.ready.eq(~active),
            self.error.eq(err),
            self.bus_resp.eq(resp),
            self.written.eq(count),
        ]
        m.d.sync += self.done.eq(0)

        with m.If(self.cmd.valid & self.cmd.ready):
            length = self.cmd.payload.length
            addr = self.cmd.payload.addr
            m.d.sync += [active.eq(1), in_done.eq(0), count.eq(0), resp.eq(Resp.OKAY),
                         err.eq(DMAError.OK), draining.eq(0), aw_addr.eq(addr),
                         cap_left.eq(length >> shift)]
            with m.If((length == 0) | (addr[:shift] != 0) | (length[:shift] != 0)):
                m.d.sync += [err.eq(DMAError.BAD_COMMAND), draining.eq(1)]

        # Input: into the FIFO while capacity lasts; otherwise drop up to last.
        keep_bytes = Signal(range(bpb + 1))
        m.d.comb += keep_bytes.eq(sum(self.inp.payload.keep[i] for i in range(bpb)))
        take = Signal()
        m.d.comb += [
            take.eq(active & ~in_done & ~draining & (cap_left != 0)),
            fifo.w_data.eq(self.inp.payload.data | (self.inp.payload.keep << self._data_width)),
            fifo.w_en.eq(self.inp.valid & take),
            self.inp.ready.eq(active & ~in_done & (~take | fifo.w_rdy)),
        ]
        pushed = fifo.w_en & fifo.w_rdy
        with m.If(self.inp.valid & self.inp.ready):
            with m.If(self.inp.payload.last):
                m.d.sync += in_done.eq(1)
            with m.If(take):
                m.d.sync += [cap_left.eq(cap_left - 1), count.eq(count + keep_bytes)]
            with m.Elif(~draining):  # past capacity
                m.d.sync += [draining.eq(1), err.eq(DMAError.OVERFLOW)]

        # AW: a full burst is waiting, or the input has ended and beats remain.
        n, lim = self._burst_beats(m, aw_addr, queued, "aw")
        issue = Signal()
        m.d.comb += issue.eq((w_left == 0) & (queued != 0) & ((queued >= lim) | in_done))
        m.d.comb += [
            axi.awid.eq(0), axi.awaddr.eq(aw_addr), axi.awlen.eq(n - 1),
            axi.awsize.eq(shift), axi.awburst.eq(1),
            axi.awvalid.eq(issue),
        ]
        aw_fire = axi.awvalid & axi.awready
        with m.If(aw_fire):
            m.d.sync += [aw_addr.eq(aw_addr + (n << shift)), w_left.eq(n)]

        # W: stream the current burst out of the FIFO.
        m.d.comb += [
            axi.wdata.eq(fifo.r_data[:self._data_width]),
            axi.wstrb.eq(fifo.r_data[self._data_width:]),
            axi.wlast.eq(w_left == 1),
            axi.wvalid.eq((w_left != 0) & fifo.r_rdy),
            fifo.r_en.eq((w_left != 0) & axi.wready),
        ]
        w_fire = axi.wvalid & axi.wready
        with m.If(w_fire):
            m.d.sync += w_left.eq(w_left - 1)
        m.d.sync += queued.eq(queued + pushed - (aw_fire * n))

        # B: count responses; record the first error.
        m.d.comb += axi.bready.eq(1)
        b_fire = axi.bvalid & axi.bready
        m.d.sync += b_pending.eq(b_pending + aw_fire - b_fire)
        with m.If(b_fire & (axi.bresp != Resp.OKAY) & (err == DMAError.OK)):
            m.d.sync += [err.eq(DMAError.BUS), resp.eq(axi.bresp)]

        with m.If(active & in_done & (queued == 0) & (w_left == 0) & (b_pending == 0)
                  & ~aw_fire):
            m.d.sync += [active.eq(0), self.done.eq(1)]

        # Read channels idle.
        m.d.comb += [axi.arvalid.eq(0), axi.rready.eq(1)]
        return m
