"""Sparse BFP8 GEMM engine: L decoupled lanes of R PEs that skip zeros in FP, BP and WG.

The engine computes one tile ``C (M x N) = A (M x K) @ B (N x K).T`` from on-chip buffers,
bit-exact with :func:`golden.gemm.matmul` (``docs/architecture.md``, "GEMM engine"):

* FP: A = X (sparse activations), B = W (dense weights);
* BP: A = dY (sparse errors), B = W^T, with the output mask relu'(Y_prev): outputs whose mask
  bit is 0 are not computed (they keep their starting state: the reset state ``S = 0, ea = 0``,
  or the carried value), a task whose R outputs are all masked costs one cycle;
* WG: A = reblocked dY, B = reblocked X, both sparse: a nonzero of A is skipped when the R
  B values it would meet are all zero (column mask of the group).

Work is split into *tasks* (output row ``i``, column group ``g`` of R outputs), handed out in
order by a dispatcher to whichever lane asks first (one grant per cycle), so lanes that meet
sparse rows simply take more tasks; each lane walks its task's nonzeros one per cycle
(:class:`~hdl.engine_lane.Lane`). Finished tasks leave through one round-robin output stream,
one task (R accumulators) per beat, tagged with ``(row, grp)``: tasks finish out of order.

Interfaces (all ``amaranth.lib.stream``):

* ``cmd``: ``{op, m, n, use_mask, carry}``; ``CLEAR_A`` empties A, ``CLEAR_B`` zeroes B (both
  also clear the status), ``RUN`` computes the tile ``m x n`` (K is what was loaded) and pulses
  ``done`` when its last output beat has been accepted (at once if the status is an error);
* ``a_in``, ``b_in``: block streams (:mod:`hdl.engine_load`);
* ``om_in``: output-mask words ``{row, grp, bits}`` (bit r = column ``grp*R + r``);
* ``o``: ``{row, grp, mant[R], exp[R]}``; columns ``>= n`` come out in the reset state;
* carry read port ``carry_en``, ``carry_addr``, ``carry_data``, ``carry_ready``: the mirror of
  :class:`~hdl.output_path.OutputPath`'s, connected one to one.

**K-segment carry.** A RUN with ``carry = 1`` continues a K chain: every task starts its R
accumulators from the values the output path holds for ``(row, grp)`` instead of the reset
state, so a chain of RUNs over K segments equals one :func:`golden.gemm.matmul` over the whole
K (``init=`` the previous segment's result). Masked outputs, columns ``< n`` of tasks without
a nonzero block and outputs whose partials are all zero come out with the carried value;
columns ``>= n`` still come out in the reset state. The dispatcher reads the carry port in the
cycle it grants a task (one grant, so one read, per cycle) and grants nothing while
``carry_ready`` is low; the lane takes the data the next cycle into its carry queue. With
``carry_ready`` high a carry RUN takes exactly the cycles of a ``carry = 0`` RUN.

Performance counters of the last run: ``cycles`` (command to done), ``mac_cycles`` (lane
cycles that fed a nonzero to the PEs), ``lane_macs`` (the same, per lane) and
``macs_nonzero`` (products with both operands nonzero and an enabled output).
"""

import enum as py_enum

from amaranth import Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .config import BLOCK, EngineConfig
from .engine_lane import Lane, check_align_share, hdr_layout, out_layout, row_layout, widths
from .engine_load import ALoader, BLoader, Status, beat_layout
from .output_path import carry_addr_layout, carry_data_layout

__all__ = ["Engine", "Op", "Status", "check_carry_bram_lanes", "cmd_layout", "om_layout"]


class Op(enum.Enum, shape=2):
    """Engine commands."""

    CLEAR_A = 0
    CLEAR_B = 1
    RUN = 2


def cmd_layout(cfg: EngineConfig):
    """Command payload."""
    w = widths(cfg)
    return data.StructLayout({"op": Op, "m": w["m"] + 1, "n": w["n"] + 1, "use_mask": 1,
                               "carry": 1})


def om_layout(cfg: EngineConfig):
    """Output-mask word payload: R mask bits of task (row, grp)."""
    w = widths(cfg)
    return data.StructLayout({"row": w["m"], "grp": w["g"], "bits": cfg.rows})


def check_carry_bram_lanes(value, cfg: EngineConfig, owner=None):
    """``ValueError`` unless ``value`` is an int from 0 to ``cfg.lanes`` (``owner``, an
    elaboratable being constructed, is then marked as never to be elaborated)."""
    if (not isinstance(value, int) or isinstance(value, bool)
            or not 0 <= value <= cfg.lanes):
        if owner is not None:
            owner._MustUse__silence = True
        raise ValueError(f"carry_bram_lanes must be an integer from 0 to {cfg.lanes} "
                         f"(the lanes of {cfg.name!r}), not {value!r}")


def _lane_buffers(m, name, shape, depth, gran, write, reads, loader_read, computing):
    """One engine buffer with a read port per lane: ``(L + 1) // 2`` copies of a dual-port
    RAM, every copy written by the loader.

    Port A of copy ``c`` is the write port and, at the same address, lane ``2c``'s read port
    while ``computing`` (the loaders write only while the engine is not computing, and the
    lanes read only while it is); port B is lane ``2c + 1``'s read port and, in copy 0 while
    not computing, ``loader_read`` (the B loader reads an exponent word a cycle before it
    writes it back, never in the cycle of a write). Port B is an asynchronous read port and a
    flip-flop, so that Yosys's ``no_rw_check`` applies to it: the FPGA flow makes each copy
    one block RAM (or LUT RAM) with its two ports instead of a copy per read port. Every read
    behaves as a synchronous read port: data the cycle after the address.
    """
    w_en, w_addr, w_data = write
    for c in range(0, len(reads), 2):
        mem = Memory(shape=shape, depth=depth, init=[], attrs={"no_rw_check": 1})
        m.submodules[f"{name}{c // 2}"] = mem
        wp = mem.write_port(granularity=gran) if gran else mem.write_port()
        rp = mem.read_port(transparent_for=())
        addr = Signal.like(w_addr, name=f"{name}{c // 2}_a_addr")
        lane_addr, lane_data = reads[c]
        m.d.comb += [addr.eq(Mux(computing, lane_addr, w_addr)),
                     wp.addr.eq(addr), wp.en.eq(w_en), wp.data.eq(w_data),
                     rp.addr.eq(addr), lane_data.eq(rp.data)]
        b_users = []
        if c + 1 < len(reads):
            b_users.append(reads[c + 1])
        if c == 0 and loader_read is not None:
            b_users.append(loader_read)
        if not b_users:
            continue
        bp = mem.read_port(domain="comb")
        b_addr = b_users[0][0] if len(b_users) == 1 else Mux(computing, b_users[0][0],
                                                               b_users[1][0])
        b_data = Signal(shape, name=f"{name}{c // 2}_b_data")
        m.d.comb += bp.addr.eq(b_addr)
        m.d.sync += b_data.eq(bp.data)
        for _, data_ in b_users:
            m.d.comb += data_.eq(b_data)


class _State(py_enum.Enum):
    IDLE = 0
    CLEAR_B = 1
    FIN = 2
    COMPUTE = 3


class Engine(wiring.Component):
    """The sparse BFP8 GEMM engine (see the module docstring).

    Parameters
    ----------
    cfg : EngineConfig
        Array size and buffer depths (:data:`hdl.config.CONFIGS`).
    carry_bram_lanes : int
        How many lanes (0 to ``cfg.lanes``, the first ones) keep their carry queue in block
        RAM instead of distributed RAM (:class:`~hdl.engine_lane.Lane`'s ``carry_bram``): an
        FPGA area trade, the results and cycles are the same.
    align_share : int
        PEs per align unit in every lane (:class:`~hdl.engine_lane.Lane`'s ``align_share``,
        a power of two from 1 to R): an FPGA area trade, the results are the same but a
        block with fewer than ``align_share`` nonzeros costs ``align_share`` cycles.

    Attributes
    ----------
    cmd : In(stream.Signature(cmd_layout(cfg)))
    a_in, b_in : In(stream.Signature(beat_layout(...)))
    om_in : In(stream.Signature(om_layout(cfg)))
    o : Out(stream.Signature(out_layout(cfg)))
    busy : Out(1)
        A command is being executed.
    done : Out(1)
        One-cycle pulse: the RUN command finished.
    status : Out(Status)
        First error since the last clear.
    cycles, mac_cycles : Out(32)
        Counters of the last RUN.
    lane_macs : Out(data.ArrayLayout(32, lanes))
        Per-lane nonzero cycles of the last RUN.
    macs_nonzero : Out(32)
        Products of the last RUN with both operands nonzero and an enabled output (mask bit
        set or no mask, column ``< n``): ``golden.jobs``' ``macs_nonzero`` of the tile.
    carry_en : Out(1)
    carry_addr : Out(carry_addr_layout(cfg))
    carry_data : In(carry_data_layout(cfg))
    carry_ready : In(1)
        Carry read port, the mirror of :class:`~hdl.output_path.OutputPath`'s (connect them
        one to one): with ``carry = 1`` every grant reads its task's accumulators
        (``carry_en`` with ``carry_addr = {row, grp}``, data used the next cycle); no task is
        granted while ``carry_ready`` is low.

    Raises
    ------
    TypeError
        If ``cfg`` is not an :class:`~hdl.config.EngineConfig`.
    ValueError
        If ``carry_bram_lanes`` or ``align_share`` is out of range.
    """

    def __init__(self, cfg: EngineConfig, *, carry_bram_lanes: int = 0, align_share: int = 1):
        if not isinstance(cfg, EngineConfig):
            self._MustUse__silence = True  # never elaborated: no "created but never used"
            raise TypeError(f"cfg must be an EngineConfig, not {cfg!r}")
        check_carry_bram_lanes(carry_bram_lanes, cfg, self)
        check_align_share(align_share, cfg, self)
        self._cfg = cfg
        self._carry_bram_lanes = carry_bram_lanes
        self._align_share = align_share
        w = widths(cfg)
        super().__init__({
            "cmd": In(stream.Signature(cmd_layout(cfg))),
            "a_in": In(stream.Signature(beat_layout(w["m"], w["kb"]))),
            "b_in": In(stream.Signature(beat_layout(w["n"], w["kb"]))),
            "om_in": In(stream.Signature(om_layout(cfg))),
            "o": Out(stream.Signature(out_layout(cfg))),
            "busy": Out(1),
            "done": Out(1),
            "status": Out(Status),
            "cycles": Out(32),
            "mac_cycles": Out(32),
            "lane_macs": Out(data.ArrayLayout(32, cfg.lanes)),
            "macs_nonzero": Out(32),
            "carry_en": Out(1),
            "carry_addr": Out(carry_addr_layout(cfg)),
            "carry_data": In(carry_data_layout(cfg)),
            "carry_ready": In(1),
        })

    @property
    def cfg(self) -> EngineConfig:
        return self._cfg

    def elaborate(self, platform):
        m = Module()
        cfg = self._cfg
        w = widths(cfg)
        R, L = cfg.rows, cfg.lanes
        lg = R.bit_length() - 1

        state = Signal(_State)
        status = Signal(Status)
        m.d.comb += [self.status.eq(status), self.busy.eq(state != _State.IDLE)]
        run_m = Signal(w["m"] + 1)
        run_n = Signal(w["n"] + 1)
        run_mask = Signal()
        run_carry = Signal()
        groups = Signal(w["n"] + 1)
        m.d.comb += groups.eq((run_n + R - 1) >> lg)

        # ---- loaders ---------------------------------------------------------------------
        al = m.submodules.a_loader = ALoader(cfg)
        bl = m.submodules.b_loader = BLoader(cfg)
        wiring.connect(m, wiring.flipped(self.a_in), al.i)
        wiring.connect(m, wiring.flipped(self.b_in), bl.i)
        idle = state == _State.IDLE
        err = status != Status.OK
        m.d.comb += [al.active.eq(idle), al.drop.eq(idle & err),
                     bl.active.eq(idle), bl.drop.eq(idle & err), al.m.eq(self.cmd.payload.m)]
        with m.If(status == Status.OK):
            with m.If(al.err != Status.OK):
                m.d.sync += status.eq(al.err)
            with m.Elif(bl.err != Status.OK):
                m.d.sync += status.eq(bl.err)

        # ---- buffers: one copy per two lanes (see _lane_buffers); per buffer the lanes'
        # port name, shape, depth, write granularity and write port (the loaders, only while
        # not computing)
        om_en, om_addr, om_bits = Signal(), Signal(w["m"] + w["g"]), Signal(R)
        buffers = {
            "a_nz": ("nz", 8, cfg.a_nz_depth, None, (al.nz_en, al.nz_addr, al.nz_data)),
            "a_hdr": ("hdr", hdr_layout(cfg), cfg.a_hdr_depth, None,
                      (al.hdr_en, al.hdr_addr, al.hdr_data)),
            "a_row": ("row", row_layout(cfg), cfg.max_m, None,
                      (al.row_en, al.row_addr, al.row_data)),
            "omask": ("om", R, 1 << (w["m"] + w["g"]), None, (om_en, om_addr, om_bits)),
            "b_mant": ("bm", 8 * R, 1 << (w["g"] + w["kb"] + 4), 8,
                       (bl.bm_en, bl.bm_addr, bl.bm_data)),
            "b_exp": ("bexp", unsigned(8 * R + BLOCK), 1 << (w["g"] + w["kb"]), 8,
                      (bl.bexp_en, bl.bexp_addr, bl.bexp_data)),
        }

        # output-mask words
        om = self.om_in.payload
        m.d.comb += [om_addr.eq(Cat(om.grp, om.row)), om_bits.eq(om.bits),
                     self.om_in.ready.eq(idle)]
        with m.If(idle & self.om_in.valid & ~err):
            with m.If((om.row >= cfg.max_m) | (om.grp >= cfg.groups)):
                m.d.sync += status.eq(Status.M_RANGE)
            with m.Else():
                m.d.comb += om_en.eq(1)

        # ---- dispatcher ------------------------------------------------------------------
        d_i = Signal(w["m"] + 1)
        d_g = Signal(w["g"] + 1)
        out_left = Signal(w["m"] + w["g"] + 2)
        computing = state == _State.COMPUTE
        lanes = []
        granted = Const(0)
        for n in range(L):
            lane = Lane(cfg, carry_bram=n < self._carry_bram_lanes,
                        align_share=self._align_share)
            m.submodules[f"lane{n}"] = lane
            lanes.append(lane)
            grant = (computing & (d_i < run_m) & lane.task_req & ~granted
                     & (~run_carry | self.carry_ready))
            granted = granted | grant
            m.d.comb += [
                lane.task_grant.eq(grant), lane.task_i.eq(d_i), lane.task_g.eq(d_g),
                lane.n.eq(run_n), lane.use_mask.eq(run_mask),
                lane.carry.eq(run_carry), lane.carry_data.eq(self.carry_data),
            ]
        for name, (port, shape, depth, gran, write) in buffers.items():
            reads = [(getattr(lane, f"{port}_addr"), getattr(lane, f"{port}_data"))
                     for lane in lanes]
            # the B loader reads the exponent word it updates (also only while not computing)
            host = (bl.bexp_raddr, bl.bexp_rdata) if name == "b_exp" else None
            _lane_buffers(m, name, shape, depth, gran, write, reads, host, computing)
        # carry: the granted task's accumulators, read at grant time; the lane takes them
        # the next cycle (the port holds its data until the next read)
        m.d.comb += [self.carry_en.eq(granted & run_carry),
                     self.carry_addr.row.eq(d_i), self.carry_addr.grp.eq(d_g)]
        with m.If(granted):
            with m.If(d_g == groups - 1):
                m.d.sync += [d_g.eq(0), d_i.eq(d_i + 1)]
            with m.Else():
                m.d.sync += d_g.eq(d_g + 1)

        # ---- output: round robin over the lanes ------------------------------------------
        rr = Signal(range(L))
        req = Signal(L)
        m.d.comb += req.eq(Cat(lane.o.valid for lane in lanes))
        hi = Signal(L)
        m.d.comb += hi.eq(req & ~((Const(2, L + 1) << rr) - 1)[:L])
        pick = Signal(L)
        sel = Signal(L)
        m.d.comb += [sel.eq(hi | (req & (hi == 0).replicate(L))),
                     pick.eq(sel & (~sel + 1))]
        take = Signal()
        m.d.comb += take.eq((~self.o.valid | self.o.ready) & (req != 0))
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += [self.o.valid.eq(0), out_left.eq(out_left - 1)]
        with m.If(take):
            m.d.sync += self.o.valid.eq(1)
        payload = 0
        for n, lane in enumerate(lanes):
            m.d.comb += lane.o.ready.eq(take & pick[n])
            payload = payload | (lane.o.payload.as_value() & pick[n].replicate(len(
                lane.o.payload.as_value())))
            with m.If(take & pick[n]):
                m.d.sync += rr.eq(n)
        with m.If(take):
            m.d.sync += self.o.payload.eq(payload)

        # ---- counters --------------------------------------------------------------------
        macs = sum(lane.mac for lane in lanes)
        nz_macs = sum(lane.nz_macs for lane in lanes)
        with m.If(~idle):
            m.d.sync += [self.cycles.eq(self.cycles + 1),
                         self.mac_cycles.eq(self.mac_cycles + macs),
                         self.macs_nonzero.eq(self.macs_nonzero + nz_macs)]
            for n, lane in enumerate(lanes):
                m.d.sync += self.lane_macs[n].eq(self.lane_macs[n] + lane.mac)

        # ---- command FSM -----------------------------------------------------------------
        c = self.cmd.payload
        m.d.comb += bl.abort.eq(self.cmd.valid & self.cmd.ready)
        m.d.sync += self.done.eq(0)
        with m.Switch(state):
            with m.Case(_State.IDLE):
                # a B block being expanded finishes first, unless it waits for mantissas
                m.d.comb += self.cmd.ready.eq(~bl.busy | bl.waiting)
                with m.If(self.cmd.valid & self.cmd.ready):
                    with m.Switch(c.op):
                        with m.Case(Op.CLEAR_A):
                            m.d.comb += al.clear.eq(1)
                            m.d.sync += status.eq(Status.OK)
                        with m.Case(Op.CLEAR_B):
                            m.d.comb += bl.clear.eq(1)
                            m.d.sync += [status.eq(Status.OK), state.eq(_State.CLEAR_B)]
                        with m.Case(Op.RUN):
                            m.d.sync += [self.cycles.eq(1), self.mac_cycles.eq(0),
                                         self.macs_nonzero.eq(0),
                                         run_m.eq(c.m), run_n.eq(c.n),
                                         run_mask.eq(c.use_mask), run_carry.eq(c.carry)]
                            for n in range(L):
                                m.d.sync += self.lane_macs[n].eq(0)
                            with m.If(err):
                                m.d.sync += self.done.eq(1)
                            with m.Elif(bl.busy):
                                m.d.sync += [status.eq(Status.B_BLOCK), self.done.eq(1)]
                            with m.Elif((c.m == 0) | (c.m > cfg.max_m) | (c.n == 0)
                                        | (c.n > cfg.max_n)):
                                m.d.sync += [status.eq(Status.SHAPE), self.done.eq(1)]
                            with m.Else():
                                m.d.comb += al.run.eq(1)
                                m.d.sync += state.eq(_State.FIN)
                        with m.Default():
                            m.d.sync += [status.eq(Status.CMD), self.done.eq(1)]
            with m.Case(_State.CLEAR_B):
                with m.If(~bl.busy):
                    m.d.sync += state.eq(_State.IDLE)
            with m.Case(_State.FIN):
                with m.If(al.err != Status.OK):
                    m.d.sync += [state.eq(_State.IDLE), self.done.eq(1)]
                with m.Elif(~al.fin_busy):
                    m.d.sync += [state.eq(_State.COMPUTE), d_i.eq(0), d_g.eq(0),
                                 out_left.eq(run_m * groups)]
            with m.Case(_State.COMPUTE):
                with m.If(out_left == 0):
                    m.d.sync += [state.eq(_State.IDLE), self.done.eq(1)]
        return m
