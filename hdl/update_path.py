"""The weight-update path of the accelerator top: dW from the C buffer, state in and out, the
new masters back into the C buffer for the W and W^T drains (``golden.jobs``, "Weight update").

After a WG tile with ``Flag.UPDATE`` has been computed, its accumulators ``dW (m x n)`` sit in
the output path's C buffer. :class:`UpdatePath` runs in two passes, each started by ``start``
with ``mode``:

* ``mode = 0`` (update): for every task ``(i, g)`` in row-major order it reads the R
  accumulators through the output path's carry port, takes one state beat per element ``(i,
  j)``, ``j < n`` (64-bit: int32 master ``w`` low, int32 velocity ``v`` high, a word of
  ``-2**31`` read as ``-(2**31 - 1)``) from ``state_in``, runs the element through the
  :class:`~hdl.update_unit.UpdateUnit`, sends the new ``(w', v')`` on ``state_out`` (``last``
  on the tile's last element), keeps ``w'`` in its own buffer (``max_m x max_n`` words) and
  writes the task back into the C buffer as accumulators ``S = w'``, ``ea = 250`` (a beat on
  ``o``, the engine's output format; columns ``>= n`` as 0): a normal drain of ``m x n`` then
  gives ``W``.
* ``mode = 1`` (transpose): writes the transposed masters into the C buffer, task ``(j, g)``
  holding ``w'[g R + r, j]`` for ``r < R`` (rows ``>= m`` as 0): a drain of ``n x m`` gives
  ``W^T``. One buffer read per cycle.

``done`` pulses when a pass has finished (every beat out). The carry port and ``o`` belong to
this unit only while it is busy (the top multiplexes them with the engine's).
"""

from amaranth import Cat, Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from golden.update import MASTER_EA, SAT

from .bfp_layouts import bus_beat
from .config import EngineConfig
from .engine_lane import out_layout, widths
from .output_path import carry_addr_layout, carry_data_layout
from .update_unit import HYPER, UpdateUnit

__all__ = ["UpdatePath"]


class UpdatePath(wiring.Component):
    """Weight update between the C buffer and DRAM (module docstring).

    Parameters
    ----------
    cfg : EngineConfig

    Attributes
    ----------
    start : In(1)
        Begin a pass (``mode``, ``m``, ``n`` must be stable from then to ``done``).
    mode : In(1)
        0: update, 1: transpose.
    m, n : In
        The WG tile's shape (``m`` outputs, ``n`` inputs).
    busy, done : Out(1)
    lr, momentum, weight_decay : In(HYPER)
    carry_en, carry_addr, carry_data :
        The output path's carry read port (as the engine's).
    state_in : In(stream.Signature(bus_beat(64)))
    state_out : Out(stream.Signature(bus_beat(64)))
    o : Out(stream.Signature(out_layout(cfg)))
        Task beats into the C buffer.
    """

    def __init__(self, cfg: EngineConfig):
        if not isinstance(cfg, EngineConfig):
            self._MustUse__silence = True
            raise TypeError(f"cfg must be an EngineConfig, not {cfg!r}")
        if cfg.max_m != cfg.max_n:
            self._MustUse__silence = True
            raise ValueError(f"The update path transposes tiles in the C buffer: max_m and "
                             f"max_n must be equal, not {cfg.max_m} and {cfg.max_n}")
        self._cfg = cfg
        w = widths(cfg)
        super().__init__({
            "start": In(1),
            "mode": In(1),
            "m": In(w["m"] + 1),
            "n": In(w["n"] + 1),
            "busy": Out(1),
            "done": Out(1),
            "lr": In(HYPER),
            "momentum": In(HYPER),
            "weight_decay": In(HYPER),
            "carry_en": Out(1),
            "carry_addr": Out(carry_addr_layout(cfg)),
            "carry_data": In(carry_data_layout(cfg)),
            "state_in": In(stream.Signature(bus_beat(64))),
            "state_out": Out(stream.Signature(bus_beat(64))),
            "o": Out(stream.Signature(out_layout(cfg))),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self._cfg
        R = cfg.rows
        lg = R.bit_length() - 1
        w = widths(cfg)
        MAXN = cfg.max_n

        uu = m.submodules.unit = UpdateUnit()
        m.d.comb += [uu.lr.eq(self.lr), uu.momentum.eq(self.momentum),
                     uu.weight_decay.eq(self.weight_decay)]
        buf = m.submodules.masters = Memory(shape=signed(32), depth=cfg.max_m * MAXN, init=[])
        wp = buf.write_port()
        rp = buf.read_port()

        groups = Signal(w["n"] + 2)  # tasks per row: ceil(n / R) (pass 0), ceil(m / R) (pass 1)
        m.d.comb += groups.eq(Mux(self.mode, (self.m + R - 1) >> lg, (self.n + R - 1) >> lg))

        running = Signal()
        m.d.comb += self.busy.eq(running)
        m.d.sync += self.done.eq(0)

        # ---- pass 0, input side: task reads, elements into the unit --------------------------
        in_i = Signal(w["m"] + 1)
        in_g = Signal(w["g"] + 1)
        in_r = Signal(range(R + 1))
        in_have = Signal()  # carry data of task (in_i, in_g) is on carry_data
        in_read = Signal()  # a carry read was issued last cycle
        in_done = Signal()
        col = Signal(w["n"] + 2)
        m.d.comb += col.eq((in_g << lg) + in_r)
        acc = self.carry_data
        st = self.state_in.payload.data
        w_in = Signal(signed(32))
        v_in = Signal(signed(32))
        m.d.comb += [w_in.eq(st[:32].as_signed()), v_in.eq(st[32:].as_signed())]

        def clamp(x):
            return Mux(x == -(1 << 31), -SAT, x)

        ui = uu.i.payload
        mant = Signal(signed(32))
        exp = Signal(16)
        with m.Switch(in_r):
            for r in range(R):
                with m.Case(r):
                    m.d.comb += [mant.eq(acc.mant[r]), exp.eq(acc.exp[r])]
        m.d.comb += [ui.grad_mant.eq(mant), ui.grad_exp.eq(exp),
                     ui.w.eq(clamp(w_in)), ui.v.eq(clamp(v_in))]
        m.d.comb += [self.carry_addr.row.eq(in_i), self.carry_addr.grp.eq(in_g)]
        with m.If(in_read):
            m.d.sync += [in_read.eq(0), in_have.eq(1)]
        with m.If(running & ~self.mode & ~in_done):
            with m.If(~in_have & ~in_read):
                m.d.comb += self.carry_en.eq(1)
                m.d.sync += in_read.eq(1)
            with m.Elif(in_have):
                last_el = (in_r == R - 1) | (col + 1 >= self.n)
                m.d.comb += [uu.i.valid.eq(self.state_in.valid),
                             self.state_in.ready.eq(uu.i.ready)]
                with m.If(uu.i.valid & uu.i.ready):
                    m.d.sync += in_r.eq(in_r + 1)
                    with m.If(last_el):
                        m.d.sync += [in_r.eq(0), in_have.eq(0)]
                        with m.If(in_g + 1 == groups):
                            m.d.sync += [in_g.eq(0), in_i.eq(in_i + 1)]
                            with m.If(in_i + 1 == self.m):
                                m.d.sync += in_done.eq(1)
                        with m.Else():
                            m.d.sync += in_g.eq(in_g + 1)

        # ---- pass 0, output side: state out, master buffer, task beats ----------------------
        out_i = Signal(w["m"] + 1)
        out_g = Signal(w["g"] + 1)
        out_r = Signal(range(R + 1))
        out_done = Signal()
        ocol = Signal(w["n"] + 2)
        m.d.comb += ocol.eq((out_g << lg) + out_r)
        task = Signal(data.ArrayLayout(signed(32), R))
        o_valid = Signal()
        o_row = Signal(w["m"])
        o_grp = Signal(w["g"])
        o_mant = Signal(data.ArrayLayout(signed(32), R))
        o_exp = Signal(data.ArrayLayout(10, R))
        uo = uu.o.payload
        last_out = (out_i + 1 == self.m) & (out_g + 1 == groups) \
            & ((out_r == R - 1) | (ocol + 1 >= self.n))
        m.d.comb += [
            self.state_out.valid.eq(uu.o.valid & ~self.mode),
            self.state_out.payload.data.eq(Cat(uo.w, uo.v)),
            self.state_out.payload.keep.eq(0xFF),
            self.state_out.payload.last.eq(last_out),
            uu.o.ready.eq(self.state_out.ready & ~self.mode),
        ]
        m.d.sync += o_valid.eq(0)
        with m.If(uu.o.valid & uu.o.ready):
            m.d.comb += [wp.en.eq(1), wp.addr.eq(out_i * MAXN + ocol), wp.data.eq(uo.w)]
            last_el = (out_r == R - 1) | (ocol + 1 >= self.n)
            for r in range(R):
                with m.If(out_r == r):
                    m.d.sync += task[r].eq(uo.w)
            m.d.sync += out_r.eq(out_r + 1)
            with m.If(last_el):
                m.d.sync += [out_r.eq(0), o_valid.eq(1), o_row.eq(out_i), o_grp.eq(out_g)]
                for r in range(R):
                    cur = Mux(out_r == r, uo.w, task[r])
                    valid_col = (out_g << lg) + r < self.n
                    m.d.sync += [o_mant[r].eq(Mux(valid_col & (r <= out_r), cur, 0)),
                                 o_exp[r].eq(Mux(valid_col & (r <= out_r), MASTER_EA, 0))]
                with m.If(out_g + 1 == groups):
                    m.d.sync += [out_g.eq(0), out_i.eq(out_i + 1)]
                    with m.If(out_i + 1 == self.m):
                        m.d.sync += out_done.eq(1)
                with m.Else():
                    m.d.sync += out_g.eq(out_g + 1)

        # ---- pass 1: transposed task beats from the master buffer ----------------------------
        t_j = Signal(w["n"] + 1)  # output row = column of the master
        t_g = Signal(w["m"] + 2)
        t_r = Signal(range(R + 1))
        t_done = Signal()
        t_prev = Signal()  # a read was issued last cycle
        t_prev_r = Signal(range(R + 1))
        t_prev_valid = Signal()  # its row was < m
        t_prev_last = Signal()
        t_prev_j = Signal.like(t_j)
        t_prev_g = Signal.like(t_g)
        t_task = Signal(data.ArrayLayout(signed(32), R))
        t_row = (t_g << lg) + t_r  # master row
        m.d.comb += rp.addr.eq(t_row * MAXN + t_j)
        m.d.sync += t_prev.eq(0)
        with m.If(running & self.mode & ~t_done):
            m.d.sync += [t_prev.eq(1), t_prev_r.eq(t_r), t_prev_valid.eq(t_row < self.m),
                         t_prev_last.eq(t_r == R - 1), t_prev_j.eq(t_j), t_prev_g.eq(t_g),
                         t_r.eq(t_r + 1)]
            with m.If(t_r == R - 1):
                m.d.sync += t_r.eq(0)
                with m.If(t_g + 1 == groups):
                    m.d.sync += [t_g.eq(0), t_j.eq(t_j + 1)]
                    with m.If(t_j + 1 == self.n):
                        m.d.sync += t_done.eq(1)
                with m.Else():
                    m.d.sync += t_g.eq(t_g + 1)
        with m.If(t_prev):
            val = Mux(t_prev_valid, rp.data, 0)
            for r in range(R):
                with m.If(t_prev_r == r):
                    m.d.sync += t_task[r].eq(val)
            with m.If(t_prev_last):
                m.d.sync += [o_valid.eq(1), o_row.eq(t_prev_j), o_grp.eq(t_prev_g)]
                for r in range(R):
                    cur = Mux(t_prev_r == r, val, t_task[r])
                    ok = ((t_prev_g << lg) + r) < self.m
                    m.d.sync += [o_mant[r].eq(Mux(ok, cur, 0)),
                                 o_exp[r].eq(Mux(ok, MASTER_EA, 0))]

        m.d.comb += [self.o.valid.eq(o_valid), self.o.payload.row.eq(o_row),
                     self.o.payload.grp.eq(o_grp)]
        for r in range(R):
            m.d.comb += [self.o.payload.mant[r].eq(o_mant[r]),
                         self.o.payload.exp[r].eq(o_exp[r])]

        # ---- control -------------------------------------------------------------------------
        with m.If(self.start):
            m.d.sync += [running.eq(1), in_i.eq(0), in_g.eq(0), in_r.eq(0), in_have.eq(0),
                         in_read.eq(0), in_done.eq(0), out_i.eq(0), out_g.eq(0), out_r.eq(0),
                         out_done.eq(0), t_j.eq(0), t_g.eq(0), t_r.eq(0), t_done.eq(0)]
        with m.Elif(running):
            fin = Mux(self.mode, t_done & ~t_prev & ~o_valid, out_done & ~o_valid)
            with m.If(fin):
                m.d.sync += [running.eq(0), self.done.eq(1)]
        return m
