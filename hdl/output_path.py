"""The accelerator's output path: accumulator tile buffer, drain, ReLU, BFP8 conversion, filter,
HBM encoding, RAW records (``docs/architecture.md``, "Output path").

It sits between the GEMM engine's output stream and the DMA writers::

    engine o ─► C buffer (max_m x ceil(max_n/16) words of 16 accumulators) ◄─► carry read port
                   │ drain: rows 0..m-1, column blocks 0..ceil(n/16)-1, one block per cycle
                   ▼
             column mask (columns >= n: reset state) ─► ReLU (optional)
                   │
                   ├─ RAW ──► RawSerializer ─────────────────────────────────────► o_fwd
                   ▼
             BFPConverter ──┬─────────────────────────────► HBM encoder ─────────► o_fwd
                            └─► SparsityFilter (te, tm, base; statistics) ─► HBM encoder ─► o_filt

**C buffer.** One word per (row, column block of 16): 16 entries ``{s: signed 32, ea: unsigned
10}``. The engine's task beats ``{row, grp, mant[R], exp[R]}`` are written in place at once (the
input is always ready, one beat per cycle, any order): task ``(row, grp)`` holds columns
``grp*R .. grp*R + R - 1``, i.e. entries ``(grp % (16/R)) * R ..`` of word ``(row, grp // (16/R))``
(a write port with a granularity of R entries). A beat with ``row >= max_m`` or ``grp >=
max_n / R`` cannot come from the engine; it is dropped and sets the sticky ``i_dropped``.

**Drain.** A ``DRAIN`` command reads the words of rows ``0..m-1`` and column blocks
``0..ceil(n/16)-1`` in row-major order, one per cycle through a stalling pipeline. Entries of
columns ``>= n`` come out in the reset state ``(0, 0)`` whatever the buffer holds (with R < 16
the engine never writes the groups of a block beyond ``ceil(n/R)``): the tensor covers
``ceil(n/16) * 16`` columns and the padding columns are zero, as ``golden.nn`` pads a converter
input. With ``relu`` set, a negative accumulator becomes the reset state
(``golden.gemm.Accumulator.relu``). Then:

* HBM mode (``raw = 0``): the :class:`~hdl.bfp_converter.BFPConverter` turns each block into
  BFP8; the BFP8 blocks go (``fwd = 1``) to an HBM encoder whose bytes leave on ``o_fwd`` (the
  unfiltered copy) and always through the :class:`~hdl.sparsity_filter.SparsityFilter` with the
  command's ``te``, ``tm``, ``base``, whose output goes (``filt = 1``) to a second HBM encoder
  and ``o_filt``. The statistics count every HBM-mode drain (``filt = 0`` drops the filter's
  output after counting); ``tm = 0`` filters nothing.
* RAW mode (``raw = 1``): the masked accumulators leave on ``o_fwd`` as 8-byte records,
  ``m * n`` of them in row-major order, columns ``< n`` only (:mod:`hdl.output_raw`); ``fwd``,
  ``filt``, ``te``, ``tm`` and ``base`` are ignored, the statistics are not touched.

Each enabled output carries one tensor per drain, ending with ``last``.

**Commands** (``cmd``, payload :func:`cmd_layout`) are taken only when the path is idle
(``busy`` low); each ends with a one-cycle ``done`` pulse and its ``status``
(:class:`Status`, valid from the ``done`` cycle until the next command is accepted):

* ``DRAIN``: as above; ``done`` comes the cycle after the last beat left on every enabled
  output and the statistics have settled. ``clear_stats = 1`` restarts the statistics at the
  start of this drain (else they add up over drains: one tensor in several tiles).
  ``m`` and ``n`` must be in ``1..max_m`` and ``1..max_n``, else status ``SHAPE``: nothing is read
  or counted, but every enabled output still carries an empty tensor (one beat ``keep = 0,
  last = 1``) so that a DMA writer waiting for ``last`` finishes. A HBM-mode drain with
  ``fwd = filt = 0`` is refused (``NO_OUTPUT``, done the next cycle, nothing sent).
* ``CLEAR_STATS``: zeroes the statistics; ``done`` when they read 0.
* any other op: ``CMD``, done the next cycle.

**Carry read port.** For K split over several engine RUNs, the engine will start a task from
the accumulators the buffer holds: ``carry_en`` with ``carry_addr = {row, grp}`` in cycle ``c``
gives ``carry_data`` (the task's R accumulators, ``{mant[R], exp[R]}``) in cycle ``c + 1``,
held until the next read. The port shares the buffer's read port with the drain: it works while
``carry_ready`` is high (no drain is reading; ``carry_en`` is ignored otherwise). A write to the
same word in cycle ``c`` is not seen (read-before-write).

**No double buffering.** Input beats are always taken, also during a drain; the sequencer must
not run the engine into the buffer while a drain still reads it (``carry_ready`` low).

Timing (measured by ``verif/test_output_path.py``): the first block reaches the converter 3
cycles after the command is accepted, then one block per cycle while the encoders and the
output buses keep up; see ``docs/architecture.md`` for latencies and throughput.
"""

from amaranth import Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .bfp_converter import LANES, BFPConverter
from .bfp_layouts import ACC_EXP_W, ACC_W, BLOCK, bus_beat, check_bus_width, reject
from .config import EngineConfig
from .engine_lane import out_layout, widths
from .hbm_encoder import HBMEncoder
from .output_raw import RawSerializer
from .sparsity_filter import COUNT_W, HIST_BINS, SparsityFilter

__all__ = [
    "check_drain_lanes",
    "Op",
    "Status",
    "ENTRY",
    "cmd_layout",
    "carry_addr_layout",
    "carry_data_layout",
    "buffer_geometry",
    "OutputPath",
]


class Op(enum.Enum, shape=2):
    """Output-path commands (values 2 and 3 are refused with :attr:`Status.CMD`)."""

    DRAIN = 0
    CLEAR_STATS = 1


class Status(enum.Enum, shape=2):
    """Verdict of the last command."""

    OK = 0
    SHAPE = 1  #: DRAIN with m or n zero or too large: empty tensors sent, nothing read
    CMD = 2  #: unknown op
    NO_OUTPUT = 3  #: HBM-mode DRAIN with fwd = filt = 0


ENTRY = data.StructLayout({"s": signed(ACC_W), "ea": unsigned(ACC_EXP_W)})  #: one accumulator


def cmd_layout(cfg: EngineConfig) -> data.StructLayout:
    """Command payload (first field in the low bits)."""
    w = widths(cfg)
    return data.StructLayout({
        "op": Op,
        "m": w["m"] + 1,  # rows to drain, 1..max_m
        "n": w["n"] + 1,  # columns, 1..max_n
        "relu": 1,  # ReLU on the accumulators
        "raw": 1,  # RAW records on o_fwd instead of HBM streams
        "fwd": 1,  # HBM mode: the unfiltered copy on o_fwd
        "filt": 1,  # HBM mode: the filtered copy on o_filt
        "clear_stats": 1,  # restart the statistics at this drain's start
        "te": 8,  # filter threshold exponent
        "tm": 8,  # filter threshold mantissa (0: drop nothing)
        "base": 8,  # histogram base
    })


def carry_addr_layout(cfg: EngineConfig) -> data.StructLayout:
    """Carry read address: the task ``(row, grp)``."""
    w = widths(cfg)
    return data.StructLayout({"row": w["m"], "grp": w["g"]})


def carry_data_layout(cfg: EngineConfig) -> data.StructLayout:
    """Carry read data: the task's R accumulators (the fields of the engine's output beat)."""
    return data.StructLayout({
        "mant": data.ArrayLayout(signed(ACC_W), cfg.rows),
        "exp": data.ArrayLayout(unsigned(ACC_EXP_W), cfg.rows),
    })


def buffer_geometry(cfg: EngineConfig) -> dict:
    """Sizes of the C buffer: ``words``, ``word_bits``, ``bits`` and ``column_blocks``."""
    cb = -(-cfg.max_n // BLOCK)
    word_bits = BLOCK * ENTRY.size
    return {"column_blocks": cb, "words": cfg.max_m * cb, "word_bits": word_bits,
            "bits": cfg.max_m * cb * word_bits}


def check_drain_lanes(drain_lanes) -> int:
    """``drain_lanes`` if it is one of :data:`hdl.bfp_converter.LANES`, else ``ValueError``."""
    if isinstance(drain_lanes, bool) or not isinstance(drain_lanes, int) \
            or drain_lanes not in LANES:
        raise ValueError(f"Drain lanes must be one of {', '.join(map(str, LANES))}, not "
                         f"{drain_lanes!r}")
    return drain_lanes


class OutputPath(wiring.Component):
    """Accumulator tile buffer and drain to HBM v1 / RAW byte streams (module docstring).

    Parameters
    ----------
    cfg : EngineConfig
        The engine's configuration (R, max_m, max_n).
    bus_width : int
        Width of ``o_fwd`` and ``o_filt`` in bits: 32 or 64 (the DMA writers' width).
    drain_lanes : int
        Values per cycle of the BFP8 converter, the sparsity filter and the two HBM encoders
        (their ``lanes``): 16 (one block per cycle, the default), or 8, 4, 2, 1 for an FPGA that
        cannot hold the 16-wide units (one block every ``16 // drain_lanes`` cycles; the bytes
        and statistics are the same).

    Attributes
    ----------
    i : In(stream.Signature(out_layout(cfg)))
        The engine's task beats ``{row, grp, mant[R], exp[R]}``; always ready.
    cmd : In(stream.Signature(cmd_layout(cfg)))
        Commands (:class:`Op`); ready when not ``busy``.
    o_fwd, o_filt : Out(stream.Signature(bus_beat(bus_width)))
        Byte streams to the DMA writers: one tensor per drain, ending with ``last``.
    busy : Out(1)
        A command is being executed.
    done : Out(1)
        One-cycle pulse: the command finished.
    status : Out(Status)
        Verdict of the last command (valid from its ``done``).
    cycles : Out(32)
        Cycles of the last command, from its acceptance to ``done``.
    values, zeros, filtered_zeros : Out(32)
        Filter statistics (saturating), as :class:`~hdl.sparsity_filter.SparsityFilter`.
    hist : Out(data.ArrayLayout(32, 32))
        Exponent histogram, bin 0 in the low bits.
    stats_busy : Out(1)
        Blocks or a clear still on their way into the statistics.
    carry_en : In(1)
    carry_addr : In(carry_addr_layout(cfg))
    carry_data : Out(carry_data_layout(cfg))
        The carry read port (module docstring).
    carry_ready : Out(1)
        The carry read port can be used (no drain is reading the buffer).
    i_dropped : Out(1)
        Sticky: an input beat was out of range; cleared when a command is accepted.

    Raises
    ------
    TypeError
        If ``cfg`` is not an :class:`~hdl.config.EngineConfig`.
    ValueError
        If ``bus_width`` is not 32 or 64, or ``drain_lanes`` not one of 16, 8, 4, 2, 1.
    """

    def __init__(self, cfg: EngineConfig, bus_width: int = 64, *, drain_lanes: int = BLOCK):
        if not isinstance(cfg, EngineConfig):
            reject(self, TypeError(f"cfg must be an EngineConfig, not {cfg!r}"))
        try:
            check_bus_width(bus_width)
            check_drain_lanes(drain_lanes)
        except ValueError as exc:
            reject(self, exc)
        self._cfg = cfg
        self._bus_width = bus_width
        self._drain_lanes = drain_lanes
        super().__init__({
            "i": In(stream.Signature(out_layout(cfg))),
            "cmd": In(stream.Signature(cmd_layout(cfg))),
            "o_fwd": Out(stream.Signature(bus_beat(bus_width))),
            "o_filt": Out(stream.Signature(bus_beat(bus_width))),
            "busy": Out(1),
            "done": Out(1),
            "status": Out(Status),
            "cycles": Out(32),
            "values": Out(COUNT_W),
            "zeros": Out(COUNT_W),
            "filtered_zeros": Out(COUNT_W),
            "hist": Out(data.ArrayLayout(unsigned(COUNT_W), HIST_BINS)),
            "stats_busy": Out(1),
            "carry_en": In(1),
            "carry_addr": In(carry_addr_layout(cfg)),
            "carry_data": Out(carry_data_layout(cfg)),
            "carry_ready": Out(1),
            "i_dropped": Out(1),
        })

    @property
    def cfg(self) -> EngineConfig:
        return self._cfg

    @property
    def bus_width(self) -> int:
        return self._bus_width

    @property
    def drain_lanes(self) -> int:
        return self._drain_lanes

    def elaborate(self, platform):
        m = Module()
        cfg = self._cfg
        R = cfg.rows
        G = BLOCK // R  # engine groups per word
        lg_g = G.bit_length() - 1
        geo = buffer_geometry(cfg)
        CB = geo["column_blocks"]
        w = widths(cfg)

        # ---- C buffer ---------------------------------------------------------------------
        mem = Memory(shape=data.ArrayLayout(ENTRY, BLOCK), depth=geo["words"], init=[])
        m.submodules.cbuf = mem
        wp = mem.write_port(granularity=R)
        rp = mem.read_port()

        beat = self.i.payload
        m.d.comb += self.i.ready.eq(1)
        in_range = (beat.row < cfg.max_m) & (beat.grp < cfg.groups)
        w_cb = beat.grp >> lg_g
        w_seg = beat.grp[:lg_g] if lg_g else Const(0, 1)
        m.d.comb += wp.addr.eq(beat.row * CB + w_cb)
        with m.If(self.i.valid & in_range):
            m.d.comb += wp.en.eq(Const(1, G) << w_seg)
        for k in range(BLOCK):
            m.d.comb += [wp.data[k].s.eq(beat.mant[k % R]), wp.data[k].ea.eq(beat.exp[k % R])]
        with m.If(self.cmd.valid & self.cmd.ready):
            m.d.sync += self.i_dropped.eq(0)
        with m.If(self.i.valid & ~in_range):
            m.d.sync += self.i_dropped.eq(1)

        # ---- command registers ------------------------------------------------------------
        running = Signal()  # a DRAIN or CLEAR_STATS in progress (busy)
        status = Signal(Status)
        d_m = Signal(w["m"] + 1)
        d_n = Signal(w["n"] + 1)
        d_nb = Signal(range(CB + 1))  # column blocks per row
        d_relu = Signal()
        d_raw = Signal()
        d_fwd = Signal()
        d_filt = Signal()
        need_f = Signal()  # o_fwd carries this drain's tensor
        need_s = Signal()  # o_filt carries it
        fin_f = Signal()
        fin_s = Signal()
        te, tm, base = Signal(8), Signal(8), Signal(8)
        n_blocks = Signal(32)
        m.d.comb += [self.busy.eq(running), self.status.eq(status)]

        # ---- issue: the drain's block addresses, row-major ----------------------------------
        is_active = Signal()
        is_row = Signal(w["m"] + 1)
        is_cb = Signal(range(CB + 1))
        is_lanes = Signal(range(BLOCK + 1))
        is_last = Signal()
        left = Signal(signed(w["n"] + 2))
        m.d.comb += [
            left.eq(d_n - (is_cb << 4)),
            is_lanes.eq(Mux(left >= BLOCK, BLOCK, left[:5])),
            is_last.eq((is_row == d_m - 1) & (is_cb == d_nb - 1)),
        ]

        # pipeline: D1 (buffer data out), D2 (masked block) -> converter / serializer
        v1 = Signal()
        lanes1 = Signal(range(BLOCK + 1))
        last1 = Signal()
        v2 = Signal()
        # reset-less: read only with v2 (or as the empty tensor's ignored payload); a reset
        # on top of the column/ReLU zeroing below would cost a LUT per bit on an FPGA
        blk2 = Signal(data.ArrayLayout(ENTRY, BLOCK), reset_less=True)
        lanes2 = Signal(range(BLOCK + 1))
        last2 = Signal()
        adv = Signal()

        conv = m.submodules.conv = BFPConverter(lanes=self._drain_lanes)
        ser = m.submodules.raw = RawSerializer(self._bus_width)
        inj = Signal()  # RAW drain refused for its shape: send the empty tensor
        m.d.comb += adv.eq(~v2 | Mux(d_raw, ser.i.ready, conv.i.ready))

        # the read port: the drain's while it reads, else the carry port's
        drain_port = Signal()
        m.d.comb += [drain_port.eq(is_active | v1), self.carry_ready.eq(~drain_port)]
        with m.If(drain_port):
            m.d.comb += [rp.addr.eq(is_row * CB + is_cb), rp.en.eq(adv)]
        with m.Else():
            ca = self.carry_addr
            m.d.comb += [rp.addr.eq(ca.row * CB + (ca.grp >> lg_g)), rp.en.eq(self.carry_en)]

        with m.If(adv):
            m.d.sync += [v1.eq(is_active), lanes1.eq(is_lanes), last1.eq(is_last)]
            with m.If(is_active):
                with m.If(is_last):
                    m.d.sync += is_active.eq(0)
                with m.Elif(is_cb == d_nb - 1):
                    m.d.sync += [is_cb.eq(0), is_row.eq(is_row + 1)]
                with m.Else():
                    m.d.sync += is_cb.eq(is_cb + 1)
            # D1 -> D2: column mask and ReLU
            m.d.sync += [v2.eq(v1), lanes2.eq(lanes1), last2.eq(last1)]
            for k in range(BLOCK):
                e = rp.data[k]
                keep = (k < lanes1) & ~(d_relu & (e.s < 0))
                m.d.sync += [blk2[k].s.eq(Mux(keep, e.s, 0)), blk2[k].ea.eq(Mux(keep, e.ea, 0))]

        # D2 -> converter (HBM mode) or serializer (RAW)
        for k in range(BLOCK):
            m.d.comb += [conv.i.payload.mant[k].eq(blk2[k].s),
                         conv.i.payload.exp[k].eq(blk2[k].ea),
                         ser.i.payload.acc.mant[k].eq(blk2[k].s),
                         ser.i.payload.acc.exp[k].eq(blk2[k].ea)]
        m.d.comb += [
            conv.i.valid.eq(v2 & ~d_raw),
            ser.i.valid.eq((v2 & d_raw) | inj),
            ser.i.payload.lanes.eq(Mux(inj, 0, lanes2)),
            ser.i.payload.last.eq(inj | last2),
        ]
        with m.If(inj & ser.i.ready):
            m.d.sync += inj.eq(0)

        # ---- fork: the converter's blocks to the fwd encoder and the filter -----------------
        enc_f = m.submodules.enc_fwd = HBMEncoder(self._bus_width, lanes=self._drain_lanes)
        enc_s = m.submodules.enc_filt = HBMEncoder(self._bus_width, lanes=self._drain_lanes)
        flt = m.submodules.filter = SparsityFilter(lanes=self._drain_lanes)
        taken_f = Signal()
        taken_s = Signal()
        want_f = d_fwd & ~taken_f
        want_s = ~taken_s
        m.d.comb += [
            enc_f.i.payload.eq(conv.o.payload),
            flt.i.payload.eq(conv.o.payload),
            enc_f.i.valid.eq(conv.o.valid & want_f),
            flt.i.valid.eq(conv.o.valid & want_s),
            conv.o.ready.eq((~want_f | enc_f.i.ready) & (~want_s | flt.i.ready)),
        ]
        with m.If(conv.o.valid & conv.o.ready):
            m.d.sync += [taken_f.eq(0), taken_s.eq(0)]
        with m.Else():
            with m.If(enc_f.i.valid & enc_f.i.ready):
                m.d.sync += taken_f.eq(1)
            with m.If(flt.i.valid & flt.i.ready):
                m.d.sync += taken_s.eq(1)

        # the filter: its output to the second encoder, or dropped after counting
        m.d.comb += [
            flt.te.eq(te), flt.tm.eq(tm), flt.base.eq(base),
            enc_s.i.payload.eq(flt.o.payload),
            enc_s.i.valid.eq(flt.o.valid & d_filt),
            flt.o.ready.eq(~d_filt | enc_s.i.ready),
        ]
        clr1, clr2 = Signal(), Signal()
        m.d.sync += [clr1.eq(flt.clear), clr2.eq(clr1)]
        m.d.comb += self.stats_busy.eq(flt.stats_busy | flt.clear | clr1 | clr2)
        m.d.comb += [
            self.values.eq(flt.values), self.zeros.eq(flt.zeros),
            self.filtered_zeros.eq(flt.filtered_zeros), self.hist.eq(flt.hist),
        ]

        # encoder commands: the drain's block count, offered at its start
        pend_f, pend_s = Signal(), Signal()
        m.d.comb += [
            enc_f.cmd.valid.eq(pend_f), enc_f.cmd.payload.eq(n_blocks),
            enc_s.cmd.valid.eq(pend_s), enc_s.cmd.payload.eq(n_blocks),
        ]
        with m.If(enc_f.cmd.ready):
            m.d.sync += pend_f.eq(0)
        with m.If(enc_s.cmd.ready):
            m.d.sync += pend_s.eq(0)

        # ---- outputs ----------------------------------------------------------------------
        with m.If(d_raw):
            wiring.connect(m, ser.o, wiring.flipped(self.o_fwd))
        with m.Else():
            wiring.connect(m, enc_f.o, wiring.flipped(self.o_fwd))
        wiring.connect(m, enc_s.o, wiring.flipped(self.o_filt))
        with m.If(self.o_fwd.valid & self.o_fwd.ready & self.o_fwd.payload.last):
            m.d.sync += fin_f.eq(1)
        with m.If(self.o_filt.valid & self.o_filt.ready & self.o_filt.payload.last):
            m.d.sync += fin_s.eq(1)

        # ---- carry read data --------------------------------------------------------------
        c_seg = Signal(max(1, lg_g))
        with m.If(self.carry_en & ~drain_port):
            m.d.sync += c_seg.eq(self.carry_addr.grp[:lg_g] if lg_g else 0)
        for r in range(R):
            for g in range(G):
                with m.If(c_seg == g):
                    e = rp.data[g * R + r]
                    m.d.comb += [self.carry_data.mant[r].eq(e.s),
                                 self.carry_data.exp[r].eq(e.ea)]

        # ---- command FSM ------------------------------------------------------------------
        c = self.cmd.payload
        m.d.comb += self.cmd.ready.eq(~running)
        m.d.sync += self.done.eq(0)
        with m.If(running):
            m.d.sync += self.cycles.eq(self.cycles + 1)
            finished = (~is_active & ~v1 & ~v2 & ~pend_f & ~pend_s & ~inj
                        & (fin_f | ~need_f) & (fin_s | ~need_s) & ~self.stats_busy)
            with m.If(finished):
                m.d.sync += [running.eq(0), self.done.eq(1)]
        with m.If(self.cmd.valid & self.cmd.ready):
            nb = (c.n + BLOCK - 1) >> 4
            bad_shape = (c.m == 0) | (c.m > cfg.max_m) | (c.n == 0) | (c.n > cfg.max_n)
            m.d.sync += [self.cycles.eq(1), fin_f.eq(0), fin_s.eq(0)]
            with m.Switch(c.op):
                with m.Case(Op.CLEAR_STATS):
                    m.d.comb += flt.clear.eq(1)
                    m.d.sync += [status.eq(Status.OK), running.eq(1),
                                 need_f.eq(0), need_s.eq(0)]
                with m.Case(Op.DRAIN):
                    with m.If(~c.raw & ~c.fwd & ~c.filt):
                        m.d.sync += [status.eq(Status.NO_OUTPUT), self.done.eq(1)]
                    with m.Else():
                        m.d.sync += [
                            running.eq(1),
                            d_m.eq(c.m), d_n.eq(c.n), d_nb.eq(nb), d_relu.eq(c.relu),
                            d_raw.eq(c.raw), d_fwd.eq(c.fwd & ~c.raw),
                            d_filt.eq(c.filt & ~c.raw),
                            te.eq(c.te), tm.eq(c.tm), base.eq(c.base),
                            need_f.eq(c.raw | c.fwd), need_s.eq(c.filt & ~c.raw),
                            pend_f.eq(~c.raw & c.fwd), pend_s.eq(~c.raw & c.filt),
                            is_row.eq(0), is_cb.eq(0),
                        ]
                        with m.If(bad_shape):
                            m.d.sync += [status.eq(Status.SHAPE), n_blocks.eq(0),
                                         inj.eq(c.raw)]
                        with m.Else():
                            m.d.sync += [status.eq(Status.OK), n_blocks.eq(c.m * nb),
                                         is_active.eq(1)]
                            with m.If(c.clear_stats):
                                m.d.comb += flt.clear.eq(1)
                with m.Default():
                    m.d.sync += [status.eq(Status.CMD), self.done.eq(1)]
        return m
